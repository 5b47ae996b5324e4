//! Rows of codes → a tile of weights: f32 (path B) or int8 (path A). The SIMD and scalar
//! versions write the same values; the exact zeros are applied after either.

use std::ops::Range;

use crate::packed::{PackedWeights, BLOCK};
use crate::Cpu;

/// Writes rows `rows` of `w` as floats into `out` (`rows.len() × w.cols`, row-major).
pub(crate) fn rows_f32(cpu: Cpu, w: &PackedWeights, rows: Range<usize>, out: &mut [f32]) {
    let cols = w.cols;
    debug_assert_eq!(out.len(), rows.len() * cols);
    for (r, dst) in rows.zip(out.chunks_mut(cols)) {
        let src = &w.data[r * w.row_bytes..][..w.row_bytes];
        let scale = w.row_scales[r];
        let full = if w.bits <= 4 { cols / BLOCK } else { 0 };
        #[cfg(target_arch = "x86_64")]
        if cpu.use_avx2() && full > 0 {
            // SAFETY: AVX2 and FMA are present (checked above); the slices hold `full`
            // whole blocks of codes and outputs.
            unsafe { avx2::nibbles_f32(&src[..full * BLOCK / 2], &w.table, scale, dst) };
        } else {
            scalar_f32(w, src, scale, 0..full * BLOCK, dst);
        }
        #[cfg(not(target_arch = "x86_64"))]
        scalar_f32(w, src, scale, 0..full * BLOCK, dst);
        scalar_f32(w, src, scale, full * BLOCK..cols, dst);
        for &c in &w.zeros[r] {
            dst[c] = scale * 0.0;
        }
    }
    let _ = cpu;
}

fn scalar_f32(w: &PackedWeights, src: &[u8], scale: f32, cols: Range<usize>, dst: &mut [f32]) {
    for c in cols {
        let code = if w.bits > 4 {
            src[c]
        } else {
            let (block, j) = (c / BLOCK, c % BLOCK);
            let byte = src[block * BLOCK / 2 + j % (BLOCK / 2)];
            if j < BLOCK / 2 {
                byte & 0x0F
            } else {
                byte >> 4
            }
        };
        dst[c] = scale * w.table[usize::from(code)];
    }
}

/// The int8 lookup table of path A: the integers, 0 beyond `2^bits` entries.
pub(crate) fn int8_table(w: &PackedWeights) -> Option<[i8; 16]> {
    let ints = w.ints.as_ref()?;
    let mut t = [0i8; 16];
    for (d, &v) in t.iter_mut().zip(&ints.values) {
        *d = i8::try_from(v).ok()?;
    }
    Some(t)
}

/// Writes rows `rows` of `w` as integers into `out` (`rows.len()` rows of `stride ≥ cols`
/// bytes; columns from `cols` to `stride` become 0). Needs codes of ≤ 4 bits and an integer
/// table (checked by the caller).
pub(crate) fn rows_i8(
    cpu: Cpu,
    w: &PackedWeights,
    table: &[i8; 16],
    rows: Range<usize>,
    out: &mut [i8],
    stride: usize,
) {
    let cols = w.cols;
    debug_assert!(w.bits <= 4 && stride >= cols && stride <= w.row_bytes * 2);
    for (r, dst) in rows.zip(out.chunks_mut(stride)) {
        let src = &w.data[r * w.row_bytes..][..stride / 2];
        #[cfg(target_arch = "x86_64")]
        if cpu.use_avx2() {
            // SAFETY: AVX2 is present; `src` holds `stride / BLOCK` whole blocks, `dst`
            // `stride` bytes.
            unsafe { avx2::nibbles_i8(src, table, dst) };
        } else {
            scalar_i8(src, table, dst);
        }
        #[cfg(not(target_arch = "x86_64"))]
        scalar_i8(src, table, dst);
        dst[cols..].fill(0);
        for &c in &w.zeros[r] {
            dst[c] = 0;
        }
    }
    let _ = cpu;
}

fn scalar_i8(src: &[u8], table: &[i8; 16], dst: &mut [i8]) {
    for (block, out) in src.chunks(BLOCK / 2).zip(dst.chunks_mut(BLOCK)) {
        for (j, &byte) in block.iter().enumerate() {
            out[j] = table[usize::from(byte & 0x0F)];
            out[j + BLOCK / 2] = table[usize::from(byte >> 4)];
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use crate::packed::BLOCK;

    /// Whole blocks of nibble codes → `scale · table[code]`, eight at a time: the 16-entry
    /// table sits in two registers, `permutevar` picks by the low 3 bits and bit 3 chooses
    /// between them.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn nibbles_f32(src: &[u8], table: &[f32], scale: f32, dst: &mut [f32]) {
        let mut t = [0.0f32; 16];
        t[..table.len().min(16)].copy_from_slice(&table[..table.len().min(16)]);
        let lo_table = _mm256_loadu_ps(t.as_ptr());
        let hi_table = _mm256_loadu_ps(t.as_ptr().add(8));
        let scale = _mm256_set1_ps(scale);
        let mask = _mm_set1_epi8(0x0F);
        for (b, block) in src.chunks_exact(BLOCK / 2).enumerate() {
            let bytes = _mm_loadu_si128(block.as_ptr().cast());
            let lo = _mm_and_si128(bytes, mask);
            let hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
            let out = dst.as_mut_ptr().add(b * BLOCK);
            for (half, codes) in [lo, hi].into_iter().enumerate() {
                for eighth in 0..2 {
                    let c8 = if eighth == 0 {
                        codes
                    } else {
                        _mm_srli_si128(codes, 8)
                    };
                    let idx = _mm256_cvtepu8_epi32(c8);
                    let pick_hi = _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28));
                    let v = _mm256_blendv_ps(
                        _mm256_permutevar8x32_ps(lo_table, idx),
                        _mm256_permutevar8x32_ps(hi_table, idx),
                        pick_hi,
                    );
                    _mm256_storeu_ps(out.add(half * 16 + eighth * 8), _mm256_mul_ps(scale, v));
                }
            }
        }
    }

    /// Whole blocks of nibble codes → int8 by one `pshufb` per 16 codes.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn nibbles_i8(src: &[u8], table: &[i8; 16], dst: &mut [i8]) {
        let table = _mm_loadu_si128(table.as_ptr().cast());
        let mask = _mm_set1_epi8(0x0F);
        for (b, block) in src.chunks_exact(BLOCK / 2).enumerate() {
            let bytes = _mm_loadu_si128(block.as_ptr().cast());
            let lo = _mm_shuffle_epi8(table, _mm_and_si128(bytes, mask));
            let hi = _mm_shuffle_epi8(table, _mm_and_si128(_mm_srli_epi16(bytes, 4), mask));
            let out = dst.as_mut_ptr().add(b * BLOCK);
            _mm_storeu_si128(out.cast(), lo);
            _mm_storeu_si128(out.add(BLOCK / 2).cast(), hi);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IntTable;

    fn weights(rows: usize, cols: usize, bits: u32) -> PackedWeights {
        let n = 1usize << bits;
        let codes: Vec<u8> = (0..rows * cols)
            .map(|i| ((i * 5 + i / 7) % n) as u8)
            .collect();
        let ints: Vec<i32> = (0..n as i32).map(|i| i - n as i32 / 2).collect();
        let table: Vec<f32> = ints.iter().map(|&v| v as f32 * 0.125).collect();
        let scales: Vec<f32> = (0..rows).map(|r| 1.0 + r as f32 / 3.0).collect();
        let w = PackedWeights::new(rows, cols, bits, &codes, &table, &scales)
            .and_then(|w| w.with_zeros(&[1, cols + 3]))
            .unwrap();
        if bits <= 4 {
            w.with_ints(IntTable {
                values: ints,
                unit: 0.125,
            })
            .unwrap()
        } else {
            w
        }
    }

    #[test]
    fn simd_and_scalar_decode_the_same_weights() {
        for bits in [2, 3, 4, 6, 8] {
            for cols in [9, 32, 75, 128] {
                let w = weights(3, cols, bits);
                let want: Vec<f32> = (0..3)
                    .flat_map(|r| (0..cols).map(move |c| (r, c)))
                    .map(|(r, c)| w.weight(r, c))
                    .collect();
                for cpu in [Cpu::scalar(), Cpu::detect()] {
                    let mut got = vec![f32::NAN; 3 * cols];
                    rows_f32(cpu, &w, 0..3, &mut got);
                    assert_eq!(got, want, "f32 {bits} bits, {cols} cols, {cpu}");
                    if bits <= 4 {
                        let stride = cols.div_ceil(BLOCK) * BLOCK;
                        let mut ints = vec![99i8; 2 * stride];
                        let table = int8_table(&w).unwrap();
                        rows_i8(cpu, &w, &table, 1..3, &mut ints, stride);
                        for r in 1..3 {
                            for c in 0..stride {
                                let want = if c < cols {
                                    w.int_weight(r, c).unwrap()
                                } else {
                                    0
                                };
                                assert_eq!(i32::from(ints[(r - 1) * stride + c]), want);
                            }
                        }
                    }
                }
            }
        }
    }
}
