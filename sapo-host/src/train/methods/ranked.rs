//! SPPO's and AIPO's data for one iteration: K samples per prompt from the
//! model the iteration starts from, judged by the oracle; SPPO's win-rate
//! pairs or AIPO's best/worst pairs; the samples written to
//! `samples/iteration-t.jsonl` with the win rate against the previous
//! iteration's.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use sapo_core::sppo::{self, TiePolicy};

use super::end_at_stop;
use crate::train::TrainBackend;
use crate::train::config::Method;
use crate::train::data::cut_pair;
use crate::train::eval::EvalPrompt;
use crate::train::oracle::{Judgement, Oracle};
use crate::train::passes::PairSeqs;
use crate::train::report::Reporter;
use crate::train::session::Session;

/// One iteration's pairs and SPPO's `(P̂_w, P̂_l)` per pair.
pub type RankedPairs = (Vec<PairSeqs>, Vec<(f64, f64)>);

/// One iteration's data: samples, oracle scores, pairs (and SPPO's win
/// rates), written to `samples/iteration-t.jsonl`.
///
/// # Errors
/// A generation, oracle or I/O error.
pub fn ranked_pairs<B: TrainBackend>(
    session: &mut Session<B>,
    prompts: &[EvalPrompt],
    iteration: u64,
    oracle: &mut dyn Oracle,
    reporter: &mut Reporter,
) -> Result<RankedPairs> {
    let k = session.cfg.num_samples;
    let eos = session.eos_id()?;
    let sampling = session.sampling();
    let ties =
        if session.cfg.skip_ties || session.cfg.method == Method::Aipo { TiePolicy::Skip } else { TiePolicy::Keep };
    let (mut pairs, mut win_rates, mut lines) = (Vec::new(), Vec::new(), String::new());
    let (mut all_len, mut chosen_len, mut rejected_len, mut score_sum, mut skipped) = (0usize, 0usize, 0usize, 0.0, 0);
    let started = Instant::now();
    let samples_dir = session.cfg.output_dir.join("samples");
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
        let mut rngs = session.next_rngs(prefixes.len());
        let outputs = session.sampler.generate(
            &session.backend,
            &session.model.config,
            &session.model.params,
            &prefixes,
            session.cfg.max_new_tokens,
            &session.model.eos_ids,
            sampling,
            &mut rngs,
        )?;
        for (prompt, samples) in chunk.iter().zip(outputs.chunks(k)) {
            let mut responses: Vec<Vec<u32>> = Vec::with_capacity(k);
            for sample in samples {
                let mut response = sample.clone();
                end_at_stop(&mut response, &session.model.eos_ids, eos);
                if response.is_empty() {
                    response.push(eos);
                }
                responses.push(response);
            }
            let texts: Vec<String> =
                responses.iter().map(|r| session.model.tokenizer.decode(r, true)).collect::<Result<_, _>>()?;
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
                session.cfg.max_length,
                session.cfg.max_prompt_length,
            ));
            win_rates.push((pair.chosen_win_rate, pair.rejected_win_rate));
        }
    }
    std::fs::create_dir_all(&samples_dir).with_context(|| format!("{}", samples_dir.display()))?;
    crate::atomic_file::write_atomically(&samples_dir.join(format!("iteration-{iteration}.jsonl")), lines.as_bytes())?;
    let n_samples = (prompts.len() * k).max(1) as f64;
    let n_pairs = pairs.len().max(1) as f64;
    reporter.log_event(serde_json::json!({
        "event": "iteration_samples",
        "iteration": iteration,
        "step": session.step,
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
