//! The usage ledger (Session function): `GET /api/usage` for the caller's own spending, and
//! `GET /api/usage/all` for an operator's view over every user.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use crate::domain::usage::Usage;
use crate::http::extract::{Caller, ValidQuery};
use crate::http::{ApiError, Envelope, ok};
use crate::wire::api::UsageReport;

type Answer<T> = Result<Json<Envelope<T>>, ApiError>;

pub fn router(usage: Usage) -> Router {
    Router::new()
        .route("/api/usage", get(own))
        .route("/api/usage/all", get(everyone))
        .with_state(usage)
}

/// `from` and `to` are UTC days, `YYYY-MM-DD`; both included.
#[derive(Debug, Deserialize)]
struct Span {
    from: Option<String>,
    to: Option<String>,
}

async fn own(
    State(usage): State<Usage>,
    caller: Caller,
    ValidQuery(span): ValidQuery<Span>,
) -> Answer<UsageReport> {
    let days = Usage::span(span.from.as_deref(), span.to.as_deref())?;
    Ok(ok(usage.user_report(&caller.user()?, days).await?))
}

async fn everyone(
    State(usage): State<Usage>,
    caller: Caller,
    ValidQuery(span): ValidQuery<Span>,
) -> Answer<UsageReport> {
    caller.operator("only an admin may read every user's usage")?;
    let days = Usage::span(span.from.as_deref(), span.to.as_deref())?;
    Ok(ok(usage.all_report(days).await?))
}
