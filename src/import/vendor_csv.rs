//! A vendor's seed CSV: the Entra columns without `upn`
//! (`serial number,secret key,timeinterval,manufacturer,model`), secrets in hex or base32.
//!
//! Tokens have no owner (they are escrowed unassigned and assigned later), unless the file
//! happens to carry a `upn` column anyway. Any step from 1 to 3600 s is accepted. With
//! `--secret-encoding auto` each secret is judged by its characters, and one that is valid
//! both as hex and as base32 is refused with an error naming `--secret-encoding`.

use super::rows::{Encoding, Report};
use super::table::{self, Flavor};
use super::ImportOptions;

pub(crate) const HEADER: &str = "serial number,secret key,timeinterval,manufacturer,model";

const FLAVOR: Flavor = Flavor {
    upn_required: false,
    entra_periods: false,
    auto_encoding: Encoding::Either,
    header_hint: HEADER,
};

pub(crate) fn parse(text: &str, options: &ImportOptions, report: &mut Report) {
    table::parse(text, options, &FLAVOR, report);
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::testutil::*;
    use super::super::{parse, ImportFormat, ImportOptions, ParsedFile, SecretEncoding};

    fn vendor(text: &str, secret_encoding: SecretEncoding) -> ParsedFile {
        parse(
            text.as_bytes(),
            &ImportOptions {
                format: ImportFormat::VendorCsv,
                secret_encoding,
                ..ImportOptions::default()
            },
        )
    }

    #[test]
    fn the_sample_imports_unassigned_with_hex_or_auto() {
        let expected = expected_codes();
        for encoding in [SecretEncoding::Auto, SecretEncoding::Hex] {
            let parsed = vendor(&sample_text("vendor-safeid.csv"), encoding);
            assert!(parsed.errors.is_empty(), "{:?}", errors_of(&parsed));
            assert_eq!(serials(&parsed), ["7000001", "7000002", "7000003"]);
            for row in &parsed.rows {
                assert_eq!(row.owner, None);
                assert_eq!(row.period, 60);
                assert_eq!(row.manufacturer.as_deref(), Some("Deepnet Security"));
                assert_eq!(row.model.as_deref(), Some("SafeID"));
                assert_eq!(&code_of(row), &expected[&row.serial]);
            }
        }
    }

    #[test]
    fn forcing_base32_on_hex_secrets_fails_every_row_with_the_hint() {
        let parsed = vendor(&sample_text("vendor-safeid.csv"), SecretEncoding::Base32);
        assert_eq!(parsed.errors.len(), 3);
        for (e, line) in parsed.errors.iter().zip(2..) {
            assert_eq!((e.line, e.column.as_str()), (line, "secret key"));
            assert!(e.fix.contains("--secret-encoding hex"), "{e}");
        }
        assert!(parsed.rows.is_empty());
    }

    #[test]
    fn ambiguous_secrets_are_refused_under_auto_and_accepted_when_named() {
        let text = format!(
            "{}\n0042,2345ABCD2345ABCD2345ABCD2345ABCD,30,V,M\n",
            super::HEADER
        );
        let parsed = vendor(&text, SecretEncoding::Auto);
        assert_eq!(parsed.errors.len(), 1);
        let e = &parsed.errors[0];
        assert_eq!((e.line, e.column.as_str()), (2, "secret key"));
        assert!(e.reason.contains("both as hex and as base32"), "{e}");
        assert!(e.fix.contains("--secret-encoding"), "{e}");
        assert_secret_absent(&parsed, "2345ABCD2345ABCD2345ABCD2345ABCD");
        let hex = vendor(&text, SecretEncoding::Hex);
        assert!(hex.errors.is_empty());
        assert_eq!(hex.rows[0].seed.bits(), 128);
        let b32 = vendor(&text, SecretEncoding::Base32);
        assert!(b32.errors.is_empty());
        assert_eq!(b32.rows[0].seed.bits(), 160);
        assert_eq!(hex.rows[0].serial, "0042");
    }

    #[test]
    fn base32_secrets_are_detected_per_row() {
        let text = format!(
            "{}\nB1,GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ,30,,\nH1,3132333435363738393031323334353637383930,30,,\n",
            super::HEADER
        );
        let parsed = vendor(&text, SecretEncoding::Auto);
        assert!(parsed.errors.is_empty(), "{:?}", errors_of(&parsed));
        assert_eq!(parsed.rows[0].seed.expose(), parsed.rows[1].seed.expose());
    }

    #[test]
    fn scientific_notation_secrets_and_serials_are_named() {
        let text = format!(
            "{}\n7.00E+06,899120ba6cfb93fe37731592da56526822b37598,60,,\n7000002,8.99121E+39,60,,\n",
            super::HEADER
        );
        let parsed = vendor(&text, SecretEncoding::Auto);
        let lines: Vec<String> = errors_of(&parsed);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0]
            .starts_with("line 2, serial number: '7.00E+06' is a number in scientific notation"));
        assert!(lines[1].starts_with("line 3, secret key: the secret is in scientific notation"));
    }

    #[test]
    fn a_semicolon_file_with_a_trailing_empty_column_reads_correctly() {
        let expected = expected_codes();
        let text = sample_text("vendor-safeid.csv")
            .replace(',', ";")
            .replace("\r\n", ";\r\n");
        let parsed = vendor(&text, SecretEncoding::Auto);
        assert!(parsed.errors.is_empty(), "{:?}", errors_of(&parsed));
        for row in &parsed.rows {
            assert_eq!(&code_of(row), &expected[&row.serial]);
        }
    }

    #[test]
    fn a_file_without_time_intervals_defaults_to_30_seconds_with_a_warning() {
        let text = "serial number,secret key\nS1,GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\n";
        let parsed = vendor(text, SecretEncoding::Auto);
        assert!(parsed.errors.is_empty());
        assert_eq!(parsed.rows[0].period, 30);
        assert!(warnings_of(&parsed)[0].contains("30-second"));
    }

    #[test]
    fn truncated_secrets_are_refused() {
        let text = format!("{}\nS1,31323334353637,30,,\n", super::HEADER);
        let parsed = vendor(&text, SecretEncoding::Hex);
        assert!(
            parsed.errors[0].reason.contains("only 56 bits"),
            "{:?}",
            errors_of(&parsed)
        );
    }
}
