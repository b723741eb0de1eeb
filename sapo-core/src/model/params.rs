//! The model's parameters as backend buffers, one per Hugging Face tensor.
//!
//! The same struct holds weights, their gradients and optimizer moments, so
//! an optimizer step is a walk over two or three of them in step.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::config::LlamaConfig;
use crate::backend::Backend;

/// One decoder layer's tensors (Hugging Face names in the docs).
#[derive(Debug)]
pub struct LayerParams<B: Backend> {
    /// `input_layernorm.weight` `[C]`.
    pub input_layernorm: B::Buf<f32>,
    /// `self_attn.q_proj.weight` `[H·D, C]`.
    pub q_proj: B::Buf<f32>,
    /// `self_attn.k_proj.weight` `[KVH·D, C]`.
    pub k_proj: B::Buf<f32>,
    /// `self_attn.v_proj.weight` `[KVH·D, C]`.
    pub v_proj: B::Buf<f32>,
    /// `self_attn.{q,k,v}_proj.bias` (Qwen2 only).
    pub qkv_bias: Option<[B::Buf<f32>; 3]>,
    /// `self_attn.o_proj.weight` `[C, H·D]`.
    pub o_proj: B::Buf<f32>,
    /// `post_attention_layernorm.weight` `[C]`.
    pub post_attention_layernorm: B::Buf<f32>,
    /// `mlp.gate_proj.weight` `[I, C]`.
    pub gate_proj: B::Buf<f32>,
    /// `mlp.up_proj.weight` `[I, C]`.
    pub up_proj: B::Buf<f32>,
    /// `mlp.down_proj.weight` `[C, I]`.
    pub down_proj: B::Buf<f32>,
}

/// All parameters of a LLaMA-family model (or gradients, or moments).
///
/// ```
/// use sapo_core::cpu::CpuBackend;
/// use sapo_core::model::{LlamaConfig, LlamaParams};
/// let config = LlamaConfig { num_hidden_layers: 1, vocab_size: 11, hidden_size: 8, intermediate_size: 12,
///     num_attention_heads: 2, num_key_value_heads: 1, head_dim: 4, ..LlamaConfig::smollm2_135m() };
/// let grads = LlamaParams::zeros(&CpuBackend::new(), &config)?;
/// assert_eq!(grads.tensor_specs(&config).len(), 11); // 9 per layer + embedding + final norm
/// # Ok::<(), sapo_core::cpu::CpuError>(())
/// ```
#[derive(Debug)]
pub struct LlamaParams<B: Backend> {
    /// `model.embed_tokens.weight` `[V, C]`.
    pub embed_tokens: B::Buf<f32>,
    /// `model.layers.{i}.*`.
    pub layers: Vec<LayerParams<B>>,
    /// `model.norm.weight` `[C]`.
    pub norm: B::Buf<f32>,
    /// `lm_head.weight` `[V, C]`, absent when tied to the embedding.
    pub lm_head: Option<B::Buf<f32>>,
}

/// A tensor's Hugging Face name and shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// E.g. `model.layers.0.self_attn.q_proj.weight`.
    pub name: String,
    /// Row-major shape, as in safetensors.
    pub shape: Vec<usize>,
}

impl TensorSpec {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether it has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<B: Backend> LlamaParams<B> {
    /// Every tensor in a fixed order (the order of [`LlamaParams::visit`]).
    pub fn tensor_specs(&self, config: &LlamaConfig) -> Vec<TensorSpec> {
        tensor_specs(config)
    }

    /// Builds parameters by asking `source` for each tensor's host data.
    ///
    /// # Errors
    /// Whatever `source` returns, or a backend error.
    pub fn from_host<E: From<B::Error>>(
        backend: &B,
        config: &LlamaConfig,
        mut source: impl FnMut(&TensorSpec) -> Result<Vec<f32>, E>,
    ) -> Result<Self, E> {
        let mut specs = tensor_specs(config).into_iter();
        let mut next = |backend: &B| -> Result<B::Buf<f32>, E> {
            // tensor_specs lists exactly the tensors build() asks for, in order.
            let spec = specs.next().expect("a spec per tensor");
            let data = source(&spec)?;
            Ok(backend.upload(&data)?)
        };
        build(backend, config, &mut next)
    }

    /// Zeros in every tensor: gradients, optimizer moments.
    ///
    /// # Errors
    /// A backend error.
    pub fn zeros(backend: &B, config: &LlamaConfig) -> Result<Self, B::Error> {
        let mut specs = tensor_specs(config).into_iter();
        let mut next = |backend: &B| {
            let spec = specs.next().expect("a spec per tensor");
            backend.zeros(spec.len())
        };
        build(backend, config, &mut next)
    }

    /// Every tensor, in [`tensor_specs`] order.
    pub fn tensors(&self) -> Vec<&B::Buf<f32>> {
        let mut all = Vec::with_capacity(3 + 12 * self.layers.len());
        all.push(&self.embed_tokens);
        for layer in &self.layers {
            all.extend([&layer.input_layernorm, &layer.q_proj, &layer.k_proj, &layer.v_proj]);
            if let Some(biases) = &layer.qkv_bias {
                all.extend(biases.iter());
            }
            all.extend([
                &layer.o_proj,
                &layer.post_attention_layernorm,
                &layer.gate_proj,
                &layer.up_proj,
                &layer.down_proj,
            ]);
        }
        all.push(&self.norm);
        all.extend(self.lm_head.as_ref());
        all
    }

    /// Every tensor mutably, in [`tensor_specs`] order.
    pub fn tensors_mut(&mut self) -> Vec<&mut B::Buf<f32>> {
        let mut all = Vec::with_capacity(3 + 12 * self.layers.len());
        all.push(&mut self.embed_tokens);
        for layer in &mut self.layers {
            all.extend([&mut layer.input_layernorm, &mut layer.q_proj, &mut layer.k_proj, &mut layer.v_proj]);
            if let Some(biases) = &mut layer.qkv_bias {
                all.extend(biases.iter_mut());
            }
            all.extend([
                &mut layer.o_proj,
                &mut layer.post_attention_layernorm,
                &mut layer.gate_proj,
                &mut layer.up_proj,
                &mut layer.down_proj,
            ]);
        }
        all.push(&mut self.norm);
        all.extend(self.lm_head.as_mut());
        all
    }

    /// Calls `f` on every tensor, in [`tensor_specs`] order.
    pub fn visit<E>(&self, f: impl FnMut(&B::Buf<f32>) -> Result<(), E>) -> Result<(), E> {
        self.tensors().into_iter().try_for_each(f)
    }

    /// Calls `f` on every tensor mutably, in [`tensor_specs`] order.
    pub fn visit_mut<E>(&mut self, f: impl FnMut(&mut B::Buf<f32>) -> Result<(), E>) -> Result<(), E> {
        self.tensors_mut().into_iter().try_for_each(f)
    }

    /// The LM head: its own tensor, or the embedding when tied.
    pub fn lm_head(&self) -> &B::Buf<f32> {
        self.lm_head.as_ref().unwrap_or(&self.embed_tokens)
    }
}

/// Every tensor's name and shape, in the order of [`LlamaParams::visit`].
pub fn tensor_specs(config: &LlamaConfig) -> Vec<TensorSpec> {
    let (c, i, v) = (config.hidden_size, config.intermediate_size, config.vocab_size);
    let (q, kv) = (config.q_dim(), config.kv_dim());
    let spec = |name: String, shape: &[usize]| TensorSpec { name, shape: shape.to_vec() };
    let mut specs = alloc::vec![spec("model.embed_tokens.weight".into(), &[v, c])];
    for layer in 0..config.num_hidden_layers {
        let p = format!("model.layers.{layer}.");
        specs.push(spec(format!("{p}input_layernorm.weight"), &[c]));
        specs.push(spec(format!("{p}self_attn.q_proj.weight"), &[q, c]));
        specs.push(spec(format!("{p}self_attn.k_proj.weight"), &[kv, c]));
        specs.push(spec(format!("{p}self_attn.v_proj.weight"), &[kv, c]));
        if config.attention_bias {
            specs.push(spec(format!("{p}self_attn.q_proj.bias"), &[q]));
            specs.push(spec(format!("{p}self_attn.k_proj.bias"), &[kv]));
            specs.push(spec(format!("{p}self_attn.v_proj.bias"), &[kv]));
        }
        specs.push(spec(format!("{p}self_attn.o_proj.weight"), &[c, q]));
        specs.push(spec(format!("{p}post_attention_layernorm.weight"), &[c]));
        specs.push(spec(format!("{p}mlp.gate_proj.weight"), &[i, c]));
        specs.push(spec(format!("{p}mlp.up_proj.weight"), &[i, c]));
        specs.push(spec(format!("{p}mlp.down_proj.weight"), &[c, i]));
    }
    specs.push(spec("model.norm.weight".into(), &[c]));
    if !config.tie_word_embeddings {
        specs.push(spec("lm_head.weight".into(), &[v, c]));
    }
    specs
}

fn build<B: Backend, E>(
    backend: &B,
    config: &LlamaConfig,
    next: &mut impl FnMut(&B) -> Result<B::Buf<f32>, E>,
) -> Result<LlamaParams<B>, E> {
    let embed_tokens = next(backend)?;
    let mut layers = Vec::with_capacity(config.num_hidden_layers);
    for _ in 0..config.num_hidden_layers {
        let input_layernorm = next(backend)?;
        let (q_proj, k_proj, v_proj) = (next(backend)?, next(backend)?, next(backend)?);
        let qkv_bias =
            if config.attention_bias { Some([next(backend)?, next(backend)?, next(backend)?]) } else { None };
        layers.push(LayerParams {
            input_layernorm,
            q_proj,
            k_proj,
            v_proj,
            qkv_bias,
            o_proj: next(backend)?,
            post_attention_layernorm: next(backend)?,
            gate_proj: next(backend)?,
            up_proj: next(backend)?,
            down_proj: next(backend)?,
        });
    }
    let norm = next(backend)?;
    let lm_head = if config.tie_word_embeddings { None } else { Some(next(backend)?) };
    Ok(LlamaParams { embed_tokens, layers, norm, lm_head })
}
