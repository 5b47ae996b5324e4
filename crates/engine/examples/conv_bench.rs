//! Times 2-D convolution forward + backward on the CPU backend with autodiff.
//!
//! `cargo run --release --example conv_bench [-- REPEATS]`
//! (a) 3x3 conv, batch 32, 64 -> 64 channels, 56x56, pad 1;
//! (b) depthwise 3x3 conv (groups = channels), batch 32, 144 channels, 56x56, pad 1.

use std::time::Instant;

use burn_tensor::module::conv2d;
use burn_tensor::ops::ConvOptions;
use burn_tensor::{Device, Distribution, Tensor};

/// Which gradients the backward pass computes.
#[derive(Clone, Copy, Debug)]
enum Grads {
    All,
    InputOnly,
    WeightOnly,
}

fn time_case(
    name: &str,
    device: &Device,
    cin: usize,
    cout: usize,
    groups: usize,
    repeats: usize,
    which: Grads,
) {
    let mut x = Tensor::<4>::random([32, cin, 56, 56], Distribution::Normal(0.0, 1.0), device);
    let mut w = Tensor::<4>::random(
        [cout, cin / groups, 3, 3],
        Distribution::Normal(0.0, 0.1),
        device,
    );
    let b = Tensor::<1>::zeros([cout], device).require_grad();
    if !matches!(which, Grads::WeightOnly) {
        x = x.require_grad();
    }
    if !matches!(which, Grads::InputOnly) {
        w = w.require_grad();
    }
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
        "{name} ({which:?} grads): forward {:.0} ms, forward+backward best {:.0} ms, mean {:.0} ms ({} runs)",
        best.0,
        best.1,
        mean,
        times.len()
    );
}

/// Depthwise 3x3 (stride 1, pad 1) as nine shifted multiply-adds: element-wise
/// ops only, so autodiff gives exact gradients without grouped-conv kernels.
fn depthwise_shifted(x: Tensor<4>, w: Tensor<4>, b: Tensor<1>) -> Tensor<4> {
    let [n, c, h, wd] = x.dims();
    let xp = x.pad([(1, 1), (1, 1)], burn_tensor::ops::PadMode::Constant(0.0));
    let mut acc = b.reshape([1, c, 1, 1]).expand([n, c, h, wd]);
    for i in 0..3 {
        for j in 0..3 {
            let tap = w
                .clone()
                .slice(burn_tensor::s![.., .., i..i + 1, j..j + 1])
                .reshape([1, c, 1, 1]);
            let win = xp
                .clone()
                .slice(burn_tensor::s![.., .., i..i + h, j..j + wd]);
            acc = acc + win * tap;
        }
    }
    acc
}

fn time_shifted(device: &Device, c: usize, repeats: usize) {
    let x =
        Tensor::<4>::random([32, c, 56, 56], Distribution::Normal(0.0, 1.0), device).require_grad();
    let w =
        Tensor::<4>::random([c, 1, 3, 3], Distribution::Normal(0.0, 0.1), device).require_grad();
    let b = Tensor::<1>::zeros([c], device).require_grad();
    // Same result as conv2d?
    let opts = ConvOptions::new([1, 1], [1, 1], [1, 1], c);
    let y_ref = conv2d(x.clone(), w.clone(), Some(b.clone()), opts);
    let y = depthwise_shifted(x.clone(), w.clone(), b.clone());
    let diff = (y_ref - y).abs().max().into_scalar::<f32>();
    let mut best = (f64::MAX, f64::MAX);
    for i in 0..repeats + 1 {
        let t0 = Instant::now();
        let y = depthwise_shifted(x.clone(), w.clone(), b.clone());
        let f = y.clone().inner().sum().into_scalar::<f32>();
        let t_fwd = t0.elapsed().as_secs_f64() * 1e3;
        let grads = y.powi_scalar(2).sum().backward();
        let gw = w.grad(&grads).map(|g| g.sum().into_scalar::<f32>());
        let gx = x.grad(&grads).map(|g| g.sum().into_scalar::<f32>());
        let t = t0.elapsed().as_secs_f64() * 1e3;
        std::hint::black_box((f, gw, gx));
        if i > 0 {
            best = (best.0.min(t_fwd), best.1.min(t));
        }
    }
    println!(
        "depthwise3x3 b32 {c}ch 56x56 as 9 shifted mul-adds: forward {:.0} ms, forward+backward best {:.0} ms (max |diff| vs conv2d {diff:.1e})",
        best.0, best.1
    );
}

fn main() {
    let repeats = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let device = Device::flex().autodiff();
    println!(
        "threads: {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    time_case(
        "conv3x3 b32 64->64 56x56",
        &device,
        64,
        64,
        1,
        repeats,
        Grads::All,
    );
    time_case(
        "depthwise3x3 b32 144ch 56x56",
        &device,
        144,
        144,
        144,
        repeats,
        Grads::All,
    );
    if std::env::args().any(|a| a == "--split") {
        for which in [Grads::InputOnly, Grads::WeightOnly] {
            time_case(
                "conv3x3 b32 64->64 56x56",
                &device,
                64,
                64,
                1,
                repeats,
                which,
            );
            time_case(
                "depthwise3x3 b32 144ch 56x56",
                &device,
                144,
                144,
                144,
                repeats,
                which,
            );
        }
    }
    time_shifted(&device, 144, repeats);
}
