//! Agents (`/api/agent/*`, served by the Session function): list the presets and your own,
//! save, change and delete your own.

use axum::extract::{Path, State};
use axum::routing::{get, post, put};
use axum::{Json, Router};

use crate::domain::agents::{Agents, ValidAgent};
use crate::http::extract::{Caller, ValidJson};
use crate::http::{ApiError, Envelope, ok};
use crate::wire::agent::{AgentConfig, AgentSaved, AgentView, PromptTemplate};
use crate::wire::api::Empty;

type Answer<T> = Result<Json<Envelope<T>>, ApiError>;

pub fn router(agents: Agents) -> Router {
    Router::new()
        .route("/api/agent/list", get(list))
        .route("/api/agent/create", post(create))
        .route("/api/agent/{agent_id}", put(update).delete(remove))
        .route(
            "/api/agent/template/default_system_prompt",
            get(default_system_prompt),
        )
        .with_state(agents)
}

async fn list(State(agents): State<Agents>, caller: Caller) -> Answer<Vec<AgentView>> {
    Ok(ok(agents.list(&caller.user()?, caller.is_admin()).await?))
}

async fn create(
    State(agents): State<Agents>,
    caller: Caller,
    ValidJson(config): ValidJson<AgentConfig>,
) -> Answer<AgentSaved> {
    let agent = ValidAgent::parse(config)?;
    Ok(ok(agents.create(&caller.user()?, agent).await?))
}

async fn update(
    State(agents): State<Agents>,
    Path(agent_id): Path<String>,
    caller: Caller,
    ValidJson(config): ValidJson<AgentConfig>,
) -> Answer<AgentSaved> {
    let agent = ValidAgent::parse(config)?;
    Ok(ok(agents
        .update(&caller.user()?, caller.is_admin(), &agent_id, agent)
        .await?))
}

async fn remove(
    State(agents): State<Agents>,
    Path(agent_id): Path<String>,
    caller: Caller,
) -> Answer<Empty> {
    agents
        .delete(&caller.user()?, caller.is_admin(), &agent_id)
        .await?;
    Ok(ok(Empty {}))
}

async fn default_system_prompt(
    State(agents): State<Agents>,
    _caller: Caller,
) -> Answer<PromptTemplate> {
    Ok(ok(agents.default_system_prompt()))
}
