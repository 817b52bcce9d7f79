//! The token estimate of `context.md`: no tokenizer, a weight per character.

use serde_json::Value;

use super::history::content_as_text;

/// CJK 0.6, ASCII letter 0.25, digit 0.2, anything else 0.4 tokens per character, floored.
pub fn estimate_tokens(text: &str) -> u64 {
    let weight: f64 = text.chars().map(char_weight).sum();
    weight.floor() as u64
}

fn char_weight(c: char) -> f64 {
    match c {
        '\u{4E00}'..='\u{9FFF}' => 0.6,
        c if c.is_ascii_alphabetic() => 0.25,
        c if c.is_ascii_digit() => 0.2,
        _ => 0.4,
    }
}

/// An OpenAI-shaped message: its content, plus its tool calls' names and arguments (Sage did
/// not count those; a long argument is as real to the model as a long answer).
pub fn message_tokens(message: &Value) -> u64 {
    let content = message
        .get("content")
        .map(content_as_text)
        .unwrap_or_default();
    let calls = message
        .get("tool_calls")
        .map(Value::to_string)
        .unwrap_or_default();
    estimate_tokens(&content) + estimate_tokens(&calls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_estimate_follows_the_weights() {
        assert_eq!(estimate_tokens("abcd"), 1);
        assert_eq!(estimate_tokens("12345"), 1);
        assert_eq!(estimate_tokens("你好"), 1);
        assert_eq!(estimate_tokens("你好你好你"), 3);
        assert_eq!(estimate_tokens("a b"), 0);
        assert_eq!(estimate_tokens("ab, cd"), 1);
    }

    #[test]
    fn tool_call_arguments_count() {
        let plain = serde_json::json!({"role": "assistant", "content": "ok"});
        let with_call = serde_json::json!({"role": "assistant", "content": "ok",
            "tool_calls": [{"id": "c", "type": "function",
                "function": {"name": "search", "arguments": "{\"query\":\"a long question\"}"}}]});
        assert!(message_tokens(&with_call) > message_tokens(&plain) + 5);
    }
}
