//! A block's forward and backward pass on host slices with the float kernels of
//! [`subsetq_kernels::train`], for the blocks those cover: 2-D `Conv`, `Gemm` / `MatMul` with a
//! constant weight, `Relu`, `Clip`, `LeakyRelu`, `Sigmoid`, `Add` of equal shapes, `Mul` of
//! equal shapes or by a per-channel value (a squeeze-excite gate), `Add` / `Mul` by a constant
//! scalar or per-channel constant, `Concat` of channels, 2-D `MaxPool`, `GlobalAveragePool`
//! (and an `AveragePool` over the whole plane), and `Flatten` / `Reshape` / `Identity` that
//! keep the batch first. Only the gradients the
//! learned weights need are computed (none for the block's input, none along paths without a
//! learned weight). [`Tape::new`] says `None` for any other block, which then trains through
//! burn's autodiff.

use rayon::prelude::*;
use subsetq_kernels::train::{
    conv2d_backward, conv2d_forward, dense_backward, dense_forward, max_pool2d_backward,
    max_pool2d_forward,
};
use subsetq_kernels::ConvGeometry;
use subsetq_onnx::ConstData;

use super::LayerQuantizer;
use crate::error::{EngineError, Result};
use crate::ops::{Op, Slot, Unary};
use crate::plan::Plan;
use crate::value::BinaryFn;

/// A weight operand: one of the learned layers (by index) or a constant of the block.
#[derive(Debug, Clone)]
enum Weight {
    Learned(usize),
    Const(Vec<f32>),
}

#[derive(Debug, Clone)]
enum TapeOp {
    Conv {
        g: ConvGeometry,
        w: Weight,
        bias: Option<Vec<f32>>,
    },
    /// `y (batch × n) = alpha · a (batch × k) · op(w) + beta · c`.
    Dense {
        k: usize,
        n: usize,
        trans_w: bool,
        alpha: f32,
        w: Weight,
        c: Option<(Vec<f32>, f32)>,
    },
    Relu,
    Clip {
        lo: f32,
        hi: f32,
    },
    Add,
    LeakyRelu {
        alpha: f32,
    },
    Sigmoid,
    /// `a · b`, `b` one value per `plane` values of `a` (1: the same shape).
    Mul {
        plane: usize,
    },
    /// `x + c` or `x · c`, `c` a scalar (one value) or one value per channel of `plane`
    /// values.
    WithConst {
        mul: bool,
        c: Vec<f32>,
        plane: usize,
    },
    /// Inputs joined along the channels: each sample is its inputs' samples one after another.
    Concat,
    MaxPool {
        g: ConvGeometry,
    },
    GlobalAveragePool {
        plane: usize,
    },
    /// The same values under another shape.
    Same,
}

#[derive(Debug, Clone)]
struct TapeStep {
    op: TapeOp,
    inputs: Vec<Slot>,
    output: Slot,
}

/// A block planned for the host kernels.
#[derive(Debug, Clone)]
pub(super) struct Tape {
    input: Slot,
    output: Slot,
    steps: Vec<TapeStep>,
    /// Values per sample of every slot (0 for constants).
    sizes: Vec<usize>,
    /// Whether a slot's gradient is needed: it depends on a learned weight.
    needs_grad: Vec<bool>,
    /// The output's channels (axis 1): the loss sums over them and averages the rest.
    pub(super) out_channels: usize,
    layers: usize,
}

/// Every slot's values of one forward pass, and by step the max pools' argmax and the
/// convolutions' columns kept for the backward pass. One is reused from step to step, so
/// that its buffers are allocated once.
#[derive(Default)]
pub(super) struct Values {
    slots: Vec<Option<Vec<f32>>>,
    argmax: Vec<Option<Vec<u32>>>,
    columns: Vec<Vec<f32>>,
    /// Per step: whether `columns` holds this pass's columns.
    kept: Vec<bool>,
}

impl Tape {
    /// Plans `plan` (one block, input samples of `sample_shape`) with `layers` learned; `None`
    /// when an operator, a shape or a non-constant weight is outside what the tape covers.
    pub(super) fn new(
        plan: &Plan,
        layers: &[&LayerQuantizer],
        sample_shape: &[usize],
    ) -> Option<Tape> {
        let input_name = plan.single_input().ok()?;
        let input = plan.slot_of(input_name)?;
        let output = plan.slot_of(plan.output_names().first()?)?;
        let shape_at = |b: usize| {
            let dims: Vec<usize> = std::iter::once(b)
                .chain(sample_shape.iter().copied())
                .collect();
            plan.infer(&[(input_name, dims)]).ok()
        };
        let (one, two) = (shape_at(1)?, shape_at(2)?);
        let constants: Vec<Option<(&str, &subsetq_onnx::ConstTensor)>> = {
            let mut c = vec![None; one.len()];
            for (slot, name, t) in &plan.constants {
                c[*slot] = Some((name.as_str(), t));
            }
            c
        };
        let float_const = |slot: Slot| -> Option<Vec<f32>> {
            match constants.get(slot).copied().flatten() {
                Some((_, t)) => match &t.data {
                    ConstData::F32(v) => Some(v.clone()),
                    ConstData::I64(_) => None,
                },
                None => None,
            }
        };
        let weight = |slot: Slot| -> Option<Weight> {
            let (name, _) = constants.get(slot).copied().flatten()?;
            match layers.iter().position(|l| l.name == name) {
                Some(i) => Some(Weight::Learned(i)),
                None => float_const(slot).map(Weight::Const),
            }
        };
        // A runtime value: batch first, the same per-sample shape at batch 1 and 2.
        let per_sample = |slot: Slot| -> Option<usize> {
            let (a, b) = (one[slot].as_ref()?, two[slot].as_ref()?);
            (constants[slot].is_none() && a[0] == 1 && b[0] == 2 && a[1..] == b[1..])
                .then(|| a.iter().product())
        };
        let mut sizes = vec![0usize; one.len()];
        sizes[input] = per_sample(input)?;
        let mut needs_grad = vec![false; one.len()];
        let mut steps = Vec::with_capacity(plan.steps.len());
        for step in &plan.steps {
            let ins = &step.inputs;
            let x = *ins.first()?;
            let x_dims = one[x].as_ref()?;
            let mut ordered: Vec<Slot> = Vec::new();
            let op = match &step.op {
                Op::Conv(c) => {
                    let w_dims = one[*ins.get(1)?].as_ref()?;
                    let g = c.geometry_2d(x_dims, w_dims)?;
                    let bias = match ins.get(2) {
                        Some(&b) => Some(float_const(b)?),
                        None => None,
                    };
                    TapeOp::Conv {
                        g,
                        w: weight(ins[1])?,
                        bias,
                    }
                }
                Op::Gemm(gemm) => {
                    let (alpha, beta, trans_a, trans_w, has_c) = gemm.attributes();
                    let w_dims = one[*ins.get(1)?].as_ref()?;
                    if trans_a || x_dims.len() != 2 || w_dims.len() != 2 {
                        return None;
                    }
                    let (k, n) = if trans_w {
                        (w_dims[1], w_dims[0])
                    } else {
                        (w_dims[0], w_dims[1])
                    };
                    let c = match (has_c, ins.get(2)) {
                        (true, Some(&c)) => {
                            let v = float_const(c)?;
                            Some((v.len() == n).then_some((v, beta))?)
                        }
                        _ => None,
                    };
                    TapeOp::Dense {
                        k,
                        n,
                        trans_w,
                        alpha,
                        w: weight(ins[1])?,
                        c,
                    }
                }
                Op::MatMul => {
                    let w_dims = one[*ins.get(1)?].as_ref()?;
                    if x_dims.len() != 2 || w_dims.len() != 2 {
                        return None;
                    }
                    TapeOp::Dense {
                        k: w_dims[0],
                        n: w_dims[1],
                        trans_w: false,
                        alpha: 1.0,
                        w: weight(ins[1])?,
                        c: None,
                    }
                }
                Op::Relu => TapeOp::Relu,
                Op::Clip(c) => {
                    let (lo, hi) = c.bounds();
                    TapeOp::Clip {
                        lo: lo.unwrap_or(f32::NEG_INFINITY),
                        hi: hi.unwrap_or(f32::INFINITY),
                    }
                }
                Op::Binary(b)
                    if matches!(b.f, BinaryFn::Add | BinaryFn::Mul) && b.numpy_broadcast() =>
                {
                    let mul = b.f == BinaryFn::Mul;
                    let (mut a, mut c) = (x, *ins.get(1)?);
                    if constants[a].is_some() {
                        (a, c) = (c, a);
                    }
                    let (a_dims, c_dims) = (one[a].as_ref()?, one[c].as_ref()?);
                    let out_dims = one[step.output].as_ref()?;
                    if a_dims != out_dims || constants[a].is_some() {
                        return None;
                    }
                    let plane: usize = a_dims.iter().skip(2).product();
                    let channels = a_dims.get(1).copied().unwrap_or(1);
                    // Right-aligned to the output: all ones but (at most) the channel axis.
                    let per_channel = c_dims.len() <= a_dims.len()
                        && c_dims
                            .iter()
                            .rev()
                            .enumerate()
                            .all(|(k, &d)| d == 1 || (k + 2 == a_dims.len() && d == channels));
                    let c_count: usize = c_dims.iter().product();
                    let per_channel = per_channel && (c_count == 1 || c_count == channels);
                    if c_dims == a_dims && constants[c].is_none() {
                        ordered = vec![a, c];
                        if mul {
                            TapeOp::Mul { plane: 1 }
                        } else {
                            TapeOp::Add
                        }
                    } else if per_channel && c_count == channels && constants[c].is_none() && mul {
                        ordered = vec![a, c];
                        TapeOp::Mul { plane }
                    } else if per_channel {
                        ordered = vec![a];
                        TapeOp::WithConst {
                            mul,
                            c: float_const(c)?,
                            plane,
                        }
                    } else {
                        return None;
                    }
                }
                Op::Unary(Unary::LeakyRelu(alpha)) => TapeOp::LeakyRelu { alpha: *alpha },
                Op::Unary(Unary::Sigmoid) => TapeOp::Sigmoid,
                Op::Concat(c) if c.axis(x_dims.len()) == Some(1) => {
                    ordered = ins.clone();
                    TapeOp::Concat
                }
                Op::MaxPool(p) => TapeOp::MaxPool {
                    g: p.geometry_2d(x_dims)?,
                },
                Op::GlobalAveragePool => TapeOp::GlobalAveragePool {
                    plane: x_dims[2..].iter().product(),
                },
                Op::AveragePool(p) => {
                    let g = p.geometry_2d(x_dims)?;
                    let whole = g.kernel == g.in_hw && g.pads == [0; 4] && g.out_hw() == [1, 1];
                    if !whole {
                        return None;
                    }
                    TapeOp::GlobalAveragePool {
                        plane: x_dims[2..].iter().product(),
                    }
                }
                Op::Flatten(_) | Op::Reshape(_) | Op::Identity => TapeOp::Same,
                _ => return None,
            };
            // Runtime operands: the data input, and both sides of an Add or Mul, every input
            // of a Concat.
            let runtime: &[Slot] = match op {
                TapeOp::Add | TapeOp::Mul { .. } | TapeOp::Concat | TapeOp::WithConst { .. } => {
                    &ordered
                }
                _ => &ins[..1],
            };
            for &s in runtime {
                if sizes[s] == 0 {
                    return None;
                }
            }
            sizes[step.output] = per_sample(step.output)?;
            let learned = matches!(
                op,
                TapeOp::Conv {
                    w: Weight::Learned(_),
                    ..
                } | TapeOp::Dense {
                    w: Weight::Learned(_),
                    ..
                }
            );
            needs_grad[step.output] = learned || runtime.iter().any(|&s| needs_grad[s]);
            steps.push(TapeStep {
                op,
                inputs: runtime.to_vec(),
                output: step.output,
            });
        }
        let out_dims = one[output].as_ref()?;
        if sizes[output] == 0 {
            return None;
        }
        Some(Tape {
            input,
            output,
            steps,
            sizes,
            needs_grad,
            out_channels: out_dims.get(1).copied().unwrap_or(1).max(1),
            layers: layers.len(),
        })
    }

    /// Values per sample of the block's output.
    pub(super) fn output_size(&self) -> usize {
        self.sizes[self.output]
    }

    /// Runs the block on `batch` samples `x` with the learned layers' weights `weights` (in
    /// `layers` order, each in its layer's layout), into `values` (its buffers reused).
    pub(super) fn forward(
        &self,
        x: &[f32],
        batch: usize,
        weights: &[Vec<f32>],
        values: &mut Values,
    ) -> Result<()> {
        let Values {
            slots,
            argmax,
            columns,
            kept,
        } = values;
        slots.resize(self.sizes.len(), None);
        argmax.resize(self.steps.len(), None);
        columns.resize(self.steps.len(), Vec::new());
        kept.resize(self.steps.len(), false);
        let mut input = slots[self.input].take().unwrap_or_default();
        input.clear();
        input.extend_from_slice(x);
        slots[self.input] = Some(input);
        for (si, step) in self.steps.iter().enumerate() {
            // Every kernel writes all of its output: the old buffer is reused as it is.
            let mut y = slots[step.output].take().unwrap_or_default();
            y.resize(batch * self.sizes[step.output], 0.0);
            let x = value(slots, step.inputs[0])?;
            match &step.op {
                TapeOp::Conv { g, w, bias } => {
                    // Columns are kept where a weight gradient will be taken.
                    let keep = learned_of(w).is_some().then_some(&mut columns[si]);
                    kept[si] = conv2d_forward(
                        g,
                        x,
                        batch,
                        weight_of(w, weights),
                        bias.as_deref(),
                        &mut y,
                        keep,
                    )?;
                }
                TapeOp::Dense {
                    k,
                    n,
                    trans_w,
                    alpha,
                    w,
                    c,
                } => dense_forward(
                    (batch, *k, *n),
                    x,
                    weight_of(w, weights),
                    *trans_w,
                    *alpha,
                    c.as_ref().map(|(v, beta)| (v.as_slice(), *beta)),
                    &mut y,
                )?,
                TapeOp::Relu => y.iter_mut().zip(x).for_each(|(o, v)| *o = v.max(0.0)),
                TapeOp::Clip { lo, hi } => y
                    .iter_mut()
                    .zip(x)
                    .for_each(|(o, v)| *o = v.max(*lo).min(*hi)),
                TapeOp::Add => {
                    let b = value(slots, step.inputs[1])?;
                    y.iter_mut()
                        .zip(x.iter().zip(b))
                        .for_each(|(o, (a, b))| *o = a + b);
                }
                TapeOp::LeakyRelu { alpha } => y
                    .iter_mut()
                    .zip(x)
                    .for_each(|(o, &v)| *o = if v >= 0.0 { v } else { alpha * v }),
                TapeOp::Sigmoid => y
                    .iter_mut()
                    .zip(x)
                    .for_each(|(o, &v)| *o = 1.0 / (1.0 + (-v).exp())),
                TapeOp::Mul { plane } => {
                    let b = value(slots, step.inputs[1])?;
                    for ((o, a), &b) in y.chunks_mut(*plane).zip(x.chunks(*plane)).zip(b) {
                        o.iter_mut().zip(a).for_each(|(o, a)| *o = a * b);
                    }
                }
                TapeOp::WithConst { mul, c, plane } => {
                    for (k, (o, a)) in y.chunks_mut(*plane).zip(x.chunks(*plane)).enumerate() {
                        let c = c[k % c.len()];
                        match mul {
                            true => o.iter_mut().zip(a).for_each(|(o, a)| *o = a * c),
                            false => o.iter_mut().zip(a).for_each(|(o, a)| *o = a + c),
                        }
                    }
                }
                TapeOp::Concat => {
                    let mut at = 0;
                    for &s in &step.inputs {
                        let part = self.sizes[s];
                        let v = value(slots, s)?;
                        for (o, v) in y.chunks_mut(self.sizes[step.output]).zip(v.chunks(part)) {
                            o[at..at + part].copy_from_slice(v);
                        }
                        at += part;
                    }
                }
                TapeOp::MaxPool { g } => {
                    argmax[si] = Some(max_pool2d_forward(g, x, batch, &mut y)?);
                }
                TapeOp::GlobalAveragePool { plane } => {
                    for (o, p) in y.iter_mut().zip(x.chunks(*plane)) {
                        *o = p.iter().sum::<f32>() / *plane as f32;
                    }
                }
                TapeOp::Same => y.copy_from_slice(x),
            }
            slots[step.output] = Some(y);
        }
        Ok(())
    }

    /// The block's output in `values`.
    pub(super) fn output<'v>(&self, values: &'v Values) -> Result<&'v [f32]> {
        value(&values.slots, self.output)
    }

    /// The gradient of every learned layer's weights (in `layers` order) given the output's
    /// gradient `dy`, from the forward pass `values` on `batch` samples with `weights`.
    pub(super) fn backward(
        &self,
        values: &Values,
        dy: Vec<f32>,
        batch: usize,
        weights: &[Vec<f32>],
    ) -> Result<Vec<Vec<f32>>> {
        let mut grads: Vec<Option<Vec<f32>>> = vec![None; self.sizes.len()];
        grads[self.output] = Some(dy);
        let mut weight_grads: Vec<Vec<f32>> = weights.iter().map(|w| vec![0.0; w.len()]).collect();
        for (si, step) in self.steps.iter().enumerate().rev() {
            let Some(g) = grads[step.output].take() else {
                continue;
            };
            let x_slot = step.inputs[0];
            let want_dx = self.needs_grad[x_slot];
            let x = value(&values.slots, x_slot)?;
            let zeros = || vec![0.0f32; batch * self.sizes[x_slot]];
            // Element-wise steps pass the gradient on in place; the others write a new one.
            let elementwise = matches!(
                step.op,
                TapeOp::Relu
                    | TapeOp::Clip { .. }
                    | TapeOp::Add
                    | TapeOp::Same
                    | TapeOp::LeakyRelu { .. }
                    | TapeOp::Sigmoid
                    | TapeOp::Mul { .. }
                    | TapeOp::WithConst { .. }
                    | TapeOp::Concat
            );
            let mut dx = (want_dx && !elementwise).then(zeros);
            match &step.op {
                TapeOp::Conv { g: geo, w, .. } => {
                    let mut dw = learned_of(w).map(|i| vec![0.0f32; weights[i].len()]);
                    conv2d_backward(
                        geo,
                        x,
                        batch,
                        weight_of(w, weights),
                        &g,
                        values.kept[si].then_some(values.columns[si].as_slice()),
                        dw.as_deref_mut(),
                        dx.as_deref_mut(),
                    )?;
                    add_weight_grad(&mut weight_grads, w, dw);
                }
                TapeOp::Dense {
                    k,
                    n,
                    trans_w,
                    alpha,
                    w,
                    ..
                } => {
                    let mut dw = learned_of(w).map(|i| vec![0.0f32; weights[i].len()]);
                    dense_backward(
                        (batch, *k, *n),
                        x,
                        weight_of(w, weights),
                        *trans_w,
                        *alpha,
                        &g,
                        dw.as_deref_mut(),
                        dx.as_deref_mut(),
                    )?;
                    add_weight_grad(&mut weight_grads, w, dw);
                }
                TapeOp::Relu => {
                    let y = value(&values.slots, step.output)?;
                    dx = want_dx.then(|| pass_where(g, y, |y| y > 0.0));
                }
                TapeOp::Clip { lo, hi } => {
                    let (lo, hi) = (*lo, *hi);
                    dx = want_dx.then(|| pass_where(g, x, |v| v >= lo && v <= hi));
                }
                TapeOp::Add => {
                    let other = step.inputs[1];
                    if self.needs_grad[other] {
                        accumulate(&mut grads, other, g.clone());
                    }
                    dx = want_dx.then_some(g);
                }
                TapeOp::LeakyRelu { alpha } => {
                    dx = want_dx.then(|| {
                        let mut g = g;
                        g.iter_mut().zip(x).for_each(|(g, &v)| {
                            if v < 0.0 {
                                *g *= alpha;
                            }
                        });
                        g
                    });
                }
                TapeOp::Sigmoid => {
                    let y = value(&values.slots, step.output)?;
                    dx = want_dx.then(|| {
                        let mut g = g;
                        g.iter_mut().zip(y).for_each(|(g, &y)| *g *= y * (1.0 - y));
                        g
                    });
                }
                TapeOp::Mul { plane } => {
                    let other = step.inputs[1];
                    let b = value(&values.slots, other)?;
                    if self.needs_grad[other] {
                        let db: Vec<f32> = g
                            .chunks(*plane)
                            .zip(x.chunks(*plane))
                            .map(|(g, a)| g.iter().zip(a).map(|(g, a)| g * a).sum())
                            .collect();
                        accumulate(&mut grads, other, db);
                    }
                    dx = want_dx.then(|| {
                        let mut g = g;
                        for (g, &b) in g.chunks_mut(*plane).zip(b) {
                            g.iter_mut().for_each(|g| *g *= b);
                        }
                        g
                    });
                }
                TapeOp::WithConst { mul, c, plane } => {
                    dx = want_dx.then(|| {
                        let mut g = g;
                        if *mul {
                            for (k, g) in g.chunks_mut(*plane).enumerate() {
                                let c = c[k % c.len()];
                                g.iter_mut().for_each(|g| *g *= c);
                            }
                        }
                        g
                    });
                }
                TapeOp::Concat => {
                    let whole = self.sizes[step.output];
                    let mut at = 0;
                    for &s in &step.inputs {
                        let part = self.sizes[s];
                        if self.needs_grad[s] {
                            let d: Vec<f32> = g
                                .chunks(whole)
                                .flat_map(|g| g[at..at + part].iter().copied())
                                .collect();
                            accumulate(&mut grads, s, d);
                        }
                        at += part;
                    }
                }
                TapeOp::MaxPool { g: geo } => {
                    if let Some(dx) = dx.as_mut() {
                        let am = values.argmax[si].as_deref().ok_or_else(|| {
                            EngineError::Graph("max pool without its forward argmax".into())
                        })?;
                        max_pool2d_backward(geo, am, &g, batch, dx)?;
                    }
                }
                TapeOp::GlobalAveragePool { plane } => {
                    if let Some(dx) = dx.as_mut() {
                        for (d, gv) in dx.chunks_mut(*plane).zip(&g) {
                            d.fill(gv / *plane as f32);
                        }
                    }
                }
                TapeOp::Same => dx = want_dx.then_some(g),
            }
            if let Some(dx) = dx {
                accumulate(&mut grads, x_slot, dx);
            }
        }
        debug_assert_eq!(weight_grads.len(), self.layers);
        Ok(weight_grads)
    }
}

fn value(slots: &[Option<Vec<f32>>], slot: Slot) -> Result<&[f32]> {
    slots
        .get(slot)
        .and_then(|v| v.as_deref())
        .ok_or_else(|| EngineError::Graph(format!("tape slot {slot} was not computed")))
}

fn weight_of<'a>(w: &'a Weight, learned: &'a [Vec<f32>]) -> &'a [f32] {
    match w {
        Weight::Learned(i) => &learned[*i],
        Weight::Const(v) => v,
    }
}

fn learned_of(w: &Weight) -> Option<usize> {
    match w {
        Weight::Learned(i) => Some(*i),
        Weight::Const(_) => None,
    }
}

/// `g` where `keep` holds for the matching value of `v`, 0 elsewhere, in place: the gradient
/// of Relu and Clip. In parallel parts (element-wise: the same bits on any number of threads).
fn pass_where(mut g: Vec<f32>, v: &[f32], keep: impl Fn(f32) -> bool + Sync) -> Vec<f32> {
    const PART: usize = 1 << 14;
    g.par_chunks_mut(PART)
        .zip(v.par_chunks(PART))
        .for_each(|(g, v)| {
            for (g, &v) in g.iter_mut().zip(v) {
                if !keep(v) {
                    *g = 0.0;
                }
            }
        });
    g
}

fn add_weight_grad(grads: &mut [Vec<f32>], w: &Weight, dw: Option<Vec<f32>>) {
    if let (Some(i), Some(dw)) = (learned_of(w), dw) {
        grads[i].iter_mut().zip(&dw).for_each(|(g, d)| *g += d);
    }
}

fn accumulate(grads: &mut [Option<Vec<f32>>], slot: Slot, g: Vec<f32>) {
    match &mut grads[slot] {
        Some(acc) => acc.iter_mut().zip(&g).for_each(|(a, v)| *a += v),
        none => *none = Some(g),
    }
}
