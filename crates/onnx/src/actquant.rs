//! Uniform fake quantization of activations, written into the graph with standard operators so
//! that any runtime runs it: `y = s · Clip(Round(x / s), lo, hi)` (Round is half to even in
//! ONNX). `lo = −z` and `hi = 2^b − 1 − z` for a zero point `z`: an asymmetric b-bit code.

use crate::pb::tensor_proto::DataType;
use crate::pb::{NodeProto, TensorProto};
use crate::{Model, OnnxError, Result};

/// Name of the scale initializer of a quantized activation.
pub fn activation_scale_name(tensor: &str) -> String {
    format!("{tensor}.act_scale")
}

fn scalar(name: String, v: f32) -> TensorProto {
    TensorProto {
        name: Some(name),
        dims: vec![],
        data_type: Some(DataType::Float as i32),
        raw_data: Some(v.to_le_bytes().to_vec()),
        ..Default::default()
    }
}

impl Model {
    /// Makes every reader of `tensor` (nodes and graph outputs) read its fake-quantized value
    /// `s · Clip(Round(x / s), lo, hi)` instead: the producer's output is renamed
    /// `{tensor}.float` and four nodes produce `tensor` again, so names downstream keep their
    /// meaning. `s` is the initializer [`activation_scale_name`]`(tensor)`. Needs opset ≥ 11
    /// (Clip with bound inputs, Round) and a node producing `tensor`.
    pub fn quantize_activation(
        &mut self,
        tensor: &str,
        scale: f32,
        lo: f32,
        hi: f32,
    ) -> Result<()> {
        if !(scale.is_finite() && scale > 0.0 && lo <= 0.0 && hi > lo) {
            return Err(OnnxError::Graph(format!(
                "activation {tensor}: bad quantizer (scale {scale}, bounds {lo}..{hi})"
            )));
        }
        if self.opset().unwrap_or(0) < 11 {
            return Err(OnnxError::Graph(format!(
                "activation quantization needs opset 11 or later (Round, Clip with inputs); \
                 the model has {:?}",
                self.opset()
            )));
        }
        let graph = self.proto.graph.as_mut().ok_or(OnnxError::NoGraph)?;
        let float = format!("{tensor}.float");
        let taken = |n: &str| {
            graph.node.iter().any(|x| x.output.iter().any(|o| o == n))
                || graph.initializer.iter().any(|t| t.name() == n)
        };
        if taken(&float) || taken(&activation_scale_name(tensor)) {
            return Err(OnnxError::Graph(format!(
                "activation {tensor} is already quantized"
            )));
        }
        let Some(producer) = graph
            .node
            .iter()
            .position(|n| n.output.iter().any(|o| o == tensor))
        else {
            return Err(OnnxError::Graph(format!(
                "activation {tensor} is not produced by a node (graph inputs are not quantized)"
            )));
        };
        for o in graph.node[producer]
            .output
            .iter_mut()
            .filter(|o| *o == tensor)
        {
            *o = float.clone();
        }
        let s = activation_scale_name(tensor);
        let (min, max) = (format!("{tensor}.act_min"), format!("{tensor}.act_max"));
        graph.initializer.push(scalar(s.clone(), scale));
        graph.initializer.push(scalar(min.clone(), lo));
        graph.initializer.push(scalar(max.clone(), hi));
        let node = |op: &str, inputs: [&str; 2], output: String| NodeProto {
            op_type: Some(op.to_string()),
            name: Some(format!("{tensor}.act_{}", op.to_lowercase())),
            input: inputs
                .iter()
                .filter(|i| !i.is_empty())
                .map(|i| i.to_string())
                .collect(),
            output: vec![output],
            ..Default::default()
        };
        let (div, round, clip) = (
            format!("{tensor}.act_div"),
            format!("{tensor}.act_round"),
            format!("{tensor}.act_clip"),
        );
        let mut clip_node = node("Clip", [&round, &min], clip.clone());
        clip_node.input.push(max);
        let chain = [
            node("Div", [&float, &s], div.clone()),
            node("Round", [&div, ""], round.clone()),
            clip_node,
            node("Mul", [&clip, &s], tensor.to_string()),
        ];
        graph.node.splice(producer + 1..producer + 1, chain);
        graph.value_info.retain(|v| v.name() != tensor);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::{GraphProto, ModelProto, OperatorSetIdProto, ValueInfoProto};
    use crate::testutil::node;

    fn relu_relu(opset: i64) -> Model {
        let value = |n: &str| ValueInfoProto {
            name: Some(n.into()),
            ..Default::default()
        };
        Model::from_proto(ModelProto {
            opset_import: vec![OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(opset),
            }],
            graph: Some(GraphProto {
                node: vec![
                    node("Relu", "r1", &["x"], &["a"]),
                    node("Relu", "r2", &["a"], &["y"]),
                ],
                input: vec![value("x")],
                output: vec![value("y")],
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    #[test]
    fn readers_see_the_quantized_value_under_the_old_name() {
        let mut m = relu_relu(13);
        m.quantize_activation("a", 0.5, 0.0, 15.0).unwrap();
        let g = m.graph().unwrap();
        let ops: Vec<&str> = g.node.iter().map(|n| n.op_type()).collect();
        assert_eq!(ops, vec!["Relu", "Div", "Round", "Clip", "Mul", "Relu"]);
        assert_eq!(g.node[0].output, vec!["a.float"]);
        assert_eq!(g.node[4].output, vec!["a"]);
        assert_eq!(g.node[5].input, vec!["a"]);
        assert_eq!(
            g.node[3].input,
            vec!["a.act_round", "a.act_min", "a.act_max"]
        );
        assert!(m.quantize_activation("a", 0.5, 0.0, 15.0).is_err());
        // The blocks see the chain as part of what precedes it.
        assert!(m.quantize_activation("y", 0.5, 0.0, 15.0).is_ok());
        assert!(m.quantize_activation("x", 0.5, 0.0, 15.0).is_err());
    }

    #[test]
    fn bad_quantizers_and_old_opsets_are_errors() {
        let mut m = relu_relu(13);
        assert!(m.quantize_activation("a", 0.0, 0.0, 15.0).is_err());
        assert!(m.quantize_activation("a", f32::NAN, 0.0, 15.0).is_err());
        assert!(m.quantize_activation("a", 1.0, 1.0, 15.0).is_err());
        let mut old = relu_relu(9);
        let e = old.quantize_activation("a", 1.0, 0.0, 15.0).unwrap_err();
        assert!(e.to_string().contains("opset"), "{e}");
    }
}
