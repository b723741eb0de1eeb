//! Task accuracy on held-out prompts: greedy answers from the model, scored
//! by the shipped task's judge (`crate::task`). `sapo eval` and the
//! trainer's before/after figures both come from here.

use std::path::Path;

use super::TrainBackend;
use anyhow::{Context, Result, bail};
use sapo_core::model::{LlamaConfig, LlamaParams};
use sapo_core::rng::SapoRng;
use sapo_core::sampling::SamplingParams;

use super::sampler::Sampler;
use crate::chat_template::{ChatTemplate, Message};
use crate::task::{self, Summary, Verdict};
use crate::tokenizer::Tokenizer;

/// One held-out prompt: its text for the judge, its ids for the model.
#[derive(Debug, Clone)]
pub struct EvalPrompt {
    /// The user message.
    pub text: String,
    /// The rendered prompt's ids (generation prompt included).
    pub ids: Vec<u32>,
}

/// Reads the prompts of a JSONL file with a `prompt` field (a string or a
/// list of messages; the last user message is what the judge reads).
///
/// # Errors
/// A missing file, invalid JSON or a missing prompt, named by line.
pub fn read_prompts(path: &Path, tokenizer: &Tokenizer, template: Option<&ChatTemplate>) -> Result<Vec<EvalPrompt>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let mut prompts = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{}", path.display(), index + 1);
        let value: serde_json::Value = serde_json::from_str(line).with_context(|| format!("{}: invalid JSON", at()))?;
        let messages: Vec<Message> = match value.get("prompt") {
            Some(serde_json::Value::String(text)) => vec![Message::new("user", text.as_str())],
            Some(list @ serde_json::Value::Array(_)) => serde_json::from_value(list.clone())
                .with_context(|| format!("{}: field `prompt`: expected a list of {{\"role\", \"content\"}}", at()))?,
            _ => bail!("{}: field `prompt` is missing", at()),
        };
        let user = messages.iter().rev().find(|m| m.role == "user").map(|m| m.content.clone()).unwrap_or_default();
        let rendered = match template {
            Some(template) => template.render(&messages, true)?,
            None => user.clone(),
        };
        let ids = tokenizer.encode(&rendered, template.is_none())?;
        prompts.push(EvalPrompt { text: user, ids });
    }
    if prompts.is_empty() {
        bail!("{}: no prompts", path.display());
    }
    Ok(prompts)
}

/// The outcome of an evaluation.
#[derive(Debug, Clone)]
pub struct EvalOutcome {
    /// Accuracy and scores overall and per task kind.
    pub summary: Summary,
    /// Mean generated tokens per answer.
    pub mean_length: f64,
    /// Prompts the judge did not recognise (not scored).
    pub unjudged: usize,
}

/// Greedy answers to `prompts` in batches, judged.
///
/// # Errors
/// A generation or decoding error, or no prompt the judge recognises.
#[allow(clippy::too_many_arguments)]
pub fn evaluate<B: TrainBackend>(
    backend: &B,
    config: &LlamaConfig,
    params: &LlamaParams<B>,
    tokenizer: &Tokenizer,
    eos_ids: &[u32],
    prompts: &[EvalPrompt],
    max_new_tokens: usize,
    sampler: &mut Sampler<B>,
) -> Result<EvalOutcome> {
    const BATCH: usize = 32;
    let mut verdicts: Vec<Verdict> = Vec::new();
    let (mut unjudged, mut generated) = (0, 0);
    for chunk in prompts.chunks(BATCH) {
        let prefixes: Vec<&[u32]> = chunk.iter().map(|p| p.ids.as_slice()).collect();
        let mut rngs: Vec<SapoRng> = (0..chunk.len()).map(|i| SapoRng::from_seed_and_stream(0, i as u64)).collect();
        let outputs = sampler.generate(
            backend,
            config,
            params,
            &prefixes,
            max_new_tokens,
            eos_ids,
            SamplingParams::greedy(),
            &mut rngs,
        )?;
        for (prompt, output) in chunk.iter().zip(&outputs) {
            generated += output.len();
            let answer = tokenizer.decode(output, true)?;
            match task::judge(&prompt.text, &answer) {
                Some(verdict) => verdicts.push(verdict),
                None => unjudged += 1,
            }
        }
    }
    if verdicts.is_empty() {
        bail!("none of the {} evaluation prompts is a task the judge knows", prompts.len());
    }
    Ok(EvalOutcome {
        summary: task::score_summary(&verdicts),
        mean_length: generated as f64 / prompts.len() as f64,
        unjudged,
    })
}
