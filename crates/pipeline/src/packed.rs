//! A compact model's layers as the packed kernels take them: codes, table and scales from its
//! initializers, the table as integers from its record (SQ's levels are sums of powers of
//! two), and the 8-bit quantizer of each layer's input from the graph.

use std::collections::HashMap;
use std::str::FromStr;

use subsetq_core::UniversalSet;
use subsetq_engine::subsetq_kernels::{IntTable, PackedWeights};
use subsetq_engine::PackedLayer;
use subsetq_onnx::{activation_scale_name, CompactWeight, Model};

use crate::error::{PipelineError, Result};
use crate::record::{LayerRecord, QuantizedRecord};

/// Which kernels compute the weight layers of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Kernels {
    /// The float engine on the decoded weights.
    #[default]
    Float,
    /// The packed kernels on the codes (compact models): int8 where the layer's input has
    /// an 8-bit quantizer, decode-to-f32 elsewhere.
    Packed,
}

impl Kernels {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Float => "float",
            Self::Packed => "packed",
        }
    }
}

impl FromStr for Kernels {
    type Err = PipelineError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "float" => Ok(Self::Float),
            "packed" => Ok(Self::Packed),
            _ => Err(PipelineError::invalid(format!(
                "unknown kernels {s:?}; expected float or packed"
            ))),
        }
    }
}

/// The integer form of a layer's table: with `d` the smallest exponent among the levels'
/// power-of-two terms, level `i` is `Σ 2^(e + d)` units of `α / (level_top · 2^d)`. `None`
/// when the levels are not sums of powers of two or an integer exceeds what path A takes.
pub fn int_table(layer: &LayerRecord) -> Option<IntTable> {
    ints_of_terms(
        layer.level_terms.as_ref()?,
        layer.level_top,
        layer.alpha,
        layer.bits,
    )
}

/// [`int_table`] for `bits`-bit levels of the universal set `uset` with scale `alpha`, as a
/// search returns them.
pub fn int_table_of_levels(
    levels: &[f64],
    alpha: f64,
    bits: u32,
    uset: &UniversalSet,
) -> Option<IntTable> {
    let (top, terms) = crate::quantize::level_terms(levels, uset)?;
    ints_of_terms(&terms, top, alpha, bits)
}

fn ints_of_terms(terms: &[Vec<i32>], level_top: f64, alpha: f64, bits: u32) -> Option<IntTable> {
    let lowest = terms.iter().flatten().copied().min().unwrap_or(0);
    let k = 1usize << (bits.checked_sub(1)?);
    let mut values = vec![0i32; 2 * k];
    for (i, t) in terms.iter().enumerate().take(k) {
        let v = t
            .iter()
            .map(|&e| 1i64.checked_shl(u32::try_from(e - lowest).ok()?))
            .sum::<Option<i64>>()?;
        let v = i32::try_from(v).ok()?;
        values[i] = v;
        values[k + i] = -v;
    }
    let unit = (alpha / (level_top * 2f64.powi(-lowest))) as f32;
    Some(IntTable { values, unit })
}

/// The compact weights of `model` as packed kernel layers, keyed by weight name. Needs the
/// model's record (for the integer tables); a compact model without one runs path B only.
pub fn packed_layers(model: &Model) -> Result<HashMap<String, PackedLayer>> {
    let compact = model.compact_weights()?;
    if compact.is_empty() {
        return Err(PipelineError::invalid(
            "the model has no weights in compact form (codes + table); quantize it with \
             `--weights codes` to run it on the packed kernels",
        ));
    }
    let record = QuantizedRecord::of_model(model)?;
    let graph = model.graph()?;
    let float = |name: &str| -> Option<f32> {
        let t = graph.initializer.iter().find(|t| t.name() == name)?;
        let c = subsetq_onnx::read_tensor(t, name).ok()?;
        c.as_f32().and_then(|v| v.first().copied())
    };
    let mut layers = HashMap::new();
    for w in compact {
        let weights = pack(&w)?;
        let ints = record
            .as_ref()
            .and_then(|r| r.layer(&w.name))
            .filter(|l| l.bits == w.bits)
            .and_then(int_table);
        let weights = match ints {
            Some(ints) => weights.clone().with_ints(ints).unwrap_or(weights),
            None => weights,
        };
        // The layer's input: the data input of the node that reads the weight.
        let input = graph
            .node
            .iter()
            .find(|n| n.input.get(1) == Some(&w.name))
            .and_then(|n| n.input.first());
        let input_codes = input.and_then(|t| {
            let scale = float(&activation_scale_name(t))?;
            let lo = float(&format!("{t}.act_min"))?;
            let hi = float(&format!("{t}.act_max"))?;
            (hi - lo == 255.0 && lo <= 0.0).then_some((scale, (-lo) as u8))
        });
        layers.insert(
            w.name.clone(),
            PackedLayer {
                weights,
                input_codes,
            },
        );
    }
    Ok(layers)
}

/// One compact weight as a rows × cols matrix, a row per output channel.
fn pack(w: &CompactWeight) -> Result<PackedWeights> {
    let rows = w.shape[w.out_axis];
    let n = w.codes.len();
    let cols = n / rows.max(1);
    let (codes, zeros) = if w.out_axis == 0 {
        (w.codes.clone(), w.zeros.clone())
    } else if w.shape.len() == 2 && w.out_axis == 1 {
        // [K, N] (MatMul, Gemm without transB): transpose to [N, K].
        let k = w.shape[0];
        let at = |i: usize| (i % rows) * k + i / rows;
        let mut codes = vec![0u8; n];
        for (i, &c) in w.codes.iter().enumerate() {
            codes[at(i)] = c;
        }
        (codes, w.zeros.iter().map(|&z| at(z)).collect())
    } else {
        return Err(PipelineError::invalid(format!(
            "{}: output axis {} of shape {:?} is not a layout the kernels take",
            w.name, w.out_axis, w.shape
        )));
    };
    PackedWeights::new(rows, cols, w.bits, &codes, &w.table, &w.channel_scales)
        .and_then(|p| p.with_zeros(&zeros))
        .map_err(|e| PipelineError::invalid(format!("{}: {e}", w.name)))
}
