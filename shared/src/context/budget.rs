//! The budgets of one run and the history they let in (`context.md` steps 1–5): the active window
//! of whole turns, and older messages recalled into a history block.

use std::borrow::Cow;

use serde_json::Value;

use super::PromptMessage;
use super::compress::{Compressed, compress};
use super::history::{content_as_text, content_text};
use super::recall::rank;
use super::tokens::{estimate_tokens, message_tokens};

/// The active window always holds at least the last three turns, and at most twenty.
const MIN_ACTIVE_TURNS: usize = 3;
const MAX_ACTIVE_TURNS: usize = 20;
/// Past this estimate a run refuses its input.
pub const MAX_INPUT_TOKENS: u64 = 1_000_000;

/// The four `--context_*` settings, after a request's `context_budget_config`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ContextSettings {
    pub history_ratio: f64,
    pub active_ratio: f64,
    pub max_new_message_ratio: f64,
    /// 0 keeps every turn.
    pub recent_turns: u32,
}

impl Default for ContextSettings {
    fn default() -> Self {
        Self {
            history_ratio: 0.2,
            active_ratio: 0.3,
            max_new_message_ratio: 0.5,
            recent_turns: 0,
        }
    }
}

/// Token budgets of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budgets {
    pub max_model_len: u64,
    /// What the system prompt and the tool schemas leave.
    pub available: u64,
    pub history: u64,
    pub active: u64,
    pub max_new_tokens: u64,
}

impl Budgets {
    pub fn new(settings: &ContextSettings, max_model_len: u64, config_tokens: u64) -> Self {
        let available = max_model_len.saturating_sub(config_tokens);
        let share = |ratio: f64| (available as f64 * ratio).floor() as u64;
        Self {
            max_model_len,
            available,
            history: share(settings.history_ratio),
            active: share(settings.active_ratio),
            max_new_tokens: share(settings.max_new_message_ratio),
        }
    }
}

/// What a run's history contributes to its prompts.
#[derive(Debug, Clone)]
pub struct HistoryPlan {
    pub budgets: Budgets,
    /// Whole turns, newest last; the tool loop appends to them.
    pub active: Vec<PromptMessage>,
    /// The block for the system prompt: the session summary and recalled messages.
    pub history_block: Option<String>,
    /// Turns dropped by `recent_turns`, turns outside the active window, messages recalled.
    pub dropped_turns: usize,
    pub older_turns: usize,
    pub recalled: usize,
}

/// Splits `history` into turns, keeps the recent ones, takes the active window and recalls
/// older messages into the history budget: the session's summary first, then the messages
/// that best match the latest user message.
pub fn plan_history(
    history: Vec<PromptMessage>,
    summary: Option<&str>,
    settings: &ContextSettings,
    budgets: Budgets,
) -> HistoryPlan {
    let mut turns = split_turns(history);
    let dropped_turns = match settings.recent_turns as usize {
        0 => 0,
        keep => turns.len().saturating_sub(keep),
    };
    turns.drain(..dropped_turns);

    // Newest first, and only as far as the window can reach: older turns are never measured.
    let mut first_active = turns.len();
    let mut used = 0;
    for (index, turn) in turns.iter().enumerate().rev() {
        let taken = turns.len() - index;
        if taken > MAX_ACTIVE_TURNS {
            break;
        }
        let size: u64 = turn.iter().map(|m| message_tokens(&m.message)).sum();
        let forced = taken <= MIN_ACTIVE_TURNS;
        if !forced && used + size > budgets.active {
            break;
        }
        used += size;
        first_active = index;
    }
    let active: Vec<PromptMessage> = turns
        .split_off(first_active)
        .into_iter()
        .flatten()
        .collect();
    let older_turns = turns.len();
    let older: Vec<PromptMessage> = turns.into_iter().flatten().collect();

    let mut room = budgets.history;
    let mut lines = Vec::new();
    if let Some(summary) = summary.map(str::trim).filter(|s| !s.is_empty()) {
        let line = format!("Summary of the earlier conversation: {summary}");
        let tokens = estimate_tokens(&line);
        if tokens <= room {
            room -= tokens;
            lines.push(line);
        }
    }
    let query = active
        .iter()
        .rev()
        .find(|m| m.message["role"] == "user")
        .map(|m| content_as_text(&m.message["content"]))
        .unwrap_or_default();
    let candidates: Vec<(&PromptMessage, Cow<'_, str>)> = older
        .iter()
        .filter(|m| m.message["role"] != "system")
        .map(|m| (m, content_text(&m.message["content"])))
        .filter(|(_, text)| !text.trim().is_empty())
        .collect();
    let texts: Vec<&str> = candidates.iter().map(|(_, text)| text.as_ref()).collect();
    let mut recalled = 0;
    for index in rank(&query, &texts) {
        let (message, text) = &candidates[index];
        let line = format!(
            "[Memory {}] ({}): {text}",
            recalled + 1,
            local_time(message.timestamp)
        );
        let tokens = estimate_tokens(&line);
        if tokens > room {
            break;
        }
        room -= tokens;
        recalled += 1;
        lines.push(line);
    }
    HistoryPlan {
        budgets,
        active,
        history_block: (!lines.is_empty()).then(|| lines.join("\n")),
        dropped_turns,
        older_turns,
        recalled,
    }
}

/// The messages of one model call: the system prompt, then the active messages compressed to
/// the active budget, and further to 30 % of the new-message budget when the room left for the
/// answer gets small (below a fifth of the window, or below the new-message budget).
pub fn fit_call(
    system: Option<&str>,
    messages: &[PromptMessage],
    budgets: &Budgets,
    tool_tokens: u64,
    now: f64,
) -> Compressed {
    let system_tokens = system.map_or(0, estimate_tokens);
    let mut fitted = compress(messages, budgets.active, now);
    let used = system_tokens + tool_tokens + fitted.tokens;
    let left = budgets.max_model_len.saturating_sub(used);
    if left < budgets.max_model_len / 5 || left < budgets.max_new_tokens {
        let target = (budgets.max_new_tokens as f64 * 0.3).floor() as u64;
        let tighter = compress(messages, target, now);
        fitted = Compressed {
            level: tighter.level.max(fitted.level),
            ..tighter
        };
    }
    if let Some(system) = system {
        fitted
            .messages
            .insert(0, serde_json::json!({"role": "system", "content": system}));
        fitted.tokens += system_tokens;
    }
    fitted
}

/// A turn starts at each user message; what comes before the first one is a turn of its own.
fn split_turns(history: Vec<PromptMessage>) -> Vec<Vec<PromptMessage>> {
    let mut turns: Vec<Vec<PromptMessage>> = Vec::new();
    for message in history {
        match turns.last_mut() {
            Some(turn) if message.message["role"] != "user" => turn.push(message),
            _ => turns.push(vec![message]),
        }
    }
    turns
}

/// Seconds since the epoch as `YYYY-MM-DD HH:MM:SS` (UTC, the clock of a Lambda).
fn local_time(timestamp: f64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::OffsetDateTime::from_unix_timestamp(timestamp as i64)
        .ok()
        .and_then(|at| at.format(&format).ok())
        .unwrap_or_default()
}

/// Tokens of the tool schemas offered to the model.
pub fn tool_tokens(definitions: &[Value]) -> u64 {
    definitions
        .iter()
        .map(|definition| estimate_tokens(&definition.to_string()))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(role: &str, content: &str, timestamp: f64) -> PromptMessage {
        PromptMessage {
            message: json!({"role": role, "content": content}),
            timestamp,
        }
    }

    /// `n` turns of a question and an answer of about 100 tokens each.
    fn history(n: usize) -> Vec<PromptMessage> {
        (0..n)
            .flat_map(|i| {
                let topic = if i == 2 {
                    "about the lighthouse keeper"
                } else {
                    "on routine matters"
                };
                [
                    message("user", &format!("question {i} {topic}"), i as f64),
                    message("assistant", &"w".repeat(400), i as f64),
                ]
            })
            .chain([message("user", "tell me about the lighthouse keeper", 99.0)])
            .collect()
    }

    fn users(messages: &[PromptMessage]) -> Vec<String> {
        messages
            .iter()
            .filter(|m| m.message["role"] == "user")
            .map(|m| m.message["content"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn budgets_come_from_the_ratios_of_what_is_left() {
        let budgets = Budgets::new(&ContextSettings::default(), 10_000, 1_000);
        assert_eq!(budgets.available, 9_000);
        assert_eq!(
            (budgets.history, budgets.active, budgets.max_new_tokens),
            (1_800, 2_700, 4_500)
        );
        assert_eq!(
            Budgets::new(&ContextSettings::default(), 100, 500).available,
            0
        );
    }

    #[test]
    fn the_active_window_takes_whole_turns_and_recall_finds_the_matching_one() {
        let settings = ContextSettings::default();
        let budgets = Budgets {
            max_model_len: 10_000,
            available: 10_000,
            history: 300,
            active: 250,
            max_new_tokens: 5_000,
        };
        let plan = plan_history(history(10), None, &settings, budgets);
        assert_eq!(
            users(&plan.active),
            [
                "question 8 on routine matters",
                "question 9 on routine matters",
                "tell me about the lighthouse keeper"
            ]
        );
        assert_eq!(plan.older_turns, 8);
        let block = plan.history_block.unwrap();
        assert!(
            block.starts_with(
                "[Memory 1] (1970-01-01 00:00:02): question 2 about the lighthouse keeper"
            ),
            "{block}"
        );
        assert_eq!(plan.recalled, 1);
    }

    #[test]
    fn recent_turns_forgets_older_turns_entirely() {
        let settings = ContextSettings {
            recent_turns: 2,
            ..ContextSettings::default()
        };
        let budgets = Budgets::new(&settings, 100_000, 0);
        let plan = plan_history(history(10), None, &settings, budgets);
        assert_eq!(plan.dropped_turns, 9);
        assert_eq!(
            users(&plan.active),
            [
                "question 9 on routine matters",
                "tell me about the lighthouse keeper"
            ]
        );
        assert_eq!(plan.history_block, None);
    }

    #[test]
    fn the_summary_goes_first_into_the_history_budget() {
        let settings = ContextSettings::default();
        let budgets = Budgets::new(&settings, 2_000, 0);
        let plan = plan_history(
            history(10),
            Some("they discussed lighthouses"),
            &settings,
            budgets,
        );
        let block = plan.history_block.unwrap();
        assert!(
            block.starts_with(
                "Summary of the earlier conversation: they discussed lighthouses\n[Memory 1]"
            ),
            "{block}"
        );
    }

    #[test]
    fn a_small_room_for_the_answer_compresses_further() {
        let messages = history(3);
        let roomy = Budgets::new(&ContextSettings::default(), 100_000, 0);
        assert_eq!(fit_call(None, &messages, &roomy, 0, 100.0).level, None);
        let tight = Budgets::new(
            &ContextSettings {
                active_ratio: 0.9,
                max_new_message_ratio: 0.95,
                ..ContextSettings::default()
            },
            1_000,
            0,
        );
        let fitted = fit_call(Some("system"), &messages, &tight, 0, 100.0);
        assert!(fitted.level.is_some());
        assert_eq!(fitted.messages[0]["content"], "system");
        assert!(fitted.tokens <= 285 + 1, "{}", fitted.tokens);
    }
}
