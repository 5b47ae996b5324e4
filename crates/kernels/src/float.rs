//! Path B: codes decoded into a float tile, then the f32 kernel. [`matmul_f32`] is that same
//! kernel on float weights, so the two agree bit for bit on the decoded weights.

use std::ops::Range;

use rayon::prelude::*;

use crate::decode::rows_f32;
use crate::packed::PackedWeights;
use crate::{Cpu, KernelError, Result};

/// Float elements of a decoded tile for one column (a GEMV row stays in L1) ...
const GEMV_TILE: usize = 8 * 1024;
/// ... and weight rows per tile when several columns share it (one GEMM call per tile).
const GEMM_TILE_ROWS: usize = 128;

/// `out[r][j] = Σ_c w[r][c] · x[j][c]`: `w` is `rows × cols` floats (row-major), `x` holds `n`
/// columns of `cols`, `out` is `rows × n`. Split by rows on the current rayon pool.
pub fn matmul_f32(
    cpu: Cpu,
    w: &[f32],
    cols: usize,
    x: &[f32],
    n: usize,
    out: &mut [f32],
) -> Result<()> {
    if cols == 0 || !w.len().is_multiple_of(cols) {
        return Err(KernelError::Shape(format!(
            "{} weights are not rows of {cols}",
            w.len()
        )));
    }
    let rows = w.len() / cols;
    check(rows, cols, x, n, out)?;
    split(rows, cols, n, out, |r, tile_out| {
        tile_product(cpu, &w[r.start * cols..r.end * cols], cols, x, n, tile_out)
    });
    Ok(())
}

/// [`matmul_f32`] with the weight rows `rows` of `w` decoded from their codes tile by tile.
pub fn matmul_packed_f32(
    cpu: Cpu,
    w: &PackedWeights,
    rows: Range<usize>,
    x: &[f32],
    n: usize,
    out: &mut [f32],
) -> Result<()> {
    if rows.end > w.rows || rows.is_empty() {
        return Err(KernelError::Shape(format!(
            "rows {rows:?} of a {}-row matrix",
            w.rows
        )));
    }
    let cols = w.cols;
    check(rows.len(), cols, x, n, out)?;
    let first = rows.start;
    #[cfg(target_arch = "x86_64")]
    if n == 1 && w.bits <= 4 && cpu.use_avx2() {
        // One column: each weight is used once, so decode in registers (rows with exact
        // zeros through a decoded row), the same arithmetic as `dot` on decoded weights.
        let chunk = rows.len().div_ceil(rayon::current_num_threads()).max(1);
        out.par_chunks_mut(chunk).enumerate().for_each(|(i, out)| {
            let mut row = vec![0.0f32; cols];
            for (o, r) in out.iter_mut().zip(first + i * chunk..) {
                *o = if w.zeros[r].is_empty() {
                    // SAFETY: AVX2 and FMA are present; row r has cols codes, x cols floats.
                    unsafe { avx2::packed_dot(w, r, x) }
                } else {
                    rows_f32(cpu, w, r..r + 1, &mut row);
                    dot(cpu, &row, x)
                };
            }
        });
        return Ok(());
    }
    split(rows.len(), cols, n, out, |r, tile_out| {
        let mut tile = vec![0.0f32; r.len() * cols];
        rows_f32(cpu, w, first + r.start..first + r.end, &mut tile);
        tile_product(cpu, &tile, cols, x, n, tile_out)
    });
    Ok(())
}

fn check(rows: usize, cols: usize, x: &[f32], n: usize, out: &[f32]) -> Result<()> {
    if x.len() != n * cols || out.len() != rows * n {
        return Err(KernelError::Shape(format!(
            "{} inputs and {} outputs for {n} columns of {cols} and {rows} rows",
            x.len(),
            out.len()
        )));
    }
    Ok(())
}

/// Runs `tile(rows, out)` over row tiles, threads taking contiguous runs of rows. The tiles
/// depend only on the shape and the pool's size, so both kernels cut the same way.
fn split(
    rows: usize,
    cols: usize,
    n: usize,
    out: &mut [f32],
    tile: impl Fn(Range<usize>, &mut [f32]) + Sync,
) {
    if n == 0 {
        return;
    }
    let chunk = rows.div_ceil(rayon::current_num_threads()).max(1);
    let tile_rows = if n == 1 {
        (GEMV_TILE / cols).max(1)
    } else {
        GEMM_TILE_ROWS
    };
    out.par_chunks_mut(chunk * n)
        .enumerate()
        .for_each(|(i, out)| {
            for (t, out) in out.chunks_mut(tile_rows * n).enumerate() {
                let r0 = i * chunk + t * tile_rows;
                tile(r0..r0 + out.len() / n, out);
            }
        });
}

/// One tile: a dot product per row for a single column, a GEMM call for several.
fn tile_product(cpu: Cpu, w: &[f32], cols: usize, x: &[f32], n: usize, out: &mut [f32]) {
    let rows = out.len() / n;
    if n == 1 {
        for (o, row) in out.iter_mut().zip(w.chunks(cols)) {
            *o = dot(cpu, row, x);
        }
        return;
    }
    // SAFETY: `w` is rows × cols (row stride cols), `x` is n columns of cols (so its
    // transpose is cols × n with row stride 1, column stride cols) and `out` rows × n; the
    // sizes were checked by the callers.
    unsafe {
        gemm::gemm(
            rows,
            n,
            cols,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            w.as_ptr(),
            1,
            cols as isize,
            x.as_ptr(),
            cols as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// Σ a·b with four running sums over blocks of 32, then the tail in order.
pub(crate) fn dot(cpu: Cpu, a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if cpu.use_avx2() {
        // SAFETY: AVX2 and FMA are present; both slices have a.len() elements.
        return unsafe { avx2::dot(a, b) };
    }
    let _ = cpu;
    let full = a.len() / 32 * 32;
    let mut acc = [[0.0f32; 8]; 4];
    for (ca, cb) in a[..full].chunks(32).zip(b[..full].chunks(32)) {
        for (q, acc) in acc.iter_mut().enumerate() {
            for (l, s) in acc.iter_mut().enumerate() {
                *s = ca[q * 8 + l].mul_add(cb[q * 8 + l], *s);
            }
        }
    }
    let lanes: [f32; 8] =
        std::array::from_fn(|l| (acc[0][l] + acc[1][l]) + (acc[2][l] + acc[3][l]));
    let mut sum = hsum8(lanes);
    for (x, y) in a[full..].iter().zip(&b[full..]) {
        sum = x.mul_add(*y, sum);
    }
    sum
}

/// The horizontal sum in the order the AVX2 code takes it.
fn hsum8(l: [f32; 8]) -> f32 {
    let h: [f32; 4] = std::array::from_fn(|i| l[i] + l[i + 4]);
    let (a, b) = (h[0] + h[2], h[1] + h[3]);
    a + b
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use crate::packed::{PackedWeights, BLOCK};

    /// `dot(decoded row r, x)` without the decoded row: each block of 32 codes becomes four
    /// registers of `scale · table[code]` fed straight to the same four running sums; the
    /// tail is decoded one weight at a time.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn packed_dot(w: &PackedWeights, r: usize, x: &[f32]) -> f32 {
        // The row's weights are scale · table[code]: multiply the 16 entries once, not
        // every weight (the same products, so the same bits).
        let mut t = [0.0f32; 16];
        for (t, &v) in t.iter_mut().zip(&w.table) {
            *t = w.row_scales[r] * v;
        }
        let lo_table = _mm256_loadu_ps(t.as_ptr());
        let hi_table = _mm256_loadu_ps(t.as_ptr().add(8));
        let mask = _mm_set1_epi8(0x0F);
        let src = w.data.as_ptr().add(r * w.row_bytes);
        let full = w.cols / BLOCK * BLOCK;
        let mut acc = [_mm256_setzero_ps(); 4];
        let lookup = |codes: __m128i| {
            let idx = _mm256_cvtepu8_epi32(codes);
            let pick_hi = _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28));
            _mm256_blendv_ps(
                _mm256_permutevar8x32_ps(lo_table, idx),
                _mm256_permutevar8x32_ps(hi_table, idx),
                pick_hi,
            )
        };
        let mut k = 0;
        while k < full {
            let bytes = _mm_loadu_si128(src.add(k / 2).cast());
            let lo = _mm_and_si128(bytes, mask);
            let hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
            let groups = [lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)];
            for (q, codes) in groups.into_iter().enumerate() {
                let xv = _mm256_loadu_ps(x.as_ptr().add(k + q * 8));
                acc[q] = _mm256_fmadd_ps(lookup(codes), xv, acc[q]);
            }
            k += BLOCK;
        }
        let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(h, _mm_movehl_ps(h, h));
        let mut sum = _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 0b01)));
        for (c, &y) in x.iter().enumerate().take(w.cols).skip(full) {
            sum = w.weight(r, c).mul_add(y, sum);
        }
        sum
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let full = a.len() / 32 * 32;
        let mut acc = [_mm256_setzero_ps(); 4];
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut k = 0;
        while k < full {
            for (q, acc) in acc.iter_mut().enumerate() {
                let x = _mm256_loadu_ps(pa.add(k + q * 8));
                let y = _mm256_loadu_ps(pb.add(k + q * 8));
                *acc = _mm256_fmadd_ps(x, y, *acc);
            }
            k += 32;
        }
        let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        // (h0 + h2) + (h1 + h3)
        let s = _mm_add_ps(h, _mm_movehl_ps(h, h));
        let mut sum = _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 0b01)));
        for (x, y) in a[full..].iter().zip(&b[full..]) {
            sum = x.mul_add(*y, sum);
        }
        sum
    }
}
