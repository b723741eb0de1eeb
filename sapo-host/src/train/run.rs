//! The trainer: loads a run's inputs, builds its [`Method`], and drives it
//! step by step — logging, periodic evaluation, checkpoints and signals
//! after every step, evaluation and the final model at the end. What a
//! method does within a step lives in [`super::methods`]; the model and the
//! optimizer step in [`super::session`].

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use sapo_core::cpu::CpuBackend;
use sapo_core::model::LlamaParams;

use super::TrainBackend;
use super::checkpoint::{self, CheckpointParts};
use super::config::{Method as MethodName, TrainConfig};
use super::data::{self, TrainData};
use super::eval;
use super::heldout::HeldOut;
use super::methods::{Method, StepOutcome};
use super::report::Reporter;
use super::session::Session;
use super::state::{self, RunState};
use super::stop::{INTERRUPT, Interrupted, WhileTraining};
use super::summary::{RunSummary, mean_of_tenths};

/// A run about to start, or to resume from a checkpoint.
#[derive(Debug)]
pub struct Trainer<B: TrainBackend = CpuBackend> {
    session: Session<B>,
    /// The checkpoint's run state and its weight sets besides the policy's
    /// and the optimizer's (the method takes those it keeps).
    resumed: Option<(RunState, BTreeMap<String, LlamaParams<B>>)>,
    /// The step of the checkpoint resumed from.
    last_checkpoint: Option<u64>,
}

/// A run in progress: everything the trainer drives.
struct Running<B: TrainBackend> {
    session: Session<B>,
    method: Method<B>,
    heldout: Option<HeldOut>,
    reporter: Reporter,
    last_checkpoint: Option<u64>,
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
    /// Loads the model onto `backend` for a fresh run of `cfg`.
    ///
    /// # Errors
    /// A model that cannot be loaded, or an allocation failure.
    pub fn on_backend(cfg: TrainConfig, backend: B) -> Result<Self> {
        Ok(Trainer { session: Session::new(cfg, backend)?, resumed: None, last_checkpoint: None })
    }

    /// Loads the newest complete checkpoint of `cfg.output_dir` and the model
    /// onto `backend`, so [`Trainer::run`] continues the run exactly where it stopped.
    ///
    /// # Errors
    /// No checkpoint verifies (the reasons are named), or a config that
    /// differs from the checkpoint's in a field that changes the result (the
    /// differences are listed) unless `allow_config_change`.
    pub fn resume_on(cfg: TrainConfig, backend: B, allow_config_change: bool) -> Result<(Self, Vec<String>)> {
        let mut session = Session::new(cfg, backend)?;
        let (loaded, skipped) =
            checkpoint::load_newest(&session.backend, &session.model.config, &session.cfg.output_dir)?;
        let dir = &loaded.dir;
        let state: RunState = postcard::from_bytes(&loaded.state)
            .map_err(|e| anyhow!("{}: run state does not decode: {e}", dir.join("state.bin").display()))?;
        let differences = state::config_differences(&state.config, &session.cfg);
        if !differences.is_empty() && !allow_config_change {
            bail!(
                "the config differs from the checkpoint's ({}): {}; pass --allow-config-change to resume anyway, or --overwrite to start again",
                dir.display(),
                differences.join(", ")
            );
        }
        let mut weights = loaded.weights;
        session.model.params =
            weights.remove("policy").ok_or_else(|| anyhow!("{}: no policy weights", dir.display()))?;
        session.optimizer.restore(&mut weights, state.adamw_step, dir)?;
        let mut notes = skipped.into_iter().map(|reason| format!("skipped a checkpoint: {reason}")).collect::<Vec<_>>();
        notes.push(format!("resuming from {} (step {})", dir.display(), loaded.manifest.step));
        let trainer = Trainer { session, resumed: Some((state, weights)), last_checkpoint: Some(loaded.manifest.step) };
        Ok((trainer, notes))
    }

    /// Runs the configured method to the end: evaluation before, training,
    /// evaluation after, the final model, plots and a summary.
    ///
    /// # Errors
    /// Bad data, a non-finite loss or gradient (with the step), an I/O error.
    pub fn run(self, quiet: bool) -> Result<RunSummary> {
        let Trainer { mut session, resumed, last_checkpoint } = self;
        let cfg = session.cfg.clone();
        std::fs::create_dir_all(&cfg.output_dir).with_context(|| format!("{}", cfg.output_dir.display()))?;
        crate::atomic_file::write_atomically(&cfg.output_dir.join("config.toml"), cfg.to_toml().as_bytes())?;
        // The run's objective, built once: the method trains with it and the
        // held-out pairs are measured with its implicit reward.
        let objective = cfg.objective();
        let template = session.model.chat_template.clone();
        let train_data = data::load(&cfg, &cfg.data, &session.model.tokenizer, template.as_ref())?;
        let mut heldout = if cfg.eval_data.as_os_str().is_empty() {
            None
        } else {
            let prompts = eval::read_prompts(&cfg.eval_data, &session.model.tokenizer, template.as_ref())?;
            // The same file as pairs, if it has rejected responses: TRL's
            // eval_rewards/* on held-out pairs, against the starting model.
            let as_pairs = TrainConfig { method: MethodName::Dpo, ..cfg.clone() };
            let pairs = match data::load(&as_pairs, &cfg.eval_data, &session.model.tokenizer, template.as_ref()) {
                Ok(TrainData::Pairs(pairs)) => Some(pairs),
                _ => None,
            };
            Some(HeldOut::new(prompts, pairs, objective))
        };
        let (resumed_reporter, resumed) = match resumed {
            Some((state, weights)) => {
                restore_counters(&mut session, &state);
                if let Some(heldout) = &mut heldout {
                    heldout.restore(state.eval_initial.clone(), state.eval_before);
                }
                (Some(state.reporter), Some((state.method(), weights)))
            }
            None => (None, None),
        };
        let total_estimate = Method::<B>::total_steps_estimate(&cfg, train_data.len());
        let mut reporter =
            Reporter::new(&cfg.output_dir, total_estimate, cfg.zero_margin_warn_steps, quiet, resumed_reporter)?;
        reporter.phase(cfg.method.name());
        reporter.say(&format!(
            "sapo train: {} on {} ({} examples, {} parameters), {} steps → {}",
            cfg.method.name(),
            cfg.model.display(),
            train_data.len(),
            session.model.config.parameter_count(),
            total_estimate,
            cfg.output_dir.display()
        ));
        let training = (|| {
            if session.step == 0
                && let Some(heldout) = &mut heldout
            {
                let (outcome, pairs) = heldout.evaluate(&mut session, &mut reporter, "before")?;
                heldout.before = Some((outcome.summary.accuracy, pairs.map(|p| p.ranked)));
            }
            let mut resumed = resumed;
            let method = Method::start(
                &mut session,
                train_data,
                objective,
                resumed.as_mut().map(|(state, weights)| (state.clone(), weights)),
                &mut reporter,
            )?;
            Running { session, method, heldout, reporter, last_checkpoint }.train()
        })();
        training.context(WhileTraining)
    }
}

/// Restores a checkpoint's counters and RNG into the session.
fn restore_counters<B: TrainBackend>(session: &mut Session<B>, state: &RunState) {
    session.step = state.step;
    session.phase_step = state.phase_step;
    session.rng = state.rng.clone();
    session.sample_stream = state.sample_stream;
    session.history.clone_from(&state.history);
    session.tokens_seen = state.tokens_seen;
    session.train_seconds = state.train_seconds;
    session.skipped_steps = state.skipped_steps;
}

impl<B: TrainBackend> Running<B> {
    /// Steps the method to its end, then evaluates, saves and summarises.
    fn train(mut self) -> Result<RunSummary> {
        let started = Instant::now();
        let seconds_before = self.session.train_seconds;
        while let Some(outcome) = self.method.step(&mut self.session, &mut self.reporter)? {
            self.finish_step(outcome)?;
        }
        self.session.train_seconds = seconds_before + started.elapsed().as_secs_f64();
        if self.last_checkpoint != Some(self.session.step) {
            self.save_checkpoint()?;
        }
        self.reporter.finish();
        let after = match &mut self.heldout {
            Some(heldout) => Some(heldout.evaluate(&mut self.session, &mut self.reporter, "after")?),
            None => None,
        };
        let cfg = &self.session.cfg;
        self.session.save_model(&cfg.output_dir.join("final"))?;
        let plots = crate::plot::read_metrics(&cfg.output_dir.join("metrics.jsonl"))
            .and_then(|rows| crate::plot::plot_training_curves(&rows, &cfg.output_dir.join("plots")))
            .and_then(|mut written| {
                let metrics = cfg.output_dir.join("metrics.jsonl");
                written.extend(crate::plot::plot_iteration_curves(&metrics, &cfg.output_dir.join("plots"))?);
                Ok(written)
            });
        if let Err(error) = plots {
            self.reporter.warn(self.session.step, &format!("drawing the training curves: {error}"))?;
        }
        let history = &self.session.history;
        let before = self.heldout.as_ref().and_then(|heldout| heldout.before);
        let summary = RunSummary {
            output_dir: cfg.output_dir.clone(),
            steps: self.session.step,
            seconds: self.reporter.elapsed(),
            loss_first_last: mean_of_tenths(history, "loss"),
            accuracy_first_last: mean_of_tenths(history, "rewards/accuracies"),
            margin_first_last: mean_of_tenths(history, "rewards/margins"),
            eval_before_after: before.zip(after.as_ref()).map(|(b, a)| (b.0, a.0.summary.accuracy)),
            eval_pair_accuracy: before.zip(after.as_ref()).and_then(|(b, a)| Some((b.1?, a.1?.ranked))),
            eval_rewards: after.as_ref().and_then(|a| a.1?.rewards),
            tokens_per_second: self.session.tokens_seen as f64 / self.session.train_seconds.max(1e-9),
        };
        self.reporter.log_event(serde_json::json!({
            "event": "summary",
            "steps": summary.steps,
            "seconds": summary.seconds,
            "tokens_per_second": summary.tokens_per_second,
            "tokens_trained": self.session.tokens_seen,
            "train_seconds": self.session.train_seconds,
            "eval_accuracy_before": summary.eval_before_after.map(|p| p.0),
            "eval_accuracy_after": summary.eval_before_after.map(|p| p.1),
        }))?;
        Ok(summary)
    }

    /// After each optimizer step: the common metrics, the log line, the
    /// periodic evaluation, and a checkpoint when due or asked for by a signal.
    fn finish_step(&mut self, outcome: StepOutcome) -> Result<()> {
        let StepOutcome { mut metrics, grad_norm, lr, epoch, tokens, started } = outcome;
        let session = &mut self.session;
        let seconds = started.elapsed().as_secs_f64();
        metrics.set("grad_norm", grad_norm);
        if session.cfg.skip_nonfinite_steps {
            metrics.set("skipped_nonfinite_steps", session.skipped_steps as f64);
        }
        metrics.set("learning_rate", lr);
        metrics.set("epoch", epoch);
        metrics.set("tokens_per_second", tokens as f64 / seconds.max(1e-9));
        metrics.set("step_seconds", seconds);
        // A non-finite log-prob never gets here: the objectives and
        // `passes::sft_step` refuse it before any update.
        let values = metrics.finish();
        session.tokens_seen += tokens as u64;
        let step = session.step;
        if step.is_multiple_of(session.cfg.logging_steps) || step == 1 {
            self.reporter.log_step(step, &values)?;
        }
        self.reporter.tick();
        session.history.push(values);
        // Test hook: behave as if SIGINT arrived during this step.
        if session.debug.interrupt_at_step == Some(step) {
            INTERRUPT.store(2, Ordering::SeqCst);
        }
        // Before a checkpoint, so a resumed run's metrics.jsonl holds every
        // periodic evaluation up to its step. Evaluation draws on no run RNG.
        let eval_steps = session.cfg.eval_steps;
        if eval_steps > 0
            && step.is_multiple_of(eval_steps)
            && let Some(heldout) = &mut self.heldout
        {
            heldout.evaluate(&mut self.session, &mut self.reporter, "during")?;
        }
        let signal = INTERRUPT.load(Ordering::SeqCst);
        let save_steps = self.session.cfg.save_steps;
        let due = save_steps > 0 && step.is_multiple_of(save_steps);
        if due || signal != 0 {
            self.save_checkpoint()?;
        }
        if signal != 0 {
            return Err(Interrupted { signal, step }.into());
        }
        Ok(())
    }

    /// Writes a checkpoint of the whole run state at the current step —
    /// never of a bad state: non-finite weights stop the run instead, and
    /// the previous checkpoint stays the newest.
    fn save_checkpoint(&mut self) -> Result<()> {
        let session = &self.session;
        if let Some(tensor) = session.first_non_finite(&session.model.params)? {
            bail!("step {}: weight `{tensor}` is non-finite; not writing a checkpoint of this state", session.step);
        }
        let method = self.method.checkpoint();
        let state = RunState {
            config: session.cfg.clone(),
            step: session.step,
            phase_step: session.phase_step,
            rng: session.rng.clone(),
            sample_stream: session.sample_stream,
            replay: method.replay,
            ref_cache: method.ref_cache,
            history: session.history.clone(),
            eval_initial: self.heldout.as_ref().and_then(HeldOut::initial_logps),
            eval_before: self.heldout.as_ref().and_then(|heldout| heldout.before),
            adamw_step: session.optimizer.adamw_step(),
            tokens_seen: session.tokens_seen,
            train_seconds: session.train_seconds,
            skipped_steps: session.skipped_steps,
            spin: method.spin,
            reporter: self.reporter.state(),
        };
        let mut weights: Vec<(&'static str, &LlamaParams<B>)> = vec![("policy", &session.model.params)];
        weights.extend(self.method.checkpoint_weights());
        weights.extend(session.optimizer.checkpoint_weights());
        let parts = CheckpointParts { weights, state: postcard::to_allocvec(&state)? };
        let cfg = &session.cfg;
        checkpoint::save(
            &session.backend,
            &session.model.config,
            &cfg.output_dir,
            session.step,
            &parts,
            cfg.save_total_limit,
        )?;
        self.last_checkpoint = Some(session.step);
        Ok(())
    }
}

/// Resolves nothing: runs `cfg` on the CPU.
///
/// # Errors
/// As [`Trainer::run`].
pub fn train(cfg: TrainConfig, quiet: bool) -> Result<RunSummary> {
    Trainer::new(cfg)?.run(quiet)
}
