//! Depthwise convolutions (one input channel per output channel) for block reconstruction, at
//! any stride: the forward pass, the input gradient and the weight gradient, vectorised along
//! the output row.
//!
//! Each input plane is copied once into its zero-padded form split into `sh · sw` phase
//! planes: phase `(a, b)` holds the padded pixels whose row is `a` modulo the vertical stride
//! and whose column is `b` modulo the horizontal one, `wq = ⌈wp / sw⌉` per row. Output pixel
//! `(oy, ox)` sits at grid position `q = oy · wq + ox`, and under tap `(ky, kx)` it reads phase
//! `(ky mod sh, kx mod sw)` at `q + ⌊ky / sh⌋ · wq + ⌊kx / sw⌋`: for a run of consecutive `q`
//! one contiguous slice, a vector load, whatever the stride. The grid's columns `ox ≥ ow` are
//! computed and dropped. The input gradient scatters the other way: each tap adds
//! `w · dy` onto its slice of the phase planes, which are then read back into the plane.

use rayon::prelude::*;

use crate::vector::Simd;
use crate::ConvGeometry;

/// Grid positions per plane are rounded up to this (the widest vector, in floats).
const ALIGN: usize = 16;

/// Whether these kernels take `g`: depthwise (as many groups as input and output channels),
/// dilation 1.
pub(crate) fn applies(g: &ConvGeometry) -> bool {
    g.groups == g.in_channels && g.out_channels == g.in_channels && g.dilations == [1, 1]
}

/// Where one plane's phases and its output grid lie.
struct Phases {
    /// Unpadded input height and width.
    h: usize,
    w: usize,
    /// Top and left padding.
    top: usize,
    left: usize,
    /// Strides.
    sh: usize,
    sw: usize,
    /// Row length of every phase plane and of the output grid.
    wq: usize,
    /// Output height and width.
    oh: usize,
    ow: usize,
    /// Grid positions computed per plane: `oh · wq`, rounded up to [`ALIGN`].
    span: usize,
    /// Floats per phase plane: every tap of every computed position is inside.
    plane: usize,
    /// Per tap, in weight order, where it reads in the phase planes: `phase · plane + offset`.
    taps: Vec<usize>,
}

impl Phases {
    fn new(g: &ConvGeometry) -> Phases {
        let [h, w] = g.in_hw;
        let [kh, kw] = g.kernel;
        let [sh, sw] = g.strides;
        let (hp, wp) = (h + g.pads[0] + g.pads[2], w + g.pads[1] + g.pads[3]);
        let [oh, ow] = g.out_hw();
        let (hq, wq) = (hp.div_ceil(sh), wp.div_ceil(sw));
        let span = (oh * wq).next_multiple_of(ALIGN);
        let reach = span + (kh - 1) / sh * wq + (kw - 1) / sw;
        let plane = reach.max(hq * wq).next_multiple_of(ALIGN);
        let taps = (0..kh)
            .flat_map(|ky| {
                (0..kw).map(move |kx| {
                    let phase = (ky % sh) * sw + kx % sw;
                    phase * plane + ky / sh * wq + kx / sw
                })
            })
            .collect();
        Phases {
            h,
            w,
            top: g.pads[0],
            left: g.pads[1],
            sh,
            sw,
            wq,
            oh,
            ow,
            span,
            plane,
            taps,
        }
    }

    /// Floats of all phase planes of one input plane.
    fn len(&self) -> usize {
        self.sh * self.sw * self.plane
    }

    /// Where input pixel `(iy, ix)` lies in the phase planes.
    fn at(&self, iy: usize, ix: usize) -> usize {
        let (r, c) = (iy + self.top, ix + self.left);
        ((r % self.sh) * self.sw + c % self.sw) * self.plane + r / self.sh * self.wq + c / self.sw
    }

    /// One input plane into its phase planes, whose padding is already zero (only the
    /// interior is written, so a buffer is reused as it is).
    fn split(&self, src: &[f32], dst: &mut [f32]) {
        for (iy, row) in src.chunks_exact(self.w).enumerate() {
            if self.sw == 1 {
                dst[self.at(iy, 0)..][..self.w].copy_from_slice(row);
            } else {
                // Columns p, p + sw, … of a row sit side by side in phase column p.
                for p in 0..self.sw.min(self.w) {
                    let phase = row.iter().skip(p).step_by(self.sw);
                    dst[self.at(iy, p)..]
                        .iter_mut()
                        .zip(phase)
                        .for_each(|(d, &v)| *d = v);
                }
            }
        }
    }

    /// The inverse of [`Phases::split`]: the interior of the phase planes into one plane.
    fn join(&self, src: &[f32], dst: &mut [f32]) {
        for (iy, row) in dst.chunks_exact_mut(self.w).enumerate() {
            if self.sw == 1 {
                row.copy_from_slice(&src[self.at(iy, 0)..][..self.w]);
            } else {
                for p in 0..self.sw.min(self.w) {
                    let phase = row.iter_mut().skip(p).step_by(self.sw);
                    phase.zip(&src[self.at(iy, p)..]).for_each(|(d, &v)| *d = v);
                }
            }
        }
    }

    /// One output plane onto the grid (whose positions off the output stay zero).
    fn place(&self, src: &[f32], dst: &mut [f32]) {
        for (oy, row) in src.chunks_exact(self.ow).enumerate() {
            dst[oy * self.wq..][..self.ow].copy_from_slice(row);
        }
    }

    /// The output pixels of the grid into one output plane, plus `bias`.
    fn take(&self, src: &[f32], dst: &mut [f32], bias: f32) {
        for (oy, row) in dst.chunks_exact_mut(self.ow).enumerate() {
            let grid = &src[oy * self.wq..][..self.ow];
            row.iter_mut().zip(grid).for_each(|(d, s)| *d = s + bias);
        }
    }
}

/// `y = conv(x, w) + bias` for `batch` images (NCHW; `w` is `channels × kh × kw`); the caller
/// has checked [`applies`] and the lengths.
pub(crate) fn forward(
    simd: Simd,
    g: &ConvGeometry,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let ph = Phases::new(g);
    let (channels, taps) = (g.in_channels, ph.taps.len());
    let (plane_in, plane_out) = (ph.h * ph.w, ph.oh * ph.ow);
    y.par_chunks_mut(plane_out)
        .zip(x.par_chunks(plane_in))
        .enumerate()
        .for_each_init(
            || (vec![0.0f32; ph.len()], vec![0.0f32; ph.span]),
            |(xp, out), (i, (y, x))| {
                let c = i % channels;
                ph.split(x, xp);
                correlate(simd, &ph, xp, &w[c * taps..][..taps], out);
                ph.take(out, y, bias.map_or(0.0, |b| b[c]));
            },
        );
}

/// `dx` (overwritten) from the output gradient `dy`.
pub(crate) fn input_grad(simd: Simd, g: &ConvGeometry, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    let ph = Phases::new(g);
    let (channels, taps) = (g.in_channels, ph.taps.len());
    let (plane_in, plane_out) = (ph.h * ph.w, ph.oh * ph.ow);
    dx.par_chunks_mut(plane_in)
        .zip(dy.par_chunks(plane_out))
        .enumerate()
        .for_each_init(
            || (vec![0.0f32; ph.span], vec![0.0f32; ph.len()]),
            |(grid, dxp), (i, (dx, dy))| {
                let c = i % channels;
                ph.place(dy, grid);
                dxp.fill(0.0);
                scatter(simd, &ph, grid, &w[c * taps..][..taps], dxp);
                ph.join(dxp, dx);
            },
        );
}

/// The weight gradient (`channels × kh × kw`, overwritten) of the `batch` images `x` with
/// output gradient `dy`. One task per channel sums its taps over the images in order, so the
/// result is the same on any number of threads.
pub(crate) fn weight_grad(
    simd: Simd,
    g: &ConvGeometry,
    x: &[f32],
    dy: &[f32],
    batch: usize,
    dw: &mut [f32],
) {
    let ph = Phases::new(g);
    let (channels, taps) = (g.in_channels, ph.taps.len());
    let (plane_in, plane_out) = (ph.h * ph.w, ph.oh * ph.ow);
    dw.par_chunks_mut(taps).enumerate().for_each_init(
        || {
            let lanes = vec![0.0f32; taps * ALIGN];
            (vec![0.0f32; ph.len()], vec![0.0f32; ph.span], lanes)
        },
        |(xp, grid, lanes), (c, dw)| {
            lanes.fill(0.0);
            for b in 0..batch {
                let at = b * channels + c;
                ph.split(&x[at * plane_in..][..plane_in], xp);
                ph.place(&dy[at * plane_out..][..plane_out], grid);
                tap_lanes(simd, &ph, xp, grid, lanes);
            }
            for (d, l) in dw.iter_mut().zip(lanes.chunks_exact(ALIGN)) {
                *d = lanes_sum(simd, l);
            }
        },
    );
}

fn correlate(simd: Simd, ph: &Phases, xp: &[f32], w: &[f32], out: &mut [f32]) {
    match simd {
        // SAFETY: `simd` says the CPU has the instructions these functions are compiled for.
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => unsafe { x86::correlate_avx512(ph, xp, w, out) },
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => unsafe { x86::correlate_avx2(ph, xp, w, out) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("no depthwise kernels off x86-64"),
    }
}

fn scatter(simd: Simd, ph: &Phases, grid: &[f32], w: &[f32], dxp: &mut [f32]) {
    match simd {
        // SAFETY: as in `correlate`.
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => unsafe { x86::scatter_avx512(ph, grid, w, dxp) },
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => unsafe { x86::scatter_avx2(ph, grid, w, dxp) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("no depthwise kernels off x86-64"),
    }
}

fn tap_lanes(simd: Simd, ph: &Phases, xp: &[f32], grid: &[f32], lanes: &mut [f32]) {
    match simd {
        // SAFETY: as in `correlate`.
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => unsafe { x86::tap_lanes_avx512(ph, xp, grid, lanes) },
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => unsafe { x86::tap_lanes_avx2(ph, xp, grid, lanes) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("no depthwise kernels off x86-64"),
    }
}

/// The sum of one tap's lane accumulators from [`tap_lanes`], in the vector type's fixed order.
fn lanes_sum(simd: Simd, lanes: &[f32]) -> f32 {
    match simd {
        // SAFETY: as in `correlate`.
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => unsafe { x86::lanes_sum_avx512(lanes) },
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => unsafe { x86::lanes_sum_avx2(lanes) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("no depthwise kernels off x86-64"),
    }
}

/// The kernels, written once over a vector type and compiled for AVX-512 and for AVX2.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Phases, ALIGN};
    use crate::vector::x86::Vector;

    /// Vectors of grid positions per step: independent accumulators that hide the FMA latency.
    const UNROLL: usize = 4;

    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn correlate_avx512(ph: &Phases, xp: &[f32], w: &[f32], out: &mut [f32]) {
        correlate::<__m512>(ph, xp, w, out)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn correlate_avx2(ph: &Phases, xp: &[f32], w: &[f32], out: &mut [f32]) {
        correlate::<__m256>(ph, xp, w, out)
    }

    /// `out[q] = Σ_t w[t] · xp[tap_t + q]` for every grid position `q`.
    #[inline(always)]
    unsafe fn correlate<V: Vector>(ph: &Phases, xp: &[f32], w: &[f32], out: &mut [f32]) {
        assert!(ph.span.is_multiple_of(V::LANES) && out.len() >= ph.span);
        assert!(w.len() == ph.taps.len() && ph.taps.iter().all(|&t| t + ph.span <= xp.len()));
        let (x, o) = (xp.as_ptr(), out.as_mut_ptr());
        let mut q = 0;
        while q + UNROLL * V::LANES <= ph.span {
            let mut acc = [V::zero(); UNROLL];
            for (&t, &wv) in ph.taps.iter().zip(w) {
                let wv = V::splat(wv);
                for (u, a) in acc.iter_mut().enumerate() {
                    *a = V::fma(V::load(x.add(t + q + u * V::LANES)), wv, *a);
                }
            }
            for (u, a) in acc.iter().enumerate() {
                a.store(o.add(q + u * V::LANES));
            }
            q += UNROLL * V::LANES;
        }
        while q < ph.span {
            let mut acc = V::zero();
            for (&t, &wv) in ph.taps.iter().zip(w) {
                acc = V::fma(V::load(x.add(t + q)), V::splat(wv), acc);
            }
            acc.store(o.add(q));
            q += V::LANES;
        }
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn scatter_avx512(ph: &Phases, grid: &[f32], w: &[f32], dxp: &mut [f32]) {
        scatter::<__m512>(ph, grid, w, dxp)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn scatter_avx2(ph: &Phases, grid: &[f32], w: &[f32], dxp: &mut [f32]) {
        scatter::<__m256>(ph, grid, w, dxp)
    }

    /// `dxp[tap_t + q] += w[t] · grid[q]` for every tap and grid position, tap by tap.
    #[inline(always)]
    unsafe fn scatter<V: Vector>(ph: &Phases, grid: &[f32], w: &[f32], dxp: &mut [f32]) {
        assert!(ph.span.is_multiple_of(V::LANES) && grid.len() >= ph.span);
        assert!(w.len() == ph.taps.len() && ph.taps.iter().all(|&t| t + ph.span <= dxp.len()));
        let (g, d) = (grid.as_ptr(), dxp.as_mut_ptr());
        for (&t, &wv) in ph.taps.iter().zip(w) {
            let wv = V::splat(wv);
            // Within one tap the vectors do not overlap: each is read and written once.
            for q in (0..ph.span).step_by(V::LANES) {
                let p = d.add(t + q);
                V::fma(V::load(g.add(q)), wv, V::load(p)).store(p);
            }
        }
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn tap_lanes_avx512(ph: &Phases, xp: &[f32], grid: &[f32], l: &mut [f32]) {
        tap_lanes::<__m512>(ph, xp, grid, l)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tap_lanes_avx2(ph: &Phases, xp: &[f32], grid: &[f32], l: &mut [f32]) {
        tap_lanes::<__m256>(ph, xp, grid, l)
    }

    /// Adds `Σ_q grid[q] · xp[tap_t + q]` onto tap `t`'s lane accumulators
    /// (`lanes[t · ALIGN..][..LANES]`), in one fixed order.
    #[inline(always)]
    unsafe fn tap_lanes<V: Vector>(ph: &Phases, xp: &[f32], grid: &[f32], lanes: &mut [f32]) {
        assert!(ph.span.is_multiple_of(V::LANES) && grid.len() >= ph.span);
        assert!(lanes.len() == ph.taps.len() * ALIGN);
        assert!(ph.taps.iter().all(|&t| t + ph.span <= xp.len()));
        let (x, g) = (xp.as_ptr(), grid.as_ptr());
        for (&t, l) in ph.taps.iter().zip(lanes.chunks_exact_mut(ALIGN)) {
            let mut acc = [V::zero(); UNROLL];
            let mut q = 0;
            while q + UNROLL * V::LANES <= ph.span {
                for (u, a) in acc.iter_mut().enumerate() {
                    let at = q + u * V::LANES;
                    *a = V::fma(V::load(g.add(at)), V::load(x.add(t + at)), *a);
                }
                q += UNROLL * V::LANES;
            }
            while q < ph.span {
                acc[0] = V::fma(V::load(g.add(q)), V::load(x.add(t + q)), acc[0]);
                q += V::LANES;
            }
            let sum = V::add(V::add(acc[0], acc[1]), V::add(acc[2], acc[3]));
            V::add(V::load(l.as_ptr()), sum).store(l.as_mut_ptr());
        }
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn lanes_sum_avx512(lanes: &[f32]) -> f32 {
        assert!(lanes.len() >= 16);
        __m512::load(lanes.as_ptr()).sum()
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn lanes_sum_avx2(lanes: &[f32]) -> f32 {
        assert!(lanes.len() >= 8);
        __m256::load(lanes.as_ptr()).sum()
    }
}
