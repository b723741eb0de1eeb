//! The real model end to end against transformers loading the same GGUF
//! (`fixtures/gguf/generate_smollm2_generation.py`): the chat-templated
//! prompt's token ids, the last-position logits (≤ 1e-4 relative over the
//! sampled entries, identical top-20 ids), and a 32-token greedy
//! continuation (identical tokens).

use std::path::{Path, PathBuf};

use sapo_core::cpu::CpuBackend;
use sapo_core::model::{self, DecodeBuffers, GenerationConfig, KvCache};
use sapo_core::rng::SapoRng;
use sapo_core::sampling::SamplingParams;
use sapo_host::chat_template::Message;
use sapo_host::model_files;
use serde_json::Value;

fn model_path() -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/downloads/SmolLM2-135M-Instruct.Q4_1.gguf");
    if path.exists() {
        Some(path)
    } else {
        println!(
            "skipped: fixtures/downloads/SmolLM2-135M-Instruct.Q4_1.gguf not present (run fixtures/fetch_smollm2.sh)"
        );
        None
    }
}

fn numbers(value: &Value) -> Vec<f64> {
    value.as_array().expect("array").iter().map(|v| v.as_f64().expect("number")).collect()
}

#[test]
fn smollm2_logits_and_greedy_answers_match_transformers() {
    let Some(path) = model_path() else { return };
    let golden: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/gguf/smollm2_generation.json"),
        )
        .expect("golden"),
    )
    .expect("json");
    let backend = CpuBackend::new();
    let loaded = model_files::load(&backend, &path).expect("model");
    let template = loaded.chat_template.as_ref().expect("SmolLM2 ships a chat template");
    let cases = golden["cases"].as_array().expect("cases");
    let mut prompts = Vec::new();
    for case in cases {
        let text =
            template.render(&[Message::new("user", case["prompt"].as_str().expect("prompt"))], true).expect("render");
        let ids = loaded.tokenizer.encode(&text, false).expect("encode");
        let expected: Vec<u32> = numbers(&case["prompt_ids"]).into_iter().map(|v| v as u32).collect();
        assert_eq!(ids, expected, "prompt ids");
        prompts.push(ids);
    }
    let config = &loaded.config;
    let total: usize = prompts.iter().map(Vec::len).sum();
    let mut cache = KvCache::new(&backend, config, prompts.len(), 128).expect("alloc");
    let mut buffers = DecodeBuffers::new(&backend, config, total, prompts.len()).expect("alloc");
    let entries: Vec<(usize, &[u32])> = prompts.iter().enumerate().map(|(i, p)| (i, p.as_slice())).collect();
    let logits =
        model::forward_cached(&backend, config, &loaded.params, &mut cache, &mut buffers, &entries).expect("prefill");
    let vocab = config.vocab_size;
    for (i, case) in cases.iter().enumerate() {
        let row = &logits[i * vocab..][..vocab];
        let ids: Vec<usize> = numbers(&case["sample_ids"]).into_iter().map(|v| v as usize).collect();
        let expected = numbers(&case["sample_values"]);
        let diff: f64 = ids.iter().zip(&expected).map(|(&id, e)| (f64::from(row[id]) - e).powi(2)).sum::<f64>().sqrt();
        let error = diff / expected.iter().map(|e| e * e).sum::<f64>().sqrt();
        let mut order: Vec<usize> = (0..vocab).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
        let top: Vec<f64> = order[..20].iter().map(|&id| id as f64).collect();
        println!("prompt {i}: logits relative error {error:.1e}");
        assert!(error <= 1e-4, "prompt {i}: logits relative error {error:e}");
        assert_eq!(top, numbers(&case["top_ids"]), "prompt {i}: top-20 ids");
    }
    let prefixes: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
    let generation =
        GenerationConfig { max_new_tokens: 32, stop_ids: loaded.eos_ids.clone(), sampling: SamplingParams::greedy() };
    let mut rngs: Vec<SapoRng> = (0..prompts.len()).map(|i| SapoRng::from_seed_u64(i as u64)).collect();
    let outputs =
        model::generate(&backend, config, &loaded.params, &mut cache, &mut buffers, &prefixes, &generation, &mut rngs)
            .expect("generate");
    for (case, output) in cases.iter().zip(&outputs) {
        let expected: Vec<u32> = numbers(&case["greedy"]).into_iter().map(|v| v as u32).collect();
        assert_eq!(output, &expected, "greedy continuation of {:?}", case["prompt"]);
        let text = loaded.tokenizer.decode(output, true).expect("decode");
        assert_eq!(text, case["greedy_text"].as_str().expect("text"));
    }
}
