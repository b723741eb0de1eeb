//! The tokenizer against transformers 5.23's own ids and decodings, written by
//! `fixtures/text/generate.py` (versions recorded in each golden file).
//! Exact equality: token ids and decoded strings have no tolerance.

use std::path::PathBuf;

use sapo_host::model_files::gguf::{GgufFile, tokenizer_parts};
use sapo_host::tokenizer::{BpeParts, Tokenizer, TokenizerError};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

fn golden(name: &str) -> Value {
    let path = fixtures().join("text").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

fn ids(value: &Value) -> Vec<u32> {
    value.as_array().expect("an id list").iter().map(|id| id.as_u64().expect("an id") as u32).collect()
}

/// The SmolLM2 GGUF tokenizer, or `None` (after saying so) when the model has not been fetched.
fn smollm2() -> Option<Tokenizer> {
    let path = fixtures().join("downloads/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !path.exists() {
        eprintln!(
            "skipped: fixtures/downloads/SmolLM2-135M-Instruct.Q4_1.gguf not present (run fixtures/fetch_smollm2.sh)"
        );
        return None;
    }
    let file = GgufFile::open(&path).expect("open the SmolLM2 GGUF");
    Some(Tokenizer::from_gguf_parts(&tokenizer_parts(&file).expect("tokenizer metadata")).expect("build"))
}

/// Checks every case of a golden file; returns how many matched out of how many.
fn check_cases(tokenizer: &Tokenizer, cases: &Value, label: &str) -> usize {
    let cases = cases.as_array().expect("cases");
    let mut failures = Vec::new();
    for case in cases {
        let text = case["text"].as_str().expect("text");
        let with_special = tokenizer.encode(text, true).expect("encode");
        let without = tokenizer.encode(text, false).expect("encode");
        let expected = ids(&case["ids"]);
        let decoded = tokenizer.decode(&expected, false).expect("decode");
        let decoded_skip = tokenizer.decode(&expected, true).expect("decode");
        if with_special != expected
            || without != ids(&case["ids_no_special"])
            || decoded != case["decoded"].as_str().expect("decoded")
            || decoded_skip != case["decoded_skip_special"].as_str().expect("decoded")
        {
            failures.push(format!(
                "{label} {text:?}: ids {with_special:?} vs {expected:?}; decoded {decoded:?} vs {}; skip {decoded_skip:?} vs {}",
                case["decoded"], case["decoded_skip_special"]
            ));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases differ:\n{}", failures.len(), cases.len(), failures.join("\n"));
    println!("{label}: {} of {} cases match transformers exactly", cases.len(), cases.len());
    cases.len()
}

#[test]
fn smollm2_gguf_tokenizer_matches_transformers_ids_and_decodings() {
    let Some(tokenizer) = smollm2() else { return };
    let golden = golden("smollm2_tokenizer.json");
    check_cases(&tokenizer, &golden["cases"], "smollm2");
    assert_eq!(tokenizer.vocab_size() as u64, golden["len"].as_u64().unwrap());
    assert_eq!(tokenizer.eos_token(), golden["eos_token"].as_str());
    assert_eq!(tokenizer.eos_token_id().map(u64::from), golden["eos_token_id"].as_u64());
    assert_eq!(tokenizer.bos_token_id().map(u64::from), golden["bos_token_id"].as_u64());
    assert_eq!(tokenizer.special_tokens().pad.as_ref().map(|(token, _)| token.as_str()), golden["pad_token"].as_str());
    assert_eq!(tokenizer.special_tokens().unk.as_ref().map(|(token, _)| token.as_str()), golden["unk_token"].as_str());
    for (id, token) in golden["id_to_token"].as_object().unwrap() {
        let id: u32 = id.parse().unwrap();
        assert_eq!(tokenizer.id_to_token(id).as_deref(), token.as_str(), "id {id}");
        assert_eq!(tokenizer.token_to_id(token.as_str().unwrap()), Some(id));
    }
    for case in golden["decode_only"].as_array().unwrap() {
        let id_list = ids(&case["ids"]);
        assert_eq!(tokenizer.decode(&id_list, false).unwrap(), case["decoded"].as_str().unwrap(), "{id_list:?}");
        assert_eq!(tokenizer.decode(&id_list, true).unwrap(), case["decoded_skip_special"].as_str().unwrap());
    }
    assert!(tokenizer.chat_template().is_some_and(|template| template.contains("<|im_start|>")));
}

#[test]
fn smollm2_decode_of_encode_round_trips_every_golden_text() {
    let Some(tokenizer) = smollm2() else { return };
    for case in golden("smollm2_tokenizer.json")["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let round_trip = tokenizer.decode(&tokenizer.encode(text, true).unwrap(), false).unwrap();
        assert_eq!(round_trip, text);
    }
}

#[test]
fn synthetic_gguf_parts_build_what_transformers_builds() {
    let golden = golden("synthetic_gguf.json");
    for vocabulary in golden["vocabularies"].as_array().unwrap() {
        let name = vocabulary["name"].as_str().unwrap();
        let parts: BpeParts = serde_json::from_value(vocabulary["parts"].clone()).expect("parts");
        let tokenizer = Tokenizer::from_bpe_parts(&parts).expect("build");
        check_cases(&tokenizer, &vocabulary["cases"], name);
        assert_eq!(tokenizer.vocab_size() as u64, vocabulary["len"].as_u64().unwrap(), "{name}");
        let added = tokenizer.inner().get_added_tokens_decoder();
        let expected = vocabulary["added_tokens"].as_array().unwrap();
        assert_eq!(added.len(), expected.len(), "{name}: {added:?}");
        for token in expected {
            let id = token["id"].as_u64().unwrap() as u32;
            let got = &added[&id];
            assert_eq!(got.content, token["content"].as_str().unwrap(), "{name}");
            assert_eq!(got.special, token["special"].as_bool().unwrap(), "{name}: {}", got.content);
        }
    }
}

#[test]
fn tokenizer_json_directories_match_transformers_including_ignored_config_flags() {
    let golden = golden("tiny_bpe.json");
    for name in ["tiny_bpe", "tiny_bpe_flags"] {
        let tokenizer = Tokenizer::from_file(fixtures().join("text").join(name).join("tokenizer.json")).expect(name);
        let expected = &golden[name];
        check_cases(&tokenizer, &expected["cases"], name);
        assert_eq!(tokenizer.vocab_size() as u64, expected["len"].as_u64().unwrap());
        assert_eq!(tokenizer.eos_token_id().map(u64::from), expected["eos_token_id"].as_u64());
        assert_eq!(tokenizer.bos_token_id().map(u64::from), expected["bos_token_id"].as_u64());
        assert_eq!(tokenizer.chat_template(), expected["chat_template"].as_str(), "{name}");
    }
}

fn tiny_parts() -> BpeParts {
    let mut tokens: Vec<String> = vec!["<|end|>".into()];
    tokens.extend(sapo_host::tokenizer::byte_alphabet().iter().map(|c| c.to_string()));
    BpeParts {
        model: "gpt2".into(),
        token_types: vec![1; tokens.len()],
        tokens,
        eos_token_id: Some(0),
        ..BpeParts::default()
    }
}

#[test]
fn bpe_parts_errors_name_the_offending_value() {
    let mut parts = tiny_parts();
    parts.model = "llama".into();
    let error = Tokenizer::from_bpe_parts(&parts).unwrap_err();
    assert!(matches!(error, TokenizerError::UnsupportedModel { .. }), "{error}");
    assert!(error.to_string().contains("`llama`"), "{error}");

    let mut parts = tiny_parts();
    parts.token_types.pop();
    let error = Tokenizer::from_bpe_parts(&parts).unwrap_err();
    assert_eq!(error.to_string(), "token_types has 256 entries but there are 257 tokens");

    let mut parts = tiny_parts();
    parts.merges = vec!["a b".into(), "a b c".into()];
    let error = Tokenizer::from_bpe_parts(&parts).unwrap_err();
    assert_eq!(error.to_string(), "merge 1 `a b c` is not two symbols separated by one space");

    let mut parts = tiny_parts();
    parts.merges = vec!["ab".into()];
    assert!(matches!(Tokenizer::from_bpe_parts(&parts).unwrap_err(), TokenizerError::BadMerge { index: 0, .. }));

    let mut parts = tiny_parts();
    parts.eos_token_id = Some(999);
    let error = Tokenizer::from_bpe_parts(&parts).unwrap_err();
    assert_eq!(error.to_string(), "eos id 999 is outside the vocabulary of 257 tokens");

    let mut parts = tiny_parts();
    parts.merges = vec!["q zz".into()];
    let error = Tokenizer::from_bpe_parts(&parts).unwrap_err();
    assert!(matches!(error, TokenizerError::Build { stage: "BPE model", .. }), "{error}");
}

#[test]
fn decode_of_an_id_past_the_vocabulary_is_an_error_or_skipped_not_a_panic() {
    let tokenizer = Tokenizer::from_bpe_parts(&tiny_parts()).unwrap();
    // tokenizers skips ids it does not know, as transformers' decode does.
    // Id 1 + b is byte b: 102 is "e".
    assert_eq!(tokenizer.decode(&[102, 100_000], false).unwrap(), "e");
    assert_eq!(tokenizer.id_to_token(100_000), None);
}

#[test]
fn from_file_errors_name_the_file() {
    let missing = fixtures().join("text/no_such_dir/tokenizer.json");
    let error = Tokenizer::from_file(&missing).unwrap_err();
    assert!(matches!(error, TokenizerError::Io { .. }));
    assert!(error.to_string().contains("no_such_dir/tokenizer.json"), "{error}");

    let dir = std::env::temp_dir().join(format!("sapo_tokenizer_bad_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tokenizer.json"), "{ not json").unwrap();
    let error = Tokenizer::from_file(dir.join("tokenizer.json")).unwrap_err();
    assert!(matches!(error, TokenizerError::BadFile { .. }), "{error}");
    assert!(error.to_string().contains("tokenizer.json"), "{error}");

    std::fs::copy(fixtures().join("text/tiny_bpe/tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    std::fs::write(dir.join("tokenizer_config.json"), r#"{"bos_token": 3}"#).unwrap();
    let error = Tokenizer::from_file(dir.join("tokenizer.json")).unwrap_err();
    assert!(error.to_string().contains("tokenizer_config.json: bos_token: expected a token string"), "{error}");
    std::fs::write(dir.join("tokenizer_config.json"), r#"{"added_tokens_decoder": {"x": {"content": "a"}}}"#).unwrap();
    let error = Tokenizer::from_file(dir.join("tokenizer.json")).unwrap_err();
    assert!(error.to_string().contains("added_tokens_decoder key `x` is not an id"), "{error}");
    std::fs::remove_dir_all(&dir).unwrap();
}
