//! Shape operators: `Flatten`, `Reshape`, `Transpose`, `Pad`, `Concat`.

use burn_tensor::ops::PadMode;
use burn_tensor::Tensor;

use super::{first, norm_axis, NodeCtx, Op};
use crate::error::Result;
use crate::value::{with_value, IntoValue, Value};

/// `Flatten` to `[prod(dims[..axis]), prod(dims[axis..])]`.
#[derive(Debug, Clone)]
pub(crate) struct Flatten {
    axis: i64,
}

pub(crate) fn build_flatten(ctx: &mut NodeCtx) -> Result<Op> {
    ctx.only_attrs(&["axis"])?;
    ctx.input_count(1, 1)?;
    ctx.single_output()?;
    let axis = ctx.attr_int("axis", 1)?;
    ctx.tensor_input(0)?;
    Ok(Op::Flatten(Flatten { axis }))
}

impl Flatten {
    pub(crate) fn infer(&self, ins: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        let x = ins[0];
        // axis may equal the rank (then the output is [prod, 1]).
        let r = x.len() as i64;
        if self.axis < -r || self.axis > r {
            return Err(format!("axis {} is out of range for rank {r}", self.axis));
        }
        let axis = if self.axis < 0 {
            self.axis + r
        } else {
            self.axis
        } as usize;
        Ok(vec![x[..axis].iter().product(), x[axis..].iter().product()])
    }
}

/// `Reshape` with a constant target shape.
#[derive(Debug, Clone)]
pub(crate) struct Reshape {
    shape: Vec<i64>,
    allow_zero: bool,
}

pub(crate) fn build_reshape(ctx: &mut NodeCtx) -> Result<Op> {
    ctx.single_output()?;
    let (shape, allow_zero) = if ctx.opset < 5 {
        ctx.only_attrs(&["shape", "consumed_inputs"])?;
        ctx.input_count(1, 1)?;
        let s = ctx
            .attr_ints("shape")?
            .ok_or_else(|| ctx.err("attribute shape is required"))?;
        (s, false)
    } else {
        ctx.only_attrs(&["allowzero"])?;
        ctx.input_count(2, 2)?;
        let s = ctx
            .const_ints(1, "shape")?
            .ok_or_else(|| ctx.err("input shape is required"))?;
        (s, ctx.attr_int("allowzero", 0)? == 1)
    };
    if shape.iter().filter(|&&d| d == -1).count() > 1 || shape.iter().any(|&d| d < -1) {
        return Err(ctx.err(format!(
            "shape {shape:?}: at most one -1 and no other negative value"
        )));
    }
    ctx.tensor_input(0)?;
    Ok(Op::Reshape(Reshape { shape, allow_zero }))
}

impl Reshape {
    pub(crate) fn infer(&self, ins: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        let x = ins[0];
        let total: usize = x.iter().product();
        let mut out = Vec::with_capacity(self.shape.len());
        let mut infer_at = None;
        for (i, &d) in self.shape.iter().enumerate() {
            match d {
                -1 => {
                    infer_at = Some(i);
                    out.push(1);
                }
                0 if !self.allow_zero => out.push(*x.get(i).ok_or_else(|| {
                    format!(
                        "shape {:?}: 0 at axis {i} but the input {x:?} has no such axis",
                        self.shape
                    )
                })?),
                d => out.push(d as usize),
            }
        }
        let known: usize = out.iter().product();
        if let Some(i) = infer_at {
            if known == 0 || !total.is_multiple_of(known) {
                return Err(format!("cannot reshape {x:?} to {:?}", self.shape));
            }
            out[i] = total / known;
        } else if known != total {
            return Err(format!(
                "cannot reshape {x:?} ({total} elements) to {:?}",
                self.shape
            ));
        }
        Ok(out)
    }
}

pub(crate) fn run_reshape(ins: Vec<Value>, out: &[usize]) -> Value {
    first(ins).reshape(out)
}

/// `Transpose` by `perm` (default: reversed axes).
#[derive(Debug, Clone)]
pub(crate) struct Transpose {
    perm: Option<Vec<usize>>,
}

pub(crate) fn build_transpose(ctx: &mut NodeCtx) -> Result<Op> {
    ctx.only_attrs(&["perm"])?;
    ctx.input_count(1, 1)?;
    ctx.single_output()?;
    let perm = match ctx.attr_ints("perm")? {
        None => None,
        Some(p) => {
            let mut seen = vec![false; p.len()];
            for &a in &p {
                match usize::try_from(a).ok().filter(|&a| a < p.len()) {
                    Some(a) if !seen[a] => seen[a] = true,
                    _ => return Err(ctx.err(format!("perm {p:?} is not a permutation"))),
                }
            }
            Some(p.iter().map(|&a| a as usize).collect())
        }
    };
    ctx.tensor_input(0)?;
    Ok(Op::Transpose(Transpose { perm }))
}

impl Transpose {
    fn perm(&self, rank: usize) -> Vec<usize> {
        self.perm
            .clone()
            .unwrap_or_else(|| (0..rank).rev().collect())
    }

    pub(crate) fn infer(&self, ins: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        let x = ins[0];
        let p = self.perm(x.len());
        if p.len() != x.len() {
            return Err(format!(
                "perm {p:?} does not match the input rank {}",
                x.len()
            ));
        }
        Ok(p.iter().map(|&a| x[a]).collect())
    }

    pub(crate) fn run(&self, ins: Vec<Value>) -> Value {
        let x = first(ins);
        let p = self.perm(x.rank());
        with_value!(x, t => permute(t, &p))
    }
}

fn permute<const D: usize>(t: Tensor<D>, perm: &[usize]) -> Value
where
    Tensor<D>: IntoValue,
{
    let mut axes = [0usize; D];
    axes.copy_from_slice(perm);
    t.permute(axes).into_value()
}

/// `Pad` with constant pads.
#[derive(Debug, Clone)]
pub(crate) struct Pad {
    /// ONNX layout: all begins, then all ends (for `axes`, or for every axis).
    pads: Vec<i64>,
    axes: Option<Vec<i64>>,
    mode: PadKind,
    value: f32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum PadKind {
    Constant,
    Reflect,
    Edge,
}

pub(crate) fn build_pad(ctx: &mut NodeCtx) -> Result<Op> {
    ctx.single_output()?;
    let mode = match ctx.attr_string("mode")?.as_deref() {
        None | Some("constant") => PadKind::Constant,
        Some("reflect") => PadKind::Reflect,
        Some("edge") => PadKind::Edge,
        Some(m) => return Err(ctx.err(format!("mode {m:?} is not supported"))),
    };
    let (pads, value, axes) = if ctx.opset < 11 {
        ctx.only_attrs(&["mode", "pads", "value"])?;
        ctx.input_count(1, 1)?;
        let pads = ctx
            .attr_ints("pads")?
            .ok_or_else(|| ctx.err("attribute pads is required"))?;
        (pads, ctx.attr_float("value")?.unwrap_or(0.0), None)
    } else {
        ctx.only_attrs(&["mode"])?;
        ctx.input_count(2, 4)?;
        let pads = ctx
            .const_ints(1, "pads")?
            .ok_or_else(|| ctx.err("input pads is required"))?;
        (
            pads,
            ctx.const_scalar(2, "constant_value")?.unwrap_or(0.0),
            ctx.const_ints(3, "axes")?,
        )
    };
    if pads.iter().any(|&p| p < 0) {
        return Err(ctx.err(format!("pads {pads:?}: negative pads are not supported")));
    }
    ctx.tensor_input(0)?;
    Ok(Op::Pad(Pad {
        pads,
        axes,
        mode,
        value,
    }))
}

impl Pad {
    /// `(begin, end)` per axis of a rank-`rank` input.
    fn pairs(&self, dims: &[usize]) -> std::result::Result<Vec<(usize, usize)>, String> {
        let rank = dims.len();
        let axes: Vec<usize> = match &self.axes {
            None => (0..rank).collect(),
            Some(a) => a
                .iter()
                .map(|&x| norm_axis(x, rank))
                .collect::<std::result::Result<_, _>>()?,
        };
        if self.pads.len() != 2 * axes.len() {
            return Err(format!(
                "pads {:?} needs {} values for {} axes",
                self.pads,
                2 * axes.len(),
                axes.len()
            ));
        }
        let mut pairs = vec![(0, 0); rank];
        for (i, &a) in axes.iter().enumerate() {
            pairs[a] = (self.pads[i] as usize, self.pads[i + axes.len()] as usize);
        }
        for (a, &(b, e)) in pairs.iter().enumerate() {
            let bad = match self.mode {
                PadKind::Reflect => (b > 0 || e > 0) && (b >= dims[a] || e >= dims[a]),
                PadKind::Edge => (b > 0 || e > 0) && dims[a] == 0,
                PadKind::Constant => false,
            };
            if bad {
                return Err(format!(
                    "pads ({b}, {e}) on axis {a} of size {} are too large for this mode",
                    dims[a]
                ));
            }
        }
        Ok(pairs)
    }

    pub(crate) fn infer(&self, ins: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        let x = ins[0];
        let pairs = self.pairs(x)?;
        Ok(x.iter().zip(&pairs).map(|(d, (b, e))| d + b + e).collect())
    }

    pub(crate) fn run(&self, ins: Vec<Value>) -> Value {
        let x = first(ins);
        let pairs = match self.pairs(&x.dims()) {
            Ok(p) => p,
            Err(e) => unreachable!("checked by shape inference: {e}"),
        };
        let mode = match self.mode {
            PadKind::Constant => PadMode::Constant(self.value),
            PadKind::Reflect => PadMode::Reflect,
            PadKind::Edge => PadMode::Edge,
        };
        if pairs.iter().all(|&(b, e)| b == 0 && e == 0) {
            return x;
        }
        with_value!(x, t => t.pad(pairs.as_slice(), mode).into_value())
    }
}

/// `Concat` along `axis`.
#[derive(Debug, Clone)]
pub(crate) struct Concat {
    axis: i64,
}

pub(crate) fn build_concat(ctx: &mut NodeCtx) -> Result<Op> {
    ctx.only_attrs(&["axis"])?;
    ctx.single_output()?;
    let n = ctx.node.input.len();
    if n == 0 {
        return Err(ctx.err("expects at least one input"));
    }
    let axis = ctx
        .attr_int_opt("axis")?
        .ok_or_else(|| ctx.err("attribute axis is required"))?;
    for i in 0..n {
        ctx.tensor_input(i)?;
    }
    Ok(Op::Concat(Concat { axis }))
}

impl Concat {
    pub(crate) fn infer(&self, ins: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        let x = ins[0];
        let axis = norm_axis(self.axis, x.len())?;
        let mut out = x.to_vec();
        for (i, y) in ins.iter().enumerate().skip(1) {
            let same = y.len() == x.len()
                && y.iter()
                    .zip(x.iter())
                    .enumerate()
                    .all(|(a, (p, q))| a == axis || p == q);
            if !same {
                return Err(format!(
                    "input {i} has shape {y:?}, which does not match input 0 {x:?} outside axis {axis}"
                ));
            }
            out[axis] += y[axis];
        }
        Ok(out)
    }

    pub(crate) fn run(&self, ins: Vec<Value>) -> Value {
        let rank = ins.first().map_or(1, Value::rank);
        let axis = match norm_axis(self.axis, rank) {
            Ok(a) => a,
            Err(e) => unreachable!("checked by shape inference: {e}"),
        };
        macro_rules! cat {
            ($var:ident) => {
                Value::$var(Tensor::cat(
                    ins.into_iter()
                        .map(|v| match v {
                            Value::$var(t) => t,
                            _ => unreachable!("ranks checked by shape inference"),
                        })
                        .collect(),
                    axis,
                ))
            };
        }
        match rank {
            1 => cat!(R1),
            2 => cat!(R2),
            3 => cat!(R3),
            4 => cat!(R4),
            5 => cat!(R5),
            _ => cat!(R6),
        }
    }
}
