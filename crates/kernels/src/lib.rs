//! Conv / GEMM / GEMV that run on packed SQ codes instead of float weights.
//!
//! A layer is a [`PackedWeights`]: one b-bit code per weight (two to a byte at ≤ 4 bits), the
//! signed table the codes index, and one scale per output row, exactly the compact ONNX form
//! (`w = row_scale · table[code]`). Two paths compute with it:
//!
//! - **path A, W·A8** ([`matmul_a8`]): when the table is a set of small integers times one unit
//!   (SQ's levels are sums of two powers of two, so ±2^d·level is an integer) and the
//!   activations are 8-bit codes, rows are decoded to int8 by a 16-entry table lookup
//!   (`pshufb`) and multiplied with `maddubs` into int32 — integers all the way, so every
//!   implementation, the scalar i64 reference and the shift-add reference (two shifts and an
//!   add per weight, the paper's hardware model) agree exactly;
//! - **path B, f32** ([`matmul_packed_f32`]): rows are decoded into a float tile, then the same
//!   f32 kernel as [`matmul_f32`] runs on it, so the result is bit-identical to the f32 kernel
//!   on the decoded weights.
//!
//! [`conv2d`] lowers a 2-D convolution (groups, strides, pads, dilations) onto either path.
//! SIMD is chosen at run time ([`Cpu::detect`]); the scalar code is always built, tested, and
//! is what runs where AVX2 is missing.
//!
//! [`train`] holds the float kernels block reconstruction trains with: convolution, max
//! pooling and dense layers, forward and gradients, the same bits on any number of threads.
#![deny(missing_docs)]

mod conv;
mod cpu;
mod decode;
mod depthwise;
mod direct;
mod float;
mod int8;
mod packed;
pub mod reference;
pub mod train;
mod vector;

pub use conv::{conv2d, linear, Activations, ConvGeometry, Path};
pub use cpu::Cpu;
pub use float::{matmul_f32, matmul_packed_f32};
pub use int8::{a8_stride, matmul_a8};
pub use packed::{IntTable, PackedWeights};

/// Everything that can go wrong building or running a kernel, with the numbers involved.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KernelError {
    /// The packed weights do not fit together (codes, table, scales, zero positions).
    #[error("packed weights: {0}")]
    Weights(String),
    /// Inputs or outputs of the wrong size for the weights.
    #[error("shapes: {0}")]
    Shape(String),
    /// Path A asked of weights or activations it cannot take.
    #[error("int8 path: {0}")]
    Int8(String),
}

/// Result with [`KernelError`].
pub type Result<T> = std::result::Result<T, KernelError>;
