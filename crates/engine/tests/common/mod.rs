//! Shared helpers of the integration tests: the real assets, the project's
//! Python venv (for onnxruntime references), temp dirs, raw f32 files.
//!
//! Missing assets or venv skip a test with a message, except under CI
//! (`CI=true`), where they fail: run `bash scripts/fetch-assets.sh`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

#[allow(unused_imports)]
pub use subsetq_onnx::test_assets::{ort_reference, python, root};

/// `assets/<relative>`, or `None` (skip) when missing outside CI.
pub fn asset(relative: &str) -> Option<PathBuf> {
    subsetq_onnx::test_assets::require(relative)
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
