//! One type per method family, each owning exactly the state it needs:
//! [`sft::Sft`], [`offline::Offline`] (DPO, IPO, hinge, ORPO on fixed
//! pairs), [`sapo::Sapo`] (SAPO-DPO and SAPO-ORPO) and
//! [`iterative::Iterative`] (SPIN, SPPO, SPPO-hard and AIPO). [`Method`]
//! holds one of them; the trainer ([`super::run`]) calls [`Method::step`]
//! until it returns `None` and does the bookkeeping common to every step.

pub mod iterative;
pub mod offline;
pub mod pairs;
pub mod ranked;
pub mod reference;
pub mod sapo;
pub mod sft;
pub mod spin;

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Result, bail};
use sapo_core::model::LlamaParams;
use sapo_core::objectives::Objective;

use super::TrainBackend;
use super::config::Method as MethodName;
use super::data::TrainData;
use super::report::{Reporter, StepMetrics};
use super::session::Session;
use super::state::MethodCheckpoint;

/// What one optimizer step of any method reports to the trainer.
#[derive(Debug)]
pub struct StepOutcome {
    /// The method's metrics (loss, rewards, timings).
    pub metrics: StepMetrics,
    /// The gradient norm before clipping.
    pub grad_norm: f64,
    /// The learning rate of the update.
    pub lr: f64,
    /// The fractional epoch reached.
    pub epoch: f64,
    /// Tokens run through the policy.
    pub tokens: usize,
    /// When the step began.
    pub started: Instant,
}

/// The method of a run and its state.
#[derive(Debug)]
pub enum Method<B: TrainBackend> {
    /// Supervised fine-tuning.
    Sft(sft::Sft),
    /// DPO, IPO, hinge or ORPO on fixed pairs.
    Offline(offline::Offline),
    /// SAPO-DPO or SAPO-ORPO.
    Sapo(Box<sapo::Sapo<B>>),
    /// SPIN, SPPO, SPPO-hard or AIPO.
    Iterative(Box<iterative::Iterative>),
}

impl<B: TrainBackend> Method<B> {
    /// The method `session.cfg` names on its data, training with
    /// `objective` (the run's one, `None` for SFT); `resumed` is a
    /// checkpoint's method state (and weight sets), `None` for a fresh run.
    ///
    /// # Errors
    /// Data of the wrong shape for the method, a checkpoint that lacks the
    /// state the method needs, or an error of the method's set-up.
    pub fn start(
        session: &mut Session<B>,
        data: TrainData,
        objective: Option<Objective>,
        resumed: Option<(MethodCheckpoint, &mut BTreeMap<String, LlamaParams<B>>)>,
        reporter: &mut Reporter,
    ) -> Result<Self> {
        let name = session.cfg.method;
        Ok(match (name, data, objective) {
            (MethodName::Sft, TrainData::Sft(sequences), None) => Method::Sft(sft::Sft::new(session, sequences)?),
            (
                MethodName::Dpo | MethodName::Ipo | MethodName::Hinge | MethodName::Orpo,
                TrainData::Pairs(pairs),
                Some(objective),
            ) => Method::Offline(offline::Offline::new(session, pairs, objective, resumed.map(|r| r.0), reporter)?),
            (MethodName::Sapo, TrainData::PromptChosen(examples), Some(objective)) => {
                Method::Sapo(Box::new(sapo::Sapo::new(session, examples, objective, resumed)?))
            }
            (MethodName::Spin, TrainData::PromptChosen(examples), Some(objective)) => Method::Iterative(Box::new(
                iterative::Iterative::spin(session, examples, objective, resumed.map(|r| r.0))?,
            )),
            (
                MethodName::Sppo | MethodName::SppoHard | MethodName::Aipo,
                TrainData::Prompts(prompts),
                Some(objective),
            ) => Method::Iterative(Box::new(iterative::Iterative::ranked(
                session,
                prompts,
                objective,
                resumed.map(|r| r.0),
            )?)),
            (name, _, _) => bail!("method {}: the data loaded is not the shape it trains on", name.name()),
        })
    }

    /// Takes one optimizer step (starting the next phase first when the
    /// current one is done); `None` once the method has finished.
    ///
    /// # Errors
    /// Any error of the step: data, backend, a non-finite loss or gradient.
    pub fn step(&mut self, session: &mut Session<B>, reporter: &mut Reporter) -> Result<Option<StepOutcome>> {
        match self {
            Method::Sft(method) => method.step(session),
            Method::Offline(method) => method.step(session, reporter),
            Method::Sapo(method) => method.step(session, reporter),
            Method::Iterative(method) => method.step(session, reporter),
        }
    }

    /// The weight sets the method keeps besides the policy (`ema`, `reference`).
    pub fn checkpoint_weights(&self) -> Vec<(&'static str, &LlamaParams<B>)> {
        match self {
            Method::Sapo(method) => method.checkpoint_weights(),
            Method::Sft(_) | Method::Offline(_) | Method::Iterative(_) => Vec::new(),
        }
    }

    /// The method's state as a checkpoint stores it.
    pub fn checkpoint(&self) -> MethodCheckpoint {
        match self {
            Method::Sft(_) => MethodCheckpoint::default(),
            Method::Offline(method) => method.checkpoint(),
            Method::Sapo(method) => method.checkpoint(),
            Method::Iterative(method) => method.checkpoint(),
        }
    }

    /// How many optimizer steps the whole run takes, for the progress bar
    /// (iterative methods: the first iteration's count times the iterations).
    pub fn total_steps_estimate(cfg: &super::config::TrainConfig, examples: usize) -> u64 {
        let iterations = match cfg.method {
            MethodName::Spin => cfg.spin_iterations,
            MethodName::Sppo | MethodName::SppoHard | MethodName::Aipo => cfg.iterations,
            MethodName::Sft
            | MethodName::Sapo
            | MethodName::Dpo
            | MethodName::Ipo
            | MethodName::Hinge
            | MethodName::Orpo => 1,
        };
        super::plan::BatchPlan::new(cfg, examples).total_steps * iterations
    }
}

/// Cuts a generated sequence at its first stop id, which becomes `eos`:
/// any stop id ends a response, and the pair builders look for `eos`.
pub fn end_at_stop(generated: &mut Vec<u32>, stop_ids: &[u32], eos: u32) {
    if let Some(position) = generated.iter().position(|t| stop_ids.contains(t)) {
        generated.truncate(position + 1);
        generated[position] = eos;
    }
}

/// What a rendered response carries after its last end-of-sequence token
/// (empty when it ends with it, or has none): a chat template writes text
/// after the end-of-turn token (ChatML's "\n" after `<|im_end|>`).
pub fn end_of_turn_tail(response: &[u32], eos: u32) -> &[u32] {
    match response.iter().rposition(|&t| t == eos) {
        Some(position) => &response[position + 1..],
        None => &[],
    }
}
