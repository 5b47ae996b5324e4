//! Models whose inputs fix the batch size (`torch.onnx.export` writes 1 by default).
//!
//! Two ways to run them on other batch sizes: [`Engine::run`](crate::Engine::run) runs chunks
//! of the fixed size (always right, slower for a batch of 1), and [`relax_batch`] rewrites the
//! graph to take any batch where that provably computes the same per sample: the inputs' first
//! dimension becomes free, and a `Reshape` whose target shape hard-codes the batch (the usual
//! `[1, -1]` before a classifier) copies it from its input instead (`0`). The rewrite is kept
//! only when shape inference at two batch sizes shows every value keeping the batch as its
//! first axis, so a graph that mixes samples (a reshape or transpose across the batch) is left
//! as it is, to run in chunks.

use std::collections::HashMap;

use subsetq_onnx::pb::attribute_proto::AttributeType;
use subsetq_onnx::pb::tensor_shape_proto::dimension::Value as Dim;
use subsetq_onnx::pb::tensor_shape_proto::Dimension;
use subsetq_onnx::pb::type_proto::Value as Ty;
use subsetq_onnx::pb::TensorProto;
use subsetq_onnx::{read_tensor, Model};

use crate::error::Result;
use crate::plan::Plan;

/// Name of the free batch dimension the rewrite declares.
const BATCH_DIM: &str = "batch";

/// `model` rewritten to take any batch size, when its inputs fix one and the graph allows it
/// (see the module documentation); `None` when there is nothing to relax or the graph does
/// not allow it. Constant-computed weights are folded first (as [`Plan::from_model`] does).
pub fn relax_batch(model: &Model) -> Result<Option<Model>> {
    let folded = model.fold_constants()?;
    let plan = Plan::from_model(&folded)?;
    let Some(b) = plan.fixed_batch() else {
        return Ok(None);
    };
    // Every input's full shape is needed to infer the Reshapes' inputs.
    let mut rest: Vec<(&str, Vec<usize>)> = Vec::new();
    for spec in plan.inputs() {
        let Some(dims) = spec.dims.as_ref() else {
            return Ok(None);
        };
        let Some(tail) = dims[1..].iter().copied().collect::<Option<Vec<usize>>>() else {
            return Ok(None);
        };
        rest.push((spec.name.as_str(), tail));
    }
    let at_b: Vec<(&str, Vec<usize>)> = rest
        .iter()
        .map(|(n, t)| {
            let mut d = vec![b];
            d.extend(t);
            (*n, d)
        })
        .collect();
    let Ok(shapes) = plan.shapes_by_name(&at_b) else {
        return Ok(None);
    };

    let mut relaxed = folded.into_owned();
    let opset = relaxed.opset().unwrap_or(0);
    let Some(graph) = relaxed.proto.graph.as_mut() else {
        return Ok(None);
    };
    let mut new_shapes: Vec<TensorProto> = Vec::new();
    let initializers: HashMap<String, usize> = graph
        .initializer
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name().to_string(), i))
        .collect();
    for (k, node) in graph.node.iter_mut().enumerate() {
        if node.op_type() != "Reshape" || !matches!(node.domain(), "" | "ai.onnx") {
            continue;
        }
        let input_batch = node
            .input
            .first()
            .and_then(|x| shapes.get(x))
            .and_then(|s| s.first().copied());
        let output_batch = node
            .output
            .first()
            .and_then(|y| shapes.get(y))
            .and_then(|s| s.first().copied());
        if input_batch != Some(b) || output_batch != Some(b) {
            continue;
        }
        let allow_zero = node
            .attribute
            .iter()
            .any(|a| a.name() == "allowzero" && a.i == Some(1));
        if allow_zero {
            continue;
        }
        if opset < 5 {
            if let Some(a) = node.attribute.iter_mut().find(|a| {
                a.name() == "shape" && (a.r#type.is_none() || a.r#type() == AttributeType::Ints)
            }) {
                if a.ints.first() == Some(&(b as i64)) {
                    a.ints[0] = 0;
                }
            }
            continue;
        }
        let Some(&i) = node.input.get(1).and_then(|s| initializers.get(s)) else {
            continue;
        };
        let t = &graph.initializer[i];
        let Ok(c) = read_tensor(t, t.name()) else {
            continue;
        };
        let Some(target) = c.as_i64() else { continue };
        if target.first() != Some(&(b as i64)) {
            continue;
        }
        let mut target = target.to_vec();
        target[0] = 0;
        let name = format!("{}__batch_free_{k}", t.name());
        new_shapes.push(TensorProto {
            name: Some(name.clone()),
            dims: vec![target.len() as i64],
            data_type: Some(subsetq_onnx::pb::tensor_proto::DataType::Int64 as i32),
            int64_data: target,
            ..Default::default()
        });
        node.input[1] = name;
    }
    graph.initializer.extend(new_shapes);
    let inputs: Vec<String> = plan.inputs().iter().map(|s| s.name.clone()).collect();
    for vi in graph
        .input
        .iter_mut()
        .filter(|v| inputs.iter().any(|n| n == v.name()))
    {
        let Some(Ty::TensorType(t)) = vi.r#type.as_mut().and_then(|t| t.value.as_mut()) else {
            continue;
        };
        if let Some(d) = t.shape.as_mut().and_then(|s| s.dim.first_mut()) {
            *d = Dimension {
                value: Some(Dim::DimParam(BATCH_DIM.to_string())),
                ..Default::default()
            };
        }
    }
    // Kept only when it provably computes per sample: batch b and a different size 2b + 1.
    let check = Plan::from_model(&relaxed)?;
    if !check.is_batch_polymorphic(&rest, b, 2 * b + 1) {
        return Ok(None);
    }
    Ok(Some(relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Engine, Value};
    use burn_tensor::Device;
    use subsetq_onnx::pb::tensor_proto::DataType;
    use subsetq_onnx::pb::{
        type_proto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorShapeProto,
        TypeProto, ValueInfoProto,
    };

    fn value(name: &str, dims: Option<&[usize]>) -> ValueInfoProto {
        ValueInfoProto {
            name: Some(name.into()),
            r#type: dims.map(|d| TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: Some(DataType::Float as i32),
                    shape: Some(TensorShapeProto {
                        dim: d
                            .iter()
                            .map(|&v| Dimension {
                                value: Some(Dim::DimValue(v as i64)),
                                ..Default::default()
                            })
                            .collect(),
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn node(op: &str, ins: &[&str], out: &str) -> NodeProto {
        NodeProto {
            op_type: Some(op.into()),
            input: ins.iter().map(|s| s.to_string()).collect(),
            output: vec![out.into()],
            ..Default::default()
        }
    }

    fn ints(name: &str, v: &[i64]) -> TensorProto {
        TensorProto {
            name: Some(name.into()),
            dims: vec![v.len() as i64],
            data_type: Some(DataType::Int64 as i32),
            int64_data: v.to_vec(),
            ..Default::default()
        }
    }

    /// x [batch, 2, 3] → Reshape `first` → Relu → Reshape `[batch, 6]`: a hard-coded batch in
    /// the first reshape's target, and in the last.
    fn model(batch: usize, first: &[i64]) -> Model {
        let b = batch as i64;
        Model::from_proto(ModelProto {
            opset_import: vec![OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(13),
            }],
            graph: Some(GraphProto {
                node: vec![
                    node("Reshape", &["x", "s1"], "r"),
                    node("Relu", &["r"], "a"),
                    node("Reshape", &["a", "s2"], "y"),
                ],
                initializer: vec![ints("s1", first), ints("s2", &[b, 6])],
                input: vec![value("x", Some(&[batch, 2, 3]))],
                output: vec![value("y", None)],
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn run(m: &Model, n: usize) -> crate::Result<Vec<f32>> {
        let d = Device::flex();
        let engine = Engine::new(Plan::from_model(m)?, &d)?;
        let data: Vec<f32> = (0..n * 6).map(|i| (i as f32 - 7.0) * 0.5).collect();
        let x = Value::from_f32(data, &[n, 2, 3], &d).unwrap();
        Ok(engine.run1(x)?.to_vec())
    }

    #[test]
    fn a_hard_coded_batch_is_relaxed_and_gives_the_same_per_sample_results() {
        let fixed = model(1, &[1, 3, 2]);
        assert_eq!(Plan::from_model(&fixed).unwrap().fixed_batch(), Some(1));
        let relaxed = relax_batch(&fixed).unwrap().expect("relaxable");
        let plan = Plan::from_model(&relaxed).unwrap();
        assert_eq!(plan.fixed_batch(), None);
        // 5 samples at once through the relaxed graph, in chunks of 1 through the fixed one.
        let want = run(&fixed, 5).unwrap();
        assert_eq!(run(&relaxed, 5).unwrap(), want);
        let relu: Vec<f32> = (0..30).map(|i| ((i as f32 - 7.0) * 0.5).max(0.0)).collect();
        assert_eq!(want, relu);
    }

    #[test]
    fn a_reshape_across_the_batch_is_not_relaxed_and_runs_in_chunks() {
        // [2, 2, 3] → [3, 4]: samples mixed; batch 2 is fixed, 5 samples run as 2 + 2 + 1.
        let fixed = model(2, &[3, 4]);
        assert!(relax_batch(&fixed).unwrap().is_none());
        let all = run(&fixed, 5).unwrap();
        assert_eq!(all.len(), 30);
        // Each chunk is the model at its batch: the first two samples alone give the same.
        assert_eq!(run(&fixed, 2).unwrap(), all[..12].to_vec());
        // A dynamic-batch model needs no relaxing.
        let mut dynamic = model(2, &[0, 3, 2]);
        dynamic.proto.graph.as_mut().unwrap().input = vec![value("x", None)];
        assert!(relax_batch(&dynamic).unwrap().is_none());
    }
}
