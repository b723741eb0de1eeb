//! The dataset parser never panics, whatever the bytes: random bytes, and
//! random JSON records built from TRL's field names with values of every
//! type. Under `skip_invalid` every record is either an example or a skip.
//! More cases: `PROPTEST_CASES=200000 cargo test -p sapo-host --test data_fuzz --release`.

use std::path::Path;

use proptest::prelude::*;
use sapo_host::chat_template::ChatTemplate;
use sapo_host::data::{DataError, DatasetKind, DatasetLoader, FileFormat, LoadOptions, Truncation};
use sapo_host::tokenizer::{BpeParts, Tokenizer};

fn tokenizer() -> Tokenizer {
    let mut tokens: Vec<String> = vec!["</s>".into()];
    tokens.extend(sapo_host::tokenizer::byte_alphabet().iter().map(|c| c.to_string()));
    let token_types = std::iter::once(3).chain(std::iter::repeat(1)).take(tokens.len()).collect();
    Tokenizer::from_bpe_parts(&BpeParts {
        model: "gpt2".into(),
        tokens,
        token_types,
        eos_token_id: Some(0),
        ..BpeParts::default()
    })
    .unwrap()
}

fn template() -> ChatTemplate {
    ChatTemplate::new(
        "{% for m in messages %}{% if m.role == 'boom' %}{{ raise_exception('boom') }}{% endif %}\
         <{{ m.role }}>{{ m.content | trim }}{{ tools | tojson }}</s>{% endfor %}{% if add_generation_prompt %}<a>{% endif %}",
    )
    .unwrap()
}

const KINDS: [DatasetKind; 4] =
    [DatasetKind::Preference, DatasetKind::PromptChosen, DatasetKind::PromptOnly, DatasetKind::Sft];

/// Loads `bytes` every way and checks the skip accounting.
fn load_every_way(tokenizer: &Tokenizer, template: &ChatTemplate, bytes: &[u8]) {
    for kind in KINDS {
        for (skip_invalid, truncation) in [(false, Truncation::None), (true, Truncation::KeepStart { max_length: 6 })] {
            let options = LoadOptions { kind, truncation, skip_invalid };
            let loader = DatasetLoader::new(tokenizer, Some(template), options).unwrap();
            for format in [FileFormat::JsonLines, FileFormat::Json] {
                match loader.load_str(Path::new("fuzz.jsonl"), bytes, format) {
                    Ok(dataset) if skip_invalid => {
                        assert_eq!(dataset.examples.len() + dataset.skipped.len(), dataset.n_records);
                        assert!(!dataset.skip_summary().is_empty());
                    }
                    Ok(_)
                    | Err(DataError::Invalid { .. } | DataError::NoExamples { .. } | DataError::NotJsonArray { .. }) => {
                    }
                    Err(other) => panic!("unexpected error kind: {other}"),
                }
            }
        }
    }
}

fn json_string() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[a-z ]{0,6}", any::<String>(), Just("</s>".to_string()), Just(" ".to_string())]
        .prop_map(|text| serde_json::to_string(&text).unwrap())
}

/// A JSON value: scalars of every type, messages (good and bad), lists, objects.
fn json_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        json_string(),
        Just("null".to_string()),
        Just("true".to_string()),
        any::<i64>().prop_map(|number| number.to_string()),
        Just("1.5e300".to_string()),
    ];
    let message = (prop_oneof![Just("user"), Just("assistant"), Just("system"), Just("boom")], json_string())
        .prop_map(|(role, content)| format!(r#"{{"role": "{role}", "content": {content}}}"#));
    let odd_message = prop_oneof![
        json_string().prop_map(|content| format!(r#"{{"content": {content}}}"#)),
        Just(r#"{"role": "user", "content": 3}"#.to_string()),
        Just(r#"{"role": "user", "content": "x", "name": "n"}"#.to_string()),
        Just(r#"{"role": "user", "content": "x", "name": null}"#.to_string()),
    ];
    let messages = prop::collection::vec(prop_oneof![4 => message, 1 => odd_message, 1 => leaf.clone()], 0..4)
        .prop_map(|items| format!("[{}]", items.join(", ")));
    prop_oneof![3 => leaf, 3 => messages, 1 => Just("{}".to_string())]
}

/// A record built from TRL's field names (sometimes missing, sometimes extra).
fn record() -> impl Strategy<Value = String> {
    let names =
        ["prompt", "chosen", "rejected", "completion", "messages", "text", "tools", "chat_template_kwargs", "other"];
    prop::collection::vec((prop::sample::select(names.to_vec()), json_value()), 0..6).prop_map(|fields| {
        let body: Vec<String> = fields.iter().map(|(name, value)| format!("\"{name}\": {value}")).collect();
        format!("{{{}}}", body.join(", "))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        load_every_way(&tokenizer(), &template(), &bytes);
    }

    #[test]
    fn random_lines_of_json_fragments_never_panic(
        lines in prop::collection::vec(prop_oneof![record(), json_value(), Just(String::new()), "[{}\\[\\],:\" a-z0-9]{0,12}"], 0..6)
    ) {
        let text = lines.join("\n");
        load_every_way(&tokenizer(), &template(), text.as_bytes());
        let array = format!("[{}]", lines.join(",\n"));
        load_every_way(&tokenizer(), &template(), array.as_bytes());
    }
}
