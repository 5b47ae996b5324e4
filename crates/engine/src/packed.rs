//! Conv / Gemm / MatMul steps computed by `subsetq-kernels` from packed codes instead of by
//! burn from float weights: [`Plan::use_packed`] swaps them in after planning, so shape
//! checks, the rest of the graph and the float weights (kept for autograd and as the
//! fallback) stay as they are.

use std::collections::HashMap;
use std::sync::Arc;

use subsetq_kernels::{conv2d, linear, Activations, Cpu, PackedWeights, Path};

use crate::error::{EngineError, Result};
use crate::ops::Op;
use crate::plan::Plan;
use crate::value::Value;

/// One layer's packed weights (rows = output channels) and, when its input went through an
/// 8-bit activation quantizer, that quantizer: then path A (int8 × int8) runs it, else
/// path B (decode to f32).
#[derive(Debug, Clone)]
pub struct PackedLayer {
    /// The weights as codes.
    pub weights: PackedWeights,
    /// `(scale, zero point)` of the 8-bit quantizer of the layer's input, if any.
    pub input_codes: Option<(f32, u8)>,
}

/// Which steps [`Plan::use_packed`] gave to which kernel path (node names).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackedSummary {
    /// Path A: integer weights × 8-bit activation codes.
    pub int8: Vec<String>,
    /// Path B: weights decoded to f32 tiles.
    pub f32: Vec<String>,
}

/// A step's packed form.
#[derive(Debug)]
pub(crate) struct PackedStep {
    layer: PackedLayer,
    int8: bool,
    cpu: Cpu,
}

impl PackedStep {
    /// The step's output from the kernels; `float` computes it the usual way and is used
    /// only if the kernels refuse (which the plan's checks rule out).
    pub(crate) fn run(&self, op: &Op, ins: Vec<Value>, out_shape: &[usize]) -> Value {
        match self.compute(op, &ins, out_shape) {
            Some(v) => v,
            None => op.run(ins, out_shape),
        }
    }

    fn compute(&self, op: &Op, ins: &[Value], out_shape: &[usize]) -> Option<Value> {
        let x = ins.first()?;
        let device = x.device();
        let dims = x.dims();
        let data = x.to_vec();
        let codes;
        let input = match (self.int8, self.layer.input_codes) {
            (true, Some((scale, zero))) => {
                codes = to_codes(&data, scale, zero);
                Activations::U8 {
                    codes: &codes,
                    zero,
                    scale,
                }
            }
            _ => Activations::F32(&data),
        };
        let w = &self.layer.weights;
        let path = if self.int8 {
            Path::Int8(w)
        } else {
            Path::PackedF32(w)
        };
        let bias = ins.get(2).map(Value::to_vec);
        let mut out = vec![0.0f32; out_shape.iter().product()];
        match op {
            Op::Conv(conv) => {
                let g = conv.kernel_geometry(&dims, &ins.get(1)?.dims()).ok()?;
                conv2d(
                    self.cpu,
                    path,
                    &g,
                    dims[0],
                    input,
                    bias.as_deref(),
                    &mut out,
                )
                .ok()?;
            }
            Op::Gemm(_) | Op::MatMul => {
                let cols = *dims.last()?;
                let batch = data.len() / cols.max(1);
                linear(
                    self.cpu,
                    path,
                    cols,
                    batch,
                    input,
                    bias.as_deref(),
                    &mut out,
                )
                .ok()?;
            }
            _ => return None,
        }
        Value::from_f32(out, out_shape, &device)
    }
}

/// 8-bit codes of fake-quantized values `scale · (q − zero)`: `q = round(x / scale) + zero`.
fn to_codes(x: &[f32], scale: f32, zero: u8) -> Vec<u8> {
    use rayon::prelude::*;
    // Adding and subtracting 1.5 · 2^23 rounds half to even for |t| < 2^22 (the clamp keeps
    // t there, NaN becomes 0): `round_ties_even` without its libm call.
    const MAGIC: f32 = 12_582_912.0;
    x.par_iter()
        .with_min_len(1 << 14)
        .map(|&v| {
            let t = (v / scale).clamp(-512.0, 512.0);
            (((t + MAGIC) - MAGIC) + f32::from(zero)).clamp(0.0, 255.0) as u8
        })
        .collect()
}

impl Plan {
    /// Runs the Conv / Gemm / MatMul steps whose weight (second input, a constant) is named
    /// in `layers` on the packed kernels. Each layer is checked against its step: rows and
    /// columns must match the weight's shape, Gemm must be `A · B(ᵀ) + C` with a 1-D bias,
    /// MatMul's weight 2-D. A layer that matches no step is an error (a name mismatch would
    /// otherwise silently run float).
    pub fn use_packed(
        &mut self,
        layers: HashMap<String, PackedLayer>,
        cpu: Cpu,
    ) -> Result<PackedSummary> {
        let mut layers = layers;
        let mut summary = PackedSummary::default();
        let shape_of = |plan: &Plan, slot: usize| {
            plan.constants
                .iter()
                .find(|(s, _, _)| *s == slot)
                .map(|(_, _, c)| c.shape.clone())
        };
        for i in 0..self.steps.len() {
            let step = &self.steps[i];
            let Some(&w_slot) = step.inputs.get(1) else {
                continue;
            };
            let name = self.names[w_slot].clone();
            if !layers.contains_key(&name) {
                continue;
            }
            let Some(w_shape) = shape_of(self, w_slot) else {
                continue;
            };
            let bias_shape = step.inputs.get(2).map(|&s| shape_of(self, s));
            let (rows, cols) = match &step.op {
                Op::Conv(_) if w_shape.len() == 4 => (w_shape[0], w_shape[1..].iter().product()),
                Op::Gemm(g) if g.is_plain() && w_shape.len() == 2 => {
                    if g.trans_b() {
                        (w_shape[0], w_shape[1])
                    } else {
                        (w_shape[1], w_shape[0])
                    }
                }
                Op::MatMul if w_shape.len() == 2 => (w_shape[1], w_shape[0]),
                _ => continue,
            };
            let bias_ok = match bias_shape {
                None => true,
                Some(Some(s)) => s == [rows] || s == [1, rows],
                Some(None) => false,
            };
            if !bias_ok {
                continue;
            }
            let Some(layer) = layers.remove(&name) else {
                continue;
            };
            if (layer.weights.rows(), layer.weights.cols()) != (rows, cols) {
                return Err(EngineError::Graph(format!(
                    "packed weights of {name} are {} × {}, but node {} uses it as {rows} × {cols}",
                    layer.weights.rows(),
                    layer.weights.cols(),
                    step.node
                )));
            }
            let int8 = layer.weights.ints().is_some() && layer.input_codes.is_some();
            let node = step.node.clone();
            if int8 {
                summary.int8.push(node);
            } else {
                summary.f32.push(node);
            }
            self.steps[i].packed = Some(Arc::new(PackedStep { layer, int8, cpu }));
        }
        if let Some(name) = layers.keys().min() {
            return Err(EngineError::Graph(format!(
                "packed weights {name}: no Conv / Gemm / MatMul step the kernels can run uses \
                 it as a constant weight"
            )));
        }
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_invert_the_fake_quantizer() {
        let (scale, zero) = (0.1f32, 10u8);
        let x: Vec<f32> = (-10..=245).map(|q| q as f32 * scale).collect();
        let codes = to_codes(&x, scale, zero);
        assert!(codes.iter().enumerate().all(|(i, &c)| usize::from(c) == i));
        assert_eq!(
            to_codes(&[-100.0, 1e9, f32::NAN], scale, zero),
            vec![0, 255, 0]
        );
        // Halves go to the even neighbour, as ONNX Round does.
        let halves: Vec<f32> = [0.5f32, 1.5, 2.5, -0.5, -1.5]
            .iter()
            .map(|v| v * scale)
            .collect();
        assert_eq!(to_codes(&halves, scale, zero), vec![10, 12, 12, 10, 8]);
    }
}
