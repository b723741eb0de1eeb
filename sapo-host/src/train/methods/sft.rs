//! Supervised fine-tuning: the mean NLL of the response tokens over each
//! step's window, as TRL's SFTTrainer averages it.

use std::time::Instant;

use anyhow::{Context, Result};

use super::StepOutcome;
use crate::train::TrainBackend;
use crate::train::passes::{self, ScoredSeq, SftSeq};
use crate::train::plan::Phase;
use crate::train::report::StepMetrics;
use crate::train::session::Session;

/// SFT's state: its sequences and its phase.
#[derive(Debug)]
pub struct Sft {
    sequences: Vec<SftSeq>,
    phase: Phase,
}

impl Sft {
    /// SFT over `sequences`.
    ///
    /// # Errors
    /// A schedule sapo-core refuses.
    pub fn new<B: TrainBackend>(session: &Session<B>, sequences: Vec<SftSeq>) -> Result<Self> {
        let phase = Phase::new(session, sequences.len())?;
        Ok(Sft { sequences, phase })
    }

    /// One optimizer step; `None` when the run is done.
    ///
    /// # Errors
    /// A pass or optimizer error, naming the step.
    pub fn step<B: TrainBackend>(&mut self, session: &mut Session<B>) -> Result<Option<StepOutcome>> {
        if self.phase.is_done(session) {
            return Ok(None);
        }
        let started = Instant::now();
        let (indices, epoch) = self.phase.plan.micro_batches(session.phase_step);
        let window: usize = indices.iter().flatten().map(|&i| self.sequences[i].scored_tokens()).sum();
        let batches: Vec<Vec<ScoredSeq<'_>>> =
            indices.iter().map(|b| b.iter().map(|&i| self.sequences[i].scored()).collect()).collect();
        let (mut loss, mut tokens) = (0.0, 0);
        for batch in &batches {
            let m = passes::ModelRef { backend: &session.backend, config: &session.model.config };
            let out = passes::sft_step(m, &session.model.params, &mut session.grads, &mut session.ws, batch, window)
                .with_context(|| format!("step {}", session.step + 1))?;
            loss += out.loss_part;
            tokens += out.tokens;
        }
        let mut metrics = StepMetrics::default();
        metrics.set("loss", loss);
        metrics.set("num_tokens", window as f64);
        let (grad_norm, lr) = session.optimizer_step(&self.phase.schedule)?;
        Ok(Some(StepOutcome { metrics, grad_norm, lr, epoch, tokens, started }))
    }
}
