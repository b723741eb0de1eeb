//! The LLaMA-family architecture's hyper-parameters, named as Hugging
//! Face's `config.json` names them.

/// Hyper-parameters of a LLaMA-family decoder (LLaMA, Mistral, Qwen2,
/// SmolLM2, TinyLlama).
///
/// ```
/// use sapo_core::model::LlamaConfig;
/// let config = LlamaConfig::smollm2_135m();
/// assert_eq!(config.parameter_count(), 134_515_008);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LlamaConfig {
    /// `V`: vocabulary size.
    pub vocab_size: usize,
    /// `C`: hidden channels.
    pub hidden_size: usize,
    /// `I`: MLP channels.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// `H`: query heads.
    pub num_attention_heads: usize,
    /// `KVH`: key/value heads (grouped-query attention).
    pub num_key_value_heads: usize,
    /// `D`: channels per head (`hidden_size / num_attention_heads` unless
    /// the config says otherwise).
    pub head_dim: usize,
    /// RoPE base θ.
    pub rope_theta: f32,
    /// RMSNorm ε.
    pub rms_norm_eps: f32,
    /// The LM head shares the embedding table.
    pub tie_word_embeddings: bool,
    /// The q/k/v projections have biases (Qwen2).
    pub attention_bias: bool,
}

impl LlamaConfig {
    /// SmolLM2-135M's shape (the real model sapo is benchmarked on).
    pub fn smollm2_135m() -> Self {
        LlamaConfig {
            vocab_size: 49_152,
            hidden_size: 576,
            intermediate_size: 1536,
            num_hidden_layers: 30,
            num_attention_heads: 9,
            num_key_value_heads: 3,
            head_dim: 64,
            rope_theta: 100_000.0,
            rms_norm_eps: 1e-5,
            tie_word_embeddings: true,
            attention_bias: false,
        }
    }

    /// Query projection width `H·D`.
    pub fn q_dim(&self) -> usize {
        self.num_attention_heads * self.head_dim
    }

    /// Key/value projection width `KVH·D`.
    pub fn kv_dim(&self) -> usize {
        self.num_key_value_heads * self.head_dim
    }

    /// The attention head layout.
    pub fn heads(&self) -> crate::backend::HeadDims {
        crate::backend::HeadDims {
            n_heads: self.num_attention_heads,
            n_kv_heads: self.num_key_value_heads,
            head_dim: self.head_dim,
        }
    }

    /// Number of trainable parameters.
    pub fn parameter_count(&self) -> usize {
        let (c, i) = (self.hidden_size, self.intermediate_size);
        let bias = if self.attention_bias { self.q_dim() + 2 * self.kv_dim() } else { 0 };
        let layer = 2 * c + c * self.q_dim() * 2 + 2 * c * self.kv_dim() + 3 * c * i + bias;
        let head = if self.tie_word_embeddings { 0 } else { self.vocab_size * c };
        self.vocab_size * c + self.num_hidden_layers * layer + c + head
    }

    /// Checks the shape is consistent.
    ///
    /// # Errors
    /// A one-line reason.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.num_key_value_heads == 0 || !self.num_attention_heads.is_multiple_of(self.num_key_value_heads) {
            return Err("num_attention_heads must be a positive multiple of num_key_value_heads");
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) {
            return Err("head_dim must be even and positive (RoPE rotates channel pairs)");
        }
        if self.vocab_size == 0 || self.hidden_size == 0 || self.intermediate_size == 0 {
            return Err("vocab_size, hidden_size and intermediate_size must be positive");
        }
        if !(self.rope_theta > 0.0 && self.rms_norm_eps >= 0.0) {
            return Err("rope_theta must be positive and rms_norm_eps non-negative");
        }
        Ok(())
    }
}
