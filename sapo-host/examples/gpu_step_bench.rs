//! Times a DPO training step (reference forward, policy forward + backward,
//! gradient clipping, AdamW) of a LLaMA-shaped model with random weights on
//! a backend, for `bench/gpu_step.sh`, which runs the PyTorch peer
//! (`bench/gpu_step_peer.py`) on the same shapes beside it.
//!
//! ```text
//! cargo run --release -p sapo-host --example gpu_step_bench -- \
//!     --device cuda --model smollm2 --pairs 8 --prompt 64 --response 192 --steps 10 [--tf32 true | --bf16 true]
//! ```
//!
//! Prints one JSON object: the shapes, the median step time and its phases,
//! policy tokens per second and the matrix-product FLOP rate.

use std::time::Instant;

use anyhow::{Result, anyhow, bail};
use sapo_core::backend::Backend;
use sapo_core::cpu::CpuBackend;
use sapo_core::model::{
    Activations, AdamWState, DeviceBatch, LlamaConfig, LlamaParams, PackedBatch, Precision, backward, clip_grad_norm,
    forward,
};
use sapo_core::objectives::{DpoParams, Objective, PairBatch};
use sapo_core::optim::AdamWParams;
use sapo_core::profile::Profiled;
use sapo_core::rng::SapoRng;
use sapo_cuda::CudaBackend;

struct Options {
    device: String,
    model: String,
    pairs: usize,
    prompt: usize,
    response: usize,
    steps: usize,
    warmup: usize,
    /// Time every backend operation (the device waits after each).
    profile: bool,
    /// TF32 tensor-core products (cuBLAS), as PyTorch's allow_tf32.
    tf32: bool,
    /// bf16 mixed precision for the layers' products (`Precision::Bf16`).
    bf16: bool,
    /// `step` (a DPO training step) or `decode` (greedy generation of
    /// `response` new tokens after `prompt` tokens, `pairs` sequences).
    mode: String,
}

fn parse() -> Result<Options> {
    let mut o = Options {
        device: "cuda".into(),
        model: "smollm2".into(),
        pairs: 8,
        prompt: 64,
        response: 192,
        steps: 10,
        warmup: 3,
        profile: false,
        tf32: false,
        bf16: false,
        mode: "step".into(),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let [flag, value] = pair else { bail!("flags take a value: {pair:?}") };
        match flag.as_str() {
            "--device" => o.device = value.clone(),
            "--model" => o.model = value.clone(),
            "--pairs" => o.pairs = value.parse()?,
            "--prompt" => o.prompt = value.parse()?,
            "--response" => o.response = value.parse()?,
            "--steps" => o.steps = value.parse()?,
            "--warmup" => o.warmup = value.parse()?,
            "--profile" => o.profile = value.parse()?,
            "--tf32" => o.tf32 = value.parse()?,
            "--bf16" => o.bf16 = value.parse()?,
            "--mode" => o.mode = value.clone(),
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(o)
}

/// SmolLM2-135M, or a ~1.1B LLaMA (TinyLlama-1.1B's shape).
fn model_config(name: &str) -> Result<LlamaConfig> {
    match name {
        "smollm2" => Ok(LlamaConfig::smollm2_135m()),
        "llama1b" => Ok(LlamaConfig {
            vocab_size: 32_000,
            hidden_size: 2048,
            intermediate_size: 5632,
            num_hidden_layers: 22,
            num_attention_heads: 32,
            num_key_value_heads: 4,
            head_dim: 64,
            rope_theta: 10_000.0,
            rms_norm_eps: 1e-5,
            tie_word_embeddings: false,
            attention_bias: false,
        }),
        other => bail!("--model {other}: smollm2 or llama1b"),
    }
}

/// Matrix-product FLOPs of one step: the reference forward (2 per
/// multiply-add), the policy forward and backward (6), over every token for
/// the layers and over the scored rows for the LM head; attention scores
/// and values over the causal half of each sequence.
fn step_flops(c: &LlamaConfig, tokens: usize, rows: usize, seq_len: usize, seqs: usize) -> f64 {
    let (h, q, kv, i) = (c.hidden_size as f64, c.q_dim() as f64, c.kv_dim() as f64, c.intermediate_size as f64);
    let per_token_layer = h * q + 2.0 * h * kv + q * h + 3.0 * h * i;
    let layers = per_token_layer * c.num_hidden_layers as f64 * tokens as f64;
    let attention = 2.0 * (seq_len as f64).powi(2) / 2.0 * q * c.num_hidden_layers as f64 * seqs as f64;
    let head = h * c.vocab_size as f64 * rows as f64;
    (2.0 + 6.0) * (layers + attention + head)
}

/// Every tensor Normal(0, 0.02): timing needs the shapes, not trained weights.
fn random_params<B: Backend>(backend: &B, config: &LlamaConfig, rng: &mut SapoRng) -> Result<LlamaParams<B>>
where
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let mut params = LlamaParams::zeros(backend, config)?;
    for tensor in params.tensors_mut() {
        let values: Vec<f32> = (0..backend.len(tensor)).map(|_| (0.02 * rng.standard_normal()) as f32).collect();
        backend.write(tensor, &values)?;
    }
    Ok(params)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

struct Timer<'a, B: Backend> {
    backend: &'a B,
    sync: &'a dyn Fn(&B) -> Result<()>,
}

impl<B: Backend> Timer<'_, B> {
    fn now(&self) -> Result<Instant> {
        (self.sync)(self.backend)?;
        Ok(Instant::now())
    }
}

fn run<B: Backend>(
    backend: &B,
    sync: &dyn Fn(&B) -> Result<()>,
    on_warm: &dyn Fn(&B),
    o: &Options,
) -> Result<serde_json::Value>
where
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let config = model_config(&o.model)?;
    let mut rng = SapoRng::from_seed_u64(7);
    let mut params = random_params(backend, &config, &mut rng)?;
    let mut reference = LlamaParams::zeros(backend, &config)?;
    for (r, p) in reference.tensors_mut().into_iter().zip(params.tensors()) {
        backend.copy(r, p)?;
    }
    let seq_len = o.prompt + o.response;
    let mut sequences = Vec::new();
    for _ in 0..2 * o.pairs {
        let tokens: Vec<u32> = (0..seq_len).map(|_| (rng.next_u64() % config.vocab_size as u64) as u32).collect();
        let mask: Vec<bool> = (0..seq_len).map(|t| t >= o.prompt).collect();
        sequences.push((tokens, mask));
    }
    let views: Vec<(&[u32], &[bool])> = sequences.iter().map(|(t, m)| (t.as_slice(), m.as_slice())).collect();
    let packed = PackedBatch::new(&views, config.vocab_size)?;
    let batch = DeviceBatch::upload(backend, &packed)?;
    let mut acts = Activations::new(backend, &config, packed.n_tokens(), packed.n_rows(), packed.n_seqs())?;
    acts.set_precision(backend, &config, if o.bf16 { Precision::Bf16 } else { Precision::F32 })?;
    let mut grads = LlamaParams::zeros(backend, &config)?;
    let mut optimizer = AdamWState::new(backend, &config)?;
    let hp = AdamWParams::default();
    let objective = Objective::Dpo(DpoParams::default());
    let timer = Timer { backend, sync };
    let mut phases: Vec<[f64; 4]> = Vec::new();
    for step in 0..o.warmup + o.steps {
        if step == o.warmup {
            on_warm(backend);
        }
        let start = timer.now()?;
        let ref_logps = forward(backend, &config, &reference, &batch, &mut acts)?.sums;
        let after_reference = timer.now()?;
        let policy = forward(backend, &config, &params, &batch, &mut acts)?.sums;
        let wide = |v: &[f32], side: usize| -> Vec<f64> { (0..o.pairs).map(|i| f64::from(v[2 * i + side])).collect() };
        let (chosen, rejected, ref_chosen, ref_rejected) =
            (wide(&policy, 0), wide(&policy, 1), wide(&ref_logps, 0), wide(&ref_logps, 1));
        let pairs = PairBatch::new(&chosen, &rejected).with_reference(&ref_chosen, &ref_rejected);
        let out = objective.compute(&pairs).map_err(|e| anyhow!("{e}"))?;
        let mut d_sums = vec![0.0_f32; 2 * o.pairs];
        for i in 0..o.pairs {
            d_sums[2 * i] = out.grad_policy_chosen[i] as f32;
            d_sums[2 * i + 1] = out.grad_policy_rejected[i] as f32;
        }
        for tensor in grads.tensors_mut() {
            backend.fill_zero(tensor)?;
        }
        backward(backend, &config, &params, &mut grads, &batch, &mut acts, &d_sums, &vec![0.0; 2 * o.pairs])
            .map_err(|e| anyhow!("{e}"))?;
        let after_policy = timer.now()?;
        clip_grad_norm(backend, &mut grads, 1.0)?;
        optimizer.update(backend, &mut params, &grads, 1e-6, &hp)?;
        let end = timer.now()?;
        if step >= o.warmup {
            let seconds = |a: Instant, b: Instant| (b - a).as_secs_f64();
            phases.push([
                seconds(start, end),
                seconds(start, after_reference),
                seconds(after_reference, after_policy),
                seconds(after_policy, end),
            ]);
        }
    }
    let column = |k: usize| median(phases.iter().map(|p| p[k]).collect());
    let step = column(0);
    let tokens = packed.n_tokens();
    let flops = step_flops(&config, tokens, packed.n_rows(), seq_len, 2 * o.pairs);
    Ok(serde_json::json!({
        "side": "sapo", "device": o.device, "model": o.model, "pairs": o.pairs, "prompt": o.prompt,
        "response": o.response, "tokens_per_step": tokens, "scored_rows": packed.n_rows(), "steps": o.steps,
        "step_seconds": step, "reference_seconds": column(1), "policy_seconds": column(2),
        "optimizer_seconds": column(3), "policy_tokens_per_second": tokens as f64 / step,
        "matmul_tflops": flops / step / 1e12,
    }))
}

/// Greedy generation through the KV cache: `pairs` sequences of `prompt`
/// random tokens, `response` new tokens each (no stop ids), timed whole
/// (prefill included) after one warm-up run.
fn decode<B: Backend>(backend: &B, sync: &dyn Fn(&B) -> Result<()>, o: &Options) -> Result<serde_json::Value>
where
    B::Error: std::error::Error + Send + Sync + 'static,
{
    use sapo_core::model::{DecodeBuffers, GenerationConfig, KvCache, generate};
    use sapo_core::sampling::SamplingParams;
    let config = model_config(&o.model)?;
    let mut rng = SapoRng::from_seed_u64(11);
    let params = random_params(backend, &config, &mut rng)?;
    let prompts: Vec<Vec<u32>> = (0..o.pairs)
        .map(|_| (0..o.prompt).map(|_| (rng.next_u64() % config.vocab_size as u64) as u32).collect())
        .collect();
    let refs: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
    let mut cache = KvCache::new(backend, &config, o.pairs, o.prompt + o.response)?;
    let mut buffers = DecodeBuffers::new(backend, &config, o.pairs * o.prompt, o.pairs)?;
    let generation =
        GenerationConfig { max_new_tokens: o.response, stop_ids: Vec::new(), sampling: SamplingParams::greedy() };
    let mut seconds = Vec::new();
    for _ in 0..1 + o.steps {
        let mut rngs: Vec<SapoRng> = (0..o.pairs).map(|i| SapoRng::from_seed_u64(i as u64)).collect();
        sync(backend)?;
        let start = Instant::now();
        let out = generate(backend, &config, &params, &mut cache, &mut buffers, &refs, &generation, &mut rngs)
            .map_err(|e| anyhow!("{e}"))?;
        sync(backend)?;
        seconds.push(start.elapsed().as_secs_f64());
        let produced: usize = out.iter().map(Vec::len).sum();
        if produced != o.pairs * o.response {
            bail!("generated {produced} tokens, expected {}", o.pairs * o.response);
        }
    }
    let seconds = median(seconds[1..].to_vec());
    Ok(serde_json::json!({
        "side": "sapo", "mode": "decode", "device": o.device, "model": o.model, "batch": o.pairs,
        "prompt": o.prompt, "new_tokens": o.response, "seconds": seconds,
        "new_tokens_per_second": (o.pairs * o.response) as f64 / seconds,
    }))
}

fn main() -> Result<()> {
    let o = parse()?;
    let mut record = if o.device.starts_with("cuda") {
        let ordinal = o.device.strip_prefix("cuda:").map_or(Ok(0), str::parse)?;
        let gpu = CudaBackend::new(ordinal)?;
        gpu.set_tf32(o.tf32)?;
        let name = gpu.device_name().to_string();
        let mut record = if o.mode == "decode" {
            decode(&gpu, &|b: &CudaBackend| b.synchronize().map_err(anyhow::Error::from), &o)?
        } else if o.profile {
            gpu.set_synchronous(true);
            let profiled = Profiled::new(gpu);
            let sync = |b: &Profiled<CudaBackend>| b.inner().synchronize().map_err(anyhow::Error::from);
            let mut record = run(&profiled, &sync, &|b| b.reset(), &o)?;
            let per_step = |d: std::time::Duration| d.as_secs_f64() * 1e3 / o.steps as f64;
            let ops: Vec<serde_json::Value> = profiled
                .report()
                .into_iter()
                .map(|(op, total, calls)| serde_json::json!({"op": op, "ms_per_step": per_step(total), "calls_per_step": calls as f64 / o.steps as f64}))
                .collect();
            record["profile"] = ops.into();
            record
        } else {
            let sync = |b: &CudaBackend| b.synchronize().map_err(anyhow::Error::from);
            run(&gpu, &sync, &|_| {}, &o)?
        };
        record["device_name"] = name.into();
        record
    } else if o.mode == "decode" {
        decode(&CpuBackend::new(), &|_| Ok(()), &o)?
    } else {
        let cpu = CpuBackend::new();
        run(&cpu, &|_| Ok(()), &|_| {}, &o)?
    };
    record["tf32"] = o.tf32.into();
    record["bf16"] = o.bf16.into();
    println!("{record}");
    Ok(())
}
