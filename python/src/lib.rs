//! `subsetq._subsetq`: the native module of the `subsetq` Python package. Glue only, like the
//! command line: turn Python arguments into the pipeline's typed options, call
//! `subsetq_pipeline` with the GIL released, turn the results into Python objects. Each function
//! does what its `subsetq` subcommand does, with the same defaults, so that the results are the
//! same bytes.
//!
//! Errors are the CLI's one-line messages: `FileNotFoundError` when a file is missing,
//! `OSError` when writing fails, `ValueError` for everything else the input gets wrong.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use numpy::{PyReadonlyArrayDyn, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::{PyFileNotFoundError, PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyByteArray, PyBytes};
use subsetq_data::{Color, Dataset, LabelSource, Preprocess};
use subsetq_engine::Backend;
use subsetq_onnx::Model;
use subsetq_pipeline::data::{calibration, load_data, samples_from_array, PreprocessOverrides};
use subsetq_pipeline::eval::{Agreement, Runner, Scores};
use subsetq_pipeline::mixed::{BitBudget, MixedOptions};
use subsetq_pipeline::packed::Kernels;
use subsetq_pipeline::progress::{Bar, Progress};
use subsetq_pipeline::search::search_model;
use subsetq_pipeline::write::refuse_to_overwrite_input;
use subsetq_pipeline::{
    quantize as run_quantize, Context, Granularity, PipelineError, QuantizeOptions, Quantizer,
    ReconOptions, Samples, SearchOptions, WeightForm,
};

/// Name of a model given as bytes, in messages.
const MODEL_BYTES: &str = "<bytes>";

/// A Python error raised while the pipeline ran (by a progress callback, or Ctrl-C).
struct Interrupted;

/// Runs `work` with the GIL released. The pipeline's errors become Python exceptions; an
/// exception raised in a progress callback (or a pending KeyboardInterrupt) stops the work and
/// is raised instead.
fn run_detached<T: Send>(
    py: Python<'_>,
    reporter: &mut Reporter,
    work: impl FnOnce(&mut Reporter) -> subsetq_pipeline::Result<T> + Send,
) -> PyResult<T> {
    let outcome = py.detach(|| catch_unwind(AssertUnwindSafe(|| work(reporter))));
    match outcome {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(to_py_err(&e)),
        Err(payload) => match (payload.downcast_ref::<Interrupted>(), reporter.error.take()) {
            (Some(_), Some(err)) => Err(err),
            _ => resume_unwind(payload),
        },
    }
}

/// The pipeline's error as the Python exception with the CLI's one-line message.
fn to_py_err(e: &PipelineError) -> PyErr {
    let msg = e.one_line();
    if e.is_not_found() {
        PyFileNotFoundError::new_err(msg)
    } else if matches!(e, PipelineError::Write { .. }) {
        PyOSError::new_err(msg)
    } else {
        PyValueError::new_err(msg)
    }
}

/// Where progress goes: `progress=False` nowhere, `True` a bar on stderr, a callable gets
/// `(stage, done, total, message)`.
struct Reporter {
    mode: Mode,
    /// The exception that stopped the work.
    error: Option<PyErr>,
    /// Last time pending signals (Ctrl-C) were checked.
    checked: Instant,
}

enum Mode {
    Quiet,
    Bar(Bar),
    Callback(Py<PyAny>),
}

/// How often Ctrl-C is looked for without a callback (each look takes the GIL).
const SIGNAL_CHECK_EVERY: Duration = Duration::from_millis(100);

impl Reporter {
    /// `None` (the native module's default; the package's is `True`): quiet.
    fn from_arg(progress: Option<&Bound<'_, PyAny>>) -> PyResult<Reporter> {
        let mode = if let Some(progress) = progress.filter(|p| !p.is_none()) {
            Self::mode(progress)?
        } else {
            Mode::Quiet
        };
        Ok(Reporter {
            mode,
            error: None,
            checked: Instant::now(),
        })
    }

    fn mode(progress: &Bound<'_, PyAny>) -> PyResult<Mode> {
        if let Ok(flag) = progress.cast::<PyBool>() {
            return Ok(if flag.is_true() {
                Mode::Bar(Bar::new())
            } else {
                Mode::Quiet
            });
        }
        if progress.is_callable() {
            return Ok(Mode::Callback(progress.clone().unbind()));
        }
        Err(PyTypeError::new_err(format!(
            "progress: expected True, False or a callable (stage, done, total, message), got {}",
            type_name(progress)
        )))
    }

    /// Called by the pipeline (GIL released). Unwinds out of the pipeline when Python raised.
    fn report(&mut self, p: &Progress) {
        let result = match &mut self.mode {
            Mode::Callback(f) => Python::attach(|py| {
                py.check_signals()?;
                f.call1(py, (p.stage.as_str(), p.done, p.total, p.message.as_str()))
                    .map(drop)
            }),
            mode => {
                if let Mode::Bar(bar) = mode {
                    bar.update(p);
                }
                if self.checked.elapsed() < SIGNAL_CHECK_EVERY {
                    return;
                }
                self.checked = Instant::now();
                Python::attach(|py| py.check_signals())
            }
        };
        if let Err(e) = result {
            self.error = Some(e);
            // No panic hook (no message): caught in `run_detached`.
            resume_unwind(Box::new(Interrupted));
        }
    }

    /// Clears the bar at the end of a stage.
    fn finish(&mut self) {
        if let Mode::Bar(bar) = &mut self.mode {
            bar.finish();
        }
    }
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// A model: a file, or ONNX bytes.
enum ModelArg {
    Path(PathBuf),
    Bytes(Vec<u8>),
}

impl ModelArg {
    fn from_arg(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<ModelArg> {
        if let Ok(b) = obj.cast::<PyBytes>() {
            return Ok(ModelArg::Bytes(b.as_bytes().to_vec()));
        }
        if let Ok(b) = obj.cast::<PyByteArray>() {
            return Ok(ModelArg::Bytes(b.to_vec()));
        }
        obj.extract::<PathBuf>().map(ModelArg::Path).map_err(|_| {
            PyTypeError::new_err(format!(
                "{what}: expected a path (str or os.PathLike) or ONNX bytes, got {}",
                type_name(obj)
            ))
        })
    }

    /// The model's name in messages (the CLI's: the path as given).
    fn name(&self) -> String {
        match self {
            ModelArg::Path(p) => p.display().to_string(),
            ModelArg::Bytes(_) => MODEL_BYTES.to_string(),
        }
    }

    /// The path beside which its preprocessing sidecar would be.
    fn path(&self) -> &Path {
        match self {
            ModelArg::Path(p) => p,
            ModelArg::Bytes(_) => Path::new(MODEL_BYTES),
        }
    }

    fn load(&self) -> subsetq_pipeline::Result<Model> {
        match self {
            ModelArg::Path(p) => subsetq_pipeline::load_model(p),
            ModelArg::Bytes(b) => Ok(subsetq_onnx::decode(b)?),
        }
    }
}

/// Images: a data path (IDX file, image folder, image file, `folder/pattern*.jpg`), or an
/// already preprocessed float32 N × C × H × W array.
enum ImagesArg {
    Path(PathBuf),
    Array { data: Vec<f32>, shape: Vec<usize> },
}

impl ImagesArg {
    fn from_arg(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<ImagesArg> {
        if let Ok(array) = obj.cast::<PyUntypedArray>() {
            let Ok(array) = obj.extract::<PyReadonlyArrayDyn<'_, f32>>() else {
                return Err(PyTypeError::new_err(format!(
                    "{what}: expected a float32 array, got dtype {}",
                    array.dtype()
                )));
            };
            let shape = array.shape().to_vec();
            let data = match array.as_slice() {
                Ok(s) => s.to_vec(),
                Err(_) => array.as_array().iter().copied().collect(),
            };
            return Ok(ImagesArg::Array { data, shape });
        }
        obj.extract::<PathBuf>().map(ImagesArg::Path).map_err(|_| {
            PyTypeError::new_err(format!(
                "{what}: expected a path (str or os.PathLike) or a float32 N×C×H×W numpy array, got {}",
                type_name(obj)
            ))
        })
    }

    fn name(&self) -> String {
        match self {
            ImagesArg::Path(p) => p.display().to_string(),
            ImagesArg::Array { shape, .. } => format!("<array {shape:?}>"),
        }
    }
}

/// `name=v`, refused (ValueError, as the CLI's flag parser) outside `lo..=hi`.
fn in_range<T: TryFrom<i128>>(name: &str, v: i128, lo: i128, hi: i128) -> PyResult<T> {
    if v < lo || v > hi {
        let range = if hi == i128::MAX {
            format!("{lo}..")
        } else {
            format!("{lo}..={hi}")
        };
        return Err(PyValueError::new_err(format!(
            "invalid value {v} for {name}: {v} is not in {range}"
        )));
    }
    T::try_from(v).map_err(|_| PyValueError::new_err(format!("invalid value {v} for {name}")))
}

fn invalid(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// The search options of `search` / `quantize` (the CLI's `CommonArgs`).
fn search_options(
    bits: i128,
    first_last_bits: i128,
    uset: &str,
    method: &str,
    granularity: Granularity,
) -> PyResult<SearchOptions> {
    Ok(SearchOptions {
        bits: in_range("bits", bits, 2, 8)?,
        first_last_bits: in_range("first_last_bits", first_last_bits, 2, 8)?,
        uset: subsetq_core::UniversalSet::parse(uset)
            .map_err(|e| to_py_err(&PipelineError::from(e)))?,
        method: method.parse().map_err(invalid)?,
        granularity,
    })
}

/// Preprocessing: a file, else the model's sidecar, else the model's metadata (as the CLI
/// without flags).
fn overrides(preprocess: Option<PathBuf>) -> PreprocessOverrides {
    PreprocessOverrides {
        file: preprocess,
        ..PreprocessOverrides::default()
    }
}

/// Per-layer search reports, as `subsetq search --json` lists them under `layers`.
#[pyfunction]
#[pyo3(signature = (model, *, bits=4, uset="paper", method="fast", first_last_bits=8, progress=None))]
fn search<'py>(
    py: Python<'py>,
    model: &Bound<'py, PyAny>,
    bits: i128,
    uset: &str,
    method: &str,
    first_last_bits: i128,
    progress: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let model = ModelArg::from_arg(model, "model")?;
    // `subsetq search` searches with one scale per layer (the paper).
    let opts = search_options(bits, first_last_bits, uset, method, Granularity::Tensor)?;
    let mut reporter = Reporter::from_arg(progress)?;
    let reports = run_detached(py, &mut reporter, |r| {
        let loaded = model.load()?;
        let reports = search_model(&loaded, &model.name(), &opts, &mut |p| r.report(p))?;
        r.finish();
        Ok(reports)
    })?;
    Ok(pythonize::pythonize(py, &reports)?)
}

/// The quantized model's bytes, written to `output` too when given (`subsetq quantize`).
#[pyfunction]
#[pyo3(signature = (
    model, output=None, *, bits=4, quantizer="sq", granularity="channel", calib=None,
    calib_size=256, iters=500, batch=32, lr=None, seed=0, abits=None, weights="codes",
    uset="paper", method="fast", first_last_bits=8, preprocess=None, device="cpu",
    avg_bits=None, size_budget=None, progress=None,
))]
#[allow(clippy::too_many_arguments)]
fn quantize<'py>(
    py: Python<'py>,
    model: &Bound<'py, PyAny>,
    output: Option<PathBuf>,
    bits: i128,
    quantizer: &str,
    granularity: &str,
    calib: Option<&Bound<'py, PyAny>>,
    calib_size: i128,
    iters: i128,
    batch: i128,
    lr: Option<f64>,
    seed: i128,
    abits: Option<i128>,
    weights: &str,
    uset: &str,
    method: &str,
    first_last_bits: i128,
    preprocess: Option<PathBuf>,
    device: &str,
    avg_bits: Option<f64>,
    size_budget: Option<i128>,
    progress: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyBytes>> {
    let budget = match (avg_bits, size_budget) {
        (Some(_), Some(_)) => {
            return Err(PyValueError::new_err(
                "give avg_bits or size_budget, not both",
            ))
        }
        (Some(a), None) => Some(BitBudget::AvgBits(a)),
        (None, Some(b)) => Some(BitBudget::Bytes(in_range(
            "size_budget",
            b,
            1,
            i128::from(u64::MAX),
        )?)),
        (None, None) => None,
    };
    let model = ModelArg::from_arg(model, "model")?;
    let granularity: Granularity = granularity.parse().map_err(|e| to_py_err(&e))?;
    let opts = QuantizeOptions {
        search: search_options(bits, first_last_bits, uset, method, granularity)?,
        quantizer: quantizer.parse::<Quantizer>().map_err(|e| to_py_err(&e))?,
        recon: ReconOptions {
            calib_size: in_range("calib_size", calib_size, 1, i128::MAX)?,
            iters: in_range("iters", iters, 0, i128::MAX)?,
            batch: in_range("batch", batch, 1, i128::MAX)?,
            lr,
            seed: in_range("seed", seed, 0, i128::from(u64::MAX))?,
            backend: match device {
                "cpu" => Backend::Cpu,
                "cuda" => Backend::Cuda,
                _ => {
                    return Err(PyValueError::new_err(format!(
                        "unknown device {device:?}; expected cpu or cuda"
                    )))
                }
            },
        },
        abits: abits.map(|b| in_range("abits", b, 2, 16)).transpose()?,
        preprocess: None,
        weights: weights.parse::<WeightForm>().map_err(|e| to_py_err(&e))?,
        mixed: budget.map(MixedOptions::new),
    };
    let calib = calib
        .filter(|c| !c.is_none())
        .map(|c| ImagesArg::from_arg(c, "calib"))
        .transpose()?;
    let mut reporter = Reporter::from_arg(progress)?;
    let bytes = run_detached(py, &mut reporter, move |r| {
        let mut opts = opts;
        opts.check(calib.is_some())?;
        if let (Some(out), ModelArg::Path(input)) = (&output, &model) {
            refuse_to_overwrite_input(out, input)?;
        }
        let loaded = model.load()?;
        // Calibration images from files need preprocessing; otherwise it is carried along
        // (into the output's metadata) when known.
        let overrides = overrides(preprocess);
        let samples = match calib {
            Some(ImagesArg::Path(path)) => {
                let pre = overrides.resolve(model.path(), Some(&loaded))?;
                let samples =
                    calibration(&path, &pre, opts.recon.calib_size, &mut |p| r.report(p))?;
                opts.preprocess = Some(pre);
                Some(samples)
            }
            Some(ImagesArg::Array { data, shape }) => {
                opts.preprocess = overrides.resolve_if_any(model.path(), Some(&loaded))?;
                Some(first_samples(data, shape, opts.recon.calib_size)?)
            }
            None => {
                opts.preprocess = overrides.resolve_if_any(model.path(), Some(&loaded))?;
                None
            }
        };
        let q = run_quantize(&loaded, &model.name(), &opts, samples.as_ref(), &mut |p| {
            r.report(p)
        })?;
        r.finish();
        match &output {
            Some(out) => q.save(out),
            None => q.to_bytes(),
        }
    })?;
    Ok(PyBytes::new(py, &bytes))
}

/// Calibration samples from a preprocessed N × C × H × W array: as from files, the first
/// `calib_size` images.
fn first_samples(
    mut data: Vec<f32>,
    mut shape: Vec<usize>,
    calib_size: usize,
) -> subsetq_pipeline::Result<Samples> {
    if let Some(n) = shape.first_mut() {
        if *n > calib_size && data.len().is_multiple_of(*n) {
            data.truncate(data.len() / *n * calib_size);
            *n = calib_size;
        }
    }
    samples_from_array(data, &shape)
}

/// Top-1 / top-5 and, with `compare`, agreement of a second model (`subsetq eval --json`).
#[pyfunction]
#[pyo3(signature = (
    model, images, labels=None, *, compare=None, batch=100, limit=None, preprocess=None,
    kernels="float", progress=None,
))]
#[allow(clippy::too_many_arguments)]
fn evaluate<'py>(
    py: Python<'py>,
    model: &Bound<'py, PyAny>,
    images: &Bound<'py, PyAny>,
    labels: Option<&Bound<'py, PyAny>>,
    compare: Option<&Bound<'py, PyAny>>,
    batch: i128,
    limit: Option<i128>,
    preprocess: Option<PathBuf>,
    kernels: &str,
    progress: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let model = ModelArg::from_arg(model, "model")?;
    let images = ImagesArg::from_arg(images, "images")?;
    let kernels: Kernels = kernels.parse().map_err(|e| to_py_err(&e))?;
    let labels = labels
        .filter(|l| !l.is_none())
        .map(extract_labels)
        .transpose()?;
    let compare = compare
        .filter(|c| !c.is_none())
        .map(|c| ModelArg::from_arg(c, "compare"))
        .transpose()?;
    let batch: usize = in_range("batch", batch, 1, 100_000)?;
    let limit: Option<usize> = limit
        .map(|l| in_range("limit", l, 0, i128::MAX))
        .transpose()?;
    let mut reporter = Reporter::from_arg(progress)?;
    let doc = run_detached(py, &mut reporter, |r| {
        let loaded = model.load()?;
        let pre = match &images {
            ImagesArg::Path(_) => overrides(preprocess).resolve(model.path(), Some(&loaded))?,
            // Preprocessed already: only the input and output names matter, when the model
            // has preprocessing settings.
            ImagesArg::Array { .. } => overrides(preprocess)
                .resolve_if_any(model.path(), Some(&loaded))?
                .unwrap_or_else(|| Preprocess::new(Color::Gray)),
        };
        // Plan both models before loading data: a bad model fails fast.
        let runner = Runner::with_kernels(&loaded, &pre, kernels).context_with(|| model.name())?;
        let other = match &compare {
            Some(m) => Some((
                Runner::new(&m.load()?, &pre).context_with(|| m.name())?,
                m.name(),
            )),
            None => None,
        };
        let mut data = match &images {
            ImagesArg::Path(path) => {
                let source = if labels.is_some() {
                    LabelSource::Unlabelled
                } else {
                    LabelSource::Auto
                };
                let data = load_data(path, &pre, source, limit, &mut |p| r.report(p))?;
                r.finish();
                data
            }
            ImagesArg::Array { data, shape } => dataset_from_array(data, shape, limit)?,
        };
        if let Some(labels) = &labels {
            let wanted = limit.map_or(labels.len(), |l| l.min(labels.len()));
            if wanted != data.n {
                return Err(PipelineError::invalid(format!(
                    "labels: {} for {} images",
                    wanted, data.n
                )));
            }
            data.labels = Some(labels[..wanted].to_vec());
        }
        let labels = data.labels.as_deref();
        let started = Instant::now();
        let a = runner
            .outputs(&data, batch, "eval", &mut |p| r.report(p))
            .context_with(|| model.name())?;
        r.finish();
        let seconds = started.elapsed().as_secs_f64();
        let scores = labels.map(|l| Scores::of(&a, l));
        let mut doc = serde_json::json!({
            "model": model.name(),
            "data": images.name(),
            "n": data.n,
            "top1": scores.map(|s| s.top1),
            "top5": scores.map(|s| s.top5),
            "seconds": seconds,
            "images_per_second": data.n as f64 / seconds,
            "kernels": kernels.name(),
            "packed": runner.packed().map(|p| serde_json::json!({"int8": p.int8, "f32": p.f32})),
        });
        if let (Some((other, name)), Some(map)) = (&other, doc.as_object_mut()) {
            let started = Instant::now();
            let b = other
                .outputs(&data, batch, "compare", &mut |p| r.report(p))
                .context_with(|| name.clone())?;
            r.finish();
            let seconds = started.elapsed().as_secs_f64();
            let scores = labels.map(|l| Scores::of(&b, l));
            let agree = Agreement::between(&a, &b)?;
            map.insert(
                "compare".into(),
                serde_json::json!({
                    "model": name,
                    "top1": scores.map(|s| s.top1),
                    "top5": scores.map(|s| s.top5),
                    "seconds": seconds,
                    "images_per_second": data.n as f64 / seconds,
                }),
            );
            if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(agree) {
                map.extend(fields);
            }
        }
        Ok(doc)
    })?;
    Ok(pythonize::pythonize(py, &doc)?)
}

/// Labels: one non-negative integer per image (a numpy integer array or a sequence).
fn extract_labels(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u32>> {
    let values: Vec<i64> = if let Ok(array) = obj.extract::<PyReadonlyArrayDyn<'_, i64>>() {
        if array.ndim() != 1 {
            return Err(PyValueError::new_err(format!(
                "labels: expected one label per image, got shape {:?}",
                array.shape()
            )));
        }
        array.as_array().iter().copied().collect()
    } else {
        obj.extract().map_err(|_| {
            PyTypeError::new_err(format!(
                "labels: expected a 1-D int64 array or a sequence of ints, got {}",
                type_name(obj)
            ))
        })?
    };
    values
        .into_iter()
        .map(|v| {
            u32::try_from(v).map_err(|_| {
                PyValueError::new_err(format!("labels: {v} is not a class index (0 or more)"))
            })
        })
        .collect()
}

/// A dataset from preprocessed N × C × H × W values (the first `limit` images), unlabelled.
fn dataset_from_array(
    data: &[f32],
    shape: &[usize],
    limit: Option<usize>,
) -> subsetq_pipeline::Result<Dataset> {
    let &[n, channels, height, width] = shape else {
        return Err(PipelineError::invalid(format!(
            "images array: shape {shape:?}; expected N × C × H × W"
        )));
    };
    let n = limit.map_or(n, |l| l.min(n));
    if n == 0 || channels * height * width == 0 {
        return Err(PipelineError::invalid(format!(
            "images array: shape {shape:?} holds no images"
        )));
    }
    let len = n * channels * height * width;
    Ok(Dataset {
        images: data[..len].to_vec(),
        labels: None,
        n,
        channels,
        height,
        width,
        names: (0..n).map(|i| format!("#{i}")).collect(),
        classes: Vec::new(),
    })
}

/// The native module; `subsetq/__init__.py` wraps it.
#[pymodule]
fn _subsetq(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(search, m)?)?;
    m.add_function(wrap_pyfunction!(quantize, m)?)?;
    m.add_function(wrap_pyfunction!(evaluate, m)?)?;
    Ok(())
}
