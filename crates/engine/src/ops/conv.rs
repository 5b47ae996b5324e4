//! `Conv` (2-D, NCHW): groups / depthwise, asymmetric pads, strides,
//! dilations, `auto_pad`, optional bias.

use burn_tensor::module::conv2d;
use burn_tensor::ops::ConvOptions;

use super::{NodeCtx, Op};
use crate::error::Result;
use crate::value::Value;

/// ONNX `auto_pad`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AutoPad {
    NotSet,
    Valid,
    SameUpper,
    SameLower,
}

/// Window geometry shared by `Conv` and the pools: 2-D only.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Window {
    /// Kernel size from the attribute (`None`: taken from the weight, Conv only).
    pub kernel: Option<[usize; 2]>,
    pub strides: [usize; 2],
    pub dilations: [usize; 2],
    /// `[top, left, bottom, right]` as in ONNX `pads` (begins then ends).
    pub pads: [usize; 4],
    pub auto_pad: AutoPad,
    pub ceil_mode: bool,
}

fn pair(ctx: &NodeCtx, name: &str, v: Option<Vec<i64>>, min: i64) -> Result<Option<[usize; 2]>> {
    match v {
        None => Ok(None),
        Some(v) => {
            if v.len() != 2 {
                return Err(ctx.err(format!(
                    "{name} {v:?}: only 2-D windows (two values) are supported"
                )));
            }
            if v.iter().any(|&x| x < min) {
                return Err(ctx.err(format!("{name} {v:?}: values must be >= {min}")));
            }
            Ok(Some([v[0] as usize, v[1] as usize]))
        }
    }
}

impl Window {
    /// Reads kernel_shape, strides, dilations, pads, auto_pad (and ceil_mode
    /// when `with_ceil`).
    pub(crate) fn parse(ctx: &NodeCtx, with_ceil: bool) -> Result<Window> {
        let kernel = pair(ctx, "kernel_shape", ctx.attr_ints("kernel_shape")?, 1)?;
        let strides = pair(ctx, "strides", ctx.attr_ints("strides")?, 1)?.unwrap_or([1, 1]);
        let dilations = pair(ctx, "dilations", ctx.attr_ints("dilations")?, 1)?.unwrap_or([1, 1]);
        let pads = match ctx.attr_ints("pads")? {
            None => [0; 4],
            Some(p) => {
                if p.len() != 4 {
                    return Err(ctx.err(format!(
                        "pads {p:?}: only 2-D windows (four values) are supported"
                    )));
                }
                if p.iter().any(|&x| x < 0) {
                    return Err(ctx.err(format!("pads {p:?}: negative pads are not supported")));
                }
                [p[0] as usize, p[1] as usize, p[2] as usize, p[3] as usize]
            }
        };
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

    /// Pads `[top, left, bottom, right]` and output size for a spatial input
    /// `hw` and kernel `k`.
    pub(crate) fn resolve(
        &self,
        hw: [usize; 2],
        k: [usize; 2],
    ) -> std::result::Result<([usize; 4], [usize; 2]), String> {
        let mut pads = self.pads;
        let mut out = [0usize; 2];
        for i in 0..2 {
            let (s, d) = (self.strides[i], self.dilations[i]);
            let span = d * (k[i] - 1) + 1;
            match self.auto_pad {
                AutoPad::NotSet => {}
                AutoPad::Valid => {
                    pads[i] = 0;
                    pads[i + 2] = 0;
                }
                AutoPad::SameUpper | AutoPad::SameLower => {
                    let o = hw[i].div_ceil(s);
                    let total = ((o - 1) * s + span).saturating_sub(hw[i]);
                    let small = total / 2;
                    let (b, e) = if self.auto_pad == AutoPad::SameUpper {
                        (small, total - small)
                    } else {
                        (total - small, small)
                    };
                    pads[i] = b;
                    pads[i + 2] = e;
                }
            }
            let padded = hw[i] + pads[i] + pads[i + 2];
            if padded < span {
                return Err(format!(
                    "spatial size {} (padded {padded}) is smaller than the window {span} \
                     (kernel {}, dilation {d})",
                    hw[i], k[i]
                ));
            }
            let num = padded - span;
            let mut o = if self.ceil_mode {
                num.div_ceil(s)
            } else {
                num / s
            } + 1;
            // ceil mode: a last window that starts in the end padding is dropped.
            if self.ceil_mode && (o - 1) * s >= hw[i] + pads[i] {
                o -= 1;
            }
            out[i] = o;
        }
        Ok((pads, out))
    }
}

/// A planned `Conv`.
#[derive(Debug, Clone)]
pub(crate) struct Conv {
    window: Window,
    groups: usize,
    has_bias: bool,
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
    ctx.input_count(2, 3)?;
    ctx.single_output()?;
    let window = Window::parse(ctx, false)?;
    let groups = ctx.attr_int("group", 1)?;
    if groups < 1 {
        return Err(ctx.err(format!("group {groups} must be >= 1")));
    }
    ctx.tensor_input(0)?;
    ctx.tensor_input(1)?;
    let has_bias = ctx.input_name(2).is_some();
    if has_bias {
        ctx.tensor_input(2)?;
    }
    Ok(Op::Conv(Conv {
        window,
        groups: groups as usize,
        has_bias,
    }))
}

impl Conv {
    fn geometry(
        &self,
        x: &[usize],
        w: &[usize],
    ) -> std::result::Result<([usize; 4], Vec<usize>), String> {
        if x.len() != 4 {
            return Err(format!(
                "input X has shape {x:?}; only 2-D convolution (rank-4 NCHW input) is supported"
            ));
        }
        if w.len() != 4 {
            return Err(format!(
                "weight W has shape {w:?}; expected rank 4 [M, C/group, kH, kW]"
            ));
        }
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
        let k = [w[2], w[3]];
        if k.contains(&0) {
            return Err(format!("weight W {w:?} has an empty kernel"));
        }
        if let Some(ks) = self.window.kernel {
            if ks != k {
                return Err(format!("kernel_shape {ks:?} does not match weight W {w:?}"));
            }
        }
        let (pads, hw) = self.window.resolve([x[2], x[3]], k)?;
        Ok((pads, vec![x[0], w[0], hw[0], hw[1]]))
    }

    /// The convolution of input `x` by weight `w` as the packed kernels describe it.
    pub(crate) fn kernel_geometry(
        &self,
        x: &[usize],
        w: &[usize],
    ) -> std::result::Result<subsetq_kernels::ConvGeometry, String> {
        let (pads, _) = self.geometry(x, w)?;
        Ok(subsetq_kernels::ConvGeometry {
            in_channels: x[1],
            in_hw: [x[2], x[3]],
            out_channels: w[0],
            kernel: [w[2], w[3]],
            strides: self.window.strides,
            dilations: self.window.dilations,
            pads,
            groups: self.groups,
        })
    }

    pub(crate) fn infer(&self, ins: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        let (_, out) = self.geometry(ins[0], ins[1])?;
        if self.has_bias && ins[2] != [out[1]] {
            return Err(format!(
                "bias B has shape {:?}, expected [{}]",
                ins[2], out[1]
            ));
        }
        Ok(out)
    }

    pub(crate) fn run(&self, ins: Vec<Value>) -> Value {
        let mut it = ins.into_iter();
        let (Some(x), Some(w)) = (it.next(), it.next()) else {
            unreachable!("input count checked when the plan was built")
        };
        let b = it.next().map(Value::into_r1);
        let (x, w) = (x.into_r4(), w.into_r4());
        let (pads, _) = match self.geometry(&x.dims(), &w.dims()) {
            Ok(g) => g,
            Err(e) => unreachable!("checked by shape inference: {e}"),
        };
        let options = ConvOptions {
            stride: self.window.strides,
            padding: [(pads[0], pads[2]), (pads[1], pads[3])],
            dilation: self.window.dilations,
            groups: self.groups,
        };
        Value::R4(conv2d(x, w, b, options))
    }
}
