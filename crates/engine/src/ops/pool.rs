//! `MaxPool`, `AveragePool` (2-D, NCHW; asymmetric pads, strides, dilations
//! for max, `ceil_mode`, `count_include_pad`) and `GlobalAveragePool`.

use burn_tensor::module::{avg_pool2d, max_pool2d};
use burn_tensor::ops::{AvgPoolOptions, MaxPoolOptions};

use super::conv::{AutoPad, Window};
use super::{first, NodeCtx, Op};
use crate::error::Result;
use crate::value::Value;

/// A planned 2-D pool.
#[derive(Debug, Clone)]
pub(crate) struct Pool {
    window: Window,
    kernel: [usize; 2],
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
        .ok_or_else(|| ctx.err("attribute kernel_shape is required"))?;
    if !max && window.dilations != [1, 1] {
        return Err(ctx.err(format!(
            "dilations {:?} are not supported for AveragePool",
            window.dilations
        )));
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

impl Pool {
    fn geometry(&self, x: &[usize]) -> std::result::Result<([usize; 4], Vec<usize>), String> {
        if x.len() != 4 {
            return Err(format!(
                "input X has shape {x:?}; only 2-D pooling (rank-4 NCHW input) is supported"
            ));
        }
        let (pads, hw) = self.window.resolve([x[2], x[3]], self.kernel)?;
        for i in 0..2 {
            // As ONNX Runtime and PyTorch require: a window never lies fully in padding.
            if pads[i] >= self.kernel[i] * self.window.dilations[i]
                || pads[i + 2] >= self.kernel[i] * self.window.dilations[i]
            {
                return Err(format!(
                    "pads {pads:?} must be smaller than the kernel {:?}",
                    self.kernel
                ));
            }
        }
        Ok((pads, vec![x[0], x[1], hw[0], hw[1]]))
    }

    pub(crate) fn infer(&self, ins: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        Ok(self.geometry(ins[0])?.1)
    }

    fn pads(&self, x: &Value) -> [(usize, usize); 2] {
        match self.geometry(&x.dims()) {
            Ok((p, _)) => [(p[0], p[2]), (p[1], p[3])],
            Err(e) => unreachable!("checked by shape inference: {e}"),
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
        let options = MaxPoolOptions {
            kernel_size: self.kernel,
            stride: self.window.strides,
            padding: self.pads(&x),
            dilation: self.window.dilations,
            ceil_mode: self.window.ceil_mode,
        };
        Value::R4(max_pool2d(x.into_r4(), options))
    }

    /// Non-overlapping windows (kernel = stride, no padding or dilation, sizes
    /// divisible): a reshape to `[N, C, H/kh, kh, W/kw, kw]` and two max
    /// reductions, much faster on the CPU backend than its pooling kernel.
    fn max_tiles(&self, x: &Value) -> Option<Value> {
        let w = &self.window;
        let k = self.kernel;
        let d = x.dims();
        let plain = w.strides == k
            && w.dilations == [1, 1]
            && w.auto_pad != AutoPad::SameUpper
            && w.auto_pad != AutoPad::SameLower
            && (w.pads == [0; 4] || w.auto_pad == AutoPad::Valid)
            && d.len() == 4
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
        let x = first(ins);
        let options = AvgPoolOptions {
            kernel_size: self.kernel,
            stride: self.window.strides,
            padding: self.pads(&x),
            count_include_pad: self.count_include_pad,
            ceil_mode: self.window.ceil_mode,
        };
        Value::R4(avg_pool2d(x.into_r4(), options))
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
