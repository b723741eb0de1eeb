//! Hugging Face chat templates (Jinja) rendered the way transformers 5
//! renders them in `apply_chat_template`, so the text a model is trained on
//! is the text it was tuned with.
//!
//! The environment mirrors transformers' `_compile_jinja_template`:
//! `trim_blocks` and `lstrip_blocks` on, no trailing-newline keeping, no
//! auto-escaping, loop controls (`{% break %}`, `{% continue %}`), Python
//! string/dict methods (`.strip()`, `.startswith()`, `.items()` via
//! `minijinja-contrib`'s pycompat), `raise_exception(message)`,
//! `strftime_now(format)`, and transformers' `tojson` (Python's `json.dumps`
//! with `ensure_ascii=False`). `{% generation %}` blocks (transformers'
//! assistant-mask extension) render their body. Values print as Python's
//! `str()` does (`None`, `True`, `['a', 1]`), not as minijinja's defaults.
//!
//! The variables are transformers': `messages`, `add_generation_prompt`,
//! `tools` and `documents` (`None` unless given), the special-token strings
//! (`bos_token`, `eos_token`, `unk_token`, `pad_token`, where the tokenizer
//! has them) and any extra keyword arguments, which override them.
//!
//! Known differences, all in corners chat templates avoid: a message's keys
//! are always `role` then `content` (in `tojson` and `.items()`); dict
//! literals written in a template iterate in sorted key order; `~` and `join`
//! print `none`/`true` the minijinja way; `strftime_now` is in UTC.
//!
//! ```
//! use sapo_host::chat_template::{ChatTemplate, Message};
//! let template = ChatTemplate::new(
//!     "{% for m in messages %}<|{{ m.role }}|>{{ m.content | trim }}\n{% endfor %}\
//!      {% if add_generation_prompt %}<|assistant|>{% endif %}",
//! )?;
//! let text = template.render(&[Message::new("user", " Hi ")], true)?;
//! assert_eq!(text, "<|user|>Hi\n<|assistant|>");
//! # Ok::<(), sapo_host::chat_template::ChatTemplateError>(())
//! ```

mod json;
mod python;

use std::borrow::Cow;
use std::collections::BTreeMap;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Kwargs, Rest, Value};
use minijinja::{AutoEscape, Environment, Error, ErrorKind};

pub use json::OrderedJson;
use json::OrderedMap;

use crate::tokenizer::{SpecialTokens, Tokenizer};

/// One chat message, TRL's `{"role", "content"}` form.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant`, or whatever roles the template knows.
    pub role: String,
    /// The text of the message.
    pub content: String,
}

impl Message {
    /// A message with this role and content.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self { role: role.into(), content: content.into() }
    }

    fn to_value(&self) -> Value {
        OrderedMap::value(vec![
            ("role".to_string(), Value::from(self.role.as_str())),
            ("content".to_string(), Value::from(self.content.as_str())),
        ])
    }
}

/// Rendering options beyond the messages: what transformers'
/// `apply_chat_template` takes as arguments and `**kwargs`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RenderOptions {
    /// Append the template's assistant header so the model answers next.
    pub add_generation_prompt: bool,
    /// Tool schemas (`tools=`), visible as `tools`; `None` renders `tools` as `None`.
    pub tools: Option<OrderedJson>,
    /// Extra template variables (`**kwargs`, TRL's `chat_template_kwargs`);
    /// they override the special-token variables of the same name.
    pub extra: Vec<(String, OrderedJson)>,
}

/// Why a template could not be compiled or rendered.
#[derive(Debug, thiserror::Error)]
pub enum ChatTemplateError {
    /// The template is not valid Jinja for this environment.
    #[error("the chat template does not compile: {message}")]
    Syntax {
        /// minijinja's message, with the line.
        message: String,
    },
    /// The template called `raise_exception(message)`, e.g. on roles it does not accept.
    #[error("the chat template raised an exception: {message}")]
    Raised {
        /// The template's own message.
        message: String,
    },
    /// Rendering failed otherwise (an undefined attribute, a type error…).
    #[error("rendering the chat template: {message}")]
    Render {
        /// minijinja's message, with the line.
        message: String,
    },
    /// transformers refuses to render an empty conversation.
    #[error("cannot apply a chat template to an empty conversation")]
    EmptyConversation,
    /// The tokenizer came without a chat template.
    #[error("the tokenizer has no chat template")]
    Missing,
}

/// The error `raise_exception` raises, found again in the render error's source chain.
#[derive(Debug)]
struct RaisedByTemplate(String);

impl std::fmt::Display for RaisedByTemplate {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl std::error::Error for RaisedByTemplate {}

const TEMPLATE_NAME: &str = "chat_template";

/// A compiled chat template with the special-token strings it can refer to.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    environment: Environment<'static>,
    source: String,
    special_tokens: BTreeMap<&'static str, String>,
}

impl ChatTemplate {
    /// Compiles `source`; fails on syntax errors. No special-token variables
    /// are set until [`ChatTemplate::with_special_tokens`].
    pub fn new(source: impl Into<String>) -> Result<Self, ChatTemplateError> {
        let source = source.into();
        let mut environment = Environment::new();
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(false)
            .build()
            .map_err(|error| ChatTemplateError::Syntax { message: error.to_string() })?;
        environment.set_syntax(syntax);
        environment.set_auto_escape_callback(|_| AutoEscape::None);
        environment.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        environment.set_formatter(|output, _state, value| {
            match value.as_str() {
                Some(text) => output.write_str(text),
                None => output.write_str(&python::python_str(value)),
            }
            .map_err(|error| Error::new(ErrorKind::WriteFailure, error.to_string()))
        });
        environment.add_function("raise_exception", |message: String| -> Result<Value, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, message.clone()).with_source(RaisedByTemplate(message)))
        });
        environment.add_function("strftime_now", |format: String| python::strftime_now(&format));
        environment.add_filter("tojson", |value: &Value, args: Rest<Value>, kwargs: Kwargs| {
            python::tojson(value, &args, &kwargs)
        });
        environment
            .add_template_owned(TEMPLATE_NAME, rewrite_generation_tags(&source).into_owned())
            .map_err(|error| ChatTemplateError::Syntax { message: error.to_string() })?;
        Ok(Self { environment, source, special_tokens: BTreeMap::new() })
    }

    /// The tokenizer's own template with its special tokens, as
    /// `tokenizer.apply_chat_template` uses them.
    pub fn from_tokenizer(tokenizer: &Tokenizer) -> Result<Self, ChatTemplateError> {
        let source = tokenizer.chat_template().ok_or(ChatTemplateError::Missing)?;
        Ok(Self::new(source)?.with_special_tokens(tokenizer.special_tokens()))
    }

    /// Makes `bos_token`, `eos_token`, `unk_token` and `pad_token` visible to
    /// the template (those the tokenizer has), as transformers passes its
    /// `special_tokens_map`.
    pub fn with_special_tokens(mut self, tokens: &SpecialTokens) -> Self {
        self.special_tokens.clear();
        for (name, token) in [
            ("bos_token", &tokens.bos),
            ("eos_token", &tokens.eos),
            ("unk_token", &tokens.unk),
            ("pad_token", &tokens.pad),
        ] {
            if let Some((text, _)) = token {
                self.special_tokens.insert(name, text.clone());
            }
        }
        self
    }

    /// The template source as given.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders `messages`, with the assistant header appended when
    /// `add_generation_prompt` (TRL's prompt side) or not (a full conversation).
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String, ChatTemplateError> {
        self.render_with(messages, &RenderOptions { add_generation_prompt, ..RenderOptions::default() })
    }

    /// Renders `messages` with tools and extra variables.
    pub fn render_with(&self, messages: &[Message], options: &RenderOptions) -> Result<String, ChatTemplateError> {
        if messages.is_empty() {
            return Err(ChatTemplateError::EmptyConversation);
        }
        let mut context: BTreeMap<String, Value> = BTreeMap::new();
        for (name, text) in &self.special_tokens {
            context.insert((*name).to_string(), Value::from(text.as_str()));
        }
        for (name, value) in &options.extra {
            context.insert(name.clone(), value.to_value());
        }
        context.insert("messages".into(), Value::from(messages.iter().map(Message::to_value).collect::<Vec<_>>()));
        context.insert("tools".into(), options.tools.as_ref().map_or(Value::from(()), OrderedJson::to_value));
        context.insert("documents".into(), Value::from(()));
        context.insert("add_generation_prompt".into(), Value::from(options.add_generation_prompt));
        let template = self
            .environment
            .get_template(TEMPLATE_NAME)
            .map_err(|error| ChatTemplateError::Render { message: error.to_string() })?;
        template.render(Value::from(context)).map_err(render_error)
    }
}

/// Turns a render error into [`ChatTemplateError::Raised`] when it came from `raise_exception`.
fn render_error(error: Error) -> ChatTemplateError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(current) = cause {
        if let Some(raised) = current.downcast_ref::<RaisedByTemplate>() {
            return ChatTemplateError::Raised { message: raised.0.clone() };
        }
        cause = current.source();
    }
    ChatTemplateError::Render { message: error.to_string() }
}

/// Rewrites transformers' `{% generation %}` … `{% endgeneration %}` tags
/// (which only record where assistant text lies) into `{% if true %}` …
/// `{% endif %}`, keeping whitespace-control markers so trimming is unchanged.
fn rewrite_generation_tags(source: &str) -> Cow<'_, str> {
    if !source.contains("generation") {
        return Cow::Borrowed(source);
    }
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        let tag = &rest[start..];
        let Some(end) = tag[2..].find("%}").map(|end| end + 2) else {
            out.push_str(tag);
            return Cow::Owned(out);
        };
        let inner = &tag[2..end];
        let leading = inner.strip_prefix(['-', '+']).map_or("", |_| &inner[..1]);
        let body = &inner[leading.len()..];
        let trailing = body.strip_suffix(['-', '+']).map_or("", |_| &body[body.len() - 1..]);
        let keyword = body[..body.len() - trailing.len()].trim();
        match keyword {
            "generation" => out.push_str(&format!("{{%{leading} if true {trailing}%}}")),
            "endgeneration" => out.push_str(&format!("{{%{leading} endif {trailing}%}}")),
            _ => out.push_str(&tag[..end + 2]),
        }
        rest = &tag[end + 2..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_tags_become_plain_blocks_with_their_whitespace_control() {
        assert_eq!(
            rewrite_generation_tags("a{%- generation %}b{% endgeneration -%} c{% if x %}"),
            "a{%- if true %}b{% endif -%} c{% if x %}"
        );
        assert_eq!(
            rewrite_generation_tags("{%}generation{%-%}{%+ generation +%}{%"),
            "{%}generation{%-%}{%+ if true +%}{%"
        );
        let template = ChatTemplate::new(
            "{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}{{ m.content }}{% endgeneration %}{% else %}[{{ m.content }}]{% endif %}{% endfor %}",
        )
        .unwrap();
        let messages = [Message::new("user", "q"), Message::new("assistant", "a")];
        assert_eq!(template.render(&messages, false).unwrap(), "[q]a");
    }

    #[test]
    fn strftime_now_renders_the_current_year() {
        let template = ChatTemplate::new("{{ strftime_now('%Y') }}").unwrap();
        let year: i64 = template.render(&[Message::new("user", "x")], false).unwrap().parse().unwrap();
        assert!(year >= 2024, "{year}");
    }
}
