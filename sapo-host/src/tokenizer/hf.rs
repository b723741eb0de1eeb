//! A Hugging Face tokenizer directory as transformers 5 loads it:
//! `tokenizer.json`, `tokenizer_config.json`, `chat_template.jinja`.

use std::path::Path;

use serde_json::Value;
use tokenizers::AddedToken;

use super::{Result, SpecialTokens, Tokenizer, TokenizerError, add_missing_specials, bos_eos_template, build_error};

impl Tokenizer {
    /// Loads a Hugging Face tokenizer: `tokenizer.json` as serialised, plus
    /// what transformers 5 takes from `tokenizer_config.json` and
    /// `chat_template.jinja` in the same directory when they exist.
    ///
    /// From the config: `added_tokens_decoder` entries and the named special
    /// tokens (`bos_token`, `eos_token`, `unk_token`, `sep_token`, `pad_token`,
    /// `cls_token`, `mask_token`, `additional_special_tokens` /
    /// `extra_special_tokens`) are added as transformers adds them;
    /// `clean_up_tokenization_spaces` applies to non-BPE models only; the chat
    /// template comes from `chat_template.jinja`, else the config's
    /// `chat_template` (a string, or the `default` entry of a list).
    /// `add_bos_token` / `add_eos_token` in the config are **ignored**, as
    /// transformers 5 ignores them whenever a `tokenizer.json` exists: its
    /// post-processor alone decides what `add_special_tokens` adds.
    pub fn from_file(tokenizer_json: impl AsRef<Path>) -> Result<Self> {
        let path = tokenizer_json.as_ref();
        let bytes = std::fs::read(path).map_err(|source| TokenizerError::Io { path: path.to_path_buf(), source })?;
        let mut inner = tokenizers::Tokenizer::from_bytes(&bytes)
            .map_err(|error| TokenizerError::BadFile { path: path.to_path_buf(), message: error.to_string() })?;
        let directory = path.parent().unwrap_or(Path::new("."));
        let config_path = directory.join("tokenizer_config.json");
        let config = read_optional(&config_path)?
            .map(|text| {
                serde_json::from_str::<Value>(&text)
                    .map_err(|error| TokenizerError::BadFile { path: config_path.clone(), message: error.to_string() })
            })
            .transpose()?
            .unwrap_or(Value::Null);
        let bad_config = |message: String| TokenizerError::BadFile { path: config_path.clone(), message };

        if let Some(decoder) = config.get("added_tokens_decoder").and_then(Value::as_object) {
            let mut entries = Vec::with_capacity(decoder.len());
            for (id, token) in decoder {
                let id: u64 =
                    id.parse().map_err(|_| bad_config(format!("added_tokens_decoder key `{id}` is not an id")))?;
                entries.push((id, added_token(token, false).map_err(&bad_config)?));
            }
            entries.sort_by_key(|(id, _)| *id);
            inner.add_tokens(entries.into_iter().map(|(_, token)| token)).map_err(build_error("added tokens"))?;
        }
        let mut named = Vec::new();
        for key in ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"] {
            if let Some(value) = config.get(key).filter(|value| !value.is_null()) {
                named.push(added_token(value, true).map_err(|message| bad_config(format!("{key}: {message}")))?);
            }
        }
        for key in ["additional_special_tokens", "extra_special_tokens"] {
            let values: Vec<&Value> = match config.get(key) {
                Some(Value::Array(values)) => values.iter().collect(),
                Some(Value::Object(values)) => values.values().collect(),
                _ => Vec::new(),
            };
            for value in values {
                named.push(added_token(value, true).map_err(|message| bad_config(format!("{key}: {message}")))?);
            }
        }
        add_missing_specials(&mut inner, named)?;

        let token_of = |key: &str| -> Option<(String, u32)> {
            let content = match config.get(key)? {
                Value::String(content) => content.clone(),
                Value::Object(fields) => fields.get("content")?.as_str()?.to_string(),
                _ => return None,
            };
            let id = inner.token_to_id(&content)?;
            Some((content, id))
        };
        let special = SpecialTokens {
            bos: token_of("bos_token"),
            eos: token_of("eos_token"),
            unk: token_of("unk_token"),
            pad: token_of("pad_token"),
        };
        if inner.get_post_processor().is_none() {
            inner.with_post_processor(Some(bos_eos_template(&special, false, false)?));
        }
        let is_bpe = matches!(inner.get_model(), tokenizers::models::ModelWrapper::BPE(_));
        let flag = |key: &str| config.get(key).and_then(Value::as_bool).unwrap_or(false);
        let clean_up_spaces = flag("clean_up_tokenization_spaces")
            && (!is_bpe || flag("clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output"));
        let chat_template = match read_optional(&directory.join("chat_template.jinja"))? {
            Some(template) => Some(template),
            None => match config.get("chat_template") {
                Some(Value::String(template)) => Some(template.clone()),
                Some(Value::Array(named_templates)) => named_templates
                    .iter()
                    .find(|entry| entry.get("name").and_then(Value::as_str) == Some("default"))
                    .and_then(|entry| entry.get("template")?.as_str().map(str::to_string)),
                _ => None,
            },
        };
        Ok(Self { inner, special, chat_template, clean_up_spaces })
    }
}

/// An added token from a config value: a string, or an `AddedToken` object
/// with `content` and optional flags.
fn added_token(value: &Value, special_default: bool) -> std::result::Result<AddedToken, String> {
    match value {
        Value::String(content) => Ok(AddedToken::from(content.clone(), special_default)),
        Value::Object(fields) => {
            let content = fields.get("content").and_then(Value::as_str).ok_or("token object without `content`")?;
            let flag = |key: &str, default: bool| fields.get(key).and_then(Value::as_bool).unwrap_or(default);
            let special = flag("special", special_default);
            Ok(AddedToken::from(content.to_string(), special)
                .normalized(flag("normalized", !special))
                .lstrip(flag("lstrip", false))
                .rstrip(flag("rstrip", false))
                .single_word(flag("single_word", false)))
        }
        other => Err(format!("expected a token string or object, got {other}")),
    }
}

fn read_optional(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(TokenizerError::Io { path: path.to_path_buf(), source }),
    }
}

impl Tokenizer {
    /// Writes the tokenizer as a Hugging Face directory holds it — the files
    /// [`Tokenizer::from_file`] and transformers read back:
    /// `tokenizer.json` (the `tokenizers` serialisation, post-processor
    /// included), `tokenizer_config.json` (the named special tokens and
    /// `added_tokens_decoder`) and, when there is one, `chat_template.jinja`.
    /// Each file is written to a temporary name and renamed.
    ///
    /// # Errors
    /// [`TokenizerError::Io`] naming the file, or [`TokenizerError::Build`]
    /// if the tokenizer cannot be serialised.
    pub fn save_pretrained(&self, dir: &Path) -> Result<()> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| TokenizerError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let json = self.inner.to_string(true).map_err(build_error("serialising tokenizer.json"))?;
        let mut decoder: Vec<(u32, AddedToken)> = self.inner.get_added_tokens_decoder().into_iter().collect();
        decoder.sort_by_key(|(id, _)| *id);
        let added: serde_json::Map<String, Value> = decoder
            .into_iter()
            .map(|(id, token)| {
                let entry = serde_json::json!({
                    "content": token.content,
                    "lstrip": token.lstrip,
                    "normalized": token.normalized,
                    "rstrip": token.rstrip,
                    "single_word": token.single_word,
                    "special": token.special,
                });
                (id.to_string(), entry)
            })
            .collect();
        let name =
            |token: &Option<(String, u32)>| token.as_ref().map_or(Value::Null, |(text, _)| Value::from(text.as_str()));
        let config = serde_json::json!({
            "added_tokens_decoder": added,
            "bos_token": name(&self.special.bos),
            "eos_token": name(&self.special.eos),
            "pad_token": name(&self.special.pad),
            "unk_token": name(&self.special.unk),
            "clean_up_tokenization_spaces": self.clean_up_spaces,
            "tokenizer_class": "PreTrainedTokenizerFast",
        });
        let mut config_text = serde_json::to_string_pretty(&config).unwrap_or_default();
        config_text.push('\n');
        let files: [(&str, Option<String>); 3] = [
            ("tokenizer.json", Some(json)),
            ("tokenizer_config.json", Some(config_text)),
            ("chat_template.jinja", self.chat_template.clone()),
        ];
        for (file, text) in files {
            if let Some(text) = text {
                crate::atomic_file::write_atomically(&dir.join(file), text.as_bytes())
                    .map_err(|error| TokenizerError::BadFile { path: dir.join(file), message: error.to_string() })?;
            }
        }
        Ok(())
    }
}
