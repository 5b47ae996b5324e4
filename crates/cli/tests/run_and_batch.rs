//! Issue 13: `subsetq run` on ONNX's own test cases, and models whose batch size is fixed.

mod common;

use std::path::Path;

use common::{subsetq, subsetq_ok, temp_dir};
use prost::Message;
use serde_json::Value;
use subsetq_onnx::pb;
use subsetq_onnx::test_assets::{onnx_backend_data, require, root};

#[test]
fn run_checks_an_onnx_test_case_and_writes_its_outputs() {
    let Some(data) = onnx_backend_data("pytorch-converted") else {
        return;
    };
    let case = data.join("test_GLU");
    let model = case.join("model.onnx");
    let set = case.join("test_data_set_0");
    let dir = temp_dir("run-glu");
    let out = dir.join("out");
    let args = |inputs: &Path, extra: &[&str]| -> Vec<String> {
        let mut v = vec![
            "run".to_string(),
            model.display().to_string(),
            "--inputs".to_string(),
            inputs.display().to_string(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = |v: Vec<String>| {
        let a: Vec<&str> = v.iter().map(String::as_str).collect();
        subsetq(&a)
    };
    let ok = run(args(&set, &["--check", "-o", out.to_str().unwrap()]));
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(stdout.contains("check passed"), "{stdout}");
    // What it wrote is what it checked: the same case passes with our outputs as expected.
    let ours = dir.join("ours");
    std::fs::create_dir_all(&ours).unwrap();
    std::fs::copy(set.join("input_0.pb"), ours.join("input_0.pb")).unwrap();
    std::fs::copy(out.join("output_0.pb"), ours.join("output_0.pb")).unwrap();
    assert!(run(args(&ours, &["--check", "--rtol", "0", "--atol", "0"]))
        .status
        .success());
    // A wrong expected output fails the check with exit code 2, naming the output.
    let mut t = pb::TensorProto::decode(&*std::fs::read(set.join("output_0.pb")).unwrap()).unwrap();
    let raw = t.raw_data.as_mut().expect("raw data");
    raw[0..4].copy_from_slice(&123.0f32.to_le_bytes());
    std::fs::write(ours.join("output_0.pb"), t.encode_to_vec()).unwrap();
    let bad = run(args(&ours, &["--check"]));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{stderr}");
    assert!(stderr.starts_with("error: check failed"), "{stderr}");
    // Bad input: no input files.
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let none = run(args(&empty, &[]));
    assert_eq!(none.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&none.stderr).contains("no input_0.pb"));
    std::fs::remove_dir_all(dir).ok();
}

/// fashion-resnet as `torch.onnx.export` writes it by default: the batch fixed to 1 on the
/// input, and the classifier's Flatten as a Reshape to a hard-coded `[1, -1]`.
fn with_batch_fixed_to_one(model: &Path, out: &Path) {
    use pb::tensor_shape_proto::dimension::Value as Dim;
    use pb::type_proto::Value as Ty;
    let mut m = pb::ModelProto::decode(&*std::fs::read(model).unwrap()).unwrap();
    let g = m.graph.as_mut().unwrap();
    let Some(Ty::TensorType(t)) = g.input[0].r#type.as_mut().unwrap().value.as_mut() else {
        panic!("tensor input")
    };
    t.shape.as_mut().unwrap().dim[0].value = Some(Dim::DimValue(1));
    let flatten = g
        .node
        .iter_mut()
        .find(|n| n.op_type() == "Flatten")
        .expect("a Flatten");
    flatten.op_type = Some("Reshape".into());
    flatten.attribute.clear();
    flatten.input.push("fixed_batch_shape".into());
    g.initializer.push(pb::TensorProto {
        name: Some("fixed_batch_shape".into()),
        dims: vec![2],
        data_type: Some(pb::tensor_proto::DataType::Int64 as i32),
        int64_data: vec![1, -1],
        ..Default::default()
    });
    std::fs::write(out, m.encode_to_vec()).unwrap();
}

/// Issue 13, item 2: a batch fixed to 1 evaluates (batches of 64) and reconstructs (batches
/// of 8) with exactly the results of the same model with a free batch.
#[test]
fn a_batch_fixed_to_one_evaluates_and_reconstructs_like_a_free_batch() {
    let (Some(train), Some(test)) = (
        require("data/fashion-mnist/train-images-idx3-ubyte.gz"),
        require("data/fashion-mnist/t10k-images-idx3-ubyte.gz"),
    ) else {
        return;
    };
    let dynamic = root().join("models/fashion-resnet.onnx");
    let dir = temp_dir("fixed-batch");
    let fixed = dir.join("fixed.onnx");
    with_batch_fixed_to_one(&dynamic, &fixed);
    std::fs::copy(
        root().join("models/fashion-resnet.preprocess.json"),
        dir.join("fixed.preprocess.json"),
    )
    .unwrap();
    let s = |p: &Path| p.display().to_string();

    // eval: the fixed model against the free one, on 200 test images.
    let json = dir.join("eval.json");
    subsetq_ok(&[
        "eval",
        &s(&fixed),
        "--data",
        &s(&test),
        "--limit",
        "200",
        "--compare",
        &s(&dynamic),
        "--json",
        &s(&json),
    ]);
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let text = doc.to_string();
    assert_eq!(doc["max_abs_diff"].as_f64(), Some(0.0), "{text}");
    assert_eq!(doc["agreement_top1"].as_f64(), Some(100.0), "{text}");
    assert_eq!(doc["n"].as_u64(), Some(200), "{text}");

    // quantize with reconstruction: the same weights, bit for bit.
    let mut weights = Vec::new();
    for (model, tag) in [(&fixed, "fixed"), (&dynamic, "dynamic")] {
        let out = dir.join(format!("{tag}-w4.onnx"));
        subsetq_ok(&[
            "quantize",
            &s(model),
            "-o",
            &s(&out),
            "--bits",
            "4",
            "--weights",
            "float",
            "--calib",
            &s(&train),
            "--calib-size",
            "32",
            "--iters",
            "4",
            "--recon-batch",
            "8",
        ]);
        let written = subsetq_onnx::load(&out).unwrap();
        // The fixed batch was relaxed (not run in chunks): the written input's batch is free.
        let input = format!("{:?}", written.graph().unwrap().input[0]);
        assert!(input.contains("DimParam"), "{input}");
        let layers = written.weight_layers().unwrap();
        weights.push(
            layers
                .into_iter()
                .map(|l| (l.name, l.data))
                .collect::<Vec<_>>(),
        );
    }
    assert!(!weights[0].is_empty());
    assert!(weights[0] == weights[1], "reconstructed weights differ");
    std::fs::remove_dir_all(dir).ok();
}
