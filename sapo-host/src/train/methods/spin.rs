//! SPIN's data for one iteration: one response per prompt from the model
//! the iteration starts from, as the rejected side against the data's chosen.

use std::time::Instant;

use anyhow::Result;

use super::{end_at_stop, end_of_turn_tail};
use crate::train::TrainBackend;
use crate::train::data::{PromptChosen, cut_pair};
use crate::train::passes::PairSeqs;
use crate::train::report::Reporter;
use crate::train::session::Session;

/// Prompts generated per batched call.
const PROMPTS_PER_CALL: usize = 32;

/// One rejected response per example from the current policy, as pairs,
/// and the `spin_generation` event.
///
/// # Errors
/// A generation or logging error.
pub fn generate_pairs<B: TrainBackend>(
    session: &mut Session<B>,
    examples: &[PromptChosen],
    iteration: u64,
    reporter: &mut Reporter,
) -> Result<Vec<PairSeqs>> {
    let eos = session.eos_id()?;
    let sampling = session.sampling();
    let mut current = Vec::with_capacity(examples.len());
    let mut generated_total = 0;
    let generation_started = Instant::now();
    for start in (0..examples.len()).step_by(PROMPTS_PER_CALL) {
        let end = (start + PROMPTS_PER_CALL).min(examples.len());
        let views: Vec<&[u32]> = examples[start..end].iter().map(|e| e.prompt.as_slice()).collect();
        let mut rngs = session.next_rngs(end - start);
        let outputs = session.sampler.generate(
            &session.backend,
            &session.model.config,
            &session.model.params,
            &views,
            session.cfg.max_new_tokens,
            &session.model.eos_ids,
            sampling,
            &mut rngs,
        )?;
        for (example, mut generated) in examples[start..end].iter().zip(outputs) {
            end_at_stop(&mut generated, &session.model.eos_ids, eos);
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
                session.cfg.max_length,
                session.cfg.max_prompt_length,
            ));
        }
    }
    let mean_length = generated_total as f64 / examples.len().max(1) as f64;
    reporter.log_event(serde_json::json!({
        "event": "spin_generation",
        "iteration": iteration,
        "step": session.step,
        "samples/mean_length": mean_length,
        "seconds": generation_started.elapsed().as_secs_f64(),
    }))?;
    Ok(current)
}
