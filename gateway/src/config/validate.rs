//! Checks that serde cannot express: references between sections, value
//! ranges, URL syntax. Each message names the field.

use std::collections::HashSet;

use super::{Config, ConfigError, ProviderConfig, Strategy};

impl Config {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: String| Err(ConfigError(m));
        let s = &self.server;
        if s.max_body_bytes < 1024 {
            return err("server.max_body_bytes: must be at least 1024".into());
        }
        if s.max_messages == 0 || s.max_n == 0 || s.max_embedding_inputs == 0 {
            return err(
                "server: max_messages, max_n and max_embedding_inputs must be at least 1".into(),
            );
        }
        let b = &self.batch;
        if b.max_items == 0 || b.concurrency == 0 || b.max_attempts == 0 {
            return err("batch: max_items, concurrency and max_attempts must be at least 1".into());
        }
        if b.max_items > 10_000_000 {
            return err("batch.max_items: at most 10000000".into());
        }
        if b.default_window_secs == 0
            || b.default_window_secs > 366 * 86_400
            || b.max_file_bytes < 1024
        {
            return err(
                "batch: default_window_secs must be 1 to 31622400 (366 days) and max_file_bytes at least 1024"
                    .into(),
            );
        }
        if !(b.idle_share > 0.0 && b.idle_share <= 1.0) {
            return err("batch.idle_share: must be above 0 and at most 1".into());
        }
        if !(0.0..0.9).contains(&b.deadline_margin) {
            return err("batch.deadline_margin: must be at least 0 and below 0.9".into());
        }
        if b.provider_batch_turnaround_secs == 0
            || b.provider_batch_poll_ms < 100
            || !(1..=50_000).contains(&b.provider_batch_max_items)
        {
            return err(
                "batch: provider_batch_turnaround_secs must be at least 1, provider_batch_poll_ms at least 100, provider_batch_max_items 1 to 50000"
                    .into(),
            );
        }
        let t = &self.tracing;
        if !(0.0..=1.0).contains(&t.sample_ratio) || t.service_name.is_empty() {
            return err("tracing: sample_ratio must be 0 to 1 and service_name not empty".into());
        }
        if let Some(e) = &t.otlp_endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return err(format!(
                "tracing.otlp_endpoint: `{e}` must be an http:// or https:// URL (OTLP/gRPC)"
            ));
        }
        let c = &self.cache;
        if c.max_entries == 0 || c.ttl_secs == 0 {
            return err("cache: max_entries and ttl_secs must be at least 1".into());
        }
        if c.store_max_entries == 0 || c.store_sweep_secs == 0 {
            return err("cache: store_max_entries and store_sweep_secs must be at least 1".into());
        }
        if c.max_bytes < 1024 {
            return err("cache.max_bytes: must be at least 1024".into());
        }
        if !(0.0..=2.0).contains(&c.max_temperature) {
            return err("cache.max_temperature: must be between 0 and 2".into());
        }
        for (name, value) in [
            ("similarity", f64::from(c.similarity)),
            ("audit_rate", c.audit_rate),
            ("target_error_rate", c.target_error_rate),
            ("audit_agreement", f64::from(c.audit_agreement)),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return err(format!("cache.{name}: must be between 0 and 1"));
            }
        }
        if c.store == super::StoreKind::Qdrant {
            match c.qdrant_url.as_deref().map(reqwest::Url::parse) {
                None => return err("cache.qdrant_url: required with store = \"qdrant\"".into()),
                Some(Err(e)) => return err(format!("cache.qdrant_url: {e}")),
                Some(Ok(_)) => {}
            }
            if c.qdrant_collection.trim().is_empty() {
                return err("cache.qdrant_collection: must not be empty".into());
            }
        }
        if let Some(name) = &c.embedding_model
            && !self.embedding_models.iter().any(|m| &m.name == name)
        {
            return err(format!(
                "cache.embedding_model: `{name}` is not one of the [[embedding_models]]"
            ));
        }
        for g in &self.model_groups {
            let Some(gc) = &g.cache else { continue };
            if gc.ttl_secs == Some(0) {
                return err(format!(
                    "model_groups.{}.cache.ttl_secs: must be at least 1 (use enabled = false)",
                    g.name
                ));
            }
            for (name, value) in [
                ("similarity", gc.similarity.map(f64::from)),
                ("audit_rate", gc.audit_rate),
                ("target_error_rate", gc.target_error_rate),
            ] {
                if value.is_some_and(|v| !(0.0..=1.0).contains(&v)) {
                    return err(format!(
                        "model_groups.{}.cache.{name}: must be between 0 and 1",
                        g.name
                    ));
                }
            }
        }
        self.validate_access()?;
        if self.breaker.failure_threshold == 0 {
            return err("breaker.failure_threshold: must be at least 1".into());
        }
        if self.retry.backoff_base_ms > self.retry.backoff_max_ms {
            return err("retry.backoff_base_ms: must not exceed retry.backoff_max_ms".into());
        }
        for (name, provider) in &self.providers {
            let (field, url) = match provider {
                ProviderConfig::OpenaiCompat {
                    base_url, local, ..
                } => {
                    if let Some(l) = local {
                        validate_local(name, l)?;
                    }
                    ("base_url", base_url)
                }
                ProviderConfig::AzureOpenai {
                    base_url,
                    api_version,
                    ..
                } => {
                    if api_version.trim().is_empty() {
                        return err(format!("providers.{name}.api_version: must not be empty"));
                    }
                    ("base_url", base_url)
                }
                ProviderConfig::Anthropic {
                    base_url,
                    default_max_tokens,
                    ..
                } => {
                    if *default_max_tokens == 0 {
                        return err(format!(
                            "providers.{name}.default_max_tokens: must be at least 1"
                        ));
                    }
                    ("base_url", base_url)
                }
            };
            match reqwest::Url::parse(url) {
                Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
                Ok(_) => {
                    return err(format!(
                        "providers.{name}.{field}: must be an http or https URL"
                    ));
                }
                Err(e) => {
                    return err(format!(
                        "providers.{name}.{field}: invalid URL `{url}`: {e}"
                    ));
                }
            }
        }
        let mut groups = HashSet::new();
        for (i, group) in self.model_groups.iter().enumerate() {
            let at = format!("model_groups[{i}]");
            if group.name.trim().is_empty() {
                return err(format!("{at}.name: must not be empty"));
            }
            if !groups.insert(group.name.as_str()) {
                return err(format!("{at}.name: duplicate model group `{}`", group.name));
            }
            if group.deployments.is_empty() {
                return err(format!(
                    "{at}.deployments: model group `{}` needs at least one deployment",
                    group.name
                ));
            }
            let mut ids = HashSet::new();
            for (j, d) in group.deployments.iter().enumerate() {
                let at = format!("{at}.deployments[{j}]");
                if !self.providers.contains_key(&d.provider) {
                    let known: Vec<&str> = self.providers.keys().map(String::as_str).collect();
                    return err(format!(
                        "{at}.provider: unknown provider `{}` (configured: {})",
                        d.provider,
                        if known.is_empty() {
                            "none".into()
                        } else {
                            known.join(", ")
                        }
                    ));
                }
                if d.model.trim().is_empty() {
                    return err(format!("{at}.model: must not be empty"));
                }
                if group.strategy == Strategy::Weighted && d.weight == 0 {
                    return err(format!(
                        "{at}.weight: must be at least 1 with strategy = \"weighted\""
                    ));
                }
                let t = &d.timeouts;
                if t.connect_ms == 0 || t.ttft_ms == 0 || t.total_ms == 0 {
                    return err(format!(
                        "{at}.timeouts: every time-out must be at least 1 ms"
                    ));
                }
                if t.ttft_ms > t.total_ms {
                    return err(format!("{at}.timeouts.ttft_ms: must not exceed total_ms"));
                }
                let id = d.id();
                if !ids.insert(id.clone()) {
                    return err(format!(
                        "{at}: duplicate deployment id `{id}` in group `{}` (set `id`)",
                        group.name
                    ));
                }
            }
        }
        let sc = &self.scheduler;
        if sc.ttft_slo_ms == 0 || sc.default_output_tokens == 0 {
            return err(
                "scheduler: ttft_slo_ms and default_output_tokens must be at least 1".into(),
            );
        }
        if sc.telemetry_interval_ms < 50 {
            return err("scheduler.telemetry_interval_ms: must be at least 50".into());
        }
        if sc.stale_after_ms <= sc.telemetry_interval_ms {
            return err(
                "scheduler.stale_after_ms: must exceed telemetry_interval_ms (a sample or two may be late)"
                    .into(),
            );
        }
        for (i, m) in self.embedding_models.iter().enumerate() {
            let at = format!("embedding_models[{i}]");
            if m.name.trim().is_empty() {
                return err(format!("{at}.name: must not be empty"));
            }
            if !groups.insert(m.name.as_str()) {
                return err(format!(
                    "{at}.name: `{}` is already a model group or embedding model",
                    m.name
                ));
            }
            if let Err(e) = m.device.parse::<switchyard_embedder::DeviceSpec>() {
                return err(format!("{at}.device: {e}"));
            }
            if m.max_batch == 0 || m.queue_capacity == 0 {
                return err(format!(
                    "{at}: max_batch and queue_capacity must be at least 1"
                ));
            }
        }
        Ok(())
    }
}

impl Config {
    /// `[tenants]` and `[dlp]`: names, allow-lists and budgets.
    fn validate_access(&self) -> Result<(), ConfigError> {
        let err = |m: String| Err(ConfigError(m));
        let known = |m: &str| {
            self.model_groups.iter().any(|g| g.name == m)
                || self.embedding_models.iter().any(|e| e.name == m)
        };
        let name_ok = crate::access::store::valid_name;
        for (name, t) in &self.tenants {
            if !name_ok(name) {
                return err(format!(
                    "tenants.{name}: a tenant name is 1 to 64 letters, digits, `_`, `-` or `.`"
                ));
            }
            if let Some(m) = t.models.iter().find(|m| !known(m)) {
                return err(format!(
                    "tenants.{name}.models: `{m}` is not a configured model"
                ));
            }
            let l = &t.limits;
            let bad = |v: Option<f64>| v.is_some_and(|v| !(v.is_finite() && v >= 0.0));
            if bad(l.budget_daily_usd) || bad(l.budget_monthly_usd) {
                return err(format!(
                    "tenants.{name}.limits: budgets must be non-negative"
                ));
            }
        }
        for c in &self.dlp.custom {
            if !name_ok(&c.name) || c.name.contains('.') {
                return err(format!(
                    "dlp.custom: detector name `{}` must be 1 to 64 letters, digits, `_` or `-`",
                    c.name
                ));
            }
        }
        if self.auth.db.as_os_str().is_empty() {
            return err("auth.db: must not be empty".into());
        }
        Ok(())
    }
}

fn validate_local(name: &str, l: &super::LocalBackendConfig) -> Result<(), ConfigError> {
    use switchyard_scheduler::profile::GpuProfile;
    let at = format!("providers.{name}.local");
    if GpuProfile::named(&l.gpu).is_none() {
        return Err(ConfigError(format!(
            "{at}.gpu: unknown GPU profile `{}` (known: {})",
            l.gpu,
            GpuProfile::NAMES.join(", ")
        )));
    }
    if !(l.gpu_hour_usd.is_finite() && l.gpu_hour_usd >= 0.0) {
        return Err(ConfigError(format!(
            "{at}.gpu_hour_usd: must be a price of 0 or more"
        )));
    }
    if let Err(e) = switchyard_scheduler::profile::kv_tokens_in_gb(l.host_kv_gb) {
        return Err(ConfigError(format!("{at}.host_kv_gb: {e}")));
    }
    if l.permits == 0 {
        return Err(ConfigError(format!("{at}.permits: must be at least 1")));
    }
    use super::TelemetryKind;
    let kind = match l.telemetry {
        TelemetryKind::Nvml => "nvml",
        TelemetryKind::Agent => "agent",
        TelemetryKind::None | TelemetryKind::Sim => "",
    };
    if !kind.is_empty() && l.gpus.is_empty() {
        return Err(ConfigError(format!(
            "{at}.gpus: list this backend's GPUs (indexes or UUIDs) with telemetry = \"{kind}\""
        )));
    }
    match (&l.agent, l.telemetry) {
        (None, TelemetryKind::Agent) => {
            return Err(ConfigError(format!(
                "{at}.agent: the node agent's address (e.g. http://10.0.0.11:9950) is required with telemetry = \"agent\""
            )));
        }
        (Some(_), t) if t != TelemetryKind::Agent => {
            return Err(ConfigError(format!(
                "{at}.agent: only used with telemetry = \"agent\""
            )));
        }
        (Some(url), _) => match reqwest::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                if l.agent_tls.is_some() && u.scheme() != "https" {
                    return Err(ConfigError(format!(
                        "{at}.agent_tls: the agent address `{url}` must be https://"
                    )));
                }
            }
            Ok(_) => {
                return Err(ConfigError(format!(
                    "{at}.agent: `{url}` must be an http:// or https:// address with a host"
                )));
            }
            Err(e) => {
                return Err(ConfigError(format!("{at}.agent: invalid URL `{url}`: {e}")));
            }
        },
        (None, _) if l.agent_tls.is_some() => {
            return Err(ConfigError(format!(
                "{at}.agent_tls: set without an `agent`"
            )));
        }
        (None, _) => {}
    }
    if let Some(tls) = &l.agent_tls
        && tls.cert.is_some() != tls.key.is_some()
    {
        return Err(ConfigError(format!(
            "{at}.agent_tls: `cert` and `key` go together"
        )));
    }
    if let Some(url) = &l.metrics_url
        && let Err(e) = reqwest::Url::parse(url)
    {
        return Err(ConfigError(format!(
            "{at}.metrics_url: invalid URL `{url}`: {e}"
        )));
    }
    Ok(())
}
