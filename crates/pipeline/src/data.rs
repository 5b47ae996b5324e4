//! Images in: how they are preprocessed (a file, the sidecar beside the model, or the settings
//! stored in the model itself, with flags on top) and loading them as datasets or as
//! calibration samples.

use std::path::{Path, PathBuf};

use subsetq_data::{Color, Dataset, LabelSource, Loader, Preprocess};
use subsetq_engine::reconstruct::Samples;
use subsetq_onnx::Model;

use crate::error::{PipelineError, Result};
use crate::progress::{report, OnProgress};

/// Metadata key under which a quantized model carries its preprocessing (sidecar JSON).
pub const PREPROCESS_METADATA_KEY: &str = "subsetq-preprocess";

/// Preprocessing settings given one by one (command-line flags, Python keywords), applied on
/// top of a preprocessing file, the model's sidecar or the model's metadata.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PreprocessOverrides {
    /// A preprocessing file (schema subsetq-preprocess/1) instead of the model's own.
    pub file: Option<PathBuf>,
    /// Channel order.
    pub color: Option<Color>,
    /// Resize so that the shorter side is this many pixels.
    pub resize: Option<u32>,
    /// Center-crop to `[H, W]` after the resize.
    pub crop: Option<[usize; 2]>,
    /// Required image size `[H, W]` after resize and crop.
    pub size: Option<[usize; 2]>,
    /// Pixel (0..=255) multiplier applied before the mean is subtracted.
    pub scale: Option<f32>,
    /// Per-channel mean (one value: every channel).
    pub mean: Option<Vec<f32>>,
    /// Per-channel standard deviation (one value: every channel).
    pub std: Option<Vec<f32>>,
}

impl PreprocessOverrides {
    /// The preprocessing for the model at `path` (`model`: its contents, when loaded): the
    /// file given, else the sidecar beside the model, else the settings in the model's
    /// metadata (quantized models carry them), then the overrides on top. Without any of
    /// those, `color` is needed; the rest defaults to raw pixel values (0..=255) at the
    /// images' own size.
    pub fn resolve(&self, path: &Path, model: Option<&Model>) -> Result<Preprocess> {
        self.resolve_if_any(path, model)?.ok_or_else(|| {
            PipelineError::invalid(format!(
                "no preprocessing for {}: no file {}, none in the model; give --preprocess \
                 FILE, or --color (and --resize / --crop / --size / --scale / --mean / --std \
                 as the model expects)",
                path.display(),
                Preprocess::sidecar_path(path).display()
            ))
        })
    }

    /// Like [`PreprocessOverrides::resolve`], but `None` where there is nothing to resolve:
    /// no file, no sidecar, nothing in the model and no `color`.
    pub fn resolve_if_any(&self, path: &Path, model: Option<&Model>) -> Result<Option<Preprocess>> {
        let sidecar = Preprocess::sidecar_path(path);
        let base = match &self.file {
            Some(p) => Some(Preprocess::from_sidecar(p)?),
            None if sidecar.is_file() => Some(Preprocess::from_sidecar(&sidecar)?),
            None => match model.and_then(|m| m.metadata(PREPROCESS_METADATA_KEY)) {
                Some(text) => Some(Preprocess::from_sidecar_str(text).map_err(|reason| {
                    PipelineError::invalid(format!(
                        "{}: the preprocessing in its metadata: {reason}",
                        path.display()
                    ))
                })?),
                None => None,
            },
        };
        let mut pre = match (base, self.color) {
            (Some(mut p), Some(color)) => {
                if color.channels() != p.color.channels() && self.mean.is_none() {
                    return Err(PipelineError::invalid(format!(
                        "--color changes the channel count of {}'s preprocessing: give --mean and --std too",
                        path.display()
                    )));
                }
                p.color = color;
                p
            }
            (Some(p), None) => p,
            (None, Some(color)) => Preprocess::new(color),
            (None, None) => return Ok(None),
        };
        if let Some(side) = self.resize {
            pre = pre.with_resize(side);
        }
        if let Some([h, w]) = self.crop {
            pre = pre.with_center_crop(h, w);
        }
        if let Some([h, w]) = self.size {
            pre = pre.with_size(h, w);
        }
        if self.scale.is_some() || self.mean.is_some() || self.std.is_some() {
            let c = pre.color.channels();
            let scale = self.scale.unwrap_or(pre.scale);
            let mean = self.mean.clone().unwrap_or_else(|| pre.mean.clone());
            let std = self.std.clone().unwrap_or_else(|| pre.std.clone());
            for (what, v) in [("--mean", &mean), ("--std", &std)] {
                // One value applies to every channel.
                if v.len() != 1 && v.len() != c {
                    return Err(PipelineError::invalid(format!(
                        "{what} has {} values; the images have {c} channels",
                        v.len()
                    )));
                }
            }
            pre = pre.with_normalize(scale, &mean, &std);
        }
        pre.validate()?;
        Ok(Some(pre))
    }
}

/// Loads a dataset (IDX file, image folder, image file or `folder/pattern*.jpg`), the first
/// `limit` images when given, reporting progress as stage `load`.
pub fn load_data(
    path: &Path,
    pre: &Preprocess,
    labels: LabelSource,
    limit: Option<usize>,
    on_progress: OnProgress,
) -> Result<Dataset> {
    let data = Loader::new(pre)
        .limit(limit)
        .labels(labels)
        .on_progress(|p| report(on_progress, "load", p.done, p.total, ""))
        .load(path)?;
    if data.n == 0 {
        return Err(PipelineError::invalid(format!(
            "{}: no images",
            path.display()
        )));
    }
    Ok(data)
}

/// A dataset's images as calibration samples (labels dropped).
pub fn samples(data: Dataset) -> Samples {
    Samples {
        shape: vec![data.channels, data.height, data.width],
        n: data.n,
        data: data.images,
    }
}

/// Calibration samples from already preprocessed NCHW values: `data` holds `shape[0]` samples
/// of `shape[1..]`.
pub fn samples_from_array(data: Vec<f32>, shape: &[usize]) -> Result<Samples> {
    let [n, rest @ ..] = shape else {
        return Err(PipelineError::invalid(
            "calibration array: expected N × C × H × W",
        ));
    };
    if shape.len() != 4 || *n == 0 || shape.iter().product::<usize>() != data.len() {
        return Err(PipelineError::invalid(format!(
            "calibration array: shape {shape:?} for {} values; expected N × C × H × W with N ≥ 1",
            data.len()
        )));
    }
    if let Some(v) = data.iter().find(|v| !v.is_finite()) {
        return Err(PipelineError::invalid(format!(
            "calibration array: holds {v} (NaN or infinite)"
        )));
    }
    Ok(Samples {
        data,
        shape: rest.to_vec(),
        n: *n,
    })
}

/// The first `n` images at `path` as calibration samples (labels unused).
pub fn calibration(
    path: &Path,
    pre: &Preprocess,
    n: usize,
    on_progress: OnProgress,
) -> Result<Samples> {
    load_data(path, pre, LabelSource::Unlabelled, Some(n), on_progress).map(samples)
}
