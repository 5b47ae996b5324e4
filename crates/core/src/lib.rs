//! The math of Subset Quantization (SQ): no I/O, no tensor framework, slices in, plain structs out.
//!
//! A b-bit SQ weight is a sign bit plus a (b−1)-bit index into K = 2^(b−1) magnitudes chosen,
//! per layer, as the best subset of a universal set whose points are sums of powers of two
//! ([`UniversalSet`]). [`search`] finds that subset and its scale α three ways:
//! [`Method::Reference`] (a plain port of the paper's search, the oracle for tests),
//! [`Method::Fast`] (the same objective and α iteration on sorted data with prefix sums) and
//! [`Method::Dp`] (exact best subset for each α by dynamic programming, joint with α).
//! [`baselines`] holds uniform, power-of-two, APoT and Lloyd-Max quantizers on the same bit
//! budget, and [`pack`] the b-bit code packing.
//!
//! ```
//! use subsetq_core::{search, Method, UniversalSet};
//! let w: Vec<f32> = (0..1000).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
//! let r = search(&w, &UniversalSet::paper(), 3, Method::Fast).unwrap();
//! assert_eq!(r.subset.len(), 4);
//! assert_eq!(*r.subset.last().unwrap(), 1.0);
//! ```
#![deny(missing_docs)]

mod activation;
pub mod baselines;
mod codebook;
mod magnitudes;
pub mod pack;
mod prune;
mod search;
mod uset;

pub use activation::ActivationQuantizer;
pub use codebook::Codebook;
pub use magnitudes::Magnitudes;
pub use search::{
    candidates, divide_channels, fast_fit, normalize, normalize_channels, reference_fit, search,
    search_prepared, Channels, Fit, Method, SubsetChoice,
};
pub use uset::{power_of_two_terms, UniversalSet};

/// Everything in this crate that can fail, with the facts needed to act on it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The weight slice has no elements.
    #[error("empty weight tensor")]
    Empty,
    /// A weight is NaN or infinite.
    #[error("weight #{index} is {value} (NaN or infinite weights cannot be quantized)")]
    NonFinite {
        /// Position of the first offending weight.
        index: usize,
        /// Its value.
        value: f32,
    },
    /// Bit width outside the supported range.
    #[error("bits must be in 2..=8, got {0}")]
    Bits(u32),
    /// The universal set is smaller than the subset the bit width needs.
    #[error(
        "universal set {spec} has {points} points, but {bits}-bit codes need {needed} magnitudes"
    )]
    SetTooSmall {
        /// The set's spec.
        spec: String,
        /// Its number of points.
        points: usize,
        /// Requested bits.
        bits: u32,
        /// 2^(bits−1).
        needed: usize,
    },
    /// Exhaustive enumeration would take too long.
    #[error(
        "{count} candidate subsets are too many to enumerate (limit {limit}); use --method dp"
    )]
    TooManyCandidates {
        /// C(|U|, K), saturated.
        count: u128,
        /// The enumeration limit.
        limit: u128,
    },
    /// A universal-set spec could not be parsed.
    #[error("invalid universal-set spec {spec:?}: {msg}")]
    UsetSpec {
        /// The spec as given.
        spec: String,
        /// What is wrong with it.
        msg: String,
    },
    /// Packing or unpacking codes failed.
    #[error("code packing: {0}")]
    Pack(String),
    /// A shape / axis combination does not describe the data.
    #[error("shape {shape:?} with output axis {axis} does not fit {len} weights")]
    Shape {
        /// The shape given.
        shape: Vec<usize>,
        /// The output-channel axis.
        axis: usize,
        /// Number of weights.
        len: usize,
    },
}

/// This crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// Checks a bit width and returns K = 2^(bits−1), the number of magnitudes.
pub fn levels_for_bits(bits: u32) -> Result<usize> {
    if !(2..=8).contains(&bits) {
        return Err(Error::Bits(bits));
    }
    Ok(1usize << (bits - 1))
}
