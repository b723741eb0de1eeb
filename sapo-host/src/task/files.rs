//! The shipped files: datasets in TRL's conversational JSONL, the tokenizer,
//! and the base model's config, all built in memory so a test can compare
//! them with `fixtures/task/` byte for byte.

use anyhow::Context;
use serde::Serialize;

use super::tokenizer::{tokenizer_config_json, train_tokenizer};
use super::{TaskExample, generate_examples};
use crate::chat_template::Message;

/// What [`task_files`] builds. The default is what `fixtures/task/` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskConfig {
    /// Seed of [`generate_examples`]. Default: 42.
    pub seed: u64,
    /// Examples in `train.jsonl` and `sft.jsonl` (the same prompts). Default: 3000.
    pub n_train: usize,
    /// Held-out examples in `eval.jsonl`, sharing no prompt with train. Default: 300.
    pub n_eval: usize,
}

impl Default for TaskConfig {
    fn default() -> Self {
        Self { seed: 42, n_train: 3000, n_eval: 300 }
    }
}

/// One output file: where it goes under the output directory, and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFile {
    /// Path relative to the output directory, `/`-separated (`data/train.jsonl`).
    pub path: &'static str,
    /// The file's contents.
    pub bytes: Vec<u8>,
}

/// Which TRL record shape [`write_jsonl`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonlShape {
    /// `{"prompt":[user],"chosen":[assistant],"rejected":[assistant]}`: DPO and
    /// the other pairwise methods; SAPO and SPIN read `prompt` and `chosen`.
    Preference,
    /// `{"prompt":[user],"completion":[assistant]}`: SFT, trained on the completion only.
    Sft,
}

#[derive(Serialize)]
struct PreferenceRecord {
    prompt: [Message; 1],
    chosen: [Message; 1],
    rejected: [Message; 1],
}

#[derive(Serialize)]
struct SftRecord {
    prompt: [Message; 1],
    completion: [Message; 1],
}

/// The examples as TRL "conversational" JSON Lines: one compact object per
/// line, keys in TRL's order, each line ending in `\n`.
///
/// ```
/// use sapo_host::task::{JsonlShape, generate_examples, write_jsonl};
/// let text = write_jsonl(&generate_examples(3, 1), JsonlShape::Sft);
/// assert!(text.starts_with(r#"{"prompt":[{"role":"user","content":"What is "#));
/// ```
pub fn write_jsonl(examples: &[TaskExample], shape: JsonlShape) -> String {
    let mut text = String::new();
    for example in examples {
        let prompt = [Message::new("user", example.prompt.as_str())];
        let answer = [Message::new("assistant", example.answer.as_str())];
        // Serialising structs of strings cannot fail.
        let line = match shape {
            JsonlShape::Preference => serde_json::to_string(&PreferenceRecord {
                prompt,
                chosen: answer,
                rejected: [Message::new("assistant", example.rejected.as_str())],
            }),
            JsonlShape::Sft => serde_json::to_string(&SftRecord { prompt, completion: answer }),
        }
        .expect("a record serialises");
        text.push_str(&line);
        text.push('\n');
    }
    text
}

/// `config.json` of the base model, in the Hugging Face field names.
#[derive(Serialize)]
struct BaseConfig {
    architectures: [&'static str; 1],
    model_type: &'static str,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: usize,
    head_dim: usize,
    rope_theta: f64,
    rms_norm_eps: f64,
    tie_word_embeddings: bool,
    attention_bias: bool,
    hidden_act: &'static str,
    max_position_embeddings: usize,
    initializer_range: f64,
    bos_token_id: Option<u32>,
    eos_token_id: u32,
    pad_token_id: u32,
    torch_dtype: &'static str,
}

/// Longest sequence the base model is built for; task examples are ~30 tokens.
const MAX_POSITION_EMBEDDINGS: usize = 256;

/// The base model's `config.json`: a LLaMA of 4 layers, width 128, 4 query
/// and 2 key/value heads of 32, tied embeddings over the task tokenizer's
/// 512 ids; f32, ~0.66 M parameters, so SFT on the task runs in minutes on a
/// CPU. No weights come with it: the trainer initialises them from
/// `initializer_range`. Ids match the tokenizer: EOS `<|im_end|>` = 2,
/// padding `<|endoftext|>` = 0, no BOS.
pub fn base_config_json() -> String {
    let config = BaseConfig {
        architectures: ["LlamaForCausalLM"],
        model_type: "llama",
        vocab_size: 512,
        hidden_size: 128,
        intermediate_size: 256,
        num_hidden_layers: 4,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: 32,
        rope_theta: 10_000.0,
        rms_norm_eps: 1e-5,
        tie_word_embeddings: true,
        attention_bias: false,
        hidden_act: "silu",
        max_position_embeddings: MAX_POSITION_EMBEDDINGS,
        initializer_range: 0.02,
        bos_token_id: None,
        eos_token_id: 2,
        pad_token_id: 0,
        torch_dtype: "float32",
    };
    // Serialising a struct of numbers and strings cannot fail.
    serde_json::to_string_pretty(&config).expect("config serialises") + "\n"
}

/// `generation_config.json`: generation stops on `<|im_end|>` and pads with `<|endoftext|>`.
pub fn generation_config_json() -> String {
    "{\n  \"eos_token_id\": 2,\n  \"pad_token_id\": 0\n}\n".to_string()
}

/// Every file of the task directory, in memory: `data/train.jsonl`,
/// `data/sft.jsonl`, `data/eval.jsonl` (train and eval cut from one
/// [`generate_examples`] call, so they share no prompt), and in `base/` the
/// tokenizer trained on the train split, its config, and the model configs.
///
/// # Errors
/// If tokenizer training or serialisation fails.
pub fn task_files(config: &TaskConfig) -> anyhow::Result<Vec<TaskFile>> {
    let mut train = generate_examples(config.seed, config.n_train + config.n_eval);
    let eval = train.split_off(config.n_train);
    let tokenizer = train_tokenizer(&train)?;
    let tokenizer_json =
        tokenizer.to_string(true).map_err(anyhow::Error::msg).context("serialising the trained tokenizer")?;
    let text_file = |path: &'static str, text: String| TaskFile { path, bytes: text.into_bytes() };
    Ok(vec![
        text_file("data/train.jsonl", write_jsonl(&train, JsonlShape::Preference)),
        text_file("data/sft.jsonl", write_jsonl(&train, JsonlShape::Sft)),
        text_file("data/eval.jsonl", write_jsonl(&eval, JsonlShape::Preference)),
        text_file("base/tokenizer.json", tokenizer_json),
        text_file("base/tokenizer_config.json", tokenizer_config_json(MAX_POSITION_EMBEDDINGS)),
        text_file("base/config.json", base_config_json()),
        text_file("base/generation_config.json", generation_config_json()),
    ])
}
