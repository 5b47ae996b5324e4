//! `subsetq`: the command-line interface. Glue only: parse flags, call the libraries, print.
//!
//! Every error is one line on stderr and exit code 2; nothing is written unless the work is done.

mod accuracy;
mod bench;
mod bench_kernels;
mod bench_recon;
mod bench_tasks;
mod cost;
mod eval;
mod flags;
mod output;
mod quantize;
mod report;
mod run;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use clap::{Parser, Subcommand};
use subsetq_core::{Method, UniversalSet};
use subsetq_pipeline::progress::Bar;
use subsetq_pipeline::search::{compare, search_model};
use subsetq_pipeline::write::{refuse_to_overwrite_input, write_json};
use subsetq_pipeline::{Granularity, SearchOptions};

#[derive(Parser)]
#[command(
    name = "subsetq",
    version,
    about = "Subset Quantization (SQ) for CNNs: non-uniform low-bit weights from sums of powers of two"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Search every Conv / Gemm / MatMul layer: chosen subset, α and error next to the baselines.
    Search(SearchArgs),
    /// Write a quantized ONNX model (batch norms folded, weights replaced by their quantized values).
    Quantize(quantize::QuantizeArgs),
    /// Top-1 / top-5 of a model on labelled data (IDX file or image folder); with --compare,
    /// agreement with a second model.
    Eval(eval::EvalArgs),
    /// Hardware cost of a compact quantized model: weight storage, and per image the shifts
    /// and adds of SQ against uniform multiplies, with an energy estimate.
    Cost(cost::CostArgs),
    /// Run a model on serialized input tensors (ONNX test-case layout); --check compares with
    /// the expected outputs.
    Run(run::RunArgs),
    /// One self-contained HTML page: weight histograms with the chosen points, per-layer
    /// errors of every quantizer, accuracy against bits and size (with --data), hardware cost.
    Report(report::ReportArgs),
    /// Benchmarks, each printing ratios measured in one run.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Whole-model search time of `fast` and `dp`, and the `reference` port extrapolated.
    Search(bench::BenchSearchArgs),
    /// Accuracy on real data of every benchmark model × quantizer × bits, FP32 first.
    Accuracy(Box<accuracy::BenchAccuracyArgs>),
    /// The packed kernels (int8 table lookup, decode to f32) against the f32 kernel on the
    /// real models' layer shapes: seconds, ratios and bytes of weights, in one run.
    Kernels(bench_kernels::BenchKernelsArgs),
    /// Block reconstruction against the same loop in PyTorch (scripts/recon_torch.py) on the
    /// benchmark models: seconds in total and per part, their ratio, and the top-1 of each.
    Recon(Box<bench_recon::BenchReconArgs>),
    /// Detectors and segmenters quantized with reconstruction: mAP and recall of the FP32
    /// model's boxes, or mean IoU of its masks, on photos apart from the calibration ones.
    Tasks(Box<bench_tasks::BenchTasksArgs>),
}

#[derive(clap::Args)]
struct SearchArgs {
    /// The ONNX model (read only).
    model: PathBuf,
    /// Bits per weight (sign + index), 2..=8.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(2..=8))]
    bits: u32,
    #[command(flatten)]
    common: CommonArgs,
    /// Write the report as JSON here (atomically).
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Flags shared by `search`, `quantize` and `bench accuracy`.
#[derive(clap::Args)]
pub struct CommonArgs {
    /// Universal set: `paper`, `sums:K:HI..LO` (e.g. sums:2:0..-5) or terms like `[0,-1,-3,_]+[0,-2,-4,_]`.
    #[arg(long, default_value = "paper")]
    uset: String,
    /// Search method: fast (the paper's search, exact and fast), reference (the paper's, slow), dp.
    #[arg(long, default_value = "fast")]
    method: Method,
    /// Bits of the first and last weight layers, kept uniform as in the paper.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(2..=8))]
    first_last_bits: u32,
}

impl CommonArgs {
    /// The search options at `bits` with `granularity`.
    fn options(&self, bits: u32, granularity: Granularity) -> Result<SearchOptions> {
        Ok(SearchOptions {
            bits,
            first_last_bits: self.first_last_bits,
            uset: UniversalSet::parse(&self.uset)?,
            method: self.method,
            granularity,
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Search(args) => run_search(&args),
        Command::Quantize(args) => quantize::run(&args),
        Command::Eval(args) => eval::run(&args),
        Command::Cost(args) => cost::run(&args),
        Command::Run(args) => run::run(&args),
        Command::Report(args) => report::run(&args),
        Command::Bench(BenchCommand::Search(args)) => bench::run(&args),
        Command::Bench(BenchCommand::Accuracy(args)) => accuracy::run(&args),
        Command::Bench(BenchCommand::Kernels(args)) => bench_kernels::run(&args),
        Command::Bench(BenchCommand::Recon(args)) => bench_recon::run(&args),
        Command::Bench(BenchCommand::Tasks(args)) => bench_tasks::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes on one line, leaving out a cause its parent already quotes.
fn one_line(e: &anyhow::Error) -> String {
    subsetq_pipeline::one_line(e.as_ref())
}

/// Loads a model.
pub fn load_model(path: &Path) -> Result<subsetq_onnx::Model> {
    Ok(subsetq_pipeline::load_model(path)?)
}

fn run_search(args: &SearchArgs) -> Result<()> {
    let opts = args.common.options(args.bits, Granularity::Tensor)?;
    if let Some(json) = &args.json {
        refuse_to_overwrite_input(json, &args.model)?;
    }
    let started = Instant::now();
    let model = load_model(&args.model)?;
    let mut bar = Bar::new();
    let reports = search_model(&model, &args.model.display().to_string(), &opts, &mut |p| {
        bar.update(p)
    })?;
    bar.finish();
    let total_seconds = started.elapsed().as_secs_f64();
    let comparisons = compare(&reports);
    output::print_table(&reports, &comparisons, &opts, total_seconds);
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "model": args.model.display().to_string(),
            "bits": opts.bits,
            "first_last_bits": opts.first_last_bits,
            "uset": opts.uset.spec(),
            "uset_points": opts.uset.sorted(),
            "method": opts.method.name(),
            "layers": reports,
            "comparisons": comparisons,
            "search_seconds": reports.iter().map(|r| r.search_seconds).sum::<f64>(),
            "total_seconds": total_seconds,
        });
        write_json(path, &doc)?;
    }
    Ok(())
}
