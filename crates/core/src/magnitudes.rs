//! Sorted magnitudes with prefix sums: the data structure behind every O(K log n) step.
//!
//! Nearest-point assignment to sorted levels is a partition of the sorted |x| at midpoints, so
//! any quantizer's error and its least-squares scale need only the count, Σ|x| and Σx² of each
//! part, read off prefix sums. A coarse bucket index over [0, 1] turns the position look-ups
//! into a short search inside one bucket, which keeps them in cache on million-weight layers.

/// Nonzero |x| of one tensor (or channel), sorted, with prefix sums.
///
/// Exact zeros are left out: sign(0) = 0, so they quantize to 0 whatever the levels and add
/// nothing to any sum. `total` still counts them (the paper's fallback α is a mean over all).
#[derive(Debug, Clone)]
pub struct Magnitudes {
    /// The sorted values. Kept as f32 (the weights are f32, so this is exact): searches touch
    /// only this array, and at 4 bytes a value a million-weight layer stays in cache.
    values: Vec<f32>,
    /// `prefix[i]` = (Σ, Σ²) of values 0..i, in f64.
    prefix: Vec<Prefix>,
    total: usize,
    /// `bucket_start[k]` = number of values whose key is below k; a value's key is its f32
    /// bit pattern shifted right by `key_shift`, minus `key_min`.
    bucket_start: Vec<u32>,
    key_min: usize,
    key_shift: u32,
    max: f64,
}

#[derive(Debug, Clone, Copy)]
struct Prefix {
    sum: f64,
    sum_sq: f64,
}

/// Bucket keys are the top bits of the f32 pattern (exponent + up to 9 bits of mantissa):
/// log-spaced buckets, at finest 2^−9 ≈ 0.2 % wide, so dense regions near zero are split as
/// finely as the tails. Coarser for small tensors, so there are at most about 2 buckets a value.
const FINEST_KEY_SHIFT: u32 = 23 - 9;

/// Count, Σv and Σv² over a range of the sorted magnitudes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RangeStats {
    /// Number of values.
    pub count: f64,
    /// Σ v.
    pub sum: f64,
    /// Σ v².
    pub sum_sq: f64,
}

impl RangeStats {
    /// Σ (v − p)² over the range.
    #[inline]
    pub fn cost(&self, p: f64) -> f64 {
        (self.sum_sq - 2.0 * p * self.sum + p * p * self.count).max(0.0)
    }
}

impl Magnitudes {
    /// Builds from values that are already finite (the caller checks).
    pub fn new(x: &[f32]) -> Self {
        let mut values: Vec<f32> = x.iter().filter(|v| **v != 0.0).map(|v| v.abs()).collect();
        values.sort_unstable_by(f32::total_cmp);
        let n = values.len();
        let mut prefix = Vec::with_capacity(n + 1);
        let (mut a, mut b) = (0.0, 0.0);
        prefix.push(Prefix { sum: a, sum_sq: b });
        for &v in &values {
            let v = f64::from(v);
            a += v;
            b += v * v;
            prefix.push(Prefix { sum: a, sum_sq: b });
        }
        let max = values.last().map_or(0.0, |v| f64::from(*v));
        let key_range = |shift: u32| {
            let key = |v: Option<&f32>| v.map_or(0, |v| (v.to_bits() >> shift) as usize);
            (key(values.first()), key(values.last()))
        };
        let mut key_shift = FINEST_KEY_SHIFT;
        while key_shift < 31 && {
            let (lo, hi) = key_range(key_shift);
            hi - lo > 2 * n + 16
        } {
            key_shift += 1;
        }
        let (key_min, key_max) = key_range(key_shift);
        let keys = key_max + 1 - key_min;
        let mut bucket_start = vec![0u32; keys + 1];
        for v in &values {
            let k = (v.to_bits() >> key_shift) as usize - key_min;
            bucket_start[k + 1] += 1;
        }
        for k in 0..keys {
            bucket_start[k + 1] += bucket_start[k];
        }
        Self {
            values,
            prefix,
            total: x.len(),
            bucket_start,
            key_min,
            key_shift,
            max,
        }
    }

    /// Number of nonzero values.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True when every value was zero.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of values including exact zeros.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Largest magnitude (0 when empty).
    pub fn max(&self) -> f64 {
        self.max
    }

    /// Mean |x| over all values, zeros included (the paper's fallback α).
    pub fn mean_abs(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.prefix_at(self.len()).sum / self.total as f64
        }
    }

    /// The i-th smallest nonzero magnitude.
    ///
    /// # Panics
    /// When `i >= len()`.
    pub fn value(&self, i: usize) -> f64 {
        f64::from(self.values[i])
    }

    /// Number of values ≤ t.
    #[inline]
    pub fn count_le(&self, t: f64) -> usize {
        if t >= self.max {
            return self.len();
        }
        if t < 0.0 {
            return 0;
        }
        // v ≤ t ⟺ v ≤ the largest f32 not above t, since every v is an f32.
        let mut tf = t as f32;
        if f64::from(tf) > t {
            tf = f32::from_bits(tf.to_bits() - 1);
        }
        let k = ((tf.to_bits() >> self.key_shift) as usize)
            .saturating_sub(self.key_min)
            .min(self.bucket_start.len() - 2);
        let lo = self.bucket_start[k] as usize;
        let hi = self.bucket_start[k + 1] as usize;
        lo + self.values[lo..hi].partition_point(|v| *v <= tf)
    }

    /// Number of values ≤ t, searching outward from `hint` (a previous answer for a nearby t):
    /// the α iteration moves its thresholds a little each step, so this stays in cache.
    #[inline]
    pub fn count_le_near(&self, t: f64, hint: usize) -> usize {
        let n = self.len();
        if hint > n {
            return self.count_le(t);
        }
        let le = |i: usize| f64::from(self.values[i]) <= t;
        // Invariant: the answer p satisfies lo <= p <= hi.
        let (mut lo, mut hi);
        if hint < n && le(hint) {
            let mut step = 1;
            lo = hint + 1;
            loop {
                let probe = hint + step;
                if probe >= n || !le(probe) {
                    hi = probe.min(n);
                    break;
                }
                lo = probe + 1;
                step *= 2;
            }
        } else {
            let mut step = 1;
            hi = hint;
            loop {
                if step > hint {
                    lo = 0;
                    break;
                }
                let probe = hint - step;
                if le(probe) {
                    lo = probe + 1;
                    break;
                }
                hi = probe;
                step *= 2;
            }
        }
        lo + self.values[lo..hi].partition_point(|v| f64::from(*v) <= t)
    }

    #[inline]
    fn prefix_at(&self, i: usize) -> Prefix {
        self.prefix[i]
    }

    /// Stats of sorted positions `lo..hi`.
    #[inline]
    pub fn stats(&self, lo: usize, hi: usize) -> RangeStats {
        debug_assert!(lo <= hi && hi <= self.len());
        let (a, b) = (self.prefix_at(lo), self.prefix_at(hi));
        RangeStats {
            count: (hi - lo) as f64,
            sum: b.sum - a.sum,
            sum_sq: b.sum_sq - a.sum_sq,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_le_matches_a_linear_count() {
        let x: Vec<f32> = (0..5000)
            .map(|i| {
                (((i * 7919) % 1000) as f32 / 1000.0).powi(3) * if i % 2 == 0 { 1.0 } else { -1.0 }
            })
            .collect();
        let m = Magnitudes::new(&x);
        let values: Vec<f64> = (0..m.len()).map(|i| m.value(i)).collect();
        let mut probes = vec![-1.0, 0.0, 1e-9, 0.001, 0.1, 0.3333, 0.5, 0.97, 1.0, 2.0];
        probes.extend(values.iter().step_by(97));
        for t in probes {
            let linear = values.iter().filter(|v| **v <= t).count();
            assert_eq!(m.count_le(t), linear, "t = {t}");
            for hint in [
                0,
                1,
                linear.saturating_sub(3),
                linear,
                linear + 5,
                m.len() / 2,
                m.len(),
                m.len() + 1,
            ] {
                assert_eq!(m.count_le_near(t, hint), linear, "t = {t}, hint {hint}");
            }
        }
    }

    #[test]
    fn zeros_are_left_out_but_counted_in_total() {
        let m = Magnitudes::new(&[0.0, -0.5, 0.0, 0.25]);
        assert_eq!(m.len(), 2);
        assert_eq!(m.total(), 4);
        assert_eq!(m.mean_abs(), 0.75 / 4.0);
        assert_eq!(m.stats(0, 2).sum_sq, 0.3125);
    }
}
