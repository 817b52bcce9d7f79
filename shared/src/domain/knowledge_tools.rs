//! `retrieve_on_zavixai_db`, Sage's knowledge retrieval tool: a run with knowledge bases gets it,
//! over those bases of the caller only.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::DomainError;
use super::knowledge::{Knowledge, RunKnowledgeBase};
use crate::tools::{BuiltinTools, JsonObject, ToolCallError, ToolSpec};

pub const RETRIEVE: &str = "retrieve_on_zavixai_db";
const DEFAULT_TOP_K: usize = 5;

struct KnowledgeTools {
    knowledge: Knowledge,
    owner: String,
    bases: Vec<RunKnowledgeBase>,
}

pub fn knowledge_tools(
    knowledge: Knowledge,
    owner: &str,
    bases: Vec<RunKnowledgeBase>,
) -> Arc<dyn BuiltinTools> {
    Arc::new(KnowledgeTools {
        knowledge,
        owner: owner.to_owned(),
        bases,
    })
}

/// The system-prompt lines that name each base and its index, as Sage writes them.
pub fn knowledge_prompt_block(bases: &[RunKnowledgeBase]) -> String {
    let mut block = format!(
        "You can search these knowledge bases with {RETRIEVE}; cite the documents you use."
    );
    for base in bases {
        block.push_str(&format!(
            "\n\"{}数据库的index_name\": \"{}\"",
            base.name, base.index_name
        ));
        if !base.intro.is_empty() {
            block.push_str(&format!(" ({})", base.intro));
        }
    }
    block
}

#[async_trait]
impl BuiltinTools for KnowledgeTools {
    fn specs(&self) -> Vec<ToolSpec> {
        let names: Vec<&str> = self
            .bases
            .iter()
            .map(|base| base.index_name.as_str())
            .collect();
        vec![ToolSpec {
            name: RETRIEVE.into(),
            description: "Search a knowledge base: returns its most relevant passages, each \
                with the document it comes from."
                .into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "index_name": {"type": "string", "enum": names},
                    "query": {"type": "string"},
                    "top_k": {"type": "integer", "minimum": 1, "maximum": 20, "default": DEFAULT_TOP_K},
                },
                "required": ["index_name", "query"],
            }),
        }]
    }

    async fn call(&self, tool: &str, arguments: JsonObject) -> Result<Value, ToolCallError> {
        if tool != RETRIEVE {
            return Err(ToolCallError::NotFound(tool.to_owned()));
        }
        let text = |name: &str| {
            arguments
                .get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| ToolCallError::Execution(format!("`{name}` (a string) is required")))
        };
        let index_name = text("index_name")?;
        let query = text("query")?;
        let top_k = match arguments.get("top_k") {
            None | Some(Value::Null) => DEFAULT_TOP_K,
            Some(value) => value
                .as_u64()
                .filter(|k| (1..=20).contains(k))
                .ok_or_else(|| ToolCallError::Execution("`top_k`: 1 to 20".into()))?
                as usize,
        };
        let base = self
            .bases
            .iter()
            .find(|base| base.index_name == index_name || base.id == index_name)
            .ok_or_else(|| {
                ToolCallError::Execution(format!(
                    "no knowledge base {index_name} in this run; available: {}",
                    self.bases
                        .iter()
                        .map(|base| base.index_name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
        let hits = self
            .knowledge
            .search_bases(&self.owner, vec![base.id.clone()], query, top_k)
            .await
            .map_err(|error| match error {
                DomainError::Input(input) => ToolCallError::Execution(input.to_string()),
                other => ToolCallError::Execution(other.to_string()),
            })?;
        let results: Vec<Value> = hits
            .into_iter()
            .map(|hit| {
                json!({
                    "doc_id": hit.parent,
                    "title": hit.title,
                    "doc_content": hit.text,
                    "score": hit.score,
                    "path": hit.source.get("path").cloned().unwrap_or(Value::Null),
                    "knowledge_base": base.name,
                })
            })
            .collect();
        Ok(json!({"index_name": base.index_name, "results": results}))
    }
}
