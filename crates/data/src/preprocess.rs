//! Preprocessing settings: from the `<model>.preprocess.json` sidecar the asset script writes
//! (schema `subsetq-preprocess/1`, documented at the top of `scripts/onnx_helpers.py`), or
//! built in code from command-line flags.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::task::Task;

/// The only sidecar schema this crate reads.
pub const SIDECAR_SCHEMA: &str = "subsetq-preprocess/1";

/// Channel order of the decoded image, which also fixes the channel count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Color {
    /// One channel. Colour images are converted the way Pillow's `convert("L")` does
    /// (`L = (19595 R + 38470 G + 7471 B + 32768) >> 16`).
    Gray,
    /// Three channels, R, G, B. Gray images are replicated into the three channels.
    Rgb,
}

impl Color {
    /// Number of channels: 1 or 3.
    pub fn channels(self) -> usize {
        match self {
            Color::Gray => 1,
            Color::Rgb => 3,
        }
    }
}

/// Resize so that the shorter side becomes `shorter_side`, keeping the aspect ratio (the
/// longer side is rounded half-to-even, as Python's `round`), with a bilinear filter like
/// Pillow's `Image.resize(..., Image.BILINEAR)` (within one level of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resize {
    /// Target length of the shorter side, in pixels.
    pub shorter_side: u32,
    /// Widen the filter by the scale factor when shrinking (Pillow always does). Without
    /// it, shrinking samples only the 2×2 nearest source pixels.
    pub antialias: bool,
}

/// How a dataset's images are turned into model input: decode with [`Color`], resize,
/// center-crop, then `x = (pixel * scale - mean[c]) / std[c]` per channel (pixel in
/// 0..=255), laid out NCHW. The arithmetic of the last step is done in `f32` in that order,
/// as numpy does it in the project's Python checks, so values are bit-identical.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocess {
    /// Channel order (and count) of the tensor.
    pub color: Color,
    /// Optional resize, applied first.
    pub resize: Option<Resize>,
    /// Optional center crop to `[height, width]` (offsets `(h - H) / 2`, `(w - W) / 2`),
    /// applied after the resize.
    pub crop: Option<[usize; 2]>,
    /// The `[height, width]` every image must have after resize and crop; `None` accepts
    /// any size as long as all images agree.
    pub size: Option<[usize; 2]>,
    /// Multiplier applied to the 0..=255 pixel value before the mean is subtracted.
    pub scale: f32,
    /// Per-channel mean (one value per channel).
    pub mean: Vec<f32>,
    /// Per-channel standard deviation (one non-zero value per channel).
    pub std: Vec<f32>,
    /// Graph input the tensor is fed to (from the sidecar; `None` when built from flags).
    pub input: Option<String>,
    /// Graph output to read (from the sidecar: `"logits"`, or `"probs"` when the model ends
    /// with a Softmax).
    pub output: Option<String>,
    /// Number of classes of the model; when set, labels at or above it are an error.
    pub num_classes: Option<usize>,
    /// What a detector's or segmenter's outputs mean (the sidecar's `"task"`).
    pub task: Option<Task>,
}

impl Preprocess {
    /// Raw pixel values (0..=255 as `f32`): no resize, no crop, scale 1, mean 0, std 1.
    /// Adjust with the `with_*` methods.
    pub fn new(color: Color) -> Self {
        let c = color.channels();
        Preprocess {
            color,
            resize: None,
            crop: None,
            size: None,
            scale: 1.0,
            mean: vec![0.0; c],
            std: vec![1.0; c],
            input: None,
            output: None,
            num_classes: None,
            task: None,
        }
    }

    /// Resize the shorter side to `shorter_side` with Pillow's antialiased bilinear filter.
    pub fn with_resize(mut self, shorter_side: u32) -> Self {
        self.resize = Some(Resize {
            shorter_side,
            antialias: true,
        });
        self
    }

    /// Center-crop to `height × width` after the resize; also sets [`Preprocess::size`].
    pub fn with_center_crop(mut self, height: usize, width: usize) -> Self {
        self.crop = Some([height, width]);
        self.size = Some([height, width]);
        self
    }

    /// Require every image to be `height × width` after resize and crop.
    pub fn with_size(mut self, height: usize, width: usize) -> Self {
        self.size = Some([height, width]);
        self
    }

    /// `x = (pixel * scale - mean[c]) / std[c]`. A single mean or std value is used for
    /// every channel.
    pub fn with_normalize(mut self, scale: f32, mean: &[f32], std: &[f32]) -> Self {
        let c = self.color.channels();
        let per_channel = |v: &[f32]| {
            if v.len() == 1 {
                vec![v[0]; c]
            } else {
                v.to_vec()
            }
        };
        self.scale = scale;
        self.mean = per_channel(mean);
        self.std = per_channel(std);
        self
    }

    /// Labels at or above `num_classes` become an error at load time.
    pub fn with_num_classes(mut self, num_classes: usize) -> Self {
        self.num_classes = Some(num_classes);
        self
    }

    /// Number of channels of the tensor.
    pub fn channels(&self) -> usize {
        self.color.channels()
    }

    /// The sidecar that goes with a model: `dir/name.onnx` → `dir/name.preprocess.json`.
    pub fn sidecar_path(model: &Path) -> PathBuf {
        let stem = model
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        model.with_file_name(format!("{stem}.preprocess.json"))
    }

    /// Read and check a sidecar file (schema `subsetq-preprocess/1`).
    pub fn from_sidecar(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                DataError::NotFound { path: path.into() }
            } else {
                DataError::io(path, e)
            }
        })?;
        Self::from_sidecar_str(&text).map_err(|reason| DataError::Sidecar {
            path: path.into(),
            reason,
        })
    }

    /// Parse and check sidecar JSON text; the error is a one-line reason.
    pub fn from_sidecar_str(text: &str) -> std::result::Result<Self, String> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        let obj = value
            .as_object()
            .ok_or_else(|| "expected a JSON object".to_string())?;
        match obj.get("schema") {
            None => {
                return Err(format!(
                    "no \"schema\" field (expected \"{SIDECAR_SCHEMA}\")"
                ))
            }
            Some(serde_json::Value::String(s)) if s == SIDECAR_SCHEMA => {}
            Some(other) => {
                return Err(format!(
                    "unknown schema {other} (this build reads \"{SIDECAR_SCHEMA}\")"
                ))
            }
        }
        let raw: RawSidecar = serde_json::from_value(value).map_err(|e| e.to_string())?;
        raw.into_preprocess()
    }

    /// The settings as sidecar JSON (schema `subsetq-preprocess/1`), which
    /// [`Preprocess::from_sidecar_str`] reads back to equal settings.
    pub fn to_sidecar_string(&self) -> String {
        let to_f64 = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
        let raw = RawSidecar {
            schema: SIDECAR_SCHEMA.to_string(),
            input: self.input.clone(),
            output: self.output.clone(),
            layout: "NCHW".to_string(),
            color: match self.color {
                Color::Gray => "GRAY",
                Color::Rgb => "RGB",
            }
            .to_string(),
            channels: self.channels(),
            resize: self.resize.map(|r| RawResize {
                shorter_side: r.shorter_side,
                filter: "bilinear".to_string(),
                antialias: r.antialias,
            }),
            crop: self.crop.map(|size| RawCrop {
                mode: "center".to_string(),
                size,
            }),
            size: self.size,
            scale: f64::from(self.scale),
            mean: to_f64(&self.mean),
            std: to_f64(&self.std),
            num_classes: self.num_classes,
            task: self.task.clone(),
        };
        let mut text = serde_json::to_string_pretty(&raw).unwrap_or_default();
        text.push('\n');
        text
    }

    /// Check that the settings are consistent (channel counts, positive sizes, finite
    /// numbers, non-zero std).
    pub fn validate(&self) -> Result<()> {
        self.check().map_err(DataError::Preprocess)
    }

    fn check(&self) -> std::result::Result<(), String> {
        let c = self.channels();
        if self.mean.len() != c || self.std.len() != c {
            return Err(format!(
                "{c} channel(s) but {} mean and {} std value(s)",
                self.mean.len(),
                self.std.len()
            ));
        }
        if !self.scale.is_finite() {
            return Err(format!("scale {} is not finite", self.scale));
        }
        if let Some(m) = self.mean.iter().find(|m| !m.is_finite()) {
            return Err(format!("mean {m} is not finite"));
        }
        if let Some(s) = self.std.iter().find(|s| !s.is_finite() || **s == 0.0) {
            return Err(format!("std {s} must be finite and non-zero"));
        }
        if let Some(task) = &self.task {
            task.check()?;
        }
        if let Some(r) = self.resize {
            if r.shorter_side == 0 {
                return Err("resize shorter_side must be positive".into());
            }
        }
        for (what, s) in [("crop", self.crop), ("size", self.size)] {
            if let Some([h, w]) = s {
                if h == 0 || w == 0 {
                    return Err(format!("{what} {h}x{w} has a zero side"));
                }
            }
        }
        if let (Some(crop), Some(size)) = (self.crop, self.size) {
            if crop != size {
                return Err(format!(
                    "crop {}x{} differs from size {}x{}",
                    crop[0], crop[1], size[0], size[1]
                ));
            }
        }
        if self.num_classes == Some(0) {
            return Err("num_classes must be positive".into());
        }
        Ok(())
    }
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawSidecar {
    #[allow(dead_code)]
    schema: String,
    // Optional so that preprocessing built from flags (no names, any size) can be written
    // and read back; the asset script always writes them.
    input: Option<String>,
    output: Option<String>,
    layout: String,
    color: String,
    channels: usize,
    resize: Option<RawResize>,
    crop: Option<RawCrop>,
    size: Option<[usize; 2]>,
    scale: f64,
    mean: Vec<f64>,
    std: Vec<f64>,
    num_classes: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    task: Option<Task>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawResize {
    shorter_side: u32,
    filter: String,
    antialias: bool,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawCrop {
    mode: String,
    size: [usize; 2],
}

impl RawSidecar {
    fn into_preprocess(self) -> std::result::Result<Preprocess, String> {
        if self.layout != "NCHW" {
            return Err(format!(
                "layout \"{}\" is not supported (only \"NCHW\")",
                self.layout
            ));
        }
        let color = match self.color.as_str() {
            "GRAY" => Color::Gray,
            "RGB" => Color::Rgb,
            other => return Err(format!("color \"{other}\" is not \"GRAY\" or \"RGB\"")),
        };
        if self.channels != color.channels() {
            return Err(format!(
                "channels {} does not match color \"{}\"",
                self.channels, self.color
            ));
        }
        let resize = match self.resize {
            None => None,
            Some(r) => {
                if r.filter != "bilinear" {
                    return Err(format!(
                        "resize filter \"{}\" is not supported (only \"bilinear\")",
                        r.filter
                    ));
                }
                Some(Resize {
                    shorter_side: r.shorter_side,
                    antialias: r.antialias,
                })
            }
        };
        let crop = match self.crop {
            None => None,
            Some(c) => {
                if c.mode != "center" {
                    return Err(format!(
                        "crop mode \"{}\" is not supported (only \"center\")",
                        c.mode
                    ));
                }
                Some(c.size)
            }
        };
        if self.input.as_deref() == Some("") || self.output.as_deref() == Some("") {
            return Err("input and output names must not be empty".into());
        }
        let to_f32 = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        let pre = Preprocess {
            color,
            resize,
            crop,
            size: self.size,
            scale: self.scale as f32,
            mean: to_f32(&self.mean),
            std: to_f32(&self.std),
            input: self.input,
            output: self.output,
            num_classes: self.num_classes,
            task: self.task,
        };
        pre.check()?;
        Ok(pre)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EFFNET: &str = r#"{
      "schema": "subsetq-preprocess/1", "input": "input", "output": "logits", "layout": "NCHW",
      "color": "RGB", "channels": 3,
      "resize": {"shorter_side": 256, "filter": "bilinear", "antialias": true},
      "crop": {"mode": "center", "size": [224, 224]}, "size": [224, 224],
      "scale": 1.0, "mean": [127.0, 127.0, 127.0], "std": [128.0, 128.0, 128.0],
      "num_classes": 1000 }"#;

    #[test]
    fn parses_effnet_sidecar() {
        let p = Preprocess::from_sidecar_str(EFFNET).unwrap();
        assert_eq!(p.color, Color::Rgb);
        assert_eq!(
            p.resize,
            Some(Resize {
                shorter_side: 256,
                antialias: true
            })
        );
        assert_eq!(p.crop, Some([224, 224]));
        assert_eq!(p.size, Some([224, 224]));
        assert_eq!(p.mean, vec![127.0; 3]);
        assert_eq!(p.num_classes, Some(1000));
        assert_eq!(p.output.as_deref(), Some("logits"));
    }

    #[test]
    fn sidecar_text_reads_back_to_the_same_settings() {
        let effnet = Preprocess::from_sidecar_str(EFFNET).unwrap();
        // From flags: no names, no fixed size, an f32 scale that is not a short decimal.
        let flags = Preprocess::new(Color::Gray).with_normalize(1.0 / 255.0, &[0.286], &[0.353]);
        for p in [effnet, flags] {
            let text = p.to_sidecar_string();
            assert_eq!(Preprocess::from_sidecar_str(&text).unwrap(), p, "{text}");
        }
    }

    fn err_of(edit: impl Fn(&mut serde_json::Value)) -> String {
        let mut v: serde_json::Value = serde_json::from_str(EFFNET).unwrap();
        edit(&mut v);
        Preprocess::from_sidecar_str(&v.to_string()).unwrap_err()
    }

    #[test]
    fn rejects_bad_sidecars() {
        let e = err_of(|v| v["schema"] = "subsetq-preprocess/2".into());
        assert!(e.contains("unknown schema"), "{e}");
        let e = err_of(|v| {
            v.as_object_mut().unwrap().remove("schema");
        });
        assert!(e.contains("no \"schema\""), "{e}");
        let e = err_of(|v| v["color"] = "BGR".into());
        assert!(e.contains("BGR"), "{e}");
        let e = err_of(|v| v["channels"] = 1.into());
        assert!(e.contains("channels 1"), "{e}");
        let e = err_of(|v| v["std"] = serde_json::json!([128.0, 0.0, 128.0]));
        assert!(e.contains("std 0"), "{e}");
        let e = err_of(|v| v["mean"] = serde_json::json!([127.0]));
        assert!(e.contains("1 mean"), "{e}");
        let e = err_of(|v| v["resize"]["filter"] = "bicubic".into());
        assert!(e.contains("bicubic"), "{e}");
        let e = err_of(|v| v["crop"]["mode"] = "random".into());
        assert!(e.contains("random"), "{e}");
        let e = err_of(|v| v["layout"] = "NHWC".into());
        assert!(e.contains("NHWC"), "{e}");
        let e = err_of(|v| v["crop"]["size"] = serde_json::json!([200, 224]));
        assert!(e.contains("differs"), "{e}");
        let e = err_of(|v| v["extra"] = 1.into());
        assert!(e.contains("unknown field"), "{e}");
        let e = err_of(|v| {
            v.as_object_mut().unwrap().remove("scale");
        });
        assert!(e.contains("missing field `scale`"), "{e}");
        let e = err_of(|v| v["size"] = serde_json::json!([-1, 2]));
        assert!(e.contains("invalid value"), "{e}");
        assert!(Preprocess::from_sidecar_str("[1]")
            .unwrap_err()
            .contains("object"));
        assert!(Preprocess::from_sidecar_str("{")
            .unwrap_err()
            .contains("JSON"));
    }

    const BLAZEFACE_TASK: &str = r#"{"kind": "detect", "score_threshold": 0.5,
      "iou_threshold": 0.3, "decoder": {"name": "blazeface", "scores": ["s16", "s8"],
      "boxes": ["b16", "b8"], "grids": [16, 8], "anchors_per_cell": [2, 6]}}"#;

    #[test]
    fn a_detection_task_reads_back_and_its_numbers_are_checked() {
        let with_task = |task: &str| {
            let mut v: serde_json::Value = serde_json::from_str(EFFNET).unwrap();
            v["task"] = serde_json::from_str(task).unwrap();
            Preprocess::from_sidecar_str(&v.to_string())
        };
        let p = with_task(BLAZEFACE_TASK).unwrap();
        let task = p.task.clone().unwrap();
        assert_eq!(task.outputs(), ["s16", "s8", "b16", "b8"]);
        assert_eq!(
            Preprocess::from_sidecar_str(&p.to_sidecar_string()).unwrap(),
            p
        );

        let e = with_task(&BLAZEFACE_TASK.replace("[2, 6]", "[2]")).unwrap_err();
        assert!(e.contains("one entry per scale (got 2, 2, 2, 1)"), "{e}");
        let e = with_task(&BLAZEFACE_TASK.replace("[16, 8]", "[16, 0]")).unwrap_err();
        assert!(e.contains("grids must be 1..=4096, got [16, 0]"), "{e}");
        let e = with_task(&BLAZEFACE_TASK.replace("0.3", "1.5")).unwrap_err();
        assert!(e.contains("iou_threshold 1.5 is not in [0, 1]"), "{e}");
        let e = with_task(&BLAZEFACE_TASK.replace("blazeface", "yolo")).unwrap_err();
        assert!(e.contains("yolo"), "{e}");
        let e = with_task(r#"{"kind": "segment", "output": "mask"}"#).unwrap_err();
        assert!(e.contains("threshold"), "{e}");
    }

    #[test]
    fn sidecar_file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.preprocess.json");
        let e = Preprocess::from_sidecar(&p).unwrap_err();
        assert!(matches!(e, DataError::NotFound { .. }), "{e}");
        std::fs::write(&p, r#"{"schema": "other"}"#).unwrap();
        let e = Preprocess::from_sidecar(&p).unwrap_err().to_string();
        assert!(
            e.starts_with(&p.display().to_string()) && e.contains("unknown schema"),
            "{e}"
        );
    }

    #[test]
    fn builder_and_sidecar_path() {
        let p = Preprocess::new(Color::Rgb)
            .with_resize(256)
            .with_center_crop(224, 224)
            .with_normalize(1.0, &[127.0], &[128.0]);
        assert_eq!(p.mean, vec![127.0; 3]);
        p.validate().unwrap();
        let bad = Preprocess::new(Color::Gray).with_normalize(1.0, &[0.0, 1.0], &[1.0]);
        assert!(bad.validate().is_err());
        assert_eq!(
            Preprocess::sidecar_path(Path::new("a/b/model.onnx")),
            Path::new("a/b/model.preprocess.json")
        );
    }
}
