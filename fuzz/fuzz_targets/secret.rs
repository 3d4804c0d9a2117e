#![no_main]
//! See `seedvault::fuzzing::secret` for the properties checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| seedvault::fuzzing::secret(data));
