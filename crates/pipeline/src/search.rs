//! Per-layer search: the codebook a layer gets ([`choose`]), and SQ next to the baselines on
//! the same bits with the Lloyd-Max floor ([`analyze_layer`]), one report row per layer.

use std::time::Instant;

use serde::Serialize;
use subsetq_core::baselines::{lloyd_max, per_channel_error, Baseline};
use subsetq_core::{
    levels_for_bits, normalize, normalize_channels, search_prepared, Channels, Codebook, Magnitudes,
};
use subsetq_onnx::{Model, WeightLayer};

use crate::error::{Context, Result};
use crate::options::{Granularity, Quantizer, SearchOptions};
use crate::progress::{report, OnProgress};
use crate::{policy, weight_layers};

/// One baseline's error, per tensor and per output channel.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineError {
    /// The baseline's name.
    pub name: &'static str,
    /// Its error with one scale for the layer.
    pub per_tensor: f64,
    /// Its error with one scale per output channel.
    pub per_channel: f64,
}

/// The report of one layer.
#[derive(Debug, Clone, Serialize)]
pub struct LayerReport {
    /// The weight initializer's name.
    pub name: String,
    /// The node that uses it.
    pub node: String,
    /// `Conv`, `Gemm` or `MatMul`.
    pub op_type: String,
    /// The weight's shape.
    pub shape: Vec<usize>,
    /// Number of weights.
    pub numel: usize,
    /// `first`, `middle`, `last` or `only`.
    pub role: &'static str,
    /// Bits of the layer's codes.
    pub bits: u32,
    /// "sq" for searched layers, "uniform" for first / last layers kept at higher precision.
    pub quantizer: &'static str,
    /// The chosen magnitudes (normalised, ascending).
    pub subset: Vec<f64>,
    /// The fitted scale α.
    pub alpha: f64,
    /// ‖|x| − |Q(x)|‖₂ on x = w / max|w|.
    pub l2_error: f64,
    /// max|w|: quantized weights are max|w| · α · ±subset\[i\].
    pub scale: f32,
    /// Lloyd-Max error with the same number of magnitudes (the floor for any codebook).
    pub lloyd_max_error: f64,
    /// Baselines at the same bits as this layer.
    pub baselines: Vec<BaselineError>,
    /// Seconds spent in the subset search of this layer.
    pub search_seconds: f64,
    /// Subsets the search considered, and how many it fitted to the end (the others were
    /// proved unable to win).
    pub candidates: usize,
    /// Subsets fitted to the end.
    pub fitted: usize,
}

impl LayerReport {
    /// The error of the baseline called `name`.
    pub fn baseline(&self, name: &str) -> Option<&BaselineError> {
        self.baselines.iter().find(|b| b.name == name)
    }
}

/// What a layer is quantized with, and everything needed to report on it.
pub struct Choice {
    /// Bits of the layer's codes.
    pub bits: u32,
    /// "sq", or a baseline's name; first / last layers are "uniform".
    pub quantizer: &'static str,
    /// The magnitudes and α.
    pub codebook: Codebook,
    /// max|w| of the layer.
    pub scale: f32,
    /// max|w| of each output channel's normaliser (all `scale` for per-tensor scales).
    pub channel_scales: Vec<f32>,
    /// How the weights split into output channels.
    pub channels: Channels,
    /// x = w / its normaliser.
    pub x: Vec<f32>,
    /// |x|, sorted with prefix sums.
    pub magnitudes: Magnitudes,
    /// Subsets the search considered.
    pub candidates: usize,
    /// Subsets fitted to the end.
    pub fitted: usize,
    /// Seconds the fit took.
    pub seconds: f64,
}

impl Choice {
    /// The dequantized weights: m_c · Q(x).
    pub fn dequantized(&self) -> Vec<f32> {
        self.x
            .iter()
            .enumerate()
            .map(|(i, v)| {
                self.channel_scales[self.channels.of(i)] * self.codebook.quantize_value(*v)
            })
            .collect()
    }

    /// Per-channel scales relative to the layer's: a weight is ±scale · relative\[c\] · α · level.
    pub fn relative_channel_scales(&self) -> Vec<f32> {
        self.channel_scales
            .iter()
            .map(|m| {
                if self.scale > 0.0 {
                    m / self.scale
                } else {
                    1.0
                }
            })
            .collect()
    }
}

/// Chooses one layer's codebook: first / last layers uniform at `first_last_bits` (see
/// [`policy`]), the others `quantizer` at `bits`.
pub fn choose(layer: &WeightLayer, opts: &SearchOptions, quantizer: Quantizer) -> Result<Choice> {
    let keep_uniform = policy::keeps_high_precision(layer.role);
    let bits = policy::weight_bits(layer.role, opts.bits, opts.first_last_bits);
    let what = || format!("layer {} (node {})", layer.name, layer.node);
    let channels =
        Channels::new(&layer.shape, layer.out_axis, layer.data.len()).context_with(what)?;
    let (channel_scales, x) = match opts.granularity {
        Granularity::Tensor => {
            let (scale, x) = normalize(&layer.data).context_with(what)?;
            (vec![scale; channels.count], x)
        }
        Granularity::Channel => normalize_channels(&layer.data, channels).context_with(what)?,
    };
    let scale = channel_scales.iter().fold(0f32, |m, v| m.max(*v));
    let magnitudes = Magnitudes::new(&x);
    let started = Instant::now();
    let (quantizer, codebook, candidates, fitted) = match (keep_uniform, quantizer.baseline()) {
        (true, _) => (
            "uniform",
            Baseline::UniformMinMax
                .fit(&magnitudes, bits)
                .context_with(what)?,
            0,
            0,
        ),
        (false, Some(b)) => (b.name(), b.fit(&magnitudes, bits).context_with(what)?, 0, 0),
        (false, None) => {
            let c = search_prepared(&x, &magnitudes, &opts.uset, bits, opts.method)
                .context_with(what)?;
            ("sq", c.codebook(), c.candidates, c.fitted)
        }
    };
    Ok(Choice {
        bits,
        quantizer,
        codebook,
        scale,
        channel_scales,
        channels,
        x,
        magnitudes,
        candidates,
        fitted,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Searches one layer and measures the baselines on it.
pub fn analyze_layer(layer: &WeightLayer, opts: &SearchOptions) -> Result<LayerReport> {
    let what = || format!("layer {} (node {})", layer.name, layer.node);
    let Choice {
        bits,
        quantizer,
        codebook: chosen,
        scale,
        x,
        magnitudes: m,
        candidates,
        fitted,
        seconds: search_seconds,
        ..
    } = choose(layer, opts, Quantizer::Sq)?;
    let l2_error = chosen.l2_error(&m);
    let mut baselines = Vec::new();
    let mut fitted_baselines = Vec::new();
    for b in Baseline::ALL {
        let cb = b.fit(&m, bits).context_with(what)?;
        let per_tensor = cb.l2_error(&m);
        fitted_baselines.push(cb);
        let per_channel =
            per_channel_error(&x, &layer.shape, layer.out_axis, b, bits).context_with(what)?;
        baselines.push(BaselineError {
            name: b.name(),
            per_tensor,
            per_channel,
        });
    }
    let mut starts: Vec<&Codebook> = fitted_baselines.iter().collect();
    starts.push(&chosen);
    let lloyd_max_error = lloyd_max(&m, levels_for_bits(bits)?, &starts).l2_error(&m);
    Ok(LayerReport {
        name: layer.name.clone(),
        node: layer.node.clone(),
        op_type: layer.op_type.clone(),
        shape: layer.shape.clone(),
        numel: layer.data.len(),
        role: policy::role_name(layer.role),
        bits,
        quantizer,
        subset: chosen.levels.clone(),
        alpha: chosen.alpha,
        l2_error,
        scale,
        lloyd_max_error,
        baselines,
        search_seconds,
        candidates,
        fitted,
    })
}

/// Searches every weight layer of `model` (batch norms not folded) and measures the
/// baselines on it, reporting progress as stage `search`. `source` names the model in errors.
pub fn search_model(
    model: &Model,
    source: &str,
    opts: &SearchOptions,
    on_progress: OnProgress,
) -> Result<Vec<LayerReport>> {
    // Weights written as constant nodes (or in compact form) become initializers first.
    let folded = model.fold_constants().context_with(|| source.to_string())?;
    let layers = weight_layers(&folded, source)?;
    let mut reports = Vec::with_capacity(layers.len());
    for (i, layer) in layers.iter().enumerate() {
        report(on_progress, "search", i, layers.len(), &layer.name);
        reports.push(analyze_layer(layer, opts)?);
    }
    report(on_progress, "search", layers.len(), layers.len(), "");
    Ok(reports)
}

/// How SQ compares with one baseline over the searched layers.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The baseline's name.
    pub baseline: &'static str,
    /// Layers compared (the SQ layers).
    pub layers: usize,
    /// Layers where SQ's error is strictly lower than the baseline's per-tensor error.
    pub sq_wins: usize,
    /// Mean over layers of SQ error / baseline per-tensor error.
    pub mean_error_ratio: f64,
    /// Layers where SQ per tensor beats the baseline per channel.
    pub sq_wins_vs_per_channel: usize,
    /// Mean of SQ error / baseline per-channel error.
    pub mean_error_ratio_vs_per_channel: f64,
}

/// SQ against each baseline, over the layers SQ searched.
pub fn compare(reports: &[LayerReport]) -> Vec<Comparison> {
    let sq: Vec<&LayerReport> = reports.iter().filter(|r| r.quantizer == "sq").collect();
    Baseline::ALL
        .iter()
        .map(|b| {
            let pairs: Vec<(f64, f64, f64)> = sq
                .iter()
                .filter_map(|r| {
                    r.baseline(b.name())
                        .map(|e| (r.l2_error, e.per_tensor, e.per_channel))
                })
                .collect();
            let n = pairs.len().max(1) as f64;
            let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 1.0 };
            Comparison {
                baseline: b.name(),
                layers: pairs.len(),
                sq_wins: pairs.iter().filter(|p| p.0 < p.1).count(),
                mean_error_ratio: pairs.iter().map(|p| ratio(p.0, p.1)).sum::<f64>() / n,
                sq_wins_vs_per_channel: pairs.iter().filter(|p| p.0 < p.2).count(),
                mean_error_ratio_vs_per_channel: pairs.iter().map(|p| ratio(p.0, p.2)).sum::<f64>()
                    / n,
            }
        })
        .collect()
}
