//! Running a model on serialized tensors, as ONNX's backend tests store them
//! (`test_data_set_*/input_<i>.pb`, `output_<i>.pb`), and checking the outputs at the
//! tolerances of ONNX's test runner: `|ours − expected| ≤ atol + rtol · |expected|`.
//!
//! [`conformance_case`] runs one test case and says pass, fail (ran, wrong result) or
//! unsupported (the engine refused the model or its inputs before computing anything).

use std::path::{Path, PathBuf};

use subsetq_engine::burn_tensor::Device;
use subsetq_engine::{Engine, EngineError, Plan, Value};
use subsetq_onnx::{decode_tensor, encode_tensor_f32, read_tensor, ConstData, Model};

use crate::error::{Context, PipelineError, Result};

/// Relative and absolute tolerance of a comparison.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// Relative to the expected value.
    pub rtol: f64,
    /// Absolute.
    pub atol: f64,
}

/// The default of ONNX's backend test runner (`onnx.backend.test.loader`: rtol 1e-3,
/// atol 1e-7); a case's `data.json` may set its own.
pub const ONNX_TOLERANCE: Tolerance = Tolerance {
    rtol: 1e-3,
    atol: 1e-7,
};

/// A named float32 tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    /// The tensor's name (the graph input or output, or the name stored in the `.pb`).
    pub name: String,
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Elements, row-major.
    pub data: Vec<f32>,
}

/// Reads a serialized `TensorProto` file as float32 (FLOAT or DOUBLE data; an integer tensor
/// is an error naming the file).
pub fn read_tensor_file(path: &Path) -> Result<NamedTensor> {
    let what = || path.display().to_string();
    let bytes = std::fs::read(path)
        .map_err(|source| subsetq_onnx::OnnxError::Io {
            path: path.to_path_buf(),
            source,
        })
        .context_with(what)?;
    let proto = decode_tensor(&bytes, &what())?;
    let name = proto.name().to_string();
    let t = read_tensor(&proto, &what())?;
    let data = match t.data {
        ConstData::F32(v) => v,
        ConstData::I64(_) => {
            return Err(PipelineError::invalid(format!(
                "{}: integer tensors are not supported as model inputs (float32 only)",
                what()
            )))
        }
    };
    Ok(NamedTensor {
        name,
        shape: t.shape,
        data,
    })
}

/// Writes `t` as a serialized FLOAT `TensorProto` (atomically).
pub fn write_tensor_file(path: &Path, t: &NamedTensor) -> Result<()> {
    subsetq_onnx::write_atomically(path, &encode_tensor_f32(&t.name, &t.shape, &t.data)).map_err(
        |source| PipelineError::Write {
            path: path.to_path_buf(),
            source,
        },
    )
}

/// The `prefix_<i>.pb` files of `dir`, in index order (`input_0.pb`, `input_1.pb`, …).
pub fn numbered_files(dir: &Path, prefix: &str) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for i in 0.. {
        let p = dir.join(format!("{prefix}_{i}.pb"));
        if !p.is_file() {
            break;
        }
        files.push(p);
    }
    if files.is_empty() && !dir.is_dir() {
        return Err(PipelineError::invalid(format!(
            "{}: not a directory",
            dir.display()
        )));
    }
    Ok(files)
}

/// Runs `model` on `inputs`, given in the order of the graph's runtime inputs (as ONNX's
/// runner feeds them), on the CPU; returns every graph output.
pub fn run_tensors(model: &Model, inputs: &[NamedTensor]) -> Result<Vec<NamedTensor>> {
    let device = Device::flex();
    let engine = Engine::new(Plan::from_model(model)?, &device)?;
    let specs = engine.plan().inputs();
    if specs.len() != inputs.len() {
        return Err(PipelineError::invalid(format!(
            "the model has {} inputs, {} tensors were given",
            specs.len(),
            inputs.len()
        )));
    }
    let mut values = Vec::with_capacity(inputs.len());
    for (spec, t) in specs.iter().zip(inputs) {
        // A scalar is held as [1] by the engine.
        let shape = if t.shape.is_empty() {
            vec![1]
        } else {
            t.shape.clone()
        };
        let v =
            Value::from_f32(t.data.clone(), &shape, &device).ok_or_else(|| EngineError::Input {
                name: spec.name.clone(),
                msg: format!("shape {:?} cannot be held by the engine", t.shape),
            })?;
        values.push((spec.name.as_str(), v));
    }
    let outs = engine.run(&values)?;
    Ok(engine
        .plan()
        .output_names()
        .into_iter()
        .zip(outs)
        .map(|(name, v)| NamedTensor {
            name: name.to_string(),
            shape: v.dims(),
            data: v.to_vec(),
        })
        .collect())
}

/// Runs the model at `model` on the `input_<i>.pb` files of `dir` (what `subsetq run` does).
pub fn run_dir(model: &Path, dir: &Path) -> Result<Vec<NamedTensor>> {
    let m = subsetq_onnx::load(model)?;
    let inputs = read_numbered(dir, "input")?;
    run_tensors(&m, &inputs).context_with(|| model.display().to_string())
}

/// The `prefix_<i>.pb` tensors of `dir`; an error when there are none.
pub fn read_numbered(dir: &Path, prefix: &str) -> Result<Vec<NamedTensor>> {
    let files = numbered_files(dir, prefix)?;
    if files.is_empty() {
        return Err(PipelineError::invalid(format!(
            "{}: no {prefix}_0.pb",
            dir.display()
        )));
    }
    files.iter().map(|f| read_tensor_file(f)).collect()
}

/// How one output compares with its expected value.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputCheck {
    /// The output.
    pub name: String,
    /// Largest `|ours − expected|`.
    pub max_abs_diff: f64,
    /// Elements outside `atol + rtol · |expected|` (NaN against a number counts).
    pub mismatched: usize,
    /// Shapes differ (then nothing else is compared).
    pub shape_mismatch: Option<(Vec<usize>, Vec<usize>)>,
}

impl OutputCheck {
    /// Whether the output is within tolerance.
    pub fn ok(&self) -> bool {
        self.shape_mismatch.is_none() && self.mismatched == 0
    }
}

/// Compares `got` with `want` element by element (scalars: `[]` and `[1]` are the same shape).
pub fn compare(got: &NamedTensor, want: &NamedTensor, tol: Tolerance) -> OutputCheck {
    let norm = |s: &[usize]| -> Vec<usize> { s.iter().copied().filter(|&d| d != 1).collect() };
    if norm(&got.shape) != norm(&want.shape) || got.data.len() != want.data.len() {
        return OutputCheck {
            name: got.name.clone(),
            max_abs_diff: f64::INFINITY,
            mismatched: want.data.len(),
            shape_mismatch: Some((got.shape.clone(), want.shape.clone())),
        };
    }
    let mut max_abs_diff = 0.0f64;
    let mut mismatched = 0;
    for (&g, &w) in got.data.iter().zip(&want.data) {
        let (g, w) = (f64::from(g), f64::from(w));
        let same_special = (g.is_nan() && w.is_nan()) || (g.is_infinite() && g == w);
        if same_special {
            continue;
        }
        let d = (g - w).abs();
        if d.is_nan() || d > tol.atol + tol.rtol * w.abs() {
            mismatched += 1;
        }
        max_abs_diff = max_abs_diff.max(if d.is_nan() { f64::INFINITY } else { d });
    }
    OutputCheck {
        name: got.name.clone(),
        max_abs_diff,
        mismatched,
        shape_mismatch: None,
    }
}

/// The outcome of one conformance case.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Every output within tolerance; the largest absolute difference.
    Pass(f64),
    /// It ran, but an output differs (or an error happened while running).
    Fail(String),
    /// The engine refused the model or its inputs before computing (unsupported operator,
    /// attribute, input type, …): the reason.
    Unsupported(String),
}

/// The input of ONNX's runner for the `light` models, which ship no input: for each runtime
/// input, `arange(n).reshape(shape) / n` as float32, free dimensions set to 1.
pub fn light_model_inputs(model: &Model) -> Result<Vec<NamedTensor>> {
    let plan = Plan::from_model(model)?;
    plan.inputs()
        .iter()
        .map(|spec| {
            let shape: Vec<usize> = spec
                .dims
                .as_ref()
                .map(|d| d.iter().map(|x| x.unwrap_or(1)).collect())
                .ok_or_else(|| {
                    PipelineError::invalid(format!("input {} declares no shape", spec.name))
                })?;
            let n: usize = shape.iter().product();
            Ok(NamedTensor {
                name: spec.name.clone(),
                shape,
                data: (0..n).map(|i| (i as f64 / n as f64) as f32).collect(),
            })
        })
        .collect()
}

/// Runs one case: `model` on `inputs`, compared with `expected` (in output order) at `tol`.
pub fn conformance_case(
    model: &Path,
    inputs: &[NamedTensor],
    expected: &[NamedTensor],
    tol: Tolerance,
) -> Outcome {
    let model = match subsetq_onnx::load(model) {
        Ok(m) => m,
        Err(e) => return Outcome::Unsupported(e.to_string()),
    };
    // Planning (and the shape checks for these inputs) is where the engine refuses.
    if let Err(e) = Plan::from_model(&model) {
        return Outcome::Unsupported(crate::one_line(&e));
    }
    let outputs = match run_tensors(&model, inputs) {
        Ok(o) => o,
        Err(e) => {
            let line = crate::one_line(&e);
            return match e {
                PipelineError::Engine(
                    EngineError::Input { .. }
                    | EngineError::Node { .. }
                    | EngineError::Tensor { .. },
                )
                | PipelineError::Invalid(_) => Outcome::Unsupported(line),
                _ => Outcome::Fail(line),
            };
        }
    };
    if outputs.len() < expected.len() {
        return Outcome::Fail(format!(
            "{} outputs, {} expected",
            outputs.len(),
            expected.len()
        ));
    }
    let mut worst = 0.0f64;
    for (got, want) in outputs.iter().zip(expected) {
        let c = compare(got, want, tol);
        if let Some((g, w)) = &c.shape_mismatch {
            return Outcome::Fail(format!("output {}: shape {g:?}, expected {w:?}", c.name));
        }
        if !c.ok() {
            return Outcome::Fail(format!(
                "output {}: {} of {} elements outside rtol {:e} / atol {:e} (max abs diff {:.3e})",
                c.name,
                c.mismatched,
                want.data.len(),
                tol.rtol,
                tol.atol,
                c.max_abs_diff
            ));
        }
        worst = worst.max(c.max_abs_diff);
    }
    Outcome::Pass(worst)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(data: Vec<f32>) -> NamedTensor {
        NamedTensor {
            name: "y".into(),
            shape: vec![data.len()],
            data,
        }
    }

    #[test]
    fn tolerance_is_onnx_runners() {
        let want = t(vec![1000.0, 0.0, f32::NAN]);
        // 1000 · 1e-3 + 1e-7 allows ~1.0 at 1000, 1e-7 at 0
        let ok = compare(&t(vec![1000.9, 5e-8, f32::NAN]), &want, ONNX_TOLERANCE);
        assert!(ok.ok(), "{ok:?}");
        let bad = compare(&t(vec![1001.1, 2e-7, 0.0]), &want, ONNX_TOLERANCE);
        assert_eq!(bad.mismatched, 3);
        let shape = compare(&t(vec![1.0, 2.0]), &want, ONNX_TOLERANCE);
        assert!(shape.shape_mismatch.is_some());
    }

    #[test]
    fn tensor_files_round_trip() {
        let dir = std::env::temp_dir().join(format!("subsetq-run-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let x = NamedTensor {
            name: "x".into(),
            shape: vec![2, 1, 3],
            data: vec![1.0, -2.0, 3.5, 0.0, 1e-9, 7.0],
        };
        write_tensor_file(&dir.join("input_0.pb"), &x).unwrap();
        assert_eq!(read_tensor_file(&dir.join("input_0.pb")).unwrap(), x);
        assert_eq!(numbered_files(&dir, "input").unwrap().len(), 1);
        assert!(numbered_files(&dir.join("nowhere"), "input").is_err());
        std::fs::write(dir.join("bad.pb"), b"\xff\xff\xff").unwrap();
        let e = read_tensor_file(&dir.join("bad.pb"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad.pb"), "{e}");
        std::fs::remove_dir_all(dir).ok();
    }
}
