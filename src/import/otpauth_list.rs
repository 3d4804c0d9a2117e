//! A list of `otpauth://totp/…` URIs, one per line; blank lines and lines starting with `#`
//! are skipped.
//!
//! A URI has no serial, so the token's serial is the URI's account (the label after
//! `ISSUER:`), e.g. `user1@example.org`: that is how such lists are keyed in practice, it is
//! what an operator would search for, and it satisfies the serial rules (no spaces or `/`),
//! where `Example Corp:user1@example.org` would not. Two URIs for the same account are
//! therefore duplicates. The owner is the account when it looks like a UPN (name@domain);
//! the display name is the account and the manufacturer the issuer, as for a captured URI.

use super::rows::{self, Report};
use super::text;
use super::ImportRow;
use crate::otp::TotpSpec;
use crate::secret::{self, SecretError};

const COLUMN_URI: &str = "uri";
const COLUMN_SECRET: &str = "secret";

pub(crate) fn parse(text: &str, report: &mut Report) {
    for line in text::lines(text) {
        let uri = line.text.trim();
        if uri.is_empty() || uri.starts_with('#') {
            continue;
        }
        read_line(line.number, uri, report);
    }
}

fn read_line(line: usize, uri: &str, report: &mut Report) {
    if !(uri.len() >= 10
        && uri.is_char_boundary(10)
        && uri[..10].eq_ignore_ascii_case("otpauth://"))
    {
        report.error(
            line,
            COLUMN_URI,
            "the line is not an otpauth:// URI",
            "put one otpauth://totp/… URI on each line; start comment lines with '#'",
        );
        return;
    }
    let parsed = match secret::parse_otpauth(uri) {
        Ok(parsed) => parsed,
        Err(e) => {
            let column = match e {
                SecretError::Otpauth(_) | SecretError::UnknownAlgorithm(_) => COLUMN_URI,
                _ => COLUMN_SECRET,
            };
            report.problem(line, column, rows::secret_problem(&e));
            return;
        }
    };
    let Some(params) = parsed.otpauth else {
        report.error(line, COLUMN_URI, "the URI could not be read", "");
        return;
    };
    let Some(account) = params.account.as_deref() else {
        report.error(
            line,
            COLUMN_URI,
            "the URI has no account name, which seedvault uses as the serial",
            "give the URI a label: otpauth://totp/ISSUER:ACCOUNT?secret=…",
        );
        return;
    };
    let serial = match rows::check_serial(account) {
        Ok(serial) => serial,
        Err(problem) => {
            report.error(
                line,
                COLUMN_URI,
                format!("the account name cannot be a serial: {}", problem.reason),
                "give each URI an account name without spaces or '/', e.g. user@example.org",
            );
            return;
        }
    };
    let manufacturer = match params
        .issuer
        .as_deref()
        .map(|i| rows::check_text("issuer", i))
    {
        Some(Ok(issuer)) => issuer,
        Some(Err(problem)) => {
            report.problem(line, COLUMN_URI, problem);
            return;
        }
        None => None,
    };
    if let Err(e) = TotpSpec::new(params.algorithm, params.digits, params.period) {
        report.error(line, COLUMN_URI, e.to_string(), "");
        return;
    }
    let owner = rows::looks_like_upn(&serial).then(|| serial.clone());
    report.add_row(
        ImportRow {
            line,
            owner,
            display_name: Some(serial.clone()),
            serial,
            seed: parsed.seed,
            algorithm: params.algorithm,
            digits: params.digits,
            period: params.period,
            manufacturer,
            model: None,
        },
        COLUMN_URI,
        parsed.warnings,
    );
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::testutil::*;
    use super::super::{parse, ImportFormat, ImportOptions, ParsedFile};
    use crate::secret::Algorithm;

    fn auto(text: &str) -> ParsedFile {
        parse(text.as_bytes(), &ImportOptions::default())
    }

    #[test]
    fn the_sample_imports_with_accounts_as_serials_and_owners() {
        let expected = expected_codes();
        let parsed = auto(&sample_text("otpauth-uris.txt"));
        assert_eq!(parsed.format, ImportFormat::OtpauthList);
        assert!(parsed.errors.is_empty(), "{:?}", errors_of(&parsed));
        assert_eq!(
            serials(&parsed),
            [
                "user1@example.org",
                "user2@example.org",
                "user3@example.org"
            ]
        );
        let algorithms: Vec<_> = parsed
            .rows
            .iter()
            .map(|r| (r.algorithm, r.digits, r.period))
            .collect();
        assert_eq!(
            algorithms,
            [
                (Algorithm::Sha1, 6, 30),
                (Algorithm::Sha256, 8, 30),
                (Algorithm::Sha512, 8, 60)
            ]
        );
        for row in &parsed.rows {
            assert_eq!(row.owner.as_deref(), Some(row.serial.as_str()));
            assert_eq!(row.manufacturer.as_deref(), Some("Example Corp"));
            assert_eq!(&code_of(row), &expected[&row.serial]);
        }
    }

    #[test]
    fn comments_and_blank_lines_are_skipped_and_lines_counted() {
        let text = format!("# exported today\n\n{}", sample_text("otpauth-uris.txt"));
        let parsed = auto(&text);
        assert!(parsed.errors.is_empty(), "{:?}", errors_of(&parsed));
        assert_eq!(parsed.rows[0].line, 3);
    }

    #[test]
    fn bad_lines_name_their_line_and_never_echo_the_uri() {
        let text = "otpauth://totp/Acme:a@example.org?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\n\
                    otpauth://hotp/Acme:b@example.org?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&counter=1\n\
                    otpauth://totp/Acme:c@example.org?secret=GEZDGNBVGY3TQOJ1GEZDGNBVGY3TQOJQ\n\
                    GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\n\
                    otpauth://totp/Acme:a@example.org?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\n\
                    otpauth://totp/Acme:John%20Doe?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\n";
        let parsed = parse_as(ImportFormat::OtpauthList, text);
        let found = places(&parsed);
        assert_eq!(
            found,
            [
                (2, "uri"),
                (3, "secret"),
                (4, "uri"),
                (5, "uri"),
                (6, "uri")
            ],
            "{:?}",
            errors_of(&parsed)
        );
        assert!(parsed.errors[0].reason.contains("HOTP"));
        assert_eq!(parsed.errors[1].reason, "'1' is not a base32 character");
        assert!(parsed.errors[3].reason.contains("already on line 1"));
        assert_secret_absent(&parsed, "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        assert_secret_absent(&parsed, "GEZDGNBVGY3TQOJ1GEZDGNBVGY3TQOJQ");
    }

    #[test]
    fn accounts_that_are_not_upns_are_imported_unassigned() {
        let parsed = auto("otpauth://totp/VPN:token-17?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\n");
        assert!(parsed.errors.is_empty(), "{:?}", errors_of(&parsed));
        assert_eq!(parsed.rows[0].serial, "token-17");
        assert_eq!(parsed.rows[0].owner, None);
    }
}
