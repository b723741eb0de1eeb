//! The whole model against transformers: tiny random LLaMA (tied and untied)
//! and Qwen2 (q/k/v biases) models in `fixtures/models/`, written with their
//! float64 goldens by `fixtures/models/generate_tiny_models.py`.
//!
//! transformers runs a right-padded batch; sapo runs the same sequences
//! packed end to end. Tolerances (sapo in f32 against transformers in f64):
//! per-token and per-sequence log-probs ≤ 1e-5 relative, the DPO loss ≤ 1e-5,
//! each parameter's gradient ≤ 1e-4 relative (‖a − b‖/‖b‖ per tensor).

use safetensors::SafeTensors;
use sapo_core::backend::Backend;
use sapo_core::cpu::CpuBackend;
use sapo_core::model::{self, Activations, DeviceBatch, LlamaConfig, LlamaParams, PackedBatch};
use sapo_core::objectives::{DpoParams, Objective, PairBatch};
use serde_json::Value;

fn fixture(model: &str, file: &str) -> Vec<u8> {
    let path = format!("{}/../fixtures/models/{model}/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|error| panic!("reading {path}: {error}"))
}

/// The fields of a Hugging Face `config.json` sapo's model reads.
fn config(model: &str) -> LlamaConfig {
    let json: Value = serde_json::from_slice(&fixture(model, "config.json")).expect("config.json");
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

fn f32s(tensors: &SafeTensors, name: &str) -> Vec<f32> {
    let view = tensors.tensor(name).unwrap_or_else(|error| panic!("{name}: {error}"));
    view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

fn f64s(tensors: &SafeTensors, name: &str) -> Vec<f64> {
    let view = tensors.tensor(name).unwrap_or_else(|error| panic!("{name}: {error}"));
    view.data().chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes"))).collect()
}

fn relative(actual: &[f32], expected: &[f64]) -> f64 {
    assert_eq!(actual.len(), expected.len());
    assert!(actual.iter().all(|a| a.is_finite()), "non-finite value");
    let difference: f64 = actual.iter().zip(expected).map(|(a, e)| (f64::from(*a) - e).powi(2)).sum::<f64>().sqrt();
    difference / expected.iter().map(|e| e * e).sum::<f64>().sqrt()
}

fn check_model(name: &str) {
    let config = config(name);
    config.validate().expect("valid config");
    let weights_bytes = fixture(name, "model.safetensors");
    let weights = SafeTensors::deserialize(&weights_bytes).expect("model.safetensors");
    let golden_bytes = fixture(name, "golden.safetensors");
    let golden = SafeTensors::deserialize(&golden_bytes).expect("golden.safetensors");
    let meta: Value = serde_json::from_slice(&fixture(name, "golden.json")).expect("golden.json");

    let backend = CpuBackend::new();
    let params = LlamaParams::from_host(&backend, &config, |spec| {
        let view = weights.tensor(&spec.name)?;
        assert_eq!(view.shape(), spec.shape.as_slice(), "{}", spec.name);
        Ok::<_, Box<dyn std::error::Error>>(f32s(&weights, &spec.name))
    })
    .expect("every tensor present");

    let sequences: Vec<(Vec<u32>, Vec<bool>)> = meta["sequences"]
        .as_array()
        .expect("sequences")
        .iter()
        .map(|s| {
            let tokens =
                s["tokens"].as_array().expect("tokens").iter().map(|t| t.as_u64().expect("id") as u32).collect();
            let mask = s["mask"].as_array().expect("mask").iter().map(|m| m.as_bool().expect("bool")).collect();
            (tokens, mask)
        })
        .collect();
    let views: Vec<(&[u32], &[bool])> = sequences.iter().map(|(t, m)| (t.as_slice(), m.as_slice())).collect();
    let batch = PackedBatch::new(&views, config.vocab_size).expect("valid batch");
    // Capacity above the batch's size: buffers sized for a larger batch serve this one.
    let mut acts = Activations::new(&backend, &config, batch.n_tokens() + 5, batch.n_rows() + 3, 6).expect("alloc");
    let device_batch = DeviceBatch::upload(&backend, &batch).expect("upload");
    let logprobs = model::forward(&backend, &config, &params, &device_batch, &mut acts).expect("forward");

    let row_logps = backend.download(&acts.logps).expect("download")[..batch.n_rows()].to_vec();
    let errors = [
        ("row log-probs", relative(&row_logps, &f64s(&golden, "row_logps"))),
        ("sequence sums", relative(&logprobs.sums, &f64s(&golden, "sums"))),
        ("sequence means", relative(&logprobs.means, &f64s(&golden, "means"))),
    ];
    for (what, error) in errors {
        println!("{name}: {what}: relative error {error:.1e}");
        assert!(error <= 1e-5, "{name}: {what}: relative error {error:e}");
    }

    // The DPO loss of pairs (0, 1) and (2, 3) against fixed reference log-probs.
    let reference: Vec<f32> = meta["reference_logps"]
        .as_array()
        .expect("reference")
        .iter()
        .map(|v| v.as_f64().expect("f64") as f32)
        .collect();
    let (chosen, rejected) = ([logprobs.sums[0], logprobs.sums[2]], [logprobs.sums[1], logprobs.sums[3]]);
    let (ref_chosen, ref_rejected) = ([reference[0], reference[2]], [reference[1], reference[3]]);
    let pairs = PairBatch::new(&chosen, &rejected).with_reference(&ref_chosen, &ref_rejected);
    let dpo = Objective::Dpo(DpoParams { beta: meta["beta"].as_f64().expect("β"), label_smoothing: 0.0 })
        .compute(&pairs)
        .expect("dpo");
    let loss_error = relative(&[dpo.loss], &f64s(&golden, "loss"));
    println!("{name}: DPO loss: relative error {loss_error:.1e}");
    assert!(loss_error <= 1e-5, "{name}: loss relative error {loss_error:e}");

    let d_sums = [
        dpo.grad_policy_chosen[0],
        dpo.grad_policy_rejected[0],
        dpo.grad_policy_chosen[1],
        dpo.grad_policy_rejected[1],
    ];
    let mut grads = LlamaParams::zeros(&backend, &config).expect("alloc");
    model::backward(&backend, &config, &params, &mut grads, &device_batch, &mut acts, &d_sums, &[0.0; 4])
        .expect("backward");
    let specs = grads.tensor_specs(&config);
    let mut computed = Vec::new();
    grads
        .visit(|buf| {
            computed.push(backend.download(buf)?);
            Ok::<_, sapo_core::cpu::CpuError>(())
        })
        .expect("download");
    let mut worst = 0.0_f64;
    for (spec, values) in specs.iter().zip(&computed) {
        let error = relative(values, &f64s(&golden, &format!("grad.{}", spec.name)));
        assert!(error <= 1e-4, "{name}: gradient of {}: relative error {error:e}", spec.name);
        worst = worst.max(error);
    }
    println!("{name}: gradients of {} tensors: max relative error {worst:.1e}", specs.len());
}

#[test]
fn tiny_llama_with_tied_embeddings_matches_transformers() {
    check_model("tiny-llama");
}

#[test]
fn tiny_llama_with_untied_lm_head_matches_transformers() {
    check_model("tiny-llama-untied");
}

#[test]
fn tiny_qwen2_with_qkv_biases_matches_transformers() {
    check_model("tiny-qwen2");
}
