//! Block reconstruction, the paper's way: per block, learn one multiplier per weight (`clv`,
//! init 1) and one scale per output channel (`calpha`, init 1) so that the quantized block's
//! output matches the float block's on calibration data:
//!
//! `w_q = m_c · calpha_c · Q(w / m_c · clv)`, with `m_c = max|w|` of the layer (the paper) or
//! of output channel `c` (per-channel scales), and `Q` rounding to the nearest of `±α · S` (the
//! searched subset `S` and `α` stay fixed); the gradient passes straight through
//! `Q`. Loss = squared error summed over output channels and averaged over batch and positions,
//! plus `λ(t) · Σ_layers ‖|w| − |w_q|‖₂` with `λ = 0` for the first 20 % of iterations, then
//! 1e-2 falling linearly to 1e-3. Adam, learning rate on a cosine to 0.
//!
//! The block's input comes from the model quantized so far, its target from the float model
//! ([`reconstruct_model`] runs the blocks in order). After reconstruction every weight is still
//! `sign · m_c · calpha_c · α · s_i` with `s_i ∈ S`.

use std::collections::HashMap;
use std::time::Instant;

use burn_tensor::{Device, Tensor, TensorData};
use rayon::prelude::*;
use subsetq_core::{divide_channels, Channels, Codebook};
use subsetq_onnx::Model;

use crate::backend::Backend;
use crate::error::{EngineError, Result};
use crate::plan::{Engine, Plan};
use crate::value::{reshape_tensor, Value};

/// One weight layer's quantizer, as searched, and its float weights.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerQuantizer {
    /// The weight initializer.
    pub name: String,
    /// The weight's shape.
    pub shape: Vec<usize>,
    /// Axis of the output channels in `shape`.
    pub out_axis: usize,
    /// Float (BN-folded) weights.
    pub weight: Vec<f32>,
    /// `m_c`, one per output channel: the weights were searched as `w / m_c` (all equal to
    /// `max|w|` for per-tensor scales).
    pub scales: Vec<f32>,
    /// The searched magnitudes `S` and `α`: `Q(x) = sign(x) · α · s`, `s ∈ S` nearest to
    /// `|x| / α` (the core's rounding, so that before learning the weights are the searched
    /// ones exactly).
    pub codebook: Codebook,
}

impl LayerQuantizer {
    fn channels(&self) -> Result<Channels> {
        let c = Channels::new(&self.shape, self.out_axis, self.weight.len())
            .map_err(|e| EngineError::Graph(format!("weight {}: {e}", self.name)))?;
        if self.scales.len() != c.count {
            return Err(EngineError::Graph(format!(
                "weight {}: {} scales for {} output channels",
                self.name,
                self.scales.len(),
                c.count
            )));
        }
        Ok(c)
    }

    /// The quantized weights for the learned `clv` and `calpha` (no straight-through part).
    pub fn quantized(&self, learned: &Learned) -> Result<Vec<f32>> {
        let channels = self.channels()?;
        Ok(divide_channels(&self.weight, &self.scales, channels)
            .iter()
            .zip(&learned.clv)
            .enumerate()
            .map(|(i, (x, v))| {
                let c = channels.of(i);
                self.scales[c] * learned.calpha[c] * self.codebook.quantize_value(x * v)
            })
            .collect())
    }
}

/// What reconstruction learned for one layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Learned {
    /// One multiplier per weight.
    pub clv: Vec<f32>,
    /// One scale per output channel.
    pub calpha: Vec<f32>,
}

impl Learned {
    fn initial(layer: &LayerQuantizer) -> Learned {
        Learned {
            clv: vec![1.0; layer.weight.len()],
            calpha: vec![1.0; layer.scales.len()],
        }
    }
}

/// What [`reconstruct_block`] learned.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockLearned {
    /// Per layer, in the order given.
    pub layers: Vec<Learned>,
    /// Step sizes of the block's activation quantizers, by initializer name.
    pub act_steps: Vec<(String, f32)>,
}

/// Reconstruction settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Adam steps per block.
    pub iters: usize,
    /// Calibration samples per step.
    pub batch: usize,
    /// Peak learning rate (the paper: 1e-4 at 4 bits, 5e-4 at 3 and 2 bits).
    pub lr: f64,
    /// Seed of the batch sampling.
    pub seed: u64,
    /// Where the block forwards and backwards run.
    pub backend: Backend,
}

/// `λ(t)`: 0 for the first 20 % of the steps, then 1e-2 falling linearly to 1e-3.
pub fn lambda(step: usize, iters: usize) -> f64 {
    let warmup = iters / 5;
    if step < warmup || iters <= warmup {
        return 0.0;
    }
    let t = (step - warmup) as f64 / (iters - warmup).max(1) as f64;
    1e-2 + (1e-3 - 1e-2) * t
}

/// Samples stored one after another: `n` samples of `shape` each.
#[derive(Debug, Clone, PartialEq)]
pub struct Samples {
    /// `n × shape.product()` values.
    pub data: Vec<f32>,
    /// Shape of one sample.
    pub shape: Vec<usize>,
    /// Number of samples.
    pub n: usize,
}

impl Samples {
    fn len(&self) -> usize {
        self.shape.iter().product()
    }

    fn gather(&self, idx: &[usize]) -> Vec<f32> {
        let len = self.len();
        idx.iter()
            .flat_map(|&i| self.data[i * len..(i + 1) * len].iter().copied())
            .collect()
    }

    fn batch_shape(&self, n: usize) -> Vec<usize> {
        std::iter::once(n)
            .chain(self.shape.iter().copied())
            .collect()
    }

    fn value(&self, idx: &[usize], device: &Device) -> Result<Value> {
        let shape = self.batch_shape(idx.len());
        Value::from_f32(self.gather(idx), &shape, device).ok_or_else(|| EngineError::Input {
            name: "calibration batch".to_string(),
            msg: format!("shape {shape:?} is not a tensor the engine can hold"),
        })
    }
}

/// Runs `engine` on all `samples` (in batches) and returns the values of `wanted`.
pub fn run_samples(
    engine: &Engine,
    input: &str,
    samples: &Samples,
    wanted: &str,
    batch: usize,
) -> Result<Samples> {
    let mut data = Vec::new();
    let mut shape = Vec::new();
    let all: Vec<usize> = (0..samples.n).collect();
    for idx in all.chunks(batch.max(1)) {
        let x = samples.value(idx, engine.device())?;
        let out = engine.run_for(&[(input, x)], &[wanted])?;
        let Some(y) = out.into_iter().next() else {
            return Err(EngineError::Graph(format!("{wanted} was not computed")));
        };
        shape = y.dims()[1..].to_vec();
        data.extend(y.to_vec());
    }
    Ok(Samples {
        data,
        shape,
        n: samples.n,
    })
}

/// The paper's reconstruction loss without the regulariser: squared error summed over output
/// channels (axis 1), averaged over batch and positions.
fn output_loss(y: Value, t: Value) -> Tensor<1> {
    let dims = y.dims();
    let channels = dims.get(1).copied().unwrap_or(1).max(1);
    let per = (dims.iter().product::<usize>() / channels).max(1) as f32;
    let sum = match (y, t) {
        (Value::R1(a), Value::R1(b)) => (a - b).square().sum(),
        (Value::R2(a), Value::R2(b)) => (a - b).square().sum(),
        (Value::R3(a), Value::R3(b)) => (a - b).square().sum(),
        (Value::R4(a), Value::R4(b)) => (a - b).square().sum(),
        (Value::R5(a), Value::R5(b)) => (a - b).square().sum(),
        (Value::R6(a), Value::R6(b)) => (a - b).square().sum(),
        _ => unreachable!("output and target have the same rank"),
    };
    sum.div_scalar(per)
}

fn scalar(t: Tensor<1>) -> f64 {
    f64::from(t.into_scalar::<f32>())
}

/// Adam state of one parameter vector.
struct Adam {
    m: Vec<f32>,
    v: Vec<f32>,
}

impl Adam {
    const B1: f64 = 0.9;
    const B2: f64 = 0.999;
    const EPS: f64 = 1e-8;

    fn new(n: usize) -> Adam {
        Adam {
            m: vec![0.0; n],
            v: vec![0.0; n],
        }
    }

    fn step(&mut self, p: &mut [f32], g: &[f32], lr: f64, t: usize) {
        let c1 = 1.0 - Self::B1.powi(t as i32);
        let c2 = 1.0 - Self::B2.powi(t as i32);
        for i in 0..p.len() {
            let gi = f64::from(g[i]);
            let m = Self::B1 * f64::from(self.m[i]) + (1.0 - Self::B1) * gi;
            let v = Self::B2 * f64::from(self.v[i]) + (1.0 - Self::B2) * gi * gi;
            self.m[i] = m as f32;
            self.v[i] = v as f32;
            p[i] -= (lr * (m / c1) / ((v / c2).sqrt() + Self::EPS)) as f32;
        }
    }
}

/// A small deterministic generator for batch sampling (SplitMix64).
struct SplitMix(u64);

impl SplitMix {
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
}

/// Progress of [`reconstruct_model`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Block being reconstructed (0-based) and the number of blocks.
    pub block: usize,
    /// Number of blocks with layers to learn.
    pub blocks: usize,
    /// Steps done in this block.
    pub step: usize,
    /// Steps per block.
    pub steps: usize,
    /// The last step's loss.
    pub loss: f64,
}

/// One reconstructed block.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockReport {
    /// Block input and output tensors.
    pub input: String,
    /// The block's output tensor.
    pub output: String,
    /// The weights learned in it.
    pub layers: Vec<String>,
    /// Their learned per-output-channel scales, in `layers` order.
    pub calpha: Vec<Vec<f32>>,
    /// Learned step sizes of the block's activation quantizers, by initializer name.
    pub act_steps: Vec<(String, f32)>,
    /// Output loss on all calibration samples with the searched weights.
    pub loss_before: f64,
    /// The same after reconstruction.
    pub loss_after: f64,
    /// Wall time.
    pub seconds: f64,
}

fn hard_loss(
    block: &Plan,
    device: &Device,
    (input, output): (&str, &str),
    x: &Samples,
    t: &Samples,
) -> Result<f64> {
    let engine = Engine::new(block.clone(), device)?;
    let y = run_samples(&engine, input, x, output, 64)?;
    let channels = y.shape.first().copied().unwrap_or(1).max(1);
    let per = (y.data.len() / channels).max(1) as f64;
    let sum: f64 = y
        .data
        .iter()
        .zip(&t.data)
        .map(|(a, b)| f64::from(a - b).powi(2))
        .sum();
    Ok(sum / per)
}

/// Elements per parallel task of the host-side rounding.
const QUANTIZE_CHUNK: usize = 1 << 14;

/// One layer's constants during reconstruction.
struct Prepared {
    channels: Channels,
    /// `w / m_c`, on the host and as a tensor.
    normalized: Vec<f32>,
    normalized_t: Tensor<1>,
    /// `m_c` as a `[1, C, 1]` tensor.
    scales: Tensor<3>,
    abs_w: Tensor<1>,
    sign: Tensor<1>,
}

/// Learns `clv` and `calpha` of `layers` (all in `block`, a model of one block), and the step
/// sizes of the block's activation quantizers (initializers named `*.act_scale`), so that the
/// block maps `inputs` to `targets`. Returns what was learned, in `layers` order, and the
/// learned step sizes by initializer name. `device` is `settings.backend`'s, already checked.
pub fn reconstruct_block(
    block: &Model,
    layers: &[&LayerQuantizer],
    inputs: &Samples,
    targets: &Samples,
    settings: &Settings,
    device: &Device,
    mut on_step: impl FnMut(usize, f64),
) -> Result<BlockLearned> {
    let plan = Plan::from_model(block)?;
    let input = plan.single_input()?.to_string();
    let output = plan
        .output_names()
        .first()
        .map(|s| s.to_string())
        .ok_or_else(|| EngineError::Graph("the block has no output".to_string()))?;
    let ad = device.clone().autodiff();
    let mut engine = Engine::new(plan, &ad)?;

    let flat = |v: Vec<f32>| {
        let n = v.len();
        Tensor::<1>::from_data(TensorData::new(v, [n]), &ad)
    };
    let prepared: Vec<Prepared> = layers
        .iter()
        .map(|l| {
            let channels = l.channels()?;
            let normalized = divide_channels(&l.weight, &l.scales, channels);
            let sign: Vec<f32> = l
                .weight
                .iter()
                .map(|w| w.signum() * f32::from(*w != 0.0))
                .collect();
            Ok(Prepared {
                channels,
                normalized_t: flat(normalized.clone()),
                normalized,
                scales: flat(l.scales.clone()).reshape([1, channels.count, 1]),
                abs_w: flat(l.weight.iter().map(|w| w.abs()).collect()),
                sign: flat(sign),
            })
        })
        .collect::<Result<_>>()?;
    let mut learned: Vec<Learned> = layers.iter().map(|l| Learned::initial(l)).collect();
    let mut adam: Vec<(Adam, Adam)> = learned
        .iter()
        .map(|p| (Adam::new(p.clv.len()), Adam::new(p.calpha.len())))
        .collect();
    // Activation quantizers in the block: their step sizes are learned too.
    let act_scales: Vec<String> = block
        .graph()?
        .initializer
        .iter()
        .map(|t| t.name().to_string())
        .filter(|n| n.ends_with(".act_scale"))
        .collect();
    let mut steps: Vec<f32> = act_scales
        .iter()
        .map(|n| {
            engine
                .param(n)
                .map(|v| v.to_vec().first().copied().unwrap_or(1.0))
                .unwrap_or(1.0)
        })
        .collect();
    let mut step_adam = Adam::new(steps.len());
    let mut rng = SplitMix(settings.seed);

    for step in 0..settings.iters {
        let idx: Vec<usize> = (0..settings.batch.min(inputs.n).max(1))
            .map(|_| rng.below(inputs.n))
            .collect();
        let x = inputs.value(&idx, &ad)?;
        let t = targets.value(&idx, &ad)?;
        let lam = lambda(step, settings.iters);
        let mut params = Vec::with_capacity(layers.len());
        let mut reg: Option<Tensor<1>> = None;
        for ((l, p), pre) in layers.iter().zip(&learned).zip(&prepared) {
            // Q(x) on the host, in parallel: the codebook's own rounding.
            let q_host: Vec<f32> = pre
                .normalized
                .par_chunks(QUANTIZE_CHUNK)
                .zip(p.clv.par_chunks(QUANTIZE_CHUNK))
                .flat_map_iter(|(w, v)| {
                    let x: Vec<f32> = w.iter().zip(v).map(|(w, v)| w * v).collect();
                    l.codebook.quantize(&x)
                })
                .collect();
            let clv = flat(p.clv.clone()).require_grad();
            let calpha = flat(p.calpha.clone()).require_grad();
            let xq = pre.normalized_t.clone() * clv.clone();
            // Straight through: the forward value is exactly Q(x), the gradient that of x.
            let q = flat(q_host) + (xq.clone() - xq.detach());
            // Scale per channel by broadcasting over an [outer, C, inner] view (a gather would
            // need a scatter-add in the backward pass).
            let Channels {
                count,
                inner,
                outer,
            } = pre.channels;
            let per_channel = calpha.clone().reshape([1, count, 1]) * pre.scales.clone();
            let wq =
                (q.reshape([outer, count, inner]) * per_channel).reshape([outer * count * inner]);
            if lam > 0.0 {
                let gap = (pre.abs_w.clone() - wq.clone() * pre.sign.clone())
                    .square()
                    .sum()
                    .sqrt();
                reg = Some(match reg {
                    Some(r) => r + gap,
                    None => gap,
                });
            }
            engine.set_param(&l.name, reshape_tensor(wq, &l.shape))?;
            params.push((clv, calpha));
        }
        let step_params: Vec<Tensor<1>> = act_scales
            .iter()
            .zip(&steps)
            .map(|(name, &v)| {
                let t = flat(vec![v]).require_grad();
                engine.set_param(name, Value::R1(t.clone())).map(|_| t)
            })
            .collect::<Result<_>>()?;
        let y = engine
            .run_for(&[(input.as_str(), x)], &[output.as_str()])?
            .into_iter()
            .next()
            .ok_or_else(|| EngineError::Graph(format!("{output} was not computed")))?;
        let rec = output_loss(y, t);
        let loss = match reg {
            Some(r) => rec + r.mul_scalar(lam),
            None => rec,
        };
        let grads = loss.backward();
        let lr = settings.lr
            * 0.5
            * (1.0 + (std::f64::consts::PI * step as f64 / settings.iters as f64).cos());
        for ((p, (clv, calpha)), (a_clv, a_calpha)) in
            learned.iter_mut().zip(&params).zip(adam.iter_mut())
        {
            let g = |t: &Tensor<1>| -> Vec<f32> {
                t.grad(&grads)
                    .map(|g| g.into_data().iter::<f32>().collect())
                    .unwrap_or_default()
            };
            let (g_clv, g_calpha) = (g(clv), g(calpha));
            if g_clv.len() == p.clv.len() {
                a_clv.step(&mut p.clv, &g_clv, lr, step + 1);
            }
            if g_calpha.len() == p.calpha.len() {
                a_calpha.step(&mut p.calpha, &g_calpha, lr, step + 1);
            }
        }
        if !step_params.is_empty() {
            let g: Vec<f32> = step_params
                .iter()
                .map(|t| {
                    t.grad(&grads)
                        .map(|g| g.into_scalar::<f32>())
                        .unwrap_or(0.0)
                })
                .collect();
            step_adam.step(&mut steps, &g, lr, step + 1);
            for v in &mut steps {
                *v = v.max(f32::MIN_POSITIVE);
            }
        }
        on_step(step + 1, scalar(loss));
    }
    Ok(BlockLearned {
        layers: learned,
        act_steps: act_scales.into_iter().zip(steps).collect(),
    })
}

/// Reconstructs every block of `float` that holds one of `layers`, in graph order, writing
/// the reconstructed weights into `quantized` (the same graph with the searched weights).
/// Weights not in `layers` (first and last layers) keep their values in `quantized`.
/// Holds the calibration set's inputs and targets of one block at a time:
/// `calibration.n × (block input + block output)` values.
pub fn reconstruct_model(
    float: &Model,
    quantized: &mut Model,
    layers: &[LayerQuantizer],
    calibration: &Samples,
    settings: &Settings,
    mut on_progress: impl FnMut(Progress),
) -> Result<Vec<BlockReport>> {
    let by_name: HashMap<&str, &LayerQuantizer> =
        layers.iter().map(|l| (l.name.as_str(), l)).collect();
    // Blocks of the quantized graph (it may hold activation quantizers); tensor names are the
    // float graph's, so targets are read from the float model by name.
    let blocks: Vec<_> = quantized
        .blocks()?
        .into_iter()
        .filter(|b| b.weights.iter().any(|w| by_name.contains_key(w.as_str())))
        .collect();
    let device = settings.backend.device()?;
    let float_engine = Engine::new(Plan::from_model(float)?, &device)?;
    let graph_input = float_engine.plan().single_input()?.to_string();
    let mut reports = Vec::with_capacity(blocks.len());
    for (bi, block) in blocks.iter().enumerate() {
        let started = Instant::now();
        let quant_engine = Engine::new(Plan::from_model(quantized)?, &device)?;
        let inputs = if block.input == graph_input {
            calibration.clone()
        } else {
            run_samples(&quant_engine, &graph_input, calibration, &block.input, 64)?
        };
        let targets = run_samples(&float_engine, &graph_input, calibration, &block.output, 64)?;
        let sub = quantized.extract_block(block)?;
        let block_layers: Vec<&LayerQuantizer> = block
            .weights
            .iter()
            .filter_map(|w| by_name.get(w.as_str()).copied())
            .collect();
        let sub_plan = Plan::from_model(&sub)?;
        let ends = (block.input.as_str(), block.output.as_str());
        let loss_before = hard_loss(&sub_plan, &device, ends, &inputs, &targets)?;
        let block_settings = Settings {
            seed: settings.seed.wrapping_add(bi as u64),
            ..settings.clone()
        };
        let BlockLearned {
            layers: learned,
            act_steps,
        } = reconstruct_block(
            &sub,
            &block_layers,
            &inputs,
            &targets,
            &block_settings,
            &device,
            |step, loss| {
                on_progress(Progress {
                    block: bi,
                    blocks: blocks.len(),
                    step,
                    steps: settings.iters,
                    loss,
                })
            },
        )?;
        let mut sub = sub;
        for (l, p) in block_layers.iter().zip(&learned) {
            let w = l.quantized(p)?;
            quantized.set_initializer_f32(&l.name, &w)?;
            sub.set_initializer_f32(&l.name, &w)?;
        }
        for (name, v) in &act_steps {
            quantized.set_initializer_f32(name, &[*v])?;
            sub.set_initializer_f32(name, &[*v])?;
        }
        let loss_after = hard_loss(&Plan::from_model(&sub)?, &device, ends, &inputs, &targets)?;
        reports.push(BlockReport {
            input: block.input.clone(),
            output: block.output.clone(),
            layers: block_layers.iter().map(|l| l.name.clone()).collect(),
            calpha: learned.into_iter().map(|p| p.calpha).collect(),
            act_steps,
            loss_before,
            loss_after,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lambda_schedule() {
        assert_eq!(lambda(0, 100), 0.0);
        assert_eq!(lambda(19, 100), 0.0);
        assert!((lambda(20, 100) - 1e-2).abs() < 1e-12);
        assert!(lambda(99, 100) > 1e-3 && lambda(99, 100) < 1.2e-3);
    }
}
