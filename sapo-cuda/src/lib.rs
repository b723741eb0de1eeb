//! # sapo-cuda
//!
//! The CUDA implementation of sapo-core's `Backend` trait: kernels compiled
//! at run time with NVRTC, matrix products through cuBLAS, every op checked
//! against the CPU reference.
//!
//! This crate holds no code yet: the `Backend` trait it implements is built
//! first (project issue "The Backend seam, the CPU reference backend…"), and
//! the CUDA implementation follows in its own issue ("sapo-cuda: the same
//! Backend on NVIDIA GPUs…"). It is a workspace member now so that the
//! layout, lints and CI cover it from the start.
#![warn(missing_docs)]
