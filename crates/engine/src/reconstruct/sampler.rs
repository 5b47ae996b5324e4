//! Which calibration samples each step trains on: drawn with replacement by a small seeded
//! generator (SplitMix64), so a seed gives the same batches on every machine and backend.

/// A small deterministic generator for batch sampling (SplitMix64).
pub(super) struct SplitMix(u64);

impl SplitMix {
    /// The generator for `seed`.
    pub(super) fn new(seed: u64) -> SplitMix {
        SplitMix(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Indices of one batch of `batch` samples out of `n` (at least one, at most `n`), drawn
    /// with replacement.
    pub(super) fn draw_batch(&mut self, batch: usize, n: usize) -> Vec<usize> {
        (0..batch.min(n).max(1)).map(|_| self.below(n)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_reference_sequence() {
        // The published SplitMix64 outputs for seed 0: batches must not change with a refactor.
        let mut g = SplitMix::new(0);
        assert_eq!(g.next(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(g.next(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(g.next(), 0x06C4_5D18_8009_454F);
    }

    #[test]
    fn batches_stay_in_range_and_are_capped_by_the_set() {
        let mut g = SplitMix::new(7);
        let idx = g.draw_batch(32, 5);
        assert_eq!(idx.len(), 5);
        assert!(idx.iter().all(|&i| i < 5));
        assert_eq!(SplitMix::new(7).draw_batch(0, 5).len(), 1);
    }
}
