//! Knowledge bases (`/api/knowledge-base/*`, served by the Session function): create, list,
//! describe, change, delete and clear a base; add, list, delete and re-index its documents;
//! retrieve passages. Every route acts on the caller's own bases only.

use axum::Json;
use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::{DefaultBodyLimit, Path, State};

use crate::domain::DomainError;
use crate::domain::knowledge::{
    Knowledge, KnowledgeBaseChange, MAX_DOCUMENT_BYTES, NewDocument, NewKnowledgeBase, index_name,
};
use crate::http::extract::{Caller, ValidJson, ValidQuery};
use crate::http::{ApiError, Envelope, ok};
use crate::store::KnowledgeBaseRecord;
use crate::util::iso_time;
use crate::wire::knowledge::{
    DocumentList, DocumentView, DocumentsAdded, KnowledgeBaseCreated, KnowledgeBaseList,
    KnowledgeBaseListQuery, KnowledgeBaseNew, KnowledgeBaseQuery, KnowledgeBaseRef,
    KnowledgeBaseUpdate, KnowledgeBaseView, Owned, RetrieveAnswer, RetrieveRequest,
    RetrievedPassage,
};

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

type Answer<T> = Result<Json<Envelope<T>>, ApiError>;

/// Room for a few documents of the largest size and the multipart framing.
const UPLOAD_BODY_BYTES: usize = 4 * MAX_DOCUMENT_BYTES + 256 * 1024;
const MAX_PAGE_SIZE: usize = 100;

pub fn router(knowledge: Knowledge) -> OpenApiRouter {
    let (schemas, paths, add_files) = routes!(add_files);
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(list))
        .routes(routes!(info))
        .routes(routes!(update))
        .routes(routes!(remove))
        .routes(routes!(clear))
        .routes((
            schemas,
            paths,
            add_files.layer(DefaultBodyLimit::max(UPLOAD_BODY_BYTES)),
        ))
        .routes(routes!(documents))
        .routes(routes!(remove_document))
        .routes(routes!(redo_document))
        .routes(routes!(retrieve))
        .with_state(knowledge)
}

/// The upload form, as documented: the handler reads the multipart stream itself.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct DocumentsForm {
    kdb_id: String,
    /// Replace documents of the same name.
    r#override: Option<bool>,
    /// One part per document.
    #[schema(value_type = Vec<String>, format = Binary)]
    files: Vec<Vec<u8>>,
}

fn view(base: KnowledgeBaseRecord) -> KnowledgeBaseView {
    KnowledgeBaseView {
        index_name: index_name(&base.id),
        doc_num: base.documents.len(),
        create_time: iso_time(base.created_at),
        data_source: "file".into(),
        id: base.id,
        name: base.name,
        intro: base.intro,
        kind: base.kind,
        language: base.language,
        user_id: base.owner,
    }
}

/// The page's items and the total, `page` counted from 1.
fn page_of<T>(
    items: Vec<T>,
    page: Option<usize>,
    page_size: Option<usize>,
) -> Result<(Vec<T>, usize), ApiError> {
    let page = page.unwrap_or(1);
    let page_size = page_size.unwrap_or(10);
    if page == 0 {
        return Err(DomainError::invalid("page: from 1").into());
    }
    if !(1..=MAX_PAGE_SIZE).contains(&page_size) {
        return Err(DomainError::invalid(format!("page_size: 1 to {MAX_PAGE_SIZE}")).into());
    }
    let total = items.len();
    let items = items
        .into_iter()
        .skip((page - 1).saturating_mul(page_size))
        .take(page_size)
        .collect();
    Ok((items, total))
}

#[utoipa::path(post, path = "/api/knowledge-base/add", tag = "session", request_body = KnowledgeBaseNew, responses((status = 200, body = Envelope<KnowledgeBaseCreated>)))]
async fn create(
    State(knowledge): State<Knowledge>,
    caller: Caller,
    ValidJson(new): ValidJson<KnowledgeBaseNew>,
) -> Answer<KnowledgeBaseCreated> {
    let user = caller.user()?;
    let base = knowledge
        .create(
            user.as_str(),
            NewKnowledgeBase {
                name: new.name,
                kind: new.kind,
                intro: new.intro,
                language: new.language,
            },
        )
        .await?;
    Ok(ok(KnowledgeBaseCreated {
        kdb_id: base.id,
        user_id: base.owner,
    }))
}

#[utoipa::path(get, path = "/api/knowledge-base/list", tag = "session", params(KnowledgeBaseListQuery), responses((status = 200, body = Envelope<KnowledgeBaseList>)))]
async fn list(
    State(knowledge): State<Knowledge>,
    caller: Caller,
    ValidQuery(query): ValidQuery<KnowledgeBaseListQuery>,
) -> Answer<KnowledgeBaseList> {
    let user = caller.user()?;
    let bases = knowledge
        .list(
            user.as_str(),
            query.query_name.as_deref(),
            query.kind.as_deref(),
        )
        .await?;
    let (bases, total) = page_of(bases, query.page, query.page_size)?;
    Ok(ok(KnowledgeBaseList {
        list: bases.into_iter().map(view).collect(),
        total,
        user_id: user.to_string(),
    }))
}

#[utoipa::path(get, path = "/api/knowledge-base/info", tag = "session", params(KnowledgeBaseQuery), responses((status = 200, body = Envelope<KnowledgeBaseView>)))]
async fn info(
    State(knowledge): State<Knowledge>,
    caller: Caller,
    ValidQuery(query): ValidQuery<KnowledgeBaseQuery>,
) -> Answer<KnowledgeBaseView> {
    let user = caller.user()?;
    Ok(ok(view(knowledge.get(user.as_str(), &query.kdb_id).await?)))
}

#[utoipa::path(method(post, put), path = "/api/knowledge-base/update", tag = "session", request_body = KnowledgeBaseUpdate, responses((status = 200, body = Envelope<KnowledgeBaseView>)))]
async fn update(
    State(knowledge): State<Knowledge>,
    caller: Caller,
    ValidJson(change): ValidJson<KnowledgeBaseUpdate>,
) -> Answer<KnowledgeBaseView> {
    let user = caller.user()?;
    let base = knowledge
        .update(
            user.as_str(),
            &change.kdb_id,
            KnowledgeBaseChange {
                name: change.name,
                intro: change.intro,
                language: change.language,
            },
        )
        .await?;
    Ok(ok(view(base)))
}

#[utoipa::path(method(delete, post), path = "/api/knowledge-base/delete/{id}", tag = "session", params(("id" = String, Path)), responses((status = 200, body = Envelope<Owned>)))]
async fn remove(
    State(knowledge): State<Knowledge>,
    caller: Caller,
    Path(id): Path<String>,
) -> Answer<Owned> {
    let user = caller.user()?;
    knowledge.delete(user.as_str(), &id).await?;
    Ok(ok(Owned {
        user_id: user.to_string(),
    }))
}

#[utoipa::path(post, path = "/api/knowledge-base/clear", tag = "session", request_body = KnowledgeBaseRef, responses((status = 200, body = Envelope<Owned>)))]
async fn clear(
    State(knowledge): State<Knowledge>,
    caller: Caller,
    ValidJson(base): ValidJson<KnowledgeBaseRef>,
) -> Answer<Owned> {
    let user = caller.user()?;
    knowledge.clear(user.as_str(), &base.kdb_id).await?;
    Ok(ok(Owned {
        user_id: user.to_string(),
    }))
}

/// Multipart fields `kdb_id`, `override` (true/false) and one `files` per file.
#[utoipa::path(post, path = "/api/knowledge-base/doc/add_by_files", tag = "session", request_body(content = DocumentsForm, content_type = "multipart/form-data"), responses((status = 200, body = Envelope<DocumentsAdded>)))]
async fn add_files(
    State(knowledge): State<Knowledge>,
    caller: Caller,
    form: Result<Multipart, MultipartRejection>,
) -> Answer<DocumentsAdded> {
    let user = caller.user()?;
    let bad_form = |detail: String| ApiError::from(DomainError::invalid(detail));
    let mut form =
        form.map_err(|rejection| bad_form(format!("files: {}", rejection.body_text())))?;
    let mut base_id = None;
    let mut replace = false;
    let mut files = Vec::new();
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|error| bad_form(format!("files: {}", error.body_text())))?
    {
        match field.name() {
            Some("kdb_id") => {
                base_id = Some(
                    field
                        .text()
                        .await
                        .map_err(|error| bad_form(format!("kdb_id: {}", error.body_text())))?,
                )
            }
            Some("override") => {
                let value = field
                    .text()
                    .await
                    .map_err(|error| bad_form(format!("override: {}", error.body_text())))?;
                replace = match value.trim() {
                    "true" | "1" | "True" => true,
                    "" | "false" | "0" | "False" => false,
                    _ => return Err(bad_form("override: true or false".into())),
                };
            }
            Some("files" | "files[]" | "file") => {
                let name = field.file_name().unwrap_or("document.txt").to_owned();
                let bytes = field
                    .bytes()
                    .await
                    .map_err(|error| bad_form(format!("files: {}", error.body_text())))?;
                files.push(NewDocument { name, bytes });
            }
            _ => {}
        }
    }
    let base_id =
        base_id.ok_or_else(|| bad_form("kdb_id: the multipart field is missing".into()))?;
    let task_id = knowledge
        .add_documents(user.as_str(), base_id.trim(), replace, files)
        .await?;
    Ok(ok(DocumentsAdded {
        task_id,
        user_id: user.to_string(),
    }))
}

#[utoipa::path(get, path = "/api/knowledge-base/doc/list", tag = "session", params(KnowledgeBaseQuery), responses((status = 200, body = Envelope<DocumentList>)))]
async fn documents(
    State(knowledge): State<Knowledge>,
    caller: Caller,
    ValidQuery(query): ValidQuery<KnowledgeBaseQuery>,
) -> Answer<DocumentList> {
    let user = caller.user()?;
    let mut documents = knowledge.get(user.as_str(), &query.kdb_id).await?.documents;
    documents.reverse();
    let (documents, total) = page_of(documents, query.page, query.page_size)?;
    Ok(ok(DocumentList {
        list: documents
            .into_iter()
            .map(|doc| DocumentView {
                id: doc.id,
                doc_name: doc.name,
                status: doc.status.into(),
                create_time: iso_time(doc.created_at),
                task_id: doc.task_id,
                size: doc.size,
                passages: doc.passages,
                error: doc.error,
            })
            .collect(),
        total,
        user_id: user.to_string(),
    }))
}

#[utoipa::path(method(delete, post), path = "/api/knowledge-base/doc/delete/{id}", tag = "session", params(("id" = String, Path)), responses((status = 200, body = Envelope<Owned>)))]
async fn remove_document(
    State(knowledge): State<Knowledge>,
    caller: Caller,
    Path(id): Path<String>,
) -> Answer<Owned> {
    let user = caller.user()?;
    knowledge.delete_document(user.as_str(), &id).await?;
    Ok(ok(Owned {
        user_id: user.to_string(),
    }))
}

#[utoipa::path(post, path = "/api/knowledge-base/doc/redo/{id}", tag = "session", params(("id" = String, Path)), responses((status = 200, body = Envelope<Owned>)))]
async fn redo_document(
    State(knowledge): State<Knowledge>,
    caller: Caller,
    Path(id): Path<String>,
) -> Answer<Owned> {
    let user = caller.user()?;
    knowledge.redo_document(user.as_str(), &id).await?;
    Ok(ok(Owned {
        user_id: user.to_string(),
    }))
}

#[utoipa::path(post, path = "/api/knowledge-base/retrieve", tag = "session", request_body = RetrieveRequest, responses((status = 200, body = Envelope<RetrieveAnswer>)))]
async fn retrieve(
    State(knowledge): State<Knowledge>,
    caller: Caller,
    ValidJson(request): ValidJson<RetrieveRequest>,
) -> Answer<RetrieveAnswer> {
    let user = caller.user()?;
    let hits = knowledge
        .retrieve(
            user.as_str(),
            &request.kdb_id,
            &request.query,
            request.top_k,
        )
        .await?;
    Ok(ok(RetrieveAnswer {
        results: hits
            .into_iter()
            .map(|hit| RetrievedPassage {
                path: hit.source["path"].as_str().unwrap_or_default().to_owned(),
                passage: hit.source["passage"].as_u64().unwrap_or_default(),
                doc_id: hit.parent,
                doc_content: hit.text,
                score: hit.score,
                title: hit.title,
            })
            .collect(),
        user_id: user.to_string(),
    }))
}
