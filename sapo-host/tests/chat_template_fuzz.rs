//! Compiling and rendering arbitrary template text never panics: it renders
//! or returns a `ChatTemplateError`.

use proptest::prelude::*;
use sapo_host::chat_template::{ChatTemplate, Message, OrderedJson, RenderOptions};

/// Template text made of the pieces that steer the parser and our rewrites.
fn template_text() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "{%",
        "%}",
        "{{",
        "}}",
        "{#",
        "#}",
        "-",
        "+",
        " ",
        "\n",
        "generation",
        "endgeneration",
        "if",
        "endif",
        "for m in messages",
        "endfor",
        "m.content",
        "tojson",
        "|",
        "(",
        ")",
        "indent=2",
        "raise_exception('x')",
        "strftime_now('%Y %-d %q')",
        "messages",
        "loop.index",
        "'",
        "\"",
        "none",
        "tools",
        "x",
        ".strip()",
        "[",
        "]",
        ",",
        "break",
        "é",
    ]);
    prop::collection::vec(pieces, 0..24).prop_map(|pieces| pieces.concat())
}

/// Well-formed templates nesting the constructs chat templates use, so most render.
fn well_formed_template() -> impl Strategy<Value = String> {
    let leaf = prop::sample::select(vec![
        "{{ m.content }}",
        "{{ m.role | upper }}",
        "{{ tools | tojson(indent=2) }}",
        "{{ tools | tojson(separators=(',', ':')) }}",
        "{{ x ~ none }}",
        "{{ [1, none, 'a\\'b', 2.5e-8] }}",
        "{{ {'k': tools} }}",
        "{{ raise_exception('e') }}",
        "{{ m.content.strip().split(' ') }}",
        "{{ strftime_now('%-d %b %Y') }}",
        "{{ messages | length }}",
        "text\n",
        "  {{- m.content[1:-1] -}}  ",
        "{{ loop.index if loop is defined }}",
        "{{ x / 0 }}",
        "{{ m.content * 2 }}",
    ])
    .prop_map(str::to_string);
    leaf.prop_recursive(3, 24, 4, |inner| {
        let body = prop::collection::vec(inner, 1..4).prop_map(|parts| parts.concat());
        prop_oneof![
            body.clone().prop_map(|body| {
                format!(
                    "{{% for m in messages %}}{body}{{% if loop.index > 1 %}}{{% break %}}{{% endif %}}{{% endfor %}}"
                )
            }),
            body.clone().prop_map(|body| format!("{{%- generation -%}}{body}{{% endgeneration %}}")),
            body.clone()
                .prop_map(|body| format!("{{% if add_generation_prompt %}}\n  {body}\n{{% else %}}no{{% endif %}}")),
            body.prop_map(|body| format!("{{% set ns = namespace(a=1) %}}{{% set ns.a = 2 %}}{body}{{{{ ns.a }}}}")),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_templates_never_panic(source in template_text(), content in any::<String>()) {
        if let Ok(template) = ChatTemplate::new(source) {
            let options = RenderOptions {
                add_generation_prompt: true,
                tools: Some(OrderedJson::parse(r#"[{"b": 1.5, "a": [null, true, "é\u0001"]}]"#).unwrap()),
                extra: vec![("x".into(), OrderedJson::Number(7.into()))],
            };
            let _ = template.render_with(&[Message::new("user", content)], &options);
        }
    }

    #[test]
    fn well_formed_templates_render_or_fail_cleanly(source in well_formed_template(), content in any::<String>()) {
        let template = ChatTemplate::new(source.clone());
        prop_assert!(template.is_ok(), "{source}: {:?}", template.err());
        if let Ok(template) = template {
            let tools = OrderedJson::parse(r#"[{"b": 1.5, "a": [null, true]}]"#).unwrap();
            let options = RenderOptions { add_generation_prompt: true, tools: Some(tools), extra: vec![] };
            let messages = [Message::new("system", "s"), Message::new("user", content)];
            let _ = template.render_with(&messages, &options);
        }
    }
}
