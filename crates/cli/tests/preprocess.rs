//! Preprocessing travels with the model: `quantize` stores it in the output's metadata and
//! beside it, `eval` finds it there; `quantize` takes the same preprocessing flags as `eval`.

mod common;

use serde_json::Value;
use subsetq_onnx::test_assets::{require, root};

use common::{subsetq, subsetq_ok, temp_dir};

fn top1(json: &std::path::Path) -> f64 {
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    doc["top1"].as_f64().expect("top1")
}

#[test]
fn a_quantized_model_is_evaluated_with_no_preprocessing_flag() {
    let Some(test) = require("data/fashion-mnist/t10k-images-idx3-ubyte.gz") else {
        return;
    };
    let model = root().join("models/fashion-resnet.onnx");
    let dir = temp_dir("preprocess-travels");
    let out = dir.join("q.onnx");
    let (model_s, out_s, test_s) = (
        model.to_str().unwrap(),
        out.to_str().unwrap(),
        test.to_str().unwrap(),
    );
    subsetq_ok(&["quantize", model_s, "-o", out_s, "--bits", "4"]);
    let sidecar = dir.join("q.preprocess.json");
    assert!(sidecar.is_file(), "no sidecar beside the output");

    let eval = |json: &str| {
        let json = dir.join(json);
        subsetq_ok(&[
            "eval",
            out_s,
            "--data",
            test_s,
            "--limit",
            "300",
            "--json",
            json.to_str().unwrap(),
        ]);
        top1(&json)
    };
    let with_sidecar = eval("a.json");
    // Without the sidecar, the copy in the model's metadata is used.
    std::fs::remove_file(&sidecar).unwrap();
    let from_metadata = eval("b.json");
    assert_eq!(with_sidecar, from_metadata);
    assert!(with_sidecar > 80.0, "top-1 {with_sidecar}");

    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn quantize_takes_preprocessing_flags_and_names_them_when_none_is_found() {
    let Some(calib) = require("data/fashion-mnist/train-images-idx3-ubyte.gz") else {
        return;
    };
    let dir = temp_dir("preprocess-flags");
    // The model without its sidecar.
    let plain = dir.join("plain.onnx");
    std::fs::copy(root().join("models/fashion-resnet.onnx"), &plain).unwrap();
    let quantize = |model: &std::path::Path, out: &str, flags: &[&str]| {
        let out = dir.join(out);
        let mut args = vec![
            "quantize",
            model.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--bits",
            "3",
            "--calib",
            calib.to_str().unwrap(),
            "--calib-size",
            "32",
            "--iters",
            "5",
        ];
        args.extend_from_slice(flags);
        (subsetq(&args), out)
    };
    let (refused, out) = quantize(&plain, "none.onnx", &[]);
    assert_eq!(refused.status.code(), Some(2));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.lines().count() == 1 && err.contains("no preprocessing for") && err.contains("--color"),
        "{err}"
    );
    assert!(!out.exists());

    // The sidecar's settings as flags, one mean and std value: the same quantization.
    let (ok, from_flags) = quantize(
        &plain,
        "flags.onnx",
        &[
            "--color",
            "gray",
            "--scale",
            "0.00392156862745098",
            "--mean",
            "0.286",
            "--std",
            "0.353",
        ],
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let (ok, from_sidecar) = quantize(
        &root().join("models/fashion-resnet.onnx"),
        "sidecar.onnx",
        &[],
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let record = |p: &std::path::Path| {
        subsetq_onnx::load(p)
            .unwrap()
            .metadata("subsetq")
            .expect("record")
            .to_string()
    };
    assert_eq!(record(&from_flags), record(&from_sidecar));
    std::fs::remove_dir_all(dir).ok();
}
