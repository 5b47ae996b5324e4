//! `subsetq quantize`: writes a model whose weights are the quantized values (search only for
//! now; reconstruction comes later), with the codebooks and scales in its metadata.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Serialize;
use subsetq_core::baselines::Baseline;

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
struct LayerRecord {
    name: String,
    bits: u32,
    quantizer: &'static str,
    /// Normalised magnitudes; a weight is ±scale · alpha · levels[i].
    levels: Vec<f64>,
    alpha: f64,
    scale: f32,
    l2_error: f64,
}

pub fn run(args: &QuantizeArgs) -> Result<()> {
    let opts: SearchOptions = args.common.options(args.bits)?;
    output::refuse_to_overwrite_input(&args.output, &args.model)?;
    let mut model = load_model(&args.model)?;
    let layers = crate::weight_layers(&model, &args.model)?;
    let bar = progress(layers.len(), "quantize");
    let mut records = Vec::with_capacity(layers.len());
    for layer in &layers {
        bar.set_message(layer.name.clone());
        let choice = choose(layer, &opts, args.quantizer.baseline())?;
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
        "quantizer": format!("{:?}", args.quantizer).to_lowercase(),
        "uset": opts.uset.spec(),
        "layers": records,
    });
    model.set_metadata(METADATA_KEY, &record.to_string());
    model.save(&args.output)?;
    for r in &records {
        println!(
            "{:<40} {:>2}-bit {:<12} error {:.4}",
            r.name, r.bits, r.quantizer, r.l2_error
        );
    }
    println!(
        "wrote {} ({} layers quantized)",
        args.output.display(),
        records.len()
    );
    Ok(())
}
