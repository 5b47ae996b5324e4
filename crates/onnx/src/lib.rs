//! ONNX model reading for subsetq.
//!
//! This crate decodes an ONNX model file (a protobuf `ModelProto`) with
//! [`prost`] into the generated types of the [`pb`] module, and lists the
//! layers whose weights subsetq quantizes: every `Conv`, `Gemm` and `MatMul`
//! node of the main graph whose weight is a graph initializer, in graph node
//! order, with its float32 weight data, its shape, the axis of its output
//! channels and its role (first, middle, last weight layer).
//!
//! The protobuf types are generated at build time from the official
//! `onnx.proto` vendored in `proto/`, with `prost-build` and the pure-Rust
//! compiler `protox`; no `protoc` is needed.
//!
//! Reading never writes anything, and never panics on file contents: a
//! malformed, truncated or hostile file gives an [`OnnxError`].
//!
//! # Example
//!
//! ```no_run
//! use std::path::Path;
//!
//! let model = subsetq_onnx::load(Path::new("assets/mnist-cnn.onnx"))?;
//! println!("opset {:?}", model.opset());
//! for layer in model.weight_layers()? {
//!     println!(
//!         "{:<24} {:<8} {:?} {:?} out_axis={} groups={}",
//!         layer.name, layer.op_type, layer.shape, layer.role, layer.out_axis, layer.groups
//!     );
//! }
//! # Ok::<(), subsetq_onnx::OnnxError>(())
//! ```
//!
//! # What is not supported
//!
//! Only float32 weights stored inside the model file are read: float16,
//! bfloat16, integer and other element types, and tensors whose data lives in
//! an external file, give an [`OnnxError::Initializer`] naming the tensor.
//! Weights computed at run time (for example by a `Constant` node) are not
//! initializers and are not listed; neither are layers inside subgraphs
//! (`If`, `Loop`, `Scan` bodies).

#![deny(missing_docs)]

mod actquant;
mod blocks;
mod compact;
mod fold;
mod layers;
mod tensor;
pub mod test_assets;
mod validate;
mod write;
pub use write::write_atomically;

use std::path::{Path, PathBuf};

use prost::Message;

pub use actquant::activation_scale_name;
pub use blocks::{Block, BlockKind, MAX_BLOCK_LAYERS};
pub use compact::{CompactWeight, UINT4_OPSET};
pub use fold::{fold_batch_norm, FoldReport};
pub use layers::{LayerRole, WeightLayer};
pub use tensor::{decode_tensor, encode_tensor_f32, read_tensor, ConstData, ConstTensor};
pub use validate::MAX_OPSET;

/// Protobuf types generated from the official `onnx.proto` (package `onnx`).
///
/// `onnx.proto` uses proto2 syntax, so optional scalar fields are `Option`s;
/// prost generates accessor methods (e.g. [`pb::NodeProto::name`]) that give
/// the default value for an unset field.
#[allow(missing_docs, clippy::all, clippy::pedantic, rustdoc::all)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, OnnxError>;

/// Errors from reading an ONNX model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OnnxError {
    /// The model file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The path that was read.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The bytes are not a protobuf `ModelProto`.
    #[error("{origin}: not a valid ONNX model (protobuf decode failed: {source})")]
    Decode {
        /// Where the bytes came from: the file path, or `<bytes>` for [`decode`].
        origin: String,
        /// The protobuf decode error.
        source: prost::DecodeError,
    },
    /// The model has no graph.
    #[error("the model has no graph")]
    NoGraph,
    /// A node is not usable as a weight layer.
    #[error("node {node} ({op_type}): {msg}")]
    Node {
        /// The node name (or `<op_type>#<index>` when the node is unnamed).
        node: String,
        /// The node's operator type.
        op_type: String,
        /// What is wrong.
        msg: String,
    },
    /// The graph's structure does not allow what was asked (e.g. cutting it into blocks).
    #[error("graph: {0}")]
    Graph(String),
    /// An initializer tensor cannot be read as float32 data.
    #[error("initializer {name}: {msg}")]
    Initializer {
        /// The tensor name.
        name: String,
        /// What is wrong.
        msg: String,
    },
}

/// A decoded ONNX model.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// The decoded protobuf.
    pub proto: pb::ModelProto,
}

/// Reads and decodes the ONNX model at `path`. The file is only read.
pub fn load(path: &Path) -> Result<Model> {
    let bytes = std::fs::read(path).map_err(|source| OnnxError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode_from(&bytes, path.display().to_string())
}

/// Decodes an ONNX model from its protobuf bytes.
pub fn decode(bytes: &[u8]) -> Result<Model> {
    decode_from(bytes, "<bytes>".to_string())
}

fn decode_from(bytes: &[u8], origin: String) -> Result<Model> {
    pb::ModelProto::decode(bytes)
        .map(|proto| Model { proto })
        .map_err(|source| OnnxError::Decode { origin, source })
}

/// Whether `domain` names the default ONNX operator set.
pub(crate) fn is_default_domain(domain: &str) -> bool {
    domain.is_empty() || domain == "ai.onnx"
}

impl Model {
    /// Wraps an already decoded `ModelProto`.
    pub fn from_proto(proto: pb::ModelProto) -> Self {
        Model { proto }
    }

    /// The version of the default (`ai.onnx`) operator set the model imports,
    /// if it imports one.
    pub fn opset(&self) -> Option<i64> {
        self.proto
            .opset_import
            .iter()
            .find(|o| is_default_domain(o.domain()))
            .and_then(|o| o.version)
    }

    /// The main graph, or [`OnnxError::NoGraph`].
    pub fn graph(&self) -> Result<&pb::GraphProto> {
        self.proto.graph.as_ref().ok_or(OnnxError::NoGraph)
    }

    /// The `Conv`, `Gemm` and `MatMul` layers of the main graph whose weight
    /// is a graph initializer, in graph node order (which ONNX requires to be
    /// topological), with their float32 weights. See [`WeightLayer`].
    pub fn weight_layers(&self) -> Result<Vec<WeightLayer>> {
        layers::weight_layers(self.graph()?)
    }

    /// The shape and float32 data of the main-graph initializer `name`, or
    /// `None` if the graph has no initializer of that name.
    pub fn initializer_f32(&self, name: &str) -> Result<Option<(Vec<usize>, Vec<f32>)>> {
        let graph = self.graph()?;
        match graph.initializer.iter().find(|t| t.name() == name) {
            Some(t) => tensor::tensor_f32(t).map(Some),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
pub(crate) mod testutil;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    #[test]
    fn roundtrip_and_opset() {
        let proto = conv_relu_gemm(1);
        let bytes = proto.encode_to_vec();
        let model = decode(&bytes).unwrap();
        assert_eq!(model.proto, proto);
        assert_eq!(model.opset(), Some(13));
        assert_eq!(Model::from_proto(proto.clone()).proto, proto);
    }

    #[test]
    fn opset_ignores_other_domains_and_accepts_ai_onnx() {
        let mut proto = conv_relu_gemm(1);
        proto.opset_import = vec![
            pb::OperatorSetIdProto {
                domain: Some("com.microsoft".into()),
                version: Some(1),
            },
            pb::OperatorSetIdProto {
                domain: Some("ai.onnx".into()),
                version: Some(17),
            },
        ];
        assert_eq!(Model::from_proto(proto.clone()).opset(), Some(17));
        proto.opset_import.truncate(1);
        assert_eq!(Model::from_proto(proto).opset(), None);
    }

    #[test]
    fn no_graph() {
        let model = decode(&pb::ModelProto::default().encode_to_vec()).unwrap();
        assert!(matches!(model.weight_layers(), Err(OnnxError::NoGraph)));
        assert!(matches!(
            model.initializer_f32("w"),
            Err(OnnxError::NoGraph)
        ));
        assert_eq!(model.opset(), None);
    }

    #[test]
    fn truncated_bytes_are_a_decode_error() {
        let bytes = conv_relu_gemm(1).encode_to_vec();
        let err = decode(&bytes[..bytes.len() / 2]).unwrap_err();
        assert!(matches!(err, OnnxError::Decode { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.starts_with("<bytes>: not a valid ONNX model (protobuf decode failed: "));
    }

    #[test]
    fn garbage_bytes_are_an_error_not_a_panic() {
        // A tiny xorshift generator: deterministic, no extra dependency.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut errors = 0;
        for len in [1usize, 2, 7, 64, 1000, 10_000] {
            for _ in 0..20 {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        (state >> 24) as u8
                    })
                    .collect();
                if let Ok(model) = decode(&bytes) {
                    // Whatever decoded must still be safe to inspect.
                    let _ = model.opset();
                    let _ = model.weight_layers();
                } else {
                    errors += 1;
                }
            }
        }
        assert!(errors > 0);
        // Long runs of garbage are essentially never a valid protobuf.
        let err = decode(&[0xff; 64]).unwrap_err();
        assert!(matches!(err, OnnxError::Decode { .. }));
    }

    #[test]
    fn missing_file_is_an_io_error_naming_the_path() {
        let path = Path::new("/nonexistent/dir/model-does-not-exist.onnx");
        let err = load(path).unwrap_err();
        match &err {
            OnnxError::Io { path: p, .. } => assert_eq!(p, path),
            other => panic!("expected Io error, got {other:?}"),
        }
        assert!(err.to_string().contains("model-does-not-exist.onnx"));
    }

    #[test]
    fn load_reads_a_file_and_names_it_in_decode_errors() {
        let dir = std::env::temp_dir().join(format!("subsetq-onnx-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.onnx");
        let bad = dir.join("bad.onnx");
        std::fs::write(&good, conv_relu_gemm(1).encode_to_vec()).unwrap();
        std::fs::write(&bad, [0xffu8; 16]).unwrap();
        let model = load(&good).unwrap();
        assert_eq!(model.weight_layers().unwrap().len(), 2);
        let err = load(&bad).unwrap_err();
        assert!(err.to_string().contains("bad.onnx"), "{err}");
        assert!(err.to_string().contains("not a valid ONNX model"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_prefix_and_single_byte_corruption_is_handled() {
        let mut proto = conv_relu_gemm(1);
        // Keep the model small so the quadratic-ish sweep stays fast, but
        // exercise both raw_data and float_data paths.
        if let Some(g) = proto.graph.as_mut() {
            g.initializer[1] = float_tensor("fc.weight", &[3, 4], false);
        }
        let bytes = proto.encode_to_vec();
        assert!(
            bytes.len() < 4096,
            "test model grew to {} bytes",
            bytes.len()
        );
        let exercise = |b: &[u8]| {
            if let Ok(m) = decode(b) {
                let _ = m.opset();
                if let Ok(layers) = m.weight_layers() {
                    for l in &layers {
                        let _ = l.out_channels();
                    }
                }
                if let Ok(g) = m.graph() {
                    for t in &g.initializer {
                        let _ = m.initializer_f32(t.name());
                    }
                }
            }
        };
        for end in 0..=bytes.len() {
            exercise(&bytes[..end]);
        }
        let mut corrupt = bytes.clone();
        for i in 0..bytes.len() {
            for v in [
                0x00u8,
                0xff,
                0x80,
                0x7f,
                bytes[i] ^ 0x01,
                bytes[i].wrapping_add(3),
            ] {
                corrupt[i] = v;
                exercise(&corrupt);
            }
            corrupt[i] = bytes[i];
        }
    }

    #[test]
    fn deeply_nested_subgraphs_do_not_overflow_the_stack() {
        // Hand-encode: ModelProto.graph (7) -> GraphProto.node (1) ->
        // NodeProto.attribute (5) -> AttributeProto.g (6) -> GraphProto ...
        // nested far beyond prost's recursion limit.
        fn wrap(field: u32, inner: Vec<u8>) -> Vec<u8> {
            let mut out = Vec::new();
            prost::encoding::encode_key(
                field,
                prost::encoding::WireType::LengthDelimited,
                &mut out,
            );
            prost::encoding::encode_varint(inner.len() as u64, &mut out);
            out.extend(inner);
            out
        }
        let mut graph = Vec::new();
        for _ in 0..2000 {
            let attr = wrap(6, graph);
            let node = wrap(5, attr);
            graph = wrap(1, node);
        }
        let model = wrap(7, graph);
        let err = decode(&model).unwrap_err();
        assert!(matches!(err, OnnxError::Decode { .. }), "{err}");
    }
}
