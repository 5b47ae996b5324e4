//! The detection and segmentation models through the pipeline: our engine against
//! onnxruntime on every task output (FP32 and quantized) of BlazeFace, NanoDet and the selfie
//! segmenter, `eval --task detect|segment` and `bench tasks`.

mod common;

use std::path::{Path, PathBuf};

use serde_json::Value;
use subsetq_data::{load, Preprocess};
use subsetq_onnx::test_assets::{ort_reference, python, require};
use subsetq_pipeline::eval::Runner;
use subsetq_pipeline::progress;

use common::{read_f32, subsetq, subsetq_ok, temp_dir};

/// Photos with faces (and cat faces) that BlazeFace finds.
const PHOTOS: &str = "data/ai-benchmark/segmentation";
const PHOTOS_RUN: usize = 12;
/// Largest |ours − onnxruntime| over the head outputs, relative to their largest |value|
/// (score logits and box offsets in pixels reach the hundreds).
const RELATIVE_TOL: f32 = 1e-5;
/// The same for the selfie mask (values 0..1), whose last sigmoid is steepest at mask edges:
/// float32 summation order over ~50 layers moves a few edge pixels by up to ~1e-4 (the numpy
/// check in tests/python/test_tfjs_models.py sees the same).
const MASK_TOL: f32 = 5e-4;

/// Every output of `model` (preprocessed as `asset`'s sidecar says) on the first `n` photos,
/// through our engine and onnxruntime: the largest difference relative to the largest value,
/// over all outputs.
fn relative_diff_to_onnxruntime(
    asset: &Path,
    model: &Path,
    photos: &Path,
    n: usize,
    dir: &Path,
    py: &Path,
) -> f32 {
    let pre = Preprocess::from_sidecar(&Preprocess::sidecar_path(asset)).unwrap();
    let data = load(photos, &pre, Some(n)).unwrap();
    let names = pre.task.as_ref().unwrap().outputs();
    let onnx = subsetq_onnx::load(model).unwrap();
    let ours = Runner::new(&onnx, &pre)
        .unwrap()
        .named_outputs(&data, 5, &names, "test", &mut progress::quiet)
        .unwrap();

    let input = dir.join("x.f32");
    let bytes: Vec<u8> = data.images.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&input, bytes).unwrap();
    let shape = data.shape().map(|d| d.to_string()).join(",");
    let prefix = dir.join("y");
    let listing = ort_reference(
        py,
        &[
            "outputs",
            model.to_str().unwrap(),
            input.to_str().unwrap(),
            &shape,
            prefix.to_str().unwrap(),
        ],
    );
    let (mut diff, mut scale) = (0.0f32, 0.0f32);
    for (k, line) in listing.lines().enumerate() {
        let name = line.split(' ').next().unwrap();
        let ours = ours.iter().find(|o| o.name == name).unwrap();
        let theirs = read_f32(&PathBuf::from(format!("{}.{k}.f32", prefix.display())));
        assert_eq!(ours.values.len(), theirs.len(), "{name}");
        for (a, b) in ours.values.iter().zip(&theirs) {
            diff = diff.max((a - b).abs());
            scale = scale.max(b.abs());
        }
    }
    assert_eq!(listing.lines().count(), names.len(), "{listing}");
    diff / scale.max(1.0)
}

/// The FP32 model and its W4 quantization, against onnxruntime on `n` photos.
fn task_model_matches_onnxruntime(asset: &str, n: usize, tol: f32) {
    let (Some(model), Some(photos), Some(py)) = (require(asset), require(PHOTOS), python()) else {
        return;
    };
    let dir = temp_dir(&format!("ort-{asset}"));
    let fp32 = relative_diff_to_onnxruntime(&model, &model, &photos, n, &dir, &py);
    assert!(fp32 <= tol, "FP32: relative diff {fp32:e}");
    let q = dir.join("q.onnx");
    subsetq_ok(&[
        "quantize",
        model.to_str().unwrap(),
        "-o",
        q.to_str().unwrap(),
        "--bits",
        "4",
    ]);
    let quantized = relative_diff_to_onnxruntime(&model, &q, &photos, n, &dir, &py);
    assert!(quantized <= tol, "W4: relative diff {quantized:e}");
    eprintln!("{asset} relative |ours − onnxruntime|: FP32 {fp32:.2e}, W4 {quantized:.2e}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn blazeface_heads_match_onnxruntime_fp32_and_quantized() {
    task_model_matches_onnxruntime("blazeface.onnx", PHOTOS_RUN, RELATIVE_TOL);
}

#[test]
fn nanodet_heads_match_onnxruntime_fp32_and_quantized() {
    task_model_matches_onnxruntime("nanodet.onnx", 4, RELATIVE_TOL);
}

#[test]
fn selfie_mask_matches_onnxruntime_fp32_and_quantized() {
    task_model_matches_onnxruntime("selfie.onnx", 6, MASK_TOL);
}

#[test]
fn eval_task_segment_scores_masks_against_the_reference() {
    let (Some(model), Some(photos)) = (require("selfie.onnx"), require(PHOTOS)) else {
        return;
    };
    let dir = temp_dir("eval-segment");
    let (m, p) = (model.to_str().unwrap(), photos.to_str().unwrap());
    let json = dir.join("self.json");
    let j = json.to_str().unwrap();
    let sidecar = Preprocess::sidecar_path(&model);
    let segment = |candidate: &str| {
        subsetq_ok(&[
            "eval",
            candidate,
            "--preprocess",
            sidecar.to_str().unwrap(),
            "--data",
            p,
            "--limit",
            "8",
            "--task",
            "segment",
            "--compare",
            m,
            "--json",
            j,
        ]);
        let doc: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        doc
    };
    let doc = segment(m);
    assert_eq!(doc["n"].as_u64(), Some(8));
    assert_eq!(doc["mask_iou"].as_f64(), Some(1.0), "{doc}");
    let q = dir.join("q2.onnx");
    subsetq_ok(&["quantize", m, "-o", q.to_str().unwrap(), "--bits", "2"]);
    let doc = segment(q.to_str().unwrap());
    let iou = doc["mask_iou"].as_f64().unwrap();
    assert!((0.0..1.0).contains(&iou), "{doc}");
    assert!(doc["scored"].as_u64().unwrap() > 0, "{doc}");
    std::fs::remove_dir_all(dir).ok();
}

/// The selfie U-Net's skip connections leave no cut among its 51 middle layers: reconstruction
/// learns them in parts (the encoder's residual blocks whole, the decoder a layer at a time),
/// each against the float model's value at its own output.
#[test]
fn the_selfie_unet_is_reconstructed_in_parts() {
    let (Some(model), Some(photos)) = (require("selfie.onnx"), require(PHOTOS)) else {
        return;
    };
    let dir = temp_dir("selfie-parts");
    let q = dir.join("q.onnx");
    let out = subsetq_ok(&[
        "quantize",
        model.to_str().unwrap(),
        "-o",
        q.to_str().unwrap(),
        "--bits",
        "4",
        "--calib",
        photos.to_str().unwrap(),
        "--calib-size",
        "2",
        "--iters",
        "2",
        "--recon-batch",
        "2",
    ]);
    let blocks: Vec<&str> = out.lines().filter(|l| l.starts_with("block ")).collect();
    assert!(blocks.len() >= 30, "{out}");
    let learned: usize = blocks
        .iter()
        .map(|l| {
            l.split_once('(')
                .map_or(0, |(_, rest)| rest.split(", ").count())
        })
        .sum();
    // Every middle layer once: 54 convs less the 8-bit first and last.
    assert_eq!(learned, 52, "{out}");
    for line in blocks {
        let losses = line
            .rsplit_once("output loss ")
            .map(|(_, l)| l)
            .unwrap_or_default();
        let before: f64 = losses.split(' ').next().unwrap().parse().unwrap();
        assert!(before.is_finite(), "{line}");
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn eval_task_detect_scores_boxes_against_the_reference() {
    let (Some(model), Some(photos)) = (require("blazeface.onnx"), require(PHOTOS)) else {
        return;
    };
    let dir = temp_dir("eval-detect");
    let (m, p) = (model.to_str().unwrap(), photos.to_str().unwrap());
    // Against itself: every box found, at every IoU.
    let json = dir.join("self.json");
    let j = json.to_str().unwrap();
    subsetq_ok(&[
        "eval",
        m,
        "--data",
        p,
        "--task",
        "detect",
        "--compare",
        m,
        "--json",
        j,
    ]);
    let doc: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(doc["n"].as_u64(), Some(30));
    assert!(doc["reference_boxes"].as_u64().unwrap() > 0, "{doc}");
    for key in ["map50", "map50_95", "recall50"] {
        assert_eq!(doc[key].as_f64(), Some(1.0), "{key}: {doc}");
    }
    // A 2-bit model keeps less of the float model's boxes.
    let q = dir.join("q2.onnx");
    subsetq_ok(&["quantize", m, "-o", q.to_str().unwrap(), "--bits", "2"]);
    subsetq_ok(&[
        "eval",
        q.to_str().unwrap(),
        "--preprocess",
        Preprocess::sidecar_path(&model).to_str().unwrap(),
        "--data",
        p,
        "--task",
        "detect",
        "--compare",
        m,
        "--json",
        j,
    ]);
    let doc: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let map50 = doc["map50"].as_f64().unwrap();
    assert!((0.0..1.0).contains(&map50), "{doc}");
    assert!(doc["map50_95"].as_f64().unwrap() <= map50, "{doc}");

    // Without a reference, or on a model whose sidecar says nothing of boxes: exit 2.
    let out = subsetq(&["eval", m, "--data", p, "--task", "detect"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("give the float model as --compare"), "{err}");
    let out = subsetq(&["eval", m, "--data", p, "--task", "segment", "--compare", m]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("the sidecar describes a detection model"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).ok();
}

/// `bench tasks` wiring on a cut-down run: calibrated on street scenes, scored on the other
/// photos, one row per quantizer.
#[test]
fn bench_tasks_scores_apart_from_the_calibration_photos() {
    let (Some(_), Some(_)) = (
        require("blazeface.onnx"),
        require("data/ai-benchmark/enhancement"),
    ) else {
        return;
    };
    let dir = temp_dir("bench-tasks");
    let json = dir.join("rows.json");
    let root = subsetq_onnx::test_assets::root();
    let table = subsetq_ok(&[
        "bench",
        "tasks",
        "--models",
        "blazeface",
        "--rows",
        "w4,w4a8",
        "--iters",
        "1",
        "--recon-batch",
        "2",
        "--calib-size",
        "3",
        "--limit",
        "10",
        "--root",
        root.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(
        table.contains("calibrated on 3 photos of assets/data/ai-benchmark/enhancement"),
        "{table}"
    );
    let doc: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let rows = doc["rows"].as_array().unwrap();
    let names: Vec<&str> = rows
        .iter()
        .map(|r| r["quantizer"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "sq/ch+recon",
            "uniform-mse/ch+recon",
            "sq/ch+recon A8",
            "uniform-mse/ch+recon A8"
        ]
    );
    for r in rows {
        let map50 = r["detect"]["map50"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&map50), "{r}");
        assert_eq!(r["calibration"].as_u64(), Some(3));
    }
    std::fs::remove_dir_all(dir).ok();
}
