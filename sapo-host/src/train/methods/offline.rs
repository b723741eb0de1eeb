//! Offline DPO, IPO, hinge and ORPO: one phase over the data's pairs, the
//! starting model as the reference (its log-probs computed once).

use anyhow::Result;
use sapo_core::objectives::Objective;

use super::StepOutcome;
use super::pairs::{self, FixedPairs};
use super::reference::PairReference;
use crate::train::TrainBackend;
use crate::train::passes::PairSeqs;
use crate::train::plan::Phase;
use crate::train::report::Reporter;
use crate::train::session::Session;
use crate::train::state::MethodCheckpoint;

/// An offline method's state.
#[derive(Debug)]
pub struct Offline {
    pairs: Vec<PairSeqs>,
    objective: Objective,
    /// Empty when the objective has no reference (ORPO).
    reference: PairReference,
    phase: Phase,
}

impl Offline {
    /// The method on `pairs`; a resumed run takes the reference log-probs
    /// from its checkpoint, a fresh one computes them.
    ///
    /// # Errors
    /// A pass or I/O error, or a checkpoint without the log-probs.
    pub fn new<B: TrainBackend>(
        session: &mut Session<B>,
        pairs: Vec<PairSeqs>,
        objective: Objective,
        resumed: Option<MethodCheckpoint>,
        reporter: &Reporter,
    ) -> Result<Self> {
        let cached = resumed.map(|state| state.ref_cache).filter(|cache| !cache.is_empty());
        let reference = match (objective.needs_reference(), cached) {
            (false, _) => PairReference::default(),
            (true, Some(cache)) => {
                reporter.say(&format!("reusing {} cached reference log-probs from the checkpoint", cache.len()));
                PairReference::from_checkpoint(&cache, pairs.len())?
            }
            (true, None) => PairReference::compute(session, &pairs, reporter)?,
        };
        let phase = Phase::new(session, pairs.len())?;
        Ok(Offline { pairs, objective, reference, phase })
    }

    /// One optimizer step; `None` when the run is done.
    ///
    /// # Errors
    /// As [`pairs::step`].
    pub fn step<B: TrainBackend>(
        &mut self,
        session: &mut Session<B>,
        reporter: &mut Reporter,
    ) -> Result<Option<StepOutcome>> {
        if self.phase.is_done(session) {
            return Ok(None);
        }
        let data =
            FixedPairs { pairs: &self.pairs, reference: &self.reference, win_rates: None, objective: &self.objective };
        pairs::step(session, reporter, &self.phase, data).map(Some)
    }

    /// The reference log-probs, as a checkpoint keeps them.
    pub fn checkpoint(&self) -> MethodCheckpoint {
        MethodCheckpoint { ref_cache: self.reference.to_checkpoint(), ..MethodCheckpoint::default() }
    }
}
