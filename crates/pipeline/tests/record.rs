//! The record's codes, table and channel scales give back the quantized model's weights bit for
//! bit, for every quantizer, with and without reconstruction, on the real fashion-resnet.

use subsetq_data::Preprocess;
use subsetq_onnx::test_assets::{require, root};
use subsetq_pipeline::data::calibration;
use subsetq_pipeline::progress::quiet;
use subsetq_pipeline::{quantize, QuantizeOptions, QuantizedModel, QuantizedRecord, Quantizer};

fn check_codes_decode_to_the_weights(q: &QuantizedModel, what: &str) {
    for layer in &q.record.layers {
        let decoded = layer
            .decode()
            .unwrap_or_else(|| panic!("{what} {}: decode", layer.name));
        let (_, weights) = q
            .model
            .initializer_f32(&layer.name)
            .unwrap()
            .expect("weight");
        assert_eq!(decoded.len(), weights.len());
        let differ = decoded
            .iter()
            .zip(&weights)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(differ, 0, "{what} {}: {differ} weights differ", layer.name);
        assert!(
            layer
                .codes
                .iter()
                .all(|&c| usize::from(c) < 1 << layer.bits),
            "{what} {}: a code is too wide",
            layer.name
        );
    }
    // The JSON form reads back to the record, less the codes.
    let back = QuantizedRecord::of_model(&q.model)
        .unwrap()
        .expect("record");
    assert_eq!(back.layers.len(), q.record.layers.len());
    assert!(back.layers.iter().all(|l| l.codes.is_empty()));
    assert_eq!(
        back.layers[1].channel_scales,
        q.record.layers[1].channel_scales
    );
}

#[test]
fn codes_decode_to_the_quantized_weights() {
    let Some(calib) = require("data/fashion-mnist/train-images-idx3-ubyte.gz") else {
        return;
    };
    let path = root().join("models/fashion-resnet.onnx");
    let model = subsetq_onnx::load(&path).unwrap();
    let pre = Preprocess::from_sidecar(&Preprocess::sidecar_path(&path)).unwrap();
    let samples = calibration(&calib, &pre, 32, &mut quiet).unwrap();
    for quantizer in Quantizer::ALL {
        let mut opts = QuantizeOptions::new(4);
        opts.quantizer = quantizer;
        let q = quantize(&model, "fashion-resnet", &opts, None, &mut quiet).unwrap();
        check_codes_decode_to_the_weights(&q, quantizer.name());
    }
    let mut opts = QuantizeOptions::new(2);
    opts.recon.iters = 10;
    opts.recon.batch = 8;
    let q = quantize(&model, "fashion-resnet", &opts, Some(&samples), &mut quiet).unwrap();
    check_codes_decode_to_the_weights(&q, "sq+recon");
    // SQ levels of the paper's set are sums of at most two powers of two (times the top).
    for layer in q.record.layers.iter().filter(|l| l.quantizer == "sq") {
        let terms = layer.level_terms.as_ref().expect("terms");
        for (level, terms) in layer.levels.iter().zip(terms) {
            assert!(terms.len() <= 2, "{}: {terms:?}", layer.name);
            let sum = terms.iter().map(|&e| 2f64.powi(e)).sum::<f64>();
            assert!(
                (sum - level * layer.level_top).abs() < 1e-12,
                "{}",
                layer.name
            );
        }
    }
}
