//! Reductions: `ReduceMean`, `ReduceSum`, `ReduceMax`, `ReduceMin` over constant axes.

use super::{first, norm_axis, NodeCtx, Op};
use crate::error::Result;
use crate::value::{map_value, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Mean,
    Sum,
    Max,
    Min,
}

/// A planned reduction.
#[derive(Debug, Clone)]
pub(crate) struct Reduce {
    kind: Kind,
    /// `None`: every axis (or none with `noop_with_empty_axes`).
    axes: Option<Vec<i64>>,
    keepdims: bool,
    noop: bool,
}

pub(crate) fn build_reduce(ctx: &mut NodeCtx) -> Result<Op> {
    ctx.single_output()?;
    let kind = match ctx.op.as_str() {
        "ReduceMean" => Kind::Mean,
        "ReduceSum" => Kind::Sum,
        "ReduceMax" => Kind::Max,
        "ReduceMin" => Kind::Min,
        other => return Err(ctx.err(format!("{other} is not a reduction"))),
    };
    // Axes moved from an attribute to an input at opset 13 (ReduceSum) and 18 (the others).
    let axes_input = ctx.opset >= if kind == Kind::Sum { 13 } else { 18 };
    let (axes, noop) = if axes_input {
        ctx.only_attrs(&["keepdims", "noop_with_empty_axes"])?;
        ctx.input_count(1, 2)?;
        (
            ctx.const_ints(1, "axes")?,
            ctx.attr_int("noop_with_empty_axes", 0)? == 1,
        )
    } else {
        ctx.only_attrs(&["axes", "keepdims"])?;
        ctx.input_count(1, 1)?;
        (ctx.attr_ints("axes")?, false)
    };
    let axes = axes.filter(|a| !a.is_empty());
    let keepdims = ctx.attr_int("keepdims", 1)? == 1;
    ctx.tensor_input(0)?;
    Ok(Op::Reduce(Reduce {
        kind,
        axes,
        keepdims,
        noop,
    }))
}

impl Reduce {
    fn axes(&self, rank: usize) -> std::result::Result<Vec<usize>, String> {
        match &self.axes {
            None if self.noop => Ok(Vec::new()),
            None => Ok((0..rank).collect()),
            Some(a) => {
                let mut v = a
                    .iter()
                    .map(|&x| norm_axis(x, rank))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                v.sort_unstable();
                v.dedup();
                Ok(v)
            }
        }
    }

    pub(crate) fn infer(&self, ins: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        let x = ins[0];
        let axes = self.axes(x.len())?;
        let out: Vec<usize> = (0..x.len())
            .filter_map(|i| match (axes.contains(&i), self.keepdims) {
                (false, _) => Some(x[i]),
                (true, true) => Some(1),
                (true, false) => None,
            })
            .collect();
        Ok(if out.is_empty() { vec![1] } else { out })
    }

    pub(crate) fn run(&self, ins: Vec<Value>, out: &[usize]) -> Value {
        let mut x = first(ins);
        let axes = match self.axes(x.rank()) {
            Ok(a) => a,
            Err(e) => unreachable!("checked by shape inference: {e}"),
        };
        for &a in &axes {
            x = match self.kind {
                Kind::Mean => map_value!(x, t => t.mean_dim(a)),
                Kind::Sum => map_value!(x, t => t.sum_dim(a)),
                Kind::Max => map_value!(x, t => t.max_dim(a)),
                Kind::Min => map_value!(x, t => t.min_dim(a)),
            };
        }
        // Reduced axes are kept as size 1 above; drop them when keepdims = 0.
        if x.dims() == out {
            x
        } else {
            x.reshape(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn_tensor::Device;

    #[test]
    fn reductions_over_axes() {
        let x = || Value::from_f32(vec![1.0, 2.0, 3.0, 4.0, 5.0, 9.0], &[2, 3], &Device::flex());
        let r = |kind, axes: Option<Vec<i64>>, keepdims| Reduce {
            kind,
            axes,
            keepdims,
            noop: false,
        };
        let mean = r(Kind::Mean, Some(vec![1]), false);
        assert_eq!(mean.infer(&[&[2, 3]]).unwrap(), vec![2]);
        assert_eq!(mean.run(vec![x().unwrap()], &[2]).to_vec(), vec![2.0, 6.0]);
        let sum = r(Kind::Sum, Some(vec![-2]), true);
        assert_eq!(sum.infer(&[&[2, 3]]).unwrap(), vec![1, 3]);
        assert_eq!(
            sum.run(vec![x().unwrap()], &[1, 3]).to_vec(),
            vec![5.0, 7.0, 12.0]
        );
        let max = r(Kind::Max, None, false);
        assert_eq!(max.run(vec![x().unwrap()], &[1]).to_vec(), vec![9.0]);
        let min = r(Kind::Min, Some(vec![0]), true);
        assert_eq!(
            min.run(vec![x().unwrap()], &[1, 3]).to_vec(),
            vec![1.0, 2.0, 3.0]
        );
    }
}
