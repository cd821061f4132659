//! The per-request log line: id, endpoint, model group, deployment, status,
//! latency, overhead, tokens, attempts. Prompts and secrets are never
//! logged. The line is written exactly once, when the [`RequestLog`] is
//! dropped: at the end of the handler, or at the end of a stream.

use std::time::Duration;

use tokio::time::Instant;

use crate::providers::Usage;

#[derive(Debug)]
pub struct RequestLog {
    pub request_id: String,
    pub endpoint: &'static str,
    pub model_group: Option<String>,
    pub deployment: Option<String>,
    pub status: u16,
    pub stream: bool,
    pub attempts: u32,
    pub usage: Option<Usage>,
    pub overhead: Option<Duration>,
    /// Why a stream ended early (upstream error, client gone).
    pub outcome: &'static str,
    /// What the cache did: `hit-exact`, `miss`, `bypass`, or `-` (off).
    pub cache: &'static str,
    /// An audited miss: `hit` (a semantic hit answered fresh to check it)
    /// or `near` (a candidate below the group's raised threshold).
    pub cache_audit: Option<&'static str>,
    /// Why the scheduler placed it where it went (placed groups only).
    pub placement: Option<&'static str>,
    /// `model_group` names no configured group (labelled `unknown` in
    /// metrics, where labels must come from a bounded set).
    pub unknown_group: bool,
    /// Who called (set once authenticated).
    pub principal: Option<crate::access::Principal>,
    /// Where the ledger row goes (auth on).
    pub access: Option<std::sync::Arc<crate::access::Access>>,
    /// The request's hold on its limits, settled at the end.
    pub admission: Option<crate::access::Admission>,
    /// DLP detectors that redacted or logged something.
    pub dlp: Vec<String>,
    /// A cache hit's estimated saving (its answer at the group's price).
    pub saved_usd: Option<f64>,
    started: Instant,
}

impl RequestLog {
    pub fn new(request_id: String, endpoint: &'static str, started: Instant) -> Self {
        Self {
            request_id,
            endpoint,
            model_group: None,
            deployment: None,
            status: 200,
            stream: false,
            attempts: 0,
            usage: None,
            overhead: None,
            outcome: "ok",
            cache: "-",
            cache_audit: None,
            placement: None,
            unknown_group: false,
            principal: None,
            access: None,
            admission: None,
            dlp: Vec::new(),
            saved_usd: None,
            started,
        }
    }
}

impl Drop for RequestLog {
    fn drop(&mut self) {
        let usage = self.usage.unwrap_or_default();
        if self.outcome == "deferred" {
            // A batch item placement put off (tried again shortly).
            tracing::debug!(target: "switchyard::request", request_id = %self.request_id, "batch item deferred");
            return;
        }
        let latency = self.started.elapsed();
        let (cost, answered) = crate::metrics::request(
            self.endpoint,
            match (&self.model_group, self.unknown_group) {
                (_, true) => "unknown",
                (Some(g), false) => g,
                (None, false) => "-",
            },
            self.deployment.as_deref(),
            self.status,
            self.outcome,
            self.cache,
            latency,
            self.overhead,
            self.usage.map(|u| {
                let cached = u.prompt_tokens_details.map_or(0, |d| d.cached_tokens);
                (u.prompt_tokens, cached, u.completion_tokens)
            }),
        );
        let tenant = self
            .principal
            .as_ref()
            .map_or(crate::access::DEFAULT_TENANT, |p| &*p.tenant);
        let key_id = self.principal.as_ref().and_then(|p| p.key_id());
        let dlp = (!self.dlp.is_empty()).then(|| self.dlp.join(","));
        tracing::info!(
            target: "switchyard::request",
            request_id = %self.request_id,
            tenant,
            key_id,
            dlp,
            endpoint = self.endpoint,
            model_group = self.model_group.as_deref().unwrap_or("-"),
            deployment = self.deployment.as_deref().unwrap_or("-"),
            status = self.status,
            outcome = self.outcome,
            cache = self.cache,
            cache_audit = self.cache_audit,
            placement = self.placement.unwrap_or("-"),
            stream = self.stream,
            attempts = self.attempts,
            latency_ms = latency.as_secs_f64() * 1e3,
            overhead_ms = self.overhead.map(|d| d.as_secs_f64() * 1e3),
            prompt_tokens = usage.prompt_tokens,
            completion_tokens = usage.completion_tokens,
            cost_usd = cost,
            saved_usd = self.saved_usd,
            "request"
        );
        if let Some(access) = self.access.take() {
            let record = crate::access::ledger::UsageRecord {
                ts_ms: crate::access::store::now_ms(),
                request_id: self.request_id.clone(),
                tenant: tenant.to_owned(),
                key_id: key_id.map(str::to_owned),
                endpoint: self.endpoint,
                model_group: self.model_group.clone(),
                placement: answered.and_then(crate::dashboard::Answered::placement),
                provider: self
                    .deployment
                    .as_deref()
                    .filter(|d| *d != "cache")
                    .map(|d| d.split_once('/').map_or(d, |(p, _)| p).to_owned()),
                deployment: self.deployment.clone(),
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
                cached_tokens: usage.prompt_tokens_details.map_or(0, |d| d.cached_tokens),
                cost_usd: cost.unwrap_or(0.0),
                saved_usd: self.saved_usd.unwrap_or(0.0),
                cache: self.cache,
                latency_ms: latency.as_secs_f64() * 1e3,
                status: self.status,
                outcome: self.outcome,
            };
            match self.admission.take() {
                Some(admission) => admission.settle(record),
                None => access.ledger.record(record),
            }
        }
    }
}
