//! Tokenizers built the way transformers 5 builds them, so sapo's token ids
//! are the ones a model saw in training and TRL would feed it.
//!
//! Two sources:
//!
//! * a Hugging Face directory: [`Tokenizer::from_file`] (`hf.rs`) reads `tokenizer.json`
//!   (the `tokenizers` serialisation, used as-is) and, beside it,
//!   `tokenizer_config.json` (named special tokens, `added_tokens_decoder`,
//!   `clean_up_tokenization_spaces`, the chat template) and
//!   `chat_template.jinja`;
//! * a GGUF file's `tokenizer.ggml.*` metadata: [`Tokenizer::from_bpe_parts`] (`gguf.rs`)
//!   rebuilds the byte-level BPE exactly as transformers'
//!   `integrations/gguf/gguf_tokenizer_mapping.py` does (`byte_level_tokenizer`,
//!   `add_gguf_special_tokens`, `set_split_regex`), then applies the special
//!   tokens and BOS/EOS flags as `TokenizersBackend.__init__` does.
//!
//! Only what changes ids or decoded text is mirrored; transformers' Python-side
//! bookkeeping (`special_tokens_map` names, model_max_length) is not.
//!
//! ```
//! use sapo_host::tokenizer::{BpeParts, Tokenizer};
//! // A byte-level vocabulary: the 256 byte symbols, one merge, an EOS control token.
//! let mut tokens: Vec<String> = vec!["<|end|>".into()];
//! tokens.extend(sapo_host::tokenizer::byte_alphabet().iter().map(|c| c.to_string()));
//! tokens.push("hi".into());
//! let parts = BpeParts {
//!     model: "gpt2".into(),
//!     token_types: std::iter::once(3).chain(std::iter::repeat(1)).take(tokens.len()).collect(),
//!     tokens,
//!     merges: vec!["h i".into()],
//!     eos_token_id: Some(0),
//!     ..BpeParts::default()
//! };
//! let tokenizer = Tokenizer::from_bpe_parts(&parts)?;
//! let ids = tokenizer.encode("hi<|end|>", true)?;
//! assert_eq!(ids, vec![257, 0]);
//! assert_eq!(tokenizer.decode(&ids, true)?, "hi");
//! # Ok::<(), sapo_host::tokenizer::TokenizerError>(())
//! ```

mod gguf;
mod hf;

use std::path::PathBuf;

use tokenizers::AddedToken;
use tokenizers::processors::template::TemplateProcessing;

pub use gguf::{BpeParts, byte_alphabet};

/// What can go wrong building or using a tokenizer. Every variant names the
/// file or the offending value, so a bad model directory is diagnosable from
/// the message alone.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `tokenizer.json` or `tokenizer_config.json` is not what transformers accepts.
    #[error("{path}: {message}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The GGUF vocabulary is not a byte-level BPE (`tokenizer.ggml.model` other than `gpt2`).
    #[error("tokenizer model `{model}` is not supported: only byte-level BPE (`gpt2`) vocabularies are")]
    UnsupportedModel {
        /// `tokenizer.ggml.model`.
        model: String,
    },
    /// Two per-token arrays disagree in length.
    #[error("{what} has {got} entries but there are {expected} tokens")]
    LengthMismatch {
        /// The array, e.g. `token_types`.
        what: &'static str,
        /// Its length.
        got: usize,
        /// The number of tokens.
        expected: usize,
    },
    /// A merge is not two symbols separated by one space.
    #[error("merge {index} `{merge}` is not two symbols separated by one space")]
    BadMerge {
        /// Index in the merges list.
        index: usize,
        /// The merge as given.
        merge: String,
    },
    /// A special token id points outside the token list.
    #[error("{what} id {id} is outside the vocabulary of {n_tokens} tokens")]
    IdOutOfRange {
        /// Which id, e.g. `eos`.
        what: &'static str,
        /// The id.
        id: u32,
        /// The number of tokens.
        n_tokens: usize,
    },
    /// The `tokenizers` crate refused to build a component.
    #[error("building the tokenizer ({stage}): {message}")]
    Build {
        /// The component, e.g. `BPE model`.
        stage: &'static str,
        /// The crate's message.
        message: String,
    },
    /// Encoding failed inside the `tokenizers` crate.
    #[error("encoding {text:?}: {message}")]
    Encode {
        /// The start of the text (at most 80 characters).
        text: String,
        /// The crate's message.
        message: String,
    },
    /// Decoding failed inside the `tokenizers` crate (e.g. an unknown id).
    #[error("decoding {n_ids} ids: {message}")]
    Decode {
        /// How many ids were given.
        n_ids: usize,
        /// The crate's message.
        message: String,
    },
}

type Result<T> = std::result::Result<T, TokenizerError>;

/// The named special tokens of a tokenizer, as strings and ids. A chat
/// template sees the strings as `bos_token`, `eos_token`, … ; TRL appends
/// `eos` to plain-text completions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    /// Beginning of sequence.
    pub bos: Option<(String, u32)>,
    /// End of sequence: what generation stops on and TRL appends.
    pub eos: Option<(String, u32)>,
    /// Unknown token.
    pub unk: Option<(String, u32)>,
    /// Padding token.
    pub pad: Option<(String, u32)>,
}

/// A tokenizer with transformers' ids, decoding and special tokens.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    special: SpecialTokens,
    chat_template: Option<String>,
    /// transformers' `clean_up_tokenization_spaces`, after its rule that BPE
    /// models skip it.
    clean_up_spaces: bool,
}

fn build_error(stage: &'static str) -> impl FnOnce(tokenizers::Error) -> TokenizerError {
    move |error| TokenizerError::Build { stage, message: error.to_string() }
}

impl Tokenizer {
    /// Token ids of `text`. With `add_special_tokens` the post-processor adds
    /// what the model expects around a text (BOS for some models, nothing for
    /// SmolLM2), as `tokenizer(text)` does; chat renderings are encoded
    /// without (`apply_chat_template` does). Special-token text such as
    /// `<|im_end|>` becomes its id either way.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        self.inner.encode(text, add_special_tokens).map(|encoding| encoding.get_ids().to_vec()).map_err(|error| {
            TokenizerError::Encode { text: text.chars().take(80).collect(), message: error.to_string() }
        })
    }

    /// The text of `ids`; invalid UTF-8 from partial byte sequences becomes
    /// U+FFFD as in transformers. `skip_special_tokens` drops every added
    /// token marked special (controls like `<|im_start|>` included).
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        let text = self
            .inner
            .decode(ids, skip_special_tokens)
            .map_err(|error| TokenizerError::Decode { n_ids: ids.len(), message: error.to_string() })?;
        Ok(if self.clean_up_spaces { clean_up_tokenization(&text) } else { text })
    }

    /// The id of a token written as the vocabulary writes it (`Ġthe`, `<|im_end|>`).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The vocabulary's spelling of an id, `None` past the vocabulary.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Number of ids, added tokens included (`len(tokenizer)` in
    /// transformers): what an embedding matrix must cover.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The named special tokens (strings and ids).
    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.special
    }

    /// The end-of-sequence id: generation stops on it, TRL appends it.
    pub fn eos_token_id(&self) -> Option<u32> {
        self.special.eos.as_ref().map(|(_, id)| *id)
    }

    /// The beginning-of-sequence id.
    pub fn bos_token_id(&self) -> Option<u32> {
        self.special.bos.as_ref().map(|(_, id)| *id)
    }

    /// The padding id, used to fill batches.
    pub fn pad_token_id(&self) -> Option<u32> {
        self.special.pad.as_ref().map(|(_, id)| *id)
    }

    /// The end-of-sequence string, which TRL appends to plain-text completions.
    pub fn eos_token(&self) -> Option<&str> {
        self.special.eos.as_ref().map(|(token, _)| token.as_str())
    }

    /// The chat template that came with the tokenizer, if any.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// The wrapped `tokenizers` tokenizer, for offsets or batch encoding.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

/// Adds the named special tokens transformers adds in `TokenizersBackend.__init__`:
/// those whose text is not already an added token.
fn add_missing_specials(inner: &mut tokenizers::Tokenizer, tokens: impl IntoIterator<Item = AddedToken>) -> Result<()> {
    let present = inner.get_added_tokens_decoder();
    let mut missing: Vec<AddedToken> = Vec::new();
    for token in tokens {
        let known = present.values().any(|added| added.content == token.content)
            || missing.iter().any(|added| added.content == token.content);
        if !known {
            missing.push(token);
        }
    }
    inner.add_tokens(missing).map_err(build_error("special tokens"))?;
    Ok(())
}

/// transformers' `update_post_processor`: `bos $A eos` with each part optional.
fn bos_eos_template(special: &SpecialTokens, add_bos: bool, add_eos: bool) -> Result<TemplateProcessing> {
    let bos = special.bos.as_ref().filter(|_| add_bos);
    let eos = special.eos.as_ref().filter(|_| add_eos);
    let mut single = String::new();
    let mut pair_tail = String::new();
    if let Some((token, _)) = bos {
        single.push_str(&format!("{token}:0 "));
        pair_tail.push_str(&format!(" {token}:1"));
    }
    single.push_str("$A:0");
    pair_tail.push_str(" $B:1");
    if let Some((token, _)) = eos {
        single.push_str(&format!(" {token}:0"));
        pair_tail.push_str(&format!(" {token}:1"));
    }
    let pair = format!("{single}{pair_tail}");
    let tokens: Vec<(String, u32)> = bos.into_iter().chain(eos).cloned().collect();
    let template_error = |message: String| TokenizerError::Build { stage: "post-processor", message };
    TemplateProcessing::builder()
        .try_single(single.as_str())
        .map_err(template_error)?
        .try_pair(pair.as_str())
        .map_err(template_error)?
        .special_tokens(tokens)
        .build()
        .map_err(|error| template_error(error.to_string()))
}

/// transformers' `clean_up_tokenization`, for WordPiece-style vocabularies.
fn clean_up_tokenization(text: &str) -> String {
    [
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ]
    .iter()
    .fold(text.to_string(), |text, (from, to)| text.replace(from, to))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_up_matches_transformers_replacements() {
        assert_eq!(clean_up_tokenization("a , b . c ' d do n't I 'm"), "a, b. c'd don't I'm");
    }
}
