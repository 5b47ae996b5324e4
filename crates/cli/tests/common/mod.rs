//! Helpers shared by the `subsetq` binary's integration tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs the `subsetq` binary with `args`.
pub fn subsetq(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_subsetq"))
        .args(args)
        .output()
        .expect("run subsetq")
}

/// Runs the `subsetq` binary, asserts that it succeeded (showing its stderr if not) and
/// returns its stdout.
pub fn subsetq_ok(args: &[&str]) -> String {
    let out = subsetq(args);
    assert!(
        out.status.success(),
        "subsetq {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fresh, empty temp dir for this test process; `tag` must differ between the tests of one
/// file (they run in parallel).
pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("subsetq-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// A raw little-endian float32 file.
pub fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}
