//! What a CUDA operation returns when it fails.

use sapo_core::ema::EmaError;
use sapo_core::optim::OptimError;

/// A CUDA backend error: the device or its libraries are missing, a CUDA
/// call failed, a kernel did not compile, or the caller's buffers do not fit
/// the operation's dimensions.
///
/// ```
/// use sapo_cuda::CudaError;
/// let error = CudaError::Unavailable("libcuda.so was not found".into());
/// assert_eq!(error.to_string(), "no CUDA device: libcuda.so was not found");
/// ```
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// No usable device: no driver library, no NVRTC or cuBLAS, or no GPU.
    #[error("no CUDA device: {0}")]
    Unavailable(String),
    /// A CUDA driver call failed.
    #[error("CUDA driver: {0}")]
    Driver(#[from] cudarc::driver::DriverError),
    /// A cuBLAS call failed.
    #[error("cuBLAS: {0}")]
    Cublas(#[from] cudarc::cublas::result::CublasError),
    /// NVRTC refused the kernel source (the log says where).
    #[error("NVRTC could not compile the kernels for {arch}: {log}")]
    Compile {
        /// The target, such as `sm_90`.
        arch: String,
        /// NVRTC's message and log.
        log: String,
    },
    /// A buffer is shorter than the operation's dimensions require.
    #[error("{op}: buffer `{buffer}` has {got} elements, needs {expected}")]
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
    /// Dimensions that contradict each other or exceed what a kernel handles.
    #[error("{op}: {reason}")]
    InvalidDims {
        /// The operation.
        op: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// An optimizer hyper-parameter or step is out of range.
    #[error(transparent)]
    Optim(#[from] OptimError),
    /// An EMA decay outside `[0, 1]`.
    #[error(transparent)]
    Ema(#[from] EmaError),
}

/// What every operation of the crate returns.
pub(crate) type Result<T = (), E = CudaError> = core::result::Result<T, E>;

/// `got ≥ expected`, or a [`CudaError::LengthMismatch`].
pub(crate) fn check_at_least(
    op: &'static str,
    buffer: &'static str,
    got: usize,
    expected: usize,
) -> Result<(), CudaError> {
    if got < expected {
        return Err(CudaError::LengthMismatch { op, buffer, expected, got });
    }
    Ok(())
}

/// `got == expected` (parameter-shaped buffers), or a [`CudaError::LengthMismatch`].
pub(crate) fn check_exact(
    op: &'static str,
    buffer: &'static str,
    got: usize,
    expected: usize,
) -> Result<(), CudaError> {
    if got != expected {
        return Err(CudaError::LengthMismatch { op, buffer, expected, got });
    }
    Ok(())
}

/// A dimension as the `u32` the kernels take.
pub(crate) fn dim(op: &'static str, name: &'static str, value: usize) -> Result<u32, CudaError> {
    u32::try_from(value).map_err(|_| CudaError::InvalidDims { op, reason: format!("{name} = {value} exceeds u32") })
}
