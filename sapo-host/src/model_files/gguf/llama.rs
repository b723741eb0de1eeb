//! LLaMA-family GGUF files (`general.architecture = llama`: LLaMA, Mistral,
//! SmolLM2, TinyLlama) as sapo's [`LlamaConfig`] and [`LlamaParams`], equal
//! to what transformers' `from_pretrained(dir, gguf_file=...)` loads.
//!
//! Three things separate a GGUF tensor from its Hugging Face counterpart:
//!
//! 1. **Names**: `blk.N.attn_q.weight` is `model.layers.N.self_attn.q_proj.weight`
//!    ([`hf_tensor_name`], [`gguf_tensor_name`]).
//! 2. **Dims order**: GGUF lists dims innermost first, so an `[out, in]`
//!    weight has dims `[in, out]`; the bytes are the same row-major data.
//! 3. **Q and K rows**: llama.cpp's converter (`convert_hf_to_gguf.py`,
//!    `LlamaModel.permute`) reorders each head's rows from Hugging Face's
//!    rotate-half RoPE layout (first half of the head's channels, then the
//!    second) to ggml's interleaved pairs. [`hf_tensor_f32`] undoes it, as
//!    transformers' `LlamaTensorProcessor._reverse_permute_weights` does.

use std::collections::HashSet;

use sapo_core::backend::Backend;
use sapo_core::model::{LlamaConfig, LlamaParams, TensorSpec, tensor_specs};

use super::error::GgufError;
use super::file::GgufFile;

/// The only architecture this module maps.
const ARCHITECTURE: &str = "llama";

/// llama.cpp's RoPE base when `llama.rope.freq_base` is absent (and
/// transformers' `LlamaConfig` default).
const DEFAULT_ROPE_THETA: f64 = 10_000.0;

/// The Hugging Face configuration of a LLaMA-family GGUF file.
///
/// Read from `llama.*` metadata: `embedding_length`, `feed_forward_length`,
/// `block_count`, `attention.head_count`, `attention.head_count_kv`
/// (default: no grouping), `attention.key_length` (else
/// `rope.dimension_count`, else hidden / heads), `rope.freq_base` (default
/// 10 000), `attention.layer_norm_rms_epsilon`, and `vocab_size` (else the
/// token list's length, else the embedding's rows). The LM head is tied when
/// there is no `output.weight`; q/k/v biases are on when `blk.0.attn_q.bias`
/// exists (transformers would drop them; llama.cpp uses them).
///
/// ```
/// use sapo_host::model_files::gguf::{GgufFile, llama};
/// let file = GgufFile::open("../fixtures/gguf/tiny_llama.gguf.bin")?;
/// let config = llama::config(&file)?;
/// assert_eq!((config.hidden_size, config.head_dim, config.tie_word_embeddings), (32, 4, false));
/// # Ok::<(), sapo_host::model_files::gguf::GgufError>(())
/// ```
///
/// # Errors
/// [`GgufError::UnsupportedArchitecture`] unless the file is `llama`;
/// [`GgufError::MissingMetadata`] / [`GgufError::MetadataType`] for an
/// absent or mistyped required key; [`GgufError::UnsupportedFeature`] for
/// RoPE scaling, partial rotary, experts, or value heads of another width
/// than key heads; [`GgufError::InvalidConfig`] if [`LlamaConfig::validate`]
/// fails or the sizes could not belong to this file (more layers than
/// tensors, element counts overflowing).
pub fn config(file: &GgufFile) -> Result<LlamaConfig, GgufError> {
    let architecture = file.required("general.architecture", file.metadata_str("general.architecture")?)?;
    if architecture != ARCHITECTURE {
        return Err(GgufError::UnsupportedArchitecture {
            path: file.path().to_path_buf(),
            architecture: architecture.to_string(),
        });
    }
    check_unsupported_features(file)?;
    let size = |suffix: &str| -> Result<Option<usize>, GgufError> {
        let key = format!("{ARCHITECTURE}.{suffix}");
        match file.metadata_u64(&key) {
            Ok(value) => {
                value.map(|value| usize::try_from(value).map_err(|_| file.wrong_type(&key, "a size"))).transpose()
            }
            // feed_forward_length may be a per-layer array in other families: name what sapo needs.
            Err(_) => Err(file.wrong_type(&key, "a single non-negative integer")),
        }
    };
    let required = |suffix: &str| -> Result<usize, GgufError> {
        file.required(&format!("{ARCHITECTURE}.{suffix}"), size(suffix)?)
    };
    let float = |suffix: &str| file.metadata_f64(&format!("{ARCHITECTURE}.{suffix}"));

    let hidden_size = required("embedding_length")?;
    let num_attention_heads = required("attention.head_count")?;
    let num_key_value_heads = size("attention.head_count_kv")?.unwrap_or(num_attention_heads);
    let head_dim = head_dim(file, hidden_size, num_attention_heads, &size)?;
    let rms_norm_eps = file.required(
        &format!("{ARCHITECTURE}.attention.layer_norm_rms_epsilon"),
        float("attention.layer_norm_rms_epsilon")?,
    )?;
    let config = LlamaConfig {
        vocab_size: vocab_size(file, &size)?,
        hidden_size,
        intermediate_size: required("feed_forward_length")?,
        num_hidden_layers: required("block_count")?,
        num_attention_heads,
        num_key_value_heads,
        head_dim,
        rope_theta: float("rope.freq_base")?.unwrap_or(DEFAULT_ROPE_THETA) as f32,
        rms_norm_eps: rms_norm_eps as f32,
        tie_word_embeddings: file.tensor("output.weight").is_none(),
        attention_bias: file.tensor("blk.0.attn_q.bias").is_some(),
    };
    let invalid = |reason: String| GgufError::InvalidConfig { path: file.path().to_path_buf(), reason };
    config.validate().map_err(|reason| invalid(reason.to_string()))?;
    check_sizes(file, &config).map_err(invalid)?;
    Ok(config)
}

/// Sizes a real file could hold: every layer has tensors in the file, and
/// no tensor's element count overflows. Without this, a corrupt
/// `block_count` would size [`tensor_specs`]'s list and a corrupt head count
/// would overflow `q_dim()` before any tensor is compared.
fn check_sizes(file: &GgufFile, config: &LlamaConfig) -> Result<(), String> {
    if config.num_hidden_layers > file.tensors().len() {
        return Err(format!(
            "block_count {} but the file holds only {} tensors",
            config.num_hidden_layers,
            file.tensors().len()
        ));
    }
    let (c, i, v) = (config.hidden_size, config.intermediate_size, config.vocab_size);
    let products = [
        ("hidden_size × vocab_size", c.checked_mul(v)),
        ("hidden_size × intermediate_size", c.checked_mul(i)),
        (
            "head_count × head_dim × hidden_size",
            config.num_attention_heads.checked_mul(config.head_dim).and_then(|q| q.checked_mul(c)),
        ),
        (
            "head_count_kv × head_dim × hidden_size",
            config.num_key_value_heads.checked_mul(config.head_dim).and_then(|kv| kv.checked_mul(c)),
        ),
    ];
    match products.iter().find(|(_, product)| product.is_none()) {
        Some((what, _)) => Err(format!("{what} overflows")),
        None => Ok(()),
    }
}

/// Channels per head: `attention.key_length` (as llama.cpp reads it), else
/// `rope.dimension_count` (as transformers reads it), else hidden / heads.
fn head_dim(
    file: &GgufFile,
    hidden_size: usize,
    num_attention_heads: usize,
    size: &impl Fn(&str) -> Result<Option<usize>, GgufError>,
) -> Result<usize, GgufError> {
    let key_length = size("attention.key_length")?;
    let value_length = size("attention.value_length")?;
    let rope_dimensions = size("rope.dimension_count")?;
    let head_dim = match (key_length, rope_dimensions) {
        (Some(key_length), _) => key_length,
        (None, Some(rope_dimensions)) => rope_dimensions,
        (None, None) if num_attention_heads > 0 && hidden_size.is_multiple_of(num_attention_heads) => {
            hidden_size / num_attention_heads
        }
        (None, None) => {
            return Err(GgufError::InvalidConfig {
                path: file.path().to_path_buf(),
                reason: format!(
                    "embedding_length {hidden_size} is not a multiple of head_count {num_attention_heads} and no key_length is given"
                ),
            });
        }
    };
    let unsupported = |feature: String| GgufError::UnsupportedFeature { path: file.path().to_path_buf(), feature };
    if let Some(rope_dimensions) = rope_dimensions.filter(|&dimensions| dimensions != head_dim) {
        return Err(unsupported(format!(
            "partial rotary embedding: {ARCHITECTURE}.rope.dimension_count {rope_dimensions} ≠ head_dim {head_dim}"
        )));
    }
    if let Some(value_length) = value_length.filter(|&length| length != head_dim) {
        return Err(unsupported(format!(
            "value heads of {value_length} channels ({ARCHITECTURE}.attention.value_length) ≠ key heads of {head_dim}"
        )));
    }
    Ok(head_dim)
}

/// `vocab_size`, else the token list's length (transformers' fallback),
/// else the embedding's rows.
fn vocab_size(file: &GgufFile, size: &impl Fn(&str) -> Result<Option<usize>, GgufError>) -> Result<usize, GgufError> {
    if let Some(vocab_size) = size("vocab_size")? {
        return Ok(vocab_size);
    }
    if let Some(tokens) = file.metadata("tokenizer.ggml.tokens").and_then(|value| value.as_array()) {
        return Ok(tokens.len());
    }
    match file.tensor("token_embd.weight").map(|info| info.shape()) {
        Some(shape) if shape.len() == 2 => Ok(shape[0]),
        _ => Err(GgufError::MissingMetadata {
            path: file.path().to_path_buf(),
            key: format!("{ARCHITECTURE}.vocab_size (or tokenizer.ggml.tokens, or a 2-D token_embd.weight)"),
        }),
    }
}

/// Features of llama.cpp's `llama` architecture that sapo's model lacks:
/// loading such a file as a plain LLaMA would silently compute a different
/// model.
fn check_unsupported_features(file: &GgufFile) -> Result<(), GgufError> {
    let unsupported = |feature: String| GgufError::UnsupportedFeature { path: file.path().to_path_buf(), feature };
    let scaling_key = format!("{ARCHITECTURE}.rope.scaling.type");
    if let Some(scaling) = file.metadata_str(&scaling_key)?.filter(|&scaling| scaling != "none") {
        return Err(unsupported(format!("RoPE scaling '{scaling}' ({scaling_key})")));
    }
    let factor_key = format!("{ARCHITECTURE}.rope.scaling.factor");
    if let Some(factor) = file.metadata_f64(&factor_key)?.filter(|&factor| factor != 0.0 && factor != 1.0) {
        return Err(unsupported(format!("RoPE scaling factor {factor} ({factor_key})")));
    }
    if file.tensor("rope_freqs.weight").is_some() {
        return Err(unsupported("RoPE frequency factors (tensor rope_freqs.weight, LLaMA 3.1 scaling)".to_string()));
    }
    let experts_key = format!("{ARCHITECTURE}.expert_count");
    if let Some(experts) = file.metadata_u64(&experts_key)?.filter(|&experts| experts > 0) {
        return Err(unsupported(format!("mixture of {experts} experts ({experts_key})")));
    }
    Ok(())
}

/// Hugging Face layer-tensor suffixes and their GGUF counterparts
/// (llama.cpp's `gguf-py/gguf/tensor_mapping.py` for `MODEL_ARCH.LLAMA`).
const LAYER_SUFFIXES: [(&str, &str); 12] = [
    ("input_layernorm.weight", "attn_norm.weight"),
    ("self_attn.q_proj.weight", "attn_q.weight"),
    ("self_attn.k_proj.weight", "attn_k.weight"),
    ("self_attn.v_proj.weight", "attn_v.weight"),
    ("self_attn.q_proj.bias", "attn_q.bias"),
    ("self_attn.k_proj.bias", "attn_k.bias"),
    ("self_attn.v_proj.bias", "attn_v.bias"),
    ("self_attn.o_proj.weight", "attn_output.weight"),
    ("post_attention_layernorm.weight", "ffn_norm.weight"),
    ("mlp.gate_proj.weight", "ffn_gate.weight"),
    ("mlp.up_proj.weight", "ffn_up.weight"),
    ("mlp.down_proj.weight", "ffn_down.weight"),
];

/// Model-level tensors: (Hugging Face name, GGUF name).
const MODEL_TENSORS: [(&str, &str); 3] = [
    ("model.embed_tokens.weight", "token_embd.weight"),
    ("model.norm.weight", "output_norm.weight"),
    ("lm_head.weight", "output.weight"),
];

/// The GGUF name of Hugging Face tensor `hf_name`, or `None` for a name the
/// LLaMA mapping does not know.
///
/// ```
/// use sapo_host::model_files::gguf::llama::gguf_tensor_name;
/// assert_eq!(gguf_tensor_name("model.layers.7.self_attn.o_proj.weight").as_deref(), Some("blk.7.attn_output.weight"));
/// assert_eq!(gguf_tensor_name("model.embed_tokens.weight").as_deref(), Some("token_embd.weight"));
/// ```
pub fn gguf_tensor_name(hf_name: &str) -> Option<String> {
    if let Some(&(_, gguf)) = MODEL_TENSORS.iter().find(|(hf, _)| *hf == hf_name) {
        return Some(gguf.to_string());
    }
    let (layer, suffix) = hf_name.strip_prefix("model.layers.")?.split_once('.')?;
    let layer: usize = parse_layer(layer)?;
    let &(_, gguf_suffix) = LAYER_SUFFIXES.iter().find(|(hf, _)| *hf == suffix)?;
    Some(format!("blk.{layer}.{gguf_suffix}"))
}

/// The Hugging Face name of GGUF tensor `gguf_name`, or `None` for a name
/// the LLaMA mapping does not know.
///
/// ```
/// use sapo_host::model_files::gguf::llama::hf_tensor_name;
/// assert_eq!(hf_tensor_name("blk.0.ffn_norm.weight").as_deref(), Some("model.layers.0.post_attention_layernorm.weight"));
/// assert_eq!(hf_tensor_name("output.weight").as_deref(), Some("lm_head.weight"));
/// assert_eq!(hf_tensor_name("rope_freqs.weight"), None);
/// ```
pub fn hf_tensor_name(gguf_name: &str) -> Option<String> {
    if let Some(&(hf, _)) = MODEL_TENSORS.iter().find(|(_, gguf)| *gguf == gguf_name) {
        return Some(hf.to_string());
    }
    let (layer, suffix) = gguf_name.strip_prefix("blk.")?.split_once('.')?;
    let layer: usize = parse_layer(layer)?;
    let &(hf_suffix, _) = LAYER_SUFFIXES.iter().find(|(_, gguf)| *gguf == suffix)?;
    Some(format!("model.layers.{layer}.{hf_suffix}"))
}

/// A layer index in canonical decimal form only, so that the two mappings
/// are inverses (`blk.07` is not `blk.7`).
fn parse_layer(text: &str) -> Option<usize> {
    let canonical =
        !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()) && (text == "0" || !text.starts_with('0'));
    if canonical { text.parse().ok() } else { None }
}

/// The Hugging Face tensor `spec` (name and row-major shape, from
/// [`tensor_specs`]) from the file: dequantised to f32 and, for q/k
/// projections, with llama.cpp's RoPE row permutation undone.
///
/// ```
/// use sapo_core::model::tensor_specs;
/// use sapo_host::model_files::gguf::{GgufFile, llama};
/// let file = GgufFile::open("../fixtures/gguf/tiny_llama.gguf.bin")?;
/// let config = llama::config(&file)?;
/// let q_proj = tensor_specs(&config).into_iter().find(|spec| spec.name.ends_with("0.self_attn.q_proj.weight")).unwrap();
/// assert_eq!(llama::hf_tensor_f32(&file, &config, &q_proj)?.len(), 16 * 32);
/// # Ok::<(), sapo_host::model_files::gguf::GgufError>(())
/// ```
///
/// # Errors
/// [`GgufError::MissingTensor`] (naming the GGUF name, or the Hugging Face
/// name if it has none); [`GgufError::ShapeMismatch`] if the stored shape is
/// not `spec.shape`; [`GgufError::UnsupportedTensorType`].
pub fn hf_tensor_f32(file: &GgufFile, config: &LlamaConfig, spec: &TensorSpec) -> Result<Vec<f32>, GgufError> {
    let missing = |name: String| GgufError::MissingTensor { path: file.path().to_path_buf(), name };
    let gguf_name = gguf_tensor_name(&spec.name).ok_or_else(|| missing(spec.name.clone()))?;
    let info = file.tensor(&gguf_name).ok_or_else(|| missing(gguf_name.clone()))?;
    let shape = info.shape();
    if shape != spec.shape {
        return Err(GgufError::ShapeMismatch {
            path: file.path().to_path_buf(),
            tensor: gguf_name,
            found: shape,
            expected: spec.shape.clone(),
        });
    }
    let values = file.tensor_f32(&gguf_name)?;
    let rows = shape.first().copied().unwrap_or(1);
    let row_len = values.len().checked_div(rows).unwrap_or(0);
    // transformers permutes both Q and K (weights and biases: `.attn_q.` / `.attn_k.` in the name).
    Ok(if gguf_name.contains(".attn_q.") {
        unpermute_rope_rows(&values, row_len, config.num_attention_heads)
    } else if gguf_name.contains(".attn_k.") {
        unpermute_rope_rows(&values, row_len, config.num_key_value_heads)
    } else {
        values
    })
}

/// Undoes llama.cpp's `permute(w, n_head)`: within each head of
/// `head_dim = rows / n_head` rows, GGUF row `2i + j` is Hugging Face row
/// `j·head_dim/2 + i` (`j` ∈ {0, 1}), as transformers'
/// `w.reshape(n_head, head_dim/2, 2, …).swapaxes(2, 1)`. The shape check
/// against [`tensor_specs`] and [`LlamaConfig::validate`] (even head_dim)
/// make `rows` a multiple of `2·n_head`.
fn unpermute_rope_rows(values: &[f32], row_len: usize, n_head: usize) -> Vec<f32> {
    let rows = values.len().checked_div(row_len).unwrap_or(0);
    let head_dim = rows / n_head.max(1);
    let half = head_dim / 2;
    let mut unpermuted = vec![0f32; values.len()];
    for head in 0..n_head {
        for i in 0..half {
            for j in 0..2 {
                let gguf_row = head * head_dim + 2 * i + j;
                let hf_row = head * head_dim + j * half + i;
                unpermuted[hf_row * row_len..(hf_row + 1) * row_len]
                    .copy_from_slice(&values[gguf_row * row_len..(gguf_row + 1) * row_len]);
            }
        }
    }
    unpermuted
}

/// Loading parameters failed: reading the file, or uploading to the backend.
#[derive(Debug, thiserror::Error)]
pub enum LoadError<E> {
    /// The file lacks a tensor, has a wrong shape, an unsupported type, or
    /// tensors the mapping does not use.
    #[error(transparent)]
    Gguf(GgufError),
    /// The backend refused a buffer.
    #[error("uploading a tensor to the backend: {0}")]
    Backend(E),
}

/// `LlamaParams::from_host` converts backend errors with `From`.
impl<E> From<E> for LoadError<E> {
    fn from(error: E) -> Self {
        LoadError::Backend(error)
    }
}

/// Every parameter of `config`'s model, from the file, on `backend`, in
/// Hugging Face layout (see [`hf_tensor_f32`]).
///
/// Refuses a file with tensors the mapping does not use, rather than
/// ignoring them as transformers does: an unused `rope_freqs.weight` or
/// expert tensor means the file is not a plain LLaMA.
///
/// ```
/// use sapo_core::cpu::CpuBackend;
/// use sapo_host::model_files::gguf::{GgufFile, llama};
/// let file = GgufFile::open("../fixtures/gguf/tiny_llama.gguf.bin")?;
/// let config = llama::config(&file)?;
/// let params = llama::load_params(&CpuBackend::new(), &file, &config)?;
/// assert_eq!(params.layers.len(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// [`LoadError::Gguf`] with [`GgufError::UnusedTensors`] or any error of
/// [`hf_tensor_f32`]; [`LoadError::Backend`] if an upload fails.
pub fn load_params<B: Backend>(
    backend: &B,
    file: &GgufFile,
    config: &LlamaConfig,
) -> Result<LlamaParams<B>, LoadError<B::Error>> {
    let wanted: HashSet<String> = tensor_specs(config).iter().filter_map(|spec| gguf_tensor_name(&spec.name)).collect();
    let unused: Vec<String> = file
        .tensors()
        .iter()
        .map(|info| info.name())
        .filter(|name| !wanted.contains(*name))
        .map(str::to_string)
        .collect();
    if !unused.is_empty() {
        return Err(LoadError::Gguf(GgufError::UnusedTensors { path: file.path().to_path_buf(), names: unused }));
    }
    LlamaParams::from_host(backend, config, |spec| hf_tensor_f32(file, config, spec).map_err(LoadError::Gguf))
}
