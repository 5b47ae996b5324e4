//! The operator registry: one module per operator family, each with a
//! `build` function (attributes and constant inputs → [`Op`], checked when the
//! plan is built), shape inference (checked for the actual input shapes before
//! a run starts) and execution on burn tensors.

mod activation;
pub(crate) use activation::Unary;
pub(crate) mod conv;
mod elementwise;
pub(crate) mod gemm;
mod norm;
mod pool;
mod reduce;
mod resize;
mod shape;

use std::collections::HashMap;

use subsetq_onnx::pb::attribute_proto::AttributeType;
use subsetq_onnx::pb::{AttributeProto, NodeProto};

use crate::error::{node_err, EngineError, Result};
use crate::value::{Value, MAX_RANK};
use subsetq_onnx::{read_tensor, ConstTensor};

/// Index of a value (graph input, constant or node output) in a plan.
pub(crate) type Slot = usize;

/// A planned operation with its attributes resolved.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    Conv(conv::Conv),
    ConvTranspose(conv::ConvTranspose),
    Gemm(gemm::Gemm),
    MatMul,
    BatchNorm(norm::BatchNorm),
    Softmax(norm::Softmax),
    Relu,
    Round,
    Clip(elementwise::Clip),
    Binary(elementwise::Binary),
    Variadic(elementwise::Variadic),
    Unary(activation::Unary),
    PRelu(activation::PRelu),
    Lrn(norm::Lrn),
    InstanceNorm(norm::InstanceNorm),
    Reduce(reduce::Reduce),
    Squeeze(shape::Squeeze),
    Slice(shape::Slice),
    SplitPart(shape::SplitPart),
    Gather(shape::Gather),
    Expand(shape::Expand),
    Identity,
    MaxPool(pool::Pool),
    AveragePool(pool::Pool),
    GlobalAveragePool,
    Flatten(shape::Flatten),
    Reshape(shape::Reshape),
    Transpose(shape::Transpose),
    Pad(shape::Pad),
    Concat(shape::Concat),
    Resize(resize::Resize),
}

/// What a builder sees of the graph so far.
pub(crate) trait GraphView {
    /// The constant tensor named `name` (initializer or `Constant` output), if any.
    fn constant(&self, name: &str) -> Option<&ConstTensor>;
    /// The slot of a tensor input (runtime value or float constant).
    fn tensor_slot(&mut self, name: &str) -> std::result::Result<Slot, String>;
}

/// A node being built: its name, operator, attributes and inputs.
pub(crate) struct NodeCtx<'a> {
    pub node: &'a NodeProto,
    pub name: String,
    pub op: String,
    pub opset: i64,
    pub graph: &'a mut dyn GraphView,
    attrs: HashMap<&'a str, &'a AttributeProto>,
    /// Runtime inputs of the planned step, in the order the op's `run` expects.
    pub inputs: Vec<Slot>,
    /// Ops for the node's outputs 1, 2, … (same inputs), for multi-output operators (`Split`);
    /// empty when only output 0 is computed.
    pub extra: Vec<Op>,
}

type BuildFn = fn(&mut NodeCtx) -> Result<Op>;

/// The registry: ONNX operator type → builder.
const REGISTRY: &[(&str, BuildFn)] = &[
    ("Conv", conv::build),
    ("ConvTranspose", conv::build_transpose),
    ("Gemm", gemm::build_gemm),
    ("MatMul", gemm::build_matmul),
    ("BatchNormalization", norm::build_batch_norm),
    ("Softmax", norm::build_softmax),
    ("Relu", elementwise::build_relu),
    ("Clip", elementwise::build_clip),
    ("Round", elementwise::build_round),
    ("Add", elementwise::build_binary),
    ("Sub", elementwise::build_binary),
    ("Mul", elementwise::build_binary),
    ("Div", elementwise::build_binary),
    ("Pow", elementwise::build_binary),
    ("Sum", elementwise::build_variadic),
    ("Mean", elementwise::build_variadic),
    ("Max", elementwise::build_variadic),
    ("Min", elementwise::build_variadic),
    ("Sigmoid", activation::build_unary),
    ("Tanh", activation::build_unary),
    ("Exp", activation::build_unary),
    ("Log", activation::build_unary),
    ("Neg", activation::build_unary),
    ("Abs", activation::build_unary),
    ("Sqrt", activation::build_unary),
    ("Reciprocal", activation::build_unary),
    ("Floor", activation::build_unary),
    ("Ceil", activation::build_unary),
    ("Sign", activation::build_unary),
    ("Shrink", activation::build_unary),
    ("Softsign", activation::build_unary),
    ("Softplus", activation::build_unary),
    ("HardSwish", activation::build_unary),
    ("HardSigmoid", activation::build_unary),
    ("LeakyRelu", activation::build_unary),
    ("Elu", activation::build_unary),
    ("Selu", activation::build_unary),
    ("PRelu", activation::build_prelu),
    ("LRN", norm::build_lrn),
    ("InstanceNormalization", norm::build_instance_norm),
    ("LogSoftmax", norm::build_softmax),
    ("ReduceMean", reduce::build_reduce),
    ("ReduceSum", reduce::build_reduce),
    ("ReduceMax", reduce::build_reduce),
    ("ReduceMin", reduce::build_reduce),
    ("Squeeze", shape::build_squeeze),
    ("Unsqueeze", shape::build_squeeze),
    ("Slice", shape::build_slice),
    ("Split", shape::build_split),
    ("Gather", shape::build_gather),
    ("Expand", shape::build_expand),
    ("Tile", shape::build_expand),
    ("Identity", elementwise::build_identity),
    ("Dropout", elementwise::build_identity),
    ("MaxPool", pool::build_max_pool),
    ("AveragePool", pool::build_average_pool),
    ("GlobalAveragePool", pool::build_global_average_pool),
    ("Flatten", shape::build_flatten),
    ("Reshape", shape::build_reshape),
    ("Transpose", shape::build_transpose),
    ("Pad", shape::build_pad),
    ("Concat", shape::build_concat),
    ("Resize", resize::build_resize),
    ("Upsample", resize::build_resize),
];

/// The operator types the engine runs (plus `Constant`, which the plan folds).
pub fn supported_ops() -> Vec<&'static str> {
    let mut v: Vec<&str> = REGISTRY.iter().map(|(n, _)| *n).collect();
    v.push("Constant");
    v
}

/// The builder for `op_type` in the default domain, if there is one.
pub(crate) fn builder(domain: &str, op_type: &str) -> Option<BuildFn> {
    if !(domain.is_empty() || domain == "ai.onnx") {
        return None;
    }
    REGISTRY
        .iter()
        .find(|(n, _)| *n == op_type)
        .map(|(_, f)| *f)
}

impl<'a> NodeCtx<'a> {
    pub(crate) fn new(
        node: &'a NodeProto,
        name: String,
        opset: i64,
        graph: &'a mut dyn GraphView,
    ) -> Self {
        let attrs = node.attribute.iter().map(|a| (a.name(), a)).collect();
        NodeCtx {
            node,
            name,
            op: node.op_type().to_string(),
            opset,
            graph,
            attrs,
            inputs: Vec::new(),
            extra: Vec::new(),
        }
    }

    /// An error naming this node.
    pub fn err(&self, msg: impl Into<String>) -> EngineError {
        node_err(&self.name, &self.op, msg)
    }

    fn attr(&self, name: &str, ty: AttributeType) -> Result<Option<&'a AttributeProto>> {
        match self.attrs.get(name) {
            None => Ok(None),
            Some(a) => {
                // Some exporters leave `type` unset; accept the field that is present.
                if a.r#type.is_some() && a.r#type() != ty {
                    return Err(self.err(format!(
                        "attribute {name} has type {}, expected {}",
                        a.r#type().as_str_name(),
                        ty.as_str_name()
                    )));
                }
                Ok(Some(*a))
            }
        }
    }

    pub fn attr_int(&self, name: &str, default: i64) -> Result<i64> {
        Ok(self
            .attr(name, AttributeType::Int)?
            .and_then(|a| a.i)
            .unwrap_or(default))
    }

    pub fn attr_int_opt(&self, name: &str) -> Result<Option<i64>> {
        Ok(self.attr(name, AttributeType::Int)?.and_then(|a| a.i))
    }

    pub fn attr_float(&self, name: &str) -> Result<Option<f32>> {
        Ok(self.attr(name, AttributeType::Float)?.and_then(|a| a.f))
    }

    pub fn attr_ints(&self, name: &str) -> Result<Option<Vec<i64>>> {
        Ok(self
            .attr(name, AttributeType::Ints)?
            .map(|a| a.ints.clone()))
    }

    pub fn attr_string(&self, name: &str) -> Result<Option<String>> {
        match self
            .attr(name, AttributeType::String)?
            .and_then(|a| a.s.as_ref())
        {
            None => Ok(None),
            Some(bytes) => String::from_utf8(bytes.clone())
                .map(Some)
                .map_err(|_| self.err(format!("attribute {name} is not UTF-8"))),
        }
    }

    /// Fails on attributes the builder does not know, so that an attribute
    /// that changes the result is never silently ignored.
    pub fn only_attrs(&self, known: &[&str]) -> Result<()> {
        for a in self.node.attribute.iter() {
            if !known.contains(&a.name()) {
                return Err(self.err(format!("attribute {} is not supported", a.name())));
            }
        }
        Ok(())
    }

    /// The name of input `i`, or `None` when absent or empty (an omitted optional input).
    pub fn input_name(&self, i: usize) -> Option<&'a str> {
        self.node
            .input
            .get(i)
            .map(|s| s.as_str())
            .filter(|s| !s.is_empty())
    }

    /// Checks the number of inputs (present or omitted) is within `min ..= max`.
    pub fn input_count(&self, min: usize, max: usize) -> Result<()> {
        let n = self.node.input.len();
        if n < min || n > max || (0..min).any(|i| self.input_name(i).is_none()) {
            return Err(self.err(if min == max {
                format!("expects {min} inputs, has {n}")
            } else {
                format!("expects {min} to {max} inputs, has {n}")
            }));
        }
        Ok(())
    }

    /// Adds input `i` as a runtime tensor input of the step.
    pub fn tensor_input(&mut self, i: usize) -> Result<()> {
        let name = self
            .input_name(i)
            .ok_or_else(|| self.err(format!("input {i} is missing")))?;
        let slot = self.graph.tensor_slot(name).map_err(|m| self.err(m))?;
        self.inputs.push(slot);
        Ok(())
    }

    /// Input `i` as a constant (initializer or `Constant` output); `None` when
    /// the input is omitted. A runtime (computed) value is an error.
    pub fn const_input(&self, i: usize, what: &str) -> Result<Option<ConstTensor>> {
        let Some(name) = self.input_name(i) else {
            return Ok(None);
        };
        match self.graph.constant(name) {
            Some(c) => Ok(Some(c.clone())),
            None => Err(self.err(format!(
                "{what} (input {i}, {name}) must be a constant (initializer or Constant node); \
                 computed values are not supported"
            ))),
        }
    }

    /// Input `i` as a constant integer list (shape, pads, axes).
    pub fn const_ints(&self, i: usize, what: &str) -> Result<Option<Vec<i64>>> {
        match self.const_input(i, what)? {
            None => Ok(None),
            Some(c) => match c.as_i64() {
                Some(v) => Ok(Some(v.to_vec())),
                None => Err(self.err(format!("{what} must be an integer tensor"))),
            },
        }
    }

    /// Input `i` as a constant one-element float (Clip bounds, Pad value).
    pub fn const_scalar(&self, i: usize, what: &str) -> Result<Option<f32>> {
        match self.const_input(i, what)? {
            None => Ok(None),
            Some(c) => match c.scalar_f32() {
                Some(v) => Ok(Some(v)),
                None => Err(self.err(format!(
                    "{what} must be a one-element float tensor, got shape {:?}",
                    c.shape
                ))),
            },
        }
    }

    /// Only output 0 may be used; further outputs must be omitted.
    pub fn single_output(&self) -> Result<()> {
        if self.node.output.first().is_none_or(|o| o.is_empty()) {
            return Err(self.err("has no output"));
        }
        Ok(())
    }
}

/// Reads a `Constant` node's value.
pub(crate) fn constant_value(node: &NodeProto, name: &str) -> Result<ConstTensor> {
    let op = "Constant";
    let out = node.output.first().map(|s| s.as_str()).unwrap_or("");
    if node.attribute.len() != 1 {
        return Err(node_err(name, op, "expects exactly one value attribute"));
    }
    let a = &node.attribute[0];
    match a.name() {
        "value" => {
            let t =
                a.t.as_ref()
                    .ok_or_else(|| node_err(name, op, "attribute value holds no tensor"))?;
            read_tensor(t, out).map_err(|e| node_err(name, op, e.to_string()))
        }
        "value_float" => Ok(ConstTensor {
            shape: vec![],
            data: subsetq_onnx::ConstData::F32(vec![a.f.unwrap_or(0.0)]),
        }),
        "value_floats" => Ok(ConstTensor {
            shape: vec![a.floats.len()],
            data: subsetq_onnx::ConstData::F32(a.floats.clone()),
        }),
        "value_int" => Ok(ConstTensor {
            shape: vec![],
            data: subsetq_onnx::ConstData::I64(vec![a.i.unwrap_or(0)]),
        }),
        "value_ints" => Ok(ConstTensor {
            shape: vec![a.ints.len()],
            data: subsetq_onnx::ConstData::I64(a.ints.clone()),
        }),
        other => Err(node_err(
            name,
            op,
            format!("attribute {other} is not supported (value, value_float(s), value_int(s) are)"),
        )),
    }
}

impl Op {
    /// Output shape for the given input shapes; the error message is wrapped
    /// with the node's name by the caller.
    pub(crate) fn infer(&self, ins: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        let out = match self {
            Op::Conv(c) => c.infer(ins)?,
            Op::ConvTranspose(c) => c.infer(ins)?,
            Op::Gemm(g) => g.infer(ins)?,
            Op::MatMul => gemm::infer_matmul(ins)?,
            Op::BatchNorm(b) => b.infer(ins)?,
            Op::Softmax(s) => s.infer(ins)?,
            Op::Relu | Op::Round | Op::Clip(_) | Op::Identity => ins[0].to_vec(),
            Op::Binary(b) => b.infer(ins)?,
            Op::Variadic(v) => v.infer(ins)?,
            Op::Unary(_) => ins[0].to_vec(),
            Op::PRelu(p) => p.infer(ins)?,
            Op::Lrn(l) => l.infer(ins)?,
            Op::InstanceNorm(n) => n.infer(ins)?,
            Op::Reduce(r) => r.infer(ins)?,
            Op::Squeeze(s) => s.infer(ins)?,
            Op::Slice(s) => s.infer(ins)?,
            Op::SplitPart(s) => s.infer(ins)?,
            Op::Gather(g) => g.infer(ins)?,
            Op::Expand(e) => e.infer(ins)?,
            Op::MaxPool(p) | Op::AveragePool(p) => p.infer(ins)?,
            Op::GlobalAveragePool => pool::infer_global(ins)?,
            Op::Flatten(f) => f.infer(ins)?,
            Op::Reshape(r) => r.infer(ins)?,
            Op::Transpose(t) => t.infer(ins)?,
            Op::Pad(p) => p.infer(ins)?,
            Op::Concat(c) => c.infer(ins)?,
            Op::Resize(r) => r.infer(ins)?,
        };
        if out.is_empty() || out.len() > MAX_RANK {
            return Err(format!(
                "output rank {} is not supported (1 to {MAX_RANK} are)",
                out.len()
            ));
        }
        Ok(out)
    }

    /// Runs the op. Input shapes have been checked by [`Op::infer`], which
    /// gave `out`.
    pub(crate) fn run(&self, ins: Vec<Value>, out: &[usize]) -> Value {
        match self {
            Op::Conv(c) => c.run(ins),
            Op::ConvTranspose(c) => c.run(ins),
            Op::Gemm(g) => g.run(ins),
            Op::MatMul => gemm::run_matmul(ins, out),
            Op::BatchNorm(b) => b.run(ins),
            Op::Softmax(s) => s.run(ins),
            Op::Relu => elementwise::run_relu(ins),
            Op::Round => elementwise::run_round(ins),
            Op::Clip(c) => c.run(ins),
            Op::Binary(b) => b.run(ins),
            Op::Variadic(v) => v.run(ins),
            Op::Unary(f) => f.run(ins),
            Op::PRelu(p) => p.run(ins),
            Op::Lrn(l) => l.run(ins),
            Op::InstanceNorm(n) => n.run(ins),
            Op::Reduce(r) => r.run(ins, out),
            Op::Squeeze(_) => shape::run_reshape(ins, out),
            Op::Slice(s) => s.run(ins),
            Op::SplitPart(s) => s.run(ins),
            Op::Gather(g) => g.run(ins, out),
            Op::Expand(e) => e.run(ins, out),
            Op::Identity => elementwise::run_identity(ins),
            Op::MaxPool(p) => p.run_max(ins),
            Op::AveragePool(p) => p.run_avg(ins),
            Op::GlobalAveragePool => pool::run_global(ins),
            Op::Flatten(_) | Op::Reshape(_) => shape::run_reshape(ins, out),
            Op::Transpose(t) => t.run(ins),
            Op::Pad(p) => p.run(ins),
            Op::Concat(c) => c.run(ins),
            Op::Resize(r) => r.run(ins, out),
        }
    }
}

/// Resolves a possibly negative axis against `rank` (`-rank ..= rank-1`).
pub(crate) fn norm_axis(axis: i64, rank: usize) -> std::result::Result<usize, String> {
    let r = rank as i64;
    if axis < -r || axis >= r {
        return Err(format!("axis {axis} is out of range for rank {rank}"));
    }
    Ok(if axis < 0 { axis + r } else { axis } as usize)
}

/// Takes the first input (present by construction).
pub(crate) fn first(ins: Vec<Value>) -> Value {
    match ins.into_iter().next() {
        Some(v) => v,
        None => unreachable!("input count checked when the plan was built"),
    }
}
