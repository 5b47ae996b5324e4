//! Subset search: the best K-subset S of a universal set and its scale α for one layer.
//!
//! All three methods minimise the paper's score ‖|x| − |Q_{S,α}(x)|‖₂ on x = w / max|w|:
//! - `Reference`: every K-subset (normalised so max S = 1), the paper's α iteration with an
//!   O(n·K) nearest-point scan per step. Slow; the oracle for tests.
//! - `Fast`: the same candidates and the same α iteration, each step O(K log n) on sorted
//!   magnitudes with prefix sums; candidates that provably cannot beat a known score are
//!   skipped (see `prune`). Same subset and α as `Reference`.
//! - `Dp`: for a fixed scale β the best K points of β·U is a 1-D dynamic programme over
//!   interval costs (O(K·|U|²)); a log grid of β, then alternation (α iteration ↔ DP) from the
//!   best few. Never enumerates subsets, so it handles universal sets of any size.

use rayon::prelude::*;

use crate::codebook::{paper_alpha, Codebook, StepStats, PAPER_TOLERANCE};
use crate::magnitudes::Magnitudes;
use crate::prune::Bins;
use crate::uset::UniversalSet;
use crate::{levels_for_bits, Error, Result};

/// Exhaustive methods refuse to enumerate more subsets than this.
pub const MAX_CANDIDATES: u128 = 2_000_000;

/// How to search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// The paper's algorithm, plainly ported (O(n·K) per α step).
    Reference,
    /// The paper's algorithm on sorted data (O(K log n) per α step).
    Fast,
    /// Dynamic programming over the sorted universal set, joint with α.
    Dp,
}

impl Method {
    /// The name [`FromStr`](std::str::FromStr) reads: `reference`, `fast` or `dp`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Reference => "reference",
            Self::Fast => "fast",
            Self::Dp => "dp",
        }
    }
}

impl std::str::FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "reference" => Ok(Self::Reference),
            "fast" => Ok(Self::Fast),
            "dp" => Ok(Self::Dp),
            _ => Err(format!(
                "unknown method {s:?} (expected fast, reference or dp)"
            )),
        }
    }
}

/// The chosen subset of one layer.
#[derive(Debug, Clone, PartialEq)]
pub struct SubsetChoice {
    /// The K magnitudes, ascending, normalised so the largest is 1.
    pub subset: Vec<f64>,
    /// Scale: quantized magnitudes are α · subset (in units of max|w|).
    pub alpha: f64,
    /// ‖|x| − |Q(x)|‖₂ on x = w / max|w|.
    pub l2_error: f64,
    /// Subsets considered: candidates (exhaustive methods) or DP solves (dp).
    pub candidates: usize,
    /// α iterations run to the end (the rest were proved unable to win).
    pub fitted: usize,
}

impl SubsetChoice {
    /// The choice as a codebook over x = w / max|w|.
    pub fn codebook(&self) -> Codebook {
        Codebook {
            levels: self.subset.clone(),
            alpha: self.alpha,
        }
    }
}

/// One candidate's fitted α and score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    /// α after the paper's iteration.
    pub alpha: f64,
    /// Score at that α.
    pub l2_error: f64,
    /// α steps the iteration took.
    pub steps: usize,
}

/// Checks the weights and returns (max|w|, x = w / max|w| in f32, as the reference computes it).
/// All-zero weights give max 0 and x = w.
pub fn normalize(w: &[f32]) -> Result<(f32, Vec<f32>)> {
    if w.is_empty() {
        return Err(Error::Empty);
    }
    if let Some((index, &value)) = w.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(Error::NonFinite { index, value });
    }
    let max = w.iter().fold(0f32, |m, v| m.max(v.abs()));
    if max == 0.0 {
        return Ok((0.0, w.to_vec()));
    }
    Ok((max, w.iter().map(|v| v / max).collect()))
}

/// Where each element of a weight tensor sits: its output channel, for a row-major tensor of
/// `shape` whose output channels run along `axis`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Channels {
    /// Number of output channels.
    pub count: usize,
    /// Elements per channel between two steps of the channel index (product of the dims
    /// after `axis`).
    pub inner: usize,
    /// Product of the dims before `axis`.
    pub outer: usize,
}

impl Channels {
    /// The layout of `len` weights of `shape`, channels along `axis`.
    pub fn new(shape: &[usize], axis: usize, len: usize) -> Result<Channels> {
        let numel: usize = shape.iter().product();
        if axis >= shape.len() || numel != len || numel == 0 {
            return Err(Error::Shape {
                shape: shape.to_vec(),
                axis,
                len,
            });
        }
        Ok(Channels {
            count: shape[axis],
            inner: shape[axis + 1..].iter().product(),
            outer: shape[..axis].iter().product(),
        })
    }

    /// The output channel of element `i`.
    pub fn of(&self, i: usize) -> usize {
        (i / self.inner) % self.count
    }
}

/// Per-output-channel [`normalize`]: returns (max|w| of each channel, x = w / its channel's
/// max). An all-zero channel gets max 0 and x = 0.
pub fn normalize_channels(w: &[f32], channels: Channels) -> Result<(Vec<f32>, Vec<f32>)> {
    normalize(w)?;
    let mut max = vec![0f32; channels.count];
    for (i, v) in w.iter().enumerate() {
        let c = channels.of(i);
        max[c] = max[c].max(v.abs());
    }
    let x = divide_channels(w, &max, channels);
    Ok((max, x))
}

/// `w / scales[c]` for each element's channel `c`; 0 where the scale is 0 (an all-zero
/// channel).
pub fn divide_channels(w: &[f32], scales: &[f32], channels: Channels) -> Vec<f32> {
    w.iter()
        .enumerate()
        .map(|(i, v)| match scales[channels.of(i)] {
            m if m > 0.0 => v / m,
            _ => 0.0,
        })
        .collect()
}

/// Searches one layer's weights `w` (any scale; normalised here).
///
/// All-zero weights have a defined result: every value quantizes to 0 whatever the subset, so
/// the first candidate is returned with α = 1 and error 0.
pub fn search(w: &[f32], uset: &UniversalSet, bits: u32, method: Method) -> Result<SubsetChoice> {
    let (_, x) = normalize(w)?;
    let m = Magnitudes::new(&x);
    search_prepared(&x, &m, uset, bits, method)
}

/// Searches normalised weights `x` whose magnitudes are already prepared in `m`.
pub fn search_prepared(
    x: &[f32],
    m: &Magnitudes,
    uset: &UniversalSet,
    bits: u32,
    method: Method,
) -> Result<SubsetChoice> {
    let k = levels_for_bits(bits)?;
    if uset.len() < k {
        return Err(Error::SetTooSmall {
            spec: uset.spec().to_string(),
            points: uset.len(),
            bits,
            needed: k,
        });
    }
    if m.is_empty() {
        let first = normalized(&uset.in_order()[..k]);
        return Ok(SubsetChoice {
            subset: first,
            alpha: 1.0,
            l2_error: 0.0,
            candidates: 0,
            fitted: 0,
        });
    }
    match method {
        Method::Reference => {
            let xs: Vec<f64> = x.iter().map(|v| f64::from(*v)).collect();
            exhaustive(uset, k, |s| Some(reference_fit(&xs, s)))
        }
        Method::Fast if candidate_count(uset, k) < PRUNE_FROM => {
            exhaustive(uset, k, |s| Some(fast_fit(m, s)))
        }
        Method::Fast => {
            // A near-optimal subset from the DP gives a score τ to beat; candidates whose
            // lower bound exceeds τ are skipped, which leaves the winner unchanged.
            let near_best = dp_search(m, uset.sorted(), k, DP_QUICK).subset;
            let tau = fast_fit(m, &near_best).l2_error;
            let bins = Bins::new(m);
            exhaustive(uset, k, |s| match &bins {
                Some(b) if s != near_best.as_slice() && b.cannot_beat(s, tau) => None,
                _ => Some(fast_fit(m, s)),
            })
        }
        Method::Dp => Ok(dp_search(m, uset.sorted(), k, DP_FULL)),
    }
}

/// Below this many candidates, fitting them all is cheaper than finding a bound to prune with.
const PRUNE_FROM: u128 = 1000;

fn candidate_count(uset: &UniversalSet, k: usize) -> u128 {
    binomial(uset.len() as u128, k as u128)
}

/// All K-subsets of the set in the reference's enumeration order (combinations of the points
/// in generation order), each normalised so its max is 1 and sorted ascending; subsets equal
/// after normalisation are kept once, at their first position (the reference keeps the first
/// of equal scores, so this changes no result).
pub fn candidates(uset: &UniversalSet, k: usize) -> Result<Vec<Vec<f64>>> {
    let pts = uset.in_order();
    let count = candidate_count(uset, k);
    if count > MAX_CANDIDATES {
        return Err(Error::TooManyCandidates {
            count,
            limit: MAX_CANDIDATES,
        });
    }
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    let mut idx: Vec<usize> = (0..k).collect();
    loop {
        let subset = normalized(&idx.iter().map(|&i| pts[i]).collect::<Vec<_>>());
        let key: Vec<u64> = subset.iter().map(|v| v.to_bits()).collect();
        if seen.insert(key) {
            out.push(subset);
        }
        // Next combination in lexicographic order.
        let Some(pos) = (0..k).rev().find(|&i| idx[i] < pts.len() - k + i) else {
            break;
        };
        idx[pos] += 1;
        for j in pos + 1..k {
            idx[j] = idx[j - 1] + 1;
        }
    }
    Ok(out)
}

fn binomial(n: u128, k: u128) -> u128 {
    if k > n {
        return 0;
    }
    let k = k.min(n - k);
    let mut r: u128 = 1;
    for i in 0..k {
        r = r.saturating_mul(n - i) / (i + 1);
    }
    r
}

/// Divides by the max and sorts ascending.
fn normalized(points: &[f64]) -> Vec<f64> {
    let max = points.iter().cloned().fold(0.0, f64::max);
    let mut s: Vec<f64> = points.iter().map(|p| p / max).collect();
    s.sort_by(f64::total_cmp);
    s
}

/// Evaluates every candidate (in parallel) and keeps the first with the lowest score;
/// `fit` returns None for a candidate it proved cannot be that one.
fn exhaustive(
    uset: &UniversalSet,
    k: usize,
    fit: impl Fn(&[f64]) -> Option<Fit> + Sync,
) -> Result<SubsetChoice> {
    let cands = candidates(uset, k)?;
    let fits: Vec<Option<Fit>> = cands.par_iter().map(|s| fit(s)).collect();
    let mut best: Option<(usize, Fit)> = None;
    for (i, f) in fits.iter().enumerate() {
        if let Some(f) = f {
            if best.is_none_or(|(_, b)| f.l2_error < b.l2_error) {
                best = Some((i, *f));
            }
        }
    }
    // The candidate that set the bound is never skipped, so `best` is set.
    let (i, f) = best.ok_or(Error::Empty)?;
    Ok(SubsetChoice {
        subset: cands[i].clone(),
        alpha: f.alpha,
        l2_error: f.l2_error,
        candidates: cands.len(),
        fitted: fits.iter().filter(|f| f.is_some()).count(),
    })
}

/// The paper's per-candidate work, as written: nearest point by scanning the subset for
/// every weight at every α step.
pub fn reference_fit(x: &[f64], subset: &[f64]) -> Fit {
    let step = |alpha: f64| {
        let (mut loss2, mut qx, mut qq) = (0.0, 0.0, 0.0);
        for &v in x {
            if v == 0.0 {
                continue; // sign(0) = 0: q = 0, nothing enters the sums.
            }
            let a = v.abs();
            let mut best = 0;
            for (j, s) in subset.iter().enumerate() {
                if (a - alpha * s).abs() < (a - alpha * subset[best]).abs() {
                    best = j;
                }
            }
            let s = subset[best];
            loss2 += (a - alpha * s) * (a - alpha * s);
            qx += s * a;
            qq += s * s;
        }
        StepStats {
            loss: loss2.sqrt(),
            qx,
            qq,
        }
    };
    let mean_abs = x.iter().map(|v| v.abs()).sum::<f64>() / x.len() as f64;
    let (alpha, steps) = paper_alpha(1.0, mean_abs, PAPER_TOLERANCE, step);
    Fit {
        alpha,
        l2_error: step(alpha).loss,
        steps,
    }
}

/// The same fit on sorted magnitudes: O(K log n) per α step.
pub fn fast_fit(m: &Magnitudes, subset: &[f64]) -> Fit {
    let (cb, steps) = Codebook::fit_alpha_counted(m, subset.to_vec(), 1.0, PAPER_TOLERANCE);
    Fit {
        alpha: cb.alpha,
        l2_error: cb.l2_error(m),
        steps,
    }
}

/// Best K points of β·u (u ascending) under nearest assignment: returns (squared error, indices).
fn dp_subset(m: &Magnitudes, u: &[f64], k: usize, beta: f64) -> (f64, Vec<usize>) {
    let n_pts = u.len();
    let p: Vec<f64> = u.iter().map(|v| beta * v).collect();
    let pos: Vec<usize> = p.iter().map(|&v| m.count_le(v)).collect();
    // seg[i * n + j]: data strictly between points i < j, each part to its nearer point.
    let mut seg = vec![0.0; n_pts * n_pts];
    for i in 0..n_pts {
        for j in i + 1..n_pts {
            let mid = m.count_le((p[i] + p[j]) * 0.5).clamp(pos[i], pos[j]);
            seg[i * n_pts + j] = m.stats(pos[i], mid).cost(p[i]) + m.stats(mid, pos[j]).cost(p[j]);
        }
    }
    // best[c][j]: least cost of the data ≤ p[j] using c+1 points, the largest being j.
    let mut best = vec![f64::INFINITY; k * n_pts];
    let mut from = vec![usize::MAX; k * n_pts];
    for j in 0..n_pts {
        best[j] = m.stats(0, pos[j]).cost(p[j]);
    }
    for c in 1..k {
        for j in c..n_pts {
            let mut b = f64::INFINITY;
            let mut arg = usize::MAX;
            for i in c - 1..j {
                let v = best[(c - 1) * n_pts + i] + seg[i * n_pts + j];
                if v < b {
                    b = v;
                    arg = i;
                }
            }
            best[c * n_pts + j] = b;
            from[c * n_pts + j] = arg;
        }
    }
    let mut total = f64::INFINITY;
    let mut last = k - 1;
    for j in k - 1..n_pts {
        let v = best[(k - 1) * n_pts + j] + m.stats(pos[j], m.len()).cost(p[j]);
        if v < total {
            total = v;
            last = j;
        }
    }
    let mut idx = vec![last; k];
    for c in (1..k).rev() {
        idx[c - 1] = from[c * n_pts + idx[c]];
    }
    (total, idx)
}

/// Grid over β, then alternation from the best few distinct subsets.
/// How thoroughly `dp_search` looks: grid points per octave of β, and how many distinct grid
/// winners it refines by alternation.
#[derive(Clone, Copy)]
struct DpEffort {
    per_octave: f64,
    starts: usize,
}

/// The `dp` method's own search.
const DP_FULL: DpEffort = DpEffort {
    per_octave: 24.0,
    starts: 6,
};
/// Enough to give `fast` a bound to prune with (a slightly worse τ only prunes a little less).
const DP_QUICK: DpEffort = DpEffort {
    per_octave: 8.0,
    starts: 2,
};

fn dp_search(m: &Magnitudes, u: &[f64], k: usize, effort: DpEffort) -> SubsetChoice {
    let DpEffort {
        per_octave,
        starts: starts_wanted,
    } = effort;
    /// Alternation rounds per start (each strictly improves, so this is only a guard).
    const ROUNDS: usize = 50;

    let top = m.max();
    let u_max = u[u.len() - 1];
    let u_min = u.iter().copied().find(|v| *v > 0.0).unwrap_or(u_max);
    // The largest chosen point β·max(S) sits between top/64 and just above the data's top.
    let (lo, hi) = (top / 64.0 / u_max, 1.05 * top / u_min);
    let steps = ((hi / lo).log2() * per_octave).ceil() as usize;
    let grid: Vec<(f64, f64, Vec<usize>)> = (0..=steps)
        .into_par_iter()
        .map(|i| {
            let beta = lo * 2f64.powf(i as f64 / per_octave);
            let (c, idx) = dp_subset(m, u, k, beta);
            (c, beta, idx)
        })
        .collect();
    let mut order: Vec<usize> = (0..grid.len()).collect();
    order.sort_by(|&a, &b| grid[a].0.total_cmp(&grid[b].0).then(a.cmp(&b)));
    let mut starts: Vec<usize> = Vec::new();
    for i in order {
        if starts.len() == starts_wanted {
            break;
        }
        if starts.iter().all(|&s| grid[s].2 != grid[i].2) {
            starts.push(i);
        }
    }
    let refined: Vec<(Fit, Vec<usize>, usize)> = starts
        .par_iter()
        .map(|&s| {
            let (_, mut beta, mut idx) = grid[s].clone();
            let mut solves = 0;
            let mut fit;
            loop {
                let top_point = u[idx[k - 1]];
                let subset: Vec<f64> = idx.iter().map(|&i| u[i] / top_point).collect();
                let (cb, steps) = Codebook::fit_alpha_counted(m, subset, beta * top_point, 0.0);
                fit = Fit {
                    alpha: cb.alpha,
                    l2_error: cb.l2_error(m),
                    steps,
                };
                beta = cb.alpha / top_point;
                let (_, next) = dp_subset(m, u, k, beta);
                solves += 1;
                if next == idx || solves >= ROUNDS {
                    break;
                }
                idx = next;
            }
            (fit, idx, solves)
        })
        .collect();
    // The alternation's fixed point and the paper's own start (α = 1) can end in different
    // local optima of α for the same subset: keep the better of the two.
    let refined: Vec<(Fit, Vec<usize>, usize)> = refined
        .into_par_iter()
        .map(|(fit, idx, solves)| {
            let top_point = u[idx[k - 1]];
            let subset: Vec<f64> = idx.iter().map(|&i| u[i] / top_point).collect();
            let (cb, steps) = Codebook::fit_alpha_counted(m, subset, 1.0, 0.0);
            let from_one = Fit {
                alpha: cb.alpha,
                l2_error: cb.l2_error(m),
                steps,
            };
            let fit = if from_one.l2_error < fit.l2_error {
                from_one
            } else {
                fit
            };
            (fit, idx, solves)
        })
        .collect();
    let mut best = 0;
    for (i, r) in refined.iter().enumerate() {
        if r.0.l2_error < refined[best].0.l2_error {
            best = i;
        }
    }
    let (fit, idx, _) = &refined[best];
    let top_point = u[idx[k - 1]];
    SubsetChoice {
        subset: idx.iter().map(|&i| u[i] / top_point).collect(),
        alpha: fit.alpha,
        l2_error: fit.l2_error,
        candidates: grid.len() + refined.iter().map(|r| r.2).sum::<usize>(),
        fitted: 2 * refined.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_and_their_normalization() {
        // Shape [in 2, out 3]: channels along axis 1, so elements alternate channels.
        let w = [1.0, -4.0, 0.0, -2.0, 2.0, 0.0];
        let ch = Channels::new(&[2, 3], 1, w.len()).unwrap();
        assert_eq!((ch.count, ch.inner, ch.outer), (3, 1, 2));
        assert_eq!(
            (0..6).map(|i| ch.of(i)).collect::<Vec<_>>(),
            [0, 1, 2, 0, 1, 2]
        );
        let (max, x) = normalize_channels(&w, ch).unwrap();
        assert_eq!(max, [2.0, 4.0, 0.0]);
        assert_eq!(x, [0.5, -1.0, 0.0, -1.0, 0.5, 0.0]);
        assert!(Channels::new(&[2, 3], 2, 6).is_err());
        assert!(Channels::new(&[2, 3], 0, 5).is_err());
        assert!(matches!(
            normalize_channels(&[1.0, f32::NAN], Channels::new(&[2], 0, 2).unwrap()),
            Err(Error::NonFinite { index: 1, .. })
        ));
    }

    fn laplace(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = ((s >> 11) as f64 / (1u64 << 53) as f64) - 0.5;
                (-(u.signum()) * (1.0 - 2.0 * u.abs()).max(1e-12).ln()) as f32
            })
            .collect()
    }

    #[test]
    fn candidate_counts_match_the_paper_after_dedup() {
        let u = UniversalSet::paper();
        let c4 = candidates(&u, 8).unwrap();
        assert!(c4.len() <= 6435 && c4.len() >= 3432, "{}", c4.len());
        assert!(c4.iter().all(|s| s.len() == 8 && s[7] == 1.0));
        assert_eq!(binomial(15, 8), 6435);
        assert_eq!(binomial(15, 2), 105);
    }

    #[test]
    fn fast_equals_reference_on_laplace_data() {
        let w = laplace(3000, 7);
        let u = UniversalSet::paper();
        for bits in [2, 3] {
            let r = search(&w, &u, bits, Method::Reference).unwrap();
            let f = search(&w, &u, bits, Method::Fast).unwrap();
            assert_eq!(r.subset, f.subset, "bits {bits}");
            assert!((r.alpha - f.alpha).abs() <= 1e-9 * r.alpha);
            assert!((r.l2_error - f.l2_error).abs() <= 1e-9 * r.l2_error);
        }
    }

    #[test]
    fn dp_is_no_worse_than_exhaustive() {
        let w = laplace(5000, 11);
        let u = UniversalSet::paper();
        for bits in [2, 3, 4] {
            let f = search(&w, &u, bits, Method::Fast).unwrap();
            let d = search(&w, &u, bits, Method::Dp).unwrap();
            assert!(
                d.l2_error <= f.l2_error * (1.0 + 1e-9),
                "bits {bits}: dp {} fast {}",
                d.l2_error,
                f.l2_error
            );
        }
    }

    use proptest::prelude::*;

    fn weights() -> impl Strategy<Value = Vec<f32>> {
        proptest::collection::vec(-4.0f32..4.0, 1..400)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn every_quantized_value_is_plus_or_minus_alpha_times_a_subset_point(w in weights(), bits in 2u32..=4) {
            let (_, x) = normalize(&w).unwrap();
            for method in [Method::Fast, Method::Dp] {
                let c = search(&w, &UniversalSet::paper(), bits, method).unwrap();
                prop_assert_eq!(c.subset.len(), 1 << (bits - 1));
                prop_assert_eq!(*c.subset.last().unwrap(), 1.0);
                let cb = c.codebook();
                for (xi, q) in x.iter().zip(cb.quantize(&x)) {
                    let on_grid = c.subset.iter().any(|s| (f64::from(q.abs()) - (c.alpha * s) as f32 as f64).abs() == 0.0);
                    prop_assert!(on_grid, "{} is not ±α·s", q);
                    prop_assert!(q == 0.0 || q.signum() == xi.signum());
                }
            }
        }

        #[test]
        fn error_does_not_increase_with_bits(w in weights()) {
            let u = UniversalSet::parse("sums:2:0..-5").unwrap();
            let mut prev = f64::INFINITY;
            for bits in 2..=4 {
                let e = search(&w, &u, bits, Method::Dp).unwrap().l2_error;
                prop_assert!(e <= prev * (1.0 + 1e-9), "{} bits: {} > {}", bits, e, prev);
                prev = e;
            }
        }

        #[test]
        fn fast_equals_reference_on_gaussian_data(seed in 0u64..1000, n in 1usize..300) {
            // Box-Muller from a small LCG: Gaussian data, reproducible from the seed.
            let mut s = seed.wrapping_add(1);
            let mut uniform = || { s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64 };
            let w: Vec<f32> = (0..n).map(|_| ((-2.0 * uniform().ln()).sqrt() * (std::f64::consts::TAU * uniform()).cos()) as f32).collect();
            for bits in [2, 3] {
                let r = search(&w, &UniversalSet::paper(), bits, Method::Reference).unwrap();
                let f = search(&w, &UniversalSet::paper(), bits, Method::Fast).unwrap();
                prop_assert!((r.l2_error - f.l2_error).abs() <= 1e-9 * r.l2_error.max(1e-12));
                // Different subsets only where two candidates tie (within round-off).
                if r.subset == f.subset {
                    prop_assert!((r.alpha - f.alpha).abs() <= 1e-9 * r.alpha);
                }
            }
        }
    }

    #[test]
    fn degenerate_inputs_have_defined_results_or_clear_errors() {
        let u = UniversalSet::paper();
        for method in [Method::Reference, Method::Fast, Method::Dp] {
            let zeros = search(&[0.0; 10], &u, 3, method).unwrap();
            assert_eq!(zeros.l2_error, 0.0);
            assert_eq!(zeros.subset.len(), 4);
            let one = search(&[-0.3], &u, 2, method).unwrap();
            assert!(one.l2_error < 1e-12, "{method:?}: {}", one.l2_error);
            assert_eq!(search(&[], &u, 2, method), Err(Error::Empty));
            assert!(matches!(
                search(&[1.0, f32::INFINITY], &u, 2, method),
                Err(Error::NonFinite { index: 1, .. })
            ));
            assert!(matches!(
                search(&[1.0, f32::NAN], &u, 2, method),
                Err(Error::NonFinite { index: 1, .. })
            ));
            assert_eq!(search(&[1.0], &u, 9, method), Err(Error::Bits(9)));
            assert!(matches!(
                search(&[1.0], &u, 5, method),
                Err(Error::SetTooSmall { needed: 16, .. })
            ));
        }
    }
}
