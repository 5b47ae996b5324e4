//! Element-wise activations and unary math: `Sigmoid`, `Tanh`, `LeakyRelu`, `Elu`, `Selu`,
//! `Softplus`, `Softsign`, `HardSigmoid`, `HardSwish`, `Exp`, `Log`, `Neg`, `Abs`, `Sqrt`,
//! `Reciprocal`, `Floor`, `Ceil`, `Sign`, `Shrink`, and `PRelu` (a learned slope, broadcast).

use burn_tensor::activation::{sigmoid, tanh};
use burn_tensor::Tensor;

use super::{first, NodeCtx, Op};
use crate::error::Result;
use crate::value::{broadcast_binary, map_value, BinaryFn, Value};

/// A unary element-wise function with its attributes resolved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Unary {
    Sigmoid,
    Tanh,
    Exp,
    Log,
    Neg,
    Abs,
    Sqrt,
    Reciprocal,
    Floor,
    Ceil,
    Sign,
    /// `x < −lambd ? x + bias : x > lambd ? x − bias : 0`.
    Shrink {
        bias: f32,
        lambd: f32,
    },
    Softsign,
    Softplus,
    HardSwish,
    /// `x ≥ 0 ? x : alpha · x`.
    LeakyRelu(f32),
    /// `x ≥ 0 ? x : alpha · (eˣ − 1)`.
    Elu(f32),
    /// `gamma · (x > 0 ? x : alpha · (eˣ − 1))`.
    Selu {
        alpha: f32,
        gamma: f32,
    },
    /// `max(0, min(1, alpha · x + beta))`.
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
}

fn float_attr(ctx: &NodeCtx, name: &str, default: f32) -> Result<f32> {
    let v = ctx.attr_float(name)?.unwrap_or(default);
    if !v.is_finite() {
        return Err(ctx.err(format!("attribute {name} = {v} must be finite")));
    }
    Ok(v)
}

pub(crate) fn build_unary(ctx: &mut NodeCtx) -> Result<Op> {
    ctx.input_count(1, 1)?;
    ctx.single_output()?;
    // Opset 1 – 5 versions carry a `consumed_inputs` attribute that does not change the result.
    let legacy: &[&str] = if ctx.opset < 6 {
        &["consumed_inputs"]
    } else {
        &[]
    };
    let with = |names: &[&'static str]| -> Vec<&str> {
        names.iter().chain(legacy.iter()).copied().collect()
    };
    let f = match ctx.op.as_str() {
        "Sigmoid" => Unary::Sigmoid,
        "Tanh" => Unary::Tanh,
        "Exp" => Unary::Exp,
        "Log" => Unary::Log,
        "Neg" => Unary::Neg,
        "Abs" => Unary::Abs,
        "Sqrt" => Unary::Sqrt,
        "Reciprocal" => Unary::Reciprocal,
        "Floor" => Unary::Floor,
        "Ceil" => Unary::Ceil,
        "Sign" => Unary::Sign,
        "Shrink" => {
            ctx.only_attrs(&["bias", "lambd"])?;
            Unary::Shrink {
                bias: float_attr(ctx, "bias", 0.0)?,
                lambd: float_attr(ctx, "lambd", 0.5)?,
            }
        }
        "Softsign" => Unary::Softsign,
        "Softplus" => Unary::Softplus,
        "HardSwish" => Unary::HardSwish,
        "LeakyRelu" => {
            ctx.only_attrs(&with(&["alpha"]))?;
            Unary::LeakyRelu(float_attr(ctx, "alpha", 0.01)?)
        }
        "Elu" => {
            ctx.only_attrs(&with(&["alpha"]))?;
            Unary::Elu(float_attr(ctx, "alpha", 1.0)?)
        }
        "Selu" => {
            ctx.only_attrs(&with(&["alpha", "gamma"]))?;
            Unary::Selu {
                alpha: float_attr(ctx, "alpha", 1.673_263_2)?,
                gamma: float_attr(ctx, "gamma", 1.050_701)?,
            }
        }
        "HardSigmoid" => {
            ctx.only_attrs(&with(&["alpha", "beta"]))?;
            Unary::HardSigmoid {
                alpha: float_attr(ctx, "alpha", 0.2)?,
                beta: float_attr(ctx, "beta", 0.5)?,
            }
        }
        other => return Err(ctx.err(format!("{other} is not a unary operator"))),
    };
    if !matches!(
        f,
        Unary::LeakyRelu(_)
            | Unary::Elu(_)
            | Unary::Selu { .. }
            | Unary::HardSigmoid { .. }
            | Unary::Shrink { .. }
    ) {
        ctx.only_attrs(legacy)?;
    }
    ctx.tensor_input(0)?;
    Ok(Op::Unary(f))
}

/// `x > 0 ? x : neg(x)`, with `neg` applied to the negative part only.
fn split_sign<const D: usize>(t: Tensor<D>, neg: impl Fn(Tensor<D>) -> Tensor<D>) -> Tensor<D> {
    let negative = t.clone().lower_elem(0.0);
    // Clamping first keeps exp() of large positive values from overflowing into the
    // discarded branch (and its gradient).
    let lo = neg(t.clone().clamp_max(0.0));
    t.mask_where(negative, lo)
}

impl Unary {
    fn apply<const D: usize>(self, t: Tensor<D>) -> Tensor<D> {
        match self {
            Unary::Sigmoid => sigmoid(t),
            Unary::Tanh => tanh(t),
            Unary::Exp => t.exp(),
            Unary::Log => t.log(),
            Unary::Neg => t.neg(),
            Unary::Abs => t.abs(),
            Unary::Sqrt => t.sqrt(),
            Unary::Reciprocal => t.recip(),
            Unary::Floor => t.floor(),
            Unary::Ceil => t.ceil(),
            Unary::Sign => t.sign(),
            Unary::Shrink { bias, lambd } => {
                let below = t.clone().lower_elem(-lambd);
                let above = t.clone().greater_elem(lambd);
                t.zeros_like()
                    .mask_where(below, t.clone().add_scalar(bias))
                    .mask_where(above, t.sub_scalar(bias))
            }
            Unary::Softsign => t.clone().div(t.abs().add_scalar(1.0)),
            // log(1 + eˣ) = max(x, 0) + log1p(e^−|x|): no overflow for large x.
            Unary::Softplus => t.clone().clamp_min(0.0).add(t.abs().neg().exp().log1p()),
            Unary::HardSwish => t
                .clone()
                .mul(t.mul_scalar(1.0 / 6.0).add_scalar(0.5).clamp(0.0, 1.0)),
            Unary::LeakyRelu(a) => split_sign(t, |x| x.mul_scalar(a)),
            Unary::Elu(a) => split_sign(t, |x| x.exp().sub_scalar(1.0).mul_scalar(a)),
            Unary::Selu { alpha, gamma } => {
                split_sign(t, |x| x.exp().sub_scalar(1.0).mul_scalar(alpha)).mul_scalar(gamma)
            }
            Unary::HardSigmoid { alpha, beta } => {
                t.mul_scalar(alpha).add_scalar(beta).clamp(0.0, 1.0)
            }
        }
    }

    pub(crate) fn run(self, ins: Vec<Value>) -> Value {
        map_value!(first(ins), t => self.apply(t))
    }
}

/// A planned `PRelu`: `x ≥ 0 ? x : slope · x`, `slope` broadcast to `x`.
#[derive(Debug, Clone)]
pub(crate) struct PRelu {
    /// Opset < 7: a 1-D slope of C values is per channel (axis 1), not numpy-broadcast.
    per_channel: bool,
}

pub(crate) fn build_prelu(ctx: &mut NodeCtx) -> Result<Op> {
    if ctx.opset < 6 {
        ctx.only_attrs(&["consumed_inputs"])?;
    } else {
        ctx.only_attrs(&[])?;
    }
    ctx.input_count(2, 2)?;
    ctx.single_output()?;
    ctx.tensor_input(0)?;
    ctx.tensor_input(1)?;
    Ok(Op::PRelu(PRelu {
        per_channel: ctx.opset < 7,
    }))
}

impl PRelu {
    /// The slope's shape as it broadcasts against `x`.
    fn slope_shape(&self, x: &[usize], slope: &[usize]) -> Vec<usize> {
        if self.per_channel && slope.len() == 1 && x.len() >= 2 && slope[0] == x[1] {
            let mut s = vec![slope[0]];
            s.extend(std::iter::repeat_n(1, x.len() - 2));
            s
        } else {
            slope.to_vec()
        }
    }

    pub(crate) fn infer(&self, ins: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        let (x, slope) = (ins[0], ins[1]);
        let s = self.slope_shape(x, slope);
        let out = super::elementwise::broadcast_shape(x, &s)?;
        if out != x {
            return Err(format!(
                "slope {slope:?} does not broadcast to the input {x:?}"
            ));
        }
        Ok(out)
    }

    pub(crate) fn run(&self, ins: Vec<Value>) -> Value {
        let mut it = ins.into_iter();
        let (Some(x), Some(slope)) = (it.next(), it.next()) else {
            unreachable!("input count checked when the plan was built")
        };
        let shape = self.slope_shape(&x.dims(), &slope.dims());
        let slope = slope.reshape(&shape);
        // relu(x) − slope · relu(−x): differentiable in x and in the slope.
        let pos = map_value!(x.clone(), t => t.clamp_min(0.0));
        let neg = map_value!(x, t => t.clamp_max(0.0));
        broadcast_binary(
            pos,
            broadcast_binary(neg, slope, BinaryFn::Mul),
            BinaryFn::Add,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn_tensor::Device;

    fn apply(f: Unary, x: &[f32]) -> Vec<f32> {
        let v = Value::from_f32(x.to_vec(), &[x.len()], &Device::flex()).unwrap();
        f.run(vec![v]).to_vec()
    }

    fn close(got: &[f32], want: &[f32]) {
        for (g, w) in got.iter().zip(want) {
            assert!(
                (g - w).abs() <= 1e-6 * w.abs().max(1.0),
                "{got:?} vs {want:?}"
            );
        }
    }

    #[test]
    fn activations_against_their_formulas() {
        let x = [-3.0f32, -0.5, 0.0, 0.5, 3.0, 100.0];
        let map = |f: &dyn Fn(f32) -> f32| x.iter().map(|&v| f(v)).collect::<Vec<_>>();
        close(
            &apply(Unary::LeakyRelu(0.1), &x),
            &map(&|v| if v >= 0.0 { v } else { 0.1 * v }),
        );
        close(
            &apply(Unary::Elu(0.7), &x),
            &map(&|v| if v >= 0.0 { v } else { 0.7 * (v.exp() - 1.0) }),
        );
        let (a, g) = (1.673_263_2f32, 1.050_701f32);
        close(
            &apply(Unary::Selu { alpha: a, gamma: g }, &x),
            &map(&|v| g * if v > 0.0 { v } else { a * (v.exp() - 1.0) }),
        );
        close(
            &apply(Unary::Softplus, &x),
            &map(&|v| if v > 20.0 { v } else { v.exp().ln_1p() }),
        );
        close(
            &apply(
                Unary::HardSigmoid {
                    alpha: 0.2,
                    beta: 0.5,
                },
                &x,
            ),
            &map(&|v| (0.2 * v + 0.5).clamp(0.0, 1.0)),
        );
        close(
            &apply(Unary::HardSwish, &x),
            &map(&|v| v * (v / 6.0 + 0.5).clamp(0.0, 1.0)),
        );
        close(&apply(Unary::Softsign, &x), &map(&|v| v / (1.0 + v.abs())));
        close(
            &apply(Unary::Sigmoid, &x),
            &map(&|v| 1.0 / (1.0 + (-v).exp())),
        );
    }

    #[test]
    fn prelu_per_channel_at_opset_6_and_broadcast_after() {
        let d = Device::flex();
        let x = Value::from_f32(vec![-1.0, 2.0, -3.0, 4.0], &[1, 2, 2], &d).unwrap();
        let slope = Value::from_f32(vec![0.5, 0.25], &[2], &d).unwrap();
        let old = PRelu { per_channel: true };
        assert_eq!(old.infer(&[&[1, 2, 2], &[2]]).unwrap(), vec![1, 2, 2]);
        // channel 0: [-1, 2] · 0.5 on negatives; channel 1: [-3, 4] · 0.25
        assert_eq!(
            old.run(vec![x.clone(), slope.clone()]).to_vec(),
            vec![-0.5, 2.0, -0.75, 4.0]
        );
        // opset 7+: numpy broadcasting, the slope runs along the last axis
        let new = PRelu { per_channel: false };
        assert_eq!(new.run(vec![x, slope]).to_vec(), vec![-0.5, 2.0, -1.5, 4.0]);
        assert!(new.infer(&[&[1, 2, 3], &[2]]).is_err());
    }
}
