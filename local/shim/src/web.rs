//! The chat page at `/` and the API docs at `/docs/`: the build of `local/web` (committed under
//! `local/web/dist`), embedded in the release binary and served with no other origin involved.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use rust_embed::RustEmbed;
use tower_http::compression::CompressionLayer;

#[derive(RustEmbed)]
#[folder = "../web/dist"]
struct Assets;

/// Hashed file names never change their content; the pages themselves are always revalidated.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const REVALIDATE: &str = "no-cache";

pub fn routes() -> Router {
    Router::new()
        .route("/", get(|| async { asset("index.html", REVALIDATE) }))
        .route(
            "/assets/{*file}",
            get(|Path(file): Path<String>| async move {
                asset(&format!("assets/{file}"), IMMUTABLE)
            }),
        )
        .route("/docs", get(|| async { Redirect::permanent("/docs/") }))
        .route(
            "/docs/",
            get(|| async { asset("docs/index.html", REVALIDATE) }),
        )
        .route(
            "/docs/{*file}",
            get(|Path(file): Path<String>| async move {
                asset(&format!("docs/{file}"), REVALIDATE)
            }),
        )
        .layer(CompressionLayer::new())
}

fn asset(path: &str, cache: &'static str) -> Response {
    let Some(file) = Assets::get(path) else {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    };
    let content_type = HeaderValue::from_str(file.metadata.mimetype())
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        file.data,
    )
        .into_response()
}
