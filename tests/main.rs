//! The end-to-end tests, one binary: the shim, the functions and the scripted LLM, over real
//! sockets or in process, with real MCP peers and stores.

mod common;

mod accounts;
mod agents;
mod blob_conformance;
mod browser;
mod builtin_tools;
mod client_routes;
mod code_tools;
mod config_flags;
mod context_budget;
mod conversation_search;
mod document_tools;
mod event_packing;
mod fibre_mode;
mod files;
mod health;
mod jwks;
mod knowledge;
mod lambda_build;
mod lambda_events;
mod lambda_watch;
mod mcp_admin;
mod mcp_transports;
mod multi_mode;
mod openapi;
mod providers;
mod request_errors;
mod robustness;
mod run_control;
mod run_limits;
mod search_conformance;
mod session_api;
mod simple_mode;
mod skills;
mod store_conformance;
mod stream_failures;
mod stream_text;
mod stream_tools;
mod summary_job;
mod summary_step;
mod template;
mod traces;
mod usage_ledger;
mod user_memory;
