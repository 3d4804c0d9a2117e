//! TOTP codes (RFC 6238) from a [`Seed`]: the code for a moment with a token's drift applied, and
//! verification of a code read from a physical token within a window of steps, which measures
//! that token's drift. totp-rs does the HMAC and truncation (RFC 4226 §5.3); time steps, T0,
//! drift and parameter validation live here.

use totp_rs::TOTP;
use zeroize::{Zeroize, Zeroizing};

use crate::secret::{Algorithm, Seed};

/// How a token turns time into codes: hash, code length, step length X and start T0 (RFC 6238 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TotpSpec {
    pub algorithm: Algorithm,
    pub digits: u32,
    pub period: u32,
    /// Unix time at which step 0 starts; 0 for every token we know of.
    pub t0: i64,
}

/// Why TOTP parameters were refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OtpError {
    #[error("digits must be 6 or 8, not {0}")]
    Digits(u32),
    #[error("period must be a whole number of seconds from 1 to 3600, not {0}")]
    Period(u32),
}

impl TotpSpec {
    /// Checks digits (6 or 8) and period (1..=3600 s); T0 is the Unix epoch (set `t0` after for
    /// a token that counts from elsewhere).
    pub fn new(algorithm: Algorithm, digits: u32, period: u32) -> Result<Self, OtpError> {
        if !matches!(digits, 6 | 8) {
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

    /// The time step `T = floor((unix_time - T0) / X)` (RFC 6238 §4.2), rounding down before T0 too.
    pub fn step_at(&self, unix_time: i64) -> i64 {
        unix_time
            .saturating_sub(self.t0)
            .div_euclid(self.period_secs())
    }

    /// Seconds until the step containing `unix_time` ends: `period` at its first second, 1 at its last.
    pub fn valid_for_seconds(&self, unix_time: i64) -> u32 {
        let period = self.period_secs();
        let left = period - unix_time.saturating_sub(self.t0).rem_euclid(period);
        u32::try_from(left).unwrap_or(self.period)
    }

    /// The period as a divisor. The fields are public, so a hand-built spec may hold 0; that
    /// must not panic a server.
    fn period_secs(&self) -> i64 {
        i64::from(self.period.max(1))
    }
}

/// A one-time code. Zeroized on drop, no Debug/Display/Serialize (codes are secrets while valid).
pub struct OneTimeCode(Zeroizing<String>);

impl OneTimeCode {
    /// The digits, for showing to the operator who asked for them.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// The code for step `step_at(unix_time) + drift_steps`: the code the token shows at
/// `unix_time` when its clock runs `drift_steps` steps ahead. Steps before the epoch clamp to 0.
pub fn code_at(seed: &Seed, spec: &TotpSpec, unix_time: i64, drift_steps: i64) -> OneTimeCode {
    Generator::new(seed, spec).code(spec.step_at(unix_time).saturating_add(drift_steps))
}

/// Result of checking a code a user read from a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// The token's drift in steps measured by this code (absolute, not relative to the old drift).
    pub drift_steps: i64,
}

/// Checks `code` against the steps `current_drift - window ..= current_drift + window` around
/// `unix_time`, nearest first, and returns the drift at which it matched. Spaces in `code` are
/// ignored ("123 456"); a code of the wrong length or with non-digits never matches.
pub fn verify(
    seed: &Seed,
    spec: &TotpSpec,
    unix_time: i64,
    code: &str,
    current_drift: i64,
    window: u32,
) -> Option<Verified> {
    let mut entered = Zeroizing::new(String::with_capacity(code.len()));
    entered.extend(code.chars().filter(|c| !c.is_whitespace()));
    if entered.len() != spec.digits as usize || !entered.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let generator = Generator::new(seed, spec);
    let step = spec.step_at(unix_time);
    let window = i64::from(window);
    // Nearest first: should a code repeat inside the window, the smaller drift is the likelier.
    std::iter::once(0)
        .chain((1..=window).flat_map(|d| [-d, d]))
        .map(|offset| current_drift.saturating_add(offset))
        .find(|&drift| {
            let expected = generator.code(step.saturating_add(drift));
            ct_eq(expected.expose().as_bytes(), entered.as_bytes())
        })
        .map(|drift_steps| Verified { drift_steps })
}

/// totp-rs over one seed. totp-rs keeps its own copy of the seed and zeroizes it only with its
/// `zeroize` feature, so this wipes it on drop whatever features are on.
struct Generator(TOTP);

impl Generator {
    fn new(seed: &Seed, spec: &TotpSpec) -> Self {
        let algorithm = match spec.algorithm {
            Algorithm::Sha1 => totp_rs::Algorithm::SHA1,
            Algorithm::Sha256 => totp_rs::Algorithm::SHA256,
            Algorithm::Sha512 => totp_rs::Algorithm::SHA512,
        };
        // new_unchecked: totp-rs's checked constructor refuses the 80-bit seeds we accept on
        // purpose; `TotpSpec::new` and `Seed` did the checking. Digits are capped at 9 so a
        // hand-built spec cannot overflow totp-rs's `10^digits`.
        Self(TOTP::new_unchecked(
            algorithm,
            spec.digits.min(9) as usize,
            0,
            u64::from(spec.period.max(1)),
            seed.expose().to_vec(),
        ))
    }

    fn code(&self, step: i64) -> OneTimeCode {
        // totp-rs derives the counter as time / step from the epoch, so give it the first second
        // of our step (T0 is already folded into `step`).
        let time = u64::try_from(step).unwrap_or(0).saturating_mul(self.0.step);
        OneTimeCode(Zeroizing::new(self.0.generate(time)))
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        self.0.secret.zeroize();
    }
}

/// Compares without an early exit, so the response time does not tell how many leading digits
/// of a guess were right.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .fold(0u8, |acc, (x, y)| std::hint::black_box(acc | (x ^ y)))
            == 0
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::secret::{parse_secret, SecretFormat};

    const NOW: i64 = 1_764_000_000;

    fn testdata(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(name)
    }

    /// Data rows of a CSV file (header skipped), split on commas; the files have no quoting.
    fn rows(name: &str) -> Vec<Vec<String>> {
        let text = std::fs::read_to_string(testdata(name)).unwrap();
        text.lines()
            .skip(1)
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.split(',').map(|f| f.trim().to_owned()).collect())
            .collect()
    }

    /// expected-codes.csv by serial or account: (spec, unix time, code).
    fn expected_codes() -> HashMap<String, (TotpSpec, i64, String)> {
        rows("expected-codes.csv")
            .into_iter()
            .map(|f| {
                let spec = TotpSpec::new(
                    Algorithm::parse(&f[1]).unwrap(),
                    f[2].parse().unwrap(),
                    f[3].parse().unwrap(),
                )
                .unwrap();
                (f[0].clone(), (spec, f[4].parse().unwrap(), f[5].clone()))
            })
            .collect()
    }

    fn seed(secret: &str, format: SecretFormat) -> Seed {
        parse_secret(secret, format).unwrap().seed
    }

    fn sha1_30s() -> TotpSpec {
        TotpSpec::new(Algorithm::Sha1, 6, 30).unwrap()
    }

    /// Compiles only while `T` is not `Debug` (the two impls make `_` ambiguous otherwise).
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
    fn every_rfc_6238_vector_matches_from_hex_and_from_base32() {
        let vectors = rows("rfc6238-vectors.csv");
        assert_eq!(vectors.len(), 18);
        for f in vectors {
            let spec = TotpSpec::new(
                Algorithm::parse(&f[0]).unwrap(),
                f[3].parse().unwrap(),
                f[4].parse().unwrap(),
            )
            .unwrap();
            let time: i64 = f[5].parse().unwrap();
            for (secret, format) in [(&f[1], SecretFormat::Hex), (&f[2], SecretFormat::Base32)] {
                let code = code_at(&seed(secret, format), &spec, time, 0);
                assert_eq!(code.expose(), f[6], "{} at {time} from {format:?}", f[0]);
            }
        }
    }

    #[test]
    fn every_sample_token_produces_its_expected_code() {
        let expected = expected_codes();
        let mut checked = 0;
        let mut check = |key: &str, seed: &Seed, spec: TotpSpec| {
            let (want_spec, time, code) = &expected[key];
            assert_eq!(spec, *want_spec, "{key}");
            assert_eq!(*time, NOW, "{key}");
            assert_eq!(code_at(seed, &spec, *time, 0).expose(), code, "{key}");
            checked += 1;
        };
        for f in rows("entra-oath.csv") {
            let spec = TotpSpec::new(Algorithm::Sha1, 6, f[3].parse().unwrap()).unwrap();
            check(&f[1], &seed(&f[2], SecretFormat::Base32), spec);
        }
        for f in rows("vendor-safeid.csv") {
            let spec = TotpSpec::new(Algorithm::Sha1, 6, f[2].parse().unwrap()).unwrap();
            check(&f[0], &seed(&f[1], SecretFormat::Hex), spec);
        }
        let uris = std::fs::read_to_string(testdata("otpauth-uris.txt")).unwrap();
        for uri in uris.lines().filter(|l| !l.trim().is_empty()) {
            let parsed = parse_secret(uri, SecretFormat::Otpauth).unwrap();
            let p = parsed.otpauth.unwrap();
            let spec = TotpSpec::new(p.algorithm, p.digits, p.period).unwrap();
            check(p.account.as_deref().unwrap(), &parsed.seed, spec);
        }
        assert_eq!(checked, 11);
    }

    #[test]
    fn drift_moves_the_code_by_whole_steps() {
        let seed = seed("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ", SecretFormat::Base32);
        for period in [30, 60] {
            let spec = TotpSpec::new(Algorithm::Sha1, 6, period).unwrap();
            let later = NOW + 3 * i64::from(period);
            assert_eq!(
                code_at(&seed, &spec, NOW, 3).expose(),
                code_at(&seed, &spec, later, 0).expose()
            );
            assert_eq!(
                code_at(&seed, &spec, later, -3).expose(),
                code_at(&seed, &spec, NOW, 0).expose()
            );
        }
    }

    #[test]
    fn verify_finds_the_drift_only_within_the_window() {
        let seed = seed("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ", SecretFormat::Base32);
        let spec = sha1_30s();
        let ahead = code_at(&seed, &spec, NOW, 3);
        let behind = code_at(&seed, &spec, NOW, -2);
        let now = code_at(&seed, &spec, NOW, 0);
        let spaced = format!("{} {}", &now.expose()[..3], &now.expose()[3..]);
        // (code, current drift, window, expected absolute drift)
        let table: &[(&str, i64, u32, Option<i64>)] = &[
            (ahead.expose(), 0, 5, Some(3)),
            (ahead.expose(), 0, 3, Some(3)),
            (ahead.expose(), 0, 2, None),
            (ahead.expose(), 3, 0, Some(3)),
            (ahead.expose(), 2, 1, Some(3)),
            (behind.expose(), 0, 2, Some(-2)),
            (behind.expose(), 0, 1, None),
            (now.expose(), 0, 0, Some(0)),
            (&spaced, 0, 0, Some(0)),
        ];
        for (code, drift, window, want) in table {
            assert_eq!(
                verify(&seed, &spec, NOW, code, *drift, *window).map(|v| v.drift_steps),
                *want,
                "drift {drift}, window {window}"
            );
        }
    }

    #[test]
    fn verify_refuses_a_wrong_code_or_length() {
        let seed = seed("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ", SecretFormat::Base32);
        let spec = sha1_30s();
        let now = code_at(&seed, &spec, NOW, 0);
        let wrong = format!(
            "{:06}",
            (now.expose().parse::<u32>().unwrap() + 1) % 1_000_000
        );
        let far_off = (5..20)
            .map(|d| code_at(&seed, &spec, NOW, d))
            .find(|c| (-4..=4).all(|d| c.expose() != code_at(&seed, &spec, NOW, d).expose()))
            .unwrap();
        for code in [
            wrong.as_str(),
            &now.expose()[..5],
            &format!("{}0", now.expose()),
            "abcdef",
            "",
        ] {
            assert_eq!(verify(&seed, &spec, NOW, code, 0, 4), None, "{code:?}");
        }
        let eight = TotpSpec::new(Algorithm::Sha1, 8, 30).unwrap();
        assert_eq!(verify(&seed, &eight, NOW, now.expose(), 0, 4), None);
        // A code from outside the window (and different from every code inside it).
        assert_eq!(verify(&seed, &spec, NOW, far_off.expose(), 0, 4), None);
    }

    #[test]
    fn the_countdown_ends_with_the_step() {
        let spec = sha1_30s();
        // (unix time, step, seconds left)
        for (time, step, left) in [
            (0, 0, 30),
            (29, 0, 1),
            (60, 2, 30),
            (89, 2, 1),
            (NOW, NOW / 30, 30),
            (-1, -1, 1),
        ] {
            assert_eq!(spec.step_at(time), step, "{time}");
            assert_eq!(spec.valid_for_seconds(time), left, "{time}");
        }
        let shifted = TotpSpec { t0: 10, ..spec };
        assert_eq!(shifted.step_at(40), 1);
        assert_eq!(shifted.valid_for_seconds(40), 30);
    }

    #[test]
    fn specs_outside_6_or_8_digits_and_1_to_3600_seconds_are_refused() {
        for (digits, period, want) in [
            (6, 30, Ok(())),
            (8, 3600, Ok(())),
            (8, 1, Ok(())),
            (7, 30, Err("digits must be 6 or 8, not 7")),
            (10, 30, Err("digits must be 6 or 8, not 10")),
            (
                6,
                0,
                Err("period must be a whole number of seconds from 1 to 3600, not 0"),
            ),
            (
                6,
                3601,
                Err("period must be a whole number of seconds from 1 to 3600, not 3601"),
            ),
        ] {
            let got = TotpSpec::new(Algorithm::Sha1, digits, period)
                .map(|_| ())
                .map_err(|e| e.to_string());
            assert_eq!(got, want.map_err(str::to_owned), "{digits}, {period}");
        }
    }

    #[test]
    fn times_before_the_epoch_use_step_zero() {
        let seed = seed("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ", SecretFormat::Base32);
        let spec = sha1_30s();
        assert_eq!(
            code_at(&seed, &spec, -90, 0).expose(),
            code_at(&seed, &spec, 0, 0).expose()
        );
        assert_eq!(code_at(&seed, &spec, i64::MIN, i64::MIN).expose().len(), 6);
        assert_eq!(code_at(&seed, &spec, i64::MAX, i64::MAX).expose().len(), 6);
    }
}
