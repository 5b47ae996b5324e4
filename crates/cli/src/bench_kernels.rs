//! `subsetq bench kernels`: the packed kernels against the f32 kernel on the real models'
//! layer shapes, in one run: per layer, batch, threads, bits and path, the seconds of each and
//! their ratio, and the bytes of weights each reads.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use subsetq_core::{search, Method, UniversalSet};
use subsetq_engine::subsetq_kernels::{
    conv2d, linear, Activations, ConvGeometry, Cpu, PackedWeights, Path,
};
use subsetq_pipeline::packed::int_table_of_levels;
use subsetq_pipeline::write::write_json;

#[derive(clap::Args)]
pub struct BenchKernelsArgs {
    /// Images per call (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 32])]
    batch: Vec<usize>,
    /// Threads (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 2])]
    threads: Vec<usize>,
    /// Bits of the packed weights (comma-separated, 2..=4).
    #[arg(long, value_delimiter = ',', default_values_t = [4u32, 3, 2])]
    bits: Vec<u32>,
    /// Only layers whose name contains this.
    #[arg(long)]
    filter: Option<String>,
    /// Seconds of repeated calls per measurement (the best of three such runs counts).
    #[arg(long, default_value_t = 0.1)]
    min_seconds: f64,
    /// Write the rows as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// A layer shape of a real model.
#[derive(Clone, Copy)]
enum Shape {
    Conv(ConvGeometry),
    /// `rows × cols` weights on `batch` inputs.
    Linear {
        rows: usize,
        cols: usize,
    },
}

fn conv(
    c: usize,
    hw: usize,
    m: usize,
    k: usize,
    stride: usize,
    pads: [usize; 4],
    groups: usize,
) -> Shape {
    Shape::Conv(ConvGeometry {
        in_channels: c,
        in_hw: [hw, hw],
        out_channels: m,
        kernel: [k, k],
        strides: [stride, stride],
        dilations: [1, 1],
        pads,
        groups,
    })
}

/// The layers timed: named after the model and node they come from.
fn layers() -> Vec<(&'static str, Shape)> {
    let p1 = [1, 1, 1, 1];
    let p2 = [2, 2, 2, 2];
    let p0 = [0; 4];
    vec![
        (
            "fashion-resnet/stage1.block1.conv1 16→16 3×3 @14²",
            conv(16, 14, 16, 3, 1, p1, 1),
        ),
        (
            "fashion-resnet/stage2.block1.conv1 32→32 3×3 @7²",
            conv(32, 7, 32, 3, 1, p1, 1),
        ),
        (
            "fashion-resnet/stage3.block1.conv1 64→64 3×3 @4²",
            conv(64, 4, 64, 3, 1, p1, 1),
        ),
        (
            "mnist-cnn/conv2 32→64 3×3 @26²",
            conv(32, 26, 64, 3, 1, p0, 1),
        ),
        (
            "mnist-cnn/fc1 9216→128",
            Shape::Linear {
                rows: 128,
                cols: 9216,
            },
        ),
        (
            "effnet-lite0/_blocks.4._expand_conv 40→240 1×1 @28²",
            conv(40, 28, 240, 1, 1, p0, 1),
        ),
        (
            "effnet-lite0/_blocks.12._project_conv 1152→192 1×1 @7²",
            conv(1152, 7, 192, 1, 1, p0, 1),
        ),
        (
            "effnet-lite0/_conv_head 320→1280 1×1 @7²",
            conv(320, 7, 1280, 1, 1, p0, 1),
        ),
        (
            "effnet-lite0/_blocks.2._depthwise_conv 144 dw 3×3 @56²",
            conv(144, 56, 144, 3, 1, p1, 144),
        ),
        (
            "effnet-lite0/_blocks.9._depthwise_conv 672 dw 5×5 @14²",
            conv(672, 14, 672, 5, 1, p2, 672),
        ),
        (
            "effnet-lite0/_fc 1280→1000",
            Shape::Linear {
                rows: 1000,
                cols: 1280,
            },
        ),
        (
            "gemv-4096x4096",
            Shape::Linear {
                rows: 4096,
                cols: 4096,
            },
        ),
    ]
}

impl Shape {
    fn rows_cols(&self) -> (usize, usize) {
        match self {
            Shape::Conv(g) => (g.out_channels, g.cols()),
            Shape::Linear { rows, cols } => (*rows, *cols),
        }
    }

    fn sizes(&self, batch: usize) -> (usize, usize) {
        match self {
            Shape::Conv(g) => {
                let [oh, ow] = g.out_hw();
                (
                    batch * g.in_channels * g.in_hw[0] * g.in_hw[1],
                    batch * g.out_channels * oh * ow,
                )
            }
            Shape::Linear { rows, cols } => (batch * cols, batch * rows),
        }
    }

    fn run(
        &self,
        cpu: Cpu,
        path: Path,
        batch: usize,
        x: Activations,
        out: &mut [f32],
    ) -> Result<()> {
        match self {
            Shape::Conv(g) => conv2d(cpu, path, g, batch, x, None, out)?,
            Shape::Linear { cols, .. } => linear(cpu, path, *cols, batch, x, None, out)?,
        }
        Ok(())
    }
}

/// SQ weights of the paper's set for a `rows × cols` layer: the levels and α that the search
/// picks for bell-shaped weights, codes drawn from them.
fn sq_weights(rows: usize, cols: usize, bits: u32, seed: u64) -> Result<PackedWeights> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as f32 / (1u64 << 31) as f32
    };
    // A sum of four uniforms: close enough to a trained layer's bell shape for the search.
    let sample: Vec<f32> = (0..4096)
        .map(|_| (0..4).map(|_| next()).sum::<f32>() - 2.0)
        .collect();
    let fit = search(&sample, &UniversalSet::paper(), bits, Method::Fast)?;
    let ints = int_table_of_levels(&fit.subset, fit.alpha, bits, &UniversalSet::paper())
        .context("the paper's levels as integers")?;
    let table: Vec<f32> = ints.values.iter().map(|&v| v as f32 * ints.unit).collect();
    let codes: Vec<u8> = (0..rows * cols)
        .map(|_| ((next() * table.len() as f32) as usize).min(table.len() - 1) as u8)
        .collect();
    let scales: Vec<f32> = (0..rows).map(|_| 0.01 + 0.01 * next()).collect();
    Ok(PackedWeights::new(rows, cols, bits, &codes, &table, &scales)?.with_ints(ints)?)
}

/// Best-of-three seconds per call of `f`, each run repeating it for `min_seconds`.
fn time(min_seconds: f64, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let (started, mut calls) = (Instant::now(), 0u32);
        while calls == 0 || started.elapsed().as_secs_f64() < min_seconds / 3.0 {
            f()?;
            calls += 1;
        }
        best = best.min(started.elapsed().as_secs_f64() / f64::from(calls));
    }
    Ok(best)
}

#[derive(serde::Serialize)]
struct Row {
    layer: String,
    batch: usize,
    threads: usize,
    bits: u32,
    path: &'static str,
    seconds: f64,
    f32_seconds: f64,
    ratio: f64,
    weight_bytes: usize,
    f32_weight_bytes: usize,
}

pub fn run(args: &BenchKernelsArgs) -> Result<()> {
    if let Some(bad) = args.bits.iter().find(|b| !(2..=4).contains(*b)) {
        bail!("--bits {bad}: the packed kernels are timed at 2, 3 and 4 bits");
    }
    if args.batch.contains(&0) || args.threads.contains(&0) {
        bail!("--batch and --threads take positive numbers");
    }
    let cpu = Cpu::detect();
    println!("cpu: {cpu}; path A = int8 table lookup × 8-bit activations (pshufb + maddubs), path B = codes decoded to f32 tiles");
    println!("ratio = f32 kernel seconds / packed seconds (> 1: packed is faster); weights: bytes read per call");
    println!(
        "{:<58} {:>5} {:>3} {:>4} {:>5} {:>10} {:>10} {:>6} {:>10} {:>10}",
        "layer", "batch", "thr", "bits", "path", "ms", "f32 ms", "ratio", "weights", "f32 wts"
    );
    let mut rows = Vec::new();
    for (name, shape) in layers() {
        if args.filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let (m, k) = shape.rows_cols();
        let packed: Vec<(u32, PackedWeights)> = args
            .bits
            .iter()
            .map(|&b| Ok((b, sq_weights(m, k, b, u64::from(b))?)))
            .collect::<Result<_>>()?;
        for &batch in &args.batch {
            let (in_len, out_len) = shape.sizes(batch);
            let x: Vec<f32> = (0..in_len)
                .map(|i| ((i * 7919) % 255) as f32 * 0.01)
                .collect();
            let codes: Vec<u8> = (0..in_len).map(|i| ((i * 7919) % 255) as u8).collect();
            let mut out = vec![0.0f32; out_len];
            for &threads in &args.threads {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()?;
                pool.install(|| -> Result<()> {
                    let float = packed[0].1.decode();
                    let f32_seconds = time(args.min_seconds, || {
                        shape.run(cpu, Path::F32(&float), batch, Activations::F32(&x), &mut out)
                    })?;
                    for (bits, w) in &packed {
                        for path in ["int8", "f32"] {
                            let seconds = time(args.min_seconds, || {
                                if path == "int8" {
                                    let input = Activations::U8 { codes: &codes, zero: 0, scale: 0.01 };
                                    shape.run(cpu, Path::Int8(w), batch, input, &mut out)
                                } else {
                                    shape.run(cpu, Path::PackedF32(w), batch, Activations::F32(&x), &mut out)
                                }
                            })?;
                            let row = Row {
                                layer: name.to_string(),
                                batch,
                                threads,
                                bits: *bits,
                                path,
                                seconds,
                                f32_seconds,
                                ratio: f32_seconds / seconds,
                                weight_bytes: w.bytes(),
                                f32_weight_bytes: 4 * m * k,
                            };
                            println!(
                                "{:<58} {:>5} {:>3} {:>4} {:>5} {:>10.4} {:>10.4} {:>6.2} {:>10} {:>10}",
                                row.layer, batch, threads, bits, path, seconds * 1e3,
                                f32_seconds * 1e3, row.ratio, row.weight_bytes, row.f32_weight_bytes
                            );
                            rows.push(row);
                        }
                    }
                    Ok(())
                })?;
            }
        }
    }
    if let Some(path) = &args.json {
        write_json(
            path,
            &serde_json::json!({ "cpu": cpu.to_string(), "rows": rows }),
        )?;
    }
    Ok(())
}
