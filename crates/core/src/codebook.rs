//! A magnitude codebook: q(x) = sign(x) · α · nearest(|x| / α, levels).
//!
//! Every quantizer in this crate (SQ and the baselines) is one of these with different levels;
//! a b-bit code is a sign bit plus the (b−1)-bit index of the level.

use crate::magnitudes::Magnitudes;
use crate::{Error, Result};

/// Ascending magnitudes (largest 1) and the scale α they are multiplied by.
#[derive(Debug, Clone, PartialEq)]
pub struct Codebook {
    /// Normalised magnitudes, ascending, distinct, largest = 1.
    pub levels: Vec<f64>,
    /// Scale: the quantized magnitudes are α · levels.
    pub alpha: f64,
}

/// One α step's sums: the loss ‖x − q‖₂ and the two inner products of the α update.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StepStats {
    pub loss: f64,
    /// ⟨q/α, x⟩.
    pub qx: f64,
    /// ⟨q/α, q/α⟩.
    pub qq: f64,
}

/// The paper's stopping rule: the loss moved less than this.
pub(crate) const PAPER_TOLERANCE: f64 = 1e-5;

/// The paper's α iteration (DESIGN.md §3), whatever computes the per-step sums:
/// assign at α, α ← ⟨q/α, x⟩ / ⟨q/α, q/α⟩ (mean|x| when that is 0), stop when the loss moves
/// less than `tolerance` ([`PAPER_TOLERANCE`] in the paper), at most 1000 steps. Returns the α
/// after the last update, as the paper does, and the number of steps taken.
///
/// Each step can only lower the loss (the assignment is optimal for α, then α is optimal for
/// the assignment). When α comes back unchanged the assignment is a fixed point and the next
/// step would repeat it exactly, so the iteration stops there too: with tolerance 0 that is
/// the full convergence.
pub(crate) fn paper_alpha(
    init: f64,
    mean_abs: f64,
    tolerance: f64,
    mut step: impl FnMut(f64) -> StepStats,
) -> (f64, usize) {
    const MAX_STEPS: usize = 1000;
    let mut alpha = init;
    let mut prev_loss = 0.0;
    for taken in 1..=MAX_STEPS {
        let s = step(alpha);
        let next = if s.qq == 0.0 { mean_abs } else { s.qx / s.qq };
        let fixed_point = next == alpha;
        alpha = next;
        if (prev_loss - s.loss).abs() < tolerance || fixed_point {
            return (alpha, taken);
        }
        prev_loss = s.loss;
    }
    (alpha, MAX_STEPS)
}

/// Step sums on sorted data: the levels partition the sorted magnitudes at midpoints.
/// `hints` holds each midpoint's position from the previous step (`usize::MAX` = none) and is
/// updated, which makes the searches of an α iteration nearly free.
pub(crate) fn sorted_step(
    m: &Magnitudes,
    levels: &[f64],
    alpha: f64,
    hints: &mut [usize],
) -> StepStats {
    debug_assert!(hints.len() + 1 >= levels.len());
    let (mut loss2, mut qx, mut qq) = (0.0, 0.0, 0.0);
    let mut lo = 0;
    for (j, &s) in levels.iter().enumerate() {
        // Ties at a midpoint go to the lower level, as the first minimum does in the paper.
        let hi = match levels.get(j + 1) {
            Some(next) => {
                let t = alpha * (s + next) * 0.5;
                hints[j] = m.count_le_near(t, hints[j]);
                hints[j]
            }
            None => m.len(),
        };
        let st = m.stats(lo, hi);
        loss2 += st.cost(alpha * s);
        qx += s * st.sum;
        qq += s * s * st.count;
        lo = hi;
    }
    StepStats {
        loss: loss2.sqrt(),
        qx,
        qq,
    }
}

impl Codebook {
    /// Fits α for fixed levels with the paper's iteration (and stopping rule) started at `init`.
    pub fn fit_alpha(m: &Magnitudes, levels: Vec<f64>, init: f64) -> Self {
        Self::fit_alpha_counted(m, levels, init, PAPER_TOLERANCE).0
    }

    /// Fits α with the paper's iteration run until it reaches a fixed point, which can only
    /// lower the error below [`Codebook::fit_alpha`]'s from the same start.
    pub fn fit_alpha_converged(m: &Magnitudes, levels: Vec<f64>, init: f64) -> Self {
        Self::fit_alpha_counted(m, levels, init, 0.0).0
    }

    /// The α iteration with a given stopping tolerance, also returning the steps taken.
    pub fn fit_alpha_counted(
        m: &Magnitudes,
        levels: Vec<f64>,
        init: f64,
        tolerance: f64,
    ) -> (Self, usize) {
        let mut hints = vec![usize::MAX; levels.len()];
        let (alpha, steps) = paper_alpha(init, m.mean_abs(), tolerance, |a| {
            sorted_step(m, &levels, a, &mut hints)
        });
        (Self { levels, alpha }, steps)
    }

    /// ‖|x| − |q(x)|‖₂ over the prepared data, in O(K log n).
    pub fn l2_error(&self, m: &Magnitudes) -> f64 {
        sorted_step(
            m,
            &self.levels,
            self.alpha,
            &mut vec![usize::MAX; self.levels.len()],
        )
        .loss
    }

    /// Index of the level nearest to |v| / α (ties to the lower level).
    #[inline]
    pub fn nearest_index(&self, v: f32) -> usize {
        let a = f64::from(v.abs());
        self.levels
            .windows(2)
            .position(|w| a <= self.alpha * (w[0] + w[1]) * 0.5)
            .unwrap_or(self.levels.len() - 1)
    }

    /// Quantizes one value; an exact zero stays 0 (sign(0) = 0).
    #[inline]
    pub fn quantize_value(&self, v: f32) -> f32 {
        if v == 0.0 {
            return 0.0;
        }
        let q = (self.alpha * self.levels[self.nearest_index(v)]) as f32;
        if v < 0.0 {
            -q
        } else {
            q
        }
    }

    /// Quantizes a slice: [`Codebook::quantize_value`] of each element, with the midpoints and
    /// quantized magnitudes computed once. The f64 midpoints are compared in f32: for an f32
    /// `a` and an f64 `t`, `a > t` exactly when `a > t↓` with `t↓` the largest f32 ≤ `t`.
    pub fn quantize(&self, x: &[f32]) -> Vec<f32> {
        let below: Vec<f32> = self
            .levels
            .windows(2)
            .map(|w| {
                let t = self.alpha * (w[0] + w[1]) * 0.5;
                let r = t as f32;
                if f64::from(r) > t {
                    r.next_down()
                } else {
                    r
                }
            })
            .collect();
        let values: Vec<f32> = self
            .levels
            .iter()
            .map(|l| (self.alpha * l) as f32)
            .collect();
        let top = values.len() - 1;
        // A short list is counted (branch-free, vectorised); a long one searched.
        let index = |a: f32| -> usize {
            if below.len() <= 16 {
                below.iter().map(|&t| usize::from(a > t)).sum()
            } else {
                below.partition_point(|&t| t < a)
            }
        };
        x.iter()
            .map(|&v| {
                // NaN takes the top level, as in nearest_index.
                let i = if v.is_nan() { top } else { index(v.abs()) };
                let q = values[i];
                match v {
                    0.0 => 0.0,
                    v if v < 0.0 => -q,
                    _ => q,
                }
            })
            .collect()
    }

    /// b-bit codes: sign bit (1 = negative) above the (b−1)-bit level index.
    ///
    /// An exact zero has no code of its own when 0 is not a level; it gets the smallest level
    /// with a + sign (the nearest representable value), so decoding gives α · levels\[0\] there.
    pub fn encode(&self, x: &[f32], bits: u32) -> Result<Vec<u8>> {
        self.check_bits(bits)?;
        Ok(x.iter()
            .map(|&v| {
                let idx = self.nearest_index(v) as u8;
                let neg = u8::from(v < 0.0);
                (neg << (bits - 1)) | idx
            })
            .collect())
    }

    /// Values of b-bit codes.
    pub fn decode(&self, codes: &[u8], bits: u32) -> Result<Vec<f32>> {
        self.check_bits(bits)?;
        let mask = (1u16 << (bits - 1)) as u8 - 1;
        codes
            .iter()
            .map(|&c| {
                let idx = usize::from(c & mask);
                let level = self.levels.get(idx).ok_or_else(|| {
                    Error::Pack(format!(
                        "code {c} indexes level {idx} of {}",
                        self.levels.len()
                    ))
                })?;
                let q = (self.alpha * level) as f32;
                Ok(if c >> (bits - 1) & 1 == 1 { -q } else { q })
            })
            .collect()
    }

    fn check_bits(&self, bits: u32) -> Result<()> {
        if !(2..=8).contains(&bits) {
            return Err(Error::Bits(bits));
        }
        if self.levels.len() > 1 << (bits - 1) {
            return Err(Error::Pack(format!(
                "{} levels do not fit {bits}-bit codes",
                self.levels.len()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_step_equals_a_direct_sum() {
        let x: Vec<f32> = (1..400)
            .map(|i| ((i * 613) % 397) as f32 / 397.0 - 0.5)
            .collect();
        let m = Magnitudes::new(&x);
        let levels = vec![0.0, 0.1875, 0.5, 1.0];
        for alpha in [0.2, 0.43, 0.9, 1.3] {
            let cb = Codebook {
                levels: levels.clone(),
                alpha,
            };
            let direct: f64 = x
                .iter()
                .map(|v| (f64::from(*v) - f64::from(cb.quantize_value(*v))).powi(2))
                .sum::<f64>()
                .sqrt();
            let fast = sorted_step(&m, &levels, alpha, &mut [usize::MAX; 4]).loss;
            assert!(
                (direct - fast).abs() < 1e-6 * direct.max(1.0),
                "{direct} vs {fast}"
            );
        }
    }

    #[test]
    fn slice_quantize_is_quantize_value() {
        let cb = Codebook {
            levels: vec![0.0, 0.25, 0.625, 1.0],
            alpha: 0.8,
        };
        // Midpoints exactly, both sides of them, zeros, out of range, NaN.
        let mut x: Vec<f32> = vec![0.0, -0.0, 0.1, 0.35, -0.35, 0.65, 2.0, -2.0, f32::NAN];
        x.extend((-300..300).map(|i| i as f32 / 250.0));
        // The f32 values around each f64 midpoint.
        for w in cb.levels.windows(2) {
            let t = (cb.alpha * (w[0] + w[1]) * 0.5) as f32;
            x.extend([t.next_down(), t, t.next_up(), -t]);
        }
        let one_by_one: Vec<f32> = x.iter().map(|v| cb.quantize_value(*v)).collect();
        let sliced = cb.quantize(&x);
        assert_eq!(
            sliced.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            one_by_one.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn encode_decode_round_trips_quantize() {
        let cb = Codebook {
            levels: vec![0.0, 0.25, 0.625, 1.0],
            alpha: 0.7,
        };
        let x = [0.3f32, -0.31, 0.0, 1.0, -0.9, 0.01, -0.0001];
        let codes = cb.encode(&x, 3).unwrap();
        assert_eq!(cb.decode(&codes, 3).unwrap(), cb.quantize(&x));
        assert!(cb.encode(&x, 2).is_err(), "4 levels cannot fit 2-bit codes");
    }
}
