//! libFuzzer entry of the `idx` target (see `subsetq_fuzz::idx`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| subsetq_fuzz::idx(data));
