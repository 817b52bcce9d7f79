//! A session's conversation, read from its event log: events merged by `message_id`, then shaped
//! for the model.

use serde_json::{Value, json};

use super::PromptMessage;
use crate::wire::{Event, EventType, MergedMessage, Role, ToolCall};

/// Merges events into messages: assistant deltas with one `message_id` concatenate, a user message
/// whose `message_id` was seen before replaces it in place (an edit), tool calls join the assistant
/// message of the same turn. Bookkeeping events (usage, stream end, errors, analysis) are not
/// part of the conversation the model sees.
pub fn merge_events<'a>(events: impl IntoIterator<Item = &'a Event>) -> Vec<MergedMessage> {
    merge_events_with(events, |_| false)
}

/// [`merge_events`], with the events `also` picks counted as conversation too (a multi-mode
/// continuation's own planning and observation texts).
pub fn merge_events_with<'a>(
    events: impl IntoIterator<Item = &'a Event>,
    also: impl Fn(&Event) -> bool,
) -> Vec<MergedMessage> {
    let mut merged: Vec<MergedMessage> = Vec::new();
    let mut positions: std::collections::HashMap<String, usize> = Default::default();
    for event in events {
        let in_conversation = matches!(
            event.kind,
            EventType::DoSubtaskResult
                | EventType::FinalAnswer
                | EventType::ToolCall
                | EventType::ToolCallResult
        ) || matches!(event.role, Some(Role::User | Role::System))
            || also(event);
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

/// Like [`content_as_text`], borrowing the common case (plain text).
pub fn content_text(content: &Value) -> std::borrow::Cow<'_, str> {
    match content {
        Value::String(text) => std::borrow::Cow::Borrowed(text),
        other => std::borrow::Cow::Owned(content_as_text(other)),
    }
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
pub fn to_model_messages(merged: Vec<MergedMessage>) -> Vec<PromptMessage> {
    let answered: std::collections::HashSet<String> = merged
        .iter()
        .filter_map(|message| message.tool_call_id.clone())
        .collect();
    let mut offered: std::collections::HashSet<String> = Default::default();
    let mut messages = Vec::with_capacity(merged.len());
    for message in merged {
        let text = |content: Value| match content {
            Value::String(text) => text,
            other => content_as_text(&other),
        };
        match message.role {
            Role::User | Role::System => messages.push(PromptMessage::new(
                json!({
                    "role": if message.role == Role::User { "user" } else { "system" },
                    "content": message.content,
                }),
                message.timestamp,
            )),
            Role::Assistant => {
                let calls: Vec<ToolCall> = message
                    .tool_calls
                    .into_iter()
                    .filter(|call| answered.contains(&call.id))
                    .collect();
                let text = text(message.content);
                if calls.is_empty() && text.is_empty() {
                    continue;
                }
                let mut value = json!({"role": "assistant", "content": text});
                if !calls.is_empty() {
                    offered.extend(calls.iter().map(|call| call.id.clone()));
                    value["tool_calls"] = json!(calls);
                }
                messages.push(PromptMessage::new(value, message.timestamp));
            }
            Role::Tool => {
                let Some(call_id) = message.tool_call_id else {
                    continue;
                };
                if !offered.contains(&call_id) {
                    continue;
                }
                messages.push(PromptMessage::new(
                    json!({
                        "role": "tool",
                        "tool_call_id": call_id,
                        "content": text(message.content),
                    }),
                    message.timestamp,
                ));
            }
        }
    }
    messages
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
        let messages = to_model_messages(merge_events(&events));
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].message["role"], "user");
    }
}
