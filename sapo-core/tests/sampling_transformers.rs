//! sapo's sampling filters against transformers' own warpers
//! (`fixtures/golden/generate_warpers.py`): the filtered distribution over
//! 200 tokens for seven (temperature, top-k, top-p) settings. Tolerance
//! 1e-6 absolute per probability, and the same set of removed tokens.

use sapo_core::sampling::{SamplingParams, filtered_probabilities};
use serde_json::Value;

#[test]
fn filtered_distributions_equal_transformers_warpers() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/golden/warpers.json");
    let golden: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("golden")).expect("json");
    for case in golden["cases"].as_array().expect("cases") {
        let params = SamplingParams {
            greedy: false,
            temperature: case["temperature"].as_f64().expect("t") as f32,
            top_k: case["top_k"].as_u64().expect("k") as usize,
            top_p: case["top_p"].as_f64().expect("p") as f32,
        };
        let logits: Vec<f32> =
            case["logits"].as_array().expect("logits").iter().map(|v| v.as_f64().expect("f") as f32).collect();
        let expected: Vec<f64> =
            case["probabilities"].as_array().expect("p").iter().map(|v| v.as_f64().expect("f")).collect();
        let actual = filtered_probabilities(&logits, &params).expect("valid");
        let worst = actual.iter().zip(&expected).map(|(a, e)| (a - e).abs()).fold(0.0, f64::max);
        for (index, (a, e)) in actual.iter().zip(&expected).enumerate() {
            assert_eq!(*a == 0.0, *e == 0.0, "{params:?}: token {index} kept differently ({a} vs {e})");
        }
        println!("{params:?}: max abs difference {worst:.1e}");
        assert!(worst <= 1e-6, "{params:?}: max abs difference {worst:e}");
    }
}
