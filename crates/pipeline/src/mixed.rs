//! Mixed precision under a size budget (beyond the paper): each middle layer's bits chosen
//! from a few candidates so that the summed output error is least while the codes fit the
//! budget.
//!
//! A layer's error at b bits is measured, not modelled: the float model's output on a
//! calibration subset with that layer alone quantized at b bits (its searched codebook),
//! against the float output (mean squared difference), as ZeroQ does. Errors of different
//! layers are taken to add up. The choice is then an exact multiple-choice knapsack over the
//! layers, solved on the Pareto frontier of (code bits, summed error): after each layer only
//! the combinations that no other beats on both size and error are kept.

use serde::{Deserialize, Serialize};
use subsetq_core::levels_for_bits;
use subsetq_engine::burn_tensor::Device;
use subsetq_engine::reconstruct::{run_samples, Samples};
use subsetq_engine::{Engine, Plan, Value};
use subsetq_onnx::{Model, WeightLayer};

use crate::error::{PipelineError, Result};
use crate::options::{QuantizeOptions, Quantizer, SearchOptions};
use crate::policy;
use crate::progress::{report, OnProgress};
use crate::search::{choose, Choice};

/// The size a mixed-precision model must fit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BitBudget {
    /// The mean bits per weight over the middle layers (the first and last keep
    /// `first_last_bits`).
    AvgBits(f64),
    /// Bytes of b-bit codes over all weight layers, first and last included.
    Bytes(u64),
}

impl BitBudget {
    /// The bits the middle layers' codes may take, given their weight counts and the bits
    /// the first and last layers' codes take.
    fn middle_bits(self, middle_weights: u64, fixed_bits: u64) -> Result<u64> {
        match self {
            BitBudget::AvgBits(a) if a.is_finite() && a > 0.0 => {
                Ok((a * middle_weights as f64).floor() as u64)
            }
            BitBudget::AvgBits(a) => Err(PipelineError::invalid(format!(
                "--avg-bits {a}: expected a positive number of bits"
            ))),
            BitBudget::Bytes(b) => b.saturating_mul(8).checked_sub(fixed_bits).ok_or_else(|| {
                PipelineError::invalid(format!(
                    "--size-budget {b}: the first and last layers' codes alone take {} bytes",
                    fixed_bits.div_ceil(8)
                ))
            }),
        }
    }
}

/// Mixed-precision settings.
#[derive(Debug, Clone, PartialEq)]
pub struct MixedOptions {
    /// The budget.
    pub budget: BitBudget,
    /// The bits a middle layer may get (ascending, each 2..=8).
    pub choices: Vec<u32>,
    /// Calibration images the errors are measured on (the first N).
    pub samples: usize,
}

impl MixedOptions {
    /// Candidates {2, 3, 4, 8}, errors on 64 images.
    pub fn new(budget: BitBudget) -> Self {
        Self {
            budget,
            choices: vec![2, 3, 4, 8],
            samples: 64,
        }
    }
}

/// One middle layer's measured errors and chosen bits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerChoice {
    /// The weight initializer.
    pub name: String,
    /// Its number of weights.
    pub weights: u64,
    /// Output error (mean squared difference to the float model) with this layer alone
    /// quantized, at each candidate: `(bits, error)`.
    pub errors: Vec<(u32, f64)>,
    /// The bits chosen.
    pub bits: u32,
}

/// What the allocation chose, as stored in the record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MixedRecord {
    /// `avg-bits A` or `size-budget B`.
    pub budget: String,
    /// Bits the middle layers' codes could take, and took.
    pub budget_bits: u64,
    /// Bits the middle layers' codes take.
    pub used_bits: u64,
    /// Mean bits per middle-layer weight.
    pub avg_bits: f64,
    /// Summed measured error of the choice.
    pub predicted_error: f64,
    /// Calibration images the errors were measured on.
    pub samples: usize,
    /// Per middle layer, in graph order.
    pub layers: Vec<LayerChoice>,
}

/// The quantizer a middle layer gets at `bits`: SQ where the universal set has the levels
/// (the paper's 15 points give at most 4 bits), else uniform (8 bits: as the first and last
/// layers).
fn quantizer_at(bits: u32, search: &SearchOptions, quantizer: Quantizer) -> Quantizer {
    let enough = levels_for_bits(bits).is_ok_and(|k| k <= search.uset.len());
    if quantizer == Quantizer::Sq && !enough {
        Quantizer::Uniform
    } else {
        quantizer
    }
}

/// [`choose`] with the layer at `bits` instead of `search.bits`: SQ where the universal set
/// has the levels, else uniform.
pub fn choose_at(
    layer: &WeightLayer,
    search: &SearchOptions,
    quantizer: Quantizer,
    bits: u32,
) -> Result<Choice> {
    let at = SearchOptions {
        bits,
        ..search.clone()
    };
    choose(layer, &at, quantizer_at(bits, search, quantizer))
}

/// Measures every middle layer's output error at each candidate bits on the first
/// `opts.samples` calibration images, and chooses the bits (see the module docs), with the
/// search and quantizer of `quantize`. `float` is the model with batch norms folded, `layers`
/// its weight layers.
pub fn allocate(
    float: &Model,
    layers: &[WeightLayer],
    quantize: &QuantizeOptions,
    opts: &MixedOptions,
    calib: &Samples,
    on_progress: OnProgress,
) -> Result<MixedRecord> {
    let (search, quantizer) = (&quantize.search, quantize.quantizer);
    if opts.choices.is_empty() || opts.choices.iter().any(|b| !(2..=8).contains(b)) {
        return Err(PipelineError::invalid(format!(
            "mixed precision: candidate bits {:?} must be in 2..=8",
            opts.choices
        )));
    }
    let device = quantize.recon.backend.device()?;
    let mut engine = Engine::new(Plan::from_model(float)?, &device)?;
    let input = engine.plan().single_input()?.to_string();
    let output = engine
        .plan()
        .output_names()
        .first()
        .map(|s| s.to_string())
        .ok_or_else(|| PipelineError::invalid("the model has no output"))?;
    let subset = first_samples(calib, opts.samples);
    let reference = run_samples(&engine, &input, &subset, &output, 32)?;
    let middle: Vec<&WeightLayer> = layers
        .iter()
        .filter(|l| policy::is_learned(l.role))
        .collect();
    let total = middle.len() * opts.choices.len();
    let mut choices = Vec::with_capacity(middle.len());
    for (i, layer) in middle.iter().enumerate() {
        let mut errors = Vec::with_capacity(opts.choices.len());
        for (j, &bits) in opts.choices.iter().enumerate() {
            report(
                on_progress,
                "sensitivity",
                i * opts.choices.len() + j,
                total,
                &layer.name,
            );
            let q = choose_at(layer, search, quantizer, bits)?.dequantized();
            engine.set_param(&layer.name, weight_value(&q, &layer.shape, &device)?)?;
            let out = run_samples(&engine, &input, &subset, &output, 32)?;
            errors.push((bits, mse(&out.data, &reference.data)));
        }
        engine.set_param(
            &layer.name,
            weight_value(&layer.data, &layer.shape, &device)?,
        )?;
        choices.push(LayerChoice {
            name: layer.name.clone(),
            weights: layer.data.len() as u64,
            errors,
            bits: 0,
        });
    }
    report(on_progress, "sensitivity", total, total, "");
    let middle_weights: u64 = choices.iter().map(|c| c.weights).sum();
    let fixed_bits: u64 = layers
        .iter()
        .filter(|l| !policy::is_learned(l.role))
        .map(|l| l.data.len() as u64 * u64::from(search.first_last_bits))
        .sum();
    let budget_bits = opts.budget.middle_bits(middle_weights, fixed_bits)?;
    let (bits, predicted_error) = knapsack(&choices, budget_bits).ok_or_else(|| {
        let least: u64 = choices
            .iter()
            .map(|c| c.weights * u64::from(opts.choices[0]))
            .sum();
        PipelineError::invalid(format!(
            "{}: the middle layers need at least {least} bits ({} bytes) at {} bits each, the \
             budget leaves {budget_bits}",
            budget_name(opts.budget),
            least.div_ceil(8),
            opts.choices[0]
        ))
    })?;
    for (c, b) in choices.iter_mut().zip(&bits) {
        c.bits = *b;
    }
    let used_bits: u64 = choices.iter().map(|c| c.weights * u64::from(c.bits)).sum();
    Ok(MixedRecord {
        budget: budget_name(opts.budget),
        budget_bits,
        used_bits,
        avg_bits: used_bits as f64 / middle_weights.max(1) as f64,
        predicted_error,
        samples: subset.n,
        layers: choices,
    })
}

fn budget_name(b: BitBudget) -> String {
    match b {
        BitBudget::AvgBits(a) => format!("avg-bits {a}"),
        BitBudget::Bytes(n) => format!("size-budget {n}"),
    }
}

fn first_samples(s: &Samples, n: usize) -> Samples {
    let n = n.clamp(1, s.n.max(1)).min(s.n);
    let len: usize = s.shape.iter().product();
    Samples {
        data: s.data[..n * len].to_vec(),
        shape: s.shape.clone(),
        n,
    }
}

fn weight_value(data: &[f32], shape: &[usize], device: &Device) -> Result<Value> {
    Value::from_f32(data.to_vec(), shape, device)
        .ok_or_else(|| PipelineError::invalid(format!("a weight of shape {shape:?}")))
}

fn mse(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len().max(1) as f64;
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from(x - y).powi(2))
        .sum::<f64>()
        / n
}

/// The least summed error over one choice per layer whose bits fit `budget`, and the bits of
/// each layer; `None` when even the smallest choices do not fit. Exact: a Pareto frontier of
/// (bits, error) over the layers seen so far, each entry pointing at the one it extends.
fn knapsack(layers: &[LayerChoice], budget: u64) -> Option<(Vec<u32>, f64)> {
    #[derive(Clone, Copy)]
    struct Entry {
        size: u64,
        error: f64,
        parent: usize,
        bits: u32,
    }
    let mut frontiers: Vec<Vec<Entry>> = Vec::with_capacity(layers.len());
    let mut current = vec![Entry {
        size: 0,
        error: 0.0,
        parent: 0,
        bits: 0,
    }];
    for layer in layers {
        let mut next: Vec<Entry> = Vec::with_capacity(current.len() * layer.errors.len());
        for (p, e) in current.iter().enumerate() {
            for &(bits, error) in &layer.errors {
                let size = e.size + layer.weights * u64::from(bits);
                if size <= budget {
                    next.push(Entry {
                        size,
                        error: e.error + error,
                        parent: p,
                        bits,
                    });
                }
            }
        }
        // Smallest first, ties by error; keep an entry only when it beats every smaller one.
        next.sort_by(|a, b| a.size.cmp(&b.size).then(a.error.total_cmp(&b.error)));
        let mut kept: Vec<Entry> = Vec::with_capacity(next.len());
        for e in next {
            if kept.last().is_none_or(|k| e.error < k.error) {
                kept.push(e);
            }
        }
        if kept.is_empty() {
            return None;
        }
        frontiers.push(std::mem::replace(&mut current, kept));
    }
    frontiers.push(current);
    // The frontier is ascending in size and descending in error: its last entry is the best.
    let last = frontiers.last()?;
    let mut at = last.len().checked_sub(1)?;
    let error = last[at].error;
    let mut bits = vec![0; layers.len()];
    for i in (0..layers.len()).rev() {
        let e = frontiers[i + 1][at];
        bits[i] = e.bits;
        at = e.parent;
    }
    Some((bits, error))
}

/// The bits of a middle layer under `mixed`, when it chose them.
pub fn bits_of(mixed: &MixedRecord, name: &str) -> Option<u32> {
    mixed.layers.iter().find(|c| c.name == name).map(|c| c.bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(weights: u64, errors: &[(u32, f64)]) -> LayerChoice {
        LayerChoice {
            name: String::new(),
            weights,
            errors: errors.to_vec(),
            bits: 0,
        }
    }

    /// Every combination, by brute force.
    fn brute(layers: &[LayerChoice], budget: u64) -> Option<f64> {
        let mut best: Option<f64> = None;
        let n: usize = layers.iter().map(|l| l.errors.len()).product();
        for mut k in 0..n {
            let (mut size, mut err) = (0, 0.0);
            for l in layers {
                let (b, e) = l.errors[k % l.errors.len()];
                k /= l.errors.len();
                size += l.weights * u64::from(b);
                err += e;
            }
            if size <= budget && best.is_none_or(|b| err < b) {
                best = Some(err);
            }
        }
        best
    }

    #[test]
    fn the_knapsack_is_exact_against_brute_force() {
        // Deterministic pseudo-random layers: errors fall with bits, sizes vary.
        let mut state = 12345u64;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
            (state >> 33) as f64 / (1u64 << 31) as f64
        };
        for case in 0..40 {
            let layers: Vec<LayerChoice> = (0..6)
                .map(|_| {
                    let w = 1 + (next() * 1000.0) as u64;
                    let base = next() * 10.0;
                    layer(
                        w,
                        &[
                            (2, base * 8.0),
                            (3, base * 2.5),
                            (4, base),
                            (8, base * 0.01),
                        ],
                    )
                })
                .collect();
            let total: u64 = layers.iter().map(|l| l.weights).sum();
            let budget = (total as f64 * (2.0 + 6.0 * next())) as u64;
            let (bits, err) = knapsack(&layers, budget).expect("2 bits fit");
            let best = brute(&layers, budget).expect("fits");
            assert!((err - best).abs() < 1e-9, "case {case}: {err} vs {best}");
            let size: u64 = layers
                .iter()
                .zip(&bits)
                .map(|(l, b)| l.weights * u64::from(*b))
                .sum();
            assert!(size <= budget);
            let sum: f64 = layers
                .iter()
                .zip(&bits)
                .map(|(l, b)| l.errors.iter().find(|(x, _)| x == b).expect("a choice").1)
                .sum();
            assert!((sum - err).abs() < 1e-9);
        }
    }

    #[test]
    fn a_budget_below_the_smallest_choice_is_refused() {
        let layers = [layer(10, &[(2, 1.0), (4, 0.5)])];
        assert!(knapsack(&layers, 19).is_none());
        assert_eq!(knapsack(&layers, 20).map(|r| r.0), Some(vec![2]));
        assert_eq!(knapsack(&layers, 40).map(|r| r.0), Some(vec![4]));
        assert!(BitBudget::Bytes(1).middle_bits(10, 16).is_err());
        assert!(BitBudget::AvgBits(f64::NAN).middle_bits(10, 0).is_err());
        assert_eq!(BitBudget::AvgBits(3.0).middle_bits(10, 99).ok(), Some(30));
        assert_eq!(BitBudget::Bytes(10).middle_bits(10, 16).ok(), Some(64));
    }
}
