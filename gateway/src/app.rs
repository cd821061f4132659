//! The gateway's shared state, built once from the configuration.

use std::sync::atomic::AtomicBool;

use secrecy::SecretString;

use crate::config::{Config, ConfigError};
use crate::routing::ModelGroups;

/// Request limits, from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_messages: usize,
    pub max_n: u32,
    pub max_embedding_inputs: usize,
}

#[derive(Debug)]
pub struct App {
    pub limits: Limits,
    pub groups: ModelGroups,
    pub master_key: Option<SecretString>,
    pub shutting_down: AtomicBool,
    /// Unix seconds at start-up (`created` of `/v1/models` entries).
    pub started_at: u64,
}

impl App {
    /// Build providers and deployments, resolving secrets through `env`.
    pub fn build(
        config: &Config,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let master_key = config
            .auth
            .master_key
            .as_ref()
            .map(|k| {
                k.resolve(env)
                    .map_err(|e| ConfigError(format!("auth.master_key: {e}")))
            })
            .transpose()?;
        let s = &config.server;
        Ok(Self {
            limits: Limits {
                max_body_bytes: s.max_body_bytes,
                max_messages: s.max_messages,
                max_n: s.max_n,
                max_embedding_inputs: s.max_embedding_inputs,
            },
            groups: ModelGroups::from_config(config, env)?,
            master_key,
            shutting_down: AtomicBool::new(false),
            started_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        })
    }
}

/// The process environment, as `App::build` wants it.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}
