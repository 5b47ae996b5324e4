//! Times 2-D convolution forward + backward on the CPU backend with autodiff.
//!
//! `cargo run --release --example conv_bench [-- REPEATS]`
//! (a) 3x3 conv, batch 32, 64 -> 64 channels, 56x56, pad 1;
//! (b) depthwise 3x3 conv (groups = channels), batch 32, 144 channels, 56x56, pad 1.

use std::time::Instant;

use burn_tensor::module::conv2d;
use burn_tensor::ops::ConvOptions;
use burn_tensor::{Device, Distribution, Tensor};

fn time_case(name: &str, device: &Device, cin: usize, cout: usize, groups: usize, repeats: usize) {
    let x = Tensor::<4>::random([32, cin, 56, 56], Distribution::Normal(0.0, 1.0), device)
        .require_grad();
    let w = Tensor::<4>::random(
        [cout, cin / groups, 3, 3],
        Distribution::Normal(0.0, 0.1),
        device,
    )
    .require_grad();
    let b = Tensor::<1>::zeros([cout], device).require_grad();
    let opts = ConvOptions::new([1, 1], [1, 1], [1, 1], groups);
    let mut times = Vec::new();
    for i in 0..repeats + 1 {
        let t0 = Instant::now();
        let y = conv2d(x.clone(), w.clone(), Some(b.clone()), opts.clone());
        let fwd_only = y.clone().inner().sum().into_scalar::<f32>();
        let t_fwd = t0.elapsed();
        let loss = y.powi_scalar(2).sum();
        let grads = loss.backward();
        let gw = w.grad(&grads).map(|g| g.sum().into_scalar::<f32>());
        let gx = x.grad(&grads).map(|g| g.sum().into_scalar::<f32>());
        let t = t0.elapsed();
        if i > 0 {
            times.push((t_fwd.as_secs_f64() * 1e3, t.as_secs_f64() * 1e3));
        }
        std::hint::black_box((fwd_only, gw, gx));
    }
    let best = times
        .iter()
        .cloned()
        .fold((f64::MAX, f64::MAX), |a, b| (a.0.min(b.0), a.1.min(b.1)));
    let mean = times.iter().map(|t| t.1).sum::<f64>() / times.len() as f64;
    println!(
        "{name}: forward {:.0} ms, forward+backward best {:.0} ms, mean {:.0} ms ({} runs)",
        best.0,
        best.1,
        mean,
        times.len()
    );
}

fn main() {
    let repeats = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let device = Device::flex().autodiff();
    println!("threads: {}", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    time_case("conv3x3 b32 64->64 56x56", &device, 64, 64, 1, repeats);
    time_case("depthwise3x3 b32 144ch 56x56", &device, 144, 144, 144, repeats);
}
