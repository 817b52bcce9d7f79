//! The usage ledger (Session function): `GET /api/usage` for the caller's own spending, and
//! `GET /api/usage/all` for an operator's view over every user.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;

use crate::domain::usage::Usage;
use crate::http::extract::{Caller, ValidQuery};
use crate::http::{ApiError, Envelope, ok};
use crate::wire::api::UsageReport;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

type Answer<T> = Result<Json<Envelope<T>>, ApiError>;

pub fn router(usage: Usage) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(own))
        .routes(routes!(everyone))
        .with_state(usage)
}

/// `from` and `to` are UTC days, `YYYY-MM-DD`; both included.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct Span {
    from: Option<String>,
    to: Option<String>,
}

#[utoipa::path(get, path = "/api/usage", tag = "session", params(Span), responses((status = 200, body = Envelope<UsageReport>)))]
async fn own(
    State(usage): State<Usage>,
    caller: Caller,
    ValidQuery(span): ValidQuery<Span>,
) -> Answer<UsageReport> {
    let days = Usage::span(span.from.as_deref(), span.to.as_deref())?;
    Ok(ok(usage.user_report(&caller.user()?, days).await?))
}

#[utoipa::path(get, path = "/api/usage/all", tag = "session", params(Span), responses((status = 200, body = Envelope<UsageReport>)))]
async fn everyone(
    State(usage): State<Usage>,
    caller: Caller,
    ValidQuery(span): ValidQuery<Span>,
) -> Answer<UsageReport> {
    caller.operator("only an admin may read every user's usage")?;
    let days = Usage::span(span.from.as_deref(), span.to.as_deref())?;
    Ok(ok(usage.all_report(days).await?))
}
