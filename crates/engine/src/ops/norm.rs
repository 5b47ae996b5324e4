//! `BatchNormalization` (inference) and `Softmax`.

use burn_tensor::activation::softmax;

use super::{first, norm_axis, NodeCtx, Op};
use crate::error::Result;
use crate::value::{broadcast_binary, map_value, BinaryFn, Value};

/// A planned `BatchNormalization` in inference mode:
/// `y = x · s + (B − mean · s)` with `s = scale / sqrt(var + epsilon)` per
/// channel (axis 1), computed on the device from the parameter tensors so that
/// they stay replaceable.
#[derive(Debug, Clone)]
pub(crate) struct BatchNorm {
    epsilon: f32,
}

pub(crate) fn build_batch_norm(ctx: &mut NodeCtx) -> Result<Op> {
    ctx.only_attrs(&["epsilon", "momentum", "training_mode", "spatial"])?;
    ctx.input_count(5, 5)?;
    ctx.single_output()?;
    if ctx.attr_int("training_mode", 0)? != 0 {
        return Err(ctx.err("training_mode = 1 is not supported (inference only)"));
    }
    if ctx.attr_int("spatial", 1)? != 1 {
        return Err(ctx.err("spatial = 0 is not supported"));
    }
    if ctx.node.output.iter().skip(1).any(|o| !o.is_empty()) {
        return Err(ctx.err("running mean / variance outputs (training mode) are not supported"));
    }
    let epsilon = ctx.attr_float("epsilon")?.unwrap_or(1e-5);
    if epsilon.is_nan() || epsilon < 0.0 {
        return Err(ctx.err(format!("epsilon {epsilon} must be >= 0")));
    }
    for i in 0..5 {
        ctx.tensor_input(i)?;
    }
    Ok(Op::BatchNorm(BatchNorm { epsilon }))
}

impl BatchNorm {
    pub(crate) fn infer(&self, ins: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        let x = ins[0];
        if x.len() < 2 {
            return Err(format!(
                "input X has shape {x:?}; expected rank >= 2 [N, C, ...]"
            ));
        }
        let c = x[1];
        for (i, what) in ["scale", "B", "mean", "var"].iter().enumerate() {
            if ins[i + 1] != [c] {
                return Err(format!("{what} has shape {:?}, expected [{c}]", ins[i + 1]));
            }
        }
        Ok(x.to_vec())
    }

    pub(crate) fn run(&self, ins: Vec<Value>) -> Value {
        let mut it = ins.into_iter();
        let (Some(x), Some(scale), Some(bias), Some(mean), Some(var)) =
            (it.next(), it.next(), it.next(), it.next(), it.next())
        else {
            unreachable!("input count checked when the plan was built")
        };
        let (scale, bias, mean, var) = (
            scale.into_r1(),
            bias.into_r1(),
            mean.into_r1(),
            var.into_r1(),
        );
        let s = var.add_scalar(self.epsilon).sqrt().recip().mul(scale);
        let shift = bias.sub(mean.mul(s.clone()));
        // [C] -> [C, 1, ..., 1] so that it broadcasts against [N, C, D1, ...].
        let dims = x.dims();
        let mut cshape = vec![dims[1]];
        cshape.extend(std::iter::repeat_n(1, dims.len() - 2));
        let s = Value::R1(s).reshape(&cshape);
        let shift = Value::R1(shift).reshape(&cshape);
        broadcast_binary(broadcast_binary(x, s, BinaryFn::Mul), shift, BinaryFn::Add)
    }
}

/// A planned `Softmax`.
#[derive(Debug, Clone)]
pub(crate) struct Softmax {
    axis: i64,
    /// Opset < 13: the input is coerced to 2-D at `axis` and the softmax runs
    /// over the flattened trailing dimensions.
    coerce_2d: bool,
}

pub(crate) fn build_softmax(ctx: &mut NodeCtx) -> Result<Op> {
    ctx.only_attrs(&["axis"])?;
    ctx.input_count(1, 1)?;
    ctx.single_output()?;
    let coerce_2d = ctx.opset < 13;
    let axis = ctx.attr_int("axis", if coerce_2d { 1 } else { -1 })?;
    ctx.tensor_input(0)?;
    Ok(Op::Softmax(Softmax { axis, coerce_2d }))
}

impl Softmax {
    pub(crate) fn infer(&self, ins: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        norm_axis(self.axis, ins[0].len())?;
        Ok(ins[0].to_vec())
    }

    pub(crate) fn run(&self, ins: Vec<Value>) -> Value {
        let x = first(ins);
        let dims = x.dims();
        let axis = match norm_axis(self.axis, dims.len()) {
            Ok(a) => a,
            Err(e) => unreachable!("checked by shape inference: {e}"),
        };
        if self.coerce_2d && axis + 1 != dims.len() {
            let rows: usize = dims[..axis].iter().product();
            let cols: usize = dims[axis..].iter().product();
            let y = map_value!(x.reshape(&[rows, cols]), t => softmax(t, 1));
            return y.reshape(&dims);
        }
        map_value!(x, t => softmax(t, axis))
    }
}
