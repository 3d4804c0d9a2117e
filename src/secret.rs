//! Parsing seeds at the edge (base32, hex, `otpauth://` URIs) into a typed, zeroizing [`Seed`].
//! (Interim version; full parser table lands with its tests.)

use std::str::FromStr;

use data_encoding::{BASE32_NOPAD, HEXLOWER_PERMISSIVE};
use zeroize::Zeroizing;

/// A TOTP seed. Zeroized on drop; deliberately no Debug, Display, Clone, Serialize.
pub struct Seed(Zeroizing<Vec<u8>>);

impl Seed {
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Seed, SecretError> {
        let bytes = Zeroizing::new(bytes);
        if bytes.len() < 10 {
            return Err(SecretError::TooShort {
                bits: bytes.len() * 8,
            });
        }
        if bytes.len() > 128 {
            return Err(SecretError::TooLong {
                bits: bytes.len() * 8,
            });
        }
        Ok(Seed(bytes))
    }
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
    pub fn bits(&self) -> usize {
        self.0.len() * 8
    }
    pub fn is_short(&self) -> bool {
        self.bits() < 128
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Algorithm {
    #[serde(rename = "SHA1")]
    Sha1,
    #[serde(rename = "SHA256")]
    Sha256,
    #[serde(rename = "SHA512")]
    Sha512,
}

impl Algorithm {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Sha1 => "SHA1",
            Self::Sha256 => "SHA256",
            Self::Sha512 => "SHA512",
        }
    }
    pub fn parse(s: &str) -> Result<Self, SecretError> {
        let norm: String = s.trim().to_ascii_uppercase().replace('-', "");
        match norm.strip_prefix("HMAC").unwrap_or(&norm) {
            "SHA1" => Ok(Self::Sha1),
            "SHA256" => Ok(Self::Sha256),
            "SHA512" => Ok(Self::Sha512),
            _ => Err(SecretError::BadAlgorithm(
                s.trim().chars().take(20).collect(),
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecretFormat {
    #[default]
    Auto,
    Base32,
    Hex,
    Otpauth,
}

impl FromStr for SecretFormat {
    type Err = SecretError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "base32" => Ok(Self::Base32),
            "hex" => Ok(Self::Hex),
            "otpauth" => Ok(Self::Otpauth),
            other => Err(SecretError::BadFormat(other.chars().take(20).collect())),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtpauthParams {
    pub issuer: Option<String>,
    pub account: Option<String>,
    pub algorithm: Algorithm,
    pub digits: u32,
    pub period: u32,
}

pub struct ParsedSecret {
    pub seed: Seed,
    pub otpauth: Option<OtpauthParams>,
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("secret is empty")]
    Empty,
    #[error(
        "secret is {bits} bits; at least 80 bits are needed — check that it was not truncated"
    )]
    TooShort { bits: usize },
    #[error("secret is {bits} bits; at most 1024 bits are accepted")]
    TooLong { bits: usize },
    #[error("'{0}' is not a base32 character — base32 uses A–Z and 2–7; if this is hex, choose the hex format")]
    NotBase32(char),
    #[error("'{0}' is not a hex character — hex uses 0–9 and A–F; if this is base32, choose the base32 format")]
    NotHex(char),
    #[error("hex secret has an odd number of digits — a hex byte needs two digits; check for a missing digit")]
    OddHex,
    #[error("the base32 secret has an impossible length — check for a missing or extra character")]
    BadBase32Length,
    #[error("the secret is valid both as hex and as base32 — choose the format explicitly: hex or base32 (CLI: --secret-encoding hex|base32)")]
    Ambiguous,
    #[error("the secret is neither valid base32 nor valid hex: {0}")]
    Neither(String),
    #[error("unknown secret format '{0}' — use auto, base32, hex or otpauth")]
    BadFormat(String),
    #[error("unknown algorithm '{0}' — use SHA1, SHA256 or SHA512")]
    BadAlgorithm(String),
    #[error("otpauth URI: {0}")]
    Otpauth(String),
}

fn clean(input: &str, extra: &[char]) -> Zeroizing<String> {
    Zeroizing::new(
        input
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-' && !extra.contains(c))
            .collect(),
    )
}

fn decode_base32(input: &str) -> Result<Zeroizing<Vec<u8>>, SecretError> {
    let cleaned = clean(input, &[]);
    let upper = Zeroizing::new(cleaned.trim_end_matches('=').to_ascii_uppercase());
    if let Some(bad) = upper.chars().find(|c| !matches!(c, 'A'..='Z' | '2'..='7')) {
        return Err(SecretError::NotBase32(bad));
    }
    BASE32_NOPAD
        .decode(upper.as_bytes())
        .map(Zeroizing::new)
        .map_err(|_| SecretError::BadBase32Length)
}

fn decode_hex(input: &str) -> Result<Zeroizing<Vec<u8>>, SecretError> {
    let cleaned = clean(input, &[':']);
    let body = cleaned
        .strip_prefix("0x")
        .or_else(|| cleaned.strip_prefix("0X"))
        .unwrap_or(&cleaned);
    if let Some(bad) = body.chars().find(|c| !c.is_ascii_hexdigit()) {
        return Err(SecretError::NotHex(bad));
    }
    if body.len() % 2 == 1 {
        return Err(SecretError::OddHex);
    }
    HEXLOWER_PERMISSIVE
        .decode(body.as_bytes())
        .map(Zeroizing::new)
        .map_err(|_| SecretError::OddHex)
}

fn finish(
    bytes: Zeroizing<Vec<u8>>,
    otpauth: Option<OtpauthParams>,
) -> Result<ParsedSecret, SecretError> {
    let seed = Seed::from_bytes(bytes.to_vec())?;
    let mut warnings = Vec::new();
    if seed.is_short() {
        warnings.push(format!(
            "secret is {} bits; RFC 4226 recommends at least 128 bits — accepted because many hardware tokens ship 80-bit seeds",
            seed.bits()
        ));
    }
    Ok(ParsedSecret {
        seed,
        otpauth,
        warnings,
    })
}

/// Parses a secret in the given format (or detects it).
pub fn parse_secret(input: &str, format: SecretFormat) -> Result<ParsedSecret, SecretError> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(SecretError::Empty);
    }
    match format {
        SecretFormat::Otpauth => parse_otpauth(trimmed),
        SecretFormat::Base32 => finish(decode_base32(trimmed)?, None),
        SecretFormat::Hex => finish(decode_hex(trimmed)?, None),
        SecretFormat::Auto => {
            if trimmed.len() >= 10 && trimmed[..10].eq_ignore_ascii_case("otpauth://") {
                return parse_otpauth(trimmed);
            }
            match (decode_base32(trimmed), decode_hex(trimmed)) {
                (Ok(_), Ok(_)) => Err(SecretError::Ambiguous),
                (Ok(bytes), Err(_)) | (Err(_), Ok(bytes)) => finish(bytes, None),
                (Err(b32), Err(_)) => Err(b32),
            }
        }
    }
}

/// Parses an `otpauth://totp/…` URI.
pub fn parse_otpauth(uri: &str) -> Result<ParsedSecret, SecretError> {
    let bad = |m: &str| SecretError::Otpauth(m.to_owned());
    let url = url::Url::parse(uri.trim())
        .map_err(|_| bad("not a valid URI — expected otpauth://totp/LABEL?secret=…"))?;
    if url.scheme() != "otpauth" {
        return Err(bad("the URI must start with otpauth://"));
    }
    match url.host_str().map(str::to_ascii_lowercase).as_deref() {
        Some("totp") => {}
        Some("hotp") => return Err(bad(
            "HOTP (counter-based) tokens are not supported — seedvault escrows TOTP tokens only",
        )),
        _ => return Err(bad("expected otpauth://totp/")),
    }
    let label = percent_decode(url.path().trim_start_matches('/'));
    let (label_issuer, account) = match label.split_once(':') {
        Some((issuer, account)) => (Some(issuer.trim().to_owned()), account.trim().to_owned()),
        None => (None, label.trim().to_owned()),
    };
    let mut secret: Option<Zeroizing<String>> = None;
    let mut params = OtpauthParams {
        issuer: label_issuer,
        account: (!account.is_empty()).then_some(account),
        algorithm: Algorithm::Sha1,
        digits: 6,
        period: 30,
    };
    for (key, value) in url.query_pairs() {
        match key.to_ascii_lowercase().as_str() {
            "secret" => secret = Some(Zeroizing::new(value.into_owned())),
            "issuer" => params.issuer = Some(value.into_owned()),
            "algorithm" => params.algorithm = Algorithm::parse(&value)?,
            "digits" => {
                params.digits = match value.trim() {
                    "6" => 6,
                    "8" => 8,
                    _ => return Err(bad("digits must be 6 or 8")),
                }
            }
            "period" => {
                params.period = value
                    .trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|p| (1..=3600).contains(p))
                    .ok_or_else(|| {
                        bad("period must be a whole number of seconds between 1 and 3600")
                    })?
            }
            _ => {}
        }
    }
    let secret = secret.ok_or_else(|| bad("the secret parameter is missing"))?;
    finish(decode_base32(&secret)?, Some(params))
}

fn percent_decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", text.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}
