//! Datasets in TRL's shapes, tokenised exactly as TRL 1.16 tokenises them.
//!
//! # Shapes ([`DatasetKind`])
//!
//! | kind | fields | methods |
//! |---|---|---|
//! | `Preference` | `prompt`, `chosen`, `rejected` (or implicit prompt: `chosen` and `rejected` only) | DPO, IPO, hinge, ORPO |
//! | `PromptChosen` | `prompt`, `chosen`, optional `rejected` | SAPO, SPIN |
//! | `PromptOnly` | `prompt` (other fields ignored) | SPPO, AIPO |
//! | `Sft` | `prompt` + `completion`, or `messages`, or `text` | SFT |
//!
//! Each field is a string (TRL's "standard" form) or a list of
//! `{"role", "content"}` messages ("conversational"); one record uses one
//! form, and so does one file. A row may carry `tools` and
//! `chat_template_kwargs`, passed to the chat template as TRL passes them.
//! JSON `null` counts as absent. Files: `.jsonl` (one object per line, blank
//! lines ignored) or `.json` (an array, or JSON Lines).
//!
//! # Tokenisation (TRL's `_prepare_dataset`)
//!
//! * Conversational: the prompt is rendered with `add_generation_prompt=True`
//!   and each prompt + response conversation without it, all encoded without
//!   special tokens (the template writes them).
//! * Standard: the EOS text is appended to every response that does not end
//!   with it; the prompt and each prompt + response string are encoded with
//!   special tokens (a BOS where the tokenizer's post-processor adds one).
//! * The prompt ids are the longest common prefix of the prompt's ids and
//!   every prompt + response's ids; each response is the rest. TRL does not
//!   compare texts: where the prompt's last tokens merge with the response's
//!   first (a prompt ending in a space), those prompt tokens are dropped.
//! * Implicit prompts: TRL's `extract_prompt` (longest common prefix of
//!   chosen and rejected, by character or by message).
//! * SFT `messages` / `text`: the whole sequence is the response (TRL trains
//!   on every token); `prompt` + `completion` split as above.
//!
//! The loader does not cut long examples: [`Truncation::apply`] does that per
//! sequence, as TRL's collator does, and SAPO needs the uncut chosen length.
//! It rejects what TRL would silently drop (a prompt leaving no room under
//! `KeepStart`).
//!
//! # Bad data
//!
//! Invalid JSON, a missing field, a wrong type, a bad message, an empty
//! response, forms mixed within a record or across the file, a prompt too
//! long, or a template error is a [`DataError::Invalid`] naming the file,
//! line and field. With [`LoadOptions::skip_invalid`] such records are
//! skipped instead and listed in [`Dataset::skipped`] with their reasons;
//! [`Dataset::skip_summary`] counts them. Nothing is dropped silently.
//! Differences from TRL, all on data TRL accepts: empty responses and
//! messages with keys other than `role`/`content` are refused.
//!
//! ```
//! use sapo_host::data::{DatasetKind, DatasetLoader, FileFormat, LoadOptions};
//! use sapo_host::tokenizer::{BpeParts, Tokenizer};
//! let mut tokens: Vec<String> = vec!["</s>".into()];
//! tokens.extend(sapo_host::tokenizer::byte_alphabet().iter().map(|c| c.to_string()));
//! let parts = BpeParts {
//!     model: "gpt2".into(),
//!     token_types: std::iter::once(3).chain(std::iter::repeat(1)).take(tokens.len()).collect(),
//!     tokens,
//!     eos_token_id: Some(0),
//!     ..BpeParts::default()
//! };
//! let tokenizer = Tokenizer::from_bpe_parts(&parts)?;
//! let loader = DatasetLoader::new(&tokenizer, None, LoadOptions::new(DatasetKind::Preference))?;
//! let text = r#"{"prompt": "Q", "chosen": "a", "rejected": "b"}"#;
//! let dataset = loader.load_str("pairs.jsonl".as_ref(), text.as_bytes(), FileFormat::JsonLines)?;
//! let example = &dataset.examples[0];
//! assert_eq!(example.prompt_ids, vec![82]); // "Q" is byte 81, id 81 + 1
//! assert_eq!(example.chosen_ids, Some(vec![98, 0])); // "a" then EOS
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod record;
mod source;
mod tokenize;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use source::FileFormat;
pub use tokenize::Truncation;

use crate::chat_template::ChatTemplate;
use crate::tokenizer::Tokenizer;

/// Which fields a method needs; see the module table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetKind {
    /// `prompt`, `chosen`, `rejected` (DPO, IPO, hinge, ORPO).
    Preference,
    /// `prompt`, `chosen`, optional `rejected` (SAPO, SPIN generate the rejected).
    PromptChosen,
    /// `prompt` only (SPPO, AIPO generate and rank responses).
    PromptOnly,
    /// `prompt` + `completion`, `messages`, or `text` (SFT).
    Sft,
}

/// How a dataset is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// The shape to expect.
    pub kind: DatasetKind,
    /// The cut trainers will apply; `KeepStart` makes prompts that leave no
    /// room for a response invalid. Default: none.
    pub truncation: Truncation,
    /// Skip invalid records (counted, with reasons) instead of failing on the
    /// first. Default: false.
    pub skip_invalid: bool,
}

impl LoadOptions {
    /// Options for `kind` with no truncation, failing on the first bad record.
    pub fn new(kind: DatasetKind) -> Self {
        Self { kind, truncation: Truncation::None, skip_invalid: false }
    }
}

/// Why one record is unusable. The message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The line (or array element) is not JSON.
    #[error("not valid JSON: {message}")]
    NotJson {
        /// The parser's message.
        message: String,
    },
    /// The record is JSON but not an object.
    #[error("expected a JSON object, got {got}")]
    NotObject {
        /// The JSON type found.
        got: &'static str,
    },
    /// A required field is absent or null.
    #[error("missing field `{field}`")]
    MissingField {
        /// The field.
        field: &'static str,
    },
    /// A field has the wrong JSON type.
    #[error("field `{field}`: expected {expected}, got {got}")]
    WrongType {
        /// The field.
        field: &'static str,
        /// What TRL accepts there.
        expected: &'static str,
        /// The JSON type found.
        got: &'static str,
    },
    /// A message of a conversation is malformed.
    #[error("field `{field}`: message {position}: {detail}")]
    BadMessage {
        /// The field.
        field: &'static str,
        /// 0-based position of the message.
        position: usize,
        /// What is wrong with it.
        detail: String,
    },
    /// A conversation field is an empty list.
    #[error("field `{field}`: empty conversation")]
    EmptyConversation {
        /// The field.
        field: &'static str,
    },
    /// A response is empty text (or only empty messages): nothing to learn.
    #[error("field `{field}`: empty response")]
    EmptyResponse {
        /// The field.
        field: &'static str,
    },
    /// Fields of one record mix strings and message lists.
    #[error("fields mix plain text and conversations")]
    MixedForms,
    /// The record's form differs from the file's first record's.
    #[error("record is {found} but the file's first record is {first}")]
    FormChanged {
        /// This record's form.
        found: &'static str,
        /// The first record's form.
        first: &'static str,
    },
    /// No implicit prompt: chosen and rejected share no leading part.
    #[error(
        "fields `chosen` and `rejected`: no shared leading part to use as the implicit prompt (and no `prompt` field)"
    )]
    NoImplicitPrompt,
    /// The prompt leaves no room for the response under `KeepStart`.
    #[error(
        "field `prompt`: {n_tokens} tokens leave no room for a response under max_length {max_length} (TRL drops such examples silently)"
    )]
    PromptTooLong {
        /// Prompt length in tokens.
        n_tokens: usize,
        /// The limit.
        max_length: usize,
    },
    /// The chat template failed on this record.
    #[error("field `{field}`: {message}")]
    Template {
        /// The field whose rendering failed.
        field: &'static str,
        /// The template error.
        message: String,
    },
    /// The tokenizer failed on this record.
    #[error("field `{field}`: tokenizer: {message}")]
    Tokenizer {
        /// The field.
        field: &'static str,
        /// The tokenizer error.
        message: String,
    },
    /// A response has no tokens left after the shared prompt.
    #[error("field `{field}`: no response tokens after the prompt")]
    NoResponseTokens {
        /// The field.
        field: &'static str,
    },
}

impl Problem {
    /// A short name of the kind of problem, for counting skips.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Problem::NotJson { .. } => "not JSON",
            Problem::NotObject { .. } => "not an object",
            Problem::MissingField { .. } => "missing field",
            Problem::WrongType { .. } => "wrong type",
            Problem::BadMessage { .. } => "bad message",
            Problem::EmptyConversation { .. } => "empty conversation",
            Problem::EmptyResponse { .. } => "empty response",
            Problem::MixedForms | Problem::FormChanged { .. } => "mixed forms",
            Problem::NoImplicitPrompt => "no implicit prompt",
            Problem::PromptTooLong { .. } => "prompt too long",
            Problem::Template { .. } => "chat template error",
            Problem::Tokenizer { .. } => "tokenizer error",
            Problem::NoResponseTokens { .. } => "no response tokens",
        }
    }
}

/// Why a dataset could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The extension is neither `.jsonl` nor `.json`.
    #[error("{path}: expected a .jsonl or .json file")]
    UnsupportedFile {
        /// The file.
        path: PathBuf,
    },
    /// A `.json` array file does not parse, so its records cannot be told apart.
    #[error("{path}: not a JSON array of records: {message}")]
    NotJsonArray {
        /// The file.
        path: PathBuf,
        /// The parser's message (with line and column).
        message: String,
    },
    /// A record is unusable (and `skip_invalid` is off).
    #[error("{path}:{line}: {problem}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line where the record starts.
        line: usize,
        /// What is wrong, naming the field.
        problem: Problem,
    },
    /// The options cannot work (a zero `max_length`, `max_prompt_length` not below it).
    #[error("invalid dataset options: {message}")]
    Options {
        /// What is wrong.
        message: String,
    },
    /// Loading cannot go on: the tokenizer or template is unfit for the data.
    #[error("{path}: {message}")]
    Setup {
        /// The file.
        path: PathBuf,
        /// What is missing.
        message: String,
    },
    /// No usable record.
    #[error("{path}: no usable examples ({summary})")]
    NoExamples {
        /// The file.
        path: PathBuf,
        /// How many records there were and why they were skipped.
        summary: String,
    },
}

/// One tokenised example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// 1-based line where the record starts in its file.
    pub line: usize,
    /// 0-based position among the file's records (skipped ones included).
    pub index: usize,
    /// Prompt ids (empty for SFT `messages` / `text`).
    pub prompt_ids: Vec<u32>,
    /// Chosen (or SFT completion / whole sequence) ids; `None` for prompt-only data.
    pub chosen_ids: Option<Vec<u32>>,
    /// Rejected ids, when the record has a rejected response.
    pub rejected_ids: Option<Vec<u32>>,
}

/// A skipped record and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// 1-based line where the record starts.
    pub line: usize,
    /// 0-based position among the file's records.
    pub index: usize,
    /// What is wrong with it.
    pub problem: Problem,
}

/// Whether a file's records are plain text or conversations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// Strings.
    Standard,
    /// Lists of messages, rendered with the chat template.
    Conversational,
}

impl Form {
    fn name(self) -> &'static str {
        match self {
            Form::Standard => "plain text",
            Form::Conversational => "conversational",
        }
    }
}

/// A loaded dataset.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The file it came from.
    pub path: PathBuf,
    /// The records' form.
    pub form: Form,
    /// Usable examples, in file order.
    pub examples: Vec<Example>,
    /// Records skipped under `skip_invalid`, in file order.
    pub skipped: Vec<Skipped>,
    /// Records in the file (blank lines excluded).
    pub n_records: usize,
}

impl Dataset {
    /// One line for logs: how many records were skipped and why, e.g.
    /// `skipped 3 of 120 records: missing field ×2, empty response ×1 (first: line 7: missing field `chosen`)`.
    pub fn skip_summary(&self) -> String {
        summary(&self.skipped, self.n_records)
    }
}

fn summary(skipped: &[Skipped], n_records: usize) -> String {
    if skipped.is_empty() {
        return format!("skipped 0 of {n_records} records");
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for skip in skipped {
        *counts.entry(skip.problem.kind_name()).or_default() += 1;
    }
    let counts: Vec<String> = counts.iter().map(|(kind, count)| format!("{kind} ×{count}")).collect();
    format!(
        "skipped {} of {n_records} records: {} (first: line {}: {})",
        skipped.len(),
        counts.join(", "),
        skipped[0].line,
        skipped[0].problem
    )
}

/// Reads datasets with one tokenizer, chat template and set of options.
#[derive(Debug)]
pub struct DatasetLoader<'a> {
    tokenizer: &'a Tokenizer,
    template: Option<&'a ChatTemplate>,
    options: LoadOptions,
}

impl<'a> DatasetLoader<'a> {
    /// A loader; `template` is needed for conversational data only.
    /// Fails on truncation settings that cannot work (a zero `max_length`,
    /// `max_prompt_length` not below `max_length`).
    pub fn new(
        tokenizer: &'a Tokenizer,
        template: Option<&'a ChatTemplate>,
        options: LoadOptions,
    ) -> Result<Self, DataError> {
        let setup = |message: String| DataError::Options { message };
        match options.truncation {
            Truncation::KeepStart { max_length: 0 } | Truncation::KeepEnd { max_length: 0 } => {
                return Err(setup("max_length must be positive".into()));
            }
            Truncation::SapoKeepEndPrompt { max_length, max_prompt_length } if max_prompt_length >= max_length => {
                return Err(setup(format!(
                    "max_prompt_length ({max_prompt_length}) must be below max_length ({max_length})"
                )));
            }
            _ => {}
        }
        Ok(Self { tokenizer, template, options })
    }

    /// Reads and tokenises the `.jsonl` or `.json` file at `path`.
    pub fn load(&self, path: impl AsRef<Path>) -> Result<Dataset, DataError> {
        let path = path.as_ref();
        let format = FileFormat::from_path(path)?;
        let bytes = std::fs::read(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
        self.load_str(path, &bytes, format)
    }

    /// Tokenises file contents already in memory; `path` names them in messages.
    pub fn load_str(&self, path: &Path, bytes: &[u8], format: FileFormat) -> Result<Dataset, DataError> {
        let records = source::read_records(path, bytes, format)?;
        let n_records = records.len();
        let mut examples = Vec::new();
        let mut skipped = Vec::new();
        let mut form: Option<Form> = None;
        for raw in records {
            let (line, index) = (raw.line, raw.index);
            let outcome = raw.value.and_then(|value| record::parse(&value, self.options.kind)).and_then(|record| {
                let record_form = if record.conversational { Form::Conversational } else { Form::Standard };
                if let Some(first) = form.filter(|first| *first != record_form) {
                    return Err(Problem::FormChanged { found: record_form.name(), first: first.name() });
                }
                Ok((record, record_form))
            });
            let outcome = match outcome {
                Ok((record, record_form)) => {
                    self.check_setup(path, record_form, self.options.kind != DatasetKind::PromptOnly)?;
                    let eos = self.tokenizer.eos_token().unwrap_or_default();
                    tokenize::record_ids(&record, self.tokenizer, self.template, eos).and_then(|ids| {
                        self.options.truncation.prompt_fits(ids.prompt_ids.len())?;
                        form.get_or_insert(record_form);
                        Ok(ids)
                    })
                }
                Err(problem) => Err(problem),
            };
            match outcome {
                Ok(ids) => examples.push(example(line, index, ids)),
                Err(problem) if self.options.skip_invalid => skipped.push(Skipped { line, index, problem }),
                Err(problem) => return Err(DataError::Invalid { path: path.to_path_buf(), line, problem }),
            }
        }
        if examples.is_empty() {
            return Err(DataError::NoExamples { path: path.to_path_buf(), summary: summary(&skipped, n_records) });
        }
        let form = form.unwrap_or(Form::Standard);
        Ok(Dataset { path: path.to_path_buf(), form, examples, skipped, n_records })
    }

    /// Conversational data needs a chat template; plain-text responses need
    /// an EOS token to append. Both are setup errors, not bad records, so
    /// they fail the load even under `skip_invalid`.
    fn check_setup(&self, path: &Path, form: Form, has_responses: bool) -> Result<(), DataError> {
        let missing = match form {
            Form::Conversational if self.template.is_none() => "conversational data needs a chat template",
            Form::Standard if has_responses && self.tokenizer.eos_token().is_none() => {
                "plain-text data needs the tokenizer's EOS token (TRL appends it to responses)"
            }
            _ => return Ok(()),
        };
        Err(DataError::Setup { path: path.to_path_buf(), message: missing.to_string() })
    }
}

fn example(line: usize, index: usize, ids: tokenize::RecordIds) -> Example {
    let mut chosen_ids = None;
    let mut rejected_ids = None;
    for (field, response) in ids.responses {
        if field == "rejected" {
            rejected_ids = Some(response);
        } else {
            chosen_ids = Some(response);
        }
    }
    Example { line, index, prompt_ids: ids.prompt_ids, chosen_ids, rejected_ids }
}
