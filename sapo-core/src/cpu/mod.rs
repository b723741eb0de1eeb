//! The CPU reference backend (feature `cpu`): every [`Backend`](crate::backend::Backend) operation as
//! plain, checked Rust over host memory.
//!
//! Each operation is a generic function over [`CpuFloat`] in [`ops`], so the
//! same code runs in `f32` for training and in `f64` for the
//! finite-difference tests; [`CpuBackend`] is the `f32` instance behind the
//! trait. The reference is written to be obviously right first: long sums
//! accumulate in f64, attention is the textbook loop, and nothing is fused
//! except the LM head's log-softmax (which exists to avoid a `[T, V]`
//! tensor). Buffers are allocated by the caller once and reused.

use alloc::vec::Vec;
use core::cell::RefCell;

pub(crate) mod attention;
#[cfg(feature = "fast")]
mod attention_blocked;
mod backend;
mod elementwise;
mod embedding;
mod error;
mod fast_exp;
mod float;
mod kv_cache;
mod logprob;
mod matmul;
mod matmul_bf16;
mod par;
mod rms_norm;
mod rope;
mod sequence;
#[cfg(test)]
pub(crate) mod test_support;

/// The generic operations behind [`CpuBackend`], usable on plain slices of
/// `f32` or `f64`.
pub mod ops {
    pub use super::attention::{
        attention_backward, attention_backward_reference, attention_forward, attention_forward_reference,
    };
    pub use super::elementwise::{add, add_assign, swiglu_backward, swiglu_forward};
    pub use super::embedding::{embedding_backward, embedding_forward};
    pub use super::kv_cache::{attention_cached, kv_cache_write};
    pub use super::logprob::{
        BLOCK_ELEMENTS, LogprobScratch, block_rows, token_logprobs_backward, token_logprobs_backward_bf16,
        token_logprobs_forward, token_logprobs_forward_bf16,
    };
    pub use super::matmul::{add_bias, add_bias_backward, matmul, matmul_reference};
    pub use super::matmul_bf16::{matmul_bf16, widened as matmul_bf16_widened};
    pub use super::rms_norm::{rms_norm_backward, rms_norm_forward};
    pub use super::rope::{rope_backward, rope_forward};
    pub use super::sequence::{sequence_logprobs, sequence_logprobs_backward};
}

/// A host buffer.
///
/// ```
/// use sapo_core::backend::Backend;
/// use sapo_core::cpu::CpuBackend;
/// let backend = CpuBackend::new();
/// let buffer = backend.upload(&[1u32, 2, 3])?;
/// assert_eq!(buffer.as_slice(), &[1, 2, 3]);
/// # Ok::<(), sapo_core::cpu::CpuError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct CpuBuffer<T>(Vec<T>);

impl<T> CpuBuffer<T> {
    /// The elements.
    pub fn as_slice(&self) -> &[T] {
        &self.0
    }
    /// The elements, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.0
    }
}

/// The CPU reference backend, `f32`.
///
/// Holds the fused LM head's block scratch so repeated steps reuse it.
///
/// ```
/// use sapo_core::backend::Backend;
/// use sapo_core::cpu::CpuBackend;
/// let backend = CpuBackend::new();
/// let mut x = backend.upload(&[1.0_f32, 2.0])?;
/// backend.scale(&mut x, 0.5)?;
/// assert_eq!(backend.sum_of_squares(&x)?, 1.25);
/// # Ok::<(), sapo_core::cpu::CpuError>(())
/// ```
#[derive(Debug, Default)]
pub struct CpuBackend {
    logprob_scratch: RefCell<ops::LogprobScratch<f32>>,
}

impl CpuBackend {
    /// A backend with empty scratch.
    pub fn new() -> Self {
        Self::default()
    }
}

pub use error::CpuError;
pub use float::CpuFloat;
