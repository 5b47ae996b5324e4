//! Writing results: never over an input, never half-written.

use std::path::Path;

use subsetq_data::Preprocess;
use subsetq_onnx::{CompactWeight, Model};

use crate::data::PREPROCESS_METADATA_KEY;
use crate::error::{PipelineError, Result};
use crate::{QuantizedModel, WeightForm, METADATA_KEY};

/// Refuses an output path that is the input file (inputs are never modified).
pub fn refuse_to_overwrite_input(out: &Path, input: &Path) -> Result<()> {
    if let (Ok(a), Ok(b)) = (out.canonicalize(), input.canonicalize()) {
        if a == b {
            return Err(PipelineError::invalid(format!(
                "{} is the input model; refusing to overwrite it",
                out.display()
            )));
        }
    }
    Ok(())
}

/// Writes `bytes` atomically: a reader never sees a half-written file.
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    subsetq_onnx::write_atomically(path, bytes).map_err(|source| PipelineError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes pretty JSON atomically.
pub fn write_json(path: &Path, doc: &impl serde::Serialize) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(doc)
        .map_err(|e| PipelineError::invalid(format!("{}: {e}", path.display())))?;
    bytes.push(b'\n');
    write_bytes(path, &bytes)
}

impl QuantizedModel {
    /// Puts the preprocessing the model was calibrated with (and is evaluated with) into its
    /// metadata, so that it travels with the model.
    pub fn set_preprocess(&mut self, pre: &Preprocess) {
        self.model
            .set_metadata(PREPROCESS_METADATA_KEY, &pre.to_sidecar_string());
    }

    /// The model as written: with [`WeightForm::Codes`] every quantized weight in compact form
    /// (codes, table, channel scales; decoded bit for bit to [`QuantizedModel::model`]'s
    /// weights), else the float model itself.
    pub fn written(&self) -> Result<Model> {
        let mut model = self.model.clone();
        if self.weights == WeightForm::Codes {
            for layer in &self.record.layers {
                model.store_compact(&CompactWeight {
                    name: layer.name.clone(),
                    bits: layer.bits,
                    codes: layer.codes.clone(),
                    table: layer.table(),
                    channel_scales: layer.channel_scales.clone(),
                    shape: layer.shape.clone(),
                    out_axis: layer.out_axis,
                    zeros: layer.zeros.clone(),
                })?;
            }
            model.set_metadata(METADATA_KEY, &self.record.to_json_for_codes()?);
            // The record carries the compact model's cost too, when the input shape is known
            // (a model without a fixed input size has none; `subsetq cost` says why).
            let pre = model
                .metadata(PREPROCESS_METADATA_KEY)
                .and_then(|text| Preprocess::from_sidecar_str(text).ok());
            if let Ok(report) = crate::cost::cost(&model, pre.as_ref()) {
                let mut record = self.record.clone();
                record.cost = Some(report);
                model.set_metadata(METADATA_KEY, &record.to_json_for_codes()?);
            }
        }
        Ok(model)
    }

    /// The model's bytes, as [`QuantizedModel::save`] writes them.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        Ok(self.written()?.to_bytes())
    }

    /// Writes the model to `path` and, when it carries its preprocessing, the sidecar beside
    /// it (`OUT.preprocess.json`), both atomically; returns the model's bytes (so that a caller
    /// that wants them too does not build them again).
    pub fn save(&self, path: &Path) -> Result<Vec<u8>> {
        let bytes = self.to_bytes()?;
        write_bytes(path, &bytes)?;
        if let Some(text) = self.model.metadata(PREPROCESS_METADATA_KEY) {
            write_bytes(&Preprocess::sidecar_path(path), text.as_bytes())?;
        }
        Ok(bytes)
    }
}
