//! Rotary position embeddings (`kernels/rope.cu`), as in sapo-core's
//! `cpu/rope.rs`: forward rotates by each position's angles, backward
//! rotates the gradient back.

use crate::buffer::CudaBuf;
use crate::device::{CudaBackend, elementwise};
use crate::error::{CudaError, Result, check_at_least, dim};

/// Rotates `x` `[T, H, D]` in place by its tokens' positions.
pub(crate) fn rope_forward(
    backend: &CudaBackend,
    x: &mut CudaBuf<f32>,
    positions: &CudaBuf<u32>,
    n_tokens: usize,
    n_heads: usize,
    head_dim: usize,
    theta: f32,
) -> Result {
    rope(backend, "rope_forward", x, positions, n_tokens, n_heads, head_dim, theta, 1.0)
}

/// Rotates the gradient `dx` `[T, H, D]` back in place.
pub(crate) fn rope_backward(
    backend: &CudaBackend,
    dx: &mut CudaBuf<f32>,
    positions: &CudaBuf<u32>,
    n_tokens: usize,
    n_heads: usize,
    head_dim: usize,
    theta: f32,
) -> Result {
    rope(backend, "rope_backward", dx, positions, n_tokens, n_heads, head_dim, theta, -1.0)
}

/// The rotation both directions share: `direction` 1 forward, −1 back.
#[allow(clippy::too_many_arguments)]
fn rope(
    backend: &CudaBackend,
    op: &'static str,
    x: &mut CudaBuf<f32>,
    positions: &CudaBuf<u32>,
    n_tokens: usize,
    n_heads: usize,
    head_dim: usize,
    theta: f32,
    direction: f32,
) -> Result {
    check_at_least(op, "x", x.len, n_tokens * n_heads * head_dim)?;
    check_at_least(op, "positions", positions.len, n_tokens)?;
    if !head_dim.is_multiple_of(2) {
        return Err(CudaError::InvalidDims { op, reason: "RoPE needs an even head dimension".into() });
    }
    let n = n_tokens * n_heads * head_dim / 2;
    if n == 0 {
        return Ok(());
    }
    let (t, h, d) = (dim(op, "n_tokens", n_tokens)?, dim(op, "n_heads", n_heads)?, dim(op, "head_dim", head_dim)?);
    let theta = f64::from(theta);
    backend.launch(&backend.kernels().rope, elementwise(n), |args| {
        args.buf_mut(x).buf(positions).value(&t).value(&h).value(&d).value(&theta).value(&direction);
    })
}
