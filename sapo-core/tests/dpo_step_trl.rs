//! Three whole DPO steps against TRL's own `DPOTrainer` on
//! `fixtures/models/tiny-llama` (`fixtures/models/generate_dpo_steps.py`):
//! same pairs, β, AdamW, linear schedule and clipping. Per step, the loss
//! and the pre-clip gradient norm TRL logged; after the third step, every
//! parameter. Tolerance 1e-4 relative throughout (f32 on both sides; TRL's
//! foreach AdamW and padded batch against sapo's packed one).

mod common;

use common::{config, f32s, fixture, json, load_params, relative};
use safetensors::SafeTensors;
use sapo_core::backend::Backend;
use sapo_core::cpu::CpuBackend;
use sapo_core::model::{self, Activations, AdamWState, DeviceBatch, LlamaParams, PackedBatch};
use sapo_core::objectives::{DpoParams, Objective, PairBatch};
use sapo_core::optim::{AdamWParams, LrSchedule, ScheduleKind};
use serde_json::Value;

fn ids(value: &Value) -> Vec<u32> {
    value.as_array().expect("ids").iter().map(|v| v.as_u64().expect("id") as u32).collect()
}

#[test]
fn three_dpo_steps_match_trl() {
    const MODEL: &str = "tiny-llama";
    let config = config(MODEL);
    let meta = json(MODEL, "dpo_steps.json");
    let hp = &meta["hyper_parameters"];
    let number = |key: &str| hp[key].as_f64().unwrap_or_else(|| panic!("{key}"));

    // Pack chosen and rejected of each pair: [c0, r0, c1, r1].
    let mut sequences = Vec::new();
    for pair in meta["pairs"].as_array().expect("pairs") {
        let prompt = ids(&pair["prompt_ids"]);
        for side in ["chosen_ids", "rejected_ids"] {
            let response = ids(&pair[side]);
            let tokens: Vec<u32> = prompt.iter().chain(&response).copied().collect();
            let mask: Vec<bool> = (0..tokens.len()).map(|t| t >= prompt.len()).collect();
            sequences.push((tokens, mask));
        }
    }
    let views: Vec<(&[u32], &[bool])> = sequences.iter().map(|(t, m)| (t.as_slice(), m.as_slice())).collect();
    let batch = PackedBatch::new(&views, config.vocab_size).expect("valid batch");

    let backend = CpuBackend::new();
    let reference = load_params(&backend, MODEL, &config);
    let mut params = load_params(&backend, MODEL, &config);
    let mut grads = LlamaParams::zeros(&backend, &config).expect("alloc");
    let mut adamw = AdamWState::new(&backend, &config).expect("alloc");
    let adamw_hp = AdamWParams {
        beta1: number("adam_beta1"),
        beta2: number("adam_beta2"),
        eps: number("adam_epsilon"),
        weight_decay: number("weight_decay"),
    };
    let steps = meta["steps"].as_array().expect("steps");
    let schedule = LrSchedule { kind: ScheduleKind::Linear, warmup_steps: 0, total_steps: steps.len() as u64 };
    let dpo = Objective::Dpo(DpoParams { beta: number("beta"), label_smoothing: 0.0 });
    let mut acts =
        Activations::new(&backend, &config, batch.n_tokens(), batch.n_rows(), batch.n_seqs()).expect("alloc");
    let device_batch = DeviceBatch::upload(&backend, &batch).expect("upload");

    for (index, logged) in steps.iter().enumerate() {
        let reference_logps = model::forward(&backend, &config, &reference, &device_batch, &mut acts).expect("forward");
        let policy = model::forward(&backend, &config, &params, &device_batch, &mut acts).expect("forward");
        let s = &policy.sums;
        let r = &reference_logps.sums;
        let (chosen, rejected, ref_chosen, ref_rejected) = ([s[0], s[2]], [s[1], s[3]], [r[0], r[2]], [r[1], r[3]]);
        let out =
            dpo.compute(&PairBatch::new(&chosen, &rejected).with_reference(&ref_chosen, &ref_rejected)).expect("dpo");
        let d_sums = [
            out.grad_policy_chosen[0],
            out.grad_policy_rejected[0],
            out.grad_policy_chosen[1],
            out.grad_policy_rejected[1],
        ];
        grads.visit_mut(|g| backend.fill_zero(g)).expect("zero");
        model::backward(&backend, &config, &params, &mut grads, &device_batch, &mut acts, &d_sums, &[0.0; 4])
            .expect("backward");
        let norm = model::clip_grad_norm(&backend, &mut grads, number("max_grad_norm")).expect("clip");
        let lr = schedule.learning_rate(number("learning_rate"), index as u64);
        adamw.update(&backend, &mut params, &grads, lr, &adamw_hp).expect("adamw");

        let (trl_loss, trl_norm) =
            (logged["loss"].as_f64().expect("loss"), logged["grad_norm"].as_f64().expect("norm"));
        let loss_error = relative(&[out.loss], &[trl_loss]);
        let norm_error = ((norm - trl_norm) / trl_norm).abs();
        println!(
            "step {}: loss {} (TRL {trl_loss}, rel. error {loss_error:.1e}), grad norm {norm} (TRL {trl_norm}, rel. error {norm_error:.1e})",
            index + 1,
            out.loss
        );
        assert!(loss_error <= 1e-4, "step {}: loss {} vs TRL {trl_loss}", index + 1, out.loss);
        assert!(norm_error <= 1e-4, "step {}: grad norm {norm} vs TRL {trl_norm}", index + 1);
    }

    let trained_bytes = fixture(MODEL, "dpo_steps.safetensors");
    let trained = SafeTensors::deserialize(&trained_bytes).expect("dpo_steps.safetensors");
    let mut worst = 0.0_f64;
    for (spec, tensor) in params.tensor_specs(&config).iter().zip(params.tensors()) {
        let expected: Vec<f64> = f32s(&trained, &spec.name).into_iter().map(f64::from).collect();
        let error = relative(&backend.download(tensor).expect("download"), &expected);
        assert!(error <= 1e-4, "{} after 3 steps: relative error {error:e}", spec.name);
        worst = worst.max(error);
    }
    println!("weights after {} steps: max relative error {worst:.1e}", steps.len());
}
