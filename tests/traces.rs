//! Traces: `sage-local` with `--trace_jaeger_url` sends OTLP/HTTP protobuf to a receiver (this
//! file's, decoding with the OpenTelemetry protocol's own types). One trace per run: the run
//! span, a span per model call (model, tokens, time to first token), per tool call (tool,
//! server, outcome) and per event-log write; its id is in `stream_end`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use serde_json::json;

use crate::common::*;

#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub attributes: HashMap<String, String>,
    pub service: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn text(value: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.as_ref().and_then(|value| value.value.as_ref()) {
        Some(AnyValue::StringValue(text)) => text.clone(),
        Some(AnyValue::IntValue(number)) => number.to_string(),
        Some(AnyValue::BoolValue(flag)) => flag.to_string(),
        Some(AnyValue::DoubleValue(number)) => number.to_string(),
        _ => String::new(),
    }
}

/// An OTLP/HTTP receiver on a free port: `POST /v1/traces` with protobuf bodies.
pub async fn receiver() -> (String, Arc<Mutex<Vec<ReceivedSpan>>>) {
    let spans: Arc<Mutex<Vec<ReceivedSpan>>> = Arc::default();
    let store = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let store = store.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                let mut received = store.lock().unwrap();
                for resource in request.resource_spans {
                    let service = resource
                        .resource
                        .as_ref()
                        .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                        .map(|a| text(&a.value))
                        .unwrap_or_default();
                    for scope in resource.scope_spans {
                        for span in scope.spans {
                            received.push(ReceivedSpan {
                                name: span.name.clone(),
                                trace_id: hex(&span.trace_id),
                                span_id: hex(&span.span_id),
                                parent_span_id: hex(&span.parent_span_id),
                                attributes: span
                                    .attributes
                                    .iter()
                                    .map(|a| (a.key.clone(), text(&a.value)))
                                    .collect(),
                                service: service.clone(),
                            });
                        }
                    }
                }
                (
                    [("content-type", "application/x-protobuf")],
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, spans)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_is_one_trace_with_its_model_tool_and_store_spans() {
    let (otlp_url, spans) = receiver().await;
    let llm = MockLlm::start(sage_mock_llm::MockOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let shim = sage_local_on_file_store(
        dir.path(),
        &llm.base_url,
        &["--mcp_allow_stdio", "--trace_jaeger_url", &otlp_url],
        &[("OTEL_BSP_SCHEDULE_DELAY", "100")],
    )
    .await;
    let events = post_ndjson(
        &format!("{}/api/stream", shim.url),
        &json!({
            "session_id": "traced-1",
            "messages": [{"role": "user", "content": r#"call:echo{"text": "traced"}"#}],
            "available_tools": ["echo"],
            "extra_mcp_config": {"peer": stdio_peer(json!({}))},
        }),
    )
    .await;
    assert_tail(&events, "traced-1");
    let end = events.last().unwrap();
    let trace_id = end["metadata"]["trace_id"]
        .as_str()
        .unwrap_or_else(|| panic!("stream_end names the trace: {end}"))
        .to_owned();
    assert_eq!(trace_id.len(), 32);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let in_trace = loop {
        let in_trace: Vec<ReceivedSpan> = spans
            .lock()
            .unwrap()
            .iter()
            .filter(|span| span.trace_id == trace_id)
            .cloned()
            .collect();
        let named = |name: &str| in_trace.iter().filter(|s| s.name == name).count();
        if named("run") == 1
            && named("llm.call") >= 2
            && named("tool.call") == 1
            && named("search.upsert") == 1
        {
            break in_trace;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run's spans did not arrive: {in_trace:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let run = in_trace.iter().find(|s| s.name == "run").unwrap();
    assert_eq!(run.attributes["session_id"], "traced-1");
    assert_eq!(run.service, "sage-local");
    let calls: Vec<&ReceivedSpan> = in_trace.iter().filter(|s| s.name == "llm.call").collect();
    for call in &calls {
        assert_eq!(call.parent_span_id, run.span_id, "{call:?}");
        assert_eq!(call.attributes["model"], "deepseek-chat");
        assert!(
            call.attributes["prompt_tokens"].parse::<u64>().unwrap() > 0,
            "{call:?}"
        );
        assert!(
            call.attributes.contains_key("completion_tokens"),
            "{call:?}"
        );
        assert!(
            call.attributes.contains_key("time_to_first_token_ms"),
            "{call:?}"
        );
    }
    let tool = in_trace.iter().find(|s| s.name == "tool.call").unwrap();
    assert_eq!(tool.parent_span_id, run.span_id);
    assert_eq!(
        (
            tool.attributes["tool"].as_str(),
            tool.attributes["server"].as_str(),
            tool.attributes["outcome"].as_str()
        ),
        ("echo", "peer", "ok")
    );
    assert!(
        in_trace.iter().any(|s| s.name == "store.append"),
        "the event log's writes are spans too"
    );
    let indexed = in_trace.iter().find(|s| s.name == "search.upsert").unwrap();
    assert_eq!(
        indexed.parent_span_id, run.span_id,
        "indexing the conversation for search is part of the run"
    );
}

/// `--enable_trace false` sends nothing, and the run names no trace.
#[tokio::test(flavor = "multi_thread")]
async fn enable_trace_false_sends_nothing() {
    let (otlp_url, spans) = receiver().await;
    let llm = MockLlm::start(sage_mock_llm::MockOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--db_type",
        "memory",
        "--default_llm_api_key",
        "k",
        "--default_llm_api_base_url",
        &llm.base_url,
        "--trace_jaeger_url",
        &otlp_url,
        "--enable_trace",
        "false",
    ];
    let shim = ShimProcess::start(dir.path(), &args, &[("OTEL_BSP_SCHEDULE_DELAY", "100")]).await;
    let events = post_ndjson(
        &format!("{}/api/stream", shim.url),
        &json!({"messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert!(events.last().unwrap()["metadata"]["trace_id"].is_null());
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(spans.lock().unwrap().is_empty());
}
