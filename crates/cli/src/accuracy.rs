//! `subsetq bench accuracy`: one table of model × quantizer × bits → accuracy on real data,
//! FP32 first, everything measured in one run through our engine.
//!
//! mnist-cnn and fashion-resnet are scored by top-1 on their 10k test sets and calibrated on
//! their training splits. EfficientNet-Lite0 is calibrated on ai-benchmark's street scenes and
//! cat photos and scored on photos it never saw: top-1 on the 20 labelled foolbox ImageNet
//! photos, and top-1 agreement with its FP32 model on those and ai-benchmark's 100
//! ImageNet-subject photos.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use subsetq_data::{LabelSource, Preprocess};
use subsetq_onnx::Model;
use subsetq_pipeline::data::{calibration, load_data, PreprocessOverrides};
use subsetq_pipeline::eval::{Agreement, Outputs, Runner, Scores};
use subsetq_pipeline::progress::Bar;
use subsetq_pipeline::write::write_json;
use subsetq_pipeline::{quantize, Granularity, QuantizeOptions, Quantizer, Samples, WeightForm};

/// Images per forward pass when scoring.
const BATCH: usize = 100;

use crate::flags::ReconArgs;
use crate::{load_model, CommonArgs};

/// A benchmark model: where it and its data live (relative to `--root`), and how it is scored.
pub(crate) struct BenchModel {
    pub name: &'static str,
    pub model: &'static str,
    pub data: &'static str,
    /// Calibration images for reconstruction, taken in this order up to the calibration size.
    pub calib: &'static [&'static str],
    /// Unlabelled photos disjoint from the calibration ones, scored by FP32 agreement
    /// together with the test set.
    pub held_apart: Option<&'static str>,
}

pub(crate) const MODELS: [BenchModel; 3] = [
    BenchModel {
        name: "mnist-cnn",
        model: "assets/mnist-cnn.onnx",
        data: "assets/data/mnist/t10k-images-idx3-ubyte",
        calib: &["assets/data/mnist/train-images-idx3-ubyte"],
        held_apart: None,
    },
    BenchModel {
        name: "fashion-resnet",
        model: "models/fashion-resnet.onnx",
        data: "assets/data/fashion-mnist/t10k-images-idx3-ubyte.gz",
        calib: &["assets/data/fashion-mnist/train-images-idx3-ubyte.gz"],
        held_apart: None,
    },
    BenchModel {
        name: "efficientnet-lite0",
        model: "assets/efficientnet-lite0.onnx",
        data: "assets/data/foolbox/imagenet_*.jpg",
        // 130 photos, none of them scored.
        calib: &[
            "assets/data/ai-benchmark/enhancement",
            "assets/data/ai-benchmark/segmentation",
        ],
        held_apart: Some("assets/data/ai-benchmark/classification"),
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
    /// Percent, against the labels of the `n` test images.
    top1: f64,
    top5: f64,
    /// Percent of the `n + held_apart` images with the FP32 model's top-1 class.
    agreement_top1: f64,
    n: usize,
    held_apart: usize,
    /// Images reconstruction was calibrated on (0 without reconstruction).
    calibration: usize,
    /// Quantization (BN folding + search) seconds.
    quantize_seconds: f64,
    /// Evaluation seconds.
    eval_seconds: f64,
}

/// The benchmark models `names` asks for, in its order, from `all` (named by `name_of`).
pub(crate) fn pick<'a, T>(
    names: &[String],
    all: &'a [T],
    name_of: fn(&T) -> &'static str,
) -> Result<Vec<&'a T>> {
    names
        .iter()
        .map(
            |name| match all.iter().find(|m| name_of(m) == name.trim()) {
                Some(m) => Ok(m),
                None => bail!(
                    "unknown model {name:?}; the benchmark models are {}",
                    all.iter().map(name_of).collect::<Vec<_>>().join(", ")
                ),
            },
        )
        .collect()
}

pub fn run(args: &BenchAccuracyArgs) -> Result<()> {
    let chosen = pick(&args.models, &MODELS, |m| m.name)?;
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
    let mut bar = Bar::new();
    let data = load_data(&data_path, &pre, LabelSource::Auto, args.limit, &mut |p| {
        bar.update(p)
    })?;
    let Some(labels) = data.labels.clone() else {
        bail!("{}: the test set has no labels", data_path.display());
    };
    let held_apart = match m.held_apart {
        Some(path) => {
            let path = args.root.join(path);
            existing(&path)?;
            Some(load_data(
                &path,
                &pre,
                LabelSource::Unlabelled,
                args.limit,
                &mut |p| bar.update(p),
            )?)
        }
        None => None,
    };
    // Every image the model is scored on: the test set, then the held-apart photos.
    let outputs = |model: &Model, what: &str, bar: &mut Bar| -> Result<Scored> {
        let runner = Runner::new(model, &pre)?;
        let test = runner.outputs(&data, BATCH, what, &mut |p| bar.update(p))?;
        let all = match &held_apart {
            Some(extra) => {
                let extra = runner.outputs(extra, BATCH, what, &mut |p| bar.update(p))?;
                Some(Outputs {
                    n: test.n + extra.n,
                    classes: test.classes,
                    values: [test.values.as_slice(), &extra.values].concat(),
                })
            }
            None => None,
        };
        Ok(Scored { test, all })
    };

    let started = Instant::now();
    let fp32 =
        outputs(&model, "FP32", &mut bar).with_context(|| model_path.display().to_string())?;
    let mut cells = vec![cell(
        m,
        "fp32".to_string(),
        None,
        &fp32,
        &fp32,
        &labels,
        0,
        0.0,
        started,
    )?];
    let recon_options = args.recon_settings.options();
    let calibration = if args.recon.is_empty() {
        None
    } else {
        let paths: Vec<PathBuf> = m.calib.iter().map(|c| args.root.join(c)).collect();
        Some(calibration_sets(
            &paths,
            &pre,
            recon_options.calib_size,
            &mut bar,
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
            let out = outputs(&quantized.model, &format!("{name} W{bits}"), &mut bar)?;
            let calibrated = calib.map_or(0, |c| c.n);
            cells.push(cell(
                m,
                name,
                Some(bits),
                &out,
                &fp32,
                &labels,
                calibrated,
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

pub(crate) fn row_name(
    granularity: Granularity,
    q: Quantizer,
    recon: bool,
    abits: Option<u32>,
) -> String {
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

/// A model's outputs on the test set, and on it followed by the held-apart photos.
struct Scored {
    test: Outputs,
    /// `None` without held-apart photos: the test set is all.
    all: Option<Outputs>,
}

impl Scored {
    fn all(&self) -> &Outputs {
        self.all.as_ref().unwrap_or(&self.test)
    }
}

/// Calibration samples from `paths` in order, `n` in all at most (fewer when they hold fewer).
pub(crate) fn calibration_sets(
    paths: &[PathBuf],
    pre: &Preprocess,
    n: usize,
    bar: &mut Bar,
) -> Result<Samples> {
    let mut all: Option<Samples> = None;
    for path in paths {
        let have = all.as_ref().map_or(0, |s| s.n);
        if have == n {
            break;
        }
        existing(path)?;
        let more = calibration(path, pre, n - have, &mut |p| bar.update(p))?;
        all = Some(match all {
            None => more,
            Some(mut s) => {
                if s.shape != more.shape {
                    bail!("{}: calibration images of another shape", path.display());
                }
                s.data.extend_from_slice(&more.data);
                s.n += more.n;
                s
            }
        });
    }
    all.context("no calibration images")
}

#[allow(clippy::too_many_arguments)]
fn cell(
    m: &BenchModel,
    quantizer: String,
    bits: Option<u32>,
    out: &Scored,
    fp32: &Scored,
    labels: &[u32],
    calibration: usize,
    quantize_seconds: f64,
    eval_started: Instant,
) -> Result<Cell> {
    let scores = Scores::of(&out.test, labels);
    Ok(Cell {
        model: m.name,
        quantizer,
        bits,
        top1: scores.top1,
        top5: scores.top5,
        agreement_top1: Agreement::between(fp32.all(), out.all())?.agreement_top1,
        n: out.test.n,
        held_apart: out.all().n - out.test.n,
        calibration,
        quantize_seconds,
        eval_seconds: eval_started.elapsed().as_secs_f64(),
    })
}

/// A table column: its model, its header, and the value it shows of a cell.
type Column<'a> = (&'a BenchModel, String, fn(&Cell) -> f64);

fn print_table(models: &[&BenchModel], cells: &[Cell], args: &BenchAccuracyArgs) {
    // Per model its top-1, and where it has held-apart photos its FP32 agreement.
    let mut columns: Vec<Column> = Vec::new();
    for m in models {
        columns.push((m, m.name.to_string(), |c| c.top1));
        if m.held_apart.is_some() {
            columns.push((m, format!("{} agree", m.name), |c| c.agreement_top1));
        }
    }
    let width = columns.iter().map(|c| c.1.len()).max().unwrap_or(8).max(8);
    print!("\n{:<22} {:>4}", "quantizer", "bits");
    for (_, header, _) in &columns {
        print!("  {header:>width$}");
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
        for (m, _, value) in &columns {
            match cells
                .iter()
                .find(|c| c.model == m.name && c.quantizer == q && c.bits == bits)
            {
                Some(c) => print!("  {:>width$}", format!("{:.2}", value(c))),
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
        let Some(c) = cells.iter().find(|c| c.model == m.name) else {
            continue;
        };
        print!("{}: top-1 % on {} test images ({})", m.name, c.n, m.data);
        if let Some(held) = m.held_apart {
            print!(
                "; agree: % of those and {} held-apart photos ({held}) with the FP32 model's \
                 top-1 class",
                c.held_apart
            );
        }
        let calibrated = cells.iter().filter(|c| c.model == m.name);
        match calibrated.map(|c| c.calibration).max() {
            Some(k) if k > 0 => println!("; calibrated on {k} images of {}", m.calib.join(" + ")),
            _ => println!(),
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
            "+recon: block reconstruction (per-weight clv, per-channel calpha) on at most {} \
             calibration images, {} steps of {} per block, lr {}, seed {}",
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
