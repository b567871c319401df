//! Chat prompts: the model's own Jinja chat template (as transformers' apply_chat_template renders
//! it, with add_generation_prompt) applied to [{"role": ..., "content": ...}] messages.

use crate::error::{AiError, Result};
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Serialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// Reads `[{"role": "user", "content": "..."}, ...]`.
pub fn parse_messages(messages: &Value) -> Result<Vec<Message>> {
    let hint = r#"Write messages as '[{"role": "user", "content": "Hello"}]'; roles are system, user and assistant."#;
    let list = messages
        .as_array()
        .filter(|l| !l.is_empty())
        .ok_or_else(|| AiError::invalid("messages must be a non-empty JSON array").with_hint(hint))?;
    list.iter()
        .map(|m| {
            let field = |name: &str| m.get(name).and_then(Value::as_str).map(str::to_string);
            match (field("role"), field("content")) {
                (Some(role), Some(content)) if ["system", "user", "assistant"].contains(&role.as_str()) => {
                    Ok(Message { role, content })
                }
                _ => Err(AiError::invalid(format!("bad chat message: {m}")).with_hint(hint)),
            }
        })
        .collect()
}

/// The prompt for `messages`, ending where the assistant's reply begins.
pub fn render(template: &str, messages: &[Message], bos_token: &str, eos_token: &str) -> Result<String> {
    let mut env = minijinja::Environment::new();
    // transformers renders templates with Python's str methods available (.strip() and the like).
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |message: String| -> std::result::Result<String, minijinja::Error> {
        Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, message))
    });
    let bad = |e: minijinja::Error| AiError::invalid(format!("the model's chat template failed: {e}"));
    let template = env.template_from_str(template).map_err(bad)?;
    template
        .render(minijinja::context! {
            messages => messages,
            add_generation_prompt => true,
            bos_token => bos_token,
            eos_token => eos_token,
        })
        .map_err(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}\
        {{ '<|im_start|>system\nYou are helpful<|im_end|>\n' }}{% endif %}\
        {{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}\
        {% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn renders_chatml_with_a_default_system_message() {
        let messages = parse_messages(&serde_json::json!([{"role": "user", "content": "Hi"}])).unwrap();
        assert_eq!(
            render(CHATML, &messages, "", "").unwrap(),
            "<|im_start|>system\nYou are helpful<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn refuses_malformed_messages() {
        assert!(parse_messages(&serde_json::json!([{"role": "robot", "content": "x"}])).is_err());
        assert!(parse_messages(&serde_json::json!({"role": "user"})).is_err());
        assert!(parse_messages(&serde_json::json!([])).is_err());
    }
}
