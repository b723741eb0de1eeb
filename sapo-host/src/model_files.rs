//! Opening a model the user points at — a Hugging Face directory or a
//! `.gguf` file — into everything generation and training need: the
//! architecture, the weights on a backend, the tokenizer and its chat
//! template, and the ids that end a sequence.

use std::path::Path;

use anyhow::{Context, Result, bail};
use sapo_core::cpu::CpuBackend;
use sapo_core::model::{LlamaConfig, LlamaParams};

use crate::chat_template::ChatTemplate;
use crate::tokenizer::Tokenizer;
use crate::{gguf, hf};

/// A model ready to run on the CPU backend.
#[derive(Debug)]
pub struct LoadedModel {
    /// The architecture.
    pub config: LlamaConfig,
    /// The weights.
    pub params: LlamaParams<CpuBackend>,
    /// The tokenizer.
    pub tokenizer: Tokenizer,
    /// The chat template, if the model has one.
    pub chat_template: Option<ChatTemplate>,
    /// Token ids that end a generated sequence.
    pub eos_ids: Vec<u32>,
}

/// Loads `path`: a `.gguf` file, or a directory with `config.json`,
/// safetensors weights and `tokenizer.json`.
///
/// # Errors
/// A missing or malformed file, named with its path.
pub fn load(backend: &CpuBackend, path: &Path) -> Result<LoadedModel> {
    if path.is_dir() {
        load_hf(backend, path)
    } else if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) {
        load_gguf(backend, path)
    } else if !path.exists() {
        bail!("{}: no such file or directory", path.display())
    } else {
        bail!("{}: neither a Hugging Face model directory nor a .gguf file", path.display())
    }
}

fn load_hf(backend: &CpuBackend, dir: &Path) -> Result<LoadedModel> {
    let config = hf::read_config(dir)?;
    let params = hf::load_params(backend, dir, &config.model)?;
    let tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
        .with_context(|| format!("{}: reading the tokenizer", dir.display()))?;
    let chat_template = ChatTemplate::from_tokenizer(&tokenizer).ok();
    let mut eos_ids = config.eos_token_ids.clone();
    eos_ids.extend(tokenizer.eos_token_id().filter(|id| !config.eos_token_ids.contains(id)));
    Ok(LoadedModel { config: config.model, params, tokenizer, chat_template, eos_ids })
}

fn load_gguf(backend: &CpuBackend, path: &Path) -> Result<LoadedModel> {
    let file = gguf::GgufFile::open(path)?;
    let config = gguf::llama::config(&file)?;
    let params = gguf::llama::load_params(backend, &file, &config).with_context(|| format!("{}", path.display()))?;
    let parts = gguf::tokenizer_parts(&file)?;
    let tokenizer =
        Tokenizer::from_gguf_parts(&parts).with_context(|| format!("{}: building the tokenizer", path.display()))?;
    let chat_template = ChatTemplate::from_tokenizer(&tokenizer).ok();
    let eos_ids = tokenizer.eos_token_id().into_iter().collect();
    Ok(LoadedModel { config, params, tokenizer, chat_template, eos_ids })
}
