//! Reading the tiny models of `fixtures/models/` for the integration tests
//! (sapo-core itself does no I/O; the real loaders live in sapo-host).

#![allow(dead_code)] // each test file uses a different subset

use safetensors::SafeTensors;
use sapo_core::cpu::CpuBackend;
use sapo_core::model::{LlamaConfig, LlamaParams};
use serde_json::Value;

pub fn fixture(model: &str, file: &str) -> Vec<u8> {
    let path = format!("{}/../fixtures/models/{model}/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|error| panic!("reading {path}: {error}"))
}

pub fn json(model: &str, file: &str) -> Value {
    serde_json::from_slice(&fixture(model, file)).unwrap_or_else(|error| panic!("{model}/{file}: {error}"))
}

/// The fields of a Hugging Face `config.json` sapo's model reads.
pub fn config(model: &str) -> LlamaConfig {
    let json = json(model, "config.json");
    let get = |key: &str| json[key].as_u64().unwrap_or_else(|| panic!("{key}")) as usize;
    let heads = get("num_attention_heads");
    let rope_theta =
        json["rope_parameters"]["rope_theta"].as_f64().or_else(|| json["rope_theta"].as_f64()).expect("rope θ");
    LlamaConfig {
        vocab_size: get("vocab_size"),
        hidden_size: get("hidden_size"),
        intermediate_size: get("intermediate_size"),
        num_hidden_layers: get("num_hidden_layers"),
        num_attention_heads: heads,
        num_key_value_heads: get("num_key_value_heads"),
        head_dim: json["head_dim"].as_u64().map_or(get("hidden_size") / heads, |d| d as usize),
        rope_theta: rope_theta as f32,
        rms_norm_eps: json["rms_norm_eps"].as_f64().expect("rms_norm_eps") as f32,
        tie_word_embeddings: json["tie_word_embeddings"].as_bool().unwrap_or(false),
        attention_bias: json["model_type"] == "qwen2" || json["attention_bias"].as_bool().unwrap_or(false),
    }
}

pub fn f32s(tensors: &SafeTensors, name: &str) -> Vec<f32> {
    let view = tensors.tensor(name).unwrap_or_else(|error| panic!("{name}: {error}"));
    view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

pub fn f64s(tensors: &SafeTensors, name: &str) -> Vec<f64> {
    let view = tensors.tensor(name).unwrap_or_else(|error| panic!("{name}: {error}"));
    view.data().chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes"))).collect()
}

/// The model's weights from its `model.safetensors`, shapes checked.
pub fn load_params(backend: &CpuBackend, model: &str, config: &LlamaConfig) -> LlamaParams<CpuBackend> {
    let bytes = fixture(model, "model.safetensors");
    let weights = SafeTensors::deserialize(&bytes).expect("model.safetensors");
    LlamaParams::from_host(backend, config, |spec| {
        let view = weights.tensor(&spec.name)?;
        assert_eq!(view.shape(), spec.shape.as_slice(), "{}", spec.name);
        Ok::<_, Box<dyn std::error::Error>>(f32s(&weights, &spec.name))
    })
    .expect("every tensor present")
}

/// ‖actual − expected‖ / ‖expected‖; non-finite values fail.
pub fn relative(actual: &[f32], expected: &[f64]) -> f64 {
    assert_eq!(actual.len(), expected.len());
    assert!(actual.iter().all(|a| a.is_finite()), "non-finite value");
    let difference: f64 = actual.iter().zip(expected).map(|(a, e)| (f64::from(*a) - e).powi(2)).sum::<f64>().sqrt();
    difference / expected.iter().map(|e| e * e).sum::<f64>().sqrt()
}
