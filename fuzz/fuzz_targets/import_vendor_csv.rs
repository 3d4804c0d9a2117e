#![no_main]
//! See `seedvault::fuzzing::import_vendor_csv` for the properties checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| seedvault::fuzzing::import_vendor_csv(data));
