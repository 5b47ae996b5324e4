//! libFuzzer entry of the `onnx_plan` target (see `subsetq_fuzz::onnx_plan`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| subsetq_fuzz::onnx_plan(data));
