//! The OpenAPI document, generated from the handlers' `#[utoipa::path]` attributes and the wire
//! types: each function serves its own routes' part at `/openapi.json`, the shim all of them.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder, ServerBuilder};
use utoipa::{OpenApi as _, ToSchema};

use super::error::ErrorBody;

pub const DOCUMENT_PATH: &str = "/openapi.json";

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Sage Functions",
        description = "Sage Server's HTTP API, served by serverless functions. Every answer that \
            is not a stream is the envelope `{code, message, data, timestamp}`; every error is \
            `{code, message, error_detail, timestamp}` with `code` equal to the HTTP status. \
            With authentication on, send `Authorization: Bearer <token from /api/user/login>`.",
    ),
    components(schemas(ErrorBody)),
    tags(
        (name = "stream", description = "Stream function: runs and their event streams"),
        (name = "session", description = "Session function: conversations, accounts, agents, \
            providers, skills, knowledge bases, files, memory, usage"),
        (name = "mcp", description = "MCP-admin function: MCP servers and tools"),
        (name = "health", description = "Health function"),
    )
)]
struct Base;

/// A router with the document of its routes, kept together until the function is assembled.
pub struct Documented {
    pub routes: Router,
    pub api: OpenApi,
}

impl Documented {
    pub fn new((routes, api): (Router, OpenApi)) -> Self {
        Self { routes, api }
    }

    #[cfg(feature = "mcp")]
    pub fn merge(mut self, other: Documented) -> Self {
        self.routes = self.routes.merge(other.routes);
        self.api.merge(other.api);
        self
    }

    pub fn map_routes(self, map: impl FnOnce(Router) -> Router) -> Self {
        Self {
            routes: map(self.routes),
            api: self.api,
        }
    }

    /// The routes and `GET /openapi.json` describing them.
    pub fn into_router(self) -> Router {
        let body = serde_json::to_vec(&document(self.api)).expect("the document serialises");
        let body = axum::body::Bytes::from(body);
        self.routes.route(
            DOCUMENT_PATH,
            get(move || {
                let body = body.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], body).into_response() }
            }),
        )
    }
}

/// The finished document: the paths on the common base, every operation answering errors in
/// the envelope and accepting a bearer token (optional under `--no_auth`).
pub fn document(paths: OpenApi) -> OpenApi {
    let mut api = Base::openapi();
    api.merge(paths);
    api.info.version = env!("CARGO_PKG_VERSION").to_owned();
    api.servers = Some(vec![ServerBuilder::new().url("/").build()]);
    let components = api.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .build(),
        ),
    );
    let error = ResponseBuilder::new()
        .description("An error, in the envelope; `code` is the HTTP status")
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(ErrorBody::name())))
                .build(),
        )
        .build();
    for (path, item) in api.paths.paths.iter_mut() {
        let operations = [
            ("get", &mut item.get),
            ("put", &mut item.put),
            ("post", &mut item.post),
            ("delete", &mut item.delete),
            ("patch", &mut item.patch),
        ];
        for (method, operation) in operations {
            if let Some(operation) = operation {
                operation.operation_id = Some(operation_id(method, path));
                finish_operation(operation, &error);
            }
        }
    }
    api
}

/// Handlers' names repeat across functions (`list`, `remove`), so ids come from the route:
/// `DELETE /api/conversations/{session_id}` is `delete_api_conversations_session_id`.
fn operation_id(method: &str, path: &str) -> String {
    let words = path
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|word| !word.is_empty());
    std::iter::once(method)
        .chain(words)
        .collect::<Vec<_>>()
        .join("_")
}

fn finish_operation(operation: &mut Operation, error: &utoipa::openapi::Response) {
    for response in operation.responses.responses.values_mut() {
        if let RefOr::T(response) = response
            && response.description.is_empty()
        {
            response.description = "Success, in the envelope".into();
        }
    }
    operation
        .responses
        .responses
        .entry("default".into())
        .or_insert_with(|| RefOr::T(error.clone()));
    if operation.security.is_none() {
        operation.security = Some(vec![
            SecurityRequirement::new("bearer", Vec::<String>::new()),
            SecurityRequirement::default(),
        ]);
    }
}
