//! Per-layer search: SQ next to the baselines on the same bits, one report row per layer.

use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;
use subsetq_core::baselines::{lloyd_max, per_channel_error, Baseline};
use subsetq_core::{
    levels_for_bits, normalize, normalize_channels, search_prepared, Channels, Codebook,
    Magnitudes, Method, UniversalSet,
};
use subsetq_onnx::WeightLayer;

/// What to search and how.
pub struct SearchOptions {
    pub bits: u32,
    pub first_last_bits: u32,
    pub uset: UniversalSet,
    pub method: Method,
    pub granularity: Granularity,
}

/// What a layer's weights are divided by before its codebook is fitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Granularity {
    /// One scale per layer, max|w| (the paper).
    Tensor,
    /// One scale per output channel, that channel's max|w|; one codebook (subset and α) per
    /// layer, fitted to all channels' normalised weights together.
    Channel,
}

impl Granularity {
    pub fn name(self) -> &'static str {
        match self {
            Self::Tensor => "tensor",
            Self::Channel => "channel",
        }
    }
}

/// One baseline's error, per tensor and per output channel.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineError {
    pub name: &'static str,
    pub per_tensor: f64,
    pub per_channel: f64,
}

/// The report of one layer.
#[derive(Debug, Clone, Serialize)]
pub struct LayerReport {
    /// The weight initializer's name.
    pub name: String,
    pub node: String,
    pub op_type: String,
    pub shape: Vec<usize>,
    pub numel: usize,
    pub role: &'static str,
    pub bits: u32,
    /// "sq" for searched layers, "uniform" for first / last layers kept at higher precision.
    pub quantizer: &'static str,
    pub subset: Vec<f64>,
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
    pub fitted: usize,
}

impl LayerReport {
    pub fn baseline(&self, name: &str) -> Option<&BaselineError> {
        self.baselines.iter().find(|b| b.name == name)
    }
}

fn role_name(layer: &WeightLayer) -> &'static str {
    match (layer.role.is_first(), layer.role.is_last()) {
        (true, true) => "only",
        (true, false) => "first",
        (false, true) => "last",
        (false, false) => "middle",
    }
}

/// What a layer is quantized with, and everything needed to report on it.
pub struct Choice {
    pub bits: u32,
    /// "sq", or a baseline's name; first / last layers are "uniform".
    pub quantizer: &'static str,
    pub codebook: Codebook,
    /// max|w| of the layer.
    pub scale: f32,
    /// max|w| of each output channel's normaliser (all `scale` for per-tensor scales).
    pub channel_scales: Vec<f32>,
    pub channels: Channels,
    /// x = w / its normaliser.
    pub x: Vec<f32>,
    pub magnitudes: Magnitudes,
    pub candidates: usize,
    pub fitted: usize,
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

    /// Per-channel scales relative to the layer's: a weight is ±scale · relative[c] · α · level.
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

/// Chooses one layer's codebook: first / last layers uniform at `first_last_bits`, the others
/// SQ (or the baseline `baseline`, when given) at `bits`.
pub fn choose(
    layer: &WeightLayer,
    opts: &SearchOptions,
    baseline: Option<Baseline>,
) -> Result<Choice> {
    let keep_uniform = layer.role.is_first() || layer.role.is_last();
    let bits = if keep_uniform {
        opts.first_last_bits
    } else {
        opts.bits
    };
    let what = || format!("layer {} (node {})", layer.name, layer.node);
    let channels =
        Channels::new(&layer.shape, layer.out_axis, layer.data.len()).with_context(what)?;
    let (channel_scales, x) = match opts.granularity {
        Granularity::Tensor => {
            let (scale, x) = normalize(&layer.data).with_context(what)?;
            (vec![scale; channels.count], x)
        }
        Granularity::Channel => normalize_channels(&layer.data, channels).with_context(what)?,
    };
    let scale = channel_scales.iter().fold(0f32, |m, v| m.max(*v));
    let magnitudes = Magnitudes::new(&x);
    let started = Instant::now();
    let (quantizer, codebook, candidates, fitted) = match (keep_uniform, baseline) {
        (true, _) => (
            "uniform",
            Baseline::UniformMinMax
                .fit(&magnitudes, bits)
                .with_context(what)?,
            0,
            0,
        ),
        (false, Some(b)) => (b.name(), b.fit(&magnitudes, bits).with_context(what)?, 0, 0),
        (false, None) => {
            let c = search_prepared(&x, &magnitudes, &opts.uset, bits, opts.method)
                .with_context(what)?;
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
    } = choose(layer, opts, None)?;
    let l2_error = chosen.l2_error(&m);
    let mut baselines = Vec::new();
    let mut fitted_baselines = Vec::new();
    for b in Baseline::ALL {
        let cb = b.fit(&m, bits).with_context(what)?;
        let per_tensor = cb.l2_error(&m);
        fitted_baselines.push(cb);
        let per_channel =
            per_channel_error(&x, &layer.shape, layer.out_axis, b, bits).with_context(what)?;
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
        role: role_name(layer),
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

/// How SQ compares with one baseline over the searched layers.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub baseline: &'static str,
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
