//! The typed record of a quantized model: what every writer reads, and what is stored, as
//! JSON, in the model's `metadata_props` under [`METADATA_KEY`].

use serde::{Deserialize, Serialize};

use crate::error::{PipelineError, Result};

/// Metadata key under which the record is stored in the ONNX model.
pub const METADATA_KEY: &str = "subsetq";

/// Version of the record's JSON form (2: codes' layout, level terms and channel scales).
pub const RECORD_VERSION: u32 = 2;

/// Most power-of-two terms a level may have to count as shift-and-add arithmetic.
pub const MAX_LEVEL_TERMS: usize = 4;

/// How a model was quantized, layer by layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantizedRecord {
    /// [`RECORD_VERSION`].
    pub version: u32,
    /// Bits of the middle layers.
    pub bits: u32,
    /// Bits of the first and last weight layers (uniform).
    pub first_last_bits: u32,
    /// Quantizer of the middle layers (`sq`, `uniform`, `uniform-mse`, `pot`, `apot`).
    pub quantizer: String,
    /// `channel` or `tensor`.
    pub granularity: String,
    /// The universal set's spec.
    pub uset: String,
    /// Batch norms folded into the layer before them.
    pub folded_batch_norms: usize,
    /// Block reconstruction, when calibration data was given.
    pub reconstruction: Option<ReconstructionRecord>,
    /// One entry per weight layer, in graph order.
    pub layers: Vec<LayerRecord>,
    /// Activation quantizers, in graph order (empty for weight-only quantization).
    pub activations: Vec<ActivationRecord>,
    /// The hardware cost (`subsetq cost`'s report) of the compact model, for one image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<crate::cost::CostReport>,
}

/// One weight layer: `weight[i] = channel_scales[c(i)] · table()[codes[i]]`, exactly the
/// float weight the quantized model holds (`c(i)` the output channel of weight `i`), except at
/// `zeros`, where the weight is exactly 0 and 0 is not a level.
///
/// The codes and zero positions are the model's weights themselves: the JSON form leaves them
/// out (they are the model's initializers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// The weight initializer.
    pub name: String,
    /// Bits of the codes: a sign bit and a (bits − 1)-bit index.
    pub bits: u32,
    /// `sq`, a baseline's name, or `uniform` for the first and last layers.
    pub quantizer: String,
    /// Normalised magnitudes, ascending; a weight is ±scale · alpha · levels\[i\].
    pub levels: Vec<f64>,
    /// The fitted scale α.
    pub alpha: f64,
    /// max|w| of the layer.
    pub scale: f32,
    /// ‖|x| − |Q(x)|‖₂ on the normalised weights, as searched.
    pub l2_error: f64,
    /// Per-output-channel scales (per-channel granularity or reconstruction): a weight is
    /// ±scale · calpha\[c\] · alpha · levels\[i\].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calpha: Option<Vec<f32>>,
    /// Each level as a sum of powers of two: `levels[i] · level_top = Σ 2^e` over the
    /// exponents `level_terms[i]`, largest first (`0.625` = 2⁻¹ + 2⁻³ → `[-1, -3]`), so a
    /// weight is ±scale · calpha\[c\] · (alpha / level_top) · Σ 2^e: a level with t terms is t
    /// shifts and t − 1 adds. `None` when some level has more than [`MAX_LEVEL_TERMS`] terms
    /// (uniform levels: they need a multiplier).
    pub level_terms: Option<Vec<Vec<i32>>>,
    /// The largest level's value as a universal-set point (SQ's subsets are normalised so that
    /// their largest point is 1); 1 when the levels are sums of powers of two as they are.
    pub level_top: f64,
    /// The weight's shape.
    pub shape: Vec<usize>,
    /// Axis of the output channels in `shape`.
    pub out_axis: usize,
    /// The exact per-output-channel multipliers m_c · calpha_c of the table.
    #[serde(default)]
    pub channel_scales: Vec<f32>,
    /// Weights that are exactly 0 while 0 is not a level (their code decodes to the smallest
    /// level; see `zeros`).
    pub exact_zeros: usize,
    /// One code per weight, row-major: the sign bit (1 = negative) above the (bits − 1)-bit
    /// level index.
    #[serde(skip)]
    pub codes: Vec<u8>,
    /// Positions of the `exact_zeros` weights, ascending.
    #[serde(skip)]
    pub zeros: Vec<usize>,
}

impl LayerRecord {
    /// The signed table the codes index: `2^bits` entries, `+α·levels[i]` at `i` and
    /// `−α·levels[i]` at `2^(bits−1) + i` (0 where there is no level `i`), as f32.
    pub fn table(&self) -> Vec<f32> {
        let k = 1usize << (self.bits.saturating_sub(1).min(8));
        let mut table = vec![0.0f32; 2 * k];
        for (i, level) in self.levels.iter().enumerate().take(k) {
            let q = (self.alpha * level) as f32;
            table[i] = q;
            table[k + i] = -q;
        }
        table
    }

    /// The weights the codes stand for (see the type's doc); `None` when the codes, scales and
    /// shape do not fit together.
    pub fn decode(&self) -> Option<Vec<f32>> {
        let channels =
            subsetq_core::Channels::new(&self.shape, self.out_axis, self.codes.len()).ok()?;
        if channels.count != self.channel_scales.len() {
            return None;
        }
        let table = self.table();
        let mut w: Vec<f32> = self
            .codes
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let q = table.get(usize::from(c)).copied()?;
                Some(self.channel_scales[channels.of(i)] * q)
            })
            .collect::<Option<_>>()?;
        for &z in &self.zeros {
            *w.get_mut(z)? = self.channel_scales[channels.of(z)] * 0.0;
        }
        Some(w)
    }
}

/// Block reconstruction's settings and results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReconstructionRecord {
    /// Calibration images used.
    pub calibration_samples: usize,
    /// Adam steps per block.
    pub iters: usize,
    /// Images per step.
    pub batch: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Seed of the batch sampling.
    pub seed: u64,
    /// The reconstructed blocks, in graph order.
    pub blocks: Vec<BlockRecord>,
}

/// One reconstructed block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockRecord {
    /// The block's input tensor.
    pub input: String,
    /// The block's output tensor.
    pub output: String,
    /// The weights learned in it.
    pub layers: Vec<String>,
    /// Output loss on the calibration set with the searched weights.
    pub loss_before: f64,
    /// The same after reconstruction.
    pub loss_after: f64,
}

/// One activation quantizer: uniform asymmetric, `x_q = scale · clip(round(x / scale), −z,
/// 2^bits − 1 − z)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivationRecord {
    /// The quantized tensor.
    pub tensor: String,
    /// Bits of the code.
    pub bits: u32,
    /// The code of 0.0.
    pub zero_point: u32,
    /// The (learned) step size.
    pub scale: Option<f32>,
}

impl QuantizedRecord {
    /// The record as the compact JSON stored in the model (keys sorted).
    pub fn to_json(&self) -> Result<String> {
        Ok(self.to_value()?.to_string())
    }

    fn to_value(&self) -> Result<serde_json::Value> {
        serde_json::to_value(self).map_err(|e| PipelineError::invalid(format!("record: {e}")))
    }

    /// The JSON stored in a model whose weights are in compact form: the per-channel arrays
    /// (`calpha`, `channel_scales`) are left out, since the model's `<weight>.scales`
    /// initializers hold them exactly.
    pub fn to_json_for_codes(&self) -> Result<String> {
        let mut value = self.to_value()?;
        if let Some(layers) = value.get_mut("layers").and_then(|l| l.as_array_mut()) {
            for layer in layers.iter_mut().filter_map(|l| l.as_object_mut()) {
                layer.remove("calpha");
                layer.remove("channel_scales");
            }
        }
        Ok(value.to_string())
    }

    /// Reads a record from its JSON form.
    pub fn from_json(text: &str) -> Result<Self> {
        serde_json::from_str(text)
            .map_err(|e| PipelineError::invalid(format!("subsetq record: {e}")))
    }

    /// The record stored in `model`, if any.
    pub fn of_model(model: &subsetq_onnx::Model) -> Result<Option<Self>> {
        model
            .metadata(METADATA_KEY)
            .map(Self::from_json)
            .transpose()
    }

    /// The entry of the weight `name`.
    pub fn layer(&self, name: &str) -> Option<&LayerRecord> {
        self.layers.iter().find(|l| l.name == name)
    }
}
