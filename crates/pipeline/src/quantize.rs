//! The quantization pipeline: fold batch norms → search every layer's codebook → (with
//! calibration data) fit activation quantizers → reconstruct block by block → one
//! [`QuantizedModel`]: the model to write and its typed [`QuantizedRecord`].

use subsetq_core::{power_of_two_terms, ActivationQuantizer, Codebook, UniversalSet};
use subsetq_engine::reconstruct::Samples;
use subsetq_engine::reconstruct::{reconstruct_model, run_samples, BlockReport, LayerQuantizer};
use subsetq_engine::{Backend, Engine, Plan};
use subsetq_onnx::{activation_scale_name, fold_batch_norm, FoldReport, Model, WeightLayer};

use crate::error::{Context, PipelineError, Result};
use crate::mixed::{allocate, bits_of, choose_at};
use crate::options::{Granularity, QuantizeOptions, WeightForm};
use crate::progress::{report, OnProgress};
use crate::record::{
    ActivationRecord, BlockRecord, LayerRecord, QuantizedRecord, ReconstructionRecord,
    MAX_LEVEL_TERMS, METADATA_KEY, RECORD_VERSION,
};
use crate::search::choose;
use crate::{policy, weight_layers};

/// A quantized model and what was done to it.
pub struct QuantizedModel {
    /// The model with folded batch norms and quantized weights as float32 initializers, the
    /// record in its metadata (what engines run; see [`QuantizedModel::written`]).
    pub model: Model,
    /// How [`QuantizedModel::save`] stores the weights.
    pub weights: WeightForm,
    /// The record (also in `model`'s metadata).
    pub record: QuantizedRecord,
    /// Reconstructed blocks with their timings (empty without calibration data).
    pub blocks: Vec<BlockReport>,
    /// Every weight layer's quantizer as searched, before reconstruction, in graph order
    /// (the learned ones are named in `blocks`).
    pub searched: Vec<LayerQuantizer>,
}

/// The float model the quantizers are searched on and reconstruction matches: constants folded
/// into initializers (weights in compact form, or computed by constant nodes), a batch size
/// fixed in the graph made free where that computes the same per sample (else the engine runs
/// chunks of it), batch norms folded into the conv / gemm before them. `source` names the model
/// in errors.
pub fn float_to_quantize(model: &Model, source: &str) -> Result<(Model, FoldReport)> {
    let model = model.fold_constants().context_with(|| source.to_string())?;
    let relaxed = subsetq_engine::relax_batch(&model).context_with(|| source.to_string())?;
    let model = relaxed.as_ref().unwrap_or(&model);
    fold_batch_norm(model).context_with(|| format!("{source}: folding batch norms"))
}

/// Folds batch norms into their conv / gemm (so that the quantized weights are the ones a
/// runtime multiplies with; [`float_to_quantize`]), then quantizes every weight layer: `opts.quantizer` for the middle
/// layers, uniform at `first_last_bits` for the first and last ([`policy`]). With `calib`,
/// puts quantizers on activations (if `opts.abits` asks) and reconstructs the model block by
/// block on the calibration samples. `source` names the model in errors.
pub fn quantize(
    model: &Model,
    source: &str,
    opts: &QuantizeOptions,
    calib: Option<&Samples>,
    on_progress: OnProgress,
) -> Result<QuantizedModel> {
    let search = &opts.search;
    opts.check(calib.is_some())?;
    let (float, fold) = float_to_quantize(model, source)?;
    let mut model = float.clone();
    let layers = weight_layers(&model, source)?;
    let mut records = Vec::with_capacity(layers.len());
    let mut searched = Vec::with_capacity(layers.len());
    // Indices into `searched` of the layers reconstruction learns.
    let mut learnable = Vec::new();
    let mixed = match (&opts.mixed, calib) {
        (Some(m), Some(samples)) => Some(
            allocate(&float, &layers, opts, m, samples, on_progress)
                .context_with(|| format!("{source}: mixed precision"))?,
        ),
        _ => None,
    };
    for (i, layer) in layers.iter().enumerate() {
        report(on_progress, "search", i, layers.len(), &layer.name);
        let choice = match mixed.as_ref().and_then(|m| bits_of(m, &layer.name)) {
            Some(bits) => choose_at(layer, search, opts.quantizer, bits)?,
            None => choose(layer, search, opts.quantizer)?,
        };
        model
            .set_initializer_f32(&layer.name, &choice.dequantized())
            .context_with(|| format!("layer {}", layer.name))?;
        searched.push(LayerQuantizer {
            name: layer.name.clone(),
            shape: layer.shape.clone(),
            out_axis: layer.out_axis,
            weight: layer.data.clone(),
            scales: choice.channel_scales.clone(),
            codebook: choice.codebook.clone(),
        });
        if policy::is_learned(layer.role) {
            learnable.push(searched.len() - 1);
        }
        let calpha =
            (search.granularity == Granularity::Channel).then(|| choice.relative_channel_scales());
        let (codes, zeros) = encode(&choice.x, &choice.codebook, choice.bits)?;
        let (level_top, level_terms) = match level_terms(&choice.codebook.levels, &search.uset) {
            Some((top, terms)) => (top, Some(terms)),
            None => (1.0, None),
        };
        records.push(LayerRecord {
            name: layer.name.clone(),
            bits: choice.bits,
            quantizer: choice.quantizer.to_string(),
            l2_error: choice.codebook.l2_error(&choice.magnitudes),
            level_terms,
            level_top,
            levels: choice.codebook.levels,
            alpha: choice.codebook.alpha,
            scale: choice.scale,
            calpha,
            shape: layer.shape.clone(),
            out_axis: layer.out_axis,
            channel_scales: choice.channel_scales,
            exact_zeros: zeros.len(),
            codes,
            zeros,
        });
    }
    report(on_progress, "search", layers.len(), layers.len(), "");
    let backend = opts.recon.backend;
    let activations = match (opts.abits, calib) {
        (Some(bits), Some(samples)) => {
            quantize_activations(&mut model, &layers, samples, bits, backend, on_progress)
                .context_with(|| format!("{source}: activation quantization"))?
        }
        _ => Vec::new(),
    };
    // Mixed precision learns at the rate of its narrowest layers.
    let narrowest = mixed
        .as_ref()
        .and_then(|m| m.layers.iter().map(|c| c.bits).min())
        .unwrap_or(search.bits);
    let settings = opts.recon.settings(narrowest);
    let mut blocks = Vec::new();
    if let Some(samples) = calib {
        let learnable: Vec<LayerQuantizer> =
            learnable.iter().map(|&i| searched[i].clone()).collect();
        blocks = reconstruct_model(&float, &mut model, &learnable, samples, &settings, |p| {
            let stage = format!("block {}/{}", p.block + 1, p.blocks);
            report(
                on_progress,
                &stage,
                p.step,
                p.steps,
                &format!("loss {:.4e}", p.loss),
            );
        })
        .context_with(|| format!("{source}: reconstruction"))?;
        for b in &blocks {
            for (name, learned) in b.layers.iter().zip(&b.learned) {
                let (Some(r), Some(l)) = (
                    records.iter_mut().find(|r| &r.name == name),
                    learnable.iter().find(|l| &l.name == name),
                ) else {
                    continue;
                };
                let calpha = &learned.calpha;
                // Learned on top of the per-channel normalisers, if any.
                r.calpha = Some(match &r.calpha {
                    Some(relative) => relative.iter().zip(calpha).map(|(a, b)| a * b).collect(),
                    None => calpha.clone(),
                });
                // The codes and multipliers of the learned weights m_c · calpha_c · Q(x · clv).
                (r.codes, r.zeros) = encode(&l.rounded_input(learned)?, &l.codebook, r.bits)?;
                r.exact_zeros = r.zeros.len();
                r.channel_scales = l.channel_multipliers(learned);
            }
        }
    }
    let record = QuantizedRecord {
        version: RECORD_VERSION,
        bits: search.bits,
        first_last_bits: search.first_last_bits,
        quantizer: opts.quantizer.name().to_string(),
        granularity: search.granularity.name().to_string(),
        uset: search.uset.spec().to_string(),
        folded_batch_norms: fold.folded.len(),
        reconstruction: calib.map(|samples| ReconstructionRecord {
            calibration_samples: samples.n,
            iters: settings.iters,
            batch: settings.batch,
            lr: settings.lr,
            seed: settings.seed,
            blocks: blocks
                .iter()
                .map(|b| BlockRecord {
                    input: b.input.clone(),
                    output: b.output.clone(),
                    layers: b.layers.clone(),
                    loss_before: b.loss_before,
                    loss_after: b.loss_after,
                })
                .collect(),
        }),
        layers: records,
        activations: activations
            .iter()
            .map(|(tensor, q)| ActivationRecord {
                tensor: tensor.clone(),
                bits: q.bits,
                zero_point: q.zero_point,
                scale: model
                    .initializer_f32(&activation_scale_name(tensor))
                    .ok()
                    .flatten()
                    .and_then(|(_, v)| v.first().copied()),
            })
            .collect(),
        mixed,
        cost: None,
    };
    model.set_metadata(METADATA_KEY, &record.to_json()?);
    let mut quantized = QuantizedModel {
        model,
        weights: opts.weights,
        record,
        blocks,
        searched,
    };
    if let Some(pre) = &opts.preprocess {
        quantized.set_preprocess(pre);
    }
    Ok(quantized)
}

/// The levels as sums of powers of two once multiplied by a common `top` (1, or a point of the
/// universal set: SQ's subsets are normalised by their largest point), with the exponents of
/// each; `None` when no such `top` makes every level a sum of at most [`MAX_LEVEL_TERMS`].
pub(crate) fn level_terms(levels: &[f64], uset: &UniversalSet) -> Option<(f64, Vec<Vec<i32>>)> {
    // The normalisation's division is rounded: snap to a fine dyadic grid before splitting.
    const GRID: f64 = (1u64 << 40) as f64;
    let terms_at = |top: f64| -> Option<Vec<Vec<i32>>> {
        levels
            .iter()
            .map(|&l| {
                let v = l * top;
                let snapped = (v * GRID).round() / GRID;
                if (snapped - v).abs() > 1e-9 * top {
                    return None;
                }
                power_of_two_terms(snapped, MAX_LEVEL_TERMS)
            })
            .collect()
    };
    std::iter::once(1.0)
        .chain(uset.sorted().iter().rev().copied().filter(|&p| p > 0.0))
        .find_map(|top| terms_at(top).map(|terms| (top, terms)))
}

/// The codes of `x` (sign bit above the level index) and the positions of exact zeros that
/// the codes cannot hold (0 is not a level).
fn encode(x: &[f32], codebook: &Codebook, bits: u32) -> Result<(Vec<u8>, Vec<usize>)> {
    let codes = codebook.encode(x, bits)?;
    let zero_is_level = codebook.levels.first() == Some(&0.0);
    let zeros = if zero_is_level {
        Vec::new()
    } else {
        (0..x.len()).filter(|&i| x[i] == 0.0).collect()
    };
    Ok((codes, zeros))
}

/// Puts a uniform quantizer on the data input of every weight layer but the first (bits from
/// [`policy::input_activation_bits`]), fitted by least squared error to the values `model`
/// computes on the calibration samples.
fn quantize_activations(
    model: &mut Model,
    layers: &[WeightLayer],
    samples: &Samples,
    bits: u32,
    backend: Backend,
    on_progress: OnProgress,
) -> Result<Vec<(String, ActivationQuantizer)>> {
    let graph = model.graph()?;
    let mut tensors: Vec<(String, u32)> = Vec::new();
    for layer in layers {
        let Some(b) = policy::input_activation_bits(layer.role, bits) else {
            continue;
        };
        let input = graph
            .node
            .iter()
            .find(|n| n.input.get(1) == Some(&layer.name))
            .and_then(|n| n.input.first())
            .ok_or_else(|| {
                PipelineError::invalid(format!("layer {}: no data input", layer.name))
            })?;
        if !tensors.iter().any(|(t, _)| t == input) {
            tensors.push((input.clone(), b));
        }
    }
    let engine = Engine::new(Plan::from_model(model)?, &backend.device()?)?;
    let input = engine.plan().single_input()?.to_string();
    let mut out = Vec::with_capacity(tensors.len());
    for (i, (tensor, b)) in tensors.iter().enumerate() {
        report(on_progress, "calibrate", i, tensors.len(), tensor);
        let values = run_samples(&engine, &input, samples, tensor, 64)?;
        let q = ActivationQuantizer::fit(&values.data, *b).ok_or_else(|| {
            PipelineError::invalid(format!(
                "activation {tensor}: no finite, non-constant values to fit a quantizer to"
            ))
        })?;
        out.push((tensor.clone(), q));
    }
    for (tensor, q) in &out {
        model.quantize_activation(tensor, q.scale, q.lo(), q.hi())?;
    }
    Ok(out)
}
