//! Who may call, how much, and what it cost: virtual keys, tenants, rate
//! limits, budgets, the usage ledger, the audit log and DLP
//! (docs/access.md).
//!
//! A request passes, in order: authentication (middleware: the key's
//! tenant becomes the request's [`Principal`]), then in its handler the
//! model check, DLP, and [`Access::admit`] (budgets, then rate limits),
//! before the cache and the upstream. The [`Admission`] rides in the
//! request's log record and settles when the request ends (a stream's
//! last chunk): real tokens replace the estimate, the cost is added to
//! the budgets, and one usage row goes to the ledger.

pub mod dlp;
pub mod ledger;
pub mod limiter;
pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue};
use secrecy::{ExposeSecret, SecretString};

use crate::config::{Config, DlpAction, LimitsConfig, TenantPlacementConfig};
use crate::error::ApiError;
use ledger::{Ledger, UsageRecord};
use limiter::{Check, CounterStore, Denied, Grant, Limit, MemoryCounters};
use store::{KeyRecord, Store};

/// The tenant of requests made with the master key, or with no key when
/// no master key is configured.
pub const DEFAULT_TENANT: &str = "default";

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Principal {
    pub tenant: Arc<str>,
    /// The virtual key; `None` for the master key or an open gateway.
    pub key: Option<Arc<KeyRecord>>,
}

impl Principal {
    pub fn default_tenant() -> Self {
        Self {
            tenant: Arc::from(DEFAULT_TENANT),
            key: None,
        }
    }

    pub fn key_id(&self) -> Option<&str> {
        self.key.as_ref().map(|k| k.id.as_str())
    }
}

#[derive(Debug, Clone, Default)]
struct Tenant {
    limits: LimitsConfig,
    models: Vec<String>,
    placement: TenantPlacementConfig,
}

/// What placement must respect for one caller's request.
#[derive(Debug, Clone, Default)]
pub struct TenantPlacement {
    /// Replaces the group's mode.
    pub mode: Option<switchyard_scheduler::placement::Mode>,
    /// Narrows the group's external deployments; empty: no narrowing.
    pub allowed_external: Vec<String>,
    /// USD the caller may still spend: the least of what its tenant's and
    /// its key's daily and monthly budgets leave; `None` without a budget.
    pub budget_left_usd: Option<f64>,
}

/// Money spent in the current UTC day and month by one scope.
#[derive(Debug, Clone, Copy, Default)]
struct Spend {
    day: u64,
    day_usd: f64,
    /// Requests settled today (since start, for the dashboard).
    day_requests: u64,
    month: u64,
    month_usd: f64,
}

/// Day number and month number (year × 12 + month) of a Unix time, UTC.
pub fn day_and_month(unix_secs: u64) -> (u64, u64) {
    let days = unix_secs / 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (days, (year * 12 + month - 1) as u64)
}

/// The Unix time (seconds) of the start of a month number.
fn month_start(month: u64) -> u64 {
    let (y, m) = ((month / 12) as i64, (month % 12) as i64 + 1);
    // Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    ((era * 146_097 + doe - 719_468) * 86_400) as u64
}

#[derive(Debug)]
pub struct Access {
    pub store: Store,
    pub ledger: Ledger,
    counters: Box<dyn CounterStore>,
    tenants: HashMap<String, Tenant>,
    spend: Mutex<HashMap<String, Spend>>,
    completion_estimate: u32,
    master_key: SecretString,
}

impl Access {
    /// Open the database and load the current day's and month's spend.
    pub fn open(config: &Config, master_key: SecretString) -> Result<Self, String> {
        let a = &config.auth;
        let store = Store::open(&a.db).map_err(|e| e.to_string())?;
        let ledger = Ledger::start(&a.db, a.usage_retention_days).map_err(|e| e.to_string())?;
        let now = store::now_secs();
        let (day, month) = day_and_month(now);
        let spent = ledger::spend_since(&store, day * 86_400_000, month_start(month) * 1000)
            .map_err(|e| e.to_string())?;
        let spend = spent
            .into_iter()
            .map(|(scope, (day_usd, month_usd))| {
                (
                    scope,
                    Spend {
                        day,
                        day_usd,
                        day_requests: 0,
                        month,
                        month_usd,
                    },
                )
            })
            .collect();
        let tenants = config
            .tenants
            .iter()
            .map(|(name, t)| {
                (
                    name.clone(),
                    Tenant {
                        limits: t.limits,
                        models: t.models.clone(),
                        placement: t.placement.clone().unwrap_or_default(),
                    },
                )
            })
            .collect();
        Ok(Self {
            store,
            ledger,
            counters: Box::new(MemoryCounters::default()),
            tenants,
            spend: Mutex::new(spend),
            completion_estimate: a.completion_estimate,
            master_key,
        })
    }

    /// The caller behind `Authorization: Bearer <secret>`.
    pub fn authenticate(&self, secret: Option<&str>) -> Result<Principal, ApiError> {
        let Some(secret) = secret else {
            return Err(ApiError::Unauthorized(
                "You didn't provide an API key. Send it as `Authorization: Bearer <key>`.".into(),
            ));
        };
        if crate::api::middleware::same(
            secret.as_bytes(),
            self.master_key.expose_secret().as_bytes(),
        ) {
            return Ok(Principal::default_tenant());
        }
        let Some(key) = self.store.lookup(secret) else {
            return Err(ApiError::Unauthorized("Incorrect API key provided.".into()));
        };
        if key.revoked_at.is_some() {
            return Err(ApiError::Unauthorized(format!(
                "The API key `{}` has been revoked.",
                key.key_hint
            )));
        }
        if key.expires_at.is_some_and(|t| store::now_secs() >= t) {
            return Err(ApiError::Unauthorized(format!(
                "The API key `{}` has expired.",
                key.key_hint
            )));
        }
        Ok(Principal {
            tenant: Arc::from(key.tenant.as_str()),
            key: Some(key),
        })
    }

    /// Whether the caller may use model group `group`.
    pub fn allows(&self, p: &Principal, group: &str) -> bool {
        let by_key = p
            .key
            .as_ref()
            .is_none_or(|k| k.models.is_empty() || k.models.iter().any(|m| m == group));
        let by_tenant = self
            .tenants
            .get(&*p.tenant)
            .is_none_or(|t| t.models.is_empty() || t.models.iter().any(|m| m == group));
        by_key && by_tenant
    }

    /// Tokens counted before the answer: the prompt's estimate plus the
    /// completion's cap (or `auth.completion_estimate`).
    pub fn estimate(&self, prompt_tokens: u64, max_tokens: Option<u64>) -> u64 {
        prompt_tokens + max_tokens.unwrap_or(u64::from(self.completion_estimate))
    }

    /// Budgets, then (when `rated`) rate limits, for one request of
    /// `tokens` estimated tokens. The model check comes first, in
    /// [`Access::allows`].
    pub fn admit(
        self: &Arc<Self>,
        p: &Principal,
        tokens: u64,
        rated: bool,
    ) -> Result<Admission, ApiError> {
        let scopes = self.scopes(p);
        self.check_budgets(&scopes)?;
        let checks: Vec<Check> = scopes
            .iter()
            .filter(|_| rated)
            .filter(|(_, l)| l.rpm.is_some() || l.tpm.is_some() || l.max_concurrent.is_some())
            .map(|(scope, limits)| Check {
                scope: scope.clone(),
                limits: *limits,
            })
            .collect();
        let grant = if checks.is_empty() {
            None
        } else {
            Some(
                self.counters
                    .acquire(&checks, tokens, Instant::now())
                    .map_err(|d| refusal(&d))?,
            )
        };
        Ok(Admission {
            access: self.clone(),
            grant,
            scopes: scopes.into_iter().map(|(s, _)| s).collect(),
        })
    }

    /// The scopes a caller's request counts against, with their limits:
    /// its tenant (unlisted tenants, `default` included, with no limits but
    /// their spend still tracked) and its key.
    fn scopes(&self, p: &Principal) -> Vec<(String, LimitsConfig)> {
        let mut scopes: Vec<(String, LimitsConfig)> = Vec::with_capacity(2);
        let tenant_limits = self
            .tenants
            .get(&*p.tenant)
            .map_or_else(LimitsConfig::default, |t| t.limits);
        scopes.push((format!("tenant:{}", p.tenant), tenant_limits));
        if let Some(k) = &p.key {
            scopes.push((format!("key:{}", k.id), k.limits));
        }
        scopes
    }

    fn check_budgets(&self, scopes: &[(String, LimitsConfig)]) -> Result<(), ApiError> {
        let (day, month) = day_and_month(store::now_secs());
        let spend = self.spend.lock().unwrap_or_else(|p| p.into_inner());
        for (scope, limits) in scopes {
            let s = spend.get(scope).copied().unwrap_or_default();
            let today = if s.day == day { s.day_usd } else { 0.0 };
            let this_month = if s.month == month { s.month_usd } else { 0.0 };
            let over = match (limits.budget_daily_usd, limits.budget_monthly_usd) {
                (Some(b), _) if today >= b => Some(("daily", b, today)),
                (_, Some(b)) if this_month >= b => Some(("monthly", b, this_month)),
                _ => None,
            };
            if let Some((period, budget, spent)) = over {
                crate::metrics::access_refusal(
                    scope_kind(scope),
                    if period == "daily" {
                        "budget_daily"
                    } else {
                        "budget_monthly"
                    },
                );
                return Err(ApiError::QuotaExceeded(format!(
                    "The {period} budget of {} (${budget:.2}) is used up (${spent:.4} spent); \
                     it resets at the start of the next UTC {}.",
                    describe(scope),
                    if period == "daily" { "day" } else { "month" },
                )));
            }
        }
        Ok(())
    }

    fn add_spend(&self, scopes: &[String], usd: f64) {
        let usd = if usd.is_finite() { usd.max(0.0) } else { 0.0 };
        let (day, month) = day_and_month(store::now_secs());
        let mut spend = self.spend.lock().unwrap_or_else(|p| p.into_inner());
        for scope in scopes {
            let s = spend.entry(scope.clone()).or_default();
            if s.day != day {
                s.day = day;
                s.day_usd = 0.0;
                s.day_requests = 0;
            }
            if s.month != month {
                s.month = month;
                s.month_usd = 0.0;
            }
            s.day_usd += usd;
            s.day_requests += 1;
            s.month_usd += usd;
        }
    }

    /// Tenants by today's spend, most first: (tenant, requests settled
    /// today since start, USD today).
    pub fn top_tenants(&self, n: usize) -> Vec<(String, u64, f64)> {
        let (day, _) = day_and_month(store::now_secs());
        let spend = self.spend.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<(String, u64, f64)> = spend
            .iter()
            .filter(|(_, s)| s.day == day)
            .filter_map(|(scope, s)| {
                Some((
                    scope.strip_prefix("tenant:")?.to_owned(),
                    s.day_requests,
                    s.day_usd,
                ))
            })
            .collect();
        out.sort_by(|a, b| b.2.total_cmp(&a.2).then(b.1.cmp(&a.1)));
        out.truncate(n);
        out
    }

    /// The caller's placement policy (its tenant's) and what is left of
    /// its budgets: the least of its tenant's and its key's, daily and
    /// monthly.
    pub fn placement(&self, p: &Principal) -> TenantPlacement {
        let tenant = self.tenants.get(&*p.tenant);
        let left = self
            .scopes(p)
            .iter()
            .flat_map(|(scope, limits)| {
                let (today, this_month) = self.spent(scope);
                [
                    limits.budget_daily_usd.map(|b| b - today),
                    limits.budget_monthly_usd.map(|b| b - this_month),
                ]
            })
            .flatten()
            .map(|l| l.max(0.0))
            .min_by(f64::total_cmp);
        TenantPlacement {
            mode: tenant.and_then(|t| t.placement.mode),
            allowed_external: tenant
                .map(|t| t.placement.allowed_external.clone())
                .unwrap_or_default(),
            budget_left_usd: left,
        }
    }

    /// Spend today and this month of a scope (`key:<id>`, `tenant:<name>`).
    pub fn spent(&self, scope: &str) -> (f64, f64) {
        let (day, month) = day_and_month(store::now_secs());
        let spend = self.spend.lock().unwrap_or_else(|p| p.into_inner());
        spend.get(scope).map_or((0.0, 0.0), |s| {
            (
                if s.day == day { s.day_usd } else { 0.0 },
                if s.month == month { s.month_usd } else { 0.0 },
            )
        })
    }
}

fn describe(scope: &str) -> String {
    match scope.split_once(':') {
        Some(("key", id)) => format!("key `{id}`"),
        Some(("tenant", t)) => format!("tenant `{t}`"),
        _ => scope.to_owned(),
    }
}

fn scope_kind(scope: &str) -> &'static str {
    if scope.starts_with("key:") {
        "key"
    } else {
        "tenant"
    }
}

/// A rate-limit refusal in OpenAI's words.
fn refusal(d: &Denied) -> ApiError {
    crate::metrics::access_refusal(
        scope_kind(&d.scope),
        match d.limit {
            Limit::Requests => "requests",
            Limit::Tokens => "tokens",
            Limit::Concurrency => "concurrency",
        },
    );
    let what = describe(&d.scope);
    let message = match (d.limit, d.retry_after) {
        (Limit::Tokens, None) => format!(
            "Request too large for {what}: its estimated tokens exceed the limit of {} tokens per minute. \
             Send a shorter prompt or a smaller max_tokens.",
            d.value
        ),
        (Limit::Requests, _) => format!(
            "Rate limit reached for {what}: {} requests per minute. Please try again in {}.",
            d.value,
            fmt_duration(d.retry_after.unwrap_or_default())
        ),
        (Limit::Tokens, Some(after)) => format!(
            "Rate limit reached for {what}: {} tokens per minute. Please try again in {}.",
            d.value,
            fmt_duration(after)
        ),
        (Limit::Concurrency, _) => format!(
            "Too many concurrent requests for {what}: at most {} at once.",
            d.value
        ),
    };
    ApiError::RateLimited {
        message,
        retry_after: d.retry_after,
    }
}

/// Durations as OpenAI writes them in `x-ratelimit-reset-*`: `20ms`,
/// `1.5s`, `6m0s`.
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1_000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        let s = format!("{:.3}", d.as_secs_f64());
        format!("{}s", s.trim_end_matches('0').trim_end_matches('.'))
    } else {
        format!("{}m{}s", ms / 60_000, (ms % 60_000) / 1_000)
    }
}

/// An admitted request's hold on its limits, settled when it ends.
#[derive(Debug)]
pub struct Admission {
    access: Arc<Access>,
    grant: Option<Grant>,
    scopes: Vec<String>,
}

impl Admission {
    /// `x-ratelimit-*` headers, in OpenAI's names.
    pub fn headers(&self, h: &mut HeaderMap) {
        let Some(g) = &self.grant else { return };
        let mut put = |name: &'static str, v: String| {
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.insert(name, v);
            }
        };
        if let Some((limit, left, reset)) = g.remaining.requests {
            put("x-ratelimit-limit-requests", limit.to_string());
            put("x-ratelimit-remaining-requests", left.to_string());
            put("x-ratelimit-reset-requests", fmt_duration(reset));
        }
        if let Some((limit, left, reset)) = g.remaining.tokens {
            put("x-ratelimit-limit-tokens", limit.to_string());
            put("x-ratelimit-remaining-tokens", left.to_string());
            put("x-ratelimit-reset-tokens", fmt_duration(reset));
        }
    }

    /// The request ended: settle tokens and spend, write the ledger row.
    pub fn settle(mut self, record: UsageRecord) {
        if let Some(g) = self.grant.take() {
            let tokens = if record.cache.starts_with("hit") {
                0
            } else {
                record.prompt_tokens + record.completion_tokens
            };
            self.access.counters.finish(&g, tokens);
        }
        self.access.add_spend(&self.scopes, record.cost_usd);
        self.access.ledger.record(record);
    }
}

impl Drop for Admission {
    /// Never settled (a panic on the way): the slot is released and the
    /// estimate stands.
    fn drop(&mut self) {
        if let Some(g) = self.grant.take() {
            self.access.counters.finish(&g, g.tokens);
        }
    }
}

/// DLP policies resolved per (tenant, model group) at start-up.
#[derive(Debug)]
pub struct DlpPolicies {
    pub dlp: dlp::Dlp,
    by_group: HashMap<String, dlp::Policy>,
    by_tenant_group: HashMap<(String, String), dlp::Policy>,
    default: dlp::Policy,
}

impl DlpPolicies {
    pub fn build(config: &Config) -> Result<Option<Self>, String> {
        let Some(dlp) = dlp::Dlp::build(&config.dlp)? else {
            return Ok(None);
        };
        let empty = BTreeMap::<String, DlpAction>::new();
        let default = dlp.policy(&[&empty])?;
        let mut by_group = HashMap::new();
        let mut by_tenant_group = HashMap::new();
        for g in &config.model_groups {
            let p = dlp
                .policy(&[&g.dlp])
                .map_err(|e| format!("model_groups `{}`.dlp: {e}", g.name))?;
            by_group.insert(g.name.clone(), p);
        }
        for (t, tenant) in &config.tenants {
            let check = dlp
                .policy(&[&tenant.dlp])
                .map_err(|e| format!("tenants.{t}.dlp: {e}"))?;
            for g in &config.model_groups {
                by_tenant_group.insert(
                    (t.clone(), g.name.clone()),
                    dlp.policy(&[&g.dlp, &tenant.dlp])?,
                );
            }
            // Models outside the groups (in-process embeddings).
            by_tenant_group.insert((t.clone(), String::new()), check);
        }
        Ok(Some(Self {
            dlp,
            by_group,
            by_tenant_group,
            default,
        }))
    }

    pub fn policy(&self, tenant: &str, group: &str) -> &dlp::Policy {
        if !self.by_tenant_group.is_empty()
            && let Some(p) = self
                .by_tenant_group
                .get(&(tenant.to_owned(), group.to_owned()))
                .or_else(|| {
                    self.by_tenant_group
                        .get(&(tenant.to_owned(), String::new()))
                })
        {
            return p;
        }
        self.by_group.get(group).unwrap_or(&self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_days_and_months() {
        // 2026-11-23T08:00:00Z
        let (day, month) = day_and_month(1_795_392_000 + 8 * 3600);
        assert_eq!(day, 20_780);
        assert_eq!(month, 2026 * 12 + 10);
        assert_eq!(month_start(month), 1_793_491_200); // 2026-11-01
        assert_eq!(month_start(2024 * 12 + 1), 1_706_745_600); // 2024-02-01
        assert_eq!(day_and_month(1_709_164_800).1, 2024 * 12 + 1); // 2024-02-29
    }

    #[test]
    fn durations_in_openai_style() {
        assert_eq!(fmt_duration(Duration::from_millis(20)), "20ms");
        assert_eq!(fmt_duration(Duration::from_millis(1_500)), "1.5s");
        assert_eq!(fmt_duration(Duration::from_secs(1)), "1s");
        assert_eq!(fmt_duration(Duration::from_secs(360)), "6m0s");
    }
}
