//! Block reconstruction, the paper's way: per block, learn one multiplier per weight (`clv`,
//! init 1) and one scale per output channel (`calpha`, init 1) so that the quantized block's
//! output matches the float block's on calibration data:
//!
//! `w_q = m_c · calpha_c · Q(w / m_c · clv)`, with `m_c = max|w|` of the layer (the paper) or
//! of output channel `c` (per-channel scales), and `Q` rounding to the nearest of `±α · S` (the
//! searched subset `S` and `α` stay fixed); the gradient passes straight through
//! `Q`. Loss = squared error summed over output channels and averaged over batch and positions,
//! plus `λ(t) · Σ_layers ‖|w| − |w_q|‖₂` with `λ = 0` for the first 20 % of iterations, then
//! 1e-2 falling linearly to 1e-3. Adam, learning rate on a cosine to 0. These numbers live in
//! [`paper`].
//!
//! The block's input comes from the model quantized so far, its target from the float model
//! ([`reconstruct_model`] runs the blocks in order, [`reconstruct_block`] learns one). After
//! reconstruction every weight is still `sign · m_c · calpha_c · α · s_i` with `s_i ∈ S`.
//!
//! Submodules: [`paper`] (the hyper-parameters), `block` (one block's loop through burn's
//! autodiff: prepare, then per step batch, straight-through forward, loss, update), `tape` and
//! `host` (the same loop on the host kernels of `subsetq_kernels::train`, for the blocks they
//! cover, on the CPU), `sampler` (the seeded batches), `adam` (the optimizer).

mod adam;
mod block;
mod host;
pub mod paper;
mod sampler;
mod tape;

use std::collections::HashMap;
use std::time::Instant;

use burn_tensor::Device;
use subsetq_core::{divide_channels, Channels, Codebook};
use subsetq_onnx::{BlockKind, Model};

use crate::backend::Backend;
use crate::error::{EngineError, Result};
use crate::plan::{Engine, Plan};
use crate::value::Value;

pub use block::reconstruct_block;
pub use paper::{lambda, paper_lr};

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

    /// What the codebook rounds: `w / m_c · clv`, per weight.
    pub fn rounded_input(&self, learned: &Learned) -> Result<Vec<f32>> {
        let channels = self.channels()?;
        Ok(divide_channels(&self.weight, &self.scales, channels)
            .iter()
            .zip(&learned.clv)
            .map(|(x, v)| x * v)
            .collect())
    }

    /// `m_c · calpha_c` per output channel: a quantized weight is this times `±α · s_i`.
    pub fn channel_multipliers(&self, learned: &Learned) -> Vec<f32> {
        self.scales
            .iter()
            .zip(&learned.calpha)
            .map(|(m, a)| m * a)
            .collect()
    }

    /// The quantized weights for the learned `clv` and `calpha` (no straight-through part):
    /// `m_c · calpha_c · Q(w / m_c · clv)`.
    pub fn quantized(&self, learned: &Learned) -> Result<Vec<f32>> {
        let channels = self.channels()?;
        let multipliers = self.channel_multipliers(learned);
        Ok(self
            .rounded_input(learned)?
            .iter()
            .enumerate()
            .map(|(i, x)| multipliers[channels.of(i)] * self.codebook.quantize_value(*x))
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
    /// Where the steps' time went.
    pub timings: Timings,
}

/// Seconds the steps of a reconstruction spent in each part, summed over steps.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timings {
    /// Drawing the batch and gathering its inputs and targets into tensors.
    pub data: f64,
    /// Rounding the weights (straight through) and setting them on the block.
    pub weights: f64,
    /// The block's forward pass and the loss.
    pub forward: f64,
    /// The backward pass.
    pub backward: f64,
    /// Reading the gradients and the Adam updates.
    pub optimizer: f64,
}

impl Timings {
    /// All parts together.
    pub fn total(&self) -> f64 {
        self.data + self.weights + self.forward + self.backward + self.optimizer
    }

    /// Part by part sum of `self` and `other`.
    pub fn add(&self, other: &Timings) -> Timings {
        Timings {
            data: self.data + other.data,
            weights: self.weights + other.weights,
            forward: self.forward + other.forward,
            backward: self.backward + other.backward,
            optimizer: self.optimizer + other.optimizer,
        }
    }
}

/// Reconstruction settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Adam steps per block.
    pub iters: usize,
    /// Calibration samples per step.
    pub batch: usize,
    /// Peak learning rate (the paper's: [`paper_lr`], 1e-4 at 4 bits, 5e-4 at 3 and 2 bits).
    pub lr: f64,
    /// Seed of the batch sampling.
    pub seed: u64,
    /// Where the block forwards and backwards run.
    pub backend: Backend,
}

/// Samples stored one after another: `n` samples of `shape` each.
#[derive(Debug, Clone, Default, PartialEq)]
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

    /// Sample `i`'s values.
    fn sample(&self, i: usize) -> &[f32] {
        let len = self.len();
        &self.data[i * len..(i + 1) * len]
    }

    fn gather(&self, idx: &[usize]) -> Vec<f32> {
        let mut out = Vec::with_capacity(idx.len() * self.len());
        for &i in idx {
            out.extend_from_slice(self.sample(i));
        }
        out
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
    /// What was learned for them (`clv`, `calpha`), in `layers` order.
    pub learned: Vec<Learned>,
    /// Learned step sizes of the block's activation quantizers, by initializer name.
    pub act_steps: Vec<(String, f32)>,
    /// Output loss on all calibration samples with the searched weights.
    pub loss_before: f64,
    /// The same after reconstruction.
    pub loss_after: f64,
    /// Wall time, preparation (block inputs and targets, losses) included.
    pub seconds: f64,
    /// The training steps' time, part by part.
    pub timings: Timings,
}

/// The block's output loss against targets `t` on inputs `x`, and its outputs.
fn hard_loss(
    block: &Plan,
    device: &Device,
    (input, output): (&str, &str),
    x: &Samples,
    t: &Samples,
) -> Result<(f64, Samples)> {
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
    Ok((sum / per, y))
}

/// Declares graph input `name` of `model` as a float tensor of shape `[batch, rest…]`.
fn declare_input_shape(model: &mut Model, name: &str, batch: usize, rest: &[usize]) {
    use subsetq_onnx::pb::tensor_shape_proto::{dimension::Value as Dim, Dimension};
    use subsetq_onnx::pb::{type_proto, TensorShapeProto, TypeProto};
    let Some(graph) = model.proto.graph.as_mut() else {
        return;
    };
    let dims = std::iter::once(batch)
        .chain(rest.iter().copied())
        .map(|d| Dimension {
            value: Some(Dim::DimValue(d as i64)),
            ..Default::default()
        })
        .collect();
    if let Some(vi) = graph.input.iter_mut().find(|v| v.name() == name) {
        vi.r#type = Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(subsetq_onnx::pb::tensor_proto::DataType::Float as i32),
                shape: Some(TensorShapeProto { dim: dims }),
            })),
            ..Default::default()
        });
    }
}

/// Reconstructs every block of `float` that holds one of `layers`, in graph order, writing
/// the reconstructed weights into `quantized` (the same graph with the searched weights).
/// Weights not in `layers` (first and last layers) keep their values in `quantized`.
///
/// Both models' activations on the calibration set are carried from block to block, each
/// block's inputs (quantized model) and targets (float model) computed from the previous
/// cut's, not from the graph input again. Holds `calibration.n ×` (block input + block
/// output + the next cut's float and quantized values) at a time.
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
    let float_plan = Plan::from_model(float)?;
    let graph_input = float_plan.single_input()?.to_string();
    let fixed_batch = float_plan.fixed_batch();
    // The graph fixes its batch (and could not be relaxed): a block runs in chunks of it
    // too, which needs the batch declared on its input.
    let declare_batch = |sub: &mut Model, input: &str, shape: &[usize]| {
        if let Some(b) = fixed_batch {
            declare_input_shape(sub, input, b, shape);
        }
    };
    // `x`, the values at cut `from`, carried through `model`'s nodes to value `to`.
    let advance = |model: &Model, from: &str, to: &str, x: &Samples| -> Result<Samples> {
        if from == to {
            return Ok(x.clone());
        }
        let mut sub = model.extract_block(&model.span(from, to)?)?;
        declare_batch(&mut sub, from, &x.shape);
        run_samples(
            &Engine::new(Plan::from_model(&sub)?, &device)?,
            from,
            x,
            to,
            64,
        )
    };
    // Where each model's values are: the quantized one's (every block so far learned) at
    // `quant_cut`, the float one's at the last trunk block's output. Heads and parts leave
    // them there: the blocks after them read values computed from that cut.
    let (mut quant_cut, mut quant_at) = (graph_input.clone(), calibration.clone());
    let (mut float_cut, mut float_at) = (graph_input, calibration.clone());
    let mut reports = Vec::with_capacity(blocks.len());
    for (bi, block) in blocks.iter().enumerate() {
        let started = Instant::now();
        let trunk = block.kind == BlockKind::Trunk;
        let inputs = match trunk && block.input == quant_cut {
            true => std::mem::take(&mut quant_at), // replaced after the block
            false => advance(quantized, &quant_cut, &block.input, &quant_at)?,
        };
        let targets = advance(float, &float_cut, &block.output, &float_at)?;
        if trunk {
            // Replaced after the block: free them while it learns.
            (quant_at, float_at) = (Samples::default(), Samples::default());
        }
        let mut sub = quantized.extract_block(block)?;
        declare_batch(&mut sub, &block.input, &inputs.shape);
        let block_layers: Vec<&LayerQuantizer> = block
            .weights
            .iter()
            .filter_map(|w| by_name.get(w.as_str()).copied())
            .collect();
        let sub_plan = Plan::from_model(&sub)?;
        let ends = (block.input.as_str(), block.output.as_str());
        let (loss_before, _) = hard_loss(&sub_plan, &device, ends, &inputs, &targets)?;
        let block_settings = Settings {
            seed: settings.seed.wrapping_add(bi as u64),
            ..settings.clone()
        };
        let BlockLearned {
            layers: learned,
            act_steps,
            timings,
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
        for (l, p) in block_layers.iter().zip(&learned) {
            let w = l.quantized(p)?;
            quantized.set_initializer_f32(&l.name, &w)?;
            sub.set_initializer_f32(&l.name, &w)?;
        }
        for (name, v) in &act_steps {
            quantized.set_initializer_f32(name, &[*v])?;
            sub.set_initializer_f32(name, &[*v])?;
        }
        let (loss_after, outputs) =
            hard_loss(&Plan::from_model(&sub)?, &device, ends, &inputs, &targets)?;
        if trunk {
            (quant_cut, quant_at) = (block.output.clone(), outputs);
            (float_cut, float_at) = (block.output.clone(), targets);
        }
        reports.push(BlockReport {
            input: block.input.clone(),
            output: block.output.clone(),
            layers: block_layers.iter().map(|l| l.name.clone()).collect(),
            learned,
            act_steps,
            loss_before,
            loss_after,
            seconds: started.elapsed().as_secs_f64(),
            timings,
        });
    }
    Ok(reports)
}
