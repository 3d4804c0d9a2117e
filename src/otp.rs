//! TOTP codes (RFC 6238) from a [`Seed`], with drift in steps, through totp-rs.
//! (Interim version; the full vector tests land with it.)

use totp_rs::TOTP;
use zeroize::Zeroizing;

use crate::secret::{Algorithm, Seed};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TotpSpec {
    pub algorithm: Algorithm,
    pub digits: u32,
    pub period: u32,
    pub t0: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OtpError {
    #[error("digits must be 6 or 8, not {0}")]
    Digits(u32),
    #[error("period must be between 1 and 3600 seconds, not {0}")]
    Period(u32),
}

impl TotpSpec {
    pub fn new(algorithm: Algorithm, digits: u32, period: u32) -> Result<Self, OtpError> {
        if digits != 6 && digits != 8 {
            return Err(OtpError::Digits(digits));
        }
        if !(1..=3600).contains(&period) {
            return Err(OtpError::Period(period));
        }
        Ok(Self {
            algorithm,
            digits,
            period,
            t0: 0,
        })
    }
    pub fn step_at(&self, unix_time: i64) -> i64 {
        (unix_time - self.t0).div_euclid(i64::from(self.period))
    }
    pub fn valid_for_seconds(&self, unix_time: i64) -> u32 {
        let period = i64::from(self.period);
        (period - (unix_time - self.t0).rem_euclid(period)) as u32
    }
}

/// A one-time code. Zeroized on drop; no Debug/Display/Serialize.
pub struct OneTimeCode(Zeroizing<String>);

impl OneTimeCode {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

fn totp_algorithm(a: Algorithm) -> totp_rs::Algorithm {
    match a {
        Algorithm::Sha1 => totp_rs::Algorithm::SHA1,
        Algorithm::Sha256 => totp_rs::Algorithm::SHA256,
        Algorithm::Sha512 => totp_rs::Algorithm::SHA512,
    }
}

fn code_for_step(seed: &Seed, spec: &TotpSpec, step: i64) -> OneTimeCode {
    let totp = TOTP::new_unchecked(
        totp_algorithm(spec.algorithm),
        spec.digits as usize,
        0,
        u64::from(spec.period),
        seed.expose().to_vec(),
    );
    let time = u64::try_from(step.max(0)).unwrap_or(0) * u64::from(spec.period);
    OneTimeCode(Zeroizing::new(totp.generate(time)))
}

pub fn code_at(seed: &Seed, spec: &TotpSpec, unix_time: i64, drift_steps: i64) -> OneTimeCode {
    code_for_step(seed, spec, spec.step_at(unix_time) + drift_steps)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub drift_steps: i64,
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn verify(
    seed: &Seed,
    spec: &TotpSpec,
    unix_time: i64,
    code: &str,
    current_drift: i64,
    window: u32,
) -> Option<Verified> {
    let entered: Zeroizing<String> =
        Zeroizing::new(code.chars().filter(|c| !c.is_whitespace()).collect());
    if entered.len() != spec.digits as usize {
        return None;
    }
    let base = spec.step_at(unix_time);
    let window = i64::from(window);
    let mut offsets = vec![0i64];
    for d in 1..=window {
        offsets.push(-d);
        offsets.push(d);
    }
    offsets
        .into_iter()
        .map(|o| current_drift + o)
        .find_map(|drift| {
            let candidate = code_for_step(seed, spec, base + drift);
            ct_eq(candidate.expose().as_bytes(), entered.as_bytes())
                .then_some(Verified { drift_steps: drift })
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::secret::{parse_secret, SecretFormat};

    fn testdata(name: &str) -> String {
        std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../shared/testdata")
                .join(name),
        )
        .unwrap()
    }

    fn expected(key: &str) -> String {
        testdata("expected-codes.csv")
            .lines()
            .find(|l| l.starts_with(&format!("{key},")))
            .unwrap()
            .rsplit(',')
            .next()
            .unwrap()
            .to_owned()
    }

    trait AmbiguousIfDebug<A> {
        fn some_item() {}
    }
    impl<T: ?Sized> AmbiguousIfDebug<()> for T {}
    impl<T: ?Sized + std::fmt::Debug> AmbiguousIfDebug<u8> for T {}

    #[test]
    fn a_code_cannot_be_debug_printed() {
        <OneTimeCode as AmbiguousIfDebug<_>>::some_item();
    }

    #[test]
    fn every_rfc_6238_vector_matches_in_hex_and_base32() {
        for line in testdata("rfc6238-vectors.csv").lines().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            let spec = TotpSpec::new(
                Algorithm::parse(f[0]).unwrap(),
                f[3].parse().unwrap(),
                f[4].parse().unwrap(),
            )
            .unwrap();
            for (secret, format) in [(f[1], SecretFormat::Hex), (f[2], SecretFormat::Base32)] {
                let seed = parse_secret(secret, format).unwrap().seed;
                assert_eq!(
                    code_at(&seed, &spec, f[5].parse().unwrap(), 0).expose(),
                    f[6],
                    "{line}"
                );
            }
        }
    }

    #[test]
    fn every_sample_token_produces_its_expected_code() {
        let t = 1_764_000_000;
        for line in testdata("entra-oath.csv").lines().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            let seed = parse_secret(f[2], SecretFormat::Base32).unwrap().seed;
            let spec = TotpSpec::new(Algorithm::Sha1, 6, f[3].parse().unwrap()).unwrap();
            assert_eq!(
                code_at(&seed, &spec, t, 0).expose(),
                expected(f[1]),
                "{line}"
            );
        }
        for line in testdata("vendor-safeid.csv").lines().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            let seed = parse_secret(f[1], SecretFormat::Hex).unwrap().seed;
            let spec = TotpSpec::new(Algorithm::Sha1, 6, f[2].parse().unwrap()).unwrap();
            assert_eq!(
                code_at(&seed, &spec, t, 0).expose(),
                expected(f[0]),
                "{line}"
            );
        }
        for line in testdata("otpauth-uris.txt")
            .lines()
            .filter(|l| !l.trim().is_empty())
        {
            let parsed = parse_secret(line, SecretFormat::Otpauth).unwrap();
            let p = parsed.otpauth.unwrap();
            let spec = TotpSpec::new(p.algorithm, p.digits, p.period).unwrap();
            assert_eq!(
                code_at(&parsed.seed, &spec, t, 0).expose(),
                expected(p.account.as_deref().unwrap()),
                "{line}"
            );
        }
    }

    #[test]
    fn drift_shifts_by_whole_steps_and_verify_finds_it_within_the_window() {
        let seed = parse_secret("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ", SecretFormat::Base32)
            .unwrap()
            .seed;
        let spec = TotpSpec::new(Algorithm::Sha1, 6, 30).unwrap();
        let t = 1_764_000_000;
        assert_eq!(
            code_at(&seed, &spec, t, 3).expose(),
            code_at(&seed, &spec, t + 90, 0).expose()
        );
        let ahead = code_at(&seed, &spec, t + 90, 0);
        assert_eq!(
            verify(&seed, &spec, t, ahead.expose(), 0, 5),
            Some(Verified { drift_steps: 3 })
        );
        assert_eq!(verify(&seed, &spec, t, ahead.expose(), 0, 2), None);
        assert_eq!(
            verify(&seed, &spec, t, ahead.expose(), 3, 0),
            Some(Verified { drift_steps: 3 }),
            "recorded drift is the centre"
        );
        let now = code_at(&seed, &spec, t, 0);
        let spaced = format!("{} {}", &now.expose()[..3], &now.expose()[3..]);
        assert_eq!(
            verify(&seed, &spec, t, &spaced, 0, 0),
            Some(Verified { drift_steps: 0 })
        );
        assert_eq!(verify(&seed, &spec, t, "12345", 0, 15), None);
        assert_eq!(verify(&seed, &spec, t, "abcdef", 0, 15), None);
    }

    #[test]
    fn the_countdown_ends_with_the_step() {
        let spec = TotpSpec::new(Algorithm::Sha1, 6, 30).unwrap();
        assert_eq!(spec.valid_for_seconds(60), 30);
        assert_eq!(spec.valid_for_seconds(89), 1);
        assert!(TotpSpec::new(Algorithm::Sha1, 7, 30).is_err());
        assert!(TotpSpec::new(Algorithm::Sha1, 6, 0).is_err());
    }
}
