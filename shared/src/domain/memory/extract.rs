//! After a run with user memory: one model call reads the last turns and names what is worth
//! remembering; new keys are stored, a known key is replaced only when its content changed.

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Memories, NewMemory};
use crate::domain::DomainError;
use crate::llm::{ChatModel, ChatRequest, LlmSettings, complete_text};
use crate::util::UserId;

/// The system message of the extraction call (`sage-mock-llm` recognises its first words).
pub const EXTRACTION_INSTRUCTION: &str = "Extract long-term memories about the user from the \
    conversation below: lasting preferences, requirements, persona details and constraints that \
    would help in future conversations. Answer with only a JSON array of objects {\"key\": a \
    short snake_case name, \"content\": what to remember, \"memory_type\": preference, \
    requirement, persona, constraint or note, \"tags\": [strings]}, or [] when there is nothing \
    new.";
const TURNS_READ: usize = 10;
const MAX_EXTRACTED: usize = 20;

#[derive(Deserialize)]
struct Extracted {
    #[serde(alias = "memory_key")]
    key: String,
    content: String,
    #[serde(default)]
    memory_type: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
}

/// The user and assistant texts of the last ten turns, one line each.
fn transcript(conversation: &[Value]) -> String {
    let users: Vec<usize> = conversation
        .iter()
        .enumerate()
        .filter(|(_, message)| message["role"] == "user")
        .map(|(index, _)| index)
        .collect();
    let start = users
        .len()
        .checked_sub(TURNS_READ)
        .map_or(0, |first| users[first]);
    conversation[start..]
        .iter()
        .filter_map(|message| {
            let role = message["role"].as_str()?;
            let text = message["content"].as_str()?.trim();
            (matches!(role, "user" | "assistant") && !text.is_empty())
                .then(|| format!("{role}: {text}"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The JSON array in the answer, tolerating prose or a code fence around it.
fn parse_answer(answer: &str) -> Vec<Extracted> {
    let (Some(start), Some(end)) = (answer.find('['), answer.rfind(']')) else {
        return Vec::new();
    };
    if end < start {
        return Vec::new();
    }
    let Ok(items) = serde_json::from_str::<Vec<Value>>(&answer[start..=end]) else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|item| serde_json::from_value(item).ok())
        .take(MAX_EXTRACTED)
        .collect()
}

impl Memories {
    /// Runs the extraction over `conversation` (model messages); returns how many memories were
    /// stored or changed.
    pub async fn extract(
        &self,
        user: &UserId,
        llm: &dyn ChatModel,
        settings: &LlmSettings,
        conversation: &[Value],
    ) -> Result<usize, DomainError> {
        let transcript = transcript(conversation);
        if transcript.is_empty() {
            return Ok(0);
        }
        let known = self.store.user_memories(user.as_str()).await?;
        let mut instruction = EXTRACTION_INSTRUCTION.to_owned();
        if !known.is_empty() {
            instruction.push_str("\nAlready known (repeat none of these unless it changed):");
            for memory in &known {
                instruction.push_str(&format!("\n- {}: {}", memory.key, memory.content));
            }
        }
        let request = ChatRequest {
            settings: settings.clone(),
            messages: vec![
                json!({"role": "system", "content": instruction}),
                json!({"role": "user", "content": transcript}),
            ],
            tools: Vec::new(),
            forced_tool: None,
        };
        let answer = complete_text(llm, &request)
            .await
            .map_err(|error| DomainError::Upstream(format!("memory extraction failed: {error}")))?;
        let mut stored = 0;
        for item in parse_answer(&answer) {
            let Ok(memory) = NewMemory::parse(
                &item.key,
                &item.content,
                item.memory_type.as_deref(),
                item.tags,
            ) else {
                continue;
            };
            let unchanged = known
                .iter()
                .any(|old| old.key == memory.key && old.content == memory.content);
            if !unchanged {
                self.remember(user, memory).await?;
                stored += 1;
            }
        }
        Ok(stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transcript_reads_the_last_ten_turns_of_text() {
        let mut conversation = Vec::new();
        for turn in 0..12 {
            conversation.push(json!({"role": "user", "content": format!("question {turn}")}));
            conversation.push(json!({"role": "assistant", "content": "", "tool_calls": []}));
            conversation.push(json!({"role": "tool", "content": "result"}));
            conversation.push(json!({"role": "assistant", "content": format!("answer {turn}")}));
        }
        let text = transcript(&conversation);
        assert!(
            text.starts_with("user: question 2\nassistant: answer 2"),
            "{text}"
        );
        assert!(!text.contains("result"));
        assert!(text.ends_with("assistant: answer 11"));
    }

    #[test]
    fn answers_are_read_through_fences_and_bad_items_skipped() {
        let answer = "Here:\n```json\n[{\"key\": \"tone\", \"content\": \"terse\"}, \
                      {\"nope\": 1}, {\"memory_key\": \"lang\", \"content\": \"fr\", \
                      \"memory_type\": \"preference\"}]\n```";
        let items = parse_answer(answer);
        assert_eq!(items.len(), 2);
        assert_eq!(items[1].key, "lang");
        assert!(parse_answer("nothing to add").is_empty());
        assert!(parse_answer("] [").is_empty());
    }
}
