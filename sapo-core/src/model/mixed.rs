//! bf16 mixed precision for the decoder layers' matrix products.
//!
//! In [`Precision::Bf16`] every matrix product of the model (the seven
//! projections of each decoder layer and the LM head, forward and backward)
//! reads bf16 operands and sums in f32 ([`Backend::matmul_bf16`],
//! [`Backend::token_logprobs_forward_bf16`]): the weights and the activations
//! and gradients that feed the products are rounded to bf16, which is what
//! lets a GPU use its bf16 tensor cores. Everything else stays f32: the
//! weights the optimizer updates (the master weights), the optimizer state
//! and the EMA, the products' outputs (the logits included) and every
//! gradient, RMSNorm, RoPE, attention, SwiGLU, the log-softmax, and every
//! reduction.
//!
//! Each layer's weights are rounded just before the layer runs (before its
//! forward, and again before its backward) into one layer-sized workspace,
//! and the LM head's just before it runs, into a buffer of its own. So a
//! bf16 copy can never be stale after an optimizer, EMA or reference update,
//! and it costs one layer's and the LM head's bf16 weights of memory, not
//! the whole model's; the price is reading those f32 weights once more per
//! pass, which is small beside the products themselves. An activation is
//! rounded into a scratch buffer just before the products that read it.

use alloc::vec::Vec;

use half::bf16;

use super::config::LlamaConfig;
use super::params::{LayerParams, LlamaParams};
use crate::backend::{Backend, MatmulSpec};

/// The number format of the decoder layers' matrix products.
///
/// ```
/// use sapo_core::model::Precision;
/// assert_eq!(Precision::default(), Precision::F32);
/// assert_eq!(Precision::Bf16.name(), "bf16");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32: the reference-comparable mode.
    #[default]
    F32,
    /// bf16 operands with f32 sums for every matrix product (the layers' and
    /// the LM head's); f32 master
    /// weights, optimizer state and everything else (see the module docs).
    Bf16,
}

impl Precision {
    /// The name used in configs and reports: `f32` or `bf16`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}

/// One of a decoder layer's seven weight matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Matrix {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Matrix {
    const ALL: [Matrix; 7] = [Matrix::Q, Matrix::K, Matrix::V, Matrix::O, Matrix::Gate, Matrix::Up, Matrix::Down];

    /// The f32 (master) weights of this matrix in `layer`.
    pub(crate) fn of<B: Backend>(self, layer: &LayerParams<B>) -> &B::Buf<f32> {
        match self {
            Matrix::Q => &layer.q_proj,
            Matrix::K => &layer.k_proj,
            Matrix::V => &layer.v_proj,
            Matrix::O => &layer.o_proj,
            Matrix::Gate => &layer.gate_proj,
            Matrix::Up => &layer.up_proj,
            Matrix::Down => &layer.down_proj,
        }
    }

    fn len(self, config: &LlamaConfig) -> usize {
        let (c, i) = (config.hidden_size, config.intermediate_size);
        match self {
            Matrix::Q | Matrix::O => config.q_dim() * c,
            Matrix::K | Matrix::V => config.kv_dim() * c,
            Matrix::Gate | Matrix::Up | Matrix::Down => i * c,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The bf16 buffers of mixed precision: one layer's rounded weights, the LM
/// head's, and scratch for the rounded activation and activation gradient a
/// product reads.
#[derive(Debug)]
pub(crate) struct Bf16Workspace<B: Backend> {
    /// The current layer's weights, in [`Matrix`] order.
    weights: Vec<B::Buf<bf16>>,
    /// The LM head's weights `[V, C]` (the embedding's, when tied).
    head: B::Buf<bf16>,
    /// A product's activation operand `[T, max(C, H·D, I)]`.
    input: B::Buf<bf16>,
    /// A backward product's output-gradient operand, as large.
    grad: B::Buf<bf16>,
}

impl<B: Backend> Bf16Workspace<B> {
    /// Buffers for batches of up to `max_tokens` tokens.
    pub(crate) fn new(backend: &B, config: &LlamaConfig, max_tokens: usize) -> Result<Self, B::Error> {
        // Every product operand is [T, C], [T, H·D], [T, KVH·D] or [T, I],
        // and KVH·D ≤ H·D.
        let widest = config.hidden_size.max(config.q_dim()).max(config.intermediate_size);
        let weights = Matrix::ALL.iter().map(|matrix| backend.zeros(matrix.len(config))).collect::<Result<_, _>>()?;
        Ok(Bf16Workspace {
            weights,
            head: backend.zeros(config.vocab_size * config.hidden_size)?,
            input: backend.zeros(max_tokens * widest)?,
            grad: backend.zeros(max_tokens * widest)?,
        })
    }

    /// Rounds `layer`'s seven weight matrices into the workspace.
    pub(crate) fn load_layer(
        &mut self,
        backend: &B,
        config: &LlamaConfig,
        layer: &LayerParams<B>,
    ) -> Result<(), B::Error> {
        for matrix in Matrix::ALL {
            backend.round_to_bf16(&mut self.weights[matrix.index()], matrix.of(layer), matrix.len(config))?;
        }
        Ok(())
    }
}

/// The fused LM head's forward ([`Backend::token_logprobs_forward`]): in
/// bf16 the head's weights are rounded into the workspace first and the
/// products run in bf16.
pub(crate) fn head_forward<B: Backend>(
    backend: &B,
    mixed: Option<&mut Bf16Workspace<B>>,
    config: &LlamaConfig,
    params: &LlamaParams<B>,
    logps: &mut B::Buf<f32>,
    lse: &mut B::Buf<f32>,
    rows: HeadRows<'_, B>,
) -> Result<(), B::Error> {
    let (c, v) = (config.hidden_size, config.vocab_size);
    let HeadRows { hidden, rows, targets, n_rows } = rows;
    match mixed {
        None => backend.token_logprobs_forward(logps, lse, hidden, params.lm_head(), rows, targets, n_rows, c, v),
        Some(workspace) => {
            backend.round_to_bf16(&mut workspace.head, params.lm_head(), v * c)?;
            backend.token_logprobs_forward_bf16(logps, lse, hidden, &workspace.head, rows, targets, n_rows, c, v)
        }
    }
}

/// The fused LM head's backward ([`Backend::token_logprobs_backward`]),
/// accumulating into `dhidden` and `dlm_head`; in bf16 the head's weights
/// are rounded into the workspace first (so they match the weights the
/// forward read, whatever ran in between) and the products run in bf16.
#[allow(clippy::too_many_arguments)]
pub(crate) fn head_backward<B: Backend>(
    backend: &B,
    mixed: Option<&mut Bf16Workspace<B>>,
    config: &LlamaConfig,
    params: &LlamaParams<B>,
    dhidden: &mut B::Buf<f32>,
    dlm_head: &mut B::Buf<f32>,
    dlogps: &B::Buf<f32>,
    lse: &B::Buf<f32>,
    rows: HeadRows<'_, B>,
) -> Result<(), B::Error> {
    let (c, v) = (config.hidden_size, config.vocab_size);
    let HeadRows { hidden, rows, targets, n_rows } = rows;
    let head = params.lm_head();
    match mixed {
        None => {
            backend.token_logprobs_backward(dhidden, dlm_head, dlogps, hidden, head, rows, targets, lse, n_rows, c, v)
        }
        Some(workspace) => {
            backend.round_to_bf16(&mut workspace.head, head, v * c)?;
            let head = &workspace.head;
            backend
                .token_logprobs_backward_bf16(dhidden, dlm_head, dlogps, hidden, head, rows, targets, lse, n_rows, c, v)
        }
    }
}

/// The rows the LM head scores: the final hidden states `[T, C]`, the
/// token of each row, its target, and how many rows.
pub(crate) struct HeadRows<'a, B: Backend> {
    pub hidden: &'a B::Buf<f32>,
    pub rows: &'a B::Buf<u32>,
    pub targets: &'a B::Buf<u32>,
    pub n_rows: usize,
}

/// `y = x · Wᵀ` for each `(y, W, d_out)` of `outputs`: projections of one
/// input `x` `[rows, d_in]` (q/k/v, gate/up). In bf16 `x` is rounded once
/// for all of them and `W` is the layer's rounded copy (loaded by
/// [`Bf16Workspace::load_layer`]).
pub(crate) fn project<B: Backend>(
    backend: &B,
    mixed: Option<&mut Bf16Workspace<B>>,
    layer: &LayerParams<B>,
    x: &B::Buf<f32>,
    rows: usize,
    d_in: usize,
    outputs: &mut [(&mut B::Buf<f32>, Matrix, usize)],
) -> Result<(), B::Error> {
    let spec =
        |d_out| MatmulSpec { m: rows, k: d_in, n: d_out, transpose_a: false, transpose_b: true, accumulate: false };
    match mixed {
        None => {
            for (y, matrix, d_out) in outputs.iter_mut() {
                backend.matmul(y, x, matrix.of(layer), spec(*d_out))?;
            }
        }
        Some(workspace) => {
            backend.round_to_bf16(&mut workspace.input, x, rows * d_in)?;
            for (y, matrix, d_out) in outputs.iter_mut() {
                backend.matmul_bf16(y, &workspace.input, &workspace.weights[matrix.index()], spec(*d_out))?;
            }
        }
    }
    Ok(())
}

/// One projection's gradients in [`project_backward`]: its matrix, the
/// weight gradient `dW` to accumulate into, the output gradient `dy`
/// `[rows, d_out]`, and `d_out`.
pub(crate) type ProjectionGrad<'a, B> = (Matrix, &'a mut <B as Backend>::Buf<f32>, &'a <B as Backend>::Buf<f32>, usize);

/// The backward of [`project`]: for each `(W, dW, dy, d_out)` of `grads`,
/// `dx += dy · W` and `dW += dyᵀ · x` (`x` `[rows, d_in]`, the projections'
/// shared input). In bf16 `x` is rounded once for all of them and each `dy`
/// before its two products. `dx` and `dW` stay f32 either way.
#[allow(clippy::too_many_arguments)]
pub(crate) fn project_backward<B: Backend>(
    backend: &B,
    mixed: Option<&mut Bf16Workspace<B>>,
    layer: &LayerParams<B>,
    x: &B::Buf<f32>,
    rows: usize,
    d_in: usize,
    dx: &mut B::Buf<f32>,
    grads: &mut [ProjectionGrad<'_, B>],
) -> Result<(), B::Error> {
    let to_input =
        |d_out| MatmulSpec { m: rows, k: d_out, n: d_in, transpose_a: false, transpose_b: false, accumulate: true };
    let to_weight =
        |d_out| MatmulSpec { m: d_out, k: rows, n: d_in, transpose_a: true, transpose_b: false, accumulate: true };
    match mixed {
        None => {
            for (matrix, dw, dy, d_out) in grads.iter_mut() {
                backend.matmul(dx, dy, matrix.of(layer), to_input(*d_out))?;
                backend.matmul(dw, dy, x, to_weight(*d_out))?;
            }
        }
        Some(workspace) => {
            backend.round_to_bf16(&mut workspace.input, x, rows * d_in)?;
            for (matrix, dw, dy, d_out) in grads.iter_mut() {
                backend.round_to_bf16(&mut workspace.grad, dy, rows * *d_out)?;
                backend.matmul_bf16(dx, &workspace.grad, &workspace.weights[matrix.index()], to_input(*d_out))?;
                backend.matmul_bf16(dw, &workspace.grad, &workspace.input, to_weight(*d_out))?;
            }
        }
    }
    Ok(())
}

#[cfg(all(test, feature = "cpu"))]
mod tests {
    use super::*;
    use crate::cpu::CpuBackend;

    #[test]
    fn names_round_trip_through_serde() {
        for precision in [Precision::F32, Precision::Bf16] {
            let json = serde_json::to_string(&precision).unwrap();
            assert_eq!(json, alloc::format!("\"{}\"", precision.name()));
            assert_eq!(serde_json::from_str::<Precision>(&json).unwrap(), precision);
        }
    }

    #[test]
    fn matrix_lengths_match_the_layer_tensors() {
        let config = LlamaConfig {
            num_hidden_layers: 1,
            vocab_size: 11,
            hidden_size: 8,
            intermediate_size: 12,
            num_attention_heads: 2,
            num_key_value_heads: 1,
            head_dim: 4,
            ..LlamaConfig::smollm2_135m()
        };
        let backend = CpuBackend::new();
        let params = super::super::params::LlamaParams::zeros(&backend, &config).unwrap();
        for matrix in Matrix::ALL {
            assert_eq!(backend.len(matrix.of(&params.layers[0])), matrix.len(&config), "{matrix:?}");
        }
    }
}
