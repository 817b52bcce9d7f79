//! Users' long-term memories (served by the Session function): list and forget your own.

use axum::Json;
use axum::extract::{Path, State};

use crate::domain::memory::Memories;
use crate::http::extract::Caller;
use crate::http::{ApiError, Envelope, ok};
use crate::wire::api::{MemoryForgotten, UserMemoryList};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

type Answer<T> = Result<Json<Envelope<T>>, ApiError>;

pub fn router(memories: Memories) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(forget))
        .with_state(memories)
}

#[utoipa::path(get, path = "/api/memories", tag = "session", responses((status = 200, body = Envelope<UserMemoryList>)))]
async fn list(State(memories): State<Memories>, caller: Caller) -> Answer<UserMemoryList> {
    Ok(ok(memories.list(&caller.user()?).await?))
}

#[utoipa::path(delete, path = "/api/memories/{key}", tag = "session", params(("key" = String, Path)), responses((status = 200, body = Envelope<MemoryForgotten>)))]
async fn forget(
    State(memories): State<Memories>,
    Path(key): Path<String>,
    caller: Caller,
) -> Answer<MemoryForgotten> {
    Ok(ok(memories.forget(&caller.user()?, &key).await?))
}
