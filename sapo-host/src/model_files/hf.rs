//! The Hugging Face model layout: `config.json`, `model.safetensors` (or
//! shards listed in `model.safetensors.index.json`), memory-mapped, f32 /
//! bf16 / f16 weights; and writing a trained model back in the same layout.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use sapo_core::backend::Backend;
use sapo_core::model::{LlamaConfig, LlamaParams};
use serde_json::Value;

use crate::atomic_file::{AtomicWriteError, write_atomically};

/// Why a Hugging Face model directory could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum HfError {
    /// A file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// `config.json` is not valid JSON or lacks a field.
    #[error("{path}: {reason}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A safetensors file is malformed or truncated.
    #[error("{path}: not a valid safetensors file: {reason}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        reason: String,
    },
    /// A tensor the architecture needs is missing.
    #[error("{path}: tensor `{name}` is missing")]
    MissingTensor {
        /// The directory.
        path: PathBuf,
        /// The Hugging Face tensor name.
        name: String,
    },
    /// A tensor's shape contradicts `config.json`.
    #[error("{path}: tensor `{name}` has shape {got:?}, config.json implies {expected:?}")]
    Shape {
        /// The file holding it.
        path: PathBuf,
        /// The tensor.
        name: String,
        /// Shape from config.json.
        expected: Vec<usize>,
        /// Shape in the file.
        got: Vec<usize>,
    },
    /// A tensor's dtype is not f32, bf16 or f16.
    #[error("{path}: tensor `{name}` has dtype {dtype:?}; sapo reads F32, BF16 and F16")]
    Dtype {
        /// The file holding it.
        path: PathBuf,
        /// The tensor.
        name: String,
        /// Its dtype.
        dtype: Dtype,
    },
    /// A backend error while uploading.
    #[error("uploading weights: {0}")]
    Backend(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> HfError + '_ {
    move |source| HfError::Io { path: path.to_path_buf(), source }
}

impl From<AtomicWriteError> for HfError {
    fn from(AtomicWriteError { path, source }: AtomicWriteError) -> Self {
        HfError::Io { path, source }
    }
}

/// A model's `config.json` mapped to sapo's [`LlamaConfig`], with the ids
/// generation needs.
#[derive(Debug, Clone, PartialEq)]
pub struct HfConfig {
    /// The architecture's shape.
    pub model: LlamaConfig,
    /// `model_type` (`llama`, `mistral`, `qwen2`).
    pub model_type: String,
    /// Beginning-of-sequence id, if any.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence ids from `config.json` and `generation_config.json`.
    pub eos_token_ids: Vec<u32>,
}

fn ids(value: &Value) -> Vec<u32> {
    match value {
        Value::Number(n) => n.as_u64().map(|id| vec![id as u32]).unwrap_or_default(),
        Value::Array(items) => items.iter().filter_map(|v| v.as_u64()).map(|id| id as u32).collect(),
        _ => Vec::new(),
    }
}

/// Reads `config.json` (and `generation_config.json` if present).
///
/// # Errors
/// [`HfError::Io`] or [`HfError::Config`] naming the field.
pub fn read_config(dir: &Path) -> Result<HfConfig, HfError> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    let json: Value = serde_json::from_str(&text)
        .map_err(|error| HfError::Config { path: path.clone(), reason: error.to_string() })?;
    let bad = |reason: String| HfError::Config { path: path.clone(), reason };
    let model_type =
        json["model_type"].as_str().ok_or_else(|| bad("field `model_type` is missing".into()))?.to_string();
    if !matches!(model_type.as_str(), "llama" | "mistral" | "qwen2") {
        return Err(bad(format!("model_type `{model_type}` is not supported (llama, mistral, qwen2)")));
    }
    let get = |key: &str| -> Result<usize, HfError> {
        json[key].as_u64().map(|v| v as usize).ok_or_else(|| bad(format!("field `{key}` is missing or not an integer")))
    };
    let heads = get("num_attention_heads")?;
    let hidden = get("hidden_size")?;
    let rope_theta =
        json["rope_parameters"]["rope_theta"].as_f64().or_else(|| json["rope_theta"].as_f64()).unwrap_or(10_000.0);
    let model = LlamaConfig {
        vocab_size: get("vocab_size")?,
        hidden_size: hidden,
        intermediate_size: get("intermediate_size")?,
        num_hidden_layers: get("num_hidden_layers")?,
        num_attention_heads: heads,
        num_key_value_heads: json["num_key_value_heads"].as_u64().map_or(heads, |v| v as usize),
        head_dim: json["head_dim"].as_u64().map_or(hidden / heads.max(1), |v| v as usize),
        rope_theta: rope_theta as f32,
        rms_norm_eps: json["rms_norm_eps"].as_f64().unwrap_or(1e-6) as f32,
        tie_word_embeddings: json["tie_word_embeddings"].as_bool().unwrap_or(false),
        attention_bias: model_type == "qwen2" || json["attention_bias"].as_bool().unwrap_or(false),
    };
    model.validate().map_err(|reason| bad(reason.to_string()))?;
    let mut eos_token_ids = ids(&json["eos_token_id"]);
    let generation_path = dir.join("generation_config.json");
    if let Ok(text) = std::fs::read_to_string(&generation_path)
        && let Ok(generation) = serde_json::from_str::<Value>(&text)
    {
        for id in ids(&generation["eos_token_id"]) {
            if !eos_token_ids.contains(&id) {
                eos_token_ids.push(id);
            }
        }
    }
    Ok(HfConfig { model, model_type, bos_token_id: json["bos_token_id"].as_u64().map(|id| id as u32), eos_token_ids })
}

/// The safetensors files of a model: `model.safetensors`, or the shards of
/// `model.safetensors.index.json`.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, HfError> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let text = std::fs::read_to_string(&index).map_err(io(&index))?;
        let json: Value = serde_json::from_str(&text)
            .map_err(|error| HfError::Config { path: index.clone(), reason: error.to_string() })?;
        let map = json["weight_map"]
            .as_object()
            .ok_or_else(|| HfError::Config { path: index.clone(), reason: "field `weight_map` is missing".into() })?;
        let mut files: Vec<PathBuf> = map.values().filter_map(|v| v.as_str()).map(|f| dir.join(f)).collect();
        files.sort();
        files.dedup();
        return Ok(files);
    }
    Ok(vec![dir.join("model.safetensors")])
}

/// One tensor of a model directory by name (any of its safetensors files),
/// converted to f32, with its shape: for weights outside the LLaMA body,
/// such as a reward model's `score.weight`.
///
/// # Errors
/// [`HfError`] naming the file, or [`HfError::MissingTensor`].
pub fn read_tensor(dir: &Path, name: &str) -> Result<(Vec<usize>, Vec<f32>), HfError> {
    for path in weight_files(dir)? {
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        let tensors = SafeTensors::deserialize(&bytes)
            .map_err(|error| HfError::Safetensors { path: path.clone(), reason: error.to_string() })?;
        if let Ok(view) = tensors.tensor(name) {
            if !matches!(view.dtype(), Dtype::F32 | Dtype::BF16 | Dtype::F16) {
                return Err(HfError::Dtype { path, name: name.to_string(), dtype: view.dtype() });
            }
            return Ok((view.shape().to_vec(), to_f32(view.dtype(), view.data())));
        }
    }
    Err(HfError::MissingTensor { path: dir.to_path_buf(), name: name.to_string() })
}

/// Memory-maps the model's safetensors files and uploads every tensor
/// `config` needs, converted to f32. Nothing is uploaded unless every
/// tensor is present with the right shape and a readable dtype.
///
/// # Errors
/// [`HfError`] naming the file and tensor.
pub fn load_params<B: Backend>(backend: &B, dir: &Path, config: &LlamaConfig) -> Result<LlamaParams<B>, HfError> {
    let mut maps = Vec::new();
    for path in weight_files(dir)? {
        let file = File::open(&path).map_err(io(&path))?;
        // SAFETY: the file is opened read-only and only read through the
        // map; sapo does not modify model files while loading them.
        let map = unsafe { Mmap::map(&file) }.map_err(io(&path))?;
        maps.push((path, map));
    }
    let mut parsed = Vec::new();
    for (path, map) in &maps {
        let tensors = SafeTensors::deserialize(map)
            .map_err(|error| HfError::Safetensors { path: path.clone(), reason: error.to_string() })?;
        parsed.push((path.as_path(), tensors));
    }
    let mut located: BTreeMap<String, usize> = BTreeMap::new();
    for (index, (_, tensors)) in parsed.iter().enumerate() {
        for name in tensors.names() {
            located.insert(name.to_string(), index);
        }
    }
    // Check everything before uploading anything.
    let specs = sapo_core::model::tensor_specs(config);
    for spec in &specs {
        let &index = located
            .get(&spec.name)
            .ok_or_else(|| HfError::MissingTensor { path: dir.to_path_buf(), name: spec.name.clone() })?;
        let (path, tensors) = &parsed[index];
        let view = tensors
            .tensor(&spec.name)
            .map_err(|error| HfError::Safetensors { path: path.to_path_buf(), reason: error.to_string() })?;
        if view.shape() != spec.shape.as_slice() {
            return Err(HfError::Shape {
                path: path.to_path_buf(),
                name: spec.name.clone(),
                expected: spec.shape.clone(),
                got: view.shape().to_vec(),
            });
        }
        if !matches!(view.dtype(), Dtype::F32 | Dtype::BF16 | Dtype::F16) {
            return Err(HfError::Dtype { path: path.to_path_buf(), name: spec.name.clone(), dtype: view.dtype() });
        }
    }
    // Any backend: its errors become `HfError::Backend` by their message.
    let backend_error = |error: B::Error| HfError::Backend(error.to_string());
    let mut params = LlamaParams::zeros(backend, config).map_err(backend_error)?;
    for (tensor, spec) in params.tensors_mut().into_iter().zip(&specs) {
        let (_, tensors) = &parsed[located[&spec.name]];
        let view = tensors
            .tensor(&spec.name)
            .map_err(|error| HfError::Safetensors { path: dir.to_path_buf(), reason: error.to_string() })?;
        backend.write(tensor, &to_f32(view.dtype(), view.data())).map_err(backend_error)?;
    }
    Ok(params)
}

/// Little-endian f32, bf16 or f16 bytes to f32 (dtype checked by the caller).
fn to_f32(dtype: Dtype, bytes: &[u8]) -> Vec<f32> {
    match dtype {
        Dtype::BF16 => bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Dtype::F16 => bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        _ => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
    }
}

/// Writes `params` as `dir/model.safetensors` (f32) and `dir/config.json`
/// (a Hugging Face config transformers loads), each through
/// [`write_atomically`] so a crash never leaves a half-written file.
///
/// # Errors
/// [`HfError::Io`] or a backend error.
pub fn save<B: Backend>(backend: &B, dir: &Path, config: &HfConfig, params: &LlamaParams<B>) -> Result<(), HfError>
where
    B::Error: std::fmt::Display,
{
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let specs = params.tensor_specs(&config.model);
    let mut data: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::with_capacity(specs.len());
    for (spec, tensor) in specs.iter().zip(params.tensors()) {
        let values = backend.download(tensor).map_err(|error| HfError::Backend(error.to_string()))?;
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        data.push((spec.name.clone(), spec.shape.clone(), bytes));
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = data
        .iter()
        .map(|(name, shape, bytes)| {
            // The byte length is shape × 4 by construction.
            let view = safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), bytes)
                .expect("f32 bytes match the shape");
            (name.clone(), view)
        })
        .collect();
    let metadata = Some(std::collections::HashMap::from([("format".to_string(), "pt".to_string())]));
    let bytes = safetensors::serialize(views, metadata)
        .map_err(|error| HfError::Safetensors { path: dir.join("model.safetensors"), reason: error.to_string() })?;
    write_atomically(&dir.join("model.safetensors"), &bytes)?;
    write_atomically(&dir.join("config.json"), config_json(config).as_bytes())?;
    Ok(())
}

fn config_json(config: &HfConfig) -> String {
    let m = &config.model;
    let architecture = match config.model_type.as_str() {
        "qwen2" => "Qwen2ForCausalLM",
        "mistral" => "MistralForCausalLM",
        _ => "LlamaForCausalLM",
    };
    let mut json = serde_json::json!({
        "architectures": [architecture],
        "model_type": config.model_type,
        "vocab_size": m.vocab_size,
        "hidden_size": m.hidden_size,
        "intermediate_size": m.intermediate_size,
        "num_hidden_layers": m.num_hidden_layers,
        "num_attention_heads": m.num_attention_heads,
        "num_key_value_heads": m.num_key_value_heads,
        "head_dim": m.head_dim,
        "rope_theta": m.rope_theta,
        "rms_norm_eps": m.rms_norm_eps,
        "tie_word_embeddings": m.tie_word_embeddings,
        "hidden_act": "silu",
        "torch_dtype": "float32",
    });
    if config.model_type != "qwen2" {
        json["attention_bias"] = Value::Bool(m.attention_bias);
    }
    // Written even when absent: transformers' LlamaConfig otherwise assumes
    // id 1, which in another vocabulary is some other token.
    json["bos_token_id"] = config.bos_token_id.map_or(Value::Null, Value::from);
    if !config.eos_token_ids.is_empty() {
        json["eos_token_id"] = if config.eos_token_ids.len() == 1 {
            config.eos_token_ids[0].into()
        } else {
            config.eos_token_ids.clone().into()
        };
    }
    let mut text = serde_json::to_string_pretty(&json).unwrap_or_default();
    text.push('\n');
    text
}
