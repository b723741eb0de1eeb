//! The task's tokenizer: a byte-level BPE trained on the task's own chat
//! text, small enough (512 ids) that the embedding does not dominate a tiny
//! model, with a ChatML template.

use std::collections::{BTreeMap, HashSet};

use anyhow::Context;
use serde::Serialize;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, TokenizerBuilder, TokenizerImpl};

use super::TaskExample;
use crate::chat_template::{ChatTemplate, Message};

/// The added special tokens, at ids 0, 1, 2: padding, turn start, turn end.
/// `<|im_end|>` ends every turn and is the EOS that generation stops on.
pub const SPECIAL_TOKENS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// ChatML as SmolLM2 writes it, without SmolLM2's default system prompt: a
/// system turn would add ~20 tokens to every ~30-token example.
pub const CHAT_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// Total ids: the 3 special tokens, the 256 byte symbols, and 253 merges.
const VOCAB_SIZE: usize = 512;

/// Trains the byte-level BPE on the chat renderings (user prompt, assistant
/// answer) of `examples`, with [`SPECIAL_TOKENS`] at ids 0–2 and the 256 byte
/// symbols next. Deterministic: the trainer breaks ties between equally
/// frequent pairs by id, and ids follow from sorted symbols, so the same
/// examples give the same merges whatever the hash seeds.
///
/// The special tokens are cut out of the text before training, as encoding
/// will cut them out; left in, their pieces (`<|`, `im`, `_start`) would use
/// up merges on text the model never sees as bytes.
///
/// # Errors
/// If the template fails to render or the trainer fails (neither happens on
/// generated examples).
pub fn train_tokenizer(examples: &[TaskExample]) -> anyhow::Result<tokenizers::Tokenizer> {
    let template = ChatTemplate::new(CHAT_TEMPLATE).context("compiling the ChatML template")?;
    let mut pieces: Vec<String> = Vec::new();
    for example in examples {
        let conversation =
            [Message::new("user", example.prompt.as_str()), Message::new("assistant", example.answer.as_str())];
        let text = template.render(&conversation, false).context("rendering a training conversation")?;
        pieces.extend(split_on_special_tokens(&text));
    }
    let mut tokenizer: TokenizerImpl<BPE, NormalizerWrapper, ByteLevel, ByteLevel, ByteLevel> = TokenizerBuilder::new()
        .with_model(BPE::default())
        .with_normalizer(None)
        .with_pre_tokenizer(Some(ByteLevel::new(false, true, true)))
        .with_post_processor(Some(ByteLevel::new(false, false, true)))
        .with_decoder(Some(ByteLevel::default()))
        .build()
        .map_err(anyhow::Error::msg)
        .context("building the BPE tokenizer")?;
    let mut trainer = BpeTrainerBuilder::new()
        .vocab_size(VOCAB_SIZE)
        .min_frequency(0)
        .show_progress(false)
        .special_tokens(SPECIAL_TOKENS.iter().map(|token| AddedToken::from(*token, true)).collect())
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect::<HashSet<char>>())
        .build();
    tokenizer.train(&mut trainer, pieces.iter()).map_err(anyhow::Error::msg).context("training the BPE")?;
    Ok(tokenizer.into())
}

/// The text between special tokens, empty pieces dropped.
fn split_on_special_tokens(text: &str) -> Vec<String> {
    let mut pieces = vec![text.to_string()];
    for special in SPECIAL_TOKENS {
        pieces = pieces.iter().flat_map(|piece| piece.split(special)).map(str::to_string).collect();
    }
    pieces.retain(|piece| !piece.is_empty());
    pieces
}

/// One entry of `added_tokens_decoder`, fields in transformers' sorted order.
#[derive(Serialize)]
struct AddedTokenEntry {
    content: &'static str,
    lstrip: bool,
    normalized: bool,
    rstrip: bool,
    single_word: bool,
    special: bool,
}

/// `tokenizer_config.json` as transformers writes it (keys sorted).
#[derive(Serialize)]
struct TokenizerConfig {
    added_tokens_decoder: BTreeMap<String, AddedTokenEntry>,
    bos_token: Option<&'static str>,
    chat_template: &'static str,
    clean_up_tokenization_spaces: bool,
    eos_token: &'static str,
    model_max_length: usize,
    pad_token: &'static str,
    tokenizer_class: &'static str,
    unk_token: Option<&'static str>,
}

/// `tokenizer_config.json`: no BOS (ChatML needs none), `<|im_end|>` as EOS so
/// generation stops at the end of the assistant turn, `<|endoftext|>` as
/// padding, the ChatML template, and `model_max_length` = the base config's
/// `max_position_embeddings`. Pretty-printed with a final newline.
pub fn tokenizer_config_json(model_max_length: usize) -> String {
    let added_tokens_decoder = SPECIAL_TOKENS
        .iter()
        .enumerate()
        .map(|(id, content)| {
            let entry = AddedTokenEntry {
                content,
                lstrip: false,
                normalized: false,
                rstrip: false,
                single_word: false,
                special: true,
            };
            (id.to_string(), entry)
        })
        .collect();
    let config = TokenizerConfig {
        added_tokens_decoder,
        bos_token: None,
        chat_template: CHAT_TEMPLATE,
        clean_up_tokenization_spaces: false,
        eos_token: SPECIAL_TOKENS[2],
        model_max_length,
        pad_token: SPECIAL_TOKENS[0],
        tokenizer_class: "PreTrainedTokenizerFast",
        unk_token: None,
    };
    // Serialising plain structs of strings and bools cannot fail.
    serde_json::to_string_pretty(&config).expect("tokenizer_config serialises") + "\n"
}
