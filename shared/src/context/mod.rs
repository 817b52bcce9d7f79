//! A session's conversation, read from its event log: events merged by `message_id`, then shaped
//! for the model and fitted to its context window.

use serde_json::{Value, json};

use crate::wire::{Event, EventType, MergedMessage, Role, ToolCall};

/// Merges events into messages: assistant deltas with one `message_id` concatenate, a user message
/// whose `message_id` was seen before replaces it in place (an edit), tool calls join the assistant
/// message of the same turn. Bookkeeping events (usage, stream end, errors, analysis) are not
/// part of the conversation the model sees.
pub fn merge_events<'a>(events: impl IntoIterator<Item = &'a Event>) -> Vec<MergedMessage> {
    let mut merged: Vec<MergedMessage> = Vec::new();
    let mut positions: std::collections::HashMap<String, usize> = Default::default();
    for event in events {
        let in_conversation = matches!(
            event.kind,
            EventType::DoSubtaskResult
                | EventType::FinalAnswer
                | EventType::ToolCall
                | EventType::ToolCallResult
        ) || matches!(event.role, Some(Role::User | Role::System));
        if !in_conversation {
            continue;
        }
        let Some(role) = event.role else { continue };
        let message_id = event
            .message_id
            .clone()
            .unwrap_or_else(|| format!("anonymous-{}", merged.len()));
        match positions.get(&message_id) {
            Some(&position) => {
                let message = &mut merged[position];
                if matches!(role, Role::User | Role::System) {
                    message.content = event.content.clone().unwrap_or(Value::Null);
                } else if let Some(calls) = &event.tool_calls {
                    message.tool_calls.extend(calls.iter().cloned());
                } else if let (Value::String(existing), Some(Value::String(delta))) =
                    (&mut message.content, &event.content)
                {
                    existing.push_str(delta);
                } else if let Some(content) = &event.content {
                    message.content = content.clone();
                }
            }
            None => {
                positions.insert(message_id.clone(), merged.len());
                merged.push(MergedMessage {
                    message_id,
                    role,
                    content: event
                        .content
                        .clone()
                        .unwrap_or_else(|| Value::String(String::new())),
                    tool_calls: event.tool_calls.clone().unwrap_or_default(),
                    tool_call_id: event.tool_call_id.clone(),
                    kind: event.kind,
                    timestamp: event.timestamp,
                });
            }
        }
    }
    merged
}

pub fn content_as_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        other => other.to_string(),
    }
}

/// OpenAI-shaped messages. A tool call whose result never arrived (a run that died between the
/// two) is left out, because providers reject an assistant tool call without its answer.
pub fn to_model_messages(merged: &[MergedMessage]) -> Vec<Value> {
    let answered: std::collections::HashSet<&str> = merged
        .iter()
        .filter_map(|message| message.tool_call_id.as_deref())
        .collect();
    let mut offered: std::collections::HashSet<&str> = Default::default();
    let mut messages = Vec::with_capacity(merged.len());
    for message in merged {
        match message.role {
            Role::User | Role::System => messages.push(json!({
                "role": if message.role == Role::User { "user" } else { "system" },
                "content": message.content,
            })),
            Role::Assistant => {
                let calls: Vec<&ToolCall> = message
                    .tool_calls
                    .iter()
                    .filter(|call| answered.contains(call.id.as_str()))
                    .collect();
                let text = content_as_text(&message.content);
                if calls.is_empty() && text.is_empty() {
                    continue;
                }
                let mut value = json!({"role": "assistant", "content": text});
                if !calls.is_empty() {
                    offered.extend(calls.iter().map(|call| call.id.as_str()));
                    value["tool_calls"] = json!(calls);
                }
                messages.push(value);
            }
            Role::Tool => {
                let Some(call_id) = message.tool_call_id.as_deref() else {
                    continue;
                };
                if !offered.contains(call_id) {
                    continue;
                }
                messages.push(json!({
                    "role": "tool",
                    "tool_call_id": call_id,
                    "content": content_as_text(&message.content),
                }));
            }
        }
    }
    messages
}

/// `api.md` §7: CJK 0.6, ASCII letter 0.25, digit 0.2, other 0.4 tokens per character, floored.
pub fn estimate_tokens(text: &str) -> u64 {
    let weight: f64 = text
        .chars()
        .map(|c| match c {
            '\u{4E00}'..='\u{9FFF}' => 0.6,
            c if c.is_ascii_alphabetic() => 0.25,
            c if c.is_ascii_digit() => 0.2,
            _ => 0.4,
        })
        .sum();
    weight.floor() as u64
}

pub fn message_tokens(message: &Value) -> u64 {
    let content = message
        .get("content")
        .map(content_as_text)
        .unwrap_or_default();
    let calls = message
        .get("tool_calls")
        .map(|calls| calls.to_string())
        .unwrap_or_default();
    estimate_tokens(&content) + estimate_tokens(&calls)
}

/// Drops the oldest whole turns (a turn starts at a user message) until the history fits in
/// `budget` tokens; the newest turn is always kept.
pub fn fit_to_budget(messages: Vec<Value>, budget: u64) -> Vec<Value> {
    let total: u64 = messages.iter().map(message_tokens).sum();
    if total <= budget {
        return messages;
    }
    let turn_starts: Vec<usize> = messages
        .iter()
        .enumerate()
        .filter(|(_, message)| message["role"] == "user")
        .map(|(index, _)| index)
        .collect();
    let newest_turn = turn_starts.last().copied().unwrap_or(0);
    let mut remaining = total;
    let mut cut = 0;
    for &start in turn_starts.iter().skip(1) {
        if remaining <= budget || cut >= newest_turn {
            break;
        }
        remaining -= messages[cut..start].iter().map(message_tokens).sum::<u64>();
        cut = start;
    }
    messages.into_iter().skip(cut).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::FunctionCall;

    fn user(id: &str, text: &str) -> Event {
        Event {
            content: Some(Value::String(text.into())),
            message_id: Some(id.into()),
            ..Event::new("s", Role::User, EventType::Normal)
        }
    }

    #[test]
    fn deltas_concatenate_and_user_edits_replace() {
        let events = vec![
            user("u1", "first"),
            Event::text("s", EventType::DoSubtaskResult, "a1", "SimpleAgent", "Hel"),
            Event::text("s", EventType::DoSubtaskResult, "a1", "SimpleAgent", "lo"),
            user("u1", "edited"),
        ];
        let merged = merge_events(&events);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].content, "edited");
        assert_eq!(merged[1].content, "Hello");
    }

    #[test]
    fn unanswered_tool_calls_are_not_sent_to_the_model() {
        let call = ToolCall {
            id: "c1".into(),
            kind: "function".into(),
            function: FunctionCall {
                name: "echo".into(),
                arguments: "{}".into(),
            },
        };
        let events = vec![
            user("u1", "hi"),
            Event {
                tool_calls: Some(vec![call]),
                message_id: Some("a1".into()),
                ..Event::new("s", Role::Assistant, EventType::ToolCall)
            },
        ];
        let messages = to_model_messages(&merge_events(&events));
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0]["role"], "user");
    }

    #[test]
    fn token_estimate_follows_the_weights() {
        assert_eq!(estimate_tokens("abcd"), 1);
        assert_eq!(estimate_tokens("12345"), 1);
        assert_eq!(estimate_tokens("你好"), 1);
        assert_eq!(estimate_tokens("你好你好你"), 3);
    }

    #[test]
    fn oldest_turns_are_dropped_first_and_the_newest_is_kept() {
        let turn = |text: &str| {
            vec![
                json!({"role": "user", "content": text}),
                json!({"role": "assistant", "content": text}),
            ]
        };
        let long = "x".repeat(400);
        let mut messages = turn(&long);
        messages.extend(turn("second"));
        messages.extend(turn(&long));
        let fitted = fit_to_budget(messages.clone(), 150);
        assert_eq!(fitted.len(), 2);
        assert_eq!(fitted[0]["content"], long.as_str());
        let roomy = fit_to_budget(messages.clone(), 10_000);
        assert_eq!(roomy.len(), 6);
    }
}
