//! Weight listing of the real models under `assets/` (made by
//! `scripts/fetch-assets.sh`).
//!
//! When a model file is missing the test is skipped with a message, except
//! under CI (`CI=true`), where it fails.

use subsetq_onnx::{LayerRole, Model, WeightLayer};

/// Loads `assets/<file>`, or returns `None` (skip) when it is missing outside CI.
fn load_asset(file: &str) -> Option<Model> {
    let path = subsetq_onnx::test_assets::require(file)?;
    Some(subsetq_onnx::load(&path).unwrap_or_else(|e| panic!("{e}")))
}

fn numel(l: &WeightLayer) -> usize {
    l.shape.iter().product()
}

fn check_common(layers: &[WeightLayer]) {
    for l in layers {
        eprintln!(
            "{:<28} {:<28} {:<6} {:?} out_axis={} groups={} {:?}",
            l.name, l.node, l.op_type, l.shape, l.out_axis, l.groups, l.role
        );
    }
    for l in layers {
        assert_eq!(l.data.len(), numel(l), "{}", l.name);
        assert!(l.data.iter().all(|v| v.is_finite()), "{}", l.name);
        assert!(l.out_channels() > 0, "{}", l.name);
        assert_eq!(l.out_channels() % l.groups, 0, "{}", l.name);
    }
    let roles: Vec<_> = layers.iter().map(|l| l.role).collect();
    assert_eq!(roles.first(), Some(&LayerRole::First));
    assert_eq!(roles.last(), Some(&LayerRole::Last));
    assert!(roles[1..roles.len() - 1]
        .iter()
        .all(|r| *r == LayerRole::Middle));
}

#[test]
fn efficientnet_lite0_weight_layers() {
    let Some(model) = load_asset("efficientnet-lite0.onnx") else {
        return;
    };
    assert!(model.opset().is_some());
    let layers = model.weight_layers().unwrap();
    check_common(&layers);
    assert_eq!(layers.len(), 50);

    let stem = &layers[0];
    assert_eq!(stem.op_type, "Conv");
    assert_eq!(stem.shape, vec![32, 3, 3, 3]);
    assert_eq!(stem.role, LayerRole::First);

    let fc = &layers[49];
    assert_eq!(fc.name, "_fc.weight");
    assert_eq!(fc.op_type, "Gemm");
    assert_eq!(fc.shape, vec![1000, 1280]);
    assert_eq!(fc.out_axis, 0);
    assert_eq!(fc.role, LayerRole::Last);

    let convs = &layers[1..49];
    assert!(convs.iter().all(|l| l.op_type == "Conv"));
    // 16 MBConv blocks: 16 depthwise convs (groups == out channels).
    let depthwise = convs
        .iter()
        .filter(|l| l.groups > 1 && l.groups == l.out_channels())
        .count();
    assert_eq!(depthwise, 16);
    let conv_weights: usize = convs.iter().map(numel).sum();
    eprintln!("non-stem conv weights: {conv_weights}");
    assert_eq!(conv_weights, EFFNET_NON_STEM_CONV_WEIGHTS);
}

/// Weights in the 48 non-stem convs of EfficientNet-Lite0 (about 3.33M).
const EFFNET_NON_STEM_CONV_WEIGHTS: usize = 3_328_128;

#[test]
fn mnist_cnn_weight_layers() {
    let Some(model) = load_asset("mnist-cnn.onnx") else {
        return;
    };
    let layers = model.weight_layers().unwrap();
    check_common(&layers);
    let shapes: Vec<(&str, &[usize])> = layers
        .iter()
        .map(|l| (l.op_type.as_str(), l.shape.as_slice()))
        .collect();
    assert_eq!(
        shapes,
        [
            ("Conv", &[32, 1, 3, 3][..]),
            ("Conv", &[64, 32, 3, 3][..]),
            ("Gemm", &[128, 9216][..]),
            ("Gemm", &[10, 128][..]),
        ]
    );
    assert!(layers.iter().all(|l| l.out_axis == 0 && l.groups == 1));
}
