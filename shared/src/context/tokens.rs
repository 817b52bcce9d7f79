//! The token estimate of `context.md`: no tokenizer, a weight per character.

use serde_json::Value;

use super::history::content_as_text;

/// CJK 0.6, ASCII letter 0.25, digit 0.2, anything else 0.4 tokens per character, floored.
/// Counted in hundredths over the UTF-8 bytes: a character is its first byte, and U+4E00 to
/// U+9FFF are the three-byte characters led by E4 B8.. to E9.
pub fn estimate_tokens(text: &str) -> u64 {
    let bytes = text.as_bytes();
    let mut hundredths: u64 = 0;
    for (index, &byte) in bytes.iter().enumerate() {
        hundredths += match byte {
            b'a'..=b'z' | b'A'..=b'Z' => 25,
            b'0'..=b'9' => 20,
            0x80..=0xBF => 0,
            0xE5..=0xE9 => 60,
            0xE4 if bytes.get(index + 1).is_some_and(|next| *next >= 0xB8) => 60,
            _ => 40,
        };
    }
    hundredths / 100
}

/// An OpenAI-shaped message: its content, plus its tool calls' names and arguments (Sage did
/// not count those; a long argument is as real to the model as a long answer).
pub fn message_tokens(message: &Value) -> u64 {
    let content = match message.get("content") {
        Some(Value::String(text)) => estimate_tokens(text),
        Some(other) => estimate_tokens(&content_as_text(other)),
        None => 0,
    };
    let calls = message
        .get("tool_calls")
        .map_or(0, |calls| estimate_tokens(&calls.to_string()));
    content + calls
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
        // U+4DFF is just below the CJK block, U+A000 just above it; é is not ASCII.
        assert_eq!(estimate_tokens("\u{4DFF}\u{4E00}\u{9FFF}\u{A000}é"), 2);
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
