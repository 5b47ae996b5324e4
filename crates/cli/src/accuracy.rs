//! `subsetq bench accuracy`: one table of model × quantizer × bits → accuracy on real data,
//! FP32 first, everything measured in one run through our engine.
//!
//! mnist-cnn and fashion-resnet are scored by top-1 on their 10k test sets. EfficientNet-Lite0
//! has only the 20 foolbox ImageNet photos here, too few for a meaningful top-1, so it is
//! scored by top-1 agreement with its FP32 model on them.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use subsetq_data::LabelSource;
use subsetq_pipeline::data::{calibration, load_data, PreprocessOverrides};
use subsetq_pipeline::eval::{Agreement, Outputs, Runner, Scores};
use subsetq_pipeline::progress::Bar;
use subsetq_pipeline::write::write_json;
use subsetq_pipeline::{quantize, Granularity, QuantizeOptions, Quantizer, WeightForm};

use crate::flags::ReconArgs;
use crate::{load_model, CommonArgs};

/// A benchmark model: where it and its data live (relative to `--root`), and how it is scored.
pub(crate) struct BenchModel {
    pub name: &'static str,
    pub model: &'static str,
    pub data: &'static str,
    /// Calibration images for reconstruction.
    pub calib: &'static str,
    pub metric: Metric,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Metric {
    /// Top-1 against the labels.
    Top1,
    /// Top-1 agreement with the FP32 model.
    Fp32Agreement,
}

pub(crate) const MODELS: [BenchModel; 3] = [
    BenchModel {
        name: "mnist-cnn",
        model: "assets/mnist-cnn.onnx",
        data: "assets/data/mnist/t10k-images-idx3-ubyte",
        calib: "assets/data/mnist/train-images-idx3-ubyte",
        metric: Metric::Top1,
    },
    BenchModel {
        name: "fashion-resnet",
        model: "models/fashion-resnet.onnx",
        data: "assets/data/fashion-mnist/t10k-images-idx3-ubyte.gz",
        calib: "assets/data/fashion-mnist/train-images-idx3-ubyte.gz",
        metric: Metric::Top1,
    },
    BenchModel {
        name: "efficientnet-lite0",
        model: "assets/efficientnet-lite0.onnx",
        data: "assets/data/foolbox/imagenet_*.jpg",
        // The only ImageNet photos here: calibration sees the evaluation images.
        calib: "assets/data/foolbox/imagenet_*.jpg",
        metric: Metric::Fp32Agreement,
    },
];

#[derive(clap::Args)]
pub struct BenchAccuracyArgs {
    /// Models, comma separated: mnist-cnn, fashion-resnet, efficientnet-lite0.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "mnist-cnn,fashion-resnet,efficientnet-lite0"
    )]
    models: Vec<String>,
    /// Quantizers of the middle layers, comma separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "sq,uniform-mse,pot,apot,uniform"
    )]
    quantizers: Vec<Quantizer>,
    /// Quantizers that also get a row with block reconstruction ("+recon"), comma separated;
    /// empty for none.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "sq,uniform-mse"
    )]
    recon: Vec<Quantizer>,
    /// Weight-scale granularities, comma separated: each repeats every row ("/ch" marks
    /// per-channel scales).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "channel")]
    granularity: Vec<Granularity>,
    #[command(flatten)]
    recon_settings: ReconArgs,
    /// Activation bits: each adds a row per reconstructed quantizer with activations
    /// quantized too (e.g. `8,4` for W·A8 and W·A4 rows); empty for weight-only.
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(2..=16))]
    abits: Vec<u32>,
    /// Weight bits, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "4,3,2", value_parser = clap::value_parser!(u32).range(2..=8))]
    bits: Vec<u32>,
    /// Use only the first N images of each test set.
    #[arg(long)]
    limit: Option<usize>,
    /// The repository root that holds `assets/` and `models/`.
    #[arg(long, default_value = ".")]
    root: PathBuf,
    #[command(flatten)]
    common: CommonArgs,
    /// Write every cell (and timings) as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One cell of the table.
#[derive(Serialize)]
struct Cell {
    model: &'static str,
    quantizer: String,
    bits: Option<u32>,
    /// Percent: top-1, or top-1 agreement with FP32 (see `metric`).
    value: f64,
    metric: &'static str,
    top1: Option<f64>,
    top5: Option<f64>,
    agreement_top1: f64,
    n: usize,
    /// Quantization (BN folding + search) seconds.
    quantize_seconds: f64,
    /// Evaluation seconds.
    eval_seconds: f64,
}

pub fn run(args: &BenchAccuracyArgs) -> Result<()> {
    let mut chosen = Vec::new();
    for name in &args.models {
        match MODELS.iter().find(|m| m.name == name.trim()) {
            Some(m) => chosen.push(m),
            None => bail!(
                "unknown model {name:?}; the benchmark models are {}",
                MODELS.map(|m| m.name).join(", ")
            ),
        }
    }
    if chosen.is_empty() || args.quantizers.is_empty() || args.bits.is_empty() {
        bail!("nothing to run: give at least one model, quantizer and bit width");
    }
    let started = Instant::now();
    let mut cells = Vec::new();
    for m in &chosen {
        eprintln!("{}", m.name);
        cells.extend(bench_model(m, args)?);
    }
    let total_seconds = started.elapsed().as_secs_f64();
    print_table(&chosen, &cells, args);
    println!("total {total_seconds:.1} s");
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "first_last_bits": args.common.first_last_bits,
            "uset": args.common.uset,
            "method": args.common.method.name(),
            "cells": cells,
            "total_seconds": total_seconds,
        });
        write_json(path, &doc)?;
    }
    Ok(())
}

/// Refuses a benchmark asset that is not there (a `folder/pattern*` needs its folder), saying
/// how to fetch it.
pub(crate) fn existing(p: &Path) -> Result<()> {
    if p.exists()
        || p.parent()
            .is_some_and(|d| d.is_dir() && p.to_string_lossy().contains('*'))
    {
        Ok(())
    } else {
        bail!(
            "{}: not found (run `bash scripts/fetch-assets.sh` in the repository root, or give --root)",
            p.display()
        )
    }
}

fn bench_model(m: &BenchModel, args: &BenchAccuracyArgs) -> Result<Vec<Cell>> {
    let model_path = args.root.join(m.model);
    let data_path = args.root.join(m.data);
    existing(&model_path)?;
    existing(&data_path)?;
    let model = load_model(&model_path)?;
    let pre = PreprocessOverrides::default().resolve(&model_path, Some(&model))?;
    let labels = match m.metric {
        Metric::Top1 => LabelSource::Auto,
        Metric::Fp32Agreement => LabelSource::FileName,
    };
    let mut bar = Bar::new();
    let data = load_data(&data_path, &pre, labels, args.limit, &mut |p| bar.update(p))?;
    let batch = 100;

    let started = Instant::now();
    let fp32 = Runner::new(&model, &pre)
        .with_context(|| model_path.display().to_string())?
        .outputs(&data, batch, "FP32", &mut |p| bar.update(p))?;
    let fp32_cell = cell(
        m,
        "fp32".to_string(),
        None,
        &fp32,
        &fp32,
        &data.labels,
        0.0,
        started,
    )?;
    let mut cells = vec![fp32_cell];
    let recon_options = args.recon_settings.options();
    let calibration = if args.recon.is_empty() {
        None
    } else {
        Some(calibration(
            &args.root.join(m.calib),
            &pre,
            recon_options.calib_size,
            &mut |p| bar.update(p),
        )?)
    };
    let source = model_path.display().to_string();
    for &bits in &args.bits {
        for (granularity, q, recon, abits) in runs(args) {
            let opts = QuantizeOptions {
                search: args.common.options(bits, granularity)?,
                quantizer: q,
                recon: recon_options.clone(),
                abits,
                preprocess: Some(pre.clone()),
                weights: WeightForm::Float,
                mixed: None,
            };
            let name = row_name(granularity, q, recon, abits);
            let t0 = Instant::now();
            let calib = calibration.as_ref().filter(|_| recon);
            let quantized = quantize(&model, &source, &opts, calib, &mut |p| bar.update(p))?;
            let quantize_seconds = t0.elapsed().as_secs_f64();
            let t1 = Instant::now();
            let out = Runner::new(&quantized.model, &pre)?.outputs(
                &data,
                batch,
                &format!("{name} W{bits}"),
                &mut |p| bar.update(p),
            )?;
            cells.push(cell(
                m,
                name,
                Some(bits),
                &out,
                &fp32,
                &data.labels,
                quantize_seconds,
                t1,
            )?);
        }
    }
    Ok(cells)
}

/// The quantizations of one bit width, in table order: `(granularity, quantizer,
/// reconstruction, activation bits)`.
fn runs(args: &BenchAccuracyArgs) -> Vec<(Granularity, Quantizer, bool, Option<u32>)> {
    let mut runs = Vec::new();
    for &g in &args.granularity {
        runs.extend(args.quantizers.iter().map(|&q| (g, q, false, None)));
        runs.extend(args.recon.iter().map(|&q| (g, q, true, None)));
        for &a in &args.abits {
            runs.extend(args.recon.iter().map(|&q| (g, q, true, Some(a))));
        }
    }
    runs
}

fn row_name(granularity: Granularity, q: Quantizer, recon: bool, abits: Option<u32>) -> String {
    let mut name = q.name().to_string();
    if granularity == Granularity::Channel {
        name.push_str("/ch");
    }
    if recon {
        name.push_str("+recon");
    }
    if let Some(a) = abits {
        name.push_str(&format!(" A{a}"));
    }
    name
}

#[allow(clippy::too_many_arguments)]
fn cell(
    m: &BenchModel,
    quantizer: String,
    bits: Option<u32>,
    out: &Outputs,
    fp32: &Outputs,
    labels: &Option<Vec<u32>>,
    quantize_seconds: f64,
    eval_started: Instant,
) -> Result<Cell> {
    let scores = labels.as_deref().map(|l| Scores::of(out, l));
    let agreement = Agreement::between(fp32, out)?.agreement_top1;
    let value = match (m.metric, scores) {
        (Metric::Top1, Some(s)) => s.top1,
        (Metric::Top1, None) => bail!("{}: the test set has no labels", m.data),
        (Metric::Fp32Agreement, _) => agreement,
    };
    Ok(Cell {
        model: m.name,
        quantizer,
        bits,
        value,
        metric: match m.metric {
            Metric::Top1 => "top1",
            Metric::Fp32Agreement => "fp32_agreement_top1",
        },
        top1: scores.map(|s| s.top1),
        top5: scores.map(|s| s.top5),
        agreement_top1: agreement,
        n: out.n,
        quantize_seconds,
        eval_seconds: eval_started.elapsed().as_secs_f64(),
    })
}

fn print_table(models: &[&BenchModel], cells: &[Cell], args: &BenchAccuracyArgs) {
    let width = models
        .iter()
        .map(|m| m.name.len())
        .max()
        .unwrap_or(8)
        .max(8);
    print!("\n{:<22} {:>4}", "quantizer", "bits");
    for m in models {
        print!("  {:>width$}", m.name);
    }
    println!();
    let mut rows: Vec<(String, Option<u32>)> = vec![("fp32".to_string(), None)];
    for &bits in &args.bits {
        for (g, q, recon, abits) in runs(args) {
            rows.push((row_name(g, q, recon, abits), Some(bits)));
        }
    }
    for (q, bits) in rows {
        let b = bits.map_or("32".to_string(), |b| b.to_string());
        print!("{q:<22} {b:>4}");
        for m in models {
            match cells
                .iter()
                .find(|c| c.model == m.name && c.quantizer == q && c.bits == bits)
            {
                Some(c) => print!("  {:>width$}", format!("{:.2}", c.value)),
                None => print!("  {:>width$}", "-"),
            }
        }
        println!();
    }
    let recon_cells: Vec<&Cell> = cells
        .iter()
        .filter(|c| c.quantizer.contains("+recon"))
        .collect();
    if !recon_cells.is_empty() {
        println!(
            "\nquantize wall time in seconds (BN folding, search, calibration, reconstruction):"
        );
        print!("{:<22} {:>4}", "quantizer", "bits");
        for m in models {
            print!("  {:>width$}", m.name);
        }
        println!();
        let mut seen: Vec<(&str, Option<u32>)> = Vec::new();
        for c in &recon_cells {
            let key = (c.quantizer.as_str(), c.bits);
            if seen.contains(&key) {
                continue;
            }
            seen.push(key);
            print!(
                "{:<22} {:>4}",
                key.0,
                key.1.map_or(String::new(), |b| b.to_string())
            );
            for m in models {
                match recon_cells
                    .iter()
                    .find(|x| x.model == m.name && (x.quantizer.as_str(), x.bits) == key)
                {
                    Some(x) => print!("  {:>width$}", format!("{:.1}", x.quantize_seconds)),
                    None => print!("  {:>width$}", "-"),
                }
            }
            println!();
        }
        println!();
    }
    for m in models {
        if let Some(c) = cells.iter().find(|c| c.model == m.name) {
            let what = match m.metric {
                Metric::Top1 => "top-1 % against the labels",
                Metric::Fp32Agreement => "% of images with the FP32 model's top-1 class",
            };
            println!("{}: {} test images, {what}", m.name, c.n);
        }
    }
    println!(
        "first and last layers uniform {}-bit; BN folded; one codebook per layer, found by \
         search; weight scales per tensor (rows marked /ch: per output channel)",
        args.common.first_last_bits
    );
    if !args.recon.is_empty() {
        let r = &args.recon_settings;
        println!(
            "+recon: block reconstruction (per-weight clv, per-channel calpha) on {} calibration \
             images from the training split (efficientnet-lite0: the same 20 photos), {} steps of \
             {} per block, lr {}, seed {}",
            r.calib_size,
            r.iters,
            r.recon_batch,
            r.lr.map_or("1e-4 at 4+ bits, 5e-4 below".to_string(), |lr| format!(
                "{lr:e}"
            )),
            r.seed
        );
    }
}
