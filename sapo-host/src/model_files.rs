//! Opening a model the user points at — a Hugging Face directory or a
//! `.gguf` file — into everything generation and training need: the
//! architecture, the weights on a backend, the tokenizer and its chat
//! template, and the ids that end a sequence.

use std::path::Path;

use anyhow::{Context, Result, bail};
use sapo_core::backend::Backend;
use sapo_core::cpu::CpuBackend;
use sapo_core::model::{LlamaConfig, LlamaParams};

use crate::chat_template::ChatTemplate;
use crate::tokenizer::Tokenizer;
use crate::{gguf, hf};

/// A model ready to run: its weights on a backend (the CPU, where loading
/// puts them; [`LoadedModel::into_backend`] moves them to another).
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

impl LoadedModel<CpuBackend> {
    /// The same model with its weights copied to `backend` (the CPU copy is
    /// freed).
    ///
    /// # Errors
    /// An allocation or copy error on `backend`.
    pub fn into_backend<B: Backend>(self, cpu: &CpuBackend, backend: &B) -> Result<LoadedModel<B>>
    where
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let mut params = LlamaParams::zeros(backend, &self.config)?;
        for (destination, source) in params.tensors_mut().into_iter().zip(self.params.tensors()) {
            backend.write(destination, &cpu.download(source)?)?;
        }
        Ok(LoadedModel {
            config: self.config,
            hf_config: self.hf_config,
            params,
            tokenizer: self.tokenizer,
            chat_template: self.chat_template,
            eos_ids: self.eos_ids,
        })
    }
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
pub fn load_with(backend: &CpuBackend, path: &Path, weights: Weights) -> Result<LoadedModel> {
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

fn random_params(backend: &CpuBackend, config: &LlamaConfig, seed: u64, std: f64) -> Result<LlamaParams<CpuBackend>> {
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

fn load_hf(backend: &CpuBackend, dir: &Path) -> Result<LoadedModel> {
    load_hf_with(dir, |config| Ok(hf::load_params(backend, dir, config)?))
}

fn load_hf_with(
    dir: &Path,
    params: impl FnOnce(&LlamaConfig) -> Result<LlamaParams<CpuBackend>>,
) -> Result<LoadedModel> {
    let config = hf::read_config(dir)?;
    let params = params(&config.model)?;
    let tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
        .with_context(|| format!("{}: reading the tokenizer", dir.display()))?;
    let chat_template = ChatTemplate::from_tokenizer(&tokenizer).ok();
    let mut eos_ids = config.eos_token_ids.clone();
    eos_ids.extend(tokenizer.eos_token_id().filter(|id| !config.eos_token_ids.contains(id)));
    Ok(LoadedModel { config: config.model, hf_config: config, params, tokenizer, chat_template, eos_ids })
}

fn load_gguf(backend: &CpuBackend, path: &Path) -> Result<LoadedModel> {
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
