//! `BatchNormalization` (inference), `InstanceNormalization`, `LRN`, `Softmax` and
//! `LogSoftmax`.

use burn_tensor::activation::{log_softmax, softmax};
use burn_tensor::module::avg_pool2d;
use burn_tensor::ops::AvgPoolOptions;

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
    ctx.only_attrs(&[
        "epsilon",
        "momentum",
        "training_mode",
        "spatial",
        "is_test",
        "consumed_inputs",
    ])?;
    ctx.input_count(5, 5)?;
    ctx.single_output()?;
    if ctx.opset < 7 && ctx.attr_int("is_test", 0)? != 1 {
        return Err(ctx.err("is_test = 0 (training) is not supported (inference only)"));
    }
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

/// A planned `Softmax` or `LogSoftmax`.
#[derive(Debug, Clone)]
pub(crate) struct Softmax {
    axis: i64,
    log: bool,
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
    Ok(Op::Softmax(Softmax {
        axis,
        log: ctx.op == "LogSoftmax",
        coerce_2d,
    }))
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
            let y = map_value!(x.reshape(&[rows, cols]), t => self.apply(t, 1));
            return y.reshape(&dims);
        }
        map_value!(x, t => self.apply(t, axis))
    }

    fn apply<const D: usize>(
        &self,
        t: burn_tensor::Tensor<D>,
        axis: usize,
    ) -> burn_tensor::Tensor<D> {
        if self.log {
            log_softmax(t, axis)
        } else {
            softmax(t, axis)
        }
    }
}

/// A planned `LRN`: `y = x / (bias + alpha / size · Σ x²)^beta`, the sum over the `size`
/// channels around each one (`⌊(size−1)/2⌋` before, `⌈(size−1)/2⌉` after, zero beyond the ends).
#[derive(Debug, Clone)]
pub(crate) struct Lrn {
    size: usize,
    alpha: f32,
    beta: f32,
    bias: f32,
}

pub(crate) fn build_lrn(ctx: &mut NodeCtx) -> Result<Op> {
    ctx.only_attrs(&["alpha", "beta", "bias", "size"])?;
    ctx.input_count(1, 1)?;
    ctx.single_output()?;
    let size = ctx
        .attr_int_opt("size")?
        .ok_or_else(|| ctx.err("attribute size is required"))?;
    if size < 1 {
        return Err(ctx.err(format!("size {size} must be >= 1")));
    }
    let lrn = Lrn {
        size: size as usize,
        alpha: ctx.attr_float("alpha")?.unwrap_or(1e-4),
        beta: ctx.attr_float("beta")?.unwrap_or(0.75),
        bias: ctx.attr_float("bias")?.unwrap_or(1.0),
    };
    if [lrn.alpha, lrn.beta, lrn.bias]
        .iter()
        .any(|v| !v.is_finite())
    {
        return Err(ctx.err("alpha, beta and bias must be finite"));
    }
    ctx.tensor_input(0)?;
    Ok(Op::Lrn(lrn))
}

impl Lrn {
    pub(crate) fn infer(&self, ins: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        let x = ins[0];
        if x.len() < 3 {
            return Err(format!(
                "input X has shape {x:?}; expected rank >= 3 [N, C, D1, ...]"
            ));
        }
        Ok(x.to_vec())
    }

    pub(crate) fn run(&self, ins: Vec<Value>) -> Value {
        let x = first(ins);
        let dims = x.dims();
        let (n, c) = (dims[0], dims[1]);
        let spatial: usize = dims[2..].iter().product();
        let sq = map_value!(x.clone(), t => t.clone().mul(t));
        // The channel-window sum as an average pool over [N, 1, C, spatial] with a (size × 1)
        // kernel, zero padding counted, times size.
        let before = (self.size - 1) / 2;
        let after = self.size - 1 - before;
        let options = AvgPoolOptions {
            kernel_size: [self.size, 1],
            stride: [1, 1],
            padding: [(before, after), (0, 0)],
            count_include_pad: true,
            ceil_mode: false,
        };
        let window = avg_pool2d(sq.reshape(&[n, 1, c, spatial]).into_r4(), options);
        // mean · size · alpha / size = mean · alpha
        let den = window
            .mul_scalar(self.alpha)
            .add_scalar(self.bias)
            .powf_scalar(self.beta);
        let den = Value::R4(den).reshape(&dims);
        broadcast_binary(x, den, BinaryFn::Div)
    }
}

/// A planned `InstanceNormalization`: per sample and channel, `(x − mean) / sqrt(var + ε)` over
/// the spatial axes, then `scale · … + B` per channel.
#[derive(Debug, Clone)]
pub(crate) struct InstanceNorm {
    epsilon: f32,
}

pub(crate) fn build_instance_norm(ctx: &mut NodeCtx) -> Result<Op> {
    ctx.only_attrs(&["epsilon"])?;
    ctx.input_count(3, 3)?;
    ctx.single_output()?;
    let epsilon = ctx.attr_float("epsilon")?.unwrap_or(1e-5);
    if epsilon.is_nan() || epsilon < 0.0 {
        return Err(ctx.err(format!("epsilon {epsilon} must be >= 0")));
    }
    for i in 0..3 {
        ctx.tensor_input(i)?;
    }
    Ok(Op::InstanceNorm(InstanceNorm { epsilon }))
}

impl InstanceNorm {
    pub(crate) fn infer(&self, ins: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        let x = ins[0];
        if x.len() < 3 {
            return Err(format!(
                "input X has shape {x:?}; expected rank >= 3 [N, C, D1, ...]"
            ));
        }
        for (i, what) in ["scale", "B"].iter().enumerate() {
            if ins[i + 1] != [x[1]] {
                return Err(format!(
                    "{what} has shape {:?}, expected [{}]",
                    ins[i + 1],
                    x[1]
                ));
            }
        }
        Ok(x.to_vec())
    }

    pub(crate) fn run(&self, ins: Vec<Value>) -> Value {
        let mut it = ins.into_iter();
        let (Some(x), Some(scale), Some(bias)) = (it.next(), it.next(), it.next()) else {
            unreachable!("input count checked when the plan was built")
        };
        let dims = x.dims();
        let (n, c) = (dims[0], dims[1]);
        let spatial: usize = dims[2..].iter().product();
        let t = match x.reshape(&[n, c, spatial]) {
            Value::R3(t) => t,
            _ => unreachable!("reshaped to rank 3"),
        };
        let mean = t.clone().mean_dim(2);
        let centered = t.sub(mean);
        let var = centered.clone().mul(centered.clone()).mean_dim(2);
        let y = centered.div(var.add_scalar(self.epsilon).sqrt());
        let s = scale.into_r1().reshape([1, c, 1]);
        let b = bias.into_r1().reshape([1, c, 1]);
        Value::R3(y.mul(s).add(b)).reshape(&dims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn_tensor::Device;

    #[test]
    fn lrn_against_a_hand_computation() {
        // One sample, 4 channels, one position; size 3: channel c sums c-1 ..= c+1.
        let x = [1.0f32, 2.0, 3.0, 4.0];
        let lrn = Lrn {
            size: 3,
            alpha: 0.3,
            beta: 0.75,
            bias: 2.0,
        };
        let v = Value::from_f32(x.to_vec(), &[1, 4, 1, 1], &Device::flex()).unwrap();
        let got = lrn.run(vec![v]).to_vec();
        let sums = [1.0 + 4.0, 1.0 + 4.0 + 9.0, 4.0 + 9.0 + 16.0, 9.0 + 16.0];
        for c in 0..4 {
            let want = x[c] / (2.0f32 + 0.3 / 3.0 * sums[c]).powf(0.75);
            assert!(
                (got[c] - want).abs() < 1e-6,
                "channel {c}: {} vs {want}",
                got[c]
            );
        }
        // Even size: ⌊(4−1)/2⌋ = 1 before, 2 after.
        let lrn4 = Lrn { size: 4, ..lrn };
        let v = Value::from_f32(x.to_vec(), &[1, 4, 1], &Device::flex()).unwrap();
        let got = lrn4.run(vec![v]).to_vec();
        let want0 = 1.0f32 / (2.0f32 + 0.3 / 4.0 * (1.0 + 4.0 + 9.0)).powf(0.75);
        assert!((got[0] - want0).abs() < 1e-6);
    }

    #[test]
    fn instance_norm_normalises_each_channel() {
        let d = Device::flex();
        let x = Value::from_f32(vec![1.0, 3.0, 10.0, 10.0], &[1, 2, 2], &d).unwrap();
        let s = Value::from_f32(vec![2.0, 1.0], &[2], &d).unwrap();
        let b = Value::from_f32(vec![0.0, 5.0], &[2], &d).unwrap();
        let y = InstanceNorm { epsilon: 0.0 }.run(vec![x, s, b]).to_vec();
        // channel 0: mean 2, var 1 → [-1, 1] · 2; channel 1: constant → 0 (0 / sqrt(0) is NaN,
        // so use ε = 0 only on channel 0's check)
        assert_eq!(&y[..2], &[-2.0, 2.0]);
    }
}
