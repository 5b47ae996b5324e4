//! The subsetq pipeline as a library: typed options in, one typed record of the quantized model
//! out. The `subsetq` command line and the Python package both call it and hold no pipeline
//! logic of their own.
//!
//! `model.onnx → fold batch norms → search each layer's codebook ([`search`]) → (with
//! calibration data) fit activation quantizers and reconstruct block by block
//! ([`quantize()`]) → [`QuantizedModel`]`{ model, record }`, written by [`write`]`.`
//! [`eval`] runs models on datasets and compares them; [`data`] turns images into model input.
//! Which layers stay at high precision is [`policy`]'s one rule.
//!
//! ```no_run
//! use std::path::Path;
//! use subsetq_pipeline::{quantize, QuantizeOptions, progress};
//!
//! let model = subsetq_pipeline::load_model(Path::new("models/fashion-resnet.onnx"))?;
//! let q = quantize(&model, "fashion-resnet", &QuantizeOptions::new(4), None, &mut progress::quiet)?;
//! for layer in &q.record.layers {
//!     println!("{} {}-bit {} α={:.4}", layer.name, layer.bits, layer.quantizer, layer.alpha);
//! }
//! # Ok::<(), subsetq_pipeline::PipelineError>(())
//! ```

#![deny(missing_docs)]

pub mod cost;
pub mod data;
pub mod detect;
mod error;
pub mod eval;
pub mod mixed;
pub mod options;
pub mod packed;
pub mod policy;
pub mod progress;
mod quantize;
pub mod record;
pub mod run;
pub mod search;
pub mod write;

use std::path::Path;

use subsetq_onnx::{Model, WeightLayer};

pub use error::{one_line, Context, PipelineError, Result};
pub use options::{
    Granularity, QuantizeOptions, Quantizer, ReconOptions, SearchOptions, WeightForm,
};
pub use quantize::{float_to_quantize, quantize, QuantizedModel};
pub use record::{QuantizedRecord, METADATA_KEY};
pub use subsetq_engine::reconstruct::Samples;

/// Loads an ONNX model (read only).
pub fn load_model(path: &Path) -> Result<Model> {
    Ok(subsetq_onnx::load(path)?)
}

/// A model's weight layers, refusing models with none and ill-formed graphs
/// ([`Model::validate`]). `source` names the model in errors.
pub fn weight_layers(model: &Model, source: &str) -> Result<Vec<WeightLayer>> {
    let layers = model.weight_layers().context_with(|| source.to_string())?;
    if layers.is_empty() {
        return Err(PipelineError::invalid(format!(
            "{source}: no Conv / Gemm / MatMul layer with an initializer weight"
        )));
    }
    model.validate().context_with(|| source.to_string())?;
    Ok(layers)
}
