//! Microsoft Entra / Azure MFA OATH CSV: the file Entra admins upload for hardware OATH
//! tokens, `upn,serial number,secret key,time interval,manufacturer,model`, base32 secrets,
//! 30 or 60 s steps.
//!
//! Accepted as seen in the wild: `timeinterval` or `time interval`, any case, extra spaces,
//! a UTF-8 BOM or UTF-16, CRLF, `;` as the delimiter (or Excel's `sep=;` first line),
//! columns in any order, a trailing empty column. Optional `digits` and `algorithm` columns are read when present (SHA1 and 6
//! digits otherwise). An empty `upn` cell escrows that token unassigned (with a warning).

use super::rows::{Encoding, Report};
use super::table::{self, Flavor};
use super::ImportOptions;

pub(crate) const HEADER: &str = "upn,serial number,secret key,time interval,manufacturer,model";

const FLAVOR: Flavor = Flavor {
    upn_required: true,
    entra_periods: true,
    // Microsoft's format is base32; `--secret-encoding hex` overrides it.
    auto_encoding: Encoding::Base32,
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

    fn entra(text: &str) -> ParsedFile {
        parse_as(ImportFormat::EntraCsv, text)
    }

    fn sample() -> String {
        sample_text("entra-oath.csv")
    }

    #[test]
    fn the_sample_imports_with_owners_steps_and_an_80_bit_warning() {
        let parsed = entra(&sample());
        assert!(parsed.errors.is_empty(), "{:?}", errors_of(&parsed));
        assert_eq!(parsed.rows.len(), 5);
        let row = &parsed.rows[1];
        assert_eq!(row.line, 3);
        assert_eq!(row.serial, "T2-100002");
        assert_eq!(row.owner.as_deref(), Some("user2@example.org"));
        assert_eq!(row.period, 60);
        assert_eq!(row.digits, 6);
        assert_eq!(row.manufacturer.as_deref(), Some("Token2"));
        assert_eq!(row.model.as_deref(), Some("C302-i"));
        assert_eq!(row.seed.bits(), 80);
        let warned: Vec<usize> = parsed.warnings.iter().map(|w| w.line).collect();
        assert_eq!(warned, [3, 5], "{:?}", warnings_of(&parsed));
        assert!(parsed.warnings[0].message.contains("80 bits"));
    }

    #[test]
    fn header_variants_bom_lf_semicolons_and_utf16_all_read_the_same() {
        let expected = expected_codes();
        let base = sample();
        let variants = [
            base.clone(),
            base.replace("time interval", "timeinterval"),
            base.replacen(
                "upn,serial number,secret key,time interval,manufacturer,model",
                " UPN , Serial Number,SECRET KEY ,  Time  Interval,Manufacturer,Model",
                1,
            ),
            format!("\u{feff}{base}"),
            base.replace("\r\n", "\n"),
            base.replace("\r\n", "\r"),
            base.replace(',', ";"),
            base.replace(',', "\t"),
            base.replace("\r\n", ",\r\n"),
            base.replace("\r\n", ";\r\n").replace(',', ";"),
            format!("\r\n\r\n{base}\r\n,,,,,\r\n\r\n"),
            format!("sep=;\r\n{}", base.replace(',', ";")),
        ];
        for (i, variant) in variants.iter().enumerate() {
            let parsed = entra(variant);
            assert!(
                parsed.errors.is_empty(),
                "variant {i}: {:?}",
                errors_of(&parsed)
            );
            assert_eq!(parsed.rows.len(), 5, "variant {i}");
            for row in &parsed.rows {
                assert_eq!(&code_of(row), &expected[&row.serial], "variant {i}");
            }
        }
        let le: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain(base.encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        let be: Vec<u8> = [0xFE, 0xFF]
            .into_iter()
            .chain(base.encode_utf16().flat_map(u16::to_be_bytes))
            .collect();
        for bytes in [le, be] {
            let parsed = parse(&bytes, &ImportOptions::default());
            assert_eq!(parsed.format, ImportFormat::EntraCsv);
            assert!(parsed.errors.is_empty(), "{:?}", errors_of(&parsed));
            for row in &parsed.rows {
                assert_eq!(&code_of(row), &expected[&row.serial]);
            }
        }
    }

    #[test]
    fn quoted_cells_spaced_secrets_and_padding_are_accepted() {
        let expected = expected_codes();
        let text = sample()
            .replace("T2-100001", "\"T2-100001\"")
            .replace(
                "7GIYCPFAMKVZ2CIPUBR42BBLN573O7R2",
                "\"7GIY CPFA MKVZ 2CIP UBR4 2BBL N573 O7R2\"",
            )
            .replace("UFOEYZUHILYLDNGO", "UFOEYZUHILYLDNGO======");
        let parsed = entra(&text);
        assert!(parsed.errors.is_empty(), "{:?}", errors_of(&parsed));
        for row in &parsed.rows {
            assert_eq!(&code_of(row), &expected[&row.serial]);
        }
    }

    #[test]
    fn one_bad_row_names_its_line_and_column_and_nothing_is_importable() {
        let text = sample().replace("UKGUPFJY6N75UNWE", "UKGUPFJY0N75UNWE");
        let parsed = entra(&text);
        assert_eq!(
            errors_of(&parsed),
            ["line 5, secret key: '0' is not a base32 character — base32 uses A–Z and 2–7; if this is hex, pass --secret-encoding hex"]
        );
        assert!(!parsed.is_importable());
        assert_secret_absent(&parsed, "UKGUPFJY0N75UNWE");
    }

    #[test]
    fn every_bad_row_and_cell_is_reported() {
        let text = sample()
            .replace("T2-100001", "")
            .replace("user3@example.org", "user three")
            .replace("UKGUPFJY6N75UNWE,60", "UKGUPFJY6N75UNWE,45")
            .replace("TNTUHKYPDFZ4CWDVF4XI2TGCVTVGIQZP,30", ",thirty");
        let parsed = entra(&text);
        let found = places(&parsed);
        assert_eq!(
            found,
            [
                (2, "serial number"),
                (4, "upn"),
                (5, "time interval"),
                (6, "secret key"),
                (6, "time interval"),
            ],
            "{:?}",
            errors_of(&parsed)
        );
    }

    #[test]
    fn duplicate_serials_name_both_lines() {
        let text = sample().replace("T2-100004", "T2-100002");
        let parsed = entra(&text);
        assert_eq!(parsed.errors.len(), 1, "{:?}", errors_of(&parsed));
        let e = &parsed.errors[0];
        assert_eq!((e.line, e.column.as_str()), (5, "serial number"));
        assert!(e.reason.contains("already on line 3"), "{e}");
    }

    #[test]
    fn scientific_notation_serials_are_refused_with_the_fix() {
        let text = format!("{HEADER}\r\nuser1@example.org,7.00E+06,7GIYCPFAMKVZ2CIPUBR42BBLN573O7R2,30,Token2,C302\r\n",
            HEADER = super::HEADER);
        let parsed = entra(&text);
        assert_eq!(parsed.errors.len(), 1);
        let line = parsed.errors[0].to_line();
        assert!(
            line.starts_with("line 2, serial number: '7.00E+06'"),
            "{line}"
        );
        assert!(line.contains("scientific notation"), "{line}");
        assert!(line.contains("format the column as text"), "{line}");
    }

    #[test]
    fn leading_zero_serials_stay_text() {
        let text = format!(
            "{}\nuser1@example.org,000123,7GIYCPFAMKVZ2CIPUBR42BBLN573O7R2,30,Token2,C302\nuser2@example.org,=\"000124\",UFOEYZUHILYLDNGO,60,,\n",
            super::HEADER
        );
        let parsed = entra(&text);
        assert!(parsed.errors.is_empty(), "{:?}", errors_of(&parsed));
        assert_eq!(serials(&parsed), ["000123", "000124"]);
        assert_eq!(parsed.rows[1].manufacturer, None);
    }

    #[test]
    fn a_missing_header_is_refused_without_quoting_the_first_row() {
        let text: String = sample().lines().skip(1).collect::<Vec<_>>().join("\n");
        let parsed = entra(&text);
        assert_eq!(parsed.errors.len(), 1);
        let e = &parsed.errors[0];
        assert_eq!((e.line, e.column.as_str()), (1, "header"));
        assert!(e.fix.contains(super::HEADER), "{e}");
        assert_secret_absent(&parsed, "7GIYCPFAMKVZ2CIPUBR42BBLN573O7R2");
    }

    #[test]
    fn extra_values_beyond_the_header_are_an_error_but_empty_ones_are_not() {
        let text = sample().replacen("C302-i\r\n", "C302-i,,\r\n", 1).replacen(
            "user3@example.org,T2-100003,qr4oqscwepo6gzgbqtyf5gvr6zxzsoof,30,Token2,C302-i",
            "user3@example.org,T2-100003,qr4oqscwepo6gzgbqtyf5gvr6zxzsoof,30,Token2,C302-i,oops",
            1,
        );
        let parsed = entra(&text);
        assert_eq!(parsed.errors.len(), 1, "{:?}", errors_of(&parsed));
        assert_eq!(parsed.errors[0].line, 4);
        assert!(parsed.errors[0].reason.contains("7 values"));
    }

    #[test]
    fn hex_secrets_need_the_option_and_then_import() {
        let text = format!(
            "{}\nuser1@example.org,S1,3132333435363738393031323334353637383930,30,,\n",
            super::HEADER
        );
        let parsed = entra(&text);
        assert!(parsed.errors[0].fix.contains("--secret-encoding hex"));
        let parsed = parse(
            text.as_bytes(),
            &ImportOptions {
                format: ImportFormat::EntraCsv,
                secret_encoding: SecretEncoding::Hex,
                ..ImportOptions::default()
            },
        );
        assert!(parsed.errors.is_empty(), "{:?}", errors_of(&parsed));
        assert_eq!(parsed.rows[0].seed.expose(), b"12345678901234567890");
    }

    #[test]
    fn an_empty_upn_escrows_the_token_unassigned_with_a_warning() {
        let text = sample().replace("user1@example.org", "");
        let parsed = entra(&text);
        assert!(parsed.errors.is_empty());
        assert_eq!(parsed.rows[0].owner, None);
        assert!(warnings_of(&parsed)
            .iter()
            .any(|w| w.starts_with("line 2: serial T2-100001: the upn is empty")));
    }

    #[test]
    fn optional_digits_and_algorithm_columns_are_read() {
        let text = "upn,serial number,secret key,time interval,digits,algorithm\n\
                    a@example.org,S1,GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ,30,8,SHA1\n";
        let parsed = entra(text);
        assert!(parsed.errors.is_empty(), "{:?}", errors_of(&parsed));
        assert_eq!(parsed.rows[0].digits, 8);
        // RFC 6238 Appendix B, T = 59.
        let spec = crate::otp::TotpSpec::new(parsed.rows[0].algorithm, 8, 30).unwrap();
        assert_eq!(
            crate::otp::code_at(&parsed.rows[0].seed, &spec, 59, 0).expose(),
            "94287082"
        );
    }

    #[test]
    fn unknown_columns_are_ignored_with_a_warning() {
        let text = sample().replacen("model\r\n", "model,notes\r\n", 1);
        let parsed = entra(&text);
        assert!(parsed.errors.is_empty());
        assert!(warnings_of(&parsed)
            .iter()
            .any(|w| w.contains("column 7 of the header")));
    }
}
