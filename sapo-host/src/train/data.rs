//! Training data per method: the dataset shape each needs, tokenised with
//! the model's chat template, cut to the configured lengths.

use std::path::Path;

use anyhow::{Result, bail};

use super::config::{Method, TrainConfig};
use super::passes::{PairSeqs, SftSeq};
use crate::chat_template::ChatTemplate;
use crate::data::{DatasetKind, DatasetLoader, LoadOptions, Truncation};
use crate::tokenizer::Tokenizer;

/// A prompt with its good response, uncut (SAPO cuts at the segment plan).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptChosen {
    /// Prompt ids.
    pub prompt: Vec<u32>,
    /// Chosen response ids (with the end of sequence).
    pub chosen: Vec<u32>,
}

/// The examples of a run.
#[derive(Debug, Clone)]
pub enum TrainData {
    /// SFT sequences.
    Sft(Vec<SftSeq>),
    /// Offline preference pairs.
    Pairs(Vec<PairSeqs>),
    /// Prompts with a chosen response (SAPO, SPIN).
    PromptChosen(Vec<PromptChosen>),
    /// Prompts only, with their text for the oracle (SPPO, AIPO).
    Prompts(Vec<super::eval::EvalPrompt>),
}

impl TrainData {
    /// Number of examples.
    pub fn len(&self) -> usize {
        match self {
            TrainData::Sft(v) => v.len(),
            TrainData::Pairs(v) => v.len(),
            TrainData::PromptChosen(v) => v.len(),
            TrainData::Prompts(v) => v.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Cuts a pair so both sequences fit `max_length`, with one prompt cut for
/// both (the prompt keeps its last `max_prompt_length` tokens, then each
/// response its first tokens): the SAPO rule applied to the longer side.
pub fn cut_pair(
    prompt: &[u32],
    chosen: &[u32],
    rejected: &[u32],
    max_length: usize,
    max_prompt_length: usize,
) -> PairSeqs {
    let truncation = Truncation::SapoKeepEndPrompt { max_length, max_prompt_length };
    let longer = if chosen.len() >= rejected.len() { chosen } else { rejected };
    let (kept_prompt, _) = truncation.apply(prompt, longer);
    let room = max_length.saturating_sub(kept_prompt.len());
    let join = |response: &[u32]| -> Vec<u32> {
        kept_prompt.iter().chain(&response[..response.len().min(room)]).copied().collect()
    };
    PairSeqs { prompt_len: kept_prompt.len(), chosen: join(chosen), rejected: join(rejected) }
}

/// Loads `path` in the shape `config.method` needs.
///
/// # Errors
/// A missing file, a malformed record (file, line and field), or a file
/// with no usable example.
pub fn load(
    config: &TrainConfig,
    path: &Path,
    tokenizer: &Tokenizer,
    template: Option<&ChatTemplate>,
) -> Result<TrainData> {
    if !path.exists() {
        bail!("{}: no such data file", path.display());
    }
    if matches!(config.method, Method::Sppo | Method::SppoHard | Method::Aipo) {
        return Ok(TrainData::Prompts(super::eval::read_prompts(path, tokenizer, template)?));
    }
    let kind = match config.method {
        Method::Sft => DatasetKind::Sft,
        Method::Dpo | Method::Ipo | Method::Hinge | Method::Orpo => DatasetKind::Preference,
        Method::Sapo | Method::Spin => DatasetKind::PromptChosen,
        Method::Sppo | Method::SppoHard | Method::Aipo => DatasetKind::PromptOnly,
    };
    let truncation = match config.method {
        Method::Sft => Truncation::KeepStart { max_length: config.max_length },
        _ => {
            Truncation::SapoKeepEndPrompt { max_length: config.max_length, max_prompt_length: config.max_prompt_length }
        }
    };
    let loader = DatasetLoader::new(tokenizer, template, LoadOptions { kind, truncation, skip_invalid: false })?;
    let dataset = loader.load(path)?;
    let data = match config.method {
        Method::Sft => TrainData::Sft(
            dataset
                .examples
                .iter()
                .filter_map(|e| {
                    let response = e.chosen_ids.as_deref()?;
                    let (prompt, response) = truncation.apply(&e.prompt_ids, response);
                    (!response.is_empty() || prompt.len() >= 2).then(|| SftSeq {
                        prompt_len: prompt.len(),
                        tokens: prompt.iter().chain(response).copied().collect(),
                    })
                })
                .collect(),
        ),
        Method::Dpo | Method::Ipo | Method::Hinge | Method::Orpo => TrainData::Pairs(
            dataset
                .examples
                .iter()
                .filter_map(|e| {
                    let (chosen, rejected) = (e.chosen_ids.as_deref()?, e.rejected_ids.as_deref()?);
                    Some(cut_pair(&e.prompt_ids, chosen, rejected, config.max_length, config.max_prompt_length))
                })
                .collect(),
        ),
        Method::Sppo | Method::SppoHard | Method::Aipo => unreachable!("read as prompts above"),
        Method::Sapo | Method::Spin => TrainData::PromptChosen(
            dataset
                .examples
                .iter()
                .filter_map(|e| Some(PromptChosen { prompt: e.prompt_ids.clone(), chosen: e.chosen_ids.clone()? }))
                .collect(),
        ),
    };
    if data.is_empty() {
        bail!("{}: no usable example for method {}", path.display(), config.method.name());
    }
    Ok(data)
}
