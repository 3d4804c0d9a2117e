//! Property tests: arbitrary bytes and mutated sample files never panic the parser, a file
//! without errors always yields consistent rows, and no report ever quotes a sample secret.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;

use proptest::prelude::*;

use super::testutil::*;
use super::xmlenc::seal::seal;
use super::xmlenc::tests::ALL as ALL_CIPHERS;
use super::xmlenc::{Cipher, OpenError};
use super::*;
use crate::otp::TotpSpec;

const FORMATS: [ImportFormat; 6] = ImportFormat::ALL;

const ENCODINGS: [SecretEncoding; 3] = [
    SecretEncoding::Auto,
    SecretEncoding::Base32,
    SecretEncoding::Hex,
];

fn options(format: usize, encoding: usize, psk: bool) -> ImportOptions {
    ImportOptions {
        format: FORMATS[format % FORMATS.len()],
        secret_encoding: ENCODINGS[encoding % ENCODINGS.len()],
        psk: psk.then(sample_psk),
        // The password of the RFC 6030 figure 7 sample.
        password: psk.then(|| zeroize::Zeroizing::new("qwerty".to_owned())),
        ..ImportOptions::default()
    }
}

/// What must hold for every outcome.
fn assert_consistent(parsed: &ParsedFile) {
    for e in &parsed.errors {
        assert!(!e.column.is_empty() && !e.reason.is_empty(), "{e:?}");
    }
    if !parsed.errors.is_empty() {
        assert!(!parsed.is_importable());
        return;
    }
    assert_ne!(parsed.format, ImportFormat::Auto);
    assert!(!parsed.rows.is_empty(), "no errors but no rows either");
    let mut serials = HashSet::new();
    let mut last_line = 0;
    for row in &parsed.rows {
        assert!(
            serials.insert(row.serial.clone()),
            "duplicate serial accepted"
        );
        assert!(crate::tokens::clean_serial(&row.serial).is_ok());
        assert!(TotpSpec::new(row.algorithm, row.digits, row.period).is_ok());
        assert!((80..=1024).contains(&row.seed.bits()));
        assert!(row.line > last_line, "rows out of file order");
        last_line = row.line;
        if let Some(owner) = &row.owner {
            assert!(rows::looks_like_upn(owner));
        }
        let _ = code_of(row);
    }
}

/// Every secret written in the sample files, as it appears there.
fn sample_secrets() -> Vec<String> {
    let mut secrets = Vec::new();
    for (file, column) in [("entra-oath.csv", 2), ("vendor-safeid.csv", 1)] {
        for line in sample_text(file).lines().skip(1) {
            if let Some(cell) = line.split(',').nth(column) {
                secrets.push(cell.to_owned());
            }
        }
    }
    for line in sample_text("otpauth-uris.txt").lines() {
        if let Some((_, rest)) = line.split_once("secret=") {
            secrets.push(rest.split('&').next().unwrap_or("").to_owned());
        }
    }
    for file in [
        "pskc-plain.xml",
        "pskc-encrypted.xml",
        "pskc-rfc6030-figure7.xml",
    ] {
        let text = sample_text(file);
        for tag in ["PlainValue>", "CipherValue>"] {
            for piece in text.split(tag).skip(1) {
                let value = piece.split('<').next().unwrap_or("").trim();
                if value.len() > 8 {
                    secrets.push(value.to_owned());
                }
            }
        }
    }
    secrets
}

/// No 8-character piece of any sample secret appears in the report.
fn assert_no_sample_secret(parsed: &ParsedFile, secrets: &[String]) {
    let mut texts: Vec<String> = parsed.errors.iter().map(RowError::to_line).collect();
    texts.extend(parsed.warnings.iter().map(RowWarning::to_line));
    for text in texts {
        let upper = text.to_ascii_uppercase();
        for secret in secrets {
            let secret = secret.to_ascii_uppercase();
            for piece in secret.as_bytes().windows(8) {
                let piece = std::str::from_utf8(piece).unwrap();
                assert!(!upper.contains(piece), "a secret leaked into: {text}");
            }
        }
    }
}

const SAMPLES: [&str; 6] = [
    "entra-oath.csv",
    "vendor-safeid.csv",
    "otpauth-uris.txt",
    "pskc-plain.xml",
    "pskc-encrypted.xml",
    "pskc-rfc6030-figure7.xml",
];

#[derive(Debug, Clone)]
enum Mutation {
    Replace(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    DuplicateLine(usize),
    DropLine(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    // Bytes that matter to the formats are more likely than arbitrary ones.
    let byte = prop_oneof![
        any::<u8>(),
        prop::sample::select(b",;\t\"\r\n =<>/&#0AaZz7E+.".to_vec()),
    ];
    prop_oneof![
        (any::<usize>(), byte.clone()).prop_map(|(i, b)| Mutation::Replace(i, b)),
        (any::<usize>(), byte).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Delete),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        any::<usize>().prop_map(Mutation::DropLine),
    ]
}

fn apply(bytes: &mut Vec<u8>, mutation: &Mutation) {
    let len = bytes.len();
    match *mutation {
        Mutation::Replace(i, b) if len > 0 => bytes[i % len] = b,
        Mutation::Insert(i, b) => bytes.insert(i % (len + 1), b),
        Mutation::Delete(i) if len > 0 => {
            bytes.remove(i % len);
        }
        Mutation::DuplicateLine(i) | Mutation::DropLine(i) => {
            let mut lines: Vec<Vec<u8>> =
                bytes.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
            let at = i % lines.len();
            if matches!(mutation, Mutation::DuplicateLine(_)) {
                let copy = lines[at].clone();
                lines.insert(at, copy);
            } else {
                lines.remove(at);
            }
            *bytes = lines.join(&b'\n');
        }
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        format in 0..FORMATS.len(),
        encoding in 0..ENCODINGS.len(),
        psk in any::<bool>(),
    ) {
        let parsed = parse(&bytes, &options(format, encoding, psk));
        assert_consistent(&parsed);
    }

    #[test]
    fn arbitrary_text_never_panics(
        text in "(\\PC|[,;\"\r\n\t<>&=:/]){0,400}",
        format in 0..FORMATS.len(),
    ) {
        let parsed = parse(text.as_bytes(), &options(format, 0, false));
        assert_consistent(&parsed);
        let lines = text.split('\n').count().max(text.split('\r').count());
        for e in &parsed.errors {
            prop_assert!(e.line <= lines, "line {} of {}", e.line, lines);
        }
    }

    #[test]
    fn arbitrary_uri_lines_never_panic(
        lines in prop::collection::vec(
            ("(?i:otpauth://(totp|hotp|x)/)", "\\PC{0,80}").prop_map(|(a, b)| a + &b),
            1..6,
        ),
    ) {
        let text = lines.join("\n");
        let parsed = parse(text.as_bytes(), &options(0, 0, false));
        assert_consistent(&parsed);
        prop_assert_eq!(parsed.format, ImportFormat::OtpauthList);
    }

    #[test]
    fn mutated_samples_never_panic_never_leak_and_stay_consistent(
        sample in 0..SAMPLES.len(),
        mutations in prop::collection::vec(mutation(), 1..6),
        format in 0..FORMATS.len(),
    ) {
        let secrets = sample_secrets();
        let mut bytes = read_sample(SAMPLES[sample]);
        for m in &mutations {
            apply(&mut bytes, m);
        }
        for options in [options(0, 0, true), options(format, 0, true), options(format, 2, false)] {
            let parsed = parse(&bytes, &options);
            assert_consistent(&parsed);
            assert_no_sample_secret(&parsed, &secrets);
        }
    }

    #[test]
    fn spreadsheet_rows_from_parts_never_panic_and_errors_point_at_real_lines(
        rows in prop::collection::vec(
            prop::collection::vec(
                prop_oneof![
                    // Anything a cell can hold without being a delimiter or a line break.
                    "[^,;\t\r\n]{0,24}",
                    prop::sample::select(vec![
                    "", " ", "user1@example.org", "T2-1", "T2-2", "007", "7.00E+06", "7000001.00",
                    "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ", "gezd gnbv gy3t qojq gezd gnbv gy3t qojq==",
                    "3132333435363738393031323334353637383930", "2345ABCD2345ABCD2345ABCD2345ABCD",
                    "30", "60", "45", "0", "Token2", "\"quoted, cell\"", "\"unterminated",
                    "otpauth://totp/a?secret=AAAA", "1.23457E+39",
                ]).prop_map(str::to_owned),
                ],
                0..8,
            ),
            0..12,
        ),
        delimiter in prop::sample::select(vec![",", ";", "\t"]),
        crlf in any::<bool>(),
        encoding in 0..ENCODINGS.len(),
    ) {
        let newline = if crlf { "\r\n" } else { "\n" };
        let mut text = ["upn", "serial number", "secret key", "time interval", "manufacturer", "model"]
            .join(delimiter);
        for row in &rows {
            text.push_str(newline);
            text.push_str(&row.join(delimiter));
        }
        let parsed = parse(text.as_bytes(), &options(0, encoding, false));
        assert_consistent(&parsed);
        prop_assert_eq!(parsed.format, ImportFormat::EntraCsv);
        for e in &parsed.errors {
            prop_assert!(e.line <= rows.len() + 1, "{:?}", e);
        }
        for row in &parsed.rows {
            prop_assert!(row.line >= 2 && row.line <= rows.len() + 1);
        }
    }

    #[test]
    fn every_cipher_opens_any_seed_it_sealed_and_no_other_key_yields_it(
        cipher in 0..ALL_CIPHERS.len(),
        seed in prop::collection::vec(any::<u8>(), 10..64),
        key_byte in any::<u8>(),
        flip in any::<usize>(),
    ) {
        let cipher = ALL_CIPHERS[cipher];
        // RFC 3394, RFC 3657 and RFC 3217 wrap whole 8-byte blocks only (at least two for
        // RFC 3394); the padded wrap and CBC take any length.
        let whole_blocks_only = !cipher.is_cbc()
            && !matches!(cipher, Cipher::KwAes128Pad | Cipher::KwAes192Pad | Cipher::KwAes256Pad);
        prop_assume!(!whole_blocks_only || (seed.len() % 8 == 0 && seed.len() >= 16));
        let key = vec![key_byte; cipher.key_len()];
        let sealed = seal(cipher, &key, &seed);
        prop_assert_eq!(&*cipher.open(&key, &sealed).unwrap(), seed.as_slice());
        let mut other = key.clone();
        let at = flip % other.len();
        other[at] ^= 0x01 << (flip % 7 + 1);
        match cipher.open(&other, &sealed) {
            // A key wrap always notices; CBC padding may pass by chance, never to the seed.
            Ok(plain) => prop_assert!(cipher.is_cbc() && *plain != seed),
            Err(e) => {
                let wrong_length = matches!(e, OpenError::KeyLength { .. });
                prop_assert!(!wrong_length);
            }
        }
    }

    #[test]
    fn arbitrary_ciphertext_never_panics_a_decryptor(
        cipher in 0..ALL_CIPHERS.len(),
        sealed in prop::collection::vec(any::<u8>(), 0..120),
        key_len in 0usize..40,
    ) {
        let cipher = ALL_CIPHERS[cipher];
        let _ = cipher.open(&vec![7u8; key_len], &sealed);
        let _ = cipher.open(&vec![7u8; cipher.key_len()], &sealed);
    }
}
