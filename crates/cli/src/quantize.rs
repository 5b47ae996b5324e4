//! `subsetq quantize`: folds batch norms, then writes a model whose weights are the quantized
//! values (search only for now; reconstruction comes later), with the codebooks and scales in
//! its metadata.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;
use subsetq_core::baselines::Baseline;
use subsetq_onnx::{fold_batch_norm, Model};

use crate::analysis::{choose, SearchOptions};
use crate::{load_model, output, progress, CommonArgs};

/// Metadata key under which the quantization record is stored in the ONNX model.
pub const METADATA_KEY: &str = "subsetq";

/// Which quantizer the middle layers get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum QuantizerArg {
    /// Subset Quantization.
    Sq,
    /// Uniform symmetric, scale = max|w|.
    Uniform,
    /// Uniform symmetric, scale by least error.
    UniformMse,
    /// Powers of two.
    Pot,
    /// Additive powers of two.
    Apot,
}

impl QuantizerArg {
    /// The name used on the command line and in records.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sq => "sq",
            Self::Uniform => "uniform",
            Self::UniformMse => "uniform-mse",
            Self::Pot => "pot",
            Self::Apot => "apot",
        }
    }

    fn baseline(self) -> Option<Baseline> {
        match self {
            Self::Sq => None,
            Self::Uniform => Some(Baseline::UniformMinMax),
            Self::UniformMse => Some(Baseline::UniformMse),
            Self::Pot => Some(Baseline::Pot),
            Self::Apot => Some(Baseline::Apot),
        }
    }
}

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
    #[arg(long, value_enum, default_value_t = QuantizerArg::Sq)]
    quantizer: QuantizerArg,
    #[command(flatten)]
    common: CommonArgs,
}

/// One layer's entry in the metadata record.
#[derive(Serialize)]
pub struct LayerRecord {
    pub name: String,
    pub bits: u32,
    pub quantizer: &'static str,
    /// Normalised magnitudes; a weight is ±scale · alpha · levels[i].
    pub levels: Vec<f64>,
    pub alpha: f64,
    pub scale: f32,
    pub l2_error: f64,
}

/// A quantized model and what was done to it.
pub struct Quantized {
    /// The model with folded batch norms and quantized weights, the record in its metadata.
    pub model: Model,
    /// One entry per weight layer, in graph order.
    pub records: Vec<LayerRecord>,
    /// Batch norms folded into the layer before them.
    pub folded: usize,
}

/// Folds batch norms into their conv / gemm (so that the quantized weights are the ones a
/// runtime multiplies with), then quantizes every weight layer: `quantizer` for the middle
/// layers, uniform at `opts.first_last_bits` for the first and last. `source` names the model
/// in errors.
pub fn quantize_model(
    model: &Model,
    source: &Path,
    opts: &SearchOptions,
    quantizer: QuantizerArg,
) -> Result<Quantized> {
    let (mut model, fold) = fold_batch_norm(model)
        .with_context(|| format!("{}: folding batch norms", source.display()))?;
    let layers = crate::weight_layers(&model, source)?;
    let bar = progress(layers.len(), "quantize");
    let mut records = Vec::with_capacity(layers.len());
    for layer in &layers {
        bar.set_message(layer.name.clone());
        let choice = choose(layer, opts, quantizer.baseline())?;
        model
            .set_initializer_f32(&layer.name, &choice.dequantized())
            .with_context(|| format!("layer {}", layer.name))?;
        records.push(LayerRecord {
            name: layer.name.clone(),
            bits: choice.bits,
            quantizer: choice.quantizer,
            l2_error: choice.codebook.l2_error(&choice.magnitudes),
            levels: choice.codebook.levels,
            alpha: choice.codebook.alpha,
            scale: choice.scale,
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    let record = serde_json::json!({
        "version": 1,
        "bits": opts.bits,
        "first_last_bits": opts.first_last_bits,
        "quantizer": quantizer.name(),
        "uset": opts.uset.spec(),
        "folded_batch_norms": fold.folded.len(),
        "layers": records,
    });
    model.set_metadata(METADATA_KEY, &record.to_string());
    Ok(Quantized {
        model,
        records,
        folded: fold.folded.len(),
    })
}

pub fn run(args: &QuantizeArgs) -> Result<()> {
    let opts: SearchOptions = args.common.options(args.bits)?;
    output::refuse_to_overwrite_input(&args.output, &args.model)?;
    let model = load_model(&args.model)?;
    let q = quantize_model(&model, &args.model, &opts, args.quantizer)?;
    q.model.save(&args.output)?;
    for r in &q.records {
        println!(
            "{:<40} {:>2}-bit {:<12} error {:.4}",
            r.name, r.bits, r.quantizer, r.l2_error
        );
    }
    println!(
        "wrote {} ({} layers quantized, {} batch norms folded)",
        args.output.display(),
        q.records.len(),
        q.folded
    );
    Ok(())
}
