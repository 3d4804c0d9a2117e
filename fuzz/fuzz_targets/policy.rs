#![no_main]
//! See `seedvault::fuzzing::policy` for the properties checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| seedvault::fuzzing::policy(data));
