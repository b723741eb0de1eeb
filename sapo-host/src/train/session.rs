//! The floor every method stands on: the model being trained, its
//! gradients, the optimizer, the run's RNG and counters, and the optimizer
//! step. A [`Session`] holds no method's state; the method types in
//! [`super::methods`] hold theirs and borrow the session for each step.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Result, anyhow, bail};
use sapo_core::model::{self, LlamaParams};
use sapo_core::optim::{LrSchedule, warmup_steps_from_ratio};
use sapo_core::rng::SapoRng;
use sapo_core::sampling::SamplingParams;

use super::TrainBackend;
use super::config::{Init, TrainConfig};
use super::optimizer::Optimizer;
use super::passes::{ModelRef, Workspace};
use super::sampler::Sampler;
use crate::model_files::{self, LoadedModel, Weights};

/// Test hooks, read once from the environment: `SAPO_DEBUG_INTERRUPT_AT_STEP`
/// behaves as if SIGINT arrived during that step, `SAPO_DEBUG_NAN_AT_STEP`
/// puts a NaN into that step's gradient.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DebugHooks {
    pub interrupt_at_step: Option<u64>,
    pub nan_at_step: Option<u64>,
}

impl DebugHooks {
    fn from_env() -> Self {
        let step = |name: &str| std::env::var(name).ok().and_then(|v| v.parse().ok());
        DebugHooks {
            interrupt_at_step: step("SAPO_DEBUG_INTERRUPT_AT_STEP"),
            nan_at_step: step("SAPO_DEBUG_NAN_AT_STEP"),
        }
    }
}

/// What every method's run has: the model and its training machinery.
#[derive(Debug)]
pub struct Session<B: TrainBackend> {
    /// The resolved configuration.
    pub cfg: TrainConfig,
    /// Where the tensors live.
    pub backend: B,
    /// The policy: weights, tokenizer, chat template, stop ids.
    pub model: LoadedModel<B>,
    /// Gradient accumulators, zeroed after each optimizer step.
    pub grads: LlamaParams<B>,
    /// The optimizer and its moments.
    pub optimizer: Optimizer<B>,
    /// Segment cuts and replay draws.
    pub rng: SapoRng,
    /// Generation streams handed out so far (one per generated sequence).
    pub sample_stream: u64,
    /// Optimizer steps taken in the current phase (an iteration restarts it).
    pub phase_step: u64,
    /// Optimizer steps taken in the whole run.
    pub step: u64,
    /// Steps whose update was skipped for a non-finite gradient.
    pub skipped_steps: u64,
    /// Training tokens seen so far.
    pub tokens_seen: u64,
    /// Seconds spent training so far (over resumptions).
    pub train_seconds: f64,
    /// Every step's metrics, for the summary.
    pub history: Vec<BTreeMap<String, f64>>,
    /// Activation buffers reused across passes.
    pub ws: Workspace<B>,
    /// Batched KV-cache generation.
    pub sampler: Sampler<B>,
    pub(crate) debug: DebugHooks,
}

impl<B: TrainBackend> Session<B> {
    /// Loads the model of `cfg` onto `backend`, with zero gradients and a fresh optimizer.
    ///
    /// # Errors
    /// A model that cannot be loaded, or an allocation failure.
    pub fn new(cfg: TrainConfig, backend: B) -> Result<Self> {
        let weights = match cfg.init {
            Init::Pretrained => Weights::Pretrained,
            Init::Random => Weights::Random { seed: cfg.seed, std: cfg.initializer_range },
        };
        let model = model_files::load_with(&backend, &cfg.model, weights)?;
        let grads = LlamaParams::zeros(&backend, &model.config)?;
        let optimizer = Optimizer::new(&backend, &cfg, &model.config)?;
        let rng = SapoRng::from_seed_and_stream(cfg.seed, 1);
        let ws = Workspace::new(cfg.gradient_checkpointing, cfg.precision.model());
        Ok(Session {
            cfg,
            backend,
            model,
            grads,
            optimizer,
            rng,
            sample_stream: 0,
            phase_step: 0,
            step: 0,
            skipped_steps: 0,
            tokens_seen: 0,
            train_seconds: 0.0,
            history: Vec::new(),
            ws,
            sampler: Sampler::default(),
            debug: DebugHooks::from_env(),
        })
    }

    /// The backend and architecture, as the passes take them.
    pub fn model_ref(&self) -> ModelRef<'_, B> {
        ModelRef { backend: &self.backend, config: &self.model.config }
    }

    /// The end-of-sequence id responses end with and segments stop on.
    ///
    /// # Errors
    /// The model names no end-of-sequence token.
    pub fn eos_id(&self) -> Result<u32> {
        self.model.eos_ids.first().copied().ok_or_else(|| anyhow!("the model has no end-of-sequence token"))
    }

    /// The sampling settings of SAPO's EMA model and of SPIN, SPPO and AIPO.
    pub fn sampling(&self) -> SamplingParams {
        SamplingParams {
            greedy: false,
            temperature: self.cfg.temperature,
            top_k: self.cfg.top_k,
            top_p: self.cfg.top_p,
        }
    }

    /// One RNG per sequence about to be generated, each its own stream.
    pub fn next_rngs(&mut self, n: usize) -> Vec<SapoRng> {
        let rngs = (0..n)
            .map(|i| SapoRng::from_seed_and_stream(self.cfg.seed, 0x1_0000_0000 + self.sample_stream + i as u64))
            .collect();
        self.sample_stream += n as u64;
        rngs
    }

    /// The learning-rate schedule of a phase of `total_steps` steps.
    ///
    /// # Errors
    /// A warm-up ratio sapo-core refuses.
    pub fn lr_schedule(&self, total_steps: u64) -> Result<LrSchedule> {
        let warmup_steps = if self.cfg.warmup_steps > 0 {
            self.cfg.warmup_steps
        } else {
            warmup_steps_from_ratio(self.cfg.warmup_ratio, total_steps).map_err(|e| anyhow!("warmup_ratio: {e}"))?
        };
        Ok(LrSchedule { kind: self.cfg.lr_scheduler_type, warmup_steps, total_steps })
    }

    /// Starts a phase (an iteration of SPIN, SPPO or AIPO): a fresh
    /// optimizer and the phase's step count back to zero.
    ///
    /// # Errors
    /// An allocation failure.
    pub fn restart_phase(&mut self) -> Result<()> {
        self.optimizer = Optimizer::new(&self.backend, &self.cfg, &self.model.config)?;
        self.phase_step = 0;
        Ok(())
    }

    /// Clipping, the optimizer update and the step's bookkeeping; gradients
    /// are zeroed for the next step. Returns `(grad_norm, lr)`.
    ///
    /// # Errors
    /// A non-finite gradient (unless `skip_nonfinite_steps`), a backend error.
    pub fn optimizer_step(&mut self, schedule: &LrSchedule) -> Result<(f64, f64)> {
        // Test hook: a NaN gradient at a chosen step.
        if self.debug.nan_at_step == Some(self.step + 1) {
            let mut tensors = self.grads.tensors_mut();
            if let Some(first) = tensors.first_mut() {
                let mut values = self.backend.download(&**first)?;
                values[0] = f32::NAN;
                self.backend.write(&mut **first, &values)?;
            }
        }
        let norm = if self.cfg.max_grad_norm > 0.0 {
            model::clip_grad_norm(&self.backend, &mut self.grads, self.cfg.max_grad_norm)?
        } else {
            model::global_grad_norm(&self.backend, &self.grads)?
        };
        let lr = schedule.learning_rate(self.cfg.learning_rate, self.phase_step);
        if !norm.is_finite() {
            let culprit = self.first_non_finite(&self.grads)?.unwrap_or_else(|| "?".into());
            if !self.cfg.skip_nonfinite_steps {
                bail!(
                    "step {}: the gradient of `{culprit}` is non-finite (norm {norm}); stopping before the weights are touched",
                    self.step + 1
                );
            }
            // Skip the update, keep the data order and the schedule moving.
            self.skipped_steps += 1;
        } else {
            self.optimizer.update(&self.backend, &mut self.model.params, &self.grads, lr)?;
        }
        self.grads.visit_mut(|g| self.backend.fill_zero(g))?;
        self.phase_step += 1;
        self.step += 1;
        Ok((norm, lr))
    }

    /// The Hugging Face name of the first tensor of `params` holding a NaN or an infinity.
    ///
    /// # Errors
    /// A backend error.
    pub fn first_non_finite(&self, params: &LlamaParams<B>) -> Result<Option<String>> {
        for (spec, tensor) in params.tensor_specs(&self.model.config).iter().zip(params.tensors()) {
            if !self.backend.sum_of_squares(tensor)?.is_finite() {
                return Ok(Some(spec.name.clone()));
            }
        }
        Ok(None)
    }

    /// Saves the policy in Hugging Face layout with its tokenizer and chat template.
    ///
    /// # Errors
    /// An I/O error.
    pub fn save_model(&self, dir: &Path) -> Result<()> {
        crate::model_files::hf::save(&self.backend, dir, &self.model.hf_config, &self.model.params)?;
        self.model.tokenizer.save_pretrained(dir)?;
        Ok(())
    }
}
