//! Opening a model the user points at — a Hugging Face directory or a
//! `.gguf` file — into everything generation and training need: the
//! architecture, the weights on a backend, the tokenizer and its chat
//! template, and the ids that end a sequence.
//!
//! Models in the formats other tools read and write are handled here
//! (training checkpoints, sapo's own format, are [`crate::train::checkpoint`]):
//!
//! * [`hf`] — the Hugging Face layout: `config.json`, memory-mapped
//!   safetensors (single file or shards), and [`hf::save`] writing a
//!   trained model back in that layout;
//! * [`gguf`] — llama.cpp's GGUF files: the reader, dequantisation, the
//!   LLaMA mapping to Hugging Face names, and the tokenizer metadata;
//! * this module — [`load`] and [`load_with`], which pick one of the two
//!   from the path and add the tokenizer, chat template and EOS ids.

pub mod gguf;
pub mod hf;

use std::path::Path;

use anyhow::{Context, Result, bail};
use sapo_core::backend::Backend;
use sapo_core::cpu::CpuBackend;
use sapo_core::model::{LlamaConfig, LlamaParams};

use crate::chat_template::ChatTemplate;
use crate::tokenizer::Tokenizer;

/// A model ready to run: its weights on the backend it was loaded onto.
#[derive(Debug)]
pub struct LoadedModel<B: Backend = CpuBackend> {
    /// The architecture.
    pub config: LlamaConfig,
    /// What `hf::save` writes as `config.json` (architecture, model type,
    /// special ids).
    pub hf_config: hf::HfConfig,
    /// The weights.
    pub params: LlamaParams<B>,
    /// The tokenizer.
    pub tokenizer: Tokenizer,
    /// The chat template, if the model has one.
    pub chat_template: Option<ChatTemplate>,
    /// Token ids that end a generated sequence.
    pub eos_ids: Vec<u32>,
}

/// The bound every loader needs: a backend whose errors become `anyhow` errors.
pub trait LoadBackend: Backend<Error: std::error::Error + Send + Sync + 'static> {}

impl<B: Backend<Error: std::error::Error + Send + Sync + 'static>> LoadBackend for B {}

/// Loads `path`: a `.gguf` file, or a directory with `config.json`,
/// safetensors weights and `tokenizer.json`.
///
/// # Errors
/// A missing or malformed file, named with its path.
pub fn load<B: LoadBackend>(backend: &B, path: &Path) -> Result<LoadedModel<B>> {
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

/// Where a model's weights come from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Weights {
    /// The file's weights.
    Pretrained,
    /// Fresh weights for a Hugging Face directory holding `config.json` and
    /// a tokenizer but no weights (how a model is trained from scratch):
    /// every matrix Normal(0, `std`) as transformers' `_init_weights`, every
    /// norm 1, drawn from `seed`.
    Random {
        /// Seed of the draw.
        seed: u64,
        /// Standard deviation (`initializer_range`, 0.02 in LLaMA configs).
        std: f64,
    },
}

/// [`load`], or a fresh model of the directory's architecture.
///
/// # Errors
/// As [`load`]; random weights need a Hugging Face directory.
pub fn load_with<B: LoadBackend>(backend: &B, path: &Path, weights: Weights) -> Result<LoadedModel<B>> {
    match weights {
        Weights::Pretrained => load(backend, path),
        Weights::Random { seed, std } => {
            if !path.is_dir() {
                bail!("{}: random initialisation needs a Hugging Face directory with config.json", path.display());
            }
            load_hf_with(path, |config| random_params(backend, config, seed, std))
        }
    }
}

fn random_params<B: LoadBackend>(backend: &B, config: &LlamaConfig, seed: u64, std: f64) -> Result<LlamaParams<B>> {
    let mut rng = sapo_core::rng::SapoRng::from_seed_u64(seed);
    LlamaParams::from_host(backend, config, |spec| -> Result<Vec<f32>> {
        Ok(if spec.name.ends_with("norm.weight") {
            vec![1.0; spec.len()]
        } else if spec.name.ends_with(".bias") {
            vec![0.0; spec.len()]
        } else {
            (0..spec.len()).map(|_| (rng.standard_normal() * std) as f32).collect()
        })
    })
}

fn load_hf<B: LoadBackend>(backend: &B, dir: &Path) -> Result<LoadedModel<B>> {
    load_hf_with(dir, |config| Ok(hf::load_params(backend, dir, config)?))
}

fn load_hf_with<B: LoadBackend>(
    dir: &Path,
    params: impl FnOnce(&LlamaConfig) -> Result<LlamaParams<B>>,
) -> Result<LoadedModel<B>> {
    let config = hf::read_config(dir)?;
    let params = params(&config.model)?;
    let tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
        .with_context(|| format!("{}: reading the tokenizer", dir.display()))?;
    let chat_template = ChatTemplate::from_tokenizer(&tokenizer).ok();
    let mut eos_ids = config.eos_token_ids.clone();
    eos_ids.extend(tokenizer.eos_token_id().filter(|id| !config.eos_token_ids.contains(id)));
    Ok(LoadedModel { config: config.model, hf_config: config, params, tokenizer, chat_template, eos_ids })
}

fn load_gguf<B: LoadBackend>(backend: &B, path: &Path) -> Result<LoadedModel<B>> {
    let file = gguf::GgufFile::open(path)?;
    let config = gguf::llama::config(&file)?;
    let params = gguf::llama::load_params(backend, &file, &config).with_context(|| format!("{}", path.display()))?;
    let parts = gguf::tokenizer_parts(&file)?;
    let tokenizer =
        Tokenizer::from_gguf_parts(&parts).with_context(|| format!("{}: building the tokenizer", path.display()))?;
    let chat_template = ChatTemplate::from_tokenizer(&tokenizer).ok();
    let eos_ids: Vec<u32> = tokenizer.eos_token_id().into_iter().collect();
    let hf_config = hf::HfConfig {
        model: config,
        model_type: "llama".into(),
        bos_token_id: tokenizer.bos_token_id(),
        eos_token_ids: eos_ids.clone(),
    };
    Ok(LoadedModel { config, hf_config, params, tokenizer, chat_template, eos_ids })
}
