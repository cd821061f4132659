//! Model groups: the model names clients ask for, each served by an ordered
//! or weighted list of deployments (provider + upstream model).

use std::collections::HashMap;

use crate::config::{
    BreakerConfig, Config, ConfigError, DeploymentConfig, RetryConfig, Strategy, TimeoutConfig,
};
use crate::dispatch::breaker::Breaker;
use crate::providers::AnyProvider;

/// One provider + upstream model, with its own connection pool, time-outs,
/// retry policy and circuit breaker.
#[derive(Debug)]
pub struct Deployment {
    pub id: String,
    pub model: String,
    pub provider_name: String,
    pub provider: AnyProvider,
    pub weight: u32,
    pub timeouts: TimeoutConfig,
    pub retry: RetryConfig,
    pub breaker: Breaker,
}

/// A model name and its deployments.
#[derive(Debug)]
pub struct ModelGroup {
    pub name: String,
    pub strategy: Strategy,
    pub deployments: Vec<Deployment>,
}

impl ModelGroup {
    /// Deployment indices in the order to try them.
    pub fn attempt_order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.deployments.len()).collect();
        if self.strategy == Strategy::Weighted && order.len() > 1 {
            let total: u64 = self.deployments.iter().map(|d| u64::from(d.weight)).sum();
            let mut pick = rand::random_range(0..total.max(1));
            let first = self
                .deployments
                .iter()
                .position(|d| {
                    let w = u64::from(d.weight);
                    if pick < w {
                        true
                    } else {
                        pick -= w;
                        false
                    }
                })
                .unwrap_or(0);
            order.sort_by_key(|&i| (i != first, std::cmp::Reverse(self.deployments[i].weight), i));
        }
        order
    }
}

/// All model groups by name, in configuration order.
#[derive(Debug, Default)]
pub struct ModelGroups {
    by_name: HashMap<String, usize>,
    groups: Vec<ModelGroup>,
}

impl ModelGroups {
    /// Build every deployment, resolving provider secrets through `env`.
    pub fn from_config(
        config: &Config,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut out = Self::default();
        for g in &config.model_groups {
            let deployments = g
                .deployments
                .iter()
                .map(|d| deployment(config, d, config.retry, config.breaker, env))
                .collect::<Result<Vec<_>, _>>()?;
            out.by_name.insert(g.name.clone(), out.groups.len());
            out.groups.push(ModelGroup {
                name: g.name.clone(),
                strategy: g.strategy,
                deployments,
            });
        }
        Ok(out)
    }

    pub fn get(&self, name: &str) -> Option<&ModelGroup> {
        self.by_name.get(name).map(|&i| &self.groups[i])
    }

    pub fn iter(&self) -> impl Iterator<Item = &ModelGroup> {
        self.groups.iter()
    }
}

fn deployment(
    config: &Config,
    d: &DeploymentConfig,
    retry: RetryConfig,
    breaker: BreakerConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Deployment, ConfigError> {
    let provider_config = config.providers.get(&d.provider).ok_or_else(|| {
        ConfigError(format!(
            "deployment provider `{}` is not configured",
            d.provider
        ))
    })?;
    Ok(Deployment {
        id: d.id(),
        model: d.model.clone(),
        provider_name: d.provider.clone(),
        provider: AnyProvider::from_config(&d.provider, provider_config, &d.timeouts, env)?,
        weight: d.weight,
        timeouts: d.timeouts,
        retry: d.retry.unwrap_or(retry),
        breaker: Breaker::new(breaker),
    })
}
