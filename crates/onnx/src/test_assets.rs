//! Locating the real assets (`assets/`, made by `scripts/fetch-assets.sh`) and the project's
//! Python venv (onnxruntime references) from tests.
//!
//! A missing asset or venv skips the test with a message saying how to fetch it, except under
//! CI (`CI=true`), where it fails: a missing asset must never pass silently there.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root.
pub fn root() -> PathBuf {
    // crates/onnx -> workspace root
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .unwrap_or(manifest)
        .to_path_buf()
}

/// The workspace's `assets/` folder.
pub fn dir() -> PathBuf {
    root().join("assets")
}

fn existing_or_skip(path: PathBuf, what: &str) -> Option<PathBuf> {
    if path.exists() {
        return Some(path);
    }
    let msg = format!(
        "{}{what} is missing: run `bash scripts/fetch-assets.sh` from the workspace root",
        path.display()
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg}");
    }
    eprintln!("skipping: {msg}");
    None
}

/// `assets/<relative>` if it exists; `None` (after printing why) when it is missing outside CI.
///
/// # Panics
/// When the asset is missing and `CI=true`.
pub fn require(relative: &str) -> Option<PathBuf> {
    existing_or_skip(dir().join(relative), "")
}

/// The venv's Python (with onnxruntime), or `None` (after printing why) when it is missing
/// outside CI.
///
/// # Panics
/// When the venv is missing and `CI=true`.
pub fn python() -> Option<PathBuf> {
    existing_or_skip(
        root().join(".venv/bin/python"),
        " (Python venv with onnxruntime)",
    )
}

/// Runs `tests/python/ort_reference.py` (onnxruntime references; its docstring lists the
/// commands) with `python`; returns its stdout.
///
/// # Panics
/// When the script cannot be run or fails (with its stderr).
pub fn ort_reference(python: &Path, args: &[&str]) -> String {
    let script = root().join("tests/python/ort_reference.py");
    let out = Command::new(python)
        .arg(&script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    assert!(
        out.status.success(),
        "{} {:?} failed:\n{}",
        script.display(),
        args,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `onnx` wheel's backend test data (`onnx/backend/test/data/<folder>` inside the
/// project venv's site-packages), or `None` (after printing why) when it is missing outside
/// CI.
///
/// # Panics
/// When it is missing and `CI=true`.
pub fn onnx_backend_data(folder: &str) -> Option<PathBuf> {
    let lib = root().join(".venv/lib");
    let found = std::fs::read_dir(&lib).ok().and_then(|dirs| {
        dirs.filter_map(|d| d.ok())
            .map(|d| {
                d.path()
                    .join("site-packages/onnx/backend/test/data")
                    .join(folder)
            })
            .find(|p| p.is_dir())
    });
    match found {
        Some(p) => Some(p),
        None => existing_or_skip(
            lib.join("python3/site-packages/onnx/backend/test/data")
                .join(folder),
            " (the onnx wheel in the Python venv)",
        ),
    }
}
