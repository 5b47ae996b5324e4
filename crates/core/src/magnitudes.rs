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
    sorted: Vec<f64>,
    sum1: Vec<f64>,
    sum2: Vec<f64>,
    total: usize,
    /// `bucket_start[b]` = number of values ≤ b / buckets.
    bucket_start: Vec<u32>,
    buckets: f64,
    max: f64,
}

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
        let mut sorted: Vec<f64> = x
            .iter()
            .filter(|v| **v != 0.0)
            .map(|v| f64::from(v.abs()))
            .collect();
        sorted.sort_unstable_by(f64::total_cmp);
        let n = sorted.len();
        let mut sum1 = Vec::with_capacity(n + 1);
        let mut sum2 = Vec::with_capacity(n + 1);
        let (mut a, mut b) = (0.0, 0.0);
        sum1.push(0.0);
        sum2.push(0.0);
        for v in &sorted {
            a += v;
            b += v * v;
            sum1.push(a);
            sum2.push(b);
        }
        let max = sorted.last().copied().unwrap_or(0.0);
        // About one bucket per value, capped so the index stays in cache.
        let nb = n.next_power_of_two().clamp(16, 1 << 16);
        let scale = if max > 0.0 { nb as f64 / max } else { 1.0 };
        let mut bucket_start = Vec::with_capacity(nb + 2);
        let mut pos = 0usize;
        for b in 0..=nb + 1 {
            let edge = b as f64 / scale;
            while pos < n && sorted[pos] <= edge {
                pos += 1;
            }
            bucket_start.push(pos as u32);
        }
        Self {
            sorted,
            sum1,
            sum2,
            total: x.len(),
            bucket_start,
            buckets: scale,
            max,
        }
    }

    /// Number of nonzero values.
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// True when every value was zero.
    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
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
            self.sum1[self.sorted.len()] / self.total as f64
        }
    }

    /// The sorted nonzero magnitudes.
    pub fn values(&self) -> &[f64] {
        &self.sorted
    }

    /// Number of values ≤ t.
    #[inline]
    pub fn count_le(&self, t: f64) -> usize {
        if t >= self.max {
            return self.sorted.len();
        }
        if t < 0.0 {
            return 0;
        }
        // Values ≤ t lie below bucket b+1's start; those ≤ b/scale are already counted.
        let last = self.bucket_start.len() - 2;
        let mut b = ((t * self.buckets) as usize).min(last);
        // Guard against rounding in t * scale: bucket b must satisfy b/scale <= t < (b+1)/scale.
        while b > 0 && b as f64 / self.buckets > t {
            b -= 1;
        }
        while b < last && (b + 1) as f64 / self.buckets <= t {
            b += 1;
        }
        let lo = self.bucket_start[b] as usize;
        let hi = self.bucket_start[b + 1] as usize;
        lo + self.sorted[lo..hi].partition_point(|v| *v <= t)
    }

    /// Stats of sorted positions `lo..hi`.
    #[inline]
    pub fn stats(&self, lo: usize, hi: usize) -> RangeStats {
        debug_assert!(lo <= hi && hi <= self.sorted.len());
        RangeStats {
            count: (hi - lo) as f64,
            sum: self.sum1[hi] - self.sum1[lo],
            sum_sq: self.sum2[hi] - self.sum2[lo],
        }
    }

    /// Σ v² over all values.
    pub fn total_sq(&self) -> f64 {
        self.sum2[self.sorted.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_le_matches_a_linear_count() {
        let x: Vec<f32> = (0..5000)
            .map(|i| (((i * 7919) % 1000) as f32 / 1000.0).powi(3) * if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        let m = Magnitudes::new(&x);
        for t in [-1.0, 0.0, 1e-9, 0.001, 0.1, 0.3333, 0.5, 0.97, 1.0, 2.0] {
            let linear = m.values().iter().filter(|v| **v <= t).count();
            assert_eq!(m.count_le(t), linear, "t = {t}");
        }
        for v in m.values().iter().step_by(97) {
            let linear = m.values().iter().filter(|w| *w <= v).count();
            assert_eq!(m.count_le(*v), linear);
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
