//! libFuzzer entry of the `compact_fold` target (see `subsetq_fuzz::compact_fold`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| subsetq_fuzz::compact_fold(data));
