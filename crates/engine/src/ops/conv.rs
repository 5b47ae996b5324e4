//! `Conv` and `ConvTranspose` over 1, 2 or 3 spatial dims (NCW, NCHW, NCDHW): groups /
//! depthwise, asymmetric pads, strides, dilations, `auto_pad`, optional bias; for the
//! transposed convolution also `output_padding` and `output_shape`. The window geometry is
//! shared with the pools.

use burn_tensor::module::{
    conv1d, conv2d, conv3d, conv_transpose1d, conv_transpose2d, conv_transpose3d,
};
use burn_tensor::ops::{ConvOptions, ConvTransposeOptions};

use subsetq_kernels::ConvGeometry;

use super::{NodeCtx, Op};
use crate::error::Result;
use crate::value::{broadcast_binary, BinaryFn, Value};

/// ONNX `auto_pad`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AutoPad {
    NotSet,
    Valid,
    SameUpper,
    SameLower,
}

/// The most spatial dims a window has (3-D convolution and pooling).
pub(crate) const MAX_SPATIAL: usize = 3;

/// Window attributes shared by `Conv`, `ConvTranspose` and the pools, as the node gives them
/// (their number of spatial dims is known once the input's shape is).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Window {
    /// Kernel size from the attribute (`None`: taken from the weight, convolutions only).
    pub kernel: Option<Vec<usize>>,
    strides: Option<Vec<usize>>,
    dilations: Option<Vec<usize>>,
    /// Begins then ends, as ONNX `pads`.
    pads: Option<Vec<usize>>,
    pub auto_pad: AutoPad,
    pub ceil_mode: bool,
}

/// A window resolved for one input's spatial shape: one entry per spatial axis.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Resolved {
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    /// Begins then ends (`[top, left, bottom, right]` in 2-D).
    pub pads: Vec<usize>,
    /// Output spatial size.
    pub out: Vec<usize>,
}

impl Resolved {
    /// `(begin, end)` pads of spatial axis `i`.
    pub(crate) fn pad_pair(&self, i: usize) -> (usize, usize) {
        let r = self.strides.len();
        (self.pads[i], self.pads[i + r])
    }
}

fn ints(ctx: &NodeCtx, name: &str, min: i64) -> Result<Option<Vec<usize>>> {
    let Some(v) = ctx.attr_ints(name)? else {
        return Ok(None);
    };
    if v.iter().any(|&x| x < min) {
        return Err(ctx.err(format!("{name} {v:?}: values must be >= {min}")));
    }
    Ok(Some(v.iter().map(|&x| x as usize).collect()))
}

impl Window {
    /// Reads kernel_shape, strides, dilations, pads, auto_pad (and ceil_mode when
    /// `with_ceil`), checking that they agree on the number of spatial dims.
    pub(crate) fn parse(ctx: &NodeCtx, with_ceil: bool) -> Result<Window> {
        let kernel = ints(ctx, "kernel_shape", 1)?;
        let strides = ints(ctx, "strides", 1)?;
        let dilations = ints(ctx, "dilations", 1)?;
        let pads = ints(ctx, "pads", 0)?;
        // Values per spatial dim: pads has two (begin and end).
        let mut rank = None;
        for (name, values, per_dim) in [
            ("kernel_shape", &kernel, 1),
            ("strides", &strides, 1),
            ("dilations", &dilations, 1),
            ("pads", &pads, 2),
        ] {
            let Some(v) = values else { continue };
            let dims = v.len() / per_dim;
            if v.len() % per_dim != 0 || !(1..=MAX_SPATIAL).contains(&dims) {
                return Err(ctx.err(format!(
                    "{name} has {} values: 1-D, 2-D and 3-D windows are supported",
                    v.len()
                )));
            }
            let first = *rank.get_or_insert(dims);
            if first != dims {
                return Err(ctx.err(format!(
                    "{name} is for {dims} spatial dims, the other window attributes for {first}"
                )));
            }
        }
        let auto_pad = match ctx.attr_string("auto_pad")?.as_deref() {
            None | Some("NOTSET") => AutoPad::NotSet,
            Some("VALID") => AutoPad::Valid,
            Some("SAME_UPPER") => AutoPad::SameUpper,
            Some("SAME_LOWER") => AutoPad::SameLower,
            Some(other) => return Err(ctx.err(format!("auto_pad {other:?} is not supported"))),
        };
        let ceil_mode = if with_ceil {
            match ctx.attr_int("ceil_mode", 0)? {
                0 => false,
                1 => true,
                v => return Err(ctx.err(format!("ceil_mode {v} must be 0 or 1"))),
            }
        } else {
            false
        };
        Ok(Window {
            kernel,
            strides,
            dilations,
            pads,
            auto_pad,
            ceil_mode,
        })
    }

    /// The kernel size of weight `w` (`[_, _, k1, ...]`), checked against kernel_shape.
    fn kernel_of<'w>(&self, w: &'w [usize]) -> std::result::Result<&'w [usize], String> {
        let k = &w[2..];
        match &self.kernel {
            Some(ks) if ks.as_slice() != k => {
                Err(format!("kernel_shape {ks:?} does not match weight W {w:?}"))
            }
            _ => Ok(k),
        }
    }

    /// Strides, dilations and explicit pads for `r` spatial dims (defaults 1, 1, 0).
    fn for_rank(&self, r: usize) -> std::result::Result<WindowAxes, String> {
        let given = self
            .kernel
            .as_ref()
            .or(self.strides.as_ref())
            .or(self.dilations.as_ref())
            .map(Vec::len)
            .or(self.pads.as_ref().map(|p| p.len() / 2));
        if !(1..=MAX_SPATIAL).contains(&r) {
            return Err(format!(
                "{r} spatial dims: 1-D, 2-D and 3-D windows are supported"
            ));
        }
        if let Some(g) = given.filter(|&g| g != r) {
            return Err(format!(
                "the window attributes are for {g} spatial dims, the input has {r}"
            ));
        }
        Ok((
            self.strides.clone().unwrap_or_else(|| vec![1; r]),
            self.dilations.clone().unwrap_or_else(|| vec![1; r]),
            self.pads.clone().unwrap_or_else(|| vec![0; 2 * r]),
        ))
    }

    /// Pads and output size for spatial input `spatial` and kernel `k`.
    pub(crate) fn resolve(
        &self,
        spatial: &[usize],
        k: &[usize],
    ) -> std::result::Result<Resolved, String> {
        let r = spatial.len();
        let (strides, dilations, mut pads) = self.for_rank(r)?;
        let mut out = vec![0usize; r];
        for i in 0..r {
            let (s, d) = (strides[i], dilations[i]);
            let span = d * (k[i] - 1) + 1;
            match self.auto_pad {
                AutoPad::NotSet => {}
                AutoPad::Valid => {
                    pads[i] = 0;
                    pads[i + r] = 0;
                }
                AutoPad::SameUpper | AutoPad::SameLower => {
                    let o = spatial[i].div_ceil(s);
                    let total = ((o - 1) * s + span).saturating_sub(spatial[i]);
                    let small = total / 2;
                    let (b, e) = if self.auto_pad == AutoPad::SameUpper {
                        (small, total - small)
                    } else {
                        (total - small, small)
                    };
                    pads[i] = b;
                    pads[i + r] = e;
                }
            }
            let padded = spatial[i] + pads[i] + pads[i + r];
            if padded < span {
                return Err(format!(
                    "spatial size {} (padded {padded}) is smaller than the window {span} \
                     (kernel {}, dilation {d})",
                    spatial[i], k[i]
                ));
            }
            let num = padded - span;
            let mut o = if self.ceil_mode {
                num.div_ceil(s)
            } else {
                num / s
            } + 1;
            // ceil mode: a last window that starts in the end padding is dropped.
            if self.ceil_mode && (o - 1) * s >= spatial[i] + pads[i] {
                o -= 1;
            }
            out[i] = o;
        }
        Ok(Resolved {
            strides,
            dilations,
            pads,
            out,
        })
    }
}

/// Strides, dilations and pads (begins then ends) of every spatial axis.
type WindowAxes = (Vec<usize>, Vec<usize>, Vec<usize>);

/// The first `N` entries as an array (the caller has checked the length).
fn arr<const N: usize>(v: &[usize]) -> [usize; N] {
    let mut a = [0; N];
    a.copy_from_slice(&v[..N]);
    a
}

/// `(begin, end)` pads of every spatial axis as an array.
fn pad_pairs<const N: usize>(r: &Resolved) -> [(usize, usize); N] {
    std::array::from_fn(|i| r.pad_pair(i))
}

/// Checks the input and weight ranks of a convolution: rank 3 to 5, equal.
fn check_ranks(x: &[usize], w: &[usize], layout: &str) -> std::result::Result<(), String> {
    if !(3..=MAX_SPATIAL + 2).contains(&x.len()) {
        return Err(format!(
            "input X has shape {x:?}; 1-D, 2-D and 3-D convolutions (rank 3 to 5 input \
             [N, C, D1, ...]) are supported"
        ));
    }
    if w.len() != x.len() {
        return Err(format!(
            "weight W has shape {w:?}; expected rank {} {layout}",
            x.len()
        ));
    }
    if w[2..].contains(&0) {
        return Err(format!("weight W {w:?} has an empty kernel"));
    }
    Ok(())
}

/// A convolution's output shape `out`, once its bias (if any) is checked to be `[M]`.
fn check_bias(
    has_bias: bool,
    ins: &[&[usize]],
    out: Vec<usize>,
) -> std::result::Result<Vec<usize>, String> {
    if has_bias && ins[2] != [out[1]] {
        return Err(format!(
            "bias B has shape {:?}, expected [{}]",
            ins[2], out[1]
        ));
    }
    Ok(out)
}

/// A convolution's runtime inputs X, W and the optional B.
fn operands(ins: Vec<Value>) -> (Value, Value, Option<Value>) {
    let mut it = ins.into_iter();
    let (Some(x), Some(w)) = (it.next(), it.next()) else {
        unreachable!("input count checked when the plan was built")
    };
    (x, w, it.next())
}

/// A planned `Conv`.
#[derive(Debug, Clone)]
pub(crate) struct Conv {
    window: Window,
    groups: usize,
    has_bias: bool,
}

fn parse_groups(ctx: &NodeCtx) -> Result<usize> {
    let groups = ctx.attr_int("group", 1)?;
    if groups < 1 {
        return Err(ctx.err(format!("group {groups} must be >= 1")));
    }
    Ok(groups as usize)
}

/// The tensor inputs X, W and optional B of a convolution; whether B is there.
fn conv_inputs(ctx: &mut NodeCtx) -> Result<bool> {
    ctx.input_count(2, 3)?;
    ctx.single_output()?;
    ctx.tensor_input(0)?;
    ctx.tensor_input(1)?;
    let has_bias = ctx.input_name(2).is_some();
    if has_bias {
        ctx.tensor_input(2)?;
    }
    Ok(has_bias)
}

pub(crate) fn build(ctx: &mut NodeCtx) -> Result<Op> {
    ctx.only_attrs(&[
        "auto_pad",
        "dilations",
        "group",
        "kernel_shape",
        "pads",
        "strides",
    ])?;
    let window = Window::parse(ctx, false)?;
    let groups = parse_groups(ctx)?;
    let has_bias = conv_inputs(ctx)?;
    Ok(Op::Conv(Conv {
        window,
        groups,
        has_bias,
    }))
}

impl Conv {
    fn geometry(
        &self,
        x: &[usize],
        w: &[usize],
    ) -> std::result::Result<(Resolved, Vec<usize>), String> {
        check_ranks(x, w, "[M, C/group, k1, ...]")?;
        let g = self.groups;
        if x[1] != w[1] * g {
            return Err(format!(
                "input X has {} channels but weight W {w:?} with group {g} expects {}",
                x[1],
                w[1] * g
            ));
        }
        if !w[0].is_multiple_of(g) {
            return Err(format!(
                "weight W {w:?}: {} output channels not divisible by group {g}",
                w[0]
            ));
        }
        let k = self.window.kernel_of(w)?;
        let res = self.window.resolve(&x[2..], k)?;
        let mut out = vec![x[0], w[0]];
        out.extend_from_slice(&res.out);
        Ok((res, out))
    }

    /// The 2-D convolution of input `x` by weight `w` as the packed kernels describe it.
    pub(crate) fn kernel_geometry(
        &self,
        x: &[usize],
        w: &[usize],
    ) -> std::result::Result<subsetq_kernels::ConvGeometry, String> {
        let (res, _) = self.geometry(x, w)?;
        if x.len() != 4 {
            return Err(format!("input X {x:?}: the packed kernels are 2-D"));
        }
        Ok(subsetq_kernels::ConvGeometry {
            in_channels: x[1],
            in_hw: [x[2], x[3]],
            out_channels: w[0],
            kernel: [w[2], w[3]],
            strides: arr(&res.strides),
            dilations: arr(&res.dilations),
            pads: arr(&res.pads),
            groups: self.groups,
        })
    }

    pub(crate) fn infer(&self, ins: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        let (_, out) = self.geometry(ins[0], ins[1])?;
        check_bias(self.has_bias, ins, out)
    }

    /// The 2-D geometry for input `x` and weight `w` (both NCHW), for the kernels; `None` for
    /// other ranks or shapes the convolution refuses.
    pub(crate) fn geometry_2d(&self, x: &[usize], w: &[usize]) -> Option<ConvGeometry> {
        if x.len() != 4 {
            return None;
        }
        let (res, _) = self.geometry(x, w).ok()?;
        Some(ConvGeometry {
            in_channels: x[1],
            in_hw: [x[2], x[3]],
            out_channels: w[0],
            kernel: [w[2], w[3]],
            strides: [res.strides[0], res.strides[1]],
            dilations: [res.dilations[0], res.dilations[1]],
            pads: [res.pads[0], res.pads[1], res.pads[2], res.pads[3]],
            groups: self.groups,
        })
    }

    pub(crate) fn run(&self, ins: Vec<Value>) -> Value {
        let (x, w, b) = operands(ins);
        let b = b.map(Value::into_r1);
        let res = match self.geometry(&x.dims(), &w.dims()) {
            Ok((res, _)) => res,
            Err(e) => unreachable!("checked by shape inference: {e}"),
        };
        macro_rules! options {
            ($n:literal) => {
                ConvOptions {
                    stride: arr::<$n>(&res.strides),
                    padding: pad_pairs::<$n>(&res),
                    dilation: arr::<$n>(&res.dilations),
                    groups: self.groups,
                }
            };
        }
        match (x, w) {
            (Value::R3(x), Value::R3(w)) => Value::R3(conv1d(x, w, b, options!(1))),
            (Value::R4(x), Value::R4(w)) => Value::R4(conv2d(x, w, b, options!(2))),
            (x @ Value::R5(_), Value::R5(w)) => {
                // burn's conv3d pads symmetrically: the excess of an asymmetric pair is
                // written into the input as zeros first.
                let mut x = x;
                let mut options = options!(3);
                for (i, pad) in options.padding.iter_mut().enumerate() {
                    let both = pad.0.min(pad.1);
                    x = pad_zeros(x, i + 2, pad.0 - both, pad.1 - both);
                    *pad = (both, both);
                }
                Value::R5(conv3d(x.into_r5(), w, b, options))
            }
            _ => unreachable!("ranks checked by shape inference"),
        }
    }
}

/// A planned `ConvTranspose`.
#[derive(Debug, Clone)]
pub(crate) struct ConvTranspose {
    window: Window,
    groups: usize,
    has_bias: bool,
    output_padding: Option<Vec<usize>>,
    /// The spatial output size asked for (pads are then derived from it).
    output_shape: Option<Vec<usize>>,
}

pub(crate) fn build_transpose(ctx: &mut NodeCtx) -> Result<Op> {
    ctx.only_attrs(&[
        "auto_pad",
        "dilations",
        "group",
        "kernel_shape",
        "output_padding",
        "output_shape",
        "pads",
        "strides",
    ])?;
    let window = Window::parse(ctx, false)?;
    let groups = parse_groups(ctx)?;
    let output_padding = ints(ctx, "output_padding", 0)?;
    let output_shape = ints(ctx, "output_shape", 1)?;
    let has_bias = conv_inputs(ctx)?;
    Ok(Op::ConvTranspose(ConvTranspose {
        window,
        groups,
        has_bias,
        output_padding,
        output_shape,
    }))
}

/// A transposed convolution resolved for one input: burn computes the full output (no pads),
/// of which `[pads_begin, pads_begin + out)` per axis is kept, zeros beyond its end.
struct TransposeGeometry {
    strides: Vec<usize>,
    dilations: Vec<usize>,
    full: Vec<usize>,
    begin: Vec<usize>,
    out_shape: Vec<usize>,
}

impl ConvTranspose {
    fn geometry(&self, x: &[usize], w: &[usize]) -> std::result::Result<TransposeGeometry, String> {
        check_ranks(x, w, "[C, M/group, k1, ...]")?;
        let g = self.groups;
        if x[1] != w[0] {
            return Err(format!(
                "input X has {} channels but weight W {w:?} has {}",
                x[1], w[0]
            ));
        }
        if !w[0].is_multiple_of(g) {
            return Err(format!(
                "weight W {w:?}: {} input channels not divisible by group {g}",
                w[0]
            ));
        }
        let k = self.window.kernel_of(w)?;
        let spatial = &x[2..];
        let r = spatial.len();
        let (strides, dilations, pads) = self.window.for_rank(r)?;
        let adj = self.output_padding.clone().unwrap_or_else(|| vec![0; r]);
        if adj.len() != r {
            return Err(format!(
                "output_padding {adj:?} is not for {r} spatial dims"
            ));
        }
        // output_shape may list the spatial dims or the whole output shape.
        let asked = match &self.output_shape {
            Some(s) if s.len() == r => Some(s.clone()),
            Some(s) if s.len() == r + 2 => Some(s[2..].to_vec()),
            Some(s) => return Err(format!("output_shape {s:?} is not for {r} spatial dims")),
            None if matches!(
                self.window.auto_pad,
                AutoPad::SameUpper | AutoPad::SameLower
            ) =>
            {
                Some(spatial.iter().zip(&strides).map(|(x, s)| x * s).collect())
            }
            None => None,
        };
        let mut geo = TransposeGeometry {
            strides,
            dilations,
            full: vec![0; r],
            begin: vec![0; r],
            out_shape: vec![x[0], w[1] * g],
        };
        for i in 0..r {
            let full = (spatial[i] - 1) * geo.strides[i] + geo.dilations[i] * (k[i] - 1) + 1;
            let total_out = full + adj[i];
            let (begin, out) = match &asked {
                Some(asked) => {
                    let Some(total) = total_out.checked_sub(asked[i]) else {
                        return Err(format!(
                            "output_shape {asked:?} is larger than the full output \
                             (size {total_out} along spatial axis {i})"
                        ));
                    };
                    // As ONNX's reference: SAME_UPPER puts the odd pad at the end.
                    let begin = if self.window.auto_pad == AutoPad::SameUpper {
                        total / 2
                    } else {
                        total - total / 2
                    };
                    (begin, asked[i])
                }
                None if self.window.auto_pad == AutoPad::Valid => (0, total_out),
                None => {
                    let (b, e) = (pads[i], pads[i + r]);
                    match total_out.checked_sub(b + e).filter(|&o| o > 0) {
                        Some(o) => (b, o),
                        None => {
                            return Err(format!(
                                "pads {pads:?} leave no output along spatial axis {i} \
                                 (full size {total_out})"
                            ))
                        }
                    }
                }
            };
            geo.full[i] = full;
            geo.begin[i] = begin;
            geo.out_shape.push(out);
        }
        Ok(geo)
    }

    pub(crate) fn infer(&self, ins: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        let out = self.geometry(ins[0], ins[1])?.out_shape;
        check_bias(self.has_bias, ins, out)
    }

    pub(crate) fn run(&self, ins: Vec<Value>) -> Value {
        let (x, w, b) = operands(ins);
        let geo = match self.geometry(&x.dims(), &w.dims()) {
            Ok(g) => g,
            Err(e) => unreachable!("checked by shape inference: {e}"),
        };
        macro_rules! options {
            ($n:literal) => {
                ConvTransposeOptions {
                    stride: arr::<$n>(&geo.strides),
                    padding: [0; $n],
                    padding_out: [0; $n],
                    dilation: arr::<$n>(&geo.dilations),
                    groups: self.groups,
                }
            };
        }
        let mut y = match (x, w) {
            (Value::R3(x), Value::R3(w)) => Value::R3(conv_transpose1d(x, w, None, options!(1))),
            (Value::R4(x), Value::R4(w)) => Value::R4(conv_transpose2d(x, w, None, options!(2))),
            (Value::R5(x), Value::R5(w)) => Value::R5(conv_transpose3d(x, w, None, options!(3))),
            _ => unreachable!("ranks checked by shape inference"),
        };
        // Keep [begin, begin + out) of each spatial axis; past the full output it is zero.
        for (i, &full) in geo.full.iter().enumerate() {
            let (begin, out) = (geo.begin[i], geo.out_shape[i + 2]);
            y = pad_zeros(y, i + 2, 0, (begin + out).saturating_sub(full));
            if begin > 0 || out != full {
                y = y.narrow(i + 2, begin, out);
            }
        }
        match b {
            None => y,
            Some(b) => {
                let mut shape = vec![1; geo.out_shape.len()];
                shape[1] = geo.out_shape[1];
                broadcast_binary(y, b.reshape(&shape), BinaryFn::Add)
            }
        }
    }
}

/// `v` with `begin` and `end` zeros added along `axis`.
fn pad_zeros(v: Value, axis: usize, begin: usize, end: usize) -> Value {
    if begin == 0 && end == 0 {
        return v;
    }
    let zeros = |n: usize| {
        let mut dims = v.dims();
        dims[axis] = n;
        Value::from_f32(vec![0.0; dims.iter().product()], &dims, &v.device())
            .unwrap_or_else(|| unreachable!("shape {dims:?} checked by shape inference"))
    };
    let mut parts = Vec::with_capacity(3);
    if begin > 0 {
        parts.push(zeros(begin));
    }
    let after = (end > 0).then(|| zeros(end));
    parts.push(v);
    parts.extend(after);
    Value::cat(parts, axis)
}
