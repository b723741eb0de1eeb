//! The whole model against transformers: tiny random LLaMA (tied and untied)
//! and Qwen2 (q/k/v biases) models in `fixtures/models/`, written with their
//! float64 goldens by `fixtures/models/generate_tiny_models.py`.
//!
//! transformers runs a right-padded batch; sapo runs the same sequences
//! packed end to end. Tolerances (sapo in f32 against transformers in f64):
//! per-token and per-sequence log-probs ≤ 1e-5 relative, the DPO loss ≤ 1e-5,
//! each parameter's gradient ≤ 1e-4 relative (‖a − b‖/‖b‖ per tensor).
//!
//! bf16 mixed precision is checked twice: against `golden_bf16.safetensors`
//! (transformers with the same bf16 rounding of every matrix product's
//! operands, `fixtures/models/generate_bf16_goldens.py`) within the f32
//! tolerances above (gradients 5e-3: see `SAME_ROUNDING`), which shows that
//! sapo computes that definition; and
//! against the unrounded f64 goldens, which measures what the rounding costs
//! (log-probs and loss ≤ 1e-2, gradients ≤ 5e-2).

mod common;

use common::{config, f64s, fixture, load_params, relative};
use safetensors::SafeTensors;
use sapo_core::backend::Backend;
use sapo_core::cpu::CpuBackend;
use sapo_core::model::{self, Activations, DeviceBatch, LlamaParams, PackedBatch, Precision};
use sapo_core::objectives::{DpoParams, Objective, PairBatch};
use serde_json::Value;

/// What one run of [`check_model`] computed: each tensor's gradient, and
/// the largest relative error of the log-probs and of the gradients.
struct Checked {
    grads: Vec<Vec<f32>>,
    logp_error: f64,
    grad_error: f64,
}

/// The f32 tolerances: log-probs and loss, gradients.
const TIGHT: (f64, f64) = (1e-5, 1e-4);
/// Against transformers with the same bf16 rounding: as [`TIGHT`] for the
/// log-probs, 5e-3 for the gradients. sapo's log-probs agree to 6.0e-8 and
/// its gradients to 6.5e-7 (tiny-qwen2), 7.5e-4 (tiny-llama) and 2.9e-3
/// (tiny-llama-untied, layer 0's k_proj): an operand whose f32 value lies
/// within sapo's and torch's last-bit differences of a bf16 rounding
/// boundary (a logit gradient, most often) rounds the other way, and the
/// difference grows layer by layer on the way back. The goldens are that
/// sensitive: one ulp of noise on each operand moves their log-probs by up
/// to 4.2e-4 and their gradients by up to 7.8e-3
/// (`generate_bf16_goldens.py --check`). So a change of sapo's summation
/// order can flip other operands and fail this check without being wrong;
/// `--check` tells which models are exposed. What the check catches: goldens
/// whose LM head is not rounded differ by 4.5e-4 to 6.6e-4 in the log-probs
/// and 7.6e-3 to 8.5e-3 in the gradients.
const SAME_ROUNDING: (f64, f64) = (1e-5, 5e-3);

fn check_model(name: &str, recompute: bool) -> Vec<Vec<f32>> {
    check_model_in(name, recompute, Precision::F32, "golden.safetensors", TIGHT).grads
}

/// Runs `name`'s batch forward and backward in `precision` and compares
/// with the goldens in `golden_file` within `(log-prob, gradient)`
/// tolerances.
fn check_model_in(
    name: &str,
    recompute: bool,
    precision: Precision,
    golden_file: &str,
    (logp_tolerance, grad_tolerance): (f64, f64),
) -> Checked {
    let config = config(name);
    config.validate().expect("valid config");
    let golden_bytes = fixture(name, golden_file);
    let golden = SafeTensors::deserialize(&golden_bytes).expect("golden.safetensors");
    let meta: Value = serde_json::from_slice(&fixture(name, "golden.json")).expect("golden.json");
    let backend = CpuBackend::new();
    let params = load_params(&backend, name, &config);

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
    let (tokens, rows) = (batch.n_tokens() + 5, batch.n_rows() + 3);
    let mut acts = if recompute {
        Activations::with_recomputation(&backend, &config, tokens, rows, 6).expect("alloc")
    } else {
        Activations::new(&backend, &config, tokens, rows, 6).expect("alloc")
    };
    acts.set_precision(&backend, &config, precision).expect("alloc");
    let device_batch = DeviceBatch::upload(&backend, &batch).expect("upload");
    let logprobs = model::forward(&backend, &config, &params, &device_batch, &mut acts).expect("forward");

    let row_logps = backend.download(&acts.logps).expect("download")[..batch.n_rows()].to_vec();
    let errors = [
        ("row log-probs", relative(&row_logps, &f64s(&golden, "row_logps"))),
        ("sequence sums", relative(&logprobs.sums, &f64s(&golden, "sums"))),
        ("sequence means", relative(&logprobs.means, &f64s(&golden, "means"))),
    ];
    let mut logp_error = 0.0_f64;
    for (what, error) in errors {
        println!("{name} ({}): {what}: relative error {error:.1e}", precision.name());
        assert!(error <= logp_tolerance, "{name}: {what}: relative error {error:e}");
        logp_error = logp_error.max(error);
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
    assert!(loss_error <= logp_tolerance, "{name}: loss relative error {loss_error:e}");

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
        assert!(error <= grad_tolerance, "{name}: gradient of {}: relative error {error:e}", spec.name);
        worst = worst.max(error);
    }
    println!(
        "{name} ({}): gradients of {} tensors: max relative error {worst:.1e} (recompute: {recompute})",
        precision.name(),
        specs.len()
    );
    Checked { grads: computed, logp_error, grad_error: worst }
}

#[test]
fn tiny_llama_with_tied_embeddings_matches_transformers() {
    check_model("tiny-llama", false);
}

#[test]
fn tiny_llama_with_untied_lm_head_matches_transformers() {
    check_model("tiny-llama-untied", false);
}

#[test]
fn tiny_qwen2_with_qkv_biases_matches_transformers() {
    check_model("tiny-qwen2", false);
}

#[test]
fn activation_recomputation_gives_bit_identical_gradients() {
    // The same operations in the same order: the same bits.
    assert_eq!(check_model("tiny-qwen2", true), check_model("tiny-qwen2", false));
}

#[test]
fn bf16_mixed_precision_matches_transformers_with_the_same_rounding() {
    for name in ["tiny-llama", "tiny-llama-untied", "tiny-qwen2"] {
        check_model_in(name, false, Precision::Bf16, "golden_bf16.safetensors", SAME_ROUNDING);
    }
}

#[test]
fn bf16_mixed_precision_stays_near_the_unrounded_f64_goldens() {
    for name in ["tiny-llama", "tiny-llama-untied", "tiny-qwen2"] {
        let f32 = check_model_in(name, false, Precision::F32, "golden.safetensors", TIGHT);
        // What the rounding costs: at most 2.0e-3 in the log-probs and 2.9e-2
        // in a gradient (tiny-llama's; 2.6e-2 before the LM head was rounded
        // too), against the O(1) of a broken pass.
        let bf16 = check_model_in(name, false, Precision::Bf16, "golden.safetensors", (1e-2, 5e-2));
        // The products really ran on bf16 operands: their rounding (2⁻⁹
        // relative) shows far above f32's.
        assert!(
            bf16.grad_error > 10.0 * f32.grad_error && bf16.logp_error > 10.0 * f32.logp_error,
            "{name}: bf16 errors {:.1e} / {:.1e} are not above f32's {:.1e} / {:.1e}",
            bf16.logp_error,
            bf16.grad_error,
            f32.logp_error,
            f32.grad_error
        );
    }
}

#[test]
fn bf16_recomputation_gives_bit_identical_gradients() {
    // Each layer's weights are rounded again before its backward either way.
    let run = |recompute| {
        check_model_in("tiny-llama-untied", recompute, Precision::Bf16, "golden_bf16.safetensors", SAME_ROUNDING).grads
    };
    assert_eq!(run(true), run(false));
}

#[test]
fn objective_gradients_of_the_wrong_length_are_refused() {
    let config = config("tiny-llama");
    let backend = CpuBackend::new();
    let params = load_params(&backend, "tiny-llama", &config);
    let tokens: Vec<u32> = (3..12).collect();
    let mask = vec![true; tokens.len()];
    let batch =
        PackedBatch::new(&[(&tokens[..], &mask[..]), (&tokens[..5], &mask[..5])], config.vocab_size).expect("batch");
    let mut acts = Activations::new(&backend, &config, batch.n_tokens(), batch.n_rows(), 2).expect("alloc");
    let device_batch = DeviceBatch::upload(&backend, &batch).expect("upload");
    model::forward(&backend, &config, &params, &device_batch, &mut acts).expect("forward");
    let mut grads = LlamaParams::zeros(&backend, &config).expect("alloc");
    let error = model::backward(&backend, &config, &params, &mut grads, &device_batch, &mut acts, &[0.1], &[0.0, 0.0])
        .expect_err("one entry for two sequences");
    assert!(matches!(error, model::ModelError::SequenceCount { input: "d_sums", expected: 2, got: 1 }), "{error}");
}
