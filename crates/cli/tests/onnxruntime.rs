//! `subsetq eval` and `subsetq quantize` against onnxruntime (the project's venv) on the real
//! models and their full test sets.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use subsetq_data::{load, Preprocess};
use subsetq_engine::burn_tensor::Device;
use subsetq_engine::Engine;
use subsetq_onnx::test_assets::{ort_reference, python, require, root};

/// Largest allowed |output difference| between our engine and onnxruntime on a quantized model.
const QUANTIZED_TOL: f32 = 1e-4;
/// Test images run through both runtimes for the quantized comparison.
const QUANTIZED_IMAGES: usize = 500;

fn subsetq(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_subsetq"))
        .args(args)
        .output()
        .expect("run subsetq");
    assert!(
        out.status.success(),
        "subsetq {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("subsetq-ort-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

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
    let dir = temp_dir("eval");
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

fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Quantizes `model`, then runs the first test images through our engine and through
/// onnxruntime: same outputs within `QUANTIZED_TOL`.
fn quantized_matches_onnxruntime(model: &str, data: &str, quantizer: &str, bits: &str) {
    let Some((model, data)) = model_and_data(model, data) else {
        return;
    };
    let Some(py) = python() else { return };
    let dir = temp_dir(&format!("quantized-{quantizer}-{bits}"));
    let q = dir.join("q.onnx");
    subsetq(&[
        "quantize",
        model.to_str().unwrap(),
        "-o",
        q.to_str().unwrap(),
        "--bits",
        bits,
        "--quantizer",
        quantizer,
    ]);
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
        "{} {quantizer} W{bits}: max |ours − onnxruntime| {diff:.2e} over {QUANTIZED_IMAGES} images, same top-1 on {same}",
        model.display()
    );
    assert!(
        diff <= QUANTIZED_TOL,
        "max |diff| {diff:e} > {QUANTIZED_TOL:e}"
    );
    std::fs::remove_dir_all(dir).ok();
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
