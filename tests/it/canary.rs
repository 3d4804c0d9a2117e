//! The canary itself must be able to fail: these tests plant secrets where it looks.

use crate::common;

use common::canary::{contains, Canary};

#[test]
fn the_canary_finds_a_seed_in_any_encoding_in_a_file() {
    let seed = b"\x01\x02seed-bytes-here\xff";
    for planted in [
        seed.to_vec(),
        data_encoding::HEXUPPER.encode(seed).into_bytes(),
        data_encoding::BASE32_NOPAD
            .encode(seed)
            .to_lowercase()
            .into_bytes(),
    ] {
        let canary = Canary::new();
        canary.watch_seed("seed", seed);
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(
            dir.path().join("sub/file.bin"),
            [b"prefix".as_slice(), &planted, b"suffix"].concat(),
        )
        .unwrap();
        let caught = std::panic::catch_unwind(|| canary.assert_clean(&[dir.path()]));
        assert!(caught.is_err(), "planted form not found");
    }
}

#[test]
fn the_canary_finds_a_secret_in_a_recorded_response_and_codes_only_as_whole_numbers() {
    let canary = Canary::new();
    canary.watch_text("invite", "tok_123");
    canary.record_response("GET /x", b"{\"url\":\"/invite/tok_123\"}");
    assert!(std::panic::catch_unwind(|| canary.assert_clean(&[])).is_err());

    assert!(contains(b"code 123456.", b"123456", true));
    assert!(!contains(b"time 1764123456", b"123456", true));
    assert!(contains(b"time 1764123456", b"123456", false));
    // A timing such as sqlx's `elapsed=1.091009ms` is not a leaked code; a code that ends a
    // sentence still is.
    assert!(!contains(b"elapsed=1.091009ms", b"091009", true));
    assert!(!contains(b"took 091009.5 s", b"091009", true));
    assert!(contains(b"your code is 091009.", b"091009", true));
    assert_eq!(Canary::new().watched(), 0);
}
