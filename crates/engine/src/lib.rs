//! Runs ONNX CNN graphs on burn tensors, with or without autograd.
//!
//! [`Plan::from_model`] turns the main graph of an ONNX model into a checked
//! list of steps (every operator matched to an implementation, attributes and
//! constant inputs validated: an unsupported operator is an error naming the
//! node before any work). [`Engine`] puts the plan's constants on a burn
//! [`Device`](burn_tensor::Device) and runs it; shapes are inferred and checked
//! for the actual inputs before the first tensor operation, so a wrong input
//! shape is a clear error, never a panic inside the tensor library.
//!
//! The device picks the backend at run time: `Device::flex()` (CPU, SIMD,
//! multi-threaded) for inference, `Device::flex().autodiff()` for the same
//! code with gradients (see [`Engine::require_grad`]). [`Backend`] names the choice for a
//! command line: the CPU always, a CUDA GPU with the `cuda` cargo feature.
//!
//! ```no_run
//! use std::path::Path;
//! use subsetq_engine::{Engine, Value};
//! use burn_tensor::Device;
//!
//! let device = Device::flex();
//! let engine = Engine::load(Path::new("assets/mnist-cnn.onnx"), &device)?;
//! let x = Value::from_f32(vec![0.0; 28 * 28], &[1, 1, 28, 28], &device).unwrap();
//! let probs = engine.run1(x)?.to_vec();
//! # Ok::<(), subsetq_engine::EngineError>(())
//! ```
//!
//! [`reconstruct`] learns quantized weights (and activation step sizes) block by block on
//! calibration data with this engine's autograd.
//!
//! Supported operators: see [`supported_ops`]. 2-D convolution and pooling
//! only (NCHW); tensors of rank 1 to [`MAX_RANK`]; float32 data; integer
//! tensors only as constant shapes, pads and axes.

#![deny(missing_docs)]

mod backend;
mod batch;
mod error;
mod ops;
mod packed;
mod plan;
pub mod reconstruct;
mod value;

pub use backend::Backend;
pub use batch::relax_batch;
pub use burn_tensor;
pub use error::{EngineError, Result};
pub use ops::supported_ops;
pub use packed::{PackedLayer, PackedSummary};
pub use plan::{Engine, InputSpec, Plan, StepTime};
pub use subsetq_kernels;
pub use value::{IntoValue, Value, MAX_RANK};
