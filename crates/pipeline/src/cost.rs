//! Hardware cost of a quantized model, per layer and in total: bits of weight storage (codes,
//! table, channel scales) and, per inference of one image, the arithmetic SQ needs (shifts and
//! adds: a level with t power-of-two terms is t shifts and t − 1 adds) against the multiplies of
//! uniform quantization at the same bits, with an energy estimate.
//!
//! The energy is an estimate from published per-operation figures: M. Horowitz, "Computing's
//! energy problem (and what we can do about it)", ISSCC 2014, 45 nm at 0.9 V: 8-bit integer add
//! 0.03 pJ, 8-bit integer multiply 0.2 pJ, 32-bit integer add 0.1 pJ, 32-bit float add 0.9 pJ,
//! 32-bit float multiply 3.7 pJ. Shifts are not in that table; a shift is counted as an 8-bit
//! add (an assumption). Activations are taken as 8-bit (W·A8), accumulation as 32-bit adds.

use serde::{Deserialize, Serialize};
use subsetq_data::Preprocess;
use subsetq_engine::burn_tensor::Device;
use subsetq_engine::{Engine, Plan, Value};
use subsetq_onnx::{read_tensor, ConstData, Model};

use crate::error::{PipelineError, Result};
use crate::record::QuantizedRecord;

/// The per-operation energies used, picojoules (Horowitz, ISSCC 2014, 45 nm).
pub mod energy_pj {
    /// 8-bit integer add.
    pub const ADD8: f64 = 0.03;
    /// 8-bit integer multiply.
    pub const MUL8: f64 = 0.2;
    /// 32-bit integer add (accumulation).
    pub const ADD32: f64 = 0.1;
    /// 32-bit float add.
    pub const FADD32: f64 = 0.9;
    /// 32-bit float multiply.
    pub const FMUL32: f64 = 3.7;
    /// A shift, counted as an 8-bit add (not in the source's table: an assumption).
    pub const SHIFT: f64 = ADD8;
}

/// Where the energy figures come from.
pub const ENERGY_SOURCE: &str =
    "estimate: Horowitz, ISSCC 2014, 45 nm (8-bit add 0.03 pJ, 8-bit mult 0.2 pJ, 32-bit add 0.1 pJ, fp32 add 0.9 pJ, fp32 mult 3.7 pJ; a shift counted as an 8-bit add)";

/// One layer's cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerCost {
    /// The weight.
    pub name: String,
    /// Bits per code.
    pub bits: u32,
    /// The layer's quantizer.
    pub quantizer: String,
    /// Number of weights.
    pub weights: usize,
    /// Multiply-accumulates per image.
    pub macs: u64,
    /// Bits of storage: codes (weights × bits), the 2^bits-entry table and channel scales
    /// (32-bit floats).
    pub storage_bits: u64,
    /// The same weights as 32-bit floats.
    pub float_bits: u64,
    /// Whether every level is a sum of powers of two (else the layer needs multipliers).
    pub shift_add: bool,
    /// Per image: shifts, and adds inside the products (0 when not shift-add).
    pub shifts: u64,
    /// Adds inside the products.
    pub product_adds: u64,
    /// Per image: the multiplies of uniform quantization at the same bits (one per MAC).
    pub uniform_multiplies: u64,
    /// Energy per image, picojoules: this layer's arithmetic as stored (shift-add where it
    /// can, else multiplies), plus 32-bit accumulation.
    pub energy_pj: f64,
    /// The same MACs as uniform 8-bit-activation multiplies.
    pub uniform_energy_pj: f64,
    /// The same MACs in 32-bit float.
    pub float_energy_pj: f64,
}

/// The model's cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostReport {
    /// Per weight layer, in graph order.
    pub layers: Vec<LayerCost>,
    /// Sum of `storage_bits`.
    pub storage_bits: u64,
    /// Sum of `float_bits`.
    pub float_bits: u64,
    /// Sum of `macs`.
    pub macs: u64,
    /// Sum of `energy_pj`.
    pub energy_pj: f64,
    /// Sum of `uniform_energy_pj`.
    pub uniform_energy_pj: f64,
    /// Sum of `float_energy_pj`.
    pub float_energy_pj: f64,
    /// [`ENERGY_SOURCE`].
    pub energy_source: String,
}

/// The cost of a compact model written by `quantize` (its record and `<weight>.codes`), for
/// one image of the shape `pre` gives (or the model's declared input shape).
pub fn cost(model: &Model, pre: Option<&Preprocess>) -> Result<CostReport> {
    let record = QuantizedRecord::of_model(model)?.ok_or_else(|| {
        PipelineError::invalid("the model has no subsetq record (write it with `subsetq quantize`)")
    })?;
    let graph = model.graph()?;
    let decoded = model.fold_constants()?;
    let plan = Plan::from_model(&decoded)?;
    let input = plan.single_input()?.to_string();
    let shape = input_shape(&plan, &input, pre)?;
    // The output tensor of each weight's node, to count its MACs from the output size.
    let dgraph = decoded.graph()?;
    let mut outputs = Vec::with_capacity(record.layers.len());
    for l in &record.layers {
        let out = dgraph
            .node
            .iter()
            .find(|n| n.input.get(1) == Some(&l.name) || n.input.first() == Some(&l.name))
            .and_then(|n| n.output.first())
            .ok_or_else(|| PipelineError::invalid(format!("layer {}: no node uses it", l.name)))?;
        outputs.push(out.as_str());
    }
    let device = Device::flex();
    let engine = Engine::new(plan, &device)?;
    let n: usize = shape.iter().product();
    let x = Value::from_f32(vec![0.0; n], &shape, &device)
        .ok_or_else(|| PipelineError::invalid(format!("input shape {shape:?}")))?;
    let values = engine.run_for(&[(input.as_str(), x)], &outputs)?;

    let mut layers = Vec::with_capacity(record.layers.len());
    for (l, y) in record.layers.iter().zip(&values) {
        let codes_name = format!("{}.codes", l.name);
        let codes: Vec<i64> = match graph.initializer.iter().find(|t| t.name() == codes_name) {
            Some(t) => match read_tensor(t, &codes_name)?.data {
                ConstData::I64(v) => v,
                ConstData::F32(_) => {
                    return Err(PipelineError::invalid(format!("{codes_name}: not integer codes")))
                }
            },
            None => {
                return Err(PipelineError::invalid(format!(
                    "{}: no {codes_name}; `subsetq cost` reads the compact form (`quantize --weights codes`)",
                    l.name
                )))
            }
        };
        let weights: usize = l.shape.iter().product();
        let channels = l.shape.get(l.out_axis).copied().unwrap_or(1).max(1);
        let out_numel: usize = y.dims().iter().product();
        // Each weight serves one output channel's positions.
        let uses = (out_numel / channels) as u64;
        let macs = uses * weights as u64;
        let k = 1i64 << (l.bits - 1);
        let (mut shifts, mut product_adds) = (0u64, 0u64);
        let shift_add = l.level_terms.is_some();
        if let Some(terms) = &l.level_terms {
            for &c in &codes {
                let t = terms.get((c % k) as usize).map_or(0, Vec::len) as u64;
                shifts += t * uses;
                product_adds += t.saturating_sub(1) * uses;
            }
        }
        let accumulate = macs as f64 * energy_pj::ADD32;
        let uniform_energy = macs as f64 * energy_pj::MUL8 + accumulate;
        let energy = if shift_add {
            shifts as f64 * energy_pj::SHIFT + product_adds as f64 * energy_pj::ADD8 + accumulate
        } else {
            uniform_energy
        };
        layers.push(LayerCost {
            name: l.name.clone(),
            bits: l.bits,
            quantizer: l.quantizer.clone(),
            weights,
            macs,
            storage_bits: weights as u64 * u64::from(l.bits)
                + (1u64 << l.bits) * 32
                + channels as u64 * 32,
            float_bits: weights as u64 * 32,
            shift_add,
            shifts,
            product_adds,
            uniform_multiplies: macs,
            energy_pj: energy,
            uniform_energy_pj: uniform_energy,
            float_energy_pj: macs as f64 * (energy_pj::FMUL32 + energy_pj::FADD32),
        });
    }
    Ok(CostReport {
        storage_bits: layers.iter().map(|l| l.storage_bits).sum(),
        float_bits: layers.iter().map(|l| l.float_bits).sum(),
        macs: layers.iter().map(|l| l.macs).sum(),
        energy_pj: layers.iter().map(|l| l.energy_pj).sum(),
        uniform_energy_pj: layers.iter().map(|l| l.uniform_energy_pj).sum(),
        float_energy_pj: layers.iter().map(|l| l.float_energy_pj).sum(),
        energy_source: ENERGY_SOURCE.to_string(),
        layers,
    })
}

/// One image's input shape: `[1, C, H, W]` from the preprocessing's fixed size, else the
/// model's declared input dims with the batch set to 1.
fn input_shape(plan: &Plan, input: &str, pre: Option<&Preprocess>) -> Result<Vec<usize>> {
    if let Some(Preprocess {
        size: Some([h, w]), ..
    }) = pre
    {
        return Ok(vec![1, pre.map_or(1, |p| p.channels()), *h, *w]);
    }
    let spec = plan.inputs().iter().find(|i| i.name == input);
    let dims = spec.and_then(|s| s.dims.clone()).unwrap_or_default();
    let shape: Option<Vec<usize>> = dims
        .iter()
        .enumerate()
        .map(|(k, d)| if k == 0 { Some(1) } else { *d })
        .collect();
    match shape {
        Some(s) if s.len() >= 2 => Ok(s),
        _ => Err(PipelineError::invalid(format!(
            "input {input}: no fixed image size; give the model a preprocessing with a size"
        ))),
    }
}
