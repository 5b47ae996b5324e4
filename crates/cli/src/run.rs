//! `subsetq run`: a model on serialized input tensors (ONNX test-case layout), printing or
//! writing its outputs, or checking them against the expected ones beside the inputs.

use std::path::PathBuf;

use anyhow::{bail, Result};
use subsetq_pipeline::run::{compare, read_numbered, run_dir, write_tensor_file, Tolerance};

#[derive(clap::Args)]
pub struct RunArgs {
    /// The ONNX model (read only).
    model: PathBuf,
    /// Folder with `input_0.pb`, `input_1.pb`, … (serialized TensorProtos, in graph input
    /// order), as in ONNX's test data sets.
    #[arg(long)]
    inputs: PathBuf,
    /// Compare with `output_0.pb`, … in the same folder: |ours − expected| ≤ atol + rtol ·
    /// |expected| (ONNX's runner); a mismatch is an error.
    #[arg(long)]
    check: bool,
    /// Relative tolerance of --check (ONNX's default).
    #[arg(long, default_value_t = 1e-3)]
    rtol: f64,
    /// Absolute tolerance of --check (ONNX's default).
    #[arg(long, default_value_t = 1e-7)]
    atol: f64,
    /// Write the outputs here as `output_0.pb`, … (the folder is created).
    #[arg(short = 'o', long = "output")]
    out_dir: Option<PathBuf>,
}

pub fn run(args: &RunArgs) -> Result<()> {
    if args.out_dir.as_deref() == Some(args.inputs.as_path()) {
        bail!("--output must not be the --inputs folder (its output_*.pb are the expected ones)");
    }
    let outputs = run_dir(&args.model, &args.inputs)?;
    let expected = if args.check {
        read_numbered(&args.inputs, "output")?
    } else {
        Vec::new()
    };
    let tol = Tolerance {
        rtol: args.rtol,
        atol: args.atol,
    };
    let mut failed = Vec::new();
    for (i, out) in outputs.iter().enumerate() {
        let mut line = format!("output {i} {} {:?}", out.name, out.shape);
        if let Some(want) = expected.get(i) {
            let c = compare(out, want, tol);
            if let Some((got, w)) = &c.shape_mismatch {
                line.push_str(&format!(": shape {got:?}, expected {w:?}"));
            } else {
                line.push_str(&format!(
                    ": max abs diff {:.3e}, {} of {} outside tolerance",
                    c.max_abs_diff,
                    c.mismatched,
                    want.data.len()
                ));
            }
            if !c.ok() {
                failed.push(out.name.clone());
            }
        }
        println!("{line}");
    }
    if let Some(dir) = &args.out_dir {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
        for (i, out) in outputs.iter().enumerate() {
            write_tensor_file(&dir.join(format!("output_{i}.pb")), out)?;
        }
    }
    if args.check {
        if expected.len() != outputs.len() {
            bail!(
                "check failed: the model has {} outputs, {} expected",
                outputs.len(),
                expected.len()
            );
        }
        if !failed.is_empty() {
            bail!(
                "check failed: {} outside rtol {:e} / atol {:e}",
                failed.join(", "),
                tol.rtol,
                tol.atol
            );
        }
        println!("check passed (rtol {:e}, atol {:e})", tol.rtol, tol.atol);
    }
    Ok(())
}
