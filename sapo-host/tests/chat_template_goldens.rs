//! Chat templates rendered by sapo against transformers 5.23's
//! `apply_chat_template` (goldens from `fixtures/text/generate.py`). Rendered
//! text and token ids are compared exactly.

use std::path::PathBuf;

use sapo_host::chat_template::{ChatTemplate, ChatTemplateError, Message, OrderedJson, RenderOptions};
use sapo_host::model_files::gguf::{GgufFile, tokenizer_parts};
use sapo_host::tokenizer::{SpecialTokens, Tokenizer};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

fn golden() -> Value {
    let path = fixtures().join("text/chat_templates.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn messages(value: &Value) -> Vec<Message> {
    serde_json::from_value(value.clone()).expect("messages")
}

/// The special tokens transformers passed (SmolLM2's), as the template sees them.
fn special_tokens(golden: &Value) -> SpecialTokens {
    let token = |name: &str| golden["special_tokens"][name].as_str().map(|text| (text.to_string(), 0));
    SpecialTokens { bos: token("bos_token"), eos: token("eos_token"), unk: token("unk_token"), pad: token("pad_token") }
}

#[test]
fn smollm2_template_renders_like_apply_chat_template() {
    let golden = golden();
    let template = ChatTemplate::new(golden["smollm2_template"].as_str().unwrap())
        .unwrap()
        .with_special_tokens(&special_tokens(&golden));
    let cases = golden["smollm2"].as_array().unwrap();
    for case in cases {
        let rendered =
            template.render(&messages(&case["messages"]), case["add_generation_prompt"].as_bool().unwrap()).unwrap();
        assert_eq!(rendered, case["rendered"].as_str().unwrap());
    }
    println!("smollm2 template: {} of {} conversations render identically", cases.len(), cases.len());
}

#[test]
fn smollm2_rendering_tokenizes_to_apply_chat_template_ids() {
    let path = fixtures().join("downloads/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !path.exists() {
        eprintln!(
            "skipped: fixtures/downloads/SmolLM2-135M-Instruct.Q4_1.gguf not present (run fixtures/fetch_smollm2.sh)"
        );
        return;
    }
    let parts = tokenizer_parts(&GgufFile::open(&path).unwrap()).unwrap();
    let tokenizer = Tokenizer::from_gguf_parts(&parts).unwrap();
    let template = ChatTemplate::from_tokenizer(&tokenizer).unwrap();
    let golden = golden();
    assert_eq!(template.source(), golden["smollm2_template"].as_str().unwrap());
    for case in golden["smollm2"].as_array().unwrap() {
        let rendered =
            template.render(&messages(&case["messages"]), case["add_generation_prompt"].as_bool().unwrap()).unwrap();
        let ids: Vec<u64> = tokenizer.encode(&rendered, false).unwrap().into_iter().map(u64::from).collect();
        let expected: Vec<u64> = case["ids"].as_array().unwrap().iter().map(|id| id.as_u64().unwrap()).collect();
        assert_eq!(ids, expected, "{rendered:?}");
    }
}

#[test]
fn feature_templates_render_or_raise_like_transformers() {
    let golden = golden();
    let special = special_tokens(&golden);
    let cases = golden["extra"].as_array().unwrap();
    let mut failures = Vec::new();
    for case in cases {
        let name = case["template"].as_str().unwrap();
        let template =
            ChatTemplate::new(golden["templates"][name].as_str().unwrap()).unwrap().with_special_tokens(&special);
        let mut options = RenderOptions {
            add_generation_prompt: case["add_generation_prompt"].as_bool().unwrap(),
            ..Default::default()
        };
        let kwargs = OrderedJson::parse(&case["kwargs"].to_string()).unwrap();
        // serde_json sorted the golden's kwargs; the tool schema keeps its order in the raw file instead.
        if let OrderedJson::Object(entries) = kwargs {
            for (key, value) in entries {
                if key == "tools" {
                    options.tools = Some(raw_tools());
                } else {
                    options.extra.push((key, value));
                }
            }
        }
        let result = template.render_with(&messages(&case["messages"]), &options);
        match (&result, case.get("rendered"), case.get("error")) {
            (Ok(rendered), Some(expected), _) if rendered == expected.as_str().unwrap() => {}
            (Err(ChatTemplateError::Raised { message }), None, Some(expected))
                if message == expected.as_str().unwrap() => {}
            _ => failures
                .push(format!("{name}: got {result:?}\nexpected {:?}", case.get("rendered").or(case.get("error")))),
        }
    }
    assert!(failures.is_empty(), "{} of {} differ:\n{}", failures.len(), cases.len(), failures.join("\n\n"));
    println!("feature templates: {} of {} cases identical", cases.len(), cases.len());
}

/// The tools kwarg of the golden, read with key order kept (serde_json's map sorts).
fn raw_tools() -> OrderedJson {
    let text = std::fs::read_to_string(fixtures().join("text/chat_templates.json")).unwrap();
    let document = OrderedJson::parse(&text).unwrap();
    let OrderedJson::Array(cases) = document.get("extra").unwrap() else { panic!("extra is a list") };
    cases.iter().find_map(|case| case.get("kwargs")?.get("tools").cloned()).expect("a case with tools")
}

#[test]
fn errors_say_what_went_wrong() {
    let error = ChatTemplate::new("{% for m in messages %}").unwrap_err();
    assert!(matches!(error, ChatTemplateError::Syntax { .. }), "{error}");
    assert!(error.to_string().starts_with("the chat template does not compile: "), "{error}");

    let template = ChatTemplate::new("{{ messages[0].content.nope() }}").unwrap();
    let error = template.render(&[Message::new("user", "x")], false).unwrap_err();
    assert!(matches!(error, ChatTemplateError::Render { .. }), "{error}");

    let template = ChatTemplate::new("{{ raise_exception('Only user and assistant roles are supported!') }}").unwrap();
    let error = template.render(&[Message::new("system", "x")], false).unwrap_err();
    assert_eq!(
        error.to_string(),
        "the chat template raised an exception: Only user and assistant roles are supported!"
    );

    let error = template.render(&[], false).unwrap_err();
    assert!(matches!(error, ChatTemplateError::EmptyConversation));

    let template = ChatTemplate::new("{{ messages | tojson(bogus=1) }}").unwrap();
    assert!(template.render(&[Message::new("user", "x")], false).is_err());
    let template = ChatTemplate::new("{{ undefined_thing | tojson }}").unwrap();
    assert!(template.render(&[Message::new("user", "x")], false).is_err());

    let tokenizer_dir = fixtures().join("text/tiny_bpe/tokenizer.json");
    let tokenizer = Tokenizer::from_file(tokenizer_dir).unwrap();
    assert!(ChatTemplate::from_tokenizer(&tokenizer).is_ok());
}

#[test]
fn extra_variables_override_special_tokens_as_kwargs_do() {
    let template = ChatTemplate::new("{{ eos_token }}|{{ bos_token is defined }}|{{ flag }}")
        .unwrap()
        .with_special_tokens(&SpecialTokens { eos: Some(("</s>".into(), 2)), ..SpecialTokens::default() });
    let options = RenderOptions {
        extra: vec![
            ("eos_token".into(), OrderedJson::String("<end>".into())),
            ("flag".into(), OrderedJson::Bool(false)),
        ],
        ..RenderOptions::default()
    };
    assert_eq!(template.render_with(&[Message::new("user", "x")], &options).unwrap(), "<end>|False|False");
}
