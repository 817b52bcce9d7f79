//! The silent model calls that steer a simple-mode run (`sage-client.md` §5): the completion
//! judge after a text turn, and the tool selection when a run has more than
//! [`MAX_TOOLS_WITHOUT_SELECTION`] tools. Their answers are read, never streamed; a call that
//! fails or an answer that cannot be read never stops or loops a run: the judge then counts the
//! task as done, the selection keeps every tool.

use serde_json::{Value, json};

use super::{Agent, Prompt, RunError};
use crate::llm::ChatRequest;
use crate::tools::{TODO_READ, TODO_WRITE, ToolBox};

/// The judge's instruction, the last message of its call (`sage-mock-llm` recognises its first
/// words).
pub const JUDGE_INSTRUCTION: &str = "Decide whether the task is done: read the user's request \
    and the assistant's last reply above. Answer only with JSON: {\"reason\": \"...\", \
    \"task_interrupted\": true} when the work should stop now (the task is complete, or it needs \
    the user's input, or it cannot go on), or with \"task_interrupted\": false when the \
    assistant should keep working.";
/// The tool selection's instruction, its system message (`sage-mock-llm` recognises its first
/// words).
pub const TOOL_SELECTION_INSTRUCTION: &str = "Choose the tools needed for the user's request \
    from the list below. Answer only with a JSON list of tool names, such as [\"a\", \"b\"].";
/// Sage selects tools once a run has more than this many.
pub const MAX_TOOLS_WITHOUT_SELECTION: usize = 15;
/// Calls that end a simple-mode run once their tools have run.
pub const FINISHING_TOOLS: [&str; 2] = ["complete_task", "sys_finish_task"];

/// The first JSON value of `kind` (`{` or `[`) in a model's answer, fences and prose around it
/// ignored.
fn json_in(answer: &str, open: char, close: char) -> Option<Value> {
    let start = answer.find(open)?;
    let end = answer.rfind(close)?;
    serde_json::from_str(answer.get(start..=end)?).ok()
}

/// The judge's verdict: `Some(true)` to stop, `Some(false)` to go on, `None` when the answer
/// says neither.
pub fn judge_verdict(answer: &str) -> Option<bool> {
    match json_in(answer, '{', '}')?.get("task_interrupted")? {
        Value::Bool(stop) => Some(*stop),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

/// The tool names a selection answer lists.
pub fn selected_names(answer: &str) -> Option<Vec<String>> {
    let names: Vec<String> = json_in(answer, '[', ']')?
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    (!names.is_empty()).then_some(names)
}

impl Agent {
    /// One silent call that picks from `listing` (a list of `- name: what`) for the latest
    /// request, which goes below it.
    pub(super) async fn choose_for_request(
        &mut self,
        instruction: &str,
        mut listing: String,
        step: &str,
    ) -> Result<String, RunError> {
        listing.push_str(&format!(
            "\n\nThe user's request:\n{}",
            self.latest_request()
        ));
        let request = ChatRequest {
            settings: self.spec.settings.clone(),
            messages: vec![
                json!({"role": "system", "content": instruction}),
                json!({"role": "user", "content": listing}),
            ],
            tools: Vec::new(),
            forced_tool: None,
        };
        self.ask_silently(&request, step).await
    }

    /// A silent judge over the conversation so far: `instruction` goes last, `read` reads the
    /// answer. An answer it cannot read, or a failed call, gives `done`, so a judge never keeps
    /// a run going by failing; only a run limit is an error.
    pub(super) async fn judge<T: std::fmt::Debug>(
        &mut self,
        prompt: &Prompt,
        step: &str,
        call: u32,
        instruction: &str,
        read: fn(&str) -> Option<T>,
        done: T,
    ) -> Result<T, RunError> {
        let mut messages = prompt.fit(step, call);
        messages.push(json!({"role": "system", "content": instruction}));
        let request = ChatRequest {
            settings: self.spec.settings.clone(),
            messages,
            tools: Vec::new(),
            forced_tool: None,
        };
        let session_id = self.spec.session_id.clone();
        match self.ask_silently(&request, step).await {
            Ok(answer) => Ok(match read(&answer) {
                Some(verdict) => {
                    tracing::debug!(%session_id, step, ?verdict, "judged");
                    verdict
                }
                None => {
                    tracing::warn!(%session_id, step, "the judge's answer cannot be read; the task counts as done");
                    done
                }
            }),
            Err(error @ (RunError::Limit(_) | RunError::Unpriced(_))) => Err(error),
            Err(error) => {
                tracing::warn!(%session_id, step, %error, "the judge failed; the task counts as done");
                Ok(done)
            }
        }
    }

    /// After a text turn of a run with tools: whether the run should stop.
    pub(super) async fn judge_says_done(
        &mut self,
        prompt: &Prompt,
        call: u32,
    ) -> Result<bool, RunError> {
        self.judge(
            prompt,
            "completion_judge",
            call,
            JUDGE_INSTRUCTION,
            judge_verdict,
            true,
        )
        .await
    }

    /// Over [`MAX_TOOLS_WITHOUT_SELECTION`] tools, one model call picks the ones the request
    /// needs; the finishing tools (and multi mode's plan tools) stay whatever it picks.
    pub(super) async fn select_tools(&mut self, tools: &mut ToolBox) {
        if tools.len() <= MAX_TOOLS_WITHOUT_SELECTION {
            return;
        }
        let mut listed = String::from("Tools:");
        for spec in tools.specs() {
            let summary: String = spec.description.chars().take(200).collect();
            listed.push_str(&format!(
                "\n- {}: {}",
                spec.name,
                summary.replace('\n', " ")
            ));
        }
        let session_id = self.spec.session_id.clone();
        let answer = match self
            .choose_for_request(TOOL_SELECTION_INSTRUCTION, listed, "tool_selection")
            .await
        {
            Ok(answer) => answer,
            Err(error) => {
                tracing::warn!(%session_id, %error, "tool selection failed; every tool is kept");
                return;
            }
        };
        let Some(mut chosen) = selected_names(&answer) else {
            tracing::warn!(%session_id, "the tool selection's answer is not a list of names; every tool is kept");
            return;
        };
        chosen.extend(FINISHING_TOOLS.map(str::to_owned));
        if self.spec.mode == super::RunMode::Multi {
            chosen.extend([TODO_WRITE, TODO_READ].map(str::to_owned));
        }
        let before = tools.len();
        tools.keep_only(&chosen);
        tracing::debug!(%session_id, before, after = tools.len(), "tools selected");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_are_read_from_json_anywhere_in_the_answer() {
        assert_eq!(
            judge_verdict("{\"reason\": \"done\", \"task_interrupted\": true}"),
            Some(true)
        );
        assert_eq!(
            judge_verdict("```json\n{\"task_interrupted\": false}\n```"),
            Some(false)
        );
        assert_eq!(
            judge_verdict("{\"task_interrupted\": \"true\"}"),
            Some(true)
        );
        for unreadable in ["yes", "{\"reason\": \"x\"}", "{task_interrupted: true}", ""] {
            assert_eq!(judge_verdict(unreadable), None, "{unreadable}");
        }
    }

    #[test]
    fn selections_are_lists_of_names() {
        assert_eq!(
            selected_names("Use these: [\"echo\", \"file_read\"]"),
            Some(vec!["echo".to_owned(), "file_read".to_owned()])
        );
        assert_eq!(selected_names("[]"), None);
        assert_eq!(selected_names("echo, file_read"), None);
    }
}
