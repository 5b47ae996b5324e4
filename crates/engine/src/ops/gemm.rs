//! `Gemm` (transA / transB, alpha / beta, optional C) and `MatMul` (numpy
//! semantics, batch broadcasting).

use super::elementwise::broadcast_shape;
use super::{NodeCtx, Op};
use crate::error::Result;
use crate::value::{broadcast_binary, BinaryFn, Value};

/// A planned `Gemm`: `Y = alpha · A' · B' + beta · C`.
#[derive(Debug, Clone)]
pub(crate) struct Gemm {
    alpha: f32,
    beta: f32,
    trans_a: bool,
    trans_b: bool,
    has_c: bool,
}

fn flag(ctx: &NodeCtx, name: &str) -> Result<bool> {
    match ctx.attr_int(name, 0)? {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(ctx.err(format!("{name} {v} must be 0 or 1"))),
    }
}

pub(crate) fn build_gemm(ctx: &mut NodeCtx) -> Result<Op> {
    if ctx.opset < 7 {
        // `broadcast` (opset < 7) allowed C to broadcast, which numpy rules always do here.
        ctx.only_attrs(&["alpha", "beta", "transA", "transB", "broadcast"])?;
    } else {
        ctx.only_attrs(&["alpha", "beta", "transA", "transB"])?;
    }
    ctx.input_count(2, 3)?;
    ctx.single_output()?;
    let g = Gemm {
        alpha: ctx.attr_float("alpha")?.unwrap_or(1.0),
        beta: ctx.attr_float("beta")?.unwrap_or(1.0),
        trans_a: flag(ctx, "transA")?,
        trans_b: flag(ctx, "transB")?,
        has_c: ctx.input_name(2).is_some(),
    };
    ctx.tensor_input(0)?;
    ctx.tensor_input(1)?;
    if g.has_c {
        ctx.tensor_input(2)?;
    }
    Ok(Op::Gemm(g))
}

impl Gemm {
    /// `(alpha, beta, trans_a, trans_b, has_c)`.
    pub(crate) fn attributes(&self) -> (f32, f32, bool, bool, bool) {
        (
            self.alpha,
            self.beta,
            self.trans_a,
            self.trans_b,
            self.has_c,
        )
    }

    /// Whether this is `A · W' + C` with A as given and the weight as the second operand,
    /// the form the packed kernels compute (`alpha = 1`, `beta = 1` or no C).
    pub(crate) fn is_plain(&self) -> bool {
        !self.trans_a && self.alpha == 1.0 && (!self.has_c || self.beta == 1.0)
    }

    /// Whether B is stored `[N, K]` (transposed).
    pub(crate) fn trans_b(&self) -> bool {
        self.trans_b
    }

    pub(crate) fn infer(&self, ins: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        let (a, b) = (ins[0], ins[1]);
        if a.len() != 2 || b.len() != 2 {
            return Err(format!("A {a:?} and B {b:?} must both have rank 2"));
        }
        let (m, ka) = if self.trans_a {
            (a[1], a[0])
        } else {
            (a[0], a[1])
        };
        let (kb, n) = if self.trans_b {
            (b[1], b[0])
        } else {
            (b[0], b[1])
        };
        if ka != kb {
            return Err(format!(
                "A {a:?} (transA={}) and B {b:?} (transB={}) have inner dimensions {ka} and {kb}",
                self.trans_a as u8, self.trans_b as u8
            ));
        }
        if self.has_c {
            let c = ins[2];
            let ok =
                c.len() <= 2 && broadcast_shape(c, &[m, n]).ok().as_deref() == Some(&[m, n][..]);
            if !ok {
                return Err(format!(
                    "C {c:?} does not broadcast to the output [{m}, {n}]"
                ));
            }
        }
        Ok(vec![m, n])
    }

    pub(crate) fn run(&self, ins: Vec<Value>) -> Value {
        let mut it = ins.into_iter();
        let (Some(a), Some(b)) = (it.next(), it.next()) else {
            unreachable!("input count checked when the plan was built")
        };
        let mut a = a.into_r2();
        let mut b = b.into_r2();
        if self.trans_a {
            a = a.transpose();
        }
        if self.trans_b {
            b = b.transpose();
        }
        let mut y = a.matmul(b);
        if self.alpha != 1.0 {
            y = y.mul_scalar(self.alpha);
        }
        let mut y = Value::R2(y);
        if let Some(c) = it.next() {
            let c = if self.beta != 1.0 {
                crate::value::map_value!(c, t => t.mul_scalar(self.beta))
            } else {
                c
            };
            if self.beta != 0.0 {
                y = broadcast_binary(y, c, BinaryFn::Add);
            }
        }
        y
    }
}

pub(crate) fn build_matmul(ctx: &mut NodeCtx) -> Result<Op> {
    ctx.only_attrs(&[])?;
    ctx.input_count(2, 2)?;
    ctx.single_output()?;
    ctx.tensor_input(0)?;
    ctx.tensor_input(1)?;
    Ok(Op::MatMul)
}

/// Both operands as rank >= 2 (a 1-D A is a row, a 1-D B a column).
fn promoted(a: &[usize], b: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let a2 = if a.len() == 1 {
        vec![1, a[0]]
    } else {
        a.to_vec()
    };
    let b2 = if b.len() == 1 {
        vec![b[0], 1]
    } else {
        b.to_vec()
    };
    (a2, b2)
}

pub(crate) fn infer_matmul(ins: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
    let (a, b) = (ins[0], ins[1]);
    let (a2, b2) = promoted(a, b);
    let (ra, rb) = (a2.len(), b2.len());
    if a2[ra - 1] != b2[rb - 2] {
        return Err(format!(
            "A {a:?} and B {b:?} have inner dimensions {} and {}",
            a2[ra - 1],
            b2[rb - 2]
        ));
    }
    let batch = broadcast_shape(&a2[..ra - 2], &b2[..rb - 2])
        .map_err(|_| format!("A {a:?} and B {b:?}: batch dimensions do not broadcast"))?;
    let mut out = batch;
    if a.len() > 1 {
        out.push(a2[ra - 2]);
    }
    if b.len() > 1 {
        out.push(b2[rb - 1]);
    }
    Ok(out)
}

pub(crate) fn run_matmul(ins: Vec<Value>, out: &[usize]) -> Value {
    let mut it = ins.into_iter();
    let (Some(a), Some(b)) = (it.next(), it.next()) else {
        unreachable!("input count checked when the plan was built")
    };
    let (a2, b2) = promoted(&a.dims(), &b.dims());
    let rank = a2.len().max(b2.len());
    let a = a.reshape(&a2).into_rank(rank);
    let b = b.reshape(&b2).into_rank(rank);
    let y = match (a, b) {
        (Value::R2(x), Value::R2(y)) => Value::R2(x.matmul(y)),
        (Value::R3(x), Value::R3(y)) => Value::R3(x.matmul(y)),
        (Value::R4(x), Value::R4(y)) => Value::R4(x.matmul(y)),
        (Value::R5(x), Value::R5(y)) => Value::R5(x.matmul(y)),
        (Value::R6(x), Value::R6(y)) => Value::R6(x.matmul(y)),
        _ => unreachable!("operands brought to one rank >= 2"),
    };
    if y.dims() == out {
        y
    } else {
        y.reshape(out)
    }
}
