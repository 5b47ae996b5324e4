//! One block's reconstruction loop on the host kernels ([`Tape`]): the same steps, batches,
//! loss, straight-through gradients and Adam as the burn loop in `block`, with the
//! straight-through part written out by hand:
//!
//! `w_q = mult_c · Q(x)`, `x = w / m_c · clv`, `mult_c = m_c · calpha_c`, so with `g = ∂L/∂w_q`:
//! `∂L/∂clv = g · mult_c · w / m_c` (the gradient passes `Q` unchanged) and
//! `∂L/∂calpha_c = Σ_{i ∈ c} g_i · m_c · Q(x_i)`; the regulariser `r = ‖|w| − |w_q|‖₂` adds
//! `−λ · (|w| − w_q · sign w) · sign w / r` to `g`.
//!
//! Sums run in a fixed order (the kernels split batches into fixed chunks), so a seed gives the
//! same bits on any number of threads.

use std::time::Instant;

use rayon::prelude::*;
use subsetq_core::{divide_channels, Channels};

use super::adam::Adam;
use super::block::{lap, round_scaled};
use super::paper::{cosine_lr, lambda};
use super::sampler::SplitMix;
use super::tape::{Tape, Values};
use super::{BlockLearned, LayerQuantizer, Learned, Samples, Settings, Timings};
use crate::error::Result;

/// One layer's constants.
struct HostLayer<'a> {
    layer: &'a LayerQuantizer,
    channels: Channels,
    /// `w / m_c`.
    normalized: Vec<f32>,
}

impl HostLayer<'_> {
    /// The weights at the current `clv`, `calpha`: `q = Q(w / m_c · clv)` and `w_q = mult_c · q`.
    fn round(&self, learned: &Learned) -> (Vec<f32>, Vec<f32>) {
        let q = round_scaled(&self.layer.codebook, &self.normalized, &learned.clv);
        let mult = self.layer.channel_multipliers(learned);
        let wq = per_channel(self.channels, &q, |m, c, q| m[c] * q, &mult);
        (q, wq)
    }

    /// `‖|w| − |w_q|‖₂`, its gradient times `lam` added to `g`.
    fn regularise(&self, wq: &[f32], lam: f64, g: &mut [f32]) -> f64 {
        let w = &self.layer.weight;
        let gap = |i: usize| {
            let s = sign(w[i]);
            (w[i].abs() - wq[i] * s, s)
        };
        let norm = (0..w.len())
            .map(|i| f64::from(gap(i).0).powi(2))
            .sum::<f64>()
            .sqrt();
        if norm > 0.0 {
            let scale = (lam / norm) as f32;
            g.par_iter_mut().enumerate().for_each(|(i, gi)| {
                let (d, s) = gap(i);
                *gi -= scale * d * s;
            });
        }
        norm
    }

    /// The gradients of `clv` and `calpha` from the weights' gradient `g`.
    fn chain(&self, learned: &Learned, q: &[f32], g: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let mult = self.layer.channel_multipliers(learned);
        let channels = self.channels;
        let gx: Vec<f32> = g
            .par_iter()
            .zip(&self.normalized)
            .map(|(g, x)| g * x)
            .collect();
        let g_clv = per_channel(channels, &gx, |m, c, v| m[c] * v, &mult);
        let mut g_calpha = vec![0.0f32; channels.count];
        let block = channels.count * channels.inner;
        for (gs, qs) in g.chunks(block).zip(q.chunks(block)) {
            for ((gc, qc), acc) in gs
                .chunks(channels.inner)
                .zip(qs.chunks(channels.inner))
                .zip(g_calpha.iter_mut())
            {
                *acc += gc.iter().zip(qc).map(|(g, q)| g * q).sum::<f32>();
            }
        }
        for (gc, m) in g_calpha.iter_mut().zip(&self.layer.scales) {
            *gc *= m;
        }
        (g_clv, g_calpha)
    }
}

/// `f(per, c, v)` of every value `v` of `x` (laid out `[outer, count, inner]`) with its channel
/// `c`, in parallel over `outer` blocks.
fn per_channel(
    channels: Channels,
    x: &[f32],
    f: impl Fn(&[f32], usize, f32) -> f32 + Sync,
    per: &[f32],
) -> Vec<f32> {
    let block = channels.count * channels.inner;
    let mut out = vec![0.0f32; x.len()];
    out.par_chunks_mut(block)
        .zip(x.par_chunks(block))
        .for_each(|(o, x)| {
            for (c, (o, x)) in o
                .chunks_mut(channels.inner)
                .zip(x.chunks(channels.inner))
                .enumerate()
            {
                o.iter_mut().zip(x).for_each(|(o, v)| *o = f(per, c, *v));
            }
        });
    out
}

fn sign(w: f32) -> f32 {
    if w > 0.0 {
        1.0
    } else if w < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// Learns `clv` and `calpha` of `layers` on `tape` (a block without activation quantizers) so
/// that the block maps `inputs` to `targets`, as `reconstruct_block` does through burn.
pub(super) fn reconstruct_on_tape(
    tape: &Tape,
    layers: &[&LayerQuantizer],
    inputs: &Samples,
    targets: &Samples,
    settings: &Settings,
    mut on_step: impl FnMut(usize, f64),
) -> Result<BlockLearned> {
    let host: Vec<HostLayer> = layers
        .iter()
        .map(|l| {
            let channels = l.channels()?;
            Ok(HostLayer {
                layer: l,
                channels,
                normalized: divide_channels(&l.weight, &l.scales, channels),
            })
        })
        .collect::<Result<_>>()?;
    let mut learned: Vec<Learned> = layers.iter().map(|l| Learned::initial(l)).collect();
    let mut adam: Vec<(Adam, Adam)> = learned
        .iter()
        .map(|p| (Adam::new(p.clv.len()), Adam::new(p.calpha.len())))
        .collect();
    let mut sampler = SplitMix::new(settings.seed);
    let mut timings = Timings::default();
    let mut values = Values::default();
    for step in 0..settings.iters {
        let mut clock = Instant::now();
        let idx = sampler.draw_batch(settings.batch, inputs.n);
        let x = inputs.gather(&idx);
        let batch = idx.len();
        timings.data += lap(&mut clock);
        let (rounded, weights): (Vec<Vec<f32>>, Vec<Vec<f32>>) =
            host.iter().zip(&learned).map(|(h, l)| h.round(l)).unzip();
        timings.weights += lap(&mut clock);
        tape.forward(&x, batch, &weights, &mut values)?;
        let y = tape.output(&values)?;
        // Squared error summed over channels, averaged over batch and positions.
        let per = ((batch * tape.output_size()) / tape.out_channels).max(1) as f32;
        // Each sample against its target, read in place; one partial sum per sample, added
        // in sample order (the same on any thread count).
        let mut dy = vec![0.0f32; y.len()];
        let sample_len = targets.len();
        let partial: Vec<f64> = dy
            .par_chunks_mut(sample_len)
            .zip(y.par_chunks(sample_len))
            .zip(idx.par_iter())
            .map(|((d, y), &i)| {
                let mut sum = 0.0f64;
                for ((d, a), b) in d.iter_mut().zip(y).zip(targets.sample(i)) {
                    sum += f64::from(a - b).powi(2);
                    *d = 2.0 * (a - b) / per;
                }
                sum
            })
            .collect();
        let rec = partial.iter().sum::<f64>() / f64::from(per);
        timings.forward += lap(&mut clock);
        let mut grads = tape.backward(&values, dy, batch, &weights)?;
        let lam = lambda(step, settings.iters);
        let mut loss = rec;
        if lam > 0.0 {
            for ((h, wq), g) in host.iter().zip(&weights).zip(grads.iter_mut()) {
                loss += lam * h.regularise(wq, lam, g);
            }
        }
        timings.backward += lap(&mut clock);
        let lr = cosine_lr(settings.lr, step, settings.iters);
        for (((h, r), g), (l, (adam_clv, adam_calpha))) in host
            .iter()
            .zip(&rounded)
            .zip(&grads)
            .zip(learned.iter_mut().zip(adam.iter_mut()))
        {
            let (g_clv, g_calpha) = h.chain(l, r, g);
            adam_clv.step(&mut l.clv, &g_clv, lr, step + 1);
            adam_calpha.step(&mut l.calpha, &g_calpha, lr, step + 1);
        }
        timings.optimizer += lap(&mut clock);
        on_step(step + 1, loss);
    }
    Ok(BlockLearned {
        layers: learned,
        act_steps: Vec::new(),
        timings,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use subsetq_core::Codebook;
    use subsetq_onnx::{fold_batch_norm, Model};

    use super::*;
    use crate::backend::Backend;
    use crate::plan::{Engine, Plan};
    use crate::reconstruct::block::reconstruct_with_burn;
    use crate::reconstruct::run_samples;

    /// A block of the project's Fashion-MNIST ResNet (BN folded), its layers with a 4-bit
    /// codebook, seeded inputs and the float block's outputs as targets.
    fn fashion_block(which: usize) -> (Model, Vec<LayerQuantizer>, Samples, Samples) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/fashion-resnet.onnx");
        model_block(&path, which)
    }

    /// Block `which` of the 28×28 one-channel model at `path` ([`fashion_block`]).
    fn model_block(path: &Path, which: usize) -> (Model, Vec<LayerQuantizer>, Samples, Samples) {
        asset_block(path, &[1, 28, 28], |i, _| i == which)
    }

    /// The first block `pick` chooses (by index and output name) of the model at `path`,
    /// whose input samples have `sample_shape` ([`fashion_block`]).
    fn asset_block(
        path: &Path,
        sample_shape: &[usize],
        pick: impl Fn(usize, &str) -> bool,
    ) -> (Model, Vec<LayerQuantizer>, Samples, Samples) {
        let (float, _) = fold_batch_norm(&subsetq_onnx::load(path).unwrap()).unwrap();
        let block = float
            .blocks()
            .unwrap()
            .into_iter()
            .enumerate()
            .find(|(i, b)| pick(*i, &b.output))
            .unwrap()
            .1;
        let sub = float.extract_block(&block).unwrap();
        let layers: Vec<LayerQuantizer> = block
            .weights
            .iter()
            .map(|name| {
                let (shape, weight) = sub.initializer_f32(name).unwrap().unwrap();
                // Output channels: axis 0 of a conv weight, axis 1 of a [K, N] Gemm weight.
                let out_axis = usize::from(shape.len() == 2);
                let channels = Channels::new(&shape, out_axis, weight.len()).unwrap();
                let mut scales = vec![0.0f32; channels.count];
                for (i, w) in weight.iter().enumerate() {
                    let c = &mut scales[channels.of(i)];
                    *c = c.max(w.abs());
                }
                LayerQuantizer {
                    name: name.clone(),
                    shape,
                    out_axis,
                    weight,
                    scales,
                    codebook: Codebook {
                        levels: vec![0.0625, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 1.0],
                        alpha: 0.9,
                    },
                }
            })
            .collect();
        // Seeded images through the float model give the block's inputs and targets.
        let device = Backend::Cpu.device().unwrap();
        let engine = Engine::new(Plan::from_model(&float).unwrap(), &device).unwrap();
        let n = 12;
        let mut rng = SplitMix::new(3);
        let data = (0..n * sample_shape.iter().product::<usize>())
            .map(|_| rng.draw_batch(1, 1000)[0] as f32 / 400.0 - 1.0)
            .collect();
        let images = Samples {
            data,
            shape: sample_shape.to_vec(),
            n,
        };
        let input = Plan::from_model(&float)
            .unwrap()
            .single_input()
            .unwrap()
            .to_string();
        let x = run_samples(&engine, &input, &images, &block.input, 64).unwrap();
        let t = run_samples(&engine, &input, &images, &block.output, 64).unwrap();
        (sub, layers, x, t)
    }

    fn settings(iters: usize) -> Settings {
        Settings {
            iters,
            batch: 5,
            lr: 1e-3,
            seed: 1,
            backend: Backend::Cpu,
        }
    }

    #[test]
    fn the_tape_covers_the_resnet_blocks() {
        let (sub, layers, x, _) = fashion_block(1);
        let refs: Vec<&LayerQuantizer> = layers.iter().collect();
        let plan = Plan::from_model(&sub).unwrap();
        assert!(Tape::new(&plan, &refs, &x.shape).is_some());
    }

    /// The host loop and the burn loop on `block`, compared (see the callers).
    fn compare_loops(which: usize, block: (Model, Vec<LayerQuantizer>, Samples, Samples)) {
        {
            let (sub, layers, x, t) = block;
            let refs: Vec<&LayerQuantizer> = layers.iter().collect();
            let plan = Plan::from_model(&sub).unwrap();
            let tape = Tape::new(&plan, &refs, &x.shape).unwrap();
            let s = settings(12);
            let mut host_losses = Vec::new();
            let host =
                reconstruct_on_tape(&tape, &refs, &x, &t, &s, |_, l| host_losses.push(l)).unwrap();
            let device = Backend::Cpu.device().unwrap();
            let mut burn_losses = Vec::new();
            let burn =
                reconstruct_with_burn(&sub, &refs, &x, &t, &s, &device, |_, l| burn_losses.push(l))
                    .unwrap();
            for (h, b) in host_losses.iter().zip(&burn_losses) {
                assert!(
                    (h - b).abs() <= 1e-3 * b.abs().max(1e-6),
                    "block {which}: {h} vs {b}"
                );
            }
            // Learning moved the loss, so the comparison above compared gradients' effects.
            // From the first step with the rounding regulariser on (it adds to the loss), the
            // loss falls.
            let regularised = (0..s.iters)
                .position(|t| lambda(t, s.iters) > 0.0)
                .unwrap_or(0);
            assert!(
                host_losses.last() < host_losses.get(regularised),
                "{host_losses:?}"
            );
            for (h, b) in host.layers.iter().zip(&burn.layers) {
                let far = h
                    .clv
                    .iter()
                    .zip(&b.clv)
                    .filter(|(a, b)| (*a - *b).abs() > 1e-4)
                    .count();
                // Adam steps by about lr · sign(g): a weight whose gradient is near zero may
                // step the other way under a different summation order; nearly none do.
                assert!(
                    far * 100 <= h.clv.len(),
                    "block {which}: {far} of {} apart",
                    h.clv.len()
                );
            }
        }
    }

    /// The host loop and the burn loop learn the same thing from the same batches: their
    /// losses step by step agree (they differ only in float summation order). ResNet blocks:
    /// strided and 1×1 convolutions, Add, Relu.
    #[test]
    fn host_and_burn_loops_agree_on_residual_blocks() {
        for which in [1, 2] {
            compare_loops(which, fashion_block(which));
        }
    }

    /// The same on the Keras MNIST CNN: conv, MaxPool, Flatten, Gemm with a [K, N] weight.
    #[test]
    fn host_and_burn_loops_agree_on_pooling_and_dense_blocks() {
        let Some(path) = subsetq_onnx::test_assets::require("mnist-cnn.onnx") else {
            return;
        };
        for which in [1, 2] {
            compare_loops(which, model_block(&path, which));
        }
    }

    /// The same on parts of the selfie segmenter's U-Net: a MobileNetV3 block (hard-swish:
    /// Add and Mul by constants, Clip, Mul; a squeeze-excite gate: AveragePool over the plane,
    /// Sigmoid, Mul by a per-channel value; the residual Add), and NanoDet's LeakyRelu and
    /// channel Concat.
    #[test]
    fn host_and_burn_loops_agree_on_unet_and_detector_parts() {
        for (asset, shape, output) in [
            ("selfie.onnx", [3, 256, 256], "add_1__xeno_compat__1"),
            (
                "nanodet.onnx",
                [3, 416, 416],
                "PartitionedCall/onnx_tf_prefix_Concat_42",
            ),
        ] {
            let Some(path) = subsetq_onnx::test_assets::require(asset) else {
                return;
            };
            let block = asset_block(&path, &shape, |_, o| o == output);
            let refs: Vec<&LayerQuantizer> = block.1.iter().collect();
            assert!(refs.len() >= 3, "{asset}: {} layers", refs.len());
            compare_loops(0, block);
        }
    }

    #[test]
    fn host_loop_is_deterministic_across_threads() {
        let (sub, layers, x, t) = fashion_block(1);
        let refs: Vec<&LayerQuantizer> = layers.iter().collect();
        let plan = Plan::from_model(&sub).unwrap();
        let tape = Tape::new(&plan, &refs, &x.shape).unwrap();
        let run = |threads| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| reconstruct_on_tape(&tape, &refs, &x, &t, &settings(6), |_, _| {}))
                .unwrap()
                .layers
        };
        assert_eq!(run(1), run(3));
    }
}
