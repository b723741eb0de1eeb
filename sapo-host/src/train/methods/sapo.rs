//! SAPO (Yin et al.): each step the EMA model regenerates a segment of the
//! chosen response after a random cut, the pairs go through a replay
//! buffer, and the policy trains on draws from it — against a reference
//! model (SAPO-DPO) or without one (SAPO-ORPO). `docs/algorithms.md`, `sapo`.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use sapo_core::model::LlamaParams;
use sapo_core::objectives::Objective;
use sapo_core::replay::{ReplayBuffer, SamplingPolicy};
use sapo_core::segment::{self, SegmentConfig};

use super::{StepOutcome, end_at_stop, end_of_turn_tail};
use crate::train::TrainBackend;
use crate::train::config::{RefUpdate, ReplaySamplingName};
use crate::train::data::PromptChosen;
use crate::train::passes::{self, PairSeqs, ReferenceLogps};
use crate::train::plan::Phase;
use crate::train::report::{Reporter, StepMetrics};
use crate::train::session::Session;
use crate::train::state::MethodCheckpoint;

/// A SAPO replay item: the pair, and which dataset example its chosen side
/// is (its reference log-prob is cached by that index).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReplayItem {
    /// Index of the example in the training data.
    pub example: usize,
    /// Prompt + chosen and prompt + rejected.
    pub pair: PairSeqs,
}

/// SAPO-DPO's reference model and the log-probs of chosen responses under
/// it (valid until the next refresh).
#[derive(Debug)]
struct Reference<B: TrainBackend> {
    params: LlamaParams<B>,
    chosen: HashMap<usize, f32>,
}

/// SAPO's state.
#[derive(Debug)]
pub struct Sapo<B: TrainBackend> {
    examples: Vec<PromptChosen>,
    objective: Objective,
    ema: LlamaParams<B>,
    /// `None` for SAPO-ORPO, whose objective has no reference.
    reference: Option<Reference<B>>,
    replay: ReplayBuffer<ReplayItem>,
    draw_policy: SamplingPolicy,
    phase: Phase,
}

impl<B: TrainBackend> Sapo<B> {
    /// SAPO on `examples`: the EMA model (and SAPO-DPO's reference) start
    /// as copies of the policy, or come from a checkpoint with the replay
    /// buffer and the cached log-probs.
    ///
    /// # Errors
    /// An allocation failure or a bad replay capacity.
    pub fn new(
        session: &mut Session<B>,
        examples: Vec<PromptChosen>,
        objective: Objective,
        resumed: Option<(MethodCheckpoint, &mut BTreeMap<String, LlamaParams<B>>)>,
    ) -> Result<Self> {
        let (state, mut weights) = match resumed {
            Some((state, weights)) => (state, Some(weights)),
            None => (MethodCheckpoint::default(), None),
        };
        let mut take = |name: &str| weights.as_mut().and_then(|w| w.remove(name));
        let copy_of_policy =
            |session: &Session<B>| passes::clone_params(&session.backend, &session.model.config, &session.model.params);
        let ema = match take("ema") {
            Some(ema) => ema,
            None => copy_of_policy(session)?,
        };
        let reference = match (objective.needs_reference(), take("reference")) {
            (false, _) => None,
            (true, saved) => Some(Reference {
                params: match saved {
                    Some(params) => params,
                    None => copy_of_policy(session)?,
                },
                chosen: state.ref_cache.iter().map(|&((example, _), value)| (example, value)).collect(),
            }),
        };
        let replay = match state.replay {
            Some(replay) => replay,
            None => ReplayBuffer::new(session.cfg.replay_capacity).map_err(|e| anyhow!("{e}"))?,
        };
        let draw_policy = match session.cfg.replay_sampling {
            ReplaySamplingName::LeastDrawn => SamplingPolicy::LeastDrawn,
            ReplaySamplingName::Uniform => SamplingPolicy::Uniform,
        };
        let phase = Phase::new(session, examples.len())?;
        Ok(Sapo { examples, objective, ema, reference, replay, draw_policy, phase })
    }

    /// The EMA model and the reference, as a checkpoint stores them.
    pub fn checkpoint_weights(&self) -> Vec<(&'static str, &LlamaParams<B>)> {
        let mut weights = vec![("ema", &self.ema)];
        if let Some(reference) = &self.reference {
            weights.push(("reference", &reference.params));
        }
        weights
    }

    /// The replay buffer and the cached chosen log-probs.
    pub fn checkpoint(&self) -> MethodCheckpoint {
        let mut ref_cache: Vec<((usize, u8), f32)> = match &self.reference {
            Some(reference) => reference.chosen.iter().map(|(&example, &value)| ((example, 0), value)).collect(),
            None => Vec::new(),
        };
        ref_cache.sort_by_key(|(key, _)| *key);
        MethodCheckpoint { replay: Some(self.replay.clone()), ref_cache, spin: None }
    }

    /// One SAPO step (the authors' order: reference refresh when due, EMA
    /// update, sampling, training on replay draws); `None` when done.
    ///
    /// # Errors
    /// A generation, pass or optimizer error, naming the step.
    pub fn step(&mut self, session: &mut Session<B>, reporter: &mut Reporter) -> Result<Option<StepOutcome>> {
        if self.phase.is_done(session) {
            return Ok(None);
        }
        let started = Instant::now();
        let t = session.phase_step;
        let mut metrics = StepMetrics::default();
        // 4 (due at the start of step t, a no-op at t = 0). Reference refresh.
        let cfg = &session.cfg;
        if let Some(reference) = &mut self.reference
            && cfg.ref_update != RefUpdate::Fixed
            && t.is_multiple_of(cfg.ref_update_steps)
            && t > 0
        {
            let source = match cfg.ref_update {
                RefUpdate::Ema => &self.ema,
                RefUpdate::Policy | RefUpdate::Fixed => &session.model.params,
            };
            passes::copy_params(&session.backend, &mut reference.params, source)?;
            reference.chosen.clear();
            let source = format!("{:?}", cfg.ref_update).to_lowercase();
            reporter.log_event(serde_json::json!({"event": "reference_refresh", "step": t, "source": source}))?;
        }
        // 1. EMA update, before sampling.
        for (e, p) in self.ema.tensors_mut().into_iter().zip(session.model.params.tensors()) {
            session.backend.ema_update(e, p, session.cfg.ema_decay)?;
        }
        // 2. Sample every n steps: segments for this step's examples.
        let (batches, epoch) = self.phase.plan.micro_batches(t);
        if t.is_multiple_of(session.cfg.sample_every) {
            let indices: Vec<usize> = batches.iter().flatten().copied().collect();
            let sample_started = Instant::now();
            let (items, mean_length, identical) = self.build_rejected(session, &indices)?;
            for item in items {
                self.replay.push(item);
            }
            metrics.set("samples/mean_length", mean_length);
            metrics.set("samples/identical_to_chosen", identical);
            metrics.set("time/sampling", sample_started.elapsed().as_secs_f64());
        }
        // 3. Train on draws from the buffer.
        let scale = 1.0 / session.cfg.gradient_accumulation_steps as f64;
        let batch_size = session.cfg.per_device_train_batch_size;
        let (mut tokens, mut margins) = (0, Vec::new());
        for _ in 0..batches.len() {
            let positions =
                self.replay.draw(batch_size, self.draw_policy, &mut session.rng).map_err(|e| anyhow!("{e}"))?;
            let drawn: Vec<ReplayItem> = positions
                .iter()
                .map(|&p| self.replay.get(p).map(|entry| entry.item.clone()))
                .collect::<Option<_>>()
                .ok_or_else(|| anyhow!("the replay buffer drew a position it does not hold"))?;
            let reference = match &mut self.reference {
                Some(reference) => {
                    let reference_started = Instant::now();
                    let logps = reference.logps(session, &drawn)?;
                    metrics.add("time/reference", reference_started.elapsed().as_secs_f64());
                    Some(logps)
                }
                None => None,
            };
            let pairs: Vec<&PairSeqs> = drawn.iter().map(|item| &item.pair).collect();
            let policy_started = Instant::now();
            let m = passes::ModelRef { backend: &session.backend, config: &session.model.config };
            let out = passes::pair_step(
                m,
                &session.model.params,
                &mut session.grads,
                &mut session.ws,
                &pairs,
                reference.as_ref(),
                None,
                &self.objective,
                scale,
            )
            .with_context(|| format!("step {}", session.step + 1))?;
            metrics.add("time/policy", policy_started.elapsed().as_secs_f64());
            metrics.add("loss", out.loss);
            for (name, value) in &out.metrics {
                metrics.add(name, *value);
            }
            tokens += out.tokens;
            margins.extend(out.margins);
        }
        let optimizer_started = Instant::now();
        let (grad_norm, lr) = session.optimizer_step(&self.phase.schedule)?;
        metrics.set("time/optimizer", optimizer_started.elapsed().as_secs_f64());
        let draws: u64 = self.replay.entries().map(|e| e.times_drawn).sum();
        metrics.set("replay/size", self.replay.len() as f64);
        metrics.set("replay/mean_draws", draws as f64 / self.replay.len().max(1) as f64);
        if self.objective.needs_reference() {
            reporter.observe_margins(session.step, &margins, lr)?;
        }
        Ok(Some(StepOutcome { metrics, grad_norm, lr, epoch, tokens, started }))
    }

    /// SAPO step 2: segment regeneration by the EMA model for `indices`;
    /// returns the items, their mean generated length and the share
    /// identical to the chosen response.
    fn build_rejected(&self, session: &mut Session<B>, indices: &[usize]) -> Result<(Vec<ReplayItem>, f64, f64)> {
        let segment_config = SegmentConfig {
            segment_len: (session.cfg.segment_len > 0).then_some(session.cfg.segment_len),
            max_length: session.cfg.max_length,
            max_prompt_length: session.cfg.max_prompt_length,
        };
        let eos = session.eos_id()?;
        let mut plans = Vec::with_capacity(indices.len());
        for &i in indices {
            let example = &self.examples[i];
            let plan = segment::plan(example.prompt.len(), example.chosen.len(), &segment_config, &mut session.rng)
                .with_context(|| format!("example {i}"))?;
            plans.push(plan);
        }
        let prefixes: Vec<Vec<u32>> = indices
            .iter()
            .zip(&plans)
            .map(|(&i, plan)| plan.prefix(&self.examples[i].prompt, &self.examples[i].chosen))
            .collect::<Result<_, _>>()?;
        let mut items = Vec::with_capacity(indices.len());
        let (mut generated_total, mut identical) = (0, 0);
        let chunk = session.cfg.per_device_train_batch_size.max(1);
        let sampling = session.sampling();
        for start in (0..indices.len()).step_by(chunk) {
            let end = (start + chunk).min(indices.len());
            let views: Vec<&[u32]> = prefixes[start..end].iter().map(Vec::as_slice).collect();
            let window = plans[start..end].iter().map(|p| p.window).max().unwrap_or(0);
            let mut rngs = session.next_rngs(end - start);
            let outputs = session.sampler.generate(
                &session.backend,
                &session.model.config,
                &self.ema,
                &views,
                window,
                &session.model.eos_ids,
                sampling,
                &mut rngs,
            )?;
            for (offset, mut generated) in outputs.into_iter().enumerate() {
                let (index, plan) = (indices[start + offset], &plans[start + offset]);
                generated.truncate(plan.window);
                end_at_stop(&mut generated, &session.model.eos_ids, eos);
                generated_total += generated.len();
                let example = &self.examples[index];
                let mut pair = segment::assemble(&example.prompt, &example.chosen, plan, &generated, eos)?;
                // The chosen response carries the template's text after the
                // end-of-turn token, which a segment stopped at EOS lacks: give
                // the rejected the same tail so the pair differs only where the
                // text differs.
                if generated.last() == Some(&eos) {
                    pair.rejected.extend_from_slice(end_of_turn_tail(&example.chosen, eos));
                }
                // The EMA model reproduced the chosen response: the pair carries no signal.
                identical += usize::from(pair.rejected == pair.chosen);
                items.push(ReplayItem {
                    example: index,
                    pair: PairSeqs { prompt_len: pair.prompt_len, chosen: pair.chosen, rejected: pair.rejected },
                });
            }
        }
        let n = indices.len().max(1) as f64;
        Ok((items, generated_total as f64 / n, identical as f64 / n))
    }
}

impl<B: TrainBackend> Reference<B> {
    /// Reference log-probs for drawn items: the chosen side from the cache
    /// (valid until the next refresh), the rejected side computed.
    fn logps(&mut self, session: &mut Session<B>, drawn: &[ReplayItem]) -> Result<ReferenceLogps> {
        let mut sequences = Vec::new();
        let mut missing_chosen = Vec::new();
        for item in drawn {
            if !self.chosen.contains_key(&item.example) && !missing_chosen.contains(&item.example) {
                missing_chosen.push(item.example);
                sequences.push(item.pair.scored()[0]);
            }
        }
        let n_chosen = sequences.len();
        for item in drawn {
            sequences.push(item.pair.scored()[1]);
        }
        let m = passes::ModelRef { backend: &session.backend, config: &session.model.config };
        let sums = passes::score(m, &self.params, &mut session.ws, &sequences)?;
        for (example, &sum) in missing_chosen.iter().zip(&sums[..n_chosen]) {
            self.chosen.insert(*example, sum);
        }
        let chosen = drawn
            .iter()
            .map(|item| self.chosen.get(&item.example).copied())
            .collect::<Option<Vec<f32>>>()
            .ok_or_else(|| anyhow!("a drawn example has no reference log-prob"))?;
        Ok(ReferenceLogps { chosen, rejected: sums[n_chosen..].to_vec() })
    }
}
