//! `load_skill`: the tool a run gets when it has skills; it returns one skill's instructions and
//! the files packed with it.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::RunSkill;
use crate::tools::{BuiltinTools, JsonObject, ToolCallError, ToolSpec};

pub const LOAD_SKILL: &str = "load_skill";

pub struct SkillTools {
    skills: Vec<RunSkill>,
}

/// The tool over a run's skills.
pub fn skill_tools(skills: Vec<RunSkill>) -> Arc<dyn BuiltinTools> {
    Arc::new(SkillTools { skills })
}

/// The system-prompt block that tells the model which skills it has.
pub fn prompt_block(skills: &[RunSkill]) -> String {
    let mut block = String::from(
        "You have these skills. Before doing a task a skill covers, call load_skill with its \
         name and follow its instructions.",
    );
    for skill in skills {
        block.push_str(&format!("\n- {}: {}", skill.name, skill.description));
    }
    block
}

/// Of a skill's packed files, at most this many characters go into the prompt when the message
/// asks for the skill; `load_skill` returns them whole.
const ASKED_SKILL_FILE_CHARS: usize = 16_000;

/// The system-prompt block for the skill a message asks for (`<skill>NAME</skill>`): its
/// instructions and the files packed with it.
pub fn asked_skill_block(skill: &RunSkill) -> String {
    let mut block = format!(
        "The user asked for the skill {}. Its instructions:\n{}",
        skill.name, skill.package.instructions
    );
    let mut room = ASKED_SKILL_FILE_CHARS;
    for file in &skill.package.files {
        let chars = file.content.chars().count();
        if chars <= room {
            room -= chars;
            block.push_str(&format!("\n\nIts file {}:\n{}", file.path, file.content));
        } else {
            block.push_str(&format!(
                "\n\nIts file {} ({chars} characters) comes whole from load_skill.",
                file.path
            ));
        }
    }
    block
}

/// `load_skill`; a run's spec names its skills, the listing's does not.
pub fn load_skill_spec(skill_names: Option<&[&str]>) -> ToolSpec {
    let mut skill_name = json!({"type": "string", "description": "the skill's name"});
    if let Some(names) = skill_names {
        skill_name["enum"] = json!(names);
    }
    ToolSpec {
        name: LOAD_SKILL.into(),
        description:
            "Load a skill: returns its instructions (SKILL.md) and the files packed with it.".into(),
        parameters: json!({
            "type": "object",
            "properties": {"skill_name": skill_name},
            "required": ["skill_name"],
        }),
    }
}

#[async_trait]
impl BuiltinTools for SkillTools {
    fn specs(&self) -> Vec<ToolSpec> {
        let names: Vec<&str> = self
            .skills
            .iter()
            .map(|skill| skill.name.as_str())
            .collect();
        vec![load_skill_spec(Some(&names))]
    }

    async fn call(&self, tool: &str, arguments: JsonObject) -> Result<Value, ToolCallError> {
        if tool != LOAD_SKILL {
            return Err(ToolCallError::NotFound(tool.to_owned()));
        }
        let name = arguments
            .get("skill_name")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                ToolCallError::Execution("`skill_name` (a string) is required".into())
            })?;
        let skill = self
            .skills
            .iter()
            .find(|skill| skill.name == name)
            .ok_or_else(|| {
                ToolCallError::Execution(format!(
                    "no skill {name} in this run; available: {}",
                    self.skills
                        .iter()
                        .map(|skill| skill.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
        Ok(json!({
            "skill_name": skill.name,
            "instructions": skill.package.instructions,
            "files": skill.package.files,
        }))
    }
}
