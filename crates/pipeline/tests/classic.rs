//! Issue 13, item 4: the smaller classic CNNs of the onnx wheel, with seeded He-normal
//! weights (`scripts/classic_models.py`), agree with onnxruntime on real photos. The batch
//! is fixed to 1 in these models, so our engine runs the photos in chunks of one.
//! The long end-to-end runs (all nine, quantize and eval) are `scripts/classic-models.sh`.

use std::path::Path;
use std::process::Command;

use subsetq_onnx::test_assets::{python, require, root};
use subsetq_pipeline::run::{compare, read_numbered, run_dir, ONNX_TOLERANCE};

/// The bound on |ours − onnxruntime| for the models' outputs (probabilities).
const MAX_ABS_DIFF: f64 = 1e-4;
/// Logits of random-weight networks without batch norm grow with depth: their bound is
/// relative to their largest magnitude.
const LOGIT_REL_DIFF: f64 = 1e-5;
/// Photos per model.
const PHOTOS: &str = "2";

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

#[test]
fn small_classic_models_agree_with_onnxruntime_on_photos() {
    let (Some(py), Some(photos)) = (python(), require("data/foolbox")) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("subsetq-classic-{}", std::process::id()));
    let names = ["squeezenet", "shufflenet", "inception_v1", "densenet121"];
    let mut args = vec!["make", dir.to_str().unwrap()];
    args.extend(names);
    script(&py, &args);
    let mut report = Vec::new();
    for name in names {
        let case = dir.join(format!("{name}-case"));
        script(
            &py,
            &[
                "reference",
                dir.join(format!("{name}.onnx")).to_str().unwrap(),
                photos.to_str().unwrap(),
                "imagenet_",
                PHOTOS,
                case.to_str().unwrap(),
            ],
        );
        let ours = run_dir(&case.join("model.onnx"), &case).unwrap_or_else(|e| panic!("{name}: {e}"));
        let want = read_numbered(&case, "output").unwrap();
        assert_eq!(ours.len(), 2, "{name}: probabilities and logits");
        let probs = compare(&ours[0], &want[0], ONNX_TOLERANCE);
        let logits = compare(&ours[1], &want[1], ONNX_TOLERANCE);
        let top = want[1].data.iter().fold(0.0f64, |m, &v| m.max(f64::from(v).abs()));
        report.push(format!(
            "{name}: probabilities max abs diff {:.2e}, logits {:.2e} (largest |logit| {top:.3})",
            probs.max_abs_diff, logits.max_abs_diff
        ));
        assert!(probs.ok() && probs.max_abs_diff <= MAX_ABS_DIFF, "{name}: {probs:?}");
        assert!(
            logits.shape_mismatch.is_none()
                && logits.max_abs_diff <= LOGIT_REL_DIFF * top.max(1.0),
            "{name}: {logits:?}"
        );
    }
    eprintln!("{}", report.join("\n"));
    std::fs::remove_dir_all(dir).ok();
}
