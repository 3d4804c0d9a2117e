//! Parsing seeds at the edge: base32, hex and `otpauth://totp/` URIs become a typed, zeroizing
//! [`Seed`] (plus the parameters a URI carries), or a [`SecretError`] that names the offending
//! character, what is allowed and the fix — never the secret itself.
//!
//! Everything downstream takes a [`Seed`], so the rules enforced here (80-bit floor, 1024-bit
//! ceiling, no guessing between hex and base32) hold everywhere. Intermediate copies of the
//! secret (the cleaned input, decoded bytes, the parsed URI) are zeroized when dropped.

use std::fmt;
use std::str::FromStr;

use data_encoding::HEXLOWER_PERMISSIVE;
use zeroize::Zeroizing;

/// 80 bits: below RFC 4226 §4's 128, but what many hardware tokens ship, so accepted with a warning.
const MIN_SEED_BYTES: usize = 10;
/// 128 bits, RFC 4226 §4's minimum; shorter seeds carry a warning.
const RECOMMENDED_SEED_BYTES: usize = 16;
/// 1024 bits, the HMAC-SHA-512 block size: longer keys are hashed down by HMAC anyway, so a
/// longer value is a paste error rather than a seed.
const MAX_SEED_BYTES: usize = 128;

/// A TOTP seed. Zeroized on drop; deliberately no Debug, Display, Clone, Serialize.
pub struct Seed(Zeroizing<Vec<u8>>);

impl Seed {
    /// Wraps raw seed bytes (e.g. decrypted from PSKC or unsealed from the vault), refusing fewer
    /// than 80 or more than 1024 bits. Refused bytes are zeroized too. Text input goes through
    /// [`parse_secret`] instead.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Seed, SecretError> {
        let bytes = Zeroizing::new(bytes);
        let bits = bytes.len() * 8;
        if bytes.len() < MIN_SEED_BYTES {
            return Err(SecretError::TooShort { bits });
        }
        if bytes.len() > MAX_SEED_BYTES {
            return Err(SecretError::TooLong { bits });
        }
        Ok(Seed(bytes))
    }

    /// The raw seed, for the HMAC and for sealing; do not copy it anywhere that is not zeroized.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length of the seed in bits.
    pub fn bits(&self) -> usize {
        self.0.len() * 8
    }

    /// Whether the seed is shorter than the 128 bits RFC 4226 asks for (accepted with a warning).
    pub fn is_short(&self) -> bool {
        self.0.len() < RECOMMENDED_SEED_BYTES
    }
}

/// The HMAC hash of a TOTP token (RFC 6238 §1.2).
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
    /// The canonical name, as stored and as written in otpauth URIs: `SHA1`, `SHA256`, `SHA512`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Sha1 => "SHA1",
            Self::Sha256 => "SHA256",
            Self::Sha512 => "SHA512",
        }
    }

    /// Reads an algorithm name the way vendors write it: any case, with or without dashes,
    /// underscores or an `HMAC` prefix (`sha1`, `SHA-256`, `HMAC-SHA512`, `HmacSHA1`).
    pub fn parse(s: &str) -> Result<Self, SecretError> {
        let name = s
            .trim()
            .chars()
            .filter(|c| !matches!(c, '-' | '_' | ' '))
            .collect::<String>()
            .to_ascii_uppercase();
        match name.strip_prefix("HMAC").unwrap_or(&name) {
            "SHA1" => Ok(Self::Sha1),
            "SHA256" => Ok(Self::Sha256),
            "SHA512" => Ok(Self::Sha512),
            _ => Err(SecretError::UnknownAlgorithm(echo(s))),
        }
    }
}

/// How a secret is written. [`SecretFormat::Auto`] recognises URIs and tells hex from base32,
/// refusing values that are valid as both.
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

    /// Accepts `auto`, `base32`, `hex` or `otpauth`, in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "base32" => Ok(Self::Base32),
            "hex" => Ok(Self::Hex),
            "otpauth" => Ok(Self::Otpauth),
            _ => Err(SecretError::UnknownFormat(echo(s))),
        }
    }
}

/// Parameters an otpauth:// URI carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtpauthParams {
    pub issuer: Option<String>,
    pub account: Option<String>,
    pub algorithm: Algorithm,
    pub digits: u32,
    pub period: u32,
}

/// A parsed secret: the seed, the URI's parameters when it came as one, and warnings to show the
/// provisioner (e.g. a short seed) that do not stop the capture.
pub struct ParsedSecret {
    pub seed: Seed,
    pub otpauth: Option<OtpauthParams>,
    pub warnings: Vec<String>,
}

/// Why a secret was refused. Messages name the offending character at most, never the secret.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("secret is empty")]
    Empty,
    #[error(
        "secret is {bits} bits; at least 80 bits are needed — check that it was not truncated"
    )]
    TooShort { bits: usize },
    #[error(
        "secret is {bits} bits; at most 1024 bits are accepted — check that this is a TOTP seed"
    )]
    TooLong { bits: usize },
    #[error("{} is not a base32 character — base32 uses A–Z and 2–7; {}", Shown(*.0), base32_fix(*.0))]
    NotBase32(char),
    #[error("{} is not a hex character — hex uses 0–9 and A–F; {}", Shown(*.0), hex_fix(*.0))]
    NotHex(char),
    #[error("hex secret has an odd number of digits — every byte needs two; check for a missing or extra digit")]
    OddHex,
    #[error("base32 secret has a length no encoded seed can have — check for a missing or extra character")]
    Base32Length,
    #[error("the secret is valid both as hex and as base32 — choose the format \"hex\" or \"base32\" (CLI: --format hex|base32)")]
    Ambiguous,
    #[error("this is an otpauth:// URI — choose the format \"otpauth\" or \"auto\"")]
    UnexpectedUri,
    #[error("unknown secret format '{0}' — use auto, base32, hex or otpauth")]
    UnknownFormat(String),
    #[error("unknown algorithm '{0}' — use SHA1, SHA256 or SHA512")]
    UnknownAlgorithm(String),
    #[error("otpauth URI: {} in the secret parameter is not a base32 character — otpauth secrets use A–Z and 2–7", Shown(*.0))]
    OtpauthSecretChar(char),
    /// Static text only, so a message can never carry part of the URI (and so of the secret).
    #[error("otpauth URI: {0}")]
    Otpauth(&'static str),
}

/// Shows one offending character: quoted when visible, as a code point when not (a pasted
/// zero-width space or control character would otherwise print as nothing).
struct Shown(char);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_alphanumeric() || self.0.is_ascii_punctuation() {
            write!(f, "'{}'", self.0)
        } else {
            write!(f, "U+{:04X}", u32::from(self.0))
        }
    }
}

fn base32_fix(c: char) -> &'static str {
    match c {
        // The only hex digits base32 lacks: the likeliest cause is hex given as base32.
        '0' | '1' | '8' | '9' => "if this is hex, choose the hex format",
        '=' => "'=' padding may only come at the end",
        _ => "remove it or copy the secret again",
    }
}

fn hex_fix(c: char) -> &'static str {
    if c.is_ascii_alphabetic() {
        "if this is base32, choose the base32 format"
    } else {
        "remove it or copy the secret again"
    }
}

/// Repeats a (non-secret) name back in an error: trimmed, printable, bounded.
fn echo(s: &str) -> String {
    s.trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(20)
        .collect()
}

/// Parses a secret written as `format`; [`SecretFormat::Auto`] detects URIs and hex vs base32.
pub fn parse_secret(input: &str, format: SecretFormat) -> Result<ParsedSecret, SecretError> {
    let input = input.trim();
    if input.is_empty() {
        return Err(SecretError::Empty);
    }
    let uri = is_otpauth(input);
    match format {
        SecretFormat::Otpauth => parse_otpauth(input),
        SecretFormat::Auto if uri => parse_otpauth(input),
        SecretFormat::Base32 | SecretFormat::Hex if uri => Err(SecretError::UnexpectedUri),
        SecretFormat::Base32 => accept(decode_base32(input)?),
        SecretFormat::Hex => accept(decode_hex(input)?),
        SecretFormat::Auto => match (decode_base32(input), decode_hex(input)) {
            // Guessing would silently escrow the wrong seed: the token would never match.
            (Ok(_), Ok(_)) => Err(SecretError::Ambiguous),
            (Ok(bytes), Err(_)) | (Err(_), Ok(bytes)) => accept(bytes),
            // Report against the encoding the value resembles: all hex digits means hex.
            (Err(base32), Err(SecretError::NotHex(_))) => Err(base32),
            (Err(_), Err(hex)) => Err(hex),
        },
    }
}

/// Parses an `otpauth://totp/LABEL?secret=…` URI (Google Authenticator's Key URI Format): label
/// `Issuer:account`, defaults SHA1, 6 digits, 30 s. HOTP URIs are refused.
pub fn parse_otpauth(uri: &str) -> Result<ParsedSecret, SecretError> {
    let url = url::Url::parse(uri.trim())
        .map_err(|_| SecretError::Otpauth("not a URI — expected otpauth://totp/LABEL?secret=…"))?;
    let parsed = read_otpauth(&url);
    // The URI's own buffer holds the secret: wipe it rather than leave it in freed memory.
    drop(Zeroizing::new(String::from(url)));
    parsed
}

fn read_otpauth(url: &url::Url) -> Result<ParsedSecret, SecretError> {
    if url.scheme() != "otpauth" {
        return Err(SecretError::Otpauth("the URI must start with otpauth://"));
    }
    match url.host_str() {
        Some(kind) if kind.eq_ignore_ascii_case("totp") => {}
        Some(kind) if kind.eq_ignore_ascii_case("hotp") => return Err(SecretError::Otpauth(
            "HOTP (counter-based) tokens are not supported — seedvault escrows TOTP tokens only",
        )),
        _ => {
            return Err(SecretError::Otpauth(
                "expected otpauth://totp/LABEL?secret=…",
            ))
        }
    }
    let label = percent_decode(url.path().trim_start_matches('/'));
    let (label_issuer, account) = match label.split_once(':') {
        Some((issuer, account)) => (non_empty(issuer), non_empty(account)),
        None => (None, non_empty(&label)),
    };
    let mut params = OtpauthParams {
        issuer: None,
        account,
        algorithm: Algorithm::Sha1,
        digits: 6,
        period: 30,
    };
    let mut secret = None;
    for (key, value) in url.query_pairs() {
        match key.to_ascii_lowercase().as_str() {
            "secret" => secret = Some(Zeroizing::new(value.into_owned())),
            "issuer" => params.issuer = non_empty(&value),
            "algorithm" => params.algorithm = Algorithm::parse(&value)?,
            "digits" => {
                params.digits = match value.trim() {
                    "6" => 6,
                    "8" => 8,
                    _ => return Err(SecretError::Otpauth("digits must be 6 or 8")),
                }
            }
            "period" => {
                params.period = value
                    .trim()
                    .parse()
                    .ok()
                    .filter(|p| (1..=3600).contains(p))
                    .ok_or(SecretError::Otpauth(
                        "period must be a whole number of seconds from 1 to 3600",
                    ))?
            }
            // counter, image and vendor extensions carry nothing a TOTP escrow needs.
            _ => {}
        }
    }
    let secret = secret.ok_or(SecretError::Otpauth("the secret parameter is missing"))?;
    // The Key URI Format fixes base32, so the hex hint of `NotBase32` would mislead here.
    let bytes = decode_base32(&secret).map_err(|e| match e {
        SecretError::NotBase32(c) => SecretError::OtpauthSecretChar(c),
        other => other,
    })?;
    let mut parsed = accept(bytes)?;
    // The issuer parameter is preferred when both are present (Key URI Format, "Issuer").
    match (label_issuer, &params.issuer) {
        (Some(label), Some(param)) if label != *param => parsed.warnings.push(
            "the label's issuer differs from the issuer parameter; the parameter is kept".into(),
        ),
        (label, None) => params.issuer = label,
        _ => {}
    }
    parsed.otpauth = Some(params);
    Ok(parsed)
}

fn is_otpauth(input: &str) -> bool {
    input
        .get(..10)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("otpauth://"))
}

/// Copies `input` without the separators people type or paste between groups: whitespace,
/// dashes (ASCII and typographic, as word processors turn them) and `extra`.
fn clean(input: &str, extra: &[char]) -> Zeroizing<String> {
    // Full capacity up front: a growing String would leave copies of the secret in freed buffers.
    let mut cleaned = Zeroizing::new(String::with_capacity(input.len()));
    cleaned.extend(input.chars().filter(|&c| {
        !(c.is_whitespace()
            || matches!(c, '-' | '\u{2010}'..='\u{2015}' | '\u{2212}')
            || extra.contains(&c))
    }));
    cleaned
}

/// RFC 4648 §6 base32, case-insensitive, padding optional and tolerated even when wrong, and
/// unused trailing bits ignored (some exporters leave them set).
fn decode_base32(input: &str) -> Result<Zeroizing<Vec<u8>>, SecretError> {
    let cleaned = clean(input, &[]);
    let body = cleaned.trim_end_matches('=');
    if body.is_empty() {
        return Err(SecretError::Empty);
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(body.len() * 5 / 8));
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in body.chars() {
        let value = match c.to_ascii_uppercase() {
            upper @ 'A'..='Z' => u32::from(upper) - u32::from('A'),
            digit @ '2'..='7' => u32::from(digit) - u32::from('2') + 26,
            _ => return Err(SecretError::NotBase32(c)),
        };
        buffer = (buffer << 5) | value;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            bytes.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    // Whole bytes leave 0, 2, 4, 5 or 7 characters over a block of 8; 1, 3 or 6 mean a character
    // was lost or added.
    if matches!(body.len() % 8, 1 | 3 | 6) {
        return Err(SecretError::Base32Length);
    }
    Ok(bytes)
}

/// Hex, case-insensitive, with an optional `0x` and any spaces, dashes or colons between bytes.
fn decode_hex(input: &str) -> Result<Zeroizing<Vec<u8>>, SecretError> {
    let cleaned = clean(input, &[':']);
    let body = cleaned
        .strip_prefix("0x")
        .or_else(|| cleaned.strip_prefix("0X"))
        .unwrap_or(&cleaned);
    if body.is_empty() {
        return Err(SecretError::Empty);
    }
    if let Some(bad) = body.chars().find(|c| !c.is_ascii_hexdigit()) {
        return Err(SecretError::NotHex(bad));
    }
    if body.len() % 2 != 0 {
        return Err(SecretError::OddHex);
    }
    HEXLOWER_PERMISSIVE
        .decode(body.as_bytes())
        .map(Zeroizing::new)
        .map_err(|_| SecretError::OddHex)
}

/// Applies the size rules, warning about seeds under 128 bits.
fn accept(mut bytes: Zeroizing<Vec<u8>>) -> Result<ParsedSecret, SecretError> {
    // Move the bytes rather than copy them, so no second copy outlives this call.
    let seed = Seed::from_bytes(std::mem::take(&mut *bytes))?;
    let mut warnings = Vec::new();
    if seed.is_short() {
        warnings.push(format!(
            "secret is {} bits; RFC 4226 asks for at least 128 bits — accepted because many hardware tokens ship 80-bit seeds",
            seed.bits()
        ));
    }
    Ok(ParsedSecret {
        seed,
        otpauth: None,
        warnings,
    })
}

fn non_empty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

/// Percent-decodes an otpauth label (RFC 3986 §2.1). A malformed escape is kept as typed: the
/// label only names the account, which is no reason to refuse a capture.
fn percent_decode(text: &str) -> String {
    let nibble = |b: &u8| char::from(*b).to_digit(16);
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        match tail {
            [hi, lo, after @ ..] if first == b'%' => match (nibble(hi), nibble(lo)) {
                (Some(hi), Some(lo)) => {
                    out.push((hi << 4 | lo) as u8);
                    rest = after;
                    continue;
                }
                _ => out.push(first),
            },
            _ => out.push(first),
        }
        rest = tail;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// Compiles only while `T` is not `Debug` (the two impls make `_` ambiguous otherwise).
    trait AmbiguousIfDebug<A> {
        fn some_item() {}
    }
    impl<T: ?Sized> AmbiguousIfDebug<()> for T {}
    impl<T: ?Sized + fmt::Debug> AmbiguousIfDebug<u8> for T {}

    const RFC_BASE32: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
    const RFC_HEX: &str = "3132333435363738393031323334353637383930";
    const URI_ALL: &str = "otpauth://totp/Example%20Corp:user2%40example.org?secret=TT4MGKVES2XNZYPNNDW3LJIOHJ55QUHI7GUBDVU6NSTG3NSGAR4A&issuer=Example%20Corp&algorithm=SHA256&digits=8&period=30";

    /// (input, format, seed bits or a substring of the error message).
    #[rustfmt::skip]
    const TABLE: &[(&str, SecretFormat, Result<usize, &str>)] = &[
        // base32 spellings
        (RFC_BASE32, SecretFormat::Base32, Ok(160)),
        ("gezdgnbvgy3tqojqgezdgnbvgy3tqojq", SecretFormat::Base32, Ok(160)),
        ("gezd gnbv gy3t\tqojq gezd gnbv gy3t qojq", SecretFormat::Auto, Ok(160)),
        ("GEZD-GNBV-GY3T-QOJQ-GEZD-GNBV-GY3T-QOJQ", SecretFormat::Auto, Ok(160)),
        ("GEZD–GNBV–GY3T–QOJQ–GEZD–GNBV–GY3T–QOJQ", SecretFormat::Base32, Ok(160)),
        ("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ========", SecretFormat::Base32, Ok(160)),
        ("UFOEYZUHILYLDNGO======", SecretFormat::Base32, Ok(80)),
        ("TT4MGKVES2XNZYPNNDW3LJIOHJ55QUHI7GUBDVU6NSTG3NSGAR4A", SecretFormat::Auto, Ok(256)),
        ("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJR", SecretFormat::Base32, Ok(160)), // trailing bits set
        // hex spellings
        (RFC_HEX, SecretFormat::Hex, Ok(160)),
        ("0x3132333435363738393031323334353637383930", SecretFormat::Auto, Ok(160)),
        ("31:32:33:34:35:36:37:38:39:30:31:32:33:34:35:36", SecretFormat::Auto, Ok(128)),
        ("899120BA6CFB93FE37731592DA56526822B37598", SecretFormat::Auto, Ok(160)),
        ("899120ba 6cfb93fe", SecretFormat::Hex, Err("secret is 64 bits; at least 80 bits are needed — check that it was not truncated")),
        // otpauth
        (URI_ALL, SecretFormat::Auto, Ok(256)),
        ("OTPAUTH://TOTP/x?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ", SecretFormat::Auto, Ok(160)),
        (URI_ALL, SecretFormat::Otpauth, Ok(256)),
        (URI_ALL, SecretFormat::Base32, Err("this is an otpauth:// URI — choose the format \"otpauth\" or \"auto\"")),
        ("otpauth://hotp/X?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&counter=0", SecretFormat::Auto, Err("seedvault escrows TOTP tokens only")),
        ("otpauth://totp/X?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&digits=7", SecretFormat::Auto, Err("digits must be 6 or 8")),
        ("otpauth://totp/X?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&period=0", SecretFormat::Auto, Err("period must be a whole number of seconds from 1 to 3600")),
        ("otpauth://totp/X?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&algorithm=MD5", SecretFormat::Auto, Err("unknown algorithm 'MD5' — use SHA1, SHA256 or SHA512")),
        ("otpauth://totp/X?issuer=Y", SecretFormat::Otpauth, Err("the secret parameter is missing")),
        ("otpauth://totp/X?secret=3132333435363738393031323334353637383930", SecretFormat::Otpauth, Err("'1' in the secret parameter is not a base32 character")),
        (RFC_BASE32, SecretFormat::Otpauth, Err("expected otpauth://totp/LABEL?secret=…")),
        // sizes
        ("GEZDGNBVGY3TQ", SecretFormat::Base32, Err("secret is 64 bits; at least 80 bits are needed — check that it was not truncated")),
        ("UFOEYZUHILYLDNGO", SecretFormat::Auto, Ok(80)),
        ("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ", SecretFormat::Base32, Err("secret is 1440 bits; at most 1024 bits are accepted")),
        // ambiguity
        ("2345234523452345", SecretFormat::Auto, Err("the secret is valid both as hex and as base32 — choose the format \"hex\" or \"base32\"")),
        ("ABCDEF2345672345ABCDEF2345672345", SecretFormat::Auto, Err("valid both as hex and as base32")),
        ("2345234523452345", SecretFormat::Base32, Ok(80)),
        ("23452345234523452345", SecretFormat::Hex, Ok(80)),
        // characters outside the alphabet
        ("GEZDGNBVGY3TQOJ0GEZDGNBVGY3TQOJQ", SecretFormat::Base32, Err("'0' is not a base32 character — base32 uses A–Z and 2–7; if this is hex, choose the hex format")),
        ("GEZDGNBVGY3TQOJ1", SecretFormat::Base32, Err("'1' is not a base32 character — base32 uses A–Z and 2–7; if this is hex, choose the hex format")),
        ("GEZDGNBVGY3TQOJ0GEZDGNBVGY3TQOJQ", SecretFormat::Auto, Err("'0' is not a base32 character — base32 uses A–Z and 2–7; if this is hex, choose the hex format")),
        ("GEZDGNBVGY3TQOJQG!ZDGNBVGY3TQOJQ", SecretFormat::Auto, Err("'!' is not a base32 character — base32 uses A–Z and 2–7; remove it or copy the secret again")),
        ("GEZDGNBVGY3TQOJQ\u{200B}GEZDGNBVGY3TQOJQ", SecretFormat::Base32, Err("U+200B is not a base32 character")),
        ("GEZDGNBV=GY3TQOJQ", SecretFormat::Base32, Err("'=' padding may only come at the end")),
        ("313233343536373839303132333435363738393g", SecretFormat::Hex, Err("'g' is not a hex character — hex uses 0–9 and A–F; if this is base32, choose the base32 format")),
        ("31323334353637383930313233343536373839303", SecretFormat::Hex, Err("hex secret has an odd number of digits")),
        ("31323334353637383930313233343536373839303", SecretFormat::Auto, Err("hex secret has an odd number of digits")),
        ("GEZDGNBVGY3TQOJQG", SecretFormat::Base32, Err("base32 secret has a length no encoded seed can have")),
        // empty
        ("", SecretFormat::Auto, Err("secret is empty")),
        (" \t\n", SecretFormat::Base32, Err("secret is empty")),
        ("----====", SecretFormat::Base32, Err("secret is empty")),
        ("0x", SecretFormat::Hex, Err("secret is empty")),
    ];

    #[test]
    fn secrets_parse_or_are_refused_as_the_table_says() {
        for (input, format, expected) in TABLE {
            match (parse_secret(input, *format), expected) {
                (Ok(parsed), Ok(bits)) => {
                    assert_eq!(parsed.seed.bits(), *bits, "{input:?} as {format:?}");
                    assert_eq!(parsed.seed.is_short(), *bits < 128, "{input:?}");
                }
                (Err(e), Err(message)) => {
                    let text = e.to_string();
                    assert!(text.contains(message), "{input:?} as {format:?}: {text}");
                }
                (Ok(_), Err(message)) => panic!("{input:?} as {format:?} parsed; wanted {message}"),
                (Err(e), Ok(_)) => panic!("{input:?} as {format:?} refused: {e}"),
            }
        }
    }

    #[test]
    fn a_seed_under_128_bits_is_accepted_with_a_warning() {
        let short = parse_secret("UFOEYZUHILYLDNGO", SecretFormat::Auto).unwrap();
        assert_eq!(
            short.warnings,
            ["secret is 80 bits; RFC 4226 asks for at least 128 bits — accepted because many hardware tokens ship 80-bit seeds"]
        );
        assert!(parse_secret(RFC_BASE32, SecretFormat::Auto)
            .unwrap()
            .warnings
            .is_empty());
    }

    #[test]
    fn hex_and_base32_spellings_decode_to_the_same_bytes() {
        let base32 = parse_secret(RFC_BASE32, SecretFormat::Base32).unwrap();
        let hex = parse_secret(RFC_HEX, SecretFormat::Hex).unwrap();
        assert_eq!(base32.seed.expose(), b"12345678901234567890");
        assert_eq!(hex.seed.expose(), b"12345678901234567890");
    }

    #[test]
    fn an_otpauth_uri_brings_its_parameters_and_defaults() {
        let params = parse_secret(URI_ALL, SecretFormat::Auto)
            .unwrap()
            .otpauth
            .unwrap();
        assert_eq!(
            params,
            OtpauthParams {
                issuer: Some("Example Corp".into()),
                account: Some("user2@example.org".into()),
                algorithm: Algorithm::Sha256,
                digits: 8,
                period: 30,
            }
        );
        let plain =
            parse_otpauth("otpauth://totp/ACME:%20jane?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ")
                .unwrap();
        assert!(plain.warnings.is_empty());
        assert_eq!(
            plain.otpauth.unwrap(),
            OtpauthParams {
                issuer: Some("ACME".into()),
                account: Some("jane".into()),
                algorithm: Algorithm::Sha1,
                digits: 6,
                period: 30,
            }
        );
        let conflicting = parse_otpauth(
            "otpauth://totp/Old:jane?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=New",
        )
        .unwrap();
        assert_eq!(conflicting.otpauth.unwrap().issuer.as_deref(), Some("New"));
        assert_eq!(conflicting.warnings.len(), 1);
    }

    #[test]
    fn error_messages_never_repeat_the_secret() {
        // Windows of three: two-character windows collide with the fixed text ("32" in "base32").
        for (input, _, expected) in TABLE.iter().filter(|(_, _, e)| e.is_err()) {
            // In a URI only the secret parameter is secret.
            let secret = if is_otpauth(input) {
                input
                    .split_once("secret=")
                    .map_or("", |(_, rest)| rest.split('&').next().unwrap_or(rest))
            } else {
                input
            }
            .to_ascii_lowercase();
            for format in [
                SecretFormat::Auto,
                SecretFormat::Base32,
                SecretFormat::Hex,
                SecretFormat::Otpauth,
            ] {
                let Err(e) = parse_secret(input, format) else {
                    continue;
                };
                let message = e.to_string().to_ascii_lowercase();
                for window in secret.as_bytes().windows(3) {
                    assert!(
                        !message.as_bytes().windows(3).any(|w| w == window),
                        "{message:?} repeats part of {input:?} (expected {expected:?})"
                    );
                }
            }
        }
    }

    #[test]
    fn algorithms_and_formats_read_the_way_vendors_write_them() {
        for (name, algorithm) in [
            ("SHA1", Algorithm::Sha1),
            ("sha-1", Algorithm::Sha1),
            ("HMAC-SHA1", Algorithm::Sha1),
            ("HmacSHA256", Algorithm::Sha256),
            ("sha512", Algorithm::Sha512),
        ] {
            assert_eq!(Algorithm::parse(name), Ok(algorithm), "{name}");
            assert_eq!(Algorithm::parse(algorithm.as_str()), Ok(algorithm));
        }
        for (name, format) in [
            ("auto", SecretFormat::Auto),
            ("Base32", SecretFormat::Base32),
            ("HEX", SecretFormat::Hex),
            ("otpauth", SecretFormat::Otpauth),
        ] {
            assert_eq!(name.parse(), Ok(format));
        }
        let refused = "base64".parse::<SecretFormat>().unwrap_err().to_string();
        assert_eq!(
            refused,
            "unknown secret format 'base64' — use auto, base32, hex or otpauth"
        );
    }

    #[test]
    fn raw_seeds_are_bounded_at_80_and_1024_bits() {
        assert_eq!(
            Seed::from_bytes(vec![7; 9]).err(),
            Some(SecretError::TooShort { bits: 72 })
        );
        assert_eq!(Seed::from_bytes(vec![7; 10]).unwrap().bits(), 80);
        assert_eq!(Seed::from_bytes(vec![7; 128]).unwrap().bits(), 1024);
        assert_eq!(
            Seed::from_bytes(vec![7; 129]).err(),
            Some(SecretError::TooLong { bits: 1032 })
        );
    }

    #[test]
    fn a_seed_cannot_be_debug_printed() {
        <Seed as AmbiguousIfDebug<_>>::some_item();
    }
}
