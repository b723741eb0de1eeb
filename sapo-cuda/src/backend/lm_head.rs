//! The fused LM head on the device, in f32 or with bf16 products: blocks of
//! rows gathered from the final hidden states, their logits from one matrix
//! product, the log-softmax per row; backward recomputes each block's logits
//! and turns them into `dlogits` in place.

use half::bf16;
use sapo_core::backend::{Backend, MatmulSpec};

use super::{CudaBackend, MAX_LOGITS_PER_BLOCK, Result, Scratch};
use crate::buffer::CudaBuf;
use crate::error::{check_at_least, check_exact, dim};
use crate::matmul;

/// The LM head's weights `[V, C]` and the number format of its products.
#[derive(Clone, Copy)]
pub(super) enum LmHead<'a> {
    /// f32 weights: f32 products (SGEMM, or TF32 where enabled).
    F32(&'a CudaBuf<f32>),
    /// bf16 weights: the hidden rows and `dlogits` are rounded to bf16 and
    /// the products sum in f32 (`Backend::matmul_bf16`).
    Bf16(&'a CudaBuf<bf16>),
}

impl LmHead<'_> {
    fn len(self) -> usize {
        match self {
            LmHead::F32(weights) => weights.len,
            LmHead::Bf16(weights) => weights.len,
        }
    }
}

/// `out (=|+=) op(a) · op(b)` where `b` is the head, in the head's format;
/// `a` must already be rounded into `a_bf16` for a bf16 head.
fn times_head(
    backend: &CudaBackend,
    out: &mut CudaBuf<f32>,
    a: &CudaBuf<f32>,
    a_bf16: &CudaBuf<bf16>,
    head: LmHead<'_>,
    spec: MatmulSpec,
) -> Result {
    match head {
        LmHead::F32(weights) => matmul::gemm(backend, &mut out.view_mut(), &a.view(), &weights.view(), spec, 1),
        LmHead::Bf16(weights) => matmul::gemm_bf16(backend, out, a_bf16, weights, spec),
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
    /// `rows_hidden` and `logits` rounded, for a bf16 head.
    rows_hidden_bf16: &'s mut CudaBuf<bf16>,
    logits_bf16: &'s mut CudaBuf<bf16>,
}

impl CudaBackend {
    /// Rounds the first `n` elements of `x` into `out` where `head` is bf16.
    fn round_for(&self, head: LmHead<'_>, out: &mut CudaBuf<bf16>, x: &CudaBuf<f32>, n: usize) -> Result {
        match head {
            LmHead::F32(_) => Ok(()),
            LmHead::Bf16(_) => self.round_to_bf16(out, x, n),
        }
    }

    /// Rows per block, and the scratch for them.
    fn lm_head_scratch<'s>(
        &self,
        scratch: &'s mut Scratch,
        head: LmHead<'_>,
        n_rows: usize,
        channels: usize,
        vocab: usize,
    ) -> Result<BlockScratch<'s>> {
        let rows = (MAX_LOGITS_PER_BLOCK / vocab.max(1)).clamp(1, n_rows);
        // An f32 head never reads the bf16 buffers: a token allocation.
        let bf16_len = |len: usize| if matches!(head, LmHead::Bf16(_)) { len } else { 1 };
        let Scratch { rows_hidden, logits, rows_dhidden, rows_hidden_bf16, logits_bf16, .. } = scratch;
        Ok(BlockScratch {
            rows,
            rows_hidden: self.grow(rows_hidden, rows * channels)?,
            logits: self.grow(logits, rows * vocab)?,
            rows_dhidden: self.grow(rows_dhidden, rows * channels)?,
            rows_hidden_bf16: self.grow(rows_hidden_bf16, bf16_len(rows * channels))?,
            logits_bf16: self.grow(logits_bf16, bf16_len(rows * vocab))?,
        })
    }

    /// Gathers the hidden states of rows `first..first + count` into the
    /// block's scratch and computes their logits there; a bf16 head's rows
    /// are rounded first (and stay in `rows_hidden_bf16` for backward).
    #[allow(clippy::too_many_arguments)]
    fn block_logits(
        &self,
        op: &'static str,
        block: &mut BlockScratch<'_>,
        head: LmHead<'_>,
        hidden: &CudaBuf<f32>,
        rows: &CudaBuf<u32>,
        first: usize,
        count: usize,
        channels: usize,
        vocab: usize,
    ) -> Result {
        let (c, first32, count32) = (dim(op, "channels", channels)?, first as u32, count as u32);
        let rows_hidden = &mut *block.rows_hidden;
        self.launch(&self.kernels.gather_rows, Self::elementwise(count * channels), |args| {
            args.buf_mut(rows_hidden).buf(hidden).buf(rows).value(&first32).value(&count32).value(&c);
        })?;
        self.round_for(head, block.rows_hidden_bf16, block.rows_hidden, count * channels)?;
        let spec =
            MatmulSpec { m: count, k: channels, n: vocab, transpose_a: false, transpose_b: true, accumulate: false };
        times_head(self, block.logits, block.rows_hidden, block.rows_hidden_bf16, head, spec)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn lm_head_forward(
        &self,
        op: &'static str,
        logps: &mut CudaBuf<f32>,
        lse: &mut CudaBuf<f32>,
        hidden: &CudaBuf<f32>,
        head: LmHead<'_>,
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
        let mut scratch = self.scratch()?;
        let mut block = self.lm_head_scratch(&mut scratch, head, n_rows, channels, vocab)?;
        for first in (0..n_rows).step_by(block.rows) {
            let count = block.rows.min(n_rows - first);
            self.block_logits(op, &mut block, head, hidden, rows, first, count, channels, vocab)?;
            let (first32, count32, logits) = (first as u32, count as u32, &*block.logits);
            self.launch(&self.kernels.logits_lse, Self::per_row(count), |args| {
                args.buf_mut(logps).buf_mut(lse).buf(logits).buf(targets);
                args.value(&first32).value(&count32).value(&v);
            })?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn lm_head_backward(
        &self,
        op: &'static str,
        dhidden: &mut CudaBuf<f32>,
        dlm_head: &mut CudaBuf<f32>,
        dlogps: &CudaBuf<f32>,
        hidden: &CudaBuf<f32>,
        head: LmHead<'_>,
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
        let mut scratch = self.scratch()?;
        let mut block = self.lm_head_scratch(&mut scratch, head, n_rows, channels, vocab)?;
        // Distinct rows (what a packed batch gives: one row per scored
        // token) are added without atomics, so the result is reproducible;
        // repeated rows need the atomic kernel.
        let mut rows_host = self.download(rows)?;
        rows_host.truncate(n_rows);
        rows_host.sort_unstable();
        let distinct = rows_host.windows(2).all(|pair| pair[0] != pair[1]);
        let scatter = if distinct { &self.kernels.add_rows } else { &self.kernels.scatter_add_rows };
        for first in (0..n_rows).step_by(block.rows) {
            let count = block.rows.min(n_rows - first);
            self.block_logits(op, &mut block, head, hidden, rows, first, count, channels, vocab)?;
            let BlockScratch { rows_hidden, logits, rows_dhidden, rows_hidden_bf16, logits_bf16, .. } = &mut block;
            let (first32, count32) = (first as u32, count as u32);
            self.launch(&self.kernels.logits_grad, Self::elementwise(count * vocab), |args| {
                args.buf_mut(logits).buf(dlogps).buf(targets).buf(lse).value(&first32).value(&count32).value(&v);
            })?;
            self.round_for(head, logits_bf16, logits, count * vocab)?;
            // dhidden rows = dlogits · W; dW += dlogitsᵀ · hidden rows.
            let to_hidden = MatmulSpec {
                m: count,
                k: vocab,
                n: channels,
                transpose_a: false,
                transpose_b: false,
                accumulate: false,
            };
            times_head(self, rows_dhidden, logits, logits_bf16, head, to_hidden)?;
            let to_head =
                MatmulSpec { m: vocab, k: count, n: channels, transpose_a: true, transpose_b: false, accumulate: true };
            match head {
                LmHead::F32(_) => {
                    matmul::gemm(self, &mut dlm_head.view_mut(), &logits.view(), &rows_hidden.view(), to_head, 1)?
                }
                LmHead::Bf16(_) => matmul::gemm_bf16(self, dlm_head, logits_bf16, rows_hidden_bf16, to_head)?,
            }
            self.launch(scatter, Self::elementwise(count * channels), |args| {
                args.buf_mut(dhidden).buf(rows_dhidden).buf(rows).value(&first32).value(&count32).value(&c);
            })?;
        }
        Ok(())
    }
}
