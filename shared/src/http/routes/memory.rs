//! Users' long-term memories (served by the Session function): list and forget your own.

use axum::extract::{Path, State};
use axum::routing::{delete, get};
use axum::{Json, Router};

use crate::domain::memory::Memories;
use crate::http::extract::Caller;
use crate::http::{ApiError, Envelope, ok};
use crate::wire::api::{MemoryForgotten, UserMemoryList};

type Answer<T> = Result<Json<Envelope<T>>, ApiError>;

pub fn router(memories: Memories) -> Router {
    Router::new()
        .route("/api/memories", get(list))
        .route("/api/memories/{key}", delete(forget))
        .with_state(memories)
}

async fn list(State(memories): State<Memories>, caller: Caller) -> Answer<UserMemoryList> {
    Ok(ok(memories.list(&caller.user()?).await?))
}

async fn forget(
    State(memories): State<Memories>,
    Path(key): Path<String>,
    caller: Caller,
) -> Answer<MemoryForgotten> {
    Ok(ok(memories.forget(&caller.user()?, &key).await?))
}
