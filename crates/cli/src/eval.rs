//! `subsetq eval`: a model's top-1 / top-5 on labelled data through our engine, and, with
//! `--compare`, how far a second model's outputs are from the first's.
//!
//! The pieces ([`Runner`], [`Outputs`], [`Scores`], [`Agreement`]) are shared with
//! `subsetq bench accuracy`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use subsetq_data::{Color, Dataset, LabelSource, Loader, Preprocess};
use subsetq_engine::burn_tensor::Device;
use subsetq_engine::{Engine, Plan, Value};
use subsetq_onnx::Model;

use crate::{load_model, output, progress};

#[derive(clap::Args)]
pub struct EvalArgs {
    /// The ONNX model (read only).
    model: PathBuf,
    /// IDX images file (labels found beside it by the standard name), image folder,
    /// image file, or `folder/pattern*.jpg`.
    #[arg(long)]
    data: PathBuf,
    /// A second model run on the same inputs: its scores, top-1 agreement, top-5 overlap and
    /// output MSE against the first.
    #[arg(long)]
    compare: Option<PathBuf>,
    /// Write the results as JSON here (atomically).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    batch: u64,
    /// Use only the first N images.
    #[arg(long)]
    limit: Option<usize>,
    /// Where labels come from.
    #[arg(long, value_enum, default_value_t = LabelsArg::Auto)]
    labels: LabelsArg,
    #[command(flatten)]
    preprocess: PreprocessArgs,
}

/// Where labels come from (`--labels`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LabelsArg {
    /// IDX: the labels file beside the images; folders: sub-folders, else file names, else none.
    Auto,
    /// One sub-folder per class (sorted names → 0, 1, …).
    Folder,
    /// The number after the file name's last `_` (`imagenet_07_559.jpg` → 559).
    FileName,
    /// No labels: only model-to-model comparisons.
    None,
}

impl LabelsArg {
    fn source(self) -> LabelSource {
        match self {
            Self::Auto => LabelSource::Auto,
            Self::Folder => LabelSource::SubFolder,
            Self::FileName => LabelSource::FileName,
            Self::None => LabelSource::Unlabelled,
        }
    }
}

/// How images become model input: the sidecar `<model>.preprocess.json` (or `--preprocess`),
/// with any of the other flags overriding it. Without a sidecar, `--color` is needed; the
/// rest defaults to raw pixel values (0..=255) at the images' own size.
#[derive(clap::Args, Default)]
pub struct PreprocessArgs {
    /// Preprocessing file (schema subsetq-preprocess/1) instead of the model's sidecar.
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
pub enum ColorArg {
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
    /// The preprocessing for `model`: file or sidecar, then the flags on top.
    pub fn resolve(&self, model: &Path) -> Result<Preprocess> {
        let sidecar = Preprocess::sidecar_path(model);
        let base = match &self.preprocess {
            Some(p) => Some(Preprocess::from_sidecar(p)?),
            None if sidecar.is_file() => Some(Preprocess::from_sidecar(&sidecar)?),
            None => None,
        };
        let color = self.color.map(|c| match c {
            ColorArg::Gray => Color::Gray,
            ColorArg::Rgb => Color::Rgb,
        });
        let mut pre = match (base, color) {
            (Some(mut p), Some(color)) => {
                if color.channels() != p.color.channels() && self.mean.is_none() {
                    bail!(
                        "--color changes the channel count of {}'s preprocessing: give --mean and --std too",
                        model.display()
                    );
                }
                p.color = color;
                p
            }
            (Some(p), None) => p,
            (None, Some(color)) => Preprocess::new(color),
            (None, None) => bail!(
                "no preprocessing file {} for {}: give --preprocess FILE, or --color (and \
                 --resize / --crop / --size / --scale / --mean / --std as the model expects)",
                sidecar.display(),
                model.display()
            ),
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
                if v.len() != 1 && v.len() != c {
                    bail!(
                        "{what} has {} values; the images have {c} channels",
                        v.len()
                    );
                }
            }
            pre = pre.with_normalize(scale, &mean, &std);
        }
        pre.validate()?;
        Ok(pre)
    }
}

/// Loads a dataset with a progress bar.
pub fn load_data(
    path: &Path,
    pre: &Preprocess,
    labels: LabelSource,
    limit: Option<usize>,
) -> Result<Dataset> {
    let bar = progress(0, "load");
    let data = Loader::new(pre)
        .limit(limit)
        .labels(labels)
        .on_progress(|p| {
            bar.set_length(p.total as u64);
            bar.set_position(p.done as u64);
        })
        .load(path)?;
    bar.finish_and_clear();
    if data.n == 0 {
        bail!("{}: no images", path.display());
    }
    Ok(data)
}

/// A model planned on the CPU engine, with the graph input and output to use.
pub struct Runner {
    engine: Engine,
    input: String,
    output: String,
}

impl Runner {
    /// Plans `model` (every operator checked before any work); `pre` may name the input and
    /// output, else the model's single input and first output are used.
    pub fn new(model: &Model, pre: &Preprocess) -> Result<Runner> {
        let engine = Engine::new(Plan::from_model(model)?, &Device::flex())?;
        let plan = engine.plan();
        let input = match &pre.input {
            Some(name) if plan.inputs().iter().any(|i| &i.name == name) => name.clone(),
            _ => plan.single_input()?.to_string(),
        };
        let outputs = plan.output_names();
        let output = match &pre.output {
            Some(name) if outputs.contains(&name.as_str()) => name.clone(),
            _ => match outputs.first() {
                Some(o) => o.to_string(),
                None => bail!("the model has no outputs"),
            },
        };
        Ok(Runner {
            engine,
            input,
            output,
        })
    }

    /// Loads and plans the model at `path`.
    pub fn load(path: &Path, pre: &Preprocess) -> Result<Runner> {
        let model = load_model(path)?;
        Runner::new(&model, pre).with_context(|| path.display().to_string())
    }

    /// The outputs for every image of `data`, `batch` images per forward pass.
    pub fn outputs(&self, data: &Dataset, batch: usize, what: &str) -> Result<Outputs> {
        let bar = progress(data.n, what);
        let mut values = Vec::new();
        let mut classes = 0;
        for b in data.batches(batch) {
            let shape = [b.n, data.channels, data.height, data.width];
            let x = Value::from_f32(b.images.to_vec(), &shape, self.engine.device())
                .with_context(|| format!("batch of shape {shape:?}"))?;
            let y = self
                .engine
                .run_for(&[(self.input.as_str(), x)], &[self.output.as_str()])?;
            let Some(y) = y.into_iter().next() else {
                bail!("output {} was not computed", self.output);
            };
            let dims = y.dims();
            let per: usize = dims.iter().skip(1).product();
            if dims.first() != Some(&b.n) || per == 0 || dims.iter().skip(2).any(|&d| d != 1) {
                bail!(
                    "output {} has shape {dims:?} for a batch of {}: expected [{}, classes]",
                    self.output,
                    b.n,
                    b.n
                );
            }
            if classes != 0 && classes != per {
                bail!("output {} changed width between batches", self.output);
            }
            classes = per;
            values.extend(y.to_vec());
            bar.inc(b.n as u64);
        }
        bar.finish_and_clear();
        Ok(Outputs {
            n: data.n,
            classes,
            values,
        })
    }
}

/// A model's outputs (logits or probabilities) for `n` images, `classes` per image.
pub struct Outputs {
    pub n: usize,
    pub classes: usize,
    pub values: Vec<f32>,
}

impl Outputs {
    fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.classes..(i + 1) * self.classes]
    }

    /// Indices of the `k` largest values of row `i`, largest first (ties: lower index first).
    fn top(&self, i: usize, k: usize) -> Vec<usize> {
        let row = self.row(i);
        let mut idx: Vec<usize> = (0..row.len()).collect();
        idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        idx.truncate(k);
        idx
    }
}

/// Top-1 / top-5 accuracy in percent.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Scores {
    pub top1: f64,
    pub top5: f64,
}

impl Scores {
    /// Scores against `labels` (one per image).
    pub fn of(out: &Outputs, labels: &[u32]) -> Scores {
        let (mut top1, mut top5) = (0usize, 0usize);
        for (i, &label) in labels.iter().enumerate().take(out.n) {
            let top = out.top(i, 5);
            top1 += usize::from(top.first() == Some(&(label as usize)));
            top5 += usize::from(top.contains(&(label as usize)));
        }
        Scores {
            top1: percent(top1, out.n),
            top5: percent(top5, out.n),
        }
    }
}

fn percent(count: usize, n: usize) -> f64 {
    100.0 * count as f64 / n.max(1) as f64
}

/// How close model B's outputs are to model A's on the same images.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Agreement {
    /// Images with the same top-1 class, percent.
    pub agreement_top1: f64,
    /// Mean share of A's top-5 classes that are also in B's top 5, percent.
    pub top5_overlap: f64,
    /// Mean squared difference of the outputs.
    pub output_mse: f64,
    /// Largest absolute difference of the outputs.
    pub max_abs_diff: f64,
}

impl Agreement {
    pub fn between(a: &Outputs, b: &Outputs) -> Result<Agreement> {
        if (a.n, a.classes) != (b.n, b.classes) {
            bail!(
                "the models' outputs differ in shape: {} × {} vs {} × {}",
                a.n,
                a.classes,
                b.n,
                b.classes
            );
        }
        let (mut same, mut overlap) = (0usize, 0usize);
        let k = a.classes.min(5);
        for i in 0..a.n {
            let (ta, tb) = (a.top(i, k), b.top(i, k));
            same += usize::from(ta[0] == tb[0]);
            overlap += ta.iter().filter(|c| tb.contains(c)).count();
        }
        let (mut sq, mut max) = (0.0f64, 0.0f64);
        for (x, y) in a.values.iter().zip(&b.values) {
            let d = f64::from(*x) - f64::from(*y);
            sq += d * d;
            max = max.max(d.abs());
        }
        Ok(Agreement {
            agreement_top1: percent(same, a.n),
            top5_overlap: percent(overlap, a.n * k),
            output_mse: sq / a.values.len().max(1) as f64,
            max_abs_diff: max,
        })
    }
}

pub fn run(args: &EvalArgs) -> Result<()> {
    if let Some(json) = &args.json {
        output::refuse_to_overwrite_input(json, &args.model)?;
        if let Some(other) = &args.compare {
            output::refuse_to_overwrite_input(json, other)?;
        }
    }
    let pre = args.preprocess.resolve(&args.model)?;
    // Plan both models before loading data: a bad model fails fast.
    let runner = Runner::load(&args.model, &pre)?;
    let other = match &args.compare {
        Some(path) => Some(Runner::load(path, &pre)?),
        None => None,
    };
    let data = load_data(&args.data, &pre, args.labels.source(), args.limit)?;
    let batch = args.batch as usize;
    let labels = data.labels.as_deref();
    println!(
        "data   {}: {} images, {}×{}×{}, {}",
        args.data.display(),
        data.n,
        data.channels,
        data.height,
        data.width,
        if labels.is_some() {
            "labelled"
        } else {
            "no labels"
        }
    );

    let started = Instant::now();
    let a = runner
        .outputs(&data, batch, "eval")
        .with_context(|| args.model.display().to_string())?;
    let seconds = started.elapsed().as_secs_f64();
    let scores = labels.map(|l| Scores::of(&a, l));
    print_scores("model", &args.model, scores, seconds);

    let mut doc = serde_json::json!({
        "model": args.model.display().to_string(),
        "data": args.data.display().to_string(),
        "n": data.n,
        "top1": scores.map(|s| s.top1),
        "top5": scores.map(|s| s.top5),
        "seconds": seconds,
    });
    if let (Some(other), Some(path)) = (&other, &args.compare) {
        let started = Instant::now();
        let b = other
            .outputs(&data, batch, "compare")
            .with_context(|| path.display().to_string())?;
        let seconds = started.elapsed().as_secs_f64();
        let scores = labels.map(|l| Scores::of(&b, l));
        print_scores("other", path, scores, seconds);
        let agree = Agreement::between(&a, &b)?;
        println!(
            "other vs model: top-1 agreement {:.2} %, top-5 overlap {:.2} %, output MSE {:.3e}, max |diff| {:.3e}",
            agree.agreement_top1, agree.top5_overlap, agree.output_mse, agree.max_abs_diff
        );
        if let Some(map) = doc.as_object_mut() {
            map.insert(
                "compare".into(),
                serde_json::json!({
                    "model": path.display().to_string(),
                    "top1": scores.map(|s| s.top1),
                    "top5": scores.map(|s| s.top5),
                    "seconds": seconds,
                }),
            );
            if let serde_json::Value::Object(fields) = serde_json::to_value(agree)? {
                map.extend(fields);
            }
        }
    }
    if let Some(path) = &args.json {
        output::write_json_atomically(path, &doc)?;
    }
    Ok(())
}

fn print_scores(role: &str, path: &Path, scores: Option<Scores>, seconds: f64) {
    match scores {
        Some(s) => println!(
            "{role:<6} {}: top-1 {:.2} %, top-5 {:.2} % ({seconds:.1} s)",
            path.display(),
            s.top1,
            s.top5
        ),
        None => println!("{role:<6} {}: ran in {seconds:.1} s", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outputs(rows: &[&[f32]]) -> Outputs {
        Outputs {
            n: rows.len(),
            classes: rows[0].len(),
            values: rows.iter().flat_map(|r| r.iter().copied()).collect(),
        }
    }

    #[test]
    fn scores_count_top1_and_top5() {
        let out = outputs(&[
            &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            &[6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0],
        ]);
        // Row 0: class 6 first, class 1 sixth. Row 1: class 0 first, class 4 fifth.
        let s = Scores::of(&out, &[6, 4]);
        assert_eq!((s.top1, s.top5), (50.0, 100.0));
        let s = Scores::of(&out, &[1, 5]);
        assert_eq!((s.top1, s.top5), (0.0, 0.0));
    }

    #[test]
    fn agreement_of_a_model_with_itself_and_another() {
        let a = outputs(&[&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]]);
        let same = Agreement::between(&a, &a).unwrap();
        assert_eq!(
            (same.agreement_top1, same.top5_overlap, same.output_mse),
            (100.0, 100.0, 0.0)
        );
        let b = outputs(&[&[1.0, 2.0, 1.0], &[3.0, 2.0, 1.0]]);
        let d = Agreement::between(&a, &b).unwrap();
        assert_eq!(d.agreement_top1, 50.0);
        assert_eq!(d.top5_overlap, 100.0); // 3 classes: top-3 sets are equal
        assert!((d.output_mse - 4.0 / 6.0).abs() < 1e-12 && d.max_abs_diff == 2.0);
        let c = outputs(&[&[1.0, 2.0]]);
        assert!(Agreement::between(&a, &c).is_err());
    }

    #[test]
    fn hw_flags_parse() {
        assert_eq!(parse_hw("224,224"), Ok([224, 224]));
        assert_eq!(parse_hw("28x32"), Ok([28, 32]));
        assert!(parse_hw("0,3").is_err() && parse_hw("7").is_err() && parse_hw("a,b").is_err());
    }
}
