//! What the pipeline is asked to do: typed options, with the paper's defaults.

use std::str::FromStr;

use subsetq_core::baselines::Baseline;
use subsetq_core::{Method, UniversalSet};
use subsetq_data::Preprocess;
use subsetq_engine::reconstruct::paper_lr;
use subsetq_engine::Backend;

use crate::error::{PipelineError, Result};
use crate::mixed::MixedOptions;

/// The quantizer of every weight layer but the first and last (see [`crate::policy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Quantizer {
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

impl Quantizer {
    /// Every quantizer, SQ first.
    pub const ALL: [Quantizer; 5] = [
        Self::Sq,
        Self::Uniform,
        Self::UniformMse,
        Self::Pot,
        Self::Apot,
    ];

    /// The name used on the command line, in Python and in records.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sq => "sq",
            Self::Uniform => "uniform",
            Self::UniformMse => "uniform-mse",
            Self::Pot => "pot",
            Self::Apot => "apot",
        }
    }

    /// The core's baseline behind this quantizer; `None` for SQ, which is searched.
    pub fn baseline(self) -> Option<Baseline> {
        match self {
            Self::Sq => None,
            Self::Uniform => Some(Baseline::UniformMinMax),
            Self::UniformMse => Some(Baseline::UniformMse),
            Self::Pot => Some(Baseline::Pot),
            Self::Apot => Some(Baseline::Apot),
        }
    }
}

impl FromStr for Quantizer {
    type Err = PipelineError;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|q| q.name() == s)
            .ok_or_else(|| {
                PipelineError::invalid(format!(
                    "unknown quantizer {s:?}; expected one of {}",
                    Self::ALL.map(Quantizer::name).join(", ")
                ))
            })
    }
}

/// What a layer's weights are divided by before its codebook is fitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Granularity {
    /// One scale per layer, max|w| (the paper).
    Tensor,
    /// One scale per output channel, that channel's max|w|; one codebook (subset and α) per
    /// layer, fitted to all channels' normalised weights together.
    Channel,
}

impl Granularity {
    /// The name used on the command line and in records.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tensor => "tensor",
            Self::Channel => "channel",
        }
    }
}

impl FromStr for Granularity {
    type Err = PipelineError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "tensor" => Ok(Self::Tensor),
            "channel" => Ok(Self::Channel),
            _ => Err(PipelineError::invalid(format!(
                "unknown granularity {s:?}; expected tensor or channel"
            ))),
        }
    }
}

/// What to search and how.
#[derive(Debug, Clone)]
pub struct SearchOptions {
    /// Bits of the middle layers (sign + index), 2..=8.
    pub bits: u32,
    /// Bits of the first and last weight layers, kept uniform (the paper: 8).
    pub first_last_bits: u32,
    /// The universal set SQ picks its levels from.
    pub uset: UniversalSet,
    /// How the subset is searched.
    pub method: Method,
    /// One scale per layer or per output channel.
    pub granularity: Granularity,
}

impl SearchOptions {
    /// The paper's set and search at `bits`, first and last layers at 8 bits, per-channel
    /// scales.
    pub fn new(bits: u32) -> Self {
        Self {
            bits,
            first_last_bits: 8,
            uset: UniversalSet::paper(),
            method: Method::Fast,
            granularity: Granularity::Channel,
        }
    }
}

/// How the written model stores its quantized weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum WeightForm {
    /// The b-bit codes (UINT4 at ≤ 4 bits, UINT8 above or in models below opset 13), a
    /// signed table and per-channel scales, decoded by standard operators: the small model.
    Codes,
    /// The quantized values as float32 initializers.
    Float,
}

impl WeightForm {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Codes => "codes",
            Self::Float => "float",
        }
    }
}

impl FromStr for WeightForm {
    type Err = PipelineError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "codes" => Ok(Self::Codes),
            "float" => Ok(Self::Float),
            _ => Err(PipelineError::invalid(format!(
                "unknown weight form {s:?}; expected codes or float"
            ))),
        }
    }
}

/// Block reconstruction settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ReconOptions {
    /// Calibration images used (the first N).
    pub calib_size: usize,
    /// Adam steps per block.
    pub iters: usize,
    /// Calibration images per step.
    pub batch: usize,
    /// Peak learning rate; `None`: the paper's for the bits ([`paper_lr`]).
    pub lr: Option<f64>,
    /// Seed of the calibration batch sampling.
    pub seed: u64,
    /// Where reconstruction computes.
    pub backend: Backend,
}

impl Default for ReconOptions {
    /// 256 images, 500 steps of 32 (the paper: 1024 images, 20k steps on a GPU), the paper's
    /// learning rate, seed 0, CPU.
    fn default() -> Self {
        Self {
            calib_size: 256,
            iters: 500,
            batch: 32,
            lr: None,
            seed: 0,
            backend: Backend::Cpu,
        }
    }
}

impl ReconOptions {
    /// The engine's settings for `bits`-bit layers.
    pub fn settings(&self, bits: u32) -> subsetq_engine::reconstruct::Settings {
        subsetq_engine::reconstruct::Settings {
            iters: self.iters,
            batch: self.batch,
            lr: self.lr.unwrap_or_else(|| paper_lr(bits)),
            seed: self.seed,
            backend: self.backend,
        }
    }
}

/// Everything [`crate::quantize`] needs besides the model and the calibration data.
#[derive(Debug, Clone)]
pub struct QuantizeOptions {
    /// The search.
    pub search: SearchOptions,
    /// Quantizer of the middle layers.
    pub quantizer: Quantizer,
    /// Reconstruction settings, used when calibration data is given.
    pub recon: ReconOptions,
    /// Quantize activations too (the input of every weight layer but the first) at these
    /// bits; needs calibration data.
    pub abits: Option<u32>,
    /// How the model's inputs are made from images: stored in the output's metadata, so that
    /// evaluation finds it (`None`: nothing stored).
    pub preprocess: Option<Preprocess>,
    /// How the written model stores its weights.
    pub weights: WeightForm,
    /// Choose each middle layer's bits under a size budget instead of `search.bits` for all
    /// ([`crate::mixed`]); needs calibration data.
    pub mixed: Option<MixedOptions>,
}

impl QuantizeOptions {
    /// SQ at `bits` with the defaults of [`SearchOptions::new`] and [`ReconOptions`].
    pub fn new(bits: u32) -> Self {
        Self {
            search: SearchOptions::new(bits),
            quantizer: Quantizer::Sq,
            recon: ReconOptions::default(),
            abits: None,
            preprocess: None,
            weights: WeightForm::Codes,
            mixed: None,
        }
    }

    /// Refuses combinations that cannot work, before any work: activation quantization
    /// without calibration data, and (with calibration data) a reconstruction device that
    /// cannot run, so that it fails now rather than after the search.
    pub fn check(&self, has_calibration: bool) -> Result<()> {
        if self.abits.is_some() && !has_calibration {
            return Err(PipelineError::invalid(
                "--abits needs --calib: activation ranges come from calibration data",
            ));
        }
        if self.mixed.is_some() && !has_calibration {
            return Err(PipelineError::invalid(
                "--avg-bits / --size-budget need --calib: each layer's error is measured on \
                 calibration data",
            ));
        }
        if has_calibration {
            self.recon.backend.device()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back() {
        for q in Quantizer::ALL {
            assert_eq!(q.name().parse::<Quantizer>().unwrap(), q);
        }
        assert!("nope".parse::<Quantizer>().is_err());
        for g in [Granularity::Tensor, Granularity::Channel] {
            assert_eq!(g.name().parse::<Granularity>().unwrap(), g);
        }
    }
}
