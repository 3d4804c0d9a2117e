//! Shared helpers for the import tests: the sample files in `tests/data/` and the codes
//! they must produce.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::PathBuf;

use zeroize::Zeroizing;

use super::{parse, ImportFormat, ImportOptions, ImportRow, ParsedFile};
use crate::otp::{code_at, TotpSpec};

/// The unix time `expected-codes.csv` was computed for.
pub const SAMPLE_TIME: i64 = 1_764_000_000;

pub fn sample_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

pub fn read_sample(name: &str) -> Vec<u8> {
    std::fs::read(sample_path(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

pub fn sample_text(name: &str) -> String {
    String::from_utf8(read_sample(name)).unwrap()
}

/// The pre-shared key of `pskc-encrypted.xml`.
pub fn sample_psk() -> Zeroizing<Vec<u8>> {
    let hex = sample_text("pskc-encrypted.psk.hex");
    Zeroizing::new(
        data_encoding::HEXLOWER_PERMISSIVE
            .decode(hex.trim().as_bytes())
            .unwrap(),
    )
}

/// Every sample seed file with the options it needs.
pub fn sample_files() -> Vec<(&'static str, ImportOptions)> {
    vec![
        ("entra-oath.csv", ImportOptions::default()),
        ("vendor-safeid.csv", ImportOptions::default()),
        ("otpauth-uris.txt", ImportOptions::default()),
        ("pskc-plain.xml", ImportOptions::default()),
        (
            "pskc-encrypted.xml",
            ImportOptions {
                psk: Some(sample_psk()),
                ..ImportOptions::default()
            },
        ),
    ]
}

/// `serial_or_account` → code at [`SAMPLE_TIME`].
pub fn expected_codes() -> HashMap<String, String> {
    sample_text("expected-codes.csv")
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let cells: Vec<&str> = l.trim().split(',').collect();
            assert_eq!(cells[4], SAMPLE_TIME.to_string());
            (cells[0].to_owned(), cells[5].to_owned())
        })
        .collect()
}

pub fn code_of(row: &ImportRow) -> String {
    let spec = TotpSpec::new(row.algorithm, row.digits, row.period).unwrap();
    code_at(&row.seed, &spec, SAMPLE_TIME, 0)
        .expose()
        .to_owned()
}

/// Parses `text` as `format` with default options.
pub fn parse_as(format: ImportFormat, text: &str) -> ParsedFile {
    parse(
        text.as_bytes(),
        &ImportOptions {
            format,
            ..ImportOptions::default()
        },
    )
}

/// (line, column) of each error, for table-like assertions.
pub fn places(parsed: &ParsedFile) -> Vec<(usize, &str)> {
    parsed
        .errors
        .iter()
        .map(|e| (e.line, e.column.as_str()))
        .collect()
}

pub fn errors_of(parsed: &ParsedFile) -> Vec<String> {
    parsed.errors.iter().map(|e| e.to_line()).collect()
}

pub fn warnings_of(parsed: &ParsedFile) -> Vec<String> {
    parsed.warnings.iter().map(|w| w.to_line()).collect()
}

pub fn serials(parsed: &ParsedFile) -> Vec<String> {
    parsed.rows.iter().map(|r| r.serial.clone()).collect()
}

/// Asserts that none of the report's text contains `secret` (or a long piece of it).
pub fn assert_secret_absent(parsed: &ParsedFile, secret: &str) {
    let mut all = errors_of(parsed);
    all.extend(warnings_of(parsed));
    all.extend(parsed.errors.iter().map(|e| format!("{e:?}")));
    let normalized: String = secret
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_ascii_uppercase();
    for text in all {
        let upper = text.to_ascii_uppercase();
        assert!(!upper.contains(&normalized), "secret leaked: {text}");
        for window in normalized.as_bytes().windows(6) {
            let piece = std::str::from_utf8(window).unwrap();
            assert!(!upper.contains(piece), "part of a secret leaked: {text}");
        }
    }
}
