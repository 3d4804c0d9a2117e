//! `--format auto`: tells the format from the content, never from the file name.
//!
//! - XML whose root is a `KeyContainer` → PSKC;
//! - first line that is not blank or a `#` comment starts with `otpauth://` → URI list;
//! - a CSV header with `upn` → Entra; with `serial number` and `secret key` but no `upn` →
//!   vendor;
//! - no header, and the third value of the first data line (after a privacyIDEA
//!   `# version: 2` line, the sixth) is a token type such as `totp` or `hotp` → privacyIDEA.
//!
//! The error for anything else never quotes the file: its first line may well be a secret.

use super::privacyidea_csv;
use super::table::{self, Column};
use super::text::{self, ZStr};
use super::{ImportFormat, RowError};

const TOKEN_TYPES: &[&str] = &[
    "totp", "hotp", "ocra", "tan", "motp", "daplug", "yubikey", "spass",
];

pub(crate) fn detect(text: &str) -> Result<ImportFormat, RowError> {
    let body = text.trim_start();
    if body.starts_with('<') {
        return if body.contains("KeyContainer") {
            Ok(ImportFormat::Pskc)
        } else {
            Err(undetected(
                "the file is XML but has no PSKC KeyContainer",
                "export the seeds as PSKC (RFC 6030), or pass --format to name the format",
            ))
        };
    }
    let mut lines = text::lines(text).filter(|l| !l.text.trim().is_empty());
    let Some(first) = lines.next() else {
        return Err(RowError {
            line: 0,
            column: "file".into(),
            reason: "the file is empty".into(),
            fix: "check that this is the seed file and not an empty export".into(),
        });
    };
    let first_content = std::iter::once(first)
        .chain(lines)
        .find(|l| !l.text.trim_start().starts_with('#'));
    if let Some(line) = first_content {
        let start = line.text.trim_start();
        if start.len() >= 10
            && start.is_char_boundary(10)
            && start[..10].eq_ignore_ascii_case("otpauth://")
        {
            return Ok(ImportFormat::OtpauthList);
        }
    }
    let header = if text::sep_directive(first.text).is_some() {
        text::lines(text)
            .filter(|l| !l.text.trim().is_empty())
            .nth(1)
            .unwrap_or(first)
    } else {
        first
    };
    if let Some(columns) = table::header_columns(header.text) {
        let has = |c: Column| columns.contains(&Some(c));
        if has(Column::Upn) && (has(Column::Serial) || has(Column::Secret)) {
            return Ok(ImportFormat::EntraCsv);
        }
        if has(Column::Serial) && has(Column::Secret) {
            return Ok(ImportFormat::VendorCsv);
        }
    }
    if let Some(line) = first_content {
        let offset = privacyidea_csv::user_columns(first.text);
        let delimiter = text::detect_delimiter(line.text);
        if let Ok(cells) = text::split_cells(line.text, delimiter) {
            let kind = cells.get(offset + 2).map_or("", |c: &ZStr<'_>| c.trim());
            if TOKEN_TYPES.iter().any(|t| kind.eq_ignore_ascii_case(t)) {
                return Ok(ImportFormat::PrivacyideaCsv);
            }
        }
    }
    Err(undetected(
        "the format could not be told from the content",
        "pass --format entra|vendor|privacyidea|pskc|otpauth; CSV files need their header line, e.g. `upn,serial number,secret key,time interval,manufacturer,model`",
    ))
}

fn undetected(reason: &str, fix: &str) -> RowError {
    RowError {
        line: 1,
        column: "format".into(),
        reason: reason.into(),
        fix: fix.into(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn each_layout_is_recognised() {
        for (text, format) in [
            (
                "<?xml version=\"1.0\"?>\n<pskc:KeyContainer/>",
                ImportFormat::Pskc,
            ),
            (
                "\n# mine\notpauth://totp/a?secret=AAAA",
                ImportFormat::OtpauthList,
            ),
            ("UPN;Serial Number;Secret Key\n", ImportFormat::EntraCsv),
            (
                "sep=;\nupn;serial number;secret key\n",
                ImportFormat::EntraCsv,
            ),
            (
                "serial number,secret key,timeinterval\n",
                ImportFormat::VendorCsv,
            ),
            ("Serial,Secret\n", ImportFormat::VendorCsv),
            ("# c\nS1, 00, totp, 6, 30\n", ImportFormat::PrivacyideaCsv),
            ("S1,00,HOTP\n", ImportFormat::PrivacyideaCsv),
            (
                "# version: 2\nu,r,realm,S1,00,totp,6,30\n",
                ImportFormat::PrivacyideaCsv,
            ),
        ] {
            assert_eq!(detect(text).unwrap(), format, "{text}");
        }
    }

    #[test]
    fn unknown_content_is_refused_without_quoting_it() {
        for text in ["GEZDGNBVGY3TQOJQ,30\n", "<html></html>", "S1,00\n"] {
            let e = detect(text).unwrap_err();
            assert!(e.fix.contains("--format"), "{e}");
            assert!(!e.to_line().contains("GEZDGNBV"));
        }
        assert!(detect("  \n\n").is_err());
    }
}
