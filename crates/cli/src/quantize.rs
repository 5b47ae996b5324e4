//! `subsetq quantize`: folds batch norms, searches every layer's codebook, optionally quantizes
//! activations and reconstructs block by block on calibration data, then writes a model whose
//! weights are the quantized values, with the codebooks and scales in its metadata.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use subsetq_core::baselines::Baseline;
use subsetq_core::ActivationQuantizer;
use subsetq_data::LabelSource;
use subsetq_engine::reconstruct::run_samples;
use subsetq_engine::reconstruct::{
    reconstruct_model, BlockReport, LayerQuantizer, Samples, Settings,
};
use subsetq_engine::{Backend, Engine, Plan};
use subsetq_onnx::{activation_scale_name, fold_batch_norm, Model, WeightLayer};

use crate::analysis::{choose, Granularity, SearchOptions};
use crate::eval::{load_data, PreprocessArgs};
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
    /// Weight scales: one per output channel (one codebook per layer still), or one per layer
    /// (the paper).
    #[arg(long, value_enum, default_value_t = Granularity::Channel)]
    granularity: Granularity,
    #[command(flatten)]
    common: CommonArgs,
    /// Calibration images (IDX file, image folder or pattern; labels unused), preprocessed as
    /// the model's sidecar says. Turns on block reconstruction.
    #[arg(long)]
    calib: Option<PathBuf>,
    /// Quantize activations too: the input of every weight layer but the first, uniform
    /// asymmetric at this many bits (the last layer's input at 8), step learned in
    /// reconstruction. Default: weights only, as in the paper. Needs --calib.
    #[arg(long, value_parser = clap::value_parser!(u32).range(2..=16))]
    abits: Option<u32>,
    #[command(flatten)]
    recon: ReconArgs,
}

/// Block reconstruction settings (shared with `bench accuracy`).
#[derive(clap::Args, Clone)]
pub struct ReconArgs {
    /// Calibration images used (the first N).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    pub calib_size: u64,
    /// Adam steps per block.
    #[arg(long, default_value_t = 500)]
    pub iters: usize,
    /// Calibration images per step.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
    pub recon_batch: u64,
    /// Peak learning rate (default: the paper's, 1e-4 at 4+ bits, 5e-4 below).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Seed of the calibration batch sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where reconstruction computes: cpu, or cuda (a build with `--features cuda`).
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
}

/// `--device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceArg {
    Cpu,
    Cuda,
}

impl From<DeviceArg> for Backend {
    fn from(d: DeviceArg) -> Backend {
        match d {
            DeviceArg::Cpu => Backend::Cpu,
            DeviceArg::Cuda => Backend::Cuda,
        }
    }
}

impl ReconArgs {
    pub fn settings(&self, bits: u32) -> Settings {
        Settings {
            iters: self.iters,
            batch: self.recon_batch as usize,
            lr: self.lr.unwrap_or(if bits >= 4 { 1e-4 } else { 5e-4 }),
            seed: self.seed,
            backend: self.device.into(),
        }
    }

    /// The first `--calib-size` images of `path`, preprocessed as `model`'s sidecar says.
    pub fn samples(&self, path: &Path, model: &Path) -> Result<Samples> {
        let pre = PreprocessArgs::default().resolve(model)?;
        let data = load_data(
            path,
            &pre,
            LabelSource::Unlabelled,
            Some(self.calib_size as usize),
        )?;
        Ok(Samples {
            shape: vec![data.channels, data.height, data.width],
            n: data.n,
            data: data.images,
        })
    }
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
    /// Per-output-channel scales (per-channel granularity or reconstruction): a weight is
    /// ±scale · calpha[c] · alpha · levels[i].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calpha: Option<Vec<f32>>,
}

/// A quantized model and what was done to it.
pub struct Quantized {
    /// The model with folded batch norms and quantized weights, the record in its metadata.
    pub model: Model,
    /// One entry per weight layer, in graph order.
    pub records: Vec<LayerRecord>,
    /// Batch norms folded into the layer before them.
    pub folded: usize,
    /// Reconstructed blocks (empty without calibration data).
    pub blocks: Vec<BlockReport>,
}

/// Folds batch norms into their conv / gemm (so that the quantized weights are the ones a
/// runtime multiplies with), then quantizes every weight layer: `quantizer` for the middle
/// layers, uniform at `opts.first_last_bits` for the first and last. With `recon`, puts
/// `abits`-bit quantizers on activations (if asked) and reconstructs the model block by block
/// on the calibration samples. `source` names the model in errors.
pub fn quantize_model(
    model: &Model,
    source: &Path,
    opts: &SearchOptions,
    quantizer: QuantizerArg,
    recon: Option<(&Samples, &Settings)>,
    abits: Option<u32>,
) -> Result<Quantized> {
    let (float, fold) = fold_batch_norm(model)
        .with_context(|| format!("{}: folding batch norms", source.display()))?;
    let mut model = float.clone();
    let layers = crate::weight_layers(&model, source)?;
    let bar = progress(layers.len(), "search");
    let mut records = Vec::with_capacity(layers.len());
    let mut learnable = Vec::new();
    for layer in &layers {
        bar.set_message(layer.name.clone());
        let choice = choose(layer, opts, quantizer.baseline())?;
        model
            .set_initializer_f32(&layer.name, &choice.dequantized())
            .with_context(|| format!("layer {}", layer.name))?;
        if !(layer.role.is_first() || layer.role.is_last()) {
            learnable.push(LayerQuantizer {
                name: layer.name.clone(),
                shape: layer.shape.clone(),
                out_axis: layer.out_axis,
                weight: layer.data.clone(),
                scales: choice.channel_scales.clone(),
                codebook: choice.codebook.clone(),
            });
        }
        let calpha =
            (opts.granularity == Granularity::Channel).then(|| choice.relative_channel_scales());
        records.push(LayerRecord {
            name: layer.name.clone(),
            bits: choice.bits,
            quantizer: choice.quantizer,
            l2_error: choice.codebook.l2_error(&choice.magnitudes),
            levels: choice.codebook.levels,
            alpha: choice.codebook.alpha,
            scale: choice.scale,
            calpha,
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    let activations = match abits {
        None => Vec::new(),
        Some(bits) => {
            let Some((samples, settings)) = recon else {
                bail!("--abits needs --calib: activation ranges come from calibration data");
            };
            quantize_activations(&mut model, &layers, samples, bits, settings.backend)
                .with_context(|| format!("{}: activation quantization", source.display()))?
        }
    };
    let mut blocks = Vec::new();
    if let Some((samples, settings)) = recon {
        let bar = progress(settings.iters, "block");
        blocks = reconstruct_model(&float, &mut model, &learnable, samples, settings, |p| {
            if p.step == 1 {
                bar.reset();
                bar.set_prefix(format!("block {}/{}", p.block + 1, p.blocks));
            }
            bar.set_position(p.step as u64);
            bar.set_message(format!("loss {:.4e}", p.loss));
        })
        .with_context(|| format!("{}: reconstruction", source.display()))?;
        bar.finish_and_clear();
        for b in &blocks {
            for (name, calpha) in b.layers.iter().zip(&b.calpha) {
                if let Some(r) = records.iter_mut().find(|r| &r.name == name) {
                    // Learned on top of the per-channel normalisers, if any.
                    r.calpha = Some(match &r.calpha {
                        Some(relative) => relative.iter().zip(calpha).map(|(a, b)| a * b).collect(),
                        None => calpha.clone(),
                    });
                }
            }
        }
    }
    let record = serde_json::json!({
        "version": 1,
        "bits": opts.bits,
        "first_last_bits": opts.first_last_bits,
        "quantizer": quantizer.name(),
        "granularity": opts.granularity.name(),
        "uset": opts.uset.spec(),
        "folded_batch_norms": fold.folded.len(),
        "reconstruction": recon.map(|(samples, s)| serde_json::json!({
            "calibration_samples": samples.n,
            "iters": s.iters,
            "batch": s.batch,
            "lr": s.lr,
            "seed": s.seed,
            "blocks": blocks.iter().map(|b| serde_json::json!({
                "input": b.input,
                "output": b.output,
                "layers": b.layers,
                "loss_before": b.loss_before,
                "loss_after": b.loss_after,
            })).collect::<Vec<_>>(),
        })),
        "layers": records,
        "activations": activations.iter().map(|(tensor, q)| serde_json::json!({
            "tensor": tensor,
            "bits": q.bits,
            "zero_point": q.zero_point,
            "scale": model
                .initializer_f32(&activation_scale_name(tensor))
                .ok()
                .flatten()
                .and_then(|(_, v)| v.first().copied()),
        })).collect::<Vec<_>>(),
    });
    model.set_metadata(METADATA_KEY, &record.to_string());
    Ok(Quantized {
        model,
        records,
        folded: fold.folded.len(),
        blocks,
    })
}

/// Puts a uniform quantizer on the data input of every weight layer but the first (`bits`;
/// the last layer's input at 8 bits, as the paper keeps the last layer at 8), fitted by least
/// squared error to the values `model` computes on the calibration samples.
fn quantize_activations(
    model: &mut Model,
    layers: &[WeightLayer],
    samples: &Samples,
    bits: u32,
    backend: Backend,
) -> Result<Vec<(String, ActivationQuantizer)>> {
    let graph = model.graph()?;
    let mut tensors: Vec<(String, u32)> = Vec::new();
    for layer in layers.iter().filter(|l| !l.role.is_first()) {
        let input = graph
            .node
            .iter()
            .find(|n| n.input.get(1) == Some(&layer.name))
            .and_then(|n| n.input.first())
            .with_context(|| format!("layer {}: no data input", layer.name))?;
        let b = if layer.role.is_last() {
            bits.max(8)
        } else {
            bits
        };
        if !tensors.iter().any(|(t, _)| t == input) {
            tensors.push((input.clone(), b));
        }
    }
    let engine = Engine::new(Plan::from_model(model)?, &backend.device()?)?;
    let input = engine.plan().single_input()?.to_string();
    let mut out = Vec::with_capacity(tensors.len());
    for (tensor, b) in tensors {
        let values = run_samples(&engine, &input, samples, &tensor, 64)?;
        let q = ActivationQuantizer::fit(&values.data, b).with_context(|| {
            format!("activation {tensor}: no finite, non-constant values to fit a quantizer to")
        })?;
        out.push((tensor, q));
    }
    for (tensor, q) in &out {
        model.quantize_activation(tensor, q.scale, q.lo(), q.hi())?;
    }
    Ok(out)
}

pub fn run(args: &QuantizeArgs) -> Result<()> {
    let opts = SearchOptions {
        granularity: args.granularity,
        ..args.common.options(args.bits)?
    };
    if args.abits.is_some() && args.calib.is_none() {
        bail!("--abits needs --calib: activation ranges come from calibration data");
    }
    output::refuse_to_overwrite_input(&args.output, &args.model)?;
    if args.calib.is_some() {
        // Before any work: a device that cannot run is an error now, not after the search.
        Backend::from(args.recon.device).device()?;
    }
    let model = load_model(&args.model)?;
    let samples = match &args.calib {
        Some(path) => Some(args.recon.samples(path, &args.model)?),
        None => None,
    };
    let settings = args.recon.settings(args.bits);
    let q = quantize_model(
        &model,
        &args.model,
        &opts,
        args.quantizer,
        samples.as_ref().map(|s| (s, &settings)),
        args.abits,
    )?;
    q.model.save(&args.output)?;
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
