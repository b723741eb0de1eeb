//! `impl Backend for CpuBackend`: each trait operation checks its buffers'
//! lengths and calls its operation in [`super::ops`], one module per
//! operation (the same names as sapo-cuda's).

use alloc::vec::Vec;

use half::bf16;

use super::*;
use crate::backend::{Backend, Element, HeadDims, MatmulSpec};
use crate::optim::{AdamWParams, RmspropParams};

/// The leading `len` elements of an activation buffer sized for the largest
/// batch.
fn head<'a, T>(op: &'static str, buffer: &'static str, buf: &'a CpuBuffer<T>, len: usize) -> Result<&'a [T], CpuError> {
    buf.0.get(..len).ok_or(CpuError::LengthMismatch { op, buffer, expected: len, got: buf.0.len() })
}

/// [`head`], mutably.
fn head_mut<'a, T>(
    op: &'static str,
    buffer: &'static str,
    buf: &'a mut CpuBuffer<T>,
    len: usize,
) -> Result<&'a mut [T], CpuError> {
    let got = buf.0.len();
    buf.0.get_mut(..len).ok_or(CpuError::LengthMismatch { op, buffer, expected: len, got })
}

fn attention_lens(n_tokens: usize, heads: HeadDims) -> (usize, usize) {
    (n_tokens * heads.n_heads * heads.head_dim, n_tokens * heads.n_kv_heads * heads.head_dim)
}

impl Backend for CpuBackend {
    type Buf<T: Element> = CpuBuffer<T>;
    type Error = CpuError;

    fn zeros<T: Element>(&self, len: usize) -> Result<CpuBuffer<T>, CpuError> {
        Ok(CpuBuffer(alloc::vec![T::default(); len]))
    }

    fn upload<T: Element>(&self, data: &[T]) -> Result<CpuBuffer<T>, CpuError> {
        Ok(CpuBuffer(data.to_vec()))
    }

    fn write<T: Element>(&self, buf: &mut CpuBuffer<T>, data: &[T]) -> Result<(), CpuError> {
        if data.len() > buf.0.len() {
            return Err(CpuError::LengthMismatch {
                op: "write",
                buffer: "data",
                expected: buf.0.len(),
                got: data.len(),
            });
        }
        buf.0[..data.len()].copy_from_slice(data);
        Ok(())
    }

    fn download<T: Element>(&self, buf: &CpuBuffer<T>) -> Result<Vec<T>, CpuError> {
        Ok(buf.0.clone())
    }

    fn len<T: Element>(&self, buf: &CpuBuffer<T>) -> usize {
        buf.0.len()
    }

    fn fill_zero(&self, buf: &mut CpuBuffer<f32>) -> Result<(), CpuError> {
        buf.0.iter_mut().for_each(|x| *x = 0.0);
        Ok(())
    }

    fn copy(&self, dst: &mut CpuBuffer<f32>, src: &CpuBuffer<f32>) -> Result<(), CpuError> {
        error::check_len("copy", "src", src.0.len(), dst.0.len())?;
        dst.0.copy_from_slice(&src.0);
        Ok(())
    }

    fn matmul(
        &self,
        out: &mut CpuBuffer<f32>,
        a: &CpuBuffer<f32>,
        b: &CpuBuffer<f32>,
        spec: MatmulSpec,
    ) -> Result<(), CpuError> {
        const OP: &str = "matmul";
        let a = head(OP, "a", a, spec.a_len())?;
        let b = head(OP, "b", b, spec.b_len())?;
        ops::matmul(head_mut(OP, "out", out, spec.out_len())?, a, b, spec)
    }

    fn matmul_batched(
        &self,
        out: &mut CpuBuffer<f32>,
        a: &CpuBuffer<f32>,
        b: &CpuBuffer<f32>,
        spec: MatmulSpec,
        batch: usize,
    ) -> Result<(), CpuError> {
        const OP: &str = "matmul_batched";
        let a = head(OP, "a", a, batch * spec.a_len())?;
        let b = head(OP, "b", b, batch * spec.b_len())?;
        let out = head_mut(OP, "out", out, batch * spec.out_len())?;
        for index in 0..batch {
            let (a, b) = (&a[index * spec.a_len()..][..spec.a_len()], &b[index * spec.b_len()..][..spec.b_len()]);
            ops::matmul(&mut out[index * spec.out_len()..][..spec.out_len()], a, b, spec)?;
        }
        Ok(())
    }

    fn matmul_bf16(
        &self,
        out: &mut CpuBuffer<f32>,
        a: &CpuBuffer<bf16>,
        b: &CpuBuffer<bf16>,
        spec: MatmulSpec,
    ) -> Result<(), CpuError> {
        const OP: &str = "matmul_bf16";
        let (a, b) = (head(OP, "a", a, spec.a_len())?, head(OP, "b", b, spec.b_len())?);
        ops::matmul_bf16(head_mut(OP, "out", out, spec.out_len())?, a, b, spec)
    }

    fn round_to_bf16(&self, out: &mut CpuBuffer<bf16>, x: &CpuBuffer<f32>, n: usize) -> Result<(), CpuError> {
        const OP: &str = "round_to_bf16";
        let x = head(OP, "x", x, n)?;
        matmul_bf16::round_to_bf16(head_mut(OP, "out", out, n)?, x);
        Ok(())
    }

    fn add_bias(
        &self,
        out: &mut CpuBuffer<f32>,
        bias: &CpuBuffer<f32>,
        rows: usize,
        cols: usize,
    ) -> Result<(), CpuError> {
        ops::add_bias(head_mut("add_bias", "out", out, rows * cols)?, &bias.0, rows, cols)
    }

    fn add_bias_backward(
        &self,
        dbias: &mut CpuBuffer<f32>,
        dout: &CpuBuffer<f32>,
        rows: usize,
        cols: usize,
    ) -> Result<(), CpuError> {
        ops::add_bias_backward(&mut dbias.0, head("add_bias_backward", "dout", dout, rows * cols)?, rows, cols)
    }

    fn embedding_forward(
        &self,
        out: &mut CpuBuffer<f32>,
        ids: &CpuBuffer<u32>,
        table: &CpuBuffer<f32>,
        n_tokens: usize,
        channels: usize,
    ) -> Result<(), CpuError> {
        const OP: &str = "embedding_forward";
        let ids = head(OP, "ids", ids, n_tokens)?;
        ops::embedding_forward(head_mut(OP, "out", out, n_tokens * channels)?, ids, &table.0, channels)
    }

    fn embedding_backward(
        &self,
        dtable: &mut CpuBuffer<f32>,
        ids: &CpuBuffer<u32>,
        dout: &CpuBuffer<f32>,
        n_tokens: usize,
        channels: usize,
    ) -> Result<(), CpuError> {
        const OP: &str = "embedding_backward";
        let ids = head(OP, "ids", ids, n_tokens)?;
        ops::embedding_backward(&mut dtable.0, ids, head(OP, "dout", dout, n_tokens * channels)?, channels)
    }

    fn rms_norm_forward(
        &self,
        out: &mut CpuBuffer<f32>,
        rstd: &mut CpuBuffer<f32>,
        inp: &CpuBuffer<f32>,
        weight: &CpuBuffer<f32>,
        rows: usize,
        cols: usize,
        eps: f32,
    ) -> Result<(), CpuError> {
        const OP: &str = "rms_norm_forward";
        let inp = head(OP, "inp", inp, rows * cols)?;
        let out = head_mut(OP, "out", out, rows * cols)?;
        ops::rms_norm_forward(out, head_mut(OP, "rstd", rstd, rows)?, inp, &weight.0, rows, cols, eps)
    }

    fn rms_norm_backward(
        &self,
        dinp: &mut CpuBuffer<f32>,
        dweight: &mut CpuBuffer<f32>,
        dout: &CpuBuffer<f32>,
        inp: &CpuBuffer<f32>,
        weight: &CpuBuffer<f32>,
        rstd: &CpuBuffer<f32>,
        rows: usize,
        cols: usize,
    ) -> Result<(), CpuError> {
        const OP: &str = "rms_norm_backward";
        let (n, dinp) = (rows * cols, head_mut(OP, "dinp", dinp, rows * cols)?);
        let (dout, inp, rstd) = (head(OP, "dout", dout, n)?, head(OP, "inp", inp, n)?, head(OP, "rstd", rstd, rows)?);
        ops::rms_norm_backward(dinp, &mut dweight.0, dout, inp, &weight.0, rstd, rows, cols)
    }

    fn rope_forward(
        &self,
        x: &mut CpuBuffer<f32>,
        positions: &CpuBuffer<u32>,
        n_tokens: usize,
        n_heads: usize,
        head_dim: usize,
        theta: f32,
    ) -> Result<(), CpuError> {
        let positions = head("rope_forward", "positions", positions, n_tokens)?;
        let x = head_mut("rope_forward", "x", x, n_tokens * n_heads * head_dim)?;
        ops::rope_forward(x, positions, n_heads, head_dim, f64::from(theta))
    }

    fn rope_backward(
        &self,
        dx: &mut CpuBuffer<f32>,
        positions: &CpuBuffer<u32>,
        n_tokens: usize,
        n_heads: usize,
        head_dim: usize,
        theta: f32,
    ) -> Result<(), CpuError> {
        let positions = head("rope_backward", "positions", positions, n_tokens)?;
        let dx = head_mut("rope_backward", "dx", dx, n_tokens * n_heads * head_dim)?;
        ops::rope_backward(dx, positions, n_heads, head_dim, f64::from(theta))
    }

    fn attention_forward(
        &self,
        out: &mut CpuBuffer<f32>,
        lse: &mut CpuBuffer<f32>,
        q: &CpuBuffer<f32>,
        k: &CpuBuffer<f32>,
        v: &CpuBuffer<f32>,
        seq_starts: &CpuBuffer<u32>,
        n_tokens: usize,
        heads: HeadDims,
    ) -> Result<(), CpuError> {
        const OP: &str = "attention_forward";
        let (query_len, kv_len) = attention_lens(n_tokens, heads);
        let (q, k, v) = (head(OP, "q", q, query_len)?, head(OP, "k", k, kv_len)?, head(OP, "v", v, kv_len)?);
        let out = head_mut(OP, "out", out, query_len)?;
        let lse = head_mut(OP, "lse", lse, n_tokens * heads.n_heads)?;
        ops::attention_forward(out, lse, q, k, v, &seq_starts.0, n_tokens, heads)
    }

    fn attention_backward(
        &self,
        dq: &mut CpuBuffer<f32>,
        dk: &mut CpuBuffer<f32>,
        dv: &mut CpuBuffer<f32>,
        dout: &CpuBuffer<f32>,
        q: &CpuBuffer<f32>,
        k: &CpuBuffer<f32>,
        v: &CpuBuffer<f32>,
        out: &CpuBuffer<f32>,
        lse: &CpuBuffer<f32>,
        seq_starts: &CpuBuffer<u32>,
        n_tokens: usize,
        heads: HeadDims,
    ) -> Result<(), CpuError> {
        const OP: &str = "attention_backward";
        let (query_len, kv_len) = attention_lens(n_tokens, heads);
        let (q, k, v) = (head(OP, "q", q, query_len)?, head(OP, "k", k, kv_len)?, head(OP, "v", v, kv_len)?);
        let (dout, out) = (head(OP, "dout", dout, query_len)?, head(OP, "out", out, query_len)?);
        let lse = head(OP, "lse", lse, n_tokens * heads.n_heads)?;
        let (dq, dk) = (head_mut(OP, "dq", dq, query_len)?, head_mut(OP, "dk", dk, kv_len)?);
        let dv = head_mut(OP, "dv", dv, kv_len)?;
        ops::attention_backward(dq, dk, dv, dout, q, k, v, out, lse, &seq_starts.0, n_tokens, heads)
    }

    fn kv_cache_write(
        &self,
        cache: &mut CpuBuffer<f32>,
        new: &CpuBuffer<f32>,
        slots: &CpuBuffer<u32>,
        positions: &CpuBuffer<u32>,
        n_tokens: usize,
        max_len: usize,
        kv_dim: usize,
    ) -> Result<(), CpuError> {
        const OP: &str = "kv_cache_write";
        let (slots, positions) = (head(OP, "slots", slots, n_tokens)?, head(OP, "positions", positions, n_tokens)?);
        ops::kv_cache_write(&mut cache.0, head(OP, "new", new, n_tokens * kv_dim)?, slots, positions, max_len, kv_dim)
    }

    fn attention_cached(
        &self,
        out: &mut CpuBuffer<f32>,
        q: &CpuBuffer<f32>,
        k_cache: &CpuBuffer<f32>,
        v_cache: &CpuBuffer<f32>,
        slots: &CpuBuffer<u32>,
        positions: &CpuBuffer<u32>,
        n_tokens: usize,
        max_len: usize,
        heads: HeadDims,
    ) -> Result<(), CpuError> {
        const OP: &str = "attention_cached";
        let query_len = n_tokens * heads.n_heads * heads.head_dim;
        let (slots, positions) = (head(OP, "slots", slots, n_tokens)?, head(OP, "positions", positions, n_tokens)?);
        let (q, out) = (head(OP, "q", q, query_len)?, head_mut(OP, "out", out, query_len)?);
        ops::attention_cached(out, q, &k_cache.0, &v_cache.0, slots, positions, max_len, heads)
    }

    fn swiglu_forward(
        &self,
        out: &mut CpuBuffer<f32>,
        gate: &CpuBuffer<f32>,
        up: &CpuBuffer<f32>,
        n: usize,
    ) -> Result<(), CpuError> {
        const OP: &str = "swiglu_forward";
        ops::swiglu_forward(head_mut(OP, "out", out, n)?, head(OP, "gate", gate, n)?, head(OP, "up", up, n)?)
    }

    fn swiglu_backward(
        &self,
        dgate: &mut CpuBuffer<f32>,
        dup: &mut CpuBuffer<f32>,
        dout: &CpuBuffer<f32>,
        gate: &CpuBuffer<f32>,
        up: &CpuBuffer<f32>,
        n: usize,
    ) -> Result<(), CpuError> {
        const OP: &str = "swiglu_backward";
        let (dout, gate, up) = (head(OP, "dout", dout, n)?, head(OP, "gate", gate, n)?, head(OP, "up", up, n)?);
        ops::swiglu_backward(head_mut(OP, "dgate", dgate, n)?, head_mut(OP, "dup", dup, n)?, dout, gate, up)
    }

    fn add(&self, out: &mut CpuBuffer<f32>, a: &CpuBuffer<f32>, b: &CpuBuffer<f32>, n: usize) -> Result<(), CpuError> {
        ops::add(head_mut("add", "out", out, n)?, head("add", "a", a, n)?, head("add", "b", b, n)?)
    }

    fn add_assign(&self, acc: &mut CpuBuffer<f32>, x: &CpuBuffer<f32>, n: usize) -> Result<(), CpuError> {
        ops::add_assign(head_mut("add_assign", "acc", acc, n)?, head("add_assign", "x", x, n)?)
    }

    fn token_logprobs_forward(
        &self,
        logps: &mut CpuBuffer<f32>,
        lse: &mut CpuBuffer<f32>,
        hidden: &CpuBuffer<f32>,
        lm_head: &CpuBuffer<f32>,
        rows: &CpuBuffer<u32>,
        targets: &CpuBuffer<u32>,
        n_rows: usize,
        channels: usize,
        vocab: usize,
    ) -> Result<(), CpuError> {
        const OP: &str = "token_logprobs_forward";
        let (rows, targets) = (head(OP, "rows", rows, n_rows)?, head(OP, "targets", targets, n_rows)?);
        let (logps, lse) = (head_mut(OP, "logps", logps, n_rows)?, head_mut(OP, "lse", lse, n_rows)?);
        let hidden = &hidden.0; // whole [tokens, C] rows; the op bounds-checks each row
        let mut scratch = self.logprob_scratch.borrow_mut();
        ops::token_logprobs_forward(logps, lse, hidden, &lm_head.0, rows, targets, channels, vocab, &mut scratch)
    }

    fn token_logprobs_backward(
        &self,
        dhidden: &mut CpuBuffer<f32>,
        dlm_head: &mut CpuBuffer<f32>,
        dlogps: &CpuBuffer<f32>,
        hidden: &CpuBuffer<f32>,
        lm_head: &CpuBuffer<f32>,
        rows: &CpuBuffer<u32>,
        targets: &CpuBuffer<u32>,
        lse: &CpuBuffer<f32>,
        n_rows: usize,
        channels: usize,
        vocab: usize,
    ) -> Result<(), CpuError> {
        const OP: &str = "token_logprobs_backward";
        let (rows, targets) = (head(OP, "rows", rows, n_rows)?, head(OP, "targets", targets, n_rows)?);
        let (dlogps, lse) = (head(OP, "dlogps", dlogps, n_rows)?, head(OP, "lse", lse, n_rows)?);
        let hidden = &hidden.0; // whole [tokens, C] rows; the op bounds-checks each row
        let dhidden = head_mut(OP, "dhidden", dhidden, hidden.len())?;
        let mut scratch = self.logprob_scratch.borrow_mut();
        ops::token_logprobs_backward(
            dhidden,
            &mut dlm_head.0,
            dlogps,
            hidden,
            &lm_head.0,
            rows,
            targets,
            lse,
            channels,
            vocab,
            &mut scratch,
        )
    }

    fn token_logprobs_forward_bf16(
        &self,
        logps: &mut CpuBuffer<f32>,
        lse: &mut CpuBuffer<f32>,
        hidden: &CpuBuffer<f32>,
        lm_head: &CpuBuffer<bf16>,
        rows: &CpuBuffer<u32>,
        targets: &CpuBuffer<u32>,
        n_rows: usize,
        channels: usize,
        vocab: usize,
    ) -> Result<(), CpuError> {
        const OP: &str = "token_logprobs_forward_bf16";
        let (rows, targets) = (head(OP, "rows", rows, n_rows)?, head(OP, "targets", targets, n_rows)?);
        let (logps, lse) = (head_mut(OP, "logps", logps, n_rows)?, head_mut(OP, "lse", lse, n_rows)?);
        let hidden = &hidden.0; // whole [tokens, C] rows; the op bounds-checks each row
        let mut scratch = self.logprob_scratch.borrow_mut();
        ops::token_logprobs_forward_bf16(logps, lse, hidden, &lm_head.0, rows, targets, channels, vocab, &mut scratch)
    }

    fn token_logprobs_backward_bf16(
        &self,
        dhidden: &mut CpuBuffer<f32>,
        dlm_head: &mut CpuBuffer<f32>,
        dlogps: &CpuBuffer<f32>,
        hidden: &CpuBuffer<f32>,
        lm_head: &CpuBuffer<bf16>,
        rows: &CpuBuffer<u32>,
        targets: &CpuBuffer<u32>,
        lse: &CpuBuffer<f32>,
        n_rows: usize,
        channels: usize,
        vocab: usize,
    ) -> Result<(), CpuError> {
        const OP: &str = "token_logprobs_backward_bf16";
        let (rows, targets) = (head(OP, "rows", rows, n_rows)?, head(OP, "targets", targets, n_rows)?);
        let (dlogps, lse) = (head(OP, "dlogps", dlogps, n_rows)?, head(OP, "lse", lse, n_rows)?);
        let hidden = &hidden.0; // whole [tokens, C] rows; the op bounds-checks each row
        let dhidden = head_mut(OP, "dhidden", dhidden, hidden.len())?;
        let mut scratch = self.logprob_scratch.borrow_mut();
        ops::token_logprobs_backward_bf16(
            dhidden,
            &mut dlm_head.0,
            dlogps,
            hidden,
            &lm_head.0,
            rows,
            targets,
            lse,
            channels,
            vocab,
            &mut scratch,
        )
    }

    fn sequence_logprobs(
        &self,
        sums: &mut CpuBuffer<f32>,
        means: &mut CpuBuffer<f32>,
        logps: &CpuBuffer<f32>,
        row_seqs: &CpuBuffer<u32>,
        n_rows: usize,
        n_seqs: usize,
    ) -> Result<(), CpuError> {
        const OP: &str = "sequence_logprobs";
        let (logps, row_seqs) = (head(OP, "logps", logps, n_rows)?, head(OP, "row_seqs", row_seqs, n_rows)?);
        ops::sequence_logprobs(
            head_mut(OP, "sums", sums, n_seqs)?,
            head_mut(OP, "means", means, n_seqs)?,
            logps,
            row_seqs,
        )
    }

    fn sequence_logprobs_backward(
        &self,
        dlogps: &mut CpuBuffer<f32>,
        dsums: &CpuBuffer<f32>,
        dmeans: &CpuBuffer<f32>,
        row_seqs: &CpuBuffer<u32>,
        n_rows: usize,
        n_seqs: usize,
    ) -> Result<(), CpuError> {
        const OP: &str = "sequence_logprobs_backward";
        let (dsums, dmeans) = (head(OP, "dsums", dsums, n_seqs)?, head(OP, "dmeans", dmeans, n_seqs)?);
        let row_seqs = head(OP, "row_seqs", row_seqs, n_rows)?;
        ops::sequence_logprobs_backward(head_mut(OP, "dlogps", dlogps, n_rows)?, dsums, dmeans, row_seqs)
    }

    fn adamw_step(
        &self,
        params: &mut CpuBuffer<f32>,
        grads: &CpuBuffer<f32>,
        exp_avg: &mut CpuBuffer<f32>,
        exp_avg_sq: &mut CpuBuffer<f32>,
        step: u64,
        lr: f64,
        hp: &AdamWParams,
    ) -> Result<(), CpuError> {
        // Elementwise, so chunks update independently (across threads with
        // feature `fast`); the result is the same bits either way.
        const OP: &str = "adamw_step";
        let n = params.0.len();
        error::check_len(OP, "grads", grads.0.len(), n)?;
        error::check_len(OP, "exp_avg", exp_avg.0.len(), n)?;
        error::check_len(OP, "exp_avg_sq", exp_avg_sq.0.len(), n)?;
        crate::optim::AdamWStep::new(step, lr, hp)?; // refuse bad hyper-parameters before touching anything
        let chunk = par::CHUNK;
        #[allow(unused_imports)]
        use par::prelude::*;
        par::chunks_mut!(params.0.as_mut_slice(), chunk)
            .zip(par::chunks!(grads.0.as_slice(), chunk))
            .zip(par::chunks_mut!(exp_avg.0.as_mut_slice(), chunk))
            .zip(par::chunks_mut!(exp_avg_sq.0.as_mut_slice(), chunk))
            .try_for_each(|(((p, g), m), v)| crate::optim::adamw_update(p, g, m, v, step, lr, hp))?;
        Ok(())
    }

    fn rmsprop_step(
        &self,
        params: &mut CpuBuffer<f32>,
        grads: &CpuBuffer<f32>,
        square_avg: &mut CpuBuffer<f32>,
        lr: f64,
        hp: &RmspropParams,
    ) -> Result<(), CpuError> {
        // Without momentum or centring the update is elementwise, so chunks
        // update independently (across threads with feature `fast`), with
        // the same bits as one pass; the whole-slice call checks everything
        // first (lengths, hyper-parameters) so a bad call writes nothing.
        const OP: &str = "rmsprop_step";
        let n = params.0.len();
        error::check_len(OP, "grads", grads.0.len(), n)?;
        error::check_len(OP, "square_avg", square_avg.0.len(), n)?;
        crate::optim::RmspropStep::new(lr, hp)?;
        if hp.momentum != 0.0 || hp.centered {
            let state =
                crate::optim::RmspropState { square_avg: &mut square_avg.0, grad_avg: None, momentum_buffer: None };
            return Ok(crate::optim::rmsprop_update(&mut params.0, &grads.0, state, lr, hp)?);
        }
        let chunk = par::CHUNK;
        #[allow(unused_imports)]
        use par::prelude::*;
        par::chunks_mut!(params.0.as_mut_slice(), chunk)
            .zip(par::chunks!(grads.0.as_slice(), chunk))
            .zip(par::chunks_mut!(square_avg.0.as_mut_slice(), chunk))
            .try_for_each(|((p, g), v)| {
                let state = crate::optim::RmspropState { square_avg: v, grad_avg: None, momentum_buffer: None };
                crate::optim::rmsprop_update(p, g, state, lr, hp)
            })?;
        Ok(())
    }

    fn ema_update(&self, ema: &mut CpuBuffer<f32>, params: &CpuBuffer<f32>, decay: f64) -> Result<(), CpuError> {
        // Checked whole first (nothing written on error), then elementwise by chunks.
        if !(0.0..=1.0).contains(&decay) {
            return Err(crate::ema::EmaError::InvalidDecay(decay).into());
        }
        error::check_len("ema_update", "params", params.0.len(), ema.0.len())?;
        let chunk = par::CHUNK;
        #[allow(unused_imports)]
        use par::prelude::*;
        par::chunks_mut!(ema.0.as_mut_slice(), chunk)
            .zip(par::chunks!(params.0.as_slice(), chunk))
            .try_for_each(|(e, p)| crate::ema::ema_update(e, p, decay))?;
        Ok(())
    }

    fn sum_of_squares(&self, x: &CpuBuffer<f32>) -> Result<f64, CpuError> {
        // One f64 partial sum per fixed-size chunk (across threads with
        // feature `fast`), each kept in 8 lanes so the adds pipeline instead
        // of waiting on one another, then the partials added in chunk order:
        // the same bits whatever the thread count. A single running sum took
        // 0.2 s over SmolLM2's 135 M gradients, most of gradient clipping.
        fn partial(chunk: &[f32]) -> f64 {
            let mut lanes = [0.0_f64; 8];
            let mut groups = chunk.chunks_exact(8);
            for group in &mut groups {
                lanes.iter_mut().zip(group).for_each(|(lane, &v)| *lane += f64::from(v) * f64::from(v));
            }
            lanes.iter_mut().zip(groups.remainder()).for_each(|(lane, &v)| *lane += f64::from(v) * f64::from(v));
            lanes.iter().sum()
        }
        #[allow(unused_imports)]
        use par::prelude::*;
        let partials: Vec<f64> = par::chunks!(x.0.as_slice(), par::CHUNK).map(partial).collect();
        Ok(partials.iter().sum())
    }

    fn scale(&self, x: &mut CpuBuffer<f32>, factor: f32) -> Result<(), CpuError> {
        #[allow(unused_imports)]
        use par::prelude::*;
        par::chunks_mut!(x.0.as_mut_slice(), par::CHUNK).for_each(|chunk| chunk.iter_mut().for_each(|v| *v *= factor));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{assert_close, random_vec};
    use super::*;
    use alloc::vec;

    #[test]
    fn batched_matmul_is_each_product_in_turn() {
        let backend = CpuBackend::new();
        let spec = MatmulSpec { m: 5, k: 7, n: 3, transpose_a: true, transpose_b: false, accumulate: false };
        let (a, b) = (random_vec::<f32>(1, 4 * spec.a_len()), random_vec::<f32>(2, 4 * spec.b_len()));
        let mut out = backend.zeros::<f32>(4 * spec.out_len()).expect("alloc");
        let (a_buf, b_buf) = (backend.upload(&a).expect("upload"), backend.upload(&b).expect("upload"));
        backend.matmul_batched(&mut out, &a_buf, &b_buf, spec, 4).expect("shapes match");
        for index in 0..4 {
            let mut expected = vec![0.0_f32; spec.out_len()];
            let a = &a[index * spec.a_len()..][..spec.a_len()];
            ops::matmul_reference(&mut expected, a, &b[index * spec.b_len()..][..spec.b_len()], spec).expect("shapes");
            assert_close(&out.as_slice()[index * spec.out_len()..][..spec.out_len()], &expected, 1e-6, "batched");
        }
    }

    #[test]
    fn sum_of_squares_matches_a_running_sum_across_chunks_and_remainders() {
        // Three chunks and a ragged tail, values of mixed magnitude.
        let backend = CpuBackend::new();
        let values: Vec<f32> =
            random_vec::<f32>(5, 3 * par::CHUNK + 13).iter().enumerate().map(|(i, v)| v * (1 + i % 7) as f32).collect();
        let running: f64 = values.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        let x = backend.upload(&values).expect("upload");
        let total = backend.sum_of_squares(&x).expect("sum");
        assert!((total - running).abs() <= 1e-12 * running, "{total} against {running}");
        assert_eq!(total.to_bits(), backend.sum_of_squares(&x).expect("sum").to_bits(), "same bits again");
    }
}
