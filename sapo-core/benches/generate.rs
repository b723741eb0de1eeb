//! Batched sampling with the KV cache, SmolLM2-135M's shape with random
//! weights: prefill and decode tokens/s at batch 1, 4 and 8 (64-token
//! prompts, 128 new tokens, temperature 0.7, top-k 50, top-p 0.95, no stop
//! token). Peer: `generate_peer.py` beside this file (transformers'
//! `generate`, same shapes and settings). Run:
//!
//! ```sh
//! cargo bench -p sapo-core --bench generate
//! SAPO_PROFILE=1 cargo bench -p sapo-core --bench generate   # + time per backend op
//! ```
//!
//! With `SAPO_PROFILE` set, each batch also prints where its generate call's
//! time went per backend operation; what the operations do not account for
//! is host work (sampling, bookkeeping).

use std::time::Instant;

use sapo_core::backend::Backend;
use sapo_core::cpu::CpuBackend;
use sapo_core::model::{self, DecodeBuffers, GenerationConfig, KvCache, LlamaConfig, LlamaParams};
use sapo_core::profile::Profiled;
use sapo_core::rng::SapoRng;
use sapo_core::sampling::SamplingParams;

const PROMPT: usize = 64;
const NEW: usize = 128;

fn main() {
    if std::env::var_os("SAPO_PROFILE").is_some() {
        let backend = Profiled::new(CpuBackend::new());
        bench(
            &backend,
            || backend.reset(),
            |total| {
                let report = backend.report();
                let ops: f64 = report.iter().map(|row| row.1.as_secs_f64()).sum();
                for (op, time, calls) in report.iter().take(8) {
                    println!(
                        "    {op:<28} {:>8.3} s {:>5.1} % {calls:>7} calls",
                        time.as_secs_f64(),
                        100.0 * time.as_secs_f64() / total
                    );
                }
                println!(
                    "    {:<28} {:>8.3} s {:>5.1} %",
                    "(host: sampling, bookkeeping)",
                    total - ops,
                    100.0 * (total - ops) / total
                );
            },
        );
    } else {
        bench(&CpuBackend::new(), || {}, |_| {});
    }
}

/// Prefill and generate at batch 1, 4 and 8; `before_generate` runs just
/// before the timed generate call and `after_generate` gets its seconds (so
/// a profiler's totals cover exactly that call).
fn bench<B: Backend>(backend: &B, before_generate: impl Fn(), after_generate: impl Fn(f64)) {
    let config = LlamaConfig::smollm2_135m();
    let mut rng = SapoRng::from_seed_u64(1);
    let params = LlamaParams::from_host(backend, &config, |spec| {
        let norm = spec.shape.len() == 1;
        Ok::<_, B::Error>(
            (0..spec.len()).map(|_| if norm { 1.0 } else { 0.02 * rng.standard_normal() as f32 }).collect(),
        )
    })
    .expect("alloc");
    println!("threads: {}", rayon::current_num_threads());
    for batch in [1usize, 4, 8] {
        let prompts: Vec<Vec<u32>> = (0..batch)
            .map(|b| (0..PROMPT).map(|t| ((b * 7919 + t * 104_729) % 49_000) as u32 + 100).collect())
            .collect();
        let prefixes: Vec<&[u32]> = prompts.iter().map(|p| p.as_slice()).collect();
        let mut cache = KvCache::new(backend, &config, batch, PROMPT + NEW).expect("alloc");
        let mut buffers = DecodeBuffers::new(backend, &config, batch * PROMPT, batch).expect("alloc");
        let generation =
            GenerationConfig { max_new_tokens: NEW, stop_ids: Vec::new(), sampling: SamplingParams::sapo() };
        // Warm-up run (faults in the cache and buffers), then the timed one.
        let mut rngs: Vec<SapoRng> = (0..batch).map(|b| SapoRng::from_seed_and_stream(3, b as u64)).collect();
        model::generate(backend, &config, &params, &mut cache, &mut buffers, &prefixes, &generation, &mut rngs)
            .expect("warm-up");
        let entries: Vec<(usize, &[u32])> = prefixes.iter().copied().enumerate().collect();
        for slot in 0..batch {
            cache.clear(slot);
        }
        let start = Instant::now();
        model::forward_cached(backend, &config, &params, &mut cache, &mut buffers, &entries).expect("prefill");
        let prefill = start.elapsed().as_secs_f64();
        before_generate();
        let start = Instant::now();
        let outputs =
            model::generate(backend, &config, &params, &mut cache, &mut buffers, &prefixes, &generation, &mut rngs)
                .expect("generate");
        let total = start.elapsed().as_secs_f64();
        let generated: usize = outputs.iter().map(|o| o.len()).sum();
        let decode = total - prefill;
        println!(
            "batch {batch}: prefill {:.0} tok/s ({prefill:.3} s), generate {} new tokens in {total:.2} s = {:.1} new tok/s (decode only {:.1} tok/s)",
            (batch * PROMPT) as f64 / prefill,
            generated,
            generated as f64 / total,
            (generated - batch) as f64 / decode,
        );
        after_generate(total);
    }
}
