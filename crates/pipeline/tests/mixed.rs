//! Mixed precision on fashion-resnet: the chosen bits fit the budget, are what the written
//! layers carry, and their measured error is no more than uniform bits of the same size.

use subsetq_data::Preprocess;
use subsetq_onnx::test_assets::{require, root};
use subsetq_pipeline::data::calibration;
use subsetq_pipeline::mixed::{BitBudget, MixedOptions};
use subsetq_pipeline::progress::quiet;
use subsetq_pipeline::{quantize, QuantizeOptions};

#[test]
fn bits_chosen_under_a_budget_fit_it_and_beat_uniform_bits() {
    let Some(calib) = require("data/fashion-mnist/train-images-idx3-ubyte.gz") else {
        return;
    };
    let path = root().join("models/fashion-resnet.onnx");
    let model = subsetq_onnx::load(&path).unwrap();
    let pre = Preprocess::from_sidecar(&Preprocess::sidecar_path(&path)).unwrap();
    let samples = calibration(&calib, &pre, 32, &mut quiet).unwrap();
    let mut opts = QuantizeOptions::new(3);
    opts.recon.iters = 0;
    opts.mixed = Some(MixedOptions::new(BitBudget::AvgBits(3.0)));
    let q = quantize(&model, "fashion-resnet", &opts, Some(&samples), &mut quiet).unwrap();
    let mixed = q.record.mixed.as_ref().expect("a mixed-precision record");
    assert!(mixed.used_bits <= mixed.budget_bits);
    let weights: u64 = mixed.layers.iter().map(|c| c.weights).sum();
    assert!(mixed.budget_bits <= 3 * weights && mixed.avg_bits <= 3.0);
    // Not all one width: the layers differ in how much their bits matter.
    let widths: std::collections::BTreeSet<u32> = mixed.layers.iter().map(|c| c.bits).collect();
    assert!(widths.len() > 1, "{widths:?}");
    for c in &mixed.layers {
        let r = q.record.layers.iter().find(|r| r.name == c.name).unwrap();
        assert_eq!(r.bits, c.bits, "{}", c.name);
        assert_eq!(r.quantizer, if c.bits == 8 { "uniform" } else { "sq" });
        assert_eq!(c.errors.len(), 4);
    }
    // Uniform 3 bits is one of the choices the budget allows: the optimum is no worse.
    let at = |bits: u32| -> f64 {
        mixed
            .layers
            .iter()
            .map(|c| c.errors.iter().find(|e| e.0 == bits).unwrap().1)
            .sum()
    };
    let chosen: f64 = mixed
        .layers
        .iter()
        .map(|c| c.errors.iter().find(|e| e.0 == c.bits).unwrap().1)
        .sum();
    assert!((chosen - mixed.predicted_error).abs() <= 1e-9 * chosen);
    assert!(chosen <= at(3), "{chosen} > {}", at(3));
    // Fewer bits, more error: measured, not assumed, so checked on the real layers' sum.
    assert!(at(2) > at(3) && at(3) > at(4) && at(4) > at(8));
    // The record survives the written model.
    let back = subsetq_pipeline::record::QuantizedRecord::of_model(&q.written().unwrap())
        .unwrap()
        .unwrap();
    let back = back.mixed.expect("mixed in the written record");
    assert_eq!(back.budget_bits, mixed.budget_bits);
    let bits = |m: &subsetq_pipeline::mixed::MixedRecord| -> Vec<u32> {
        m.layers.iter().map(|c| c.bits).collect()
    };
    assert_eq!(bits(&back), bits(mixed));

    // A budget below 2 bits everywhere is refused, naming the budget.
    opts.mixed = Some(MixedOptions::new(BitBudget::AvgBits(1.5)));
    let err = quantize(&model, "fashion-resnet", &opts, Some(&samples), &mut quiet)
        .err()
        .expect("too small a budget");
    assert!(
        err.one_line().contains("avg-bits 1.5"),
        "{}",
        err.one_line()
    );
    // Without calibration data there is nothing to measure the errors on.
    let err = quantize(&model, "fashion-resnet", &opts, None, &mut quiet)
        .err()
        .expect("needs calibration");
    assert!(err.one_line().contains("--calib"), "{}", err.one_line());
}
