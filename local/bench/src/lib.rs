//! Inputs for the benchmarks: a long session as the event log stores it.

use sage_core::wire::{Event, EventType, FunctionCall, Role, StoredEvent, ToolCall};
use serde_json::Value;

/// `turns` turns, each a question, a tool call, its 2 KB result and a 1 KB answer.
pub fn long_session(turns: usize) -> Vec<StoredEvent> {
    let session = "bench-session";
    let mut events = Vec::with_capacity(turns * 4);
    let mut push = |event: Event| {
        let seq = events.len() as u64 + 1;
        events.push(StoredEvent::new(seq, event));
    };
    for turn in 0..turns {
        push(Event {
            content: Some(Value::String(format!(
                "question {turn}: how do the reports for region {} compare with last quarter?",
                turn % 17
            ))),
            message_id: Some(format!("u{turn}")),
            ..Event::new(session, Role::User, EventType::Normal)
        });
        push(Event {
            content: Some(Value::String(String::new())),
            message_id: Some(format!("c{turn}")),
            tool_calls: Some(vec![ToolCall {
                id: format!("call{turn}"),
                kind: "function".into(),
                function: FunctionCall {
                    name: "read_report".into(),
                    arguments: format!("{{\"region\": {}}}", turn % 17),
                },
            }]),
            ..Event::new(session, Role::Assistant, EventType::ToolCall)
        });
        push(Event {
            content: Some(Value::String(format!("row {turn}; ").repeat(200))),
            message_id: Some(format!("r{turn}")),
            tool_call_id: Some(format!("call{turn}")),
            ..Event::new(session, Role::Tool, EventType::ToolCallResult)
        });
        push(Event {
            content: Some(Value::String(
                "The figures rose in most districts while costs held steady. ".repeat(16),
            )),
            message_id: Some(format!("a{turn}")),
            ..Event::new(session, Role::Assistant, EventType::FinalAnswer)
        });
    }
    events
}

/// 3,000 made-up words (two or three syllables), the same on every run: text for the search
/// benchmark.
pub fn vocabulary() -> Vec<&'static str> {
    const SYLLABLES: &[&str] = &[
        "ka", "lo", "mi", "ren", "sa", "tu", "vel", "do", "ri", "nox", "pe", "qua", "zen", "bi",
        "cor", "fa", "gil", "hu", "jo", "wen",
    ];
    let mut words = Vec::with_capacity(3_000);
    'all: for a in SYLLABLES {
        for b in SYLLABLES {
            for c in ["", "ta", "ne", "ro", "li", "mus", "dan"] {
                words.push(&*Box::leak(format!("{a}{b}{c}").into_boxed_str()));
                if words.len() == 3_000 {
                    break 'all;
                }
            }
        }
    }
    words
}
