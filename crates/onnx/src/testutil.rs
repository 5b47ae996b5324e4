//! Builders for small in-memory models used by the unit tests.

use crate::pb::{
    self, attribute_proto::AttributeType, tensor_proto::DataType, AttributeProto, NodeProto,
    TensorProto, ValueInfoProto,
};

/// A float32 initializer with elements `0.0, 0.5, 1.0, ...`, stored in
/// `raw_data` (little-endian) when `raw`, else in `float_data`.
pub fn float_tensor(name: &str, dims: &[i64], raw: bool) -> TensorProto {
    let numel: i64 = dims.iter().product();
    let values: Vec<f32> = (0..numel).map(|i| i as f32 * 0.5).collect();
    let mut t = TensorProto {
        name: Some(name.to_string()),
        dims: dims.to_vec(),
        data_type: Some(DataType::Float as i32),
        ..Default::default()
    };
    if raw {
        t.raw_data = Some(values.iter().flat_map(|v| v.to_le_bytes()).collect());
    } else {
        t.float_data = values;
    }
    t
}

/// A default-domain node; an empty `name` leaves the node unnamed.
pub fn node(op_type: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        op_type: Some(op_type.to_string()),
        name: (!name.is_empty()).then(|| name.to_string()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// An INT attribute.
pub fn int_attribute(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_string()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(value),
        ..Default::default()
    }
}

fn value_info(name: &str) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.to_string()),
        ..Default::default()
    }
}

/// `x -> Conv "conv1" (weight [4, 2, 3, 3], raw_data) -> Relu "relu1" ->
/// Gemm (unnamed, node index 2) -> y`, opset 13.
///
/// The Gemm weight `fc.weight` (raw_data) is `[3, 4]` with `transB = 1`, or
/// `[4, 3]` with `transB = 0` when `trans_b` is 0. Initializers, in order:
/// `conv1.weight`, `fc.weight`, `conv1.bias` (raw_data), `fc.bias`
/// (float_data). Shapes between nodes are not modelled (no Flatten): only the
/// structure matters to the weight listing.
pub fn conv_relu_gemm(trans_b: i64) -> pb::ModelProto {
    let fc_dims: [i64; 2] = if trans_b != 0 { [3, 4] } else { [4, 3] };
    let mut gemm = node("Gemm", "", &["r1", "fc.weight", "fc.bias"], &["y"]);
    gemm.attribute.push(int_attribute("transB", trans_b));
    let graph = pb::GraphProto {
        name: Some("conv_relu_gemm".into()),
        node: vec![
            node(
                "Conv",
                "conv1",
                &["x", "conv1.weight", "conv1.bias"],
                &["c1"],
            ),
            node("Relu", "relu1", &["c1"], &["r1"]),
            gemm,
        ],
        initializer: vec![
            float_tensor("conv1.weight", &[4, 2, 3, 3], true),
            float_tensor("fc.weight", &fc_dims, true),
            float_tensor("conv1.bias", &[4], true),
            float_tensor("fc.bias", &[3], false),
        ],
        input: vec![value_info("x")],
        output: vec![value_info("y")],
        ..Default::default()
    };
    pb::ModelProto {
        ir_version: Some(7),
        producer_name: Some("subsetq-onnx tests".into()),
        opset_import: vec![pb::OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(13),
        }],
        graph: Some(graph),
        ..Default::default()
    }
}
