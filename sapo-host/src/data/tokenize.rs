//! TRL 1.16's tokenisation of a checked record (`DPOTrainer._prepare_dataset`
//! and `SFTTrainer._prepare_dataset`), and its collator's truncation.

use crate::chat_template::{ChatTemplate, Message, RenderOptions};
use crate::tokenizer::Tokenizer;

use super::Problem;
use super::record::{Record, Shape, Turns};

/// Token ids of one record: the prompt and each response present, in field order.
#[derive(Debug)]
pub(crate) struct RecordIds {
    pub prompt_ids: Vec<u32>,
    pub responses: Vec<(&'static str, Vec<u32>)>,
}

/// Renders and tokenises like TRL's `_tokenize`: a conversation through the
/// chat template, encoded without special tokens (`apply_chat_template`);
/// plain text encoded with them (`tokenizer(text)`).
struct Encoder<'a> {
    tokenizer: &'a Tokenizer,
    template: Option<&'a ChatTemplate>,
    render: &'a RenderOptions,
}

impl Encoder<'_> {
    fn conversation(
        &self,
        field: &'static str,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<Vec<u32>, Problem> {
        // The loader refuses conversational data without a template before any record.
        let template = self.template.ok_or(Problem::Template { field, message: "no chat template".into() })?;
        let options = RenderOptions { add_generation_prompt, ..self.render.clone() };
        let text = template
            .render_with(messages, &options)
            .map_err(|error| Problem::Template { field, message: error.to_string() })?;
        self.tokenizer.encode(&text, false).map_err(|error| Problem::Tokenizer { field, message: error.to_string() })
    }

    fn text(&self, field: &'static str, text: &str) -> Result<Vec<u32>, Problem> {
        self.tokenizer.encode(text, true).map_err(|error| Problem::Tokenizer { field, message: error.to_string() })
    }
}

/// TRL's `common_prefix_length`.
fn common_prefix_length(ids: &[u32], other: &[u32]) -> usize {
    ids.iter().zip(other).take_while(|(left, right)| left == right).count()
}

/// TRL's `add_eos` for plain-text completions: EOS text appended unless already there.
fn with_eos(text: &str, eos: &str) -> String {
    if text.ends_with(eos) { text.to_string() } else { format!("{text}{eos}") }
}

/// Token ids as TRL prepares them.
///
/// * Prompt and responses: the prompt is tokenised alone (conversational:
///   rendered with the generation prompt) and each response together with it
///   (conversational: prompt + response rendered without it; plain text: the
///   strings concatenated, EOS text appended to the response). The prompt is
///   the longest common prefix of the prompt's ids and every prompt+response's
///   ids; each response is the rest of its sequence. When tokens merge across
///   the boundary (a prompt ending in a space) the prompt's last ids are
///   dropped, as TRL drops them.
/// * A whole sequence (SFT `messages` / `text`): the full ids as the response,
///   an empty prompt (TRL trains on every token).
pub(crate) fn record_ids(
    record: &Record,
    tokenizer: &Tokenizer,
    template: Option<&ChatTemplate>,
    eos: &str,
) -> Result<RecordIds, Problem> {
    let encoder = Encoder { tokenizer, template, render: &record.render };
    match &record.shape {
        Shape::Whole { field, sequence } => {
            let ids = match sequence {
                Turns::Messages(messages) => encoder.conversation(field, messages, false)?,
                Turns::Text(text) => encoder.text(field, &with_eos(text, eos))?,
            };
            Ok(RecordIds { prompt_ids: Vec::new(), responses: vec![(field, ids)] })
        }
        Shape::Pair { prompt, responses } => {
            let prompt_ids = match prompt {
                Turns::Messages(messages) => encoder.conversation("prompt", messages, true)?,
                Turns::Text(text) => encoder.text("prompt", text)?,
            };
            let mut full = Vec::with_capacity(responses.len());
            for (field, response) in responses {
                let ids = match (prompt, response) {
                    (Turns::Messages(prompt), Turns::Messages(response)) => {
                        let conversation: Vec<Message> = prompt.iter().chain(response).cloned().collect();
                        encoder.conversation(field, &conversation, false)?
                    }
                    (Turns::Text(prompt), Turns::Text(response)) => {
                        encoder.text(field, &format!("{prompt}{}", with_eos(response, eos)))?
                    }
                    // Records are checked for one form before tokenisation.
                    _ => return Err(Problem::MixedForms),
                };
                full.push((*field, ids));
            }
            let prompt_len =
                full.iter().map(|(_, ids)| common_prefix_length(&prompt_ids, ids)).min().unwrap_or(prompt_ids.len());
            let mut split = Vec::with_capacity(full.len());
            for (field, ids) in full {
                let response = ids[prompt_len..].to_vec();
                if response.is_empty() {
                    return Err(Problem::NoResponseTokens { field });
                }
                split.push((field, response));
            }
            Ok(RecordIds { prompt_ids: prompt_ids[..prompt_len].to_vec(), responses: split })
        }
    }
}

/// How sequences longer than the limit are cut. The loader keeps examples
/// whole (the SAPO segment draw needs the full chosen length) and rejects
/// those no cut can save; trainers apply [`Truncation::apply`] per sequence,
/// as TRL's `DataCollatorForPreference` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Truncation {
    /// No limit.
    #[default]
    None,
    /// TRL's `max_length` with `truncation_mode="keep_start"` (its default,
    /// `max_length` 1024 in `DPOConfig`/`SFTConfig`): a sequence keeps its
    /// first `max_length` tokens, so the response loses its end. An example
    /// whose prompt alone has `max_length` tokens or more keeps no response
    /// token: TRL drops it silently, sapo reports it as invalid.
    KeepStart {
        /// Most tokens in prompt + response.
        max_length: usize,
    },
    /// TRL's `truncation_mode="keep_end"` (deprecated there): a sequence
    /// keeps its last `max_length` tokens, so the prompt loses its start first.
    KeepEnd {
        /// Most tokens in prompt + response.
        max_length: usize,
    },
    /// SAPO (docs/algorithms.md, "Segment truncation"): when prompt + response
    /// exceeds `max_length`, the prompt keeps its last `max_prompt_length`
    /// tokens; if still too long the response keeps its first
    /// `max_length − len(prompt)` tokens (losing its EOS). The segment cut is
    /// drawn on the untruncated response before this applies.
    SapoKeepEndPrompt {
        /// Most tokens in prompt + response (2048 in the authors' runs).
        max_length: usize,
        /// Most prompt tokens kept when cutting (1792), below `max_length`.
        max_prompt_length: usize,
    },
}

impl Truncation {
    /// The kept parts of one `prompt + response` sequence: exactly the tokens
    /// TRL's collator keeps, split back into prompt and response.
    pub fn apply<'a>(&self, prompt: &'a [u32], response: &'a [u32]) -> (&'a [u32], &'a [u32]) {
        let total = prompt.len() + response.len();
        match *self {
            Truncation::None => (prompt, response),
            Truncation::KeepStart { max_length } => {
                let prompt_kept = prompt.len().min(max_length);
                (&prompt[..prompt_kept], &response[..response.len().min(max_length - prompt_kept)])
            }
            Truncation::KeepEnd { max_length } => {
                let response_kept = response.len().min(max_length);
                let prompt_kept = prompt.len().min(max_length - response_kept);
                (&prompt[prompt.len() - prompt_kept..], &response[response.len() - response_kept..])
            }
            Truncation::SapoKeepEndPrompt { max_length, max_prompt_length } => {
                if total <= max_length {
                    return (prompt, response);
                }
                let prompt = &prompt[prompt.len() - prompt.len().min(max_prompt_length)..];
                let response_kept = response.len().min(max_length.saturating_sub(prompt.len()));
                (prompt, &response[..response_kept])
            }
        }
    }

    /// Whether a prompt of `n_tokens` leaves room for a response: only
    /// `KeepStart` can cut every response token away.
    pub(crate) fn prompt_fits(&self, n_tokens: usize) -> Result<(), Problem> {
        match *self {
            Truncation::KeepStart { max_length } if n_tokens >= max_length => {
                Err(Problem::PromptTooLong { n_tokens, max_length })
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sapo_truncation_keeps_the_prompt_end_then_cuts_the_response() {
        let truncation = Truncation::SapoKeepEndPrompt { max_length: 10, max_prompt_length: 4 };
        let prompt: Vec<u32> = (0..6).collect();
        let response: Vec<u32> = (100..104).collect();
        assert_eq!(truncation.apply(&prompt, &response), (&prompt[..], &response[..]));
        let long: Vec<u32> = (100..109).collect();
        let (kept_prompt, kept_response) = truncation.apply(&prompt, &long);
        assert_eq!(kept_prompt, &[2, 3, 4, 5]);
        assert_eq!(kept_response, &long[..6]);
    }
}
