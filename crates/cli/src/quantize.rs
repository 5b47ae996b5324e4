//! `subsetq quantize`: parse flags, call the pipeline, print what it did.

use std::path::PathBuf;

use anyhow::Result;
use subsetq_pipeline::data::calibration;
use subsetq_pipeline::mixed::{BitBudget, MixedOptions};
use subsetq_pipeline::progress::Bar;
use subsetq_pipeline::write::refuse_to_overwrite_input;
use subsetq_pipeline::{quantize, Granularity, QuantizeOptions, Quantizer, WeightForm};

use crate::flags::{PreprocessArgs, ReconArgs};
use crate::{load_model, CommonArgs};

#[derive(clap::Args)]
pub struct QuantizeArgs {
    /// The ONNX model (read only).
    model: PathBuf,
    /// Where to write the quantized ONNX model (atomically; never the input).
    #[arg(short, long)]
    output: PathBuf,
    /// Bits per weight (sign + index), 2..=8.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(2..=8))]
    bits: u32,
    /// Quantizer of every layer but the first and last.
    #[arg(long, value_enum, default_value_t = Quantizer::Sq)]
    quantizer: Quantizer,
    /// Weight scales: one per output channel (one codebook per layer still), or one per layer
    /// (the paper).
    #[arg(long, value_enum, default_value_t = Granularity::Channel)]
    granularity: Granularity,
    #[command(flatten)]
    common: CommonArgs,
    /// Calibration images (IDX file, image folder or pattern; labels unused), preprocessed as
    /// the preprocessing flags, the model's sidecar or its metadata say. Turns on block
    /// reconstruction.
    #[arg(long)]
    calib: Option<PathBuf>,
    /// Quantize activations too: the input of every weight layer but the first, uniform
    /// asymmetric at this many bits (the last layer's input at 8), step learned in
    /// reconstruction. Default: weights only, as in the paper. Needs --calib.
    #[arg(long, value_parser = clap::value_parser!(u32).range(2..=16))]
    abits: Option<u32>,
    /// How the output stores the quantized weights: codes (b-bit codes, a table and channel
    /// scales, decoded by standard operators: the small model) or float (float32 values).
    #[arg(long, value_enum, default_value_t = WeightForm::Codes)]
    weights: WeightForm,
    /// Mixed precision: choose each middle layer's bits from --bit-choices so that their mean
    /// is at most this, least total output error (each layer's measured on the calibration
    /// images). Needs --calib.
    #[arg(long, conflicts_with = "size_budget")]
    avg_bits: Option<f64>,
    /// Mixed precision: as --avg-bits, for a budget of bytes of codes over all weight layers
    /// (the first and last at --first-last-bits included).
    #[arg(long)]
    size_budget: Option<u64>,
    /// The bits a middle layer may get under --avg-bits / --size-budget (SQ where the
    /// universal set has the levels, else uniform).
    #[arg(long, value_delimiter = ',', default_values_t = [2u32, 3, 4, 8],
          value_parser = clap::value_parser!(u32).range(2..=8))]
    bit_choices: Vec<u32>,
    /// Also write the HTML report of the input model at these bits here (as `subsetq report`
    /// without --data).
    #[arg(long)]
    report: Option<PathBuf>,
    #[command(flatten)]
    recon: ReconArgs,
    #[command(flatten)]
    preprocess: PreprocessArgs,
}

pub fn run(args: &QuantizeArgs) -> Result<()> {
    let mut opts = QuantizeOptions {
        search: args.common.options(args.bits, args.granularity)?,
        quantizer: args.quantizer,
        recon: args.recon.options(),
        abits: args.abits,
        preprocess: None,
        weights: args.weights,
        mixed: budget(args),
    };
    opts.check(args.calib.is_some())?;
    refuse_to_overwrite_input(&args.output, &args.model)?;
    if let Some(report) = &args.report {
        refuse_to_overwrite_input(report, &args.model)?;
    }
    let model = load_model(&args.model)?;
    // Calibration needs preprocessing; without calibration it is carried along when known.
    opts.preprocess = match &args.calib {
        Some(_) => Some(args.preprocess.resolve(&args.model, Some(&model))?),
        None => args.preprocess.resolve_if_any(&args.model, Some(&model))?,
    };
    let mut bar = Bar::new();
    let samples = match (&args.calib, &opts.preprocess) {
        (Some(path), Some(pre)) => Some(calibration(path, pre, opts.recon.calib_size, &mut |p| {
            bar.update(p)
        })?),
        _ => None,
    };
    let q = quantize(
        &model,
        &args.model.display().to_string(),
        &opts,
        samples.as_ref(),
        &mut |p| bar.update(p),
    )?;
    bar.finish();
    q.save(&args.output)?;
    if let Some(path) = &args.report {
        let name = args.model.display().to_string();
        let report = subsetq_report::build(
            &model,
            &name,
            &opts.search,
            opts.preprocess.as_ref(),
            None,
            &mut |p| bar.update(p),
        )?;
        bar.finish();
        report.write(path)?;
        println!("wrote {}", path.display());
    }
    for b in &q.blocks {
        println!(
            "block {} -> {} ({}): output loss {:.4e} -> {:.4e} ({:.1} s)",
            b.input,
            b.output,
            b.layers.join(", "),
            b.loss_before,
            b.loss_after,
            b.seconds
        );
    }
    if let Some(m) = &q.record.mixed {
        println!(
            "mixed precision ({}): middle layers at {:.3} bits on average ({} of {} bits), \
             predicted output error {:.4e}",
            m.budget, m.avg_bits, m.used_bits, m.budget_bits, m.predicted_error
        );
    }
    for r in &q.record.layers {
        println!(
            "{:<40} {:>2}-bit {:<12} error {:.4}",
            r.name, r.bits, r.quantizer, r.l2_error
        );
    }
    println!(
        "wrote {} ({} layers quantized, {} batch norms folded)",
        args.output.display(),
        q.record.layers.len(),
        q.record.folded_batch_norms
    );
    Ok(())
}

fn budget(args: &QuantizeArgs) -> Option<MixedOptions> {
    let budget = match (args.avg_bits, args.size_budget) {
        (Some(a), _) => BitBudget::AvgBits(a),
        (None, Some(b)) => BitBudget::Bytes(b),
        (None, None) => return None,
    };
    let mut choices = args.bit_choices.clone();
    choices.sort_unstable();
    choices.dedup();
    Some(MixedOptions {
        choices,
        ..MixedOptions::new(budget)
    })
}
