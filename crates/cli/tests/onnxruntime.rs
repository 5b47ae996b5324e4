//! `subsetq eval` and `subsetq quantize` against onnxruntime (the project's venv) on the real
//! models and their full test sets.

mod common;

use std::path::PathBuf;

use serde_json::Value;
use subsetq_data::{load, Preprocess};
use subsetq_engine::burn_tensor::Device;
use subsetq_engine::Engine;
use subsetq_onnx::test_assets::{ort_reference, python, require, root};

use common::{read_f32, subsetq_ok as subsetq, temp_dir};

/// Largest allowed |output difference| between our engine and onnxruntime on a quantized model.
const QUANTIZED_TOL: f32 = 1e-4;
/// Test images run through both runtimes for the quantized comparison.
const QUANTIZED_IMAGES: usize = 500;

/// The model (under `assets/` or the committed `models/`) and its IDX test images.
fn model_and_data(model: &str, data: &str) -> Option<(PathBuf, PathBuf)> {
    let model = if model.starts_with("models/") {
        Some(root().join(model))
    } else {
        require(model)
    }?;
    Some((model, require(data)?))
}

/// `subsetq eval` on the full 10k test set gives exactly onnxruntime's top-1.
fn fp32_top1_equals_onnxruntime(model: &str, data: &str) {
    let Some((model, data)) = model_and_data(model, data) else {
        return;
    };
    let Some(py) = python() else { return };
    let dir = temp_dir(&format!(
        "eval-{}",
        model.file_stem().unwrap_or_default().to_string_lossy()
    ));
    let json = dir.join("eval.json");
    subsetq(&[
        "eval",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    let ours: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let pre = Preprocess::from_sidecar(&Preprocess::sidecar_path(&model)).unwrap();
    let (scale, mean, std) = (
        pre.scale.to_string(),
        pre.mean[0].to_string(),
        pre.std[0].to_string(),
    );
    let reply = ort_reference(
        &py,
        &[
            "top1",
            model.to_str().unwrap(),
            data.to_str().unwrap(),
            &scale,
            &mean,
            &std,
        ],
    );
    let counts: Vec<u64> = reply
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    let (n, correct) = (counts[0], counts[1]);
    let theirs = 100.0 * correct as f64 / n as f64;
    eprintln!(
        "{}: ours top-1 {} on {} images, onnxruntime {theirs} on {n}",
        model.display(),
        ours["top1"],
        ours["n"]
    );
    assert_eq!(ours["n"].as_u64(), Some(10_000));
    assert_eq!(n, 10_000);
    assert_eq!(ours["top1"].as_f64(), Some(theirs));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn mnist_cnn_fp32_top1_equals_onnxruntime() {
    fp32_top1_equals_onnxruntime("mnist-cnn.onnx", "data/mnist/t10k-images-idx3-ubyte");
}

#[test]
fn fashion_resnet_fp32_top1_equals_onnxruntime() {
    fp32_top1_equals_onnxruntime(
        "models/fashion-resnet.onnx",
        "data/fashion-mnist/t10k-images-idx3-ubyte.gz",
    );
}

/// Quantizes `model` (`extra` flags added), then runs the first test images through our engine
/// and through onnxruntime; returns the largest |difference| and the share of images with the
/// same top-1 class.
fn quantized_vs_onnxruntime(
    model: &str,
    data: &str,
    quantizer: &str,
    bits: &str,
    extra: &[&str],
) -> Option<(f32, f64)> {
    let (model, data) = model_and_data(model, data)?;
    let py = python()?;
    let dir = temp_dir(&format!(
        "quantized-{}-{quantizer}-{bits}-{}",
        model.file_stem().unwrap_or_default().to_string_lossy(),
        extra.len()
    ));
    let q = dir.join("q.onnx");
    let mut args = vec![
        "quantize",
        model.to_str().unwrap(),
        "-o",
        q.to_str().unwrap(),
        "--bits",
        bits,
        "--quantizer",
        quantizer,
    ];
    args.extend(extra);
    subsetq(&args);
    let pre = Preprocess::from_sidecar(&Preprocess::sidecar_path(&model)).unwrap();
    let images = load(&data, &pre, Some(QUANTIZED_IMAGES)).unwrap();
    let engine = Engine::load(&q, &Device::flex()).unwrap();
    let (dims, ours) = engine
        .run_f32(images.images.clone(), &images.shape())
        .unwrap();

    let input = dir.join("x.f32");
    let bytes: Vec<u8> = images.images.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&input, bytes).unwrap();
    let shape = images.shape().map(|d| d.to_string()).join(",");
    let out = dir.join("y.f32");
    let their_shape = ort_reference(
        &py,
        &[
            "run",
            q.to_str().unwrap(),
            input.to_str().unwrap(),
            &shape,
            out.to_str().unwrap(),
        ],
    );
    let theirs = read_f32(&out);
    let dims_s = dims
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(",");
    assert_eq!(dims_s, their_shape.trim());
    let diff = ours
        .iter()
        .zip(&theirs)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    let classes = dims[1];
    let argmax = |v: &[f32]| -> Vec<usize> {
        v.chunks(classes)
            .map(|r| (0..classes).fold(0, |b, i| if r[i] > r[b] { i } else { b }))
            .collect()
    };
    let same = argmax(&ours)
        .iter()
        .zip(argmax(&theirs))
        .filter(|(a, b)| **a == *b)
        .count();
    eprintln!(
        "{} {quantizer} W{bits} {extra:?}: max |ours − onnxruntime| {diff:.2e} over {QUANTIZED_IMAGES} images, same top-1 on {same}",
        model.display()
    );
    std::fs::remove_dir_all(dir).ok();
    Some((diff, same as f64 / QUANTIZED_IMAGES as f64))
}

fn quantized_matches_onnxruntime(model: &str, data: &str, quantizer: &str, bits: &str) {
    if let Some((diff, _)) = quantized_vs_onnxruntime(model, data, quantizer, bits, &[]) {
        assert!(
            diff <= QUANTIZED_TOL,
            "max |diff| {diff:e} > {QUANTIZED_TOL:e}"
        );
    }
}

#[test]
fn quantized_fashion_resnet_runs_in_onnxruntime_like_in_our_engine() {
    quantized_matches_onnxruntime(
        "models/fashion-resnet.onnx",
        "data/fashion-mnist/t10k-images-idx3-ubyte.gz",
        "sq",
        "3",
    );
}

#[test]
fn quantized_mnist_cnn_runs_in_onnxruntime_like_in_our_engine() {
    quantized_matches_onnxruntime(
        "mnist-cnn.onnx",
        "data/mnist/t10k-images-idx3-ubyte",
        "apot",
        "4",
    );
}

/// With activations quantized the graph holds Div / Round / Clip / Mul nodes that onnxruntime
/// runs as written. Outputs cannot match to 1e-4 there: a pre-activation that the two runtimes
/// sum in different orders can land on either side of a rounding boundary (f32 differences of
/// ~1e-6), and that one flip moves the activation by a whole step. So this checks the top-1
/// classes instead.
#[test]
fn activation_quantized_fashion_resnet_runs_in_onnxruntime() {
    let Some(calib) = require("data/fashion-mnist/train-images-idx3-ubyte.gz") else {
        return;
    };
    let calib = calib.to_str().unwrap().to_string();
    let extra = [
        "--abits",
        "4",
        "--calib",
        &calib,
        "--calib-size",
        "64",
        "--iters",
        "20",
    ];
    if let Some((_, same)) = quantized_vs_onnxruntime(
        "models/fashion-resnet.onnx",
        "data/fashion-mnist/t10k-images-idx3-ubyte.gz",
        "sq",
        "4",
        &extra,
    ) {
        assert!(
            same >= 0.99,
            "same top-1 on only {:.1} % of images",
            100.0 * same
        );
    }
}
