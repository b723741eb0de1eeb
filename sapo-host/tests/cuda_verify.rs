//! The GPU against the CPU reference, op by op and for a whole SAPO step
//! (the same checks as `sapo verify`). Without a CUDA device the GPU tests
//! print `skipped: no CUDA device: …`; the comparison machinery itself runs
//! everywhere, CPU against CPU.

use sapo_core::backend::Backend;
use sapo_core::cpu::CpuBackend;
use sapo_core::model::Precision;
use sapo_cuda::{CudaBackend, CudaError};
use sapo_host::model_files;
use sapo_host::verify::{self, Backends, Check, OpShapes, StepSetup};

/// Every operation of the `Backend` trait, as the checks name them.
const TRAIT_OPS: [&str; 34] = [
    "upload/write/download",
    "fill_zero",
    "copy",
    "matmul",
    "matmul_batched",
    "matmul_bf16",
    "round_to_bf16",
    "add_bias",
    "add_bias_backward",
    "embedding_forward",
    "embedding_backward",
    "rms_norm_forward",
    "rms_norm_backward",
    "rope_forward",
    "rope_backward",
    "attention_forward",
    "attention_backward",
    "kv_cache_write",
    "attention_cached",
    "swiglu_forward",
    "swiglu_backward",
    "add",
    "add_assign",
    "token_logprobs_forward",
    "token_logprobs_backward",
    "token_logprobs_forward_bf16",
    "token_logprobs_backward_bf16",
    "sequence_logprobs",
    "sequence_logprobs_backward",
    "adamw_step",
    "rmsprop_step",
    "ema_update",
    "sum_of_squares",
    "scale",
];

fn fixture_step(cpu: &CpuBackend, seed: u64) -> StepSetup {
    let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/task/model");
    let loaded = model_files::load(cpu, &model).unwrap();
    let weights = loaded.params.tensors().into_iter().map(|t| cpu.download(t).unwrap()).collect();
    StepSetup::random(loaded.config, weights, 6, 8, seed)
}

fn fresh_seed() -> u64 {
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    println!("seed {seed}");
    seed
}

fn assert_all_pass(checks: &[Check]) {
    let table = verify::render(checks);
    println!("{table}");
    assert!(checks.iter().all(Check::passed), "some checks failed:\n{table}");
}

fn gpu_or_skip() -> Option<CudaBackend> {
    match CudaBackend::new(0) {
        Ok(gpu) => Some(gpu),
        Err(CudaError::Unavailable(reason)) => {
            println!("skipped: no CUDA device: {reason}");
            None
        }
        Err(error) => panic!("a CUDA device is present but the backend failed to start: {error}"),
    }
}

#[test]
fn cpu_against_itself_covers_every_trait_op_with_zero_error() {
    let (a, b) = (CpuBackend::new(), CpuBackend::new());
    let backends = Backends { reference: &a, candidate: &b };
    let seed = fresh_seed();
    let mut checks = verify::check_ops(backends, &OpShapes::small(), seed).unwrap();
    checks.extend(verify::check_step(backends, &fixture_step(&a, seed)).unwrap());
    checks.extend(verify::check_step(backends, &fixture_step(&a, seed).with_precision(Precision::Bf16)).unwrap());
    for op in TRAIT_OPS {
        assert!(checks.iter().any(|c| c.op == op || c.op.starts_with(&format!("{op} "))), "no check of {op}");
    }
    // The same code on the same backend: bit-identical, so exactly zero.
    for check in &checks {
        assert_eq!(check.rel_error, 0.0, "{check:?}");
    }
    assert_all_pass(&checks);
}

#[test]
fn gpu_ops_match_the_cpu_at_small_smollm2_and_wide_head_shapes() {
    let Some(gpu) = gpu_or_skip() else { return };
    let cpu = CpuBackend::new();
    let backends = Backends { reference: &cpu, candidate: &gpu };
    let seed = fresh_seed();
    let mut checks = verify::check_ops(backends, &OpShapes::small(), seed).unwrap();
    checks.extend(verify::check_ops(backends, &OpShapes::smollm2(), seed + 1).unwrap());
    checks.extend(verify::check_ops(backends, &OpShapes::wide_heads(), seed + 2).unwrap());
    assert_all_pass(&checks);
}

#[test]
fn a_whole_sapo_step_on_the_gpu_matches_the_cpu() {
    let Some(gpu) = gpu_or_skip() else { return };
    let cpu = CpuBackend::new();
    let checks = verify::check_step(Backends { reference: &cpu, candidate: &gpu }, &fixture_step(&cpu, fresh_seed()));
    assert_all_pass(&checks.unwrap());
}

#[test]
fn a_whole_bf16_step_on_the_gpu_matches_the_cpu_bf16_step() {
    let Some(gpu) = gpu_or_skip() else { return };
    let cpu = CpuBackend::new();
    let setup = fixture_step(&cpu, fresh_seed()).with_precision(Precision::Bf16);
    let checks = verify::check_step(Backends { reference: &cpu, candidate: &gpu }, &setup);
    assert_all_pass(&checks.unwrap());
}

#[test]
fn bf16_steps_differ_from_f32_steps_by_the_rounding_alone() {
    // On one backend: the bf16 passes really round (the step moves), and
    // by about bf16's precision, not by a broken pass's O(1).
    let cpu = CpuBackend::new();
    let setup = fixture_step(&cpu, fresh_seed());
    let checks = verify::check_step_precisions(Backends { reference: &cpu, candidate: &cpu }, &setup).unwrap();
    let cross = |op: &str| checks.iter().find(|c| c.op == format!("step: {op}") && c.dtype == "bf16↔f32");
    let error = |op: &str| cross(op).expect(op).rel_error;
    for op in ["policy log-probs", "reference log-probs", "gradients (clipped)"] {
        assert!(error(op) > 1e-5, "{op}: the bf16 step gave the f32 step's values ({:e})", error(op));
    }
    assert_all_pass(&checks);
}

#[test]
fn a_step_gives_the_same_bits_twice_on_the_cpu_and_on_the_gpu() {
    let cpu = CpuBackend::new();
    let setup = fixture_step(&cpu, fresh_seed());
    assert_all_pass(&[verify::check_reproducible(&cpu, &setup).unwrap()]);
    let Some(gpu) = gpu_or_skip() else { return };
    assert_all_pass(&[verify::check_reproducible(&gpu, &setup).unwrap()]);
}

#[test]
fn the_gpu_refuses_short_buffers_with_an_error_naming_the_op() {
    let Some(gpu) = gpu_or_skip() else { return };
    let a = gpu.upload(&[1.0_f32; 4]).unwrap();
    let mut out = gpu.zeros::<f32>(3).unwrap();
    let error = gpu.add(&mut out, &a, &a, 4).unwrap_err();
    assert_eq!(error.to_string(), "add: buffer `out` has 3 elements, needs 4");
}
