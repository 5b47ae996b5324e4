//! Convolution and dense layers on the kernels: the input is laid out as one row of K
//! (`C/groups · kh · kw`, the weight's own order) per output pixel (im2row), then multiplied
//! by the weight rows of each group.

use rayon::prelude::*;

use crate::int8::a8_stride;
use crate::{matmul_a8, matmul_f32, matmul_packed_f32, Cpu, KernelError, PackedWeights, Result};

/// Which kernel computes a layer.
#[derive(Debug, Clone, Copy)]
pub enum Path<'a> {
    /// The f32 kernel on float weights (`rows × cols`, row-major): the baseline.
    F32(&'a [f32]),
    /// Path B: codes decoded to f32 tiles.
    PackedF32(&'a PackedWeights),
    /// Path A: integer weights × 8-bit activation codes.
    Int8(&'a PackedWeights),
}

impl Path<'_> {
    fn rows_cols(&self, expect_cols: usize) -> Result<usize> {
        match self {
            Path::F32(w) => {
                if expect_cols == 0 || !w.len().is_multiple_of(expect_cols) {
                    return Err(KernelError::Shape(format!(
                        "{} float weights are not rows of {expect_cols}",
                        w.len()
                    )));
                }
                Ok(w.len() / expect_cols)
            }
            Path::PackedF32(w) | Path::Int8(w) => {
                if w.cols != expect_cols {
                    return Err(KernelError::Shape(format!(
                        "weights of {} columns for inputs of {expect_cols}",
                        w.cols
                    )));
                }
                Ok(w.rows)
            }
        }
    }
}

/// A layer's input.
#[derive(Debug, Clone, Copy)]
pub enum Activations<'a> {
    /// Floats (the float kernel and path B).
    F32(&'a [f32]),
    /// 8-bit codes of a uniform quantizer: the value is `scale · (code − zero)` (path A).
    U8 {
        /// The codes.
        codes: &'a [u8],
        /// The code of 0.
        zero: u8,
        /// The step.
        scale: f32,
    },
}

impl Activations<'_> {
    fn len(&self) -> usize {
        match self {
            Activations::F32(x) => x.len(),
            Activations::U8 { codes, .. } => codes.len(),
        }
    }
}

/// The shape of a 2-D convolution over NCHW input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Input channels.
    pub in_channels: usize,
    /// Input height and width.
    pub in_hw: [usize; 2],
    /// Output channels (the weight's rows).
    pub out_channels: usize,
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Vertical and horizontal strides.
    pub strides: [usize; 2],
    /// Vertical and horizontal dilations.
    pub dilations: [usize; 2],
    /// Zero padding `[top, left, bottom, right]`.
    pub pads: [usize; 4],
    /// Groups (`in_channels` for a depthwise convolution).
    pub groups: usize,
}

impl ConvGeometry {
    /// Output height and width.
    pub fn out_hw(&self) -> [usize; 2] {
        let dim = |i: usize| {
            let span = self.dilations[i] * (self.kernel[i] - 1) + 1;
            let padded = self.in_hw[i] + self.pads[i] + self.pads[i + 2];
            if padded < span {
                0
            } else {
                (padded - span) / self.strides[i] + 1
            }
        };
        [dim(0), dim(1)]
    }

    /// Weights per output channel: `in_channels / groups · kh · kw`.
    pub fn cols(&self) -> usize {
        self.in_channels / self.groups.max(1) * self.kernel[0] * self.kernel[1]
    }

    fn check(&self) -> Result<()> {
        let ok = self.groups > 0
            && self.in_channels.is_multiple_of(self.groups)
            && self.out_channels.is_multiple_of(self.groups)
            && self.kernel.iter().all(|&k| k > 0)
            && self.strides.iter().all(|&s| s > 0)
            && self.dilations.iter().all(|&d| d > 0)
            && self.out_hw().iter().all(|&d| d > 0);
        if ok {
            Ok(())
        } else {
            Err(KernelError::Shape(format!(
                "bad convolution geometry {self:?}"
            )))
        }
    }
}

/// Where each kernel tap of each output pixel reads in a channel plane: `y · w + x`, or
/// `None` over the padding. The same for every channel and image, so computed once.
pub(crate) fn tap_offsets(g: &ConvGeometry) -> Vec<Option<u32>> {
    let [h, w] = g.in_hw;
    let [oh, ow] = g.out_hw();
    let [kh, kw] = g.kernel;
    let mut taps = Vec::with_capacity(oh * ow * kh * kw);
    for oy in 0..oh {
        for ox in 0..ow {
            for ky in 0..kh {
                let y = (oy * g.strides[0] + ky * g.dilations[0]).checked_sub(g.pads[0]);
                for kx in 0..kw {
                    let x = (ox * g.strides[1] + kx * g.dilations[1]).checked_sub(g.pads[1]);
                    taps.push(match (y, x) {
                        (Some(y), Some(x)) if y < h && x < w => u32::try_from(y * w + x).ok(),
                        _ => None,
                    });
                }
            }
        }
    }
    taps
}

/// One image's rows of patches: `rows[p][k]` for output pixel `p` and weight column `k` of
/// channels `c0..c0 + cg` (`k = c · kh · kw + tap`, the weight's own order), `fill` over the
/// padding, rows `stride` long (the tail beyond K is left as it is).
fn im2row<T: Copy>(
    g: &ConvGeometry,
    taps: &[Option<u32>],
    image: &[T],
    c0: usize,
    fill: T,
    stride: usize,
    rows: &mut [T],
) {
    let [h, w] = g.in_hw;
    let per_pixel = g.kernel[0] * g.kernel[1];
    let cg = g.in_channels / g.groups;
    let planes = &image[c0 * h * w..][..cg * h * w];
    for (row, taps) in rows.chunks_mut(stride).zip(taps.chunks(per_pixel)) {
        for (dst, plane) in row[..cg * per_pixel]
            .chunks_mut(per_pixel)
            .zip(planes.chunks(h * w))
        {
            for (d, &tap) in dst.iter_mut().zip(taps) {
                *d = tap
                    .and_then(|t| plane.get(t as usize).copied())
                    .unwrap_or(fill);
            }
        }
    }
}

/// Scale per row that turns path A's integer sums into outputs: row scale · table unit ·
/// activation step.
fn int8_row_scales(w: &PackedWeights, act_scale: f32) -> Result<Vec<f32>> {
    let unit = w
        .ints
        .as_ref()
        .ok_or_else(|| KernelError::Int8("weights without an integer table".into()))?
        .unit;
    Ok(w.row_scales.iter().map(|&s| s * unit * act_scale).collect())
}

/// `out = conv(input, weights) + bias` for `batch` NCHW images; `out` is
/// `batch × out_channels × oh × ow`. Path A needs [`Activations::U8`], the others
/// [`Activations::F32`].
pub fn conv2d(
    cpu: Cpu,
    path: Path,
    g: &ConvGeometry,
    batch: usize,
    input: Activations,
    bias: Option<&[f32]>,
    out: &mut [f32],
) -> Result<()> {
    g.check()?;
    let cols = g.cols();
    let rows = path.rows_cols(cols)?;
    if rows != g.out_channels {
        return Err(KernelError::Shape(format!(
            "{rows} weight rows for {} output channels",
            g.out_channels
        )));
    }
    let [h, w] = g.in_hw;
    let pixels = g.out_hw()[0] * g.out_hw()[1];
    let image_len = g.in_channels * h * w;
    if input.len() != batch * image_len || out.len() != batch * rows * pixels {
        return Err(KernelError::Shape(format!(
            "{} inputs and {} outputs for {batch} images of {:?} → {} × {:?}",
            input.len(),
            out.len(),
            [g.in_channels, h, w],
            rows,
            g.out_hw()
        )));
    }
    check_bias(bias, rows)?;
    let rows_per_group = rows / g.groups;
    let cg = g.in_channels / g.groups;
    let scales = match (path, input) {
        (Path::Int8(w), Activations::U8 { scale, .. }) => Some(int8_row_scales(w, scale)?),
        (Path::Int8(_), _) | (_, Activations::U8 { .. }) => {
            return Err(KernelError::Int8(
                "path A takes 8-bit activation codes and only path A takes them".into(),
            ))
        }
        _ => None,
    };
    if cg == 1 && rows_per_group == 1 {
        return depthwise(cpu, path, g, input, bias, scales.as_deref(), out);
    }
    let taps = tap_offsets(g);
    // One task per image and group: each output chunk is contiguous in NCHW.
    out.par_chunks_mut(rows_per_group * pixels)
        .enumerate()
        .try_for_each(|(task, out)| -> Result<()> {
            let (b, group) = (task / g.groups, task % g.groups);
            let r = group * rows_per_group..(group + 1) * rows_per_group;
            match (path, input) {
                (Path::Int8(w), Activations::U8 { codes, zero, .. }) => {
                    let stride = a8_stride(cols);
                    let mut x = vec![0u8; pixels * stride];
                    let image = &codes[b * image_len..][..image_len];
                    im2row(g, &taps, image, group * cg, zero, stride, &mut x);
                    let mut acc = vec![0i32; r.len() * pixels];
                    matmul_a8(cpu, w, r.clone(), &x, pixels, i32::from(zero), &mut acc)?;
                    let scales = scales.as_deref().unwrap_or_default();
                    for ((o, a), m) in out
                        .chunks_mut(pixels)
                        .zip(acc.chunks(pixels))
                        .zip(r.clone())
                    {
                        let add = bias.map_or(0.0, |b| b[m]);
                        for (o, &a) in o.iter_mut().zip(a) {
                            *o = a as f32 * scales[m] + add;
                        }
                    }
                }
                (_, Activations::F32(input)) => {
                    let mut x = vec![0.0f32; pixels * cols];
                    let image = &input[b * image_len..][..image_len];
                    im2row(g, &taps, image, group * cg, 0.0, cols, &mut x);
                    match path {
                        Path::F32(w) => matmul_f32(
                            cpu,
                            &w[r.start * cols..r.end * cols],
                            cols,
                            &x,
                            pixels,
                            out,
                        )?,
                        Path::PackedF32(w) | Path::Int8(w) => {
                            matmul_packed_f32(cpu, w, r.clone(), &x, pixels, out)?
                        }
                    }
                    add_bias(out, bias, r.start, pixels);
                }
                (_, Activations::U8 { .. }) => unreachable!("refused above"),
            }
            Ok(())
        })?;
    Ok(())
}

/// For each tap along one axis, the outputs whose input is inside the image: `(lo, hi,
/// first input)` with input `first + (o − lo) · stride` for `o` in `lo..hi`.
fn tap_spans(g: &ConvGeometry, axis: usize) -> Vec<(usize, usize, usize)> {
    let (s, d, pad) = (g.strides[axis], g.dilations[axis], g.pads[axis]);
    let (len, out) = (g.in_hw[axis], g.out_hw()[axis]);
    (0..g.kernel[axis])
        .map(|k| {
            let offset = k * d; // input = o · s + offset − pad
            let lo = pad.saturating_sub(offset).div_ceil(s).min(out);
            let hi = (len + pad)
                .saturating_sub(offset)
                .div_ceil(s)
                .clamp(lo, out);
            (lo, hi, (lo * s + offset).saturating_sub(pad))
        })
        .collect()
}

/// One channel plane of a depthwise convolution, tap by tap over whole output rows (the
/// inner loop runs along a row, which the compiler vectorises): `out += w[tap] · x` at the
/// outputs whose input is inside the image. The float kernel and path B run this same code.
fn depthwise_plane<T, W>(g: &ConvGeometry, w: &[W], x: &[T], out: &mut [W], mul: impl Fn(W, T) -> W)
where
    T: Copy,
    W: Copy + std::ops::AddAssign,
{
    let (ys, xs) = (tap_spans(g, 0), tap_spans(g, 1));
    let (iw, ow) = (g.in_hw[1], g.out_hw()[1]);
    for (ky, &(y_lo, y_hi, y0)) in ys.iter().enumerate() {
        for (kx, &(x_lo, x_hi, x0)) in xs.iter().enumerate() {
            let wt = w[ky * g.kernel[1] + kx];
            for oy in y_lo..y_hi {
                let src = &x[(y0 + (oy - y_lo) * g.strides[0]) * iw..][..iw];
                let dst = &mut out[oy * ow..][x_lo..x_hi];
                if g.strides[1] == 1 {
                    for (o, &v) in dst.iter_mut().zip(&src[x0..]) {
                        *o += mul(wt, v);
                    }
                } else {
                    for (i, o) in dst.iter_mut().enumerate() {
                        *o += mul(wt, src[x0 + i * g.strides[1]]);
                    }
                }
            }
        }
    }
}

/// Depthwise convolution (one input channel per group, one output channel each): a direct
/// kernel per image and channel, no im2row (which would turn each channel into a one-row
/// GEMM over 9 or 25 columns).
fn depthwise(
    cpu: Cpu,
    path: Path,
    g: &ConvGeometry,
    input: Activations,
    bias: Option<&[f32]>,
    int8_scales: Option<&[f32]>,
    out: &mut [f32],
) -> Result<()> {
    let channels = g.out_channels;
    let taps = g.kernel[0] * g.kernel[1];
    let plane_in = g.in_hw[0] * g.in_hw[1];
    let plane_out = g.out_hw()[0] * g.out_hw()[1];
    out.par_chunks_mut(plane_out)
        .enumerate()
        .for_each(|(task, out)| {
            let c = task % channels;
            let add = bias.map_or(0.0, |b| b[c]);
            match (path, input) {
                (Path::Int8(w), Activations::U8 { codes, zero, .. }) => {
                    let wt: Vec<i32> = (0..taps).map(|t| w.int_weight(c, t).unwrap_or(0)).collect();
                    let x: Vec<i32> = codes[task * plane_in..][..plane_in]
                        .iter()
                        .map(|&q| i32::from(q) - i32::from(zero))
                        .collect();
                    let mut acc = vec![0i32; plane_out];
                    depthwise_plane(g, &wt, &x, &mut acc, |w, v| w * v);
                    let scale = int8_scales.map_or(0.0, |s| s[c]);
                    for (o, &a) in out.iter_mut().zip(&acc) {
                        *o = a as f32 * scale + add;
                    }
                }
                (_, Activations::F32(x)) => {
                    let mut decoded = vec![0.0f32; taps];
                    let wt: &[f32] = match path {
                        Path::F32(w) => &w[c * taps..][..taps],
                        Path::PackedF32(w) | Path::Int8(w) => {
                            crate::decode::rows_f32(cpu, w, c..c + 1, &mut decoded);
                            &decoded
                        }
                    };
                    out.fill(0.0);
                    depthwise_plane(g, wt, &x[task * plane_in..][..plane_in], out, |w, v| w * v);
                    out.iter_mut().for_each(|o| *o += add);
                }
                // Refused by `conv2d` before any work.
                (_, Activations::U8 { .. }) => {}
            }
        });
    Ok(())
}

/// `out[b][m] = Σ_k w[m][k] · x[b][k] + bias[m]` for `batch` rows of `w.cols` inputs (Gemm /
/// MatMul with the weight as the second operand); `out` is `batch × rows`.
pub fn linear(
    cpu: Cpu,
    path: Path,
    cols: usize,
    batch: usize,
    input: Activations,
    bias: Option<&[f32]>,
    out: &mut [f32],
) -> Result<()> {
    let rows = path.rows_cols(cols)?;
    if input.len() != batch * cols || out.len() != batch * rows {
        return Err(KernelError::Shape(format!(
            "{} inputs and {} outputs for {batch} rows of {cols} → {rows}",
            input.len(),
            out.len()
        )));
    }
    check_bias(bias, rows)?;
    let mut t = vec![0.0f32; rows * batch];
    match (path, input) {
        (Path::Int8(w), Activations::U8 { codes, zero, scale }) => {
            let stride = a8_stride(cols);
            let mut x = vec![0u8; batch * stride];
            for (dst, src) in x.chunks_mut(stride).zip(codes.chunks(cols)) {
                dst[..cols].copy_from_slice(src);
            }
            let mut acc = vec![0i32; rows * batch];
            matmul_a8(cpu, w, 0..rows, &x, batch, i32::from(zero), &mut acc)?;
            let scales = int8_row_scales(w, scale)?;
            for (m, (t, a)) in t.chunks_mut(batch).zip(acc.chunks(batch)).enumerate() {
                for (t, &a) in t.iter_mut().zip(a) {
                    *t = a as f32 * scales[m];
                }
            }
        }
        (Path::F32(w), Activations::F32(x)) => matmul_f32(cpu, w, cols, x, batch, &mut t)?,
        (Path::PackedF32(w), Activations::F32(x)) => {
            matmul_packed_f32(cpu, w, 0..rows, x, batch, &mut t)?
        }
        _ => {
            return Err(KernelError::Int8(
                "path A takes 8-bit activation codes and only path A takes them".into(),
            ))
        }
    }
    for (b, o) in out.chunks_mut(rows).enumerate() {
        for (m, o) in o.iter_mut().enumerate() {
            *o = t[m * batch + b] + bias.map_or(0.0, |bias| bias[m]);
        }
    }
    Ok(())
}

fn check_bias(bias: Option<&[f32]>, rows: usize) -> Result<()> {
    match bias {
        Some(b) if b.len() != rows => Err(KernelError::Shape(format!(
            "{} biases for {rows} output channels",
            b.len()
        ))),
        _ => Ok(()),
    }
}

fn add_bias(out: &mut [f32], bias: Option<&[f32]>, first: usize, pixels: usize) {
    if let Some(bias) = bias {
        for (m, o) in out.chunks_mut(pixels).enumerate() {
            o.iter_mut().for_each(|v| *v += bias[first + m]);
        }
    }
}
