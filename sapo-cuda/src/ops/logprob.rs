//! The fused log-probs of scored rows (`kernels/logprob.cu`), as in
//! sapo-core's `cpu/logprob.rs`, with an f32 LM head or one in bf16: blocks
//! of rows gathered from the final hidden states, their logits from one
//! matrix product, the log-softmax per row; backward recomputes each block's
//! logits and turns them into `dlogits` in place.

use half::bf16;
use sapo_core::backend::MatmulSpec;

use super::matmul::gemm;
use super::matmul_bf16::{gemm_bf16, round_to_bf16};
use super::memory::download;
use crate::buffer::CudaBuf;
use crate::device::{CudaBackend, Scratch, elementwise, per_row};
use crate::error::{Result, check_at_least, check_exact, dim};

/// The most logits one block keeps (`rows × V` floats, 128 MiB): bounds
/// memory whatever the batch.
const MAX_LOGITS_PER_BLOCK: usize = 1 << 25;

/// The LM head's weights `[V, C]` and the number format of its products.
#[derive(Clone, Copy)]
enum Head<'a> {
    /// f32 weights: f32 products (SGEMM, or TF32 where enabled).
    F32(&'a CudaBuf<f32>),
    /// bf16 weights: the hidden rows and `dlogits` are rounded to bf16 and
    /// the products sum in f32 (`Backend::matmul_bf16`).
    Bf16(&'a CudaBuf<bf16>),
}

impl Head<'_> {
    fn len(self) -> usize {
        match self {
            Head::F32(weights) => weights.len,
            Head::Bf16(weights) => weights.len,
        }
    }
}

/// Log-probs `logps[r]` of `targets[r]` at the hidden states
/// `hidden[rows[r]]` under an f32 LM head `[V, C]`, and each row's `lse`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn token_logprobs_forward(
    backend: &CudaBackend,
    logps: &mut CudaBuf<f32>,
    lse: &mut CudaBuf<f32>,
    hidden: &CudaBuf<f32>,
    lm_head: &CudaBuf<f32>,
    rows: &CudaBuf<u32>,
    targets: &CudaBuf<u32>,
    n_rows: usize,
    channels: usize,
    vocab: usize,
) -> Result {
    let (op, head) = ("token_logprobs_forward", Head::F32(lm_head));
    forward(backend, op, logps, lse, hidden, head, rows, targets, n_rows, channels, vocab)
}

/// [`token_logprobs_forward`] with a bf16 LM head.
#[allow(clippy::too_many_arguments)]
pub(crate) fn token_logprobs_forward_bf16(
    backend: &CudaBackend,
    logps: &mut CudaBuf<f32>,
    lse: &mut CudaBuf<f32>,
    hidden: &CudaBuf<f32>,
    lm_head: &CudaBuf<bf16>,
    rows: &CudaBuf<u32>,
    targets: &CudaBuf<u32>,
    n_rows: usize,
    channels: usize,
    vocab: usize,
) -> Result {
    let (op, head) = ("token_logprobs_forward_bf16", Head::Bf16(lm_head));
    forward(backend, op, logps, lse, hidden, head, rows, targets, n_rows, channels, vocab)
}

/// Accumulates `dhidden` at the rows' tokens and `dlm_head` from `dlogps`,
/// given the forward's `lse`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn token_logprobs_backward(
    backend: &CudaBackend,
    dhidden: &mut CudaBuf<f32>,
    dlm_head: &mut CudaBuf<f32>,
    dlogps: &CudaBuf<f32>,
    hidden: &CudaBuf<f32>,
    lm_head: &CudaBuf<f32>,
    rows: &CudaBuf<u32>,
    targets: &CudaBuf<u32>,
    lse: &CudaBuf<f32>,
    n_rows: usize,
    channels: usize,
    vocab: usize,
) -> Result {
    let (op, head) = ("token_logprobs_backward", Head::F32(lm_head));
    backward(backend, op, dhidden, dlm_head, dlogps, hidden, head, rows, targets, lse, n_rows, channels, vocab)
}

/// [`token_logprobs_backward`] with a bf16 LM head.
#[allow(clippy::too_many_arguments)]
pub(crate) fn token_logprobs_backward_bf16(
    backend: &CudaBackend,
    dhidden: &mut CudaBuf<f32>,
    dlm_head: &mut CudaBuf<f32>,
    dlogps: &CudaBuf<f32>,
    hidden: &CudaBuf<f32>,
    lm_head: &CudaBuf<bf16>,
    rows: &CudaBuf<u32>,
    targets: &CudaBuf<u32>,
    lse: &CudaBuf<f32>,
    n_rows: usize,
    channels: usize,
    vocab: usize,
) -> Result {
    let (op, head) = ("token_logprobs_backward_bf16", Head::Bf16(lm_head));
    backward(backend, op, dhidden, dlm_head, dlogps, hidden, head, rows, targets, lse, n_rows, channels, vocab)
}

/// `out (=|+=) op(a) · op(b)` where `b` is the head, in the head's format;
/// `a` must already be rounded into `a_bf16` for a bf16 head.
fn times_head(
    backend: &CudaBackend,
    out: &mut CudaBuf<f32>,
    a: &CudaBuf<f32>,
    a_bf16: &CudaBuf<bf16>,
    head: Head<'_>,
    spec: MatmulSpec,
) -> Result {
    match head {
        Head::F32(weights) => gemm(backend, &mut out.view_mut(), &a.view(), &weights.view(), spec, 1),
        Head::Bf16(weights) => gemm_bf16(backend, out, a_bf16, weights, spec),
    }
}

/// One block's buffers, borrowed from the backend's [`Scratch`].
struct BlockScratch<'s> {
    /// Rows per block: as many as keep the logits within
    /// [`MAX_LOGITS_PER_BLOCK`].
    rows: usize,
    /// The block's gathered hidden rows `[rows, C]`.
    rows_hidden: &'s mut CudaBuf<f32>,
    /// Their logits, then logit gradients `[rows, V]`.
    logits: &'s mut CudaBuf<f32>,
    /// The rows' hidden gradients `[rows, C]`.
    rows_dhidden: &'s mut CudaBuf<f32>,
    /// `rows_hidden` rounded, for a bf16 head.
    rows_hidden_bf16: &'s mut CudaBuf<bf16>,
    /// `logits` (the logit gradients) rounded, for a bf16 head.
    logits_bf16: &'s mut CudaBuf<bf16>,
}

/// Rounds the first `n` elements of `x` into `out` where `head` is bf16.
fn round_for(backend: &CudaBackend, head: Head<'_>, out: &mut CudaBuf<bf16>, x: &CudaBuf<f32>, n: usize) -> Result {
    match head {
        Head::F32(_) => Ok(()),
        Head::Bf16(_) => round_to_bf16(backend, out, x, n),
    }
}

/// Rows per block, and the scratch for them.
fn block_scratch<'s>(
    backend: &CudaBackend,
    scratch: &'s mut Scratch,
    head: Head<'_>,
    n_rows: usize,
    channels: usize,
    vocab: usize,
) -> Result<BlockScratch<'s>> {
    let rows = (MAX_LOGITS_PER_BLOCK / vocab.max(1)).clamp(1, n_rows);
    // An f32 head never reads the bf16 buffers: a token allocation.
    let bf16_len = |len: usize| if matches!(head, Head::Bf16(_)) { len } else { 1 };
    let Scratch { rows_hidden, logits, rows_dhidden, rows_hidden_bf16, logits_bf16, .. } = scratch;
    Ok(BlockScratch {
        rows,
        rows_hidden: backend.grow(rows_hidden, rows * channels)?,
        logits: backend.grow(logits, rows * vocab)?,
        rows_dhidden: backend.grow(rows_dhidden, rows * channels)?,
        rows_hidden_bf16: backend.grow(rows_hidden_bf16, bf16_len(rows * channels))?,
        logits_bf16: backend.grow(logits_bf16, bf16_len(rows * vocab))?,
    })
}

/// Gathers the hidden states of rows `first..first + count` into the
/// block's scratch and computes their logits there; a bf16 head's rows
/// are rounded first (and stay in `rows_hidden_bf16` for backward).
#[allow(clippy::too_many_arguments)]
fn block_logits(
    backend: &CudaBackend,
    op: &'static str,
    block: &mut BlockScratch<'_>,
    head: Head<'_>,
    hidden: &CudaBuf<f32>,
    rows: &CudaBuf<u32>,
    first: usize,
    count: usize,
    channels: usize,
    vocab: usize,
) -> Result {
    let (c, first32, count32) = (dim(op, "channels", channels)?, first as u32, count as u32);
    let rows_hidden = &mut *block.rows_hidden;
    backend.launch(&backend.kernels().gather_rows, elementwise(count * channels), |args| {
        args.buf_mut(rows_hidden).buf(hidden).buf(rows).value(&first32).value(&count32).value(&c);
    })?;
    round_for(backend, head, block.rows_hidden_bf16, block.rows_hidden, count * channels)?;
    let spec = MatmulSpec { m: count, k: channels, n: vocab, transpose_a: false, transpose_b: true, accumulate: false };
    times_head(backend, block.logits, block.rows_hidden, block.rows_hidden_bf16, head, spec)
}

/// The forward of either head format: the checks, then block by block the
/// logits and their log-softmax.
#[allow(clippy::too_many_arguments)]
fn forward(
    backend: &CudaBackend,
    op: &'static str,
    logps: &mut CudaBuf<f32>,
    lse: &mut CudaBuf<f32>,
    hidden: &CudaBuf<f32>,
    head: Head<'_>,
    rows: &CudaBuf<u32>,
    targets: &CudaBuf<u32>,
    n_rows: usize,
    channels: usize,
    vocab: usize,
) -> Result {
    check_at_least(op, "logps", logps.len, n_rows)?;
    check_at_least(op, "lse", lse.len, n_rows)?;
    check_at_least(op, "rows", rows.len, n_rows)?;
    check_at_least(op, "targets", targets.len, n_rows)?;
    check_exact(op, "lm_head", head.len(), vocab * channels)?;
    if n_rows == 0 {
        return Ok(());
    }
    let v = dim(op, "vocab", vocab)?;
    let mut scratch = backend.scratch()?;
    let mut block = block_scratch(backend, &mut scratch, head, n_rows, channels, vocab)?;
    for first in (0..n_rows).step_by(block.rows) {
        let count = block.rows.min(n_rows - first);
        block_logits(backend, op, &mut block, head, hidden, rows, first, count, channels, vocab)?;
        let (first32, count32, logits) = (first as u32, count as u32, &*block.logits);
        backend.launch(&backend.kernels().logits_lse, per_row(count), |args| {
            args.buf_mut(logps).buf_mut(lse).buf(logits).buf(targets);
            args.value(&first32).value(&count32).value(&v);
        })?;
    }
    Ok(())
}

/// The backward of either head format: the checks, then block by block the
/// logits again, their gradients in place, and the two products.
#[allow(clippy::too_many_arguments)]
fn backward(
    backend: &CudaBackend,
    op: &'static str,
    dhidden: &mut CudaBuf<f32>,
    dlm_head: &mut CudaBuf<f32>,
    dlogps: &CudaBuf<f32>,
    hidden: &CudaBuf<f32>,
    head: Head<'_>,
    rows: &CudaBuf<u32>,
    targets: &CudaBuf<u32>,
    lse: &CudaBuf<f32>,
    n_rows: usize,
    channels: usize,
    vocab: usize,
) -> Result {
    for (name, len) in [("dlogps", dlogps.len), ("rows", rows.len), ("targets", targets.len), ("lse", lse.len)] {
        check_at_least(op, name, len, n_rows)?;
    }
    check_exact(op, "lm_head", head.len(), vocab * channels)?;
    check_exact(op, "dlm_head", dlm_head.len, vocab * channels)?;
    check_at_least(op, "dhidden", dhidden.len, hidden.len)?;
    if n_rows == 0 {
        return Ok(());
    }
    let (c, v) = (dim(op, "channels", channels)?, dim(op, "vocab", vocab)?);
    let kernels = backend.kernels();
    let mut scratch = backend.scratch()?;
    let mut block = block_scratch(backend, &mut scratch, head, n_rows, channels, vocab)?;
    // Distinct rows (what a packed batch gives: one row per scored
    // token) are added without atomics, so the result is reproducible;
    // repeated rows need the atomic kernel.
    let mut rows_host = download(backend, rows)?;
    rows_host.truncate(n_rows);
    rows_host.sort_unstable();
    let distinct = rows_host.windows(2).all(|pair| pair[0] != pair[1]);
    let scatter = if distinct { &kernels.add_rows } else { &kernels.scatter_add_rows };
    for first in (0..n_rows).step_by(block.rows) {
        let count = block.rows.min(n_rows - first);
        block_logits(backend, op, &mut block, head, hidden, rows, first, count, channels, vocab)?;
        let BlockScratch { rows_hidden, logits, rows_dhidden, rows_hidden_bf16, logits_bf16, .. } = &mut block;
        let (first32, count32) = (first as u32, count as u32);
        backend.launch(&kernels.logits_grad, elementwise(count * vocab), |args| {
            args.buf_mut(logits).buf(dlogps).buf(targets).buf(lse).value(&first32).value(&count32).value(&v);
        })?;
        round_for(backend, head, logits_bf16, logits, count * vocab)?;
        // dhidden rows = dlogits · W; dW += dlogitsᵀ · hidden rows.
        let to_hidden =
            MatmulSpec { m: count, k: vocab, n: channels, transpose_a: false, transpose_b: false, accumulate: false };
        times_head(backend, rows_dhidden, logits, logits_bf16, head, to_hidden)?;
        let to_head =
            MatmulSpec { m: vocab, k: count, n: channels, transpose_a: true, transpose_b: false, accumulate: true };
        match head {
            Head::F32(_) => gemm(backend, &mut dlm_head.view_mut(), &logits.view(), &rows_hidden.view(), to_head, 1)?,
            Head::Bf16(_) => gemm_bf16(backend, dlm_head, logits_bf16, rows_hidden_bf16, to_head)?,
        }
        backend.launch(scatter, elementwise(count * channels), |args| {
            args.buf_mut(dhidden).buf(rows_dhidden).buf(rows).value(&first32).value(&count32).value(&c);
        })?;
    }
    Ok(())
}
