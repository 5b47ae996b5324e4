//! Shared helpers of the integration tests: the real assets, the project's
//! Python venv (for onnxruntime references), temp dirs, raw f32 files.
//!
//! Missing assets or venv skip a test with a message, except under CI
//! (`CI=true`), where they fail: run `bash scripts/fetch-assets.sh`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root.
pub fn root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .unwrap_or(manifest)
        .to_path_buf()
}

fn missing(what: &str) -> Option<PathBuf> {
    let msg =
        format!("{what} is missing: run `bash scripts/fetch-assets.sh` from the workspace root");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg}");
    }
    eprintln!("skipping: {msg}");
    None
}

/// `assets/<relative>`, or `None` (skip) when missing outside CI.
pub fn asset(relative: &str) -> Option<PathBuf> {
    subsetq_onnx::test_assets::require(relative)
}

/// The venv's Python with onnxruntime, or `None` (skip) when missing outside CI.
pub fn python() -> Option<PathBuf> {
    let py = root().join(".venv/bin/python");
    if py.exists() {
        Some(py)
    } else {
        missing(&format!("{} (Python venv with onnxruntime)", py.display()))
    }
}

/// Runs `ort_reference.py` with `args`; returns its stdout. Panics with its
/// stderr on failure.
pub fn ort_reference(py: &Path, args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ort_reference.py");
    let out = Command::new(py)
        .arg(&script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", py.display()));
    assert!(
        out.status.success(),
        "{} {:?} failed:\n{}",
        script.display(),
        args,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fresh, empty temp dir, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "subsetq-engine-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    pub fn str(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Little-endian f32s of a raw file.
pub fn read_f32(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Writes little-endian f32s.
pub fn write_f32(path: &Path, data: &[f32]) {
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// Parses "2,3,4" into dims.
pub fn parse_shape(s: &str) -> Vec<usize> {
    s.trim()
        .split(',')
        .map(|d| d.parse().unwrap_or_else(|_| panic!("bad shape {s:?}")))
        .collect()
}

/// The first `n` images of an IDX image file, pixels / 255, as NCHW f32.
pub fn read_idx_images(path: &Path, n: usize) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        bytes.len() >= 16,
        "{}: too short for an IDX header",
        path.display()
    );
    let be = |i: usize| {
        u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]) as usize
    };
    assert_eq!(be(0), 0x803, "{}: not an IDX image file", path.display());
    let (count, rows, cols) = (be(4), be(8), be(12));
    let n = n.min(count);
    let pixels = &bytes[16..16 + n * rows * cols];
    let data = pixels.iter().map(|&p| f32::from(p) / 255.0).collect();
    (vec![n, 1, rows, cols], data)
}

/// Index of the largest element of each row.
pub fn argmax_rows(data: &[f32], cols: usize) -> Vec<usize> {
    data.chunks(cols)
        .map(|row| {
            row.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                    if v > best.1 {
                        (i, v)
                    } else {
                        best
                    }
                })
                .0
        })
        .collect()
}

/// Largest absolute difference.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
