//! Engine behaviour without onnxruntime: autodiff gradients against finite
//! differences, errors (unsupported operator, wrong input shape, ...), and
//! BN folding on a small graph.

mod common;

use subsetq_engine::burn_tensor::Device;
use subsetq_engine::{Engine, EngineError, Plan, Value};
use subsetq_onnx::fold_batch_norm;
use subsetq_onnx::pb::attribute_proto::AttributeType;
use subsetq_onnx::pb::tensor_proto::DataType;
use subsetq_onnx::pb::tensor_shape_proto::{dimension, Dimension};
use subsetq_onnx::pb::type_proto::{Tensor as TensorType, Value as TypeValue};
use subsetq_onnx::pb::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use subsetq_onnx::Model;

/// Autodiff gradient vs central finite difference:
/// |g_ad − g_fd| ≤ GRAD_TOL · max(|g_fd|, GRAD_FLOOR).
const GRAD_TOL: f32 = 2e-2;
const GRAD_FLOOR: f32 = 1e-2;
/// Finite-difference step.
const FD_EPS: f32 = 1e-2;
/// Outputs on the plain and the autodiff device.
const AUTODIFF_TOL: f32 = 1e-6;
/// Folded vs unfolded outputs on the small graph.
const FOLD_TOL: f32 = 1e-5;

/// Deterministic pseudo-random values in [-1, 1) (xorshift).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}

fn node(
    op: &str,
    name: &str,
    inputs: &[&str],
    output: &str,
    attrs: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        name: Some(name.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.to_string()],
        attribute: attrs,
        ..Default::default()
    }
}

fn tensor(name: &str, dims: &[usize], data: Vec<f32>) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: Some(DataType::Float as i32),
        float_data: data,
        ..Default::default()
    }
}

fn input(name: &str, dims: &[Option<usize>]) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(TypeValue::TensorType(TensorType {
                elem_type: Some(DataType::Float as i32),
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| Dimension {
                            value: Some(match d {
                                Some(v) => dimension::Value::DimValue(*v as i64),
                                None => dimension::Value::DimParam("N".into()),
                            }),
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

fn model(
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    x_dims: &[Option<usize>],
    output: &str,
) -> Model {
    Model::from_proto(ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(13),
        }],
        graph: Some(GraphProto {
            name: Some("test".into()),
            node: nodes,
            initializer: inits,
            input: vec![input("x", x_dims)],
            output: vec![ValueInfoProto {
                name: Some(output.into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// x [N,2,6,5] → Conv 2→4 k3 s1 asymmetric pads → BN → depthwise Conv k3 s2 →
/// GlobalAveragePool → Flatten → Gemm 4→3 → Softmax.
fn small_net() -> Model {
    let nodes = vec![
        node(
            "Conv",
            "conv1",
            &["x", "w1", "b1"],
            "c1",
            vec![ints("pads", &[0, 1, 1, 0])],
        ),
        node(
            "BatchNormalization",
            "bn1",
            &["c1", "g", "beta", "mean", "var"],
            "n1",
            vec![],
        ),
        node(
            "Conv",
            "dw",
            &["n1", "w2"],
            "c2",
            vec![
                int("group", 4),
                ints("strides", &[2, 2]),
                ints("pads", &[1, 1, 1, 1]),
            ],
        ),
        node("GlobalAveragePool", "gap", &["c2"], "g1", vec![]),
        node("Flatten", "flat", &["g1"], "f1", vec![]),
        node(
            "Gemm",
            "fc",
            &["f1", "w3", "b3"],
            "logits",
            vec![int("transB", 1)],
        ),
        node("Softmax", "softmax", &["logits"], "probs", vec![]),
    ];
    let var: Vec<f32> = values(4, 14).iter().map(|v| v.abs() + 0.5).collect();
    let inits = vec![
        tensor("w1", &[4, 2, 3, 3], values(72, 1)),
        tensor("b1", &[4], values(4, 2)),
        tensor("g", &[4], values(4, 11)),
        tensor("beta", &[4], values(4, 12)),
        tensor("mean", &[4], values(4, 13)),
        tensor("var", &[4], var),
        tensor("w2", &[4, 1, 3, 3], values(36, 3)),
        tensor("w3", &[3, 4], values(12, 4)),
        tensor("b3", &[3], values(3, 5)),
    ];
    model(nodes, inits, &[None, Some(2), Some(6), Some(5)], "probs")
}

const X_SHAPE: [usize; 4] = [2, 2, 6, 5];

/// loss = Σ probs · r, for fixed r (so that the softmax gradient is not zero).
fn loss_of(engine: &Engine, x: &Value, r: &[f32]) -> (Value, f32) {
    let y = engine.run1(x.clone()).expect("run");
    let Value::R2(t) = y.clone() else {
        panic!("rank")
    };
    let rt = subsetq_engine::burn_tensor::Tensor::<2>::from_data(
        subsetq_engine::burn_tensor::TensorData::new(r.to_vec(), [X_SHAPE[0], 3]),
        engine.device(),
    );
    let loss = (t * rt).sum();
    let v = loss.clone().into_scalar::<f32>();
    (Value::R1(loss), v)
}

#[test]
fn autodiff_gradients_match_finite_differences() {
    let ad = Device::flex().autodiff();
    let cpu = Device::flex();
    let plan = Plan::from_model(&small_net()).expect("plan");
    let r = values(X_SHAPE[0] * 3, 99);
    let xdata = values(X_SHAPE.iter().product(), 7);

    // Autodiff: gradients of the loss w.r.t. both conv weights and the input.
    let mut engine = Engine::new(plan.clone(), &ad).expect("engine");
    let w1 = engine.require_grad("w1").expect("w1");
    let w2 = engine.require_grad("w2").expect("w2");
    let x = Value::from_f32(xdata.clone(), &X_SHAPE, &ad)
        .and_then(Value::require_grad)
        .expect("x");
    let (loss, _) = loss_of(&engine, &x, &r);
    let Value::R1(loss) = loss else {
        unreachable!()
    };
    let grads = loss.backward();
    let g_w1 = w1.grad(&grads).expect("grad w1").to_vec();
    let g_w2 = w2.grad(&grads).expect("grad w2").to_vec();
    let g_x = x.grad(&grads).expect("grad x").to_vec();

    // Finite differences on the plain CPU device, same engine code.
    let base = Engine::new(plan, &cpu).expect("engine");
    let check = |name: &str, ad_grad: &[f32]| {
        let (dims, data) = match name {
            "x" => (X_SHAPE.to_vec(), xdata.clone()),
            p => {
                let v = base.param(p).expect("param");
                (v.dims(), v.to_vec())
            }
        };
        let mut worst = 0.0f32;
        for i in 0..data.len() {
            let eval = |delta: f32| {
                let mut d = data.clone();
                d[i] += delta;
                let mut e = base.clone();
                let xin = if name == "x" {
                    Value::from_f32(d, &dims, &cpu).expect("x")
                } else {
                    e.set_param(name, Value::from_f32(d, &dims, &cpu).expect("p"))
                        .expect("set");
                    Value::from_f32(xdata.clone(), &X_SHAPE, &cpu).expect("x")
                };
                loss_of(&e, &xin, &r).1
            };
            let fd = (eval(FD_EPS) - eval(-FD_EPS)) / (2.0 * FD_EPS);
            let err = (ad_grad[i] - fd).abs() / fd.abs().max(GRAD_FLOOR);
            worst = worst.max(err);
            assert!(
                err <= GRAD_TOL,
                "{name}[{i}]: autodiff {} vs finite difference {fd}",
                ad_grad[i]
            );
        }
        eprintln!(
            "{name}: {} gradients, worst scaled error {worst:.2e}",
            data.len()
        );
    };
    check("w1", &g_w1);
    check("w2", &g_w2);
    check("x", &g_x);
    assert!(g_w1.iter().any(|g| g.abs() > 1e-4));
}

#[test]
fn same_outputs_with_and_without_autodiff() {
    let plan = Plan::from_model(&small_net()).expect("plan");
    let xdata = values(X_SHAPE.iter().product(), 7);
    let out = |device: &Device| {
        let e = Engine::new(plan.clone(), device).expect("engine");
        e.run1(Value::from_f32(xdata.clone(), &X_SHAPE, device).expect("x"))
            .expect("run")
            .to_vec()
    };
    // Not bit-identical: the autodiff decorator keeps inputs alive, so the
    // backend takes other (in-place vs allocating) kernels.
    let diff = common::max_abs_diff(&out(&Device::flex()), &out(&Device::flex().autodiff()));
    assert!(diff <= AUTODIFF_TOL, "{diff:e}");
}

#[test]
fn folding_the_small_net_keeps_outputs() {
    let m = small_net();
    let (folded, report) = fold_batch_norm(&m).expect("fold");
    assert_eq!(
        report.folded,
        vec![("bn1".to_string(), "conv1".to_string())]
    );
    assert!(report.skipped.is_empty());
    let g = folded.graph().expect("graph");
    assert!(g.node.iter().all(|n| n.op_type() != "BatchNormalization"));
    // BN parameters are gone; the conv keeps its weight and bias names.
    assert!(g
        .initializer
        .iter()
        .all(|t| !["g", "beta", "mean", "var"].contains(&t.name())));
    assert_eq!(g.node[0].input, vec!["x", "w1", "b1"]);
    assert_eq!(g.node[0].output, vec!["n1"]);
    let cpu = Device::flex();
    let xdata = values(X_SHAPE.iter().product(), 8);
    let run = |m: &Model| {
        let e = Engine::new(Plan::from_model(m).expect("plan"), &cpu).expect("engine");
        let e_logits = e
            .run_for(
                &[(
                    "x",
                    Value::from_f32(xdata.clone(), &X_SHAPE, &cpu).expect("x"),
                )],
                &["logits"],
            )
            .expect("run");
        e_logits[0].to_vec()
    };
    let (a, b) = (run(&m), run(&folded));
    let diff = common::max_abs_diff(&a, &b);
    assert!(diff <= FOLD_TOL, "folded vs unfolded {diff:e}");
    // The input model is untouched.
    assert!(m
        .graph()
        .expect("graph")
        .node
        .iter()
        .any(|n| n.op_type() == "BatchNormalization"));
}

#[test]
fn fold_skips_shared_or_non_conv_inputs() {
    // BN after a Relu cannot fold; a conv output used twice cannot either.
    let nodes = vec![
        node("Conv", "conv", &["x", "w"], "c", vec![]),
        node("Relu", "relu", &["c"], "r", vec![]),
        node(
            "BatchNormalization",
            "bn_after_relu",
            &["r", "g", "b", "m", "v"],
            "n",
            vec![],
        ),
        node(
            "BatchNormalization",
            "bn_shared",
            &["c", "g", "b", "m", "v"],
            "n2",
            vec![],
        ),
        node("Add", "add", &["n", "n2"], "y", vec![]),
    ];
    let inits = vec![
        tensor("w", &[2, 1, 1, 1], vec![1.0, 2.0]),
        tensor("g", &[2], vec![1.0, 1.0]),
        tensor("b", &[2], vec![0.0, 0.0]),
        tensor("m", &[2], vec![0.0, 0.0]),
        tensor("v", &[2], vec![1.0, 1.0]),
    ];
    let m = model(nodes, inits, &[Some(1), Some(1), Some(2), Some(2)], "y");
    let (_, report) = fold_batch_norm(&m).expect("fold");
    assert!(report.folded.is_empty());
    assert_eq!(report.skipped.len(), 2);
    assert!(report.skipped[0].1.contains("Relu"), "{:?}", report.skipped);
    assert!(
        report.skipped[1].1.contains("also used"),
        "{:?}",
        report.skipped
    );
}

#[test]
fn unsupported_operator_is_reported_before_any_work() {
    let mut m = small_net();
    let g = m.proto.graph.as_mut().expect("graph");
    g.node
        .insert(2, node("GridSample", "grid", &["n1"], "n1b", vec![]));
    g.node.push(node("RoiAlign", "", &["probs"], "z", vec![]));
    let err = Plan::from_model(&m).expect_err("must fail");
    let msg = err.to_string();
    assert!(matches!(err, EngineError::Unsupported { .. }));
    assert!(
        msg.contains("node grid: unsupported operator GridSample"),
        "{msg}"
    );
    assert!(msg.contains("1 more"), "{msg}");
    assert!(msg.contains("Conv"), "lists the supported operators: {msg}");
    // The whole message, to the letter: the CLI's tests and users' scripts read it.
    let supported = subsetq_engine::supported_ops().join(", ");
    assert_eq!(
        msg,
        format!(
            "node grid: unsupported operator GridSample (and 1 more unsupported node); \
             supported: {supported}"
        )
    );

    let mut m = small_net();
    m.proto.graph.as_mut().expect("graph").node[0].domain = Some("com.microsoft".into());
    let msg = Plan::from_model(&m).expect_err("must fail").to_string();
    assert!(
        msg.contains("node conv1: unsupported operator com.microsoft::Conv"),
        "{msg}"
    );
}

#[test]
fn a_resize_the_engine_cannot_compute_is_refused_naming_its_node() {
    let mut m = small_net();
    let g = m.proto.graph.as_mut().expect("graph");
    let mut up = node("Resize", "up", &["c2", "", "scales"], "c2up", vec![]);
    up.attribute.push(AttributeProto {
        name: Some("mode".into()),
        r#type: Some(AttributeType::String as i32),
        s: Some(b"cubic".to_vec()),
        ..Default::default()
    });
    g.node.insert(3, up);
    g.node[4].input[0] = "c2up".into();
    g.initializer
        .push(tensor("scales", &[4], vec![1.0, 1.0, 2.0, 2.0]));
    let msg = Plan::from_model(&m).expect_err("must fail").to_string();
    assert!(
        msg.contains("node up (Resize): mode \"cubic\" is not supported (linear, nearest)"),
        "{msg}"
    );
    // With a mode it computes, the same graph plans.
    let g = m.proto.graph.as_mut().expect("graph");
    g.node[3].attribute[0].s = Some(b"linear".to_vec());
    Plan::from_model(&m).expect("a linear resize plans");
}

#[test]
fn wrong_input_shape_is_a_clear_error() {
    let e = Engine::new(
        Plan::from_model(&small_net()).expect("plan"),
        &Device::flex(),
    )
    .expect("engine");
    let dev = Device::flex();
    // Declared [N, 2, 6, 5]: 3 channels is wrong.
    let x = Value::from_f32(vec![0.0; 3 * 30], &[1, 3, 6, 5], &dev).expect("x");
    let msg = e.run1(x).expect_err("must fail").to_string();
    assert_eq!(
        msg,
        "input x: expected shape [?, 2, 6, 5], got [1, 3, 6, 5]"
    );
    let x = Value::from_f32(vec![0.0; 60], &[2, 6, 5], &dev).expect("x");
    assert!(e.run1(x).is_err());
    // Unknown input name.
    let x = Value::from_f32(vec![0.0; 60], &[1, 2, 6, 5], &dev).expect("x");
    let msg = e.run(&[("image", x)]).expect_err("must fail").to_string();
    assert!(
        msg.contains("input image: the model has no such input"),
        "{msg}"
    );

    // Without a declared shape, shape inference names the node.
    let mut m = small_net();
    m.proto.graph.as_mut().expect("graph").input[0].r#type = None;
    let e = Engine::new(Plan::from_model(&m).expect("plan"), &dev).expect("engine");
    let x = Value::from_f32(vec![0.0; 3 * 30], &[1, 3, 6, 5], &dev).expect("x");
    let msg = e.run1(x).expect_err("must fail").to_string();
    assert!(
        msg.starts_with("node conv1 (Conv): input X has 3 channels"),
        "{msg}"
    );
}

#[test]
fn bad_graphs_are_clear_errors() {
    // Clip bound computed at run time.
    let m = model(
        vec![
            node("Relu", "r", &["x"], "lo", vec![]),
            node("Clip", "clip", &["x", "lo"], "y", vec![]),
        ],
        vec![],
        &[Some(2)],
        "y",
    );
    let msg = Plan::from_model(&m).expect_err("must fail").to_string();
    assert!(
        msg.starts_with("node clip (Clip): min (input 1, lo) must be a constant"),
        "{msg}"
    );

    // Used before produced.
    let m = model(
        vec![
            node("Relu", "a", &["later"], "y", vec![]),
            node("Relu", "b", &["x"], "later", vec![]),
        ],
        vec![],
        &[Some(2)],
        "y",
    );
    let msg = Plan::from_model(&m).expect_err("must fail").to_string();
    assert!(
        msg.contains("node a (Relu): input later is produced by node b, which comes later"),
        "{msg}"
    );

    // Unknown attribute, 4-D conv.
    let m = model(
        vec![node("Relu", "r", &["x"], "y", vec![int("alpha", 1)])],
        vec![],
        &[Some(2)],
        "y",
    );
    let msg = Plan::from_model(&m).expect_err("must fail").to_string();
    assert_eq!(msg, "node r (Relu): attribute alpha is not supported");
    let m = model(
        vec![node("Conv", "c4d", &["x", "w"], "y", vec![])],
        vec![tensor("w", &[1, 1, 1, 1, 1, 1], vec![1.0])],
        &[Some(1), Some(1), Some(2), Some(2), Some(2), Some(2)],
        "y",
    );
    let e = Engine::new(Plan::from_model(&m).expect("plan"), &Device::flex()).expect("engine");
    let x = Value::from_f32(vec![0.0; 16], &[1, 1, 2, 2, 2, 2], &Device::flex()).expect("x");
    let msg = e.run1(x).expect_err("must fail").to_string();
    assert!(
        msg.contains("node c4d (Conv): input X has shape [1, 1, 2, 2, 2, 2]; 1-D, 2-D and 3-D"),
        "{msg}"
    );

    // Gradients need an autodiff device.
    let mut e = Engine::new(
        Plan::from_model(&small_net()).expect("plan"),
        &Device::flex(),
    )
    .expect("engine");
    let msg = e.require_grad("w1").expect_err("must fail").to_string();
    assert!(msg.contains("autodiff device"), "{msg}");
}
