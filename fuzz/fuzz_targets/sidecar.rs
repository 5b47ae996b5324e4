//! libFuzzer entry of the `sidecar` target (see `subsetq_fuzz::sidecar`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| subsetq_fuzz::sidecar(data));
