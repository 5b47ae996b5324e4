//! Scalar references the fast kernels are tested against: plain loops, wide integers, no
//! tiling, no SIMD.

use crate::PackedWeights;

/// Path A's sums in i64: `Σ_c w_int[r][c] · (x[j][c] − zero)`, `rows × n`. `x` holds `n`
/// columns of `w.cols()` codes. `None` without an integer table.
pub fn matmul_i64(w: &PackedWeights, x: &[u8], n: usize, zero: i64) -> Option<Vec<i64>> {
    let cols = w.cols();
    let mut out = vec![0i64; w.rows() * n];
    for r in 0..w.rows() {
        for (j, col) in x.chunks(cols).take(n).enumerate() {
            let mut s = 0i64;
            for (c, &a) in col.iter().enumerate() {
                s += i64::from(w.int_weight(r, c)?) * (i64::from(a) - zero);
            }
            out[r * n + j] = s;
        }
    }
    Some(out)
}

/// The same sums as the hardware model of the paper computes them: no multiplier, each
/// product `w · a` is `a` shifted once per set bit of |w| and added (two shifts and an add
/// for a level that is a sum of two powers of two), then negated for a negative weight.
/// Returns the sums and the most shifts any one product took.
pub fn matmul_shift_add(
    w: &PackedWeights,
    x: &[u8],
    n: usize,
    zero: i64,
) -> Option<(Vec<i64>, u32)> {
    let cols = w.cols();
    let mut out = vec![0i64; w.rows() * n];
    let mut most_shifts = 0;
    for r in 0..w.rows() {
        for (j, col) in x.chunks(cols).take(n).enumerate() {
            let mut s = 0i64;
            for (c, &a) in col.iter().enumerate() {
                let v = w.int_weight(r, c)?;
                let a = i64::from(a) - zero;
                let mut magnitude = v.unsigned_abs();
                let mut product = 0i64;
                let mut shifts = 0;
                while magnitude != 0 {
                    let e = magnitude.trailing_zeros();
                    product += a << e;
                    magnitude &= magnitude - 1;
                    shifts += 1;
                }
                most_shifts = most_shifts.max(shifts);
                s += if v < 0 { -product } else { product };
            }
            out[r * n + j] = s;
        }
    }
    Some((out, most_shifts))
}

/// `Σ_c w[r][c] · x[j][c]` in f64 over the decoded weights, `rows × n`: the value the f32
/// kernels approximate.
pub fn matmul_f64(w: &PackedWeights, x: &[f32], n: usize) -> Vec<f64> {
    let cols = w.cols();
    let mut out = vec![0f64; w.rows() * n];
    for r in 0..w.rows() {
        for (j, col) in x.chunks(cols).take(n).enumerate() {
            out[r * n + j] = col
                .iter()
                .enumerate()
                .map(|(c, &a)| f64::from(w.weight(r, c)) * f64::from(a))
                .sum();
        }
    }
    out
}
