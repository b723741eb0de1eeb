//! The LLaMA-family transformer, forward and backward, generic over
//! [`crate::backend::Backend`]: LLaMA, Mistral, Qwen2 (q/k/v biases),
//! SmolLM2, TinyLlama, with tied or untied LM heads.
//!
//! The model is pure math: a loader elsewhere supplies each tensor's data by
//! its Hugging Face name ([`LlamaParams::from_host`]). A training step is
//! [`forward`] → an objective from [`crate::objectives`] on the returned
//! per-sequence log-probs → [`backward`] with the objective's gradients →
//! an optimizer over [`LlamaParams::visit_mut`]. The layers' matrix
//! products run in f32 or in bf16 mixed precision ([`Precision`], set on the
//! [`Activations`]).

mod activations;
mod batch;
mod config;
mod generate;
mod llama;
mod mixed;
mod optimizer;
mod params;

pub use activations::{Activations, LayerActivations};
pub use batch::{BatchError, DeviceBatch, PackedBatch};
pub use config::LlamaConfig;
pub use generate::{
    DecodeBuffers, GenerateError, GenerationConfig, GenerationError, KvCache, forward_cached, generate,
    generate_streaming,
};
pub use llama::{ModelError, SequenceLogprobs, backward, forward};
pub use mixed::Precision;
pub use optimizer::{AdamWState, RmspropState, clip_grad_norm, global_grad_norm};
pub use params::{LayerParams, LlamaParams, TensorSpec, tensor_specs};
