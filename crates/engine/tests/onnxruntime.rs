//! The engine against onnxruntime (the project's venv): every supported
//! operator on small seeded cases, and the real models on real data.

mod common;

use std::path::Path;

use common::*;
use prost::Message;
use subsetq_engine::burn_tensor::Device;
use subsetq_engine::{Engine, Plan, Value};
use subsetq_onnx::fold_batch_norm;

/// Single-operator cases: |ours − onnxruntime| ≤ OPS_TOL · max(1, |reference|).
const OPS_TOL: f32 = 1e-5;
/// mnist-cnn: largest allowed difference between our and onnxruntime's class probabilities.
const MNIST_PROB_TOL: f32 = 1e-5;
/// EfficientNet-Lite0: largest allowed |logit difference| against onnxruntime
/// (logits are O(10); 49 convolutions accumulate f32 rounding in different orders).
const EFFNET_LOGIT_TOL: f32 = 1e-4;
/// BN-folded against unfolded EfficientNet-Lite0 (both through our engine, and the
/// folded model through onnxruntime against the unfolded one): largest |logit difference|.
const FOLD_LOGIT_TOL: f32 = 1e-4;
/// How many foolbox ImageNet photos the EfficientNet tests use.
const EFFNET_IMAGES: usize = 4;
/// How many MNIST test images the mnist-cnn test uses.
const MNIST_IMAGES: usize = 1000;

fn cpu() -> Device {
    Device::flex()
}

fn run(engine: &Engine, shape: &[usize], data: Vec<f32>) -> (Vec<usize>, Vec<f32>) {
    engine
        .run_f32(data, shape)
        .unwrap_or_else(|e| panic!("engine run failed: {e}"))
}

#[test]
fn every_operator_matches_onnxruntime() {
    let Some(py) = python() else { return };
    let dir = TempDir::new("ops");
    ort_reference(&py, &["ops", &dir.str("")]);
    let manifest = std::fs::read_to_string(dir.path("manifest.txt")).expect("manifest");
    let mut failures = Vec::new();
    let mut count = 0;
    for line in manifest.lines().filter(|l| !l.trim().is_empty()) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [name, x_shape, y_shape] = parts[..] else {
            panic!("bad manifest line {line:?}")
        };
        let engine = Engine::load(&dir.path(&format!("{name}.onnx")), &cpu())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let x = read_f32(&dir.path(&format!("{name}.x.f32")));
        let want = read_f32(&dir.path(&format!("{name}.y.f32")));
        let (dims, got) = match engine.run_f32(x, &parse_shape(x_shape)) {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        count += 1;
        if dims != parse_shape(y_shape) {
            failures.push(format!("{name}: shape {dims:?}, onnxruntime {y_shape}"));
            continue;
        }
        let worst = got
            .iter()
            .zip(&want)
            .map(|(g, w)| (g - w).abs() / w.abs().max(1.0))
            .fold(0.0f32, f32::max);
        eprintln!("{name:<28} max scaled diff {worst:.2e}");
        if worst.is_nan() || worst > OPS_TOL {
            failures.push(format!("{name}: max scaled diff {worst:e} > {OPS_TOL:e}"));
        }
    }
    assert!(count >= 50, "only {count} cases ran");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn mnist_cnn_matches_onnxruntime_on_1000_test_images() {
    let (Some(model), Some(images)) = (
        asset("mnist-cnn.onnx"),
        asset("data/mnist/t10k-images-idx3-ubyte"),
    ) else {
        return;
    };
    let Some(py) = python() else { return };
    let dir = TempDir::new("mnist");
    let n = MNIST_IMAGES.to_string();
    ort_reference(
        &py,
        &[
            "mnist",
            &model.display().to_string(),
            &images.display().to_string(),
            &n,
            &dir.str("probs.f32"),
        ],
    );
    let want = read_f32(&dir.path("probs.f32"));

    let engine = Engine::load(&model, &cpu()).expect("plan mnist-cnn");
    let (shape, x) = read_idx_images(&images, MNIST_IMAGES);
    assert_eq!(shape, vec![MNIST_IMAGES, 1, 28, 28]);
    let per = 28 * 28;
    let batch = 250;
    let mut got = Vec::with_capacity(MNIST_IMAGES * 10);
    for chunk in x.chunks(batch * per) {
        let (dims, y) = run(&engine, &[chunk.len() / per, 1, 28, 28], chunk.to_vec());
        assert_eq!(dims, vec![chunk.len() / per, 10]);
        got.extend(y);
    }
    assert_eq!(got.len(), want.len());
    let diff = max_abs_diff(&got, &want);
    let (ours, theirs) = (argmax_rows(&got, 10), argmax_rows(&want, 10));
    let disagree = ours.iter().zip(&theirs).filter(|(a, b)| a != b).count();
    eprintln!("mnist-cnn, {MNIST_IMAGES} images: max |prob diff| {diff:.2e}, argmax disagreements {disagree}");
    assert_eq!(disagree, 0, "argmax differs from onnxruntime");
    assert!(
        diff <= MNIST_PROB_TOL,
        "max |prob diff| {diff:e} > {MNIST_PROB_TOL:e}"
    );
}

/// Preprocessed foolbox ImageNet photos and onnxruntime's logits for them.
fn effnet_reference(
    py: &Path,
    model: &Path,
    photos: &Path,
    dir: &TempDir,
) -> (Vec<usize>, Vec<f32>, Vec<f32>) {
    let n = EFFNET_IMAGES.to_string();
    let shape = ort_reference(
        py,
        &[
            "images",
            &model.display().to_string(),
            &photos.display().to_string(),
            "imagenet_",
            &n,
            &dir.str("input.f32"),
            &dir.str("logits.f32"),
        ],
    );
    (
        parse_shape(&shape),
        read_f32(&dir.path("input.f32")),
        read_f32(&dir.path("logits.f32")),
    )
}

#[test]
fn efficientnet_lite0_matches_onnxruntime_and_folding_keeps_outputs() {
    let (Some(model_path), Some(photos)) =
        (asset("efficientnet-lite0.onnx"), asset("data/foolbox"))
    else {
        return;
    };
    let Some(py) = python() else { return };
    let dir = TempDir::new("effnet");
    let (shape, x, want) = effnet_reference(&py, &model_path, &photos, &dir);
    assert_eq!(shape, vec![EFFNET_IMAGES, 3, 224, 224]);

    let model = subsetq_onnx::load(&model_path).expect("load");
    let engine = Engine::new(Plan::from_model(&model).expect("plan"), &cpu()).expect("engine");
    let (dims, got) = run(&engine, &shape, x.clone());
    assert_eq!(dims, vec![EFFNET_IMAGES, 1000]);
    let diff = max_abs_diff(&got, &want);
    let same_top1 = argmax_rows(&got, 1000) == argmax_rows(&want, 1000);
    eprintln!(
        "efficientnet-lite0 vs onnxruntime: max |logit diff| {diff:.2e}, same top-1 {same_top1}"
    );
    assert!(same_top1);
    assert!(
        diff <= EFFNET_LOGIT_TOL,
        "max |logit diff| {diff:e} > {EFFNET_LOGIT_TOL:e}"
    );

    // BN folding: all 49 batch norms fold; outputs stay.
    let (folded, report) = fold_batch_norm(&model).expect("fold");
    assert!(report.skipped.is_empty(), "skipped: {:?}", report.skipped);
    assert_eq!(report.folded.len(), 49);
    let graph = folded.graph().expect("graph");
    assert!(graph
        .node
        .iter()
        .all(|n| n.op_type() != "BatchNormalization"));
    // The weight names stay (the reference vectors map to them).
    let names: Vec<String> = model
        .weight_layers()
        .expect("layers")
        .into_iter()
        .map(|l| l.name)
        .collect();
    let folded_names: Vec<String> = folded
        .weight_layers()
        .expect("layers")
        .into_iter()
        .map(|l| l.name)
        .collect();
    assert_eq!(names, folded_names);

    let folded_engine =
        Engine::new(Plan::from_model(&folded).expect("plan folded"), &cpu()).expect("engine");
    let (_, got_folded) = run(&folded_engine, &shape, x);
    let fold_diff = max_abs_diff(&got_folded, &got);
    eprintln!("efficientnet-lite0 folded vs unfolded (engine): max |logit diff| {fold_diff:.2e}");
    assert!(
        fold_diff <= FOLD_LOGIT_TOL,
        "folded vs unfolded {fold_diff:e} > {FOLD_LOGIT_TOL:e}"
    );
    assert_eq!(argmax_rows(&got_folded, 1000), argmax_rows(&got, 1000));

    // The folded model is valid ONNX for onnxruntime, with the same outputs.
    std::fs::write(dir.path("folded.onnx"), folded.proto.encode_to_vec()).expect("write");
    let shape_arg = shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(",");
    ort_reference(
        &py,
        &[
            "run",
            &dir.str("folded.onnx"),
            &dir.str("input.f32"),
            &shape_arg,
            &dir.str("ort_folded.f32"),
        ],
    );
    let ort_folded = read_f32(&dir.path("ort_folded.f32"));
    let ort_fold_diff = max_abs_diff(&ort_folded, &want);
    eprintln!(
        "efficientnet-lite0 folded vs unfolded (onnxruntime): max |logit diff| {ort_fold_diff:.2e}"
    );
    assert!(ort_fold_diff <= FOLD_LOGIT_TOL);
    assert!(max_abs_diff(&ort_folded, &got_folded) <= EFFNET_LOGIT_TOL);
}

#[test]
fn engine_values_round_trip() {
    let device = cpu();
    let v = Value::from_f32(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3], &device).expect("value");
    assert_eq!(v.dims(), vec![2, 3]);
    assert_eq!(v.to_vec(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert!(Value::from_f32(vec![1.0], &[2], &device).is_none());
    assert!(Value::from_f32(vec![1.0], &[], &device).is_none());
}
