//! Live placement: the scheduler's pure [`place`] run per request against
//! this gateway's ledger of every local backend (a provider with a `local`
//! section), with admission permits, GPU and engine telemetry for health,
//! and counters of every decision.
//!
//! A model group with at least one local deployment is placed; its other
//! deployments are the external overflow, priced from the catalog. The
//! chosen deployment is tried first and the others follow as fallbacks (in
//! `local_only` mode, only local ones). Groups without local deployments
//! are dispatched as before.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};
use switchyard_scheduler::catalog::{Catalog, Price};
use switchyard_scheduler::ledger::{BackendLedger, ExternalTtft, Foreign};
use switchyard_scheduler::placement::{
    External, Health, Job, Mode, Policy, Priority, Reason, Target, affordable_externals, place,
};
use switchyard_scheduler::profile::GpuProfile;
use switchyard_scheduler::prompt;
use switchyard_scheduler::telemetry::{
    EngineLoad, GpuSample, HealthPolicy, HealthTracker, reason_str, worse,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;

use crate::access::TenantPlacement;
use crate::agent::{self, Feed};
use crate::config::{
    AgentTlsConfig, Config, ConfigError, LocalBackendConfig, ProviderConfig, TelemetryKind,
};
use crate::error::ApiError;
use crate::routing::ModelGroup;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What the poller last learnt of a backend.
#[derive(Debug, Default)]
struct Observed {
    gpus: Vec<GpuSample>,
    trackers: HashMap<String, HealthTracker>,
    /// Seconds (fleet clock) of the last good GPU sample / metrics scrape.
    gpus_at: Option<f64>,
    engine_at: Option<f64>,
    engine: Option<EngineLoad>,
    engine_error: Option<String>,
    health: Option<(Health, Option<&'static str>)>,
    /// The NVML or agent feed's sequence last taken.
    feed_sequence: u64,
}

/// One local backend: an engine server on GPUs.
#[derive(Debug)]
pub struct LocalBackend {
    pub name: String,
    pub profile: GpuProfile,
    pub telemetry: TelemetryKind,
    telemetry_url: Option<String>,
    /// The node agent's address (`telemetry = "agent"`).
    agent: Option<String>,
    /// Its token and TLS settings.
    agent_link: Option<agent::AgentLink>,
    metrics_url: String,
    gpus: Vec<String>,
    permits: Arc<Semaphore>,
    ledger: Mutex<BackendLedger>,
    observed: Mutex<Observed>,
}

/// How one model group is placed.
#[derive(Debug)]
struct GroupPlan {
    mode: Mode,
    ttft_slo_s: f64,
    max_queue_wait_s: f64,
    allowed_external: Vec<String>,
    /// (deployment index, backend index) of its local deployments.
    locals: Vec<(usize, usize)>,
    /// The others.
    externals: Vec<ExternalPlan>,
    /// Per deployment: `local:<backend>/<gpu>` or `external:<provider>`
    /// (shared with every placed request).
    labels: Arc<[String]>,
    /// The models its externals serve: the group's name.
    models: [String; 1],
}

/// An external deployment of a placed group.
#[derive(Debug)]
struct ExternalPlan {
    /// Its index in the group.
    index: usize,
    id: String,
    price: Price,
    /// Configured, then learned from the streams it answers.
    ttft: Mutex<ExternalTtft>,
}

/// Every local backend and every placed group.
#[derive(Debug)]
pub struct Fleet {
    backends: Vec<Arc<LocalBackend>>,
    groups: HashMap<String, GroupPlan>,
    default_output_tokens: u32,
    /// `[batch] idle_share`.
    batch_idle_share: f64,
    health: HealthPolicy,
    interval: Duration,
    started: Instant,
    next_id: AtomicU64,
    /// Decisions by (target, reason).
    decisions: Mutex<BTreeMap<(String, &'static str), u64>>,
}

/// Who is asking: an interactive client, or the batch runner (which may
/// overflow an item to an external deployment when its batch's deadline
/// needs it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Interactive,
    Batch {
        overflow: bool,
        /// Too late to start locally (the batch is inside its deadline
        /// reserve): external only.
        urgent: bool,
        /// The batch's deadline leaves time for a provider's own batch
        /// API: an item placed externally is handed back to the runner
        /// for one ([`REMOTE_BATCH`]) instead of being sent.
        remote: bool,
    },
}

/// A placed request: where to try, and why.
#[derive(Debug)]
pub struct Placed {
    /// Deployment indices in the order to try them.
    pub order: Vec<usize>,
    pub reason: &'static str,
    /// Held while the request runs on a local backend.
    pub ticket: Option<Ticket>,
    labels: Arc<[String]>,
    chosen: usize,
}

impl Placed {
    /// The deployment placement chose, when it is external.
    pub fn chosen_external(&self) -> Option<usize> {
        self.labels[self.chosen]
            .starts_with("external:")
            .then_some(self.chosen)
    }

    /// `x-switchyard-placement` and `-reason` for the deployment that
    /// answered (a fallback when it is not the one placement chose).
    pub fn headers_for(&self, deployment: usize) -> (&str, &'static str) {
        let reason = if self.is_chosen(deployment) {
            self.reason
        } else {
            "fallback"
        };
        (self.labels[deployment].as_str(), reason)
    }

    /// Whether `deployment` is the one placement chose.
    pub fn is_chosen(&self, deployment: usize) -> bool {
        deployment == self.chosen
    }
}

/// A request's hold on a local backend: its permit and its ledger entry,
/// released when dropped.
#[derive(Debug)]
pub struct Ticket {
    backend: Arc<LocalBackend>,
    id: u64,
    /// The fleet clock's origin.
    clock: Instant,
    _permit: OwnedSemaphorePermit,
}

impl Ticket {
    /// The first token arrived (a stream's first chunk): teaches the rates.
    pub fn first_token(&self) {
        let now = self.clock.elapsed().as_secs_f64();
        lock(&self.backend.ledger).first_token(self.id, now);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        lock(&self.backend.ledger).finished(self.id);
    }
}

/// Batch work the fleet has no idle room for now (the runner retries it).
fn deferred(group: &str) -> ApiError {
    ApiError::Unavailable {
        message: format!("Batch work for model `{group}` deferred: no idle local backend."),
        retry_after: Some(Duration::from_millis(200)),
        code: DEFERRED,
    }
}

/// The error code of deferred batch work.
pub const DEFERRED: &str = "batch_deferred";

/// The error code of a batch item handed back to the runner for a
/// provider batch; [`REMOTE_DEPLOYMENT`] names the deployment.
pub const REMOTE_BATCH: &str = "batch_remote";

/// Header: the index (in its model group) of the deployment a
/// [`REMOTE_BATCH`] item is for.
pub const REMOTE_DEPLOYMENT: &str = "x-switchyard-remote-deployment";

/// `base_url` without a trailing `/v1`.
fn server_root(base_url: &str) -> &str {
    let b = base_url.trim_end_matches('/');
    b.strip_suffix("/v1").unwrap_or(b)
}

impl Fleet {
    /// Builds the fleet from `config`; `None` when no provider is local.
    /// `env` resolves secrets (the agents' tokens).
    pub fn build(
        config: &Config,
        groups: &[&ModelGroup],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ConfigError> {
        let sc = &config.scheduler;
        let mut backends = Vec::new();
        let mut by_provider = HashMap::new();
        for (name, p) in &config.providers {
            let ProviderConfig::OpenaiCompat {
                base_url,
                local: Some(l),
                ..
            } = p
            else {
                continue;
            };
            by_provider.insert(name.clone(), backends.len());
            backends.push(local_backend(name, base_url, l, env)?);
        }
        if backends.is_empty() {
            return Ok(None);
        }
        // Read only when some external deployment is priced from it.
        let mut catalog: Option<Catalog> = None;
        let mut plans = HashMap::new();
        for (gc, group) in config.model_groups.iter().zip(groups) {
            let locals: Vec<(usize, usize)> = group
                .deployments
                .iter()
                .enumerate()
                .filter_map(|(i, d)| by_provider.get(&d.provider_name).map(|&b| (i, b)))
                .collect();
            if locals.is_empty() {
                continue;
            }
            for &(_, b) in &locals {
                let mut ledger = lock(&backends[b].ledger);
                if !ledger.models.contains(&group.name) {
                    ledger.models.push(group.name.clone());
                }
            }
            let mut externals = Vec::new();
            let mut labels = Vec::new();
            for (i, (d, dc)) in group.deployments.iter().zip(&gc.deployments).enumerate() {
                if let Some(&(_, b)) = locals.iter().find(|(di, _)| *di == i) {
                    labels.push(format!(
                        "local:{}/{}",
                        backends[b].name, backends[b].profile.name
                    ));
                    continue;
                }
                labels.push(format!("external:{}", d.provider_name));
                let price = external_price(&mut catalog, &sc.catalog, dc)?.ok_or_else(|| {
                    ConfigError(format!(
                        "model_groups.{}: deployment `{}` has no price: the catalog ({}) lacks `{}`; set its `price`",
                        group.name,
                        d.id,
                        sc.catalog.display(),
                        d.model
                    ))
                })?;
                let ttft = dc.ttft_ms.unwrap_or(sc.external_ttft_ms) as f64 / 1e3;
                externals.push(ExternalPlan {
                    index: i,
                    id: d.id.clone(),
                    price,
                    ttft: Mutex::new(ExternalTtft::new(ttft)),
                });
            }
            let pc = gc.placement.clone().unwrap_or_default();
            if let Some(unknown) = pc
                .allowed_external
                .iter()
                .find(|a| !externals.iter().any(|e| e.id == **a))
            {
                let known: Vec<&str> = externals.iter().map(|e| e.id.as_str()).collect();
                return Err(ConfigError(format!(
                    "model_groups.{}.placement.allowed_external: `{unknown}` is not one of its external deployments ({})",
                    group.name,
                    if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    }
                )));
            }
            plans.insert(
                group.name.clone(),
                GroupPlan {
                    mode: pc.mode.unwrap_or(sc.mode),
                    ttft_slo_s: pc.ttft_slo_ms.unwrap_or(sc.ttft_slo_ms) as f64 / 1e3,
                    max_queue_wait_s: pc.max_queue_wait_ms.unwrap_or(sc.max_queue_wait_ms) as f64
                        / 1e3,
                    allowed_external: pc.allowed_external,
                    locals,
                    externals,
                    labels: labels.into(),
                    models: [group.name.clone()],
                },
            );
        }
        for (t, tc) in &config.tenants {
            let listed = tc.placement.iter().flat_map(|p| &p.allowed_external);
            for id in listed {
                if !plans
                    .values()
                    .any(|p| p.externals.iter().any(|e| e.id == *id))
                {
                    return Err(ConfigError(format!(
                        "tenants.{t}.placement.allowed_external: `{id}` is not an external deployment of any placed model group"
                    )));
                }
            }
        }
        Ok(Some(Self {
            backends: backends.into_iter().map(Arc::new).collect(),
            groups: plans,
            default_output_tokens: sc.default_output_tokens,
            batch_idle_share: config.batch.idle_share,
            health: HealthPolicy {
                stale_after_s: sc.stale_after_ms as f64 / 1e3,
                error_hold_s: sc.error_hold_secs as f64,
            },
            interval: Duration::from_millis(sc.telemetry_interval_ms),
            started: Instant::now(),
            next_id: AtomicU64::new(1),
            decisions: Mutex::new(BTreeMap::new()),
        }))
    }

    /// The fleet clock, seconds since start.
    fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Places a request for `group`; `None` when the group is not placed
    /// (no local deployment). Waits up to the group's queue bound for a
    /// permit when every local backend is full and nothing else may serve.
    /// `tenant`: the caller's tenant's policy over the group's.
    pub async fn place(
        &self,
        group: &ModelGroup,
        body: &Map<String, Value>,
        class: Class,
        tenant: &TenantPlacement,
    ) -> Option<Result<Placed, ApiError>> {
        let plan = self.groups.get(&group.name)?;
        Some(self.place_in(plan, group, body, class, tenant).await)
    }

    async fn place_in(
        &self,
        plan: &GroupPlan,
        group: &ModelGroup,
        body: &Map<String, Value>,
        class: Class,
        tenant: &TenantPlacement,
    ) -> Result<Placed, ApiError> {
        let shape = prompt::from_request(body);
        let output = prompt::max_output_tokens(body).map_or(self.default_output_tokens, |m| {
            m.min(u64::from(u32::MAX)) as u32
        });
        let job = Job {
            model: &group.name,
            prompt_tokens: shape.tokens,
            output_tokens: output.max(1),
            blocks: &shape.blocks,
            priority: match class {
                Class::Interactive => Priority::Interactive,
                Class::Batch { .. } => Priority::Batch,
            },
        };
        let now = self.now();
        let (mode, allowed_external) = tenant_policy(plan, tenant);
        let externals: Vec<External<'_>> = plan
            .externals
            .iter()
            .map(|e| External {
                name: &e.id,
                models: &plan.models,
                price: e.price,
                ttft_s: lock(&e.ttft).estimate_s,
            })
            .collect();
        let policy = Policy {
            mode,
            ttft_slo_s: plan.ttft_slo_s,
            max_queue_wait_s: plan.max_queue_wait_s,
            allowed_external: &allowed_external,
            budget_left_usd: tenant.budget_left_usd,
            // An urgent item takes no local backend: none counts as idle.
            batch_idle_share: match class {
                Class::Batch { urgent: true, .. } => 0.0,
                _ => self.batch_idle_share,
            },
            batch_overflow: matches!(class, Class::Batch { overflow: true, .. }),
            // Compared at batch prices when the item may go to a
            // provider batch.
            batch_price: matches!(class, Class::Batch { remote: true, .. }),
        };
        let decision = {
            let guards: Vec<MutexGuard<'_, BackendLedger>> = plan
                .locals
                .iter()
                .map(|&(_, b)| lock(&self.backends[b].ledger))
                .collect();
            let views: Vec<_> = guards.iter().map(|g| g.view(&job)).collect();
            place(&job, &views, &externals, &policy, now)
        };
        let reason = decision.reason.as_str();
        let (chosen, local) = match decision.target {
            Target::Local { backend } => (plan.locals[backend].0, Some(plan.locals[backend].1)),
            Target::External { deployment } => (plan.externals[deployment].index, None),
            Target::Defer => {
                self.count("deferred", reason);
                return Err(deferred(&group.name));
            }
            Target::Reject => {
                self.count("rejected", reason);
                let message = match decision.reason {
                    Reason::QueueFull => format!(
                        "Every local backend of model `{}` is busy beyond the {:.1} s queue bound and no external deployment may take the request; try again later.",
                        group.name, plan.max_queue_wait_s
                    ),
                    _ => format!(
                        "No backend of model `{}` can take requests now (all drained or unhealthy).",
                        group.name
                    ),
                };
                return Err(ApiError::Unavailable {
                    message,
                    retry_after: Some(Duration::from_secs(1)),
                    code: if decision.reason == Reason::QueueFull {
                        "queue_full"
                    } else {
                        "no_backend"
                    },
                });
            }
        };
        let ticket = match local {
            Some(b) => Some(self.admit(b, &job, plan, &group.name, class).await?),
            None => None,
        };
        if let (Some(t), false) = (
            &ticket,
            body.get("stream").and_then(Value::as_bool) == Some(true),
        ) {
            // A whole answer shows no first token: assume it at the estimate.
            let backend = t.backend.clone();
            let id = t.id;
            let at = Duration::from_secs_f64(decision.ttft_s.clamp(0.0, 3_600.0));
            tokio::spawn(async move {
                tokio::time::sleep(at).await;
                lock(&backend.ledger).first_token_unobserved(id);
            });
        }
        self.count(&plan.labels[chosen], reason);
        // Batch work falls back to external deployments only when its
        // deadline allows spending on it.
        let local_only = mode == Mode::LocalOnly
            || matches!(
                class,
                Class::Batch {
                    overflow: false,
                    ..
                }
            );
        let mut order = vec![chosen];
        order.extend(plan.locals.iter().map(|l| l.0).filter(|&i| i != chosen));
        if !local_only {
            // Only what the policy allows and the budget covers (the
            // fallback goes through the synchronous API).
            order.extend(
                affordable_externals(&job, &externals, &policy, false)
                    .map(|(i, _, _)| plan.externals[i].index)
                    .filter(|&i| i != chosen),
            );
        }
        Ok(Placed {
            order,
            reason,
            ticket,
            labels: plan.labels.clone(),
            chosen,
        })
    }

    /// Takes a permit on backend `b` (waiting up to the queue bound) and
    /// records the job in its ledger.
    async fn admit(
        &self,
        b: usize,
        job: &Job<'_>,
        plan: &GroupPlan,
        group: &str,
        class: Class,
    ) -> Result<Ticket, ApiError> {
        let backend = &self.backends[b];
        let permit = match backend.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            // Batch work never queues for a permit: it waits in its batch.
            Err(_) if class != Class::Interactive => return Err(deferred(group)),
            Err(_) => {
                let wait = Duration::from_secs_f64(plan.max_queue_wait_s);
                match tokio::time::timeout(wait, backend.permits.clone().acquire_owned()).await {
                    Ok(Ok(p)) => p,
                    _ => {
                        self.count("rejected", Reason::QueueFull.as_str());
                        return Err(ApiError::Unavailable {
                            message: format!(
                                "Model `{group}`: waited {:.1} s for a free slot on local backend `{}`; try again later.",
                                plan.max_queue_wait_s, backend.name
                            ),
                            retry_after: Some(Duration::from_secs(1)),
                            code: "queue_full",
                        });
                    }
                }
            }
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&backend.ledger).sent(id, job, self.now());
        Ok(Ticket {
            backend: backend.clone(),
            id,
            clock: self.started,
            _permit: permit,
        })
    }

    fn count(&self, target: &str, reason: &'static str) {
        *lock(&self.decisions)
            .entry((target.to_owned(), reason))
            .or_insert(0) += 1;
    }

    /// Polls every backend's telemetry and engine metrics forever.
    pub fn spawn_poller(self: &Arc<Self>) {
        let fleet = self.clone();
        // One feed per source: NVML on this machine (key None), one
        // subscription per node agent.
        let mut feeds: HashMap<Option<String>, watch::Receiver<Feed>> = HashMap::new();
        for b in &self.backends {
            match b.telemetry {
                TelemetryKind::Nvml => {
                    feeds
                        .entry(None)
                        .or_insert_with(|| agent::spawn_nvml(self.interval));
                }
                TelemetryKind::Agent => {
                    if let (Some(url), Some(link)) = (&b.agent, &b.agent_link) {
                        let stale = Duration::from_secs_f64(self.health.stale_after_s);
                        feeds
                            .entry(Some(url.clone()))
                            .or_insert_with(|| agent::subscribe(url.clone(), link.clone(), stale));
                    }
                }
                TelemetryKind::None | TelemetryKind::Sim => {}
            }
        }
        tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(fleet.interval.max(Duration::from_millis(500)) * 2)
                .build()
                .unwrap_or_default();
            let mut tick = tokio::time::interval(fleet.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let polls = fleet.backends.iter().map(|b| {
                    let feed = match b.telemetry {
                        TelemetryKind::Nvml => feeds.get(&None),
                        TelemetryKind::Agent => feeds.get(&b.agent),
                        TelemetryKind::None | TelemetryKind::Sim => None,
                    };
                    fleet.poll(b, &client, feed.map(|rx| rx.borrow().clone()))
                });
                futures_util::future::join_all(polls).await;
            }
        });
    }

    async fn poll(&self, b: &LocalBackend, client: &reqwest::Client, feed: Option<Feed>) {
        let metrics = async {
            let r = client
                .get(&b.metrics_url)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if !r.status().is_success() {
                return Err(format!("{}", r.status()));
            }
            let text = r.text().await.map_err(|e| e.to_string())?;
            // It answered: alive, whether or not its metrics make sense.
            Ok(EngineLoad::parse(&text))
        };
        let sim = async {
            match &b.telemetry_url {
                Some(url) => agent::sim_gpus(client, url).await.map(Some),
                None => Ok(None),
            }
        };
        let (metrics, sim) = tokio::join!(metrics, sim);
        let now = self.now();
        let mut o = lock(&b.observed);
        // A feed's sample counts once: a repeat is no news, so telemetry
        // that stops arriving goes stale.
        let gpus = match feed {
            Some(f) if f.sequence != o.feed_sequence => {
                o.feed_sequence = f.sequence;
                f.samples.map(|all| {
                    Some(
                        all.iter()
                            .filter(|s| b.gpus.iter().any(|g| names_gpu(g, s)))
                            .cloned()
                            .collect(),
                    )
                })
            }
            Some(_) => Ok(None),
            None => sim,
        };
        let metrics = match metrics {
            Ok(Some(load)) => Ok(load),
            Ok(None) => {
                // Alive but unreadable (not an engine we know, or a renamed
                // metric): placement goes on from the gateway's own ledger.
                o.engine_at = Some(now);
                o.engine = None;
                Err("alive, but no vLLM, SGLang or TGI metrics at this URL".to_owned())
            }
            Err(e) => Err(e),
        };
        // The engine's own counts correct the ledger for traffic sent some
        // other way; without them the ledger counts only its own.
        let counts = metrics.as_ref().ok().map(|load: &EngineLoad| {
            let count = |x: f64| x.round().clamp(0.0, f64::from(u32::MAX)) as u32;
            (count(load.running), count(load.waiting))
        });
        lock(&b.ledger).engine_counts(counts);
        match metrics {
            Ok(load) => {
                o.engine = Some(load);
                o.engine_at = Some(now);
                o.engine_error = None;
            }
            Err(e) => {
                if o.engine_error.as_deref() != Some(e.as_str()) {
                    tracing::warn!(backend = %b.name, url = %b.metrics_url, error = %e, "engine metrics unavailable");
                }
                o.engine_error = Some(e);
            }
        }
        match gpus {
            Ok(Some(samples)) => {
                for s in &samples {
                    o.trackers
                        .entry(s.uuid.clone())
                        .or_default()
                        .observe(s, now);
                }
                o.gpus = samples;
                o.gpus_at = Some(now);
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(backend = %b.name, error = %e, "GPU telemetry unavailable"),
        }
        let health = self.health_of(b, &o, now);
        if o.health != Some(health) {
            tracing::info!(backend = %b.name, health = ?health.0, reason = reason_str(health.0, health.1), "backend health");
        }
        o.health = Some(health);
        drop(o);
        lock(&b.ledger).health = health.0;
    }

    /// A backend's health: the worst of its engine's reachability and its
    /// GPUs' telemetry. Nothing heard yet counts as healthy for one stale
    /// period after start.
    fn health_of(
        &self,
        b: &LocalBackend,
        o: &Observed,
        now: f64,
    ) -> (Health, Option<&'static str>) {
        let stale = self.health.stale_after_s;
        let engine = match o.engine_at {
            Some(at) if now - at <= stale => (Health::Healthy, None),
            None if now <= stale => (Health::Healthy, None),
            _ => (Health::Drained, Some("engine_unreachable")),
        };
        if b.telemetry == TelemetryKind::None {
            return engine;
        }
        let gpus = if o.gpus.is_empty() {
            if o.gpus_at.is_none() && now <= stale {
                (Health::Healthy, None)
            } else {
                (Health::Drained, Some("no_telemetry"))
            }
        } else {
            // A configured GPU missing from the samples (not enumerated, a
            // mistyped UUID) is one nothing is known of.
            let missing = b
                .gpus
                .iter()
                .any(|g| !o.gpus.iter().any(|s| names_gpu(g, s)));
            let start = if missing {
                (Health::Drained, Some("no_telemetry"))
            } else {
                (Health::Healthy, None)
            };
            o.gpus.iter().fold(start, |acc, s| {
                let h = o
                    .trackers
                    .get(&s.uuid)
                    .map_or((Health::Drained, Some("no_telemetry")), |t| {
                        t.health(Some(s), now, &self.health)
                    });
                worse(acc, h)
            })
        };
        worse(engine, gpus)
    }

    /// What `/api/v1/fleet` shows.
    pub fn snapshot(&self) -> FleetSnapshot {
        let now = self.now();
        let backends = self
            .backends
            .iter()
            .map(|b| {
                let l = lock(&b.ledger);
                let o = lock(&b.observed);
                let (health, why) = o.health.unwrap_or((Health::Healthy, None));
                BackendSnapshot {
                    name: b.name.clone(),
                    gpu_profile: b.profile.name,
                    models: l.models.clone(),
                    health,
                    health_reason: reason_str(health, why),
                    in_flight: l.in_flight(),
                    awaiting_first_token: l.awaiting_first_token(),
                    foreign_requests: l.foreign(),
                    permits: l.permits,
                    slowness: l.slowness(),
                    engine: o.engine,
                    engine_error: o.engine_error.clone(),
                    telemetry: b.telemetry,
                    telemetry_age_s: o.gpus_at.map(|t| now - t),
                    gpus: o.gpus.clone(),
                }
            })
            .collect();
        let decisions = lock(&self.decisions)
            .iter()
            .map(|((target, reason), count)| DecisionCount {
                target: target.clone(),
                reason,
                count: *count,
            })
            .collect();
        let mut externals: Vec<ExternalSnapshot> = self
            .groups
            .iter()
            .flat_map(|(group, plan)| {
                plan.externals.iter().map(move |e| {
                    let t = *lock(&e.ttft);
                    ExternalSnapshot {
                        group: group.clone(),
                        deployment: e.id.clone(),
                        ttft_s: t.estimate_s,
                        configured_ttft_s: t.configured_s,
                        ttft_samples: t.samples,
                    }
                })
            })
            .collect();
        externals.sort_by(|a, b| (&a.group, &a.deployment).cmp(&(&b.group, &b.deployment)));
        FleetSnapshot {
            backends,
            externals,
            decisions,
        }
    }

    /// A stream from deployment `deployment` of `group` showed its first
    /// chunk `ttft` after it was sent: teaches that external's typical
    /// TTFT (local backends learn through their ticket).
    pub fn external_first_token(&self, group: &str, deployment: usize, ttft: Duration) {
        if let Some(e) = self
            .groups
            .get(group)
            .and_then(|p| p.externals.iter().find(|e| e.index == deployment))
        {
            lock(&e.ttft).observe(ttft.as_secs_f64());
        }
    }
}

/// The mode and external deployments of `plan` for a tenant: its mode
/// replaces the group's; its list narrows the group's (an empty list
/// allows all), and when the two share no deployment nothing external is
/// allowed, so the request stays local.
fn tenant_policy(
    plan: &GroupPlan,
    tenant: &TenantPlacement,
) -> (switchyard_scheduler::placement::Mode, Vec<String>) {
    let mode = tenant.mode.unwrap_or(plan.mode);
    if tenant.allowed_external.is_empty() {
        return (mode, plan.allowed_external.clone());
    }
    let allowed: Vec<String> = plan
        .externals
        .iter()
        .map(|e| &e.id)
        .filter(|id| tenant.allowed_external.contains(id))
        .filter(|id| plan.allowed_external.is_empty() || plan.allowed_external.contains(id))
        .cloned()
        .collect();
    if allowed.is_empty() {
        (switchyard_scheduler::placement::Mode::LocalOnly, allowed)
    } else {
        (mode, allowed)
    }
}

/// Whether a configured GPU id (an index or a UUID) is this sample's GPU.
fn names_gpu(id: &str, s: &GpuSample) -> bool {
    id == s.uuid || id.parse::<u32>() == Ok(s.index)
}

fn local_backend(
    name: &str,
    base_url: &str,
    l: &LocalBackendConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<LocalBackend, ConfigError> {
    let profile = GpuProfile::named(&l.gpu)
        .ok_or_else(|| ConfigError(format!("providers.{name}.local.gpu: unknown `{}`", l.gpu)))?;
    let root = server_root(base_url);
    let host_kv = switchyard_scheduler::profile::kv_tokens_in_gb(l.host_kv_gb)
        .map_err(|e| ConfigError(format!("providers.{name}.local.host_kv_gb: {e}")))?;
    let agent_token = l
        .agent_token
        .as_ref()
        .map(|t| t.resolve(env))
        .transpose()
        .map_err(|e| ConfigError(format!("providers.{name}.local.agent_token: {e}")))?;
    let agent_link = l
        .agent
        .as_deref()
        .map(|url| agent_endpoint(url, l.agent_tls.as_deref()))
        .transpose()
        .map_err(|e| ConfigError(format!("providers.{name}.local.agent_tls: {e}")))?
        .map(|endpoint| agent::AgentLink {
            token: agent_token,
            endpoint,
        });
    let ledger = BackendLedger::new(name, Vec::new(), profile.clone(), l.permits, l.gpu_hour_usd)
        .with_host_kv_tokens(host_kv);
    Ok(LocalBackend {
        name: name.to_owned(),
        profile,
        telemetry: l.telemetry,
        telemetry_url: (l.telemetry == TelemetryKind::Sim).then(|| format!("{root}/sim/telemetry")),
        agent: l.agent.clone(),
        agent_link,
        metrics_url: l
            .metrics_url
            .clone()
            .unwrap_or_else(|| format!("{root}/metrics")),
        gpus: l.gpus.clone(),
        permits: Arc::new(Semaphore::new(l.permits as usize)),
        ledger: Mutex::new(ledger),
        observed: Mutex::new(Observed::default()),
    })
}

/// The gRPC endpoint of the agent at `url` (checked by
/// `config::validate`), built once: plain for `http://`; for `https://`,
/// over TLS with `tls`'s CA (else the web PKI's roots), client identity and
/// server name, checked now (the files read, the certificates and key
/// parsed).
fn agent_endpoint(
    url: &str,
    tls: Option<&AgentTlsConfig>,
) -> Result<tonic::transport::Endpoint, String> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    if !url.starts_with("https://") {
        return agent::endpoint(url, None);
    }
    let tls = tls.cloned().unwrap_or_default();
    let mut config =
        match &tls.ca {
            Some(ca) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(
                agent::read_pem(ca, "ca", agent::Pem::Certificates)?,
            )),
            None => ClientTlsConfig::new().with_webpki_roots(),
        };
    if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
        config = config.identity(Identity::from_pem(
            agent::read_pem(cert, "cert", agent::Pem::Certificates)?,
            agent::read_pem(key, "key", agent::Pem::PrivateKey)?,
        ));
    }
    if let Some(name) = tls.server_name {
        config = config.domain_name(name);
    }
    // Builds the TLS connector: bad certificates and keys fail here.
    agent::endpoint(url, Some(config))
}

/// A deployment's price: explicit, as another catalog model, or its own
/// (the catalog is loaded on first need).
/// Prices of every external deployment of every group, by deployment id,
/// for cost tracking and budgets; a deployment without a price (none
/// configured, none in the catalog) is left out, with a warning.
pub fn all_external_prices(config: &Config, groups: &[&ModelGroup]) -> HashMap<String, Price> {
    let local = |name: &str| {
        matches!(
            config.providers.get(name),
            Some(ProviderConfig::OpenaiCompat { local: Some(_), .. })
        )
    };
    let mut catalog: Option<Catalog> = None;
    let mut out = HashMap::new();
    for (gc, group) in config.model_groups.iter().zip(groups) {
        for (d, dc) in group.deployments.iter().zip(&gc.deployments) {
            if local(&d.provider_name) || out.contains_key(&d.id) {
                continue;
            }
            match external_price(&mut catalog, &config.scheduler.catalog, dc) {
                Ok(Some(p)) => {
                    out.insert(d.id.clone(), p);
                }
                Ok(None) => tracing::warn!(
                    deployment = %d.id,
                    "no price for this deployment (none configured, none in the catalog): its spend is not counted in costs or budgets"
                ),
                Err(e) => {
                    tracing::warn!(deployment = %d.id, error = %e, "no price for this deployment: its spend is not counted");
                    catalog = Some(Catalog::default());
                }
            }
        }
    }
    out
}

fn external_price(
    catalog: &mut Option<Catalog>,
    path: &std::path::Path,
    d: &crate::config::DeploymentConfig,
) -> Result<Option<Price>, ConfigError> {
    let p = d.price.clone().unwrap_or_default();
    if let (Some(input), Some(output)) = (p.input_per_million, p.output_per_million) {
        return Ok(Some(Price {
            input,
            output,
            cached_input: input,
            batch_input: p.batch_input_per_million.unwrap_or(input),
            batch_output: p.batch_output_per_million.unwrap_or(output),
        }));
    }
    if catalog.is_none() {
        *catalog =
            Some(Catalog::load(path).map_err(|e| ConfigError(format!("scheduler.catalog: {e}")))?);
    }
    let model = p.model.as_deref().unwrap_or(&d.model);
    Ok(catalog.as_ref().and_then(|c| c.price(&d.provider, model)))
}

#[derive(Debug, Serialize)]
pub struct FleetSnapshot {
    pub backends: Vec<BackendSnapshot>,
    /// Placed groups' external deployments, by group and id.
    pub externals: Vec<ExternalSnapshot>,
    pub decisions: Vec<DecisionCount>,
}

#[derive(Debug, Serialize)]
pub struct ExternalSnapshot {
    pub group: String,
    pub deployment: String,
    /// The typical TTFT placement uses: configured, then learned.
    pub ttft_s: f64,
    pub configured_ttft_s: f64,
    /// Streams it was learned from.
    pub ttft_samples: u64,
}

#[derive(Debug, Serialize)]
pub struct BackendSnapshot {
    pub name: String,
    pub gpu_profile: &'static str,
    pub models: Vec<String>,
    pub health: Health,
    pub health_reason: &'static str,
    pub in_flight: usize,
    pub awaiting_first_token: usize,
    /// Requests the engine reports beyond this gateway's own.
    pub foreign_requests: Foreign,
    pub permits: u32,
    /// Observed over profile service time (1: as the profile says).
    pub slowness: f64,
    pub engine: Option<EngineLoad>,
    pub engine_error: Option<String>,
    pub telemetry: TelemetryKind,
    pub telemetry_age_s: Option<f64>,
    pub gpus: Vec<GpuSample>,
}

#[derive(Debug, Serialize)]
pub struct DecisionCount {
    pub target: String,
    pub reason: &'static str,
    pub count: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::ModelGroups;

    fn build(extra_deployment: &str, placement: &str) -> Result<Option<Fleet>, ConfigError> {
        let text = format!(
            "[scheduler]\ncatalog = \"/nonexistent/prices.json\"\n\
             [providers.gpu]\ntype = \"openai_compat\"\nbase_url = \"http://127.0.0.1:1/v1\"\n\
             local = {{ gpu = \"h100\", gpu_hour_usd = 2.0 }}\n\
             [providers.ext]\ntype = \"openai_compat\"\nbase_url = \"http://127.0.0.1:2/v1\"\n\
             [[model_groups]]\nname = \"m\"\n{placement}\n\
             [[model_groups.deployments]]\nprovider = \"gpu\"\nmodel = \"m\"\n\
             [[model_groups.deployments]]\nprovider = \"ext\"\nmodel = \"x\"\n{extra_deployment}\n"
        );
        let config = Config::parse(&text, Vec::new())?;
        let groups = ModelGroups::from_config(&config, &|_| None)?;
        Fleet::build(&config, &groups.iter().collect::<Vec<_>>(), &|_| None)
    }

    #[test]
    fn an_external_without_a_price_is_a_config_error_naming_it() {
        let Err(e) = build("", "") else {
            unreachable!("an unpriced external must not load")
        };
        assert!(e.0.contains("scheduler.catalog"), "{e}");
        let priced = "price = { input_per_million = 1.0, output_per_million = 2.0 }";
        let fleet = build(priced, "").unwrap().unwrap();
        assert_eq!(fleet.backends.len(), 1);
        assert_eq!(
            *fleet.groups["m"].labels,
            ["local:gpu/h100", "external:ext"]
        );
    }

    #[test]
    fn allowed_external_must_name_an_external_deployment() {
        let priced = "price = { input_per_million = 1.0, output_per_million = 2.0 }";
        let Err(e) = build(priced, "placement = { allowed_external = [\"nope\"] }") else {
            unreachable!("an unknown allowed_external must not load")
        };
        assert!(e.0.contains("`nope`") && e.0.contains("ext/x"), "{e}");
        build(priced, "placement = { allowed_external = [\"ext/x\"] }").unwrap();
    }

    #[test]
    fn a_tenant_narrows_the_groups_placement() {
        use switchyard_scheduler::placement::Mode;
        let priced = "price = { input_per_million = 1.0, output_per_million = 2.0 }";
        let unknown = format!("{priced}\n[tenants.t.placement]\nallowed_external = [\"nope\"]");
        let Err(e) = build(&unknown, "") else {
            unreachable!("a tenant naming an unknown deployment must not load")
        };
        assert!(
            e.0.contains("tenants.t.placement.allowed_external") && e.0.contains("`nope`"),
            "{e}"
        );
        let known = format!("{priced}\n[tenants.t.placement]\nallowed_external = [\"ext/x\"]");
        let fleet = build(&known, "").unwrap().unwrap();
        let plan = &fleet.groups["m"];
        let tenant = |mode, allowed: &[&str]| TenantPlacement {
            mode,
            allowed_external: allowed.iter().map(|s| (*s).to_owned()).collect(),
            budget_left_usd: None,
        };
        assert_eq!(tenant_policy(plan, &tenant(None, &[])), (plan.mode, vec![]));
        assert_eq!(
            tenant_policy(plan, &tenant(Some(Mode::LocalOnly), &[])),
            (Mode::LocalOnly, vec![])
        );
        assert_eq!(
            tenant_policy(plan, &tenant(Some(Mode::Cheapest), &["ext/x"])),
            (Mode::Cheapest, vec!["ext/x".to_owned()])
        );
        // Only other groups' deployments: nothing external for this one
        // (an empty list must not read as "all").
        assert_eq!(
            tenant_policy(plan, &tenant(Some(Mode::Cheapest), &["other/y"])),
            (Mode::LocalOnly, vec![])
        );
    }
}
