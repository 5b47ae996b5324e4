//! `subsetq bench recon`: subsetq's block reconstruction against the same loop in PyTorch
//! (`scripts/recon_torch.py`), in one run, on the benchmark models: seconds in total and per
//! part (data, weights, forward, backward, optimizer), their ratio, and the top-1 each reaches.
//!
//! subsetq quantizes first (search + reconstruction, timed per block and per part), then writes
//! a job directory for the script: the BN-folded float model, every layer's searched quantizer,
//! the blocks subsetq reconstructed (nodes and learned layers, in order), the settings, the
//! calibration samples and the labelled test set. The script learns the same blocks from the
//! same start with the same batches and scores its model; nothing it computes feeds back.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use subsetq_data::LabelSource;
use subsetq_engine::reconstruct::Timings;
use subsetq_pipeline::data::{load_data, PreprocessOverrides};
use subsetq_pipeline::eval::{Runner, Scores};
use subsetq_pipeline::progress::Bar;
use subsetq_pipeline::write::{write_bytes, write_json};
use subsetq_pipeline::{
    float_to_quantize, quantize, Granularity, QuantizeOptions, Quantizer, Samples, WeightForm,
};

use crate::accuracy::{calibration_sets, existing, BenchModel, MODELS};
use crate::flags::ReconArgs;
use crate::{load_model, CommonArgs};

#[derive(clap::Args)]
pub struct BenchReconArgs {
    /// Models, comma separated: mnist-cnn, fashion-resnet (scored by top-1 on their labelled
    /// test sets).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "fashion-resnet,mnist-cnn"
    )]
    models: Vec<String>,
    /// Weight bits of the middle layers.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(2..=8))]
    bits: u32,
    /// Quantizer of the middle layers.
    #[arg(long, value_enum, default_value_t = Quantizer::Sq)]
    quantizer: Quantizer,
    #[command(flatten)]
    recon: ReconArgs,
    #[command(flatten)]
    common: CommonArgs,
    /// The Python with torch and onnx (Debian: python3-torch, python3-onnx;
    /// `scripts/bench-recon.sh` installs them).
    #[arg(long, default_value = "/usr/bin/python3")]
    python: PathBuf,
    /// Only subsetq's side (no PyTorch run).
    #[arg(long)]
    no_torch: bool,
    /// Where the job directories for the PyTorch script go (one per model).
    #[arg(long, default_value = "target/bench-recon")]
    work: PathBuf,
    /// The repository root that holds `assets/`, `models/` and `scripts/`.
    #[arg(long, default_value = ".")]
    root: PathBuf,
    /// Write the measurements as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One side's measurement of one model.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Side {
    /// Reconstruction wall time: every block's inputs and targets, and its steps.
    seconds: f64,
    /// The steps' time per part.
    parts: Parts,
    top1: f64,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Parts {
    data: f64,
    weights: f64,
    forward: f64,
    backward: f64,
    optimizer: f64,
}

impl Parts {
    const NAMES: [&'static str; 5] = ["data", "weights", "forward", "backward", "optimizer"];

    fn values(&self) -> [f64; 5] {
        [
            self.data,
            self.weights,
            self.forward,
            self.backward,
            self.optimizer,
        ]
    }

    fn total(&self) -> f64 {
        self.values().iter().sum()
    }
}

impl From<Timings> for Parts {
    fn from(t: Timings) -> Parts {
        Parts {
            data: t.data,
            weights: t.weights,
            forward: t.forward,
            backward: t.backward,
            optimizer: t.optimizer,
        }
    }
}

/// One reconstructed block of subsetq's run: where its time went.
#[derive(Serialize)]
struct BlockTime {
    output: String,
    layers: usize,
    /// Wall time, its inputs and targets included.
    seconds: f64,
    /// The steps' time per part.
    parts: Parts,
}

#[derive(Serialize)]
struct Row {
    model: &'static str,
    blocks: usize,
    per_block: Vec<BlockTime>,
    subsetq: Side,
    torch: Option<Side>,
    /// PyTorch seconds ÷ subsetq seconds (above 1: subsetq is faster).
    speedup: Option<f64>,
}

/// What the PyTorch script prints (its last line).
#[derive(Deserialize)]
struct TorchOutput {
    torch: String,
    threads: usize,
    seconds: f64,
    parts: Parts,
    top1: f64,
}

pub fn run(args: &BenchReconArgs) -> Result<()> {
    let mut chosen = Vec::new();
    for name in &args.models {
        match MODELS.iter().find(|m| m.name == name.trim()) {
            // The PyTorch script knows plain convolutions only.
            Some(m) if m.name == "efficientnet-lite0" && !args.no_torch => {
                bail!("efficientnet-lite0 runs with --no-torch only (subsetq's side)")
            }
            Some(m) => chosen.push(m),
            None => bail!(
                "unknown model {name:?}; this benchmark runs mnist-cnn, fashion-resnet \
                 (efficientnet-lite0 with --no-torch)"
            ),
        }
    }
    if chosen.is_empty() {
        bail!("nothing to run: give at least one model");
    }
    let script = args.root.join("scripts/recon_torch.py");
    if !args.no_torch {
        check_torch(&args.python)?;
        existing(&script)?;
    }
    let threads = rayon::current_num_threads();
    println!(
        "bench recon: W{} {} · {} steps of {} per block · {} calibration images · seed {} · \
         {threads} threads (subsetq and PyTorch)",
        args.bits,
        args.quantizer.name(),
        args.recon.iters,
        args.recon.recon_batch,
        args.recon.calib_size,
        args.recon.seed,
    );
    let mut rows = Vec::new();
    let mut torch_version = None;
    for m in &chosen {
        eprintln!("{}", m.name);
        let (row, version) = bench_model(m, args, &script, threads)?;
        torch_version = torch_version.or(version);
        rows.push(row);
    }
    print_rows(&rows, torch_version.as_deref());
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "bits": args.bits,
            "quantizer": args.quantizer.name(),
            "iters": args.recon.iters,
            "batch": args.recon.recon_batch,
            "calibration_images": args.recon.calib_size,
            "seed": args.recon.seed,
            "threads": threads,
            "torch": torch_version,
            "rows": rows,
        });
        write_json(path, &doc)?;
    }
    Ok(())
}

/// Refuses to start when `python` cannot import torch and onnx, saying how to get them.
fn check_torch(python: &Path) -> Result<()> {
    let out = Command::new(python)
        .args(["-c", "import torch, onnx"])
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    if !out.status.success() {
        bail!(
            "{} cannot import torch and onnx ({}); install Debian's python3-torch and \
             python3-onnx (scripts/bench-recon.sh does), give --python, or pass --no-torch",
            python.display(),
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("no message")
        );
    }
    Ok(())
}

fn bench_model(
    m: &BenchModel,
    args: &BenchReconArgs,
    script: &Path,
    threads: usize,
) -> Result<(Row, Option<String>)> {
    let model_path = args.root.join(m.model);
    let data_path = args.root.join(m.data);
    existing(&model_path)?;
    existing(&data_path)?;
    let model = load_model(&model_path)?;
    let source = model_path.display().to_string();
    let pre = PreprocessOverrides::default().resolve(&model_path, Some(&model))?;
    let mut bar = Bar::new();
    let recon = args.recon.options();
    let paths: Vec<PathBuf> = m.calib.iter().map(|c| args.root.join(c)).collect();
    let calib = calibration_sets(&paths, &pre, recon.calib_size, &mut bar)?;
    let test = load_data(&data_path, &pre, LabelSource::Auto, None, &mut |p| {
        bar.update(p)
    })?;
    let Some(labels) = test.labels.clone() else {
        bail!("{}: the test set has no labels", data_path.display());
    };
    let opts = QuantizeOptions {
        search: args.common.options(args.bits, Granularity::Channel)?,
        quantizer: args.quantizer,
        recon,
        abits: None,
        preprocess: Some(pre.clone()),
        weights: WeightForm::Float,
        mixed: None,
    };
    let quantized = quantize(&model, &source, &opts, Some(&calib), &mut |p| bar.update(p))?;
    let outputs =
        Runner::new(&quantized.model, &pre)?
            .outputs(&test, 100, "subsetq", &mut |p| bar.update(p))?;
    let subsetq = Side {
        seconds: quantized.blocks.iter().map(|b| b.seconds).sum(),
        parts: quantized
            .blocks
            .iter()
            .fold(Timings::default(), |t, b| t.add(&b.timings))
            .into(),
        top1: Scores::of(&outputs, &labels).top1,
    };
    let per_block = quantized
        .blocks
        .iter()
        .map(|b| BlockTime {
            output: b.output.clone(),
            layers: b.layers.len(),
            seconds: b.seconds,
            parts: b.timings.into(),
        })
        .collect();
    let mut row = Row {
        model: m.name,
        blocks: quantized.blocks.len(),
        per_block,
        subsetq,
        torch: None,
        speedup: None,
    };
    if args.no_torch {
        return Ok((row, None));
    }
    let job = args.work.join(m.name);
    write_job(
        &job,
        &model,
        &source,
        &quantized,
        &calib,
        &test.images,
        &labels,
        &opts,
    )?;
    eprintln!(
        "PyTorch: {} {} {}",
        args.python.display(),
        script.display(),
        job.display()
    );
    let out = Command::new(&args.python)
        .arg(script)
        .arg(&job)
        .args(["--threads", &threads.to_string()])
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed on {}: {}",
            script.display(),
            job.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let torch: TorchOutput = serde_json::from_str(last)
        .with_context(|| format!("reading {}'s output {last:?}", script.display()))?;
    if torch.threads != threads {
        eprintln!(
            "warning: PyTorch ran on {} threads, subsetq on {threads}",
            torch.threads
        );
    }
    row.speedup = Some(torch.seconds / row.subsetq.seconds);
    row.torch = Some(Side {
        seconds: torch.seconds,
        parts: torch.parts,
        top1: torch.top1,
    });
    Ok((row, Some(torch.torch)))
}

/// The job directory `scripts/recon_torch.py` reads (its doc comment describes it).
#[allow(clippy::too_many_arguments)]
fn write_job(
    dir: &Path,
    model: &subsetq_onnx::Model,
    source: &str,
    quantized: &subsetq_pipeline::QuantizedModel,
    calib: &Samples,
    test_images: &[f32],
    labels: &[u32],
    opts: &QuantizeOptions,
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (float, _) = float_to_quantize(model, source)?;
    float
        .save(&dir.join("float.onnx"))
        .with_context(|| format!("writing {}", dir.display()))?;
    let blocks = float.blocks()?;
    let f32_bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    write_bytes(&dir.join("calib.f32"), &f32_bytes(&calib.data))?;
    write_bytes(&dir.join("test.f32"), &f32_bytes(test_images))?;
    let label_bytes: Vec<u8> = labels.iter().flat_map(|l| l.to_le_bytes()).collect();
    write_bytes(&dir.join("test-labels.u32"), &label_bytes)?;
    let mut job_blocks = Vec::new();
    for b in &quantized.blocks {
        let Some(nodes) = blocks
            .iter()
            .find(|x| x.input == b.input && x.output == b.output)
        else {
            bail!(
                "block {} → {} is not a block of the folded float graph",
                b.input,
                b.output
            );
        };
        job_blocks.push(serde_json::json!({
            "input": b.input,
            "output": b.output,
            "nodes": nodes.nodes,
            "layers": b.layers,
        }));
    }
    let settings = opts.recon.settings(opts.search.bits);
    let layers: Vec<_> = quantized
        .searched
        .iter()
        .map(|l| {
            serde_json::json!({
                "name": l.name,
                "shape": l.shape,
                "out_axis": l.out_axis,
                "scales": l.scales,
                "levels": l.codebook.levels,
                "alpha": l.codebook.alpha,
            })
        })
        .collect();
    let plan = subsetq_engine::Plan::from_model(&float)?;
    let input = plan.single_input()?;
    let per_image = calib.shape.iter().product::<usize>().max(1);
    let doc = serde_json::json!({
        "float_model": "float.onnx",
        "input": input,
        "iters": settings.iters,
        "batch": settings.batch,
        "lr": settings.lr,
        "seed": settings.seed,
        "layers": layers,
        "blocks": job_blocks,
        "calibration": { "file": "calib.f32", "n": calib.n, "shape": calib.shape },
        "test": {
            "file": "test.f32",
            "labels": "test-labels.u32",
            "n": test_images.len() / per_image,
            "shape": calib.shape,
        },
    });
    write_json(&dir.join("job.json"), &doc)?;
    Ok(())
}

fn print_rows(rows: &[Row], torch: Option<&str>) {
    println!(
        "\n{:<16} {:>6} {:>11} {:>11} {:>9} {:>13} {:>13}",
        "model", "blocks", "subsetq s", "PyTorch s", "speed-up", "top-1 subsetq", "top-1 PyTorch"
    );
    let opt =
        |v: Option<f64>, digits: usize| v.map_or("-".to_string(), |v| format!("{v:.digits$}"));
    for r in rows {
        println!(
            "{:<16} {:>6} {:>11.1} {:>11} {:>9} {:>13.2} {:>13}",
            r.model,
            r.blocks,
            r.subsetq.seconds,
            opt(r.torch.as_ref().map(|t| t.seconds), 1),
            opt(r.speedup, 2),
            r.subsetq.top1,
            opt(r.torch.as_ref().map(|t| t.top1), 2),
        );
    }
    println!("\nper part, seconds summed over blocks' steps (speed-up: PyTorch ÷ subsetq):");
    print!("{:<16} {:<9}", "model", "");
    for name in Parts::NAMES {
        print!(" {name:>9}");
    }
    println!(" {:>9}", "steps");
    for r in rows {
        let sides = [("subsetq", Some(&r.subsetq)), ("PyTorch", r.torch.as_ref())];
        for (label, side) in sides {
            let Some(side) = side else { continue };
            print!("{:<16} {label:<9}", r.model);
            for v in side.parts.values() {
                print!(" {v:>9.2}");
            }
            println!(" {:>9.2}", side.parts.total());
        }
        if let Some(t) = &r.torch {
            print!("{:<16} {:<9}", r.model, "speed-up");
            for (ours, theirs) in r.subsetq.parts.values().iter().zip(t.parts.values()) {
                print!(" {:>9}", format!("{:.2}", theirs / ours));
            }
            println!(" {:>9.2}", t.parts.total() / r.subsetq.parts.total());
        }
    }
    for r in rows {
        println!("\n{} per block (subsetq), seconds:", r.model);
        print!(
            "{:<4} {:<32} {:>6} {:>8}",
            "", "block output", "layers", "wall"
        );
        for name in Parts::NAMES {
            print!(" {name:>9}");
        }
        println!();
        for (i, b) in r.per_block.iter().enumerate() {
            // Long ONNX names: their tail tells the blocks apart.
            let tail: String = b
                .output
                .chars()
                .rev()
                .take(32)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            print!("{i:<4} {tail:<32} {:>6} {:>8.2}", b.layers, b.seconds);
            for v in b.parts.values() {
                print!(" {v:>9.2}");
            }
            println!();
        }
    }
    if let Some(v) = torch {
        println!(
            "PyTorch {v}: its own convolutions, autograd and Adam; subsetq: its host kernels \
             (subsetq-kernels::train) where a block's operators allow, else burn's autodiff"
        );
    }
}
