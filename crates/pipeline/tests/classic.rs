//! Issue 13, item 4: classic CNNs of the onnx wheel, with seeded He-normal weights
//! (`scripts/classic_models.py`), on real photos: our engine agrees with onnxruntime, and
//! SqueezeNet goes through quantization with reconstruction and evaluation against the float
//! model, the quantized model (opset 9, as the original) agreeing with onnxruntime too.
//! The batch is fixed to 1 in these models.
//!
//! The long runs (all nine, the CLI's quantize and eval, wall times) are
//! `scripts/classic-models.sh`; this keeps to the two small ones, for CI.

use std::path::{Path, PathBuf};
use std::process::Command;

use subsetq_data::{LabelSource, Preprocess};
use subsetq_onnx::test_assets::{python, require, root};
use subsetq_pipeline::data::{calibration, load_data};
use subsetq_pipeline::eval::{Agreement, Runner};
use subsetq_pipeline::progress::quiet;
use subsetq_pipeline::run::{compare, read_numbered, run_dir, ONNX_TOLERANCE};
use subsetq_pipeline::{quantize, QuantizeOptions};

/// The bound on |ours − onnxruntime| for the models' outputs; the logits (scaled to
/// a standard deviation of 2 by the script) are held to it too.
const MAX_ABS_DIFF: f64 = 1e-4;
/// Photos compared with onnxruntime per model.
const PHOTOS: &str = "2";
/// Calibration and evaluation photos of the end-to-end run.
const CALIB: usize = 8;

fn script(py: &Path, args: &[&str]) {
    let out = Command::new(py)
        .arg(root().join("scripts/classic_models.py"))
        .args(args)
        .output()
        .expect("run classic_models.py");
    assert!(
        out.status.success(),
        "classic_models.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn s(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temporary path")
}

/// Runs `model` through onnxruntime (the script) and our engine on the first photos; returns
/// the max abs diffs of every output, after checking them against [`MAX_ABS_DIFF`].
fn engine_vs_onnxruntime(py: &Path, model: &Path, photos: &Path, case: &Path) -> Vec<f64> {
    script(
        py,
        &[
            "reference",
            s(model),
            s(photos),
            "imagenet_",
            PHOTOS,
            s(case),
        ],
    );
    let what = model.display();
    let ours = run_dir(&case.join("model.onnx"), case).unwrap_or_else(|e| panic!("{what}: {e}"));
    let want = read_numbered(case, "output").unwrap();
    assert_eq!(ours.len(), want.len(), "{what}: outputs");
    ours.iter()
        .zip(&want)
        .map(|(got, want)| {
            let c = compare(got, want, ONNX_TOLERANCE);
            assert!(
                c.shape_mismatch.is_none() && c.max_abs_diff <= MAX_ABS_DIFF,
                "{what} {}: {c:?}",
                want.name
            );
            c.max_abs_diff
        })
        .collect()
}

fn sci(v: &[f64]) -> String {
    v.iter()
        .map(|d| format!("{d:.2e}"))
        .collect::<Vec<_>>()
        .join(", ")
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

#[test]
fn small_classic_models_agree_with_onnxruntime_and_quantize_end_to_end() {
    let (Some(py), Some(photos)) = (python(), require("data/foolbox")) else {
        return;
    };
    let dir = TempDir(std::env::temp_dir().join(format!("subsetq-classic-{}", std::process::id())));
    let names = ["squeezenet", "shufflenet"];
    let mut args = vec!["make", s(&dir.0), s(&photos)];
    args.extend(names);
    script(&py, &args);
    let mut report = Vec::new();
    for name in names {
        let diffs = engine_vs_onnxruntime(
            &py,
            &dir.0.join(format!("{name}.onnx")),
            &photos,
            &dir.0.join(format!("{name}-case")),
        );
        report.push(format!("{name}: max abs diff per output {}", sci(&diffs)));
    }

    // SqueezeNet end to end: quantize (4-bit SQ, reconstruction on photos), write the compact
    // model, evaluate it against the float model.
    let float_path = dir.0.join("squeezenet.onnx");
    let float = subsetq_onnx::load(&float_path).unwrap();
    let pre = Preprocess::from_sidecar(&Preprocess::sidecar_path(&float_path)).unwrap();
    let pattern = photos.join("imagenet_*.jpg");
    let samples = calibration(&pattern, &pre, CALIB, &mut quiet).unwrap();
    let mut opts = QuantizeOptions::new(4);
    opts.recon.calib_size = CALIB;
    opts.recon.iters = 4;
    opts.recon.batch = 4;
    opts.preprocess = Some(pre.clone());
    let q = quantize(&float, "squeezenet", &opts, Some(&samples), &mut quiet).unwrap();
    assert!(!q.blocks.is_empty(), "reconstruction ran no block");
    let quant_path = dir.0.join("squeezenet-w4.onnx");
    q.save(&quant_path).unwrap();
    let written = subsetq_onnx::load(&quant_path).unwrap();
    // The original's opset is kept (raising it to UINT4's 21 changes what its Softmax means).
    assert_eq!(written.opset(), float.opset());
    let data = load_data(
        &pattern,
        &pre,
        LabelSource::Unlabelled,
        Some(CALIB),
        &mut quiet,
    )
    .unwrap();
    let ours_q = Runner::new(&written, &pre)
        .unwrap()
        .outputs(&data, 4, "eval", &mut quiet)
        .unwrap();
    let ours_f = Runner::new(&float, &pre)
        .unwrap()
        .outputs(&data, 4, "eval", &mut quiet)
        .unwrap();
    let a = Agreement::between(&ours_f, &ours_q).unwrap();
    // Quantized, so not the float model, but nearer to it than the float outputs' spread.
    let mean =
        ours_f.values.iter().map(|&v| f64::from(v)).sum::<f64>() / ours_f.values.len() as f64;
    let spread = ours_f
        .values
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / ours_f.values.len() as f64;
    assert!(a.max_abs_diff > 0.0, "{a:?}");
    assert!(
        a.output_mse < spread,
        "{a:?}, float outputs' variance {spread:.3e}"
    );
    // The compact model runs in onnxruntime and agrees with our engine.
    let diffs = engine_vs_onnxruntime(&py, &quant_path, &photos, &dir.0.join("squeezenet-w4-case"));
    report.push(format!(
        "squeezenet 4-bit: vs float {a:?}; vs onnxruntime max abs diff per output {}",
        sci(&diffs)
    ));
    eprintln!("{}", report.join("\n"));
}
