//! One optimizer step on fixed pairs: what offline DPO, IPO, hinge and ORPO
//! do for the whole run and SPIN, SPPO and AIPO do within an iteration.

use std::time::Instant;

use anyhow::{Context, Result};
use sapo_core::objectives::Objective;

use super::StepOutcome;
use super::reference::PairReference;
use crate::train::TrainBackend;
use crate::train::passes::{self, PairSeqs};
use crate::train::plan::Phase;
use crate::train::report::{Reporter, StepMetrics};
use crate::train::session::Session;

/// The pairs of a phase and what the objective needs besides them.
#[derive(Debug, Clone, Copy)]
pub struct FixedPairs<'a> {
    /// The pairs.
    pub pairs: &'a [PairSeqs],
    /// Their reference log-probs (empty for ORPO, which has no reference).
    pub reference: &'a PairReference,
    /// SPPO's `(P̂_w, P̂_l)` per pair.
    pub win_rates: Option<&'a [(f64, f64)]>,
    /// The objective.
    pub objective: &'a Objective,
}

/// Takes step `session.phase_step` of `phase` over `data`.
///
/// # Errors
/// A pass, objective or optimizer error, naming the step.
pub fn step<B: TrainBackend>(
    session: &mut Session<B>,
    reporter: &mut Reporter,
    phase: &Phase,
    data: FixedPairs<'_>,
) -> Result<StepOutcome> {
    let started = Instant::now();
    let scale = 1.0 / session.cfg.gradient_accumulation_steps as f64;
    let (batches, epoch) = phase.plan.micro_batches(session.phase_step);
    let mut metrics = StepMetrics::default();
    let (mut tokens, mut margins) = (0, Vec::new());
    for batch in &batches {
        let selected: Vec<&PairSeqs> = batch.iter().map(|&i| &data.pairs[i]).collect();
        let rates: Option<(Vec<f64>, Vec<f64>)> = data.win_rates.map(|rates| batch.iter().map(|&i| rates[i]).unzip());
        let reference = data.objective.needs_reference().then(|| data.reference.batch(batch));
        let m = passes::ModelRef { backend: &session.backend, config: &session.model.config };
        let out = passes::pair_step(
            m,
            &session.model.params,
            &mut session.grads,
            &mut session.ws,
            &selected,
            reference.as_ref(),
            rates.as_ref().map(|(w, l)| (w.as_slice(), l.as_slice())),
            data.objective,
            scale,
        )
        .with_context(|| format!("step {}", session.step + 1))?;
        metrics.add("loss", out.loss);
        for (name, value) in &out.metrics {
            metrics.add(name, *value);
        }
        tokens += out.tokens;
        margins.extend(out.margins);
    }
    let (grad_norm, lr) = session.optimizer_step(&phase.schedule)?;
    if data.objective.needs_reference() {
        reporter.observe_margins(session.step, &margins, lr)?;
    }
    Ok(StepOutcome { metrics, grad_norm, lr, epoch, tokens, started })
}
