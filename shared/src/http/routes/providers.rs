//! LLM providers (`/api/llm-provider/*`, served by the Session function): the caller's own.

use axum::extract::{Path, State};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};

use crate::domain::providers::Providers;
use crate::http::extract::{Caller, ValidJson};
use crate::http::{ApiError, Envelope, ok};
use crate::wire::provider::{ProviderCreated, ProviderInput, ProviderView};

type Answer<T> = Result<Json<Envelope<T>>, ApiError>;

pub fn router(providers: Providers) -> Router {
    Router::new()
        .route("/api/llm-provider/list", get(list))
        .route("/api/llm-provider/create", post(create))
        .route("/api/llm-provider/update/{provider_id}", put(update))
        .route("/api/llm-provider/delete/{provider_id}", delete(remove))
        .with_state(providers)
}

async fn list(State(providers): State<Providers>, caller: Caller) -> Answer<Vec<ProviderView>> {
    Ok(ok(providers.list(&caller.user()?).await?))
}

async fn create(
    State(providers): State<Providers>,
    caller: Caller,
    ValidJson(input): ValidJson<ProviderInput>,
) -> Answer<ProviderCreated> {
    Ok(ok(providers.create(&caller.user()?, input).await?))
}

async fn update(
    State(providers): State<Providers>,
    Path(provider_id): Path<String>,
    caller: Caller,
    ValidJson(input): ValidJson<ProviderInput>,
) -> Answer<ProviderView> {
    Ok(ok(providers
        .update(&caller.user()?, &provider_id, input)
        .await?))
}

/// Answers `data: null`, as Sage does.
async fn remove(
    State(providers): State<Providers>,
    Path(provider_id): Path<String>,
    caller: Caller,
) -> Answer<Option<()>> {
    providers.delete(&caller.user()?, &provider_id).await?;
    Ok(ok(None))
}
