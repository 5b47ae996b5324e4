//! Certified lower bounds that let the exhaustive search skip candidates that cannot win.
//!
//! A candidate S ends the paper's iteration at some α with score F_S(α) ≥ min_α F_S(α). For α
//! in an interval [a, b], every level α·s_j lies in the "fat level" [a·s_j, b·s_j], so each
//! weight's error is at least its distance to the union of those intervals. Summed over a
//! coarse histogram (only bins wholly inside a gap count), that gives a lower bound of F_S on
//! the whole interval in O(K) table look-ups. Branch and bound over α then either proves
//! F_S > τ everywhere (the candidate is skipped) or gives up and the candidate is fitted.
//!
//! With τ the exact score of some candidate, a skipped candidate scores strictly more than the
//! best one, so skipping never changes which subset (the first of the lowest scores) wins.

use crate::magnitudes::Magnitudes;

/// Histogram bins are keyed by the top bits of the f32 pattern: exponent + this many mantissa
/// bits, i.e. log-spaced bins about 1.6 % wide.
const BIN_MANTISSA_BITS: u32 = 6;
const BIN_SHIFT: u32 = 23 - BIN_MANTISSA_BITS;
/// Intervals of α narrower than this ratio are not split further.
const MIN_RATIO: f64 = 1.002;
/// Lower-bound evaluations per candidate before giving up and fitting it.
const MAX_EVALS: usize = 96;
/// Float round-off allowance on the squared bound.
const SLACK: f64 = 1e-9;

/// Count, Σv, Σv² per histogram bin, as prefix sums.
#[derive(Debug, Clone)]
pub(crate) struct Bins {
    key_min: i64,
    /// prefix[i] = sums over bins 0..i.
    prefix: Vec<[f64; 3]>,
    /// Range of α that the paper's iteration can end at (see [`Bins::alpha_range`]).
    v_min: f64,
    v_max: f64,
    mean_abs: f64,
}

fn floor_f32(t: f64) -> f32 {
    let mut f = t as f32;
    if f64::from(f) > t {
        f = f32::from_bits(f.to_bits() - 1);
    }
    f
}

impl Bins {
    pub(crate) fn new(m: &Magnitudes) -> Option<Self> {
        if m.is_empty() {
            return None;
        }
        let key = |v: f32| i64::from(v.to_bits() >> BIN_SHIFT);
        let key_min = key(m.value(0) as f32);
        let key_max = key(m.value(m.len() - 1) as f32);
        let bins = (key_max - key_min + 1) as usize;
        let mut sums = vec![[0.0; 3]; bins];
        for i in 0..m.len() {
            let v = m.value(i);
            let b = &mut sums[(key(v as f32) - key_min) as usize];
            b[0] += 1.0;
            b[1] += v;
            b[2] += v * v;
        }
        let mut prefix = Vec::with_capacity(bins + 1);
        let mut acc = [0.0; 3];
        prefix.push(acc);
        for b in sums {
            for i in 0..3 {
                acc[i] += b[i];
            }
            prefix.push(acc);
        }
        Some(Self {
            key_min,
            prefix,
            v_min: m.value(0),
            v_max: m.max(),
            mean_abs: m.mean_abs(),
        })
    }

    fn bins(&self) -> i64 {
        self.prefix.len() as i64 - 1
    }

    /// Bin index of threshold t (may be < 0 or ≥ bins).
    fn key(&self, t: f64) -> i64 {
        if t >= f64::from(f32::MAX) {
            return self.bins() + 1;
        }
        if t <= 0.0 {
            return -1;
        }
        i64::from(floor_f32(t).to_bits() >> BIN_SHIFT) - self.key_min
    }

    /// Σ (v − p)² over bins with index in lo..hi (clamped), each bin's sum computed exactly.
    fn cost(&self, lo: i64, hi: i64, p: f64) -> f64 {
        let lo = lo.clamp(0, self.bins()) as usize;
        let hi = hi.clamp(0, self.bins()) as usize;
        if lo >= hi {
            return 0.0;
        }
        let (a, b) = (&self.prefix[lo], &self.prefix[hi]);
        let (n, s1, s2) = (b[0] - a[0], b[1] - a[1], b[2] - a[2]);
        (s2 - 2.0 * p * s1 + p * p * n).max(0.0)
    }

    /// Lower bound of min over α ∈ [a, b] of F_S(α)², levels `s` ascending with max 1.
    fn bound(&self, s: &[f64], a: f64, b: f64) -> f64 {
        let mut total = 0.0;
        // Below the smallest level: every weight there is at least a·s_0 − v away.
        if s[0] > 0.0 {
            total += self.cost(0, self.key(a * s[0]), a * s[0]);
        }
        for w in s.windows(2) {
            let (hi_of_lower, lo_of_upper) = (b * w[0], a * w[1]);
            if hi_of_lower < lo_of_upper {
                let mid = 0.5 * (hi_of_lower + lo_of_upper);
                let (k0, km, k1) = (self.key(hi_of_lower), self.key(mid), self.key(lo_of_upper));
                total += self.cost(k0 + 1, km, hi_of_lower);
                total += self.cost(km + 1, k1, lo_of_upper);
            }
        }
        // Above the largest level (s = 1).
        if b.is_finite() {
            total += self.cost(self.key(b) + 1, self.bins(), b);
        }
        total
    }

    /// True when F_S(α) > τ for every α the iteration can end at.
    pub(crate) fn cannot_beat(&self, s: &[f64], tau: f64) -> bool {
        let limit = tau * tau * (1.0 + SLACK);
        let s_min = s.iter().copied().find(|v| *v > 0.0).unwrap_or(1.0);
        // α ends as Σ s_j A_j / Σ s_j² n_j (between v_min and v_max / s_min) or as mean|x|.
        let lo = 0.5 * self.v_min.min(self.mean_abs);
        let hi = 2.0 * self.v_max / s_min;
        // Coarse start: one interval up to 5 % of the top (everything there clamps far below
        // the data), steps of √2 where the α of good subsets lie, then two wide intervals up
        // to `hi`, where levels are spread so far that the bound is large anyway.
        let mut stack: Vec<(f64, f64)> = Vec::with_capacity(64);
        let mut a = (0.05 * self.v_max).max(lo);
        stack.push((lo, a));
        let fine_end = (2.0 * self.v_max).min(hi);
        while a < fine_end {
            let b = (a * std::f64::consts::SQRT_2).min(fine_end);
            stack.push((a, b));
            a = b;
        }
        if a < hi {
            let b = (4.0 * a).min(hi);
            stack.push((a, b));
            if b < hi {
                stack.push((b, hi));
            }
        }
        let mut evals = 0;
        while let Some((a, b)) = stack.pop() {
            evals += 1;
            if self.bound(s, a, b) > limit {
                continue;
            }
            if b / a < MIN_RATIO || evals >= MAX_EVALS {
                return false;
            }
            let mid = (a * b).sqrt();
            stack.push((mid, b));
            stack.push((a, mid));
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codebook::Codebook;

    #[test]
    fn bound_never_exceeds_the_true_error() {
        let x: Vec<f32> = (1..3000)
            .map(|i| (((i * 7919) % 2999) as f32 / 2999.0 - 0.5).powi(3) * 7.0)
            .collect();
        let m = Magnitudes::new(&x);
        let bins = Bins::new(&m).unwrap();
        let s = vec![0.0, 0.0625, 0.25, 0.5, 1.0];
        for i in 0..200 {
            let alpha = 0.01 * 1.03f64.powi(i);
            let exact = Codebook {
                levels: s.clone(),
                alpha,
            }
            .l2_error(&m)
            .powi(2);
            for width in [1.0, 1.01, 1.2, 2.0] {
                for (a, b) in [(alpha, alpha * width), (alpha / width, alpha)] {
                    let lb = bins.bound(&s, a, b);
                    assert!(
                        lb <= exact * (1.0 + 1e-12) + 1e-12,
                        "α {alpha} in [{a}, {b}]: bound {lb} > exact {exact}"
                    );
                }
            }
        }
    }
}
