//! The search on the real EfficientNet-Lite0 weights (`assets/efficientnet-lite0.onnx`) against
//! the released reference's own results (`tests/data/`, see its README), and the three methods
//! against each other on every layer.

use std::collections::HashMap;

use serde_json::Value;
use subsetq_core::{normalize, search, search_prepared, Magnitudes, Method, UniversalSet};

/// α: float32 rounding in the reference (≈1e-6 relative).
const ALPHA_REL_TOL: f64 = 2e-6;
/// Score: the vectors' README promises 1e-5 relative.
const ERROR_REL_TOL: f64 = 1e-5;
/// Subset points are stored as float32.
const POINT_ABS_TOL: f64 = 1e-7;
/// `reference` and `fast` compute the same sums in a different order.
const SAME_ALGORITHM_REL_TOL: f64 = 1e-9;

/// Non-stem, non-fc weights of the real model by name, or None when the asset is missing.
fn effnet_layers() -> Option<HashMap<String, Vec<f32>>> {
    let path = subsetq_onnx::test_assets::require("efficientnet-lite0.onnx")?;
    let model = subsetq_onnx::load(&path).expect("load effnet");
    let layers = model.weight_layers().expect("list layers");
    Some(
        layers
            .into_iter()
            .filter(|l| !l.role.is_first() && !l.role.is_last())
            .map(|l| (l.name, l.data))
            .collect(),
    )
}

fn vectors(file: &str) -> Vec<Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(file);
    serde_json::from_str(&std::fs::read_to_string(path).expect("read vectors"))
        .expect("parse vectors")
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-30)
}

/// Checks one search result against one reference entry.
fn check_against_vector(v: &Value, w: &[f32], method: Method) {
    let name = v["tensor"].as_str().unwrap();
    let bits = v["bits"].as_u64().unwrap() as u32;
    let want: Vec<f64> = v["subset"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_f64().unwrap())
        .collect();
    let got = search(w, &UniversalSet::paper(), bits, method).unwrap();
    assert_eq!(got.subset.len(), want.len(), "{name}");
    for (g, e) in got.subset.iter().zip(&want) {
        assert!(
            (g - e).abs() <= POINT_ABS_TOL,
            "{name} {bits}-bit {method:?}: subset {:?} vs reference {want:?}",
            got.subset
        );
    }
    let alpha = v["alpha"].as_f64().unwrap();
    let err = v["l2_error"].as_f64().unwrap();
    assert!(
        rel(got.alpha, alpha) <= ALPHA_REL_TOL,
        "{name} {bits}-bit {method:?}: alpha {} vs {alpha}",
        got.alpha
    );
    assert!(
        rel(got.l2_error, err) <= ERROR_REL_TOL,
        "{name} {bits}-bit {method:?}: error {} vs {err}",
        got.l2_error
    );
}

/// Checks `method` against every vector whose layer has at most `max_weights` weights;
/// returns how many were checked.
fn check_vectors(layers: &HashMap<String, Vec<f32>>, method: Method, max_weights: usize) -> usize {
    let mut checked = 0;
    for file in ["effl0-reference-w2.json", "effl0-reference-w3-small.json"] {
        for v in vectors(file) {
            let w = &layers[v["tensor"].as_str().unwrap()];
            if w.len() <= max_weights {
                check_against_vector(&v, w, method);
                checked += 1;
            }
        }
    }
    checked
}

#[test]
fn fast_matches_the_released_reference_on_every_vector() {
    let Some(layers) = effnet_layers() else {
        return;
    };
    assert_eq!(check_vectors(&layers, Method::Fast, usize::MAX), 48 + 11);
}

#[test]
fn reference_port_matches_the_released_reference_on_small_layers() {
    let Some(layers) = effnet_layers() else {
        return;
    };
    // The O(n·K) port is slow by design: keep the test to layers it does in well under a second.
    let checked = check_vectors(&layers, Method::Reference, 10_000);
    assert!(checked >= 11 + 11, "checked {checked}");
}

#[test]
fn fast_and_reference_agree_at_4_bits_on_real_small_layers() {
    let Some(layers) = effnet_layers() else {
        return;
    };
    let u = UniversalSet::paper();
    let mut small: Vec<(&String, &Vec<f32>)> =
        layers.iter().filter(|(_, w)| w.len() <= 1600).collect();
    small.sort_by_key(|(name, _)| name.as_str());
    assert!(small.len() >= 3);
    for (name, w) in small {
        let r = search(w, &u, 4, Method::Reference).unwrap();
        let f = search(w, &u, 4, Method::Fast).unwrap();
        assert_eq!(r.subset, f.subset, "{name}");
        assert!(rel(f.alpha, r.alpha) <= SAME_ALGORITHM_REL_TOL, "{name}");
        assert!(
            rel(f.l2_error, r.l2_error) <= SAME_ALGORITHM_REL_TOL,
            "{name}"
        );
    }
}

#[test]
fn dp_never_loses_to_exhaustive_on_any_real_layer() {
    let Some(layers) = effnet_layers() else {
        return;
    };
    let u = UniversalSet::paper();
    let mut worse = Vec::new();
    for bits in [2, 3, 4] {
        for (name, w) in &layers {
            let (_, x) = normalize(w).unwrap();
            let m = Magnitudes::new(&x);
            let f = search_prepared(&x, &m, &u, bits, Method::Fast).unwrap();
            let d = search_prepared(&x, &m, &u, bits, Method::Dp).unwrap();
            if d.l2_error > f.l2_error {
                worse.push(format!(
                    "{name} {bits}-bit: dp {} > exhaustive {}",
                    d.l2_error, f.l2_error
                ));
            }
        }
    }
    assert!(worse.is_empty(), "{}", worse.join("\n"));
}
