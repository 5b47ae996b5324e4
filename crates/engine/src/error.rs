//! Errors of the engine: every one names what it is about (node and operator,
//! graph input, or tensor) and the cause.

use subsetq_onnx::OnnxError;

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, EngineError>;

/// Errors from planning or running a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// Reading the ONNX model failed.
    #[error(transparent)]
    Onnx(#[from] OnnxError),

    /// A host kernel refused its operands (sizes that do not fit together).
    #[error(transparent)]
    Kernel(#[from] subsetq_kernels::KernelError),

    /// The graph uses an operator the engine does not implement. Reported when
    /// the plan is built, before any tensor work.
    #[error(
        "node {node}: unsupported operator {op}{more}; supported: {supported}",
        more = more_suffix(*.others),
        supported = .supported.join(", ")
    )]
    Unsupported {
        /// The first node (in graph order) with an unsupported operator.
        node: String,
        /// Its operator, as `domain::OpType` when the domain is not the default one.
        op: String,
        /// How many further nodes are unsupported.
        others: usize,
        /// The operators the engine does implement, for the message (filled by the planner, so
        /// that errors need not know the operator registry).
        supported: Vec<&'static str>,
    },

    /// A node is malformed or uses a feature of its operator that is not
    /// implemented (attribute value, input kind, rank, shape mismatch).
    #[error("node {node} ({op}): {msg}")]
    Node {
        /// The node name (or `<op>#<index>` when the node is unnamed).
        node: String,
        /// The node's operator type.
        op: String,
        /// What is wrong.
        msg: String,
    },

    /// A graph input is missing, or has the wrong shape.
    #[error("input {name}: {msg}")]
    Input {
        /// The graph input.
        name: String,
        /// What is wrong.
        msg: String,
    },

    /// A constant tensor (initializer or `Constant` value) cannot be read.
    #[error("tensor {name}: {msg}")]
    Tensor {
        /// The tensor name.
        name: String,
        /// What is wrong.
        msg: String,
    },

    /// The graph's structure is invalid (a value used before it is produced,
    /// produced twice, an output nobody produces, ...).
    #[error("graph: {0}")]
    Graph(String),

    /// The asked-for compute backend is not built in or not usable here.
    #[error("device {device}: {msg}")]
    Device {
        /// The backend's name.
        device: String,
        /// Why it cannot be used.
        msg: String,
    },
}

fn more_suffix(others: usize) -> String {
    match others {
        0 => String::new(),
        1 => " (and 1 more unsupported node)".to_string(),
        n => format!(" (and {n} more unsupported nodes)"),
    }
}

/// Builds an [`EngineError::Node`].
pub(crate) fn node_err(node: &str, op: &str, msg: impl Into<String>) -> EngineError {
    EngineError::Node {
        node: node.to_string(),
        op: op.to_string(),
        msg: msg.into(),
    }
}
