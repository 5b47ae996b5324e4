//! Element-wise operators: `Relu`, `Clip`, `Add` / `Sub` / `Mul` / `Div` / `Pow`
//! (numpy broadcasting, or opset < 7's axis-aligned broadcast), variadic `Sum` / `Mean` /
//! `Max` / `Min`, `Identity` / `Dropout` (inference: identity).

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
    /// The bounds (`None`: unbounded on that side).
    pub(crate) fn bounds(&self) -> (Option<f32>, Option<f32>) {
        (self.min, self.max)
    }

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

/// A planned binary operator. `axis`: opset < 7 with `broadcast = 1` and an `axis`: the second
/// operand's axes line up with the first's from `axis` on (not numpy's trailing alignment).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Binary {
    pub f: BinaryFn,
    axis: Option<i64>,
}

impl Binary {
    /// Whether the operands broadcast the ONNX (numpy) way, without the legacy `axis`.
    pub(crate) fn numpy_broadcast(&self) -> bool {
        self.axis.is_none()
    }

    /// The second operand's shape as it broadcasts against the first.
    fn aligned(&self, a: &[usize], b: &[usize]) -> std::result::Result<Vec<usize>, String> {
        let Some(axis) = self.axis else {
            return Ok(b.to_vec());
        };
        let axis = if axis < 0 {
            axis + a.len() as i64
        } else {
            axis
        };
        if axis < 0 || axis as usize + b.len() > a.len() {
            return Err(format!(
                "broadcast axis {axis} does not fit B {b:?} into A {a:?}"
            ));
        }
        let mut s = b.to_vec();
        s.extend(std::iter::repeat_n(1, a.len() - axis as usize - b.len()));
        Ok(s)
    }

    pub(crate) fn infer(&self, ins: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        broadcast_shape(ins[0], &self.aligned(ins[0], ins[1])?)
    }

    pub(crate) fn run(&self, ins: Vec<Value>) -> Value {
        let mut it = ins.into_iter();
        let (Some(a), Some(b)) = (it.next(), it.next()) else {
            unreachable!("input count checked when the plan was built")
        };
        let b = match self.aligned(&a.dims(), &b.dims()) {
            Ok(s) if s != b.dims() => b.reshape(&s),
            _ => b,
        };
        broadcast_binary(a, b, self.f)
    }
}

pub(crate) fn build_binary(ctx: &mut NodeCtx) -> Result<Op> {
    let mut axis = None;
    if ctx.opset < 7 {
        ctx.only_attrs(&["broadcast", "axis", "consumed_inputs"])?;
        if ctx.attr_int("broadcast", 0)? == 1 {
            axis = ctx.attr_int_opt("axis")?;
        }
    } else {
        ctx.only_attrs(&[])?;
    }
    ctx.input_count(2, 2)?;
    ctx.single_output()?;
    let f = match ctx.op.as_str() {
        "Add" => BinaryFn::Add,
        "Sub" => BinaryFn::Sub,
        "Mul" => BinaryFn::Mul,
        "Div" => BinaryFn::Div,
        "Pow" => BinaryFn::Pow,
        other => return Err(ctx.err(format!("{other} is not a binary operator"))),
    };
    ctx.tensor_input(0)?;
    ctx.tensor_input(1)?;
    Ok(Op::Binary(Binary { f, axis }))
}

/// A planned `Sum`, `Mean`, `Max` or `Min` of one or more inputs (numpy broadcasting).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Variadic {
    f: BinaryFn,
    mean: bool,
}

pub(crate) fn build_variadic(ctx: &mut NodeCtx) -> Result<Op> {
    if ctx.opset < 6 {
        ctx.only_attrs(&["consumed_inputs"])?;
    } else {
        ctx.only_attrs(&[])?;
    }
    ctx.single_output()?;
    let (f, mean) = match ctx.op.as_str() {
        "Sum" => (BinaryFn::Add, false),
        "Mean" => (BinaryFn::Add, true),
        "Max" => (BinaryFn::Max, false),
        "Min" => (BinaryFn::Min, false),
        other => return Err(ctx.err(format!("{other} is not a variadic operator"))),
    };
    let n = ctx.node.input.len();
    if n == 0 {
        return Err(ctx.err("expects at least one input"));
    }
    for i in 0..n {
        ctx.tensor_input(i)?;
    }
    Ok(Op::Variadic(Variadic { f, mean }))
}

impl Variadic {
    pub(crate) fn infer(&self, ins: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        let mut out = ins[0].to_vec();
        for x in &ins[1..] {
            out = broadcast_shape(&out, x)?;
        }
        Ok(out)
    }

    pub(crate) fn run(&self, ins: Vec<Value>) -> Value {
        let n = ins.len();
        let mut it = ins.into_iter();
        let Some(mut acc) = it.next() else {
            unreachable!("input count checked when the plan was built")
        };
        for x in it {
            acc = broadcast_binary(acc, x, self.f);
        }
        if self.mean && n > 1 {
            acc = map_value!(acc, t => t.div_scalar(n as f32));
        }
        acc
    }
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
    fn variadic_sum_mean_max_min_broadcast() {
        use super::*;
        use burn_tensor::Device;
        let d = Device::flex();
        let a = || Value::from_f32(vec![1.0, -2.0, 3.0, 4.0], &[2, 2], &d).unwrap();
        let b = || Value::from_f32(vec![0.5, 5.0], &[2], &d).unwrap();
        let c = || Value::from_f32(vec![-1.0], &[1], &d).unwrap();
        let run = |f, mean| Variadic { f, mean }.run(vec![a(), b(), c()]).to_vec();
        assert_eq!(run(BinaryFn::Add, false), vec![0.5, 2.0, 2.5, 8.0]);
        let mean: Vec<f32> = [0.5f32, 2.0, 2.5, 8.0].iter().map(|v| v / 3.0).collect();
        assert_eq!(run(BinaryFn::Add, true), mean);
        assert_eq!(run(BinaryFn::Max, false), vec![1.0, 5.0, 3.0, 5.0]);
        assert_eq!(run(BinaryFn::Min, false), vec![-1.0, -2.0, -1.0, -1.0]);
        let v = Variadic {
            f: BinaryFn::Add,
            mean: false,
        };
        assert_eq!(v.infer(&[&[2, 2], &[2], &[1]]).unwrap(), vec![2, 2]);
        assert!(v.infer(&[&[2, 2], &[3]]).is_err());
    }

    #[test]
    fn legacy_broadcast_aligns_at_axis() {
        use super::*;
        use burn_tensor::Device;
        let d = Device::flex();
        let bin = Binary {
            f: BinaryFn::Add,
            axis: Some(1),
        };
        // A [2, 3, 2], B [3] at axis 1: B runs along axis 1, not the last axis.
        assert_eq!(bin.infer(&[&[2, 3, 2], &[3]]).unwrap(), vec![2, 3, 2]);
        let a = Value::from_f32(vec![0.0; 12], &[2, 3, 2], &d).unwrap();
        let b = Value::from_f32(vec![1.0, 2.0, 3.0], &[3], &d).unwrap();
        let want = [1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0];
        assert_eq!(bin.run(vec![a, b]).to_vec(), want);
    }

    #[test]
    fn numpy_broadcasting() {
        assert_eq!(broadcast_shape(&[2, 3, 4], &[4]).unwrap(), vec![2, 3, 4]);
        assert_eq!(broadcast_shape(&[2, 1, 4], &[3, 1]).unwrap(), vec![2, 3, 4]);
        assert_eq!(broadcast_shape(&[1], &[5, 6]).unwrap(), vec![5, 6]);
        assert!(broadcast_shape(&[2, 3], &[4, 3]).is_err());
    }
}
