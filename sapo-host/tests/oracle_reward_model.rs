//! The reward-model oracle against transformers' `LlamaForSequenceClassification`
//! on a tiny random model (`fixtures/reward_model/generate.py` wrote the
//! model and the goldens): the same token ids and the same scores.

use common::fixtures_dir;
use sapo_host::train::config::resolve;
use sapo_host::train::oracle::{Judgement, Oracle, RewardModelOracle};
use serde_json::Value;

mod common;

fn golden() -> Value {
    let text = std::fs::read_to_string(fixtures_dir().join("reward_model/scores.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn scores_match_transformers_sequence_classification() {
    let mut oracle = RewardModelOracle::load(&fixtures_dir().join("reward_model/model")).unwrap();
    let golden = golden();
    let pairs = golden["pairs"].as_array().unwrap();
    for pair in pairs {
        let (prompt, response) = (pair["prompt"].as_str().unwrap(), pair["response"].as_str().unwrap());
        let ids: Vec<u32> = pair["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(oracle.conversation_ids(prompt, response).unwrap(), ids, "{prompt:?} / {response:?}");
    }
    // All responses to a prompt in one batch, as SPPO asks: each scored alone.
    let prompt = pairs[0]["prompt"].as_str().unwrap();
    let same_prompt: Vec<&Value> = pairs.iter().filter(|p| p["prompt"] == prompt).collect();
    let responses: Vec<String> = same_prompt.iter().map(|p| p["response"].as_str().unwrap().to_string()).collect();
    let Judgement::Scores(batched) = oracle.judge(prompt, &responses, &[]).unwrap() else { panic!("scores") };
    for (score, pair) in batched.iter().zip(&same_prompt) {
        let expected = pair["score"].as_f64().unwrap();
        assert!((score - expected).abs() <= 1e-4 * expected.abs().max(1.0), "batched: {score} vs {expected}");
    }
    for pair in pairs {
        let (prompt, response) = (pair["prompt"].as_str().unwrap(), pair["response"].as_str().unwrap());
        let score = oracle.scores(prompt, &[response.to_string()]).unwrap()[0];
        let expected = pair["score"].as_f64().unwrap();
        assert!((score - expected).abs() <= 1e-4 * expected.abs().max(1.0), "{prompt:?}: {score} vs {expected}");
    }
}

#[test]
fn a_causal_language_model_is_refused_as_a_reward_model() {
    let error = RewardModelOracle::load(&fixtures_dir().join("task/model")).unwrap_err().to_string();
    assert!(error.contains("ForSequenceClassification") && error.contains("LlamaForCausalLM"), "{error}");
}

#[test]
fn oracle_reward_model_needs_a_model_directory() {
    let error = resolve(None, &["method=\"sppo\"".into(), "oracle=\"reward_model\"".into()]).unwrap_err();
    assert!(error.to_string().contains("oracle_model"), "{error}");
}

#[test]
fn sppo_trains_with_the_reward_model_as_its_oracle() {
    let data = common::train_subset("oracle-reward-model", "prompts", 0, 4);
    let dir = data.parent().unwrap().to_path_buf();
    let model = fixtures_dir().join("reward_model/model");
    let cfg = resolve(
        None,
        &[
            format!("output_dir={:?}", dir.join("run").display().to_string()),
            format!("data={:?}", data.display().to_string()),
            "method=\"sppo\"".into(),
            "iterations=1".into(),
            "num_samples=3".into(),
            "max_new_tokens=8".into(),
            "per_device_train_batch_size=4".into(),
            "eval_data=\"\"".into(),
            "oracle=\"reward_model\"".into(),
            format!("oracle_model={:?}", model.display().to_string()),
        ],
    )
    .unwrap();
    let summary = sapo_host::train::Trainer::new(cfg).unwrap().run(true).unwrap();
    assert!(summary.steps >= 1);
    let samples = std::fs::read_to_string(dir.join("run/samples/iteration-1.jsonl")).unwrap();
    let oracle = RewardModelOracle::load(&model).unwrap();
    for line in samples.lines() {
        let record: Value = serde_json::from_str(line).unwrap();
        let responses: Vec<String> =
            record["responses"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect();
        let logged: Vec<f64> = record["scores"].as_array().unwrap().iter().map(|s| s.as_f64().unwrap()).collect();
        // The prompt the oracle saw is the user message.
        let prompt = record["prompt"].as_str().unwrap();
        // Exact: the samples file's floats round-trip (serde_json's
        // `float_roundtrip` parsing; without it a 17-digit number can come
        // back one ulp off).
        assert_eq!(oracle.scores(prompt, &responses).unwrap(), logged);
    }
}
