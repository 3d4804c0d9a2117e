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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// Compiles only while `T` is not `Debug` (ambiguous impls otherwise).
    trait AmbiguousIfDebug<A> {
        fn some_item() {}
    }
    impl<T: ?Sized> AmbiguousIfDebug<()> for T {}
    impl<T: ?Sized + std::fmt::Debug> AmbiguousIfDebug<u8> for T {}

    #[test]
    fn a_seed_cannot_be_debug_printed() {
        <Seed as AmbiguousIfDebug<_>>::some_item();
    }

    #[test]
    fn valid_secrets_parse_in_every_accepted_spelling() {
        let table: &[(&str, SecretFormat, usize)] = &[
            ("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ", SecretFormat::Auto, 160),
            ("gezd gnbv gy3t qojq gezd gnbv gy3t qojq", SecretFormat::Auto, 160),
            ("GEZD-GNBV-GY3T-QOJQ-GEZD-GNBV-GY3T-QOJQ", SecretFormat::Base32, 160),
            ("UFOEYZUHILYLDNGO", SecretFormat::Base32, 80),
            ("UFOEYZUHILYLDNGO======", SecretFormat::Base32, 80),
            ("3132333435363738393031323334353637383930", SecretFormat::Hex, 160),
            ("0x3132333435363738393031323334353637383930", SecretFormat::Hex, 160),
            ("31:32:33:34:35:36:37:38:39:30:31:32:33:34:35:36", SecretFormat::Hex, 128),
            ("899120BA6CFB93FE37731592DA56526822B37598", SecretFormat::Auto, 160),
            ("otpauth://totp/X:a%40b.org?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&algorithm=SHA256&digits=8&period=60", SecretFormat::Auto, 160),
        ];
        for (input, format, bits) in table {
            let parsed = parse_secret(input, *format).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(parsed.seed.bits(), *bits, "{input}");
            assert_eq!(
                parsed.warnings.is_empty(),
                *bits >= 128,
                "{input}: {:?}",
                parsed.warnings
            );
        }
    }

    #[test]
    fn an_otpauth_uri_brings_its_parameters() {
        let parsed = parse_secret(
            "otpauth://totp/Example%20Corp:user2%40example.org?secret=TT4MGKVES2XNZYPNNDW3LJIOHJ55QUHI7GUBDVU6NSTG3NSGAR4A&issuer=Example%20Corp&algorithm=SHA256&digits=8&period=30",
            SecretFormat::Auto,
        )
        .unwrap();
        let params = parsed.otpauth.unwrap();
        assert_eq!(params.issuer.as_deref(), Some("Example Corp"));
        assert_eq!(params.account.as_deref(), Some("user2@example.org"));
        assert_eq!(
            (params.algorithm, params.digits, params.period),
            (Algorithm::Sha256, 8, 30)
        );
    }

    #[test]
    fn invalid_secrets_are_refused_with_the_reason_and_the_fix() {
        let table: &[(&str, SecretFormat, &str)] = &[
            ("", SecretFormat::Auto, "secret is empty"),
            ("GEZDGNBVGY3TQOJ0", SecretFormat::Base32, "'0' is not a base32 character — base32 uses A–Z and 2–7; if this is hex, choose the hex format"),
            ("GEZDGNBVGY3TQOJQG!ZDGNBV", SecretFormat::Auto, "'!' is not a base32 character"),
            ("313233343536373839303132333435363738393g", SecretFormat::Hex, "'g' is not a hex character"),
            ("31323334353637383930313233343536373839303", SecretFormat::Hex, "odd number of digits"),
            ("GEZDGNBVGY3TQ", SecretFormat::Base32, "secret is 64 bits; at least 80 bits are needed"),
            ("23456723456723456723456723456723", SecretFormat::Auto, "valid both as hex and as base32 — choose the format explicitly"),
            ("otpauth://hotp/X?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&counter=0", SecretFormat::Auto, "seedvault escrows TOTP tokens only"),
            ("otpauth://totp/X?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&digits=7", SecretFormat::Auto, "digits must be 6 or 8"),
            ("otpauth://totp/X?issuer=Y", SecretFormat::Otpauth, "the secret parameter is missing"),
            ("otpauth://totp/X?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&algorithm=MD5", SecretFormat::Auto, "unknown algorithm 'MD5'"),
        ];
        for (input, format, expected) in table {
            let err = parse_secret(input, *format)
                .err()
                .unwrap_or_else(|| panic!("{input} should fail"))
                .to_string();
            assert!(err.contains(expected), "{input}: {err}");
        }
    }

    #[test]
    fn error_messages_never_repeat_the_secret() {
        for input in [
            "GEZDGNBVGY3TQOJ0GEZDGNBV",
            "313233343536373839303132333435363738393g",
            "GEZDGNBVGY3TQ",
        ] {
            for format in [SecretFormat::Auto, SecretFormat::Base32, SecretFormat::Hex] {
                if let Err(e) = parse_secret(input, format) {
                    let message = e.to_string();
                    for window in input.as_bytes().windows(4) {
                        assert!(
                            !message.as_bytes().windows(4).any(|w| w == window),
                            "{message} leaks part of {input}"
                        );
                    }
                }
            }
        }
    }
}
