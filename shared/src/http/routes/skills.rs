//! Skills (`/api/skills*`, served by the Session function): list the system's and your own,
//! upload a zip, read and edit `SKILL.md`, delete.

use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::domain::DomainError;
use crate::domain::skills::{MAX_ARCHIVE_BYTES, Skills};
use crate::http::extract::{Caller, ValidJson, ValidQuery};
use crate::http::{ApiError, Envelope, ok};
use crate::wire::api::Empty;
use crate::wire::skill::{
    SkillContent, SkillContentUpdate, SkillImport, SkillList, SkillQuery, SkillView,
};

type Answer<T> = Result<Json<Envelope<T>>, ApiError>;

/// Room for the multipart framing around the largest archive.
const UPLOAD_BODY_BYTES: usize = MAX_ARCHIVE_BYTES + 64 * 1024;

pub fn router(skills: Skills) -> Router {
    Router::new()
        .route("/api/skills", get(list).delete(remove))
        .route(
            "/api/skills/upload",
            post(upload).layer(DefaultBodyLimit::max(UPLOAD_BODY_BYTES)),
        )
        .route("/api/skills/import-url", post(import_url))
        .route("/api/skills/content", get(content).put(update_content))
        .with_state(skills)
}

async fn list(State(skills): State<Skills>, caller: Caller) -> Answer<SkillList> {
    Ok(ok(skills.list(&caller.user()?).await?))
}

/// The multipart field `file`: a zip archive with `SKILL.md`.
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

async fn import_url(
    State(_skills): State<Skills>,
    caller: Caller,
    ValidJson(_import): ValidJson<SkillImport>,
) -> Answer<SkillView> {
    caller.user()?;
    Err(DomainError::Unavailable(
        "importing a skill from a URL is not available yet: download the zip and use \
         /api/skills/upload"
            .into(),
    )
    .into())
}

async fn content(
    State(skills): State<Skills>,
    caller: Caller,
    ValidQuery(query): ValidQuery<SkillQuery>,
) -> Answer<SkillContent> {
    Ok(ok(skills.content(&caller.user()?, &query.name).await?))
}

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
