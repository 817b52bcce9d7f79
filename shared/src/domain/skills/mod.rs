//! Skills (`/api/skills*`): named instruction packages a run can load. A user uploads a zip with
//! `SKILL.md`; names are unique across users (another user's name is a conflict); a run gets
//! the skills its request or agent names, plus one `<skill>NAME</skill>` at the start of the
//! message, and the model reads them with `load_skill`.

mod package;
#[cfg(feature = "mcp")]
mod tools;

use std::sync::Arc;

pub use package::{MAX_ARCHIVE_BYTES, SkillFile, SkillName, SkillPackage};
#[cfg(feature = "mcp")]
pub use tools::{LOAD_SKILL, asked_skill_block, load_skill_spec, prompt_block, skill_tools};

use crate::domain::DomainError;
use crate::store::{SkillRecord, SkillStore, StoreError};
use crate::util::{DownloadPolicy, UserId, now_secs};
use crate::wire::skill::{SkillContent, SkillList, SkillView};

/// The owner of system skills.
const SYSTEM: &str = "";
const MAX_RUN_SKILLS: usize = 50;

#[derive(Clone)]
pub struct Skills {
    store: Arc<dyn SkillStore>,
    /// What an import may fetch (the download tool's policy).
    #[cfg_attr(not(feature = "llm"), allow(dead_code))]
    imports: DownloadPolicy,
}

/// A skill a run may load.
#[derive(Debug, Clone)]
pub struct RunSkill {
    pub name: String,
    pub description: String,
    pub package: SkillPackage,
}

impl Skills {
    pub fn new(store: Arc<dyn SkillStore>, imports: DownloadPolicy) -> Self {
        Self { store, imports }
    }

    /// The system's skills and the caller's own, by name.
    pub async fn list(&self, caller: &UserId) -> Result<SkillList, DomainError> {
        let mut skills = self.store.owner_skills(SYSTEM).await?;
        skills.extend(self.store.owner_skills(caller.as_str()).await?);
        skills.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(SkillList {
            skills: skills.into_iter().map(view).collect(),
        })
    }

    /// Saves an uploaded archive as the caller's skill, replacing their own of that name.
    pub async fn upload(&self, caller: &UserId, archive: &[u8]) -> Result<SkillView, DomainError> {
        let package = SkillPackage::from_zip(archive)?;
        self.save(caller, package).await
    }

    /// Fetches a zip from a public http(s) URL (through the download address guard, at most
    /// [`MAX_ARCHIVE_BYTES`]) and saves it as [`Skills::upload`] does.
    pub async fn import_url(&self, caller: &UserId, url: &str) -> Result<SkillView, DomainError> {
        if url.trim().is_empty() {
            return Err(DomainError::invalid("url: the zip's http(s) address"));
        }
        #[cfg(feature = "llm")]
        {
            let policy = DownloadPolicy {
                max_bytes: self.imports.max_bytes.min(MAX_ARCHIVE_BYTES as u64),
                ..self.imports
            };
            let fetched = crate::util::fetch::fetch_public(url, policy)
                .await
                .map_err(|error| DomainError::invalid(format!("url: {error}")))?;
            self.upload(caller, &fetched.body).await
        }
        #[cfg(not(feature = "llm"))]
        {
            let _ = caller;
            Err(DomainError::Unavailable(
                "this function cannot fetch URLs: download the zip and use /api/skills/upload"
                    .into(),
            ))
        }
    }

    /// `SKILL.md` of a skill the caller can see.
    pub async fn content(&self, caller: &UserId, name: &str) -> Result<SkillContent, DomainError> {
        let record = self.visible(caller, name).await?;
        Ok(SkillContent {
            name: record.name.clone(),
            content: unpack(&record)?.instructions,
        })
    }

    /// Replaces `SKILL.md` of the caller's own skill; its front matter must keep the name.
    pub async fn update_content(
        &self,
        caller: &UserId,
        admin: bool,
        name: &str,
        content: String,
    ) -> Result<SkillView, DomainError> {
        let record = self.editable(caller, admin, name).await?;
        let (new_name, description) = package::read_front_matter(&content)?;
        if new_name.as_str() != record.name {
            return Err(DomainError::invalid(format!(
                "content: the front matter's name must stay {}",
                record.name
            )));
        }
        let mut package = unpack(&record)?;
        package.instructions = content;
        package.description = description;
        package.name = record.name.clone();
        self.save(&UserId::new(record.owner), package).await
    }

    pub async fn delete(
        &self,
        caller: &UserId,
        admin: bool,
        name: &str,
    ) -> Result<(), DomainError> {
        self.editable(caller, admin, name).await?;
        self.store.delete_skill(name).await?;
        Ok(())
    }

    /// The skills a run offers: the ones named, each the system's or the caller's own.
    pub async fn for_run(
        &self,
        caller: &UserId,
        names: &[String],
    ) -> Result<Vec<RunSkill>, DomainError> {
        if names.len() > MAX_RUN_SKILLS {
            return Err(DomainError::invalid("available_skills: at most 50 skills"));
        }
        let mut skills: Vec<RunSkill> = Vec::new();
        for name in names {
            if skills.iter().any(|skill| &skill.name == name) {
                continue;
            }
            self.check_reachable(caller, std::slice::from_ref(name), "available_skills")
                .await?;
            let record = self.visible(caller, name).await?;
            let package = unpack(&record)?;
            skills.push(RunSkill {
                name: record.name,
                description: record.description,
                package,
            });
        }
        Ok(skills)
    }

    /// Each named skill is the system's or the owner's own; `field` names the list in the error.
    pub async fn check_reachable(
        &self,
        owner: &UserId,
        names: &[String],
        field: &str,
    ) -> Result<(), DomainError> {
        for name in names {
            self.visible(owner, name)
                .await
                .map_err(|error| match error {
                    DomainError::NotFound(_) => {
                        DomainError::NotFound(format!("{field}: no skill {name}"))
                    }
                    other => other,
                })?;
        }
        Ok(())
    }

    async fn save(&self, owner: &UserId, package: SkillPackage) -> Result<SkillView, DomainError> {
        let now = now_secs();
        let created_at = match self.store.skill(&package.name).await? {
            Some(stored) if stored.owner == owner.as_str() => stored.created_at,
            _ => now,
        };
        let record = SkillRecord {
            name: package.name.clone(),
            owner: owner.to_string(),
            description: package.description.clone(),
            package: serde_json::to_value(&package).map_err(StoreError::from)?,
            created_at,
            updated_at: now,
        };
        if self.store.put_skill(&record).await? {
            Ok(view(record))
        } else {
            Err(DomainError::Conflict(format!(
                "name: the skill name {} is taken; rename the skill in its SKILL.md",
                record.name
            )))
        }
    }

    /// A system skill or the caller's own; another user's is not there for anyone else, an
    /// admin included.
    async fn visible(&self, caller: &UserId, name: &str) -> Result<SkillRecord, DomainError> {
        let record = self
            .store
            .skill(name)
            .await?
            .ok_or_else(|| DomainError::NotFound(format!("no skill {name}")))?;
        if record.owner == SYSTEM || record.owner == caller.as_str() {
            Ok(record)
        } else {
            Err(DomainError::NotFound(format!("no skill {name}")))
        }
    }

    /// The caller's own skill; a system skill is an admin's to change.
    async fn editable(
        &self,
        caller: &UserId,
        admin: bool,
        name: &str,
    ) -> Result<SkillRecord, DomainError> {
        let record = self.visible(caller, name).await?;
        if record.owner == caller.as_str() || admin {
            Ok(record)
        } else {
            Err(DomainError::Forbidden(format!(
                "skill {name} is a system skill: only an admin changes it"
            )))
        }
    }
}

fn unpack(record: &SkillRecord) -> Result<SkillPackage, DomainError> {
    let mut package: SkillPackage =
        serde_json::from_value(record.package.clone()).map_err(StoreError::from)?;
    package.name = record.name.clone();
    package.description = record.description.clone();
    Ok(package)
}

fn view(record: SkillRecord) -> SkillView {
    SkillView {
        name: record.name,
        description: record.description,
        user_id: record.owner,
    }
}

/// `<skill>NAME</skill>` at the start of a message: the skill it asks for.
pub fn requested_skill(message: &str) -> Option<&str> {
    let rest = message.trim_start().strip_prefix("<skill>")?;
    let end = rest.find("</skill>")?;
    Some(rest[..end].trim()).filter(|name| !name.is_empty())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_skill_tag_is_read_only_at_the_start() {
        assert_eq!(
            super::requested_skill("<skill>csv-report</skill> make a report"),
            Some("csv-report")
        );
        assert_eq!(super::requested_skill("see <skill>x</skill>"), None);
        assert_eq!(super::requested_skill("<skill></skill> hi"), None);
    }
}
