//! Folding `BatchNormalization` (inference) into the `Conv` or `Gemm` that
//! produces its input:
//!
//! `s = scale / sqrt(var + eps)`, `W'[o, ...] = W[o, ...] · s[o]`,
//! `b'[o] = (b[o] − mean[o]) · s[o] + B[o]` (computed in f64, stored as f32).
//!
//! Works on the ONNX model, so the result can be written, quantized and run by
//! any runtime. Weight initializers keep their names (only their values
//! change); a conv without bias gets a new bias initializer.

use std::collections::{HashMap, HashSet};

use crate::pb::attribute_proto::AttributeType;
use crate::pb::tensor_proto::DataType;
use crate::pb::{AttributeProto, GraphProto, NodeProto, TensorProto};
use crate::tensor::read_tensor;
use crate::{Model, OnnxError, Result};

/// What [`fold_batch_norm`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FoldReport {
    /// `(batch-norm node, conv / gemm node)` pairs that were folded.
    pub folded: Vec<(String, String)>,
    /// Batch-norm nodes left in place, with the reason.
    pub skipped: Vec<(String, String)>,
}

fn name_of(node: &NodeProto, i: usize) -> String {
    match node.name() {
        "" => format!("{}#{i}", node.op_type()),
        n => n.to_string(),
    }
}

fn is_default(node: &NodeProto) -> bool {
    matches!(node.domain(), "" | "ai.onnx")
}

fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name() == name)
}

fn f32_tensor(name: &str, dims: &[usize], data: &[f32]) -> TensorProto {
    TensorProto {
        name: Some(name.to_string()),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: Some(DataType::Float as i32),
        raw_data: Some(data.iter().flat_map(|v| v.to_le_bytes()).collect()),
        ..Default::default()
    }
}

/// Returns a copy of `model` with every foldable `BatchNormalization` folded
/// into the `Conv` / `Gemm` before it, and a report. A batch norm is folded
/// when its input comes from a `Conv` or `Gemm` (default domain) that feeds
/// nothing else and is not a graph output, its four parameters are float
/// initializers of shape `[C]`, and the layer's weight (and bias, if any) are
/// float initializers used by no other node; otherwise it is reported as
/// skipped. The input model is not modified.
pub fn fold_batch_norm(model: &Model) -> Result<(Model, FoldReport)> {
    let mut proto = model.proto.clone();
    let graph = proto.graph.as_mut().ok_or(OnnxError::NoGraph)?;
    let mut report = FoldReport::default();
    let mut remove = HashSet::new();

    // Uses of every value name (node inputs and graph outputs).
    let mut uses: HashMap<String, usize> = HashMap::new();
    for n in &graph.node {
        for i in n.input.iter().filter(|s| !s.is_empty()) {
            *uses.entry(i.clone()).or_default() += 1;
        }
    }
    for o in &graph.output {
        *uses.entry(o.name().to_string()).or_default() += 1;
    }
    let producer: HashMap<String, usize> = graph
        .node
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.output.iter().map(move |o| (o.clone(), i)))
        .collect();
    let init_index: HashMap<String, usize> = graph
        .initializer
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name().to_string(), i))
        .collect();
    let mut taken_names: HashSet<String> = init_index.keys().cloned().collect();
    taken_names.extend(producer.keys().cloned());
    taken_names.extend(graph.input.iter().map(|v| v.name().to_string()));

    for bn_i in 0..graph.node.len() {
        let bn = &graph.node[bn_i];
        if !(is_default(bn) && bn.op_type() == "BatchNormalization") {
            continue;
        }
        let bn_name = name_of(bn, bn_i);
        match plan_fold(graph, bn_i, &uses, &producer, &init_index) {
            Err(reason) => report.skipped.push((bn_name, reason)),
            Ok(f) => {
                let layer_name = name_of(&graph.node[f.layer], f.layer);
                apply_fold(graph, bn_i, &f, &mut taken_names, &mut uses)?;
                remove.insert(bn_i);
                report.folded.push((bn_name, layer_name));
            }
        }
    }

    let mut i = 0;
    graph.node.retain(|_| {
        let keep = !remove.contains(&i);
        i += 1;
        keep
    });
    // Batch-norm parameters nobody uses any more.
    let used: HashSet<&str> = graph
        .node
        .iter()
        .flat_map(|n| n.input.iter().map(String::as_str))
        .chain(graph.output.iter().map(|o| o.name()))
        .collect();
    let unused: HashSet<String> = graph
        .initializer
        .iter()
        .map(|t| t.name().to_string())
        .filter(|n| !used.contains(n.as_str()))
        .collect();
    graph.initializer.retain(|t| !unused.contains(t.name()));
    graph.input.retain(|v| !unused.contains(v.name()));
    Ok((Model::from_proto(proto), report))
}

struct Fold {
    layer: usize,
    is_conv: bool,
    /// Gemm: weight stored as [N, K] (transB = 1) rather than [K, N].
    trans_b: bool,
    /// Gemm's beta attribute (its C is scaled by it).
    beta: f64,
    channels: usize,
    eps: f64,
}

fn plan_fold(
    graph: &GraphProto,
    bn_i: usize,
    uses: &HashMap<String, usize>,
    producer: &HashMap<String, usize>,
    init_index: &HashMap<String, usize>,
) -> std::result::Result<Fold, String> {
    let bn = &graph.node[bn_i];
    if attr(bn, "training_mode").and_then(|a| a.i).unwrap_or(0) != 0 {
        return Err("training_mode = 1".to_string());
    }
    if bn.input.len() != 5
        || bn.output.first().is_none_or(String::is_empty)
        || bn.output.iter().skip(1).any(|o| !o.is_empty())
    {
        return Err("not an inference-mode batch norm (5 inputs, 1 output)".to_string());
    }
    let x = &bn.input[0];
    let Some(&layer) = producer.get(x) else {
        return Err(format!("its input {x} is not produced by a node"));
    };
    let node = &graph.node[layer];
    let is_conv = match node.op_type() {
        "Conv" if is_default(node) => true,
        "Gemm" if is_default(node) => false,
        other => return Err(format!("its input comes from {other}, not Conv or Gemm")),
    };
    if uses.get(x).copied().unwrap_or(0) != 1 {
        return Err(format!("{x} is also used elsewhere"));
    }
    let weight = node.input.get(1).map(String::as_str).unwrap_or("");
    let mut layer_params = vec![weight];
    if let Some(b) = node.input.get(2).filter(|b| !b.is_empty()) {
        layer_params.push(b);
    }
    for p in &layer_params {
        if !init_index.contains_key(*p) {
            return Err(format!("{p} is not an initializer"));
        }
        if uses.get(*p).copied().unwrap_or(0) != 1 {
            return Err(format!("{p} is shared with other nodes"));
        }
    }
    let mut channels = None;
    for p in &bn.input[1..] {
        let Some(&ti) = init_index.get(p) else {
            return Err(format!("parameter {p} is not an initializer"));
        };
        let t = &graph.initializer[ti];
        if t.dims.len() != 1 || t.data_type() != DataType::Float as i32 {
            return Err(format!("parameter {p} is not a 1-D float tensor"));
        }
        let c = t.dims[0] as usize;
        if *channels.get_or_insert(c) != c {
            return Err("parameters have different lengths".to_string());
        }
    }
    let channels = channels.unwrap_or(0);
    let (trans_b, beta) = if is_conv {
        (false, 1.0)
    } else {
        if attr(node, "transA").and_then(|a| a.i).unwrap_or(0) > 1 {
            return Err("bad transA".to_string());
        }
        (
            attr(node, "transB").and_then(|a| a.i).unwrap_or(0) == 1,
            f64::from(attr(node, "beta").and_then(|a| a.f).unwrap_or(1.0)),
        )
    };
    let c = channels as i64;
    let wt = &graph.initializer[init_index[weight]];
    let wd = wt.dims.as_slice();
    let weight_ok = wt.data_type() == DataType::Float as i32
        && if is_conv {
            wd.len() >= 3 && wd[0] == c
        } else {
            wd.len() == 2 && (if trans_b { wd[0] } else { wd[1] }) == c
        };
    if !weight_ok {
        return Err(format!(
            "weight {weight} {wd:?} does not have {c} output channels"
        ));
    }
    if let Some(b) = layer_params.get(1) {
        let bt = &graph.initializer[init_index[*b]];
        let bd = bt.dims.as_slice();
        let bias_ok = bt.data_type() == DataType::Float as i32
            && if is_conv {
                bd == [c]
            } else {
                bd == [c] || bd == [1, c] || bd == [1] || bd.is_empty() || bd == [1, 1]
            };
        if !bias_ok {
            return Err(format!("bias {b} {bd:?} is not per output channel"));
        }
    }
    let eps = f64::from(attr(bn, "epsilon").and_then(|a| a.f).unwrap_or(1e-5));
    Ok(Fold {
        layer,
        is_conv,
        trans_b,
        beta,
        channels,
        eps,
    })
}

fn apply_fold(
    graph: &mut GraphProto,
    bn_i: usize,
    f: &Fold,
    taken_names: &mut HashSet<String>,
    uses: &mut HashMap<String, usize>,
) -> Result<()> {
    let bn = graph.node[bn_i].clone();
    let read = |graph: &GraphProto, name: &str| -> Result<(Vec<usize>, Vec<f32>)> {
        let t = graph
            .initializer
            .iter()
            .find(|t| t.name() == name)
            .ok_or_else(|| OnnxError::Initializer {
                name: name.to_string(),
                msg: "initializer disappeared".to_string(),
            })?;
        let c = read_tensor(t, name)?;
        match c.as_f32() {
            Some(v) => Ok((c.shape.clone(), v.to_vec())),
            None => Err(OnnxError::Initializer {
                name: name.to_string(),
                msg: "is not a float tensor".to_string(),
            }),
        }
    };
    let fold_err = |msg: String| OnnxError::Node {
        node: name_of(&bn, bn_i),
        op_type: "BatchNormalization".to_string(),
        msg,
    };
    let p: Vec<Vec<f32>> = bn.input[1..]
        .iter()
        .map(|n| read(graph, n).map(|(_, v)| v))
        .collect::<Result<_>>()?;
    let (gamma, beta_bn, mean, var) = (&p[0], &p[1], &p[2], &p[3]);
    let c = f.channels;
    let s: Vec<f64> = (0..c)
        .map(|o| f64::from(gamma[o]) / (f64::from(var[o]) + f.eps).sqrt())
        .collect();

    let layer = graph.node[f.layer].clone();
    let wname = layer.input[1].clone();
    let (wshape, mut w) = read(graph, &wname)?;
    if f.is_conv {
        if wshape.first() != Some(&c) {
            return Err(fold_err(format!(
                "conv weight {wname} {wshape:?} has not {c} output channels"
            )));
        }
        let per = w.len() / c.max(1);
        for (o, chunk) in w.chunks_mut(per.max(1)).enumerate() {
            for v in chunk {
                *v = (f64::from(*v) * s[o]) as f32;
            }
        }
    } else {
        if wshape.len() != 2 {
            return Err(fold_err(format!(
                "gemm weight {wname} {wshape:?} is not 2-D"
            )));
        }
        let (rows, cols) = (wshape[0], wshape[1]);
        let n = if f.trans_b { rows } else { cols };
        if n != c {
            return Err(fold_err(format!(
                "gemm weight {wname} {wshape:?} has not {c} outputs"
            )));
        }
        for r in 0..rows {
            for col in 0..cols {
                let o = if f.trans_b { r } else { col };
                let v = &mut w[r * cols + col];
                *v = (f64::from(*v) * s[o]) as f32;
            }
        }
    }

    // Old bias (times Gemm's beta), broadcast to [C].
    let old_bias: Vec<f64> = match layer.input.get(2).filter(|b| !b.is_empty()) {
        None => vec![0.0; c],
        Some(bname) => {
            let (bshape, b) = read(graph, bname)?;
            let n: usize = bshape.iter().product();
            if n == c && (bshape.len() == 1 || bshape == [1, c]) {
                b.iter().map(|&v| f.beta * f64::from(v)).collect()
            } else if n == 1 {
                vec![f.beta * f64::from(b[0]); c]
            } else {
                return Err(fold_err(format!(
                    "bias {bname} {bshape:?} is not per-channel"
                )));
            }
        }
    };
    let new_bias: Vec<f32> = (0..c)
        .map(|o| ((old_bias[o] - f64::from(mean[o])) * s[o] + f64::from(beta_bn[o])) as f32)
        .collect();

    // Write the weight back under its name.
    if let Some(t) = graph.initializer.iter_mut().find(|t| t.name() == wname) {
        *t = f32_tensor(&wname, &wshape, &w);
    }
    let bname = match layer.input.get(2).filter(|b| !b.is_empty()) {
        Some(b) => b.clone(),
        None => {
            let stem = wname.strip_suffix(".weight").map(str::to_string);
            let mut candidate = match stem {
                Some(s) => format!("{s}.bias"),
                None => format!("{}.bias", name_of(&layer, f.layer)),
            };
            let mut k = 1;
            while taken_names.contains(&candidate) {
                candidate = format!("{}.bias_{k}", name_of(&layer, f.layer));
                k += 1;
            }
            candidate
        }
    };
    taken_names.insert(bname.clone());
    *uses.entry(bname.clone()).or_default() = 1;
    match graph.initializer.iter_mut().find(|t| t.name() == bname) {
        Some(t) => *t = f32_tensor(&bname, &[c], &new_bias),
        None => graph.initializer.push(f32_tensor(&bname, &[c], &new_bias)),
    }

    // Rewire: the layer now produces the batch norm's output.
    let node = &mut graph.node[f.layer];
    if node.input.len() < 3 {
        node.input.resize(3, String::new());
    }
    node.input[2] = bname;
    let old_out = std::mem::replace(&mut node.output[0], bn.output[0].clone());
    if !f.is_conv {
        // C now holds beta·C folded in: set beta = 1.
        node.attribute.retain(|a| a.name() != "beta");
        node.attribute.push(AttributeProto {
            name: Some("beta".to_string()),
            r#type: Some(AttributeType::Float as i32),
            f: Some(1.0),
            ..Default::default()
        });
    }
    graph.value_info.retain(|v| v.name() != old_out);
    Ok(())
}
