//! Blocked attention for heads up to [`MAX_BLOCKED_HEAD_DIM`] wide
//! (`kernels/attention_blocked.cu`): one thread block per tile of
//! [`ATTENTION_TILE`] queries (or keys, for the key/value gradients), with
//! the other side staged a tile at a time in shared memory. sapo-core's
//! `cpu/attention_blocked.rs` is the CPU's blocked path in the same way;
//! `attention.rs` checks the arguments and chooses between the two paths.

use cudarc::driver::LaunchConfig;
use sapo_core::backend::HeadDims;

use crate::buffer::CudaBuf;
use crate::device::{BLOCK, CudaBackend};
use crate::error::Result;

/// The widest head of the blocked attention kernels (32 lanes × 4); wider
/// heads take the one-warp-per-row kernels.
pub(crate) const MAX_BLOCKED_HEAD_DIM: usize = 128;
/// Rows (queries or keys) per block of the blocked attention kernels.
const ATTENTION_TILE: usize = 32;

/// The dimensions of one call, checked by `attention.rs`.
#[derive(Clone, Copy)]
pub(crate) struct Shape {
    /// Tokens of the packed batch.
    pub(crate) n_tokens: usize,
    /// Entries of `seq_starts`: sequences + 1.
    pub(crate) n_starts: u32,
    /// The heads, `head_dim ≤ MAX_BLOCKED_HEAD_DIM`.
    pub(crate) heads: HeadDims,
    /// The score scale `1/√D`.
    pub(crate) scale: f32,
}

/// The grid of the blocked attention kernels: tiles × heads × sequences,
/// with `floats` of dynamic shared memory per block.
fn grid(n_tokens: usize, heads: usize, n_starts: u32, floats: usize) -> LaunchConfig {
    let tiles = n_tokens.div_ceil(ATTENTION_TILE) as u32;
    LaunchConfig {
        grid_dim: (tiles, heads as u32, n_starts - 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: (floats * 4) as u32,
    }
}

/// Attention's forward: `out` and `lse` from `q`, `k`, `v`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward(
    backend: &CudaBackend,
    out: &mut CudaBuf<f32>,
    lse: &mut CudaBuf<f32>,
    q: &CudaBuf<f32>,
    k: &CudaBuf<f32>,
    v: &CudaBuf<f32>,
    seq_starts: &CudaBuf<u32>,
    shape: Shape,
) -> Result {
    let (h, kvh, d) = (shape.heads.n_heads, shape.heads.n_kv_heads, shape.heads.head_dim);
    let (h32, kvh32, d32, scale) = (h as u32, kvh as u32, d as u32, shape.scale);
    let config = grid(shape.n_tokens, h, shape.n_starts, ATTENTION_TILE * (2 * d + 1));
    let kernels = backend.kernels();
    let kernel = if d <= 64 { &kernels.attention_forward_blocked_d64 } else { &kernels.attention_forward_blocked_d128 };
    backend.launch(kernel, config, |args| {
        args.buf_mut(out).buf_mut(lse).buf(q).buf(k).buf(v).buf(seq_starts);
        args.value(&h32).value(&kvh32).value(&d32).value(&scale);
    })
}

/// Attention's backward: accumulates `dq`, `dk`, `dv`, given the forward's
/// `lse` and the row terms `delta` (`dout·out`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    backend: &CudaBackend,
    dq: &mut CudaBuf<f32>,
    dk: &mut CudaBuf<f32>,
    dv: &mut CudaBuf<f32>,
    dout: &CudaBuf<f32>,
    q: &CudaBuf<f32>,
    k: &CudaBuf<f32>,
    v: &CudaBuf<f32>,
    lse: &CudaBuf<f32>,
    delta: &CudaBuf<f32>,
    seq_starts: &CudaBuf<u32>,
    shape: Shape,
) -> Result {
    let (h, kvh, d) = (shape.heads.n_heads, shape.heads.n_kv_heads, shape.heads.head_dim);
    let (h32, kvh32, d32, scale) = (h as u32, kvh as u32, d as u32, shape.scale);
    let kernels = backend.kernels();
    let (dq_kernel, dkv_kernel) = if d <= 64 {
        (&kernels.attention_backward_dq_blocked_d64, &kernels.attention_backward_dkv_blocked_d64)
    } else {
        (&kernels.attention_backward_dq_blocked_d128, &kernels.attention_backward_dkv_blocked_d128)
    };
    let smem = ATTENTION_TILE * 2 * (d + 1);
    backend.launch(dq_kernel, grid(shape.n_tokens, h, shape.n_starts, smem), |args| {
        args.buf_mut(dq).buf(dout).buf(q).buf(k).buf(v).buf(lse).buf(delta).buf(seq_starts);
        args.value(&h32).value(&kvh32).value(&d32).value(&scale);
    })?;
    let smem = ATTENTION_TILE * (2 * (d + 1) + 2);
    let config = grid(shape.n_tokens, kvh, shape.n_starts, smem);
    backend.launch(dkv_kernel, config, |args| {
        args.buf_mut(dk).buf_mut(dv).buf(dout).buf(q).buf(k).buf(v).buf(lse).buf(delta).buf(seq_starts);
        args.value(&h32).value(&kvh32).value(&d32).value(&scale);
    })
}
