//! Float 2-D convolution, max pooling and dense layers with their gradients, for block
//! reconstruction: the forward pass and the gradients of the weights (`dW`) and of the input
//! (`dX`), on plain NCHW slices. Stride-1 convolutions and depthwise ones at any stride run on
//! direct AVX-512 / AVX2 kernels where the CPU has them (`direct`, `depthwise`: no im2col; the
//! dense gradients fall back to im2col on small images, where the kernels' padded grid is
//! mostly padding); the others go through im2col and GEMM (a depthwise one, where the CPU has
//! neither instruction set or the kernel is dilated, through scalar loops). For im2col, images are split into
//! fixed chunks of [`CHUNK`], each chunk's weight gradient is summed on its own and the
//! chunks are added in order, so that every result is the same whatever the number of
//! threads.

use rayon::prelude::*;

use crate::conv::tap_offsets;
use crate::vector::{self, Simd};
use crate::{depthwise, direct};
use crate::{ConvGeometry, KernelError, Result};

/// Images per parallel task of a weight gradient (fixed: the sums must not depend on threads).
pub const CHUNK: usize = 4;

/// `dst (m × n) = [dst +] lhs (m × k) · rhs (k × n)`, every matrix given by its slice and its
/// column and row strides; panics when a stride reaches outside its slice.
#[allow(clippy::too_many_arguments)]
fn gemm(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    (dst_cs, dst_rs): (usize, usize),
    accumulate: bool,
    lhs: &[f32],
    (lhs_cs, lhs_rs): (usize, usize),
    rhs: &[f32],
    (rhs_cs, rhs_rs): (usize, usize),
) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |rows: usize, cols: usize, cs: usize, rs: usize| (rows - 1) * rs + (cols - 1) * cs;
    assert!(
        last(m, n, dst_cs, dst_rs) < dst.len(),
        "gemm: dst too short"
    );
    if k == 0 {
        if !accumulate {
            dst.fill(0.0);
        }
        return;
    }
    assert!(
        last(m, k, lhs_cs, lhs_rs) < lhs.len(),
        "gemm: lhs too short"
    );
    assert!(
        last(k, n, rhs_cs, rhs_rs) < rhs.len(),
        "gemm: rhs too short"
    );
    // SAFETY: every index the strides reach is inside its slice (checked above), `dst` is
    // borrowed mutably and does not overlap the inputs.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_cs as isize,
            dst_rs as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// Sizes of one convolution: per image input and output, per group channels and columns.
struct Sizes {
    plane: usize,
    image_in: usize,
    pixels: usize,
    image_out: usize,
    cg: usize,
    mg: usize,
    cols: usize,
    taps_per_pixel: usize,
}

fn sizes(g: &ConvGeometry) -> Result<Sizes> {
    if g.groups == 0
        || !g.in_channels.is_multiple_of(g.groups)
        || !g.out_channels.is_multiple_of(g.groups)
        || g.out_hw().contains(&0)
    {
        return Err(KernelError::Shape(format!(
            "bad convolution geometry {g:?}"
        )));
    }
    let [oh, ow] = g.out_hw();
    let plane = g.in_hw[0] * g.in_hw[1];
    Ok(Sizes {
        plane,
        image_in: g.in_channels * plane,
        pixels: oh * ow,
        image_out: g.out_channels * oh * ow,
        cg: g.in_channels / g.groups,
        mg: g.out_channels / g.groups,
        cols: g.cols(),
        taps_per_pixel: g.kernel[0] * g.kernel[1],
    })
}

fn check_len(what: &str, got: usize, want: usize) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(KernelError::Shape(format!(
            "{what}: {got} values, expected {want}"
        )))
    }
}

/// The output columns `[lo, hi)` whose tap at kernel column `kx` falls inside the input row
/// (the others read padding), and where they read: input column `ox · sw + offset`.
struct Run {
    lo: usize,
    hi: usize,
    /// `ix = ox · sw + offset`.
    offset: isize,
}

fn run_of(g: &ConvGeometry, kx: usize, ow: usize) -> Run {
    let (sw, w) = (g.strides[1] as isize, g.in_hw[1] as isize);
    let offset = (kx * g.dilations[1]) as isize - g.pads[1] as isize;
    // 0 <= ox · sw + offset < w.
    let lo = if offset < 0 {
        (-offset + sw - 1) / sw
    } else {
        0
    };
    let hi = if w - 1 - offset < 0 {
        0
    } else {
        (w - 1 - offset) / sw + 1
    };
    let (lo, hi) = (
        lo.clamp(0, ow as isize) as usize,
        hi.clamp(0, ow as isize) as usize,
    );
    Run {
        lo,
        hi: hi.max(lo),
        offset,
    }
}

fn input_row(g: &ConvGeometry, oy: usize, ky: usize) -> Option<usize> {
    let iy = (oy * g.strides[0] + ky * g.dilations[0]).checked_sub(g.pads[0])?;
    (iy < g.in_hw[0]).then_some(iy)
}

/// One image's columns of channels `c0..c0 + cg`: `cols[k · stride + p]` for weight column
/// `k = c · kh · kw + ky · kw + kx` and output pixel `p`, zero over the padding.
fn im2col(g: &ConvGeometry, image: &[f32], c0: usize, cg: usize, cols: &mut [f32], stride: usize) {
    let [h, w] = g.in_hw;
    let [oh, ow] = g.out_hw();
    let [kh, kw] = g.kernel;
    let pixels = oh * ow;
    let sw = g.strides[1];
    let runs: Vec<Run> = (0..kw).map(|kx| run_of(g, kx, ow)).collect();
    for c in 0..cg {
        let plane = &image[(c0 + c) * h * w..][..h * w];
        for ky in 0..kh {
            for (kx, run) in runs.iter().enumerate() {
                let row = &mut cols[((c * kh + ky) * kw + kx) * stride..][..pixels];
                for (oy, seg) in row.chunks_mut(ow).enumerate() {
                    let Some(iy) = input_row(g, oy, ky) else {
                        seg.fill(0.0);
                        continue;
                    };
                    seg[..run.lo].fill(0.0);
                    seg[run.hi..].fill(0.0);
                    if run.lo == run.hi {
                        continue;
                    }
                    let src = &plane[iy * w..][..w];
                    let first = (run.lo * sw) as isize + run.offset;
                    if sw == 1 {
                        let first = first as usize;
                        seg[run.lo..run.hi].copy_from_slice(&src[first..first + run.hi - run.lo]);
                    } else {
                        for (j, d) in seg[run.lo..run.hi].iter_mut().enumerate() {
                            *d = src[first as usize + j * sw];
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds every column entry back to the input it was read from.
fn col2im_add(
    g: &ConvGeometry,
    cols: &[f32],
    stride: usize,
    c0: usize,
    cg: usize,
    image: &mut [f32],
) {
    let [h, w] = g.in_hw;
    let [oh, ow] = g.out_hw();
    let [kh, kw] = g.kernel;
    let pixels = oh * ow;
    let sw = g.strides[1];
    let runs: Vec<Run> = (0..kw).map(|kx| run_of(g, kx, ow)).collect();
    for c in 0..cg {
        let plane = &mut image[(c0 + c) * h * w..][..h * w];
        for ky in 0..kh {
            for (kx, run) in runs.iter().enumerate() {
                let row = &cols[((c * kh + ky) * kw + kx) * stride..][..pixels];
                for (oy, seg) in row.chunks(ow).enumerate() {
                    let Some(iy) = input_row(g, oy, ky) else {
                        continue;
                    };
                    if run.lo == run.hi {
                        continue;
                    }
                    let dst = &mut plane[iy * w..][..w];
                    let first = ((run.lo * sw) as isize + run.offset) as usize;
                    for (j, v) in seg[run.lo..run.hi].iter().enumerate() {
                        dst[first + j * sw] += v;
                    }
                }
            }
        }
    }
}

/// Floats of kept columns above which a forward pass does not keep them for the backward one.
pub const KEEP_COLUMNS_LIMIT: usize = 1 << 24;

/// Images `[start, end)` of chunk `c` of a batch of `batch`.
fn chunk_images(c: usize, batch: usize) -> std::ops::Range<usize> {
    c * CHUNK..((c + 1) * CHUNK).min(batch)
}

/// The columns of the `nb` images `x` (one chunk): per group a `K × (nb · pixels)` block, the
/// images side by side, so that one GEMM covers the chunk.
fn chunk_columns(g: &ConvGeometry, s: &Sizes, x: &[f32], nb: usize, cols: &mut [f32]) {
    let n = nb * s.pixels;
    for grp in 0..g.groups {
        let block = &mut cols[grp * s.cols * n..][..s.cols * n];
        for (b, image) in x.chunks(s.image_in).take(nb).enumerate() {
            im2col(g, image, grp * s.cg, s.cg, &mut block[b * s.pixels..], n);
        }
    }
}

/// `dy`'s rows of group `grp` for the `nb` images of one chunk, side by side: `mg × (nb · pixels)`.
fn chunk_rows(s: &Sizes, dy: &[f32], grp: usize, nb: usize, out: &mut Vec<f32>) {
    let n = nb * s.pixels;
    out.resize(s.mg * n, 0.0);
    for (b, image) in dy.chunks(s.image_out).take(nb).enumerate() {
        let rows = &image[grp * s.mg * s.pixels..][..s.mg * s.pixels];
        for (m, row) in rows.chunks(s.pixels).enumerate() {
            out[m * n + b * s.pixels..][..s.pixels].copy_from_slice(row);
        }
    }
}

/// `y = conv(x, w) + bias` for `batch` images; `w` is `out_channels × cols`. With `keep`,
/// the images' columns (im2col) are left there for [`conv2d_backward`] to reuse, when they
/// hold at most [`KEEP_COLUMNS_LIMIT`] floats; returns whether they were (the buffer's old
/// contents are overwritten, its allocation reused).
pub fn conv2d_forward(
    g: &ConvGeometry,
    x: &[f32],
    batch: usize,
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    keep: Option<&mut Vec<f32>>,
) -> Result<bool> {
    conv2d_forward_on(direct_path(g), g, x, batch, w, bias, y, keep)
}

/// Whether the dense direct kernels (`direct`) take `g`; else the depthwise ones may.
fn dense_direct(g: &ConvGeometry) -> bool {
    direct::applies(g.kernel, g.strides, g.dilations, g.pads, g.groups)
}

/// The direct kernels (dense stride-1 or depthwise) for convolution `g`, where they apply and
/// the CPU has them.
fn direct_path(g: &ConvGeometry) -> Option<Simd> {
    (dense_direct(g) || depthwise::applies(g))
        .then(vector::simd)
        .flatten()
}

fn direct_conv(g: &ConvGeometry) -> direct::Conv {
    direct::Conv {
        in_channels: g.in_channels,
        in_hw: g.in_hw,
        out_channels: g.out_channels,
        kernel: g.kernel,
        pads: g.pads,
    }
}

/// [`conv2d_forward`] on the direct kernels (`Some`) or im2col (`None`).
#[allow(clippy::too_many_arguments)]
fn conv2d_forward_on(
    path: Option<Simd>,
    g: &ConvGeometry,
    x: &[f32],
    batch: usize,
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    keep: Option<&mut Vec<f32>>,
) -> Result<bool> {
    let s = sizes(g)?;
    check_len("conv input", x.len(), batch * s.image_in)?;
    check_len("conv weight", w.len(), g.out_channels * s.cols)?;
    check_len("conv output", y.len(), batch * s.image_out)?;
    if let Some(b) = bias {
        check_len("conv bias", b.len(), g.out_channels)?;
    }
    if let Some(simd) = path {
        if dense_direct(g) {
            direct::forward(simd, &direct_conv(g), x, w, bias, y);
        } else {
            depthwise::forward(simd, g, x, w, bias, y);
        }
        return Ok(false);
    }
    let add_bias = |y: &mut [f32]| {
        if let Some(b) = bias {
            for image in y.chunks_mut(s.image_out) {
                for (plane, &bv) in image.chunks_mut(s.pixels).zip(b) {
                    plane.iter_mut().for_each(|v| *v += bv);
                }
            }
        }
    };
    if s.cg == 1 && s.mg == 1 {
        let taps = tap_offsets(g);
        y.par_chunks_mut(s.image_out)
            .zip(x.par_chunks(s.image_in))
            .for_each(|(y, x)| {
                for c in 0..g.out_channels {
                    let plane = &x[c * s.plane..][..s.plane];
                    let wc = &w[c * s.taps_per_pixel..][..s.taps_per_pixel];
                    for (o, taps) in y[c * s.pixels..][..s.pixels]
                        .iter_mut()
                        .zip(taps.chunks(s.taps_per_pixel))
                    {
                        *o = taps
                            .iter()
                            .zip(wc)
                            .filter_map(|(t, wv)| t.map(|t| plane[t as usize] * wv))
                            .sum();
                    }
                }
                add_bias(y);
            });
        return Ok(false);
    }
    let per_image = g.groups * s.cols * s.pixels;
    let kept = keep.filter(|_| batch * per_image <= KEEP_COLUMNS_LIMIT);
    let chunk = |c: usize, y: &mut [f32], cols: &mut [f32]| {
        let images = chunk_images(c, batch);
        let nb = images.len();
        let n = nb * s.pixels;
        chunk_columns(g, &s, &x[images.start * s.image_in..], nb, cols);
        for grp in 0..g.groups {
            let block = &cols[grp * s.cols * n..][..s.cols * n];
            for (b, image) in y.chunks_mut(s.image_out).enumerate() {
                // Y_g (mg × pixels) = W_g (mg × K) · this image's columns (K × pixels, a
                // strided view of the chunk's block): written in place.
                gemm(
                    (s.mg, s.pixels, s.cols),
                    &mut image[grp * s.mg * s.pixels..][..s.mg * s.pixels],
                    (1, s.pixels),
                    false,
                    &w[grp * s.mg * s.cols..][..s.mg * s.cols],
                    (1, s.cols),
                    &block[b * s.pixels..],
                    (1, n),
                );
            }
        }
        add_bias(y);
    };
    if let Some(kept) = kept {
        // Every column is written: a buffer of the right length is reused as it is.
        kept.resize(batch * per_image, 0.0);
        y.par_chunks_mut(CHUNK * s.image_out)
            .zip(kept.par_chunks_mut(CHUNK * per_image))
            .enumerate()
            .for_each(|(c, (y, cols))| chunk(c, y, cols));
    } else {
        y.par_chunks_mut(CHUNK * s.image_out)
            .enumerate()
            .for_each_init(
                || vec![0.0f32; CHUNK * per_image],
                |cols, (c, y)| chunk(c, y, cols),
            );
        return Ok(false);
    }
    Ok(true)
}

/// The gradients of a convolution given its output gradient `dy`: `dw` (the weight's shape,
/// overwritten) and `dx` (the input's shape, overwritten), each when asked for. `kept`: the
/// columns [`conv2d_forward`] kept for this `x`, if it did (else they are computed again).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward(
    g: &ConvGeometry,
    x: &[f32],
    batch: usize,
    w: &[f32],
    dy: &[f32],
    kept: Option<&[f32]>,
    dw: Option<&mut [f32]>,
    dx: Option<&mut [f32]>,
) -> Result<()> {
    conv2d_backward_on(direct_path(g), g, x, batch, w, dy, kept, dw, dx)
}

/// [`conv2d_backward`] on the direct kernels (`Some`) or im2col (`None`).
#[allow(clippy::too_many_arguments)]
fn conv2d_backward_on(
    path: Option<Simd>,
    g: &ConvGeometry,
    x: &[f32],
    batch: usize,
    w: &[f32],
    dy: &[f32],
    kept: Option<&[f32]>,
    dw: Option<&mut [f32]>,
    dx: Option<&mut [f32]>,
) -> Result<()> {
    let s = sizes(g)?;
    check_len("conv input", x.len(), batch * s.image_in)?;
    check_len("conv weight", w.len(), g.out_channels * s.cols)?;
    check_len("conv output gradient", dy.len(), batch * s.image_out)?;
    let per_image = g.groups * s.cols * s.pixels;
    if let Some(k) = kept {
        check_len("kept columns", k.len(), batch * per_image)?;
    }
    if let Some(d) = &dw {
        check_len("conv weight gradient", d.len(), w.len())?;
    }
    if let Some(d) = &dx {
        check_len("conv input gradient", d.len(), batch * s.image_in)?;
    }
    if let (Some(simd), false) = (path, dense_direct(g)) {
        if let Some(dx) = dx {
            depthwise::input_grad(simd, g, dy, w, dx);
        }
        if let Some(dw) = dw {
            depthwise::weight_grad(simd, g, x, dy, batch, dw);
        }
        return Ok(());
    }
    if let Some(simd) = path {
        let c = direct_conv(g);
        // On small images most of the direct kernels' grid is padding: im2col is faster there
        // for both gradients (measured), the forward pass stays direct.
        if !direct::backward_pays(&c) {
            return conv2d_backward_on(None, g, x, batch, w, dy, kept, dw, dx);
        }
        if let Some(dx) = dx {
            direct::input_grad(simd, &c, dy, w, dx);
        }
        if let Some(dw) = dw {
            direct::weight_grad(simd, &c, x, dy, batch, dw);
        }
        return Ok(());
    }
    let want_dw = dw.is_some();
    let chunks = batch.div_ceil(CHUNK);
    let dx_chunks: Vec<Option<&mut [f32]>> = match dx {
        Some(d) => d.chunks_mut(CHUNK * s.image_in).map(Some).collect(),
        None => (0..chunks).map(|_| None).collect(),
    };
    let depthwise = s.cg == 1 && s.mg == 1;
    let taps = if depthwise {
        tap_offsets(g)
    } else {
        Vec::new()
    };
    let partials: Vec<Vec<f32>> = dx_chunks
        .into_par_iter()
        .enumerate()
        .map(|(c, mut dx)| {
            let images = chunk_images(c, batch);
            let nb = images.len();
            let xs = &x[images.start * s.image_in..][..nb * s.image_in];
            let dys = &dy[images.start * s.image_out..][..nb * s.image_out];
            let mut part = vec![0.0f32; if want_dw { w.len() } else { 0 }];
            if let Some(dx) = dx.as_deref_mut() {
                dx.fill(0.0);
            }
            if depthwise {
                for (b, (x, dy)) in xs
                    .chunks(s.image_in)
                    .zip(dys.chunks(s.image_out))
                    .enumerate()
                {
                    for c in 0..g.out_channels {
                        let plane = &x[c * s.plane..][..s.plane];
                        let wc = &w[c * s.taps_per_pixel..][..s.taps_per_pixel];
                        let dyc = &dy[c * s.pixels..][..s.pixels];
                        for (&d, taps) in dyc.iter().zip(taps.chunks(s.taps_per_pixel)) {
                            for (k, t) in taps.iter().enumerate() {
                                let Some(t) = t else { continue };
                                if want_dw {
                                    part[c * s.taps_per_pixel + k] += d * plane[*t as usize];
                                }
                                if let Some(dx) = dx.as_deref_mut() {
                                    dx[b * s.image_in + c * s.plane + *t as usize] += d * wc[k];
                                }
                            }
                        }
                    }
                }
                return part;
            }
            let n = nb * s.pixels;
            let mut scratch = Vec::new();
            let cols: &[f32] = match kept {
                Some(k) => &k[images.start * per_image..][..nb * per_image],
                None if want_dw => {
                    scratch.resize(nb * per_image, 0.0);
                    chunk_columns(g, &s, xs, nb, &mut scratch);
                    &scratch
                }
                None => &[],
            };
            let (mut rows, mut dcols) = (Vec::new(), Vec::new());
            for grp in 0..g.groups {
                chunk_rows(&s, dys, grp, nb, &mut rows);
                if want_dw {
                    // dW_g (mg × K) += dY_g (mg × nb·pixels) · columnsᵀ (nb·pixels × K).
                    gemm(
                        (s.mg, s.cols, n),
                        &mut part[grp * s.mg * s.cols..][..s.mg * s.cols],
                        (1, s.cols),
                        true,
                        &rows,
                        (1, n),
                        &cols[grp * s.cols * n..][..s.cols * n],
                        (n, 1),
                    );
                }
                if let Some(dx) = dx.as_deref_mut() {
                    // dColumns (K × nb·pixels) = W_gᵀ (K × mg) · dY_g (mg × nb·pixels).
                    dcols.resize(s.cols * n, 0.0);
                    gemm(
                        (s.cols, n, s.mg),
                        &mut dcols,
                        (1, n),
                        false,
                        &w[grp * s.mg * s.cols..][..s.mg * s.cols],
                        (s.cols, 1),
                        &rows,
                        (1, n),
                    );
                    for (b, image) in dx.chunks_mut(s.image_in).enumerate() {
                        col2im_add(g, &dcols[b * s.pixels..], n, grp * s.cg, s.cg, image);
                    }
                }
            }
            part
        })
        .collect();
    if let Some(dw) = dw {
        sum_in_order(&partials, dw);
    }
    Ok(())
}

/// `out = Σ parts`, added in order (the same bits on any number of threads).
fn sum_in_order(parts: &[Vec<f32>], out: &mut [f32]) {
    out.fill(0.0);
    for p in parts {
        out.iter_mut().zip(p).for_each(|(o, v)| *o += v);
    }
}

/// Max pooling (`g.groups` = channels, no weights) of `batch` images; `-inf` pads. Returns, per
/// output, the input index (within its image) of the maximum (the first one of equals).
pub fn max_pool2d_forward(
    g: &ConvGeometry,
    x: &[f32],
    batch: usize,
    y: &mut [f32],
) -> Result<Vec<u32>> {
    let s = sizes(g)?;
    check_len("pool input", x.len(), batch * s.image_in)?;
    check_len("pool output", y.len(), batch * s.image_out)?;
    let taps = tap_offsets(g);
    let mut argmax = vec![0u32; y.len()];
    y.par_chunks_mut(s.image_out)
        .zip(argmax.par_chunks_mut(s.image_out))
        .zip(x.par_chunks(s.image_in))
        .for_each(|((y, am), x)| {
            for c in 0..g.in_channels {
                let plane = &x[c * s.plane..][..s.plane];
                let out = y[c * s.pixels..][..s.pixels].iter_mut();
                let arg = am[c * s.pixels..][..s.pixels].iter_mut();
                for ((o, a), taps) in out.zip(arg).zip(taps.chunks(s.taps_per_pixel)) {
                    let mut best = (f32::NEG_INFINITY, None);
                    for t in taps.iter().flatten() {
                        let v = plane[*t as usize];
                        if best.1.is_none() || v > best.0 {
                            best = (v, Some(*t));
                        }
                    }
                    *o = best.0;
                    *a = (c * s.plane) as u32 + best.1.unwrap_or(0);
                }
            }
        });
    Ok(argmax)
}

/// The input gradient of max pooling from its output gradient and the forward's `argmax`.
pub fn max_pool2d_backward(
    g: &ConvGeometry,
    argmax: &[u32],
    dy: &[f32],
    batch: usize,
    dx: &mut [f32],
) -> Result<()> {
    let s = sizes(g)?;
    check_len("pool output gradient", dy.len(), batch * s.image_out)?;
    check_len("pool argmax", argmax.len(), batch * s.image_out)?;
    check_len("pool input gradient", dx.len(), batch * s.image_in)?;
    dx.par_chunks_mut(s.image_in)
        .zip(
            dy.par_chunks(s.image_out)
                .zip(argmax.par_chunks(s.image_out)),
        )
        .for_each(|(dx, (dy, am))| {
            dx.fill(0.0);
            for (&d, &a) in dy.iter().zip(am) {
                dx[a as usize] += d;
            }
        });
    Ok(())
}

/// A dense layer `y (batch × n) = alpha · a (batch × k) · op(w) [+ beta · c]`, `op(w)` = `w`
/// (`k × n`) or, with `trans_w`, `wᵀ` (`w` is `n × k`); `c` holds `n` values (one row,
/// broadcast) or `batch × n`.
#[allow(clippy::too_many_arguments)]
pub fn dense_forward(
    (batch, k, n): (usize, usize, usize),
    a: &[f32],
    w: &[f32],
    trans_w: bool,
    alpha: f32,
    c: Option<(&[f32], f32)>,
    y: &mut [f32],
) -> Result<()> {
    check_len("dense input", a.len(), batch * k)?;
    check_len("dense weight", w.len(), k * n)?;
    check_len("dense output", y.len(), batch * n)?;
    let w_strides = if trans_w { (k, 1) } else { (1, n) };
    gemm((batch, n, k), y, (1, n), false, a, (1, k), w, w_strides);
    if alpha != 1.0 {
        y.iter_mut().for_each(|v| *v *= alpha);
    }
    if let Some((c, beta)) = c {
        if c.len() == n {
            for row in y.chunks_mut(n) {
                row.iter_mut().zip(c).for_each(|(v, cv)| *v += beta * cv);
            }
        } else {
            check_len("dense bias", c.len(), batch * n)?;
            y.iter_mut().zip(c).for_each(|(v, cv)| *v += beta * cv);
        }
    }
    Ok(())
}

/// The gradients of [`dense_forward`] given `dy`: `dw` (the weight's layout) and `da`, each
/// when asked for (overwritten).
#[allow(clippy::too_many_arguments)]
pub fn dense_backward(
    (batch, k, n): (usize, usize, usize),
    a: &[f32],
    w: &[f32],
    trans_w: bool,
    alpha: f32,
    dy: &[f32],
    dw: Option<&mut [f32]>,
    da: Option<&mut [f32]>,
) -> Result<()> {
    check_len("dense input", a.len(), batch * k)?;
    check_len("dense weight", w.len(), k * n)?;
    check_len("dense output gradient", dy.len(), batch * n)?;
    if let Some(da) = da {
        check_len("dense input gradient", da.len(), batch * k)?;
        // da (batch × k) = dy (batch × n) · op(w)ᵀ (n × k).
        let wt_strides = if trans_w { (1, k) } else { (n, 1) };
        gemm((batch, k, n), da, (1, k), false, dy, (1, n), w, wt_strides);
        if alpha != 1.0 {
            da.iter_mut().for_each(|v| *v *= alpha);
        }
    }
    if let Some(dw) = dw {
        check_len("dense weight gradient", dw.len(), w.len())?;
        // d op(w) (k × n) = aᵀ (k × batch) · dy (batch × n), written in w's own layout.
        let dst_strides = if trans_w { (k, 1) } else { (1, n) };
        gemm((k, n, batch), dw, dst_strides, false, a, (k, 1), dy, (1, n));
        if alpha != 1.0 {
            dw.iter_mut().for_each(|v| *v *= alpha);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator of values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// The convolution computed from its definition (the oracle).
    fn conv_naive(g: &ConvGeometry, x: &[f32], batch: usize, w: &[f32]) -> Vec<f32> {
        let [h, wd] = g.in_hw;
        let [oh, ow] = g.out_hw();
        let (cg, mg) = (g.in_channels / g.groups, g.out_channels / g.groups);
        let [kh, kw] = g.kernel;
        let mut y = vec![0.0f32; batch * g.out_channels * oh * ow];
        for n in 0..batch {
            for m in 0..g.out_channels {
                let grp = m / mg;
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = 0.0f64;
                        for c in 0..cg {
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let iy = (oy * g.strides[0] + ky * g.dilations[0]) as isize
                                        - g.pads[0] as isize;
                                    let ix = (ox * g.strides[1] + kx * g.dilations[1]) as isize
                                        - g.pads[1] as isize;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                        continue;
                                    }
                                    let ci = grp * cg + c;
                                    let xv = x[((n * g.in_channels + ci) * h + iy as usize) * wd
                                        + ix as usize];
                                    let wv = w[((m * cg + c) * kh + ky) * kw + kx];
                                    acc += f64::from(xv) * f64::from(wv);
                                }
                            }
                        }
                        y[((n * g.out_channels + m) * oh + oy) * ow + ox] = acc as f32;
                    }
                }
            }
        }
        y
    }

    fn geometries() -> Vec<ConvGeometry> {
        let g = |c, hw: [usize; 2], m, k: [usize; 2], s, d, pads, groups| ConvGeometry {
            in_channels: c,
            in_hw: hw,
            out_channels: m,
            kernel: k,
            strides: [s, s],
            dilations: [d, d],
            pads,
            groups,
        };
        vec![
            g(3, [7, 6], 4, [3, 3], 1, 1, [1, 1, 1, 1], 1),
            g(4, [8, 8], 6, [3, 3], 2, 1, [1, 0, 0, 1], 2),
            g(5, [6, 7], 5, [3, 3], 1, 2, [2, 2, 2, 2], 5),
            g(6, [5, 5], 3, [1, 1], 2, 1, [0, 0, 0, 0], 1),
            g(6, [5, 4], 4, [1, 1], 1, 1, [0, 0, 0, 0], 2),
            g(3, [9, 9], 5, [3, 3], 3, 1, [0, 2, 1, 0], 1),
        ]
    }

    fn close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "at {i}: {x} vs {y}");
        }
    }

    /// Geometries the direct kernels take: odd channel counts (partial blocks), asymmetric
    /// pads, 1×1 and 5×3 kernels, grids mostly output (direct weight gradient) or not.
    fn direct_geometries() -> Vec<ConvGeometry> {
        let g = |c, hw: [usize; 2], m, k: [usize; 2], pads| ConvGeometry {
            in_channels: c,
            in_hw: hw,
            out_channels: m,
            kernel: k,
            strides: [1, 1],
            dilations: [1, 1],
            pads,
            groups: 1,
        };
        vec![
            g(3, [12, 14], 9, [3, 3], [1, 1, 1, 1]),
            g(5, [6, 9], 10, [5, 3], [0, 2, 4, 1]),
            g(17, [4, 4], 6, [3, 3], [1, 1, 1, 1]),
            g(6, [5, 4], 7, [1, 1], [0, 0, 0, 0]),
            g(2, [3, 3], 1, [3, 3], [2, 2, 2, 2]),
        ]
    }

    /// Depthwise geometries at strides 1 and 2 (EfficientNet's TF-"same" pads among them), a
    /// stride that differs between the axes, and one channel of a dense stride-2 convolution.
    fn depthwise_geometries() -> Vec<ConvGeometry> {
        let g = |c, hw: [usize; 2], k: [usize; 2], strides, pads| ConvGeometry {
            in_channels: c,
            in_hw: hw,
            out_channels: c,
            kernel: k,
            strides,
            dilations: [1, 1],
            pads,
            groups: c,
        };
        vec![
            g(5, [9, 9], [3, 3], [2, 2], [0, 0, 1, 1]),
            g(3, [7, 7], [5, 5], [1, 1], [2, 2, 2, 2]),
            g(4, [14, 13], [5, 5], [2, 2], [1, 1, 2, 2]),
            g(6, [6, 11], [3, 3], [1, 1], [1, 1, 1, 1]),
            g(2, [10, 9], [3, 2], [1, 2], [1, 0, 2, 1]),
            g(1, [8, 7], [3, 3], [2, 2], [1, 1, 1, 1]),
        ]
    }

    /// Every way this CPU can run `g`: im2col (`None`), and each direct kernel set that
    /// applies.
    fn paths(g: &ConvGeometry) -> Vec<Option<Simd>> {
        let mut all = vec![None];
        if dense_direct(g) || depthwise::applies(g) {
            all.extend(vector::available().into_iter().map(Some));
        }
        all
    }

    #[test]
    fn conv_forward_matches_the_definition() {
        for g in geometries()
            .into_iter()
            .chain(direct_geometries())
            .chain(depthwise_geometries())
        {
            let batch = 5;
            let x = values(batch * g.in_channels * g.in_hw[0] * g.in_hw[1], 1);
            let w = values(g.out_channels * g.cols(), 2);
            let bias = values(g.out_channels, 9);
            let [oh, ow] = g.out_hw();
            let mut want = conv_naive(&g, &x, batch, &w);
            for (i, v) in want.iter_mut().enumerate() {
                *v += bias[i / (oh * ow) % g.out_channels];
            }
            for path in paths(&g) {
                let mut y = vec![f32::NAN; batch * g.out_channels * oh * ow];
                conv2d_forward_on(path, &g, &x, batch, &w, Some(&bias), &mut y, None).unwrap();
                close(&y, &want, 1e-5);
            }
        }
    }

    /// The direct weight gradient (whether or not the size rule picks it) against im2col's.
    #[test]
    fn direct_weight_gradient_matches_im2col() {
        for g in direct_geometries() {
            let batch = 7;
            let x = values(batch * g.in_channels * g.in_hw[0] * g.in_hw[1], 10);
            let w = values(g.out_channels * g.cols(), 11);
            let [oh, ow] = g.out_hw();
            let dy = values(batch * g.out_channels * oh * ow, 12);
            let mut want = vec![0.0; w.len()];
            conv2d_backward_on(None, &g, &x, batch, &w, &dy, None, Some(&mut want), None).unwrap();
            for simd in vector::available() {
                let mut dw = vec![f32::NAN; w.len()];
                direct::weight_grad(simd, &direct_conv(&g), &x, &dy, batch, &mut dw);
                close(&dw, &want, 1e-4);
            }
        }
    }

    /// The gradients against finite differences of `L = Σ dy · conv(x, w)`, which is linear
    /// in each argument: the difference quotient is exact up to rounding.
    #[test]
    fn conv_gradients_match_the_linear_form() {
        for (g, path) in geometries()
            .into_iter()
            .chain(direct_geometries())
            .chain(depthwise_geometries())
            .flat_map(|g| paths(&g).into_iter().map(move |p| (g, p)))
        {
            let batch = 6;
            let x = values(batch * g.in_channels * g.in_hw[0] * g.in_hw[1], 3);
            let w = values(g.out_channels * g.cols(), 4);
            let [oh, ow] = g.out_hw();
            let dy = values(batch * g.out_channels * oh * ow, 5);
            let mut dw = vec![f32::NAN; w.len()];
            let mut dx = vec![f32::NAN; x.len()];
            conv2d_backward_on(
                path,
                &g,
                &x,
                batch,
                &w,
                &dy,
                None,
                Some(&mut dw),
                Some(&mut dx),
            )
            .unwrap();
            // With the forward's kept columns: the same weight gradient.
            let mut y = vec![0.0; dy.len()];
            let mut kept = vec![7.0; 3];
            if conv2d_forward_on(path, &g, &x, batch, &w, None, &mut y, Some(&mut kept)).unwrap() {
                let mut dw2 = vec![0.0; w.len()];
                conv2d_backward_on(
                    path,
                    &g,
                    &x,
                    batch,
                    &w,
                    &dy,
                    Some(&kept),
                    Some(&mut dw2),
                    None,
                )
                .unwrap();
                assert_eq!(dw, dw2);
            }
            let loss = |x: &[f32], w: &[f32]| -> f64 {
                conv_naive(&g, x, batch, w)
                    .iter()
                    .zip(&dy)
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum()
            };
            let base = loss(&x, &w);
            for i in (0..w.len()).step_by(7) {
                let mut w2 = w.clone();
                w2[i] += 1.0;
                let fd = (loss(&x, &w2) - base) as f32;
                assert!(
                    (fd - dw[i]).abs() < 1e-3 * (1.0 + fd.abs()),
                    "dw[{i}] {} vs {fd}",
                    dw[i]
                );
            }
            for i in (0..x.len()).step_by(11) {
                let mut x2 = x.clone();
                x2[i] += 1.0;
                let fd = (loss(&x2, &w) - base) as f32;
                assert!(
                    (fd - dx[i]).abs() < 1e-3 * (1.0 + fd.abs()),
                    "dx[{i}] {} vs {fd}",
                    dx[i]
                );
            }
        }
    }

    #[test]
    fn gradients_are_the_same_on_one_and_many_threads() {
        for g in [
            geometries()[0],
            geometries()[1],
            direct_geometries()[0],
            depthwise_geometries()[2],
        ] {
            gradients_on_one_and_many_threads(g);
        }
    }

    fn gradients_on_one_and_many_threads(g: ConvGeometry) {
        let batch = 11;
        let x = values(batch * g.in_channels * g.in_hw[0] * g.in_hw[1], 6);
        let w = values(g.out_channels * g.cols(), 7);
        let [oh, ow] = g.out_hw();
        let dy = values(batch * g.out_channels * oh * ow, 8);
        let run = |threads| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut dw = vec![0.0; w.len()];
                let mut dx = vec![0.0; x.len()];
                conv2d_backward(&g, &x, batch, &w, &dy, None, Some(&mut dw), Some(&mut dx))
                    .unwrap();
                (dw, dx)
            })
        };
        assert_eq!(run(1), run(3));
    }

    #[test]
    fn max_pool_routes_the_gradient_to_the_maximum() {
        let g = ConvGeometry {
            in_channels: 2,
            in_hw: [4, 4],
            out_channels: 2,
            kernel: [2, 2],
            strides: [2, 2],
            dilations: [1, 1],
            pads: [0, 0, 0, 0],
            groups: 2,
        };
        let x: Vec<f32> = (0..32).map(|i| ((i * 7) % 13) as f32).collect();
        let mut y = vec![0.0; 8];
        let am = max_pool2d_forward(&g, &x, 1, &mut y).unwrap();
        for (o, &a) in y.iter().zip(&am) {
            assert_eq!(*o, x[a as usize]);
        }
        let mut dx = vec![0.0; 32];
        max_pool2d_backward(&g, &am, &[1.0; 8], 1, &mut dx).unwrap();
        assert_eq!(dx.iter().sum::<f32>(), 8.0);
        assert!(am.iter().all(|&a| dx[a as usize] == 1.0));
    }

    #[test]
    fn dense_gradients_match_the_linear_form() {
        let (batch, k, n) = (3, 5, 4);
        let a = values(batch * k, 9);
        let dy = values(batch * n, 10);
        for trans in [false, true] {
            let w = values(k * n, 11);
            let mut y = vec![0.0; batch * n];
            dense_forward((batch, k, n), &a, &w, trans, 0.5, None, &mut y).unwrap();
            let at = |r: usize, c: usize| if trans { w[c * k + r] } else { w[r * n + c] };
            for b in 0..batch {
                for j in 0..n {
                    let want: f32 = (0..k).map(|i| a[b * k + i] * at(i, j)).sum::<f32>() * 0.5;
                    assert!((y[b * n + j] - want).abs() < 1e-5);
                }
            }
            let (mut dw, mut da) = (vec![0.0; w.len()], vec![0.0; a.len()]);
            dense_backward(
                (batch, k, n),
                &a,
                &w,
                trans,
                0.5,
                &dy,
                Some(&mut dw),
                Some(&mut da),
            )
            .unwrap();
            for i in 0..k {
                for j in 0..n {
                    let want: f32 = (0..batch)
                        .map(|b| a[b * k + i] * dy[b * n + j])
                        .sum::<f32>()
                        * 0.5;
                    let got = if trans { dw[j * k + i] } else { dw[i * n + j] };
                    assert!((got - want).abs() < 1e-5);
                }
            }
            for b in 0..batch {
                for i in 0..k {
                    let want: f32 = (0..n).map(|j| dy[b * n + j] * at(i, j)).sum::<f32>() * 0.5;
                    assert!((da[b * k + i] - want).abs() < 1e-5);
                }
            }
        }
    }
}
