//! LLM providers (`/api/llm-provider/*`, served by the Session function): the caller's own.

use axum::Json;
use axum::extract::{Path, State};

use crate::domain::providers::Providers;
use crate::http::extract::{Caller, ValidJson};
use crate::http::{ApiError, Envelope, ok};
use crate::wire::api::Empty;
use crate::wire::provider::{ProviderCreated, ProviderInput, ProviderView};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

type Answer<T> = Result<Json<Envelope<T>>, ApiError>;

pub fn router(providers: Providers) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(create))
        .routes(routes!(update))
        .routes(routes!(remove))
        .with_state(providers)
}

#[utoipa::path(get, path = "/api/llm-provider/list", tag = "session", responses((status = 200, body = Envelope<Vec<ProviderView>>)))]
async fn list(State(providers): State<Providers>, caller: Caller) -> Answer<Vec<ProviderView>> {
    Ok(ok(providers.list(&caller.user()?).await?))
}

#[utoipa::path(post, path = "/api/llm-provider/create", tag = "session", request_body = ProviderInput, responses((status = 200, body = Envelope<ProviderCreated>)))]
async fn create(
    State(providers): State<Providers>,
    caller: Caller,
    ValidJson(input): ValidJson<ProviderInput>,
) -> Answer<ProviderCreated> {
    Ok(ok(providers.create(&caller.user()?, input).await?))
}

#[utoipa::path(put, path = "/api/llm-provider/update/{provider_id}", tag = "session", params(("provider_id" = String, Path)), request_body = ProviderInput, responses((status = 200, body = Envelope<ProviderView>)))]
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
#[utoipa::path(delete, path = "/api/llm-provider/delete/{provider_id}", tag = "session", params(("provider_id" = String, Path)), responses((status = 200, body = Envelope<Option<Empty>>, description = "`data` is null")))]
async fn remove(
    State(providers): State<Providers>,
    Path(provider_id): Path<String>,
    caller: Caller,
) -> Answer<Option<Empty>> {
    providers.delete(&caller.user()?, &provider_id).await?;
    Ok(ok(None))
}
