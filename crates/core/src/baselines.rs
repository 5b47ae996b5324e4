//! Baseline weight quantizers on the same bit budget as SQ (sign + (b−1)-bit magnitude index),
//! per tensor or per output channel, and Lloyd-Max as the measuring stick.
//!
//! Each baseline is a [`Codebook`] with fixed levels; only the scale differs in how it is set:
//! - `UniformMinMax`: levels {0, 1/(K−1), …, 1}, α = max|x| (symmetric, 2K−1 values).
//! - `UniformMse`: the same levels, α minimising the L2 error (clipping chosen by MSE).
//! - `Pot`: power-of-two levels {0, 2^−(K−2), …, 2^−1, 1}, α by MSE.
//! - `Apot`: additive powers-of-two (Li et al. 2020): sums of one even-exponent term
//!   {0, 2⁰, 2⁻², …} and one odd-exponent term {0, 2⁻¹, 2⁻³, …}, 2^(b−1) levels, α by MSE.
//!
//! [`lloyd_max`] is the unconstrained optimum for K magnitudes (1-D k-means on |x|): the error
//! no codebook of the same size can beat, so SQ's error / Lloyd-Max says how much is left.

use crate::codebook::Codebook;
use crate::magnitudes::Magnitudes;
use crate::{levels_for_bits, Channels, Result};

/// A baseline quantizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Baseline {
    /// Uniform symmetric, scale = max|x|.
    UniformMinMax,
    /// Uniform symmetric, scale by least L2 error.
    UniformMse,
    /// Power-of-two levels.
    Pot,
    /// Additive powers-of-two levels.
    Apot,
}

impl Baseline {
    /// Every baseline, in report order.
    pub const ALL: [Baseline; 4] = [Self::UniformMinMax, Self::UniformMse, Self::Pot, Self::Apot];

    /// Short name used in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::UniformMinMax => "uniform",
            Self::UniformMse => "uniform_mse",
            Self::Pot => "pot",
            Self::Apot => "apot",
        }
    }

    /// The K = 2^(b−1) normalised levels, ascending, largest 1.
    pub fn levels(self, bits: u32) -> Result<Vec<f64>> {
        let k = levels_for_bits(bits)?;
        let levels = match self {
            Self::UniformMinMax | Self::UniformMse => {
                (0..k).map(|i| i as f64 / (k - 1) as f64).collect()
            }
            Self::Pot => std::iter::once(0.0)
                .chain((0..k - 1).rev().map(|e| 2f64.powi(-(e as i32))))
                .collect(),
            Self::Apot => {
                let mag_bits = bits - 1;
                let even_terms = 1usize << mag_bits.div_ceil(2);
                let odd_terms = 1usize << (mag_bits / 2);
                // Term value i: 0 for i = 0, else 2^−(2(i−1)) (even) or 2^−(2(i−1)+1) (odd).
                let term = |i: usize, odd: bool| {
                    if i == 0 {
                        0.0
                    } else {
                        2f64.powi(-(2 * (i as i32 - 1) + i32::from(odd)))
                    }
                };
                let mut v: Vec<f64> = (0..even_terms)
                    .flat_map(|a| (0..odd_terms).map(move |b| term(a, false) + term(b, true)))
                    .collect();
                v.sort_by(f64::total_cmp);
                let max = v[v.len() - 1];
                v.iter().map(|x| x / max).collect()
            }
        };
        Ok(levels)
    }

    /// Fits this baseline to prepared magnitudes.
    pub fn fit(self, m: &Magnitudes, bits: u32) -> Result<Codebook> {
        let levels = self.levels(bits)?;
        if m.is_empty() {
            return Ok(Codebook { levels, alpha: 1.0 });
        }
        Ok(match self {
            Self::UniformMinMax => Codebook {
                levels,
                alpha: m.max(),
            },
            _ => mse_fit(m, levels),
        })
    }
}

/// Least-error α for fixed levels: a grid over clipping ratios (the error is not convex in α),
/// then the α iteration from the best grid point, which can only lower the error.
pub fn mse_fit(m: &Magnitudes, levels: Vec<f64>) -> Codebook {
    const GRID: usize = 100;
    let top = m.max();
    let mut best = Codebook { levels, alpha: top };
    let mut best_err = best.l2_error(m);
    for i in 1..GRID {
        let cb = Codebook {
            levels: best.levels.clone(),
            alpha: top * (1.0 - i as f64 / GRID as f64 * 0.95),
        };
        let e = cb.l2_error(m);
        if e < best_err {
            best_err = e;
            best = cb;
        }
    }
    let refined = Codebook::fit_alpha(m, best.levels.clone(), best.alpha);
    if refined.l2_error(m) < best_err {
        refined
    } else {
        best
    }
}

/// Lloyd-Max: K free magnitudes by 1-D k-means on the nonzero |x|, from a quantile start and
/// from each of `starts` (k-means only ever lowers the error of its start, so the result is no
/// worse than any of them); the best is returned.
pub fn lloyd_max(m: &Magnitudes, k: usize, starts: &[&Codebook]) -> Codebook {
    if m.is_empty() || k == 0 {
        return Codebook {
            levels: vec![0.0; k.max(1)],
            alpha: 1.0,
        };
    }
    let quantiles: Vec<f64> = (0..k)
        .map(|j| m.value(((2 * j + 1) * m.len() / (2 * k)).min(m.len() - 1)))
        .collect();
    let mut best = kmeans(m, quantiles);
    let mut best_err = best.l2_error(m);
    for s in starts.iter().filter(|s| s.levels.len() == k) {
        let cb = kmeans(m, s.levels.iter().map(|l| l * s.alpha).collect());
        let e = cb.l2_error(m);
        if e < best_err {
            best = cb;
            best_err = e;
        }
    }
    best
}

/// Lloyd iterations on sorted magnitudes from the given centers.
fn kmeans(m: &Magnitudes, mut centers: Vec<f64>) -> Codebook {
    const ITERATIONS: usize = 300;
    let k = centers.len();
    centers.sort_by(f64::total_cmp);
    for _ in 0..ITERATIONS {
        let mut next = centers.clone();
        let mut lo = 0;
        for j in 0..k {
            let hi = if j + 1 < k {
                m.count_le((centers[j] + centers[j + 1]) * 0.5).max(lo)
            } else {
                m.len()
            };
            let st = m.stats(lo, hi);
            if st.count > 0.0 {
                next[j] = st.sum / st.count;
            }
            lo = hi;
        }
        next.sort_by(f64::total_cmp);
        if next == centers {
            break;
        }
        centers = next;
    }
    centers.dedup();
    let alpha = centers[centers.len() - 1];
    Codebook {
        levels: centers.iter().map(|c| c / alpha).collect(),
        alpha,
    }
}

/// Splits weights of `shape` into output channels along `axis` (each channel's values in
/// row-major order).
pub fn split_channels(x: &[f32], shape: &[usize], axis: usize) -> Result<Vec<Vec<f32>>> {
    let channels = Channels::new(shape, axis, x.len())?;
    let mut out = vec![Vec::with_capacity(x.len() / channels.count); channels.count];
    for (i, v) in x.iter().enumerate() {
        out[channels.of(i)].push(*v);
    }
    Ok(out)
}

/// L2 error of a baseline fitted per output channel (each channel its own α), over the whole
/// tensor: sqrt(Σ_c error_c²).
pub fn per_channel_error(
    x: &[f32],
    shape: &[usize],
    axis: usize,
    baseline: Baseline,
    bits: u32,
) -> Result<f64> {
    let mut total = 0.0;
    for ch in split_channels(x, shape, axis)? {
        let m = Magnitudes::new(&ch);
        total += baseline.fit(&m, bits)?.l2_error(&m).powi(2);
    }
    Ok(total.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_sets_have_k_points_max_one() {
        for bits in 2..=8 {
            for b in Baseline::ALL {
                let l = b.levels(bits).unwrap();
                assert_eq!(l.len(), 1 << (bits - 1), "{b:?} {bits}");
                assert_eq!(l[l.len() - 1], 1.0);
                assert!(l.windows(2).all(|w| w[0] < w[1]), "{b:?} {bits}: {l:?}");
            }
        }
        assert_eq!(Baseline::Pot.levels(3).unwrap(), vec![0.0, 0.25, 0.5, 1.0]);
        let apot4: Vec<f64> = Baseline::Apot
            .levels(4)
            .unwrap()
            .iter()
            .map(|v| v * 1.5)
            .collect();
        assert_eq!(apot4, vec![0.0, 0.0625, 0.25, 0.5, 0.5625, 0.75, 1.0, 1.5]);
    }

    #[test]
    fn mse_fit_beats_minmax_and_lloyd_beats_all() {
        let x: Vec<f32> = (0..4000)
            .map(|i| (((i * 7919) % 4001) as f32 / 4001.0 - 0.5).powi(3) * 8.0)
            .collect();
        let m = Magnitudes::new(&x);
        let minmax = Baseline::UniformMinMax.fit(&m, 3).unwrap().l2_error(&m);
        let mse = Baseline::UniformMse.fit(&m, 3).unwrap().l2_error(&m);
        let lloyd = lloyd_max(&m, 4, &[]).l2_error(&m);
        assert!(mse < minmax, "{mse} vs {minmax}");
        for b in Baseline::ALL {
            let e = b.fit(&m, 3).unwrap().l2_error(&m);
            assert!(lloyd <= e * (1.0 + 1e-9), "{b:?}: lloyd {lloyd} > {e}");
        }
    }

    #[test]
    fn split_channels_follows_the_axis() {
        let x: Vec<f32> = (0..6).map(|v| v as f32).collect();
        assert_eq!(
            split_channels(&x, &[2, 3], 0).unwrap(),
            vec![vec![0., 1., 2.], vec![3., 4., 5.]]
        );
        assert_eq!(
            split_channels(&x, &[2, 3], 1).unwrap(),
            vec![vec![0., 3.], vec![1., 4.], vec![2., 5.]]
        );
        assert!(split_channels(&x, &[4, 3], 0).is_err());
        assert!(split_channels(&x, &[2, 3], 2).is_err());
    }
}
