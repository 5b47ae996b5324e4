//! Flags shared by several subcommands, each turned into the pipeline's typed options.

use std::path::{Path, PathBuf};

use anyhow::Result;
use subsetq_data::{Color, Preprocess};
use subsetq_engine::Backend;
use subsetq_onnx::Model;
use subsetq_pipeline::data::PreprocessOverrides;
use subsetq_pipeline::ReconOptions;

/// How images become model input: `--preprocess FILE`, else the sidecar
/// `<model>.preprocess.json`, else the settings a quantized model carries, with any of the
/// other flags on top. Without any of those, `--color` is needed; the rest defaults to raw
/// pixel values (0..=255) at the images' own size.
#[derive(clap::Args, Default)]
pub struct PreprocessArgs {
    /// Preprocessing file (schema subsetq-preprocess/1) instead of the model's own.
    #[arg(long)]
    preprocess: Option<PathBuf>,
    /// Channel order: gray or rgb.
    #[arg(long, value_enum)]
    color: Option<ColorArg>,
    /// Resize so that the shorter side is this many pixels.
    #[arg(long)]
    resize: Option<u32>,
    /// Center-crop to H,W after the resize.
    #[arg(long, value_parser = parse_hw)]
    crop: Option<[usize; 2]>,
    /// Required image size H,W after resize and crop.
    #[arg(long, value_parser = parse_hw)]
    size: Option<[usize; 2]>,
    /// Pixel (0..=255) multiplier applied before the mean is subtracted.
    #[arg(long)]
    scale: Option<f32>,
    /// Per-channel mean, comma separated (one value for all channels).
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    mean: Option<Vec<f32>>,
    /// Per-channel standard deviation, comma separated (one value for all channels).
    #[arg(long, value_delimiter = ',')]
    std: Option<Vec<f32>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ColorArg {
    Gray,
    Rgb,
}

fn parse_hw(s: &str) -> std::result::Result<[usize; 2], String> {
    let parts: Vec<&str> = s.split([',', 'x']).collect();
    match parts[..] {
        [h, w] => match (h.trim().parse(), w.trim().parse()) {
            (Ok(h), Ok(w)) if h > 0 && w > 0 => Ok([h, w]),
            _ => Err(format!("{s:?}: expected two positive integers H,W")),
        },
        _ => Err(format!("{s:?}: expected H,W")),
    }
}

impl PreprocessArgs {
    fn overrides(&self) -> PreprocessOverrides {
        PreprocessOverrides {
            file: self.preprocess.clone(),
            color: self.color.map(|c| match c {
                ColorArg::Gray => Color::Gray,
                ColorArg::Rgb => Color::Rgb,
            }),
            resize: self.resize,
            crop: self.crop,
            size: self.size,
            scale: self.scale,
            mean: self.mean.clone(),
            std: self.std.clone(),
        }
    }

    /// The preprocessing for the model at `path` (`model`: its contents, when loaded).
    pub fn resolve(&self, path: &Path, model: Option<&Model>) -> Result<Preprocess> {
        Ok(self.overrides().resolve(path, model)?)
    }

    /// The same, `None` when there is nothing to resolve (no file, sidecar, metadata or
    /// `--color`).
    pub fn resolve_if_any(&self, path: &Path, model: Option<&Model>) -> Result<Option<Preprocess>> {
        Ok(self.overrides().resolve_if_any(path, model)?)
    }
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

impl ReconArgs {
    /// The pipeline's reconstruction options.
    pub fn options(&self) -> ReconOptions {
        ReconOptions {
            calib_size: self.calib_size as usize,
            iters: self.iters,
            batch: self.recon_batch as usize,
            lr: self.lr,
            seed: self.seed,
            backend: match self.device {
                DeviceArg::Cpu => Backend::Cpu,
                DeviceArg::Cuda => Backend::Cuda,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hw_flags_parse() {
        assert_eq!(parse_hw("224,224"), Ok([224, 224]));
        assert_eq!(parse_hw("28x32"), Ok([28, 32]));
        assert!(parse_hw("0,3").is_err() && parse_hw("7").is_err() && parse_hw("a,b").is_err());
    }
}
