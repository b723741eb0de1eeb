//! One DPO training step of the LLaMA model on the CPU backend, timed by
//! phase, for the tiny shape and SmolLM2-135M's shape, at 2 pairs =
//! 4 sequences × 256 tokens (64 prompt + 192 response). Run:
//!
//! ```sh
//! cargo bench -p sapo-core --bench model_step            # both shapes
//! cargo bench -p sapo-core --bench model_step -- tiny    # one shape
//! ```
//!
//! The peer, plain PyTorch on the same shapes with 2 threads, is
//! `model_step_peer.py` beside this file; `docs/performance.md` has both
//! runs side by side. Also measured in the same run: the f32 matrix-product
//! ceiling (2048³ through the same `gemm` path), so the step's achieved
//! fraction of it can be stated.

use std::time::{Duration, Instant};

use sapo_core::backend::{Backend, MatmulSpec};
use sapo_core::cpu::{CpuBackend, CpuError};
use sapo_core::model::{self, Activations, AdamWState, DeviceBatch, LlamaConfig, LlamaParams, PackedBatch, Precision};
use sapo_core::objectives::{DpoParams, Objective, PairBatch};
use sapo_core::optim::AdamWParams;
use sapo_core::profile::Profiled;
use sapo_core::rng::SapoRng;

/// The CPU backend, timed per operation.
type Cpu = Profiled<CpuBackend>;

const SEQUENCES: usize = 4;
const SEQ_LEN: usize = 256;
const PROMPT_LEN: usize = 64;

fn tiny() -> LlamaConfig {
    LlamaConfig {
        vocab_size: 49_152,
        hidden_size: 128,
        intermediate_size: 512,
        num_hidden_layers: 4,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: 32,
        rope_theta: 10_000.0,
        rms_norm_eps: 1e-5,
        tie_word_embeddings: true,
        attention_bias: false,
    }
}

fn random_params(backend: &Cpu, config: &LlamaConfig, seed: u64) -> LlamaParams<Cpu> {
    let mut rng = SapoRng::from_seed_u64(seed);
    LlamaParams::from_host(backend, config, |spec| {
        let norm = spec.shape.len() == 1;
        Ok::<_, CpuError>(
            (0..spec.len()).map(|_| if norm { 1.0 } else { 0.02 * rng.standard_normal() as f32 }).collect(),
        )
    })
    .expect("allocation")
}

fn batch(config: &LlamaConfig, all_rows: bool) -> PackedBatch {
    let mut rng = SapoRng::from_seed_u64(7);
    let sequences: Vec<(Vec<u32>, Vec<bool>)> = (0..SEQUENCES)
        .map(|_| {
            let tokens = (0..SEQ_LEN).map(|_| rng.below(config.vocab_size as u64).unwrap_or(0) as u32).collect();
            let mask = (0..SEQ_LEN).map(|t| all_rows || t >= PROMPT_LEN).collect();
            (tokens, mask)
        })
        .collect();
    let views: Vec<(&[u32], &[bool])> = sequences.iter().map(|(t, m)| (t.as_slice(), m.as_slice())).collect();
    PackedBatch::new(&views, config.vocab_size).expect("valid batch")
}

#[derive(Default, Clone, Copy)]
struct Phases {
    policy_forward: Duration,
    policy_backward: Duration,
    reference_forward: Duration,
    optimizer: Duration,
}

impl Phases {
    fn total(&self) -> Duration {
        self.policy_forward + self.policy_backward + self.reference_forward + self.optimizer
    }
}

struct State {
    params: LlamaParams<Cpu>,
    grads: LlamaParams<Cpu>,
    adamw: AdamWState<Cpu>,
}

fn step(
    backend: &Cpu,
    config: &LlamaConfig,
    state: &mut State,
    reference: &LlamaParams<Cpu>,
    acts: &mut Activations<Cpu>,
    batch: &DeviceBatch<Cpu>,
) -> Result<Phases, Box<dyn std::error::Error>> {
    let State { params, grads, adamw } = state;
    let mut phases = Phases::default();
    let start = Instant::now();
    let reference_logps = model::forward(backend, config, reference, batch, acts)?;
    phases.reference_forward = start.elapsed();
    let start = Instant::now();
    let policy = model::forward(backend, config, params, batch, acts)?;
    phases.policy_forward = start.elapsed();
    let (chosen, rejected) = ([policy.sums[0], policy.sums[2]], [policy.sums[1], policy.sums[3]]);
    let (ref_chosen, ref_rejected) =
        ([reference_logps.sums[0], reference_logps.sums[2]], [reference_logps.sums[1], reference_logps.sums[3]]);
    let pairs = PairBatch::new(&chosen, &rejected).with_reference(&ref_chosen, &ref_rejected);
    let dpo = Objective::Dpo(DpoParams::default()).compute(&pairs).expect("finite log-probs");
    let d_sums = [
        dpo.grad_policy_chosen[0],
        dpo.grad_policy_rejected[0],
        dpo.grad_policy_chosen[1],
        dpo.grad_policy_rejected[1],
    ];
    let start = Instant::now();
    grads.visit_mut(|g| backend.fill_zero(g))?;
    model::backward(backend, config, params, grads, batch, acts, &d_sums, &[0.0; SEQUENCES])?;
    phases.policy_backward = start.elapsed();
    let start = Instant::now();
    adamw.update(backend, params, grads, 1e-5, &AdamWParams::default())?;
    phases.optimizer = start.elapsed();
    Ok(phases)
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn matmul_ceiling(backend: &Cpu) -> f64 {
    let n = 2048;
    let a = backend.upload(&vec![0.5_f32; n * n]).expect("alloc");
    let b = backend.upload(&vec![0.25_f32; n * n]).expect("alloc");
    let mut out = backend.zeros::<f32>(n * n).expect("alloc");
    let spec = MatmulSpec { m: n, k: n, n, transpose_a: false, transpose_b: false, accumulate: false };
    backend.matmul(&mut out, &a, &b, spec).expect("warm-up");
    let runs = 5;
    let start = Instant::now();
    for _ in 0..runs {
        backend.matmul(&mut out, &a, &b, spec).expect("matmul");
    }
    2.0 * (n * n * n) as f64 * runs as f64 / start.elapsed().as_secs_f64() / 1e9
}

/// GFLOP/s of each matrix-product shape one SmolLM2 layer runs at 1024
/// tokens, forward (`x·Wᵀ`) and backward (`dy·W`, `dyᵀ·x`).
fn matmul_shapes(backend: &Cpu, config: &LlamaConfig) {
    let t = SEQUENCES * SEQ_LEN;
    let (c, i, q, kv) = (config.hidden_size, config.intermediate_size, config.q_dim(), config.kv_dim());
    for (name, d_in, d_out) in [("q/o", c, q), ("k/v", c, kv), ("gate/up", c, i), ("down", i, c)] {
        let specs = [
            (
                "fwd x·Wᵀ",
                MatmulSpec { m: t, k: d_in, n: d_out, transpose_a: false, transpose_b: true, accumulate: false },
            ),
            (
                "bwd dy·W",
                MatmulSpec { m: t, k: d_out, n: d_in, transpose_a: false, transpose_b: false, accumulate: true },
            ),
            (
                "bwd dyᵀ·x",
                MatmulSpec { m: d_out, k: t, n: d_in, transpose_a: true, transpose_b: false, accumulate: true },
            ),
        ];
        for (what, spec) in specs {
            // Random operands: bf16 rounding of constants would be exact.
            let mut rng = SapoRng::from_seed_u64(3);
            let mut random = |len: usize| (0..len).map(|_| rng.standard_normal() as f32).collect::<Vec<f32>>();
            let (a, b) = (random(spec.a_len()), random(spec.b_len()));
            let rounded = |values: &[f32]| values.iter().map(|&v| half::bf16::from_f32(v)).collect::<Vec<_>>();
            let (a16, b16) =
                (backend.upload(&rounded(&a)).expect("alloc"), backend.upload(&rounded(&b)).expect("alloc"));
            let (a, b) = (backend.upload(&a).expect("alloc"), backend.upload(&b).expect("alloc"));
            let mut out = backend.zeros::<f32>(spec.out_len()).expect("alloc");
            let runs = 20;
            let mut rate = |product: &mut dyn FnMut(&mut <Cpu as Backend>::Buf<f32>)| {
                product(&mut out); // warm-up
                let start = Instant::now();
                for _ in 0..runs {
                    product(&mut out);
                }
                2.0 * (spec.m * spec.k * spec.n) as f64 * runs as f64 / start.elapsed().as_secs_f64() / 1e9
            };
            let f32_rate = rate(&mut |out| backend.matmul(out, &a, &b, spec).expect("matmul"));
            let bf16_rate = rate(&mut |out| backend.matmul_bf16(out, &a16, &b16, spec).expect("matmul_bf16"));
            println!(
                "  {name:<8} {what:<10} m {:>5} k {:>5} n {:>5}: f32 {f32_rate:5.0} GFLOP/s, bf16 {bf16_rate:5.0} GFLOP/s ({:.2}×)",
                spec.m,
                spec.k,
                spec.n,
                bf16_rate / f32_rate
            );
        }
    }
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn run(name: &str, config: LlamaConfig, all_rows: bool, recompute: bool, precision: Precision, steps: usize) {
    let backend = Profiled::new(CpuBackend::new());
    let host_batch = batch(&config, all_rows);
    let device_batch = DeviceBatch::upload(&backend, &host_batch).expect("upload");
    let reference = random_params(&backend, &config, 1);
    let mut state = State {
        params: random_params(&backend, &config, 1),
        grads: LlamaParams::zeros(&backend, &config).expect("alloc"),
        adamw: AdamWState::new(&backend, &config).expect("alloc"),
    };
    let (tokens, rows) = (host_batch.n_tokens(), host_batch.n_rows());
    let mut acts = if recompute {
        Activations::with_recomputation(&backend, &config, tokens, rows, SEQUENCES).expect("alloc")
    } else {
        Activations::new(&backend, &config, tokens, rows, SEQUENCES).expect("alloc")
    };
    acts.set_precision(&backend, &config, precision).expect("alloc");
    let name = if recompute { format!("{name} recompute") } else { name.to_string() };
    let name = format!("{name} {}", precision.name());
    let mut all = Vec::new();
    for step_number in 0..=steps {
        if step_number == 1 {
            backend.reset(); // the first step faults in memory: warm-up
        }
        let phases = step(&backend, &config, &mut state, &reference, &mut acts, &device_batch).expect("step");
        if step_number > 0 {
            all.push(phases);
        }
    }
    let pick = |f: fn(&Phases) -> Duration| median(all.iter().map(f).collect()).as_secs_f64();
    let total = pick(|p| p.total());
    let tokens = host_batch.n_tokens() as f64;
    let n = config.parameter_count() as f64;
    let flops = 8.0 * n * tokens; // 6N·T policy + 2N·T reference (dense part)
    println!(
        "{name:<28} rows {:>4}  step {total:7.3} s  {:7.0} tok/s  policy fwd {:.3} s  bwd {:.3} s  ref fwd {:.3} s  adamw {:.3} s  {:.0} GFLOP/s (8·N·T)  peak RSS {:.0} MB",
        host_batch.n_rows(),
        tokens / total,
        pick(|p| p.policy_forward),
        pick(|p| p.policy_backward),
        pick(|p| p.reference_forward),
        pick(|p| p.optimizer),
        flops / total / 1e9,
        peak_rss_mb(),
    );
    let report = backend.report();
    let measured: f64 = report.iter().map(|row| row.1.as_secs_f64()).sum();
    let line: Vec<String> = report
        .iter()
        .filter(|row| row.1.as_secs_f64() / measured >= 0.005)
        .map(|(op, time, _)| format!("{op} {:.0}%", 100.0 * time.as_secs_f64() / measured))
        .collect();
    println!("    time by operation: {}", line.join(", "));
}

fn main() {
    let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let wanted = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    println!("threads: {}", rayon::current_num_threads());
    let ceiling = matmul_ceiling(&Profiled::new(CpuBackend::new()));
    println!("f32 matmul ceiling (2048³, gemm path): {ceiling:.0} GFLOP/s");
    if filter.iter().any(|f| f == "shapes") {
        matmul_shapes(&Profiled::new(CpuBackend::new()), &LlamaConfig::smollm2_135m());
        return;
    }
    if wanted("tiny") {
        run("tiny (h128, 4 layers)", tiny(), false, false, Precision::F32, 5);
        run("tiny (h128, 4 layers)", tiny(), true, false, Precision::F32, 5);
    }
    if wanted("smollm2") {
        run("smollm2-135m shape", LlamaConfig::smollm2_135m(), false, false, Precision::F32, 3);
        run("smollm2-135m shape", LlamaConfig::smollm2_135m(), true, false, Precision::F32, 3);
    }
    if filter.iter().any(|f| f == "recompute") {
        run("smollm2-135m shape", LlamaConfig::smollm2_135m(), false, true, Precision::F32, 3);
    }
    // bf16 mixed precision against f32, alternated so drift shows.
    if filter.iter().any(|f| f == "bf16") {
        for precision in [Precision::F32, Precision::Bf16, Precision::F32, Precision::Bf16] {
            run("smollm2-135m shape", LlamaConfig::smollm2_135m(), false, false, precision, 3);
        }
    }
}
