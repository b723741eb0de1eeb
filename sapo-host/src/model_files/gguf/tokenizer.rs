//! The tokenizer a GGUF file carries in its `tokenizer.*` metadata, as
//! plain data for whoever builds a tokenizer from it (sapo's
//! `tokenizer` module builds a byte-level BPE from `gpt2` parts).

use super::error::GgufError;
use super::file::GgufFile;
use super::value::GgufArray;

/// The `tokenizer.ggml.*` and `tokenizer.chat_template` metadata of a GGUF
/// file, each field named after the Hugging Face tokenizer setting it feeds.
///
/// ```
/// use sapo_host::model_files::gguf::{GgufFile, tokenizer_parts};
/// let file = GgufFile::open("../fixtures/gguf/tiny_llama.gguf.bin")?;
/// let parts = tokenizer_parts(&file)?;
/// assert_eq!(parts.model, "gpt2");
/// assert_eq!(parts.tokens.len(), 24);
/// assert_eq!(parts.eos_token_id.map(|id| parts.tokens[id as usize].as_str()), Some("</s>"));
/// # Ok::<(), sapo_host::model_files::gguf::GgufError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizerParts {
    /// `tokenizer.ggml.model`: the algorithm. `gpt2` is byte-level BPE
    /// (tokens and merges), `llama` is SentencePiece (tokens and scores);
    /// llama.cpp also writes `bert`, `t5`, `rwkv`, `plamo2` and `none`.
    pub model: String,
    /// `tokenizer.ggml.pre`: the pre-tokenizer (split regex) llama.cpp picks
    /// by name, e.g. `smollm`, `llama-bpe`, `qwen2`; absent in old files.
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`: every token's text, indexed by id. For
    /// `gpt2` these are byte-level strings (`Ġ` for a space).
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.merges`: BPE merges by priority, each `"left right"`;
    /// empty when absent (SentencePiece models have none).
    pub merges: Vec<String>,
    /// `tokenizer.ggml.token_type` per token: 1 normal, 2 unknown,
    /// 3 control, 4 user-defined, 5 unused, 6 byte (llama.cpp's
    /// `llama_token_type`); empty when absent.
    pub token_types: Vec<i32>,
    /// `tokenizer.ggml.scores` per token (SentencePiece log-probabilities);
    /// empty when absent.
    pub scores: Vec<f32>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos_token_id: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos_token_id: Option<u32>,
    /// `tokenizer.ggml.padding_token_id`.
    pub pad_token_id: Option<u32>,
    /// `tokenizer.ggml.unknown_token_id`.
    pub unk_token_id: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`: whether encoding prepends BOS.
    pub add_bos_token: Option<bool>,
    /// `tokenizer.ggml.add_eos_token`: whether encoding appends EOS.
    pub add_eos_token: Option<bool>,
    /// `tokenizer.chat_template`: the Jinja chat template.
    pub chat_template: Option<String>,
}

/// The tokenizer metadata of `file`, checked for consistency: token types
/// and scores have one entry per token, and special token ids name tokens.
///
/// # Errors
/// [`GgufError::MissingMetadata`] without `tokenizer.ggml.model` or
/// `tokenizer.ggml.tokens`; [`GgufError::MetadataType`] for a key of the
/// wrong type, a list of the wrong length, or an id past the token list.
pub fn tokenizer_parts(file: &GgufFile) -> Result<TokenizerParts, GgufError> {
    let model = file.required("tokenizer.ggml.model", file.metadata_str("tokenizer.ggml.model")?)?.to_string();
    let tokens = file.required("tokenizer.ggml.tokens", strings(file, "tokenizer.ggml.tokens")?)?;
    let merges = strings(file, "tokenizer.ggml.merges")?.unwrap_or_default();
    let token_types = token_types(file, tokens.len())?;
    let scores = scores(file, tokens.len())?;
    let token_id = |key: &str| -> Result<Option<u32>, GgufError> {
        match file.metadata_u64(key)?.map(u32::try_from) {
            None => Ok(None),
            Some(Ok(id)) if (id as usize) < tokens.len() => Ok(Some(id)),
            Some(_) => Err(file.wrong_type(key, "a token id below the number of tokens")),
        }
    };
    Ok(TokenizerParts {
        model,
        pre: file.metadata_str("tokenizer.ggml.pre")?.map(str::to_string),
        bos_token_id: token_id("tokenizer.ggml.bos_token_id")?,
        eos_token_id: token_id("tokenizer.ggml.eos_token_id")?,
        pad_token_id: token_id("tokenizer.ggml.padding_token_id")?,
        unk_token_id: token_id("tokenizer.ggml.unknown_token_id")?,
        add_bos_token: file.metadata_bool("tokenizer.ggml.add_bos_token")?,
        add_eos_token: file.metadata_bool("tokenizer.ggml.add_eos_token")?,
        chat_template: file.metadata_str("tokenizer.chat_template")?.map(str::to_string),
        tokens,
        merges,
        token_types,
        scores,
    })
}

/// An array of strings at `key`.
fn strings(file: &GgufFile, key: &str) -> Result<Option<Vec<String>>, GgufError> {
    match file.metadata(key) {
        None => Ok(None),
        Some(value) => match value.as_array() {
            Some(GgufArray::String(strings)) => Ok(Some(strings.clone())),
            _ => Err(file.wrong_type(key, "an ARRAY of STRING")),
        },
    }
}

/// `tokenizer.ggml.token_type`, one integer per token (INT32 as llama.cpp
/// writes it; other integer widths accepted).
fn token_types(file: &GgufFile, n_tokens: usize) -> Result<Vec<i32>, GgufError> {
    const KEY: &str = "tokenizer.ggml.token_type";
    const EXPECTED: &str = "an ARRAY of INT32 with one entry per token";
    let Some(value) = file.metadata(KEY) else { return Ok(Vec::new()) };
    let array = value.as_array().ok_or_else(|| file.wrong_type(KEY, EXPECTED))?;
    let types: Option<Vec<i32>> = match array {
        GgufArray::I32(values) => Some(values.clone()),
        GgufArray::U8(values) => Some(values.iter().map(|&value| value.into()).collect()),
        GgufArray::I8(values) => Some(values.iter().map(|&value| value.into()).collect()),
        GgufArray::U16(values) => Some(values.iter().map(|&value| value.into()).collect()),
        GgufArray::I16(values) => Some(values.iter().map(|&value| value.into()).collect()),
        GgufArray::U32(values) => values.iter().map(|&value| i32::try_from(value).ok()).collect(),
        GgufArray::U64(values) => values.iter().map(|&value| i32::try_from(value).ok()).collect(),
        GgufArray::I64(values) => values.iter().map(|&value| i32::try_from(value).ok()).collect(),
        _ => None,
    };
    types.filter(|types| types.len() == n_tokens).ok_or_else(|| file.wrong_type(KEY, EXPECTED))
}

/// `tokenizer.ggml.scores`, one FLOAT32 per token.
fn scores(file: &GgufFile, n_tokens: usize) -> Result<Vec<f32>, GgufError> {
    const KEY: &str = "tokenizer.ggml.scores";
    match file.metadata(KEY).map(|value| value.as_array()) {
        None => Ok(Vec::new()),
        Some(Some(GgufArray::F32(scores))) if scores.len() == n_tokens => Ok(scores.clone()),
        Some(_) => Err(file.wrong_type(KEY, "an ARRAY of FLOAT32 with one entry per token")),
    }
}
