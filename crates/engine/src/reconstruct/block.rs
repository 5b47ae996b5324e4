//! One block's reconstruction loop: prepare the per-layer constants once, then per step draw a
//! batch, run the block with straight-through quantized weights, take the loss (output error
//! plus `λ(t)` times the weight regulariser) and let Adam update `clv`, `calpha` and the
//! activation step sizes.

use std::time::Instant;

use burn_tensor::{Device, Gradients, Tensor, TensorData};
use rayon::prelude::*;
use subsetq_core::{divide_channels, Channels, Codebook};
use subsetq_onnx::Model;

use super::adam::Adam;
use super::host::reconstruct_on_tape;
use super::paper::{cosine_lr, lambda};
use super::sampler::SplitMix;
use super::tape::Tape;
use super::{BlockLearned, LayerQuantizer, Learned, Samples, Settings, Timings};
use crate::backend::Backend;
use crate::error::{EngineError, Result};
use crate::plan::{Engine, Plan};
use crate::value::{reshape_tensor, Value};

/// Elements per parallel task of the host-side rounding.
const QUANTIZE_CHUNK: usize = 1 << 14;

/// Learns `clv` and `calpha` of `layers` (all in `block`, a model of one block), and the step
/// sizes of the block's activation quantizers (initializers named `*.act_scale`), so that the
/// block maps `inputs` to `targets`. Returns what was learned, in `layers` order, and the
/// learned step sizes by initializer name. `device` is `settings.backend`'s, already checked.
///
/// On the CPU, a block the host kernels cover (the `tape` module) trains on them; any other block, and
/// every block on a GPU, through burn's autodiff.
pub fn reconstruct_block(
    block: &Model,
    layers: &[&LayerQuantizer],
    inputs: &Samples,
    targets: &Samples,
    settings: &Settings,
    device: &Device,
    on_step: impl FnMut(usize, f64),
) -> Result<BlockLearned> {
    if settings.backend == Backend::Cpu {
        if let Some(tape) = Tape::new(&Plan::from_model(block)?, layers, &inputs.shape) {
            return reconstruct_on_tape(&tape, layers, inputs, targets, settings, on_step);
        }
    }
    reconstruct_with_burn(block, layers, inputs, targets, settings, device, on_step)
}

/// [`reconstruct_block`] through burn's autodiff.
pub(super) fn reconstruct_with_burn(
    block: &Model,
    layers: &[&LayerQuantizer],
    inputs: &Samples,
    targets: &Samples,
    settings: &Settings,
    device: &Device,
    mut on_step: impl FnMut(usize, f64),
) -> Result<BlockLearned> {
    let mut state = BlockState::prepare(block, layers, &device.clone().autodiff())?;
    let mut sampler = SplitMix::new(settings.seed);
    let mut timings = Timings::default();
    for step in 0..settings.iters {
        let mut clock = Instant::now();
        let idx = sampler.draw_batch(settings.batch, inputs.n);
        let x = inputs.value(&idx, &state.device)?;
        let t = targets.value(&idx, &state.device)?;
        timings.data += lap(&mut clock);
        let weights = state.quantized_weights()?;
        timings.weights += lap(&mut clock);
        let forward = state.forward(x, weights)?;
        let loss = loss(&forward, t, &state.prepared, lambda(step, settings.iters));
        let loss_value = scalar(loss.clone());
        timings.forward += lap(&mut clock);
        let grads = loss.backward();
        timings.backward += lap(&mut clock);
        let lr = cosine_lr(settings.lr, step, settings.iters);
        state.update(&forward, &grads, lr, step + 1);
        timings.optimizer += lap(&mut clock);
        on_step(step + 1, loss_value);
    }
    Ok(state.into_learned(timings))
}

/// Seconds since `clock`, which restarts.
pub(super) fn lap(clock: &mut Instant) -> f64 {
    let now = Instant::now();
    let secs = now.duration_since(*clock).as_secs_f64();
    *clock = now;
    secs
}

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

impl Prepared {
    fn new(layer: &LayerQuantizer, device: &Device) -> Result<Prepared> {
        let channels = layer.channels()?;
        let normalized = divide_channels(&layer.weight, &layer.scales, channels);
        let sign: Vec<f32> = layer
            .weight
            .iter()
            .map(|w| w.signum() * f32::from(*w != 0.0))
            .collect();
        Ok(Prepared {
            channels,
            normalized_t: flat(normalized.clone(), device),
            normalized,
            scales: flat(layer.scales.clone(), device).reshape([1, channels.count, 1]),
            abs_w: flat(layer.weight.iter().map(|w| w.abs()).collect(), device),
            sign: flat(sign, device),
        })
    }
}

/// What persists across the steps of one block: its engine on the autodiff device, the
/// layers' constants, the learned values and their Adam states.
struct BlockState<'a> {
    /// The autodiff device everything runs on.
    device: Device,
    engine: Engine,
    input: String,
    output: String,
    layers: &'a [&'a LayerQuantizer],
    prepared: Vec<Prepared>,
    learned: Vec<Learned>,
    /// Per layer: Adam of `clv`, Adam of `calpha`.
    adam: Vec<(Adam, Adam)>,
    /// The block's activation quantizers (initializer names): their step sizes are learned too.
    act_scales: Vec<String>,
    act_steps: Vec<f32>,
    act_adam: Adam,
}

/// One step's forward pass: the block's output and the leaves the update reads gradients of.
struct Forward {
    y: Value,
    weights: Vec<QuantizedWeight>,
    /// The activation step sizes, one leaf each, in `act_scales` order.
    act_steps: Vec<Tensor<1>>,
}

/// One layer's straight-through quantized weights and the leaves they depend on.
struct QuantizedWeight {
    clv: Tensor<1>,
    calpha: Tensor<1>,
    /// `m_c · calpha_c · Q(w / m_c · clv)`, flat.
    wq: Tensor<1>,
}

impl<'a> BlockState<'a> {
    /// Plans `block` on `device` (an autodiff one), computes the layers' constants and starts
    /// from the searched quantizers (`clv = calpha = 1`, the block's own step sizes).
    fn prepare(
        block: &Model,
        layers: &'a [&'a LayerQuantizer],
        device: &Device,
    ) -> Result<BlockState<'a>> {
        let plan = Plan::from_model(block)?;
        let input = plan.single_input()?.to_string();
        let output = plan
            .output_names()
            .first()
            .map(|s| s.to_string())
            .ok_or_else(|| EngineError::Graph("the block has no output".to_string()))?;
        let engine = Engine::new(plan, device)?;
        let prepared = layers
            .iter()
            .map(|l| Prepared::new(l, device))
            .collect::<Result<_>>()?;
        let learned: Vec<Learned> = layers.iter().map(|l| Learned::initial(l)).collect();
        let adam = learned
            .iter()
            .map(|p| (Adam::new(p.clv.len()), Adam::new(p.calpha.len())))
            .collect();
        let act_scales: Vec<String> = block
            .graph()?
            .initializer
            .iter()
            .map(|t| t.name().to_string())
            .filter(|n| n.ends_with(".act_scale"))
            .collect();
        let act_steps: Vec<f32> = act_scales
            .iter()
            .map(|n| {
                engine
                    .param(n)
                    .map(|v| v.to_vec().first().copied().unwrap_or(1.0))
                    .unwrap_or(1.0)
            })
            .collect();
        Ok(BlockState {
            device: device.clone(),
            engine,
            input,
            output,
            layers,
            prepared,
            learned,
            adam,
            act_adam: Adam::new(act_steps.len()),
            act_scales,
            act_steps,
        })
    }

    /// Every layer's weights quantized straight through, set on the engine as fresh leaves for
    /// this step's gradients.
    fn quantized_weights(&mut self) -> Result<Vec<QuantizedWeight>> {
        let mut weights = Vec::with_capacity(self.layers.len());
        for ((layer, learned), prepared) in
            self.layers.iter().zip(&self.learned).zip(&self.prepared)
        {
            let w = quantize_straight_through(layer, learned, prepared, &self.device);
            self.engine
                .set_param(&layer.name, reshape_tensor(w.wq.clone(), &layer.shape))?;
            weights.push(w);
        }
        Ok(weights)
    }

    /// Runs the block on `x` with `weights` (from [`Self::quantized_weights`]) and the current
    /// activation step sizes, also fresh leaves.
    fn forward(&mut self, x: Value, weights: Vec<QuantizedWeight>) -> Result<Forward> {
        let act_steps = self
            .act_scales
            .iter()
            .zip(&self.act_steps)
            .map(|(name, &v)| {
                let t = flat(vec![v], &self.device).require_grad();
                self.engine.set_param(name, Value::R1(t.clone())).map(|_| t)
            })
            .collect::<Result<_>>()?;
        let y = self
            .engine
            .run_for(&[(self.input.as_str(), x)], &[self.output.as_str()])?
            .into_iter()
            .next()
            .ok_or_else(|| EngineError::Graph(format!("{} was not computed", self.output)))?;
        Ok(Forward {
            y,
            weights,
            act_steps,
        })
    }

    /// One Adam step (step number `t`, from 1) at learning rate `lr` on `clv`, `calpha` and
    /// the activation step sizes, with the loss's gradients `grads`.
    fn update(&mut self, forward: &Forward, grads: &Gradients, lr: f64, t: usize) {
        let grad = |leaf: &Tensor<1>| -> Vec<f32> {
            leaf.grad(grads)
                .map(|g| g.into_data().iter::<f32>().collect())
                .unwrap_or_default()
        };
        for ((learned, w), (adam_clv, adam_calpha)) in self
            .learned
            .iter_mut()
            .zip(&forward.weights)
            .zip(self.adam.iter_mut())
        {
            // A leaf without a gradient (not reaching the output) keeps its value.
            let (g_clv, g_calpha) = (grad(&w.clv), grad(&w.calpha));
            if g_clv.len() == learned.clv.len() {
                adam_clv.step(&mut learned.clv, &g_clv, lr, t);
            }
            if g_calpha.len() == learned.calpha.len() {
                adam_calpha.step(&mut learned.calpha, &g_calpha, lr, t);
            }
        }
        if !forward.act_steps.is_empty() {
            let g: Vec<f32> = forward
                .act_steps
                .iter()
                .map(|leaf| {
                    leaf.grad(grads)
                        .map(|g| g.into_scalar::<f32>())
                        .unwrap_or(0.0)
                })
                .collect();
            self.act_adam.step(&mut self.act_steps, &g, lr, t);
            // A step size must stay positive: the quantizer divides by it.
            for v in &mut self.act_steps {
                *v = v.max(f32::MIN_POSITIVE);
            }
        }
    }

    fn into_learned(self, timings: Timings) -> BlockLearned {
        BlockLearned {
            layers: self.learned,
            act_steps: self.act_scales.into_iter().zip(self.act_steps).collect(),
            timings,
        }
    }
}

/// `Q(x · clv)` on the host, in parallel: the codebook's own rounding (both loops' `Q`).
pub(super) fn round_scaled(codebook: &Codebook, x: &[f32], clv: &[f32]) -> Vec<f32> {
    x.par_chunks(QUANTIZE_CHUNK)
        .zip(clv.par_chunks(QUANTIZE_CHUNK))
        .flat_map_iter(|(x, v)| {
            let scaled: Vec<f32> = x.iter().zip(v).map(|(x, v)| x * v).collect();
            codebook.quantize(&scaled)
        })
        .collect()
}

/// `w_q = m_c · calpha_c · Q(w / m_c · clv)` whose forward value is exactly the codebook's
/// rounding and whose gradient passes straight through `Q`.
fn quantize_straight_through(
    layer: &LayerQuantizer,
    learned: &Learned,
    prepared: &Prepared,
    device: &Device,
) -> QuantizedWeight {
    let q_host = round_scaled(&layer.codebook, &prepared.normalized, &learned.clv);
    let clv = flat(learned.clv.clone(), device).require_grad();
    let calpha = flat(learned.calpha.clone(), device).require_grad();
    let xq = prepared.normalized_t.clone() * clv.clone();
    // Straight through: the forward value is exactly Q(x), the gradient that of x.
    let q = flat(q_host, device) + (xq.clone() - xq.detach());
    // Scale per channel by broadcasting over an [outer, C, inner] view (a gather would need a
    // scatter-add in the backward pass).
    let Channels {
        count,
        inner,
        outer,
    } = prepared.channels;
    let per_channel = calpha.clone().reshape([1, count, 1]) * prepared.scales.clone();
    let wq = (q.reshape([outer, count, inner]) * per_channel).reshape([outer * count * inner]);
    QuantizedWeight { clv, calpha, wq }
}

/// The paper's loss: the output error against `t`, plus `λ · Σ_layers ‖|w| − |w_q|‖₂` when
/// `lam > 0` (during the warm-up the regulariser is not even built).
fn loss(forward: &Forward, t: Value, prepared: &[Prepared], lam: f64) -> Tensor<1> {
    let rec = output_loss(forward.y.clone(), t);
    let reg = if lam > 0.0 {
        regulariser(&forward.weights, prepared)
    } else {
        None
    };
    match reg {
        Some(r) => rec + r.mul_scalar(lam),
        None => rec,
    }
}

/// `Σ_layers ‖|w| − |w_q|‖₂`, summed in layer order; `None` without layers.
fn regulariser(weights: &[QuantizedWeight], prepared: &[Prepared]) -> Option<Tensor<1>> {
    weights
        .iter()
        .zip(prepared)
        .map(|(w, pre)| {
            (pre.abs_w.clone() - w.wq.clone() * pre.sign.clone())
                .square()
                .sum()
                .sqrt()
        })
        .reduce(|r, gap| r + gap)
}

/// The reconstruction error: squared error summed over output channels (axis 1), averaged
/// over batch and positions.
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

/// A host vector as a flat tensor on `device`.
fn flat(v: Vec<f32>, device: &Device) -> Tensor<1> {
    let n = v.len();
    Tensor::<1>::from_data(TensorData::new(v, [n]), device)
}

fn scalar(t: Tensor<1>) -> f64 {
    f64::from(t.into_scalar::<f32>())
}
