//! privacyIDEA's OATH CSV (the file its "Import tokens → OATH CSV" dialog reads): no header,
//! one token per line, `serial, key, type, otplen, timestep`, the key in hex.
//!
//! As privacyIDEA reads it: blank lines and lines starting with `#` are skipped; a missing
//! type means HOTP; `otplen` defaults to 6 and `timestep` to 30. A first line
//! `# version: 2` announces three leading user columns (`user, resolver, realm`); the user
//! becomes the owner when it is a UPN. seedvault escrows TOTP only, so HOTP (and OCRA, TAN,
//! …) rows are refused with a message naming the line. A sixth column, when present, is read
//! as the hash algorithm (`sha1`, `sha256`, `sha512`).

use super::rows::{self, Encoding, Report, RowCheck};
use super::text::{self, ZStr};
use super::{ImportOptions, ImportRow, SecretEncoding};
use crate::otp::TotpSpec;

pub(crate) const LAYOUT: &str = "serial, key, totp, otplen, timestep";

/// The leading user columns of a `# version: 2` file.
pub(crate) fn user_columns(first_line: &str) -> usize {
    let lower = first_line.trim().to_ascii_lowercase();
    let version = lower
        .strip_prefix('#')
        .map(str::trim_start)
        .and_then(|l| l.strip_prefix("version:"))
        .map(str::trim);
    if version == Some("2") {
        3
    } else {
        0
    }
}

pub(crate) fn parse(text: &str, options: &ImportOptions, report: &mut Report) {
    let mut all = text::lines(text).peekable();
    let offset = all.peek().map_or(0, |l| user_columns(l.text));
    let encoding = match options.secret_encoding {
        SecretEncoding::Auto | SecretEncoding::Hex => Encoding::Hex,
        SecretEncoding::Base32 => Encoding::Base32,
    };
    let mut lines = all
        .filter(|l| !l.text.trim_start().starts_with('#'))
        .peekable();
    let delimiter = lines
        .peek()
        .map_or(b',', |first| text::detect_delimiter(first.text));
    rows::each_csv_row(lines, delimiter, report, |line, cells, report| {
        read_row(line, cells, offset, encoding, report);
    });
}

fn read_row(
    line: usize,
    cells: &[ZStr<'_>],
    offset: usize,
    encoding: Encoding,
    report: &mut Report,
) {
    let cell = |i: usize| cells.get(offset + i).map_or("", |c| c.trim());
    // A header line someone added by hand.
    if cell(0).eq_ignore_ascii_case("serial") && cell(2).eq_ignore_ascii_case("type") {
        report.warn(
            line,
            "a header line was skipped (privacyIDEA files have none)",
        );
        return;
    }
    if cells.len() < offset + 2 {
        report.error(
            line,
            "row",
            format!(
                "the line has {} values; at least serial and key are needed",
                cells.len()
            ),
            format!("each line is `{LAYOUT}`"),
        );
        return;
    }
    if cells.len() > offset + 6 && !text::all_blank(&cells[offset + 6..]) {
        report.error(
            line,
            "row",
            format!(
                "the line has {} values; privacyIDEA's TOTP lines have at most {}",
                cells.len(),
                offset + 6
            ),
            format!("each line is `{LAYOUT}`; quote a value that contains the delimiter"),
        );
        return;
    }
    let kind = cell(2);
    if !kind.eq_ignore_ascii_case("totp") {
        let (reason, fix) = if kind.is_empty() || kind.eq_ignore_ascii_case("hotp") {
            (
                if kind.is_empty() {
                    "no type is given, which privacyIDEA reads as HOTP (counter-based); seedvault escrows TOTP tokens only"
                } else {
                    "HOTP (counter-based) tokens are not supported; seedvault escrows TOTP tokens only"
                },
                "remove the HOTP lines (keep them in a system that handles HOTP), or write 'totp' if these are time-based tokens",
            )
        } else {
            (
                "only TOTP tokens can be imported; this line is another token type",
                "remove the line, or write 'totp' if it is a time-based token",
            )
        };
        report.error(line, "type", reason, fix);
        return;
    }
    let mut check = RowCheck::new(line, report);
    let serial = check.take("serial", rows::check_serial(cell(0)));
    let raw_key = cells.get(offset + 1).map_or("", |c| &**c);
    let secret = check.take("key", rows::check_secret(raw_key, encoding));
    let digits = check.take("otplen", rows::check_digits(cell(3)));
    let period = if cell(4).is_empty() {
        Some(30)
    } else {
        check.take("timestep", rows::check_period(cell(4), false))
    };
    let algorithm = check.take("hashlib", rows::check_algorithm(cell(5)));
    let (Some(serial), Some(secret), Some(digits), Some(period), Some(algorithm), true) =
        (serial, secret, digits, period, algorithm, check.passed())
    else {
        return;
    };
    if let Err(e) = TotpSpec::new(algorithm, digits, period) {
        report.error(line, "timestep", e.to_string(), "");
        return;
    }
    let owner = if offset == 3 {
        owner_of(line, cells, report)
    } else {
        None
    };
    report.add_row(
        ImportRow {
            line,
            serial,
            owner,
            seed: secret.seed,
            algorithm,
            digits,
            period,
            manufacturer: None,
            model: None,
            display_name: None,
        },
        "serial",
        secret.warnings,
    );
}

/// The owner of a `# version: 2` line: its user, when that is a UPN.
fn owner_of(line: usize, cells: &[ZStr<'_>], report: &mut Report) -> Option<String> {
    let user = cells.first().map_or("", |c| c.trim());
    if user.is_empty() {
        return None;
    }
    match rows::check_upn(user) {
        Ok(owner) => owner,
        Err(_) => {
            report.warn(
                line,
                "the user is not a UPN (name@domain); the token is escrowed unassigned — assign it after the import",
            );
            None
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::testutil::*;
    use super::super::{parse, ImportFormat, ImportOptions, ParsedFile};

    /// The vendor sample's tokens written the way privacyIDEA exports them.
    const FILE: &str = "# tokens for the helpdesk\n\
        7000001, 899120ba6cfb93fe37731592da56526822b37598, totp, 6, 60\n\
        \n\
        7000002, 90da5cb6cbdb5e6aea0466366fae2923476b1848, TOTP, 6, 60\n\
        7000003, c4a31f612ef67de94835d9df77b33cf02bbf6727, totp, 6, 60\n";

    fn auto(text: &str) -> ParsedFile {
        parse(text.as_bytes(), &ImportOptions::default())
    }

    #[test]
    fn totp_lines_import_and_give_the_expected_codes() {
        let expected = expected_codes();
        let parsed = auto(FILE);
        assert_eq!(parsed.format, ImportFormat::PrivacyideaCsv);
        assert!(parsed.errors.is_empty(), "{:?}", errors_of(&parsed));
        assert_eq!(serials(&parsed), ["7000001", "7000002", "7000003"]);
        assert_eq!(parsed.rows[1].line, 4);
        for row in &parsed.rows {
            assert_eq!(row.owner, None);
            assert_eq!(&code_of(row), &expected[&row.serial]);
        }
    }

    #[test]
    fn otplen_and_timestep_default_to_6_and_30() {
        let parsed = parse_as(
            ImportFormat::PrivacyideaCsv,
            "S1,3132333435363738393031323334353637383930,totp\n",
        );
        assert!(parsed.errors.is_empty(), "{:?}", errors_of(&parsed));
        assert_eq!((parsed.rows[0].digits, parsed.rows[0].period), (6, 30));
    }

    #[test]
    fn hotp_lines_are_refused_with_their_line_named() {
        let text = FILE.replace("TOTP, 6, 60", "hotp, 6, 0");
        let parsed = auto(&text);
        assert_eq!(parsed.format, ImportFormat::PrivacyideaCsv);
        assert_eq!(
            errors_of(&parsed),
            ["line 4, type: HOTP (counter-based) tokens are not supported; seedvault escrows TOTP tokens only — remove the HOTP lines (keep them in a system that handles HOTP), or write 'totp' if these are time-based tokens"]
        );
        let untyped = parse_as(
            ImportFormat::PrivacyideaCsv,
            "S1,3132333435363738393031323334353637383930\n",
        );
        assert!(untyped.errors[0].reason.contains("reads as HOTP"));
        let ocra =
            auto("S1,3132333435363738393031323334353637383930,ocra,OCRA-1:HOTP-SHA1-6:QN08\n");
        assert_eq!(ocra.errors[0].column, "type");
    }

    #[test]
    fn bad_cells_are_reported_by_privacyidea_column_names() {
        let text = "S1, 31323334353637383930313233343536373839zz, totp, 7, 45x\n\
                    S1, 3132333435363738393031323334353637383930, totp, 8, 30, sha256\n\
                    S1, 3132333435363738393031323334353637383930, totp, 6, 30\n";
        let parsed = auto(text);
        let found = places(&parsed);
        assert_eq!(
            found,
            [(1, "key"), (1, "otplen"), (1, "timestep"), (3, "serial")],
            "{:?}",
            errors_of(&parsed)
        );
        assert_eq!(parsed.rows[0].digits, 8);
        assert_eq!(parsed.rows[0].algorithm, crate::secret::Algorithm::Sha256);
        assert!(parsed.errors[3].reason.contains("already on line 2"));
        assert_secret_absent(&parsed, "31323334353637383930313233343536373839zz");
    }

    #[test]
    fn version_2_files_carry_the_owner() {
        let text = "# version: 2\n\
                    alice@example.org, ldap, example, 7000001, 899120ba6cfb93fe37731592da56526822b37598, totp, 6, 60\n\
                    bob, ldap, example, 7000002, 90da5cb6cbdb5e6aea0466366fae2923476b1848, totp, 6, 60\n";
        let expected = expected_codes();
        let parsed = auto(text);
        assert_eq!(parsed.format, ImportFormat::PrivacyideaCsv);
        assert!(parsed.errors.is_empty(), "{:?}", errors_of(&parsed));
        assert_eq!(parsed.rows[0].owner.as_deref(), Some("alice@example.org"));
        assert_eq!(parsed.rows[1].owner, None);
        assert_eq!(parsed.warnings.len(), 1);
        for row in &parsed.rows {
            assert_eq!(&code_of(row), &expected[&row.serial]);
        }
    }

    #[test]
    fn a_hand_written_header_line_is_skipped() {
        let text = format!("serial, key, type, otplen, timestep\n{FILE}");
        let parsed = parse_as(ImportFormat::PrivacyideaCsv, &text);
        assert!(parsed.errors.is_empty(), "{:?}", errors_of(&parsed));
        assert_eq!(parsed.rows.len(), 3);
    }
}
