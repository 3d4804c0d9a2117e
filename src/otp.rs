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
