//! `subsetq quantize --calib`: block reconstruction on fashion-resnet (real residual blocks,
//! real calibration images), kept short so that it runs in test time.

mod common;

use std::path::Path;

use serde_json::Value;
use subsetq_onnx::test_assets::{require, root};

use common::{subsetq_ok, temp_dir};

fn quantize(model: &Path, calib: &Path, out: &Path, seed: &str) {
    subsetq_ok(&[
        "quantize",
        model.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--bits",
        "2",
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
    quantize(&model, &calib, &a, "7");
    quantize(&model, &calib, &b, "7");
    quantize(&model, &calib, &c, "8");
    let bytes = std::fs::read(&a).unwrap();
    assert!(
        bytes == std::fs::read(&b).unwrap(),
        "same seed, different output"
    );
    assert!(bytes != std::fs::read(&c).unwrap(), "the seed is not used");

    let q = subsetq_onnx::load(&a).unwrap();
    let record: Value = serde_json::from_str(q.metadata("subsetq").unwrap()).unwrap();
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
    let shapes: std::collections::HashMap<String, Vec<usize>> = q
        .weight_layers()
        .unwrap()
        .into_iter()
        .map(|l| (l.name, l.shape))
        .collect();
    let mut learned = 0;
    for l in record["layers"].as_array().unwrap() {
        let name = l["name"].as_str().unwrap();
        let Some(calpha) = l["calpha"].as_array() else {
            continue;
        };
        learned += 1;
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
    assert_eq!(learned, 15);
    std::fs::remove_dir_all(dir).ok();
}
