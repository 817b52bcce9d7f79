//! The code tools (`execute_shell_command`, `execute_python_code`, `execute_javascript_code`,
//! `check_command_availability`): never in the server's process or with its credentials. Each
//! call gets a copy of the session's workspace in a temporary folder and runs in bubblewrap with
//! only that folder writable (as `/workspace`), the system's programs read-only, no other file
//! of this host, an empty environment, no network unless `--code_network`, an address-space
//! limit (`--code_memory_mb`) and a time limit (`--code_timeout_seconds`); what it writes there
//! goes back to the workspace. In the cloud (`--code_sandbox lambda`) the sandbox function runs
//! the program instead: a Lambda function with no permissions, sent the workspace's files and
//! answering with the ones the program made or changed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::TryStreamExt;
use serde_json::{Value, json};

use super::{BuiltinTools, JsonObject, ToolCallError, ToolSpec};
use crate::blob::{ObjectKey, ObjectStore, RESERVED_FOLDER};
use crate::config::CodeSandboxMode;
use crate::sandbox::{
    MALLOC_ARENA_MAX, MAX_WORKSPACE_BYTES, MAX_WORKSPACE_FILES, RunRequest, SANDBOX_PATH,
    WorkspaceFile,
};

pub const EXECUTE_SHELL_COMMAND: &str = "execute_shell_command";
pub const EXECUTE_PYTHON_CODE: &str = "execute_python_code";
pub const EXECUTE_JAVASCRIPT_CODE: &str = "execute_javascript_code";
pub const CHECK_COMMAND_AVAILABILITY: &str = "check_command_availability";

pub const CODE_TOOLS: [&str; 4] = [
    EXECUTE_SHELL_COMMAND,
    EXECUTE_PYTHON_CODE,
    EXECUTE_JAVASCRIPT_CODE,
    CHECK_COMMAND_AVAILABILITY,
];

/// Installs the packages named as arguments with pip into the sandbox's `/tmp`, then runs the
/// code from standard input with them on the path. The installer's output goes to stderr.
const INSTALL_PYTHON_PACKAGES: &str = "PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet \
    --disable-pip-version-check --no-cache-dir --no-input --target /tmp/packages -- \"$@\" \
    </dev/null >&2 || { echo 'installing the packages failed' >&2; exit 97; }; \
    PYTHONPATH=/tmp/packages exec python3 -";

/// Installs the packages named as arguments with npm into the sandbox's `/tmp`, then runs the
/// code from standard input with them on Node's path.
const INSTALL_NPM_PACKAGES: &str = "NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt \
    npm_config_cache=/tmp/npm-cache npm_config_update_notifier=false npm install \
    --prefix /tmp/packages --no-audit --no-fund --no-save --loglevel=error -- \"$@\" \
    </dev/null >&2 || { echo 'installing the packages failed' >&2; exit 97; }; \
    NODE_PATH=/tmp/packages/node_modules exec node -";

/// At most this many packages in one call.
const MAX_PACKAGES: usize = 30;

/// The package specs a call names (`requests==2.32.3`, `@scope/name@1.2.0`): never an option,
/// a URL or a path, which would let the model point the installer anywhere.
fn package_specs(arguments: &JsonObject, field: &str) -> Result<Vec<String>, ToolCallError> {
    let Some(value) = arguments.get(field) else {
        return Ok(Vec::new());
    };
    let items = value
        .as_array()
        .ok_or_else(|| invalid(format!("`{field}`: a list of package names")))?;
    if items.len() > MAX_PACKAGES {
        return Err(invalid(format!(
            "`{field}`: at most {MAX_PACKAGES} packages"
        )));
    }
    items
        .iter()
        .map(|item| {
            let spec = item.as_str().unwrap_or_default().trim();
            let allowed = !spec.is_empty()
                && spec.len() <= 200
                && !spec.starts_with(['-', '.', '/'])
                && !spec.contains("://")
                && !spec.contains("..")
                && spec
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-@/=<>!~^*+,[]".contains(c));
            if allowed {
                Ok(spec.to_owned())
            } else {
                Err(invalid(format!(
                    "`{field}`: {item} is not a package name with an optional version"
                )))
            }
        })
        .collect()
}

/// How this server runs code, resolved at start-up.
#[derive(Debug, Clone)]
pub struct CodeSandbox {
    /// `None` when the code tools are off.
    runner: Option<Runner>,
    pub timeout: Duration,
    pub memory_bytes: u64,
    pub network: bool,
}

#[derive(Debug, Clone)]
enum Runner {
    Bwrap {
        bwrap: PathBuf,
        prlimit: PathBuf,
    },
    #[cfg(feature = "lambda-sandbox")]
    Function(crate::sandbox::SandboxFunction),
}

#[derive(Debug, thiserror::Error)]
#[error(
    "--code_sandbox bwrap: `{0}` is not on the PATH (Debian: apt-get install bubblewrap util-linux)"
)]
pub struct SandboxMissing(&'static str);

fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

impl CodeSandbox {
    /// The local sandbox `mode` names. `lambda` is built by `in_function`.
    pub fn resolve(
        mode: CodeSandboxMode,
        timeout: Duration,
        memory_mb: u64,
        network: bool,
    ) -> Result<Self, SandboxMissing> {
        let programs = match mode {
            CodeSandboxMode::Off | CodeSandboxMode::Lambda => None,
            CodeSandboxMode::Auto => on_path("bwrap").zip(on_path("prlimit")),
            CodeSandboxMode::Bwrap => Some((
                on_path("bwrap").ok_or(SandboxMissing("bwrap"))?,
                on_path("prlimit").ok_or(SandboxMissing("prlimit"))?,
            )),
        };
        Ok(Self {
            runner: programs.map(|(bwrap, prlimit)| Runner::Bwrap { bwrap, prlimit }),
            timeout,
            memory_bytes: memory_mb * 1024 * 1024,
            network,
        })
    }

    /// Programs run by the sandbox function; its network is the function's own.
    #[cfg(feature = "lambda-sandbox")]
    pub fn in_function(
        function: crate::sandbox::SandboxFunction,
        timeout: Duration,
        memory_mb: u64,
    ) -> Self {
        Self {
            runner: Some(Runner::Function(function)),
            timeout,
            memory_bytes: memory_mb * 1024 * 1024,
            network: false,
        }
    }

    /// Code tools off: every call says so.
    pub fn off() -> Self {
        Self {
            runner: None,
            timeout: Duration::from_secs(30),
            memory_bytes: 1024 * 1024 * 1024,
            network: false,
        }
    }

    pub fn is_available(&self) -> bool {
        self.runner.is_some()
    }
}

fn invalid(message: impl Into<String>) -> ToolCallError {
    ToolCallError::Execution(message.into())
}

fn sandbox_failed(what: &str, error: impl std::fmt::Display) -> ToolCallError {
    tracing::warn!(%error, "code sandbox: {what}");
    ToolCallError::Unavailable(format!("the sandbox could not {what}"))
}

/// The code tools among `requested`, for the session's workspace.
pub fn code_tools(
    objects: Arc<dyn ObjectStore>,
    session_id: &str,
    requested: &[String],
    sandbox: CodeSandbox,
) -> Option<Arc<dyn BuiltinTools>> {
    let (root, enabled) = super::session_tools(&CODE_TOOLS, session_id, requested)?;
    Some(Arc::new(CodeTools {
        objects,
        root,
        enabled,
        sandbox,
    }))
}

struct CodeTools {
    objects: Arc<dyn ObjectStore>,
    root: ObjectKey,
    enabled: Vec<&'static str>,
    sandbox: CodeSandbox,
}

/// What a program in the sandbox is given.
struct Program {
    argv: Vec<String>,
    stdin: Option<String>,
    workdir: String,
    timeout: Duration,
}

impl CodeTools {
    /// The workspace's files, for a call to work on.
    async fn read_workspace(&self) -> Result<Vec<WorkspaceFile>, ToolCallError> {
        let listed = self
            .objects
            .list(&self.root)
            .await
            .map_err(|error| sandbox_failed("read the workspace", error))?;
        let prefix = format!("{}/", self.root.as_str());
        let mut files = Vec::new();
        let mut total = 0;
        for info in listed {
            let Some(relative) = info.key.as_str().strip_prefix(&prefix) else {
                continue;
            };
            if relative.split('/').next() == Some(RESERVED_FOLDER) {
                continue;
            }
            total += info.size;
            if total > MAX_WORKSPACE_BYTES || files.len() >= MAX_WORKSPACE_FILES {
                return Err(invalid(
                    "the workspace is too large for the code tools (64 MiB, 2,000 files)",
                ));
            }
            let Some(read) = self
                .objects
                .get(&info.key)
                .await
                .map_err(|error| sandbox_failed("read the workspace", error))?
            else {
                continue;
            };
            let bytes: Vec<u8> = read
                .body
                .try_fold(Vec::new(), |mut all, chunk| async move {
                    all.extend_from_slice(&chunk);
                    Ok(all)
                })
                .await
                .map_err(|error| sandbox_failed("read the workspace", error))?;
            files.push(WorkspaceFile {
                path: relative.to_owned(),
                bytes,
            });
        }
        Ok(files)
    }

    /// Saves the files the program made or changed; returns their paths.
    async fn save(&self, files: Vec<WorkspaceFile>) -> Result<Vec<String>, ToolCallError> {
        let mut saved = Vec::with_capacity(files.len());
        for file in files {
            if file.path.split('/').next() == Some(RESERVED_FOLDER) {
                continue;
            }
            let Ok(key) = self.root.join(&file.path) else {
                continue;
            };
            self.objects
                .put(&key, Bytes::from(file.bytes))
                .await
                .map_err(|error| sandbox_failed("save the results", error))?;
            saved.push(file.path);
        }
        saved.sort();
        Ok(saved)
    }

    /// The program under bubblewrap: the folder as `/workspace`, the only writable one.
    fn bwrap_command(
        &self,
        bwrap: &Path,
        prlimit: &Path,
        folder: &Path,
        request: &RunRequest,
    ) -> tokio::process::Command {
        let inside = Path::new("/workspace").join(&request.workdir);
        let mut command = tokio::process::Command::new(prlimit);
        command
            .arg(format!("--as={}", request.memory_bytes))
            .arg("--core=0")
            .arg("--")
            .arg(bwrap)
            .args(["--unshare-all", "--die-with-parent", "--new-session"])
            .args(["--clearenv", "--setenv", "PATH", SANDBOX_PATH])
            .args([
                "--setenv",
                "HOME",
                "/workspace",
                "--setenv",
                "LANG",
                "C.UTF-8",
                "--setenv",
                MALLOC_ARENA_MAX.0,
                MALLOC_ARENA_MAX.1,
            ])
            .args(["--ro-bind", "/usr", "/usr"]);
        for system in ["/bin", "/sbin", "/lib", "/lib64", "/etc/alternatives"] {
            command.args(["--ro-bind-try", system, system]);
        }
        if self.sandbox.network {
            command.arg("--share-net");
            for system in [
                "/etc/resolv.conf",
                "/etc/hosts",
                "/etc/ssl",
                "/etc/ca-certificates",
            ] {
                command.args(["--ro-bind-try", system, system]);
            }
        }
        command
            .args(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"])
            .arg("--bind")
            .arg(folder)
            .arg("/workspace")
            .arg("--chdir")
            .arg(&inside)
            .arg("--")
            .args(&request.argv)
            .env_clear();
        command
    }

    async fn run(&self, program: Program) -> Result<Value, ToolCallError> {
        let Some(runner) = &self.sandbox.runner else {
            return Err(invalid(
                "this server runs no code: its code sandbox is off (--code_sandbox)",
            ));
        };
        let request = RunRequest {
            argv: program.argv,
            stdin: program.stdin,
            workdir: program.workdir,
            timeout_ms: program.timeout.as_millis() as u64,
            memory_bytes: self.sandbox.memory_bytes,
            files: self.read_workspace().await?,
        };
        let outcome = match runner {
            Runner::Bwrap { bwrap, prlimit } => {
                crate::sandbox::run_in_folder(request, |folder, request| {
                    self.bwrap_command(bwrap, prlimit, folder, request)
                })
                .await
                .map_err(|error| match error {
                    crate::sandbox::SandboxError::TooLarge => {
                        invalid(format!("the results were not kept: {error}"))
                    }
                    error => sandbox_failed("run the program", crate::telemetry::chain(&error)),
                })?
            }
            #[cfg(feature = "lambda-sandbox")]
            Runner::Function(function) => function.run(&request).await.map_err(|error| {
                use crate::sandbox::FunctionError;
                match error {
                    FunctionError::TooLarge => invalid(error.to_string()),
                    error => sandbox_failed("run the program", crate::telemetry::chain(&error)),
                }
            })?,
        };
        let files_changed = self.save(outcome.files).await?;
        Ok(json!({
            "success": outcome.exit_code == Some(0),
            "exit_code": outcome.exit_code,
            "stdout": outcome.stdout,
            "stderr": outcome.stderr,
            "output_truncated": outcome.output_truncated,
            "timed_out": outcome.timed_out,
            "duration_ms": outcome.duration_ms,
            "files_changed": files_changed,
        }))
    }

    fn timeout(&self, arguments: &JsonObject) -> Duration {
        arguments
            .get("timeout")
            .and_then(Value::as_f64)
            .filter(|seconds| *seconds > 0.0 && seconds.is_finite())
            .map_or(self.sandbox.timeout, |seconds| {
                Duration::from_secs_f64(seconds).min(self.sandbox.timeout)
            })
    }

    /// A working folder inside the workspace, relative to it.
    fn workdir(arguments: &JsonObject) -> Result<String, ToolCallError> {
        let raw = arguments
            .get("workdir")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .trim();
        let relative = raw
            .strip_prefix("/workspace")
            .unwrap_or(raw)
            .trim_matches('/')
            .to_owned();
        let refused = relative.starts_with('~')
            || raw.starts_with('/') && !raw.starts_with("/workspace")
            || relative
                .split('/')
                .any(|part| part == ".." || part == RESERVED_FOLDER)
            || relative.contains('\\');
        if refused {
            return Err(invalid(format!(
                "workdir {raw:?} is not inside the workspace"
            )));
        }
        Ok(relative)
    }

    /// `program`, after the packages the call names are installed for it (in the sandbox's own
    /// `/tmp`, so they never reach the workspace): they need the network.
    fn with_packages(
        &self,
        program: &[&str],
        arguments: &JsonObject,
        field: &str,
        installer: &str,
    ) -> Result<Vec<String>, ToolCallError> {
        let packages = package_specs(arguments, field)?;
        if packages.is_empty() {
            return Ok(program.iter().map(|part| (*part).to_owned()).collect());
        }
        if !self.sandbox.network {
            return Err(invalid(format!(
                "`{field}`: installing packages needs the network, which this server's sandbox \
                 does not have (--code_network); use what is installed (see \
                 check_command_availability)"
            )));
        }
        let mut argv = vec![
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            installer.to_owned(),
            "sh".to_owned(),
        ];
        argv.extend(packages);
        Ok(argv)
    }

    fn text<'a>(arguments: &'a JsonObject, field: &str) -> Result<&'a str, ToolCallError> {
        arguments
            .get(field)
            .and_then(Value::as_str)
            .filter(|text| !text.trim().is_empty())
            .ok_or_else(|| invalid(format!("`{field}` is required")))
    }
}

fn code_tool_specs() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: EXECUTE_SHELL_COMMAND.into(),
            description: "Run a shell command in a sandbox holding a copy of the workspace (as /workspace); files it writes there are kept. No network unless the server allows it.".into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "command": {"type": "string"},
                    "workdir": {"type": "string", "description": "a workspace folder to run in"},
                    "timeout": {"type": "number", "description": "seconds, up to the server's limit"},
                },
                "required": ["command"],
            }),
        },
        ToolSpec {
            name: EXECUTE_PYTHON_CODE.into(),
            description: "Run Python 3 code in the sandbox, in /workspace; print what you need to see.".into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "code": {"type": "string"},
                    "requirement_list": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["code"],
            }),
        },
        ToolSpec {
            name: EXECUTE_JAVASCRIPT_CODE.into(),
            description: "Run JavaScript code with Node.js in the sandbox, in /workspace.".into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "code": {"type": "string"},
                    "npm_packages": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["code"],
            }),
        },
        ToolSpec {
            name: CHECK_COMMAND_AVAILABILITY.into(),
            description: "Check which commands the sandbox has.".into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "commands": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["commands"],
            }),
        },
    ]
}

/// The code tools, as `/api/tools?type=basic` lists them.
pub fn code_tool_specs_listed() -> Vec<ToolSpec> {
    code_tool_specs()
}

#[async_trait]
impl BuiltinTools for CodeTools {
    fn specs(&self) -> Vec<ToolSpec> {
        code_tool_specs()
            .into_iter()
            .filter(|spec| self.enabled.contains(&spec.name.as_str()))
            .collect()
    }

    async fn call(&self, tool: &str, arguments: JsonObject) -> Result<Value, ToolCallError> {
        if !self.enabled.contains(&tool) {
            return Err(ToolCallError::NotFound(tool.to_owned()));
        }
        let timeout = self.timeout(&arguments);
        let program = match tool {
            EXECUTE_SHELL_COMMAND => Program {
                argv: vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    Self::text(&arguments, "command")?.to_owned(),
                ],
                stdin: None,
                workdir: Self::workdir(&arguments)?,
                timeout,
            },
            EXECUTE_PYTHON_CODE => Program {
                argv: self.with_packages(
                    &["python3", "-"],
                    &arguments,
                    "requirement_list",
                    INSTALL_PYTHON_PACKAGES,
                )?,
                stdin: Some(Self::text(&arguments, "code")?.to_owned()),
                workdir: String::new(),
                timeout,
            },
            EXECUTE_JAVASCRIPT_CODE => Program {
                argv: self.with_packages(
                    &["node", "-"],
                    &arguments,
                    "npm_packages",
                    INSTALL_NPM_PACKAGES,
                )?,
                stdin: Some(Self::text(&arguments, "code")?.to_owned()),
                workdir: String::new(),
                timeout,
            },
            CHECK_COMMAND_AVAILABILITY => {
                let commands: Vec<String> = arguments
                    .get("commands")
                    .and_then(Value::as_array)
                    .map(|items| {
                        items
                            .iter()
                            .filter_map(Value::as_str)
                            .filter(|name| {
                                !name.is_empty()
                                    && name
                                        .chars()
                                        .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c))
                            })
                            .take(50)
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default();
                if commands.is_empty() {
                    return Err(invalid("`commands`: a list of command names"));
                }
                let mut argv: Vec<String> = vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    r#"for c in "$@"; do if command -v "$c" >/dev/null 2>&1; then echo "+$c"; else echo "-$c"; fi; done"#.into(),
                    "sh".into(),
                ];
                argv.extend(commands);
                let answer = self
                    .run(Program {
                        argv,
                        stdin: None,
                        workdir: String::new(),
                        timeout,
                    })
                    .await?;
                let listed = answer["stdout"].as_str().unwrap_or_default();
                let available: Vec<&str> =
                    listed.lines().filter_map(|l| l.strip_prefix('+')).collect();
                let missing: Vec<&str> =
                    listed.lines().filter_map(|l| l.strip_prefix('-')).collect();
                return Ok(json!({"available": available, "missing": missing}));
            }
            other => return Err(ToolCallError::NotFound(other.to_owned())),
        };
        self.run(program).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_specs_are_names_with_versions_never_options_urls_or_paths() {
        let arguments = |items: Value| {
            let mut map = JsonObject::new();
            map.insert("requirement_list".into(), items);
            map
        };
        let specs = package_specs(
            &arguments(json!([
                "six==1.17.0",
                "numpy>=1.2,<3",
                "@scope/pkg@1.2.0",
                "a[extra]"
            ])),
            "requirement_list",
        )
        .unwrap();
        assert_eq!(specs.len(), 4);
        for bad in [
            "--index-url=http://x",
            "-r",
            "git+https://example.com/x.git",
            "../x",
            "/etc/passwd",
            "a b",
            "x;rm",
            "",
        ] {
            assert!(
                package_specs(&arguments(json!([bad])), "requirement_list").is_err(),
                "{bad}"
            );
        }
        assert!(package_specs(&arguments(json!("six")), "requirement_list").is_err());
        assert!(
            package_specs(&JsonObject::new(), "requirement_list")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn work_folders_stay_inside_the_workspace() {
        let arguments = |dir: &str| {
            let mut map = JsonObject::new();
            map.insert("workdir".into(), json!(dir));
            map
        };
        for (raw, relative) in [("", ""), ("src", "src"), ("/workspace/src/", "src")] {
            assert_eq!(CodeTools::workdir(&arguments(raw)).unwrap(), relative);
        }
        for raw in ["/etc", "../x", "a/../../b", "~", ".sage", "a\\b"] {
            assert!(CodeTools::workdir(&arguments(raw)).is_err(), "{raw}");
        }
    }
}
