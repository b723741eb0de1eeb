//! Model passes over batches of pairs or SFT sequences: packing, the
//! reference and policy forwards, the objective, and the backward pass
//! that spreads its per-sequence gradient over the tokens.

use super::TrainBackend;
use anyhow::{Result, anyhow};
use sapo_core::model::{
    self, Activations, DeviceBatch, LlamaConfig, LlamaParams, PackedBatch, Precision, SequenceLogprobs,
};
use sapo_core::objectives::{NllScope, Objective, PairBatch};

/// One preference pair as two whole sequences sharing a prompt.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PairSeqs {
    /// Prompt tokens at the start of both sequences.
    pub prompt_len: usize,
    /// Prompt + chosen response.
    pub chosen: Vec<u32>,
    /// Prompt + rejected response.
    pub rejected: Vec<u32>,
}

impl PairSeqs {
    /// Chosen response tokens.
    pub fn chosen_count(&self) -> u32 {
        (self.chosen.len() - self.prompt_len) as u32
    }

    /// Rejected response tokens.
    pub fn rejected_count(&self) -> u32 {
        (self.rejected.len() - self.prompt_len) as u32
    }

    /// The chosen and the rejected sequence, scored on their responses.
    pub fn scored(&self) -> [ScoredSeq<'_>; 2] {
        [
            ScoredSeq { prompt_len: self.prompt_len, tokens: &self.chosen },
            ScoredSeq { prompt_len: self.prompt_len, tokens: &self.rejected },
        ]
    }
}

/// A sequence scored on its tokens from `prompt_len` on (borrowed, so a
/// batch is packed straight from the data without copying it first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScoredSeq<'a> {
    /// Tokens not scored (the prompt; 0 scores every token after the first).
    pub prompt_len: usize,
    /// All tokens.
    pub tokens: &'a [u32],
}

/// An SFT example: a sequence with its prompt length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SftSeq {
    /// Tokens not scored (the prompt; 0 scores every token after the first).
    pub prompt_len: usize,
    /// All tokens.
    pub tokens: Vec<u32>,
}

impl SftSeq {
    /// The sequence as the passes take it.
    pub fn scored(&self) -> ScoredSeq<'_> {
        ScoredSeq { prompt_len: self.prompt_len, tokens: &self.tokens }
    }

    /// Tokens whose log-prob counts.
    pub fn scored_tokens(&self) -> usize {
        self.tokens.len() - self.prompt_len.max(1)
    }
}

/// Summed log-probs of every pair's chosen and rejected sequence
/// (`[c0, r0, c1, r1, …]`), `chunk` pairs per forward pass.
///
/// # Errors
/// A packing or backend error.
pub fn score_pairs<B: TrainBackend>(
    m: ModelRef<'_, B>,
    params: &LlamaParams<B>,
    ws: &mut Workspace<B>,
    pairs: &[PairSeqs],
    chunk: usize,
) -> Result<Vec<f32>> {
    let mut sums = Vec::with_capacity(2 * pairs.len());
    for chunk in pairs.chunks(chunk.max(1)) {
        let sequences: Vec<ScoredSeq<'_>> = chunk.iter().flat_map(PairSeqs::scored).collect();
        sums.extend(score(m, params, ws, &sequences)?);
    }
    Ok(sums)
}

/// Activations that grow to the largest batch seen, so a run sized by its
/// data never allocates for a worst case it does not meet.
#[derive(Debug)]
pub struct Workspace<B: TrainBackend> {
    acts: Option<Activations<B>>,
    recompute: bool,
    precision: Precision,
}

impl<B: TrainBackend> Workspace<B> {
    /// An empty workspace; `recompute` trades a forward pass for memory;
    /// `precision` is the layers' products' number format.
    pub fn new(recompute: bool, precision: Precision) -> Self {
        Workspace { acts: None, recompute, precision }
    }

    fn fit(&mut self, backend: &B, config: &LlamaConfig, batch: &PackedBatch) -> Result<&mut Activations<B>> {
        let need = (batch.n_tokens().max(1), batch.n_rows().max(1), batch.n_seqs().max(1));
        let fits =
            self.acts.as_ref().is_some_and(|a| a.max_tokens >= need.0 && a.max_rows >= need.1 && a.max_seqs >= need.2);
        if !fits {
            // Grow with headroom so slowly growing batches do not reallocate every step.
            let grown = |old: usize, new: usize| if new > old { new + new / 4 } else { old };
            let old = self.acts.as_ref().map_or((0, 0, 0), |a| (a.max_tokens, a.max_rows, a.max_seqs));
            let (t, r, s) = (grown(old.0, need.0), grown(old.1, need.1), grown(old.2, need.2));
            self.acts = None;
            let acts = if self.recompute {
                Activations::with_recomputation(backend, config, t, r, s)
            } else {
                Activations::new(backend, config, t, r, s)
            };
            let mut acts = acts.map_err(|e| anyhow!("allocating activations for {t} tokens: {e}"))?;
            acts.set_precision(backend, config, self.precision)
                .map_err(|e| anyhow!("allocating the bf16 workspace for {t} tokens: {e}"))?;
            self.acts = Some(acts);
        }
        Ok(self.acts.as_mut().expect("allocated above"))
    }
}

/// Everything a pass needs from the model side.
#[derive(Debug)]
pub struct ModelRef<'a, B: TrainBackend> {
    /// The backend.
    pub backend: &'a B,
    /// The architecture.
    pub config: &'a LlamaConfig,
}

impl<B: TrainBackend> Clone for ModelRef<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B: TrainBackend> Copy for ModelRef<'_, B> {}

fn pack(sequences: &[ScoredSeq<'_>], vocab: usize) -> Result<PackedBatch> {
    let masks: Vec<Vec<bool>> =
        sequences.iter().map(|s| (0..s.tokens.len()).map(|t| t >= s.prompt_len).collect()).collect();
    let views: Vec<(&[u32], &[bool])> = sequences.iter().zip(&masks).map(|(s, m)| (s.tokens, m.as_slice())).collect();
    PackedBatch::new(&views, vocab).map_err(|e| anyhow!("packing a batch: {e}"))
}

/// Per-sequence summed log-probs of `sequences` under `params` (no backward).
///
/// # Errors
/// A packing or backend error.
pub fn score<B: TrainBackend>(
    m: ModelRef<'_, B>,
    params: &LlamaParams<B>,
    ws: &mut Workspace<B>,
    sequences: &[ScoredSeq<'_>],
) -> Result<Vec<f32>> {
    if sequences.is_empty() {
        return Ok(Vec::new());
    }
    let batch = pack(sequences, m.config.vocab_size)?;
    let device = DeviceBatch::upload(m.backend, &batch)?;
    let acts = ws.fit(m.backend, m.config, &batch)?;
    Ok(model::forward(m.backend, m.config, params, &device, acts)?.sums)
}

/// A forward pass kept for its backward.
struct Forward<B: TrainBackend> {
    batch: PackedBatch,
    device: DeviceBatch<B>,
    logps: SequenceLogprobs,
}

fn forward_for_backward<B: TrainBackend>(
    m: ModelRef<'_, B>,
    params: &LlamaParams<B>,
    ws: &mut Workspace<B>,
    sequences: &[ScoredSeq<'_>],
) -> Result<Forward<B>> {
    let batch = pack(sequences, m.config.vocab_size)?;
    let device = DeviceBatch::upload(m.backend, &batch)?;
    let acts = ws.fit(m.backend, m.config, &batch)?;
    let logps = model::forward(m.backend, m.config, params, &device, acts)?;
    Ok(Forward { batch, device, logps })
}

fn backward<B: TrainBackend>(
    m: ModelRef<'_, B>,
    params: &LlamaParams<B>,
    grads: &mut LlamaParams<B>,
    ws: &mut Workspace<B>,
    forward: &Forward<B>,
    d_sums: &[f32],
) -> Result<()> {
    let acts = ws.fit(m.backend, m.config, &forward.batch)?;
    let zeros = vec![0.0; d_sums.len()];
    model::backward(m.backend, m.config, params, grads, &forward.device, acts, d_sums, &zeros)
        .map_err(|e| anyhow!("backward pass: {e}"))
}

/// What one micro-batch of pairs gave.
#[derive(Debug, Clone)]
pub struct PairStepOutput {
    /// The objective's batch-mean loss.
    pub loss: f64,
    /// The objective's metrics (TRL's names).
    pub metrics: Vec<(&'static str, f64)>,
    /// Tokens run through the policy.
    pub tokens: usize,
    /// Per pair `r_c − r_l` (0 for objectives without a reference): the
    /// zero-margin diagnostic reads it.
    pub margins: Vec<f64>,
}

/// Reference log-probs of a micro-batch, per pair.
#[derive(Debug, Clone, Default)]
pub struct ReferenceLogps {
    /// `logref(y_w)`.
    pub chosen: Vec<f32>,
    /// `logref(y_l)`.
    pub rejected: Vec<f32>,
}

/// Forward, objective and backward for one micro-batch of pairs (SPPO's
/// win-rate targets in `win_rates`);
/// gradients (scaled by `scale`, `1/gradient_accumulation_steps`) are
/// accumulated into `grads`.
///
/// # Errors
/// A packing, backend or objective error (a non-finite log-prob is one).
#[allow(clippy::too_many_arguments)]
pub fn pair_step<B: TrainBackend>(
    m: ModelRef<'_, B>,
    params: &LlamaParams<B>,
    grads: &mut LlamaParams<B>,
    ws: &mut Workspace<B>,
    pairs: &[&PairSeqs],
    reference: Option<&ReferenceLogps>,
    win_rates: Option<(&[f64], &[f64])>,
    objective: &Objective,
    scale: f64,
) -> Result<PairStepOutput> {
    let n = pairs.len();
    let mut sequences = Vec::with_capacity(3 * n);
    sequences.extend(pairs.iter().flat_map(|pair| pair.scored()));
    // ORPO's default NLL also counts the prompt's tokens: each prompt is run
    // once more on its own (causal attention gives the same log-probs), its
    // tokens after the first scored.
    let orpo_prompt_nll = matches!(objective, Objective::Orpo(p) if p.nll_scope == NllScope::PromptAndResponse);
    let mut prompt_seq = vec![None; n];
    if orpo_prompt_nll {
        for (i, pair) in pairs.iter().enumerate() {
            if pair.prompt_len >= 2 {
                prompt_seq[i] = Some(sequences.len());
                sequences.push(ScoredSeq { prompt_len: 0, tokens: &pair.chosen[..pair.prompt_len] });
            }
        }
    }
    let forward = forward_for_backward(m, params, ws, &sequences)?;
    let sums = &forward.logps.sums;
    let chosen: Vec<f64> = (0..n).map(|i| f64::from(sums[2 * i])).collect();
    let rejected: Vec<f64> = (0..n).map(|i| f64::from(sums[2 * i + 1])).collect();
    let chosen_counts: Vec<u32> = pairs.iter().map(|p| p.chosen_count()).collect();
    let rejected_counts: Vec<u32> = pairs.iter().map(|p| p.rejected_count()).collect();
    let nll_logps: Vec<f64> = (0..n).map(|i| chosen[i] + prompt_seq[i].map_or(0.0, |s| f64::from(sums[s]))).collect();
    let nll_counts: Vec<u32> =
        (0..n).map(|i| chosen_counts[i] + prompt_seq[i].map_or(0, |_| pairs[i].prompt_len as u32 - 1)).collect();
    let (ref_chosen, ref_rejected): (Vec<f64>, Vec<f64>) = match reference {
        Some(r) => {
            (r.chosen.iter().map(|&v| f64::from(v)).collect(), r.rejected.iter().map(|&v| f64::from(v)).collect())
        }
        None => (Vec::new(), Vec::new()),
    };
    let mut batch = PairBatch::new(&chosen, &rejected).with_token_counts(&chosen_counts, &rejected_counts);
    if reference.is_some() {
        batch = batch.with_reference(&ref_chosen, &ref_rejected);
    }
    if orpo_prompt_nll {
        batch = batch.with_chosen_nll(&nll_logps, &nll_counts);
    }
    if let Some((chosen_rates, rejected_rates)) = win_rates {
        batch = batch.with_win_rates(chosen_rates, rejected_rates);
    }
    let out = objective.compute(&batch).map_err(|e| anyhow!("{e}"))?;
    let mut d_sums = vec![0.0_f32; sequences.len()];
    for i in 0..n {
        d_sums[2 * i] = (out.grad_policy_chosen[i] * scale) as f32;
        d_sums[2 * i + 1] = (out.grad_policy_rejected[i] * scale) as f32;
        if let Some(&g) = out.grad_chosen_nll.get(i) {
            d_sums[2 * i] += (g * scale) as f32;
            if let Some(s) = prompt_seq[i] {
                d_sums[s] = (g * scale) as f32;
            }
        }
    }
    backward(m, params, grads, ws, &forward, &d_sums)?;
    let margins = if reference.is_some() {
        (0..n).map(|i| (chosen[i] - ref_chosen[i]) - (rejected[i] - ref_rejected[i])).collect()
    } else {
        vec![0.0; n]
    };
    Ok(PairStepOutput {
        loss: out.loss,
        metrics: out.metrics.iter().collect(),
        tokens: forward.batch.n_tokens(),
        margins,
    })
}

/// What one SFT micro-batch gave.
#[derive(Debug, Clone, Copy)]
pub struct SftStepOutput {
    /// `−Σ logp` of the micro-batch divided by the window's token count:
    /// summed over the accumulation window it is the pooled token-mean NLL.
    pub loss_part: f64,
    /// Tokens run through the model.
    pub tokens: usize,
}

/// Forward and backward of SFT sequences whose loss is pooled over
/// `window_tokens` scored tokens (all micro-batches of the optimizer step,
/// as transformers pools with `num_items_in_batch`).
///
/// # Errors
/// A packing or backend error, or a non-finite log-prob.
pub fn sft_step<B: TrainBackend>(
    m: ModelRef<'_, B>,
    params: &LlamaParams<B>,
    grads: &mut LlamaParams<B>,
    ws: &mut Workspace<B>,
    sequences: &[ScoredSeq<'_>],
    window_tokens: usize,
) -> Result<SftStepOutput> {
    let forward = forward_for_backward(m, params, ws, sequences)?;
    let total: f64 = forward.logps.sums.iter().map(|&s| f64::from(s)).sum();
    if !total.is_finite() {
        return Err(anyhow!("non-finite log-prob in an SFT batch"));
    }
    let d = -1.0 / window_tokens.max(1) as f64;
    let d_sums = vec![d as f32; sequences.len()];
    backward(m, params, grads, ws, &forward, &d_sums)?;
    Ok(SftStepOutput { loss_part: -total / window_tokens.max(1) as f64, tokens: forward.batch.n_tokens() })
}

/// A copy of `params` in new buffers.
///
/// # Errors
/// A backend error.
pub fn clone_params<B: TrainBackend>(
    backend: &B,
    config: &LlamaConfig,
    params: &LlamaParams<B>,
) -> Result<LlamaParams<B>> {
    let mut copy = LlamaParams::zeros(backend, config)?;
    copy_params(backend, &mut copy, params)?;
    Ok(copy)
}

/// `dst ← src`, tensor by tensor.
///
/// # Errors
/// A backend error.
pub fn copy_params<B: TrainBackend>(backend: &B, dst: &mut LlamaParams<B>, src: &LlamaParams<B>) -> Result<()> {
    for (d, s) in dst.tensors_mut().into_iter().zip(src.tensors()) {
        backend.copy(d, s)?;
    }
    Ok(())
}
