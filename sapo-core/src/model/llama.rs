//! The LLaMA-family decoder, forward and backward, written once over
//! [`Backend`].
//!
//! Per layer, with `x` the residual stream (Hugging Face's
//! `LlamaDecoderLayer`):
//!
//! ```text
//! h  = x + o_proj(attention(rope(q_proj(n1)), rope(k_proj(n1)), v_proj(n1)))   n1 = rms_norm(x)
//! x′ = h + down_proj(silu(gate_proj(n2)) ⊙ up_proj(n2))                         n2 = rms_norm(h)
//! ```
//!
//! then a final RMSNorm and the fused LM head, which gives the log-prob of
//! each scored row and their per-sequence sums and means. The backward pass
//! walks the same steps in reverse, accumulating parameter gradients.

use alloc::vec::Vec;

use super::activations::{Activations, LayerActivations};
use super::batch::DeviceBatch;
use super::config::LlamaConfig;
use super::mixed::{Bf16Workspace, HeadRows, Matrix, head_backward, head_forward, project, project_backward};
use super::params::{LayerParams, LlamaParams};
use crate::backend::{Backend, MatmulSpec};

/// Per-sequence log-probs of a batch, downloaded to the host.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SequenceLogprobs {
    /// Summed log-prob of each sequence's scored tokens.
    pub sums: Vec<f32>,
    /// Mean log-prob of each sequence's scored tokens.
    pub means: Vec<f32>,
}

/// `y[rows, out] = x[rows, in] · w[out, in]ᵀ`.
pub(crate) fn linear<B: Backend>(
    backend: &B,
    y: &mut B::Buf<f32>,
    x: &B::Buf<f32>,
    w: &B::Buf<f32>,
    rows: usize,
    d_in: usize,
    d_out: usize,
) -> Result<(), B::Error> {
    let spec = MatmulSpec { m: rows, k: d_in, n: d_out, transpose_a: false, transpose_b: true, accumulate: false };
    backend.matmul(y, x, w, spec)
}

/// Runs the model on `batch`, keeping what backward needs in `acts`, and
/// returns the per-sequence log-probs of the scored rows.
///
/// # Errors
/// A backend error (a batch larger than `acts`' capacity is a length error).
pub fn forward<B: Backend>(
    backend: &B,
    config: &LlamaConfig,
    params: &LlamaParams<B>,
    batch: &DeviceBatch<B>,
    acts: &mut Activations<B>,
) -> Result<SequenceLogprobs, B::Error> {
    let (t, c) = (batch.n_tokens, config.hidden_size);
    let Activations { residual, layers, normed, rstd_final, logps, lm_lse, sums, means, scratch, bf16, .. } = acts;
    backend.embedding_forward(&mut residual[0], &batch.tokens, &params.embed_tokens, t, c)?;
    let tokens = Tokens { n: t, positions: &batch.positions };
    let shared_workspace = layers.len() == 1;
    for (index, weights) in params.layers.iter().enumerate() {
        // Layer `index` reads residual[index] and writes residual[index + 1];
        // with recomputation every layer uses the one workspace.
        let (done, rest) = residual.split_at_mut(index + 1);
        let saved = &mut layers[if shared_workspace { 0 } else { index }];
        let attention = Attention::Packed { seq_starts: &batch.seq_starts };
        layer_forward(
            backend,
            config,
            weights,
            &done[index],
            saved,
            &mut rest[0],
            &mut scratch.projected,
            &tokens,
            attention,
            bf16.as_mut(),
        )?;
    }
    let output = &residual[config.num_hidden_layers];
    backend.rms_norm_forward(normed, rstd_final, output, &params.norm, t, c, config.rms_norm_eps)?;
    let (r, s) = (batch.n_rows, batch.n_seqs);
    let head_rows = HeadRows { hidden: normed, rows: &batch.rows, targets: &batch.targets, n_rows: r };
    head_forward(backend, bf16.as_mut(), config, params, logps, lm_lse, head_rows)?;
    backend.sequence_logprobs(sums, means, logps, &batch.row_seqs, r, s)?;
    let mut sums_host = backend.download(sums)?;
    let mut means_host = backend.download(means)?;
    sums_host.truncate(s);
    means_host.truncate(s);
    Ok(SequenceLogprobs { sums: sums_host, means: means_host })
}

/// The new tokens a layer runs over: how many, and their positions (RoPE).
pub(crate) struct Tokens<'a, B: Backend> {
    pub n: usize,
    pub positions: &'a B::Buf<u32>,
}

/// Where a layer's attention finds its keys and values.
pub(crate) enum Attention<'a, B: Backend> {
    /// A packed training batch: causal attention inside each sequence.
    Packed { seq_starts: &'a B::Buf<u32> },
    /// Generation: the new keys and values join a cache, and each query
    /// attends over its slot's cached positions.
    Cached { keys: &'a mut B::Buf<f32>, values: &'a mut B::Buf<f32>, slots: &'a B::Buf<u32>, max_len: usize },
}

/// One decoder layer from `input` to `output`, keeping its values in `a`.
/// Training and generation share it; only the attention differs. With a
/// `mixed` workspace the products run in bf16 (the layer's weights are
/// rounded into it first).
#[allow(clippy::too_many_arguments)]
pub(crate) fn layer_forward<B: Backend>(
    backend: &B,
    config: &LlamaConfig,
    weights: &LayerParams<B>,
    input: &B::Buf<f32>,
    a: &mut LayerActivations<B>,
    output: &mut B::Buf<f32>,
    projected: &mut B::Buf<f32>,
    tokens: &Tokens<'_, B>,
    attention: Attention<'_, B>,
    mut mixed: Option<&mut Bf16Workspace<B>>,
) -> Result<(), B::Error> {
    let (t, c, i) = (tokens.n, config.hidden_size, config.intermediate_size);
    let (q_dim, kv_dim, eps) = (config.q_dim(), config.kv_dim(), config.rms_norm_eps);
    let (h, kvh, d, theta) =
        (config.num_attention_heads, config.num_key_value_heads, config.head_dim, config.rope_theta);
    if let Some(workspace) = mixed.as_deref_mut() {
        workspace.load_layer(backend, config, weights)?;
    }
    backend.rms_norm_forward(&mut a.ln1, &mut a.rstd1, input, &weights.input_layernorm, t, c, eps)?;
    let qkv = &mut [(&mut a.q, Matrix::Q, q_dim), (&mut a.k, Matrix::K, kv_dim), (&mut a.v, Matrix::V, kv_dim)];
    project(backend, mixed.as_deref_mut(), weights, &a.ln1, t, c, qkv)?;
    if let Some([q_bias, k_bias, v_bias]) = &weights.qkv_bias {
        backend.add_bias(&mut a.q, q_bias, t, q_dim)?;
        backend.add_bias(&mut a.k, k_bias, t, kv_dim)?;
        backend.add_bias(&mut a.v, v_bias, t, kv_dim)?;
    }
    backend.rope_forward(&mut a.q, tokens.positions, t, h, d, theta)?;
    backend.rope_forward(&mut a.k, tokens.positions, t, kvh, d, theta)?;
    match attention {
        Attention::Packed { seq_starts } => {
            backend.attention_forward(&mut a.att, &mut a.lse, &a.q, &a.k, &a.v, seq_starts, t, config.heads())?
        }
        Attention::Cached { keys, values, slots, max_len } => {
            backend.kv_cache_write(keys, &a.k, slots, tokens.positions, t, max_len, kv_dim)?;
            backend.kv_cache_write(values, &a.v, slots, tokens.positions, t, max_len, kv_dim)?;
            backend.attention_cached(
                &mut a.att,
                &a.q,
                keys,
                values,
                slots,
                tokens.positions,
                t,
                max_len,
                config.heads(),
            )?
        }
    }
    project(backend, mixed.as_deref_mut(), weights, &a.att, t, q_dim, &mut [(&mut *projected, Matrix::O, c)])?;
    backend.add(&mut a.resid_mid, input, projected, t * c)?;
    backend.rms_norm_forward(&mut a.ln2, &mut a.rstd2, &a.resid_mid, &weights.post_attention_layernorm, t, c, eps)?;
    let gate_up = &mut [(&mut a.gate, Matrix::Gate, i), (&mut a.up, Matrix::Up, i)];
    project(backend, mixed.as_deref_mut(), weights, &a.ln2, t, c, gate_up)?;
    backend.swiglu_forward(&mut a.act, &a.gate, &a.up, t * i)?;
    project(backend, mixed, weights, &a.act, t, i, &mut [(&mut *projected, Matrix::Down, c)])?;
    backend.add(output, &a.resid_mid, projected, t * c)
}

/// Why [`backward`] was refused.
#[derive(Debug, thiserror::Error)]
pub enum ModelError<E> {
    /// A backend operation failed.
    #[error("backend: {0}")]
    Backend(E),
    /// The objective's gradients do not have one entry per sequence.
    #[error("`{input}` has {got} entries but the batch has {expected} sequences")]
    SequenceCount {
        /// `d_sums` or `d_means`.
        input: &'static str,
        /// Sequences in the batch.
        expected: usize,
        /// Entries given.
        got: usize,
    },
}

impl<E> From<E> for ModelError<E> {
    fn from(error: E) -> Self {
        ModelError::Backend(error)
    }
}

/// Accumulates into `grads` the gradient of a loss whose derivatives with
/// respect to the per-sequence summed and mean log-probs of the last
/// [`forward`] are `d_sums` and `d_means` (from an objective).
///
/// # Errors
/// [`ModelError::SequenceCount`] if `d_sums` or `d_means` does not have one
/// entry per sequence, or a backend error.
#[allow(clippy::too_many_arguments)]
pub fn backward<B: Backend>(
    backend: &B,
    config: &LlamaConfig,
    params: &LlamaParams<B>,
    grads: &mut LlamaParams<B>,
    batch: &DeviceBatch<B>,
    acts: &mut Activations<B>,
    d_sums: &[f32],
    d_means: &[f32],
) -> Result<(), ModelError<B::Error>> {
    let (t, c, r, s) = (batch.n_tokens, config.hidden_size, batch.n_rows, batch.n_seqs);
    for (input, values) in [("d_sums", d_sums), ("d_means", d_means)] {
        if values.len() != s {
            return Err(ModelError::SequenceCount { input, expected: s, got: values.len() });
        }
    }
    let Activations { residual, layers, normed, rstd_final, lm_lse, scratch, bf16, .. } = acts;
    backend.write(&mut scratch.d_sums, d_sums)?;
    backend.write(&mut scratch.d_means, d_means)?;
    backend.fill_zero(&mut scratch.d_logps)?;
    backend.sequence_logprobs_backward(
        &mut scratch.d_logps,
        &scratch.d_sums,
        &scratch.d_means,
        &batch.row_seqs,
        r,
        s,
    )?;
    backend.fill_zero(&mut scratch.d_ln)?;
    let lm_head_grad = match &mut grads.lm_head {
        Some(head) => head,
        None => &mut grads.embed_tokens,
    };
    let head_rows = HeadRows { hidden: normed, rows: &batch.rows, targets: &batch.targets, n_rows: r };
    let (d_ln, d_logps) = (&mut scratch.d_ln, &scratch.d_logps);
    head_backward(backend, bf16.as_mut(), config, params, d_ln, lm_head_grad, d_logps, lm_lse, head_rows)?;
    backend.fill_zero(&mut scratch.d_resid)?;
    backend.rms_norm_backward(
        &mut scratch.d_resid,
        &mut grads.norm,
        &scratch.d_ln,
        &residual[config.num_hidden_layers],
        &params.norm,
        rstd_final,
        t,
        c,
    )?;
    let tokens = Tokens { n: t, positions: &batch.positions };
    let shared_workspace = layers.len() == 1 && config.num_hidden_layers > 1;
    for (index, weights) in params.layers.iter().enumerate().rev() {
        let saved = if shared_workspace {
            // Recompute this layer's values from its kept input.
            let (sink, projected) = (&mut scratch.recompute_sink, &mut scratch.projected);
            let attention = Attention::Packed { seq_starts: &batch.seq_starts };
            layer_forward(
                backend,
                config,
                weights,
                &residual[index],
                &mut layers[0],
                sink,
                projected,
                &tokens,
                attention,
                bf16.as_mut(),
            )?;
            &layers[0]
        } else {
            // The workspace holds the last layer run forward; load this one.
            if let Some(workspace) = bf16.as_mut() {
                workspace.load_layer(backend, config, weights)?;
            }
            &layers[index]
        };
        let layer_grads = &mut grads.layers[index];
        layer_backward(backend, config, weights, layer_grads, batch, &residual[index], saved, scratch, bf16.as_mut())?;
    }
    Ok(backend.embedding_backward(&mut grads.embed_tokens, &batch.tokens, &scratch.d_resid, t, c)?)
}

/// Turns `scratch.d_resid` (gradient at the layer's output) into the
/// gradient at its input, accumulating the layer's parameter gradients. A
/// `mixed` workspace must hold this layer's rounded weights.
#[allow(clippy::too_many_arguments)]
fn layer_backward<B: Backend>(
    backend: &B,
    config: &LlamaConfig,
    weights: &LayerParams<B>,
    grads: &mut LayerParams<B>,
    batch: &DeviceBatch<B>,
    input: &B::Buf<f32>,
    a: &LayerActivations<B>,
    g: &mut super::activations::Scratch<B>,
    mut mixed: Option<&mut Bf16Workspace<B>>,
) -> Result<(), B::Error> {
    let (t, c, i) = (batch.n_tokens, config.hidden_size, config.intermediate_size);
    let (q_dim, kv_dim) = (config.q_dim(), config.kv_dim());
    let (h, kvh, d, theta) =
        (config.num_attention_heads, config.num_key_value_heads, config.head_dim, config.rope_theta);
    // MLP: x′ = h + down(act); the residual passes d_resid through unchanged.
    backend.fill_zero(&mut g.d_act)?;
    let down = &mut [(Matrix::Down, &mut grads.down_proj, &g.d_resid, c)];
    project_backward(backend, mixed.as_deref_mut(), weights, &a.act, t, i, &mut g.d_act, down)?;
    backend.fill_zero(&mut g.d_gate)?;
    backend.fill_zero(&mut g.d_up)?;
    backend.swiglu_backward(&mut g.d_gate, &mut g.d_up, &g.d_act, &a.gate, &a.up, t * i)?;
    backend.fill_zero(&mut g.d_ln)?;
    let gate_up =
        &mut [(Matrix::Gate, &mut grads.gate_proj, &g.d_gate, i), (Matrix::Up, &mut grads.up_proj, &g.d_up, i)];
    project_backward(backend, mixed.as_deref_mut(), weights, &a.ln2, t, c, &mut g.d_ln, gate_up)?;
    backend.rms_norm_backward(
        &mut g.d_resid,
        &mut grads.post_attention_layernorm,
        &g.d_ln,
        &a.resid_mid,
        &weights.post_attention_layernorm,
        &a.rstd2,
        t,
        c,
    )?;
    // Attention: h = x + o_proj(att).
    backend.fill_zero(&mut g.d_att)?;
    let o = &mut [(Matrix::O, &mut grads.o_proj, &g.d_resid, c)];
    project_backward(backend, mixed.as_deref_mut(), weights, &a.att, t, q_dim, &mut g.d_att, o)?;
    backend.fill_zero(&mut g.d_q)?;
    backend.fill_zero(&mut g.d_k)?;
    backend.fill_zero(&mut g.d_v)?;
    backend.attention_backward(
        &mut g.d_q,
        &mut g.d_k,
        &mut g.d_v,
        &g.d_att,
        &a.q,
        &a.k,
        &a.v,
        &a.att,
        &a.lse,
        &batch.seq_starts,
        t,
        config.heads(),
    )?;
    backend.rope_backward(&mut g.d_q, &batch.positions, t, h, d, theta)?;
    backend.rope_backward(&mut g.d_k, &batch.positions, t, kvh, d, theta)?;
    if let (Some([dq_bias, dk_bias, dv_bias]), true) = (&mut grads.qkv_bias, weights.qkv_bias.is_some()) {
        backend.add_bias_backward(dq_bias, &g.d_q, t, q_dim)?;
        backend.add_bias_backward(dk_bias, &g.d_k, t, kv_dim)?;
        backend.add_bias_backward(dv_bias, &g.d_v, t, kv_dim)?;
    }
    backend.fill_zero(&mut g.d_ln)?;
    let qkv = &mut [
        (Matrix::Q, &mut grads.q_proj, &g.d_q, q_dim),
        (Matrix::K, &mut grads.k_proj, &g.d_k, kv_dim),
        (Matrix::V, &mut grads.v_proj, &g.d_v, kv_dim),
    ];
    project_backward(backend, mixed, weights, &a.ln1, t, c, &mut g.d_ln, qkv)?;
    backend.rms_norm_backward(
        &mut g.d_resid,
        &mut grads.input_layernorm,
        &g.d_ln,
        input,
        &weights.input_layernorm,
        &a.rstd1,
        t,
        c,
    )
}
