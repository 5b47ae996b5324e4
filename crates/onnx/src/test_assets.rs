//! Locating the real assets (`assets/`, made by `scripts/fetch-assets.sh`) from tests.
//!
//! A missing asset skips the test with a message saying how to fetch it, except under CI
//! (`CI=true`), where it fails: a missing asset must never pass silently there.

use std::path::{Path, PathBuf};

/// The workspace's `assets/` folder.
pub fn dir() -> PathBuf {
    // crates/onnx -> workspace root
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .unwrap_or(manifest)
        .join("assets")
}

/// `assets/<relative>` if it exists; `None` (after printing why) when it is missing outside CI.
///
/// # Panics
/// When the asset is missing and `CI=true`.
pub fn require(relative: &str) -> Option<PathBuf> {
    let path = dir().join(relative);
    if path.exists() {
        return Some(path);
    }
    let msg = format!(
        "{} is missing: run `bash scripts/fetch-assets.sh` from the workspace root",
        path.display()
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg}");
    }
    eprintln!("skipping: {msg}");
    None
}
