//! Planning (ONNX graph → checked list of steps) and execution.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use burn_tensor::Device;
use subsetq_onnx::pb::{NodeProto, ValueInfoProto};
use subsetq_onnx::Model;

use crate::error::{node_err, EngineError, Result};
use crate::ops::{self, constant_value, GraphView, NodeCtx, Op, Slot};
use crate::packed::PackedStep;
use crate::value::{Value, MAX_RANK};
use subsetq_onnx::{read_tensor, ConstData, ConstTensor};

/// A runtime input of the graph (not an initializer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputSpec {
    /// The input's name.
    pub name: String,
    /// Declared dimensions: `Some(n)` fixed, `None` free (symbolic or unknown).
    /// `None` for the whole list when the model declares no shape.
    pub dims: Option<Vec<Option<usize>>>,
    slot: Slot,
}

impl InputSpec {
    /// The declared shape for messages, e.g. `[N, 1, 28, 28]` (`?` for a free dim).
    pub fn describe(&self) -> String {
        match &self.dims {
            None => "any shape".to_string(),
            Some(d) => format!(
                "[{}]",
                d.iter()
                    .map(|x| x.map_or("?".to_string(), |v| v.to_string()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// Wall time of one executed step (see [`Engine::run_timed`]).
#[derive(Debug, Clone, PartialEq)]
pub struct StepTime {
    /// The node name.
    pub node: String,
    /// Its operator.
    pub op_type: String,
    /// Seconds.
    pub seconds: f64,
}

#[derive(Debug, Clone)]
pub(crate) struct Step {
    pub(crate) node: String,
    pub(crate) op_type: String,
    pub(crate) op: Op,
    pub(crate) inputs: Vec<Slot>,
    pub(crate) output: Slot,
    /// Set by [`Plan::use_packed`]: the kernels compute this step from packed codes.
    pub(crate) packed: Option<Arc<PackedStep>>,
}

/// A checked, executable form of an ONNX graph: every node has been matched
/// to an operator implementation and its attributes and constant inputs
/// validated; nothing has been computed yet. Build one with
/// [`Plan::from_model`]; run it with an [`Engine`].
#[derive(Debug, Clone)]
pub struct Plan {
    inputs: Vec<InputSpec>,
    outputs: Vec<(String, Slot)>,
    /// Float constants used as tensors (weights, biases, BN parameters, ...).
    pub(crate) constants: Vec<(Slot, String, ConstTensor)>,
    pub(crate) steps: Vec<Step>,
    pub(crate) names: Vec<String>,
    by_name: HashMap<String, Slot>,
    /// Per slot: index of the last step that reads it (`None`: never read).
    last_use: Vec<Option<usize>>,
    /// The batch size every runtime input declares as its fixed first dimension, if they all
    /// do (and agree): other batch sizes run in chunks of it.
    fixed_batch: Option<usize>,
}

struct Builder {
    consts: HashMap<String, ConstTensor>,
    slots: HashMap<String, Slot>,
    unavailable: HashMap<String, String>,
    constants: Vec<(Slot, String, ConstTensor)>,
    names: Vec<String>,
}

impl Builder {
    fn new_slot(&mut self, name: &str) -> Slot {
        let s = self.names.len();
        self.names.push(name.to_string());
        self.slots.insert(name.to_string(), s);
        s
    }
}

impl GraphView for Builder {
    fn constant(&self, name: &str) -> Option<&ConstTensor> {
        self.consts.get(name)
    }

    fn tensor_slot(&mut self, name: &str) -> std::result::Result<Slot, String> {
        if let Some(&s) = self.slots.get(name) {
            return Ok(s);
        }
        if let Some(c) = self.consts.get(name) {
            return match c.data {
                ConstData::F32(_) => {
                    if c.shape.len() > MAX_RANK {
                        return Err(format!(
                            "constant {name} has rank {} (at most {MAX_RANK} is supported)",
                            c.shape.len()
                        ));
                    }
                    let c = c.clone();
                    let s = self.new_slot(name);
                    self.constants.push((s, name.to_string(), c));
                    Ok(s)
                }
                ConstData::I64(_) => Err(format!(
                    "integer tensor {name} used as a data input; integer tensors are only \
                     supported as constant shapes, pads and axes"
                )),
            };
        }
        if let Some(why) = self.unavailable.get(name) {
            return Err(why.clone());
        }
        Err(format!(
            "input {name} is not produced by an earlier node, an initializer or a graph input \
             (nodes must be in topological order)"
        ))
    }
}

fn node_name(node: &NodeProto, index: usize) -> String {
    match node.name() {
        "" => format!("{}#{index}", node.op_type()),
        n => n.to_string(),
    }
}

fn input_dims(vi: &ValueInfoProto) -> Result<Option<Vec<Option<usize>>>> {
    use subsetq_onnx::pb::tensor_shape_proto::dimension::Value as Dim;
    use subsetq_onnx::pb::type_proto::Value as Ty;
    let err = |msg: String| EngineError::Input {
        name: vi.name().to_string(),
        msg,
    };
    let Some(ty) = vi.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return Ok(None);
    };
    let Ty::TensorType(t) = ty else {
        return Err(err("only tensor inputs are supported".to_string()));
    };
    if let Some(et) = t.elem_type {
        if et != subsetq_onnx::pb::tensor_proto::DataType::Float as i32 {
            return Err(err(format!(
                "element type {et} is not supported (only FLOAT inputs are)"
            )));
        }
    }
    Ok(t.shape.as_ref().map(|s| {
        s.dim
            .iter()
            .map(|d| match d.value {
                Some(Dim::DimValue(v)) if v >= 0 => Some(v as usize),
                _ => None,
            })
            .collect()
    }))
}

impl Plan {
    /// Builds the plan of `model`'s main graph. All checks that do not need
    /// the input shapes happen here: an unsupported operator (the first one,
    /// by node and operator, with a count of the others), bad attributes,
    /// non-constant shape / pads / clip bounds, values used before they are
    /// produced. No tensor is computed.
    pub fn from_model(model: &Model) -> Result<Plan> {
        // A known opset and a well-formed graph; then weights in compact form (codes, table,
        // scales) become float constants.
        model.validate()?;
        let folded = model.fold_constants()?;
        let model = &folded;
        let graph = model.graph()?;
        let opset = model.opset().ok_or_else(|| {
            EngineError::Graph("the model imports no default-domain (ai.onnx) opset".to_string())
        })?;

        // 1. Unsupported operators, before anything else.
        let unsupported: Vec<(String, String)> = graph
            .node
            .iter()
            .enumerate()
            .filter(|(_, n)| {
                let default_domain = matches!(n.domain(), "" | "ai.onnx");
                !(default_domain && n.op_type() == "Constant")
                    && ops::builder(n.domain(), n.op_type()).is_none()
            })
            .map(|(i, n)| {
                let op = match n.domain() {
                    "" | "ai.onnx" => n.op_type().to_string(),
                    d => format!("{d}::{}", n.op_type()),
                };
                (node_name(n, i), op)
            })
            .collect();
        if let Some((node, op)) = unsupported.first() {
            return Err(EngineError::Unsupported {
                node: node.clone(),
                op: op.clone(),
                others: unsupported.len() - 1,
                supported: ops::supported_ops(),
            });
        }

        // 2. Constants and graph inputs.
        let mut b = Builder {
            consts: HashMap::new(),
            slots: HashMap::new(),
            unavailable: HashMap::new(),
            constants: Vec::new(),
            names: Vec::new(),
        };
        for t in &graph.initializer {
            b.consts
                .insert(t.name().to_string(), read_tensor(t, t.name())?);
        }
        let mut inputs = Vec::new();
        for vi in &graph.input {
            if b.consts.contains_key(vi.name()) {
                continue; // an initializer listed as an input (IR < 4): a constant
            }
            if b.slots.contains_key(vi.name()) {
                return Err(EngineError::Graph(format!(
                    "input {} is declared twice",
                    vi.name()
                )));
            }
            let dims = input_dims(vi)?;
            let slot = b.new_slot(vi.name());
            inputs.push(InputSpec {
                name: vi.name().to_string(),
                dims,
                slot,
            });
        }

        // 3. Nodes, in graph order.
        let mut steps = Vec::with_capacity(graph.node.len());
        for (i, node) in graph.node.iter().enumerate() {
            let name = node_name(node, i);
            let out = node.output.first().map(String::as_str).unwrap_or("");
            if out.is_empty() {
                return Err(node_err(&name, node.op_type(), "has no output"));
            }
            if b.slots.contains_key(out) || b.consts.contains_key(out) {
                return Err(node_err(
                    &name,
                    node.op_type(),
                    format!("output {out} is already produced elsewhere in the graph"),
                ));
            }
            if node.op_type() == "Constant" {
                let c = constant_value(node, &name)?;
                b.consts.insert(out.to_string(), c);
                continue;
            }
            let Some(build) = ops::builder(node.domain(), node.op_type()) else {
                unreachable!("unsupported operators were reported above")
            };
            let (op, step_inputs, mut extra_ops) = {
                let mut ctx = NodeCtx::new(node, name.clone(), opset, &mut b);
                let op = build(&mut ctx)?;
                (op, ctx.inputs, ctx.extra.into_iter())
            };
            let output = b.new_slot(out);
            let mut extra_steps = Vec::new();
            for (k, extra) in node.output.iter().enumerate().skip(1) {
                if let Some(op) = extra_ops.next() {
                    if extra.is_empty() {
                        continue;
                    }
                    if b.slots.contains_key(extra) || b.consts.contains_key(extra) {
                        return Err(node_err(
                            &name,
                            node.op_type(),
                            format!("output {extra} is already produced elsewhere in the graph"),
                        ));
                    }
                    extra_steps.push(Step {
                        node: name.clone(),
                        op_type: node.op_type().to_string(),
                        op,
                        inputs: step_inputs.clone(),
                        output: b.new_slot(extra),
                        packed: None,
                    });
                } else if !extra.is_empty() {
                    b.unavailable.insert(
                        extra.clone(),
                        format!(
                            "input {extra} is output {k} of node {name} ({}), which the engine \
                             does not compute",
                            node.op_type()
                        ),
                    );
                }
            }
            steps.push(Step {
                node: name,
                op_type: node.op_type().to_string(),
                op,
                inputs: step_inputs,
                output,
                packed: None,
            });
            steps.extend(extra_steps);
        }

        // 4. Graph outputs.
        let mut outputs = Vec::new();
        for vi in &graph.output {
            let slot = b
                .tensor_slot(vi.name())
                .map_err(|m| EngineError::Graph(format!("graph output {}: {m}", vi.name())))?;
            outputs.push((vi.name().to_string(), slot));
        }
        if outputs.is_empty() {
            return Err(EngineError::Graph("the graph has no outputs".to_string()));
        }

        let mut last_use = vec![None; b.names.len()];
        for (i, s) in steps.iter().enumerate() {
            for &slot in &s.inputs {
                last_use[slot] = Some(i);
            }
        }
        let by_name = b.slots;
        let batches: Vec<Option<usize>> = inputs
            .iter()
            .map(|i| i.dims.as_ref().and_then(|d| d.first().copied().flatten()))
            .collect();
        let fixed_batch = match batches.first() {
            Some(&Some(n)) if n > 0 && batches.iter().all(|&b| b == Some(n)) => Some(n),
            _ => None,
        };
        Ok(Plan {
            inputs,
            outputs,
            constants: b.constants,
            steps,
            names: b.names,
            by_name,
            last_use,
            fixed_batch,
        })
    }

    /// Loads the ONNX file at `path` and plans it.
    pub fn load(path: &Path) -> Result<Plan> {
        Plan::from_model(&subsetq_onnx::load(path)?)
    }

    /// The runtime inputs, in graph order.
    pub fn inputs(&self) -> &[InputSpec] {
        &self.inputs
    }

    /// The name of the only runtime input; an error when there are none or several.
    pub fn single_input(&self) -> Result<&str> {
        match self.inputs.as_slice() {
            [only] => Ok(&only.name),
            inputs => Err(EngineError::Graph(format!(
                "the model has {} inputs; exactly one image input is needed",
                inputs.len()
            ))),
        }
    }

    /// The batch size the model's inputs fix as their first dimension (every input the same),
    /// if any. [`Engine::run`] runs other batch sizes in chunks of it.
    pub fn fixed_batch(&self) -> Option<usize> {
        self.fixed_batch
    }

    /// Whether the graph computes the same thing per sample at any batch size: with the first
    /// dimension of every input at `b` and at `n`, every step's output has first dimension `b`
    /// and `n` respectively, and the same other dimensions. `inputs` gives each input's
    /// dimensions after the batch.
    pub(crate) fn is_batch_polymorphic(
        &self,
        inputs: &[(&str, Vec<usize>)],
        b: usize,
        n: usize,
    ) -> bool {
        let at = |batch: usize| -> Option<Vec<Option<Vec<usize>>>> {
            let given: Vec<(&str, Vec<usize>)> = inputs
                .iter()
                .map(|(name, rest)| {
                    let mut d = vec![batch];
                    d.extend(rest);
                    (*name, d)
                })
                .collect();
            self.infer(&given).ok()
        };
        let (Some(sb), Some(sn)) = (at(b), at(n)) else {
            return false;
        };
        self.steps
            .iter()
            .all(|step| match (&sb[step.output], &sn[step.output]) {
                (Some(x), Some(y)) => {
                    x.len() == y.len() && x[0] == b && y[0] == n && x[1..] == y[1..]
                }
                _ => false,
            })
    }

    /// The shape inferred for every named value at the given input shapes (for the batch
    /// relaxation, which rewrites nodes by their input shapes).
    pub(crate) fn shapes_by_name(
        &self,
        inputs: &[(&str, Vec<usize>)],
    ) -> Result<HashMap<String, Vec<usize>>> {
        let shapes = self.infer(inputs)?;
        Ok(self
            .by_name
            .iter()
            .filter_map(|(name, &slot)| shapes[slot].clone().map(|s| (name.clone(), s)))
            .collect())
    }

    /// The graph outputs' names, in graph order.
    pub fn output_names(&self) -> Vec<&str> {
        self.outputs.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// Number of executed steps (nodes other than `Constant`).
    pub fn step_count(&self) -> usize {
        self.steps.len()
    }

    /// The `(node, op_type)` of every step, in execution order.
    pub fn steps(&self) -> impl Iterator<Item = (&str, &str)> {
        self.steps
            .iter()
            .map(|s| (s.node.as_str(), s.op_type.as_str()))
    }

    fn check_inputs(&self, given: &[(&str, Vec<usize>)]) -> Result<Vec<(Slot, usize)>> {
        let mut order = Vec::with_capacity(self.inputs.len());
        for (name, _) in given {
            if !self.inputs.iter().any(|i| i.name == *name) {
                let known: Vec<&str> = self.inputs.iter().map(|i| i.name.as_str()).collect();
                return Err(EngineError::Input {
                    name: name.to_string(),
                    msg: format!(
                        "the model has no such input (its inputs: {})",
                        known.join(", ")
                    ),
                });
            }
        }
        for spec in &self.inputs {
            let Some(pos) = given.iter().position(|(n, _)| *n == spec.name) else {
                return Err(EngineError::Input {
                    name: spec.name.clone(),
                    msg: "not given".to_string(),
                });
            };
            let dims = &given[pos].1;
            if let Some(want) = &spec.dims {
                let ok = want.len() == dims.len()
                    && want
                        .iter()
                        .zip(dims)
                        .all(|(w, d)| w.is_none_or(|w| w == *d));
                if !ok {
                    return Err(EngineError::Input {
                        name: spec.name.clone(),
                        msg: format!("expected shape {}, got {dims:?}", spec.describe()),
                    });
                }
            }
            if numel(dims).is_none() {
                return Err(EngineError::Input {
                    name: spec.name.clone(),
                    msg: format!("shape {dims:?} has too many elements"),
                });
            }
            if dims.is_empty() || dims.len() > MAX_RANK {
                return Err(EngineError::Input {
                    name: spec.name.clone(),
                    msg: format!("rank {} is not supported (1 to {MAX_RANK} are)", dims.len()),
                });
            }
            order.push((spec.slot, pos));
        }
        Ok(order)
    }

    /// The slot of the value named `name`.
    pub(crate) fn slot_of(&self, name: &str) -> Option<Slot> {
        self.by_name.get(name).copied()
    }

    /// Shape of every value for the given input shapes, checking every step;
    /// fails (naming the node) before any tensor work (`None`: a slot not computed).
    pub(crate) fn infer(&self, given: &[(&str, Vec<usize>)]) -> Result<Vec<Option<Vec<usize>>>> {
        let mut shapes: Vec<Option<Vec<usize>>> = vec![None; self.names.len()];
        for (slot, pos) in self.check_inputs(given)? {
            shapes[slot] = Some(given[pos].1.clone());
        }
        for (slot, _, c) in &self.constants {
            shapes[*slot] = Some(if c.shape.is_empty() {
                vec![1]
            } else {
                c.shape.clone()
            });
        }
        for step in &self.steps {
            let ins: Vec<&[usize]> = step
                .inputs
                .iter()
                .map(|&s| match &shapes[s] {
                    Some(d) => d.as_slice(),
                    None => unreachable!("slots are produced before they are used"),
                })
                .collect();
            let out = step.op.infer(&ins).map_err(|m| {
                let described: Vec<String> = step
                    .inputs
                    .iter()
                    .zip(&ins)
                    .map(|(&s, d)| format!("{} {d:?}", self.names[s]))
                    .collect();
                node_err(
                    &step.node,
                    &step.op_type,
                    format!("{m} (inputs: {})", described.join(", ")),
                )
            })?;
            if numel(&out).is_none() {
                return Err(node_err(
                    &step.node,
                    &step.op_type,
                    format!("its output {out:?} would have too many elements"),
                ));
            }
            shapes[step.output] = Some(out);
        }
        Ok(shapes)
    }

    /// The output shapes for the given input shapes (checks the whole graph).
    pub fn output_shapes(&self, inputs: &[(&str, Vec<usize>)]) -> Result<Vec<Vec<usize>>> {
        let shapes = self.infer(inputs)?;
        Ok(self
            .outputs
            .iter()
            .map(|(_, s)| shapes[*s].clone().unwrap_or_default())
            .collect())
    }
}

/// The elements of a tensor of these dims, if their float32 bytes are addressable: every
/// inferred shape is checked, so products of its dims cannot overflow later.
pub(crate) fn numel(dims: &[usize]) -> Option<usize> {
    dims.iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= isize::MAX as usize / 4)
}

/// A [`Plan`] with its constants on a device, ready to run. The device decides
/// the backend: `Device::flex()` for plain CPU inference, or
/// `Device::flex().autodiff()` to record gradients through the whole graph
/// (parameters marked with [`Engine::require_grad`]).
#[derive(Debug, Clone)]
pub struct Engine {
    plan: Plan,
    device: Device,
    consts: Vec<Option<Value>>,
}

impl Engine {
    /// Puts the plan's constants on `device`.
    pub fn new(plan: Plan, device: &Device) -> Result<Engine> {
        let mut consts = vec![None; plan.names.len()];
        for (slot, name, c) in &plan.constants {
            let shape = if c.shape.is_empty() {
                vec![1]
            } else {
                c.shape.clone()
            };
            let data = c.as_f32().map(<[f32]>::to_vec).unwrap_or_default();
            let v = Value::from_f32(data, &shape, device).ok_or_else(|| EngineError::Tensor {
                name: name.clone(),
                msg: format!("shape {:?} cannot be put on the device", c.shape),
            })?;
            consts[*slot] = Some(v);
        }
        Ok(Engine {
            plan,
            device: device.clone(),
            consts,
        })
    }

    /// Loads, plans and places the ONNX model at `path`.
    pub fn load(path: &Path, device: &Device) -> Result<Engine> {
        Engine::new(Plan::load(path)?, device)
    }

    /// The plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Names of the float constants the graph uses as tensors (weights,
    /// biases, BN parameters), in first-use order.
    pub fn param_names(&self) -> Vec<&str> {
        self.plan
            .constants
            .iter()
            .map(|(_, n, _)| n.as_str())
            .collect()
    }

    /// The current value of constant `name`.
    pub fn param(&self, name: &str) -> Option<&Value> {
        let slot = *self.plan.by_name.get(name)?;
        self.consts[slot].as_ref()
    }

    /// Replaces constant `name` (same shape), e.g. by quantized weights or by a
    /// tensor that tracks gradients.
    pub fn set_param(&mut self, name: &str, value: Value) -> Result<()> {
        let Some(&slot) = self.plan.by_name.get(name) else {
            return Err(EngineError::Tensor {
                name: name.to_string(),
                msg: "no such constant in the graph".to_string(),
            });
        };
        let Some(old) = self.consts[slot].as_ref() else {
            return Err(EngineError::Tensor {
                name: name.to_string(),
                msg: "is not a constant (graph input or node output)".to_string(),
            });
        };
        if old.dims() != value.dims() {
            return Err(EngineError::Tensor {
                name: name.to_string(),
                msg: format!(
                    "new value has shape {:?}, expected {:?}",
                    value.dims(),
                    old.dims()
                ),
            });
        }
        self.consts[slot] = Some(value);
        Ok(())
    }

    /// Marks constant `name` as a gradient leaf (on an autodiff device) and
    /// returns the tracked tensor, whose `grad` the backward pass fills.
    pub fn require_grad(&mut self, name: &str) -> Result<Value> {
        let v = self
            .param(name)
            .cloned()
            .ok_or_else(|| EngineError::Tensor {
                name: name.to_string(),
                msg: "no such constant in the graph".to_string(),
            })?;
        let v = v.require_grad().ok_or_else(|| EngineError::Tensor {
            name: name.to_string(),
            msg: format!(
                "cannot track gradients on {:?}: use an autodiff device (Device::flex().autodiff())",
                self.device
            ),
        })?;
        self.set_param(name, v.clone())?;
        Ok(v)
    }

    /// Runs the graph; returns the graph outputs in order.
    pub fn run(&self, inputs: &[(&str, Value)]) -> Result<Vec<Value>> {
        let wanted: Vec<&str> = self.plan.outputs.iter().map(|(n, _)| n.as_str()).collect();
        self.run_for(inputs, &wanted)
    }

    /// Runs a single-input graph on `x` and returns its first output.
    pub fn run1(&self, x: Value) -> Result<Value> {
        let [spec] = self.plan.inputs.as_slice() else {
            return Err(EngineError::Graph(format!(
                "the model has {} inputs; run1 needs exactly one",
                self.plan.inputs.len()
            )));
        };
        let name = spec.name.clone();
        let out = self.run(&[(name.as_str(), x)])?;
        match out.into_iter().next() {
            Some(v) => Ok(v),
            None => Err(EngineError::Graph("the graph has no outputs".to_string())),
        }
    }

    /// Runs the graph and returns the values named in `wanted` (any graph
    /// input, constant or node output, e.g. a block's input and output for
    /// reconstruction). All shapes are checked before any tensor work.
    pub fn run_for(&self, inputs: &[(&str, Value)], wanted: &[&str]) -> Result<Vec<Value>> {
        self.execute(inputs, wanted, None)
    }

    /// Like [`Engine::run`], also returning the wall time of every step
    /// `(node, op_type, seconds)`. The CPU backend runs eagerly, so a step's
    /// time is its own work.
    pub fn run_timed(&self, inputs: &[(&str, Value)]) -> Result<(Vec<Value>, Vec<StepTime>)> {
        let wanted: Vec<&str> = self.plan.outputs.iter().map(|(n, _)| n.as_str()).collect();
        let mut times = Vec::with_capacity(self.plan.steps.len());
        let out = self.execute(inputs, &wanted, Some(&mut times))?;
        Ok((out, times))
    }

    fn execute(
        &self,
        inputs: &[(&str, Value)],
        wanted: &[&str],
        mut times: Option<&mut Vec<StepTime>>,
    ) -> Result<Vec<Value>> {
        let plan = &self.plan;
        if let Some(b) = plan.fixed_batch {
            let firsts: Vec<Option<usize>> = inputs
                .iter()
                .map(|(_, v)| v.dims().first().copied())
                .collect();
            if let Some(&Some(n)) = firsts.first() {
                if n != b && firsts.iter().all(|&f| f == Some(n)) {
                    return self.execute_chunked(inputs, wanted, b, n, times);
                }
            }
        }
        let mut keep = vec![false; plan.names.len()];
        let mut wanted_slots = Vec::with_capacity(wanted.len());
        for w in wanted {
            let slot = *plan.by_name.get(*w).ok_or_else(|| {
                EngineError::Graph(format!("no value named {w} is computed by the graph"))
            })?;
            keep[slot] = true;
            wanted_slots.push(slot);
        }
        let given: Vec<(&str, Vec<usize>)> = inputs.iter().map(|(n, v)| (*n, v.dims())).collect();
        let shapes = plan.infer(&given)?;
        // Steps after the last one that produces a wanted value are skipped.
        let needed_until = plan
            .steps
            .iter()
            .rposition(|s| keep[s.output])
            .map_or(0, |i| i + 1);

        let mut vals: Vec<Option<Value>> = self.consts.clone();
        for (slot, pos) in plan.check_inputs(&given)? {
            vals[slot] = Some(inputs[pos].1.clone());
        }
        for (i, step) in plan.steps[..needed_until].iter().enumerate() {
            let mut ins = Vec::with_capacity(step.inputs.len());
            for (j, &s) in step.inputs.iter().enumerate() {
                let last = plan.last_use[s] == Some(i)
                    && !keep[s]
                    && self.consts[s].is_none()
                    && !step.inputs[j + 1..].contains(&s);
                let v = if last {
                    vals[s].take()
                } else {
                    vals[s].clone()
                };
                match v {
                    Some(v) => ins.push(v),
                    None => unreachable!("slot {} is produced before it is used", plan.names[s]),
                }
            }
            let out_shape = shapes[step.output].as_deref().unwrap_or(&[]);
            let t0 = times.as_ref().map(|_| std::time::Instant::now());
            let out = match &step.packed {
                Some(p) => p.run(&step.op, ins, out_shape),
                None => step.op.run(ins, out_shape),
            };
            if let (Some(times), Some(t0)) = (times.as_deref_mut(), t0) {
                // Wait for the result so that the time is this step's.
                let _ = out.dims();
                times.push(StepTime {
                    node: step.node.clone(),
                    op_type: step.op_type.clone(),
                    seconds: t0.elapsed().as_secs_f64(),
                });
            }
            vals[step.output] = Some(out);
        }
        wanted_slots
            .into_iter()
            .map(|s| {
                vals[s].clone().ok_or_else(|| {
                    EngineError::Graph(format!("value {} was not computed", plan.names[s]))
                })
            })
            .collect()
    }

    /// Runs `n` samples through a graph whose inputs fix the batch at `b`: chunks of `b`
    /// samples (the last one filled up with copies of its first sample), each wanted value cut
    /// back to its real samples and joined along the batch axis. Every wanted value must have
    /// the batch as its first axis.
    fn execute_chunked(
        &self,
        inputs: &[(&str, Value)],
        wanted: &[&str],
        b: usize,
        n: usize,
        mut times: Option<&mut Vec<StepTime>>,
    ) -> Result<Vec<Value>> {
        if n == 0 {
            return Err(EngineError::Graph(
                "an empty batch (0 samples) was given".to_string(),
            ));
        }
        let mut parts: Vec<Vec<Value>> = vec![Vec::new(); wanted.len()];
        let mut start = 0;
        while start < n {
            let len = b.min(n - start);
            let chunk: Vec<(&str, Value)> = inputs
                .iter()
                .map(|(name, v)| {
                    let mut c = v.clone().narrow(0, start, len);
                    if len < b {
                        let fill = c.clone().narrow(0, 0, 1);
                        let mut all = vec![c];
                        all.extend(std::iter::repeat_n(fill, b - len));
                        c = Value::cat(all, 0);
                    }
                    (*name, c)
                })
                .collect();
            let outs = self.execute(&chunk, wanted, times.as_deref_mut())?;
            for ((w, out), part) in wanted.iter().zip(outs).zip(parts.iter_mut()) {
                if out.dims().first() != Some(&b) {
                    return Err(EngineError::Graph(format!(
                        "the model's inputs fix the batch at {b}, so {n} samples run in chunks \
                         of {b}; but {w} has shape {:?}, without the batch as its first axis",
                        out.dims()
                    )));
                }
                part.push(if len < b { out.narrow(0, 0, len) } else { out });
            }
            start += len;
        }
        Ok(parts
            .into_iter()
            .map(|mut p| match p.len() {
                1 => p.remove(0),
                _ => Value::cat(p, 0),
            })
            .collect())
    }

    /// Convenience for a single-input model on the CPU: runs `data` (row-major,
    /// `shape`) and returns the first output's shape and data.
    pub fn run_f32(&self, data: Vec<f32>, shape: &[usize]) -> Result<(Vec<usize>, Vec<f32>)> {
        let name = self
            .plan
            .inputs
            .first()
            .map(|s| s.name.clone())
            .unwrap_or_default();
        let x = Value::from_f32(data, shape, &self.device).ok_or_else(|| EngineError::Input {
            name,
            msg: format!(
                "shape {shape:?} does not match the data length, or has rank 0 or above {MAX_RANK}"
            ),
        })?;
        let y = self.run1(x)?;
        Ok((y.dims(), y.to_vec()))
    }
}
