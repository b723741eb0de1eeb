//! A [`Backend`] wrapper that times every operation: where a training step's
//! time goes, per operation, on any backend (feature `std`).
//!
//! ```
//! # #[cfg(feature = "cpu")] {
//! use sapo_core::backend::Backend;
//! use sapo_core::cpu::CpuBackend;
//! use sapo_core::profile::Profiled;
//! let backend = Profiled::new(CpuBackend::new());
//! let mut x = backend.upload(&[1.0_f32, 2.0])?;
//! backend.scale(&mut x, 2.0)?;
//! let report = backend.report();
//! assert_eq!(report[0].0, "scale");
//! assert_eq!(report[0].2, 1); // one call
//! # }
//! # Ok::<(), sapo_core::cpu::CpuError>(())
//! ```

use std::cell::RefCell;
use std::time::{Duration, Instant};
use std::vec::Vec;

use crate::backend::{Backend, Element, HeadDims, MatmulSpec};
use crate::optim::{AdamWParams, RmspropParams};

/// Wraps a backend and accumulates wall time and calls per operation.
///
/// Times are host wall-clock around each call: exact for the synchronous
/// CPU backend; a GPU backend must synchronise inside its operations for
/// them to mean anything.
#[derive(Debug)]
pub struct Profiled<B> {
    inner: B,
    totals: RefCell<Vec<(&'static str, Duration, u64)>>,
}

impl<B: Backend> Profiled<B> {
    /// Wraps `inner` with empty totals.
    pub fn new(inner: B) -> Self {
        Profiled { inner, totals: RefCell::new(Vec::new()) }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// `(operation, total time, calls)`, slowest first.
    pub fn report(&self) -> Vec<(&'static str, Duration, u64)> {
        let mut rows = self.totals.borrow().clone();
        rows.sort_by_key(|row| core::cmp::Reverse(row.1));
        rows
    }

    /// Forgets the totals so far (e.g. after a warm-up step).
    pub fn reset(&self) {
        self.totals.borrow_mut().clear();
    }

    fn time<R>(&self, op: &'static str, f: impl FnOnce() -> R) -> R {
        let start = Instant::now();
        let result = f();
        let elapsed = start.elapsed();
        let mut totals = self.totals.borrow_mut();
        match totals.iter_mut().find(|row| row.0 == op) {
            Some(row) => {
                row.1 += elapsed;
                row.2 += 1;
            }
            None => totals.push((op, elapsed, 1)),
        }
        result
    }
}

#[allow(clippy::too_many_arguments)]
impl<B: Backend> Backend for Profiled<B> {
    type Buf<T: Element> = B::Buf<T>;
    type Error = B::Error;

    fn zeros<T: Element>(&self, len: usize) -> Result<B::Buf<T>, B::Error> {
        self.inner.zeros::<T>(len)
    }

    fn upload<T: Element>(&self, data: &[T]) -> Result<B::Buf<T>, B::Error> {
        self.inner.upload::<T>(data)
    }

    fn write<T: Element>(&self, buf: &mut B::Buf<T>, data: &[T]) -> Result<(), B::Error> {
        self.inner.write::<T>(buf, data)
    }

    fn download<T: Element>(&self, buf: &B::Buf<T>) -> Result<Vec<T>, B::Error> {
        self.inner.download::<T>(buf)
    }

    fn len<T: Element>(&self, buf: &B::Buf<T>) -> usize {
        self.inner.len::<T>(buf)
    }

    fn fill_zero(&self, buf: &mut B::Buf<f32>) -> Result<(), B::Error> {
        self.time("fill_zero", || self.inner.fill_zero(buf))
    }

    fn copy(&self, dst: &mut B::Buf<f32>, src: &B::Buf<f32>) -> Result<(), B::Error> {
        self.time("copy", || self.inner.copy(dst, src))
    }

    fn matmul(
        &self,
        out: &mut B::Buf<f32>,
        a: &B::Buf<f32>,
        b: &B::Buf<f32>,
        spec: MatmulSpec,
    ) -> Result<(), B::Error> {
        self.time("matmul", || self.inner.matmul(out, a, b, spec))
    }

    fn matmul_batched(
        &self,
        out: &mut B::Buf<f32>,
        a: &B::Buf<f32>,
        b: &B::Buf<f32>,
        spec: MatmulSpec,
        batch: usize,
    ) -> Result<(), B::Error> {
        self.time("matmul_batched", || self.inner.matmul_batched(out, a, b, spec, batch))
    }

    fn matmul_bf16(
        &self,
        out: &mut B::Buf<f32>,
        a: &B::Buf<half::bf16>,
        b: &B::Buf<half::bf16>,
        spec: MatmulSpec,
    ) -> Result<(), B::Error> {
        self.time("matmul_bf16", || self.inner.matmul_bf16(out, a, b, spec))
    }

    fn round_to_bf16(&self, out: &mut B::Buf<half::bf16>, x: &B::Buf<f32>, n: usize) -> Result<(), B::Error> {
        self.time("round_to_bf16", || self.inner.round_to_bf16(out, x, n))
    }

    fn kv_cache_write(
        &self,
        cache: &mut B::Buf<f32>,
        new: &B::Buf<f32>,
        slots: &B::Buf<u32>,
        positions: &B::Buf<u32>,
        n_tokens: usize,
        max_len: usize,
        kv_dim: usize,
    ) -> Result<(), B::Error> {
        self.time("kv_cache_write", || {
            self.inner.kv_cache_write(cache, new, slots, positions, n_tokens, max_len, kv_dim)
        })
    }

    fn attention_cached(
        &self,
        out: &mut B::Buf<f32>,
        q: &B::Buf<f32>,
        k_cache: &B::Buf<f32>,
        v_cache: &B::Buf<f32>,
        slots: &B::Buf<u32>,
        positions: &B::Buf<u32>,
        n_tokens: usize,
        max_len: usize,
        heads: HeadDims,
    ) -> Result<(), B::Error> {
        self.time("attention_cached", || {
            self.inner.attention_cached(out, q, k_cache, v_cache, slots, positions, n_tokens, max_len, heads)
        })
    }

    fn add_bias(&self, out: &mut B::Buf<f32>, bias: &B::Buf<f32>, rows: usize, cols: usize) -> Result<(), B::Error> {
        self.time("add_bias", || self.inner.add_bias(out, bias, rows, cols))
    }

    fn add_bias_backward(
        &self,
        dbias: &mut B::Buf<f32>,
        dout: &B::Buf<f32>,
        rows: usize,
        cols: usize,
    ) -> Result<(), B::Error> {
        self.time("add_bias_backward", || self.inner.add_bias_backward(dbias, dout, rows, cols))
    }

    fn embedding_forward(
        &self,
        out: &mut B::Buf<f32>,
        ids: &B::Buf<u32>,
        table: &B::Buf<f32>,
        n_tokens: usize,
        channels: usize,
    ) -> Result<(), B::Error> {
        self.time("embedding_forward", || self.inner.embedding_forward(out, ids, table, n_tokens, channels))
    }

    fn embedding_backward(
        &self,
        dtable: &mut B::Buf<f32>,
        ids: &B::Buf<u32>,
        dout: &B::Buf<f32>,
        n_tokens: usize,
        channels: usize,
    ) -> Result<(), B::Error> {
        self.time("embedding_backward", || self.inner.embedding_backward(dtable, ids, dout, n_tokens, channels))
    }

    fn rms_norm_forward(
        &self,
        out: &mut B::Buf<f32>,
        rstd: &mut B::Buf<f32>,
        inp: &B::Buf<f32>,
        weight: &B::Buf<f32>,
        rows: usize,
        cols: usize,
        eps: f32,
    ) -> Result<(), B::Error> {
        self.time("rms_norm_forward", || self.inner.rms_norm_forward(out, rstd, inp, weight, rows, cols, eps))
    }

    fn rms_norm_backward(
        &self,
        dinp: &mut B::Buf<f32>,
        dweight: &mut B::Buf<f32>,
        dout: &B::Buf<f32>,
        inp: &B::Buf<f32>,
        weight: &B::Buf<f32>,
        rstd: &B::Buf<f32>,
        rows: usize,
        cols: usize,
    ) -> Result<(), B::Error> {
        self.time("rms_norm_backward", || {
            self.inner.rms_norm_backward(dinp, dweight, dout, inp, weight, rstd, rows, cols)
        })
    }

    fn rope_forward(
        &self,
        x: &mut B::Buf<f32>,
        positions: &B::Buf<u32>,
        n_tokens: usize,
        n_heads: usize,
        head_dim: usize,
        theta: f32,
    ) -> Result<(), B::Error> {
        self.time("rope_forward", || self.inner.rope_forward(x, positions, n_tokens, n_heads, head_dim, theta))
    }

    fn rope_backward(
        &self,
        dx: &mut B::Buf<f32>,
        positions: &B::Buf<u32>,
        n_tokens: usize,
        n_heads: usize,
        head_dim: usize,
        theta: f32,
    ) -> Result<(), B::Error> {
        self.time("rope_backward", || self.inner.rope_backward(dx, positions, n_tokens, n_heads, head_dim, theta))
    }

    fn attention_forward(
        &self,
        out: &mut B::Buf<f32>,
        lse: &mut B::Buf<f32>,
        q: &B::Buf<f32>,
        k: &B::Buf<f32>,
        v: &B::Buf<f32>,
        seq_starts: &B::Buf<u32>,
        n_tokens: usize,
        heads: HeadDims,
    ) -> Result<(), B::Error> {
        self.time("attention_forward", || self.inner.attention_forward(out, lse, q, k, v, seq_starts, n_tokens, heads))
    }

    fn attention_backward(
        &self,
        dq: &mut B::Buf<f32>,
        dk: &mut B::Buf<f32>,
        dv: &mut B::Buf<f32>,
        dout: &B::Buf<f32>,
        q: &B::Buf<f32>,
        k: &B::Buf<f32>,
        v: &B::Buf<f32>,
        out: &B::Buf<f32>,
        lse: &B::Buf<f32>,
        seq_starts: &B::Buf<u32>,
        n_tokens: usize,
        heads: HeadDims,
    ) -> Result<(), B::Error> {
        self.time("attention_backward", || {
            self.inner.attention_backward(dq, dk, dv, dout, q, k, v, out, lse, seq_starts, n_tokens, heads)
        })
    }

    fn swiglu_forward(
        &self,
        out: &mut B::Buf<f32>,
        gate: &B::Buf<f32>,
        up: &B::Buf<f32>,
        n: usize,
    ) -> Result<(), B::Error> {
        self.time("swiglu_forward", || self.inner.swiglu_forward(out, gate, up, n))
    }

    fn swiglu_backward(
        &self,
        dgate: &mut B::Buf<f32>,
        dup: &mut B::Buf<f32>,
        dout: &B::Buf<f32>,
        gate: &B::Buf<f32>,
        up: &B::Buf<f32>,
        n: usize,
    ) -> Result<(), B::Error> {
        self.time("swiglu_backward", || self.inner.swiglu_backward(dgate, dup, dout, gate, up, n))
    }

    fn add(&self, out: &mut B::Buf<f32>, a: &B::Buf<f32>, b: &B::Buf<f32>, n: usize) -> Result<(), B::Error> {
        self.time("add", || self.inner.add(out, a, b, n))
    }

    fn add_assign(&self, acc: &mut B::Buf<f32>, x: &B::Buf<f32>, n: usize) -> Result<(), B::Error> {
        self.time("add_assign", || self.inner.add_assign(acc, x, n))
    }

    fn token_logprobs_forward(
        &self,
        logps: &mut B::Buf<f32>,
        lse: &mut B::Buf<f32>,
        hidden: &B::Buf<f32>,
        lm_head: &B::Buf<f32>,
        rows: &B::Buf<u32>,
        targets: &B::Buf<u32>,
        n_rows: usize,
        channels: usize,
        vocab: usize,
    ) -> Result<(), B::Error> {
        self.time("token_logprobs_forward", || {
            self.inner.token_logprobs_forward(logps, lse, hidden, lm_head, rows, targets, n_rows, channels, vocab)
        })
    }

    fn token_logprobs_backward(
        &self,
        dhidden: &mut B::Buf<f32>,
        dlm_head: &mut B::Buf<f32>,
        dlogps: &B::Buf<f32>,
        hidden: &B::Buf<f32>,
        lm_head: &B::Buf<f32>,
        rows: &B::Buf<u32>,
        targets: &B::Buf<u32>,
        lse: &B::Buf<f32>,
        n_rows: usize,
        channels: usize,
        vocab: usize,
    ) -> Result<(), B::Error> {
        self.time("token_logprobs_backward", || {
            self.inner.token_logprobs_backward(
                dhidden, dlm_head, dlogps, hidden, lm_head, rows, targets, lse, n_rows, channels, vocab,
            )
        })
    }

    fn token_logprobs_forward_bf16(
        &self,
        logps: &mut B::Buf<f32>,
        lse: &mut B::Buf<f32>,
        hidden: &B::Buf<f32>,
        lm_head: &B::Buf<half::bf16>,
        rows: &B::Buf<u32>,
        targets: &B::Buf<u32>,
        n_rows: usize,
        channels: usize,
        vocab: usize,
    ) -> Result<(), B::Error> {
        self.time("token_logprobs_forward_bf16", || {
            self.inner.token_logprobs_forward_bf16(logps, lse, hidden, lm_head, rows, targets, n_rows, channels, vocab)
        })
    }

    fn token_logprobs_backward_bf16(
        &self,
        dhidden: &mut B::Buf<f32>,
        dlm_head: &mut B::Buf<f32>,
        dlogps: &B::Buf<f32>,
        hidden: &B::Buf<f32>,
        lm_head: &B::Buf<half::bf16>,
        rows: &B::Buf<u32>,
        targets: &B::Buf<u32>,
        lse: &B::Buf<f32>,
        n_rows: usize,
        channels: usize,
        vocab: usize,
    ) -> Result<(), B::Error> {
        self.time("token_logprobs_backward_bf16", || {
            self.inner.token_logprobs_backward_bf16(
                dhidden, dlm_head, dlogps, hidden, lm_head, rows, targets, lse, n_rows, channels, vocab,
            )
        })
    }

    fn sequence_logprobs(
        &self,
        sums: &mut B::Buf<f32>,
        means: &mut B::Buf<f32>,
        logps: &B::Buf<f32>,
        row_seqs: &B::Buf<u32>,
        n_rows: usize,
        n_seqs: usize,
    ) -> Result<(), B::Error> {
        self.time("sequence_logprobs", || self.inner.sequence_logprobs(sums, means, logps, row_seqs, n_rows, n_seqs))
    }

    fn sequence_logprobs_backward(
        &self,
        dlogps: &mut B::Buf<f32>,
        dsums: &B::Buf<f32>,
        dmeans: &B::Buf<f32>,
        row_seqs: &B::Buf<u32>,
        n_rows: usize,
        n_seqs: usize,
    ) -> Result<(), B::Error> {
        self.time("sequence_logprobs_backward", || {
            self.inner.sequence_logprobs_backward(dlogps, dsums, dmeans, row_seqs, n_rows, n_seqs)
        })
    }

    fn adamw_step(
        &self,
        params: &mut B::Buf<f32>,
        grads: &B::Buf<f32>,
        exp_avg: &mut B::Buf<f32>,
        exp_avg_sq: &mut B::Buf<f32>,
        step: u64,
        lr: f64,
        hp: &AdamWParams,
    ) -> Result<(), B::Error> {
        self.time("adamw_step", || self.inner.adamw_step(params, grads, exp_avg, exp_avg_sq, step, lr, hp))
    }

    fn rmsprop_step(
        &self,
        params: &mut B::Buf<f32>,
        grads: &B::Buf<f32>,
        square_avg: &mut B::Buf<f32>,
        lr: f64,
        hp: &RmspropParams,
    ) -> Result<(), B::Error> {
        self.time("rmsprop_step", || self.inner.rmsprop_step(params, grads, square_avg, lr, hp))
    }

    fn ema_update(&self, ema: &mut B::Buf<f32>, params: &B::Buf<f32>, decay: f64) -> Result<(), B::Error> {
        self.time("ema_update", || self.inner.ema_update(ema, params, decay))
    }

    fn sum_of_squares(&self, x: &B::Buf<f32>) -> Result<f64, B::Error> {
        self.time("sum_of_squares", || self.inner.sum_of_squares(x))
    }

    fn scale(&self, x: &mut B::Buf<f32>, factor: f32) -> Result<(), B::Error> {
        self.time("scale", || self.inner.scale(x, factor))
    }
}
