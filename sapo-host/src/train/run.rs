//! The training loop: one [`Trainer`] holds all run state (policy, EMA and
//! reference weights, optimizer moments, replay buffer, RNGs, counters), so
//! it can be saved whole; the methods differ only in how a step's pairs
//! are made.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use sapo_core::cpu::CpuBackend;
use sapo_core::model::{self, AdamWState, LlamaConfig, LlamaParams, RmspropState};
use sapo_core::objectives::{
    AipoParams, DpoParams, HingeParams, IpoParams, NllScope, Objective, OrpoParams, SpinParams, SppoHardParams,
    SppoParams,
};
use sapo_core::optim::{AdamWParams, LrSchedule, RmspropParams, warmup_steps_from_ratio};
use sapo_core::replay::{ReplayBuffer, SamplingPolicy};
use sapo_core::rng::SapoRng;
use sapo_core::sampling::SamplingParams;
use sapo_core::segment::{self, SegmentConfig};
use sapo_core::sppo::{self, TiePolicy};

use super::TrainBackend;
use super::checkpoint::{self, CheckpointParts};
use super::config::{
    Init, Method, NllScopeName, OptimizerName, RefUpdate, ReplaySamplingName, SapoObjective, TrainConfig,
};
use super::data::{self, PromptChosen, TrainData, cut_pair};
use super::eval::{self, EvalOutcome, EvalPrompt};
use super::oracle::{self, Judgement, Oracle};
use super::passes::{self, ModelRef, PairSeqs, ReferenceLogps, ScoredSeq, SftSeq, Workspace};
use super::report::{Reporter, ReporterState, StepMetrics};
use super::sampler::Sampler;
use crate::atomic_file;
use crate::model_files::{self, LoadedModel, Weights};

/// The optimizer and its state.
#[derive(Debug)]
enum Optimizer<B: TrainBackend> {
    AdamW(AdamWState<B>, AdamWParams),
    Rmsprop(RmspropState<B>, RmspropParams),
}

/// A SAPO replay item: the pair, and which dataset example its chosen side
/// is (its reference log-prob is cached by that index).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReplayItem {
    /// Index of the example in the training data.
    pub example: usize,
    /// Prompt + chosen and prompt + rejected.
    pub pair: PairSeqs,
}

/// Marks an error raised while training (exit code 1) rather than while
/// reading the inputs (exit code 2); it reads "while training" in messages.
#[derive(Debug, Clone, Copy)]
pub struct WhileTraining;

impl std::fmt::Display for WhileTraining {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("while training")
    }
}

/// The signal that asked the run to stop (0: none). `sapo` registers
/// SIGINT and SIGTERM to set it; the trainer finishes the step, writes a
/// checkpoint and stops with [`Interrupted`].
pub static INTERRUPT: std::sync::LazyLock<std::sync::Arc<AtomicUsize>> =
    std::sync::LazyLock::new(|| std::sync::Arc::new(AtomicUsize::new(0)));

/// The run stopped on a signal after saving a checkpoint.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error(
    "stopped by signal {signal} after step {step}; checkpoint saved, `sapo train` with the same output directory resumes"
)]
pub struct Interrupted {
    /// The signal number (2 SIGINT, 15 SIGTERM).
    pub signal: usize,
    /// The last step taken.
    pub step: u64,
}

/// Test hooks, read once from the environment: `SAPO_DEBUG_INTERRUPT_AT_STEP`
/// behaves as if SIGINT arrived during that step, `SAPO_DEBUG_NAN_AT_STEP`
/// puts a NaN into that step's gradient.
#[derive(Debug, Clone, Copy, Default)]
struct DebugHooks {
    interrupt_at_step: Option<u64>,
    nan_at_step: Option<u64>,
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

/// Where an iterative run (SPIN, SPPO, AIPO) is: the iteration, its training pairs (its own first,
/// then the previous iteration's) and how many are its own.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct IterationProgress {
    iteration: u64,
    pairs: Vec<PairSeqs>,
    current_len: usize,
    /// SPPO's `(P̂_w, P̂_l)` per pair (empty otherwise).
    win_rates: Vec<(f64, f64)>,
}

/// Everything of a run that is not weights, as a checkpoint's `state.bin`
/// holds it (postcard).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RunState {
    config: TrainConfig,
    step: u64,
    phase_step: u64,
    rng: SapoRng,
    sample_stream: u64,
    replay: Option<ReplayBuffer<ReplayItem>>,
    ref_cache: Vec<((usize, u8), f32)>,
    history: Vec<BTreeMap<String, f64>>,
    eval_initial: Option<Vec<f32>>,
    eval_before: Option<(f64, Option<f64>)>,
    adamw_step: u64,
    tokens_seen: u64,
    train_seconds: f64,
    skipped_steps: u64,
    spin: Option<IterationProgress>,
    reporter: ReporterState,
}

/// One iteration's pairs and SPPO's `(P̂_w, P̂_l)` per pair.
type RankedPairs = (Vec<PairSeqs>, Vec<(f64, f64)>);

/// Held-out pair figures: (share ranking chosen above rejected, reward
/// accuracy and mean reward margin against the starting model).
type PairFigures = (f64, f64, f64);

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// The run directory.
    pub output_dir: PathBuf,
    /// Optimizer steps taken.
    pub steps: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Mean loss over the first and the last tenth of the steps.
    pub loss_first_last: Option<(f64, f64)>,
    /// Mean `rewards/accuracies` over the first and the last tenth.
    pub accuracy_first_last: Option<(f64, f64)>,
    /// Mean `rewards/margins` over the first and the last tenth.
    pub margin_first_last: Option<(f64, f64)>,
    /// Held-out pairs: share where the model ranks chosen above rejected,
    /// before and after.
    pub eval_pair_accuracy: Option<(f64, f64)>,
    /// Held-out pairs after training, against the starting model: reward
    /// accuracy and mean margin β·z.
    pub eval_rewards: Option<(f64, f64)>,
    /// Task accuracy before and after training, if evaluated.
    pub eval_before_after: Option<(f64, f64)>,
    /// Training tokens per second.
    pub tokens_per_second: f64,
}

/// All state of a run.
#[derive(Debug)]
pub struct Trainer<B: TrainBackend = CpuBackend> {
    cfg: TrainConfig,
    backend: B,
    model: LoadedModel<B>,
    grads: LlamaParams<B>,
    optimizer: Optimizer<B>,
    ema: Option<LlamaParams<B>>,
    reference: Option<LlamaParams<B>>,
    replay: Option<ReplayBuffer<ReplayItem>>,
    /// Segment cuts and replay draws.
    rng: SapoRng,
    /// Generation streams handed out so far (one per generated sequence).
    sample_stream: u64,
    /// Optimizer steps taken in the current phase (a SPIN iteration restarts it).
    phase_step: u64,
    /// Optimizer steps taken in the whole run.
    step: u64,
    ref_cache: HashMap<(usize, u8), f32>,
    ws: Workspace<B>,
    sampler: Sampler<B>,
    history: Vec<BTreeMap<String, f64>>,
    /// Held-out pairs (when the evaluation file has chosen and rejected
    /// responses) and their log-probs under the starting model.
    eval_pairs: Option<(Vec<PairSeqs>, Vec<f32>)>,
    /// Held-out prompts scored every `eval_steps` optimizer steps (when > 0).
    periodic_eval: Option<Vec<EvalPrompt>>,
    /// The last periodic evaluation and its step, reused when the run ends at that step.
    last_eval: Option<(u64, EvalOutcome, Option<PairFigures>)>,
    /// Task accuracy and held-out pair accuracy before training.
    eval_before: Option<(f64, Option<f64>)>,
    /// State read from a checkpoint, applied once the data is loaded.
    resume_state: Option<RunState>,
    /// The step of the last checkpoint written or resumed from.
    last_checkpoint: Option<u64>,
    /// Steps whose update was skipped for a non-finite gradient.
    skipped_steps: u64,
    /// The iteration and its pairs (SPIN, SPPO, AIPO).
    spin: Option<IterationProgress>,
    debug: DebugHooks,
    tokens_seen: u64,
    train_seconds: f64,
}

fn objective_for(cfg: &TrainConfig, method: Method) -> Option<Objective> {
    let orpo = OrpoParams {
        lambda: cfg.beta,
        nll_scope: match cfg.nll_scope {
            NllScopeName::PromptAndResponse => NllScope::PromptAndResponse,
            NllScopeName::Response => NllScope::Response,
        },
    };
    Some(match method {
        Method::Sft => return None,
        Method::Dpo => Objective::Dpo(DpoParams { beta: cfg.beta, label_smoothing: cfg.label_smoothing }),
        Method::Ipo => Objective::Ipo(IpoParams { beta: cfg.beta }),
        Method::Hinge => Objective::Hinge(HingeParams { beta: cfg.beta }),
        Method::Orpo => Objective::Orpo(orpo),
        Method::Spin => Objective::Spin(SpinParams { beta: cfg.beta }),
        Method::Sppo => Objective::Sppo(SppoParams { beta: cfg.beta }),
        Method::SppoHard => Objective::SppoHard(SppoHardParams { beta: cfg.beta }),
        Method::Aipo => Objective::Aipo(AipoParams {
            beta: cfg.beta,
            alpha: cfg.aipo_alpha,
            lambda: cfg.aipo_lambda,
            gamma: cfg.aipo_gamma,
            label_smoothing: cfg.label_smoothing,
        }),
        Method::Sapo => match cfg.objective {
            SapoObjective::Dpo => Objective::Dpo(DpoParams { beta: cfg.beta, label_smoothing: cfg.label_smoothing }),
            SapoObjective::Orpo => Objective::Orpo(orpo),
        },
    })
}

fn mean_of_tenths(history: &[BTreeMap<String, f64>], key: &str) -> Option<(f64, f64)> {
    let values: Vec<f64> = history.iter().filter_map(|m| m.get(key).copied()).filter(|v| v.is_finite()).collect();
    if values.is_empty() {
        return None;
    }
    let tenth = (values.len() / 10).max(1);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    Some((mean(&values[..tenth]), mean(&values[values.len() - tenth..])))
}

/// What a rendered response carries after its last end-of-sequence token
/// (empty when it ends with it, or has none).
fn end_of_turn_tail(response: &[u32], eos: u32) -> &[u32] {
    match response.iter().rposition(|&t| t == eos) {
        Some(position) => &response[position + 1..],
        None => &[],
    }
}

/// A permutation of `0..n` for `epoch` (identity when not shuffling).
fn epoch_order(n: usize, seed: u64, epoch: u64, shuffle: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if shuffle {
        let mut rng = SapoRng::from_seed_and_stream(seed, 0x5eed_0000 + epoch);
        for i in (1..n).rev() {
            let j = rng.below(i as u64 + 1).unwrap_or(0) as usize;
            order.swap(i, j);
        }
    }
    order
}

/// Which examples each micro-batch of each step takes: `ceil(n / B)`
/// batches per epoch (the last may be short), `gradient_accumulation_steps`
/// batches per optimizer step, as transformers' Trainer counts them.
#[derive(Debug, Clone)]
struct Schedule {
    n: usize,
    batch: usize,
    accumulation: usize,
    seed: u64,
    shuffle: bool,
    total_steps: u64,
}

impl Schedule {
    fn new(cfg: &TrainConfig, n: usize) -> Self {
        let mut schedule = Schedule {
            n,
            batch: cfg.per_device_train_batch_size,
            accumulation: cfg.gradient_accumulation_steps,
            seed: cfg.seed,
            shuffle: cfg.shuffle,
            total_steps: 0,
        };
        schedule.total_steps =
            if cfg.max_steps > 0 { cfg.max_steps } else { schedule.steps_per_epoch() * cfg.num_train_epochs };
        schedule
    }

    fn steps_per_epoch(&self) -> u64 {
        ((self.n.div_ceil(self.batch) / self.accumulation).max(1)) as u64
    }

    /// The micro-batches of step `step` (0-based) and the fractional epoch.
    fn micro_batches(&self, step: u64) -> (Vec<Vec<usize>>, f64) {
        let per_epoch = self.steps_per_epoch();
        let epoch = step / per_epoch;
        let order = epoch_order(self.n, self.seed, epoch, self.shuffle);
        let first = (step % per_epoch) as usize * self.accumulation;
        let batches = (first..first + self.accumulation)
            .map(|b| order[(b * self.batch).min(self.n)..((b + 1) * self.batch).min(self.n)].to_vec())
            .filter(|batch| !batch.is_empty())
            .collect();
        (batches, (step + 1) as f64 / per_epoch as f64)
    }
}

impl Trainer<CpuBackend> {
    /// [`Trainer::on_backend`] the CPU.
    ///
    /// # Errors
    /// As [`Trainer::on_backend`].
    pub fn new(cfg: TrainConfig) -> Result<Self> {
        Self::on_backend(cfg, CpuBackend::new())
    }

    /// [`Trainer::resume_on`] the CPU.
    ///
    /// # Errors
    /// As [`Trainer::resume_on`].
    pub fn resume(cfg: TrainConfig, allow_config_change: bool) -> Result<(Self, Vec<String>)> {
        Self::resume_on(cfg, CpuBackend::new(), allow_config_change)
    }
}

impl<B: TrainBackend> Trainer<B> {
    /// Loads the model onto `backend` and builds the state `cfg` asks for there.
    ///
    /// # Errors
    /// A model that cannot be loaded, or an allocation failure.
    pub fn on_backend(cfg: TrainConfig, backend: B) -> Result<Self> {
        let weights = match cfg.init {
            Init::Pretrained => Weights::Pretrained,
            Init::Random => Weights::Random { seed: cfg.seed, std: cfg.initializer_range },
        };
        let model = model_files::load_with(&backend, &cfg.model, weights)?;
        let config = model.config;
        let grads = LlamaParams::zeros(&backend, &config)?;
        let optimizer = Self::fresh_optimizer(&backend, &cfg, &config)?;
        let rng = SapoRng::from_seed_and_stream(cfg.seed, 1);
        let ws = Workspace::new(cfg.gradient_checkpointing, cfg.precision.model());
        Ok(Trainer {
            cfg,
            backend,
            model,
            grads,
            optimizer,
            ema: None,
            reference: None,
            replay: None,
            rng,
            sample_stream: 0,
            phase_step: 0,
            step: 0,
            ref_cache: HashMap::new(),
            ws,
            sampler: Sampler::default(),
            history: Vec::new(),
            eval_pairs: None,
            periodic_eval: None,
            last_eval: None,
            eval_before: None,
            resume_state: None,
            last_checkpoint: None,
            skipped_steps: 0,
            spin: None,
            debug: DebugHooks::from_env(),
            tokens_seen: 0,
            train_seconds: 0.0,
        })
    }

    fn fresh_optimizer(backend: &B, cfg: &TrainConfig, config: &LlamaConfig) -> Result<Optimizer<B>> {
        Ok(match cfg.optimizer {
            OptimizerName::Adamw => Optimizer::AdamW(
                AdamWState::new(backend, config)?,
                AdamWParams {
                    beta1: cfg.adam_beta1,
                    beta2: cfg.adam_beta2,
                    eps: cfg.adam_epsilon,
                    weight_decay: cfg.weight_decay,
                },
            ),
            OptimizerName::Rmsprop => Optimizer::Rmsprop(
                RmspropState::new(backend, config)?,
                RmspropParams {
                    alpha: cfg.rmsprop_alpha,
                    eps: cfg.rmsprop_epsilon,
                    weight_decay: cfg.weight_decay,
                    momentum: 0.0,
                    centered: false,
                },
            ),
        })
    }

    /// The end-of-sequence id responses end with and segments stop on.
    fn eos_id(&self) -> Result<u32> {
        self.model.eos_ids.first().copied().ok_or_else(|| anyhow!("the model has no end-of-sequence token"))
    }

    /// Runs the configured method to the end: evaluation before, training,
    /// evaluation after, the final model, plots and a summary.
    ///
    /// # Errors
    /// Bad data, a non-finite loss or gradient (with the step), an I/O error.
    pub fn run(mut self, quiet: bool) -> Result<RunSummary> {
        let cfg = self.cfg.clone();
        std::fs::create_dir_all(&cfg.output_dir).with_context(|| format!("{}", cfg.output_dir.display()))?;
        atomic_file::write_atomically(&cfg.output_dir.join("config.toml"), cfg.to_toml().as_bytes())?;
        let template = self.model.chat_template.clone();
        let train_data = data::load(&cfg, &cfg.data, &self.model.tokenizer, template.as_ref())?;
        let eval_prompts = if cfg.eval_data.as_os_str().is_empty() {
            None
        } else {
            Some(eval::read_prompts(&cfg.eval_data, &self.model.tokenizer, template.as_ref())?)
        };
        if eval_prompts.is_some() {
            // The same file as pairs, if it has rejected responses: TRL's
            // eval_rewards/* on held-out pairs, against the starting model.
            let as_pairs = TrainConfig { method: Method::Dpo, ..cfg.clone() };
            if let Ok(TrainData::Pairs(pairs)) =
                data::load(&as_pairs, &cfg.eval_data, &self.model.tokenizer, template.as_ref())
            {
                self.eval_pairs = Some((pairs, Vec::new()));
            }
        }
        let resume_reporter = match self.resume_state.take() {
            Some(state) => Some(self.apply_state(state)?),
            None => None,
        };
        let spin_iterations = match cfg.method {
            Method::Spin => cfg.spin_iterations,
            Method::Sppo | Method::SppoHard | Method::Aipo => cfg.iterations,
            _ => 1,
        };
        let total_estimate = Schedule::new(&cfg, train_data.len()).total_steps * spin_iterations;
        let reporter =
            Reporter::new(&cfg.output_dir, total_estimate, cfg.zero_margin_warn_steps, quiet, resume_reporter)?;
        reporter.phase(cfg.method.name());
        reporter.say(&format!(
            "sapo train: {} on {} ({} examples, {} parameters), {} steps → {}",
            cfg.method.name(),
            cfg.model.display(),
            train_data.len(),
            self.model.config.parameter_count(),
            total_estimate,
            cfg.output_dir.display()
        ));

        self.train_phase(&cfg, train_data, eval_prompts, reporter).context(WhileTraining)
    }

    fn train_phase(
        &mut self,
        cfg: &TrainConfig,
        train_data: TrainData,
        eval_prompts: Option<Vec<EvalPrompt>>,
        mut reporter: Reporter,
    ) -> Result<RunSummary> {
        if self.step == 0
            && let Some(prompts) = &eval_prompts
        {
            let (outcome, pairs) = self.evaluate(prompts, &mut reporter, "before")?;
            self.eval_before = Some((outcome.summary.accuracy, pairs.map(|p| p.0)));
        }
        if cfg.eval_steps > 0 {
            self.periodic_eval.clone_from(&eval_prompts);
        }
        let started = Instant::now();
        let seconds_before = self.train_seconds;
        match train_data {
            TrainData::Sft(sequences) => self.train_sft(&sequences, &mut reporter)?,
            TrainData::Pairs(pairs) => self.train_offline(&pairs, &mut reporter)?,
            TrainData::PromptChosen(examples) if cfg.method == Method::Sapo => {
                self.train_sapo(&examples, &mut reporter)?
            }
            TrainData::PromptChosen(examples) => self.train_spin(&examples, &mut reporter)?,
            TrainData::Prompts(prompts) => self.train_ranked(&prompts, &mut reporter)?,
        }
        self.train_seconds = seconds_before + started.elapsed().as_secs_f64();
        if self.last_checkpoint != Some(self.step) {
            self.save_checkpoint(&reporter)?;
        }
        reporter.finish();
        let after = match &eval_prompts {
            Some(prompts) => Some(self.evaluate(prompts, &mut reporter, "after")?),
            None => None,
        };

        let final_dir = cfg.output_dir.join("final");
        self.save_model(&final_dir)?;
        let plots = crate::plot::read_metrics(&cfg.output_dir.join("metrics.jsonl"))
            .and_then(|rows| crate::plot::plot_training_curves(&rows, &cfg.output_dir.join("plots")))
            .and_then(|mut written| {
                let metrics = cfg.output_dir.join("metrics.jsonl");
                written.extend(crate::plot::plot_iteration_curves(&metrics, &cfg.output_dir.join("plots"))?);
                Ok(written)
            });
        if let Err(error) = plots {
            reporter.warn(self.step, &format!("drawing the training curves: {error}"))?;
        }
        let summary = RunSummary {
            output_dir: cfg.output_dir.clone(),
            steps: self.step,
            seconds: reporter.elapsed(),
            loss_first_last: mean_of_tenths(&self.history, "loss"),
            accuracy_first_last: mean_of_tenths(&self.history, "rewards/accuracies"),
            margin_first_last: mean_of_tenths(&self.history, "rewards/margins"),
            eval_before_after: self.eval_before.zip(after.as_ref()).map(|(b, a)| (b.0, a.0.summary.accuracy)),
            eval_pair_accuracy: self.eval_before.zip(after.as_ref()).and_then(|(b, a)| Some((b.1?, a.1?.0))),
            eval_rewards: after.as_ref().and_then(|a| a.1.map(|p| (p.1, p.2))),
            tokens_per_second: self.tokens_seen as f64 / self.train_seconds.max(1e-9),
        };
        reporter.log_event(serde_json::json!({
            "event": "summary",
            "steps": summary.steps,
            "seconds": summary.seconds,
            "tokens_per_second": summary.tokens_per_second,
            "tokens_trained": self.tokens_seen,
            "train_seconds": self.train_seconds,
            "eval_accuracy_before": summary.eval_before_after.map(|p| p.0),
            "eval_accuracy_after": summary.eval_before_after.map(|p| p.1),
        }))?;
        Ok(summary)
    }

    /// Config fields that do not change a run's numbers: they may differ
    /// between a checkpoint and its resumption.
    const HARMLESS_FIELDS: &'static [&'static str] = &[
        "output_dir",
        "logging_steps",
        "save_steps",
        "save_total_limit",
        "zero_margin_warn_steps",
        "eval_max_new_tokens",
        "eval_steps",
        // A run may continue on another device (its numbers then differ
        // from an uninterrupted run's by the backends' rounding).
        "device",
    ];

    /// Loads the newest complete checkpoint of `cfg.output_dir` and the model
    /// onto `backend`, so [`Trainer::run`] continues the run exactly where it stopped.
    ///
    /// # Errors
    /// No checkpoint verifies (the reasons are named), or a config that differs from the checkpoint's in a field that
    /// changes the result (the differences are listed) unless
    /// `allow_config_change`.
    pub fn resume_on(cfg: TrainConfig, backend: B, allow_config_change: bool) -> Result<(Self, Vec<String>)> {
        let mut trainer = Trainer::on_backend(cfg, backend)?;
        let (loaded, skipped) =
            checkpoint::load_newest(&trainer.backend, &trainer.model.config, &trainer.cfg.output_dir)?;
        let state: RunState = postcard::from_bytes(&loaded.state)
            .map_err(|e| anyhow!("{}: run state does not decode: {e}", loaded.dir.join("state.bin").display()))?;
        let differences = config_differences(&state.config, &trainer.cfg, Self::HARMLESS_FIELDS);
        if !differences.is_empty() && !allow_config_change {
            bail!(
                "the config differs from the checkpoint's ({}): {}; pass --allow-config-change to resume anyway, or --overwrite to start again",
                loaded.dir.display(),
                differences.join(", ")
            );
        }
        let mut weights = loaded.weights;
        trainer.model.params =
            weights.remove("policy").ok_or_else(|| anyhow!("{}: no policy weights", loaded.dir.display()))?;
        trainer.ema = weights.remove("ema");
        trainer.reference = weights.remove("reference");
        match &mut trainer.optimizer {
            Optimizer::AdamW(state_moments, _) => {
                let (m, v) = (weights.remove("exp_avg"), weights.remove("exp_avg_sq"));
                let (Some(m), Some(v)) = (m, v) else { bail!("{}: no AdamW moments", loaded.dir.display()) };
                state_moments.exp_avg = m;
                state_moments.exp_avg_sq = v;
                state_moments.step = state.adamw_step;
            }
            Optimizer::Rmsprop(state_avg, _) => {
                state_avg.square_avg = weights
                    .remove("square_avg")
                    .ok_or_else(|| anyhow!("{}: no RMSprop averages", loaded.dir.display()))?;
            }
        }
        trainer.last_checkpoint = Some(loaded.manifest.step);
        trainer.resume_state = Some(state);
        let mut notes = skipped.into_iter().map(|reason| format!("skipped a checkpoint: {reason}")).collect::<Vec<_>>();
        notes.push(format!("resuming from {} (step {})", loaded.dir.display(), loaded.manifest.step));
        Ok((trainer, notes))
    }

    /// Restores the non-weight state; returns the reporter's.
    fn apply_state(&mut self, state: RunState) -> Result<ReporterState> {
        self.step = state.step;
        self.phase_step = state.phase_step;
        self.rng = state.rng;
        self.sample_stream = state.sample_stream;
        self.replay = state.replay;
        self.ref_cache = state.ref_cache.into_iter().collect();
        self.history = state.history;
        self.eval_before = state.eval_before;
        if let (Some((_, initial)), Some(saved)) = (&mut self.eval_pairs, state.eval_initial) {
            *initial = saved;
        }
        self.tokens_seen = state.tokens_seen;
        self.train_seconds = state.train_seconds;
        self.skipped_steps = state.skipped_steps;
        self.spin = state.spin;
        Ok(state.reporter)
    }

    /// Writes a checkpoint of the whole run state at the current step —
    /// never of a bad state: non-finite weights stop the run instead, and
    /// the previous checkpoint stays the newest.
    fn save_checkpoint(&mut self, reporter: &Reporter) -> Result<()> {
        if let Some(tensor) = self.first_non_finite(&self.model.params)? {
            bail!("step {}: weight `{tensor}` is non-finite; not writing a checkpoint of this state", self.step);
        }
        let mut ref_cache: Vec<((usize, u8), f32)> = self.ref_cache.iter().map(|(k, v)| (*k, *v)).collect();
        ref_cache.sort_by_key(|(k, _)| *k);
        let adamw_step = match &self.optimizer {
            Optimizer::AdamW(state, _) => state.step,
            Optimizer::Rmsprop(..) => 0,
        };
        let state = RunState {
            config: self.cfg.clone(),
            step: self.step,
            phase_step: self.phase_step,
            rng: self.rng.clone(),
            sample_stream: self.sample_stream,
            replay: self.replay.clone(),
            ref_cache,
            history: self.history.clone(),
            eval_initial: self.eval_pairs.as_ref().map(|(_, initial)| initial.clone()),
            eval_before: self.eval_before,
            adamw_step,
            tokens_seen: self.tokens_seen,
            train_seconds: self.train_seconds,
            skipped_steps: self.skipped_steps,
            spin: self.spin.clone(),
            reporter: reporter.state(),
        };
        let mut weights: Vec<(&'static str, &LlamaParams<B>)> = vec![("policy", &self.model.params)];
        if let Some(ema) = &self.ema {
            weights.push(("ema", ema));
        }
        if let Some(reference) = &self.reference {
            weights.push(("reference", reference));
        }
        match &self.optimizer {
            Optimizer::AdamW(moments, _) => {
                weights.push(("exp_avg", &moments.exp_avg));
                weights.push(("exp_avg_sq", &moments.exp_avg_sq));
            }
            Optimizer::Rmsprop(averages, _) => weights.push(("square_avg", &averages.square_avg)),
        }
        let parts = CheckpointParts { weights, state: postcard::to_allocvec(&state)? };
        checkpoint::save(
            &self.backend,
            &self.model.config,
            &self.cfg.output_dir,
            self.step,
            &parts,
            self.cfg.save_total_limit,
        )?;
        self.last_checkpoint = Some(self.step);
        Ok(())
    }

    /// Saves the policy in Hugging Face layout with its tokenizer and chat template.
    ///
    /// # Errors
    /// An I/O error.
    pub fn save_model(&self, dir: &Path) -> Result<()> {
        model_files::hf::save(&self.backend, dir, &self.model.hf_config, &self.model.params)?;
        self.model.tokenizer.save_pretrained(dir)?;
        Ok(())
    }

    /// Task accuracy with the judge, and on held-out pairs `(pair accuracy,
    /// reward accuracy, reward margin)` against the starting model.
    fn evaluate(
        &mut self,
        prompts: &[EvalPrompt],
        reporter: &mut Reporter,
        when: &str,
    ) -> Result<(EvalOutcome, Option<PairFigures>)> {
        let (outcome, pairs) = match self.last_eval.take() {
            // The weights have not moved since the periodic evaluation of
            // this step (the run's last step is often one): log it again.
            Some((step, outcome, pairs)) if step == self.step => (outcome, pairs),
            _ => self.evaluate_now(prompts)?,
        };
        if when == "during" {
            self.last_eval = Some((self.step, outcome.clone(), pairs));
        }
        self.log_evaluation(&outcome, pairs, reporter, when)?;
        Ok((outcome, pairs))
    }

    /// Greedy answers to the held-out prompts, judged, and the held-out pair figures.
    fn evaluate_now(&mut self, prompts: &[EvalPrompt]) -> Result<(EvalOutcome, Option<PairFigures>)> {
        let outcome = eval::evaluate(
            &self.backend,
            &self.model.config,
            &self.model.params,
            &self.model.tokenizer,
            &self.model.eos_ids,
            prompts,
            self.cfg.eval_max_new_tokens,
            &mut self.sampler,
        )?;
        let pairs = match self.eval_pairs.take() {
            Some((pairs, mut initial)) => {
                let m = ModelRef { backend: &self.backend, config: &self.model.config };
                let sums = passes::score_pairs(m, &self.model.params, &mut self.ws, &pairs, 32)?;
                if initial.is_empty() {
                    initial = sums.clone();
                }
                let n = pairs.len() as f64;
                let (mut ranked, mut rewarded, mut margin) = (0.0, 0.0, 0.0);
                for i in 0..pairs.len() {
                    let (c, r) = (f64::from(sums[2 * i]), f64::from(sums[2 * i + 1]));
                    let z = (c - f64::from(initial[2 * i])) - (r - f64::from(initial[2 * i + 1]));
                    ranked += f64::from(u8::from(c > r));
                    rewarded += f64::from(u8::from(z > 0.0));
                    margin += self.cfg.beta * z;
                }
                self.eval_pairs = Some((pairs, initial));
                Some((ranked / n, rewarded / n, margin / n))
            }
            None => None,
        };
        Ok((outcome, pairs))
    }

    /// Prints an evaluation and logs its `eval` event.
    fn log_evaluation(
        &self,
        outcome: &EvalOutcome,
        pairs: Option<PairFigures>,
        reporter: &mut Reporter,
        when: &str,
    ) -> Result<()> {
        let per_kind: serde_json::Map<String, serde_json::Value> = outcome
            .summary
            .per_kind
            .iter()
            .map(|(kind, s)| (kind.name().to_string(), serde_json::json!(s.correct as f64 / s.n.max(1) as f64)))
            .collect();
        let pair_text = pairs.map_or(String::new(), |(ranked, _, _)| {
            format!("; ranks the correct answer above the wrong one in {:.1}% of held-out pairs", 100.0 * ranked)
        });
        let moment = if when == "during" { format!("at step {}", self.step) } else { format!("{when} training") };
        reporter.say(&format!(
            "task accuracy {moment}: {:.1}% of {} held-out prompts (mean score {:.3}){pair_text}",
            100.0 * outcome.summary.accuracy,
            outcome.summary.n,
            outcome.summary.mean_score
        ));
        let mut event = serde_json::json!({
            "event": "eval",
            "when": when,
            "step": self.step,
            "eval/accuracy": outcome.summary.accuracy,
            "eval/mean_score": outcome.summary.mean_score,
            "eval/mean_length": outcome.mean_length,
            "eval/per_kind_accuracy": per_kind,
        });
        if let Some((ranked, rewarded, margin)) = pairs {
            event["eval/pair_accuracy"] = ranked.into();
            event["eval/rewards/accuracies"] = rewarded.into();
            event["eval/rewards/margins"] = margin.into();
        }
        reporter.log_event(event)
    }

    fn lr_schedule(&self, total_steps: u64) -> Result<LrSchedule> {
        let warmup_steps = if self.cfg.warmup_steps > 0 {
            self.cfg.warmup_steps
        } else {
            warmup_steps_from_ratio(self.cfg.warmup_ratio, total_steps).map_err(|e| anyhow!("warmup_ratio: {e}"))?
        };
        Ok(LrSchedule { kind: self.cfg.lr_scheduler_type, warmup_steps, total_steps })
    }

    /// Clipping, the optimizer update and the step's bookkeeping; gradients
    /// are zeroed for the next step. Returns `(grad_norm, lr)`.
    fn optimizer_step(&mut self, schedule: &LrSchedule) -> Result<(f64, f64)> {
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
            match &mut self.optimizer {
                Optimizer::AdamW(state, hp) => {
                    state.update(&self.backend, &mut self.model.params, &self.grads, lr, hp)?
                }
                Optimizer::Rmsprop(state, hp) => {
                    state.update(&self.backend, &mut self.model.params, &self.grads, lr, hp)?
                }
            }
        }
        self.grads.visit_mut(|g| self.backend.fill_zero(g))?;
        self.phase_step += 1;
        self.step += 1;
        Ok((norm, lr))
    }

    /// The Hugging Face name of the first tensor of `params` holding a NaN or an infinity.
    fn first_non_finite(&self, params: &LlamaParams<B>) -> Result<Option<String>> {
        for (spec, tensor) in params.tensor_specs(&self.model.config).iter().zip(params.tensors()) {
            if !self.backend.sum_of_squares(tensor)?.is_finite() {
                return Ok(Some(spec.name.clone()));
            }
        }
        Ok(None)
    }

    #[allow(clippy::too_many_arguments)]
    fn finish_step(
        &mut self,
        reporter: &mut Reporter,
        mut metrics: StepMetrics,
        norm: f64,
        lr: f64,
        epoch: f64,
        tokens: usize,
        started: Instant,
    ) -> Result<()> {
        let seconds = started.elapsed().as_secs_f64();
        metrics.set("grad_norm", norm);
        if self.cfg.skip_nonfinite_steps {
            metrics.set("skipped_nonfinite_steps", self.skipped_steps as f64);
        }
        metrics.set("learning_rate", lr);
        metrics.set("epoch", epoch);
        metrics.set("tokens_per_second", tokens as f64 / seconds.max(1e-9));
        metrics.set("step_seconds", seconds);
        // A non-finite log-prob never gets here: the objectives and
        // `passes::sft_step` refuse it before any update.
        let values = metrics.finish();
        self.tokens_seen += tokens as u64;
        if self.step.is_multiple_of(self.cfg.logging_steps) || self.step == 1 {
            reporter.log_step(self.step, &values)?;
        }
        reporter.tick();
        self.history.push(values);
        // Test hook: behave as if SIGINT arrived during this step.
        if self.debug.interrupt_at_step == Some(self.step) {
            INTERRUPT.store(2, Ordering::SeqCst);
        }
        // Before a checkpoint, so a resumed run's metrics.jsonl holds every
        // periodic evaluation up to its step. Evaluation draws on no run RNG.
        if self.cfg.eval_steps > 0
            && self.step.is_multiple_of(self.cfg.eval_steps)
            && let Some(prompts) = self.periodic_eval.take()
        {
            let outcome = self.evaluate(&prompts, reporter, "during");
            self.periodic_eval = Some(prompts);
            outcome?;
        }
        let signal = INTERRUPT.load(Ordering::SeqCst);
        let due = self.cfg.save_steps > 0 && self.step.is_multiple_of(self.cfg.save_steps);
        if due || signal != 0 {
            self.save_checkpoint(reporter)?;
        }
        if signal != 0 {
            return Err(Interrupted { signal, step: self.step }.into());
        }
        Ok(())
    }

    fn train_sft(&mut self, sequences: &[SftSeq], reporter: &mut Reporter) -> Result<()> {
        let plan = Schedule::new(&self.cfg, sequences.len());
        let schedule = self.lr_schedule(plan.total_steps)?;
        while self.phase_step < plan.total_steps {
            let started = Instant::now();
            let (indices, epoch) = plan.micro_batches(self.phase_step);
            let window: usize = indices.iter().flatten().map(|&i| sequences[i].scored_tokens()).sum();
            let batches: Vec<Vec<ScoredSeq<'_>>> =
                indices.iter().map(|b| b.iter().map(|&i| sequences[i].scored()).collect()).collect();
            let (mut loss, mut tokens) = (0.0, 0);
            for batch in &batches {
                let out = passes::sft_step(
                    ModelRef { backend: &self.backend, config: &self.model.config },
                    &self.model.params,
                    &mut self.grads,
                    &mut self.ws,
                    batch,
                    window,
                )
                .with_context(|| format!("step {}", self.step + 1))?;
                loss += out.loss_part;
                tokens += out.tokens;
            }
            let mut metrics = StepMetrics::default();
            metrics.set("loss", loss);
            metrics.set("num_tokens", window as f64);
            let (norm, lr) = self.optimizer_step(&schedule)?;
            self.finish_step(reporter, metrics, norm, lr, epoch, tokens, started)?;
        }
        Ok(())
    }

    /// Reference log-probs of the sequences, in the order given.
    fn reference_scores(&mut self, sequences: &[ScoredSeq<'_>]) -> Result<Vec<f32>> {
        let m = ModelRef { backend: &self.backend, config: &self.model.config };
        let reference = self.reference.as_ref().unwrap_or(&self.model.params);
        passes::score(m, reference, &mut self.ws, sequences)
    }

    fn train_offline(&mut self, pairs: &[PairSeqs], reporter: &mut Reporter) -> Result<()> {
        let objective = objective_for(&self.cfg, self.cfg.method).expect("pair method");
        // Reference log-probs once, before any update (the policy is the
        // reference then): TRL's precompute_ref_log_probs.
        if objective.needs_reference() && self.ref_cache.is_empty() {
            self.precompute_reference(pairs, reporter)?;
        } else if objective.needs_reference() {
            reporter.say(&format!("reusing {} cached reference log-probs from the checkpoint", self.ref_cache.len()));
        }
        self.train_pairs_from(pairs, None, &objective, reporter)
    }

    /// The file in `ref_logps/` for these pairs under the current reference:
    /// named by a CRC-32 of the reference weights and one of the tokenised
    /// pairs, so a changed model or data never reads a stale cache.
    fn reference_cache_path(&self, pairs: &[PairSeqs]) -> Result<PathBuf> {
        let mut weights = crc32fast::Hasher::new();
        let reference = self.reference.as_ref().unwrap_or(&self.model.params);
        for tensor in reference.tensors() {
            let values = self.backend.download(tensor)?;
            values.iter().for_each(|v| weights.update(&v.to_le_bytes()));
        }
        let mut data = crc32fast::Hasher::new();
        for pair in pairs {
            data.update(&(pair.prompt_len as u64).to_le_bytes());
            for side in [&pair.chosen, &pair.rejected] {
                data.update(&(side.len() as u64).to_le_bytes());
                side.iter().for_each(|t| data.update(&t.to_le_bytes()));
            }
        }
        let name = format!("{:08x}-{:08x}.bin", weights.finalize(), data.finalize());
        Ok(self.cfg.output_dir.join("ref_logps").join(name))
    }

    fn precompute_reference(&mut self, pairs: &[PairSeqs], reporter: &Reporter) -> Result<()> {
        self.ref_cache.clear();
        let path = self.reference_cache_path(pairs)?;
        let cached: Option<Vec<f32>> = std::fs::read(&path)
            .ok()
            .and_then(|bytes| checkpoint::decode_state(&bytes).ok().and_then(|p| postcard::from_bytes(p).ok()))
            .filter(|sums: &Vec<f32>| sums.len() == 2 * pairs.len());
        let sums = match cached {
            Some(sums) => {
                reporter.say(&format!(
                    "reusing the reference log-probs of {} pairs from {}",
                    pairs.len(),
                    path.display()
                ));
                sums
            }
            None => {
                reporter.say(&format!(
                    "computing reference log-probs of {} pairs once → {}",
                    pairs.len(),
                    path.display()
                ));
                let m = ModelRef { backend: &self.backend, config: &self.model.config };
                let reference = self.reference.as_ref().unwrap_or(&self.model.params);
                let chunk = self.cfg.per_device_train_batch_size;
                let sums = passes::score_pairs(m, reference, &mut self.ws, pairs, chunk)?;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
                }
                atomic_file::write_atomically(&path, &checkpoint::encode_state(&postcard::to_allocvec(&sums)?))?;
                sums
            }
        };
        for (index, pair_sums) in sums.chunks(2).enumerate() {
            self.ref_cache.insert((index, 0), pair_sums[0]);
            self.ref_cache.insert((index, 1), pair_sums[1]);
        }
        Ok(())
    }

    /// Trains on fixed pairs whose reference log-probs are in the cache
    /// (offline methods and a SPIN iteration).
    fn train_pairs_from(
        &mut self,
        pairs: &[PairSeqs],
        win_rates: Option<&[(f64, f64)]>,
        objective: &Objective,
        reporter: &mut Reporter,
    ) -> Result<()> {
        let plan = Schedule::new(&self.cfg, pairs.len());
        let schedule = self.lr_schedule(plan.total_steps)?;
        let scale = 1.0 / self.cfg.gradient_accumulation_steps as f64;
        while self.phase_step < plan.total_steps {
            let started = Instant::now();
            let (batches, epoch) = plan.micro_batches(self.phase_step);
            let mut metrics = StepMetrics::default();
            let (mut tokens, mut margins) = (0, Vec::new());
            for batch in &batches {
                let selected: Vec<&PairSeqs> = batch.iter().map(|&i| &pairs[i]).collect();
                let rates: Option<(Vec<f64>, Vec<f64>)> =
                    win_rates.map(|rates| batch.iter().map(|&i| rates[i]).unzip());
                let reference = objective.needs_reference().then(|| ReferenceLogps {
                    chosen: batch.iter().map(|&i| self.ref_cache[&(i, 0)]).collect(),
                    rejected: batch.iter().map(|&i| self.ref_cache[&(i, 1)]).collect(),
                });
                let out = passes::pair_step(
                    ModelRef { backend: &self.backend, config: &self.model.config },
                    &self.model.params,
                    &mut self.grads,
                    &mut self.ws,
                    &selected,
                    reference.as_ref(),
                    rates.as_ref().map(|(w, l)| (w.as_slice(), l.as_slice())),
                    objective,
                    scale,
                )
                .with_context(|| format!("step {}", self.step + 1))?;
                metrics.add("loss", out.loss);
                for (name, value) in &out.metrics {
                    metrics.add(name, *value);
                }
                tokens += out.tokens;
                margins.extend(out.margins);
            }
            let (norm, lr) = self.optimizer_step(&schedule)?;
            if objective.needs_reference() {
                reporter.observe_margins(self.step, &margins, lr)?;
            }
            self.finish_step(reporter, metrics, norm, lr, epoch, tokens, started)?;
        }
        Ok(())
    }

    fn segment_config(&self) -> SegmentConfig {
        SegmentConfig {
            segment_len: (self.cfg.segment_len > 0).then_some(self.cfg.segment_len),
            max_length: self.cfg.max_length,
            max_prompt_length: self.cfg.max_prompt_length,
        }
    }

    fn sampling(&self) -> SamplingParams {
        SamplingParams {
            greedy: false,
            temperature: self.cfg.temperature,
            top_k: self.cfg.top_k,
            top_p: self.cfg.top_p,
        }
    }

    fn next_rngs(&mut self, n: usize) -> Vec<SapoRng> {
        let rngs = (0..n)
            .map(|i| SapoRng::from_seed_and_stream(self.cfg.seed, 0x1_0000_0000 + self.sample_stream + i as u64))
            .collect();
        self.sample_stream += n as u64;
        rngs
    }

    /// SAPO step 2: segment regeneration by the EMA model for `indices`;
    /// returns the items and their mean generated length.
    fn build_rejected(&mut self, examples: &[PromptChosen], indices: &[usize]) -> Result<(Vec<ReplayItem>, f64, f64)> {
        let segment_config = self.segment_config();
        let eos = self.eos_id()?;
        let mut plans = Vec::with_capacity(indices.len());
        for &i in indices {
            let example = &examples[i];
            let plan = segment::plan(example.prompt.len(), example.chosen.len(), &segment_config, &mut self.rng)
                .with_context(|| format!("example {i}"))?;
            plans.push(plan);
        }
        let prefixes: Vec<Vec<u32>> = indices
            .iter()
            .zip(&plans)
            .map(|(&i, plan)| plan.prefix(&examples[i].prompt, &examples[i].chosen))
            .collect::<Result<_, _>>()?;
        let mut items = Vec::with_capacity(indices.len());
        let (mut generated_total, mut identical) = (0, 0);
        let chunk = self.cfg.per_device_train_batch_size.max(1);
        let sampling = self.sampling();
        for start in (0..indices.len()).step_by(chunk) {
            let end = (start + chunk).min(indices.len());
            let views: Vec<&[u32]> = prefixes[start..end].iter().map(Vec::as_slice).collect();
            let window = plans[start..end].iter().map(|p| p.window).max().unwrap_or(0);
            let mut rngs = self.next_rngs(end - start);
            let ema = self.ema.as_ref().ok_or_else(|| anyhow!("SAPO needs its EMA model"))?;
            let outputs = self.sampler.generate(
                &self.backend,
                &self.model.config,
                ema,
                &views,
                window,
                &self.model.eos_ids,
                sampling,
                &mut rngs,
            )?;
            for (offset, mut generated) in outputs.into_iter().enumerate() {
                let (index, plan) = (indices[start + offset], &plans[start + offset]);
                generated.truncate(plan.window);
                // Any stop id ends the segment; assemble looks for the EOS id.
                if let Some(position) = generated.iter().position(|t| self.model.eos_ids.contains(t)) {
                    generated.truncate(position + 1);
                    generated[position] = eos;
                }
                generated_total += generated.len();
                let example = &examples[index];
                let mut pair = segment::assemble(&example.prompt, &example.chosen, plan, &generated, eos)?;
                // A chat template writes text after the end-of-turn token
                // (ChatML's "\n" after <|im_end|>), which the chosen response
                // has and a segment stopped at EOS lacks: give the rejected the
                // same tail so the pair differs only where the text differs.
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

    fn train_sapo(&mut self, examples: &[PromptChosen], reporter: &mut Reporter) -> Result<()> {
        let objective = objective_for(&self.cfg, Method::Sapo).expect("sapo objective");
        let (backend, config) = (&self.backend, &self.model.config);
        if self.ema.is_none() {
            self.ema = Some(passes::clone_params(backend, config, &self.model.params)?);
        }
        if objective.needs_reference() && self.reference.is_none() {
            self.reference = Some(passes::clone_params(backend, config, &self.model.params)?);
        }
        if self.replay.is_none() {
            self.replay = Some(ReplayBuffer::new(self.cfg.replay_capacity).map_err(|e| anyhow!("{e}"))?);
        }
        let policy = match self.cfg.replay_sampling {
            ReplaySamplingName::LeastDrawn => SamplingPolicy::LeastDrawn,
            ReplaySamplingName::Uniform => SamplingPolicy::Uniform,
        };
        let plan = Schedule::new(&self.cfg, examples.len());
        let schedule = self.lr_schedule(plan.total_steps)?;
        let scale = 1.0 / self.cfg.gradient_accumulation_steps as f64;
        let batch_size = self.cfg.per_device_train_batch_size;
        while self.phase_step < plan.total_steps {
            let started = Instant::now();
            let t = self.phase_step;
            let mut metrics = StepMetrics::default();
            // 4 (due at the start of step t, a no-op at t = 0). Reference refresh.
            if objective.needs_reference()
                && self.cfg.ref_update != RefUpdate::Fixed
                && t.is_multiple_of(self.cfg.ref_update_steps)
                && t > 0
            {
                let source = match self.cfg.ref_update {
                    RefUpdate::Ema => self.ema.as_ref().expect("ema"),
                    _ => &self.model.params,
                };
                let reference = self.reference.as_mut().expect("reference");
                passes::copy_params(&self.backend, reference, source)?;
                self.ref_cache.clear();
                reporter.log_event(serde_json::json!({"event": "reference_refresh", "step": t, "source": format!("{:?}", self.cfg.ref_update).to_lowercase()}))?;
            }
            // 1. EMA update, before sampling.
            let ema = self.ema.as_mut().expect("ema");
            for (e, p) in ema.tensors_mut().into_iter().zip(self.model.params.tensors()) {
                self.backend.ema_update(e, p, self.cfg.ema_decay)?;
            }
            // 2. Sample every n steps: segments for this step's examples.
            let (batches, epoch) = plan.micro_batches(t);
            if t.is_multiple_of(self.cfg.sample_every) {
                let indices: Vec<usize> = batches.iter().flatten().copied().collect();
                let sample_started = Instant::now();
                let (items, mean_length, identical) = self.build_rejected(examples, &indices)?;
                let replay = self.replay.as_mut().expect("replay");
                for item in items {
                    replay.push(item);
                }
                metrics.set("samples/mean_length", mean_length);
                metrics.set("samples/identical_to_chosen", identical);
                metrics.set("time/sampling", sample_started.elapsed().as_secs_f64());
            }
            // 3. Train on draws from the buffer.
            let (mut tokens, mut margins) = (0, Vec::new());
            for _ in 0..batches.len() {
                let replay = self.replay.as_mut().expect("replay");
                let positions = replay.draw(batch_size, policy, &mut self.rng).map_err(|e| anyhow!("{e}"))?;
                let drawn: Vec<ReplayItem> =
                    positions.iter().map(|&p| replay.get(p).expect("drawn position").item.clone()).collect();
                let reference = if objective.needs_reference() {
                    let reference_started = Instant::now();
                    let r = self.sapo_reference(&drawn)?;
                    metrics.add("time/reference", reference_started.elapsed().as_secs_f64());
                    Some(r)
                } else {
                    None
                };
                let pairs: Vec<&PairSeqs> = drawn.iter().map(|item| &item.pair).collect();
                let policy_started = Instant::now();
                let out = passes::pair_step(
                    ModelRef { backend: &self.backend, config: &self.model.config },
                    &self.model.params,
                    &mut self.grads,
                    &mut self.ws,
                    &pairs,
                    reference.as_ref(),
                    None,
                    &objective,
                    scale,
                )
                .with_context(|| format!("step {}", self.step + 1))?;
                metrics.add("time/policy", policy_started.elapsed().as_secs_f64());
                metrics.add("loss", out.loss);
                for (name, value) in &out.metrics {
                    metrics.add(name, *value);
                }
                tokens += out.tokens;
                margins.extend(out.margins);
            }
            let optimizer_started = Instant::now();
            let (norm, lr) = self.optimizer_step(&schedule)?;
            metrics.set("time/optimizer", optimizer_started.elapsed().as_secs_f64());
            let replay = self.replay.as_ref().expect("replay");
            let draws: u64 = replay.entries().map(|e| e.times_drawn).sum();
            metrics.set("replay/size", replay.len() as f64);
            metrics.set("replay/mean_draws", draws as f64 / replay.len().max(1) as f64);
            if objective.needs_reference() {
                reporter.observe_margins(self.step, &margins, lr)?;
            }
            self.finish_step(reporter, metrics, norm, lr, epoch, tokens, started)?;
        }
        Ok(())
    }

    /// Reference log-probs for drawn SAPO items: the chosen side from the
    /// cache (valid until the next refresh), the rejected side computed.
    fn sapo_reference(&mut self, drawn: &[ReplayItem]) -> Result<ReferenceLogps> {
        let mut sequences = Vec::new();
        let mut missing_chosen = Vec::new();
        for item in drawn {
            if !self.ref_cache.contains_key(&(item.example, 0)) && !missing_chosen.contains(&item.example) {
                missing_chosen.push(item.example);
                sequences.push(item.pair.scored()[0]);
            }
        }
        let n_chosen = sequences.len();
        for item in drawn {
            sequences.push(item.pair.scored()[1]);
        }
        let sums = self.reference_scores(&sequences)?;
        for (example, &sum) in missing_chosen.iter().zip(&sums[..n_chosen]) {
            self.ref_cache.insert((*example, 0), sum);
        }
        Ok(ReferenceLogps {
            chosen: drawn.iter().map(|item| self.ref_cache[&(item.example, 0)]).collect(),
            rejected: sums[n_chosen..].to_vec(),
        })
    }

    /// SPPO and AIPO: per iteration, K samples per prompt from the model the
    /// iteration starts from, scored by the oracle; SPPO's win-rate pairs or
    /// AIPO's best/worst pairs; one pass against that model as reference;
    /// the iteration's model saved to `iterations/iteration-t/`.
    fn train_ranked(&mut self, prompts: &[EvalPrompt], reporter: &mut Reporter) -> Result<()> {
        let objective = objective_for(&self.cfg, self.cfg.method).expect("ranked objective");
        let mut resumed = self.spin.take();
        let first = resumed.as_ref().map_or(1, |progress| progress.iteration);
        // One oracle for the whole run (a command oracle's program keeps
        // running, a reward model loads once), if an iteration still samples.
        let mut oracle =
            if resumed.is_none() || first < self.cfg.iterations { Some(oracle::from_config(&self.cfg)?) } else { None };
        for iteration in first..=self.cfg.iterations {
            reporter.phase(&format!("{} {iteration}/{}", self.cfg.method.name(), self.cfg.iterations));
            let (pairs, win_rates) = match resumed.take() {
                Some(progress) => (progress.pairs, progress.win_rates),
                None => {
                    let judge = oracle.as_deref_mut().ok_or_else(|| anyhow!("iteration {iteration}: no oracle"))?;
                    let (pairs, win_rates) = self.ranked_pairs(prompts, iteration, judge, reporter)?;
                    if pairs.is_empty() {
                        bail!(
                            "iteration {iteration}: every prompt's {} samples tie; nothing to train on",
                            self.cfg.num_samples
                        );
                    }
                    self.reference = None;
                    self.precompute_reference(&pairs, reporter)?;
                    self.optimizer = Self::fresh_optimizer(&self.backend, &self.cfg, &self.model.config)?;
                    self.phase_step = 0;
                    (pairs, win_rates)
                }
            };
            reporter.reset(Schedule::new(&self.cfg, pairs.len()).total_steps);
            reporter.advance_to(self.phase_step);
            let current_len = pairs.len();
            self.spin =
                Some(IterationProgress { iteration, pairs: pairs.clone(), current_len, win_rates: win_rates.clone() });
            let rates = (self.cfg.method == Method::Sppo).then_some(win_rates.as_slice());
            self.train_pairs_from(&pairs, rates, &objective, reporter)?;
            self.save_model(&self.cfg.output_dir.join("iterations").join(format!("iteration-{iteration}")))?;
        }
        Ok(())
    }

    /// One iteration's data: samples, oracle scores, pairs (and SPPO's win
    /// rates), written to `samples/iteration-t.jsonl`.
    fn ranked_pairs(
        &mut self,
        prompts: &[EvalPrompt],
        iteration: u64,
        oracle: &mut dyn Oracle,
        reporter: &mut Reporter,
    ) -> Result<RankedPairs> {
        let k = self.cfg.num_samples;
        let eos = self.eos_id()?;
        let sampling = self.sampling();
        let ties =
            if self.cfg.skip_ties || self.cfg.method == Method::Aipo { TiePolicy::Skip } else { TiePolicy::Keep };
        let (mut pairs, mut win_rates, mut lines) = (Vec::new(), Vec::new(), String::new());
        let (mut all_len, mut chosen_len, mut rejected_len, mut score_sum, mut skipped) =
            (0usize, 0usize, 0usize, 0.0, 0);
        let started = Instant::now();
        let samples_dir = self.cfg.output_dir.join("samples");
        // The previous iteration's samples, to judge this iteration's against.
        let previous = if iteration > 1 {
            previous_samples(&samples_dir.join(format!("iteration-{}.jsonl", iteration - 1)))?
        } else {
            Vec::new()
        };
        let (mut win_sum, mut win_prompts) = (0.0, 0usize);
        let mut prompt_index = 0;
        let per_call = (64 / k).max(1);
        for chunk in prompts.chunks(per_call) {
            let prefixes: Vec<&[u32]> = chunk.iter().flat_map(|p| std::iter::repeat_n(p.ids.as_slice(), k)).collect();
            let mut rngs = self.next_rngs(prefixes.len());
            let outputs = self.sampler.generate(
                &self.backend,
                &self.model.config,
                &self.model.params,
                &prefixes,
                self.cfg.max_new_tokens,
                &self.model.eos_ids,
                sampling,
                &mut rngs,
            )?;
            for (prompt, samples) in chunk.iter().zip(outputs.chunks(k)) {
                let mut responses: Vec<Vec<u32>> = Vec::with_capacity(k);
                for sample in samples {
                    let mut response = sample.clone();
                    if let Some(position) = response.iter().position(|t| self.model.eos_ids.contains(t)) {
                        response.truncate(position + 1);
                        response[position] = eos;
                    }
                    if response.is_empty() {
                        response.push(eos);
                    }
                    responses.push(response);
                }
                let texts: Vec<String> =
                    responses.iter().map(|r| self.model.tokenizer.decode(r, true)).collect::<Result<_, _>>()?;
                let counts: Vec<usize> = responses.iter().map(Vec::len).collect();
                let judgement = oracle.judge(&prompt.text, &texts, &counts)?;
                if let Some((previous_texts, previous_counts)) = previous.get(prompt_index) {
                    let all_texts = [previous_texts.as_slice(), &texts].concat();
                    let all_counts = [previous_counts.as_slice(), &counts].concat();
                    let joint = oracle.judge(&prompt.text, &all_texts, &all_counts)?;
                    win_sum += win_rate_of_last(&joint, previous_texts.len(), k)?;
                    win_prompts += 1;
                }
                prompt_index += 1;
                let (rates, scores) = judgement.rates_and_ranking(k)?;
                all_len += counts.iter().sum::<usize>();
                score_sum += scores.iter().sum::<f64>();
                let selected = sppo::select_pair(&scores, &rates, ties).map_err(|e| anyhow!("{e}"))?;
                lines.push_str(
                    &serde_json::json!({
                        "prompt": prompt.text,
                        "responses": texts,
                        "lengths": counts,
                        "scores": scores,
                        "win_rates": rates,
                        "chosen": selected.map(|p| p.chosen),
                        "rejected": selected.map(|p| p.rejected),
                    })
                    .to_string(),
                );
                lines.push('\n');
                let Some(pair) = selected else {
                    skipped += 1;
                    continue;
                };
                chosen_len += counts[pair.chosen];
                rejected_len += counts[pair.rejected];
                pairs.push(cut_pair(
                    &prompt.ids,
                    &responses[pair.chosen],
                    &responses[pair.rejected],
                    self.cfg.max_length,
                    self.cfg.max_prompt_length,
                ));
                win_rates.push((pair.chosen_win_rate, pair.rejected_win_rate));
            }
        }
        std::fs::create_dir_all(&samples_dir).with_context(|| format!("{}", samples_dir.display()))?;
        atomic_file::write_atomically(&samples_dir.join(format!("iteration-{iteration}.jsonl")), lines.as_bytes())?;
        let n_samples = (prompts.len() * k).max(1) as f64;
        let n_pairs = pairs.len().max(1) as f64;
        reporter.log_event(serde_json::json!({
            "event": "iteration_samples",
            "iteration": iteration,
            "step": self.step,
            "samples/mean_length": all_len as f64 / n_samples,
            "samples/chosen_mean_length": chosen_len as f64 / n_pairs,
            "samples/rejected_mean_length": rejected_len as f64 / n_pairs,
            "oracle/mean_score": score_sum / n_samples,
            "oracle/win_rate_vs_previous": (win_prompts > 0).then(|| win_sum / win_prompts as f64),
            "pairs": pairs.len(),
            "skipped_all_tie_prompts": skipped,
            "seconds": started.elapsed().as_secs_f64(),
        }))?;
        reporter.say(&format!(
            "iteration {iteration}: {} pairs from {} prompts × {k} samples, mean length {:.1} tokens, mean oracle score {:.3}",
            pairs.len(),
            prompts.len(),
            all_len as f64 / n_samples,
            score_sum / n_samples
        ));
        if win_prompts > 0 {
            reporter.say(&format!(
                "iteration {iteration}: win rate against iteration {}'s samples {:.3} (oracle-judged, ties ½)",
                iteration - 1,
                win_sum / win_prompts as f64
            ));
        }
        Ok((pairs, win_rates))
    }

    fn train_spin(&mut self, examples: &[PromptChosen], reporter: &mut Reporter) -> Result<()> {
        let objective = objective_for(&self.cfg, Method::Spin).expect("spin objective");
        let eos = self.eos_id()?;
        // A resumed run continues inside the iteration its checkpoint was in.
        let mut resumed = self.spin.take();
        let first = resumed.as_ref().map_or(1, |progress| progress.iteration);
        let mut previous: Vec<PairSeqs> = Vec::new();
        for iteration in first..=self.cfg.spin_iterations {
            reporter.phase(&format!("spin {iteration}/{}", self.cfg.spin_iterations));
            let (pairs, current_len) = match resumed.take() {
                Some(progress) => (progress.pairs, progress.current_len),
                None => {
                    let current = self.spin_generate(examples, eos, iteration, reporter)?;
                    // Iteration t trains on the pairs of t and t − 1.
                    let current_len = current.len();
                    let mut pairs = current;
                    pairs.append(&mut previous);
                    // Reference = this iteration's starting model; its log-probs once.
                    self.reference = None;
                    self.precompute_reference(&pairs, reporter)?;
                    self.optimizer = Self::fresh_optimizer(&self.backend, &self.cfg, &self.model.config)?;
                    self.phase_step = 0;
                    (pairs, current_len)
                }
            };
            reporter.reset(Schedule::new(&self.cfg, pairs.len()).total_steps);
            reporter.advance_to(self.phase_step);
            self.spin = Some(IterationProgress { iteration, pairs, current_len, win_rates: Vec::new() });
            let pairs = self.spin.as_ref().map(|p| p.pairs.clone()).unwrap_or_default();
            self.train_pairs_from(&pairs, None, &objective, reporter)?;
            previous = pairs[..current_len].to_vec();
        }
        Ok(())
    }

    /// SPIN: one rejected response per prompt from the current model.
    fn spin_generate(
        &mut self,
        examples: &[PromptChosen],
        eos: u32,
        iteration: u64,
        reporter: &mut Reporter,
    ) -> Result<Vec<PairSeqs>> {
        let sampling = self.sampling();
        let mut current = Vec::with_capacity(examples.len());
        let mut generated_total = 0;
        let chunk = 32;
        let generation_started = Instant::now();
        for start in (0..examples.len()).step_by(chunk) {
            let end = (start + chunk).min(examples.len());
            let views: Vec<&[u32]> = examples[start..end].iter().map(|e| e.prompt.as_slice()).collect();
            let mut rngs = self.next_rngs(end - start);
            let outputs = self.sampler.generate(
                &self.backend,
                &self.model.config,
                &self.model.params,
                &views,
                self.cfg.max_new_tokens,
                &self.model.eos_ids,
                sampling,
                &mut rngs,
            )?;
            for (example, mut generated) in examples[start..end].iter().zip(outputs) {
                if let Some(position) = generated.iter().position(|t| self.model.eos_ids.contains(t)) {
                    generated.truncate(position + 1);
                    generated[position] = eos;
                }
                if generated.is_empty() {
                    generated.push(eos);
                }
                if generated.last() == Some(&eos) {
                    generated.extend_from_slice(end_of_turn_tail(&example.chosen, eos));
                }
                generated_total += generated.len();
                current.push(cut_pair(
                    &example.prompt,
                    &example.chosen,
                    &generated,
                    self.cfg.max_length,
                    self.cfg.max_prompt_length,
                ));
            }
        }
        let mean_length = generated_total as f64 / examples.len().max(1) as f64;
        reporter.log_event(serde_json::json!({
            "event": "spin_generation",
            "iteration": iteration,
            "step": self.step,
            "samples/mean_length": mean_length,
            "seconds": generation_started.elapsed().as_secs_f64(),
        }))?;
        Ok(current)
    }
}

/// Each prompt's responses and token counts in a `samples/iteration-t.jsonl`
/// (empty if the file predates the `lengths` field).
fn previous_samples(path: &Path) -> Result<Vec<(Vec<String>, Vec<usize>)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let mut samples = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let record: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("{}:{}", path.display(), index + 1))?;
        let texts: Option<Vec<String>> =
            record["responses"].as_array().and_then(|r| r.iter().map(|v| v.as_str().map(str::to_string)).collect());
        let counts: Option<Vec<usize>> =
            record["lengths"].as_array().and_then(|r| r.iter().map(|v| v.as_u64().map(|n| n as usize)).collect());
        match (texts, counts) {
            (Some(texts), Some(counts)) if texts.len() == counts.len() => samples.push((texts, counts)),
            _ => return Ok(Vec::new()),
        }
    }
    Ok(samples)
}

/// The probability that one of the last `k` responses beats one of the
/// first `previous`, from a joint judgement: the matrix's entries, or for
/// scores 1 for a higher score, ½ for a tie, 0 for a lower one; averaged
/// over all (new, previous) pairs.
fn win_rate_of_last(judgement: &Judgement, previous: usize, k: usize) -> Result<f64> {
    let n = previous + k;
    let mut total = 0.0;
    match judgement {
        Judgement::Scores(scores) => {
            if scores.len() != n {
                bail!("{} scores for {n} responses", scores.len());
            }
            for new in &scores[previous..] {
                for old in &scores[..previous] {
                    total += if new > old {
                        1.0
                    } else if new == old {
                        0.5
                    } else {
                        0.0
                    };
                }
            }
        }
        Judgement::Preferences(matrix) => {
            if matrix.len() != n * n {
                bail!("a preference matrix of {} entries for {n} responses", matrix.len());
            }
            for new in previous..n {
                total += matrix[new * n..new * n + previous].iter().sum::<f64>();
            }
        }
    }
    Ok(total / (previous * k).max(1) as f64)
}

/// The fields where two configs differ, as `key: old → new`, ignoring `harmless`.
fn config_differences(old: &TrainConfig, new: &TrainConfig, harmless: &[&str]) -> Vec<String> {
    let (Ok(old), Ok(new)) = (toml::Table::try_from(old), toml::Table::try_from(new)) else {
        return vec!["(the configs do not serialise)".into()];
    };
    new.iter()
        .filter(|(key, _)| !harmless.contains(&key.as_str()))
        .filter(|(key, value)| old.get(*key) != Some(*value))
        .map(|(key, value)| format!("{key}: {} → {value}", old.get(key).map_or("(none)".into(), ToString::to_string)))
        .collect()
}

/// Resolves nothing: runs `cfg` and prints the summary.
///
/// # Errors
/// As [`Trainer::run`].
pub fn train(cfg: TrainConfig, quiet: bool) -> Result<RunSummary> {
    Trainer::new(cfg)?.run(quiet)
}
