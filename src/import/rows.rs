//! The checks every format shares (serial, owner, secret, digits, step, free text) and the
//! report they fill.
//!
//! A rule kept throughout: an error never quotes a cell that could hold a secret. Serials
//! are quoted only once they are known to be serials (duplicates, scientific notation);
//! secrets are described by their length or a single offending character.

use std::collections::HashMap;

use crate::secret::{self, Algorithm, ParsedSecret, SecretError, SecretFormat, Seed};
use crate::tokens::{self, TokenError};

use super::text::{self, Line, ZStr};
use super::{ImportFormat, ImportRow, ParsedFile, RowError, RowWarning};

/// What is wrong with one cell, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub reason: String,
    pub fix: String,
}

impl Problem {
    pub(crate) fn new(reason: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            fix: fix.into(),
        }
    }
}

/// Rows, warnings and errors as a parser finds them, plus the serials seen so far. At most
/// [`super::MAX_LISTED`] errors and as many warnings are kept; the rest are only counted, so
/// that a hostile file (a million unknown columns) cannot make a report of a million entries.
#[derive(Default)]
pub(crate) struct Report {
    rows: Vec<ImportRow>,
    warnings: Vec<RowWarning>,
    errors: Vec<RowError>,
    errors_omitted: usize,
    warnings_omitted: usize,
    /// Lines with at least one error, listed or not.
    error_lines: std::collections::HashSet<usize>,
    seen: HashMap<String, usize>,
    skipped: usize,
}

impl Report {
    pub(crate) fn error(
        &mut self,
        line: usize,
        column: &str,
        reason: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.push_error(RowError {
            line,
            column: column.to_owned(),
            reason: reason.into(),
            fix: fix.into(),
        });
    }

    pub(crate) fn problem(&mut self, line: usize, column: &str, problem: Problem) {
        self.error(line, column, problem.reason, problem.fix);
    }

    pub(crate) fn push_error(&mut self, error: RowError) {
        self.error_lines.insert(error.line);
        if self.errors.len() < super::MAX_LISTED {
            self.errors.push(error);
        } else {
            self.errors_omitted += 1;
        }
    }

    pub(crate) fn warn(&mut self, line: usize, message: impl Into<String>) {
        if self.warnings.len() < super::MAX_LISTED {
            self.warnings.push(RowWarning {
                line,
                message: message.into(),
            });
        } else {
            self.warnings_omitted += 1;
        }
    }

    /// A record left out on the user's request: counted, and listed as a warning.
    pub(crate) fn skip(&mut self, line: usize, message: impl Into<String>) {
        self.skipped += 1;
        self.warn(line, message);
    }

    pub(crate) fn skipped(&self) -> usize {
        self.skipped
    }

    /// Neither a row nor an error so far.
    pub(crate) fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.errors.is_empty()
    }

    /// Adds a valid row with the warnings its secret raised, unless its serial is already
    /// in the file: then the row is an error that names both lines.
    pub(crate) fn add_row(&mut self, row: ImportRow, serial_column: &str, warnings: Vec<String>) {
        if let Some(&first) = self.seen.get(&row.serial) {
            self.error(
                row.line,
                serial_column,
                format!("serial '{}' is already on line {first}", row.serial),
                "each token may appear once — remove the repeated row, or correct the mistyped serial",
            );
            return;
        }
        self.seen.insert(row.serial.clone(), row.line);
        for message in warnings {
            self.warn(row.line, format!("serial {}: {message}", row.serial));
        }
        self.rows.push(row);
    }

    pub(crate) fn finish(mut self, format: ImportFormat) -> ParsedFile {
        self.errors.sort_by_key(|e| e.line);
        self.warnings.sort_by_key(|w| w.line);
        ParsedFile {
            format,
            rows: self.rows,
            warnings: self.warnings,
            errors: self.errors,
            warnings_omitted: self.warnings_omitted,
            errors_omitted: self.errors_omitted,
            error_lines: self.error_lines.len(),
            skipped: self.skipped,
        }
    }
}

/// Collects the problems of one row, so every bad cell is reported, not just the first.
pub(crate) struct RowCheck<'r> {
    line: usize,
    report: &'r mut Report,
    passed: bool,
}

impl<'r> RowCheck<'r> {
    pub(crate) fn new(line: usize, report: &'r mut Report) -> Self {
        Self {
            line,
            report,
            passed: true,
        }
    }

    /// The value, or `None` with the problem reported against `column`.
    pub(crate) fn take<T>(&mut self, column: &str, result: Result<T, Problem>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(problem) => {
                self.fail(column, problem);
                None
            }
        }
    }

    pub(crate) fn fail(&mut self, column: &str, problem: Problem) {
        self.report.problem(self.line, column, problem);
        self.passed = false;
    }

    /// No cell of the row had a problem.
    pub(crate) fn passed(&self) -> bool {
        self.passed
    }
}

/// Splits each non-blank line into cells and hands them to `read`, skipping rows of empty
/// cells (spreadsheets leave `,,,,` behind); a line whose quotes do not close is an error.
pub(crate) fn each_csv_row<'t>(
    lines: impl Iterator<Item = Line<'t>>,
    delimiter: u8,
    report: &mut Report,
    mut read: impl FnMut(usize, &[ZStr<'t>], &mut Report),
) {
    for line in lines {
        if line.text.trim().is_empty() {
            continue;
        }
        match text::split_cells(line.text, delimiter) {
            Ok(cells) if text::all_blank(&cells) => {}
            Ok(cells) => read(line.number, &cells, report),
            Err(e) => report.error(line.number, "row", e.reason(), e.fix()),
        }
    }
}

/// The warnings a seed earns on its own (PSKC seeds do not pass through `parse_secret`).
pub(crate) fn seed_warnings(seed: &Seed) -> Vec<String> {
    if seed.is_short() {
        vec![format!(
            "secret is {} bits; RFC 4226 recommends at least 128 bits — accepted because many hardware tokens ship 80-bit seeds",
            seed.bits()
        )]
    } else {
        Vec::new()
    }
}

/// `7.00E+06`: what a spreadsheet shows (and then saves) for a long number.
fn is_scientific(value: &str) -> bool {
    let Some((mantissa, exponent)) = value.split_once(['E', 'e']) else {
        return false;
    };
    let Some(exponent_digits) = exponent
        .strip_prefix('+')
        .or_else(|| exponent.strip_prefix('-'))
    else {
        return false;
    };
    let (whole, fraction) = mantissa
        .split_once(['.', ','])
        .map_or((mantissa, None), |(w, f)| (w, Some(f)));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(whole) && fraction.is_none_or(digits) && digits(exponent_digits)
}

/// `7000001.00`: a serial a spreadsheet formatted as a number with decimals.
fn is_decimal_with_zeros(value: &str) -> bool {
    value.split_once(['.', ',']).is_some_and(|(whole, zeros)| {
        !whole.is_empty()
            && whole.bytes().all(|b| b.is_ascii_digit())
            && !zeros.is_empty()
            && zeros.bytes().all(|b| b == b'0')
    })
}

/// Excel's way to keep leading zeros in a CSV: `="007"`.
fn strip_text_formula(value: &str) -> &str {
    value
        .strip_prefix("=\"")
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

const RE_EXPORT: &str =
    "format the column as text in the spreadsheet and export again from the vendor's original file";

/// Checks a serial like capture does, and catches spreadsheet damage first.
pub(crate) fn check_serial(raw: &str) -> Result<String, Problem> {
    let value = strip_text_formula(raw.trim()).trim();
    if value.is_empty() {
        return Err(Problem::new(
            "the serial is empty",
            "fill in the serial printed on the token",
        ));
    }
    if is_scientific(value) {
        return Err(Problem::new(
            format!("'{value}' is a number in scientific notation; a spreadsheet rewrote the serial and its real digits are lost"),
            RE_EXPORT,
        ));
    }
    if is_decimal_with_zeros(value) {
        return Err(Problem::new(
            format!("'{value}' is a serial a spreadsheet reformatted as a decimal number"),
            RE_EXPORT,
        ));
    }
    tokens::clean_serial(value).map_err(|e| match e {
        TokenError::Invalid { reason, .. } => Problem::new(
            format!("the serial {reason}"),
            "use the serial printed on the token",
        ),
        other => Problem::new(other.to_string(), ""),
    })
}

/// Trims a free-text column (manufacturer, model, display name); empty becomes `None`.
pub(crate) fn check_text(column: &'static str, raw: &str) -> Result<Option<String>, Problem> {
    tokens::clean_field(column, Some(raw)).map_err(|e| match e {
        TokenError::Invalid { reason, .. } => Problem::new(
            format!("the {column} is {reason}"),
            "shorten the value and remove line breaks or control characters",
        ),
        other => Problem::new(other.to_string(), ""),
    })
}

/// `name@domain.tld` without spaces: what a UPN (or an e-mail address) looks like.
pub(crate) fn looks_like_upn(value: &str) -> bool {
    let Some((local, domain)) = value.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !value.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// An owner UPN; empty is `None` (the token is escrowed unassigned).
pub(crate) fn check_upn(raw: &str) -> Result<Option<String>, Problem> {
    let Some(value) = check_text("upn", raw)? else {
        return Ok(None);
    };
    if looks_like_upn(&value) {
        Ok(Some(value))
    } else {
        Err(Problem::new(
            "the upn is not a user principal name (name@domain, no spaces)",
            "enter the user's sign-in name, e.g. user@example.org, or leave the cell empty to escrow the token unassigned",
        ))
    }
}

/// Seconds per step. `entra_only` limits it to Microsoft's 30 or 60.
pub(crate) fn check_period(raw: &str, entra_only: bool) -> Result<u32, Problem> {
    let value = raw.trim();
    let value = value
        .strip_suffix('s')
        .or_else(|| value.strip_suffix('S'))
        .unwrap_or(value)
        .trim();
    if value.is_empty() {
        return Err(Problem::new(
            "the time interval is empty",
            "enter the token's time step in seconds, usually 30 or 60",
        ));
    }
    let Ok(period) = value.parse::<u32>() else {
        return Err(Problem::new(
            "the time interval is not a whole number of seconds",
            "enter the token's time step in seconds, usually 30 or 60",
        ));
    };
    if entra_only && period != 30 && period != 60 {
        return Err(Problem::new(
            format!("{period} seconds is not a time interval of the Entra OATH format"),
            "Entra accepts 30 or 60; check the token's data sheet (or import it as a vendor file)",
        ));
    }
    if !(1..=3600).contains(&period) {
        return Err(Problem::new(
            format!("{period} seconds is not a usable time interval"),
            "enter the token's time step in seconds, between 1 and 3600 (usually 30 or 60)",
        ));
    }
    Ok(period)
}

/// Code length: 6 or 8; empty means 6.
pub(crate) fn check_digits(raw: &str) -> Result<u32, Problem> {
    match raw.trim() {
        "" | "6" => Ok(6),
        "8" => Ok(8),
        _ => Err(Problem::new(
            "the code length is not 6 or 8",
            "enter 6 or 8, the number of digits the token shows",
        )),
    }
}

/// HMAC hash; empty means SHA1.
pub(crate) fn check_algorithm(raw: &str) -> Result<Algorithm, Problem> {
    if raw.trim().is_empty() {
        return Ok(Algorithm::Sha1);
    }
    Algorithm::parse(raw).map_err(|_| {
        Problem::new(
            "the algorithm is not SHA1, SHA256 or SHA512",
            "enter SHA1, SHA256 or SHA512 (SHA1 when the vendor does not say)",
        )
    })
}

/// How the secrets of a CSV are written, once the format's default is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Base32,
    Hex,
    /// Decide per secret; a secret valid in both is an error.
    Either,
}

fn show(c: char) -> String {
    c.escape_debug().to_string()
}

/// Describes a [`SecretError`] without the secret.
pub(crate) fn secret_problem(error: &SecretError) -> Problem {
    match error {
        SecretError::Empty => Problem::new(
            "the secret is empty",
            "copy the secret from the vendor's seed file",
        ),
        SecretError::TooShort { bits } => Problem::new(
            format!("the secret is only {bits} bits; at least 80 are needed"),
            "check that the value was not cut short (spreadsheets can truncate long cells)",
        ),
        SecretError::TooLong { bits } => Problem::new(
            format!("the secret is {bits} bits; at most 1024 are accepted"),
            "check that the cell holds one secret and nothing else",
        ),
        SecretError::NotBase32(c) => Problem::new(
            format!("'{}' is not a base32 character", show(*c)),
            "base32 uses A–Z and 2–7; if this is hex, pass --secret-encoding hex",
        ),
        SecretError::NotHex(c) => Problem::new(
            format!("'{}' is not a hex character", show(*c)),
            "hex uses 0–9 and A–F; if this is base32, pass --secret-encoding base32",
        ),
        SecretError::OddHex => Problem::new(
            "the hex secret has an odd number of digits",
            "a byte takes two hex digits — check for a missing or extra digit",
        ),
        SecretError::Base32Length => Problem::new(
            "the base32 secret has an impossible length",
            "check for a missing or extra character",
        ),
        SecretError::Ambiguous => ambiguous(),
        SecretError::UnexpectedUri => Problem::new(
            "the cell holds an otpauth:// URI, not a bare secret",
            "put the bare base32 secret in this column, or import the URIs as an otpauth list (--format otpauth)",
        ),
        SecretError::OtpauthSecretChar(c) => Problem::new(
            format!("'{}' is not a base32 character", show(*c)),
            "otpauth secrets use A–Z and 2–7; correct the secret in the URI",
        ),
        SecretError::UnknownFormat(_) => Problem::new("the secret format is not known", "use auto, base32 or hex"),
        SecretError::UnknownAlgorithm(_) => Problem::new(
            "the algorithm is not SHA1, SHA256 or SHA512",
            "use SHA1, SHA256 or SHA512",
        ),
        SecretError::Otpauth(message) => Problem::new(
            (*message).to_owned(),
            "correct the URI (otpauth://totp/ISSUER:ACCOUNT?secret=BASE32&issuer=ISSUER)",
        ),
    }
}

fn ambiguous() -> Problem {
    Problem::new(
        "the secret is valid both as hex and as base32",
        "pass --secret-encoding hex or --secret-encoding base32 to say which it is",
    )
}

/// Decodes a secret cell. Spaces and trailing `=` are accepted (they are how secrets are
/// printed and padded); spreadsheet damage is named rather than decoded.
pub(crate) fn check_secret(raw: &str, encoding: Encoding) -> Result<ParsedSecret, Problem> {
    let value = raw.trim();
    if value.is_empty() {
        return Err(secret_problem(&SecretError::Empty));
    }
    if value
        .get(..8)
        .is_some_and(|start| start.eq_ignore_ascii_case("otpauth:"))
    {
        return Err(Problem::new(
            "the cell holds an otpauth:// URI, not a secret",
            "import URIs as a list (--format otpauth), one URI per line",
        ));
    }
    if is_scientific(value) {
        return Err(Problem::new(
            "the secret is in scientific notation; a spreadsheet rewrote it as a number and its real digits are lost",
            RE_EXPORT,
        ));
    }
    match encoding {
        Encoding::Base32 => {
            secret::parse_secret(value, SecretFormat::Base32).map_err(|e| secret_problem(&e))
        }
        Encoding::Hex => {
            secret::parse_secret(value, SecretFormat::Hex).map_err(|e| secret_problem(&e))
        }
        Encoding::Either => match secret::parse_secret(value, SecretFormat::Auto) {
            Ok(parsed) => Ok(parsed),
            Err(SecretError::Ambiguous) => Err(ambiguous()),
            Err(SecretError::NotBase32(b32)) => {
                // Not base32 by its alphabet: judge it as hex.
                match secret::parse_secret(value, SecretFormat::Hex) {
                    Ok(parsed) => Ok(parsed),
                    Err(SecretError::NotHex(hex)) => Err(Problem::new(
                        format!(
                            "the secret is neither base32 nor hex: '{}' is not a base32 character and '{}' is not a hex character",
                            show(b32),
                            show(hex)
                        ),
                        "base32 uses A–Z and 2–7, hex uses 0–9 and A–F; check the cell for typos or stray characters",
                    )),
                    Err(other) => Err(secret_problem(&other)),
                }
            }
            Err(other) => Err(secret_problem(&other)),
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn refused(result: Result<ParsedSecret, Problem>) -> Problem {
        match result {
            Ok(_) => panic!("the secret was accepted"),
            Err(problem) => problem,
        }
    }

    #[test]
    fn scientific_notation_is_recognised_as_damage() {
        for damaged in ["7.00E+06", "7E+06", "1,23e+19", "7.00E-06"] {
            assert!(is_scientific(damaged), "{damaged}");
            let p = check_serial(damaged).unwrap_err();
            assert!(p.reason.contains("scientific notation"), "{p:?}");
            assert!(p.fix.contains("format the column as text"), "{p:?}");
        }
        for fine in ["7E06", "T2-100001", "7000001", "E+06", "7.E+06", "12EE+3"] {
            assert!(!is_scientific(fine), "{fine}");
        }
    }

    #[test]
    fn serials_keep_leading_zeros_and_lose_text_formulas() {
        assert_eq!(check_serial(" 0001234 ").unwrap(), "0001234");
        assert_eq!(check_serial("=\"0001234\"").unwrap(), "0001234");
        assert!(check_serial("7000001.00")
            .unwrap_err()
            .reason
            .contains("decimal"));
        assert!(check_serial("").unwrap_err().reason.contains("empty"));
        assert!(check_serial("a b").unwrap_err().reason.contains("spaces"));
    }

    #[test]
    fn upns_need_an_at_sign_and_empty_means_unassigned() {
        assert_eq!(check_upn(" a@b.org ").unwrap().as_deref(), Some("a@b.org"));
        assert_eq!(check_upn("  ").unwrap(), None);
        assert!(check_upn("alice").is_err());
        assert!(check_upn("a b@c.org").is_err());
    }

    #[test]
    fn periods_digits_and_algorithms() {
        assert_eq!(check_period("30", true).unwrap(), 30);
        assert_eq!(check_period(" 60s ", true).unwrap(), 60);
        assert!(check_period("45", true)
            .unwrap_err()
            .fix
            .contains("30 or 60"));
        assert_eq!(check_period("45", false).unwrap(), 45);
        assert!(check_period("0", false).is_err());
        assert!(check_period("thirty", false).is_err());
        assert!(check_period("", false).is_err());
        assert_eq!(check_digits("").unwrap(), 6);
        assert_eq!(check_digits("8").unwrap(), 8);
        assert!(check_digits("7").is_err());
        assert_eq!(check_algorithm("").unwrap(), Algorithm::Sha1);
        assert_eq!(check_algorithm("hmac-sha256").unwrap(), Algorithm::Sha256);
        assert!(check_algorithm("md5").is_err());
    }

    #[test]
    fn secrets_with_spaces_and_padding_decode_to_the_same_seed() {
        let plain = check_secret("GEZDGNBVGY3TQOJQ", Encoding::Base32).unwrap();
        for variant in [
            "gezd gnbv gy3t qojq",
            "GEZDGNBVGY3TQOJQ====",
            " GEZDGNBVGY3TQOJQ= ",
        ] {
            let parsed = check_secret(variant, Encoding::Base32).unwrap();
            assert_eq!(parsed.seed.expose(), plain.seed.expose(), "{variant}");
        }
    }

    #[test]
    fn auto_encoding_refuses_ambiguous_secrets_and_names_the_option() {
        // Only 2–7 and A–F: valid base32 and valid hex.
        let p = refused(check_secret(
            "2345ABCD2345ABCD2345ABCD2345ABCD",
            Encoding::Either,
        ));
        assert!(p.fix.contains("--secret-encoding"), "{p:?}");
        assert!(check_secret("2345ABCD2345ABCD2345ABCD2345ABCD", Encoding::Hex).is_ok());
    }

    #[test]
    fn auto_encoding_explains_a_secret_that_is_neither() {
        let p = refused(check_secret("ZZZZ0000ZZZZ0000ZZZZ", Encoding::Either));
        assert!(p.reason.contains("neither"), "{p:?}");
        let odd = refused(check_secret("0123456789abcdef01234", Encoding::Either));
        assert!(odd.reason.contains("odd number"), "{odd:?}");
    }

    #[test]
    fn base32_errors_match_the_issue_wording() {
        let p = refused(check_secret("0ABCDEFGHIJKLMNOP", Encoding::Base32));
        assert_eq!(p.reason, "'0' is not a base32 character");
        assert_eq!(
            p.fix,
            "base32 uses A–Z and 2–7; if this is hex, pass --secret-encoding hex"
        );
    }

    #[test]
    fn non_ascii_secrets_are_errors_not_panics() {
        for raw in ["1234567ä89", "ääää", "GEZDGNBVGY3TQOJ€"] {
            for encoding in [Encoding::Base32, Encoding::Hex, Encoding::Either] {
                assert!(check_secret(raw, encoding).is_err(), "{raw}");
            }
            assert!(check_serial(raw).is_ok() || check_serial(raw).is_err());
        }
    }

    #[test]
    fn secret_damage_and_uris_are_named() {
        assert!(refused(check_secret("1.23457E+39", Encoding::Hex))
            .reason
            .contains("scientific"));
        assert!(refused(check_secret(
            "otpauth://totp/x?secret=AAAA",
            Encoding::Either
        ))
        .reason
        .contains("otpauth"));
    }
}
