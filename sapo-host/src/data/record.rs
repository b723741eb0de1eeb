//! One JSON record checked against the dataset shape a method needs, in
//! TRL's forms: plain strings or lists of `{"role", "content"}` messages.

use crate::chat_template::{Message, OrderedJson, RenderOptions};

use super::{DatasetKind, Problem};

/// A field's value: TRL's "standard" (text) or "conversational" form.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Turns {
    Text(String),
    Messages(Vec<Message>),
}

impl Turns {
    fn is_conversational(&self) -> bool {
        matches!(self, Turns::Messages(_))
    }

    fn is_empty_response(&self) -> bool {
        match self {
            Turns::Text(text) => text.is_empty(),
            Turns::Messages(messages) => messages.iter().all(|message| message.content.is_empty()),
        }
    }
}

/// What a record holds once checked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Shape {
    /// A prompt and the responses present: chosen/rejected (preference),
    /// chosen only (SAPO, SPIN), none (SPPO, AIPO), or completion (SFT).
    Pair { prompt: Turns, responses: Vec<(&'static str, Turns)> },
    /// A whole sequence trained on in full (SFT `messages` or `text`).
    Whole { field: &'static str, sequence: Turns },
}

/// A checked record: its shape, whether it is conversational, and the
/// per-record template arguments TRL passes (`tools`, `chat_template_kwargs`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Record {
    pub shape: Shape,
    pub conversational: bool,
    pub render: RenderOptions,
}

/// A present, non-null field (`datasets` fills fields missing from some rows with `None`).
fn field<'a>(object: &'a OrderedJson, name: &str) -> Option<&'a OrderedJson> {
    object.get(name).filter(|value| **value != OrderedJson::Null)
}

fn required<'a>(object: &'a OrderedJson, name: &'static str) -> Result<&'a OrderedJson, Problem> {
    field(object, name).ok_or(Problem::MissingField { field: name })
}

fn wrong_type(field: &'static str, expected: &'static str, got: &OrderedJson) -> Problem {
    Problem::WrongType { field, expected, got: got.kind_name() }
}

/// A field as text or messages. Messages need string `role` and `content`;
/// other keys must be absent or null (only role and content reach the template).
fn turns(name: &'static str, value: &OrderedJson) -> Result<Turns, Problem> {
    const EXPECTED: &str = "a string or a list of {\"role\", \"content\"} messages";
    match value {
        OrderedJson::String(text) => Ok(Turns::Text(text.clone())),
        OrderedJson::Array(items) if items.is_empty() => Err(Problem::EmptyConversation { field: name }),
        OrderedJson::Array(items) => {
            let mut messages = Vec::with_capacity(items.len());
            for (position, item) in items.iter().enumerate() {
                messages.push(message(name, position, item)?);
            }
            Ok(Turns::Messages(messages))
        }
        other => Err(wrong_type(name, EXPECTED, other)),
    }
}

fn message(name: &'static str, position: usize, item: &OrderedJson) -> Result<Message, Problem> {
    let bad = |detail: String| Problem::BadMessage { field: name, position, detail };
    let OrderedJson::Object(entries) = item else {
        return Err(bad(format!("expected an object, got {}", item.kind_name())));
    };
    let text_of = |key: &str| match field(item, key) {
        Some(OrderedJson::String(text)) => Ok(text.clone()),
        Some(other) => Err(bad(format!("`{key}` must be a string, got {}", other.kind_name()))),
        None => Err(bad(format!("missing `{key}`"))),
    };
    let role = text_of("role")?;
    let content = text_of("content")?;
    if let Some((key, _)) =
        entries.iter().find(|(key, value)| key != "role" && key != "content" && *value != OrderedJson::Null)
    {
        return Err(bad(format!("key `{key}` is not supported (only `role` and `content` reach the chat template)")));
    }
    Ok(Message { role, content })
}

/// A response field: present, of a known form, not empty.
fn response(object: &OrderedJson, name: &'static str) -> Result<Turns, Problem> {
    let value = turns(name, required(object, name)?)?;
    if value.is_empty_response() {
        return Err(Problem::EmptyResponse { field: name });
    }
    Ok(value)
}

/// TRL's `extract_prompt` for preference rows without `prompt`: the prompt is
/// the longest common prefix of chosen and rejected (characters or
/// messages); a text prompt gives its trailing space to the responses.
/// TRL's corner cases are kept where they make sense (identical or nested
/// responses: the last shared element moves into the responses) and are
/// errors where TRL produces an empty or nonsensical prompt.
fn extract_prompt(chosen: Turns, rejected: Turns) -> Result<(Turns, Turns, Turns), Problem> {
    fn split<T: PartialEq + Clone>(chosen: &[T], rejected: &[T], is_space: impl Fn(&T) -> bool) -> Option<usize> {
        let shortest = chosen.len().min(rejected.len());
        let index = match (0..shortest).find(|&index| chosen[index] != rejected[index]) {
            Some(index) if index > 0 && is_space(&chosen[index - 1]) => index - 1,
            Some(index) => index,
            None => shortest.checked_sub(1)?,
        };
        (index > 0).then_some(index)
    }
    match (chosen, rejected) {
        (Turns::Text(chosen), Turns::Text(rejected)) => {
            let chosen_chars: Vec<char> = chosen.chars().collect();
            let rejected_chars: Vec<char> = rejected.chars().collect();
            let index = split(&chosen_chars, &rejected_chars, |c| *c == ' ').ok_or(Problem::NoImplicitPrompt)?;
            let text = |chars: &[char]| Turns::Text(chars.iter().collect());
            Ok((text(&chosen_chars[..index]), text(&chosen_chars[index..]), text(&rejected_chars[index..])))
        }
        (Turns::Messages(chosen), Turns::Messages(rejected)) => {
            let index = split(&chosen, &rejected, |_| false).ok_or(Problem::NoImplicitPrompt)?;
            Ok((
                Turns::Messages(chosen[..index].to_vec()),
                Turns::Messages(chosen[index..].to_vec()),
                Turns::Messages(rejected[index..].to_vec()),
            ))
        }
        _ => Err(Problem::MixedForms),
    }
}

/// TRL passes a row's `tools` (a list, or a JSON string of one) and
/// `chat_template_kwargs` (an object) to `apply_chat_template`.
fn render_options(object: &OrderedJson) -> Result<RenderOptions, Problem> {
    let mut options = RenderOptions::default();
    match field(object, "tools") {
        None => {}
        Some(tools @ OrderedJson::Array(_)) => options.tools = Some(tools.clone()),
        Some(OrderedJson::String(text)) => match OrderedJson::parse(text) {
            Ok(tools @ OrderedJson::Array(_)) => options.tools = Some(tools),
            Ok(other) => return Err(wrong_type("tools", "a list of tool schemas (or its JSON text)", &other)),
            Err(error) => return Err(Problem::NotJson { message: format!("field `tools`: {error}") }),
        },
        Some(other) => return Err(wrong_type("tools", "a list of tool schemas (or its JSON text)", other)),
    }
    match field(object, "chat_template_kwargs") {
        None => {}
        Some(OrderedJson::Object(entries)) => options.extra = entries.clone(),
        Some(other) => return Err(wrong_type("chat_template_kwargs", "an object", other)),
    }
    Ok(options)
}

/// Checks `value` against `kind` and returns the record to tokenize.
pub(crate) fn parse(value: &OrderedJson, kind: DatasetKind) -> Result<Record, Problem> {
    if !matches!(value, OrderedJson::Object(_)) {
        return Err(Problem::NotObject { got: value.kind_name() });
    }
    let shape = match kind {
        DatasetKind::Preference => preference(value, true)?,
        DatasetKind::PromptChosen => preference(value, false)?,
        DatasetKind::PromptOnly => {
            Shape::Pair { prompt: turns("prompt", required(value, "prompt")?)?, responses: Vec::new() }
        }
        DatasetKind::Sft => sft(value)?,
    };
    let forms: Vec<bool> = match &shape {
        Shape::Pair { prompt, responses } => std::iter::once(prompt)
            .chain(responses.iter().map(|(_, turns)| turns))
            .map(Turns::is_conversational)
            .collect(),
        Shape::Whole { sequence, .. } => vec![sequence.is_conversational()],
    };
    if forms.iter().any(|&form| form != forms[0]) {
        return Err(Problem::MixedForms);
    }
    Ok(Record { shape, conversational: forms[0], render: render_options(value)? })
}

fn preference(value: &OrderedJson, rejected_required: bool) -> Result<Shape, Problem> {
    let chosen = response(value, "chosen")?;
    let rejected =
        if rejected_required || field(value, "rejected").is_some() { Some(response(value, "rejected")?) } else { None };
    match (field(value, "prompt"), rejected) {
        (Some(prompt), rejected) => {
            let mut responses = vec![("chosen", chosen)];
            responses.extend(rejected.map(|rejected| ("rejected", rejected)));
            Ok(Shape::Pair { prompt: turns("prompt", prompt)?, responses })
        }
        (None, Some(rejected)) => {
            let (prompt, chosen, rejected) = extract_prompt(chosen, rejected)?;
            Ok(Shape::Pair { prompt, responses: vec![("chosen", chosen), ("rejected", rejected)] })
        }
        (None, None) => Err(Problem::MissingField { field: "prompt" }),
    }
}

/// TRL's SFT shapes, in its order of precedence: prompt-completion, then
/// `messages`, then `text`.
fn sft(value: &OrderedJson) -> Result<Shape, Problem> {
    if let Some(prompt) = field(value, "prompt") {
        let prompt = turns("prompt", prompt)?;
        return Ok(Shape::Pair { prompt, responses: vec![("completion", response(value, "completion")?)] });
    }
    for name in ["messages", "text"] {
        if field(value, name).is_some() {
            return Ok(Shape::Whole { field: name, sequence: response(value, name)? });
        }
    }
    Err(Problem::MissingField { field: "messages" })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(value: &str) -> Turns {
        Turns::Text(value.to_string())
    }

    #[test]
    fn implicit_text_prompt_gives_its_trailing_space_to_the_responses() {
        let (prompt, chosen, rejected) = extract_prompt(text("Q: hi A: yes"), text("Q: hi A: no")).unwrap();
        assert_eq!((prompt, chosen, rejected), (text("Q: hi A:"), text(" yes"), text(" no")));
        // Nested responses: TRL moves the last shared character into the responses.
        let (prompt, chosen, rejected) = extract_prompt(text("abc"), text("abcd")).unwrap();
        assert_eq!((prompt, chosen, rejected), (text("ab"), text("c"), text("cd")));
        assert_eq!(extract_prompt(text("x"), text("y")), Err(Problem::NoImplicitPrompt));
        assert_eq!(extract_prompt(text(" a"), text(" b")), Err(Problem::NoImplicitPrompt));
    }
}
