//! The hardware cost of the compact fashion-resnet: MACs from the layers' output sizes,
//! storage from the codes, tables and scales, SQ's shifts and adds from its level terms.

use subsetq_data::Preprocess;
use subsetq_onnx::test_assets::root;
use subsetq_pipeline::cost::cost;
use subsetq_pipeline::progress::quiet;
use subsetq_pipeline::{quantize, QuantizeOptions};

#[test]
fn cost_counts_macs_storage_and_shift_adds() {
    let path = root().join("models/fashion-resnet.onnx");
    let model = subsetq_onnx::load(&path).unwrap();
    let pre = Preprocess::from_sidecar(&Preprocess::sidecar_path(&path)).unwrap();
    let q = quantize(
        &model,
        "fashion-resnet",
        &QuantizeOptions::new(4),
        None,
        &mut quiet,
    )
    .unwrap();
    let compact = q.written().unwrap();
    let report = cost(&compact, Some(&pre)).unwrap();
    assert_eq!(report.layers.len(), q.record.layers.len());
    // The stem: a 3×3 conv on the 28×28 image (padding 1) at 8 bits: uniform, multiplies.
    let stem = &report.layers[0];
    let stem_shape = &q.record.layers[0].shape;
    let per_out: usize = stem_shape[1..].iter().product();
    assert_eq!(stem.macs, (28 * 28 * stem_shape[0] * per_out) as u64);
    assert!(!stem.shift_add && stem.bits == 8);
    for (l, r) in report.layers.iter().zip(&q.record.layers) {
        let channels = r.shape[r.out_axis] as u64;
        assert_eq!(
            l.storage_bits,
            l.weights as u64 * u64::from(l.bits) + (1u64 << l.bits) * 32 + channels * 32
        );
        if l.quantizer == "sq" {
            // The paper's levels are one or two powers of two: 1–2 shifts, 0–1 adds per MAC.
            assert!(l.shift_add, "{}", l.name);
            assert!(
                l.shifts >= l.macs / 2 && l.shifts <= 2 * l.macs,
                "{}",
                l.name
            );
            assert!(l.product_adds <= l.macs && l.product_adds + l.macs >= l.shifts / 2);
            assert!(l.energy_pj < l.uniform_energy_pj, "{}", l.name);
        }
    }
    assert_eq!(
        report.macs,
        report.layers.iter().map(|l| l.macs).sum::<u64>()
    );
    assert!(report.float_bits > 6 * report.storage_bits);
    // The written model's record carries the same report (quantize set the preprocessing).
    let record = subsetq_pipeline::record::QuantizedRecord::of_model(&compact)
        .unwrap()
        .unwrap();
    let stored = record.cost.expect("a cost report in the record");
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs();
    assert_eq!(stored.layers.len(), report.layers.len());
    for (s, r) in stored.layers.iter().zip(&report.layers) {
        assert_eq!(
            (&s.name, s.macs, s.storage_bits, s.shifts, s.product_adds),
            (&r.name, r.macs, r.storage_bits, r.shifts, r.product_adds)
        );
        assert!(close(s.energy_pj, r.energy_pj) && close(s.uniform_energy_pj, r.uniform_energy_pj));
    }
    assert!(close(stored.energy_pj, report.energy_pj));
    assert_eq!(stored.energy_source, report.energy_source);
    // The float form has no codes to count.
    let float = q.model.clone();
    assert!(cost(&float, Some(&pre)).is_err());
}
