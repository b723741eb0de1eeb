//! What a CPU operation returns when its inputs are inconsistent.

use crate::ema::EmaError;
use crate::optim::OptimError;

/// A CPU backend error: always an inconsistency of the caller's buffers or
/// dimensions (the CPU has no device failures).
///
/// ```
/// use sapo_core::cpu::CpuError;
/// let error = CpuError::LengthMismatch { op: "matmul", buffer: "a", expected: 6, got: 5 };
/// assert_eq!(error.to_string(), "matmul: buffer `a` has 5 elements, expected 6");
/// ```
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CpuError {
    /// A buffer's length does not match the operation's dimensions.
    #[error("{op}: buffer `{buffer}` has {got} elements, expected {expected}")]
    LengthMismatch {
        /// The operation.
        op: &'static str,
        /// The argument name.
        buffer: &'static str,
        /// Elements the dimensions require.
        expected: usize,
        /// Elements the buffer has.
        got: usize,
    },
    /// A token id, row index or sequence offset lies outside its range.
    #[error("{op}: {what} {index} is out of range (bound {bound})")]
    IndexOutOfRange {
        /// The operation.
        op: &'static str,
        /// What the index indexes.
        what: &'static str,
        /// The offending index.
        index: usize,
        /// The exclusive bound.
        bound: usize,
    },
    /// Dimensions that contradict each other.
    #[error("{op}: invalid dimensions: {reason}")]
    InvalidDims {
        /// The operation.
        op: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// An optimizer update was refused.
    #[error(transparent)]
    Optim(#[from] OptimError),
    /// An EMA update was refused.
    #[error(transparent)]
    Ema(#[from] EmaError),
}

/// `Ok` when `got == expected`, else [`CpuError::LengthMismatch`].
pub(crate) fn check_len(op: &'static str, buffer: &'static str, got: usize, expected: usize) -> Result<(), CpuError> {
    if got == expected { Ok(()) } else { Err(CpuError::LengthMismatch { op, buffer, expected, got }) }
}

/// `Ok` when `index < bound`, else [`CpuError::IndexOutOfRange`].
pub(crate) fn check_index(op: &'static str, what: &'static str, index: usize, bound: usize) -> Result<(), CpuError> {
    if index < bound { Ok(()) } else { Err(CpuError::IndexOutOfRange { op, what, index, bound }) }
}
