//! Every objective against TRL's own code (or a transcription of the authors'
//! code where TRL lacks the loss): `fixtures/golden/objectives.json`, written
//! by `fixtures/golden/generate_objectives.py`, which records its sources
//! and versions. Tolerance: relative error ≤ 1e-6 in f64 for the loss, each
//! gradient vector (‖a − b‖ / ‖b‖) and each metric.
//!
//! Run with `--nocapture` to see the per-case maximum relative errors quoted
//! in `docs/objectives.md`.

use sapo_core::objectives::{
    AipoParams, DpoParams, HingeParams, IpoParams, NllScope, Objective, OrpoParams, PairBatch, PairOutput, SpinParams,
    SppoHardParams, SppoParams, sft,
};
use serde_json::Value;

const TOLERANCE: f64 = 1e-6;

fn golden() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/golden/objectives.json");
    let text = std::fs::read_to_string(path).unwrap_or_else(|error| panic!("reading {path}: {error}"));
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("parsing {path}: {error}"))
}

fn floats(value: &Value) -> Vec<f64> {
    value.as_array().expect("array").iter().map(|v| v.as_f64().expect("number")).collect()
}

fn counts(value: &Value) -> Vec<u32> {
    value.as_array().expect("array").iter().map(|v| v.as_u64().expect("count") as u32).collect()
}

fn param(params: &Value, name: &str) -> f64 {
    params[name].as_f64().unwrap_or_else(|| panic!("param {name}"))
}

fn objective(case: &Value) -> Objective {
    let params = &case["params"];
    match case["objective"].as_str().expect("objective") {
        "dpo" => {
            Objective::Dpo(DpoParams { beta: param(params, "beta"), label_smoothing: param(params, "label_smoothing") })
        }
        "spin" => Objective::Spin(SpinParams { beta: param(params, "beta") }),
        "hinge" => Objective::Hinge(HingeParams { beta: param(params, "beta") }),
        "ipo" => Objective::Ipo(IpoParams { beta: param(params, "beta") }),
        "sppo" => Objective::Sppo(SppoParams { beta: param(params, "beta") }),
        "sppo_hard" => Objective::SppoHard(SppoHardParams { beta: param(params, "beta") }),
        "orpo" => Objective::Orpo(OrpoParams {
            lambda: param(params, "lambda"),
            nll_scope: match params["nll_scope"].as_str().expect("nll_scope") {
                "prompt_and_response" => NllScope::PromptAndResponse,
                "response" => NllScope::Response,
                other => panic!("unknown scope {other}"),
            },
        }),
        "aipo" => Objective::Aipo(AipoParams {
            beta: param(params, "beta"),
            alpha: param(params, "alpha"),
            lambda: param(params, "lambda"),
            gamma: param(params, "gamma"),
            label_smoothing: param(params, "label_smoothing"),
        }),
        other => panic!("unknown objective {other}"),
    }
}

struct Columns<T> {
    float: Vec<Vec<T>>,
    chosen_counts: Vec<u32>,
    rejected_counts: Vec<u32>,
    nll_counts: Vec<u32>,
}

const FLOAT_INPUTS: [&str; 7] = [
    "policy_chosen_logps",
    "policy_rejected_logps",
    "reference_chosen_logps",
    "reference_rejected_logps",
    "chosen_win_rates",
    "rejected_win_rates",
    "chosen_nll_logps",
];

fn columns<T>(case: &Value, convert: impl Fn(f64) -> T) -> Columns<T> {
    let inputs = &case["inputs"];
    Columns {
        float: FLOAT_INPUTS.iter().map(|name| floats(&inputs[*name]).into_iter().map(&convert).collect()).collect(),
        chosen_counts: counts(&inputs["chosen_token_counts"]),
        rejected_counts: counts(&inputs["rejected_token_counts"]),
        nll_counts: counts(&inputs["chosen_nll_token_counts"]),
    }
}

fn batch<T>(columns: &Columns<T>) -> PairBatch<'_, T> {
    let f = &columns.float;
    PairBatch::new(&f[0], &f[1])
        .with_reference(&f[2], &f[3])
        .with_win_rates(&f[4], &f[5])
        .with_chosen_nll(&f[6], &columns.nll_counts)
        .with_token_counts(&columns.chosen_counts, &columns.rejected_counts)
}

fn relative(actual: &[f64], expected: &[f64]) -> f64 {
    assert_eq!(actual.len(), expected.len());
    let difference: f64 = actual.iter().zip(expected).map(|(a, e)| (a - e).powi(2)).sum::<f64>().sqrt();
    let scale: f64 = expected.iter().map(|e| e * e).sum::<f64>().sqrt();
    assert!(actual.iter().all(|a| a.is_finite()), "non-finite result {actual:?}");
    if scale == 0.0 { difference } else { difference / scale }
}

fn gradient<'a>(out: &'a PairOutput<f64>, name: &str) -> &'a [f64] {
    match name {
        "policy_chosen_logps" => &out.grad_policy_chosen,
        "policy_rejected_logps" => &out.grad_policy_rejected,
        "reference_chosen_logps" => &out.grad_reference_chosen,
        "reference_rejected_logps" => &out.grad_reference_rejected,
        "chosen_nll_logps" => &out.grad_chosen_nll,
        other => panic!("no gradient {other}"),
    }
}

/// The largest relative error of a case over loss, gradients and metrics.
fn check_pairwise_case(case: &Value) -> f64 {
    let name = case["name"].as_str().expect("name");
    let data = columns(case, |x| x);
    let out = objective(case).compute(&batch(&data)).unwrap_or_else(|error| panic!("{name}: {error}"));
    let mut worst = relative(&[out.loss], &[case["loss"].as_f64().expect("loss")]);
    let grads = case["grads"].as_object().expect("grads");
    for (input, expected) in grads {
        let error = relative(gradient(&out, input), &floats(expected));
        assert!(error <= TOLERANCE, "{name}: ∂loss/∂{input} relative error {error:e}");
        worst = worst.max(error);
    }
    // Inputs the golden has no gradient for must have none here either.
    for input in ["reference_chosen_logps", "chosen_nll_logps"] {
        if !grads.contains_key(input) {
            assert!(gradient(&out, input).is_empty(), "{name}: unexpected gradient for {input}");
        }
    }
    let metrics = case["metrics"].as_object().expect("metrics");
    assert_eq!(
        metrics.len(),
        out.metrics.len(),
        "{name}: metric names {:?}",
        out.metrics.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    for (metric, expected) in metrics {
        let actual = out.metrics.get(metric).unwrap_or_else(|| panic!("{name}: missing metric {metric}"));
        let error = relative(&[actual], &[expected.as_f64().expect("metric")]);
        assert!(error <= TOLERANCE, "{name}: metric {metric} = {actual}, golden {expected}");
        worst = worst.max(error);
    }
    assert!(worst <= TOLERANCE, "{name}: loss {} vs golden {}", out.loss, case["loss"]);
    worst
}

fn check_sft_case(case: &Value) -> f64 {
    let inputs = &case["inputs"];
    let out =
        sft::compute(&floats(&inputs["policy_chosen_logps"]), &counts(&inputs["chosen_token_counts"])).expect("valid");
    let errors = [
        relative(&[out.loss], &[case["loss"].as_f64().expect("loss")]),
        relative(&out.grad_logps, &floats(&case["grads"]["policy_chosen_logps"])),
        relative(
            &[out.metrics.get("num_tokens").expect("metric")],
            &[case["metrics"]["num_tokens"].as_f64().expect("n")],
        ),
    ];
    let worst = errors.iter().copied().fold(0.0, f64::max);
    assert!(worst <= TOLERANCE, "sft: relative error {worst:e}");
    worst
}

#[test]
fn every_objective_matches_trl_or_the_authors_code_in_f64() {
    let golden = golden();
    println!("goldens from {} with {}", golden["generator"], golden["versions"]);
    let cases = golden["cases"].as_array().expect("cases");
    assert!(cases.len() >= 20);
    for case in cases {
        let worst = if case["objective"] == "sft" { check_sft_case(case) } else { check_pairwise_case(case) };
        println!(
            "{:<40} {:<60} max relative error {worst:.1e}",
            case["name"].as_str().expect("name"),
            case["source"].as_str().expect("source")
        );
    }
}

#[test]
fn f32_results_are_the_rounded_f64_results_of_the_same_inputs() {
    // The f32 path converts each input exactly to f64 and rounds each result
    // once, so it must equal the f64 computation on the f32-rounded inputs to
    // within one f32 rounding (2⁻²⁴ relative).
    for case in golden()["cases"].as_array().expect("cases") {
        if case["objective"] == "sft" {
            continue;
        }
        let name = case["name"].as_str().expect("name");
        let single = columns(case, |x| x as f32);
        let widened = columns(case, |x| f64::from(x as f32));
        let objective = objective(case);
        let out32 = objective.compute(&batch(&single)).unwrap_or_else(|error| panic!("{name}: {error}"));
        let out64 = objective.compute(&batch(&widened)).unwrap_or_else(|error| panic!("{name}: {error}"));
        let ulp = f64::from(f32::EPSILON);
        assert!((f64::from(out32.loss) - out64.loss).abs() <= ulp * out64.loss.abs(), "{name}: loss");
        for (a, b) in out32.grad_policy_chosen.iter().zip(&out64.grad_policy_chosen) {
            assert!(
                (f64::from(*a) - b).abs() <= ulp * b.abs() + f64::from(f32::MIN_POSITIVE),
                "{name}: gradient {a} vs {b}"
            );
        }
    }
}
