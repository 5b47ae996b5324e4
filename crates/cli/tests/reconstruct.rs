//! `subsetq quantize --calib`: block reconstruction on fashion-resnet (real residual blocks,
//! real calibration images), kept short so that it runs in test time.

mod common;

use std::path::Path;

use serde_json::Value;
use subsetq_onnx::test_assets::{require, root};

use common::{subsetq_ok, temp_dir};

fn quantize(model: &Path, calib: &Path, out: &Path, seed: &str, granularity: &str) {
    subsetq_ok(&[
        "quantize",
        model.to_str().unwrap(),
        "--granularity",
        granularity,
        "-o",
        out.to_str().unwrap(),
        "--bits",
        "2",
        // Float weights, so that their values can be checked against the record.
        "--weights",
        "float",
        "--calib",
        calib.to_str().unwrap(),
        "--calib-size",
        "64",
        "--iters",
        "40",
        "--recon-batch",
        "16",
        "--seed",
        seed,
    ]);
}

#[test]
fn reconstruction_lowers_every_block_loss_keeps_codebooks_and_is_deterministic() {
    let Some(calib) = require("data/fashion-mnist/train-images-idx3-ubyte.gz") else {
        return;
    };
    let model = root().join("models/fashion-resnet.onnx");
    let dir = temp_dir("w2");
    let (a, b, c) = (dir.join("a.onnx"), dir.join("b.onnx"), dir.join("c.onnx"));
    quantize(&model, &calib, &a, "7", "tensor");
    quantize(&model, &calib, &b, "7", "tensor");
    quantize(&model, &calib, &c, "8", "tensor");
    let bytes = std::fs::read(&a).unwrap();
    assert!(
        bytes == std::fs::read(&b).unwrap(),
        "same seed, different output"
    );
    assert!(bytes != std::fs::read(&c).unwrap(), "the seed is not used");

    // fashion-resnet's 15 middle layers are learned.
    let record = check_codebooks(&a, 15);
    let blocks = record["reconstruction"]["blocks"].as_array().unwrap();
    // fashion-resnet: 6 residual blocks hold its 15 middle layers.
    assert_eq!(blocks.len(), 6);
    for blk in blocks {
        let (before, after) = (
            blk["loss_before"].as_f64().unwrap(),
            blk["loss_after"].as_f64().unwrap(),
        );
        eprintln!(
            "{} -> {}: {before:.4} -> {after:.4}",
            blk["input"], blk["output"]
        );
        assert!(after < before, "{blk}");
    }
    std::fs::remove_dir_all(dir).ok();
}

/// Per-channel scales: still one codebook per layer, every weight on it, and every block's
/// loss falls.
#[test]
fn per_channel_scales_keep_one_codebook_per_layer() {
    let Some(calib) = require("data/fashion-mnist/train-images-idx3-ubyte.gz") else {
        return;
    };
    let model = root().join("models/fashion-resnet.onnx");
    let dir = temp_dir("w2-channel");
    let out = dir.join("q.onnx");
    quantize(&model, &calib, &out, "7", "channel");
    // All 17 layers have per-channel scales, first and last included.
    let record = check_codebooks(&out, 17);
    assert_eq!(record["granularity"], "channel");
    for blk in record["reconstruction"]["blocks"].as_array().unwrap() {
        assert!(
            blk["loss_after"].as_f64() < blk["loss_before"].as_f64(),
            "{blk}"
        );
    }
    // Per-channel scales differ between channels (they are each channel's max|w|).
    let first = &record["layers"][1]["calpha"];
    let calpha: Vec<f64> = first
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(
        calpha.iter().any(|c| (c - calpha[0]).abs() > 0.05),
        "{calpha:?}"
    );
    std::fs::remove_dir_all(dir).ok();
}

/// Checks that the weights of every layer with per-channel scales in the record (`expected`
/// of them) are ±scale · calpha_c · α · level with the record's numbers; returns the record.
fn check_codebooks(path: &Path, expected: usize) -> Value {
    let q = subsetq_onnx::load(path).unwrap();
    let record: Value = serde_json::from_str(q.metadata("subsetq").unwrap()).unwrap();
    let shapes: std::collections::HashMap<String, Vec<usize>> = q
        .weight_layers()
        .unwrap()
        .into_iter()
        .map(|l| (l.name, l.shape))
        .collect();
    let mut checked = 0;
    for l in record["layers"].as_array().unwrap() {
        let name = l["name"].as_str().unwrap();
        let Some(calpha) = l["calpha"].as_array() else {
            continue;
        };
        checked += 1;
        let (scale, alpha) = (l["scale"].as_f64().unwrap(), l["alpha"].as_f64().unwrap());
        let levels: Vec<f64> = l["levels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let (_, w) = q.initializer_f32(name).unwrap().unwrap();
        let per = w.len() / shapes[name][0];
        assert_eq!(calpha.len(), shapes[name][0], "{name}");
        for (i, v) in w.iter().enumerate() {
            let ca = calpha[i / per].as_f64().unwrap() as f32;
            let allowed = levels.iter().any(|s| {
                (scale as f32 * ca * (alpha * s) as f32 - v.abs()).abs() <= 1e-6 * v.abs()
            });
            assert!(
                *v == 0.0 || allowed,
                "{name}[{i}] = {v} is not ±scale·calpha·α·level"
            );
        }
    }
    assert_eq!(checked, expected);
    record
}

/// Issue 12, item 5: the same inputs and seed give byte-identical models (compact, with
/// activation quantizers) and sidecars on 1 and 2 threads.
#[test]
fn one_and_two_threads_give_the_same_bytes() {
    let Some(calib) = require("data/fashion-mnist/train-images-idx3-ubyte.gz") else {
        return;
    };
    let model = root().join("models/fashion-resnet.onnx");
    let dir = temp_dir("threads");
    let run = |threads: &str| {
        let out = dir.join(format!("t{threads}.onnx"));
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_subsetq"))
            .env("RAYON_NUM_THREADS", threads)
            .args([
                "quantize",
                model.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
                "--bits",
                "3",
                "--abits",
                "8",
                "--calib",
                calib.to_str().unwrap(),
                "--calib-size",
                "32",
                "--iters",
                "10",
                "--recon-batch",
                "8",
            ])
            .output()
            .expect("run subsetq");
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
        (
            std::fs::read(&out).unwrap(),
            std::fs::read(dir.join(format!("t{threads}.preprocess.json"))).unwrap(),
        )
    };
    let (one, two) = (run("1"), run("2"));
    assert!(one.0 == two.0, "1 and 2 threads wrote different models");
    assert_eq!(one.1, two.1);
    std::fs::remove_dir_all(dir).ok();
}

/// `bench accuracy` on EfficientNet-Lite0 calibrates on ai-benchmark's street scenes and cats
/// and scores photos it never saw: top-1 on the labelled foolbox ones, FP32 agreement on those
/// and the held-apart ImageNet-subject photos. Cut to a handful of images and one step.
#[test]
fn efficientnet_bench_calibrates_apart_from_the_photos_it_scores() {
    let (Some(_), Some(_)) = (
        require("efficientnet-lite0.onnx"),
        require("data/ai-benchmark/classification"),
    ) else {
        return;
    };
    let dir = temp_dir("bench-effnet");
    let json = dir.join("cells.json");
    let root = root();
    let table = subsetq_ok(&[
        "bench",
        "accuracy",
        "--models",
        "efficientnet-lite0",
        "--bits",
        "4",
        "--quantizers",
        "sq",
        "--recon",
        "sq",
        "--iters",
        "1",
        "--recon-batch",
        "2",
        "--calib-size",
        "3",
        "--limit",
        "2",
        "--root",
        root.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(table.contains("efficientnet-lite0 agree"), "{table}");
    assert!(
        table.contains("calibrated on 3 images of assets/data/ai-benchmark/enhancement"),
        "{table}"
    );
    let doc: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let cells = doc["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 3, "fp32, sq, sq+recon");
    for c in cells {
        // Two foolbox photos (labelled) and two held-apart ones.
        assert_eq!(
            (c["n"].as_u64(), c["held_apart"].as_u64()),
            (Some(2), Some(2))
        );
        let recon = c["quantizer"].as_str().unwrap().contains("+recon");
        assert_eq!(c["calibration"].as_u64(), Some(if recon { 3 } else { 0 }));
    }
    assert_eq!(cells[0]["agreement_top1"].as_f64(), Some(100.0));
}
