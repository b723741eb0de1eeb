//! One whole SAPO training step on both backends, compared quantity by
//! quantity: the EMA update, the EMA model's greedy regeneration of a
//! response segment (prefill and decode through the key/value cache), the
//! reference log-probs (reference = the EMA model), the policy's forward,
//! DPO loss and backward, the global gradient norm with clipping, and the
//! AdamW update.

use anyhow::{Result, anyhow};
use sapo_core::backend::Backend;
use sapo_core::model::AdamWState;
use sapo_core::model::{
    Activations, DecodeBuffers, DeviceBatch, GenerationConfig, KvCache, LlamaConfig, LlamaParams, PackedBatch,
    Precision, backward, clip_grad_norm, forward, generate,
};
use sapo_core::objectives::{DpoParams, Objective, PairBatch};
use sapo_core::optim::AdamWParams;
use sapo_core::rng::SapoRng;
use sapo_core::sampling::SamplingParams;

use super::{
    BF16_AGAINST_F32_TOLERANCE, BF16_TOLERANCE, Backends, Check, F32_OP_TOLERANCE, F32_STEP_TOLERANCE, on,
    relative_error, scalar_error,
};

/// The model and data of the step.
#[derive(Debug, Clone)]
pub struct StepSetup {
    /// The architecture.
    pub config: LlamaConfig,
    /// The weights, one host tensor per `LlamaParams::tensors` entry.
    pub weights: Vec<Vec<f32>>,
    /// `(prompt, chosen response)` token ids.
    pub pairs: Vec<(Vec<u32>, Vec<u32>)>,
    /// Where each chosen response is cut before its segment is regenerated.
    pub cuts: Vec<usize>,
    /// Tokens regenerated per pair.
    pub segment: usize,
    /// The EMA's starting weights differ from the policy's by this much
    /// (relative), so that the EMA update and the reference matter.
    pub ema_offset: f64,
    /// The random stream of the EMA offset.
    pub seed: u64,
    /// The number format of the forward and backward passes' products
    /// (the EMA update, the generation and AdamW are f32 either way).
    pub precision: Precision,
}

impl StepSetup {
    /// Random prompts and responses of varied lengths for a model with these
    /// weights.
    pub fn random(config: LlamaConfig, weights: Vec<Vec<f32>>, n_pairs: usize, segment: usize, seed: u64) -> Self {
        let mut rng = SapoRng::from_seed_and_stream(seed, 1);
        let mut below = |bound: usize| (rng.next_u64() % bound as u64) as usize;
        let mut pairs = Vec::with_capacity(n_pairs);
        let mut cuts = Vec::with_capacity(n_pairs);
        for _ in 0..n_pairs {
            let prompt: Vec<u32> = (0..4 + below(12)).map(|_| below(config.vocab_size) as u32).collect();
            let chosen: Vec<u32> = (0..segment + 4 + below(16)).map(|_| below(config.vocab_size) as u32).collect();
            cuts.push(1 + below(chosen.len() - segment));
            pairs.push((prompt, chosen));
        }
        StepSetup { config, weights, pairs, cuts, segment, ema_offset: 0.05, seed, precision: Precision::F32 }
    }

    /// The same step with its passes in `precision`.
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }
}

/// What one backend's step gave, downloaded.
#[derive(Debug, Clone)]
struct StepOutcome {
    precision: Precision,
    ema: Vec<f32>,
    generated: Vec<Vec<u32>>,
    reference: Vec<f32>,
    policy: Vec<f32>,
    loss: f64,
    grad_norm: f64,
    grads: Vec<f32>,
    params: Vec<f32>,
}

fn upload_params<B: Backend>(backend: &B, config: &LlamaConfig, weights: &[Vec<f32>]) -> Result<LlamaParams<B>> {
    let mut params = on("backend", LlamaParams::zeros(backend, config))?;
    let tensors = params.tensors_mut();
    if tensors.len() != weights.len() {
        return Err(anyhow!("{} weight tensors for a model of {}", weights.len(), tensors.len()));
    }
    for (tensor, data) in tensors.into_iter().zip(weights) {
        on("backend", backend.write(tensor, data))?;
    }
    Ok(params)
}

fn download_params<B: Backend>(backend: &B, params: &LlamaParams<B>) -> Result<Vec<f32>> {
    let mut all = Vec::new();
    for tensor in params.tensors() {
        all.extend(on("backend", backend.download(tensor))?);
    }
    Ok(all)
}

fn sapo_step<B: Backend>(backend: &B, setup: &StepSetup) -> Result<StepOutcome> {
    let config = &setup.config;
    let mut params = upload_params(backend, config, &setup.weights)?;
    let mut rng = SapoRng::from_seed_and_stream(setup.seed, 2);
    let ema_start: Vec<Vec<f32>> = setup
        .weights
        .iter()
        .map(|tensor| tensor.iter().map(|&w| w + (setup.ema_offset * rng.standard_normal()) as f32 * w).collect())
        .collect();
    let mut ema = upload_params(backend, config, &ema_start)?;
    for (average, weights) in ema.tensors_mut().into_iter().zip(params.tensors()) {
        on("backend", backend.ema_update(average, weights, 0.9))?;
    }

    // The EMA model regenerates a segment of each chosen response.
    let prefixes: Vec<Vec<u32>> = setup
        .pairs
        .iter()
        .zip(&setup.cuts)
        .map(|((prompt, chosen), &cut)| [prompt.as_slice(), &chosen[..cut]].concat())
        .collect();
    let longest = prefixes.iter().map(Vec::len).max().unwrap_or(0) + setup.segment;
    let n = prefixes.len();
    let mut cache = on("backend", KvCache::new(backend, config, n, longest))?;
    let prefill_tokens: usize = prefixes.iter().map(Vec::len).sum();
    let mut buffers = on("backend", DecodeBuffers::new(backend, config, prefill_tokens.max(n), n))?;
    let generation =
        GenerationConfig { max_new_tokens: setup.segment, stop_ids: Vec::new(), sampling: SamplingParams::greedy() };
    let mut rngs: Vec<SapoRng> = (0..n).map(|i| SapoRng::from_seed_and_stream(setup.seed, 10 + i as u64)).collect();
    let prefix_refs: Vec<&[u32]> = prefixes.iter().map(Vec::as_slice).collect();
    let generated = generate(backend, config, &ema, &mut cache, &mut buffers, &prefix_refs, &generation, &mut rngs)
        .map_err(|error| anyhow!("generation: {error}"))?;

    // Chosen and rejected (the chosen response with its segment replaced).
    let mut sequences: Vec<(Vec<u32>, Vec<bool>)> = Vec::with_capacity(2 * n);
    for (i, ((prompt, chosen), &cut)) in setup.pairs.iter().zip(&setup.cuts).enumerate() {
        let mask = |response_len: usize| [vec![false; prompt.len()], vec![true; response_len]].concat();
        let rest = (cut + generated[i].len()).min(chosen.len());
        let rejected_response = [&chosen[..cut], generated[i].as_slice(), &chosen[rest..]].concat();
        sequences.push(([prompt.as_slice(), chosen].concat(), mask(chosen.len())));
        sequences.push(([prompt.as_slice(), &rejected_response].concat(), mask(rejected_response.len())));
    }
    let views: Vec<(&[u32], &[bool])> = sequences.iter().map(|(t, m)| (t.as_slice(), m.as_slice())).collect();
    let packed = PackedBatch::new(&views, config.vocab_size)?;
    let batch = on("backend", DeviceBatch::upload(backend, &packed))?;
    let mut acts =
        on("backend", Activations::new(backend, config, packed.n_tokens(), packed.n_rows(), packed.n_seqs()))?;
    on("backend", acts.set_precision(backend, config, setup.precision))?;

    let reference = on("backend", forward(backend, config, &ema, &batch, &mut acts))?.sums;
    let policy = on("backend", forward(backend, config, &params, &batch, &mut acts))?.sums;
    let wide = |values: &[f32], side: usize| -> Vec<f64> { (0..n).map(|i| f64::from(values[2 * i + side])).collect() };
    let (chosen, rejected) = (wide(&policy, 0), wide(&policy, 1));
    let (ref_chosen, ref_rejected) = (wide(&reference, 0), wide(&reference, 1));
    let pair_batch = PairBatch::new(&chosen, &rejected).with_reference(&ref_chosen, &ref_rejected);
    let objective = Objective::Dpo(DpoParams::default());
    let out = objective.compute(&pair_batch).map_err(|error| anyhow!("{error}"))?;
    let mut d_sums = vec![0.0_f32; 2 * n];
    for i in 0..n {
        d_sums[2 * i] = out.grad_policy_chosen[i] as f32;
        d_sums[2 * i + 1] = out.grad_policy_rejected[i] as f32;
    }
    let d_means = vec![0.0_f32; 2 * n];
    let mut grads = on("backend", LlamaParams::zeros(backend, config))?;
    backward(backend, config, &params, &mut grads, &batch, &mut acts, &d_sums, &d_means)
        .map_err(|error| anyhow!("backward: {error}"))?;
    let grad_norm = on("backend", clip_grad_norm(backend, &mut grads, 1.0))?;
    let clipped = download_params(backend, &grads)?;
    let mut optimizer = on("backend", AdamWState::new(backend, config))?;
    let hp = AdamWParams { weight_decay: 0.01, ..AdamWParams::default() };
    on("backend", optimizer.update(backend, &mut params, &grads, 1e-3, &hp))?;
    Ok(StepOutcome {
        precision: setup.precision,
        ema: download_params(backend, &ema)?,
        generated,
        reference,
        policy,
        loss: out.loss,
        grad_norm,
        grads: clipped,
        params: download_params(backend, &params)?,
    })
}

/// Runs the step on both backends in `setup.precision` and compares every
/// quantity. A bf16 step is held to [`BF16_TOLERANCE`] wherever the f32
/// step is held to a step or operation tolerance (the EMA update and the
/// greedy tokens, f32 either way, keep theirs).
///
/// # Errors
/// A backend error on either side.
pub fn check_step<R: Backend, C: Backend>(backends: Backends<'_, R, C>, setup: &StepSetup) -> Result<Vec<Check>> {
    let reference = run_step("reference", backends.reference, setup)?;
    let candidate = run_step("candidate", backends.candidate, setup)?;
    Ok(compare_steps(setup, &reference, &candidate, setup.precision))
}

/// Everything `sapo verify` checks of the step, running each step once: the
/// f32 step on both backends, the bf16 step on both, the candidate's bf16
/// step against the reference's f32 step (what the rounding costs, held to
/// [`BF16_AGAINST_F32_TOLERANCE`]), and the candidate's f32 step run a
/// second time (the same bits, as [`check_reproducible`]).
///
/// # Errors
/// A backend error on either side.
pub fn check_step_precisions<R: Backend, C: Backend>(
    backends: Backends<'_, R, C>,
    setup: &StepSetup,
) -> Result<Vec<Check>> {
    let f32_setup = setup.clone().with_precision(Precision::F32);
    let bf16_setup = setup.clone().with_precision(Precision::Bf16);
    let reference_f32 = run_step("reference", backends.reference, &f32_setup)?;
    let candidate_f32 = run_step("candidate", backends.candidate, &f32_setup)?;
    let candidate_again = run_step("candidate", backends.candidate, &f32_setup)?;
    let reference_bf16 = run_step("reference", backends.reference, &bf16_setup)?;
    let candidate_bf16 = run_step("candidate", backends.candidate, &bf16_setup)?;
    let mut checks = compare_steps(setup, &reference_f32, &candidate_f32, Precision::F32);
    checks.extend(compare_steps(setup, &reference_bf16, &candidate_bf16, Precision::Bf16));
    let mut cross = compare_steps(setup, &reference_f32, &candidate_bf16, Precision::Bf16);
    // The EMA update and the generation are f32 in both steps: checked above.
    cross.retain(|check| check.dtype == BF16_AGAINST_F32);
    checks.extend(cross);
    checks.push(same_bits(setup, &candidate_f32, &candidate_again));
    Ok(checks)
}

/// Runs the step twice on one backend and checks that every output is the
/// same bits both times (rel. error 0): a backend without float atomics in
/// its reductions and scatter-adds makes runs reproducible.
///
/// # Errors
/// A backend error.
pub fn check_reproducible<B: Backend>(backend: &B, setup: &StepSetup) -> Result<Check> {
    let first = run_step("the", backend, setup)?;
    let second = run_step("the", backend, setup)?;
    Ok(same_bits(setup, &first, &second))
}

/// The label of a bf16 step's quantities compared with an f32 step's.
const BF16_AGAINST_F32: &str = "bf16↔f32";

fn run_step<B: Backend>(side: &str, backend: &B, setup: &StepSetup) -> Result<StepOutcome> {
    sapo_step(backend, setup).map_err(|e| anyhow!("{side} backend: {e}"))
}

/// Every quantity of two runs of the step. `candidate_precision` is the
/// candidate's; the reference ran in f32 or in the same precision.
fn compare_steps(
    setup: &StepSetup,
    reference: &StepOutcome,
    candidate: &StepOutcome,
    candidate_precision: Precision,
) -> Vec<Check> {
    let c = &setup.config;
    let model = format!(
        "L={} C={} H={} KVH={} V={} pairs={}",
        c.num_hidden_layers,
        c.hidden_size,
        c.num_attention_heads,
        c.num_key_value_heads,
        c.vocab_size,
        setup.pairs.len()
    );
    let same_precision = reference.precision == candidate_precision;
    let (passes, step_tolerance, update_tolerance) = match (candidate_precision, same_precision) {
        (Precision::F32, _) => ("f32", F32_STEP_TOLERANCE, F32_OP_TOLERANCE),
        (Precision::Bf16, true) => ("bf16", BF16_TOLERANCE, BF16_TOLERANCE),
        (Precision::Bf16, false) => (BF16_AGAINST_F32, BF16_AGAINST_F32_TOLERANCE, BF16_AGAINST_F32_TOLERANCE),
    };
    let check = |op: &str, rel_error: f64, dtype: &'static str, tolerance: f64| Check {
        op: format!("step: {op}"),
        shape: model.clone(),
        dtype,
        rel_error,
        tolerance,
    };
    let differing = reference.generated.iter().zip(&candidate.generated).filter(|(a, b)| a != b).count();
    let generated_error = if reference.generated.len() == candidate.generated.len() {
        differing as f64 / reference.generated.len().max(1) as f64
    } else {
        f64::INFINITY
    };
    vec![
        check("EMA update", relative_error(&reference.ema, &candidate.ema), "f32", F32_OP_TOLERANCE),
        // Greedy tokens: the fraction of pairs whose segment differs.
        check("greedy segment (pairs differing)", generated_error, "u32", 0.0),
        check(
            "reference log-probs",
            relative_error(&reference.reference, &candidate.reference),
            passes,
            step_tolerance,
        ),
        check("policy log-probs", relative_error(&reference.policy, &candidate.policy), passes, step_tolerance),
        check("DPO loss", scalar_error(reference.loss, candidate.loss), passes, step_tolerance),
        check("grad norm", scalar_error(reference.grad_norm, candidate.grad_norm), passes, step_tolerance),
        check("gradients (clipped)", relative_error(&reference.grads, &candidate.grads), passes, step_tolerance),
        check("weights after AdamW", relative_error(&reference.params, &candidate.params), passes, update_tolerance),
    ]
}

/// Whether two runs of the step gave the same bits everywhere (0) or not.
fn same_bits(setup: &StepSetup, first: &StepOutcome, second: &StepOutcome) -> Check {
    let flat = |o: &StepOutcome| -> Vec<f32> {
        [o.ema.as_slice(), &o.reference, &o.policy, &o.grads, &o.params, &[o.loss as f32, o.grad_norm as f32]].concat()
    };
    let (a, b) = (flat(first), flat(second));
    let identical = a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits())
        && first.generated == second.generated
        && first.loss.to_bits() == second.loss.to_bits()
        && first.grad_norm.to_bits() == second.grad_norm.to_bits();
    let rel_error = if identical { 0.0 } else { relative_error(&a, &b).max(f64::MIN_POSITIVE) };
    Check {
        op: "step: run twice, same bits".into(),
        shape: format!(
            "L={} C={} pairs={}",
            setup.config.num_hidden_layers,
            setup.config.hidden_size,
            setup.pairs.len()
        ),
        dtype: first.precision.name(),
        rel_error,
        tolerance: 0.0,
    }
}
