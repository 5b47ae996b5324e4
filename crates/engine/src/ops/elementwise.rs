//! Element-wise operators: `Relu`, `Clip`, `Add` / `Sub` / `Mul` / `Div`
//! (numpy broadcasting), `Identity` / `Dropout` (inference: identity).

use burn_tensor::activation::relu;

use super::{first, NodeCtx, Op};
use crate::error::Result;
use crate::value::{broadcast_binary, map_value, BinaryFn, Value};

/// The numpy broadcast of two shapes.
pub(crate) fn broadcast_shape(a: &[usize], b: &[usize]) -> std::result::Result<Vec<usize>, String> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for i in 0..r {
        let da = if i + a.len() >= r {
            a[i + a.len() - r]
        } else {
            1
        };
        let db = if i + b.len() >= r {
            b[i + b.len() - r]
        } else {
            1
        };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return Err(format!("shapes {a:?} and {b:?} do not broadcast"));
        };
    }
    Ok(out)
}

pub(crate) fn build_relu(ctx: &mut NodeCtx) -> Result<Op> {
    ctx.only_attrs(&[])?;
    ctx.input_count(1, 1)?;
    ctx.single_output()?;
    ctx.tensor_input(0)?;
    Ok(Op::Relu)
}

pub(crate) fn run_relu(ins: Vec<Value>) -> Value {
    map_value!(first(ins), t => relu(t))
}

pub(crate) fn build_round(ctx: &mut NodeCtx) -> Result<Op> {
    ctx.only_attrs(&[])?;
    ctx.input_count(1, 1)?;
    ctx.single_output()?;
    ctx.tensor_input(0)?;
    Ok(Op::Round)
}

/// `Round`, half to even as ONNX specifies. Its gradient is passed straight through (the
/// straight-through estimator): rounding has a zero gradient almost everywhere, and
/// quantization-aware learning needs the gradient of what is rounded.
pub(crate) fn run_round(ins: Vec<Value>) -> Value {
    // round(t) + (t − t): the forward value is exactly round(t), the gradient that of t.
    map_value!(first(ins), t => t.clone().round().detach() + (t.clone() - t.detach()))
}

/// A planned `Clip` with constant bounds.
#[derive(Debug, Clone)]
pub(crate) struct Clip {
    min: Option<f32>,
    max: Option<f32>,
}

pub(crate) fn build_clip(ctx: &mut NodeCtx) -> Result<Op> {
    ctx.single_output()?;
    let (min, max) = if ctx.opset < 11 {
        ctx.only_attrs(&["min", "max"])?;
        ctx.input_count(1, 1)?;
        (ctx.attr_float("min")?, ctx.attr_float("max")?)
    } else {
        ctx.only_attrs(&[])?;
        ctx.input_count(1, 3)?;
        (ctx.const_scalar(1, "min")?, ctx.const_scalar(2, "max")?)
    };
    if let (Some(lo), Some(hi)) = (min, max) {
        if lo.is_nan() || hi.is_nan() {
            return Err(ctx.err("min / max must not be NaN"));
        }
    }
    ctx.tensor_input(0)?;
    Ok(Op::Clip(Clip { min, max }))
}

impl Clip {
    pub(crate) fn run(&self, ins: Vec<Value>) -> Value {
        let x = first(ins);
        match (self.min, self.max) {
            // ONNX: when min > max every element becomes max.
            (Some(lo), Some(hi)) if lo > hi => map_value!(x, t => t.zeros_like().add_scalar(hi)),
            (Some(lo), Some(hi)) => map_value!(x, t => t.clamp(lo, hi)),
            (Some(lo), None) => map_value!(x, t => t.clamp_min(lo)),
            (None, Some(hi)) => map_value!(x, t => t.clamp_max(hi)),
            (None, None) => x,
        }
    }
}

pub(crate) fn build_binary(ctx: &mut NodeCtx) -> Result<Op> {
    ctx.only_attrs(&[])?;
    ctx.input_count(2, 2)?;
    ctx.single_output()?;
    let f = match ctx.op.as_str() {
        "Add" => BinaryFn::Add,
        "Sub" => BinaryFn::Sub,
        "Mul" => BinaryFn::Mul,
        "Div" => BinaryFn::Div,
        other => return Err(ctx.err(format!("{other} is not a binary operator"))),
    };
    ctx.tensor_input(0)?;
    ctx.tensor_input(1)?;
    Ok(Op::Binary(f))
}

pub(crate) fn run_binary(f: BinaryFn, ins: Vec<Value>) -> Value {
    let mut it = ins.into_iter();
    let (Some(a), Some(b)) = (it.next(), it.next()) else {
        unreachable!("input count checked when the plan was built")
    };
    broadcast_binary(a, b, f)
}

pub(crate) fn build_identity(ctx: &mut NodeCtx) -> Result<Op> {
    ctx.single_output()?;
    if ctx.op == "Dropout" {
        // Inference: the output is the input. A training_mode input that is
        // constant false (or omitted) is fine; anything else is not.
        ctx.only_attrs(&["seed", "ratio"])?;
        ctx.input_count(1, 3)?;
        if ctx.input_name(2).is_some() {
            let t = ctx.const_input(2, "training_mode")?;
            let on = t.as_ref().is_some_and(|c| match &c.data {
                subsetq_onnx::ConstData::I64(v) => v.iter().any(|&x| x != 0),
                subsetq_onnx::ConstData::F32(v) => v.iter().any(|&x| x != 0.0),
            });
            if on {
                return Err(ctx.err("training_mode = true is not supported"));
            }
        }
    } else {
        ctx.only_attrs(&[])?;
        ctx.input_count(1, 1)?;
    }
    ctx.tensor_input(0)?;
    Ok(Op::Identity)
}

pub(crate) fn run_identity(ins: Vec<Value>) -> Value {
    first(ins)
}

#[cfg(test)]
mod tests {
    use super::broadcast_shape;

    #[test]
    fn numpy_broadcasting() {
        assert_eq!(broadcast_shape(&[2, 3, 4], &[4]).unwrap(), vec![2, 3, 4]);
        assert_eq!(broadcast_shape(&[2, 1, 4], &[3, 1]).unwrap(), vec![2, 3, 4]);
        assert_eq!(broadcast_shape(&[1], &[5, 6]).unwrap(), vec![5, 6]);
        assert!(broadcast_shape(&[2, 3], &[4, 3]).is_err());
    }
}
