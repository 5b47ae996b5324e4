//! `Resize` (and opset 9's `Upsample`) of the two spatial axes of an NCHW tensor, `linear` or
//! `nearest`, as a product with one interpolation matrix per axis: `y = A_h · x · A_wᵀ`. The
//! matrices come from the ONNX coordinate transformation, so every mode is exact, and the
//! product has burn's gradients for reconstruction.

use burn_tensor::{Tensor, TensorData};

use super::{first, NodeCtx, Op};
use crate::error::Result;
use crate::value::Value;

/// How an output coordinate maps back to the input (`coordinate_transformation_mode`).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Transform {
    HalfPixel,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
}

/// `mode`, with `nearest_mode` for nearest.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Sampling {
    Linear,
    Nearest(Rounding),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Rounding {
    RoundPreferFloor,
    RoundPreferCeil,
    Floor,
    Ceil,
}

/// The target of the two spatial axes: scale factors, or sizes.
#[derive(Debug, Clone, PartialEq)]
enum Target {
    Scales([f32; 2]),
    Sizes([usize; 2]),
}

#[derive(Debug, Clone)]
pub(crate) struct Resize {
    transform: Transform,
    sampling: Sampling,
    target: Target,
}

pub(crate) fn build_resize(ctx: &mut NodeCtx) -> Result<Op> {
    ctx.single_output()?;
    let upsample = ctx.op == "Upsample";
    let transform = match ctx
        .attr_string("coordinate_transformation_mode")?
        .as_deref()
    {
        _ if upsample || ctx.opset < 11 => Transform::Asymmetric,
        None | Some("half_pixel") => Transform::HalfPixel,
        Some("pytorch_half_pixel") => Transform::PytorchHalfPixel,
        Some("align_corners") => Transform::AlignCorners,
        Some("asymmetric") => Transform::Asymmetric,
        Some(m) => {
            return Err(ctx.err(format!(
                "coordinate_transformation_mode {m:?} is not supported"
            )))
        }
    };
    let sampling = match ctx.attr_string("mode")?.as_deref() {
        None | Some("nearest") => {
            Sampling::Nearest(match ctx.attr_string("nearest_mode")?.as_deref() {
                _ if upsample || ctx.opset < 11 => Rounding::Floor,
                None | Some("round_prefer_floor") => Rounding::RoundPreferFloor,
                Some("round_prefer_ceil") => Rounding::RoundPreferCeil,
                Some("floor") => Rounding::Floor,
                Some("ceil") => Rounding::Ceil,
                Some(m) => return Err(ctx.err(format!("nearest_mode {m:?} is not supported"))),
            })
        }
        Some("linear" | "bilinear") => Sampling::Linear,
        Some(m) => return Err(ctx.err(format!("mode {m:?} is not supported (linear, nearest)"))),
    };
    if ctx.attr_int("antialias", 0)? != 0 {
        return Err(ctx.err("antialias is not supported"));
    }
    if ctx.attr_int("exclude_outside", 0)? != 0 {
        return Err(ctx.err("exclude_outside is not supported"));
    }
    if ctx.attr_ints("axes")?.is_some() {
        return Err(ctx.err("axes is not supported (give scales or sizes for all four axes)"));
    }
    // Upsample and opset-10 Resize: (X, scales); opset 11+: (X, roi, scales, sizes).
    let (scales_at, sizes_at) = if upsample || ctx.opset < 11 {
        ctx.input_count(2, 2)?;
        (1, None)
    } else {
        // roi (1) is unused without tf_crop_and_resize, and may be omitted like scales.
        ctx.input_count(1, 4)?;
        (2, Some(3))
    };
    let scales = match ctx.const_input(scales_at, "scales")? {
        Some(c) if !c.shape.contains(&0) => Some(
            c.as_f32()
                .ok_or_else(|| ctx.err("scales must be a float tensor"))?
                .to_vec(),
        ),
        _ => None,
    };
    let sizes = match sizes_at {
        Some(i) => ctx.const_ints(i, "sizes")?.filter(|s| !s.is_empty()),
        None => None,
    };
    let target = match (scales, sizes) {
        (Some(s), None) => {
            if s.len() != 4 || s[0] != 1.0 || s[1] != 1.0 {
                return Err(ctx.err(format!(
                    "scales {s:?}: only the two spatial axes of an NCHW tensor may be scaled"
                )));
            }
            if !s[2..].iter().all(|v| v.is_finite() && *v > 0.0) {
                return Err(ctx.err(format!("scales {s:?} must be positive and finite")));
            }
            Target::Scales([s[2], s[3]])
        }
        (None, Some(s)) => {
            if s.len() != 4 || s[2..].iter().any(|v| !(1..=1 << 20).contains(v)) {
                return Err(ctx.err(format!(
                    "sizes {s:?}: expected four sizes, spatial 1..=2^20"
                )));
            }
            Target::Sizes([s[2] as usize, s[3] as usize])
        }
        (Some(_), Some(_)) => return Err(ctx.err("give scales or sizes, not both")),
        (None, None) => return Err(ctx.err("needs constant scales or sizes")),
    };
    ctx.tensor_input(0)?;
    Ok(Op::Resize(Resize {
        transform,
        sampling,
        target,
    }))
}

impl Resize {
    pub(crate) fn infer(&self, ins: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        let x = ins[0];
        let [n, c, h, w] = x else {
            return Err(format!("expects a 4-D NCHW input, got shape {x:?}"));
        };
        let (oh, ow) = match self.target {
            Target::Sizes([a, b]) => (a, b),
            Target::Scales([a, b]) => {
                let size = |d: usize, s: f32| (d as f64 * f64::from(s)).floor();
                let (a, b) = (size(*h, a), size(*w, b));
                if !(1.0..=f64::from(1u32 << 20)).contains(&a)
                    || !(1.0..=f64::from(1u32 << 20)).contains(&b)
                {
                    return Err(format!("scales give an output of {a} × {b}"));
                }
                (a as usize, b as usize)
            }
        };
        if c.checked_mul(*n)
            .and_then(|v| v.checked_mul(oh * ow))
            .is_none()
        {
            return Err("the output is too large".into());
        }
        Ok(vec![*n, *c, oh, ow])
    }

    /// The scale of one axis: given, or output over input.
    fn scale(&self, axis: usize, input: usize, output: usize) -> f64 {
        match self.target {
            Target::Scales(s) => f64::from(s[axis]),
            Target::Sizes(_) => output as f64 / input as f64,
        }
    }

    /// `[output, input]`, row-major: the weight of input pixel `i` in output pixel `o`.
    fn matrix(&self, axis: usize, input: usize, output: usize) -> Vec<f32> {
        let scale = self.scale(axis, input, output);
        let mut m = vec![0.0f32; output * input];
        for o in 0..output {
            let x = match self.transform {
                Transform::HalfPixel => (o as f64 + 0.5) / scale - 0.5,
                Transform::PytorchHalfPixel if output > 1 => (o as f64 + 0.5) / scale - 0.5,
                Transform::PytorchHalfPixel => 0.0,
                Transform::AlignCorners if output > 1 => {
                    o as f64 * (input as f64 - 1.0) / (output as f64 - 1.0)
                }
                Transform::AlignCorners => 0.0,
                Transform::Asymmetric => o as f64 / scale,
            };
            let row = &mut m[o * input..(o + 1) * input];
            let last = input as f64 - 1.0;
            match self.sampling {
                Sampling::Linear => {
                    let x = x.clamp(0.0, last);
                    let i0 = x.floor();
                    let i1 = (i0 + 1.0).min(last);
                    let t = (x - i0) as f32;
                    row[i0 as usize] += 1.0 - t;
                    row[i1 as usize] += t;
                }
                Sampling::Nearest(r) => {
                    let i = match r {
                        Rounding::Floor => x.floor(),
                        Rounding::Ceil => x.ceil(),
                        Rounding::RoundPreferFloor if x.fract() == 0.5 => x.floor(),
                        Rounding::RoundPreferCeil if x.fract() == 0.5 => x.ceil(),
                        Rounding::RoundPreferFloor | Rounding::RoundPreferCeil => x.round(),
                    };
                    row[i.clamp(0.0, last) as usize] = 1.0;
                }
            }
        }
        m
    }

    pub(crate) fn run(&self, ins: Vec<Value>, out: &[usize]) -> Value {
        let Value::R4(x) = first(ins) else {
            unreachable!("checked by shape inference: 4-D input")
        };
        let [_, _, h, w] = x.dims();
        let (oh, ow) = (out[2], out[3]);
        let device = x.device();
        let rows = Tensor::<4>::from_data(
            TensorData::new(self.matrix(0, h, oh), [1, 1, oh, h]),
            &device,
        );
        let cols = Tensor::<4>::from_data(
            TensorData::new(self.matrix(1, w, ow), [1, 1, ow, w]),
            &device,
        );
        Value::R4(rows.matmul(x).matmul(cols.transpose()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resize(transform: Transform, sampling: Sampling) -> Resize {
        Resize {
            transform,
            sampling,
            target: Target::Scales([2.0, 2.0]),
        }
    }

    #[test]
    fn linear_half_pixel_doubling_weights() {
        // Output 0 maps to -0.25 (clamped to input 0); output 1 to 0.25: 3/4 of 0, 1/4 of 1.
        let m = resize(Transform::HalfPixel, Sampling::Linear).matrix(0, 2, 4);
        assert_eq!(m, [1.0, 0.0, 0.75, 0.25, 0.25, 0.75, 0.0, 1.0]);
        let m = resize(Transform::AlignCorners, Sampling::Linear).matrix(0, 2, 3);
        assert_eq!(m, [1.0, 0.0, 0.5, 0.5, 0.0, 1.0]);
        let m = resize(Transform::Asymmetric, Sampling::Nearest(Rounding::Floor)).matrix(0, 2, 4);
        assert_eq!(m, [1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0]);
    }
}
