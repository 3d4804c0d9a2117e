#![no_main]
//! See `seedvault::fuzzing::qr` for the properties checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| seedvault::fuzzing::qr(data));
