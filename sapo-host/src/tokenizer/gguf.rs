//! The byte-level BPE transformers builds from a GGUF file's tokenizer
//! metadata (`integrations/gguf/gguf_tokenizer_mapping.py`).

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};

use super::{Result, SpecialTokens, Tokenizer, TokenizerError, add_missing_specials, bos_eos_template, build_error};

/// The tokenizer half of a GGUF file's metadata (`tokenizer.ggml.*`,
/// `tokenizer.chat_template`), as plain data. Field names follow the GGUF keys
/// so a reader can fill it without a lookup table. Deserialisable so tests and
/// tools can keep one as JSON.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(default)]
pub struct BpeParts {
    /// `tokenizer.ggml.model`; only `gpt2` (byte-level BPE) is supported.
    pub model: String,
    /// `tokenizer.ggml.pre`: picks the split regex for some vocabularies
    /// (`llama-bpe`, `qwen2`, …); others use GPT-2's byte-level regex.
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`, in id order.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.merges`: `"a b"` pairs, best first.
    pub merges: Vec<String>,
    /// `tokenizer.ggml.token_type` (1 normal, 3 control, 4 user-defined, 6
    /// byte, …); empty when the file has none.
    pub token_types: Vec<i32>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos_token_id: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos_token_id: Option<u32>,
    /// `tokenizer.ggml.unknown_token_id`.
    pub unk_token_id: Option<u32>,
    /// `tokenizer.ggml.padding_token_id`.
    pub pad_token_id: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`; absent means no BOS for `gpt2`.
    pub add_bos_token: Option<bool>,
    /// `tokenizer.ggml.add_eos_token`; absent means no EOS.
    pub add_eos_token: Option<bool>,
    /// `tokenizer.chat_template`.
    pub chat_template: Option<String>,
}

/// GGUF token type of a control token (`<|im_end|>`): added as a special token.
const TOKEN_TYPE_CONTROL: i32 = 3;
/// GGUF token type of a user-defined token (`<think>`): added, not special.
const TOKEN_TYPE_USER_DEFINED: i32 = 4;

/// GPT-2's byte-to-symbol table (`bytes_to_unicode`): printable Latin-1 bytes
/// stand for themselves, the other 68 map to U+0100 onwards. Byte-level BPE
/// vocabularies are written in these symbols.
pub fn byte_alphabet() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next_extra = 256u32;
    for byte in 0..=255u8 {
        let printable = matches!(byte, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let code = if printable {
            u32::from(byte)
        } else {
            next_extra += 1;
            next_extra - 1
        };
        // Codes are below 0x200, all valid scalar values.
        table[usize::from(byte)] = char::from_u32(code).unwrap_or('\u{FFFD}');
    }
    table
}

/// The pre-tokenizer split regexes transformers picks by `tokenizer.ggml.pre`
/// (`GGUF_PRE_TOKENIZER_SPLITS`); any other value keeps GPT-2's.
fn split_regex(pre: &str) -> Option<&'static str> {
    const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const TEKKEN: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const GPT4O: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const QWEN35: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0" | "lfm2"
        | "jina-v5-nano" | "dbrx" | "smaug-bpe" => Some(LLAMA3),
        "tekken" => Some(TEKKEN),
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" => Some(QWEN2),
        "qwen35" => Some(QWEN35),
        "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => Some(GPT4O),
        _ => None,
    }
}

impl Tokenizer {
    /// Builds the tokenizer transformers builds for a GGUF byte-level BPE
    /// (`AutoTokenizer.from_pretrained(dir, gguf_file=...)`), step by step:
    ///
    /// 1. vocabulary: a token written outside the byte alphabet is re-spelled
    ///    byte by byte (a later token re-spelled the same way wins, as in the
    ///    Python dict); BPE with the merges, no unknown token, no dropout;
    /// 2. pre-tokenizer: GPT-2's byte-level regex, or for the `pre` values in
    ///    transformers' table that split regex followed by a regex-free
    ///    byte-level step; byte-level decoder;
    /// 3. added tokens, in transformers' order: `<|endoftext|>` (GPT2Tokenizer's
    ///    default special token), the control tokens written in the byte
    ///    alphabet (special), the user-defined tokens already in the
    ///    vocabulary (not special), then the BOS/EOS/UNK/PAD strings;
    /// 4. post-processor: BOS and/or EOS around the text when `add_bos_token` /
    ///    `add_eos_token` say so (absent means no).
    pub fn from_bpe_parts(parts: &BpeParts) -> Result<Self> {
        if parts.model != "gpt2" {
            return Err(TokenizerError::UnsupportedModel { model: parts.model.clone() });
        }
        let n_tokens = parts.tokens.len();
        if !parts.token_types.is_empty() && parts.token_types.len() != n_tokens {
            return Err(TokenizerError::LengthMismatch {
                what: "token_types",
                got: parts.token_types.len(),
                expected: n_tokens,
            });
        }
        let special_id = |what: &'static str, id: Option<u32>| -> Result<Option<(String, u32)>> {
            match id {
                None => Ok(None),
                Some(id) => match parts.tokens.get(id as usize) {
                    Some(token) => Ok(Some((token.clone(), id))),
                    None => Err(TokenizerError::IdOutOfRange { what, id, n_tokens }),
                },
            }
        };
        let named = [
            special_id("bos", parts.bos_token_id)?,
            special_id("eos", parts.eos_token_id)?,
            special_id("unk", parts.unk_token_id)?,
            special_id("pad", parts.pad_token_id)?,
        ];

        let alphabet = byte_alphabet();
        let in_alphabet = |token: &str| token.chars().all(|c| alphabet.contains(&c));
        let mut vocab = tokenizers::models::bpe::Vocab::default();
        for (id, token) in parts.tokens.iter().enumerate() {
            let spelled = if in_alphabet(token) {
                token.clone()
            } else {
                token.bytes().map(|b| alphabet[usize::from(b)]).collect()
            };
            // Ids come from a Vec index; a GGUF vocabulary never reaches 2^32 entries.
            vocab.insert(spelled, u32::try_from(id).unwrap_or(u32::MAX));
        }
        let mut merges = Vec::with_capacity(parts.merges.len());
        for (index, merge) in parts.merges.iter().enumerate() {
            let mut halves = merge.split(' ');
            match (halves.next(), halves.next(), halves.next()) {
                (Some(left), Some(right), None) => merges.push((left.to_string(), right.to_string())),
                _ => return Err(TokenizerError::BadMerge { index, merge: merge.clone() }),
            }
        }
        let model = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .continuing_subword_prefix(String::new())
            .end_of_word_suffix(String::new())
            .build()
            .map_err(build_error("BPE model"))?;

        let mut inner = tokenizers::Tokenizer::new(model);
        match parts.pre.as_deref().and_then(split_regex) {
            Some(regex) => {
                let split = Split::new(SplitPattern::Regex(regex.to_string()), SplitDelimiterBehavior::Isolated, false)
                    .map_err(build_error("split regex"))?;
                let steps: Vec<PreTokenizerWrapper> = vec![split.into(), ByteLevel::new(false, true, false).into()];
                inner.with_pre_tokenizer(Some(Sequence::new(steps)));
            }
            None => {
                inner.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
            }
        }
        inner.with_decoder(Some(ByteLevelDecoder::default()));

        inner.add_tokens([AddedToken::from("<|endoftext|>", true)]).map_err(build_error("added tokens"))?;
        let type_of = |id: usize| parts.token_types.get(id).copied();
        let control: Vec<AddedToken> = (0..n_tokens)
            .filter(|&id| type_of(id) == Some(TOKEN_TYPE_CONTROL) && in_alphabet(&parts.tokens[id]))
            .map(|id| AddedToken::from(parts.tokens[id].clone(), true).normalized(false))
            .collect();
        inner.add_special_tokens(control).map_err(build_error("added tokens"))?;
        let user_defined: Vec<AddedToken> = (0..n_tokens)
            .filter(|&id| {
                type_of(id) == Some(TOKEN_TYPE_USER_DEFINED) && inner.token_to_id(&parts.tokens[id]).is_some()
            })
            .map(|id| AddedToken::from(parts.tokens[id].clone(), false).normalized(false))
            .collect();
        inner.add_tokens(user_defined).map_err(build_error("added tokens"))?;
        add_missing_specials(
            &mut inner,
            named.iter().flatten().map(|(token, _)| AddedToken::from(token.clone(), true)),
        )?;

        // transformers looks the named tokens up again after adding them.
        let resolve = |entry: &Option<(String, u32)>| {
            entry.as_ref().and_then(|(token, _)| inner.token_to_id(token).map(|id| (token.clone(), id)))
        };
        let special = SpecialTokens {
            bos: resolve(&named[0]),
            eos: resolve(&named[1]),
            unk: resolve(&named[2]),
            pad: resolve(&named[3]),
        };
        let add_bos = parts.add_bos_token.unwrap_or(false) && special.bos.is_some();
        let add_eos = parts.add_eos_token.unwrap_or(false) && special.eos.is_some();
        inner.with_post_processor(Some(bos_eos_template(&special, add_bos, add_eos)?));
        Ok(Self { inner, special, chat_template: parts.chat_template.clone(), clean_up_spaces: false })
    }

    /// [`Tokenizer::from_bpe_parts`] on the tokenizer metadata the GGUF reader
    /// returns ([`crate::model_files::gguf::tokenizer_parts`]).
    pub fn from_gguf_parts(parts: &crate::model_files::gguf::TokenizerParts) -> Result<Self> {
        Self::from_bpe_parts(&BpeParts {
            model: parts.model.clone(),
            pre: parts.pre.clone(),
            tokens: parts.tokens.clone(),
            merges: parts.merges.clone(),
            token_types: parts.token_types.clone(),
            bos_token_id: parts.bos_token_id,
            eos_token_id: parts.eos_token_id,
            unk_token_id: parts.unk_token_id,
            pad_token_id: parts.pad_token_id,
            add_bos_token: parts.add_bos_token,
            add_eos_token: parts.add_eos_token,
            chat_template: parts.chat_template.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_alphabet_matches_gpt2_table() {
        let table = byte_alphabet();
        assert_eq!(table[usize::from(b'!')], '!');
        assert_eq!(table[usize::from(b' ')], '\u{120}');
        assert_eq!(table[usize::from(b'\n')], '\u{10A}');
        assert_eq!(table[0xAD], '\u{143}');
        let distinct: std::collections::HashSet<char> = table.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
    }
}
