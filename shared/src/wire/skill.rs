//! Skills as Sage's client lists and edits them (`/api/skills*`).

use serde::{Deserialize, Serialize};

/// A skill in the list: `user_id` "" is a system skill.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SkillView {
    pub name: String,
    pub description: String,
    pub user_id: String,
}

/// `GET /api/skills`
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SkillList {
    pub skills: Vec<SkillView>,
}

/// `GET /api/skills/content?name=`
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SkillContent {
    pub name: String,
    pub content: String,
}

/// `?name=` of `GET /api/skills/content` and `DELETE /api/skills`
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SkillQuery {
    pub name: String,
}

/// `PUT /api/skills/content`
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct SkillContentUpdate {
    pub name: String,
    pub content: String,
}

/// `POST /api/skills/import-url`
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct SkillImport {
    pub url: String,
}
