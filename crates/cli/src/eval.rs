//! `subsetq eval`: a model's top-1 / top-5 on labelled data through our engine, and, with
//! `--compare`, how far a second model's outputs are from the first's.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use subsetq_data::{LabelSource, Preprocess, Task};
use subsetq_onnx::Model;
use subsetq_pipeline::data::load_data;
use subsetq_pipeline::detect::{self, TaskAgreement};
use subsetq_pipeline::eval::{Agreement, Runner, Scores};
use subsetq_pipeline::packed::Kernels;
use subsetq_pipeline::progress::Bar;
use subsetq_pipeline::write::{refuse_to_overwrite_input, write_json};

use crate::flags::PreprocessArgs;
use crate::load_model;

#[derive(clap::Args)]
pub struct EvalArgs {
    /// The ONNX model (read only).
    model: PathBuf,
    /// IDX images file (labels found beside it by the standard name), image folder,
    /// image file, or `folder/pattern*.jpg`.
    #[arg(long)]
    data: PathBuf,
    /// A second model run on the same inputs: its scores, top-1 agreement, top-5 overlap and
    /// output MSE against the first. With `--task detect|segment`, the reference (the float
    /// model) whose boxes or masks stand in for the ground truth.
    #[arg(long)]
    compare: Option<PathBuf>,
    /// What the model does: `classify` scores class outputs; `detect` and `segment` decode
    /// the outputs the model's sidecar `"task"` names and compare them with `--compare`'s
    /// (mAP@0.5, mAP@0.5:0.95 and recall@0.5 of its boxes; mean mask IoU).
    #[arg(long, value_enum, default_value_t = TaskArg::Classify)]
    task: TaskArg,
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
    /// What computes the model's Conv / Gemm / MatMul layers: `packed` runs a compact
    /// model from its codes (int8 × int8 where a layer's input has an 8-bit quantizer, codes
    /// decoded to f32 tiles elsewhere). The `--compare` model always runs `float`.
    #[arg(long, value_enum, default_value_t = Kernels::Float)]
    kernels: Kernels,
    #[command(flatten)]
    preprocess: PreprocessArgs,
}

/// `--task`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TaskArg {
    Classify,
    Detect,
    Segment,
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

pub fn run(args: &EvalArgs) -> Result<()> {
    if let Some(json) = &args.json {
        refuse_to_overwrite_input(json, &args.model)?;
        if let Some(other) = &args.compare {
            refuse_to_overwrite_input(json, other)?;
        }
    }
    let model = load_model(&args.model)?;
    let pre = args.preprocess.resolve(&args.model, Some(&model))?;
    if args.task != TaskArg::Classify {
        return run_task(args, &model, &pre);
    }
    // Plan both models before loading data: a bad model fails fast.
    let runner = Runner::with_kernels(&model, &pre, args.kernels)
        .with_context(|| args.model.display().to_string())?;
    if let Some(p) = runner.packed() {
        println!(
            "kernels packed: {} layers int8 × int8 (W·A8), {} decoded to f32, the rest float",
            p.int8.len(),
            p.f32.len()
        );
    }
    let other = match &args.compare {
        Some(path) => Some(Runner::load(path, &pre)?),
        None => None,
    };
    let mut bar = Bar::new();
    let data = load_data(
        &args.data,
        &pre,
        args.labels.source(),
        args.limit,
        &mut |p| bar.update(p),
    )?;
    bar.finish();
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
        .outputs(&data, batch, "eval", &mut |p| bar.update(p))
        .with_context(|| args.model.display().to_string())?;
    bar.finish();
    let seconds = started.elapsed().as_secs_f64();
    let scores = labels.map(|l| Scores::of(&a, l));
    print_scores("model", &args.model, scores, data.n, seconds);

    let mut doc = serde_json::json!({
        "model": args.model.display().to_string(),
        "data": args.data.display().to_string(),
        "n": data.n,
        "top1": scores.map(|s| s.top1),
        "top5": scores.map(|s| s.top5),
        "seconds": seconds,
        "images_per_second": data.n as f64 / seconds,
        "kernels": args.kernels.name(),
        "packed": runner.packed().map(|p| serde_json::json!({"int8": p.int8, "f32": p.f32})),
    });
    if let (Some(other), Some(path)) = (&other, &args.compare) {
        let started = Instant::now();
        let b = other
            .outputs(&data, batch, "compare", &mut |p| bar.update(p))
            .with_context(|| path.display().to_string())?;
        bar.finish();
        let seconds = started.elapsed().as_secs_f64();
        let scores = labels.map(|l| Scores::of(&b, l));
        print_scores("other", path, scores, data.n, seconds);
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
                    "images_per_second": data.n as f64 / seconds,
                }),
            );
            if let serde_json::Value::Object(fields) = serde_json::to_value(agree)? {
                map.extend(fields);
            }
        }
    }
    if let Some(path) = &args.json {
        write_json(path, &doc)?;
    }
    Ok(())
}

/// `--task detect|segment`: the model's boxes or masks against the `--compare` model's.
fn run_task(args: &EvalArgs, model: &Model, pre: &Preprocess) -> Result<()> {
    let Some(reference_path) = &args.compare else {
        bail!(
            "--task {}: give the float model as --compare (its outputs stand in for the ground truth)",
            args.task.name()
        );
    };
    let Some(task) = &pre.task else {
        bail!(
            "--task {}: the preprocessing sidecar of {} has no \"task\" saying what the outputs are",
            args.task.name(),
            args.model.display()
        );
    };
    match (args.task, task) {
        (TaskArg::Detect, Task::Detect { .. }) | (TaskArg::Segment, Task::Segment { .. }) => {}
        _ => bail!(
            "--task {}: the sidecar describes a {} model",
            args.task.name(),
            match task {
                Task::Detect { .. } => "detection",
                Task::Segment { .. } => "segmentation",
            }
        ),
    }
    let runner = Runner::with_kernels(model, pre, args.kernels)
        .with_context(|| args.model.display().to_string())?;
    let reference = Runner::load(reference_path, pre)?;
    let mut bar = Bar::new();
    let data = load_data(
        &args.data,
        pre,
        LabelSource::Unlabelled,
        args.limit,
        &mut |p| bar.update(p),
    )?;
    bar.finish();
    println!(
        "data   {}: {} images, {}×{}×{} (scored against {})",
        args.data.display(),
        data.n,
        data.channels,
        data.height,
        data.width,
        reference_path.display()
    );
    let names = task.outputs();
    let batch = args.batch as usize;
    let started = Instant::now();
    let ours = runner
        .named_outputs(&data, batch, &names, "eval", &mut |p| bar.update(p))
        .with_context(|| args.model.display().to_string())?;
    bar.finish();
    let seconds = started.elapsed().as_secs_f64();
    let theirs = reference
        .named_outputs(&data, batch, &names, "reference", &mut |p| bar.update(p))
        .with_context(|| reference_path.display().to_string())?;
    bar.finish();
    let mut doc = serde_json::json!({
        "model": args.model.display().to_string(),
        "reference": reference_path.display().to_string(),
        "data": args.data.display().to_string(),
        "task": args.task.name(),
        "seconds": seconds,
        "kernels": args.kernels.name(),
    });
    let fields = match detect::agreement(task, &theirs, &ours, [data.height, data.width])? {
        TaskAgreement::Detect(a) => {
            let threshold = match task {
                Task::Detect {
                    score_threshold, ..
                } => *score_threshold,
                Task::Segment { threshold, .. } => *threshold,
            };
            println!(
                "detect vs reference: mAP@0.5 {:.4}, mAP@0.5:0.95 {:.4}, recall@0.5 {:.4} \
                 ({} reference boxes at score {threshold}, {} of the model's)",
                a.map50, a.map50_95, a.recall50, a.reference_boxes, a.boxes
            );
            serde_json::to_value(a)?
        }
        TaskAgreement::Segment(a) => {
            println!(
                "segment vs reference: mean mask IoU {:.4} over {} images with foreground (of \
                 {}), pixel agreement {:.4}",
                a.mask_iou, a.scored, a.n, a.pixel_agreement
            );
            serde_json::to_value(a)?
        }
    };
    if let (Some(map), serde_json::Value::Object(fields)) = (doc.as_object_mut(), fields) {
        map.extend(fields);
    }
    if let Some(path) = &args.json {
        write_json(path, &doc)?;
    }
    Ok(())
}

impl TaskArg {
    fn name(self) -> &'static str {
        match self {
            Self::Classify => "classify",
            Self::Detect => "detect",
            Self::Segment => "segment",
        }
    }
}

fn print_scores(role: &str, path: &Path, scores: Option<Scores>, images: usize, seconds: f64) {
    match scores {
        Some(s) => println!(
            "{role:<6} {}: top-1 {:.2} %, top-5 {:.2} % ({seconds:.1} s, {:.0} images/s)",
            path.display(),
            s.top1,
            s.top5,
            images as f64 / seconds
        ),
        None => println!(
            "{role:<6} {}: ran in {seconds:.1} s ({:.0} images/s)",
            path.display(),
            images as f64 / seconds
        ),
    }
}
