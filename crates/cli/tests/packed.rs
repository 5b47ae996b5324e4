//! `subsetq eval --kernels packed`: compact W4A8 models run from their codes on the packed
//! kernels give the fake-quant model's top-1 on the real 10k test sets.

mod common;

use std::path::Path;

use serde_json::Value;
use subsetq_onnx::test_assets::{require, root};

use common::{subsetq, subsetq_ok, temp_dir};

/// W4 with 8-bit activation quantizers, reconstruction kept short.
fn quantize_w4a8(model: &Path, calib: &Path, out: &Path) {
    subsetq_ok(&[
        "quantize",
        model.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--bits",
        "4",
        "--abits",
        "8",
        "--calib",
        calib.to_str().unwrap(),
        "--calib-size",
        "64",
        "--iters",
        "20",
        "--recon-batch",
        "16",
    ]);
}

/// Packed (this model) against float (the same model through `--compare`), on every test
/// image: the same top-1, and nearly every prediction the same.
fn packed_matches_float(quantized: &Path, test_images: &Path, dir: &Path) -> Value {
    let json = dir.join("eval.json");
    let stdout = subsetq_ok(&[
        "eval",
        quantized.to_str().unwrap(),
        "--data",
        test_images.to_str().unwrap(),
        "--kernels",
        "packed",
        "--compare",
        quantized.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    eprintln!("{stdout}");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(doc["kernels"], "packed");
    assert_eq!(doc["n"], 10_000);
    assert_eq!(doc["top1"], doc["compare"]["top1"], "{doc}");
    let agreement = doc["agreement_top1"].as_f64().unwrap();
    assert!(agreement >= 99.9, "packed vs float agreement {agreement} %");
    doc
}

#[test]
fn fashion_resnet_w4a8_runs_on_the_int8_kernels_with_the_fake_quant_top1() {
    let (Some(calib), Some(test)) = (
        require("data/fashion-mnist/train-images-idx3-ubyte.gz"),
        require("data/fashion-mnist/t10k-images-idx3-ubyte.gz"),
    ) else {
        return;
    };
    let dir = temp_dir("packed-fashion");
    let q = dir.join("w4a8.onnx");
    quantize_w4a8(&root().join("models/fashion-resnet.onnx"), &calib, &q);
    let doc = packed_matches_float(&q, &test, &dir);
    // The 15 middle convolutions read 8-bit activations: path A. The stem (its input is the
    // image) and the 8-bit uniform classifier take path B.
    assert_eq!(doc["packed"]["int8"].as_array().unwrap().len(), 15, "{doc}");
    assert_eq!(doc["packed"]["f32"].as_array().unwrap().len(), 2, "{doc}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn mnist_cnn_w4a8_runs_on_the_packed_kernels_with_the_fake_quant_top1() {
    let (Some(calib), Some(test), Some(model)) = (
        require("data/mnist/train-images-idx3-ubyte"),
        require("data/mnist/t10k-images-idx3-ubyte"),
        require("mnist-cnn.onnx"),
    ) else {
        return;
    };
    let dir = temp_dir("packed-mnist");
    let q = dir.join("w4a8.onnx");
    quantize_w4a8(&model, &calib, &q);
    let doc = packed_matches_float(&q, &test, &dir);
    let int8 = doc["packed"]["int8"].as_array().unwrap();
    assert!(int8.iter().any(|n| n == "conv2"), "{doc}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_model_without_codes_is_refused_on_the_packed_kernels() {
    let Some(test) = require("data/fashion-mnist/t10k-images-idx3-ubyte.gz") else {
        return;
    };
    let out = subsetq(&[
        "eval",
        root().join("models/fashion-resnet.onnx").to_str().unwrap(),
        "--data",
        test.to_str().unwrap(),
        "--kernels",
        "packed",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no weights in compact form") && stderr.lines().count() == 1,
        "{stderr}"
    );
}
