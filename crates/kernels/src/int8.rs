//! Path A, W·A8: integer weights from the table lookup times 8-bit activation codes, summed in
//! int32. Exact, so the SIMD and scalar code give the same integers.

use std::ops::Range;

use rayon::prelude::*;

use crate::decode::{int8_table, rows_i8};
use crate::packed::{PackedWeights, BLOCK};
use crate::{Cpu, KernelError, Result};

/// Up to this many columns, path A decodes in registers instead of into a tile.
const FUSED_COLUMNS: usize = 2;

/// Bytes of decoded rows at a time: a tile that stays in L1 while every column passes over it.
const TILE_BYTES: usize = 16 * 1024;

/// The activation row length path A reads: the weights' columns rounded up to whole blocks.
pub fn a8_stride(cols: usize) -> usize {
    cols.div_ceil(BLOCK) * BLOCK
}

/// `out[r][j] = Σ_c w[r][c] · (x[j][c] − zero)` in integers, for the weight rows `rows` (`out`
/// is `rows.len() × n`, row-major) and `n` columns of 8-bit activation codes, each
/// [`a8_stride`]`(w.cols())` bytes long (bytes past `w.cols()` are ignored). `w` must have
/// an integer table. Runs on the current rayon pool, split by rows.
pub fn matmul_a8(
    cpu: Cpu,
    w: &PackedWeights,
    rows: Range<usize>,
    x: &[u8],
    n: usize,
    zero: i32,
    out: &mut [i32],
) -> Result<()> {
    let table = int8_table(w).ok_or_else(|| {
        KernelError::Int8(format!("{}-bit weights without an integer table", w.bits))
    })?;
    let stride = a8_stride(w.cols);
    if rows.end > w.rows || rows.is_empty() {
        return Err(KernelError::Shape(format!(
            "rows {rows:?} of a {}-row matrix",
            w.rows
        )));
    }
    if x.len() != n * stride || out.len() != rows.len() * n {
        return Err(KernelError::Shape(format!(
            "{} activation bytes and {} outputs for {n} columns of {stride} and {} rows",
            x.len(),
            out.len(),
            rows.len()
        )));
    }
    if n == 0 {
        return Ok(());
    }
    let chunk = rows.len().div_ceil(rayon::current_num_threads()).max(1);
    #[cfg(target_arch = "x86_64")]
    if n <= FUSED_COLUMNS && cpu.use_avx2() {
        // Few columns: each weight is used once or twice, so decode in registers, no tile.
        // The padding must be zero there: the padded codes decode to table[0].
        let mut padded = x.to_vec();
        for col in padded.chunks_mut(stride) {
            col[w.cols..].fill(0);
        }
        let mut by_column = vec![0i32; rows.len() * n];
        for j in 0..n {
            let col = &padded[j * stride..][..stride];
            let out_j = &mut by_column[j * rows.len()..][..rows.len()];
            out_j
                .par_chunks_mut(chunk)
                .enumerate()
                .for_each(|(i, out)| {
                    let r0 = rows.start + i * chunk;
                    // SAFETY: AVX2 is present; rows r0.. hold whole blocks, `col` is
                    // `stride` bytes.
                    unsafe { avx2::fused_rows(w, &table, r0, col, out) };
                    for (o, r) in out.iter_mut().zip(r0..) {
                        for &c in &w.zeros[r] {
                            *o -= i32::from(table[usize::from(w.code(r, c))]) * i32::from(col[c]);
                        }
                        *o -= zero * w.int_row_sums[r];
                    }
                });
        }
        for (r, out) in out.chunks_mut(n).enumerate() {
            for (j, o) in out.iter_mut().enumerate() {
                *o = by_column[j * rows.len() + r];
            }
        }
        return Ok(());
    }
    let tile_rows = (TILE_BYTES / stride).max(2);
    out.par_chunks_mut(chunk * n)
        .enumerate()
        .for_each(|(i, out)| {
            let start = rows.start + i * chunk;
            let mut tile = vec![0i8; tile_rows * stride];
            for (t, out) in out.chunks_mut(tile_rows * n).enumerate() {
                let r0 = start + t * tile_rows;
                let count = out.len() / n;
                let tile = &mut tile[..count * stride];
                rows_i8(cpu, w, &table, r0..r0 + count, tile, stride);
                tile_product(cpu, tile, stride, x, n, out);
                for (out, r) in out.chunks_mut(n).zip(r0..) {
                    let sum = w.int_row_sums[r];
                    out.iter_mut().for_each(|o| *o -= zero * sum);
                }
            }
        });
    Ok(())
}

/// `out[r][j] = Σ_c tile[r][c] · x[j][c]` over `stride` columns.
fn tile_product(cpu: Cpu, tile: &[i8], stride: usize, x: &[u8], n: usize, out: &mut [i32]) {
    #[cfg(target_arch = "x86_64")]
    if cpu.use_avx2() {
        // SAFETY: AVX2 is present; `tile` holds `out.len() / n` rows and `x` `n` columns of
        // `stride` bytes, a multiple of 32.
        unsafe { avx2::tile_product(tile, stride, x, n, out) };
        return;
    }
    let _ = cpu;
    for (row, out) in tile.chunks(stride).zip(out.chunks_mut(n)) {
        for (o, col) in out.iter_mut().zip(x.chunks(stride)) {
            *o = row
                .iter()
                .zip(col)
                .map(|(&w, &a)| i32::from(w) * i32::from(a))
                .sum();
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use crate::packed::{PackedWeights, BLOCK};

    /// `out[i] = Σ_c table[code[r0 + i][c]] · x[c]` over whole blocks (exact zeros not
    /// applied): 16 code bytes → 32 nibbles in one register → `pshufb` → `maddubs` with 32
    /// activation bytes, two rows sharing each activation load.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn fused_rows(
        w: &PackedWeights,
        table: &[i8; 16],
        r0: usize,
        x: &[u8],
        out: &mut [i32],
    ) {
        let table = _mm256_broadcastsi128_si256(_mm_loadu_si128(table.as_ptr().cast()));
        let mask = _mm256_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        let blocks = x.len() / BLOCK;
        let decode = |row: *const u8, b: usize| {
            let bytes = _mm_loadu_si128(row.add(b * BLOCK / 2).cast());
            let nibbles = _mm256_set_m128i(_mm_srli_epi16(bytes, 4), bytes);
            _mm256_shuffle_epi8(table, _mm256_and_si256(nibbles, mask))
        };
        let row = |r: usize| w.data.as_ptr().add(r * w.row_bytes);
        let mut i = 0;
        while i < out.len() {
            let two = i + 1 < out.len();
            let (a, b) = (row(r0 + i), row(r0 + i + usize::from(two)));
            let (mut acc_a, mut acc_b) = (_mm256_setzero_si256(), _mm256_setzero_si256());
            for k in 0..blocks {
                let xv = _mm256_loadu_si256(x.as_ptr().add(k * BLOCK).cast());
                let pa = _mm256_maddubs_epi16(xv, decode(a, k));
                acc_a = _mm256_add_epi32(acc_a, _mm256_madd_epi16(pa, ones));
                if two {
                    let pb = _mm256_maddubs_epi16(xv, decode(b, k));
                    acc_b = _mm256_add_epi32(acc_b, _mm256_madd_epi16(pb, ones));
                }
            }
            out[i] = hsum(acc_a);
            if two {
                out[i + 1] = hsum(acc_b);
            }
            i += 2;
        }
    }

    /// R rows × C columns of dot products, 32 bytes at a time: `maddubs` (u8 × i8, pairs
    /// added into i16; no saturation as |w| ≤ 64), `madd` with ones into i32.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn block<const R: usize, const C: usize>(
        w: [*const i8; R],
        x: [*const u8; C],
        len: usize,
    ) -> [[i32; C]; R] {
        let ones = _mm256_set1_epi16(1);
        let mut acc = [[_mm256_setzero_si256(); C]; R];
        let mut k = 0;
        while k < len {
            let mut wv = [_mm256_setzero_si256(); R];
            for r in 0..R {
                wv[r] = _mm256_loadu_si256(w[r].add(k).cast());
            }
            for c in 0..C {
                let xv = _mm256_loadu_si256(x[c].add(k).cast());
                for r in 0..R {
                    let pairs = _mm256_maddubs_epi16(xv, wv[r]);
                    acc[r][c] = _mm256_add_epi32(acc[r][c], _mm256_madd_epi16(pairs, ones));
                }
            }
            k += 32;
        }
        let mut sums = [[0i32; C]; R];
        for r in 0..R {
            for c in 0..C {
                sums[r][c] = hsum(acc[r][c]);
            }
        }
        sums
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn hsum(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
        _mm_cvtsi128_si32(s)
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn row_group<const R: usize>(
        tile: &[i8],
        r0: usize,
        stride: usize,
        x: &[u8],
        n: usize,
        out: &mut [i32],
    ) {
        let w: [*const i8; R] = std::array::from_fn(|r| tile.as_ptr().add((r0 + r) * stride));
        let mut j = 0;
        while j + 4 <= n {
            let cols = std::array::from_fn(|c| x.as_ptr().add((j + c) * stride));
            let s = block::<R, 4>(w, cols, stride);
            for r in 0..R {
                out[(r0 + r) * n + j..][..4].copy_from_slice(&s[r]);
            }
            j += 4;
        }
        while j < n {
            let s = block::<R, 1>(w, [x.as_ptr().add(j * stride)], stride);
            for r in 0..R {
                out[(r0 + r) * n + j] = s[r][0];
            }
            j += 1;
        }
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn tile_product(
        tile: &[i8],
        stride: usize,
        x: &[u8],
        n: usize,
        out: &mut [i32],
    ) {
        let rows = out.len() / n;
        let mut r = 0;
        while r + 2 <= rows {
            row_group::<2>(tile, r, stride, x, n, out);
            r += 2;
        }
        if r < rows {
            row_group::<1>(tile, r, stride, x, n, out);
        }
    }
}
