//! SPIN, SPPO, SPPO-hard and AIPO: iterations, each of which makes its
//! pairs with the model it starts from (SPIN: one generated response per
//! prompt against the data's; SPPO and AIPO: K samples ranked by the
//! oracle), takes that model as the reference (log-probs computed once),
//! restarts the optimizer and trains one phase on the pairs.

use anyhow::{Result, bail};
use sapo_core::objectives::Objective;

use super::StepOutcome;
use super::pairs::{self, FixedPairs};
use super::reference::PairReference;
use super::{ranked, spin};
use crate::train::TrainBackend;
use crate::train::config::Method;
use crate::train::data::PromptChosen;
use crate::train::eval::EvalPrompt;
use crate::train::oracle::{self, Oracle};
use crate::train::passes::PairSeqs;
use crate::train::plan::Phase;
use crate::train::report::Reporter;
use crate::train::session::Session;
use crate::train::state::MethodCheckpoint;

/// Where an iterative run is: the iteration, its training pairs (its own
/// first, then — for SPIN — the previous iteration's) and how many are its own.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct IterationProgress {
    iteration: u64,
    pairs: Vec<PairSeqs>,
    current_len: usize,
    /// SPPO's `(P̂_w, P̂_l)` per pair (empty otherwise).
    win_rates: Vec<(f64, f64)>,
}

/// Where each iteration's pairs come from.
#[derive(Debug)]
enum Source {
    /// SPIN: the data's chosen responses against the model's own, and the
    /// previous iteration's pairs, which SPIN trains on again.
    Spin { examples: Vec<PromptChosen>, previous: Vec<PairSeqs> },
    /// SPPO and AIPO: prompts and the oracle (`None` once no iteration is
    /// left to sample: a run resumed in its last iteration starts none).
    Ranked { prompts: Vec<EvalPrompt>, oracle: Option<Box<dyn Oracle>> },
}

/// The iteration being trained.
#[derive(Debug)]
struct Current {
    progress: IterationProgress,
    reference: PairReference,
    phase: Phase,
    /// Whether the progress bar shows this iteration yet.
    announced: bool,
}

/// An iterative method's state.
#[derive(Debug)]
pub struct Iterative {
    source: Source,
    objective: Objective,
    iterations: u64,
    /// `None` before the first iteration starts.
    current: Option<Current>,
    finished: bool,
}

impl Iterative {
    /// SPIN on `examples`, from its first iteration or where a checkpoint left it.
    ///
    /// # Errors
    /// A checkpoint whose iteration lacks its reference log-probs.
    pub fn spin<B: TrainBackend>(
        session: &Session<B>,
        examples: Vec<PromptChosen>,
        objective: Objective,
        resumed: Option<MethodCheckpoint>,
    ) -> Result<Self> {
        let source = Source::Spin { examples, previous: Vec::new() };
        Self::new(session, source, objective, session.cfg.spin_iterations, resumed)
    }

    /// SPPO, SPPO-hard or AIPO on `prompts`, with the configured oracle
    /// (started once for the run, if an iteration is still to sample).
    ///
    /// # Errors
    /// The oracle cannot start, or a checkpoint lacks reference log-probs.
    pub fn ranked<B: TrainBackend>(
        session: &Session<B>,
        prompts: Vec<EvalPrompt>,
        objective: Objective,
        resumed: Option<MethodCheckpoint>,
    ) -> Result<Self> {
        let iterations = session.cfg.iterations;
        let resumed_iteration = resumed.as_ref().and_then(|state| state.spin.as_ref()).map(|p| p.iteration);
        let samples_again = resumed_iteration.is_none_or(|iteration| iteration < iterations);
        let oracle = if samples_again { Some(oracle::from_config(&session.cfg)?) } else { None };
        Self::new(session, Source::Ranked { prompts, oracle }, objective, iterations, resumed)
    }

    fn new<B: TrainBackend>(
        session: &Session<B>,
        source: Source,
        objective: Objective,
        iterations: u64,
        resumed: Option<MethodCheckpoint>,
    ) -> Result<Self> {
        let current = match resumed.and_then(|state| state.spin.map(|progress| (progress, state.ref_cache))) {
            Some((progress, cache)) => {
                let reference = PairReference::from_checkpoint(&cache, progress.pairs.len())?;
                let phase = Phase::new(session, progress.pairs.len())?;
                Some(Current { progress, reference, phase, announced: false })
            }
            None => None,
        };
        Ok(Iterative { source, objective, iterations, current, finished: false })
    }

    /// The iteration and its reference log-probs, as a checkpoint keeps them.
    pub fn checkpoint(&self) -> MethodCheckpoint {
        match &self.current {
            Some(current) => MethodCheckpoint {
                ref_cache: current.reference.to_checkpoint(),
                spin: Some(current.progress.clone()),
                replay: None,
            },
            None => MethodCheckpoint::default(),
        }
    }

    /// One optimizer step, starting the next iteration when the current
    /// one is done; `None` after the last iteration.
    ///
    /// # Errors
    /// A generation, oracle, pass or optimizer error; an iteration with no
    /// pair to train on.
    pub fn step<B: TrainBackend>(
        &mut self,
        session: &mut Session<B>,
        reporter: &mut Reporter,
    ) -> Result<Option<StepOutcome>> {
        loop {
            if self.finished {
                return Ok(None);
            }
            let next = match &self.current {
                None => 1,
                Some(current) if !current.phase.is_done(session) => {
                    if !current.announced {
                        self.announce(session, reporter);
                    }
                    return self.train_step(session, reporter).map(Some);
                }
                Some(current) => {
                    let iteration = current.progress.iteration;
                    self.finish_iteration(session)?;
                    if iteration >= self.iterations {
                        self.finished = true;
                        return Ok(None);
                    }
                    iteration + 1
                }
            };
            self.start_iteration(session, next, reporter)?;
        }
    }

    fn train_step<B: TrainBackend>(&self, session: &mut Session<B>, reporter: &mut Reporter) -> Result<StepOutcome> {
        let Some(current) = &self.current else { bail!("no iteration has started") };
        // Only soft SPPO reads win rates; SPPO-hard and AIPO rank without them.
        let win_rates = (session.cfg.method == Method::Sppo).then_some(current.progress.win_rates.as_slice());
        let data = FixedPairs {
            pairs: &current.progress.pairs,
            reference: &current.reference,
            win_rates,
            objective: &self.objective,
        };
        pairs::step(session, reporter, &current.phase, data)
    }

    /// The progress bar's phase: `spin 1/2`, `sppo 2/3`.
    fn label<B: TrainBackend>(&self, session: &Session<B>, iteration: u64) -> String {
        let name = match &self.source {
            Source::Spin { .. } => "spin",
            Source::Ranked { .. } => session.cfg.method.name(),
        };
        format!("{name} {iteration}/{}", self.iterations)
    }

    /// Shows the iteration on the progress bar.
    fn announce<B: TrainBackend>(&mut self, session: &Session<B>, reporter: &Reporter) {
        let label = self.label(session, current_iteration(&self.current));
        let Some(current) = &mut self.current else { return };
        reporter.phase(&label);
        reporter.reset(current.phase.plan.total_steps);
        reporter.advance_to(session.phase_step);
        current.announced = true;
    }

    /// After an iteration's last step: SPPO's and AIPO's iteration model is
    /// saved, SPIN keeps the iteration's own pairs for the next.
    fn finish_iteration<B: TrainBackend>(&mut self, session: &Session<B>) -> Result<()> {
        let Some(current) = &self.current else { return Ok(()) };
        match &mut self.source {
            Source::Spin { previous, .. } => {
                *previous = current.progress.pairs[..current.progress.current_len].to_vec();
            }
            Source::Ranked { .. } => {
                let iteration = current.progress.iteration;
                let dir = session.cfg.output_dir.join("iterations").join(format!("iteration-{iteration}"));
                session.save_model(&dir)?;
            }
        }
        Ok(())
    }

    /// Makes iteration `iteration`'s pairs with the current policy, takes
    /// their reference log-probs and restarts the optimizer.
    fn start_iteration<B: TrainBackend>(
        &mut self,
        session: &mut Session<B>,
        iteration: u64,
        reporter: &mut Reporter,
    ) -> Result<()> {
        reporter.phase(&self.label(session, iteration));
        let (pairs, current_len, win_rates) = match &mut self.source {
            Source::Spin { examples, previous } => {
                let mut pairs = spin::generate_pairs(session, examples, iteration, reporter)?;
                // Iteration t trains on the pairs of t and t − 1.
                let current_len = pairs.len();
                pairs.append(previous);
                (pairs, current_len, Vec::new())
            }
            Source::Ranked { prompts, oracle } => {
                let Some(judge) = oracle.as_deref_mut() else { bail!("iteration {iteration}: no oracle") };
                let (pairs, win_rates) = ranked::ranked_pairs(session, prompts, iteration, judge, reporter)?;
                if pairs.is_empty() {
                    bail!(
                        "iteration {iteration}: every prompt's {} samples tie; nothing to train on",
                        session.cfg.num_samples
                    );
                }
                let current_len = pairs.len();
                (pairs, current_len, win_rates)
            }
        };
        // Reference = this iteration's starting model; its log-probs once.
        let reference = PairReference::compute(session, &pairs, reporter)?;
        session.restart_phase()?;
        let phase = Phase::new(session, pairs.len())?;
        let progress = IterationProgress { iteration, pairs, current_len, win_rates };
        self.current = Some(Current { progress, reference, phase, announced: false });
        Ok(())
    }
}

fn current_iteration(current: &Option<Current>) -> u64 {
    current.as_ref().map_or(0, |current| current.progress.iteration)
}
