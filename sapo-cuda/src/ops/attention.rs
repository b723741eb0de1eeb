//! Causal grouped-query attention over packed sequences, as in sapo-core's
//! `cpu/attention.rs`: the argument checks, then heads up to
//! [`MAX_BLOCKED_HEAD_DIM`] wide go to [`super::attention_blocked`] and wider
//! ones to the one-warp-per-row kernels here (`kernels/attention.cu`), any
//! width up to [`MAX_HEAD_DIM`].

use sapo_core::backend::HeadDims;

use super::attention_blocked::{self, MAX_BLOCKED_HEAD_DIM, Shape};
use crate::buffer::CudaBuf;
use crate::device::{CudaBackend, per_warp};
use crate::error::{CudaError, Result, check_at_least, dim};

/// The widest head the attention kernels hold in registers (32 lanes × 8).
const MAX_HEAD_DIM: usize = 256;

/// Query heads a positive multiple of key/value heads, and a head width the
/// kernels hold (cached attention's too, in `kv_cache.rs`).
pub(crate) fn check_heads(op: &'static str, heads: HeadDims) -> Result {
    if heads.n_kv_heads == 0 || !heads.n_heads.is_multiple_of(heads.n_kv_heads) {
        return Err(CudaError::InvalidDims {
            op,
            reason: "query heads must be a positive multiple of key/value heads".into(),
        });
    }
    if heads.head_dim == 0 || heads.head_dim > MAX_HEAD_DIM {
        return Err(CudaError::InvalidDims {
            op,
            reason: format!("head_dim {} is outside 1..={MAX_HEAD_DIM}", heads.head_dim),
        });
    }
    Ok(())
}

/// The score scale `1/√D`, rounded once from f64.
pub(crate) fn scale(head_dim: usize) -> f32 {
    (1.0 / (head_dim as f64).sqrt()) as f32
}

/// The number of entries of `seq_starts` (sequences + 1), at least 2.
fn seq_starts_len(op: &'static str, seq_starts: &CudaBuf<u32>) -> Result<u32, CudaError> {
    if seq_starts.len < 2 {
        return Err(CudaError::InvalidDims { op, reason: "seq_starts needs at least one sequence".into() });
    }
    dim(op, "seq_starts", seq_starts.len)
}

/// `out` `[T, H, D]` and `lse` `[T, H]` from `q` `[T, H, D]` and `k`, `v`
/// `[T, KVH, D]`, each query seeing the keys of its sequence up to itself.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_forward(
    backend: &CudaBackend,
    out: &mut CudaBuf<f32>,
    lse: &mut CudaBuf<f32>,
    q: &CudaBuf<f32>,
    k: &CudaBuf<f32>,
    v: &CudaBuf<f32>,
    seq_starts: &CudaBuf<u32>,
    n_tokens: usize,
    heads: HeadDims,
) -> Result {
    const OP: &str = "attention_forward";
    check_heads(OP, heads)?;
    let (h, kvh, d) = (heads.n_heads, heads.n_kv_heads, heads.head_dim);
    check_at_least(OP, "out", out.len, n_tokens * h * d)?;
    check_at_least(OP, "q", q.len, n_tokens * h * d)?;
    check_at_least(OP, "k", k.len, n_tokens * kvh * d)?;
    check_at_least(OP, "v", v.len, n_tokens * kvh * d)?;
    check_at_least(OP, "lse", lse.len, n_tokens * h)?;
    if n_tokens == 0 {
        return Ok(());
    }
    let n_starts = seq_starts_len(OP, seq_starts)?;
    let (t, h32, kvh32, d32) = (dim(OP, "n_tokens", n_tokens)?, h as u32, kvh as u32, d as u32);
    let scale = scale(d);
    if d <= MAX_BLOCKED_HEAD_DIM {
        let shape = Shape { n_tokens, n_starts, heads, scale };
        return attention_blocked::forward(backend, out, lse, q, k, v, seq_starts, shape);
    }
    backend.launch(&backend.kernels().attention_forward, per_warp(n_tokens * h), |args| {
        args.buf_mut(out).buf_mut(lse).buf(q).buf(k).buf(v).buf(seq_starts);
        args.value(&n_starts).value(&t).value(&h32).value(&kvh32).value(&d32).value(&scale);
    })
}

/// Accumulates `dq`, `dk`, `dv` from `dout`, given the forward's `out` and
/// `lse`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_backward(
    backend: &CudaBackend,
    dq: &mut CudaBuf<f32>,
    dk: &mut CudaBuf<f32>,
    dv: &mut CudaBuf<f32>,
    dout: &CudaBuf<f32>,
    q: &CudaBuf<f32>,
    k: &CudaBuf<f32>,
    v: &CudaBuf<f32>,
    out: &CudaBuf<f32>,
    lse: &CudaBuf<f32>,
    seq_starts: &CudaBuf<u32>,
    n_tokens: usize,
    heads: HeadDims,
) -> Result {
    const OP: &str = "attention_backward";
    check_heads(OP, heads)?;
    let (h, kvh, d) = (heads.n_heads, heads.n_kv_heads, heads.head_dim);
    for (name, len) in [("dq", dq.len), ("dout", dout.len), ("q", q.len), ("out", out.len)] {
        check_at_least(OP, name, len, n_tokens * h * d)?;
    }
    for (name, len) in [("dk", dk.len), ("dv", dv.len), ("k", k.len), ("v", v.len)] {
        check_at_least(OP, name, len, n_tokens * kvh * d)?;
    }
    check_at_least(OP, "lse", lse.len, n_tokens * h)?;
    if n_tokens == 0 {
        return Ok(());
    }
    let n_starts = seq_starts_len(OP, seq_starts)?;
    let (t, h32, kvh32, d32) = (dim(OP, "n_tokens", n_tokens)?, h as u32, kvh as u32, d as u32);
    let scale = scale(d);
    let kernels = backend.kernels();
    let mut scratch = backend.scratch()?;
    let delta = backend.grow(&mut scratch.attention_delta, n_tokens * h)?;
    backend.launch(&kernels.attention_delta, per_warp(n_tokens * h), |args| {
        args.buf_mut(delta).buf(dout).buf(out).value(&t).value(&h32).value(&d32);
    })?;
    let delta = &*delta;
    if d <= MAX_BLOCKED_HEAD_DIM {
        let shape = Shape { n_tokens, n_starts, heads, scale };
        return attention_blocked::backward(backend, dq, dk, dv, dout, q, k, v, lse, delta, seq_starts, shape);
    }
    backend.launch(&kernels.attention_backward_dq, per_warp(n_tokens * h), |args| {
        args.buf_mut(dq).buf(dout).buf(q).buf(k).buf(v).buf(lse).buf(delta).buf(seq_starts);
        args.value(&n_starts).value(&t).value(&h32).value(&kvh32).value(&d32).value(&scale);
    })?;
    backend.launch(&kernels.attention_backward_dkv, per_warp(n_tokens * kvh), |args| {
        args.buf_mut(dk).buf_mut(dv).buf(dout).buf(q).buf(k).buf(v).buf(lse).buf(delta).buf(seq_starts);
        args.value(&n_starts).value(&t).value(&h32).value(&kvh32).value(&d32).value(&scale);
    })
}
