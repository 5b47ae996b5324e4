//! `subsetq bench tasks`: detection and segmentation models quantized with reconstruction at
//! each bit width, scored by how much of their FP32 model's boxes (mAP, recall) or masks
//! (mean IoU) they keep, on photos disjoint from the calibration photos, in one run.
//!
//! No labelled detection or segmentation set is at hand offline: the FP32 model's own
//! outputs are the ground truth (see `subsetq_pipeline::detect`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use subsetq_data::{LabelSource, Preprocess};
use subsetq_onnx::Model;
use subsetq_pipeline::data::{load_data, PreprocessOverrides};
use subsetq_pipeline::detect::{self, DetectAgreement, MaskAgreement, TaskAgreement};
use subsetq_pipeline::eval::{Named, Runner};
use subsetq_pipeline::mixed::{BitBudget, MixedOptions};
use subsetq_pipeline::progress::Bar;
use subsetq_pipeline::write::write_json;
use subsetq_pipeline::{quantize, Granularity, QuantizeOptions, Quantizer, WeightForm};

use crate::accuracy::{calibration_sets, existing, pick, row_name};
use crate::flags::ReconArgs;
use crate::CommonArgs;

/// Images per forward pass when scoring.
const BATCH: usize = 50;

/// A task benchmark model: where it and its photos live (relative to `--root`).
struct TaskModel {
    name: &'static str,
    model: &'static str,
    /// Calibration photos, taken in this order up to the calibration size.
    calib: &'static [&'static str],
    /// Scored photos, none of them among the calibration ones.
    score: &'static [&'static str],
}

/// Every model calibrates on ai-benchmark's 100 street scenes and is scored on the other 150
/// photos: its ImageNet-subject photos, its cats (whose faces BlazeFace finds too) and
/// foolbox's ImageNet photos.
const CALIBRATION: &[&str] = &["assets/data/ai-benchmark/enhancement"];
const SCORED: &[&str] = &[
    "assets/data/ai-benchmark/classification",
    "assets/data/ai-benchmark/segmentation",
    "assets/data/foolbox/imagenet_*.jpg",
];

const MODELS: [TaskModel; 3] = [
    TaskModel {
        name: "blazeface",
        model: "assets/blazeface.onnx",
        calib: CALIBRATION,
        score: SCORED,
    },
    TaskModel {
        name: "nanodet",
        model: "assets/nanodet.onnx",
        calib: CALIBRATION,
        score: SCORED,
    },
    TaskModel {
        name: "selfie",
        model: "assets/selfie.onnx",
        calib: CALIBRATION,
        score: SCORED,
    },
];

#[derive(clap::Args)]
pub struct BenchTasksArgs {
    /// Models, comma separated: blazeface, nanodet, selfie.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "blazeface,nanodet,selfie"
    )]
    models: Vec<String>,
    /// Quantizers of the middle layers, each a row with block reconstruction, comma separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "sq,uniform-mse"
    )]
    recon: Vec<Quantizer>,
    /// Precisions, comma separated, each a row per quantizer: `wB` (B-bit weights), `wBaA`
    /// (and A-bit activations) or `wBm` (mixed precision: each middle layer 2, 3, 4 or 8 bits,
    /// B on average over their weights, as `quantize --avg-bits B`).
    #[arg(long, value_delimiter = ',', default_value = "w4,w3,w4a8", value_parser = parse_precision)]
    rows: Vec<Precision>,
    #[command(flatten)]
    recon_settings: ReconArgs,
    /// Use only the first N photos of each scored folder.
    #[arg(long)]
    limit: Option<usize>,
    /// The repository root that holds `assets/`.
    #[arg(long, default_value = ".")]
    root: PathBuf,
    #[command(flatten)]
    common: CommonArgs,
    /// Write every row (and timings) as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Weight bits (or their mean under mixed precision), and activation bits when activations
/// are quantized too.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Precision {
    bits: u32,
    abits: Option<u32>,
    mixed: bool,
}

fn parse_precision(text: &str) -> std::result::Result<Precision, String> {
    let bad = || {
        format!("{text:?} is not wB, wBaA or wBm (e.g. w4, w4a8, w4m), B in 2..=8 and A in 2..=16")
    };
    let rest = text.strip_prefix('w').ok_or_else(bad)?;
    if let Some(b) = rest.strip_suffix('m') {
        let bits: u32 = b.parse().map_err(|_| bad())?;
        if !(2..=8).contains(&bits) {
            return Err(bad());
        }
        return Ok(Precision {
            bits,
            abits: None,
            mixed: true,
        });
    }
    let (b, a) = match rest.split_once('a') {
        Some((b, a)) => (b, Some(a)),
        None => (rest, None),
    };
    let bits: u32 = b.parse().map_err(|_| bad())?;
    let abits: Option<u32> = a.map(str::parse).transpose().map_err(|_| bad())?;
    if !(2..=8).contains(&bits) || abits.is_some_and(|a| !(2..=16).contains(&a)) {
        return Err(bad());
    }
    Ok(Precision {
        bits,
        abits,
        mixed: false,
    })
}

/// One row of the table.
#[derive(Serialize)]
struct Row {
    model: &'static str,
    quantizer: String,
    bits: u32,
    abits: Option<u32>,
    /// Under mixed precision: the middle layers' mean bits per weight.
    #[serde(skip_serializing_if = "Option::is_none")]
    avg_bits: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detect: Option<DetectAgreement>,
    #[serde(skip_serializing_if = "Option::is_none")]
    segment: Option<MaskAgreement>,
    /// Photos reconstruction was calibrated on.
    calibration: usize,
    /// Quantization (BN folding, search, calibration, reconstruction) seconds.
    quantize_seconds: f64,
}

pub fn run(args: &BenchTasksArgs) -> Result<()> {
    let chosen = pick(&args.models, &MODELS, |m| m.name)?;
    if chosen.is_empty() || args.recon.is_empty() || args.rows.is_empty() {
        bail!("nothing to run: give at least one model, quantizer and bit width");
    }
    let started = Instant::now();
    let mut rows = Vec::new();
    for m in &chosen {
        eprintln!("{}", m.name);
        let (model_rows, scored) = bench_model(m, args)?;
        print_rows(m, &model_rows, scored, args);
        rows.extend(model_rows);
    }
    let total_seconds = started.elapsed().as_secs_f64();
    println!("total {total_seconds:.1} s");
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "first_last_bits": args.common.first_last_bits,
            "method": args.common.method.name(),
            "iters": args.recon_settings.iters,
            "recon_batch": args.recon_settings.recon_batch,
            "rows": rows,
            "total_seconds": total_seconds,
        });
        write_json(path, &doc)?;
    }
    Ok(())
}

/// The scored photos, one dataset per folder.
struct Photos {
    sets: Vec<subsetq_data::Dataset>,
    n: usize,
}

/// A model's task outputs on every scored photo, the sets one after another.
fn task_outputs(
    model: &Model,
    pre: &Preprocess,
    photos: &Photos,
    what: &str,
) -> Result<Vec<Named>> {
    let task = pre.task.as_ref().context("the sidecar has no \"task\"")?;
    let names = task.outputs();
    let runner = Runner::new(model, pre)?;
    let mut bar = Bar::new();
    let mut all: Vec<Named> = Vec::new();
    for set in &photos.sets {
        let part = runner.named_outputs(set, BATCH, &names, what, &mut |p| bar.update(p))?;
        if all.is_empty() {
            all = part;
        } else {
            for (a, p) in all.iter_mut().zip(part) {
                a.values.extend(p.values);
            }
        }
    }
    bar.finish();
    Ok(all)
}

fn bench_model(m: &TaskModel, args: &BenchTasksArgs) -> Result<(Vec<Row>, usize)> {
    let model_path = args.root.join(m.model);
    existing(&model_path)?;
    let model = crate::load_model(&model_path)?;
    let pre = PreprocessOverrides::default().resolve(&model_path, Some(&model))?;
    let Some(task) = pre.task.clone() else {
        bail!("{}: its sidecar has no \"task\"", model_path.display());
    };
    let mut bar = Bar::new();
    let mut sets = Vec::new();
    for s in m.score {
        let path = args.root.join(s);
        existing(&path)?;
        sets.push(load_data(
            &path,
            &pre,
            LabelSource::Unlabelled,
            args.limit,
            &mut |p| bar.update(p),
        )?);
    }
    bar.finish();
    let photos = Photos {
        n: sets.iter().map(|s| s.n).sum(),
        sets,
    };
    let size = [photos.sets[0].height, photos.sets[0].width];
    let fp32 = task_outputs(&model, &pre, &photos, "FP32")
        .with_context(|| model_path.display().to_string())?;

    let recon_options = args.recon_settings.options();
    let paths: Vec<PathBuf> = m.calib.iter().map(|c| args.root.join(c)).collect();
    let calibration = calibration_sets(&paths, &pre, recon_options.calib_size, &mut bar)?;
    let source = model_path.display().to_string();
    let mut rows = Vec::new();
    for &Precision { bits, abits, mixed } in &args.rows {
        for &q in &args.recon {
            let opts = QuantizeOptions {
                search: args.common.options(bits, Granularity::Channel)?,
                quantizer: q,
                recon: recon_options.clone(),
                abits,
                preprocess: Some(pre.clone()),
                weights: WeightForm::Float,
                mixed: mixed.then(|| MixedOptions::new(BitBudget::AvgBits(f64::from(bits)))),
            };
            let mut name = row_name(Granularity::Channel, q, true, abits);
            if mixed {
                name.push_str(" mixed");
            }
            let t0 = Instant::now();
            let quantized = quantize(&model, &source, &opts, Some(&calibration), &mut |p| {
                bar.update(p)
            })?;
            let quantize_seconds = t0.elapsed().as_secs_f64();
            let out = task_outputs(&quantized.model, &pre, &photos, &format!("{name} W{bits}"))?;
            let (detect, segment) = match detect::agreement(&task, &fp32, &out, size)? {
                TaskAgreement::Detect(a) => (Some(a), None),
                TaskAgreement::Segment(a) => (None, Some(a)),
            };
            rows.push(Row {
                model: m.name,
                quantizer: name,
                bits,
                abits,
                avg_bits: quantized.record.mixed.as_ref().map(|m| m.avg_bits),
                detect,
                segment,
                calibration: calibration.n,
                quantize_seconds,
            });
        }
    }
    Ok((rows, photos.n))
}

fn print_rows(m: &TaskModel, rows: &[Row], scored: usize, args: &BenchTasksArgs) {
    println!(
        "\n{:<28} {:>4}  {:>8}  {:>12}  {:>9}  {:>9}  {:>10}",
        m.name, "bits", "mAP@0.5", "mAP@.5:.95", "recall@.5", "mask IoU", "seconds"
    );
    let num = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
    for r in rows {
        let d = r.detect.as_ref();
        println!(
            "{:<28} {:>4}  {:>8}  {:>12}  {:>9}  {:>9}  {:>10.1}",
            r.quantizer,
            r.bits,
            num(d.map(|d| d.map50)),
            num(d.map(|d| d.map50_95)),
            num(d.map(|d| d.recall50)),
            num(r.segment.as_ref().map(|s| s.mask_iou)),
            r.quantize_seconds
        );
    }
    if let Some(r) = rows.first() {
        if let Some(d) = &r.detect {
            print!(
                "{}: against the FP32 model's {} boxes",
                m.name, d.reference_boxes
            );
        }
        if let Some(s) = &r.segment {
            print!(
                "{}: against the FP32 model's masks ({} photos with foreground)",
                m.name, s.scored
            );
        }
        println!(
            " on {scored} photos ({}); calibrated on {} photos of {}; {} steps of {} per block",
            m.score.join(" + "),
            r.calibration,
            m.calib.join(" + "),
            args.recon_settings.iters,
            args.recon_settings.recon_batch
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precisions_parse_and_bad_ones_say_the_forms() {
        let p = |bits, abits, mixed| Precision { bits, abits, mixed };
        assert_eq!(parse_precision("w4"), Ok(p(4, None, false)));
        assert_eq!(parse_precision("w4a8"), Ok(p(4, Some(8), false)));
        assert_eq!(parse_precision("w3m"), Ok(p(3, None, true)));
        for bad in ["w9m", "w4ma8", "4", "wm", "w4a1"] {
            let err = parse_precision(bad).unwrap_err();
            assert!(err.contains("is not wB, wBaA or wBm"), "{bad}: {err}");
        }
    }
}
