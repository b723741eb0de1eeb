//! The key/value cache of generation (`kernels/kv_cache.cu`), as in
//! sapo-core's `cpu/kv_cache.rs`: writing new rows into it, and attention of
//! new queries over it.

use sapo_core::backend::HeadDims;

use super::attention::{check_heads, scale};
use crate::buffer::CudaBuf;
use crate::device::{CudaBackend, elementwise, per_warp};
use crate::error::{Result, check_at_least, check_exact, dim};

/// `cache[slots[t], positions[t], :] = new[t, :]` for the cache
/// `[slots, max_len, kv_dim]`; rows outside it are not written.
#[allow(clippy::too_many_arguments)]
pub(crate) fn kv_cache_write(
    backend: &CudaBackend,
    cache: &mut CudaBuf<f32>,
    new: &CudaBuf<f32>,
    slots: &CudaBuf<u32>,
    positions: &CudaBuf<u32>,
    n_tokens: usize,
    max_len: usize,
    kv_dim: usize,
) -> Result {
    const OP: &str = "kv_cache_write";
    check_at_least(OP, "new", new.len, n_tokens * kv_dim)?;
    check_at_least(OP, "slots", slots.len, n_tokens)?;
    check_at_least(OP, "positions", positions.len, n_tokens)?;
    if n_tokens * kv_dim * max_len == 0 {
        return Ok(());
    }
    let n_slots = dim(OP, "slots", cache.len / (max_len * kv_dim))?;
    let (t, m, c) = (dim(OP, "n_tokens", n_tokens)?, dim(OP, "max_len", max_len)?, dim(OP, "kv_dim", kv_dim)?);
    backend.launch(&backend.kernels().kv_cache_write, elementwise(n_tokens * kv_dim), |args| {
        args.buf_mut(cache).buf(new).buf(slots).buf(positions);
        args.value(&t).value(&n_slots).value(&m).value(&c);
    })
}

/// `out` `[T, H, D]`: each query's attention over its slot's cached keys and
/// values up to its position; a slot or position outside the cache gives NaN.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_cached(
    backend: &CudaBackend,
    out: &mut CudaBuf<f32>,
    q: &CudaBuf<f32>,
    k_cache: &CudaBuf<f32>,
    v_cache: &CudaBuf<f32>,
    slots: &CudaBuf<u32>,
    positions: &CudaBuf<u32>,
    n_tokens: usize,
    max_len: usize,
    heads: HeadDims,
) -> Result {
    const OP: &str = "attention_cached";
    check_heads(OP, heads)?;
    let (h, kvh, d) = (heads.n_heads, heads.n_kv_heads, heads.head_dim);
    check_at_least(OP, "out", out.len, n_tokens * h * d)?;
    check_at_least(OP, "q", q.len, n_tokens * h * d)?;
    check_at_least(OP, "slots", slots.len, n_tokens)?;
    check_at_least(OP, "positions", positions.len, n_tokens)?;
    check_exact(OP, "v_cache", v_cache.len, k_cache.len)?;
    if n_tokens == 0 || max_len == 0 {
        return Ok(());
    }
    let n_slots = dim(OP, "slots", k_cache.len / (max_len * kvh * d))?;
    let (t, m) = (dim(OP, "n_tokens", n_tokens)?, dim(OP, "max_len", max_len)?);
    let (h32, kvh32, d32) = (h as u32, kvh as u32, d as u32);
    let scale = scale(d);
    backend.launch(&backend.kernels().attention_cached, per_warp(n_tokens * h), |args| {
        args.buf_mut(out).buf(q).buf(k_cache).buf(v_cache).buf(slots).buf(positions);
        args.value(&t).value(&n_slots).value(&m).value(&h32).value(&kvh32).value(&d32).value(&scale);
    })
}
