//! `MaxPool`, `AveragePool` over 1, 2 or 3 spatial dims (asymmetric pads, strides,
//! dilations for max, `ceil_mode`, `count_include_pad`) and `GlobalAveragePool`.
//!
//! burn pools in 2-D only; a 1-D pool runs as a 2-D one over `[N, C, 1, L]`, and a 3-D pool
//! as two 2-D ones, over (H, W) and then over D: a box max (or mean, whose divisor is the
//! product of the axes' window counts, padded or not) is the max (mean) along D of the (H, W)
//! window's.

use burn_tensor::module::{avg_pool2d, max_pool2d};
use burn_tensor::ops::{AvgPoolOptions, MaxPoolOptions};

use super::conv::{AutoPad, Resolved, Window};
use super::{first, NodeCtx, Op};
use crate::error::Result;
use crate::value::Value;

/// A planned pool.
#[derive(Debug, Clone)]
pub(crate) struct Pool {
    window: Window,
    kernel: Vec<usize>,
    count_include_pad: bool,
}

fn build_pool(ctx: &mut NodeCtx, max: bool) -> Result<Pool> {
    if max {
        ctx.only_attrs(&[
            "auto_pad",
            "ceil_mode",
            "dilations",
            "kernel_shape",
            "pads",
            "storage_order",
            "strides",
        ])?;
        if ctx.node.output.iter().skip(1).any(|o| !o.is_empty()) {
            return Err(ctx.err("the Indices output is not supported"));
        }
    } else {
        ctx.only_attrs(&[
            "auto_pad",
            "ceil_mode",
            "count_include_pad",
            "dilations",
            "kernel_shape",
            "pads",
            "strides",
        ])?;
    }
    ctx.input_count(1, 1)?;
    ctx.single_output()?;
    let window = Window::parse(ctx, true)?;
    let kernel = window
        .kernel
        .clone()
        .ok_or_else(|| ctx.err("attribute kernel_shape is required"))?;
    if !max {
        if let Some(d) = ctx
            .attr_ints("dilations")?
            .filter(|d| d.iter().any(|&x| x != 1))
        {
            return Err(ctx.err(format!("dilations {d:?} are not supported for AveragePool")));
        }
    }
    let count_include_pad = match ctx.attr_int("count_include_pad", 0)? {
        0 => false,
        1 => true,
        v => return Err(ctx.err(format!("count_include_pad {v} must be 0 or 1"))),
    };
    ctx.tensor_input(0)?;
    Ok(Pool {
        window,
        kernel,
        count_include_pad,
    })
}

pub(crate) fn build_max_pool(ctx: &mut NodeCtx) -> Result<Op> {
    build_pool(ctx, true).map(Op::MaxPool)
}

pub(crate) fn build_average_pool(ctx: &mut NodeCtx) -> Result<Op> {
    build_pool(ctx, false).map(Op::AveragePool)
}

/// One 2-D pooling pass: kernel, strides, `(begin, end)` pads and dilations of (H, W).
struct Pass {
    kernel: [usize; 2],
    strides: [usize; 2],
    pads: [(usize, usize); 2],
    dilations: [usize; 2],
}

impl Pass {
    /// The 2-D pass whose H and W windows are those of spatial axes `h` and `w` of the
    /// pool (`None`: a size-1 axis the window does not move along).
    fn of(kernel: &[usize], res: &Resolved, h: Option<usize>, w: Option<usize>) -> Pass {
        let at = |v: &[usize], a: Option<usize>| a.map_or(1, |a| v[a]);
        let pads = |a: Option<usize>| a.map_or((0, 0), |a| res.pad_pair(a));
        Pass {
            kernel: [at(kernel, h), at(kernel, w)],
            strides: [at(&res.strides, h), at(&res.strides, w)],
            pads: [pads(h), pads(w)],
            dilations: [at(&res.dilations, h), at(&res.dilations, w)],
        }
    }
}

impl Pool {
    /// The 2-D geometry of this pool on NCHW input `x` (`groups` = channels), for the
    /// kernels; `None` for other ranks, and where the kernels' output size would differ
    /// (ceil mode).
    pub(crate) fn geometry_2d(&self, x: &[usize]) -> Option<subsetq_kernels::ConvGeometry> {
        if x.len() != 4 {
            return None;
        }
        let (res, out) = self.geometry(x).ok()?;
        let g = subsetq_kernels::ConvGeometry {
            in_channels: x[1],
            in_hw: [x[2], x[3]],
            out_channels: x[1],
            kernel: [self.kernel[0], self.kernel[1]],
            strides: [res.strides[0], res.strides[1]],
            dilations: [res.dilations[0], res.dilations[1]],
            pads: [res.pads[0], res.pads[1], res.pads[2], res.pads[3]],
            groups: x[1],
        };
        (g.out_hw() == [out[2], out[3]]).then_some(g)
    }

    fn geometry(&self, x: &[usize]) -> std::result::Result<(Resolved, Vec<usize>), String> {
        if !(3..=5).contains(&x.len()) {
            return Err(format!(
                "input X has shape {x:?}; 1-D, 2-D and 3-D pooling (rank 3 to 5 input \
                 [N, C, D1, ...]) are supported"
            ));
        }
        if self.kernel.len() != x.len() - 2 {
            return Err(format!(
                "kernel_shape {:?} is not for the {} spatial dims of input X {x:?}",
                self.kernel,
                x.len() - 2
            ));
        }
        let res = self.window.resolve(&x[2..], &self.kernel)?;
        for i in 0..self.kernel.len() {
            // As ONNX Runtime and PyTorch require: a window never lies fully in padding.
            let (b, e) = res.pad_pair(i);
            let span = self.kernel[i] * res.dilations[i];
            if b >= span || e >= span {
                return Err(format!(
                    "pads {:?} must be smaller than the kernel {:?}",
                    res.pads, self.kernel
                ));
            }
        }
        let mut out = vec![x[0], x[1]];
        out.extend_from_slice(&res.out);
        Ok((res, out))
    }

    pub(crate) fn infer(&self, ins: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        Ok(self.geometry(ins[0])?.1)
    }

    /// Runs `pass2d` (a 2-D pool) over the spatial axes of `x` as the module doc says.
    fn run(&self, x: Value, pass2d: impl Fn(Value, &Pass) -> Value) -> Value {
        let d = x.dims();
        let (res, out) = match self.geometry(&d) {
            Ok(g) => g,
            Err(e) => unreachable!("checked by shape inference: {e}"),
        };
        let (n, c) = (d[0], d[1]);
        match d.len() {
            3 => {
                let pass = Pass::of(&self.kernel, &res, None, Some(0));
                pass2d(x.reshape(&[n, c, 1, d[2]]), &pass).reshape(&out)
            }
            4 => pass2d(x, &Pass::of(&self.kernel, &res, Some(0), Some(1))),
            _ => {
                let (depth, oh, ow) = (d[2], out[3], out[4]);
                let hw = pass2d(
                    x.reshape(&[n, c * depth, d[3], d[4]]),
                    &Pass::of(&self.kernel, &res, Some(1), Some(2)),
                );
                let along_d = Pass::of(&self.kernel, &res, Some(0), None);
                pass2d(hw.reshape(&[n, c, depth, oh * ow]), &along_d).reshape(&out)
            }
        }
    }

    pub(crate) fn run_max(&self, ins: Vec<Value>) -> Value {
        let x = first(ins);
        // Under autodiff the tiles' max reductions differentiate through a slow generic
        // scatter; the pooling kernel has its own backward.
        if !x.is_tracked() {
            if let Some(y) = self.max_tiles(&x) {
                return y;
            }
        }
        self.run(x, |x, p| {
            let options = MaxPoolOptions {
                kernel_size: p.kernel,
                stride: p.strides,
                padding: p.pads,
                dilation: p.dilations,
                ceil_mode: self.window.ceil_mode,
            };
            Value::R4(max_pool2d(x.into_r4(), options))
        })
    }

    /// Non-overlapping 2-D windows (kernel = stride, no padding or dilation, sizes
    /// divisible): a reshape to `[N, C, H/kh, kh, W/kw, kw]` and two max
    /// reductions, much faster on the CPU backend than its pooling kernel.
    fn max_tiles(&self, x: &Value) -> Option<Value> {
        let d = x.dims();
        if d.len() != 4 {
            return None;
        }
        let (res, _) = self.geometry(&d).ok()?;
        let k = &self.kernel;
        let plain = res.strides == *k
            && res.dilations == [1, 1]
            && self.window.auto_pad != AutoPad::SameUpper
            && self.window.auto_pad != AutoPad::SameLower
            && res.pads == [0; 4]
            && d[2].is_multiple_of(k[0])
            && d[3].is_multiple_of(k[1]);
        if !plain {
            return None;
        }
        let (n, c, oh, ow) = (d[0], d[1], d[2] / k[0], d[3] / k[1]);
        let Value::R6(t) = x.clone().reshape(&[n, c, oh, k[0], ow, k[1]]) else {
            return None;
        };
        let y = t.max_dim(5).max_dim(3);
        Some(Value::R6(y).reshape(&[n, c, oh, ow]))
    }

    pub(crate) fn run_avg(&self, ins: Vec<Value>) -> Value {
        self.run(first(ins), |x, p| {
            let options = AvgPoolOptions {
                kernel_size: p.kernel,
                stride: p.strides,
                padding: p.pads,
                count_include_pad: self.count_include_pad,
                ceil_mode: self.window.ceil_mode,
            };
            Value::R4(avg_pool2d(x.into_r4(), options))
        })
    }
}

pub(crate) fn build_global_average_pool(ctx: &mut NodeCtx) -> Result<Op> {
    ctx.only_attrs(&[])?;
    ctx.input_count(1, 1)?;
    ctx.single_output()?;
    ctx.tensor_input(0)?;
    Ok(Op::GlobalAveragePool)
}

pub(crate) fn infer_global(ins: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
    let x = ins[0];
    if x.len() < 3 {
        return Err(format!(
            "input X has shape {x:?}; expected rank >= 3 [N, C, D1, ...]"
        ));
    }
    let mut out = x.to_vec();
    out[2..].iter_mut().for_each(|d| *d = 1);
    Ok(out)
}

pub(crate) fn run_global(ins: Vec<Value>) -> Value {
    let x = first(ins);
    let dims = x.dims();
    let (n, c) = (dims[0], dims[1]);
    let spatial: usize = dims[2..].iter().product();
    let mut out = dims.clone();
    out[2..].iter_mut().for_each(|d| *d = 1);
    let Value::R3(t) = x.reshape(&[n, c, spatial]) else {
        unreachable!("reshaped to rank 3")
    };
    Value::R3(t.mean_dim(2)).reshape(&out)
}
