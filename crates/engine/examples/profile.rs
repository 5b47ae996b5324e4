//! Per-step wall times of one batch through a model (random input):
//! `cargo run --release --example profile -- MODEL.onnx N,C,H,W [REPEATS]`.

use std::collections::BTreeMap;
use std::path::Path;

use subsetq_engine::burn_tensor::{Device, Distribution, Tensor};
use subsetq_engine::{Engine, Value};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(model), Some(shape)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: profile MODEL.onnx N,C,H,W [REPEATS]");
        std::process::exit(2);
    };
    let shape: Vec<usize> = shape.split(',').filter_map(|s| s.parse().ok()).collect();
    let repeats: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(3);
    let device = Device::flex();
    let engine = Engine::load(Path::new(model), &device).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    });
    let [n, c, h, w] = shape[..] else {
        eprintln!("shape must be N,C,H,W");
        std::process::exit(2)
    };
    let x = Value::R4(Tensor::<4>::random(
        [n, c, h, w],
        Distribution::Uniform(0.0, 1.0),
        &device,
    ));
    let name = engine.plan().inputs()[0].name.clone();
    let mut per_op: BTreeMap<String, f64> = BTreeMap::new();
    let mut per_node: Vec<(String, String, f64)> = Vec::new();
    let mut best_total = f64::MAX;
    for _ in 0..repeats {
        let (_, times) = engine
            .run_timed(&[(name.as_str(), x.clone())])
            .unwrap_or_else(|e| {
                eprintln!("{e}");
                std::process::exit(2)
            });
        let total: f64 = times.iter().map(|t| t.seconds).sum();
        if total < best_total {
            best_total = total;
            per_op.clear();
            per_node = times
                .iter()
                .map(|t| (t.node.clone(), t.op_type.clone(), t.seconds))
                .collect();
            for t in &times {
                *per_op.entry(t.op_type.clone()).or_default() += t.seconds;
            }
        }
    }
    println!("best of {repeats}: {:.1} ms", best_total * 1e3);
    for (op, s) in per_op {
        println!("  {op:<20} {:8.1} ms", s * 1e3);
    }
    if args.iter().any(|a| a == "--nodes") {
        for (node, op, s) in per_node {
            println!("    {node:<40} {op:<20} {:8.2} ms", s * 1e3);
        }
    }
}
