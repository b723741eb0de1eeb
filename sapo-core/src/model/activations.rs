//! Buffers a forward pass keeps for the backward pass, and the backward
//! pass's gradient scratch: allocated once for the largest batch and reused
//! every step (untouched memory is slow to fault in; see FACTS.md).

use alloc::vec::Vec;

use super::config::LlamaConfig;
use super::mixed::{Bf16Workspace, Precision};
use crate::backend::Backend;

/// One layer's saved forward values (`T` tokens of capacity); the layer's
/// input lives in [`Activations::residual`].
#[derive(Debug)]
pub struct LayerActivations<B: Backend> {
    /// `input_layernorm` output `[T, C]`.
    pub ln1: B::Buf<f32>,
    /// Reciprocal RMS of `input` `[T]`.
    pub rstd1: B::Buf<f32>,
    /// Queries after RoPE `[T, H·D]`.
    pub q: B::Buf<f32>,
    /// Keys after RoPE `[T, KVH·D]`.
    pub k: B::Buf<f32>,
    /// Values `[T, KVH·D]`.
    pub v: B::Buf<f32>,
    /// Attention output before `o_proj` `[T, H·D]`.
    pub att: B::Buf<f32>,
    /// Attention log-sum-exp `[T, H]`.
    pub lse: B::Buf<f32>,
    /// The residual stream after attention `[T, C]`.
    pub resid_mid: B::Buf<f32>,
    /// `post_attention_layernorm` output `[T, C]`.
    pub ln2: B::Buf<f32>,
    /// Reciprocal RMS of `resid_mid` `[T]`.
    pub rstd2: B::Buf<f32>,
    /// `gate_proj` output `[T, I]`.
    pub gate: B::Buf<f32>,
    /// `up_proj` output `[T, I]`.
    pub up: B::Buf<f32>,
    /// `silu(gate) ⊙ up` `[T, I]`.
    pub act: B::Buf<f32>,
}

impl<B: Backend> LayerActivations<B> {
    /// Buffers for `max_tokens` tokens.
    ///
    /// # Errors
    /// A backend allocation error.
    pub fn new(backend: &B, config: &LlamaConfig, max_tokens: usize) -> Result<Self, B::Error> {
        let t = max_tokens;
        let (c, i, q, kv, h) =
            (config.hidden_size, config.intermediate_size, config.q_dim(), config.kv_dim(), config.num_attention_heads);
        let z = |len: usize| backend.zeros::<f32>(len);
        Ok(LayerActivations {
            ln1: z(t * c)?,
            rstd1: z(t)?,
            q: z(t * q)?,
            k: z(t * kv)?,
            v: z(t * kv)?,
            att: z(t * q)?,
            lse: z(t * h)?,
            resid_mid: z(t * c)?,
            ln2: z(t * c)?,
            rstd2: z(t)?,
            gate: z(t * i)?,
            up: z(t * i)?,
            act: z(t * i)?,
        })
    }
}

/// Everything a forward and backward pass of a batch needs, sized for at
/// most `max_tokens` tokens, `max_rows` scored rows and `max_seqs` sequences.
#[derive(Debug)]
pub struct Activations<B: Backend> {
    /// Token capacity.
    pub max_tokens: usize,
    /// Scored-row capacity.
    pub max_rows: usize,
    /// Sequence capacity.
    pub max_seqs: usize,
    /// The residual stream `[T, C]` entering each layer, then after the
    /// last one (`L + 1` buffers): all recomputation needs to keep.
    pub residual: Vec<B::Buf<f32>>,
    /// Per-layer saved values: one set per layer, or with recomputation a
    /// single workspace shared by all layers.
    pub layers: Vec<LayerActivations<B>>,
    /// The final norm's output `[T, C]` and `rstd` `[T]`.
    pub normed: B::Buf<f32>,
    /// Reciprocal RMS of `output` `[T]`.
    pub rstd_final: B::Buf<f32>,
    /// Row log-probs `[R]`.
    pub logps: B::Buf<f32>,
    /// LM-head log-sum-exp per row `[R]`.
    pub lm_lse: B::Buf<f32>,
    /// Per-sequence summed log-probs `[S]`.
    pub sums: B::Buf<f32>,
    /// Per-sequence mean log-probs `[S]`.
    pub means: B::Buf<f32>,
    pub(crate) scratch: Scratch<B>,
    /// The bf16 workspace when the products run in bf16.
    pub(crate) bf16: Option<Bf16Workspace<B>>,
}

/// Forward temporaries and backward gradients of activations.
#[derive(Debug)]
pub(crate) struct Scratch<B: Backend> {
    pub projected: B::Buf<f32>,
    /// Where a recomputed layer writes its (unneeded) output.
    pub recompute_sink: B::Buf<f32>,
    pub d_resid: B::Buf<f32>,
    pub d_ln: B::Buf<f32>,
    pub d_q: B::Buf<f32>,
    pub d_k: B::Buf<f32>,
    pub d_v: B::Buf<f32>,
    pub d_att: B::Buf<f32>,
    pub d_gate: B::Buf<f32>,
    pub d_up: B::Buf<f32>,
    pub d_act: B::Buf<f32>,
    pub d_logps: B::Buf<f32>,
    pub d_sums: B::Buf<f32>,
    pub d_means: B::Buf<f32>,
}

impl<B: Backend> Activations<B> {
    /// Allocates every buffer for the given capacities, keeping every
    /// layer's values for the backward pass.
    ///
    /// # Errors
    /// A backend allocation error.
    pub fn new(
        backend: &B,
        config: &LlamaConfig,
        max_tokens: usize,
        max_rows: usize,
        max_seqs: usize,
    ) -> Result<Self, B::Error> {
        Self::allocate(backend, config, max_tokens, max_rows, max_seqs, false)
    }

    /// Like [`Activations::new`], but with activation recomputation: only
    /// each layer's input is kept, and the backward pass re-runs each
    /// layer's forward before its backward. Trades about one extra forward
    /// pass for memory: `L` sets of layer values become one.
    ///
    /// # Errors
    /// A backend allocation error.
    pub fn with_recomputation(
        backend: &B,
        config: &LlamaConfig,
        max_tokens: usize,
        max_rows: usize,
        max_seqs: usize,
    ) -> Result<Self, B::Error> {
        Self::allocate(backend, config, max_tokens, max_rows, max_seqs, true)
    }

    /// Sets the number format of the layers' matrix products for the passes
    /// run with these buffers ([`Precision::F32`] when built): `Bf16`
    /// allocates the bf16 workspace (one layer's weights and two activation
    /// operands), `F32` frees it.
    ///
    /// ```
    /// use sapo_core::cpu::CpuBackend;
    /// use sapo_core::model::{Activations, LlamaConfig, Precision};
    /// let config = LlamaConfig { num_hidden_layers: 1, vocab_size: 11, hidden_size: 8, intermediate_size: 12,
    ///     num_attention_heads: 2, num_key_value_heads: 1, head_dim: 4, ..LlamaConfig::smollm2_135m() };
    /// let backend = CpuBackend::new();
    /// let mut acts = Activations::new(&backend, &config, 16, 16, 2)?;
    /// assert_eq!(acts.precision(), Precision::F32);
    /// acts.set_precision(&backend, &config, Precision::Bf16)?;
    /// assert_eq!(acts.precision(), Precision::Bf16);
    /// # Ok::<(), sapo_core::cpu::CpuError>(())
    /// ```
    ///
    /// # Errors
    /// A backend allocation error.
    pub fn set_precision(&mut self, backend: &B, config: &LlamaConfig, precision: Precision) -> Result<(), B::Error> {
        self.bf16 = match precision {
            Precision::F32 => None,
            Precision::Bf16 => Some(Bf16Workspace::new(backend, config, self.max_tokens)?),
        };
        Ok(())
    }

    /// The number format of the layers' matrix products.
    pub fn precision(&self) -> Precision {
        if self.bf16.is_some() { Precision::Bf16 } else { Precision::F32 }
    }

    /// Whether the backward pass recomputes layer values.
    pub fn recomputes(&self) -> bool {
        self.layers.len() + 1 < self.residual.len()
    }

    fn allocate(
        backend: &B,
        config: &LlamaConfig,
        max_tokens: usize,
        max_rows: usize,
        max_seqs: usize,
        recompute: bool,
    ) -> Result<Self, B::Error> {
        let t = max_tokens;
        let (c, i, q, kv) = (config.hidden_size, config.intermediate_size, config.q_dim(), config.kv_dim());
        let z = |len: usize| backend.zeros::<f32>(len);
        let stored_layers = if recompute { 1 } else { config.num_hidden_layers };
        let layers =
            (0..stored_layers).map(|_| LayerActivations::new(backend, config, t)).collect::<Result<Vec<_>, _>>()?;
        let residual = (0..=config.num_hidden_layers).map(|_| z(t * c)).collect::<Result<Vec<_>, _>>()?;
        let scratch = Scratch {
            projected: z(t * c)?,
            recompute_sink: z(if recompute { t * c } else { 0 })?,
            d_resid: z(t * c)?,
            d_ln: z(t * c)?,
            d_q: z(t * q)?,
            d_k: z(t * kv)?,
            d_v: z(t * kv)?,
            d_att: z(t * q)?,
            d_gate: z(t * i)?,
            d_up: z(t * i)?,
            d_act: z(t * i)?,
            d_logps: z(max_rows)?,
            d_sums: z(max_seqs)?,
            d_means: z(max_seqs)?,
        };
        Ok(Activations {
            max_tokens,
            max_rows,
            max_seqs,
            residual,
            layers,
            normed: z(t * c)?,
            rstd_final: z(t)?,
            logps: z(max_rows)?,
            lm_lse: z(max_rows)?,
            sums: z(max_seqs)?,
            means: z(max_seqs)?,
            scratch,
            bf16: None,
        })
    }
}
