//! Skills as Sage's client lists and edits them (`/api/skills*`).

use serde::{Deserialize, Serialize};

/// A skill in the list: `user_id` "" is a system skill.
#[derive(Debug, Clone, Serialize)]
pub struct SkillView {
    pub name: String,
    pub description: String,
    pub user_id: String,
}

/// `GET /api/skills`
#[derive(Debug, Serialize)]
pub struct SkillList {
    pub skills: Vec<SkillView>,
}

/// `GET /api/skills/content?name=`
#[derive(Debug, Serialize)]
pub struct SkillContent {
    pub name: String,
    pub content: String,
}

/// `?name=` of `GET /api/skills/content` and `DELETE /api/skills`
#[derive(Debug, Deserialize)]
pub struct SkillQuery {
    pub name: String,
}

/// `PUT /api/skills/content`
#[derive(Debug, Deserialize)]
pub struct SkillContentUpdate {
    pub name: String,
    pub content: String,
}

/// `POST /api/skills/import-url`
#[derive(Debug, Deserialize)]
pub struct SkillImport {
    pub url: String,
}
