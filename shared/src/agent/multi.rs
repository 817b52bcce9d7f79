//! Multi mode (`sage-client.md` §5): one forced `todo_write` call decomposes the task into a
//! plan (`task_decomposition`); then rounds of plan (`planning`), execute (a tool loop,
//! `do_subtask_result`), observe (`observation`) and a silent progress judge; then the summary
//! (`final_answer`). It stops when the plan has nothing open, when the judge reads the task as
//! completed, failed or waiting for the user, or after `max_loop_count − 1` rounds. A plan with
//! nothing open after the decomposition ends the run at once, without a summary. Between two
//! rounds it saves a checkpoint, and past its invocation's deadline it hands off there: the
//! continuation reads the plan back and begins with the next round.

use serde_json::{Value, json};

use super::{Agent, LoopEnd, MultiProgress, Prompt, RunError, ToolLoop};
use crate::context::content_as_text;
use crate::llm::ChatRequest;
use crate::tools::{TODO_READ, TODO_WRITE, TodoItem, ToolBox};
use crate::util::{new_id, now_secs};
use crate::wire::{Event, EventType, Role};

const DECOMPOSE_AGENT: &str = "TaskDecomposeAgent";
const PLANNING_AGENT: &str = "PlanningAgent";
const EXECUTOR_AGENT: &str = "ExecutorAgent";
const OBSERVATION_AGENT: &str = "ObservationAgent";

/// The decomposition's instruction, the last message of its call (`sage-mock-llm` recognises
/// the first words of each instruction here).
pub const DECOMPOSE_INSTRUCTION: &str = "Break the user's task into a short list of concrete \
    steps. Say in one or two sentences how you split it, then record the steps with one \
    todo_write call: ids \"1\", \"2\", ... in order, completed false.";
/// The planning step's instruction; the open tasks follow it.
pub const PLAN_INSTRUCTION: &str = "Plan the next step. Say which open task of the plan comes \
    next and how to carry it out, in a few sentences, without calling tools. The open tasks:";
/// The execution step's instruction; the task follows it.
pub const EXECUTE_INSTRUCTION: &str = "Carry out this task of the plan, with tools where they \
    help, then reply with what you did and found. The task:";
/// The observation step's instruction.
pub const OBSERVE_INSTRUCTION: &str = "Observe the step just taken: what it achieved and what \
    the user's task still needs, in a few sentences, without calling tools.";
/// The progress judge's instruction.
pub const PROGRESS_INSTRUCTION: &str = "Judge the progress of the user's task from the work \
    above. Answer only with JSON: {\"completion_status\": \"in_progress\", \"reason\": \"...\"}, \
    where completion_status is completed (the task is done), need_user_input (it cannot go on \
    without the user), failed (it cannot be done) or in_progress (more steps are needed).";

/// What the progress judge read in the work so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompletionStatus {
    InProgress,
    Completed,
    NeedUserInput,
    Failed,
}

/// The judge's `completion_status`; `None` when the answer carries none of the four.
pub fn progress_of(answer: &str) -> Option<CompletionStatus> {
    let start = answer.find('{')?;
    let end = answer.rfind('}')?;
    let verdict: Value = serde_json::from_str(answer.get(start..=end)?).ok()?;
    match verdict.get("completion_status")?.as_str()?.trim() {
        "in_progress" => Some(CompletionStatus::InProgress),
        "completed" => Some(CompletionStatus::Completed),
        "need_user_input" => Some(CompletionStatus::NeedUserInput),
        "failed" => Some(CompletionStatus::Failed),
        _ => None,
    }
}

/// The tasks of a `todo_write` / `todo_read` answer.
fn plan_in(answer: &Value) -> Vec<TodoItem> {
    answer
        .get("tasks")
        .cloned()
        .and_then(|tasks| serde_json::from_value(tasks).ok())
        .unwrap_or_default()
}

/// The run's own tasks (the ones its decomposition wrote) in the session's plan, which may
/// hold earlier runs' tasks too.
struct RunPlan {
    ids: Vec<String>,
    tasks: Vec<TodoItem>,
}

impl RunPlan {
    fn open(&self) -> Vec<&TodoItem> {
        self.ids
            .iter()
            .filter_map(|id| self.tasks.iter().find(|task| &task.id == id))
            .filter(|task| !task.completed)
            .collect()
    }

    fn listing(&self) -> String {
        self.open()
            .iter()
            .map(|task| format!("\n{}. {}", task.id, task.content))
            .collect()
    }
}

impl Agent {
    pub(super) async fn run_multi(
        &mut self,
        tools: &ToolBox,
        definitions: &[Value],
        mut prompt: Prompt,
    ) -> Result<(), RunError> {
        let resumed = self
            .spec
            .resumed
            .take()
            .and_then(|decided| decided.turn.multi);
        let (mut plan, first_round, since) = match resumed {
            Some(progress) => (
                self.stored_plan(tools, progress.plan).await,
                progress.rounds_done,
                progress.since,
            ),
            None => {
                let since = now_secs();
                match self.decompose(tools, definitions, &mut prompt).await? {
                    Some(plan) => (plan, 0, since),
                    None => return Ok(()),
                }
            }
        };
        let rounds = self.spec.max_loop_count.saturating_sub(1).max(1);
        let mut progress = CompletionStatus::InProgress;
        for round in first_round..rounds {
            let Some(task) = plan.open().first().map(|task| (*task).clone()) else {
                break;
            };
            if self.emitter.is_aborted() {
                return Ok(());
            }
            self.step_without_tools(
                &mut prompt,
                format!("{PLAN_INSTRUCTION}{}", plan.listing()),
                EventType::Planning,
                PLANNING_AGENT,
                "planning",
            )
            .await?;
            prompt.push(json!({
                "role": "system",
                "content": format!("{EXECUTE_INSTRUCTION} {}. {}", task.id, task.content),
            }));
            let end = self
                .tool_loop(
                    tools,
                    definitions,
                    &mut prompt,
                    ToolLoop {
                        agent: EXECUTOR_AGENT,
                        step: "execution",
                        judged: false,
                        cap: self.spec.max_loop_count,
                    },
                )
                .await?;
            match end {
                LoopEnd::Aborted | LoopEnd::AwaitingApproval => return Ok(()),
                LoopEnd::WaitingForUser => return self.end_multi(&mut prompt, false).await,
                _ => {}
            }
            self.complete_task(tools, &mut plan, &task).await;
            if end == LoopEnd::Finished {
                progress = CompletionStatus::Completed;
                break;
            }
            if self.emitter.is_aborted() {
                return Ok(());
            }
            self.step_without_tools(
                &mut prompt,
                OBSERVE_INSTRUCTION.to_owned(),
                EventType::Observation,
                OBSERVATION_AGENT,
                "observation",
            )
            .await?;
            progress = self.judge_progress(&prompt, round).await?;
            if progress != CompletionStatus::InProgress {
                break;
            }
            let between_rounds = MultiProgress {
                plan: plan.ids.clone(),
                rounds_done: round + 1,
                saved_at: now_secs(),
                since,
            };
            if round + 1 < rounds
                && !plan.open().is_empty()
                && self.checkpoint(0, Some(between_rounds)).await
            {
                return Ok(());
            }
        }
        if progress == CompletionStatus::InProgress && !plan.open().is_empty() {
            self.say_capped().await;
        }
        self.end_multi(&mut prompt, true).await
    }

    /// The summary (unless the run waits for the user) and the suggestions.
    async fn end_multi(&mut self, prompt: &mut Prompt, summarize: bool) -> Result<(), RunError> {
        if summarize && !self.emitter.is_aborted() {
            self.summarize(prompt).await?;
        }
        if self.spec.suggest && !self.emitter.is_aborted() {
            self.suggest(prompt).await?;
        }
        Ok(())
    }

    /// The forced `todo_write` call: its text streams as `task_decomposition`, its call as a
    /// `tool_call`, the plan it stored as `task_decomposition` text. `None` when it leaves
    /// nothing open.
    async fn decompose(
        &mut self,
        tools: &ToolBox,
        definitions: &[Value],
        prompt: &mut Prompt,
    ) -> Result<Option<RunPlan>, RunError> {
        let todo_write: Vec<Value> = definitions
            .iter()
            .filter(|definition| definition["function"]["name"] == TODO_WRITE)
            .cloned()
            .collect();
        let mut messages = prompt.fit("task_decomposition", 0);
        messages.push(json!({"role": "system", "content": DECOMPOSE_INSTRUCTION}));
        let request = ChatRequest {
            settings: self.spec.settings.clone(),
            messages,
            forced_tool: (!todo_write.is_empty()).then(|| TODO_WRITE.to_owned()),
            tools: todo_write,
        };
        let turn = self
            .stream_turn(
                &request,
                EventType::TaskDecomposition,
                DECOMPOSE_AGENT,
                "task_decomposition",
            )
            .await?;
        let Some(call) = turn
            .tool_calls
            .iter()
            .find(|call| call.function.name == TODO_WRITE)
            .cloned()
        else {
            tracing::info!(session_id = %self.spec.session_id, "the decomposition wrote no plan; the run ends");
            return Ok(None);
        };
        if self.emitter.is_aborted() {
            return Ok(None);
        }
        self.emitter
            .emit(Event {
                tool_calls: Some(vec![call.clone()]),
                message_id: Some(turn.message_id.clone()),
                agent_name: Some(DECOMPOSE_AGENT.into()),
                ..Event::new(&self.spec.session_id, Role::Assistant, EventType::ToolCall)
            })
            .await;
        let answer = tools
            .call(TODO_WRITE, &call.function.arguments)
            .await
            .unwrap_or_else(|error| error.to_content(TODO_WRITE));
        prompt.push(json!({"role": "assistant", "content": turn.text, "tool_calls": [call]}));
        prompt.push(json!({
            "role": "tool",
            "tool_call_id": call.id,
            "content": content_as_text(&answer),
        }));
        let written: Vec<TodoItem> = serde_json::from_str::<Value>(&call.function.arguments)
            .ok()
            .map(|arguments| plan_in(&arguments))
            .unwrap_or_default();
        let plan = RunPlan {
            ids: written.into_iter().map(|task| task.id).collect(),
            tasks: plan_in(&answer),
        };
        let stated = if plan.open().is_empty() {
            format!("\nNo open steps: {}", content_as_text(&answer))
        } else {
            plan.listing()
        };
        self.emit_text(
            EventType::TaskDecomposition,
            DECOMPOSE_AGENT,
            &new_id(),
            stated,
        )
        .await;
        Ok((!plan.open().is_empty()).then_some(plan))
    }

    /// A streamed step without tools whose instruction goes last; its answer joins the prompt.
    async fn step_without_tools(
        &mut self,
        prompt: &mut Prompt,
        instruction: String,
        kind: EventType,
        agent: &str,
        step: &str,
    ) -> Result<(), RunError> {
        let mut messages = prompt.fit(step, 0);
        messages.push(json!({"role": "system", "content": instruction}));
        let request = ChatRequest {
            settings: self.spec.settings.clone(),
            messages,
            tools: Vec::new(),
            forced_tool: None,
        };
        let turn = self.stream_turn(&request, kind, agent, step).await?;
        if !turn.text.trim().is_empty() {
            prompt.push(json!({"role": "assistant", "content": turn.text}));
        }
        Ok(())
    }

    /// A continuation's plan: the tasks its decomposition wrote, as the session's plan now
    /// holds them.
    async fn stored_plan(&self, tools: &ToolBox, ids: Vec<String>) -> RunPlan {
        let tasks = match tools.call(TODO_READ, "{}").await {
            Ok(answer) => plan_in(&answer),
            Err(error) => {
                tracing::warn!(session_id = %self.spec.session_id, %error, "the plan could not be read; the run goes on without open tasks");
                Vec::new()
            }
        };
        RunPlan { ids, tasks }
    }

    /// Marks the executed task done in the stored plan and takes the plan as it now stands
    /// (with whatever the executor changed in it).
    async fn complete_task(&self, tools: &ToolBox, plan: &mut RunPlan, task: &TodoItem) {
        let done = TodoItem {
            completed: true,
            ..task.clone()
        };
        let arguments = json!({"tasks": [done]}).to_string();
        match tools.call(TODO_WRITE, &arguments).await {
            Ok(answer) => plan.tasks = plan_in(&answer),
            Err(error) => {
                tracing::warn!(session_id = %self.spec.session_id, %error, "the plan could not be updated");
                if let Some(kept) = plan.tasks.iter_mut().find(|kept| kept.id == task.id) {
                    kept.completed = true;
                }
            }
        }
    }

    /// The silent progress judge after a round. An answer without a readable status counts as
    /// completed, so a confused judge never keeps a run going.
    async fn judge_progress(
        &mut self,
        prompt: &Prompt,
        round: u32,
    ) -> Result<CompletionStatus, RunError> {
        self.judge(
            prompt,
            "task_completion_judge",
            round,
            PROGRESS_INSTRUCTION,
            progress_of,
            CompletionStatus::Completed,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_read_from_json_anywhere_in_the_answer() {
        assert_eq!(
            progress_of("```json\n{\"completion_status\": \"in_progress\"}\n```"),
            Some(CompletionStatus::InProgress)
        );
        assert_eq!(
            progress_of("{\"reason\": \"x\", \"completion_status\": \"need_user_input\"}"),
            Some(CompletionStatus::NeedUserInput)
        );
        assert_eq!(
            progress_of("{\"completion_status\": \"failed\"}"),
            Some(CompletionStatus::Failed)
        );
        for unreadable in ["completed", "{\"completion_status\": \"maybe\"}", "{}", ""] {
            assert_eq!(progress_of(unreadable), None, "{unreadable}");
        }
    }
}
