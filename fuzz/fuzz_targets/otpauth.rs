#![no_main]
//! See `seedvault::fuzzing::otpauth` for the properties checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| seedvault::fuzzing::otpauth(data));
