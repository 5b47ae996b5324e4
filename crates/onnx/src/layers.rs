//! Listing the weight layers (`Conv`, `Gemm`, `MatMul`) of a graph.

use std::collections::{HashMap, HashSet};

use crate::pb::{GraphProto, NodeProto, TensorProto};
use crate::tensor::tensor_f32;
use crate::{is_default_domain, OnnxError, Result};

/// Position of a weight layer among all weight layers of the graph.
///
/// Quantizers usually keep the first and last layers at higher precision, so
/// the role is part of each [`WeightLayer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LayerRole {
    /// The first of several weight layers.
    First,
    /// Neither the first nor the last weight layer.
    Middle,
    /// The last of several weight layers.
    Last,
    /// The only weight layer: first and last at once.
    Only,
}

impl LayerRole {
    /// The role of weight layer `index` among `count` layers.
    fn of(index: usize, count: usize) -> Self {
        match (index == 0, index + 1 == count) {
            (true, true) => LayerRole::Only,
            (true, false) => LayerRole::First,
            (false, true) => LayerRole::Last,
            (false, false) => LayerRole::Middle,
        }
    }

    /// True for [`LayerRole::First`] and [`LayerRole::Only`].
    pub fn is_first(self) -> bool {
        matches!(self, LayerRole::First | LayerRole::Only)
    }

    /// True for [`LayerRole::Last`] and [`LayerRole::Only`].
    pub fn is_last(self) -> bool {
        matches!(self, LayerRole::Last | LayerRole::Only)
    }
}

/// A layer whose weight is a graph initializer, with its float32 weights.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightLayer {
    /// The weight initializer's name.
    pub name: String,
    /// The node's name, or `<op_type>#<index>` (index in graph node order)
    /// when the node is unnamed.
    pub node: String,
    /// `"Conv"`, `"Gemm"` or `"MatMul"`.
    pub op_type: String,
    /// The weight's shape.
    pub shape: Vec<usize>,
    /// The axis of `shape` that indexes output channels: 0 for `Conv`
    /// (`[out, in/groups, k...]`); for `Gemm` 0 when `transB` = 1 (`[out, in]`)
    /// and 1 when `transB` = 0 (`[in, out]`); for `MatMul` with the weight as
    /// input B (`[in, out]`) the last axis, 1, and with the weight as input A
    /// (`A · X`, `[out, in]`) axis 0.
    pub out_axis: usize,
    /// The `Conv` `group` attribute (1 for other ops).
    pub groups: usize,
    /// First, middle or last among the listed layers, in graph node order.
    pub role: LayerRole,
    /// The weight's elements, row-major, `shape.iter().product()` of them.
    pub data: Vec<f32>,
}

impl WeightLayer {
    /// The number of output channels, `shape[out_axis]`.
    pub fn out_channels(&self) -> usize {
        self.shape.get(self.out_axis).copied().unwrap_or(0)
    }
}

/// A layer found in the graph, before its role is known.
struct Found<'a> {
    index: usize,
    tensor: &'a TensorProto,
    node: String,
    op_type: String,
    out_axis: usize,
    groups: usize,
    rank: std::ops::RangeInclusive<usize>,
}

fn node_err(node: &str, op_type: &str, msg: impl Into<String>) -> OnnxError {
    OnnxError::Node {
        node: node.to_string(),
        op_type: op_type.to_string(),
        msg: msg.into(),
    }
}

/// The integer attribute `name` of `n`, or `default` when absent.
fn int_attr(n: &NodeProto, node: &str, name: &str, default: i64) -> Result<i64> {
    match n.attribute.iter().find(|a| a.name() == name) {
        None => Ok(default),
        Some(a) => a
            .i
            .ok_or_else(|| node_err(node, n.op_type(), format!("attribute {name} is not an int"))),
    }
}

/// In a graph with several outputs (a detector's heads), the weight nodes that compute an
/// output through weight-free nodes only: each is a last layer. Empty for one output, whose
/// last layer is the last in node order.
fn output_layers(graph: &GraphProto) -> HashSet<usize> {
    if graph.output.len() < 2 {
        return HashSet::new();
    }
    let mut needed: HashSet<&str> = graph.output.iter().map(|o| o.name()).collect();
    let mut layers = HashSet::new();
    for (i, n) in graph.node.iter().enumerate().rev() {
        if !n.output.iter().any(|o| needed.contains(o.as_str())) {
            continue;
        }
        if is_default_domain(n.domain()) && matches!(n.op_type(), "Conv" | "Gemm" | "MatMul") {
            layers.insert(i);
        } else {
            needed.extend(n.input.iter().map(String::as_str));
        }
    }
    layers
}

pub(crate) fn weight_layers(graph: &GraphProto) -> Result<Vec<WeightLayer>> {
    let inits: HashMap<&str, &TensorProto> =
        graph.initializer.iter().map(|t| (t.name(), t)).collect();
    let sparse: HashSet<&str> = graph
        .sparse_initializer
        .iter()
        .filter_map(|s| s.values.as_ref().map(|v| v.name()))
        .collect();

    let mut found = Vec::new();
    for (index, n) in graph.node.iter().enumerate() {
        let op_type = n.op_type();
        if !is_default_domain(n.domain()) || !matches!(op_type, "Conv" | "Gemm" | "MatMul") {
            continue;
        }
        let node = if n.name().is_empty() {
            format!("{op_type}#{index}")
        } else {
            n.name().to_string()
        };
        let input = |i: usize| n.input.get(i).map(String::as_str).filter(|s| !s.is_empty());
        // (weight input name, out_axis, allowed weight rank)
        let (weight, out_axis, rank) = match op_type {
            "Conv" | "Gemm" => {
                let Some(w) = input(1) else {
                    return Err(node_err(&node, op_type, "has no weight input (input 1)"));
                };
                if op_type == "Conv" {
                    (w, 0, 3..=5)
                } else {
                    let trans_b = int_attr(n, &node, "transB", 0)?;
                    (w, if trans_b != 0 { 0 } else { 1 }, 2..=2)
                }
            }
            _ => {
                // MatMul: the weight is B (input 1) unless only A (input 0)
                // is an initializer.
                let (Some(a), Some(b)) = (input(0), input(1)) else {
                    return Err(node_err(&node, op_type, "needs two inputs"));
                };
                if !inits.contains_key(b) && inits.contains_key(a) {
                    (a, 0, 2..=2)
                } else {
                    (b, 1, 2..=2)
                }
            }
        };
        let Some(&tensor) = inits.get(weight) else {
            if sparse.contains(weight) {
                return Err(OnnxError::Initializer {
                    name: weight.to_string(),
                    msg: format!(
                        "weight of node {node} ({op_type}) is a sparse initializer, \
                         which is not supported"
                    ),
                });
            }
            // The weight is computed at run time: not a quantizable weight.
            continue;
        };
        let groups = if op_type == "Conv" {
            let g = int_attr(n, &node, "group", 1)?;
            usize::try_from(g)
                .ok()
                .filter(|&g| g >= 1)
                .ok_or_else(|| node_err(&node, op_type, format!("invalid group {g}")))?
        } else {
            1
        };
        found.push(Found {
            index,
            tensor,
            node,
            op_type: op_type.to_string(),
            out_axis,
            groups,
            rank,
        });
    }

    let count = found.len();
    let heads = output_layers(graph);
    let mut layers = Vec::with_capacity(count);
    for (i, f) in found.into_iter().enumerate() {
        // Check the rank on the declared dims before reading any data.
        let rank = f.tensor.dims.len();
        if !f.rank.contains(&rank) {
            let want = if f.rank.start() == f.rank.end() {
                format!("{}-D", f.rank.start())
            } else {
                format!("{}-D to {}-D", f.rank.start(), f.rank.end())
            };
            return Err(node_err(
                &f.node,
                &f.op_type,
                format!(
                    "weight {} has dims {:?}, expected {want}",
                    f.tensor.name(),
                    f.tensor.dims
                ),
            ));
        }
        let (shape, data) = tensor_f32(f.tensor)?;
        if f.op_type == "Conv" {
            let out = shape.first().copied().unwrap_or(0);
            if out % f.groups != 0 {
                return Err(node_err(
                    &f.node,
                    &f.op_type,
                    format!(
                        "weight {} has {out} output channels, not divisible by group {}",
                        f.tensor.name(),
                        f.groups
                    ),
                ));
            }
        }
        layers.push(WeightLayer {
            name: f.tensor.name().to_string(),
            node: f.node,
            op_type: f.op_type,
            shape,
            out_axis: f.out_axis,
            groups: f.groups,
            role: match LayerRole::of(i, count) {
                LayerRole::First if heads.contains(&f.index) => LayerRole::Only,
                LayerRole::Middle if heads.contains(&f.index) => LayerRole::Last,
                role => role,
            },
            data,
        });
    }
    Ok(layers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::{self, attribute_proto::AttributeType};
    use crate::testutil::*;
    use crate::{decode, Model};
    use prost::Message;

    fn layers_of(proto: &pb::ModelProto) -> Result<Vec<WeightLayer>> {
        decode(&proto.encode_to_vec()).unwrap().weight_layers()
    }

    fn graph_mut(proto: &mut pb::ModelProto) -> &mut pb::GraphProto {
        proto.graph.as_mut().unwrap()
    }

    #[test]
    fn conv_relu_gemm_order_roles_and_axes() {
        let layers = layers_of(&conv_relu_gemm(1)).unwrap();
        assert_eq!(layers.len(), 2);
        let (c, g) = (&layers[0], &layers[1]);
        assert_eq!(c.name, "conv1.weight");
        assert_eq!(c.node, "conv1");
        assert_eq!(c.op_type, "Conv");
        assert_eq!(c.shape, vec![4, 2, 3, 3]);
        assert_eq!((c.out_axis, c.groups, c.role), (0, 1, LayerRole::First));
        assert_eq!(c.out_channels(), 4);
        assert_eq!(c.data.len(), 72);
        assert_eq!(c.data[..3], [0.0, 0.5, 1.0]);
        assert_eq!(g.name, "fc.weight");
        // The Gemm node is unnamed: named after its op type and index.
        assert_eq!(g.node, "Gemm#2");
        assert_eq!(g.op_type, "Gemm");
        assert_eq!(g.shape, vec![3, 4]);
        assert_eq!((g.out_axis, g.groups, g.role), (0, 1, LayerRole::Last));
        assert!(c.role.is_first() && !c.role.is_last());
        assert!(g.role.is_last() && !g.role.is_first());
    }

    #[test]
    fn every_layer_that_computes_an_output_is_last_when_there_are_several() {
        let mut proto = conv_relu_gemm(1);
        let g = graph_mut(&mut proto);
        // A second output, a head on conv1: conv1 computes it through no other layer.
        let mut head = g.output[0].clone();
        head.name = Some("r1".into());
        g.output.push(head);
        let roles: Vec<_> = layers_of(&proto).unwrap().iter().map(|l| l.role).collect();
        assert_eq!(roles, [LayerRole::Only, LayerRole::Last]);
    }

    #[test]
    fn gemm_trans_b_zero_puts_outputs_on_axis_1() {
        let layers = layers_of(&conv_relu_gemm(0)).unwrap();
        assert_eq!(layers[1].shape, vec![4, 3]);
        assert_eq!(layers[1].out_axis, 1);
        assert_eq!(layers[1].out_channels(), 3);
    }

    #[test]
    fn middle_and_only_roles() {
        let mut proto = conv_relu_gemm(1);
        let g = graph_mut(&mut proto);
        // Insert a second conv (depthwise, group 4) between conv1 and relu.
        g.initializer
            .push(float_tensor("dw.weight", &[4, 1, 3, 3], false));
        let mut dw = node("Conv", "dw", &["c1", "dw.weight"], &["c1b"]);
        dw.attribute.push(int_attribute("group", 4));
        g.node.insert(1, dw);
        g.node[2].input[0] = "c1b".into();
        let layers = layers_of(&proto).unwrap();
        let roles: Vec<_> = layers.iter().map(|l| l.role).collect();
        assert_eq!(
            roles,
            [LayerRole::First, LayerRole::Middle, LayerRole::Last]
        );
        assert_eq!(layers[1].groups, 4);
        assert_eq!(layers[1].name, "dw.weight");

        let mut only = conv_relu_gemm(1);
        graph_mut(&mut only).node.truncate(2);
        let layers = layers_of(&only).unwrap();
        assert_eq!(layers.len(), 1);
        assert_eq!(layers[0].role, LayerRole::Only);
        assert!(layers[0].role.is_first() && layers[0].role.is_last());
    }

    #[test]
    fn matmul_weight_as_b_or_a() {
        let mut proto = conv_relu_gemm(1);
        let g = graph_mut(&mut proto);
        g.initializer[1] = float_tensor("fc.weight", &[4, 3], true);
        g.node[2] = node("MatMul", "mm", &["r1", "fc.weight"], &["y"]);
        let layers = layers_of(&proto).unwrap();
        assert_eq!(layers[1].op_type, "MatMul");
        assert_eq!(
            (layers[1].shape.clone(), layers[1].out_axis),
            (vec![4, 3], 1)
        );

        let g = graph_mut(&mut proto);
        g.initializer[1] = float_tensor("fc.weight", &[3, 4], true);
        g.node[2] = node("MatMul", "mm", &["fc.weight", "r1"], &["y"]);
        let layers = layers_of(&proto).unwrap();
        assert_eq!(
            (layers[1].shape.clone(), layers[1].out_axis),
            (vec![3, 4], 0)
        );
        assert_eq!(layers[1].name, "fc.weight");
    }

    #[test]
    fn runtime_weights_and_other_domains_are_skipped() {
        let mut proto = conv_relu_gemm(1);
        let g = graph_mut(&mut proto);
        // The Gemm weight now comes from a graph input: not listed.
        g.initializer.truncate(1);
        // A MatMul of two run-time values: not listed.
        g.node.push(node("MatMul", "act_mm", &["y", "y"], &["z"]));
        // A Conv of a custom domain: not listed.
        let mut custom = node("Conv", "custom", &["x", "conv1.weight"], &["q"]);
        custom.domain = Some("com.example".into());
        g.node.push(custom);
        let layers = layers_of(&proto).unwrap();
        assert_eq!(layers.len(), 1);
        assert_eq!(layers[0].role, LayerRole::Only);
        assert_eq!(layers[0].name, "conv1.weight");
    }

    #[test]
    fn bad_weight_ranks_are_node_errors() {
        let mut proto = conv_relu_gemm(1);
        graph_mut(&mut proto).initializer[0] = float_tensor("conv1.weight", &[4, 18], true);
        let err = layers_of(&proto).unwrap_err();
        assert!(
            matches!(&err, OnnxError::Node { node, op_type, .. } if node == "conv1" && op_type == "Conv")
        );
        assert!(
            err.to_string().starts_with(
                "node conv1 (Conv): weight conv1.weight has dims [4, 18], expected 3-D to 5-D"
            ),
            "{err}"
        );

        // 3-D (Conv1d) and 5-D (Conv3d) are fine.
        graph_mut(&mut proto).initializer[0] = float_tensor("conv1.weight", &[4, 2, 3], true);
        assert_eq!(layers_of(&proto).unwrap()[0].shape, vec![4, 2, 3]);
        graph_mut(&mut proto).initializer[0] = float_tensor("conv1.weight", &[4, 2, 1, 1, 1], true);
        assert_eq!(layers_of(&proto).unwrap()[0].shape.len(), 5);

        let mut proto = conv_relu_gemm(1);
        graph_mut(&mut proto).initializer[1] = float_tensor("fc.weight", &[3, 4, 1], true);
        let err = layers_of(&proto).unwrap_err();
        assert_eq!(
            err.to_string(),
            "node Gemm#2 (Gemm): weight fc.weight has dims [3, 4, 1], expected 2-D"
        );
    }

    #[test]
    fn bad_group_and_missing_inputs() {
        let mut proto = conv_relu_gemm(1);
        graph_mut(&mut proto).node[0]
            .attribute
            .push(int_attribute("group", 3));
        let err = layers_of(&proto).unwrap_err();
        assert!(
            err.to_string().contains("not divisible by group 3"),
            "{err}"
        );

        graph_mut(&mut proto).node[0].attribute[0] = int_attribute("group", 0);
        assert!(layers_of(&proto)
            .unwrap_err()
            .to_string()
            .contains("invalid group 0"));

        graph_mut(&mut proto).node[0].attribute[0] = pb::AttributeProto {
            name: Some("group".into()),
            r#type: Some(AttributeType::Float as i32),
            f: Some(2.0),
            ..Default::default()
        };
        assert!(layers_of(&proto)
            .unwrap_err()
            .to_string()
            .contains("group is not an int"));

        let mut proto = conv_relu_gemm(1);
        graph_mut(&mut proto).node[0].input.truncate(1);
        let err = layers_of(&proto).unwrap_err();
        assert_eq!(
            err.to_string(),
            "node conv1 (Conv): has no weight input (input 1)"
        );

        let mut proto = conv_relu_gemm(1);
        graph_mut(&mut proto).node[2] = node("MatMul", "", &["r1"], &["y"]);
        let err = layers_of(&proto).unwrap_err();
        assert_eq!(err.to_string(), "node MatMul#2 (MatMul): needs two inputs");
    }

    #[test]
    fn initializer_errors_surface_from_weight_layers() {
        let mut proto = conv_relu_gemm(1);
        if let Some(raw) = graph_mut(&mut proto).initializer[1].raw_data.as_mut() {
            raw.truncate(10);
        }
        let err = layers_of(&proto).unwrap_err();
        assert!(
            matches!(&err, OnnxError::Initializer { name, .. } if name == "fc.weight"),
            "{err}"
        );
    }

    #[test]
    fn sparse_weight_is_an_error() {
        let mut proto = conv_relu_gemm(1);
        let g = graph_mut(&mut proto);
        let w = g.initializer.remove(1);
        g.sparse_initializer.push(pb::SparseTensorProto {
            values: Some(w),
            ..Default::default()
        });
        let err = layers_of(&proto).unwrap_err();
        assert!(err.to_string().contains("sparse"), "{err}");
    }

    #[test]
    fn initializer_f32_lookup() {
        let model = Model::from_proto(conv_relu_gemm(1));
        let (shape, data) = model.initializer_f32("fc.weight").unwrap().unwrap();
        assert_eq!(shape, vec![3, 4]);
        assert_eq!(data.len(), 12);
        assert!(model.initializer_f32("nope").unwrap().is_none());
        // The bias is float_data-backed in the helper model.
        let (shape, data) = model.initializer_f32("fc.bias").unwrap().unwrap();
        assert_eq!((shape, data), (vec![3], vec![0.0, 0.5, 1.0]));
    }
}
