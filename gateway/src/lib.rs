//! Switchyard's gateway: the OpenAI-compatible HTTP API, configuration,
//! providers and dispatch. `main.rs` is a thin wrapper over [`cli::main`].

pub mod access;
pub mod agent;
pub mod api;
pub mod app;
pub mod batch;
pub mod cache;
pub mod cli;
pub mod config;
pub mod dashboard;
pub mod dispatch;
pub mod error;
pub mod fleet;
pub mod logging;
pub mod metrics;
pub mod providers;
pub mod routing;
pub mod server;
