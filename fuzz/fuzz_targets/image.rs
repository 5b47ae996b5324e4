//! libFuzzer entry of the `image` target (see `subsetq_fuzz::image`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| subsetq_fuzz::image(data));
