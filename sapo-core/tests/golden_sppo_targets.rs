//! SPPO's per-prompt targets against a transcription of the authors'
//! pipeline (uclaml/SPPO `scripts/compute_prob.py`; the generator is
//! `fixtures/golden/generate_sppo_targets.py`): the win rates
//! `P̂_i = (1/K)·Σ_j σ(s_i − s_j)`, the argmax/argmin pair with numpy's
//! first-index tie rule, and the chosen and rejected targets, from scores and
//! from the authors' K×K probability matrix.

use sapo_core::sppo::{TiePolicy, select_pair, win_rates_from_matrix, win_rates_from_scores};
use serde_json::Value;

fn golden() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/golden/sppo_targets.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("golden file")).expect("golden JSON")
}

fn floats(value: &Value) -> Vec<f64> {
    value.as_array().expect("array").iter().map(|v| v.as_f64().expect("number")).collect()
}

fn close(actual: f64, expected: f64) -> bool {
    (actual - expected).abs() <= 1e-14 * expected.abs().max(1.0)
}

#[test]
fn win_rates_pairs_and_targets_match_the_authors_computation() {
    let golden = golden();
    let cases = golden["cases"].as_array().expect("cases");
    assert!(cases.len() >= 20);
    for (index, case) in cases.iter().enumerate() {
        let scores = floats(&case["scores"]);
        let k = scores.len();
        let expected_rates = floats(&case["win_rates"]);
        let rates = win_rates_from_scores(&scores).unwrap();
        let matrix: Vec<f64> = case["probability"].as_array().unwrap().iter().flat_map(floats).collect();
        let from_matrix = win_rates_from_matrix(&matrix, k).unwrap();
        for i in 0..k {
            assert!(
                close(rates[i], expected_rates[i]),
                "case {index}, response {i}: {} vs {}",
                rates[i],
                expected_rates[i]
            );
            assert!(close(from_matrix[i], expected_rates[i]), "case {index}, matrix row {i}");
        }
        let pair = select_pair(&scores, &rates, TiePolicy::Keep).unwrap().expect("Keep always gives a pair");
        assert_eq!(pair.chosen as u64, case["chosen"].as_u64().unwrap(), "case {index}: chosen");
        assert_eq!(pair.rejected as u64, case["rejected"].as_u64().unwrap(), "case {index}: rejected");
        assert!(close(pair.chosen_win_rate, case["chosen_probs_win"].as_f64().unwrap()), "case {index}: win target");
        assert!(
            close(pair.rejected_win_rate, case["chosen_probs_lose"].as_f64().unwrap()),
            "case {index}: lose target"
        );
    }
}
