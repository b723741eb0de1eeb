//! sapo-core's `Backend` trait on [`CudaBackend`]: every method delegates to
//! its operation's module in [`crate::ops`], which checks the arguments and
//! launches the kernels.

use half::bf16;
use sapo_core::backend::{Backend, Element, HeadDims, MatmulSpec};
use sapo_core::optim::{AdamWParams, RmspropParams};

use crate::buffer::CudaBuf;
use crate::device::CudaBackend;
use crate::error::{CudaError, Result};
use crate::ops::{
    attention, elementwise, embedding, kv_cache, logprob, matmul, matmul_bf16, memory, optim, rms_norm, rope, sequence,
};

impl Backend for CudaBackend {
    type Buf<T: Element> = CudaBuf<T>;
    type Error = CudaError;

    fn zeros<T: Element>(&self, len: usize) -> Result<CudaBuf<T>> {
        memory::zeros(self, len)
    }

    fn upload<T: Element>(&self, data: &[T]) -> Result<CudaBuf<T>> {
        memory::upload(self, data)
    }

    fn write<T: Element>(&self, buf: &mut CudaBuf<T>, data: &[T]) -> Result {
        memory::write(self, buf, data)
    }

    fn download<T: Element>(&self, buf: &CudaBuf<T>) -> Result<Vec<T>> {
        memory::download(self, buf)
    }

    fn len<T: Element>(&self, buf: &CudaBuf<T>) -> usize {
        buf.len()
    }

    fn fill_zero(&self, buf: &mut CudaBuf<f32>) -> Result {
        memory::fill_zero(self, buf)
    }

    fn copy(&self, dst: &mut CudaBuf<f32>, src: &CudaBuf<f32>) -> Result {
        memory::copy(self, dst, src)
    }

    fn matmul(&self, out: &mut CudaBuf<f32>, a: &CudaBuf<f32>, b: &CudaBuf<f32>, spec: MatmulSpec) -> Result {
        matmul::matmul(self, out, a, b, spec)
    }

    fn matmul_batched(
        &self,
        out: &mut CudaBuf<f32>,
        a: &CudaBuf<f32>,
        b: &CudaBuf<f32>,
        spec: MatmulSpec,
        batch: usize,
    ) -> Result {
        matmul::matmul_batched(self, out, a, b, spec, batch)
    }

    fn matmul_bf16(&self, out: &mut CudaBuf<f32>, a: &CudaBuf<bf16>, b: &CudaBuf<bf16>, spec: MatmulSpec) -> Result {
        matmul_bf16::matmul_bf16(self, out, a, b, spec)
    }

    fn round_to_bf16(&self, out: &mut CudaBuf<bf16>, x: &CudaBuf<f32>, n: usize) -> Result {
        matmul_bf16::round_to_bf16(self, out, x, n)
    }

    fn add_bias(&self, out: &mut CudaBuf<f32>, bias: &CudaBuf<f32>, rows: usize, cols: usize) -> Result {
        matmul::add_bias(self, out, bias, rows, cols)
    }

    fn add_bias_backward(&self, dbias: &mut CudaBuf<f32>, dout: &CudaBuf<f32>, rows: usize, cols: usize) -> Result {
        matmul::add_bias_backward(self, dbias, dout, rows, cols)
    }

    fn embedding_forward(
        &self,
        out: &mut CudaBuf<f32>,
        ids: &CudaBuf<u32>,
        table: &CudaBuf<f32>,
        n_tokens: usize,
        channels: usize,
    ) -> Result {
        embedding::embedding_forward(self, out, ids, table, n_tokens, channels)
    }

    fn embedding_backward(
        &self,
        dtable: &mut CudaBuf<f32>,
        ids: &CudaBuf<u32>,
        dout: &CudaBuf<f32>,
        n_tokens: usize,
        channels: usize,
    ) -> Result {
        embedding::embedding_backward(self, dtable, ids, dout, n_tokens, channels)
    }

    fn rms_norm_forward(
        &self,
        out: &mut CudaBuf<f32>,
        rstd: &mut CudaBuf<f32>,
        inp: &CudaBuf<f32>,
        weight: &CudaBuf<f32>,
        rows: usize,
        cols: usize,
        eps: f32,
    ) -> Result {
        rms_norm::rms_norm_forward(self, out, rstd, inp, weight, rows, cols, eps)
    }

    fn rms_norm_backward(
        &self,
        dinp: &mut CudaBuf<f32>,
        dweight: &mut CudaBuf<f32>,
        dout: &CudaBuf<f32>,
        inp: &CudaBuf<f32>,
        weight: &CudaBuf<f32>,
        rstd: &CudaBuf<f32>,
        rows: usize,
        cols: usize,
    ) -> Result {
        rms_norm::rms_norm_backward(self, dinp, dweight, dout, inp, weight, rstd, rows, cols)
    }

    fn rope_forward(
        &self,
        x: &mut CudaBuf<f32>,
        positions: &CudaBuf<u32>,
        n_tokens: usize,
        n_heads: usize,
        head_dim: usize,
        theta: f32,
    ) -> Result {
        rope::rope_forward(self, x, positions, n_tokens, n_heads, head_dim, theta)
    }

    fn rope_backward(
        &self,
        dx: &mut CudaBuf<f32>,
        positions: &CudaBuf<u32>,
        n_tokens: usize,
        n_heads: usize,
        head_dim: usize,
        theta: f32,
    ) -> Result {
        rope::rope_backward(self, dx, positions, n_tokens, n_heads, head_dim, theta)
    }

    fn attention_forward(
        &self,
        out: &mut CudaBuf<f32>,
        lse: &mut CudaBuf<f32>,
        q: &CudaBuf<f32>,
        k: &CudaBuf<f32>,
        v: &CudaBuf<f32>,
        seq_starts: &CudaBuf<u32>,
        n_tokens: usize,
        heads: HeadDims,
    ) -> Result {
        attention::attention_forward(self, out, lse, q, k, v, seq_starts, n_tokens, heads)
    }

    fn attention_backward(
        &self,
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
        attention::attention_backward(self, dq, dk, dv, dout, q, k, v, out, lse, seq_starts, n_tokens, heads)
    }

    fn kv_cache_write(
        &self,
        cache: &mut CudaBuf<f32>,
        new: &CudaBuf<f32>,
        slots: &CudaBuf<u32>,
        positions: &CudaBuf<u32>,
        n_tokens: usize,
        max_len: usize,
        kv_dim: usize,
    ) -> Result {
        kv_cache::kv_cache_write(self, cache, new, slots, positions, n_tokens, max_len, kv_dim)
    }

    fn attention_cached(
        &self,
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
        kv_cache::attention_cached(self, out, q, k_cache, v_cache, slots, positions, n_tokens, max_len, heads)
    }

    fn swiglu_forward(&self, out: &mut CudaBuf<f32>, gate: &CudaBuf<f32>, up: &CudaBuf<f32>, n: usize) -> Result {
        elementwise::swiglu_forward(self, out, gate, up, n)
    }

    fn swiglu_backward(
        &self,
        dgate: &mut CudaBuf<f32>,
        dup: &mut CudaBuf<f32>,
        dout: &CudaBuf<f32>,
        gate: &CudaBuf<f32>,
        up: &CudaBuf<f32>,
        n: usize,
    ) -> Result {
        elementwise::swiglu_backward(self, dgate, dup, dout, gate, up, n)
    }

    fn add(&self, out: &mut CudaBuf<f32>, a: &CudaBuf<f32>, b: &CudaBuf<f32>, n: usize) -> Result {
        elementwise::add(self, out, a, b, n)
    }

    fn add_assign(&self, acc: &mut CudaBuf<f32>, x: &CudaBuf<f32>, n: usize) -> Result {
        elementwise::add_assign(self, acc, x, n)
    }

    fn token_logprobs_forward(
        &self,
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
        logprob::token_logprobs_forward(self, logps, lse, hidden, lm_head, rows, targets, n_rows, channels, vocab)
    }

    fn token_logprobs_backward(
        &self,
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
        logprob::token_logprobs_backward(
            self, dhidden, dlm_head, dlogps, hidden, lm_head, rows, targets, lse, n_rows, channels, vocab,
        )
    }

    fn token_logprobs_forward_bf16(
        &self,
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
        logprob::token_logprobs_forward_bf16(self, logps, lse, hidden, lm_head, rows, targets, n_rows, channels, vocab)
    }

    fn token_logprobs_backward_bf16(
        &self,
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
        logprob::token_logprobs_backward_bf16(
            self, dhidden, dlm_head, dlogps, hidden, lm_head, rows, targets, lse, n_rows, channels, vocab,
        )
    }

    fn sequence_logprobs(
        &self,
        sums: &mut CudaBuf<f32>,
        means: &mut CudaBuf<f32>,
        logps: &CudaBuf<f32>,
        row_seqs: &CudaBuf<u32>,
        n_rows: usize,
        n_seqs: usize,
    ) -> Result {
        sequence::sequence_logprobs(self, sums, means, logps, row_seqs, n_rows, n_seqs)
    }

    fn sequence_logprobs_backward(
        &self,
        dlogps: &mut CudaBuf<f32>,
        dsums: &CudaBuf<f32>,
        dmeans: &CudaBuf<f32>,
        row_seqs: &CudaBuf<u32>,
        n_rows: usize,
        n_seqs: usize,
    ) -> Result {
        sequence::sequence_logprobs_backward(self, dlogps, dsums, dmeans, row_seqs, n_rows, n_seqs)
    }

    fn adamw_step(
        &self,
        params: &mut CudaBuf<f32>,
        grads: &CudaBuf<f32>,
        exp_avg: &mut CudaBuf<f32>,
        exp_avg_sq: &mut CudaBuf<f32>,
        step: u64,
        lr: f64,
        hp: &AdamWParams,
    ) -> Result {
        optim::adamw_step(self, params, grads, exp_avg, exp_avg_sq, step, lr, hp)
    }

    fn rmsprop_step(
        &self,
        params: &mut CudaBuf<f32>,
        grads: &CudaBuf<f32>,
        square_avg: &mut CudaBuf<f32>,
        lr: f64,
        hp: &RmspropParams,
    ) -> Result {
        optim::rmsprop_step(self, params, grads, square_avg, lr, hp)
    }

    fn ema_update(&self, ema: &mut CudaBuf<f32>, params: &CudaBuf<f32>, decay: f64) -> Result {
        optim::ema_update(self, ema, params, decay)
    }

    fn sum_of_squares(&self, x: &CudaBuf<f32>) -> Result<f64> {
        optim::sum_of_squares(self, x)
    }

    fn scale(&self, x: &mut CudaBuf<f32>, factor: f32) -> Result {
        optim::scale(self, x, factor)
    }
}
