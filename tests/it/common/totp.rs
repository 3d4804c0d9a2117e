//! An independent RFC 6238 implementation (HMAC from RustCrypto, not totp-rs), so tests
//! check the vault's codes against a second computation.

use hmac::{Hmac, Mac};

pub fn totp(secret: &[u8], algorithm: &str, digits: u32, period: i64, unix_time: i64) -> String {
    let counter = (unix_time / period) as u64;
    let message = counter.to_be_bytes();
    let digest = match algorithm {
        "SHA1" => mac::<Hmac<sha1::Sha1>>(secret, &message),
        "SHA256" => mac::<Hmac<sha2::Sha256>>(secret, &message),
        "SHA512" => mac::<Hmac<sha2::Sha512>>(secret, &message),
        other => panic!("unknown algorithm {other}"),
    };
    // RFC 4226 §5.3 dynamic truncation.
    let offset = (digest[digest.len() - 1] & 0x0f) as usize;
    let binary = u32::from_be_bytes([
        digest[offset] & 0x7f,
        digest[offset + 1],
        digest[offset + 2],
        digest[offset + 3],
    ]);
    format!(
        "{:0width$}",
        binary % 10u32.pow(digits),
        width = digits as usize
    )
}

fn mac<M: Mac + hmac::digest::KeyInit>(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = <M as Mac>::new_from_slice(key).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// The helper itself against RFC 6238 Appendix B.
pub fn self_check() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/rfc6238-vectors.csv");
    for line in std::fs::read_to_string(path).unwrap().lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let secret = data_encoding::HEXLOWER_PERMISSIVE
            .decode(f[1].as_bytes())
            .unwrap();
        assert_eq!(
            totp(
                &secret,
                f[0],
                f[3].parse().unwrap(),
                f[4].parse().unwrap(),
                f[5].parse().unwrap()
            ),
            f[6],
            "{line}"
        );
    }
}
