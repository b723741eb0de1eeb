//! Every `Backend` operation's launch code, one module per operation named
//! as in sapo-core's `cpu/`, each beside its kernels in `src/kernels/` under
//! the same name (`ops/rms_norm.rs` launches `kernels/rms_norm.cu`).
//!
//! Each operation is a function taking the [`CudaBackend`](crate::CudaBackend)
//! first and then the trait method's arguments; it checks the buffer
//! lengths against the dimensions before any launch, so
//! [`crate::backend`]'s trait implementation only delegates. Two modules
//! have no CPU file of that name, because `cpu/mod.rs` implements those
//! methods inline: [`memory`] (allocation and copies, no kernels) and
//! [`optim`] (the optimizer updates, the EMA, and gradient clipping's sum
//! of squares and scaling).
//!
//! Modules use one another in one direction only: [`attention`] launches
//! [`attention_blocked`], [`kv_cache`] takes [`attention`]'s head checks
//! and score scale, [`rms_norm`] takes [`matmul`]'s column sums,
//! [`matmul_bf16`] takes [`matmul`]'s cuBLAS configuration, [`logprob`]
//! takes [`matmul`], [`matmul_bf16`] and [`memory`], and [`embedding`]
//! takes [`memory`].

pub(crate) mod attention;
pub(crate) mod attention_blocked;
pub(crate) mod elementwise;
pub(crate) mod embedding;
pub(crate) mod kv_cache;
pub(crate) mod logprob;
pub(crate) mod matmul;
pub(crate) mod matmul_bf16;
pub(crate) mod memory;
pub(crate) mod optim;
pub(crate) mod rms_norm;
pub(crate) mod rope;
pub(crate) mod sequence;
