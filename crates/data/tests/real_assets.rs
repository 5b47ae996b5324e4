//! The loaders on the real assets (`bash scripts/fetch-assets.sh`): MNIST and
//! Fashion-MNIST test sets, the foolbox photos with EfficientNet-Lite0's sidecar, and a
//! comparison of our preprocessing with Pillow's (the project's Python reference).
//! Missing assets skip these tests, or fail them under `CI=true`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use subsetq_data::{load, Dataset, LabelSource, Loader, Preprocess};
use subsetq_onnx::test_assets;

/// Largest |ours − Pillow| allowed on the preprocessed foolbox JPEG photos, in the
/// EfficientNet units (p − 127) / 128 of the sidecar. Two sources: the resize (the `image`
/// crate's triangle filter rounds differently from Pillow's fixed-point passes: ≤ 1 level)
/// and the JPEG decoder (zune-jpeg vs Pillow's libjpeg-turbo: 4:2:0 chroma upsampling differs
/// by up to 4–5 levels on decoded pixels, ≤ 3 after the 512 → 256 resize).
const PILLOW_JPEG_ATOL: f32 = 5.0 / 128.0;
/// ... and on average (mean |diff| over all 20 × 3 × 224 × 224 values).
const PILLOW_JPEG_MEAN_ATOL: f32 = 0.5 / 128.0;
/// PNG decoding is lossless: only the resize's rounding differs, by at most one level.
const PILLOW_PNG_LEVELS: f32 = 1.0;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}

fn class_counts(d: &Dataset, k: usize) -> Vec<usize> {
    let mut c = vec![0; k];
    for &l in d.labels.as_deref().unwrap() {
        c[l as usize] += 1;
    }
    c
}

#[test]
fn mnist_test_set() {
    let Some(images) = test_assets::require("data/mnist/t10k-images-idx3-ubyte") else {
        return;
    };
    let Some(sidecar) = test_assets::require("mnist-cnn.preprocess.json") else {
        return;
    };
    let pre = Preprocess::from_sidecar(&sidecar).unwrap();
    let t = Instant::now();
    let d = load(&images, &pre, None).unwrap();
    eprintln!("MNIST t10k (raw IDX): loaded in {:.1} ms", ms(t));
    assert_eq!(d.shape(), [10000, 1, 28, 28]);
    let labels = d.labels.as_deref().unwrap();
    assert_eq!(&labels[..10], &[7, 2, 1, 0, 4, 1, 4, 9, 5, 9]);
    // The MNIST test set's well-known class sizes.
    assert_eq!(
        class_counts(&d, 10),
        vec![980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
    let (lo, hi) = d
        .images
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    assert_eq!((lo, hi), (0.0, 1.0));
    assert_eq!(d.names[9999], "#9999");
}

#[test]
fn fashion_mnist_gz_test_set() {
    let Some(images) = test_assets::require("data/fashion-mnist/t10k-images-idx3-ubyte.gz") else {
        return;
    };
    let Some(sidecar) = test_assets::require("mnist-cnn.preprocess.json") else {
        return;
    };
    let pre = Preprocess::from_sidecar(&sidecar).unwrap();
    let t = Instant::now();
    let d = load(&images, &pre, None).unwrap();
    eprintln!("Fashion-MNIST t10k (gzip IDX): loaded in {:.1} ms", ms(t));
    assert_eq!(d.shape(), [10000, 1, 28, 28]);
    assert_eq!(class_counts(&d, 10), vec![1000; 10]);
    // The training split through the same path, limited.
    let train = images.with_file_name("train-images-idx3-ubyte.gz");
    if train.exists() {
        let d = load(&train, &pre, Some(100)).unwrap();
        assert_eq!((d.n, d.labels.as_ref().map(Vec::len)), (100, Some(100)));
    }
}

const FOOLBOX_IMAGENET_LABELS: [u32; 20] = [
    243, 559, 438, 990, 949, 853, 609, 609, 915, 455, 541, 630, 741, 471, 129, 99, 251, 22, 317,
    305,
];

#[test]
fn foolbox_imagenet_photos_match_pillow() {
    let Some(folder) = test_assets::require("data/foolbox") else {
        return;
    };
    let Some(sidecar) = test_assets::require("efficientnet-lite0.preprocess.json") else {
        return;
    };
    let pre = Preprocess::from_sidecar(&sidecar).unwrap();
    let t = Instant::now();
    let mut calls = 0;
    let d = Loader::new(&pre)
        .labels(LabelSource::FileName)
        .on_progress(|_| calls += 1)
        .load(&folder.join("imagenet_*.jpg"))
        .unwrap();
    eprintln!(
        "20 foolbox ImageNet photos (JPEG, resize 256, crop 224): loaded in {:.1} ms",
        ms(t)
    );
    assert!(calls >= 1);
    assert_eq!(d.shape(), [20, 3, 224, 224]);
    assert_eq!(d.labels.as_deref(), Some(&FOOLBOX_IMAGENET_LABELS[..]));
    assert_eq!(d.names[7], "imagenet_07_609.jpg");

    let Some(reference) = pillow(&sidecar, &folder, &d) else {
        return;
    };
    let (max, mean, over) = diff(&d.images, &reference, 1.5 / 128.0);
    eprintln!(
        "foolbox photos vs Pillow: max |diff| {max:.6} ({:.1} levels), mean |diff| {mean:.2e} \
         ({:.4} levels), {over} of {} values differ by 2 levels or more",
        max * 128.0,
        mean * 128.0,
        d.images.len()
    );
    assert!(max <= PILLOW_JPEG_ATOL, "max |diff| {max}");
    assert!(mean <= PILLOW_JPEG_MEAN_ATOL, "mean |diff| {mean}");
}

/// PNG photos (lossless): resize up and down, crop, RGB → gray and normalisation are
/// within one pixel level of Pillow's.
#[test]
fn png_pipeline_is_within_a_level_of_pillow() {
    let Some(folder) = test_assets::require("data/foolbox") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        // 32x32 RGB -> shrink to 20 (antialiased), crop 16x20, RGB.
        (
            "cifar100_*.png",
            r#""color": "RGB", "channels": 3,
               "resize": {"shorter_side": 20, "filter": "bilinear", "antialias": true},
               "crop": {"mode": "center", "size": [16, 20]}, "size": [16, 20],
               "scale": 0.00392156862745098, "mean": [0.485, 0.456, 0.406],
               "std": [0.229, 0.224, 0.225]"#,
        ),
        // 32x32 RGB -> gray, enlarge to 45, crop 40x40.
        (
            "cifar10_*.png",
            r#""color": "GRAY", "channels": 1,
               "resize": {"shorter_side": 45, "filter": "bilinear", "antialias": true},
               "crop": {"mode": "center", "size": [40, 40]}, "size": [40, 40],
               "scale": 1.0, "mean": [127.0], "std": [128.0]"#,
        ),
        // 28x28 gray -> RGB, shrink by a non-integer factor to 17, crop 15x13.
        (
            "mnist_*.png",
            r#""color": "RGB", "channels": 3,
               "resize": {"shorter_side": 17, "filter": "bilinear", "antialias": true},
               "crop": {"mode": "center", "size": [15, 13]}, "size": [15, 13],
               "scale": 1.0, "mean": [127.0, 127.0, 127.0], "std": [128.0, 128.0, 128.0]"#,
        ),
    ];
    for (i, (pattern, body)) in cases.iter().enumerate() {
        let sidecar = dir.path().join(format!("case{i}.preprocess.json"));
        std::fs::write(
            &sidecar,
            format!(
                r#"{{"schema": "subsetq-preprocess/1", "input": "input", "output": "logits",
                    "layout": "NCHW", {body}, "num_classes": 1000}}"#
            ),
        )
        .unwrap();
        let pre = Preprocess::from_sidecar(&sidecar).unwrap();
        let d = load(&folder.join(pattern), &pre, None).unwrap();
        assert_eq!(d.n, 20, "{pattern}");
        let Some(reference) = pillow(&sidecar, &folder, &d) else {
            return;
        };
        let (max, _, _) = diff(&d.images, &reference, 0.0);
        // One pixel level in this case's normalised units.
        let level = pre.scale / pre.std.iter().cloned().fold(f32::INFINITY, f32::min);
        eprintln!(
            "{pattern} vs Pillow: max |diff| {max} ({:.2} levels)",
            max / level
        );
        assert!(
            max <= PILLOW_PNG_LEVELS * level * 1.001,
            "{pattern}: max |diff| {max}"
        );
    }
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// (max |a − b|, mean |a − b|, count of |a − b| > over).
fn diff(a: &[f32], b: &[f32], over: f32) -> (f32, f32, usize) {
    assert_eq!(a.len(), b.len());
    let mut max = 0f32;
    let mut sum = 0f64;
    let mut n = 0;
    for (x, y) in a.iter().zip(b) {
        let d = (x - y).abs();
        max = max.max(d);
        sum += d as f64;
        n += usize::from(d > over);
    }
    (max, (sum / a.len() as f64) as f32, n)
}

/// The same images preprocessed by Pillow (`tests/pillow_preprocess.py`, which calls
/// `load_image` of `tests/python/test_assets.py`), or `None` (skip) without the project's
/// Python environment outside CI.
fn pillow(sidecar: &Path, folder: &Path, d: &Dataset) -> Option<Vec<f32>> {
    let python = workspace().join(".venv/bin/python");
    if !python.exists() {
        let msg = format!(
            "{} is missing: run `bash scripts/fetch-assets.sh` to make the Python environment",
            python.display()
        );
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
        eprintln!("skipping the Pillow comparison: {msg}");
        return None;
    }
    let out = tempfile::NamedTempFile::new().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pillow_preprocess.py");
    let status = Command::new(&python)
        .arg(&script)
        .arg(sidecar)
        .arg(out.path())
        .args(d.names.iter().map(|n| folder.join(n)))
        .status()
        .unwrap();
    assert!(status.success(), "{} failed", script.display());
    let bytes = std::fs::read(out.path()).unwrap();
    assert_eq!(bytes.len(), d.images.len() * 4);
    Some(
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    )
}
