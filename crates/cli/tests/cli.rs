//! The `subsetq` binary end to end: real models in, JSON out, and every bad input refused
//! with exit code 2 and one clear line.

mod common;

use std::path::PathBuf;
use std::process::Output;

use common::{subsetq, temp_dir};

use prost::Message;
use serde_json::Value;
use subsetq_onnx::pb;

/// The vectors promise the reference's score to 1e-5 relative.
const ERROR_REL_TOL: f64 = 1e-5;

/// Exit code 2 and an `error: …` line first (clap may add a usage hint) containing `needle`.
fn assert_refused(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "no error message");
    assert!(lines[0].starts_with("error"), "stderr: {stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn tensor(name: &str, dims: &[i64], values: &[f32]) -> pb::TensorProto {
    pb::TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(pb::tensor_proto::DataType::Float as i32),
        raw_data: Some(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
        ..Default::default()
    }
}

/// Three 1×1 convs in a row; `middle` holds the middle layer's 16 weights.
fn three_conv_model(middle: [f32; 16]) -> Vec<u8> {
    let node = |name: &str, input: &str, w: &str, out: &str| pb::NodeProto {
        op_type: Some("Conv".into()),
        name: Some(name.into()),
        input: vec![input.into(), w.into()],
        output: vec![out.into()],
        ..Default::default()
    };
    let ramp: Vec<f32> = (0..16).map(|i| i as f32 / 8.0 - 1.0).collect();
    let model = pb::ModelProto {
        ir_version: Some(7),
        opset_import: vec![pb::OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(13),
        }],
        graph: Some(pb::GraphProto {
            name: Some("three_convs".into()),
            node: vec![
                node("c1", "x", "w1", "a"),
                node("c2", "a", "w2", "b"),
                node("c3", "b", "w3", "y"),
            ],
            initializer: vec![
                tensor("w1", &[4, 4, 1, 1], &ramp),
                tensor("w2", &[4, 4, 1, 1], &middle),
                tensor("w3", &[4, 4, 1, 1], &ramp),
            ],
            // Declared (no shape): a graph whose input nobody declares is refused.
            input: vec![pb::ValueInfoProto {
                name: Some("x".into()),
                ..Default::default()
            }],
            output: vec![pb::ValueInfoProto {
                name: Some("y".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    model.encode_to_vec()
}

#[test]
fn search_json_matches_the_released_reference_on_efficientnet_lite0() {
    let Some(model) = subsetq_onnx::test_assets::require("efficientnet-lite0.onnx") else {
        return;
    };
    let dir = temp_dir("effnet");
    let json = dir.join("w2.json");
    let out = subsetq(&[
        "search",
        model.to_str().unwrap(),
        "--bits",
        "2",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("_blocks.0._depthwise_conv.weight"),
        "table lists the layers"
    );
    assert!(
        stdout.contains("SQ lower on"),
        "table ends with the comparison"
    );
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(doc["total_seconds"].as_f64().unwrap() > 0.0);
    let layers = doc["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 50);
    let vectors: Vec<Value> = serde_json::from_str(include_str!(
        "../../core/tests/data/effl0-reference-w2.json"
    ))
    .unwrap();
    for v in &vectors {
        let l = layers
            .iter()
            .find(|l| l["name"] == v["tensor"])
            .expect("layer in JSON");
        assert_eq!(l["bits"], 2);
        assert_eq!(
            l["numel"].as_u64().unwrap(),
            v["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap())
                .product::<u64>()
        );
        let (got, want) = (
            l["l2_error"].as_f64().unwrap(),
            v["l2_error"].as_f64().unwrap(),
        );
        assert!(
            (got - want).abs() <= ERROR_REL_TOL * want,
            "{}: {got} vs {want}",
            v["tensor"]
        );
        let subset: Vec<f64> = l["subset"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_f64().unwrap())
            .collect();
        let want_subset: Vec<f64> = v["subset"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_f64().unwrap())
            .collect();
        assert!(
            subset
                .iter()
                .zip(&want_subset)
                .all(|(a, b)| (a - b).abs() < 1e-7),
            "{}",
            v["tensor"]
        );
    }
    // First and last layers stay 8-bit uniform.
    assert_eq!(layers[0]["quantizer"], "uniform");
    assert_eq!(layers[0]["bits"], 8);
    assert_eq!(layers[49]["name"], "_fc.weight");
    assert_eq!(layers[49]["quantizer"], "uniform");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn search_runs_on_mnist_cnn_with_every_method() {
    let Some(model) = subsetq_onnx::test_assets::require("mnist-cnn.onnx") else {
        return;
    };
    for method in ["fast", "dp", "reference"] {
        // The reference port is slow: 2-bit keeps it to 105 candidates.
        let out = subsetq(&[
            "search",
            model.to_str().unwrap(),
            "--bits",
            "2",
            "--method",
            method,
            "--first-last-bits",
            "8",
        ]);
        assert!(
            out.status.success(),
            "{method}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("conv2.weight"));
    }
}

#[test]
fn bench_search_prints_measured_ratios() {
    let Some(model) = subsetq_onnx::test_assets::require("mnist-cnn.onnx") else {
        return;
    };
    let dir = temp_dir("bench");
    let json = dir.join("bench.json");
    let out = subsetq(&[
        "bench",
        "search",
        model.to_str().unwrap(),
        "--bits",
        "3",
        "--sample",
        "4",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("reference/fast"));
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(doc["ratio_reference_over_fast"].as_f64().unwrap() > 1.0);
    assert!(
        doc["fast_vs_reference_max_relative_difference"]
            .as_f64()
            .unwrap()
            < 1e-9
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn bad_inputs_are_refused_with_exit_code_2() {
    let dir = temp_dir("bad");
    let missing = dir.join("missing.onnx");
    assert_refused(
        &subsetq(&["search", missing.to_str().unwrap()]),
        "missing.onnx",
    );

    let garbage = dir.join("garbage.onnx");
    std::fs::write(&garbage, b"\xff\xff\xff\xff not a protobuf at all").unwrap();
    assert_refused(
        &subsetq(&["search", garbage.to_str().unwrap()]),
        "not a valid ONNX model",
    );

    let good = three_conv_model(std::array::from_fn(|i| i as f32 - 7.5));
    let truncated = dir.join("truncated.onnx");
    std::fs::write(&truncated, &good[..good.len() / 2]).unwrap();
    assert_refused(
        &subsetq(&["search", truncated.to_str().unwrap()]),
        "truncated.onnx",
    );

    let mut with_nan: [f32; 16] = std::array::from_fn(|i| i as f32);
    with_nan[5] = f32::NAN;
    let nan = dir.join("nan.onnx");
    std::fs::write(&nan, three_conv_model(with_nan)).unwrap();
    assert_refused(&subsetq(&["search", nan.to_str().unwrap()]), "w2");
    let mut with_inf = [0.5f32; 16];
    with_inf[0] = f32::INFINITY;
    let inf = dir.join("inf.onnx");
    std::fs::write(&inf, three_conv_model(with_inf)).unwrap();
    assert_refused(
        &subsetq(&["search", inf.to_str().unwrap()]),
        "NaN or infinite",
    );

    let ok = dir.join("ok.onnx");
    std::fs::write(&ok, &good).unwrap();
    let ok_s = ok.to_str().unwrap();
    assert_refused(
        &subsetq(&["search", ok_s, "--uset", "[0,-1"]),
        "universal-set spec",
    );
    assert_refused(&subsetq(&["search", ok_s, "--bits", "9"]), "9");
    assert_refused(&subsetq(&["search", ok_s, "--method", "magic"]), "magic");
    assert_refused(&subsetq(&["search", ok_s, "--bits", "5"]), "15 points");
    // The same model with finite weights is searched fine.
    let fine = subsetq(&["search", ok_s, "--bits", "3"]);
    assert!(
        fine.status.success(),
        "{}",
        String::from_utf8_lossy(&fine.stderr)
    );

    // The input is never overwritten, and a failed write leaves nothing behind.
    assert_refused(
        &subsetq(&["search", ok_s, "--json", ok_s]),
        "refusing to overwrite",
    );
    assert_eq!(std::fs::read(&ok).unwrap(), good);
    let nowhere = dir.join("no/such/dir/out.json");
    assert_refused(
        &subsetq(&["search", ok_s, "--json", nowhere.to_str().unwrap()]),
        "out.json",
    );
    assert!(!nowhere.exists());

    // A device this build does not have is refused before any work, writing nothing.
    if cfg!(not(feature = "cuda")) {
        let out = dir.join("q.onnx");
        let o = out.to_str().unwrap();
        assert_refused(
            &subsetq(&[
                "quantize", ok_s, "-o", o, "--calib", ok_s, "--device", "cuda",
            ]),
            "device cuda: this build has no CUDA backend",
        );
        assert!(!out.exists());
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_model_without_weight_layers_is_refused() {
    let dir = temp_dir("empty");
    let path = dir.join("relu.onnx");
    let model = pb::ModelProto {
        graph: Some(pb::GraphProto {
            node: vec![pb::NodeProto {
                op_type: Some("Relu".into()),
                input: vec!["x".into()],
                output: vec!["y".into()],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    std::fs::write(&path, model.encode_to_vec()).unwrap();
    assert_refused(
        &subsetq(&["search", path.to_str().unwrap()]),
        "no Conv / Gemm / MatMul",
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn quantize_writes_a_model_whose_weights_are_on_the_recorded_codebooks() {
    let Some(model) = subsetq_onnx::test_assets::require("mnist-cnn.onnx") else {
        return;
    };
    let before = std::fs::read(&model).unwrap();
    let dir = temp_dir("quantize");
    let out_path = dir.join("q3.onnx");
    let out = subsetq(&[
        "quantize",
        model.to_str().unwrap(),
        "-o",
        out_path.to_str().unwrap(),
        "--bits",
        "3",
        // The float form: the weights are initializers (the codes form is checked in
        // crates/pipeline/tests/record.rs and by onnxruntime in tests/onnxruntime.rs).
        "--weights",
        "float",
        // One scale per layer: every weight is exactly ±scale·α·level (per-channel scales are
        // checked in tests/reconstruct.rs).
        "--granularity",
        "tensor",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(&model).unwrap(),
        before,
        "the input is never modified"
    );

    let q = subsetq_onnx::load(&out_path).unwrap();
    let record: Value = serde_json::from_str(q.metadata("subsetq").expect("metadata")).unwrap();
    let layers = record["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 4);
    for l in layers {
        let name = l["name"].as_str().unwrap();
        let (bits, scale, alpha) = (
            l["bits"].as_u64().unwrap(),
            l["scale"].as_f64().unwrap(),
            l["alpha"].as_f64().unwrap(),
        );
        let levels: Vec<f64> = l["levels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(levels.len(), 1 << (bits - 1), "{name}");
        let allowed: Vec<f32> = levels
            .iter()
            .map(|s| scale as f32 * (alpha * s) as f32)
            .collect();
        let (_, w) = q.initializer_f32(name).unwrap().unwrap();
        for v in w {
            assert!(
                v == 0.0 || allowed.contains(&v.abs()),
                "{name}: {v} is not ±scale·α·level"
            );
        }
        let quantizer = l["quantizer"].as_str().unwrap();
        if name == "conv1.weight" || name == "fc2.weight" {
            assert_eq!((quantizer, bits), ("uniform", 8));
        } else {
            assert_eq!((quantizer, bits), ("sq", 3));
        }
    }
    // Everything but the weights is unchanged.
    let orig = subsetq_onnx::load(&model).unwrap();
    assert_eq!(q.graph().unwrap().node, orig.graph().unwrap().node);

    assert_refused(
        &subsetq(&[
            "quantize",
            model.to_str().unwrap(),
            "-o",
            model.to_str().unwrap(),
        ]),
        "refusing to overwrite",
    );
    assert_refused(
        &subsetq(&[
            "quantize",
            model.to_str().unwrap(),
            "-o",
            out_path.to_str().unwrap(),
            "--abits",
            "4",
        ]),
        "--abits needs --calib",
    );
    let nowhere = dir.join("missing/dir/q.onnx");
    assert_refused(
        &subsetq(&[
            "quantize",
            model.to_str().unwrap(),
            "-o",
            nowhere.to_str().unwrap(),
        ]),
        "q.onnx",
    );
    assert!(!nowhere.exists());
    assert_eq!(std::fs::read(&model).unwrap(), before);
    std::fs::remove_dir_all(dir).ok();
}

/// An IDX images file (`n` images of `rows × cols`) and its labels file, under the standard
/// names in `dir`; returns the images path.
fn write_idx(
    dir: &std::path::Path,
    rows: u32,
    cols: u32,
    images: &[&[u8]],
    labels: &[u8],
) -> PathBuf {
    let header = |magic: u32, dims: &[u32]| -> Vec<u8> {
        std::iter::once(magic)
            .chain(dims.iter().copied())
            .flat_map(u32::to_be_bytes)
            .collect()
    };
    let mut img = header(0x803, &[images.len() as u32, rows, cols]);
    images.iter().for_each(|i| img.extend_from_slice(i));
    let mut lab = header(0x801, &[labels.len() as u32]);
    lab.extend_from_slice(labels);
    let path = dir.join("t10k-images-idx3-ubyte");
    std::fs::write(&path, img).unwrap();
    std::fs::write(dir.join("t10k-labels-idx1-ubyte"), lab).unwrap();
    path
}

/// x [N, 1, 3, 3] → `op` (a 1×1 conv with weight 1 by default) → Flatten → y [N, 9]: the
/// outputs are the pixels.
fn pixels_model(op: &str) -> Vec<u8> {
    let dim = |d: Option<i64>| pb::tensor_shape_proto::Dimension {
        value: Some(match d {
            Some(v) => pb::tensor_shape_proto::dimension::Value::DimValue(v),
            None => pb::tensor_shape_proto::dimension::Value::DimParam("N".into()),
        }),
        ..Default::default()
    };
    let value_info = |name: &str, dims: &[Option<i64>]| pb::ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: Some(pb::tensor_proto::DataType::Float as i32),
                shape: Some(pb::TensorShapeProto {
                    dim: dims.iter().map(|&d| dim(d)).collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    let (first, inputs) = if op == "Conv" {
        ("c", vec!["x".to_string(), "w".to_string()])
    } else {
        ("c", vec!["x".to_string()])
    };
    let model = pb::ModelProto {
        ir_version: Some(8),
        opset_import: vec![pb::OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(13),
        }],
        graph: Some(pb::GraphProto {
            name: Some("pixels".into()),
            node: vec![
                pb::NodeProto {
                    op_type: Some(op.into()),
                    name: Some(format!("{op}_0")),
                    input: inputs,
                    output: vec![first.into()],
                    ..Default::default()
                },
                pb::NodeProto {
                    op_type: Some("Flatten".into()),
                    name: Some("flatten".into()),
                    input: vec![first.into()],
                    output: vec!["y".into()],
                    ..Default::default()
                },
            ],
            initializer: vec![tensor("w", &[1, 1, 1, 1], &[1.0])],
            input: vec![value_info("x", &[None, Some(1), Some(3), Some(3)])],
            output: vec![value_info("y", &[None, Some(9)])],
            ..Default::default()
        }),
        ..Default::default()
    };
    model.encode_to_vec()
}

#[test]
fn eval_scores_a_model_whose_outputs_are_known() {
    let dir = temp_dir("eval-known");
    // Image 0: largest pixel at 4 (label 4: top-1). Image 1: largest at 0, label 2 is the
    // third largest (top-5 only).
    let data = write_idx(
        &dir,
        3,
        3,
        &[
            &[1, 2, 3, 4, 90, 5, 6, 7, 8],
            &[90, 10, 70, 1, 2, 80, 3, 4, 5],
        ],
        &[4, 2],
    );
    let model = dir.join("pixels.onnx");
    std::fs::write(&model, pixels_model("Conv")).unwrap();
    let json = dir.join("eval.json");
    let flags = ["--color", "gray", "--size", "3,3"];
    let mut args = vec![
        "eval",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--compare",
        model.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ];
    args.extend(flags);
    let out = subsetq(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(doc["n"], 2);
    assert_eq!(doc["top1"], 50.0);
    assert_eq!(doc["top5"], 100.0);
    assert_eq!(doc["agreement_top1"], 100.0);
    assert_eq!(doc["output_mse"], 0.0);
    // Normalisation flags reach the model: scaled pixels, same ranking.
    let scaled = subsetq(&[
        "eval",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--color",
        "gray",
        "--size",
        "3,3",
        "--scale",
        "0.5",
        "--mean",
        "-1",
    ]);
    let stdout = String::from_utf8_lossy(&scaled.stdout);
    assert!(stdout.contains("top-1 50.00 %"), "{stdout}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn eval_refuses_bad_inputs_with_exit_code_2() {
    let dir = temp_dir("eval-bad");
    let data = write_idx(&dir, 3, 3, &[&[0; 9], &[1; 9]], &[0, 1]);
    let data_s = data.to_str().unwrap();
    let good = dir.join("pixels.onnx");
    std::fs::write(&good, pixels_model("Conv")).unwrap();
    let good_s = good.to_str().unwrap();
    let eval = |model: &str, data: &str, extra: &[&str]| {
        let mut args = vec!["eval", model, "--data", data, "--color", "gray"];
        args.extend(extra);
        subsetq(&args)
    };

    // Unsupported operator: named with its node, before any data is read.
    let erf = dir.join("erf.onnx");
    std::fs::write(&erf, pixels_model("Erf")).unwrap();
    assert_refused(
        &eval(erf.to_str().unwrap(), data_s, &["--size", "3,3"]),
        "node Erf_0: unsupported operator Erf",
    );
    // Wrong input shape: 4×4 images for a 3×3 input.
    let other = dir.join("four");
    std::fs::create_dir_all(&other).unwrap();
    let four = write_idx(&other, 4, 4, &[&[0; 16]], &[0]);
    assert_refused(&eval(good_s, four.to_str().unwrap(), &[]), "input x");
    // Missing data, and images whose labels file is missing.
    let missing = dir.join("no-such-images");
    assert_refused(
        &eval(good_s, missing.to_str().unwrap(), &["--size", "3,3"]),
        "no-such-images: not found",
    );
    std::fs::remove_file(dir.join("t10k-labels-idx1-ubyte")).unwrap();
    assert_refused(
        &eval(good_s, data_s, &["--size", "3,3"]),
        "labels file not found",
    );
    // Corrupt models, as the model and as the one compared with.
    let garbage = dir.join("garbage.onnx");
    std::fs::write(&garbage, b"\x08\x07\x12\xff\xff garbage").unwrap();
    assert_refused(
        &eval(garbage.to_str().unwrap(), data_s, &["--size", "3,3"]),
        "not a valid ONNX model",
    );
    assert_refused(
        &eval(
            good_s,
            data_s,
            &["--size", "3,3", "--compare", garbage.to_str().unwrap()],
        ),
        "garbage.onnx",
    );
    // No preprocessing: no sidecar, none in the model, and no flags.
    assert_refused(
        &subsetq(&["eval", good_s, "--data", data_s]),
        "no preprocessing for",
    );
    assert_refused(&eval(good_s, data_s, &["--size", "3"]), "H,W");
    assert_refused(
        &eval(good_s, data_s, &["--size", "3,3", "--std", "0"]),
        "std",
    );
    std::fs::remove_dir_all(dir).ok();
}

/// Issue 9: a compact model whose codes, table or scales do not fit together, or whose codes
/// have a type the form does not use, is refused with one line naming the tensor or node.
#[test]
fn bad_compact_models_are_refused_with_exit_code_2() {
    let model = subsetq_onnx::test_assets::root().join("models/fashion-resnet.onnx");
    let Some(test) =
        subsetq_onnx::test_assets::require("data/fashion-mnist/t10k-images-idx3-ubyte.gz")
    else {
        return;
    };
    let dir = temp_dir("compact-bad");
    let good = dir.join("q.onnx");
    let out = subsetq(&[
        "quantize",
        model.to_str().unwrap(),
        "-o",
        good.to_str().unwrap(),
        "--bits",
        "4",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let q = subsetq_onnx::load(&good).unwrap();
    let layer = q.weight_layers().unwrap();
    assert!(
        layer.is_empty(),
        "the compact form has no float weight initializers"
    );
    let record: Value = serde_json::from_str(q.metadata("subsetq").unwrap()).unwrap();
    let name = record["layers"][1]["name"].as_str().unwrap().to_string();
    let spoil = |what: &str, edit: &dyn Fn(&mut pb::TensorProto)| {
        let mut proto = pb::ModelProto::decode(std::fs::read(&good).unwrap().as_slice()).unwrap();
        let t = proto
            .graph
            .as_mut()
            .unwrap()
            .initializer
            .iter_mut()
            .find(|t| t.name() == format!("{name}.{what}"))
            .unwrap();
        edit(t);
        let path = dir.join(format!("bad-{what}.onnx"));
        std::fs::write(&path, proto.encode_to_vec()).unwrap();
        subsetq(&[
            "eval",
            path.to_str().unwrap(),
            "--data",
            test.to_str().unwrap(),
            "--limit",
            "10",
        ])
    };
    // A table cut to half: codes point outside it.
    assert_refused(
        &spoil("table", &|t| {
            t.dims = vec![8];
            t.raw_data.as_mut().unwrap().truncate(32);
        }),
        "8-entry table",
    );
    // Channel scales that do not broadcast over the weight.
    assert_refused(
        &spoil("scales", &|t| {
            t.dims = vec![1, 3, 1, 1];
            t.raw_data.as_mut().unwrap().truncate(12);
        }),
        "do not broadcast",
    );
    // Codes stored as a type the form does not use.
    assert_refused(
        &spoil("codes", &|t| {
            t.data_type = Some(pb::tensor_proto::DataType::Float16 as i32)
        }),
        "FLOAT16",
    );
    std::fs::remove_dir_all(dir).ok();
}

/// The light models of the `onnx` wheel (in the project venv) write their weights as
/// `ConstantOfShape` nodes; `None` (or a panic under CI) when the venv is missing.
fn onnx_light_model(name: &str) -> Option<PathBuf> {
    let lib = subsetq_onnx::test_assets::root().join(".venv/lib");
    let found = std::fs::read_dir(&lib).ok().and_then(|dirs| {
        dirs.filter_map(|d| d.ok())
            .map(|d| {
                d.path()
                    .join("site-packages/onnx/backend/test/data/light")
                    .join(name)
            })
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let msg = format!(
            "{name} not found under {} (run scripts/fetch-assets.sh)",
            lib.display()
        );
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
        eprintln!("skipping: {msg}");
    }
    found
}

/// Issue 13, item 3: weights given by constant nodes are found, searched and written back.
#[test]
fn weights_from_constant_nodes_are_quantized() {
    let Some(model) = onnx_light_model("light_resnet50.onnx") else {
        return;
    };
    let out = subsetq(&["search", model.to_str().unwrap(), "--bits", "4"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("54 layers"));
    let dir = temp_dir("constant-weights");
    let q = dir.join("q.onnx");
    let out = subsetq(&[
        "quantize",
        model.to_str().unwrap(),
        "-o",
        q.to_str().unwrap(),
        "--weights",
        "float",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let layers = subsetq_onnx::load(&q).unwrap().weight_layers().unwrap();
    assert_eq!(
        layers.len(),
        54,
        "every conv and the gemm as an initializer weight"
    );
    std::fs::remove_dir_all(dir).ok();
}
