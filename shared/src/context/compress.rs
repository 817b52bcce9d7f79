//! Compression of the messages of one model call (`context.md` steps 7–9). It changes only what
//! is sent; the event log keeps everything.

use serde_json::Value;

use super::PromptMessage;
use super::tokens::message_tokens;

const DAY_SECS: f64 = 86_400.0;
const KEPT_CHARS: usize = 100;
const LONG_TOOL_OUTPUT_CHARS: usize = 200;
pub const STEPS_OMITTED: &str = "...[Execution process omitted]...";

/// The strongest compression a call needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// 0.5: unprotected messages older than a day went straight to level 2.
    Aged,
    /// 1: long tool outputs cut to head and tail; `<thinking>` blocks removed.
    Trimmed,
    /// 2: tool outputs and assistant text cut to their first 100 characters.
    Truncated,
    /// 3: the steps of old turns replaced by one line.
    StepsOmitted,
    /// 3, still too big: old turns dropped whole.
    TurnsDropped,
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Level::Aged => "0.5 (aged messages truncated)",
            Level::Trimmed => "1 (long tool outputs trimmed)",
            Level::Truncated => "2 (tool outputs and answers truncated)",
            Level::StepsOmitted => "3 (old turns' steps omitted)",
            Level::TurnsDropped => "3 (old turns dropped)",
        })
    }
}

/// What one call sends: the messages, their estimate, and the compression it took.
#[derive(Debug, Clone)]
pub struct Compressed {
    pub messages: Vec<Value>,
    pub tokens: u64,
    pub level: Option<Level>,
}

/// Fits `messages` into `target` tokens, in levels, stopping as soon as they fit. System
/// messages, every user message's text, the last turn and the trailing turns that fit in a fifth
/// of `target` are never changed.
pub fn compress(messages: &[PromptMessage], target: u64, now: f64) -> Compressed {
    let mut work = Work::new(messages);
    if work.total <= target {
        return work.finish(None);
    }
    let protected_from = work.protected_from_turn(target / 5);
    let unprotected: Vec<usize> = (0..work.messages.len())
        .filter(|&index| work.turns[index] < protected_from && !work.is_system(index))
        .collect();

    let aged: Vec<usize> = unprotected
        .iter()
        .copied()
        .filter(|&index| now - messages[index].timestamp > DAY_SECS)
        .collect();
    if !aged.is_empty() {
        for &index in &aged {
            work.rewrite(index, truncate);
        }
        if work.total <= target {
            return work.finish(Some(Level::Aged));
        }
    }
    for (level, rewrite) in [
        (Level::Trimmed, trim as fn(&mut Value)),
        (Level::Truncated, truncate),
    ] {
        for &index in &unprotected {
            work.rewrite(index, rewrite);
            if work.total <= target {
                return work.finish(Some(level));
            }
        }
    }
    for turn in 0..protected_from {
        work.omit_steps(turn);
        if work.total <= target {
            return work.finish(Some(Level::StepsOmitted));
        }
    }
    for turn in 0..protected_from {
        work.drop_turn(turn);
        if work.total <= target {
            break;
        }
    }
    work.finish(Some(Level::TurnsDropped))
}

struct Work {
    messages: Vec<Option<Value>>,
    tokens: Vec<u64>,
    turns: Vec<usize>,
    total: u64,
}

impl Work {
    fn new(messages: &[PromptMessage]) -> Self {
        let tokens: Vec<u64> = messages
            .iter()
            .map(|m| message_tokens(&m.message))
            .collect();
        let mut turn = 0;
        let turns = messages
            .iter()
            .enumerate()
            .map(|(index, m)| {
                if index > 0 && role(&m.message) == "user" {
                    turn += 1;
                }
                turn
            })
            .collect();
        Self {
            total: tokens.iter().sum(),
            messages: messages.iter().map(|m| Some(m.message.clone())).collect(),
            tokens,
            turns,
        }
    }

    fn is_system(&self, index: usize) -> bool {
        self.messages[index]
            .as_ref()
            .is_some_and(|m| role(m) == "system")
    }

    /// The first turn that stays untouched: the last one, and before it the turns that fit
    /// together in `allowance`.
    fn protected_from_turn(&self, allowance: u64) -> usize {
        let last = self.turns.last().copied().unwrap_or(0);
        let mut used = 0;
        let mut first = last;
        for turn in (0..last).rev() {
            let size: u64 = self.turn_indices(turn).map(|i| self.tokens[i]).sum();
            if used + size > allowance {
                break;
            }
            used += size;
            first = turn;
        }
        first
    }

    fn turn_indices(&self, turn: usize) -> impl Iterator<Item = usize> + '_ {
        self.turns
            .iter()
            .enumerate()
            .filter(move |(_, t)| **t == turn)
            .map(|(index, _)| index)
    }

    fn set(&mut self, index: usize, message: Option<Value>) {
        let tokens = message.as_ref().map_or(0, message_tokens);
        self.total = self.total - self.tokens[index] + tokens;
        self.tokens[index] = tokens;
        self.messages[index] = message;
    }

    fn rewrite(&mut self, index: usize, rewrite: fn(&mut Value)) {
        if let Some(mut message) = self.messages[index].clone() {
            rewrite(&mut message);
            self.set(index, Some(message));
        }
    }

    /// A turn's steps (everything but user and system messages) become one line.
    fn omit_steps(&mut self, turn: usize) {
        let steps: Vec<usize> = self
            .turn_indices(turn)
            .filter(|&i| {
                self.messages[i]
                    .as_ref()
                    .is_some_and(|m| !matches!(role(m), "user" | "system"))
            })
            .collect();
        let Some((&first, rest)) = steps.split_first() else {
            return;
        };
        let placeholder = serde_json::json!({"role": "assistant", "content": STEPS_OMITTED});
        if self.messages[first].as_ref() == Some(&placeholder) && rest.is_empty() {
            return;
        }
        self.set(first, Some(placeholder));
        for &index in rest {
            self.set(index, None);
        }
    }

    fn drop_turn(&mut self, turn: usize) {
        let indices: Vec<usize> = self.turn_indices(turn).collect();
        for index in indices {
            if !self.is_system(index) {
                self.set(index, None);
            }
        }
    }

    fn finish(self, level: Option<Level>) -> Compressed {
        Compressed {
            messages: self.messages.into_iter().flatten().collect(),
            tokens: self.total,
            level,
        }
    }
}

fn role(message: &Value) -> &str {
    message.get("role").and_then(Value::as_str).unwrap_or("")
}

fn text_of(message: &Value) -> Option<&str> {
    message.get("content").and_then(Value::as_str)
}

fn head(text: &str, chars: usize) -> String {
    text.chars().take(chars).collect()
}

fn tail(text: &str, chars: usize) -> String {
    let count = text.chars().count();
    text.chars().skip(count.saturating_sub(chars)).collect()
}

/// Level 1.
fn trim(message: &mut Value) {
    let Some(text) = text_of(message) else { return };
    let trimmed = match role(message) {
        "tool" => {
            let length = text.chars().count();
            if length <= LONG_TOOL_OUTPUT_CHARS {
                return;
            }
            format!(
                "{}…[Tool output truncated, total {length} chars]…{}",
                head(text, KEPT_CHARS),
                tail(text, KEPT_CHARS)
            )
        }
        "assistant" => {
            let without = without_thinking(text);
            if without == text {
                return;
            }
            without
        }
        _ => return,
    };
    message["content"] = Value::String(trimmed);
}

/// Level 2.
fn truncate(message: &mut Value) {
    let Some(text) = text_of(message) else { return };
    let length = text.chars().count();
    if length <= KEPT_CHARS {
        return;
    }
    let truncated = match role(message) {
        "tool" => format!(
            "{}...[Tool output omitted, length: {length}]",
            head(text, KEPT_CHARS)
        ),
        "assistant" => format!("{}...[Content truncated]", head(text, KEPT_CHARS)),
        _ => return,
    };
    message["content"] = Value::String(truncated);
}

fn without_thinking(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("<thinking>") {
        out.push_str(&rest[..start]);
        match rest[start..].find("</thinking>") {
            Some(end) => rest = &rest[start + end + "</thinking>".len()..],
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: f64 = 1_000_000.0;

    fn at(message: Value, timestamp: f64) -> PromptMessage {
        PromptMessage { message, timestamp }
    }

    fn fresh(message: Value) -> PromptMessage {
        at(message, NOW - 60.0)
    }

    /// A turn with a tool call, its long result and a long answer.
    fn tool_turn(n: usize, timestamp: f64) -> Vec<PromptMessage> {
        let call = json!([{"id": format!("c{n}"), "type": "function",
            "function": {"name": "read", "arguments": "{}"}}]);
        vec![
            at(
                json!({"role": "user", "content": format!("question {n}")}),
                timestamp,
            ),
            at(
                json!({"role": "assistant", "content": "<thinking>hmm</thinking>let me look",
                    "tool_calls": call}),
                timestamp,
            ),
            at(
                json!({"role": "tool", "tool_call_id": format!("c{n}"), "content": "r".repeat(1000)}),
                timestamp,
            ),
            at(
                json!({"role": "assistant", "content": "a".repeat(1000)}),
                timestamp,
            ),
        ]
    }

    fn conversation(turns: usize, timestamp: f64) -> Vec<PromptMessage> {
        let mut messages = vec![fresh(json!({"role": "system", "content": "be brief"}))];
        for n in 0..turns {
            messages.extend(tool_turn(n, timestamp));
        }
        messages.push(fresh(
            json!({"role": "user", "content": "the newest question"}),
        ));
        messages
    }

    fn total(messages: &[PromptMessage]) -> u64 {
        messages.iter().map(|m| message_tokens(&m.message)).sum()
    }

    #[test]
    fn what_fits_is_sent_unchanged() {
        let messages = conversation(2, NOW);
        let compressed = compress(&messages, total(&messages), NOW);
        assert_eq!(compressed.level, None);
        assert_eq!(compressed.messages.len(), messages.len());
    }

    #[test]
    fn level_one_trims_tool_outputs_and_thinking() {
        let messages = conversation(3, NOW);
        let compressed = compress(&messages, total(&messages) - 200, NOW);
        assert_eq!(compressed.level, Some(Level::Trimmed));
        let tool = &compressed.messages[3]["content"];
        assert!(
            tool.as_str()
                .unwrap()
                .contains("…[Tool output truncated, total 1000 chars]…"),
            "{tool}"
        );
        assert!(compressed.tokens <= total(&messages) - 200);
    }

    #[test]
    fn level_two_truncates_answers_and_protects_the_system_and_users() {
        let messages = conversation(3, NOW);
        let compressed = compress(&messages, 700, NOW);
        assert_eq!(compressed.level, Some(Level::Truncated), "{compressed:?}");
        let texts: Vec<String> = compressed
            .messages
            .iter()
            .map(|m| m["content"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert!(texts.iter().any(|t| t.ends_with("...[Content truncated]")));
        assert!(
            texts
                .iter()
                .any(|t| t.contains("...[Tool output omitted, length: "))
        );
        assert_eq!(compressed.messages[0]["content"], "be brief");
        for n in 0..3 {
            assert!(texts.contains(&format!("question {n}")));
        }
        assert_eq!(texts.last().unwrap(), "the newest question");
    }

    #[test]
    fn level_three_omits_steps_then_drops_turns_oldest_first() {
        let messages = conversation(6, NOW);
        let compressed = compress(&messages, 150, NOW);
        assert_eq!(
            compressed.level,
            Some(Level::StepsOmitted),
            "{compressed:?}"
        );
        assert_eq!(compressed.messages[2]["content"], STEPS_OMITTED);
        assert!(compressed.tokens <= 150);

        let compressed = compress(&messages, 20, NOW);
        assert_eq!(compressed.level, Some(Level::TurnsDropped));
        let texts: Vec<&str> = compressed
            .messages
            .iter()
            .filter_map(|m| m["content"].as_str())
            .collect();
        assert!(!texts.contains(&"question 0"));
        assert_eq!(texts.first(), Some(&"be brief"));
        assert_eq!(texts.last(), Some(&"the newest question"));
    }

    #[test]
    fn messages_older_than_a_day_go_to_level_two_at_once() {
        let mut messages = conversation(1, NOW - 2.0 * DAY_SECS);
        messages.extend(tool_turn(9, NOW));
        messages.push(fresh(
            json!({"role": "user", "content": "the newest question"}),
        ));
        let compressed = compress(&messages, total(&messages) - 10, NOW);
        assert_eq!(compressed.level, Some(Level::Aged));
        assert!(
            compressed.messages[4]["content"]
                .as_str()
                .unwrap()
                .ends_with("...[Content truncated]")
        );
        // The fresh turn is untouched.
        assert_eq!(compressed.messages[9]["content"], "a".repeat(1000));
    }

    #[test]
    fn tool_calls_keep_their_results_after_omission() {
        let messages = conversation(4, NOW);
        let compressed = compress(&messages, 150, NOW);
        let offered: Vec<&str> = compressed
            .messages
            .iter()
            .filter_map(|m| m.get("tool_calls"))
            .flat_map(|calls| calls.as_array().unwrap())
            .filter_map(|call| call["id"].as_str())
            .collect();
        let answered: Vec<&str> = compressed
            .messages
            .iter()
            .filter_map(|m| m.get("tool_call_id").and_then(Value::as_str))
            .collect();
        assert_eq!(offered, answered);
    }
}
