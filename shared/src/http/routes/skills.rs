//! Skills (`/api/skills*`, served by the Session function): list the system's and your own,
//! upload a zip, read and edit `SKILL.md`, delete.

use axum::Json;
use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::{DefaultBodyLimit, State};

use crate::domain::DomainError;
use crate::domain::skills::{MAX_ARCHIVE_BYTES, Skills};
use crate::http::extract::{Caller, ValidJson, ValidQuery};
use crate::http::{ApiError, Envelope, ok};
use crate::wire::api::Empty;
use crate::wire::skill::{
    SkillContent, SkillContentUpdate, SkillImport, SkillList, SkillQuery, SkillView,
};

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

type Answer<T> = Result<Json<Envelope<T>>, ApiError>;

/// Room for the multipart framing around the largest archive.
const UPLOAD_BODY_BYTES: usize = MAX_ARCHIVE_BYTES + 64 * 1024;

pub fn router(skills: Skills) -> OpenApiRouter {
    let (schemas, paths, upload) = routes!(upload);
    OpenApiRouter::new()
        .routes(routes!(list, remove))
        .routes((
            schemas,
            paths,
            upload.layer(DefaultBodyLimit::max(UPLOAD_BODY_BYTES)),
        ))
        .routes(routes!(import_url))
        .routes(routes!(content, update_content))
        .with_state(skills)
}

/// The upload form, as documented: the handler reads the multipart stream itself.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct SkillArchiveForm {
    /// A zip archive with `SKILL.md`.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

#[utoipa::path(get, path = "/api/skills", tag = "session", responses((status = 200, body = Envelope<SkillList>)))]
async fn list(State(skills): State<Skills>, caller: Caller) -> Answer<SkillList> {
    Ok(ok(skills.list(&caller.user()?).await?))
}

/// The multipart field `file`: a zip archive with `SKILL.md`.
#[utoipa::path(post, path = "/api/skills/upload", tag = "session", request_body(content = SkillArchiveForm, content_type = "multipart/form-data"), responses((status = 200, body = Envelope<SkillView>)))]
async fn upload(
    State(skills): State<Skills>,
    caller: Caller,
    form: Result<Multipart, MultipartRejection>,
) -> Answer<SkillView> {
    let user = caller.user()?;
    let bad_form = |detail: String| ApiError::from(DomainError::invalid(format!("file: {detail}")));
    let mut form = form.map_err(|rejection| bad_form(rejection.body_text()))?;
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|error| bad_form(error.body_text()))?
    {
        if field.name() == Some("file") {
            let archive = field
                .bytes()
                .await
                .map_err(|error| bad_form(error.body_text()))?;
            return Ok(ok(skills.upload(&user, &archive).await?));
        }
    }
    Err(bad_form(
        "the multipart field `file` (a zip archive) is missing".into(),
    ))
}

#[utoipa::path(post, path = "/api/skills/import-url", tag = "session", request_body = SkillImport, responses((status = 200, body = Envelope<SkillView>)))]
async fn import_url(
    State(skills): State<Skills>,
    caller: Caller,
    ValidJson(import): ValidJson<SkillImport>,
) -> Answer<SkillView> {
    Ok(ok(skills.import_url(&caller.user()?, &import.url).await?))
}

#[utoipa::path(get, path = "/api/skills/content", tag = "session", params(SkillQuery), responses((status = 200, body = Envelope<SkillContent>)))]
async fn content(
    State(skills): State<Skills>,
    caller: Caller,
    ValidQuery(query): ValidQuery<SkillQuery>,
) -> Answer<SkillContent> {
    Ok(ok(skills.content(&caller.user()?, &query.name).await?))
}

#[utoipa::path(put, path = "/api/skills/content", tag = "session", request_body = SkillContentUpdate, responses((status = 200, body = Envelope<SkillView>)))]
async fn update_content(
    State(skills): State<Skills>,
    caller: Caller,
    ValidJson(update): ValidJson<SkillContentUpdate>,
) -> Answer<SkillView> {
    Ok(ok(skills
        .update_content(
            &caller.user()?,
            caller.is_admin(),
            &update.name,
            update.content,
        )
        .await?))
}

#[utoipa::path(delete, path = "/api/skills", tag = "session", params(SkillQuery), responses((status = 200, body = Envelope<Empty>)))]
async fn remove(
    State(skills): State<Skills>,
    caller: Caller,
    ValidQuery(query): ValidQuery<SkillQuery>,
) -> Answer<Empty> {
    skills
        .delete(&caller.user()?, caller.is_admin(), &query.name)
        .await?;
    Ok(ok(Empty {}))
}
