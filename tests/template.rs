//! The deployment files read as data: `template.yaml` (each function's handler, runtime,
//! architecture, build, streaming mode, environment and IAM policy, the REST API's routes, the
//! table), `sam validate --lint` and cfn-lint on it, and `local/compose.yaml` with its Dockerfile
//! and env example against the seed's service table and the configuration.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::workspace_root;
use clap::CommandFactory;
use sage_core::Config;
use serde_yaml_ng::Value;

// ------------------------------------------------------------------ what the template must say

/// The variable that carries the SSM parameter NAME of the LLM key (the key itself never
/// appears in the template); the library reads the parameter at init.
const KEY_PARAMETER_VAR: &str = "SAGE_DEFAULT_LLM_API_KEY_PARAMETER";
/// Read by `lambda_http`, not by `sage_core`: without it a REST API event's path keeps its stage
/// (`/prod/api/health`) and no route matches (tests/lambda_events.rs shows the event answered).
/// Wiring between the deployed functions, not settings: the Jobs function's way to the Stream
/// function (its `runs` job continues paused runs there).
const RUNTIME_VARS: &[&str] = &[
    "AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH",
    "STREAM_FUNCTION_NAME",
];

const STORE_ACTIONS: &[&str] = &[
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:Query",
    "dynamodb:BatchWriteItem",
];
const TABLE: &str = "${Table.Arn}";
const TABLE_INDEXES: &str = "${Table.Arn}/index/*";
const KEY_PARAMETER_ARN: &str =
    "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter${LlmApiKeyParameterName}";
const JWT_PARAMETER_ARN: &str =
    "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter${JwtKeyParameterName}";
const SEARCH_ACTIONS: &[&str] = &[
    "es:ESHttpGet",
    "es:ESHttpHead",
    "es:ESHttpPost",
    "es:ESHttpPut",
    "es:ESHttpDelete",
];

/// One policy statement, normalized: the condition it depends on, its actions, its resources.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Grant {
    condition: Option<String>,
    actions: BTreeSet<String>,
    resources: BTreeSet<String>,
}

fn grant(condition: Option<&str>, actions: &[&str], resources: &[&str]) -> Grant {
    Grant {
        condition: condition.map(str::to_owned),
        actions: actions.iter().map(|a| (*a).to_owned()).collect(),
        resources: resources.iter().map(|r| (*r).to_owned()).collect(),
    }
}

struct Expected {
    logical_id: &'static str,
    binary: &'static str,
    code_uri: &'static str,
    /// Exists today; the others are checked when their directory has landed.
    landed: bool,
    role: &'static str,
    log_group: &'static str,
    /// The Stream function: Function URL and REST routes with response streaming.
    streams: bool,
    /// Statements besides writing its own logs.
    grants: Vec<Grant>,
}

fn logs(log_group: &str) -> Grant {
    // `!GetAtt LogGroup.Arn` ends in `:*`, so the stream ARN is built from the group's name.
    let stream = format!(
        "arn:${{AWS::Partition}}:logs:${{AWS::Region}}:${{AWS::AccountId}}:log-group:${{{log_group}}}:log-stream:*"
    );
    grant(
        None,
        &["logs:CreateLogStream", "logs:PutLogEvents"],
        &[stream.as_str()],
    )
}

fn key_grants() -> Vec<Grant> {
    vec![
        grant(None, &["ssm:GetParameter"], &[KEY_PARAMETER_ARN]),
        grant(
            Some("HasLlmKeyKmsKey"),
            &["kms:Decrypt"],
            &["${LlmApiKeyKmsKeyArn}"],
        ),
    ]
}

/// The functions that check tokens and read SSM at start-up read the JWT key parameter.
fn jwt_grants() -> Vec<Grant> {
    vec![
        grant(None, &["ssm:GetParameter"], &[JWT_PARAMETER_ARN]),
        grant(
            Some("HasJwtKeyKmsKey"),
            &["kms:Decrypt"],
            &["${JwtKeyKmsKeyArn}"],
        ),
    ]
}

/// The Stream function's own ARN: a run near its invocation's deadline continues in a fresh
/// invocation of it.
const STREAM_FUNCTION_ARN: &str = "arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:${AWS::StackName}-stream";

/// Stream and MCP-admin run the code tools in the sandbox function, and may call only it.
fn sandbox_grant() -> Grant {
    grant(
        None,
        &["lambda:InvokeFunction"],
        &["${SandboxFunction.Arn}"],
    )
}

fn search_grant() -> Grant {
    grant(
        Some("CreateSearch"),
        SEARCH_ACTIONS,
        &["${SearchDomain.Arn}/*"],
    )
}

/// Each function and exactly what its code may touch: the store's actions on the table and its
/// indexes (Health: one `GetItem` for readiness), the LLM key parameter where the LLM is used,
/// the bucket where blobs are (Stream: large payloads; Session: session files), search when the
/// optional domain exists.
fn expected_functions() -> Vec<Expected> {
    let mut stream_grants = vec![
        grant(None, STORE_ACTIONS, &[TABLE, TABLE_INDEXES]),
        grant(
            None,
            &["s3:GetObject", "s3:PutObject"],
            &["${Bucket.Arn}/*"],
        ),
        search_grant(),
    ];
    stream_grants.extend(key_grants());
    stream_grants.extend(jwt_grants());
    stream_grants.push(sandbox_grant());
    stream_grants.push(grant(
        None,
        &["lambda:InvokeFunction"],
        &[STREAM_FUNCTION_ARN],
    ));
    let mut health_grants = vec![
        grant(None, &["dynamodb:GetItem"], &[TABLE]),
        grant(None, &["s3:ListBucket"], &["${Bucket.Arn}"]),
        grant(
            Some("CreateSearch"),
            &["es:ESHttpGet"],
            &["${SearchDomain.Arn}", "${SearchDomain.Arn}/*"],
        ),
    ];
    health_grants.extend(key_grants());
    let mut session_grants = vec![
        grant(None, STORE_ACTIONS, &[TABLE, TABLE_INDEXES]),
        grant(
            None,
            &["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
            &["${Bucket.Arn}/*"],
        ),
        grant(None, &["s3:ListBucket"], &["${Bucket.Arn}"]),
        search_grant(),
    ];
    session_grants.extend(key_grants());
    session_grants.extend(jwt_grants());
    let mut jobs_grants = vec![grant(
        None,
        &[
            "dynamodb:GetItem",
            "dynamodb:PutItem",
            "dynamodb:Query",
            "dynamodb:Scan",
        ],
        &[TABLE, TABLE_INDEXES],
    )];
    jobs_grants.push(grant(
        None,
        &["s3:GetObject"],
        &["${Bucket.Arn}/.events/*", "${Bucket.Arn}/.knowledge/*"],
    ));
    jobs_grants.push(search_grant());
    // The runs job continues paused runs in the Stream function.
    jobs_grants.push(grant(
        None,
        &["lambda:InvokeFunction"],
        &["${StreamFunction.Arn}"],
    ));
    jobs_grants.extend(key_grants());
    jobs_grants.extend(jwt_grants());
    vec![
        Expected {
            logical_id: "StreamFunction",
            binary: "sage-stream",
            code_uri: "functions/stream",
            landed: true,
            role: "StreamRole",
            log_group: "StreamLogGroup",
            streams: true,
            grants: stream_grants,
        },
        Expected {
            logical_id: "HealthFunction",
            binary: "sage-health",
            code_uri: "functions/health",
            landed: true,
            role: "HealthRole",
            log_group: "HealthLogGroup",
            streams: false,
            grants: health_grants,
        },
        Expected {
            logical_id: "McpAdminFunction",
            binary: "sage-mcp-admin",
            code_uri: "functions/mcp-admin",
            landed: false,
            role: "McpAdminRole",
            log_group: "McpAdminLogGroup",
            streams: false,
            grants: [
                vec![
                    grant(None, STORE_ACTIONS, &[TABLE, TABLE_INDEXES]),
                    grant(
                        None,
                        &["s3:GetObject", "s3:PutObject"],
                        &["${Bucket.Arn}/*"],
                    ),
                    sandbox_grant(),
                ],
                jwt_grants(),
            ]
            .concat(),
        },
        Expected {
            logical_id: "SessionFunction",
            binary: "sage-session",
            code_uri: "functions/session",
            landed: false,
            role: "SessionRole",
            log_group: "SessionLogGroup",
            streams: false,
            grants: session_grants,
        },
        Expected {
            logical_id: "JobsFunction",
            binary: "sage-jobs",
            code_uri: "functions/jobs",
            landed: true,
            role: "JobsRole",
            log_group: "JobsLogGroup",
            streams: false,
            grants: jobs_grants,
        },
    ]
}

/// Every route of `api.md` and the function that serves it on the REST API.
/// Routes open whatever `EndpointAuth` says: the OAuth redirect back from an MCP server's
/// authorization server, which its one-use state authenticates.
const OPEN_ROUTES: &[&str] = &["/api/mcp/oauth/callback"];

const ROUTES: &[(&str, &str, &str)] = &[
    ("/api/stream", "post", "StreamFunction"),
    ("/api/chat", "post", "StreamFunction"),
    ("/api/web-stream", "post", "StreamFunction"),
    ("/api/stream/resume/{session_id}", "get", "StreamFunction"),
    ("/api/health", "get", "HealthFunction"),
    ("/health", "get", "HealthFunction"),
    ("/active", "get", "HealthFunction"),
    ("/api/health/ready", "get", "HealthFunction"),
    ("/api/mcp/oauth/callback", "get", "McpAdminFunction"),
    (
        "/api/mcp/{proxy+}",
        "x-amazon-apigateway-any-method",
        "McpAdminFunction",
    ),
    ("/api/tools", "get", "McpAdminFunction"),
    ("/api/tools/exec", "post", "McpAdminFunction"),
    ("/api/conversations", "get", "SessionFunction"),
    ("/api/usage", "get", "SessionFunction"),
    ("/api/usage/all", "get", "SessionFunction"),
    (
        "/api/conversations/{proxy+}",
        "x-amazon-apigateway-any-method",
        "SessionFunction",
    ),
    (
        "/api/share/{proxy+}",
        "x-amazon-apigateway-any-method",
        "SessionFunction",
    ),
    ("/api/sessions/runs/stop", "post", "SessionFunction"),
    (
        "/api/sessions/{session_id}/{proxy+}",
        "x-amazon-apigateway-any-method",
        "SessionFunction",
    ),
    (
        "/api/sessions/{session_id}/approve",
        "post",
        "StreamFunction",
    ),
    ("/api/memories", "get", "SessionFunction"),
    (
        "/api/memories/{proxy+}",
        "x-amazon-apigateway-any-method",
        "SessionFunction",
    ),
    (
        "/api/user/{proxy+}",
        "x-amazon-apigateway-any-method",
        "SessionFunction",
    ),
    (
        "/api/system/{proxy+}",
        "x-amazon-apigateway-any-method",
        "SessionFunction",
    ),
    (
        "/api/agent/{proxy+}",
        "x-amazon-apigateway-any-method",
        "SessionFunction",
    ),
    (
        "/api/llm-provider/{proxy+}",
        "x-amazon-apigateway-any-method",
        "SessionFunction",
    ),
    (
        "/api/skills",
        "x-amazon-apigateway-any-method",
        "SessionFunction",
    ),
    (
        "/api/skills/{proxy+}",
        "x-amazon-apigateway-any-method",
        "SessionFunction",
    ),
    (
        "/api/knowledge-base/{proxy+}",
        "x-amazon-apigateway-any-method",
        "SessionFunction",
    ),
    (
        "/api/oss/{proxy+}",
        "x-amazon-apigateway-any-method",
        "SessionFunction",
    ),
];

// ------------------------------------------------------------------ reading YAML

fn read_yaml(relative: &str) -> Value {
    let path = workspace_root().join(relative);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    serde_yaml_ng::from_str(&text)
        .unwrap_or_else(|error| panic!("{} is not valid YAML: {error}", path.display()))
}

fn template() -> Value {
    read_yaml("template.yaml")
}

/// `(tag, value)` of a CloudFormation short form such as `!Ref X`.
fn tagged(value: &Value) -> Option<(String, &Value)> {
    match value {
        Value::Tagged(tagged) => Some((
            tagged.tag.to_string().trim_start_matches('!').to_owned(),
            &tagged.value,
        )),
        _ => None,
    }
}

fn is_ref(value: &Value, name: &str) -> bool {
    matches!(tagged(value), Some((tag, inner)) if tag == "Ref" && inner.as_str() == Some(name))
}

/// A plain string, or `!Ref X` / `!GetAtt X.Y` as `${X}` / `${X.Y}`, or a `!Sub` string as
/// written: the form in which the expectations above spell resources and URIs.
fn render(value: &Value) -> String {
    match (tagged(value), value) {
        (Some((tag, inner)), _) if tag == "Ref" || tag == "GetAtt" => {
            format!(
                "${{{}}}",
                inner.as_str().expect("a !Ref or !GetAtt names a string")
            )
        }
        (Some((tag, inner)), _) if tag == "Sub" => inner
            .as_str()
            .expect("a one-argument !Sub is a string")
            .to_owned(),
        (None, Value::String(text)) => text.clone(),
        _ => panic!("cannot render {value:?}"),
    }
}

fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::Sequence(items) => items.iter().map(render).collect(),
        single => vec![render(single)],
    }
}

fn mapping_keys(value: &Value) -> Vec<String> {
    value
        .as_mapping()
        .map(|map| {
            map.keys()
                .map(|key| key.as_str().expect("string keys").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn resource<'t>(template: &'t Value, logical_id: &str) -> &'t Value {
    let resource = &template["Resources"][logical_id];
    assert!(
        resource.is_mapping(),
        "template.yaml has no resource {logical_id}"
    );
    resource
}

/// A function's properties with the template's `Globals.Function` applied, as SAM does
/// (function values win; environment variables are merged).
fn effective_properties(template: &Value, logical_id: &str) -> BTreeMap<String, Value> {
    let mut properties: BTreeMap<String, Value> = BTreeMap::new();
    let globals = &template["Globals"]["Function"];
    for key in mapping_keys(globals) {
        properties.insert(key.clone(), globals[key.as_str()].clone());
    }
    let own = &resource(template, logical_id)["Properties"];
    for key in mapping_keys(own) {
        if key == "Environment" {
            continue;
        }
        properties.insert(key.clone(), own[key.as_str()].clone());
    }
    let mut variables = serde_yaml_ng::Mapping::new();
    for source in [globals, own] {
        if let Some(vars) = source["Environment"]["Variables"].as_mapping() {
            for (name, value) in vars {
                variables.insert(name.clone(), value.clone());
            }
        }
    }
    properties.insert("Variables".to_owned(), Value::Mapping(variables));
    properties
}

fn variables(properties: &BTreeMap<String, Value>) -> BTreeMap<String, Value> {
    properties["Variables"]
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(name, value)| (name.as_str().unwrap().to_owned(), value.clone()))
        .collect()
}

/// Every environment variable `sage_core::Config` reads (its clap `env = "..."` names).
fn config_env_names() -> BTreeSet<String> {
    Config::command()
        .get_arguments()
        .filter_map(|arg| arg.get_env())
        .map(|name| name.to_string_lossy().into_owned())
        .collect()
}

/// The normalized statements of a role's inline policies; `!If [cond, statement, NoValue]`
/// becomes a statement with that condition.
fn role_grants(template: &Value, role: &str) -> Vec<Grant> {
    let properties = &resource(template, role)["Properties"];
    assert!(
        properties["ManagedPolicyArns"].is_null(),
        "{role}: no managed policies (AWSLambdaBasicExecutionRole grants logs on every resource)"
    );
    let mut grants = Vec::new();
    for policy in properties["Policies"]
        .as_sequence()
        .expect("inline policies")
    {
        for statement in policy["PolicyDocument"]["Statement"].as_sequence().unwrap() {
            let (condition, statement) = match tagged(statement) {
                Some((tag, inner)) if tag == "If" => {
                    let args = inner.as_sequence().expect("!If takes a list");
                    assert!(
                        is_ref(&args[2], "AWS::NoValue"),
                        "{role}: a conditional statement has no else branch"
                    );
                    (Some(args[0].as_str().unwrap().to_owned()), &args[1])
                }
                _ => (None, statement),
            };
            assert_eq!(
                statement["Effect"], "Allow",
                "{role}: only Allow statements"
            );
            assert!(
                statement["Condition"].is_null() && statement["NotAction"].is_null(),
                "{role}: plain statements only"
            );
            grants.push(Grant {
                condition,
                actions: strings(&statement["Action"]).into_iter().collect(),
                resources: strings(&statement["Resource"]).into_iter().collect(),
            });
        }
    }
    grants.sort();
    grants
}

fn package_name(manifest: &Path) -> String {
    let text = std::fs::read_to_string(manifest).unwrap();
    text.lines()
        .find_map(|line| {
            let line = line.trim();
            line.strip_prefix("name")
                .map(|rest| rest.trim_start())
                .and_then(|rest| rest.strip_prefix('='))
                .map(|value| value.trim().trim_matches('"').to_owned())
        })
        .unwrap_or_else(|| panic!("{} names no package", manifest.display()))
}

// ------------------------------------------------------------------ template tests

#[test]
fn every_function_runs_bootstrap_on_provided_al2023_arm64_by_default_built_by_cargo_lambda() {
    let template = template();
    let architecture = &template["Parameters"]["Architecture"];
    assert_eq!(architecture["Default"], "arm64");
    let allowed: BTreeSet<String> = strings(&architecture["AllowedValues"])
        .into_iter()
        .collect();
    assert_eq!(
        allowed,
        ["arm64", "x86_64"].map(str::to_owned).into_iter().collect()
    );

    let functions: BTreeSet<String> = mapping_keys(&template["Resources"])
        .into_iter()
        .filter(|id| template["Resources"][id.as_str()]["Type"] == "AWS::Serverless::Function")
        .collect();
    let expected: BTreeSet<String> = expected_functions()
        .iter()
        .map(|f| f.logical_id.to_owned())
        .chain(["SandboxFunction".to_owned()])
        .collect();
    assert_eq!(functions, expected, "the template's functions");

    for function in expected_functions() {
        let id = function.logical_id;
        let properties = effective_properties(&template, id);
        assert_eq!(properties["Handler"], "bootstrap", "{id}: handler");
        assert_eq!(properties["Runtime"], "provided.al2023", "{id}: runtime");
        let architectures = properties["Architectures"].as_sequence().unwrap();
        assert!(
            architectures.len() == 1 && is_ref(&architectures[0], "Architecture"),
            "{id}: one architecture, the Architecture parameter"
        );
        assert_eq!(properties["CodeUri"], function.code_uri, "{id}: CodeUri");

        let metadata = &resource(&template, id)["Metadata"];
        assert_eq!(metadata["BuildMethod"], "rust-cargolambda", "{id}");
        assert_eq!(
            metadata["BuildProperties"]["Binary"], function.binary,
            "{id}: the workspace binary SAM asks cargo-lambda for"
        );
        let manifest = workspace_root().join(function.code_uri).join("Cargo.toml");
        if function.landed || manifest.exists() {
            assert_eq!(
                package_name(&manifest),
                function.binary,
                "{id}: {} builds the binary the template names",
                manifest.display()
            );
        }
        assert!(
            properties["Timeout"].as_u64().is_some_and(|t| t <= 900),
            "{id}: a timeout Lambda accepts"
        );
    }
}

#[test]
fn stream_is_served_with_response_streaming_and_the_others_buffered() {
    let template = template();
    for function in expected_functions() {
        let properties = effective_properties(&template, function.logical_id);
        let url = properties.get("FunctionUrlConfig");
        if function.streams {
            let url = url.expect("Stream has a Function URL");
            assert_eq!(url["InvokeMode"], "RESPONSE_STREAM");
            assert!(is_ref(&url["AuthType"], "EndpointAuth"));
        } else {
            assert!(
                url.is_none_or(|url| url["InvokeMode"] != "RESPONSE_STREAM"),
                "{}: only Stream answers with lambda_http's streaming runner",
                function.logical_id
            );
        }
    }
    let endpoint_auth = &template["Parameters"]["EndpointAuth"];
    assert_eq!(endpoint_auth["Default"], "AWS_IAM", "closed unless opened");

    let api = resource(&template, "RestApi");
    assert_eq!(
        api["Type"], "AWS::Serverless::Api",
        "a REST API: HTTP APIs cannot stream"
    );
    assert_eq!(
        api["Properties"]["EndpointConfiguration"]["Type"], "REGIONAL",
        "edge-optimized endpoints cut idle streams after 30 s"
    );
    let body = &api["Properties"]["DefinitionBody"];
    let stream_timeout = effective_properties(&template, "StreamFunction")["Timeout"]
        .as_u64()
        .unwrap();

    let paths: BTreeSet<String> = mapping_keys(&body["paths"]).into_iter().collect();
    let routed: BTreeSet<String> = ROUTES
        .iter()
        .map(|(path, _, _)| (*path).to_owned())
        .collect();
    assert_eq!(
        paths, routed,
        "the REST API serves exactly the contract's routes"
    );
    assert_eq!(
        strings(&body["x-amazon-apigateway-binary-media-types"]),
        ["multipart/form-data"],
        "a skill's zip reaches the Session function as bytes"
    );

    for (path, method, function) in ROUTES {
        let operation = &body["paths"][*path][*method];
        assert!(operation.is_mapping(), "{method} {path} is missing");
        assert_eq!(
            mapping_keys(&body["paths"][*path]),
            vec![(*method).to_owned()],
            "{path}"
        );
        if OPEN_ROUTES.contains(path) {
            assert_eq!(
                operation["x-amazon-apigateway-auth"]["type"], "NONE",
                "{method} {path}: a browser's redirect carries no signature"
            );
        } else {
            assert!(
                is_ref(
                    &operation["x-amazon-apigateway-auth"]["type"],
                    "EndpointAuth"
                ),
                "{method} {path}: authorization follows EndpointAuth"
            );
        }
        let integration = &operation["x-amazon-apigateway-integration"];
        assert_eq!(integration["type"], "aws_proxy", "{path}");
        assert_eq!(
            integration["httpMethod"], "POST",
            "{path}: Lambda is invoked with POST"
        );
        let uri = render(&integration["uri"]);
        let prefix = "arn:${AWS::Partition}:apigateway:${AWS::Region}:lambda:path/";
        if *function == "StreamFunction" {
            assert_eq!(
                uri,
                format!(
                    "{prefix}2021-11-15/functions/${{{function}.Arn}}/response-streaming-invocations"
                ),
                "{path}: InvokeWithResponseStream"
            );
            assert_eq!(integration["responseTransferMode"], "STREAM", "{path}");
            let millis = integration["timeoutInMillis"].as_u64().unwrap();
            assert!(
                millis >= stream_timeout * 1000 && millis <= 900_000,
                "{path}: the integration lets a run last as long as the function ({millis} ms)"
            );
        } else {
            assert_eq!(
                uri,
                format!("{prefix}2015-03-31/functions/${{{function}.Arn}}/invocations"),
                "{path}"
            );
            assert!(
                integration["responseTransferMode"].is_null()
                    || integration["responseTransferMode"] == "BUFFERED",
                "{path}: a buffered function is not streamed"
            );
        }
        for parameter in path.split('{').skip(1) {
            let parameter = parameter.split('}').next().unwrap().trim_end_matches('+');
            let declared = operation["parameters"].as_sequence().is_some_and(|params| {
                params
                    .iter()
                    .any(|p| p["name"] == parameter && p["in"] == "path" && p["required"] == true)
            });
            assert!(
                declared,
                "{path}: declares its path parameter `{parameter}`"
            );
        }
    }

    // API Gateway may invoke each function it routes to, from this API only; Jobs is invoked by
    // its schedule only.
    for function in expected_functions() {
        let permission = mapping_keys(&template["Resources"])
            .into_iter()
            .map(|id| template["Resources"][id.as_str()].clone())
            .find(|r| {
                r["Type"] == "AWS::Lambda::Permission"
                    && is_ref(&r["Properties"]["FunctionName"], function.logical_id)
            });
        let routed = ROUTES
            .iter()
            .any(|(_, _, target)| *target == function.logical_id);
        if !routed {
            assert!(
                permission.is_none(),
                "{}: not on the API",
                function.logical_id
            );
            continue;
        }
        let permission = permission
            .unwrap_or_else(|| panic!("no invoke permission for {}", function.logical_id));
        let properties = &permission["Properties"];
        assert_eq!(properties["Action"], "lambda:InvokeFunction");
        assert_eq!(properties["Principal"], "apigateway.amazonaws.com");
        assert_eq!(
            render(&properties["SourceArn"]),
            "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${RestApi}/*"
        );
    }

    let outputs = mapping_keys(&template["Outputs"]);
    for output in ["StreamFunctionUrl", "ApiUrl", "StreamApiUrl", "HealthUrl"] {
        assert!(outputs.contains(&output.to_owned()), "output {output}");
    }
    assert_eq!(
        render(&template["Outputs"]["StreamFunctionUrl"]["Value"]),
        "${StreamFunctionUrl.FunctionUrl}"
    );
}

#[test]
fn every_environment_variable_is_a_real_setting_and_the_key_comes_from_ssm() {
    let template = template();
    let settings = config_env_names();
    assert!(settings.contains("SAGE_DB_TYPE") && settings.contains("SAGE_DYNAMODB_TABLE"));
    for function in expected_functions() {
        let id = function.logical_id;
        let vars = variables(&effective_properties(&template, id));
        for name in vars.keys() {
            assert!(
                settings.contains(name)
                    || name == KEY_PARAMETER_VAR
                    || RUNTIME_VARS.contains(&name.as_str()),
                "{id}: {name} is not a setting of sage_core::Config (see `sage-local --help`)"
            );
        }
        assert_eq!(vars["SAGE_DB_TYPE"], "dynamodb", "{id}");
        assert!(is_ref(&vars["SAGE_DYNAMODB_TABLE"], "Table"), "{id}");
        assert!(
            !vars.contains_key("SAGE_DEFAULT_LLM_API_KEY"),
            "{id}: the LLM key is never a plain variable"
        );
        if let Some(parameter) = vars.get(KEY_PARAMETER_VAR) {
            assert!(is_ref(parameter, "LlmApiKeyParameterName"), "{id}");
        }
        assert_eq!(
            vars["SAGE_NO_AUTH"], "false",
            "{id}: authentication is on everywhere"
        );
        assert!(
            is_ref(&vars["SAGE_JWT_KEY_PARAMETER"], "JwtKeyParameterName"),
            "{id}: the JWT key comes from SSM"
        );
        assert!(
            !vars.contains_key("SAGE_JWT_KEY") && !vars.contains_key("SAGE_ADMIN_PASSWORD"),
            "{id}: no secret is a plain variable"
        );
        for (name, value) in &vars {
            if name.starts_with("SAGE_") && tagged(value).is_none() {
                // A literal value must be one the configuration accepts.
                let flag = Config::command()
                    .get_arguments()
                    .find(|arg| arg.get_env().is_some_and(|env| env == name.as_str()))
                    .map(|arg| {
                        format!("--{}={}", arg.get_long().unwrap(), value.as_str().unwrap())
                    });
                if let Some(flag) = flag {
                    // Auth on needs a key source; the template names the parameter.
                    Config::try_from_args(["sage", flag.as_str(), "--jwt_key_parameter=/sage/k"])
                        .unwrap_or_else(|error| panic!("{id}: {name}: {error}"));
                }
            }
        }
    }
    let parameter = &template["Parameters"]["LlmApiKeyParameterName"];
    assert_eq!(
        parameter["Type"], "String",
        "the parameter's name, not the key"
    );
    for name in mapping_keys(&template["Parameters"]) {
        let default = template["Parameters"][name.as_str()]["Default"]
            .as_str()
            .unwrap_or("");
        assert!(
            !default.starts_with("sk-"),
            "parameter {name} looks like a key in the template"
        );
    }
}

#[test]
fn every_policy_grants_exactly_what_its_function_uses_without_wildcards() {
    let template = template();
    for function in expected_functions() {
        let id = function.logical_id;
        let properties = effective_properties(&template, id);
        assert_eq!(
            render(&properties["Role"]),
            format!("${{{}.Arn}}", function.role),
            "{id}: its own role"
        );
        assert!(
            !properties.contains_key("Policies"),
            "{id}: permissions live in its role, not in SAM's Policies"
        );
        assert!(
            is_ref(&properties["LoggingConfig"]["LogGroup"], function.log_group),
            "{id}"
        );

        let role = resource(&template, function.role);
        let trust = &role["Properties"]["AssumeRolePolicyDocument"]["Statement"];
        assert_eq!(trust.as_sequence().unwrap().len(), 1);
        assert_eq!(trust[0]["Principal"]["Service"], "lambda.amazonaws.com");
        assert_eq!(trust[0]["Action"], "sts:AssumeRole");

        let actual = role_grants(&template, function.role);
        let mut expected = function.grants.clone();
        expected.push(logs(function.log_group));
        expected.sort();
        assert_eq!(
            actual, expected,
            "{id}: the statements of {}",
            function.role
        );

        for grant in &actual {
            for action in &grant.actions {
                assert!(!action.contains('*'), "{id}: wildcard action {action}");
            }
            for resource in &grant.resources {
                // A star only as the last character, for the items under one resource of this
                // template (`${Name...}` other than a pseudo parameter).
                let star = resource.find('*');
                let names_a_resource = resource
                    .split("${")
                    .skip(1)
                    .any(|reference| !reference.starts_with("AWS::"));
                // The Stream function's own ARN is built from its name: a reference to it from
                // its own role would be a cycle.
                let names_a_resource = names_a_resource || resource == STREAM_FUNCTION_ARN;
                assert!(
                    names_a_resource
                        && (star.is_none()
                            || (star == Some(resource.len() - 1)
                                && (resource.ends_with("/*")
                                    || resource.ends_with(":log-stream:*")))),
                    "{id}: wildcard resource {resource} (only the items under one named resource)"
                );
            }
        }

        // What the function is configured to use and what it may touch agree.
        let vars = variables(&properties);
        let has = |prefix: &str| {
            actual
                .iter()
                .any(|g| g.actions.iter().any(|a| a.starts_with(prefix)))
        };
        let reads = |arn: &str| actual.iter().any(|g| g.resources.contains(arn));
        assert_eq!(
            vars.contains_key(KEY_PARAMETER_VAR),
            reads(KEY_PARAMETER_ARN),
            "{id}: key parameter"
        );
        assert_eq!(
            vars.contains_key("SAGE_MINIO_BUCKET_NAME"),
            has("s3:"),
            "{id}: bucket"
        );
        assert_eq!(
            vars.contains_key("SAGE_ELASTICSEARCH_URL"),
            has("es:"),
            "{id}: search"
        );
    }
}

/// Schedule `id`: an EventBridge Scheduler schedule on parameter `parameter` (default
/// `default`) that invokes Jobs through its schedule role, with the jobs' dead-letter queue.
fn jobs_schedule_target<'a>(
    template: &'a Value,
    id: &str,
    parameter: &str,
    default: &str,
) -> &'a Value {
    let schedule = resource(template, id);
    assert_eq!(schedule["Type"], "AWS::Scheduler::Schedule");
    let properties = &schedule["Properties"];
    assert!(is_ref(&properties["ScheduleExpression"], parameter), "{id}");
    assert_eq!(
        template["Parameters"][parameter]["Default"], default,
        "{id}"
    );
    let target = &properties["Target"];
    assert_eq!(render(&target["Arn"]), "${JobsFunction.Arn}");
    assert_eq!(render(&target["RoleArn"]), "${JobsScheduleRole.Arn}");
    assert_eq!(
        render(&target["DeadLetterConfig"]["Arn"]),
        "${JobsDeadLetterQueue.Arn}"
    );
    target
}

/// The indexing job and the sweep of paused runs run every minute by default on schedules of
/// their own, with the summary job's retries, dead-letter queue and role, and inputs Jobs
/// accepts; the sweep may invoke the Stream function, which it names to Jobs.
#[test]
fn the_indexing_job_and_the_run_sweep_are_scheduled_like_the_summary_job() {
    let template = template();
    for (id, parameter, job) in [
        ("IndexSchedule", "IndexScheduleExpression", "index"),
        ("RunSweepSchedule", "RunSweepScheduleExpression", "runs"),
    ] {
        let target = jobs_schedule_target(&template, id, parameter, "rate(1 minute)");
        let payload: serde_json::Value =
            serde_json::from_str(&render(&target["Input"])).expect("the input is JSON");
        let request = sage_core::jobs::JobRequest::parse(payload).expect("a payload Jobs accepts");
        assert_eq!(request.job, job);
    }
    let jobs = effective_properties(&template, "JobsFunction");
    assert!(is_ref(
        &variables(&jobs)["STREAM_FUNCTION_NAME"],
        "StreamFunction"
    ));
    let statements = &resource(&template, "JobsRole")["Properties"]["Policies"][0]["PolicyDocument"]
        ["Statement"];
    let invokes: Vec<String> = statements
        .as_sequence()
        .unwrap()
        .iter()
        .filter(|statement| statement["Action"] == "lambda:InvokeFunction")
        .map(|statement| render(&statement["Resource"]))
        .collect();
    assert_eq!(
        invokes,
        ["${StreamFunction.Arn}"],
        "the sweep invokes Stream only"
    );
}

/// The summary job runs on a schedule whose rate is a parameter, with retries and a dead-letter
/// queue, through a role that may invoke Jobs and write to that queue only; its input is a job
/// payload Jobs accepts.
#[test]
fn the_summary_job_is_scheduled_with_retries_and_a_dead_letter_queue() {
    let template = template();
    let target = jobs_schedule_target(
        &template,
        "SummarySchedule",
        "SummaryScheduleExpression",
        "rate(1 hour)",
    );
    assert!(
        target["RetryPolicy"]["MaximumRetryAttempts"]
            .as_u64()
            .unwrap()
            >= 1
    );
    assert_eq!(
        resource(&template, "JobsDeadLetterQueue")["Type"],
        "AWS::SQS::Queue"
    );

    let limit = template["Parameters"]["SummaryBatchLimit"]["Default"]
        .as_u64()
        .unwrap();
    let input = render(&target["Input"]).replace("${SummaryBatchLimit}", &limit.to_string());
    let payload: serde_json::Value = serde_json::from_str(&input).expect("the input is JSON");
    let request = sage_core::jobs::JobRequest::parse(payload).expect("a payload Jobs accepts");
    assert_eq!(request.job, "summarize");
    assert_eq!(request.limit, Some(limit as usize));

    let role = resource(&template, "JobsScheduleRole");
    let trust = &role["Properties"]["AssumeRolePolicyDocument"]["Statement"];
    assert_eq!(trust[0]["Principal"]["Service"], "scheduler.amazonaws.com");
    let mut grants = role_grants(&template, "JobsScheduleRole");
    grants.sort();
    let mut expected = vec![
        grant(None, &["lambda:InvokeFunction"], &["${JobsFunction.Arn}"]),
        grant(None, &["sqs:SendMessage"], &["${JobsDeadLetterQueue.Arn}"]),
    ];
    expected.sort();
    assert_eq!(grants, expected);
}

#[test]
fn one_table_with_the_single_table_keys_the_user_index_and_ttl() {
    let template = template();
    let table = resource(&template, "Table");
    assert_eq!(table["Type"], "AWS::DynamoDB::Table");
    let tables = mapping_keys(&template["Resources"])
        .into_iter()
        .filter(|id| template["Resources"][id.as_str()]["Type"] == "AWS::DynamoDB::Table")
        .count();
    assert_eq!(tables, 1, "one table");
    let properties = &table["Properties"];
    assert_eq!(properties["BillingMode"], "PAY_PER_REQUEST");
    let attributes: BTreeMap<String, String> = properties["AttributeDefinitions"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["AttributeName"].as_str().unwrap().to_owned(),
                a["AttributeType"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: BTreeMap<String, String> = ["pk", "sk", "gsi1pk", "gsi1sk"]
        .iter()
        .map(|name| ((*name).to_owned(), "S".to_owned()))
        .collect();
    assert_eq!(attributes, expected);
    let keys = |schema: &Value| -> Vec<(String, String)> {
        schema
            .as_sequence()
            .unwrap()
            .iter()
            .map(|k| {
                (
                    k["AttributeName"].as_str().unwrap().to_owned(),
                    k["KeyType"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let pair = |hash: &str, range: &str| {
        vec![
            (hash.to_owned(), "HASH".to_owned()),
            (range.to_owned(), "RANGE".to_owned()),
        ]
    };
    assert_eq!(keys(&properties["KeySchema"]), pair("pk", "sk"));
    let indexes = properties["GlobalSecondaryIndexes"].as_sequence().unwrap();
    assert_eq!(indexes.len(), 1);
    assert_eq!(indexes[0]["IndexName"], "by_user");
    assert_eq!(keys(&indexes[0]["KeySchema"]), pair("gsi1pk", "gsi1sk"));
    assert_eq!(
        properties["TimeToLiveSpecification"]["AttributeName"],
        "ttl"
    );
    assert_eq!(properties["TimeToLiveSpecification"]["Enabled"], true);

    let bucket = &resource(&template, "Bucket")["Properties"];
    for setting in [
        "BlockPublicAcls",
        "BlockPublicPolicy",
        "IgnorePublicAcls",
        "RestrictPublicBuckets",
    ] {
        assert_eq!(
            bucket["PublicAccessBlockConfiguration"][setting], true,
            "{setting}"
        );
    }
    assert!(
        bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
            ["ServerSideEncryptionByDefault"]["SSEAlgorithm"]
            .is_string(),
        "the bucket is encrypted"
    );

    let search = resource(&template, "SearchDomain");
    assert_eq!(
        search["Condition"], "CreateSearch",
        "OpenSearch only when asked for"
    );
    assert_eq!(
        template["Parameters"]["EnableOpenSearch"]["Default"],
        "false"
    );
}

// ------------------------------------------------------------------ SAM and cfn-lint

/// A tool from the project's venv, else from PATH; missing is a failure, never a skip.
fn deploy_tool(name: &str) -> PathBuf {
    let venv = workspace_root().join(".venv/bin").join(name);
    if venv.exists() {
        return venv;
    }
    let on_path = Command::new(name)
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    assert!(
        on_path,
        "{name} is missing; run `bash tests/run.sh`, which installs aws-sam-cli and cfn-lint"
    );
    PathBuf::from(name)
}

fn run_quiet(mut command: Command) -> (bool, String) {
    let output = command
        .current_dir(workspace_root())
        .env("SAM_CLI_TELEMETRY", "0")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .output()
        .unwrap_or_else(|error| panic!("{command:?} cannot run: {error}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn sam_validate_lint_and_cfn_lint_report_nothing() {
    let mut sam = Command::new(deploy_tool("sam"));
    sam.args([
        "validate",
        "--lint",
        "--template-file",
        "template.yaml",
        "--region",
        "us-east-1",
    ]);
    let (ok, output) = run_quiet(sam);
    let findings: Vec<&str> = output
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.ends_with("is a valid SAM Template"))
        .collect();
    assert!(
        ok && findings.is_empty(),
        "sam validate --lint reported:\n{output}"
    );

    let mut lint = Command::new(deploy_tool("cfn-lint"));
    lint.arg("template.yaml");
    let (ok, output) = run_quiet(lint);
    assert!(
        ok && output.trim().is_empty(),
        "cfn-lint reported:\n{output}"
    );
}

// ------------------------------------------------------------------ compose emulation

/// The seed's service table: service → host ports.
const SERVICES: &[(&str, &[u16])] = &[
    ("sage-server", &[30050]),
    ("sage-mysql", &[30052]),
    ("sage-es", &[30053]),
    ("sage-minio", &[30054, 30055]),
    ("sage-jaeger", &[30056, 4317]),
];

/// `${NAME:-default}` → default, `${NAME}` → "" (what compose does with an empty .env).
fn interpolate_defaults(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("closed ${...}") + start;
        let inner = &rest[start + 2..end];
        if let Some((_, default)) = inner.split_once(":-") {
            out.push_str(default);
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        Value::Bool(flag) => flag.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

#[test]
fn compose_has_the_seed_services_ports_healthchecks_and_volumes() {
    let compose = read_yaml("local/compose.yaml");
    let services = &compose["services"];
    let names: BTreeSet<String> = mapping_keys(services).into_iter().collect();
    let expected: BTreeSet<String> = SERVICES
        .iter()
        .map(|(name, _)| (*name).to_owned())
        .collect();
    assert_eq!(names, expected, "the seed's services");

    for (name, host_ports) in SERVICES {
        let service = &services[*name];
        let published: BTreeSet<u16> = service["ports"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{name} publishes ports"))
            .iter()
            .map(|port| {
                let port = scalar(port);
                let parts: Vec<&str> = port.split(':').collect();
                assert_eq!(parts.len(), 2, "{name}: HOST:CONTAINER, got {port}");
                parts[0].parse().unwrap()
            })
            .collect();
        let wanted: BTreeSet<u16> = host_ports.iter().copied().collect();
        assert_eq!(published, wanted, "{name}: host ports");
        let test = &service["healthcheck"]["test"];
        assert!(
            test.as_sequence().is_some_and(|t| t.len() >= 2) || test.is_string(),
            "{name} has a healthcheck"
        );
    }
    assert_eq!(
        scalar(&services["sage-server"]["ports"][0]),
        "30050:8080",
        "the server listens on 8080 inside"
    );
    let volumes = mapping_keys(&compose["volumes"]);
    for name in ["sage-server", "sage-mysql", "sage-es", "sage-minio"] {
        let mounts = services[name]["volumes"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{name} keeps its data in a volume"));
        for mount in mounts {
            let source = scalar(mount).split(':').next().unwrap().to_owned();
            assert!(
                volumes.contains(&source),
                "{name}: named volume {source} is declared"
            );
        }
    }
    for (name, _) in SERVICES {
        if *name != "sage-server" {
            assert_eq!(
                services["sage-server"]["depends_on"][*name]["condition"], "service_healthy",
                "the server starts after {name} is healthy"
            );
        }
    }
}

#[test]
fn compose_configures_the_server_with_real_settings_only() {
    let compose = read_yaml("local/compose.yaml");
    let environment = compose["services"]["sage-server"]["environment"]
        .as_mapping()
        .expect("the server's environment is a mapping");
    let settings = config_env_names();
    let mut args = vec!["sage".to_owned()];
    let mut vars = BTreeMap::new();
    for (name, value) in environment {
        let name = name.as_str().unwrap().to_owned();
        let value = interpolate_defaults(&scalar(value));
        if name.starts_with("SAGE_") {
            assert!(
                settings.contains(&name),
                "{name} is not a setting of sage_core::Config"
            );
            let id = Config::command()
                .get_arguments()
                .find(|arg| arg.get_env().is_some_and(|env| env == name.as_str()))
                .and_then(|arg| arg.get_long())
                .unwrap()
                .to_owned();
            if !value.is_empty() {
                args.push(format!("--{id}={value}"));
            }
        }
        vars.insert(name, value);
    }
    let config = Config::try_from_args(&args)
        .unwrap_or_else(|error| panic!("the compose settings do not parse: {error}"));
    assert_eq!(config.server.port, 8080);
    assert_eq!(config.store.db_type, sage_core::config::DbType::Mysql);
    assert_eq!(config.store.mysql_host, "sage-mysql");
    assert_eq!(config.store.mysql_port, 3306);
    for needed in [
        "SAGE_MYSQL_USER",
        "SAGE_MYSQL_PASSWORD",
        "SAGE_MYSQL_DATABASE",
        "SAGE_DEFAULT_LLM_API_KEY",
    ] {
        assert!(vars.contains_key(needed), "the server gets {needed}");
    }

    // The env example names only what compose reads.
    let compose_text =
        std::fs::read_to_string(workspace_root().join("local/compose.yaml")).unwrap();
    let example = std::fs::read_to_string(workspace_root().join("local/.env.example")).unwrap();
    for line in example.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name = line.split('=').next().unwrap();
        assert!(
            compose_text.contains(&format!("${{{name}:-"))
                || compose_text.contains(&format!("${{{name}}}")),
            "local/.env.example sets {name}, which compose.yaml never reads"
        );
    }
}

#[test]
fn the_dockerfile_builds_the_shim_in_release_and_runs_it_as_non_root() {
    let text = std::fs::read_to_string(workspace_root().join("local/Dockerfile")).unwrap();
    let stages: Vec<&str> = text
        .lines()
        .filter(|line| line.trim_start().to_uppercase().starts_with("FROM "))
        .collect();
    assert!(stages.len() >= 2, "multi-stage: {stages:?}");
    assert!(text.contains("--release") && text.contains("sage-local"));
    let runtime = text.rsplit_once("\nFROM ").unwrap().1;
    assert!(
        runtime.starts_with("debian:") || runtime.starts_with("gcr.io/distroless/cc"),
        "a small runtime image: {}",
        runtime.lines().next().unwrap()
    );
    let user = runtime
        .lines()
        .filter_map(|line| line.trim().strip_prefix("USER "))
        .next_back()
        .expect("the runtime stage sets USER");
    assert!(
        !["root", "0", "0:0"].contains(&user.trim()),
        "runs as non-root, not {user}"
    );
    assert!(
        text.contains("COPY --from="),
        "copies the binary from the build stage"
    );
}

/// The Stream function's runs end with an error event naming the limit before Lambda's
/// timeout would cut them; the other run limits are parameters; the code tools are off there.
#[test]
fn stream_runs_are_bounded_and_hand_off_before_the_function_timeout() {
    let template = template();
    let properties = effective_properties(&template, "StreamFunction");
    let vars = variables(&properties);
    for (variable, parameter, condition) in [
        ("SAGE_RUN_MAX_SECONDS", "RunMaxSeconds", "HasRunMaxSeconds"),
        (
            "SAGE_RUN_MAX_LLM_CALLS",
            "RunMaxLlmCalls",
            "HasRunMaxLlmCalls",
        ),
        ("SAGE_RUN_MAX_TOKENS", "RunMaxTokens", "HasRunMaxTokens"),
        ("SAGE_RUN_MAX_COST", "RunMaxCost", "HasRunMaxCost"),
        ("SAGE_PRICE_TABLE", "PriceTable", "HasPriceTable"),
        (
            "SAGE_USER_DAILY_TOKENS",
            "UserDailyTokens",
            "HasUserDailyTokens",
        ),
        ("SAGE_USER_DAILY_COST", "UserDailyCost", "HasUserDailyCost"),
    ] {
        let (tag, choice) = tagged(&vars[variable]).expect("an !If");
        assert_eq!(tag, "If", "{variable}");
        let choice = choice.as_sequence().unwrap();
        assert_eq!(choice[0].as_str(), Some(condition), "{variable}");
        assert!(is_ref(&choice[1], parameter), "{variable}");
        assert!(is_ref(&choice[2], "AWS::NoValue"), "{variable}");
        assert!(
            tagged(&template["Conditions"][condition]).is_some(),
            "{condition} is defined"
        );
    }
    let seconds: f64 = template["Parameters"]["RunMaxSeconds"]["Default"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    // A run outlives one invocation by handing off before its end, in time for the hand-off.
    let timeout = properties["Timeout"].as_f64().unwrap();
    let margin = sage_core::domain::runs::INVOCATION_MARGIN.as_secs_f64();
    assert!(
        seconds > timeout && margin + 30.0 <= timeout,
        "{seconds} s over invocations of {timeout} s, handing off {margin} s before their end"
    );
    let config = Config::try_from_args([
        "sage".to_owned(),
        format!("--run_max_seconds={seconds}"),
        "--jwt_key_parameter=/sage/k".to_owned(),
    ])
    .unwrap();
    assert_eq!(
        config.limits.max_duration,
        Some(std::time::Duration::from_secs_f64(seconds))
    );
    assert_eq!(vars["SAGE_CODE_SANDBOX"], "lambda");
}

/// The code tools' programs run in a function of their own: built by cargo-lambda like the
/// others, with a role that grants nothing (no table, bucket, parameter or even logs), no
/// settings of its own, invoked only by Stream and MCP-admin, which name it in their settings.
#[test]
fn code_runs_in_a_sandbox_function_whose_role_grants_nothing() {
    let template = template();
    let properties = effective_properties(&template, "SandboxFunction");
    assert_eq!(properties["Handler"], "bootstrap");
    assert_eq!(properties["Runtime"], "provided.al2023");
    assert_eq!(properties["CodeUri"], "functions/sandbox");
    let metadata = &resource(&template, "SandboxFunction")["Metadata"];
    assert_eq!(metadata["BuildMethod"], "rust-cargolambda");
    assert_eq!(metadata["BuildProperties"]["Binary"], "sage-sandbox");
    assert_eq!(render(&properties["Role"]), "${SandboxRole.Arn}");
    let own = &resource(&template, "SandboxFunction")["Properties"];
    assert!(
        own["Environment"].is_null(),
        "no settings of the product's beyond the globals (its programs see an empty environment)"
    );
    let code_timeout = 30.0;
    assert!(properties["Timeout"].as_f64().unwrap() > code_timeout);
    // Interpreters come as layers the operator names; none by default.
    assert_eq!(template["Parameters"]["SandboxLayers"]["Default"], "");
    let (tag, choice) = tagged(&properties["Layers"]).expect("an !If");
    assert_eq!(tag, "If");
    let choice = choice.as_sequence().unwrap();
    assert_eq!(choice[0].as_str(), Some("HasSandboxLayers"));
    assert!(is_ref(&choice[1], "SandboxLayers"));
    assert!(is_ref(&choice[2], "AWS::NoValue"));

    let role = &resource(&template, "SandboxRole")["Properties"];
    assert!(role["Policies"].is_null(), "no inline policy: {role:?}");
    assert!(role["ManagedPolicyArns"].is_null(), "no managed policy");
    let trust = &role["AssumeRolePolicyDocument"]["Statement"];
    assert_eq!(trust[0]["Principal"]["Service"], "lambda.amazonaws.com");

    for caller in ["StreamFunction", "McpAdminFunction"] {
        let vars = variables(&effective_properties(&template, caller));
        assert_eq!(vars["SAGE_CODE_SANDBOX"], "lambda", "{caller}");
        assert!(
            is_ref(&vars["SAGE_CODE_SANDBOX_FUNCTION"], "SandboxFunction"),
            "{caller}"
        );
    }
    for id in mapping_keys(&template["Resources"])
        .into_iter()
        .filter(|id| id.ends_with("Role") && id != "SandboxRole")
    {
        let invokes = role_grants(&template, &id)
            .iter()
            .any(|grant| grant.resources.contains("${SandboxFunction.Arn}"));
        assert_eq!(
            invokes,
            id == "StreamRole" || id == "McpAdminRole",
            "{id}: only Stream and MCP-admin may run code"
        );
    }
}

/// The hand-off invokes the Stream function by the name the template gives it, once: an
/// asynchronous Invoke that Lambda retried would find its ticket taken.
#[test]
fn stream_hands_off_to_itself_by_its_own_name_without_retries() {
    let template = template();
    let properties = effective_properties(&template, "StreamFunction");
    let name = render(&properties["FunctionName"]);
    assert!(
        STREAM_FUNCTION_ARN.ends_with(&format!(":function:{name}")),
        "{name}"
    );
    assert_eq!(
        properties["EventInvokeConfig"]["MaximumRetryAttempts"].as_u64(),
        Some(0)
    );
}
