//! Generation with the key/value cache against transformers
//! (`fixtures/models/generate_generation_goldens.py`, float64) and against
//! sapo's own full forward: last-position logits ≤ 1e-5 relative, greedy
//! continuations identical, cached decode equal to a fresh prefill at every
//! position.

mod common;

use common::{config, json, load_params};
use sapo_core::cpu::CpuBackend;
use sapo_core::model::{self, DecodeBuffers, GenerationConfig, KvCache};
use sapo_core::rng::SapoRng;
use sapo_core::sampling::SamplingParams;
use serde_json::Value;

const MODELS: [&str; 3] = ["tiny-llama", "tiny-llama-untied", "tiny-qwen2"];

fn ids(value: &Value) -> Vec<u32> {
    value.as_array().expect("ids").iter().map(|v| v.as_u64().expect("id") as u32).collect()
}

fn relative(actual: &[f32], expected: &[f64]) -> f64 {
    let difference: f64 = actual.iter().zip(expected).map(|(a, e)| (f64::from(*a) - e).powi(2)).sum::<f64>().sqrt();
    difference / expected.iter().map(|e| e * e).sum::<f64>().sqrt()
}

#[test]
fn prefill_logits_and_greedy_continuations_match_transformers() {
    for name in MODELS {
        let config = config(name);
        let backend = CpuBackend::new();
        let params = load_params(&backend, name, &config);
        let golden = json(name, "generation.json");
        let cases = golden["cases"].as_array().expect("cases");
        let mut cache = KvCache::new(&backend, &config, cases.len(), 32).expect("alloc");
        let mut buffers = DecodeBuffers::new(&backend, &config, 64, cases.len()).expect("alloc");
        let prompts: Vec<Vec<u32>> = cases.iter().map(|c| ids(&c["prompt"])).collect();
        // Last-position logits of every prompt, prefilled together.
        let entries: Vec<(usize, &[u32])> = prompts.iter().enumerate().map(|(i, p)| (i, p.as_slice())).collect();
        let logits =
            model::forward_cached(&backend, &config, &params, &mut cache, &mut buffers, &entries).expect("prefill");
        let vocab = config.vocab_size;
        for (i, case) in cases.iter().enumerate() {
            let expected: Vec<f64> =
                case["last_logits"].as_array().expect("logits").iter().map(|v| v.as_f64().expect("f64")).collect();
            let error = relative(&logits[i * vocab..][..vocab], &expected);
            println!("{name}: prompt {i}: last-position logits relative error {error:.1e}");
            assert!(error <= 1e-5, "{name}: prompt {i}: logits relative error {error:e}");
        }
        // Greedy, batched.
        let prefixes: Vec<&[u32]> = prompts.iter().map(|p| p.as_slice()).collect();
        let generation =
            GenerationConfig { max_new_tokens: 12, stop_ids: Vec::new(), sampling: SamplingParams::greedy() };
        let mut rngs: Vec<SapoRng> = (0..prompts.len()).map(|i| SapoRng::from_seed_u64(i as u64)).collect();
        let outputs =
            model::generate(&backend, &config, &params, &mut cache, &mut buffers, &prefixes, &generation, &mut rngs)
                .expect("generate");
        for (case, output) in cases.iter().zip(&outputs) {
            assert_eq!(output, &ids(&case["greedy"]), "{name}: greedy continuation");
        }
    }
}

#[test]
fn cached_decode_equals_a_fresh_prefill_at_every_position() {
    let name = "tiny-qwen2";
    let config = config(name);
    let backend = CpuBackend::new();
    let params = load_params(&backend, name, &config);
    let tokens: Vec<u32> = (0..14).map(|i| (i * 29 % 60 + 3) as u32).collect();
    let mut cache = KvCache::new(&backend, &config, 2, 20).expect("alloc");
    let mut buffers = DecodeBuffers::new(&backend, &config, 32, 2).expect("alloc");
    let vocab = config.vocab_size;
    // Slot 0 decodes one token at a time after a 3-token prefix.
    model::forward_cached(&backend, &config, &params, &mut cache, &mut buffers, &[(0, &tokens[..3])]).expect("prefill");
    let mut worst = 0.0_f64;
    for end in 4..=tokens.len() {
        let decoded =
            model::forward_cached(&backend, &config, &params, &mut cache, &mut buffers, &[(0, &tokens[end - 1..end])])
                .expect("decode");
        cache.clear(1);
        let fresh = model::forward_cached(&backend, &config, &params, &mut cache, &mut buffers, &[(1, &tokens[..end])])
            .expect("prefill");
        let expected: Vec<f64> = fresh[..vocab].iter().map(|&x| f64::from(x)).collect();
        let error = relative(&decoded[..vocab], &expected);
        worst = worst.max(error);
        assert!(error <= 1e-5, "position {end}: relative error {error:e}");
    }
    println!("cached decode vs fresh prefill: max relative error {worst:.1e}");
}

#[test]
fn a_continuation_does_not_depend_on_its_batch_mates() {
    let name = "tiny-llama";
    let config = config(name);
    let backend = CpuBackend::new();
    let params = load_params(&backend, name, &config);
    let generation = GenerationConfig { max_new_tokens: 10, stop_ids: vec![2], sampling: SamplingParams::sapo() };
    let prompts: [&[u32]; 3] = [&[5, 9, 11], &[40, 41], &[7, 7, 7, 7, 7]];
    let mut cache = KvCache::new(&backend, &config, 3, 24).expect("alloc");
    let mut buffers = DecodeBuffers::new(&backend, &config, 32, 3).expect("alloc");
    let mut rngs: Vec<SapoRng> = (0..3).map(|i| SapoRng::from_seed_and_stream(9, i)).collect();
    let together =
        model::generate(&backend, &config, &params, &mut cache, &mut buffers, &prompts, &generation, &mut rngs)
            .expect("generate");
    let mut alone_rng = vec![SapoRng::from_seed_and_stream(9, 1)];
    let alone = model::generate(
        &backend,
        &config,
        &params,
        &mut cache,
        &mut buffers,
        &prompts[1..2],
        &generation,
        &mut alone_rng,
    )
    .expect("generate");
    assert_eq!(together[1], alone[0]);
    assert!(together.iter().all(|out| !out.is_empty() && out.len() <= 10));
}
