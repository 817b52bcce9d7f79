//! A skill as uploaded: a zip archive with `SKILL.md` (YAML front matter with `name` and
//! `description`, then the instructions) and text files beside it, read with every path
//! checked and every size bounded.

use std::io::{Cursor, Read};

use serde::{Deserialize, Serialize};

use crate::util::InputError;

/// The largest archive accepted.
pub const MAX_ARCHIVE_BYTES: usize = 1024 * 1024;
/// The most a skill may hold once unpacked: it is stored as one record.
pub const MAX_PACKAGE_BYTES: usize = 256 * 1024;
const MAX_FILES: usize = 64;
const MAX_NAME_CHARS: usize = 64;
const MAX_DESCRIPTION_CHARS: usize = 1_024;
pub const INSTRUCTIONS_FILE: &str = "SKILL.md";

/// A skill's name: 1 to 64 letters, digits, `-`, `_` or `.`, not starting with `.`; it is the
/// handle the model and `<skill>NAME</skill>` use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkillName(String);

impl SkillName {
    pub fn parse(name: &str) -> Result<Self, InputError> {
        let name = name.trim();
        let valid = !name.is_empty()
            && name.chars().count() <= MAX_NAME_CHARS
            && !name.starts_with('.')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if valid {
            Ok(Self(name.to_owned()))
        } else {
            Err(InputError::Invalid(format!(
                "name: a skill name is 1 to 64 letters, digits, '-', '_' or '.' (not first), \
                 got {:?}",
                name.chars().take(80).collect::<String>()
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A file packed with a skill, as text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkillFile {
    pub path: String,
    pub content: String,
}

/// A checked skill: what is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkillPackage {
    #[serde(skip)]
    pub name: String,
    #[serde(skip)]
    pub description: String,
    /// The whole `SKILL.md`, front matter included.
    pub instructions: String,
    #[serde(default)]
    pub files: Vec<SkillFile>,
}

#[derive(Deserialize)]
struct FrontMatter {
    name: Option<String>,
    description: Option<String>,
}

/// `SKILL.md`'s name and description.
pub fn read_front_matter(skill_md: &str) -> Result<(SkillName, String), InputError> {
    let invalid = |message: &str| Err(InputError::Invalid(format!("SKILL.md: {message}")));
    let text = skill_md.strip_prefix('\u{feff}').unwrap_or(skill_md);
    let Some(rest) = text
        .strip_prefix("---\n")
        .or_else(|| text.strip_prefix("---\r\n"))
    else {
        return invalid("must start with YAML front matter (---, name:, description:, ---)");
    };
    let Some(end) = rest.find("\n---") else {
        return invalid("the front matter has no closing ---");
    };
    let front: FrontMatter = match serde_yaml_ng::from_str(&rest[..end]) {
        Ok(front) => front,
        Err(_) => return invalid("the front matter is not YAML with name and description"),
    };
    let Some(name) = front.name else {
        return invalid("the front matter has no name");
    };
    let name = SkillName::parse(&name)?;
    let description = front.description.unwrap_or_default().trim().to_owned();
    if description.is_empty() || description.chars().count() > MAX_DESCRIPTION_CHARS {
        return invalid("description: 1 to 1,024 characters");
    }
    Ok((name, description))
}

impl SkillPackage {
    /// Reads an uploaded archive. `SKILL.md` may sit at the top or in one folder that holds
    /// everything; paths that leave the archive, links and binary files are refused.
    pub fn from_zip(archive: &[u8]) -> Result<Self, InputError> {
        let invalid = |message: String| InputError::Invalid(format!("file: {message}"));
        if archive.len() > MAX_ARCHIVE_BYTES {
            return Err(invalid("the archive is over 1 MiB".into()));
        }
        let mut zip = zip::ZipArchive::new(Cursor::new(archive))
            .map_err(|_| invalid("not a zip archive".into()))?;
        if zip.len() > MAX_FILES {
            return Err(invalid(format!("more than {MAX_FILES} entries")));
        }
        let mut files = Vec::new();
        let mut total = 0usize;
        for index in 0..zip.len() {
            let mut entry = zip
                .by_index(index)
                .map_err(|_| invalid("a damaged entry".into()))?;
            if entry.is_dir() {
                continue;
            }
            let raw_name: String = entry
                .name()
                .map(|name| name.chars().take(200).collect())
                .unwrap_or_else(|_| "an entry".into());
            if entry.is_symlink() {
                return Err(invalid(format!("{raw_name}: links are not accepted")));
            }
            let Some(path) = entry.enclosed_name() else {
                return Err(invalid(format!("{raw_name}: the path leaves the archive")));
            };
            let path = path
                .components()
                .map(|part| part.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            if path.starts_with("__MACOSX/") || path.ends_with(".DS_Store") {
                continue;
            }
            let room = MAX_PACKAGE_BYTES.saturating_sub(total);
            let mut bytes = Vec::new();
            (&mut entry)
                .take(room as u64 + 1)
                .read_to_end(&mut bytes)
                .map_err(|_| invalid(format!("{path}: cannot be unpacked")))?;
            total += bytes.len();
            if total > MAX_PACKAGE_BYTES {
                return Err(invalid("the skill unpacks to more than 256 KiB".into()));
            }
            let content = String::from_utf8(bytes).map_err(|_| {
                invalid(format!(
                    "{path}: not UTF-8 text; a skill holds text files only"
                ))
            })?;
            files.push(SkillFile { path, content });
        }
        strip_common_folder(&mut files);
        let at = files
            .iter()
            .position(|file| file.path == INSTRUCTIONS_FILE)
            .ok_or_else(|| invalid("no SKILL.md at the top of the archive".into()))?;
        let instructions = files.remove(at).content;
        let (name, description) = read_front_matter(&instructions)?;
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Self {
            name: name.as_str().to_owned(),
            description,
            instructions,
            files,
        })
    }
}

/// `my-skill/SKILL.md`, `my-skill/x.py` → `SKILL.md`, `x.py`.
fn strip_common_folder(files: &mut [SkillFile]) {
    let Some(first) = files.first() else {
        return;
    };
    let Some((folder, _)) = first.path.split_once('/') else {
        return;
    };
    let prefix = format!("{folder}/");
    if files.iter().all(|file| file.path.starts_with(&prefix)) {
        for file in files.iter_mut() {
            file.path = file.path[prefix.len()..].to_owned();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    pub fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (path, bytes) in entries {
            writer
                .start_file(*path, zip::write::SimpleFileOptions::default())
                .unwrap();
            writer.write_all(bytes).unwrap();
        }
        writer.finish().unwrap().into_inner()
    }

    const SKILL_MD: &[u8] = b"---\nname: csv-report\ndescription: Turns CSV into a report.\n---\nRead the CSV, then write the report.\n";

    #[test]
    fn a_folder_archive_is_read_with_its_files() {
        let archive = zip_of(&[
            ("csv-report/SKILL.md", SKILL_MD),
            ("csv-report/template.md", b"# Report"),
        ]);
        let package = SkillPackage::from_zip(&archive).unwrap();
        assert_eq!(package.name, "csv-report");
        assert_eq!(package.description, "Turns CSV into a report.");
        assert_eq!(
            package.files,
            vec![SkillFile {
                path: "template.md".into(),
                content: "# Report".into()
            }]
        );
    }

    #[test]
    fn escaping_paths_binaries_bad_names_and_bombs_are_refused() {
        let refused = |entries: &[(&str, &[u8])]| {
            SkillPackage::from_zip(&zip_of(entries))
                .unwrap_err()
                .to_string()
        };
        assert!(refused(&[("SKILL.md", SKILL_MD), ("../evil.sh", b"x")]).contains("leaves"));
        assert!(refused(&[("SKILL.md", SKILL_MD), ("a.bin", &[0xff, 0xfe])]).contains("UTF-8"));
        assert!(refused(&[("notes.md", b"x")]).contains("no SKILL.md"));
        assert!(
            refused(&[("SKILL.md", b"---\nname: ../../etc\ndescription: d\n---\n")])
                .contains("name")
        );
        let big = vec![b'a'; MAX_PACKAGE_BYTES];
        assert!(refused(&[("SKILL.md", SKILL_MD), ("big.txt", &big)]).contains("256 KiB"));
        assert!(
            SkillPackage::from_zip(b"not a zip")
                .unwrap_err()
                .to_string()
                .contains("not a zip")
        );
    }
}
