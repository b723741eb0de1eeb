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
//! ## Layout
//!
//! The crate mirrors sapo-core's CPU backend (`sapo-core/src/cpu/`), one
//! module per operation under the same name:
//!
//! - `ops/<op>.rs` checks an operation's arguments and launches its kernels
//!   (`attention`, `attention_blocked`, `elementwise`, `embedding`,
//!   `kv_cache`, `logprob`, `matmul`, `matmul_bf16`, `rms_norm`, `rope`,
//!   `sequence`; and `memory` and `optim` for what the CPU implements in
//!   `cpu/mod.rs` itself).
//! - `kernels/<op>.cu` holds those kernels, and `kernels/common.cu` the
//!   helpers they share; `kernels.rs` joins them into [`KERNEL_SOURCE`],
//!   compiles it and loads the functions.
//! - `backend.rs` implements the trait, each method one call into `ops/`.
//! - `device.rs` is [`CudaBackend`] itself: opening the device, its
//!   settings, the scratch memory and the launches every operation shares.
//! - `buffer.rs` ([`CudaBuf`]) and `error.rs` ([`CudaError`]).
//!
//! Every operation is checked against the CPU reference by `sapo verify` and
//! by sapo-host's `tests/cuda_verify.rs`.
#![warn(missing_docs)]

mod backend;
mod buffer;
mod device;
mod error;
mod kernels;
mod ops;

pub use buffer::CudaBuf;
pub use device::{CudaBackend, unavailable_reason};
pub use error::CudaError;
pub use kernels::{CHECKED_ARCHS, KERNEL_NAMES, KERNEL_SOURCE, compile_kernels, compile_source, nvrtc_available};
