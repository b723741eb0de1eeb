//! `sapo train --method dpo` against TRL 1.16's `DPOTrainer` over twenty
//! optimizer steps on the shipped task model: the tokenization of the first
//! pair (exact), the loss and pre-clip gradient norm of every step, and the
//! final weights of the embeddings, layer 0 and the final norm.
//!
//! Goldens: `fixtures/task/dpo_run.{json,jsonl,safetensors}`, written by
//! `fixtures/task/generate_dpo_run.py` (versions and hyper-parameters are in
//! the JSON). Both sides run float32 on the CPU with the same data order,
//! batch 2 × accumulation 2, AdamW, linear schedule with ceil(0.1 · 20) = 2
//! warm-up steps, clipping at 1.0 and β = 0.1.
//!
//! Tolerance: 1e-4 relative on each step's loss and gradient norm, and on
//! each tensor as ‖sapo − trl‖ / ‖trl‖; 1e-3 on each tensor's update
//! ‖Δsapo − Δtrl‖ / ‖Δtrl‖ with Δ = w₂₀ − w₀. Twenty f32 steps summed in a
//! different order drift about 1e-6 and 1e-5 there (see the printed tables);
//! a wrong schedule, scaling or data order moves the numbers by percents.

use std::path::PathBuf;

use safetensors::{Dtype, SafeTensors};
use sapo_core::cpu::CpuBackend;
use sapo_host::train::Trainer;
use sapo_host::train::config::resolve;
use sapo_host::train::data::{self, TrainData};
use serde_json::Value;

const TOLERANCE: f64 = 1e-4;

fn task_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/task")
}

fn golden() -> Value {
    let path = task_dir().join("dpo_run.json");
    serde_json::from_str(&std::fs::read_to_string(&path).expect("fixtures/task/dpo_run.json")).expect("JSON")
}

fn ids(value: &Value) -> Vec<u32> {
    value.as_array().expect("id list").iter().map(|id| id.as_u64().expect("id") as u32).collect()
}

/// `|a − b| / |b|`, with `b` the reference; NaN never passes.
fn relative_error(a: f64, b: f64) -> f64 {
    let error = (a - b).abs() / b.abs();
    if error.is_nan() { f64::INFINITY } else { error }
}

/// `‖a − b‖ / ‖b‖` in f64, with `b` the reference; NaN never passes.
fn norm_relative_error(a: &[f32], b: &[f32]) -> f64 {
    let (mut difference, mut reference) = (0.0_f64, 0.0_f64);
    for (&x, &y) in a.iter().zip(b) {
        difference += (f64::from(x) - f64::from(y)).powi(2);
        reference += f64::from(y).powi(2);
    }
    let error = (difference / reference).sqrt();
    if error.is_nan() { f64::INFINITY } else { error }
}

/// The f32 values of a safetensors tensor.
fn f32_values(tensors: &SafeTensors<'_>, name: &str) -> (Vec<usize>, Vec<f32>) {
    let view = tensors.tensor(name).unwrap_or_else(|error| panic!("{name}: {error}"));
    assert_eq!(view.dtype(), Dtype::F32, "{name}");
    let values = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    (view.shape().to_vec(), values)
}

/// The overrides that make sapo's run the one the script ran with TRL.
fn overrides(output_dir: &std::path::Path) -> Vec<String> {
    let path = |p: PathBuf| format!("{:?}", p.canonicalize().expect("fixture path").display().to_string());
    let mut sets = vec![
        format!("model={}", path(task_dir().join("model"))),
        format!("data={}", path(task_dir().join("dpo_run.jsonl"))),
        format!("output_dir={:?}", output_dir.display().to_string()),
    ];
    sets.extend(
        [
            "method=\"dpo\"",
            "eval_data=\"\"",
            "shuffle=false",
            "per_device_train_batch_size=2",
            "gradient_accumulation_steps=2",
            "max_steps=20",
            "learning_rate=1e-4",
            "optimizer=\"adamw\"",
            "lr_scheduler_type=\"linear\"",
            "warmup_ratio=0.1",
            "warmup_steps=0",
            "max_grad_norm=1.0",
            "beta=0.1",
            "label_smoothing=0",
            "weight_decay=0",
            "adam_beta1=0.9",
            "adam_beta2=0.999",
            "adam_epsilon=1e-8",
            "logging_steps=1",
            "max_length=1024",
            "max_prompt_length=512",
            "threads=0",
        ]
        .map(String::from),
    );
    sets
}

#[test]
fn twenty_dpo_steps_match_trl_dpo_trainer() {
    let golden = golden();
    let output_dir = std::env::temp_dir().join(format!("sapo-dpo-run-trl-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&output_dir);
    let cfg = resolve(None, &overrides(&output_dir)).expect("valid config");

    // The pairs the trainer will use: the first is TRL's prompt/chosen/rejected ids,
    // and no pair is cut (TRL 1.16 has no max_prompt_length).
    let model = sapo_host::model_files::load(&CpuBackend::new(), &cfg.model).expect("task model");
    assert!(model.chat_template.is_some(), "the task model's chat template");
    let TrainData::Pairs(pairs) =
        data::load(&cfg, &cfg.data, &model.tokenizer, model.chat_template.as_ref()).expect("data")
    else {
        panic!("dpo loads pairs");
    };
    assert_eq!(pairs.len(), 32);
    let first = &golden["first_pair_ids"];
    let prompt = ids(&first["prompt_ids"]);
    assert_eq!(pairs[0].chosen[..pairs[0].prompt_len], prompt[..], "prompt ids");
    assert_eq!(pairs[0].chosen[pairs[0].prompt_len..], ids(&first["chosen_ids"])[..], "chosen ids");
    assert_eq!(pairs[0].rejected[..pairs[0].prompt_len], prompt[..], "prompt ids (rejected side)");
    assert_eq!(pairs[0].rejected[pairs[0].prompt_len..], ids(&first["rejected_ids"])[..], "rejected ids");
    assert!(
        pairs
            .iter()
            .all(|p| p.prompt_len < cfg.max_prompt_length && p.chosen.len().max(p.rejected.len()) < cfg.max_length)
    );
    drop(model);

    let summary = Trainer::new(cfg).expect("trainer").run(true).expect("run");
    assert_eq!(summary.steps, 20);

    // Per step: loss (TRL logs the mean of the micro-batch means), the pre-clip
    // norm of the accumulated gradient, and the learning rate the step used.
    let text = std::fs::read_to_string(output_dir.join("metrics.jsonl")).expect("metrics.jsonl");
    let steps: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("JSON line"))
        .filter(|line| line.get("event").is_none() && line.get("loss").is_some())
        .collect();
    let trl_steps = golden["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), trl_steps.len(), "one metrics line per step");
    let value = |line: &Value, key: &str| line[key].as_f64().unwrap_or_else(|| panic!("{key} in {line}"));
    println!(
        "step  loss sapo      loss trl       rel err    grad_norm sapo grad_norm trl  rel err    lr sapo    lr trl"
    );
    let (mut worst_loss, mut worst_norm) = (0.0_f64, 0.0_f64);
    for (sapo, trl) in steps.iter().zip(trl_steps) {
        assert_eq!(value(sapo, "step"), value(trl, "step"));
        let (loss, trl_loss) = (value(sapo, "loss"), value(trl, "loss"));
        let (norm, trl_norm) = (value(sapo, "grad_norm"), value(trl, "grad_norm"));
        let (lr, trl_lr) = (value(sapo, "learning_rate"), value(trl, "learning_rate"));
        let (loss_error, norm_error) = (relative_error(loss, trl_loss), relative_error(norm, trl_norm));
        print!("{:>4}  {loss:<13.8} {trl_loss:<13.8}  {loss_error:<9.2e}  ", value(sapo, "step"));
        println!("{norm:<14.8} {trl_norm:<14.8} {norm_error:<9.2e}  {lr:<10.3e} {trl_lr:.3e}");
        assert!((lr - trl_lr).abs() <= 1e-12, "step {}: learning rate {lr} vs TRL {trl_lr}", value(sapo, "step"));
        worst_loss = worst_loss.max(loss_error);
        worst_norm = worst_norm.max(norm_error);
    }
    println!("worst relative error: loss {worst_loss:.2e}, grad_norm {worst_norm:.2e} (tolerance {TOLERANCE:.0e})");

    // The final weights, tensor by tensor, and the update Δ = w₂₀ − w₀ they carry: the
    // weights move by about 1% of their norm in twenty steps, so 1e-4 on the weights alone
    // would let a 1% error in the updates through; 1e-3 on Δ does not.
    let read = |path: PathBuf| std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    let trl_bytes = read(task_dir().join("dpo_run.safetensors"));
    let trl_tensors = SafeTensors::deserialize(&trl_bytes).expect("TRL safetensors");
    let sapo_bytes = read(output_dir.join("final/model.safetensors"));
    let sapo_tensors = SafeTensors::deserialize(&sapo_bytes).expect("sapo safetensors");
    let initial_bytes = read(task_dir().join("model/model.safetensors"));
    let initial_tensors = SafeTensors::deserialize(&initial_bytes).expect("initial safetensors");
    let mut names = trl_tensors.names();
    names.sort();
    let (mut worst_weight, mut worst_update) = (0.0_f64, 0.0_f64);
    println!("{:<46} {:<22} ‖Δsapo − Δtrl‖ / ‖Δtrl‖", "tensor", "‖sapo − trl‖ / ‖trl‖");
    for name in &names {
        let (trl_shape, trl_values) = f32_values(&trl_tensors, name);
        let (sapo_shape, sapo_values) = f32_values(&sapo_tensors, name);
        let (initial_shape, initial_values) = f32_values(&initial_tensors, name);
        assert_eq!(sapo_shape, trl_shape, "{name}");
        assert_eq!(initial_shape, trl_shape, "{name}");
        let error = norm_relative_error(&sapo_values, &trl_values);
        let delta = |values: &[f32]| -> Vec<f32> { values.iter().zip(&initial_values).map(|(w, w0)| w - w0).collect() };
        let update_error = norm_relative_error(&delta(&sapo_values), &delta(&trl_values));
        println!("{name:<46} {error:<22.2e} {update_error:.2e}");
        worst_weight = worst_weight.max(error);
        worst_update = worst_update.max(update_error);
    }
    println!(
        "worst relative error over {} tensors: weights {worst_weight:.2e}, updates {worst_update:.2e}",
        names.len()
    );
    let _ = std::fs::remove_dir_all(&output_dir);

    assert!(worst_loss <= TOLERANCE, "loss drifts {worst_loss:.2e} from TRL's (table above)");
    assert!(worst_norm <= TOLERANCE, "grad_norm drifts {worst_norm:.2e} from TRL's (table above)");
    assert!(worst_weight <= TOLERANCE, "final weights drift {worst_weight:.2e} from TRL's (table above)");
    assert!(worst_update <= 1e-3, "the twenty steps' updates drift {worst_update:.2e} from TRL's (table above)");
}
