//! # sapo-cuda
//!
//! sapo-core's [`Backend`](sapo_core::backend::Backend) on NVIDIA GPUs:
//! kernels in CUDA C++ ([`KERNEL_SOURCE`]) compiled at run time with NVRTC
//! for the device's compute capability, matrix products through cuBLAS (full
//! f32 by default, TF32 when asked, bf16 operands with f32 sums for bf16
//! mixed precision), all on one stream.
//!
//! It builds everywhere: cudarc loads the CUDA libraries at run time
//! (`dynamic-loading`), so a machine without a GPU or toolkit compiles and
//! tests the workspace, and [`CudaBackend::new`] answers
//! [`CudaError::Unavailable`] ("no CUDA device: …") instead of panicking.
//! The kernels compile with NVRTC alone ([`compile_kernels`]), which CI does
//! for sm_80 and sm_90 so a kernel that does not compile fails there even
//! without a GPU.
//!
//! Every operation is checked against the CPU reference by `sapo verify` and
//! by sapo-host's `tests/cuda_verify.rs`.
#![warn(missing_docs)]

mod backend;
mod buffer;
mod error;
mod kernels;
mod matmul;

pub use backend::{CudaBackend, unavailable_reason};
pub use buffer::CudaBuf;
pub use error::CudaError;
pub use kernels::{CHECKED_ARCHS, KERNEL_NAMES, KERNEL_SOURCE, compile_kernels, compile_source, nvrtc_available};
