//! Bulk import, the pure half (DESIGN §8, issue 8): the bytes of a seed file become validated
//! rows, warnings and row-level errors. Nothing here touches the vault, the store or the disk;
//! the caller seals and stores the rows only when [`ParsedFile::errors`] is empty, so a file
//! with one bad row imports nothing.
//!
//! Map of the module:
//! - [`parse`] is the one entry point; `detect` picks the format for `--format auto`.
//! - `entra_csv` (Microsoft Entra / Azure MFA OATH CSV) and `vendor_csv` (the same without
//!   `upn`) are two flavours of the header-driven CSV reader in `table`.
//! - `privacyidea_csv` (privacyIDEA's header-less OATH CSV), `pskc` (RFC 6030, plain and
//!   pre-shared-key encrypted), `otpauth_list` (one `otpauth://` URI per line).
//! - `text` turns bytes into lines and cells (UTF-8 or UTF-16, BOM, CRLF/CR, quoting,
//!   `,`/`;`/tab); `rows` holds the checks every format shares (serial, owner, secret,
//!   digits, step) and collects the report.
//!
//! Secrets: cells that hold a secret are borrowed from the caller's bytes or held in
//! `Zeroizing` buffers; no error, warning or `Debug` output ever contains a secret (at most
//! the single offending character is named).

use std::fmt;
use std::str::FromStr;

use zeroize::Zeroizing;

use crate::secret::{Algorithm, Seed};

mod detect;
mod entra_csv;
mod otpauth_list;
mod privacyidea_csv;
mod pskc;
mod rows;
mod table;
pub(crate) mod text;
mod vendor_csv;
mod xmlenc;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod testutil;

/// The layout of a seed file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImportFormat {
    /// Detect the format from the content (the default).
    #[default]
    Auto,
    /// Microsoft Entra / Azure MFA OATH CSV: `upn,serial number,secret key,time interval,manufacturer,model`.
    EntraCsv,
    /// A vendor's seed CSV: the Entra columns without `upn`; secrets in hex or base32.
    VendorCsv,
    /// privacyIDEA's OATH CSV: `serial, key, type, otplen, timestep`, no header, hex keys.
    PrivacyideaCsv,
    /// PSKC 1.0 (RFC 6030) XML, plain or pre-shared-key encrypted.
    Pskc,
    /// One `otpauth://totp/…` URI per line.
    OtpauthList,
}

impl ImportFormat {
    /// Every format, `Auto` first (for help texts and pickers).
    pub const ALL: [ImportFormat; 6] = [
        Self::Auto,
        Self::EntraCsv,
        Self::VendorCsv,
        Self::PrivacyideaCsv,
        Self::Pskc,
        Self::OtpauthList,
    ];

    /// The kebab-case name, as serialized in reports.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::EntraCsv => "entra-csv",
            Self::VendorCsv => "vendor-csv",
            Self::PrivacyideaCsv => "privacyidea-csv",
            Self::Pskc => "pskc",
            Self::OtpauthList => "otpauth-list",
        }
    }

    /// A name for people, for "detected format: …" messages.
    pub const fn describe(&self) -> &'static str {
        match self {
            Self::Auto => "automatic detection",
            Self::EntraCsv => "Microsoft Entra OATH CSV",
            Self::VendorCsv => "vendor seed CSV (no upn column)",
            Self::PrivacyideaCsv => "privacyIDEA OATH CSV",
            Self::Pskc => "PSKC (RFC 6030)",
            Self::OtpauthList => "list of otpauth:// URIs",
        }
    }
}

impl fmt::Display for ImportFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ImportFormat {
    type Err = OptionError;
    /// Accepts the short names (`auto`, `entra`, `vendor`, `privacyidea`, `pskc`, `otpauth`)
    /// and the kebab-case names of [`ImportFormat::as_str`], in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "entra" | "entra-csv" => Ok(Self::EntraCsv),
            "vendor" | "vendor-csv" => Ok(Self::VendorCsv),
            "privacyidea" | "privacyidea-csv" => Ok(Self::PrivacyideaCsv),
            "pskc" => Ok(Self::Pskc),
            "otpauth" | "otpauth-list" => Ok(Self::OtpauthList),
            _ => Err(OptionError::Format(s.trim().chars().take(30).collect())),
        }
    }
}

/// How the secrets of a CSV file are written.
///
/// `Auto` means: base32 for Entra files (Microsoft's format is base32), hex for privacyIDEA
/// files (privacyIDEA's format is hex), and per secret for vendor files, where a secret that
/// is valid both as hex and as base32 is refused with an error naming `--secret-encoding`.
/// URIs are always base32 and PSKC always base64, so neither looks at this option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecretEncoding {
    #[default]
    Auto,
    Base32,
    Hex,
}

impl SecretEncoding {
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Base32 => "base32",
            Self::Hex => "hex",
        }
    }
}

impl FromStr for SecretEncoding {
    type Err = OptionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "base32" => Ok(Self::Base32),
            "hex" => Ok(Self::Hex),
            _ => Err(OptionError::Encoding(s.trim().chars().take(30).collect())),
        }
    }
}

/// An import option (`format`, `secret_encoding`, `psk_hex`) that cannot be read. The message
/// starts with the option's name, as the API field, the page field and (with dashes) the CLI
/// flag spell it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    #[error("format: unknown import format '{0}' — use auto, entra, vendor, privacyidea, pskc or otpauth")]
    Format(String),
    #[error("secret_encoding: unknown secret encoding '{0}' — use auto, base32 or hex")]
    Encoding(String),
    #[error("psk_hex: expected the pre-shared key as hex, e.g. 32 hex digits for AES-128")]
    Psk,
}

/// What the caller knows about the file beyond its bytes.
#[derive(Default)]
pub struct ImportOptions {
    pub format: ImportFormat,
    pub secret_encoding: SecretEncoding,
    /// The pre-shared key of an encrypted PSKC file (`--psk-hex` / `--psk-file`).
    pub psk: Option<Zeroizing<Vec<u8>>>,
    /// The password of a PSKC file whose key is derived from one (PBKDF2, RFC 6030 §6.2):
    /// `--password-file` or a prompt, the page's and the API's `password` field.
    pub password: Option<Zeroizing<String>>,
    /// Import the TOTP keys of a file that also holds HOTP, OCRA or vendor keys, listing the
    /// others as not escrowed (`--skip-unsupported`); without it such a file is refused.
    pub skip_unsupported: bool,
}

impl ImportOptions {
    /// Reads the options as every front end receives them — API query or form fields, the
    /// import page's form, the CLI's flags (`--psk-file` contents included) — so all three
    /// accept and refuse the same values. A missing or blank value means the default; where
    /// the key may come from is the front end's business (never a URL).
    pub fn from_text(
        format: Option<&str>,
        secret_encoding: Option<&str>,
        psk_hex: Option<&str>,
    ) -> Result<Self, OptionError> {
        fn given(v: Option<&str>) -> Option<&str> {
            v.map(str::trim).filter(|v| !v.is_empty())
        }
        let psk = given(psk_hex)
            .map(|hex| {
                data_encoding::HEXLOWER_PERMISSIVE
                    .decode(hex.as_bytes())
                    .map(Zeroizing::new)
                    .map_err(|_| OptionError::Psk)
            })
            .transpose()?;
        Ok(Self {
            format: given(format).map_or(Ok(ImportFormat::Auto), str::parse)?,
            secret_encoding: given(secret_encoding).map_or(Ok(SecretEncoding::Auto), str::parse)?,
            psk,
            ..Self::default()
        })
    }
}

impl fmt::Debug for ImportOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportOptions")
            .field("format", &self.format)
            .field("secret_encoding", &self.secret_encoding)
            .field("psk", &self.psk.as_ref().map(|_| "<redacted>"))
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("skip_unsupported", &self.skip_unsupported)
            .finish()
    }
}

/// One valid token from the file. Deliberately no `Debug`: it holds a [`Seed`].
pub struct ImportRow {
    /// 1-based physical line of the row (of the `KeyPackage` for PSKC).
    pub line: usize,
    /// Checked like a captured serial: printable, no spaces or `/`, at most 128 characters.
    pub serial: String,
    /// The user's UPN; `None` for tokens escrowed unassigned.
    pub owner: Option<String>,
    pub seed: Seed,
    pub algorithm: Algorithm,
    /// 6 or 8.
    pub digits: u32,
    /// Seconds per step, 1–3600.
    pub period: u32,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub display_name: Option<String>,
}

/// Why a row (or the file, when `line` is 0) cannot be imported, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RowError {
    /// 1-based physical line in the file; 0 when the problem is the file as a whole.
    pub line: usize,
    /// The column (CSV header name, PSKC element, `uri`, …) the problem is in.
    pub column: String,
    pub reason: String,
    pub fix: String,
}

impl RowError {
    /// One line for a terminal, e.g. `line 3, secret key: '0' is not a base32 character —
    /// base32 uses A–Z and 2–7; if this is hex, pass --secret-encoding hex`.
    pub fn to_line(&self) -> String {
        let place = if self.line == 0 {
            "file".to_owned()
        } else {
            format!("line {}", self.line)
        };
        if self.fix.is_empty() {
            format!("{place}, {}: {}", self.column, self.reason)
        } else {
            format!("{place}, {}: {} — {}", self.column, self.reason, self.fix)
        }
    }
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_line())
    }
}

/// Something the provisioner should know that does not stop the import (an 80-bit seed, an
/// ignored column, an unassigned token).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RowWarning {
    /// 1-based physical line; 0 for the file as a whole.
    pub line: usize,
    pub message: String,
}

impl RowWarning {
    pub fn to_line(&self) -> String {
        if self.line == 0 {
            format!("file: {}", self.message)
        } else {
            format!("line {}: {}", self.line, self.message)
        }
    }
}

impl fmt::Display for RowWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_line())
    }
}

/// The outcome of [`parse`]. Import it only when `errors` is empty.
pub struct ParsedFile {
    /// The format that was read: the requested one, or the detected one for `Auto`. It is
    /// `Auto` only when `Auto` was asked for and the file could not be decoded or its format
    /// not told; `errors` then says why.
    pub format: ImportFormat,
    /// The valid rows, in file order. Rows with errors are left out, so with errors present
    /// this is a partial list — a preview, never something to store.
    pub rows: Vec<ImportRow>,
    /// The first [`MAX_LISTED`] warnings, in file order.
    pub warnings: Vec<RowWarning>,
    /// The first [`MAX_LISTED`] problems found (not just the first one), in file order.
    pub errors: Vec<RowError>,
    /// Warnings beyond [`MAX_LISTED`], counted only.
    pub warnings_omitted: usize,
    /// Errors beyond [`MAX_LISTED`], counted only.
    pub errors_omitted: usize,
    /// Lines with at least one error, listed or not.
    pub error_lines: usize,
    /// Keys left out on request ([`ImportOptions::skip_unsupported`]), each with a warning.
    pub skipped: usize,
}

impl ParsedFile {
    /// True when the whole file may be imported.
    pub fn is_importable(&self) -> bool {
        self.errors.is_empty() && !self.rows.is_empty()
    }
}

/// True when `bytes` are a PSKC file protected with a password (PBKDF2), so the CLI can prompt
/// for one before importing.
pub fn needs_password(bytes: &[u8]) -> bool {
    text::decode(bytes).is_ok_and(|text| pskc::needs_password(&text))
}

/// Reads a seed file. Never panics; every problem is reported in [`ParsedFile::errors`] with
/// its line, column, reason and fix. The bytes stay the caller's (nothing is written
/// anywhere); plaintext copies made while parsing are zeroized.
/// How many errors, and how many warnings, a report lists; beyond that it only counts them. A
/// thousand is more than anyone fixes by reading, and keeps a hostile file's report (and the
/// memory behind it) small.
pub const MAX_LISTED: usize = 1_000;

pub fn parse(bytes: &[u8], options: &ImportOptions) -> ParsedFile {
    let mut report = rows::Report::default();
    let text = match text::decode(bytes) {
        Ok(text) => text,
        Err(error) => {
            report.push_error(error);
            return report.finish(options.format);
        }
    };
    let format = match options.format {
        ImportFormat::Auto => match detect::detect(&text) {
            Ok(format) => format,
            Err(error) => {
                report.push_error(error);
                return report.finish(ImportFormat::Auto);
            }
        },
        format => format,
    };
    match format {
        // `detect` never answers `Auto`; the arm only keeps the match exhaustive.
        ImportFormat::Auto | ImportFormat::EntraCsv => {
            entra_csv::parse(&text, options, &mut report)
        }
        ImportFormat::VendorCsv => vendor_csv::parse(&text, options, &mut report),
        ImportFormat::PrivacyideaCsv => privacyidea_csv::parse(&text, options, &mut report),
        ImportFormat::Pskc => pskc::parse(&text, options, &mut report),
        ImportFormat::OtpauthList => otpauth_list::parse(&text, &mut report),
    }
    if options.psk.is_some() && format != ImportFormat::Pskc {
        report.warn(
            0,
            "a pre-shared key was given but only PSKC files use one; it was ignored",
        );
    }
    if options.password.is_some() && format != ImportFormat::Pskc {
        report.warn(
            0,
            "a password was given but only password-encrypted PSKC files use one; it was ignored",
        );
    }
    if options.secret_encoding != SecretEncoding::Auto
        && matches!(format, ImportFormat::Pskc | ImportFormat::OtpauthList)
    {
        report.warn(
            0,
            "--secret-encoding applies to CSV files only (URIs are base32, PSKC is base64); it was ignored",
        );
    }
    if report.is_empty() {
        report.error(
            0,
            "file",
            "the file holds no tokens",
            "check that this is the seed file and not an empty export",
        );
    }
    report.finish(format)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::testutil::*;
    use super::*;

    #[test]
    fn format_names_parse_in_short_and_kebab_forms() {
        for (name, format) in [
            ("auto", ImportFormat::Auto),
            ("entra", ImportFormat::EntraCsv),
            ("Entra-CSV", ImportFormat::EntraCsv),
            ("vendor", ImportFormat::VendorCsv),
            ("vendor-csv", ImportFormat::VendorCsv),
            ("privacyidea", ImportFormat::PrivacyideaCsv),
            ("privacyidea-csv", ImportFormat::PrivacyideaCsv),
            ("pskc", ImportFormat::Pskc),
            ("otpauth", ImportFormat::OtpauthList),
            (" otpauth-list ", ImportFormat::OtpauthList),
        ] {
            assert_eq!(name.parse::<ImportFormat>().unwrap(), format, "{name}");
        }
        for format in ImportFormat::ALL {
            assert_eq!(format.as_str().parse::<ImportFormat>().unwrap(), format);
            assert_eq!(
                serde_json::to_value(format).unwrap(),
                serde_json::json!(format.as_str())
            );
        }
        let err = "xml".parse::<ImportFormat>().unwrap_err();
        assert!(err.to_string().contains("use auto, entra"), "{err}");
    }

    #[test]
    fn secret_encodings_parse() {
        assert_eq!(
            "HEX".parse::<SecretEncoding>().unwrap(),
            SecretEncoding::Hex
        );
        assert_eq!(
            "base32".parse::<SecretEncoding>().unwrap(),
            SecretEncoding::Base32
        );
        assert_eq!(
            "auto".parse::<SecretEncoding>().unwrap(),
            SecretEncoding::Auto
        );
        assert!("base64".parse::<SecretEncoding>().is_err());
    }

    #[test]
    fn row_error_line_matches_the_issue_example() {
        let error = RowError {
            line: 3,
            column: "secret key".into(),
            reason: "'0' is not a base32 character".into(),
            fix: "base32 uses A–Z and 2–7; if this is hex, pass --secret-encoding hex".into(),
        };
        assert_eq!(
            error.to_line(),
            "line 3, secret key: '0' is not a base32 character — base32 uses A–Z and 2–7; if this is hex, pass --secret-encoding hex"
        );
        let file = RowError { line: 0, ..error };
        assert!(file.to_line().starts_with("file, secret key: "));
    }

    #[test]
    fn options_debug_never_shows_the_psk() {
        let options = ImportOptions {
            psk: Some(Zeroizing::new(vec![0xAB; 16])),
            ..ImportOptions::default()
        };
        let shown = format!("{options:?}");
        assert!(shown.contains("<redacted>"));
        assert!(!shown.contains("171"), "{shown}");
    }

    #[test]
    fn every_sample_file_yields_the_expected_codes() {
        let expected = expected_codes();
        let mut checked = 0;
        for (file, options) in sample_files() {
            let parsed = parse(&read_sample(file), &options);
            assert_eq!(errors_of(&parsed), Vec::<String>::new(), "{file}");
            assert!(!parsed.rows.is_empty(), "{file}");
            for row in &parsed.rows {
                let key = if parsed.format == ImportFormat::OtpauthList {
                    row.owner.clone().unwrap()
                } else {
                    row.serial.clone()
                };
                let want = expected
                    .get(&key)
                    .unwrap_or_else(|| panic!("{file}: no expected code for {key}"));
                assert_eq!(&code_of(row), want, "{file}: {key}");
                checked += 1;
            }
        }
        assert_eq!(checked, expected.len(), "every expected code was checked");
    }

    #[test]
    fn auto_detection_names_each_sample_format() {
        for (file, format) in [
            ("entra-oath.csv", ImportFormat::EntraCsv),
            ("vendor-safeid.csv", ImportFormat::VendorCsv),
            ("otpauth-uris.txt", ImportFormat::OtpauthList),
            ("pskc-plain.xml", ImportFormat::Pskc),
        ] {
            let parsed = parse(&read_sample(file), &ImportOptions::default());
            assert_eq!(parsed.format, format, "{file}");
            assert!(parsed.errors.is_empty(), "{file}: {:?}", parsed.errors);
        }
    }

    #[test]
    fn options_that_do_not_apply_are_ignored_with_a_warning() {
        let parsed = parse(
            &read_sample("entra-oath.csv"),
            &ImportOptions {
                psk: Some(sample_psk()),
                ..ImportOptions::default()
            },
        );
        assert!(parsed.errors.is_empty());
        assert!(warnings_of(&parsed)[0].starts_with("file: a pre-shared key was given"));
        let parsed = parse(
            &read_sample("otpauth-uris.txt"),
            &ImportOptions {
                secret_encoding: SecretEncoding::Hex,
                ..ImportOptions::default()
            },
        );
        assert!(parsed.errors.is_empty());
        assert!(warnings_of(&parsed)[0].contains("--secret-encoding applies to CSV"));
        let parsed = parse(
            &read_sample("pskc-plain.xml"),
            &ImportOptions {
                psk: Some(sample_psk()),
                ..ImportOptions::default()
            },
        );
        assert!(parsed.errors.is_empty());
        assert!(
            warnings_of(&parsed)[0].contains("not encrypted"),
            "{:?}",
            warnings_of(&parsed)
        );
    }

    #[test]
    fn an_empty_file_is_an_error_not_an_empty_import() {
        for bytes in [&b""[..], b"\r\n\r\n", b"upn,serial number,secret key\r\n"] {
            let parsed = parse(bytes, &ImportOptions::default());
            assert!(!parsed.errors.is_empty());
            assert!(!parsed.is_importable());
        }
    }

    #[test]
    fn an_undetectable_file_names_the_format_option() {
        let parsed = parse(
            b"hello world\nthis is not a seed file\n",
            &ImportOptions::default(),
        );
        assert_eq!(parsed.format, ImportFormat::Auto);
        assert_eq!(parsed.errors.len(), 1);
        assert!(
            parsed.errors[0].fix.contains("--format"),
            "{:?}",
            parsed.errors
        );
    }

    #[test]
    fn import_options_read_blank_as_default_and_name_the_option_they_refuse() {
        let options = ImportOptions::from_text(Some(" "), None, Some("")).unwrap();
        assert_eq!(options.format, ImportFormat::Auto);
        assert_eq!(options.secret_encoding, SecretEncoding::Auto);
        assert!(options.psk.is_none());
        let options = ImportOptions::from_text(Some("PSKC"), Some("hex"), Some("00ff")).unwrap();
        assert_eq!(options.format, ImportFormat::Pskc);
        assert_eq!(
            options.psk.as_deref().map(Vec::as_slice),
            Some(&[0, 255][..])
        );
        for (format, encoding, psk, starts) in [
            (Some("xml"), None, None, "format: "),
            (None, Some("b64"), None, "secret_encoding: "),
            (None, None, Some("not hex"), "psk_hex: "),
        ] {
            let err = ImportOptions::from_text(format, encoding, psk)
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(starts), "{err}");
        }
    }
}
