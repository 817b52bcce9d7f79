//! Knowledge bases as Sage's client uses them (`/api/knowledge-base/*`); every answer carries
//! the caller's `user_id`, as Sage's does.

use serde::{Deserialize, Serialize};

/// `POST /api/knowledge-base/add`
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct KnowledgeBaseNew {
    pub name: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub intro: String,
    #[serde(default)]
    pub language: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KnowledgeBaseCreated {
    pub kdb_id: String,
    pub user_id: String,
}

/// `GET /api/knowledge-base/list` (the knowledge page sends `page_no`).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KnowledgeBaseListQuery {
    #[serde(default)]
    pub query_name: Option<String>,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default, alias = "page_no")]
    #[param(minimum = 1)]
    pub page: Option<usize>,
    #[serde(default)]
    #[param(minimum = 1, maximum = 100)]
    pub page_size: Option<usize>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KnowledgeBaseView {
    pub id: String,
    pub name: String,
    pub index_name: String,
    pub intro: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub language: String,
    #[serde(rename = "createTime")]
    pub create_time: String,
    #[serde(rename = "dataSource")]
    pub data_source: String,
    #[serde(rename = "docNum")]
    pub doc_num: usize,
    pub user_id: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KnowledgeBaseList {
    pub list: Vec<KnowledgeBaseView>,
    pub total: usize,
    pub user_id: String,
}

/// `?kdb_id=` of `GET /api/knowledge-base/info` and `GET /doc/list`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KnowledgeBaseQuery {
    pub kdb_id: String,
    #[serde(default, alias = "page_no")]
    #[param(minimum = 1)]
    pub page: Option<usize>,
    #[serde(default)]
    #[param(minimum = 1, maximum = 100)]
    pub page_size: Option<usize>,
}

/// `POST /api/knowledge-base/update`
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct KnowledgeBaseUpdate {
    pub kdb_id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub intro: Option<String>,
    #[serde(default)]
    pub language: Option<String>,
}

/// `POST /api/knowledge-base/clear`
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct KnowledgeBaseRef {
    pub kdb_id: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Owned {
    pub user_id: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DocumentsAdded {
    #[serde(rename = "taskId")]
    pub task_id: String,
    pub user_id: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DocumentView {
    pub id: String,
    pub doc_name: String,
    /// 0 waiting, 1 being indexed, 2 indexed, 3 failed.
    pub status: u8,
    pub create_time: String,
    pub task_id: String,
    pub size: u64,
    pub passages: u32,
    /// Why indexing failed, when it did.
    pub error: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DocumentList {
    pub list: Vec<DocumentView>,
    pub total: usize,
    pub user_id: String,
}

/// `POST /api/knowledge-base/retrieve`
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct RetrieveRequest {
    pub kdb_id: String,
    pub query: String,
    #[serde(default = "default_top_k")]
    pub top_k: usize,
}

fn default_top_k() -> usize {
    10
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RetrievedPassage {
    pub doc_id: String,
    pub doc_content: String,
    pub score: f64,
    pub title: String,
    pub path: String,
    pub passage: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RetrieveAnswer {
    pub results: Vec<RetrievedPassage>,
    pub user_id: String,
}
