//! The held-out evaluation of a run: task accuracy of greedy answers to the
//! evaluation prompts with the task's judge, before, during (every
//! `eval_steps`) and after training; and, when the evaluation file has
//! rejected responses, how the model ranks its pairs and TRL's reward
//! metrics against the starting model.

use anyhow::{Result, anyhow};
use sapo_core::objectives::{Objective, PairBatch};

use super::TrainBackend;
use super::eval::{self, EvalOutcome, EvalPrompt};
use super::passes::{self, PairSeqs};
use super::report::Reporter;
use super::session::Session;

/// What held-out pairs show: the share where the model ranks the chosen
/// response above the rejected one, and — for objectives with an implicit
/// reward — its accuracy and mean margin against the starting model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairFigures {
    /// Share of pairs with `logπ(y_w) > logπ(y_l)`.
    pub ranked: f64,
    /// `(rewards/accuracies, rewards/margins)`, from sapo-core's metrics;
    /// `None` for SFT and ORPO, which have no reference-relative reward.
    pub rewards: Option<(f64, f64)>,
}

/// Held-out pairs and their log-probs under the starting model.
#[derive(Debug)]
struct HeldOutPairs {
    pairs: Vec<PairSeqs>,
    /// Filled by the first evaluation (or restored from a checkpoint).
    initial: Vec<f32>,
}

/// The held-out evaluation's inputs and what it has measured so far.
#[derive(Debug)]
pub struct HeldOut {
    prompts: Vec<EvalPrompt>,
    pairs: Option<HeldOutPairs>,
    /// The run's objective, whose implicit reward the pair figures use.
    objective: Option<Objective>,
    /// The last periodic evaluation and its step, reused when the run ends at that step.
    last: Option<(u64, EvalOutcome, Option<PairFigures>)>,
    /// Task accuracy and held-out pair ranking before training.
    pub before: Option<(f64, Option<f64>)>,
}

impl HeldOut {
    /// The evaluation of `prompts`, and of `pairs` when the file has them.
    pub fn new(prompts: Vec<EvalPrompt>, pairs: Option<Vec<PairSeqs>>, objective: Option<Objective>) -> Self {
        let pairs = pairs.map(|pairs| HeldOutPairs { pairs, initial: Vec::new() });
        HeldOut { prompts, pairs, objective, last: None, before: None }
    }

    /// The starting model's pair log-probs, as a checkpoint keeps them.
    pub fn initial_logps(&self) -> Option<Vec<f32>> {
        self.pairs.as_ref().map(|pairs| pairs.initial.clone())
    }

    /// Restores what a checkpoint kept.
    pub fn restore(&mut self, initial: Option<Vec<f32>>, before: Option<(f64, Option<f64>)>) {
        if let (Some(pairs), Some(saved)) = (&mut self.pairs, initial) {
            pairs.initial = saved;
        }
        self.before = before;
    }

    /// Evaluates the current policy (`when` is `before`, `during` or
    /// `after`), prints it and logs its `eval` event.
    ///
    /// # Errors
    /// A generation, judging or logging error.
    pub fn evaluate<B: TrainBackend>(
        &mut self,
        session: &mut Session<B>,
        reporter: &mut Reporter,
        when: &str,
    ) -> Result<(EvalOutcome, Option<PairFigures>)> {
        let (outcome, pairs) = match self.last.take() {
            // The weights have not moved since the periodic evaluation of
            // this step (the run's last step is often one): log it again.
            Some((step, outcome, pairs)) if step == session.step => (outcome, pairs),
            _ => self.evaluate_now(session)?,
        };
        if when == "during" {
            self.last = Some((session.step, outcome.clone(), pairs));
        }
        log_evaluation(session.step, &outcome, pairs, reporter, when)?;
        Ok((outcome, pairs))
    }

    /// Greedy answers to the held-out prompts, judged, and the held-out pair figures.
    fn evaluate_now<B: TrainBackend>(
        &mut self,
        session: &mut Session<B>,
    ) -> Result<(EvalOutcome, Option<PairFigures>)> {
        let outcome = eval::evaluate(
            &session.backend,
            &session.model.config,
            &session.model.params,
            &session.model.tokenizer,
            &session.model.eos_ids,
            &self.prompts,
            session.cfg.eval_max_new_tokens,
            &mut session.sampler,
        )?;
        let figures = match &mut self.pairs {
            Some(held_out) => {
                let m = passes::ModelRef { backend: &session.backend, config: &session.model.config };
                let sums = passes::score_pairs(m, &session.model.params, &mut session.ws, &held_out.pairs, 32)?;
                if held_out.initial.is_empty() {
                    held_out.initial = sums.clone();
                }
                Some(pair_figures(&sums, &held_out.initial, self.objective.as_ref())?)
            }
            None => None,
        };
        Ok((outcome, figures))
    }
}

/// Ranking and reward figures from the pairs' summed log-probs now and at
/// the start (chosen, rejected, chosen, … in both).
fn pair_figures(sums: &[f32], initial: &[f32], objective: Option<&Objective>) -> Result<PairFigures> {
    let side = |values: &[f32], offset: usize| -> Vec<f64> {
        values.iter().skip(offset).step_by(2).map(|&v| f64::from(v)).collect()
    };
    let (chosen, rejected) = (side(sums, 0), side(sums, 1));
    let (initial_chosen, initial_rejected) = (side(initial, 0), side(initial, 1));
    let ranked = chosen.iter().zip(&rejected).filter(|(c, r)| c > r).count() as f64 / chosen.len().max(1) as f64;
    let rewards = match objective {
        Some(objective) => {
            let batch = PairBatch::new(&chosen, &rejected).with_reference(&initial_chosen, &initial_rejected);
            objective
                .reward_metrics(&batch)
                .map_err(|e| anyhow!("held-out pairs: {e}"))?
                .and_then(|metrics| Some((metrics.get("rewards/accuracies")?, metrics.get("rewards/margins")?)))
        }
        None => None,
    };
    Ok(PairFigures { ranked, rewards })
}

/// Prints an evaluation and logs its `eval` event.
fn log_evaluation(
    step: u64,
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
    let pair_text = pairs.map_or(String::new(), |figures| {
        format!("; ranks the correct answer above the wrong one in {:.1}% of held-out pairs", 100.0 * figures.ranked)
    });
    let moment = if when == "during" { format!("at step {step}") } else { format!("{when} training") };
    reporter.say(&format!(
        "task accuracy {moment}: {:.1}% of {} held-out prompts (mean score {:.3}){pair_text}",
        100.0 * outcome.summary.accuracy,
        outcome.summary.n,
        outcome.summary.mean_score
    ));
    let mut event = serde_json::json!({
        "event": "eval",
        "when": when,
        "step": step,
        "eval/accuracy": outcome.summary.accuracy,
        "eval/mean_score": outcome.summary.mean_score,
        "eval/mean_length": outcome.mean_length,
        "eval/per_kind_accuracy": per_kind,
    });
    if let Some(figures) = pairs {
        event["eval/pair_accuracy"] = figures.ranked.into();
        if let Some((accuracy, margin)) = figures.rewards {
            event["eval/rewards/accuracies"] = accuracy.into();
            event["eval/rewards/margins"] = margin.into();
        }
    }
    reporter.log_event(event)
}
