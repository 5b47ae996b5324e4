//! Direct stride-1 convolutions for block reconstruction: the forward pass, the input gradient
//! (the same kernel on flipped weights) and the weight gradient, with no im2col columns.
//!
//! Each image is copied once into zero-padded planes `wp = w + left + right` wide. Output
//! pixel `(oy, ox)` is computed at grid position `q = oy · wp + ox`, and under tap `(ky, kx)`
//! it reads the padded plane at `q + ky · wp + kx`: for a run of consecutive `q` every tap is
//! one contiguous slice, a vector load. The grid's columns `ox ≥ ow` are computed and dropped.
//! The loops are over fixed-size arrays, which the compiler turns into AVX-512 or AVX2 FMAs
//! inside functions compiled for those instruction sets and chosen at run time; where neither
//! is present, [`crate::vector::simd`] is `None` and the caller keeps im2col.

use rayon::prelude::*;

use crate::train::CHUNK;
use crate::vector::Simd;

/// Grid positions per channel are rounded up to this (the widest vector, in floats).
const ALIGN: usize = 16;
/// Output channels per block of the forward kernel.
const MB: usize = 8;
/// Output and input channels per block of the weight gradient.
const WB: usize = 4;

/// Where one image's padded planes and its output grid lie.
struct Grid {
    /// Unpadded input height and width.
    h: usize,
    w: usize,
    /// Top and left padding.
    top: usize,
    left: usize,
    /// Padded width: the grid's row length.
    wp: usize,
    /// Output height and width.
    oh: usize,
    ow: usize,
    /// Grid positions computed per channel: `oh · wp`, rounded up to [`ALIGN`].
    span: usize,
    /// Floats per padded plane: every tap of every computed position is inside.
    plane: usize,
    /// Tap offsets `ky · wp + kx`, in weight order.
    offs: Vec<usize>,
}

impl Grid {
    fn new(in_hw: [usize; 2], kernel: [usize; 2], pads: [usize; 4]) -> Grid {
        let [h, w] = in_hw;
        let [kh, kw] = kernel;
        let (hp, wp) = (h + pads[0] + pads[2], w + pads[1] + pads[3]);
        let (oh, ow) = (hp + 1 - kh, wp + 1 - kw);
        let span = (oh * wp).next_multiple_of(ALIGN);
        let reach = span + (kh - 1) * wp + kw - 1;
        Grid {
            h,
            w,
            top: pads[0],
            left: pads[1],
            wp,
            oh,
            ow,
            span,
            plane: reach.max(hp * wp).next_multiple_of(ALIGN),
            offs: (0..kh)
                .flat_map(|ky| (0..kw).map(move |kx| ky * wp + kx))
                .collect(),
        }
    }

    /// Copies the planes of one image into `xp`, planes of [`Grid::plane`] whose padding is
    /// already zero (only the interior is written, so a buffer is reused as it is).
    fn pad(&self, image: &[f32], xp: &mut [f32]) {
        for (src, dst) in image
            .chunks_exact(self.h * self.w)
            .zip(xp.chunks_exact_mut(self.plane))
        {
            self.pad_plane(src, dst);
        }
    }

    /// One input plane into its padded plane (padding already zero).
    fn pad_plane(&self, src: &[f32], dst: &mut [f32]) {
        for (iy, row) in src.chunks_exact(self.w).enumerate() {
            dst[(iy + self.top) * self.wp + self.left..][..self.w].copy_from_slice(row);
        }
    }

    /// One output plane onto the grid (zero off the output).
    fn place_plane(&self, src: &[f32], dst: &mut [f32]) {
        for (oy, row) in src.chunks_exact(self.ow).enumerate() {
            dst[oy * self.wp..][..self.ow].copy_from_slice(row);
        }
    }
}

/// Whether the direct kernels take convolution `(kernel, strides, dilations, pads, groups)`:
/// stride and dilation 1, one group, each pad smaller than the kernel along its axis (so that
/// the input gradient is a convolution of the same kind).
pub(crate) fn applies(
    kernel: [usize; 2],
    strides: [usize; 2],
    dilations: [usize; 2],
    pads: [usize; 4],
    groups: usize,
) -> bool {
    strides == [1, 1]
        && dilations == [1, 1]
        && groups == 1
        && pads[0] < kernel[0]
        && pads[2] < kernel[0]
        && pads[1] < kernel[1]
        && pads[3] < kernel[1]
}

/// One convolution as the direct kernels see it.
pub(crate) struct Conv {
    pub in_channels: usize,
    pub in_hw: [usize; 2],
    pub out_channels: usize,
    pub kernel: [usize; 2],
    pub pads: [usize; 4],
}

/// `y = conv(x, w) + bias` for `batch` images (NCHW; `w` is `out × in × kh × kw`); the
/// caller has checked [`applies`] and the lengths.
pub(crate) fn forward(
    simd: Simd,
    c: &Conv,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let grid = Grid::new(c.in_hw, c.kernel, c.pads);
    let taps = grid.offs.len();
    let blocks = c.out_channels.div_ceil(MB);
    // Per block of MB output channels: [input channel][tap][MB], zero past the last channel.
    let mut wblk = vec![0.0f32; blocks * c.in_channels * taps * MB];
    for (m, row) in w.chunks_exact(c.in_channels * taps).enumerate() {
        let (b, mi) = (m / MB, m % MB);
        for (k, &v) in row.iter().enumerate() {
            wblk[(b * c.in_channels * taps + k) * MB + mi] = v;
        }
    }
    let (image_in, image_out) = (
        c.in_channels * c.in_hw[0] * c.in_hw[1],
        c.out_channels * grid.oh * grid.ow,
    );
    y.par_chunks_mut(CHUNK * image_out)
        .zip(x.par_chunks(CHUNK * image_in))
        .for_each_init(
            || {
                let xp = vec![0.0f32; c.in_channels * grid.plane];
                (xp, vec![0.0f32; blocks * MB * grid.span])
            },
            |(xp, out), (y, x)| {
                for (y, x) in y.chunks_exact_mut(image_out).zip(x.chunks_exact(image_in)) {
                    grid.pad(x, xp);
                    conv_image(simd, &grid, xp, &wblk, blocks, out);
                    for (m, plane) in y.chunks_exact_mut(grid.oh * grid.ow).enumerate() {
                        let b = bias.map_or(0.0, |b| b[m]);
                        for (oy, row) in plane.chunks_exact_mut(grid.ow).enumerate() {
                            let src = &out[m * grid.span + oy * grid.wp..][..grid.ow];
                            row.iter_mut().zip(src).for_each(|(d, s)| *d = s + b);
                        }
                    }
                }
            },
        );
}

/// `dx` (overwritten) of a convolution [`applies`] takes, from its output gradient `dy`: the
/// correlation of `dy` with the weights transposed and flipped, itself a stride-1 convolution.
pub(crate) fn input_grad(simd: Simd, c: &Conv, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    let [kh, kw] = c.kernel;
    let taps = kh * kw;
    let mut flipped = vec![0.0f32; w.len()];
    for m in 0..c.out_channels {
        for ch in 0..c.in_channels {
            let src = &w[(m * c.in_channels + ch) * taps..][..taps];
            let dst = &mut flipped[(ch * c.out_channels + m) * taps..][..taps];
            dst.iter_mut()
                .zip(src.iter().rev())
                .for_each(|(d, s)| *d = *s);
        }
    }
    let grid = Grid::new(c.in_hw, c.kernel, c.pads);
    let transposed = Conv {
        in_channels: c.out_channels,
        in_hw: [grid.oh, grid.ow],
        out_channels: c.in_channels,
        kernel: c.kernel,
        pads: [
            kh - 1 - c.pads[0],
            kw - 1 - c.pads[1],
            kh - 1 - c.pads[2],
            kw - 1 - c.pads[3],
        ],
    };
    forward(simd, &transposed, dy, &flipped, None, dx);
}

/// Whether [`weight_grad`] and [`input_grad`] beat im2col on this convolution: they compute
/// the whole grid, and on small images much of it is padding.
pub(crate) fn backward_pays(c: &Conv) -> bool {
    let grid = Grid::new(c.in_hw, c.kernel, c.pads);
    // Measured on fashion-resnet's 3×3 layers: ahead at 14² (87.5 % of the grid is output)
    // and 7² (77 %), behind at 4² (50 %).
    grid.oh * grid.ow * 10 >= grid.span * 7
}

/// The weight gradient (`out × in × kh × kw`, overwritten) of the `batch` images `x` with
/// output gradient `dy`. Each weight's sum runs over every image and grid position in one
/// fixed order inside one task (the tasks are blocks of output channels), so the result is
/// the same on any number of threads.
pub(crate) fn weight_grad(
    simd: Simd,
    c: &Conv,
    x: &[f32],
    dy: &[f32],
    batch: usize,
    dw: &mut [f32],
) {
    let grid = Grid::new(c.in_hw, c.kernel, c.pads);
    let taps = grid.offs.len();
    let m_pad = c.out_channels.next_multiple_of(WB);
    let c_pad = c.in_channels.next_multiple_of(WB);
    let image_in = c.in_channels * c.in_hw[0] * c.in_hw[1];
    let image_out = c.out_channels * grid.oh * grid.ow;
    // Per channel, every image's padded plane in turn (and per output channel every image's
    // gridded gradient, in planes of the same length): the images of a channel are one
    // stretch of memory. The channels are rounded up to whole blocks of zero planes.
    let (plane, in_plane, out_plane) = (grid.plane, c.in_hw[0] * c.in_hw[1], grid.oh * grid.ow);
    let mut xs = vec![0.0f32; c_pad * batch * plane];
    let mut dys = vec![0.0f32; m_pad * batch * plane];
    xs.par_chunks_mut(batch * plane)
        .take(c.in_channels)
        .enumerate()
        .for_each(|(ch, planes)| {
            for (b, dst) in planes.chunks_exact_mut(plane).enumerate() {
                grid.pad_plane(&x[b * image_in + ch * in_plane..][..in_plane], dst);
            }
        });
    dys.par_chunks_mut(batch * plane)
        .take(c.out_channels)
        .enumerate()
        .for_each(|(m, planes)| {
            for (b, dst) in planes.chunks_exact_mut(plane).enumerate() {
                grid.place_plane(&dy[b * image_out + m * out_plane..][..out_plane], dst);
            }
        });
    let lanes = match simd {
        Simd::Avx512 => 16,
        Simd::Avx2 => 8,
    };
    let starts: Vec<usize> = (0..batch)
        .flat_map(|b| {
            (0..grid.span)
                .step_by(lanes)
                .map(move |q| b * grid.plane + q)
        })
        .collect();
    // What makes the kernel's reads safe: each vector inside its image's span.
    assert!(starts.iter().all(|&q| q % grid.plane + lanes <= grid.span));
    let shape = Shape {
        grid: &grid,
        nb: batch,
        starts: &starts,
    };
    let row = c.in_channels * taps;
    dw.par_chunks_mut(WB * row)
        .enumerate()
        .for_each(|(blk, rows)| {
            let m0 = blk * WB;
            for c0 in (0..c_pad).step_by(WB) {
                for (t, &off) in grid.offs.iter().enumerate() {
                    let sums = tap_sums(simd, &shape, &xs, &dys, m0, c0, off);
                    for (mi, dst) in rows.chunks_exact_mut(row).enumerate() {
                        for (ci, &v) in sums[mi].iter().enumerate() {
                            if c0 + ci < c.in_channels {
                                dst[(c0 + ci) * taps + t] = v;
                            }
                        }
                    }
                }
            }
        });
}

/// The padded buffers [`weight_grad`] sums over: per channel, `nb` planes of the grid's.
struct Shape<'a> {
    grid: &'a Grid,
    nb: usize,
    /// The first grid position of every vector of every image, for `LANES` of the kernel.
    starts: &'a [usize],
}

fn conv_image(simd: Simd, grid: &Grid, xp: &[f32], wblk: &[f32], blocks: usize, out: &mut [f32]) {
    match simd {
        // SAFETY: `simd` says the CPU has the instructions these functions are compiled for.
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => unsafe { x86::conv_image_avx512(grid, xp, wblk, blocks, out) },
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => unsafe { x86::conv_image_avx2(grid, xp, wblk, blocks, out) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("no direct kernels off x86-64"),
    }
}

fn tap_sums(
    simd: Simd,
    s: &Shape,
    xs: &[f32],
    dys: &[f32],
    m0: usize,
    c0: usize,
    off: usize,
) -> [[f32; WB]; WB] {
    match simd {
        // SAFETY: as in `conv_image`.
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => unsafe { x86::tap_sums_avx512(s, xs, dys, m0, c0, off) },
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => unsafe { x86::tap_sums_avx2(s, xs, dys, m0, c0, off) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("no direct kernels off x86-64"),
    }
}

/// The kernels, written once over a vector type and compiled for AVX-512 and for AVX2.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Grid, Shape, MB, WB};
    use crate::vector::x86::Vector;

    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn conv_image_avx512(
        grid: &Grid,
        xp: &[f32],
        wblk: &[f32],
        blocks: usize,
        out: &mut [f32],
    ) {
        conv_image::<__m512>(grid, xp, wblk, blocks, out)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn conv_image_avx2(
        grid: &Grid,
        xp: &[f32],
        wblk: &[f32],
        blocks: usize,
        out: &mut [f32],
    ) {
        conv_image::<__m256>(grid, xp, wblk, blocks, out)
    }

    /// One image: `out[m · span + q]` for every block of [`MB`] output channels and grid
    /// position `q`, `LANES` positions at a time in `MB` vector accumulators. `xp` holds the
    /// image's padded planes, `wblk` per block `[input channel][tap][MB]` weights.
    #[inline(always)]
    unsafe fn conv_image<V: Vector>(
        grid: &Grid,
        xp: &[f32],
        wblk: &[f32],
        blocks: usize,
        out: &mut [f32],
    ) {
        let taps = grid.offs.len();
        let cin = xp.len() / grid.plane;
        assert!(grid.span.is_multiple_of(V::LANES) && wblk.len() >= blocks * cin * taps * MB);
        assert!(out.len() >= blocks * MB * grid.span);
        for b in 0..blocks {
            let wb = &wblk[b * cin * taps * MB..][..cin * taps * MB];
            for q0 in (0..grid.span).step_by(V::LANES) {
                let mut acc = [V::zero(); MB];
                for (ch, wc) in wb.chunks_exact(taps * MB).enumerate() {
                    // Every read below is inside this plane: q0 + off + LANES ≤ plane.
                    let xc = xp[ch * grid.plane..][..grid.plane].as_ptr().add(q0);
                    for (&off, ws) in grid.offs.iter().zip(wc.chunks_exact(MB)) {
                        let xv = V::load(xc.add(off));
                        for (a, &wv) in acc.iter_mut().zip(ws) {
                            *a = V::fma(xv, V::splat(wv), *a);
                        }
                    }
                }
                for (mi, a) in acc.iter().enumerate() {
                    a.store(out.as_mut_ptr().add((b * MB + mi) * grid.span + q0));
                }
            }
        }
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn tap_sums_avx512(
        s: &Shape,
        xs: &[f32],
        dys: &[f32],
        m0: usize,
        c0: usize,
        off: usize,
    ) -> [[f32; WB]; WB] {
        tap_sums::<__m512>(s, xs, dys, m0, c0, off)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tap_sums_avx2(
        s: &Shape,
        xs: &[f32],
        dys: &[f32],
        m0: usize,
        c0: usize,
        off: usize,
    ) -> [[f32; WB]; WB] {
        tap_sums::<__m256>(s, xs, dys, m0, c0, off)
    }

    /// `Σ_images Σ_q dy[m][q] · x[c][q + off]` for output channels `m0..m0 + WB` and input
    /// channels `c0..c0 + WB`: WB² vector accumulators, each summed across its lanes at the
    /// end.
    #[inline(always)]
    unsafe fn tap_sums<V: Vector>(
        s: &Shape,
        xs: &[f32],
        dys: &[f32],
        m0: usize,
        c0: usize,
        off: usize,
    ) -> [[f32; WB]; WB] {
        let g = s.grid;
        let rows = s.nb * g.plane;
        assert!(g.span.is_multiple_of(V::LANES) && off + g.span <= g.plane);
        assert!(s.starts.len() * V::LANES == s.nb * g.span);
        // The slices bound every read: channel i's planes, and q + off < plane in each.
        let dy = dys[m0 * rows..][..WB * rows].as_ptr();
        let x = xs[c0 * rows..][..WB * rows].as_ptr().add(off);
        let mut acc = [[V::zero(); WB]; WB];
        // One flat loop over every image's vectors (a nested loop over images made the
        // compiler keep the accumulators in memory).
        for &q in s.starts {
            let (mut d, mut v) = ([V::zero(); WB], [V::zero(); WB]);
            for i in 0..WB {
                d[i] = V::load(dy.add(i * rows + q));
                v[i] = V::load(x.add(i * rows + q));
            }
            for (am, &dm) in acc.iter_mut().zip(&d) {
                for (a, &vc) in am.iter_mut().zip(&v) {
                    *a = V::fma(dm, vc, *a);
                }
            }
        }
        // Plain loops, not closures: a closure would not inherit the target features, and
        // the intrinsics inside it would become calls.
        let mut sums = [[0.0f32; WB]; WB];
        for (sm, am) in sums.iter_mut().zip(&acc) {
            for (s, a) in sm.iter_mut().zip(am) {
                *s = a.sum();
            }
        }
        sums
    }
}
