//! The compact weight form: a quantized weight stored as its b-bit codes (ONNX `UINT4` at ≤ 4
//! bits, `UINT8` above or in models below opset 13, see [`Model::store_compact`]), a signed table of 2^b values and per-output-channel scales, decoded by
//! standard operators so that any runtime runs it:
//!
//! `W = Reshape(Gather(table, Cast(codes → INT32)), shape) · scales` (plus a `ScatterND` that
//! writes exact zeros where 0 is not a level). [`Model::fold_constants`] evaluates such
//! constant subgraphs back into float initializers, which is how our engine loads the form.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use crate::pb::tensor_proto::DataType;
use crate::pb::{AttributeProto, NodeProto, OperatorSetIdProto, TensorProto};
use crate::tensor::{read_tensor, ConstData, ConstTensor};
use crate::{is_default_domain, Model, OnnxError, Result};

/// Opset that brings `UINT4` (Cast from it, opset 21).
pub const UINT4_OPSET: i64 = 21;

/// One weight in compact form.
#[derive(Debug, Clone, PartialEq)]
pub struct CompactWeight {
    /// The weight initializer to replace; the decoded tensor keeps its name.
    pub name: String,
    /// Bits per code (2..=8).
    pub bits: u32,
    /// One code per weight, row-major, each below `table.len()`.
    pub codes: Vec<u8>,
    /// The values the codes index (2^bits of them).
    pub table: Vec<f32>,
    /// One multiplier per output channel.
    pub channel_scales: Vec<f32>,
    /// The weight's shape.
    pub shape: Vec<usize>,
    /// The output channels' axis in `shape`.
    pub out_axis: usize,
    /// Positions (row-major) whose weight is exactly 0 whatever their code says.
    pub zeros: Vec<usize>,
}

fn tensor(name: String, dims: &[usize], data_type: DataType, raw: Vec<u8>) -> TensorProto {
    TensorProto {
        name: Some(name),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: Some(data_type as i32),
        raw_data: Some(raw),
        ..Default::default()
    }
}

fn f32_tensor(name: String, dims: &[usize], v: &[f32]) -> TensorProto {
    tensor(
        name,
        dims,
        DataType::Float,
        v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    )
}

fn i64_tensor(name: String, dims: &[usize], v: &[i64]) -> TensorProto {
    tensor(
        name,
        dims,
        DataType::Int64,
        v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    )
}

fn node(op: &str, name: String, inputs: &[&str], output: &str) -> NodeProto {
    NodeProto {
        op_type: Some(op.to_string()),
        name: Some(name),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.to_string()],
        ..Default::default()
    }
}

impl CompactWeight {
    fn check(&self) -> Result<()> {
        let err = |msg: String| OnnxError::Initializer {
            name: self.name.clone(),
            msg,
        };
        let Some(n) = self.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)) else {
            return Err(err(format!("shape {:?} has too many elements", self.shape)));
        };
        if !(2..=8).contains(&self.bits) {
            return Err(err(format!(
                "{} bits per code (2..=8 are stored)",
                self.bits
            )));
        }
        if self.table.len() != 1 << self.bits {
            return Err(err(format!(
                "a table of {} values for {}-bit codes",
                self.table.len(),
                self.bits
            )));
        }
        if self.codes.len() != n {
            return Err(err(format!(
                "{} codes for shape {:?}",
                self.codes.len(),
                self.shape
            )));
        }
        if let Some(c) = self
            .codes
            .iter()
            .find(|&&c| usize::from(c) >= self.table.len())
        {
            return Err(err(format!(
                "code {c} is outside the {}-entry table",
                self.table.len()
            )));
        }
        if self.shape.get(self.out_axis) != Some(&self.channel_scales.len()) {
            return Err(err(format!(
                "{} channel scales for shape {:?} with output axis {}",
                self.channel_scales.len(),
                self.shape,
                self.out_axis
            )));
        }
        if let Some(z) = self.zeros.iter().find(|&&z| z >= n) {
            return Err(err(format!("zero position {z} is outside the {n} weights")));
        }
        Ok(())
    }
}

impl Model {
    /// Replaces the float initializer `w.name` by its compact form (see the module docs),
    /// raising the default opset to [`UINT4_OPSET`] when codes are 4-bit or narrower.
    ///
    /// Raising an older opset would change what other nodes mean (Softmax's default axis and
    /// its 2-D coercion before opset 13, Dropout's `ratio` attribute, Pad / Clip attributes,
    /// Reduce axes as attributes before 18), so the opset is raised only from 13 on and when no
    /// Reduce node carries an `axes` attribute; otherwise codes are stored one per byte
    /// (UINT8), which every opset reads.
    pub fn store_compact(&mut self, w: &CompactWeight) -> Result<()> {
        w.check()?;
        let opset = self.opset().unwrap_or(0);
        if !w.zeros.is_empty() && opset < 11 {
            return Err(OnnxError::Initializer {
                name: w.name.clone(),
                msg: format!(
                    "exact zeros need ScatterND (opset 11) in the compact form; the model is at \
                     opset {opset} (store the weights as float instead)"
                ),
            });
        }
        let uint4 = w.bits <= 4 && (opset >= UINT4_OPSET || self.opset_can_rise_to_uint4()?);
        if uint4 && opset < UINT4_OPSET {
            self.set_opset(UINT4_OPSET);
        }
        let graph = self.proto.graph.as_mut().ok_or(OnnxError::NoGraph)?;
        let Some(at) = graph.initializer.iter().position(|t| t.name() == w.name) else {
            return Err(OnnxError::Initializer {
                name: w.name.clone(),
                msg: "no such initializer".into(),
            });
        };
        graph.initializer.remove(at);
        // A weight listed as a graph input (older exporters) would clash with its decoder.
        graph.input.retain(|i| i.name() != w.name);
        let name = |part: &str| format!("{}.{part}", w.name);
        let n = w.codes.len();
        let codes = if uint4 {
            let packed = w
                .codes
                .chunks(2)
                .map(|p| p[0] | p.get(1).map_or(0, |hi| hi << 4))
                .collect();
            tensor(name("codes"), &[n], DataType::Uint4, packed)
        } else {
            tensor(name("codes"), &[n], DataType::Uint8, w.codes.clone())
        };
        let mut scale_dims = vec![1; w.shape.len()];
        scale_dims[w.out_axis] = w.channel_scales.len();
        let shape: Vec<i64> = w.shape.iter().map(|&d| d as i64).collect();
        graph.initializer.extend([
            codes,
            f32_tensor(name("table"), &[w.table.len()], &w.table),
            f32_tensor(name("scales"), &scale_dims, &w.channel_scales),
            i64_tensor(name("shape"), &[shape.len()], &shape),
        ]);
        let (index, flat, levels) = (name("index"), name("flat"), name("levels"));
        let mut cast = node("Cast", name("cast"), &[&name("codes")], &index);
        cast.attribute.push(AttributeProto {
            name: Some("to".into()),
            r#type: Some(crate::pb::attribute_proto::AttributeType::Int as i32),
            i: Some(DataType::Int32 as i64),
            ..Default::default()
        });
        let mut chain = vec![
            cast,
            node("Gather", name("gather"), &[&name("table"), &index], &flat),
        ];
        let mut values = flat.clone();
        if !w.zeros.is_empty() {
            let positions: Vec<i64> = w.zeros.iter().map(|&z| z as i64).collect();
            graph.initializer.extend([
                i64_tensor(name("zero_positions"), &[positions.len(), 1], &positions),
                f32_tensor(
                    name("zero_values"),
                    &[positions.len()],
                    &vec![0.0; positions.len()],
                ),
            ]);
            values = name("zeroed");
            chain.push(node(
                "ScatterND",
                name("scatter"),
                &[&flat, &name("zero_positions"), &name("zero_values")],
                &values,
            ));
        }
        chain.push(node(
            "Reshape",
            name("reshape"),
            &[&values, &name("shape")],
            &levels,
        ));
        chain.push(node(
            "Mul",
            name("mul"),
            &[&levels, &name("scales")],
            &w.name,
        ));
        graph.node.splice(0..0, chain);
        Ok(())
    }

    /// Whether raising the default opset to [`UINT4_OPSET`] leaves every node's meaning as it is
    /// (see [`Model::store_compact`]).
    fn opset_can_rise_to_uint4(&self) -> Result<bool> {
        if self.opset().unwrap_or(0) < 13 {
            return Ok(false);
        }
        let reduce_axes_attr = self.graph()?.node.iter().any(|n| {
            n.op_type().starts_with("Reduce") && n.attribute.iter().any(|a| a.name() == "axes")
        });
        Ok(self.opset().unwrap_or(0) >= 18 || !reduce_axes_attr)
    }

    /// The weights stored in compact form, read back from their initializers (what
    /// [`Model::store_compact`] wrote): a weight `W` counts when a `W.mul` node produces it
    /// from `W.codes`, `W.table`, `W.scales` and `W.shape` (and, optionally,
    /// `W.zero_positions`). Each is checked as when it was stored.
    pub fn compact_weights(&self) -> Result<Vec<CompactWeight>> {
        let graph = self.graph()?;
        let inits: HashMap<&str, &TensorProto> =
            graph.initializer.iter().map(|t| (t.name(), t)).collect();
        let mut out = Vec::new();
        for mul in graph.node.iter().filter(|n| n.op_type() == "Mul") {
            let Some(name) = mul.output.first() else {
                continue;
            };
            if mul.name() != format!("{name}.mul") {
                continue;
            }
            let part = |p: &str| -> Result<ConstTensor> {
                let key = format!("{name}.{p}");
                match inits.get(key.as_str()) {
                    Some(t) => read_tensor(t, &key),
                    None => Err(OnnxError::Initializer {
                        name: name.clone(),
                        msg: format!("compact weight without its {key} initializer"),
                    }),
                }
            };
            let ints = |t: ConstTensor, what: &str| -> Result<Vec<i64>> {
                match t.data {
                    ConstData::I64(v) => Ok(v),
                    ConstData::F32(_) => Err(OnnxError::Initializer {
                        name: format!("{name}.{what}"),
                        msg: "expected integers".into(),
                    }),
                }
            };
            let floats = |t: ConstTensor, what: &str| -> Result<Vec<f32>> {
                match t.data {
                    ConstData::F32(v) => Ok(v),
                    ConstData::I64(_) => Err(OnnxError::Initializer {
                        name: format!("{name}.{what}"),
                        msg: "expected floats".into(),
                    }),
                }
            };
            let codes_proto = inits.get(format!("{name}.codes").as_str()).copied();
            let codes = ints(part("codes")?, "codes")?;
            let table = floats(part("table")?, "table")?;
            let scales = part("scales")?;
            let scale_dims = scales.shape.clone();
            let channel_scales = floats(scales, "scales")?;
            let shape: Vec<usize> = ints(part("shape")?, "shape")?
                .into_iter()
                .map(|d| usize::try_from(d).unwrap_or(usize::MAX))
                .collect();
            let out_axis = scale_dims.iter().position(|&d| d != 1).unwrap_or(0);
            let zeros = if inits.contains_key(format!("{name}.zero_positions").as_str()) {
                ints(part("zero_positions")?, "zero_positions")?
                    .into_iter()
                    .map(|z| usize::try_from(z).unwrap_or(usize::MAX))
                    .collect()
            } else {
                Vec::new()
            };
            let uint4 = codes_proto.and_then(|t| t.data_type) == Some(DataType::Uint4 as i32);
            let bits = match table.len() {
                n if n.is_power_of_two() && n >= 4 => n.trailing_zeros(),
                n => {
                    return Err(OnnxError::Initializer {
                        name: name.clone(),
                        msg: format!("a table of {n} values is not 2^bits for 2..=8 bits"),
                    })
                }
            };
            // UINT8 holds codes of any width (models below opset 13 keep it, see
            // store_compact); UINT4 only codes of 4 bits or fewer.
            if uint4 && bits > 4 {
                return Err(OnnxError::Initializer {
                    name: name.clone(),
                    msg: format!("{bits}-bit codes stored as UINT4"),
                });
            }
            let w = CompactWeight {
                name: name.clone(),
                bits,
                codes: codes
                    .into_iter()
                    .map(|c| u8::try_from(c).unwrap_or(u8::MAX))
                    .collect(),
                table,
                channel_scales,
                shape,
                out_axis,
                zeros,
            };
            w.check()?;
            out.push(w);
        }
        Ok(out)
    }

    pub(crate) fn set_opset(&mut self, version: i64) {
        match self
            .proto
            .opset_import
            .iter_mut()
            .find(|o| is_default_domain(o.domain()))
        {
            Some(o) => o.version = Some(version),
            None => self.proto.opset_import.push(OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(version),
            }),
        }
    }

    /// The model with every node whose inputs are all constants (initializers, or outputs of
    /// nodes folded before it) and whose operator is one of `Cast`, `Gather`, `ScatterND`,
    /// `Reshape`, `Mul`, `Constant`, `ConstantOfShape`, `Identity` evaluated into initializers:
    /// the compact weight form decoded, and weights that exporters write as constant nodes
    /// made initializers (so that they are found as weight layers).
    /// Initializers only those nodes read are dropped. Nodes it cannot evaluate are kept.
    /// Borrows the model unchanged when nothing folds (the common case for plain models, which
    /// every plan goes through).
    pub fn fold_constants(&self) -> Result<Cow<'_, Model>> {
        self.fold_constants_within(MAX_FOLDED)
    }

    /// [`Model::fold_constants`], holding at most `budget` folded elements at once.
    fn fold_constants_within(&self, budget: usize) -> Result<Cow<'_, Model>> {
        let graph = self.graph()?;
        let foldable = |n: &NodeProto| {
            is_default_domain(n.domain())
                && matches!(
                    n.op_type(),
                    "Cast"
                        | "Gather"
                        | "ScatterND"
                        | "Reshape"
                        | "Mul"
                        | "Constant"
                        | "ConstantOfShape"
                        | "Identity"
                )
                && n.output.len() == 1
        };
        // Which nodes may fold, by names alone, before any tensor is read or copied.
        let mut constant: HashSet<&str> = graph.initializer.iter().map(|t| t.name()).collect();
        let candidate: Vec<bool> = graph
            .node
            .iter()
            .map(|n| {
                let c = foldable(n) && n.input.iter().all(|i| constant.contains(i.as_str()));
                if c {
                    constant.insert(n.output[0].as_str());
                }
                c
            })
            .collect();
        if !candidate.contains(&true) {
            return Ok(Cow::Borrowed(self));
        }
        let initializers: HashMap<&str, &TensorProto> =
            graph.initializer.iter().map(|t| (t.name(), t)).collect();
        let mut consts: HashMap<String, ConstTensor> = HashMap::new();
        let mut kept = Vec::new();
        let mut folded_outputs = Vec::new();
        // A folded value is dropped after its last reader among the candidates, unless a node
        // that does not fold or a graph output reads it: decoding a compact weight (Cast →
        // Gather → Mul → Reshape) then holds two or three copies at once, not four per layer.
        let outside: HashSet<&str> = graph
            .node
            .iter()
            .zip(&candidate)
            .filter(|(_, &c)| !c)
            .flat_map(|(n, _)| n.input.iter().map(String::as_str))
            .chain(graph.output.iter().map(|o| o.name()))
            .collect();
        let mut last_read: HashMap<&str, usize> = HashMap::new();
        for (i, n) in graph.node.iter().enumerate().filter(|(i, _)| candidate[*i]) {
            for input in &n.input {
                last_read.insert(input.as_str(), i);
            }
        }
        // Elements held at once: folding stops with an error beyond `budget`.
        let mut live = 0usize;
        for (i, (n, &candidate)) in graph.node.iter().zip(&candidate).enumerate() {
            // A candidate whose input could not be evaluated after all is kept.
            let inputs: Option<Vec<ConstTensor>> = if candidate {
                n.input
                    .iter()
                    .map(|i| match consts.get(i) {
                        Some(t) => Some(Ok(t.clone())),
                        None => initializers.get(i.as_str()).map(|t| read_tensor(t, i)),
                    })
                    .collect::<Option<Result<Vec<_>>>>()
                    .transpose()?
            } else {
                None
            };
            let node_err = |msg: String| OnnxError::Node {
                node: if n.name().is_empty() {
                    n.op_type().to_string()
                } else {
                    n.name().to_string()
                },
                op_type: n.op_type().to_string(),
                msg,
            };
            let evaluated = match inputs {
                Some(ins) => evaluate(n, &ins, budget - live, budget).map_err(node_err)?,
                None => None,
            };
            match evaluated {
                Some(out) => {
                    live += out.numel();
                    if live > budget {
                        return Err(node_err(too_many_folded(live, budget)));
                    }
                    consts.insert(n.output[0].clone(), out);
                    folded_outputs.push(n.output[0].clone());
                    for input in &n.input {
                        if last_read.get(input.as_str()) == Some(&i)
                            && !outside.contains(input.as_str())
                        {
                            if let Some(t) = consts.remove(input) {
                                live -= t.numel();
                            }
                        }
                    }
                }
                _ => kept.push(n.clone()),
            }
        }
        let read: HashSet<String> = kept
            .iter()
            .flat_map(|n: &NodeProto| n.input.iter().cloned())
            .chain(graph.output.iter().map(|o| o.name().to_string()))
            .collect();
        let mut proto = self.proto.clone();
        let g = proto.graph.as_mut().ok_or(OnnxError::NoGraph)?;
        g.node = kept;
        let dropped: HashSet<String> = g
            .initializer
            .iter()
            .filter(|t| !read.contains(t.name()))
            .map(|t| t.name().to_string())
            .collect();
        g.initializer.retain(|t| read.contains(t.name()));
        // An initializer also listed as a graph input (IR < 4 models do that) goes with it,
        // else it would be left as an input nobody gives.
        g.input.retain(|i| !dropped.contains(i.name()));
        for name in folded_outputs.iter().filter(|o| read.contains(*o)) {
            let Some(t) = consts.get(name) else {
                continue;
            };
            g.initializer.push(match &t.data {
                ConstData::F32(v) => f32_tensor(name.clone(), &t.shape, v),
                ConstData::I64(v) => i64_tensor(name.clone(), &t.shape, v),
            });
        }
        Ok(Cow::Owned(Model::from_proto(proto)))
    }
}

/// Most elements the constant folds of one model may hold at once (VGG-19's compact weights
/// decode within it: its 103M-weight fc6 has codes, table lookup and scaled copies alive
/// together), so that a few bytes of `ConstantOfShape` cannot exhaust memory. Lower under
/// the fuzzer, whose inputs must stay within its memory limit.
#[cfg(not(fuzzing))]
pub(crate) const MAX_FOLDED: usize = 1 << 30;
#[cfg(fuzzing)]
pub(crate) const MAX_FOLDED: usize = 1 << 20;

fn too_many_folded(numel: usize, budget: usize) -> String {
    format!(
        "folding constants would make {numel} elements, more than the {budget} \
         this tool holds at once"
    )
}

/// Evaluates one constant node: `Ok(None)` where the node uses a form this does not handle,
/// an error where its inputs do not fit together (an index outside the table, shapes that do
/// not broadcast).
/// `room`: the most elements the output may have (of the fold's `budget`); a node that would
/// make more is refused before anything is allocated.
fn evaluate(
    n: &NodeProto,
    ins: &[ConstTensor],
    room: usize,
    budget: usize,
) -> std::result::Result<Option<ConstTensor>, String> {
    Ok(match (n.op_type(), ins) {
        ("Gather", [data, idx])
            if int_attr(n, "axis").unwrap_or(0) == 0 && data.shape.len() == 1 =>
        {
            let (Some(table), Some(idx_v)) = (data.as_f32(), idx.as_i64()) else {
                return Ok(None);
            };
            let len = table.len();
            let mut out = Vec::with_capacity(idx_v.len());
            for &i in idx_v {
                let at = if i < 0 { i + len as i64 } else { i };
                match usize::try_from(at).ok().and_then(|a| table.get(a)) {
                    Some(&v) => out.push(v),
                    None => return Err(format!("index {i} is outside the {len}-entry table")),
                }
            }
            Some(ConstTensor {
                shape: idx.shape.clone(),
                data: ConstData::F32(out),
            })
        }
        ("ScatterND", [data, idx, upd])
            if data.shape.len() == 1 && idx.shape.last() == Some(&1) =>
        {
            let (Some(d), Some(iv), Some(uv)) = (data.as_f32(), idx.as_i64(), upd.as_f32()) else {
                return Ok(None);
            };
            let mut out = d.to_vec();
            if iv.len() != uv.len() {
                return Err(format!("{} indices for {} updates", iv.len(), uv.len()));
            }
            for (&i, &u) in iv.iter().zip(uv) {
                let len = out.len();
                match usize::try_from(i).ok().and_then(|i| out.get_mut(i)) {
                    Some(slot) => *slot = u,
                    None => return Err(format!("index {i} is outside the {len} elements")),
                }
            }
            Some(ConstTensor {
                shape: data.shape.clone(),
                data: ConstData::F32(out),
            })
        }
        ("Mul", [a, b]) if a.as_f32().is_some() && b.as_f32().is_some() => {
            let Some(shape) = broadcast_shape(&a.shape, &b.shape) else {
                return Err(format!(
                    "shapes {:?} and {:?} do not broadcast",
                    a.shape, b.shape
                ));
            };
            let numel = shape
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .filter(|&n| n <= room)
                .ok_or_else(|| {
                    too_many_folded(shape.iter().fold(1, |a, &d| a.saturating_mul(d)), budget)
                })?;
            let (av, bv) = (
                a.as_f32().unwrap_or_default(),
                b.as_f32().unwrap_or_default(),
            );
            let (ia, ib) = (
                broadcast_index(&a.shape, &shape),
                broadcast_index(&b.shape, &shape),
            );
            let out = (0..numel).map(|i| av[ia(i)] * bv[ib(i)]).collect();
            Some(ConstTensor {
                shape,
                data: ConstData::F32(out),
            })
        }
        ("ConstantOfShape", [shape]) => {
            let Some(dims) = shape.as_i64().and_then(|d| {
                d.iter()
                    .map(|&d| usize::try_from(d).ok())
                    .collect::<Option<Vec<usize>>>()
            }) else {
                return Ok(None);
            };
            let numel = dims.iter().fold(1usize, |a, &d| a.saturating_mul(d));
            if numel > room {
                return Err(too_many_folded(numel, budget));
            }
            evaluate_shape_op(n, ins)
        }
        _ => evaluate_shape_op(n, ins),
    })
}

fn int_attr(n: &NodeProto, name: &str) -> Option<i64> {
    n.attribute
        .iter()
        .find(|a| a.name() == name)
        .and_then(|a| a.i)
}

/// `Cast` and `Reshape` of constants; `None` for forms not handled.
fn evaluate_shape_op(n: &NodeProto, ins: &[ConstTensor]) -> Option<ConstTensor> {
    let int_attr = |name: &str| int_attr(n, name);
    let attr = |name: &str| n.attribute.iter().find(|a| a.name() == name);
    match (n.op_type(), ins) {
        ("Identity", [x]) => Some(x.clone()),
        ("Constant", []) => {
            if let Some(t) = attr("value").and_then(|a| a.t.as_ref()) {
                return read_tensor(t, n.output.first()?).ok();
            }
            let a = attr("value_float")
                .or_else(|| attr("value_floats"))
                .or_else(|| attr("value_int"))
                .or_else(|| attr("value_ints"))?;
            Some(match a.name() {
                "value_float" => ConstTensor {
                    shape: vec![],
                    data: ConstData::F32(vec![a.f?]),
                },
                "value_floats" => ConstTensor {
                    shape: vec![a.floats.len()],
                    data: ConstData::F32(a.floats.clone()),
                },
                "value_int" => ConstTensor {
                    shape: vec![],
                    data: ConstData::I64(vec![a.i?]),
                },
                _ => ConstTensor {
                    shape: vec![a.ints.len()],
                    data: ConstData::I64(a.ints.clone()),
                },
            })
        }
        ("ConstantOfShape", [shape]) => {
            let dims: Vec<usize> = shape
                .as_i64()?
                .iter()
                .map(|&d| usize::try_from(d).ok())
                .collect::<Option<_>>()?;
            // Checked against the fold's budget by the caller.
            let numel = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
            let value = match attr("value").and_then(|a| a.t.as_ref()) {
                Some(t) => read_tensor(t, n.output.first()?).ok()?,
                None => ConstTensor {
                    shape: vec![1],
                    data: ConstData::F32(vec![0.0]),
                },
            };
            let data = match value.data {
                ConstData::F32(v) if v.len() == 1 => ConstData::F32(vec![v[0]; numel]),
                ConstData::I64(v) if v.len() == 1 => ConstData::I64(vec![v[0]; numel]),
                _ => return None,
            };
            Some(ConstTensor { shape: dims, data })
        }
        ("Cast", [x]) => {
            let to = int_attr("to")?;
            let data = match (&x.data, to) {
                (d, t) if t == DataType::Float as i64 => match d {
                    ConstData::F32(v) => ConstData::F32(v.clone()),
                    ConstData::I64(v) => ConstData::F32(v.iter().map(|&i| i as f32).collect()),
                },
                (ConstData::I64(v), t)
                    if t == DataType::Int32 as i64 || t == DataType::Int64 as i64 =>
                {
                    ConstData::I64(v.clone())
                }
                _ => return None,
            };
            Some(ConstTensor {
                shape: x.shape.clone(),
                data,
            })
        }
        ("Reshape", [x, shape]) => {
            let numel = x.numel();
            let mut dims: Vec<i64> = shape.as_i64()?.to_vec();
            for (k, d) in dims.iter_mut().enumerate() {
                if *d == 0 && int_attr("allowzero").unwrap_or(0) == 0 {
                    *d = *x.shape.get(k)? as i64;
                }
            }
            let known = dims
                .iter()
                .filter(|&&d| d != -1)
                .try_fold(1i64, |n, &d| n.checked_mul(d))?;
            if dims.iter().filter(|&&d| d == -1).count() > 1 || known <= 0 {
                return None;
            }
            let dims: Vec<usize> = dims
                .iter()
                .map(|&d| usize::try_from(if d == -1 { numel as i64 / known } else { d }).ok())
                .collect::<Option<_>>()?;
            (dims.iter().product::<usize>() == numel).then(|| ConstTensor {
                shape: dims,
                data: x.data.clone(),
            })
        }
        _ => None,
    }
}

/// Numpy-style broadcast of two shapes.
fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], k: usize| {
        if k + s.len() >= rank {
            s[k + s.len() - rank]
        } else {
            1
        }
    };
    (0..rank)
        .map(|k| match (dim(a, k), dim(b, k)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

/// Maps a row-major index of the broadcast `out` shape to the index in `s`.
fn broadcast_index(s: &[usize], out: &[usize]) -> impl Fn(usize) -> usize {
    let offset = out.len() - s.len();
    let dims: Vec<usize> = (0..out.len())
        .map(|k| if k < offset { 1 } else { s[k - offset] })
        .collect();
    let out = out.to_vec();
    move |mut i| {
        let (mut idx, mut stride) = (0, 1);
        for k in (0..out.len()).rev() {
            let coord = i % out[k];
            i /= out[k];
            if dims[k] != 1 {
                idx += coord * stride;
            }
            stride *= dims[k];
        }
        idx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::conv_relu_gemm;

    /// conv1.weight [4, 2, 3, 3] (72 weights) in compact form with `bits`-bit codes.
    fn compact_conv(bits: u32, zeros: Vec<usize>) -> CompactWeight {
        let k = 1u8 << (bits - 1);
        let levels: Vec<f32> = (0..k).map(|i| (i as f32 + 1.0) / 8.0).collect();
        let table: Vec<f32> = levels
            .iter()
            .copied()
            .chain(levels.iter().map(|l| -l))
            .collect();
        CompactWeight {
            name: "conv1.weight".into(),
            bits,
            codes: (0..72)
                .map(|i| (i * 7 % (2 * usize::from(k))) as u8)
                .collect(),
            table,
            channel_scales: vec![0.5, 1.0, 2.0, 0.25],
            shape: vec![4, 2, 3, 3],
            out_axis: 0,
            zeros,
        }
    }

    #[test]
    fn a_model_with_nothing_to_fold_is_borrowed() {
        let model = Model::from_proto(conv_relu_gemm(1));
        assert!(matches!(model.fold_constants().unwrap(), Cow::Borrowed(_)));
    }

    /// Issue 13: a 4-bit compact weight raised an opset-9 model to 21, which turned its
    /// Softmax (no axis: 2-D coercion at axis 1 before opset 13, the last axis after) into a
    /// softmax over a size-1 axis, all ones. Older models keep their opset and UINT8 codes.
    #[test]
    fn an_old_opset_is_kept_and_its_codes_stored_one_per_byte() {
        let w = compact_conv(4, vec![]);
        let mut model = Model::from_proto(conv_relu_gemm(1));
        model.set_opset(9);
        model.store_compact(&w).unwrap();
        assert_eq!(model.opset(), Some(9));
        let codes = model
            .graph()
            .unwrap()
            .initializer
            .iter()
            .find(|t| t.name() == "conv1.weight.codes")
            .unwrap()
            .data_type();
        assert_eq!(codes, DataType::Uint8 as i32);
        // Read back as the same 4-bit weight (the packed kernels load it so).
        let read = crate::decode(&model.to_bytes()).unwrap().compact_weights();
        assert_eq!(read.unwrap(), vec![w.clone()]);
        let folded = model.fold_constants().unwrap();
        let (_, got) = folded.initializer_f32("conv1.weight").unwrap().unwrap();
        let mut reference = Model::from_proto(conv_relu_gemm(1));
        reference.store_compact(&w).unwrap();
        assert_eq!(reference.opset(), Some(UINT4_OPSET));
        let want = reference.fold_constants().unwrap();
        assert_eq!(
            Some(got),
            want.initializer_f32("conv1.weight")
                .unwrap()
                .map(|(_, v)| v)
        );
        // Exact zeros need ScatterND (opset 11): refused below it, with the cause.
        let mut old = Model::from_proto(conv_relu_gemm(1));
        old.set_opset(9);
        let e = old.store_compact(&compact_conv(3, vec![5])).unwrap_err();
        assert!(e.to_string().contains("opset 9"), "{e}");
    }

    #[test]
    fn codes_fold_back_to_table_times_channel_scale() {
        for (bits, zeros) in [(4, vec![]), (3, vec![5, 71]), (6, vec![0])] {
            let w = compact_conv(bits, zeros.clone());
            let mut model = Model::from_proto(conv_relu_gemm(1));
            model.store_compact(&w).unwrap();
            assert!(model.initializer_f32("conv1.weight").unwrap().is_none());
            assert_eq!(
                model.opset(),
                Some(if bits <= 4 { UINT4_OPSET } else { 13 })
            );
            let bytes = model.to_bytes();
            let decoded = crate::decode(&bytes).unwrap();
            assert_eq!(decoded.compact_weights().unwrap(), vec![w.clone()]);
            let folded = decoded.fold_constants().unwrap();
            let (shape, got) = folded.initializer_f32("conv1.weight").unwrap().unwrap();
            assert_eq!(shape, w.shape);
            for (i, v) in got.iter().enumerate() {
                let want = if zeros.contains(&i) {
                    0.0
                } else {
                    w.table[usize::from(w.codes[i])] * w.channel_scales[i / 18]
                };
                assert_eq!(v.to_bits(), want.to_bits(), "bits {bits}, weight {i}");
            }
            // Only the layer's own initializers are decoded away; the rest of the graph stays.
            let g = folded.graph().unwrap();
            assert!(g
                .initializer
                .iter()
                .all(|t| !t.name().starts_with("conv1.weight.")));
            assert_eq!(g.node.len(), 3);
        }
    }

    /// Issue 12: a few bytes of `ConstantOfShape` must not make gigabytes, one node or many.
    #[test]
    fn folds_beyond_the_budget_are_refused_before_allocating() {
        use crate::testutil::node;
        let fill = |k: usize, dims: &[i64]| {
            let shape = TensorProto {
                name: Some(format!("s{k}")),
                dims: vec![dims.len() as i64],
                data_type: Some(DataType::Int64 as i32),
                int64_data: dims.to_vec(),
                ..Default::default()
            };
            let n = node(
                "ConstantOfShape",
                &format!("fill{k}"),
                &[&format!("s{k}")],
                &[&format!("c{k}")],
            );
            (shape, n)
        };
        let model_of = |fills: Vec<(TensorProto, NodeProto)>| {
            let mut proto = conv_relu_gemm(1);
            let g = proto.graph.as_mut().unwrap();
            for (k, (t, n)) in fills.into_iter().enumerate() {
                g.initializer.push(t);
                g.node.insert(k, n);
                g.output.push(crate::pb::ValueInfoProto {
                    name: Some(format!("c{k}")),
                    ..Default::default()
                });
            }
            Model::from_proto(proto)
        };
        // One node of 2^40 elements.
        let e = model_of(vec![fill(0, &[1 << 40, 4])])
            .fold_constants()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("fill0") && e.contains("4398046511104 elements"),
            "{e}"
        );
        // Three nodes of half the budget each, all graph outputs (so all held): the third one
        // is refused.
        let budget = 1 << 16;
        let half = (budget / 2) as i64;
        let e = model_of((0..3).map(|k| fill(k, &[half])).collect())
            .fold_constants_within(budget)
            .unwrap_err()
            .to_string();
        assert!(e.contains("fill2") && e.contains("at once"), "{e}");
        // A chain whose intermediates nothing else reads holds two values at once, not three:
        // ConstantOfShape → Identity → Identity of 30000 each folds within 65536.
        let mut chain = model_of(vec![fill(0, &[30000])]);
        {
            let g = chain.proto.graph.as_mut().unwrap();
            g.output.retain(|o| o.name() != "c0");
            g.output.push(crate::pb::ValueInfoProto {
                name: Some("chain2".into()),
                ..Default::default()
            });
            g.node
                .insert(1, node("Identity", "id1", &["c0"], &["chain1"]));
            g.node
                .insert(2, node("Identity", "id2", &["chain1"], &["chain2"]));
        }
        let folded = chain.fold_constants_within(budget).unwrap();
        assert_eq!(
            folded.initializer_f32("chain2").unwrap().unwrap().0,
            vec![30000]
        );
        assert!(folded.initializer_f32("chain1").unwrap().is_none());
        // Within the budget, it folds.
        let small = model_of(vec![fill(0, &[3, 2])]);
        let folded = small.fold_constants().unwrap();
        assert_eq!(
            folded.initializer_f32("c0").unwrap().unwrap(),
            (vec![3, 2], vec![0.0; 6])
        );
    }

    /// An edit that spoils a compact weight, and what the refusal must say.
    type Spoiler = (fn(&mut CompactWeight), &'static str);

    #[test]
    fn bad_compact_weights_are_refused() {
        let mut model = Model::from_proto(conv_relu_gemm(1));
        let cases: [Spoiler; 5] = [
            (|w| w.codes[3] = 16, "outside the 16-entry table"),
            (
                |w| {
                    w.table.pop();
                },
                "a table of 15 values",
            ),
            (|w| w.channel_scales.push(1.0), "5 channel scales"),
            (
                |w| {
                    w.codes.pop();
                },
                "71 codes",
            ),
            (|w| w.zeros.push(72), "zero position 72"),
        ];
        for (edit, needle) in cases {
            let mut w = compact_conv(4, vec![]);
            edit(&mut w);
            let e = model.store_compact(&w).unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains("conv1.weight"), "{e}");
        }
        // A compact model whose table was cut after writing: an error naming the node.
        model.store_compact(&compact_conv(4, vec![])).unwrap();
        let g = model.proto.graph.as_mut().unwrap();
        let table = g
            .initializer
            .iter_mut()
            .find(|t| t.name() == "conv1.weight.table")
            .unwrap();
        table.dims = vec![8];
        table.raw_data.as_mut().unwrap().truncate(32);
        let e = model.fold_constants().unwrap_err().to_string();
        assert!(
            e.contains("conv1.weight.gather") && e.contains("8-entry table"),
            "{e}"
        );
        // Codes of an element type the form does not use.
        let g = model.proto.graph.as_mut().unwrap();
        let codes = g
            .initializer
            .iter_mut()
            .find(|t| t.name() == "conv1.weight.codes")
            .unwrap();
        codes.data_type = Some(DataType::Float16 as i32);
        let e = model.fold_constants().unwrap_err().to_string();
        assert!(
            e.contains("FLOAT16") && e.contains("conv1.weight.codes"),
            "{e}"
        );
    }
}
