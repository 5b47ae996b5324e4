//! Running a model on a dataset through our engine: its outputs ([`Runner`]), top-1 / top-5
//! against labels ([`Scores`]), and how close two models' outputs are ([`Agreement`]).

use std::path::Path;

use serde::Serialize;
use subsetq_data::{Dataset, Preprocess};
use subsetq_engine::burn_tensor::Device;
use subsetq_engine::subsetq_kernels::Cpu;
use subsetq_engine::{Engine, PackedSummary, Plan, Value};
use subsetq_onnx::Model;

use crate::error::{Context, PipelineError, Result};
use crate::packed::{packed_layers, Kernels};
use crate::progress::{report, OnProgress};

/// A model planned on the CPU engine, with the graph input and output to use.
pub struct Runner {
    engine: Engine,
    input: String,
    output: String,
    packed: Option<PackedSummary>,
}

impl Runner {
    /// Plans `model` (every operator checked before any work); `pre` may name the input and
    /// output, else the model's single input and first output are used.
    pub fn new(model: &Model, pre: &Preprocess) -> Result<Runner> {
        Runner::with_kernels(model, pre, Kernels::Float)
    }

    /// [`Runner::new`] with the weight layers on `kernels`: [`Kernels::Packed`] runs a
    /// compact model's layers from their codes.
    pub fn with_kernels(model: &Model, pre: &Preprocess, kernels: Kernels) -> Result<Runner> {
        // A fixed batch size is relaxed where the graph allows (else run in chunks of it).
        let relaxed = subsetq_engine::relax_batch(model)?;
        let model = relaxed.as_ref().unwrap_or(model);
        let mut plan = Plan::from_model(model)?;
        let packed = match kernels {
            Kernels::Float => None,
            Kernels::Packed => Some(plan.use_packed(packed_layers(model)?, Cpu::detect())?),
        };
        let engine = Engine::new(plan, &Device::flex())?;
        let plan = engine.plan();
        let input = match &pre.input {
            Some(name) if plan.inputs().iter().any(|i| &i.name == name) => name.clone(),
            _ => plan.single_input()?.to_string(),
        };
        let outputs = plan.output_names();
        let output = match &pre.output {
            Some(name) if outputs.contains(&name.as_str()) => name.clone(),
            _ => match outputs.first() {
                Some(o) => o.to_string(),
                None => return Err(PipelineError::invalid("the model has no outputs")),
            },
        };
        Ok(Runner {
            engine,
            input,
            output,
            packed,
        })
    }

    /// Which layers run on which packed kernel path (`None` on the float kernels).
    pub fn packed(&self) -> Option<&PackedSummary> {
        self.packed.as_ref()
    }

    /// Loads and plans the model at `path`.
    pub fn load(path: &Path, pre: &Preprocess) -> Result<Runner> {
        let model = subsetq_onnx::load(path)?;
        Runner::new(&model, pre).context_with(|| path.display().to_string())
    }

    /// The outputs for every image of `data`, `batch` images per forward pass, reporting
    /// progress as stage `what`.
    pub fn outputs(
        &self,
        data: &Dataset,
        batch: usize,
        what: &str,
        on_progress: OnProgress,
    ) -> Result<Outputs> {
        let output = self.output.as_str();
        let Some(out) = self
            .named_outputs(data, batch, &[output], what, on_progress)?
            .pop()
        else {
            return Err(PipelineError::invalid(format!(
                "output {output} was not computed"
            )));
        };
        if out.shape.iter().skip(1).any(|&d| d != 1) {
            return Err(PipelineError::invalid(format!(
                "output {output} has shape {:?} per image: expected [classes]",
                out.shape
            )));
        }
        Ok(Outputs {
            n: data.n,
            classes: out.per_image(),
            values: out.values,
        })
    }

    /// The graph outputs `names` for every image of `data`, `batch` images per forward pass,
    /// reporting progress as stage `what`: one [`Named`] per name.
    pub fn named_outputs(
        &self,
        data: &Dataset,
        batch: usize,
        names: &[&str],
        what: &str,
        on_progress: OnProgress,
    ) -> Result<Vec<Named>> {
        let known = self.engine.plan().output_names();
        if let Some(missing) = names.iter().find(|n| !known.contains(n)) {
            return Err(PipelineError::invalid(format!(
                "the model has no output {missing} (its outputs: {})",
                known.join(", ")
            )));
        }
        report(on_progress, what, 0, data.n, "");
        let mut done = 0;
        let mut named: Vec<Named> = names
            .iter()
            .map(|n| Named {
                name: n.to_string(),
                shape: Vec::new(),
                values: Vec::new(),
            })
            .collect();
        for b in data.batches(batch) {
            let shape = [b.n, data.channels, data.height, data.width];
            let x = Value::from_f32(b.images.to_vec(), &shape, self.engine.device()).ok_or_else(
                || PipelineError::invalid(format!("batch of shape {shape:?}: not a tensor")),
            )?;
            let ys = self.engine.run_for(&[(self.input.as_str(), x)], names)?;
            if ys.len() != names.len() {
                return Err(PipelineError::invalid("not every output was computed"));
            }
            for (out, y) in named.iter_mut().zip(ys) {
                let dims = y.dims();
                let per = &dims[1.min(dims.len())..];
                if dims.first() != Some(&b.n) || per.iter().product::<usize>() == 0 {
                    return Err(PipelineError::invalid(format!(
                        "output {} has shape {dims:?} for a batch of {}: expected [{}, ...]",
                        out.name, b.n, b.n
                    )));
                }
                if done > 0 && out.shape != per {
                    return Err(PipelineError::invalid(format!(
                        "output {} changed shape between batches",
                        out.name
                    )));
                }
                out.shape = per.to_vec();
                out.values.extend(y.to_vec());
            }
            done += b.n;
            report(on_progress, what, done, data.n, "");
        }
        Ok(named)
    }
}

/// One graph output for `n` images: `shape` per image, the images one after another.
pub struct Named {
    /// The graph output's name.
    pub name: String,
    /// Its shape without the batch axis.
    pub shape: Vec<usize>,
    /// `n × shape.product()` values.
    pub values: Vec<f32>,
}

impl Named {
    /// Values per image.
    pub fn per_image(&self) -> usize {
        self.shape.iter().product()
    }

    /// Image `i`'s values.
    pub fn image(&self, i: usize) -> &[f32] {
        let per = self.per_image();
        &self.values[i * per..(i + 1) * per]
    }
}

/// A model's outputs (logits or probabilities) for `n` images, `classes` per image.
pub struct Outputs {
    /// Number of images.
    pub n: usize,
    /// Values per image.
    pub classes: usize,
    /// `n × classes` values, image after image.
    pub values: Vec<f32>,
}

impl Outputs {
    fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.classes..(i + 1) * self.classes]
    }

    /// Indices of the `k` largest values of row `i`, largest first (ties: lower index first).
    fn top(&self, i: usize, k: usize) -> Vec<usize> {
        let row = self.row(i);
        let mut idx: Vec<usize> = (0..row.len()).collect();
        idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        idx.truncate(k);
        idx
    }
}

/// Top-1 / top-5 accuracy in percent.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Scores {
    /// Images whose label is the top class, percent.
    pub top1: f64,
    /// Images whose label is among the top 5 classes, percent.
    pub top5: f64,
}

impl Scores {
    /// Scores against `labels` (one per image).
    pub fn of(out: &Outputs, labels: &[u32]) -> Scores {
        let (mut top1, mut top5) = (0usize, 0usize);
        for (i, &label) in labels.iter().enumerate().take(out.n) {
            let top = out.top(i, 5);
            top1 += usize::from(top.first() == Some(&(label as usize)));
            top5 += usize::from(top.contains(&(label as usize)));
        }
        Scores {
            top1: percent(top1, out.n),
            top5: percent(top5, out.n),
        }
    }
}

fn percent(count: usize, n: usize) -> f64 {
    100.0 * count as f64 / n.max(1) as f64
}

/// How close model B's outputs are to model A's on the same images.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Agreement {
    /// Images with the same top-1 class, percent.
    pub agreement_top1: f64,
    /// Mean share of A's top-5 classes that are also in B's top 5, percent.
    pub top5_overlap: f64,
    /// Mean squared difference of the outputs.
    pub output_mse: f64,
    /// Largest absolute difference of the outputs.
    pub max_abs_diff: f64,
}

impl Agreement {
    /// How close `b` is to `a`; refuses outputs of different shapes.
    pub fn between(a: &Outputs, b: &Outputs) -> Result<Agreement> {
        if (a.n, a.classes) != (b.n, b.classes) {
            return Err(PipelineError::invalid(format!(
                "the models' outputs differ in shape: {} × {} vs {} × {}",
                a.n, a.classes, b.n, b.classes
            )));
        }
        let (mut same, mut overlap) = (0usize, 0usize);
        let k = a.classes.min(5);
        for i in 0..a.n {
            let (ta, tb) = (a.top(i, k), b.top(i, k));
            same += usize::from(ta[0] == tb[0]);
            overlap += ta.iter().filter(|c| tb.contains(c)).count();
        }
        let (mut sq, mut max) = (0.0f64, 0.0f64);
        for (x, y) in a.values.iter().zip(&b.values) {
            let d = f64::from(*x) - f64::from(*y);
            sq += d * d;
            max = max.max(d.abs());
        }
        Ok(Agreement {
            agreement_top1: percent(same, a.n),
            top5_overlap: percent(overlap, a.n * k),
            output_mse: sq / a.values.len().max(1) as f64,
            max_abs_diff: max,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outputs(rows: &[&[f32]]) -> Outputs {
        Outputs {
            n: rows.len(),
            classes: rows[0].len(),
            values: rows.iter().flat_map(|r| r.iter().copied()).collect(),
        }
    }

    #[test]
    fn scores_count_top1_and_top5() {
        let out = outputs(&[
            &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            &[6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0],
        ]);
        // Row 0: class 6 first, class 1 sixth. Row 1: class 0 first, class 4 fifth.
        let s = Scores::of(&out, &[6, 4]);
        assert_eq!((s.top1, s.top5), (50.0, 100.0));
        let s = Scores::of(&out, &[1, 5]);
        assert_eq!((s.top1, s.top5), (0.0, 0.0));
    }

    #[test]
    fn agreement_of_a_model_with_itself_and_another() {
        let a = outputs(&[&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]]);
        let same = Agreement::between(&a, &a).unwrap();
        assert_eq!(
            (same.agreement_top1, same.top5_overlap, same.output_mse),
            (100.0, 100.0, 0.0)
        );
        let b = outputs(&[&[1.0, 2.0, 1.0], &[3.0, 2.0, 1.0]]);
        let d = Agreement::between(&a, &b).unwrap();
        assert_eq!(d.agreement_top1, 50.0);
        assert_eq!(d.top5_overlap, 100.0); // 3 classes: top-3 sets are equal
        assert!((d.output_mse - 4.0 / 6.0).abs() < 1e-12 && d.max_abs_diff == 2.0);
        let c = outputs(&[&[1.0, 2.0]]);
        assert!(Agreement::between(&a, &c).is_err());
    }
}
