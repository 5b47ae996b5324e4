//! Shape operators: `Flatten`, `Reshape`, `Transpose`, `Pad`, `Concat`, `Squeeze`,
//! `Unsqueeze`, `Slice`, `Split`, `Gather` (constant indices), `Expand`, `Tile`.

use burn_tensor::ops::PadMode;
use burn_tensor::{Int, Tensor, TensorData};

use super::{first, norm_axis, NodeCtx, Op};
use crate::error::Result;
use crate::value::{map_value, with_value, IntoValue, Value};

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
        let Some(known) = crate::plan::numel(&out) else {
            return Err(format!("shape {:?} has too many elements", self.shape));
        };
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
    /// The axis for inputs of rank `rank`, when valid.
    pub(crate) fn axis(&self, rank: usize) -> Option<usize> {
        norm_axis(self.axis, rank).ok()
    }

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
        match norm_axis(self.axis, rank) {
            Ok(axis) => Value::cat(ins, axis),
            Err(e) => unreachable!("checked by shape inference: {e}"),
        }
    }
}

/// Resolves `axes` (possibly negative) against `rank`, rejecting repeats.
fn resolve_axes(axes: &[i64], rank: usize) -> std::result::Result<Vec<usize>, String> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let a = norm_axis(a, rank)?;
        if out.contains(&a) {
            return Err(format!("axis {a} is repeated in {axes:?}"));
        }
        out.push(a);
    }
    Ok(out)
}

/// `Squeeze` / `Unsqueeze` with constant axes (an attribute before opset 13, an input after).
#[derive(Debug, Clone)]
pub(crate) struct Squeeze {
    /// `None`: (Squeeze only) every axis of size 1.
    axes: Option<Vec<i64>>,
    unsqueeze: bool,
}

pub(crate) fn build_squeeze(ctx: &mut NodeCtx) -> Result<Op> {
    ctx.single_output()?;
    let unsqueeze = ctx.op == "Unsqueeze";
    let axes = if ctx.opset < 13 {
        ctx.only_attrs(&["axes"])?;
        ctx.input_count(1, 1)?;
        ctx.attr_ints("axes")?
    } else {
        ctx.only_attrs(&[])?;
        ctx.input_count(1, 2)?;
        ctx.const_ints(1, "axes")?
    };
    if unsqueeze && axes.is_none() {
        return Err(ctx.err("axes are required"));
    }
    ctx.tensor_input(0)?;
    Ok(Op::Squeeze(Squeeze { axes, unsqueeze }))
}

impl Squeeze {
    pub(crate) fn infer(&self, ins: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        let x = ins[0];
        if self.unsqueeze {
            let axes = self.axes.as_deref().unwrap_or(&[]);
            let rank = x.len() + axes.len();
            let axes = resolve_axes(axes, rank)?;
            let mut rest = x.iter();
            return Ok((0..rank)
                .map(|i| {
                    if axes.contains(&i) {
                        1
                    } else {
                        rest.next().copied().unwrap_or(1)
                    }
                })
                .collect());
        }
        let axes = match &self.axes {
            None => (0..x.len()).filter(|&i| x[i] == 1).collect(),
            Some(a) => resolve_axes(a, x.len())?,
        };
        if let Some(&a) = axes.iter().find(|&&a| x[a] != 1) {
            return Err(format!("axis {a} of {x:?} has size {}, not 1", x[a]));
        }
        let out: Vec<usize> = (0..x.len())
            .filter(|i| !axes.contains(i))
            .map(|i| x[i])
            .collect();
        if out.is_empty() {
            // A scalar result is held as [1] (the engine's scalars).
            return Ok(vec![1]);
        }
        Ok(out)
    }
}

/// One range along one axis: `start, start + step, …` (`len` elements; `step` may be negative).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Range {
    axis: usize,
    start: usize,
    step: i64,
    len: usize,
}

/// Takes `r` from a tensor: a narrow for unit steps, an index select otherwise.
fn take_range(x: Value, r: Range) -> Value {
    if r.step == 1 {
        return map_value!(x, t => t.narrow(r.axis, r.start, r.len));
    }
    let idx: Vec<i64> = (0..r.len as i64)
        .map(|i| r.start as i64 + i * r.step)
        .collect();
    select(x, r.axis, idx)
}

/// Index select of `idx` (in range) along `axis`.
fn select(x: Value, axis: usize, idx: Vec<i64>) -> Value {
    let n = idx.len();
    map_value!(x, t => {
        let device = t.device();
        let i = Tensor::<1, Int>::from_data(TensorData::new(idx.clone(), [n]), &device);
        t.select(axis, i)
    })
}

/// `Slice` with constant starts, ends, axes and steps.
#[derive(Debug, Clone)]
pub(crate) struct Slice {
    starts: Vec<i64>,
    ends: Vec<i64>,
    axes: Option<Vec<i64>>,
    steps: Option<Vec<i64>>,
}

pub(crate) fn build_slice(ctx: &mut NodeCtx) -> Result<Op> {
    ctx.single_output()?;
    let need =
        |v: Option<Vec<i64>>, what: &str| v.ok_or_else(|| ctx.err(format!("{what} are required")));
    let s = if ctx.opset < 10 {
        ctx.only_attrs(&["starts", "ends", "axes"])?;
        ctx.input_count(1, 1)?;
        Slice {
            starts: need(ctx.attr_ints("starts")?, "starts")?,
            ends: need(ctx.attr_ints("ends")?, "ends")?,
            axes: ctx.attr_ints("axes")?,
            steps: None,
        }
    } else {
        ctx.only_attrs(&[])?;
        ctx.input_count(3, 5)?;
        Slice {
            starts: need(ctx.const_ints(1, "starts")?, "starts")?,
            ends: need(ctx.const_ints(2, "ends")?, "ends")?,
            axes: ctx.const_ints(3, "axes")?,
            steps: ctx.const_ints(4, "steps")?,
        }
    };
    let n = s.starts.len();
    if s.ends.len() != n
        || s.axes.as_ref().is_some_and(|a| a.len() != n)
        || s.steps.as_ref().is_some_and(|a| a.len() != n)
    {
        return Err(ctx.err("starts, ends, axes and steps must have the same length"));
    }
    if s.steps.as_ref().is_some_and(|st| st.contains(&0)) {
        return Err(ctx.err("steps must not be 0"));
    }
    ctx.tensor_input(0)?;
    Ok(Op::Slice(s))
}

impl Slice {
    fn ranges(&self, x: &[usize]) -> std::result::Result<Vec<Range>, String> {
        let axes = match &self.axes {
            Some(a) => resolve_axes(a, x.len())?,
            None => (0..self.starts.len()).collect(),
        };
        let mut out = Vec::with_capacity(axes.len());
        for (i, &axis) in axes.iter().enumerate() {
            let d = *x
                .get(axis)
                .ok_or_else(|| format!("axis {axis} is out of range for {x:?}"))?
                as i64;
            let step = self.steps.as_ref().map_or(1, |s| s[i]);
            let norm = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
            let (start, end) = if step > 0 {
                (
                    norm(self.starts[i]).clamp(0, d),
                    norm(self.ends[i]).clamp(0, d),
                )
            } else {
                (
                    norm(self.starts[i]).clamp(0, d - 1),
                    norm(self.ends[i]).clamp(-1, d - 1),
                )
            };
            let len = if step > 0 {
                (end - start).max(0).div_euclid(step) + i64::from((end - start).max(0) % step != 0)
            } else {
                let span = (start - end).max(0);
                span / -step + i64::from(span % -step != 0)
            };
            if len == 0 {
                return Err(format!(
                    "the slice of axis {axis} ({} .. {} step {step}) is empty; empty tensors \
                     are not supported",
                    self.starts[i], self.ends[i]
                ));
            }
            out.push(Range {
                axis,
                start: start as usize,
                step,
                len: len as usize,
            });
        }
        Ok(out)
    }

    pub(crate) fn infer(&self, ins: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        let mut out = ins[0].to_vec();
        for r in self.ranges(ins[0])? {
            out[r.axis] = r.len;
        }
        Ok(out)
    }

    pub(crate) fn run(&self, ins: Vec<Value>) -> Value {
        let mut x = first(ins);
        let ranges = match self.ranges(&x.dims()) {
            Ok(r) => r,
            Err(e) => unreachable!("checked by shape inference: {e}"),
        };
        for r in ranges {
            x = take_range(x, r);
        }
        x
    }
}

/// One output of `Split`: part `index` of `parts` along `axis`.
#[derive(Debug, Clone)]
pub(crate) struct SplitPart {
    axis: i64,
    /// Explicit sizes (`split`), else `parts` equal parts (the last one smaller when the axis
    /// does not divide, as opset 18 allows).
    sizes: Option<Vec<i64>>,
    parts: usize,
    index: usize,
}

/// `Split`: one [`SplitPart`] per output; output 0's op is returned, the others are pushed to
/// the node's further outputs.
pub(crate) fn build_split(ctx: &mut NodeCtx) -> Result<Op> {
    let (sizes, num_outputs) = if ctx.opset < 13 {
        ctx.only_attrs(&["axis", "split"])?;
        ctx.input_count(1, 2)?;
        let sizes = match ctx.attr_ints("split")? {
            Some(s) => Some(s),
            None => ctx.const_ints(1, "split")?,
        };
        (sizes, None)
    } else {
        ctx.only_attrs(&["axis", "num_outputs"])?;
        ctx.input_count(1, 2)?;
        (
            ctx.const_ints(1, "split")?,
            ctx.attr_int_opt("num_outputs")?,
        )
    };
    let parts = ctx.node.output.len();
    if parts == 0 {
        return Err(ctx.err("has no output"));
    }
    if let Some(n) = num_outputs {
        if n != parts as i64 {
            return Err(ctx.err(format!("num_outputs {n} but {parts} outputs")));
        }
    }
    if let Some(s) = &sizes {
        if s.len() != parts || s.iter().any(|&v| v < 1) {
            return Err(ctx.err(format!(
                "split {s:?} must give a positive size for each of the {parts} outputs"
            )));
        }
    }
    let axis = ctx.attr_int("axis", 0)?;
    ctx.tensor_input(0)?;
    for index in 1..parts {
        ctx.extra.push(Op::SplitPart(SplitPart {
            axis,
            sizes: sizes.clone(),
            parts,
            index,
        }));
    }
    Ok(Op::SplitPart(SplitPart {
        axis,
        sizes,
        parts,
        index: 0,
    }))
}

impl SplitPart {
    fn range(&self, x: &[usize]) -> std::result::Result<Range, String> {
        let axis = norm_axis(self.axis, x.len())?;
        let d = x[axis];
        let sizes: Vec<usize> = match &self.sizes {
            Some(s) => s.iter().map(|&v| v as usize).collect(),
            None => {
                let each = d.div_ceil(self.parts);
                (0..self.parts)
                    .map(|i| each.min(d.saturating_sub(i * each)))
                    .collect()
            }
        };
        if sizes.iter().sum::<usize>() != d || sizes.contains(&0) {
            return Err(format!(
                "cannot split axis {axis} of size {d} into {sizes:?}"
            ));
        }
        Ok(Range {
            axis,
            start: sizes[..self.index].iter().sum(),
            step: 1,
            len: sizes[self.index],
        })
    }

    pub(crate) fn infer(&self, ins: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        let r = self.range(ins[0])?;
        let mut out = ins[0].to_vec();
        out[r.axis] = r.len;
        Ok(out)
    }

    pub(crate) fn run(&self, ins: Vec<Value>) -> Value {
        let x = first(ins);
        match self.range(&x.dims()) {
            Ok(r) => take_range(x, r),
            Err(e) => unreachable!("checked by shape inference: {e}"),
        }
    }
}

/// `Gather` of constant indices from a tensor.
#[derive(Debug, Clone)]
pub(crate) struct Gather {
    axis: i64,
    indices: Vec<i64>,
    /// The indices' shape (`[]` for one scalar index, which drops the axis).
    shape: Vec<usize>,
}

pub(crate) fn build_gather(ctx: &mut NodeCtx) -> Result<Op> {
    ctx.only_attrs(&["axis"])?;
    ctx.input_count(2, 2)?;
    ctx.single_output()?;
    let c = ctx
        .const_input(1, "indices")?
        .ok_or_else(|| ctx.err("indices are required"))?;
    let Some(indices) = c.as_i64().map(<[i64]>::to_vec) else {
        return Err(ctx.err("indices must be an integer tensor"));
    };
    let axis = ctx.attr_int("axis", 0)?;
    ctx.tensor_input(0)?;
    Ok(Op::Gather(Gather {
        axis,
        indices,
        shape: c.shape.clone(),
    }))
}

impl Gather {
    fn resolved(&self, x: &[usize]) -> std::result::Result<(usize, Vec<i64>), String> {
        let axis = norm_axis(self.axis, x.len())?;
        let d = x[axis] as i64;
        let idx = self
            .indices
            .iter()
            .map(|&i| {
                if i < -d || i >= d {
                    Err(format!(
                        "index {i} is out of range for axis {axis} of {x:?}"
                    ))
                } else {
                    Ok(if i < 0 { i + d } else { i })
                }
            })
            .collect::<std::result::Result<_, _>>()?;
        Ok((axis, idx))
    }

    pub(crate) fn infer(&self, ins: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        let x = ins[0];
        let (axis, _) = self.resolved(x)?;
        if self.indices.is_empty() {
            return Err("no indices: empty tensors are not supported".to_string());
        }
        let mut out = x[..axis].to_vec();
        out.extend(&self.shape);
        out.extend(&x[axis + 1..]);
        Ok(if out.is_empty() { vec![1] } else { out })
    }

    pub(crate) fn run(&self, ins: Vec<Value>, out: &[usize]) -> Value {
        let x = first(ins);
        let (axis, idx) = match self.resolved(&x.dims()) {
            Ok(r) => r,
            Err(e) => unreachable!("checked by shape inference: {e}"),
        };
        select(x, axis, idx).reshape(out)
    }
}

/// `Expand` to a constant shape (numpy broadcasting both ways), and `Tile` by constant repeats.
#[derive(Debug, Clone)]
pub(crate) struct Expand {
    shape: Vec<i64>,
    tile: bool,
}

pub(crate) fn build_expand(ctx: &mut NodeCtx) -> Result<Op> {
    ctx.only_attrs(&[])?;
    ctx.input_count(2, 2)?;
    ctx.single_output()?;
    let tile = ctx.op == "Tile";
    let what = if tile { "repeats" } else { "shape" };
    let shape = ctx
        .const_ints(1, what)?
        .ok_or_else(|| ctx.err(format!("{what} is required")))?;
    if shape.iter().any(|&d| d < 1) {
        return Err(ctx.err(format!(
            "{what} {shape:?}: values must be >= 1 (empty tensors are not supported)"
        )));
    }
    ctx.tensor_input(0)?;
    Ok(Op::Expand(Expand { shape, tile }))
}

impl Expand {
    pub(crate) fn infer(&self, ins: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        let x = ins[0];
        let s: Vec<usize> = self.shape.iter().map(|&d| d as usize).collect();
        if self.tile {
            if s.len() != x.len() {
                return Err(format!(
                    "repeats {s:?} must have one value per axis of {x:?}"
                ));
            }
            return Ok(x.iter().zip(&s).map(|(a, b)| a * b).collect());
        }
        super::elementwise::broadcast_shape(x, &s)
    }

    pub(crate) fn run(&self, ins: Vec<Value>, out: &[usize]) -> Value {
        let x = first(ins);
        if self.tile {
            let reps: Vec<usize> = self.shape.iter().map(|&d| d as usize).collect();
            return map_value!(x, t => t.repeat(&reps));
        }
        x.into_rank(out.len()).expand(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn_tensor::Device;

    fn iota(shape: &[usize]) -> Value {
        let n: usize = shape.iter().product();
        Value::from_f32((0..n).map(|i| i as f32).collect(), shape, &Device::flex()).unwrap()
    }

    #[test]
    fn squeeze_and_unsqueeze_shapes() {
        let sq = |axes: Option<Vec<i64>>, unsqueeze| Squeeze { axes, unsqueeze };
        assert_eq!(sq(None, false).infer(&[&[1, 3, 1, 2]]).unwrap(), vec![3, 2]);
        assert_eq!(
            sq(Some(vec![-2]), false).infer(&[&[1, 3, 1, 2]]).unwrap(),
            vec![1, 3, 2]
        );
        assert!(sq(Some(vec![1]), false).infer(&[&[1, 3]]).is_err());
        assert_eq!(
            sq(Some(vec![0, 3]), true).infer(&[&[3, 2]]).unwrap(),
            vec![1, 3, 2, 1]
        );
        assert_eq!(
            sq(Some(vec![-1]), true).infer(&[&[3, 2]]).unwrap(),
            vec![3, 2, 1]
        );
    }

    #[test]
    fn slice_with_negative_and_strided_steps() {
        let s = Slice {
            starts: vec![1, -1],
            ends: vec![i64::MAX, i64::MIN],
            axes: Some(vec![0, 1]),
            steps: Some(vec![2, -2]),
        };
        // [4, 3]: rows 1, 3; columns 2, 0
        assert_eq!(s.infer(&[&[4, 3]]).unwrap(), vec![2, 2]);
        assert_eq!(
            s.run(vec![iota(&[4, 3])]).to_vec(),
            vec![5.0, 3.0, 11.0, 9.0]
        );
        let empty = Slice {
            starts: vec![2],
            ends: vec![1],
            axes: None,
            steps: None,
        };
        assert!(empty.infer(&[&[4]]).is_err());
    }

    #[test]
    fn split_parts_gather_and_expand() {
        let part = |index, sizes: Option<Vec<i64>>| SplitPart {
            axis: 1,
            sizes,
            parts: 2,
            index,
        };
        let x = iota(&[2, 3]);
        assert_eq!(
            part(0, Some(vec![1, 2])).run(vec![x.clone()]).to_vec(),
            vec![0.0, 3.0]
        );
        assert_eq!(
            part(1, Some(vec![1, 2])).run(vec![x.clone()]).to_vec(),
            vec![1.0, 2.0, 4.0, 5.0]
        );
        // no sizes: ceil(3 / 2) = 2, then 1
        assert_eq!(part(1, None).infer(&[&[2, 3]]).unwrap(), vec![2, 1]);

        let g = Gather {
            axis: 1,
            indices: vec![2, -3],
            shape: vec![2],
        };
        assert_eq!(g.infer(&[&[2, 3]]).unwrap(), vec![2, 2]);
        assert_eq!(
            g.run(vec![x.clone()], &[2, 2]).to_vec(),
            vec![2.0, 0.0, 5.0, 3.0]
        );
        let scalar = Gather {
            axis: 0,
            indices: vec![1],
            shape: vec![],
        };
        assert_eq!(scalar.infer(&[&[2, 3]]).unwrap(), vec![3]);
        assert!(Gather {
            axis: 0,
            indices: vec![2],
            shape: vec![1],
        }
        .infer(&[&[2, 3]])
        .is_err());

        let e = Expand {
            shape: vec![2, 1, 3],
            tile: false,
        };
        let col = iota(&[2, 1]);
        assert_eq!(e.infer(&[&[2, 1]]).unwrap(), vec![2, 2, 3]);
        assert_eq!(
            e.run(vec![col], &[2, 2, 3]).to_vec(),
            vec![0., 0., 0., 1., 1., 1., 0., 0., 0., 1., 1., 1.]
        );
        let t = Expand {
            shape: vec![1, 2],
            tile: true,
        };
        assert_eq!(
            t.run(vec![iota(&[1, 2])], &[1, 4]).to_vec(),
            vec![0., 1., 0., 1.]
        );
    }
}
