//! Node agents: GPU telemetry from the machines the engines run on.
//!
//! `switchyard agent` runs on each GPU node. It samples the node's GPUs
//! (NVML, or SIMULATED engines' `/sim/telemetry` for tests and demos) every
//! interval and serves the samples over gRPC
//! (`switchyard.v1.TelemetryService/Watch`, `proto/switchyard/v1/`): each
//! subscriber gets the latest sample at once, then every new one.
//!
//! A gateway [`subscribe`]s once per agent address (backends with
//! `telemetry = "agent"`) and keeps the latest samples in a watch channel,
//! as it does for NVML on its own machine ([`spawn_nvml`]). The
//! subscription reconnects with backoff (0.1 s doubling to 5 s) after a
//! failed connect, a closed stream or silence longer than the staleness
//! period; while it is down it publishes the error, so the fleet's poller
//! stops refreshing those GPUs and drains them once their last sample is
//! older than `stale_after_ms` (reason `stale_telemetry`). The first new
//! sample after a reconnect makes them healthy again; a sample the agent
//! repeats (its latest, sent to every new subscriber) counts once, so an
//! agent whose sampler hangs goes stale however often it is reconnected to.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::Stream;
use secrecy::{ExposeSecret, SecretString};
use switchyard_proto::v1 as pb;
use switchyard_proto::v1::telemetry_service_server::{TelemetryService, TelemetryServiceServer};
use switchyard_scheduler::telemetry::{GpuSample, GpuTelemetry, Nvml};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::api::middleware::GrpcBearer;

/// The latest GPU samples from one source, numbered so a reader can tell a
/// new sample from one it has already seen.
#[derive(Debug, Clone)]
pub struct Feed {
    /// 0 before the first sample; then increases with every sample or error.
    pub sequence: u64,
    pub samples: Result<Arc<[GpuSample]>, String>,
}

impl Feed {
    fn waiting(what: &str) -> Self {
        Self {
            sequence: 0,
            samples: Err(format!("{what}: no sample yet")),
        }
    }
}

/// Where an agent's samples come from.
#[derive(Debug, Clone)]
pub enum AgentSource {
    /// NVML; fails to start where there is no driver.
    Nvml,
    /// NVML where it loads; otherwise no GPUs, with a log line saying why.
    Auto,
    /// SIMULATED engines (`switchyard sim`): their `/sim/telemetry`, by
    /// server root (e.g. `http://127.0.0.1:9910`).
    Sim(Vec<String>),
}

/// `switchyard agent` settings.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Reported with every sample.
    pub node: String,
    pub source: AgentSource,
    pub interval: Duration,
    /// Subscribers must send `authorization: Bearer <token>`; `None`
    /// serves anyone who can connect.
    pub token: Option<SecretString>,
    /// Serve over TLS (and, with a client CA, require client
    /// certificates); `None`: plain HTTP/2.
    pub tls: Option<AgentTls>,
}

/// PEM files of an agent's TLS identity.
#[derive(Debug, Clone)]
pub struct AgentTls {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    /// Subscribers must present a certificate this CA signed (mutual TLS).
    pub client_ca: Option<std::path::PathBuf>,
}

impl AgentTls {
    /// tonic's server settings, the files read and checked now.
    fn server_config(&self) -> Result<tonic::transport::ServerTlsConfig, String> {
        use tonic::transport::{Certificate, Identity, ServerTlsConfig};
        let identity = Identity::from_pem(
            read_pem(&self.cert, "--tls-cert", Pem::Certificates)?,
            read_pem(&self.key, "--tls-key", Pem::PrivateKey)?,
        );
        let mut config = ServerTlsConfig::new().identity(identity);
        if let Some(ca) = &self.client_ca {
            config = config.client_ca_root(Certificate::from_pem(read_pem(
                ca,
                "--tls-client-ca",
                Pem::Certificates,
            )?));
        }
        Ok(config)
    }
}

/// What a PEM file must hold.
#[derive(Debug, Clone, Copy)]
pub enum Pem {
    Certificates,
    PrivateKey,
}

/// A PEM file's bytes, holding at least one block of `kind`; `what` names
/// it in the error.
pub fn read_pem(path: &std::path::Path, what: &str, kind: Pem) -> Result<Vec<u8>, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("{what}: cannot read {}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    let found = match kind {
        Pem::Certificates => text.contains("-----BEGIN CERTIFICATE-----"),
        // PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
        Pem::PrivateKey => text
            .lines()
            .any(|l| l.starts_with("-----BEGIN ") && l.ends_with("PRIVATE KEY-----")),
    };
    if !found {
        let want = match kind {
            Pem::Certificates => "PEM certificates",
            Pem::PrivateKey => "PEM private key",
        };
        return Err(format!("{what}: {} holds no {want}", path.display()));
    }
    Ok(bytes)
}

/// A running agent: its gRPC address. Dropping it stops the server (and
/// with it the sampler).
#[derive(Debug)]
pub struct RunningAgent {
    pub addr: SocketAddr,
    pub source: &'static str,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl RunningAgent {
    /// Until the server fails.
    pub async fn wait(mut self) -> Result<(), String> {
        match (&mut self.task).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `listen`, starts sampling and serves `TelemetryService`.
pub async fn start(listen: SocketAddr, config: AgentConfig) -> Result<RunningAgent, String> {
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = &config.tls {
        server = server
            .tls_config(tls.server_config()?)
            .map_err(|e| format!("TLS: {e}"))?;
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot bind {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let (tx, rx) = watch::channel(pb::NodeSample::default());
    let source = match config.source {
        AgentSource::Sim(roots) => {
            tokio::spawn(sample_sims(roots, config.node, config.interval, tx));
            "sim"
        }
        AgentSource::Nvml | AgentSource::Auto => {
            let required = matches!(config.source, AgentSource::Nvml);
            let opened = tokio::task::spawn_blocking(Nvml::open)
                .await
                .map_err(|e| e.to_string())?;
            let telemetry: Box<dyn GpuTelemetry> = match opened {
                Ok(nvml) => Box::new(nvml),
                Err(e) if required => {
                    return Err(format!("{e} (use --telemetry auto to start without GPUs)"));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "NVML unavailable: this agent reports no GPUs");
                    Box::new(switchyard_scheduler::telemetry::NoGpus)
                }
            };
            let source = telemetry.source();
            let mut telemetry = telemetry;
            std::thread::Builder::new()
                .name("agent-sampler".into())
                .spawn(move || {
                    sample_every(telemetry.as_mut(), config.interval, |sequence, result| {
                        let sample = node_sample(&config.node, source, sequence, result);
                        tx.send(sample).is_ok()
                    });
                })
                .map_err(|e| format!("cannot start the sampler thread: {e}"))?;
            source
        }
    };
    let service = TelemetryServiceServer::with_interceptor(
        Agent { latest: rx },
        GrpcBearer {
            secret: config.token.map(Arc::new),
            missing: "this agent requires `authorization: Bearer <token>` (the gateway's agent_token)",
            wrong: "incorrect agent token",
        },
    );
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let task = tokio::spawn(server.add_service(service).serve_with_incoming(incoming));
    Ok(RunningAgent { addr, source, task })
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn node_sample(
    node: &str,
    source: &str,
    sequence: u64,
    result: Result<Vec<GpuSample>, String>,
) -> pb::NodeSample {
    let (gpus, error) = match result {
        Ok(gpus) => (gpus.into_iter().map(to_proto).collect(), String::new()),
        Err(e) => (Vec::new(), e),
    };
    pb::NodeSample {
        node: node.to_owned(),
        source: source.to_owned(),
        sequence,
        unix_ms: unix_ms(),
        gpus,
        error,
    }
}

/// Samples `telemetry` every `interval` (NVML calls block: run it on its own
/// thread), numbering samples from 1, until `send` says no one listens.
fn sample_every(
    telemetry: &mut dyn GpuTelemetry,
    interval: Duration,
    mut send: impl FnMut(u64, Result<Vec<GpuSample>, String>) -> bool,
) {
    for sequence in 1.. {
        if !send(sequence, telemetry.sample()) {
            return;
        }
        std::thread::sleep(interval);
    }
}

/// `/sim/telemetry` of a SIMULATED engine: its GPU as NVML would report it.
pub(crate) async fn sim_gpus(
    client: &reqwest::Client,
    url: &str,
) -> Result<Vec<GpuSample>, String> {
    #[derive(serde::Deserialize)]
    struct Sim {
        gpus: Vec<GpuSample>,
    }
    let r = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    r.error_for_status()
        .map_err(|e| format!("{url}: {e}"))?
        .json::<Sim>()
        .await
        .map(|s| s.gpus)
        .map_err(|e| format!("{url}: {e}"))
}

/// SIMULATED GPUs: the engines' `/sim/telemetry`, all of them per sample.
/// GPUs of engines that answer are reported; the others are named in
/// `error`.
async fn sample_sims(
    roots: Vec<String>,
    node: String,
    interval: Duration,
    tx: watch::Sender<pb::NodeSample>,
) {
    let client = reqwest::Client::builder()
        .timeout(interval.max(Duration::from_millis(500)))
        .build()
        .unwrap_or_default();
    let urls: Vec<String> = roots
        .iter()
        .map(|root| format!("{}/sim/telemetry", root.trim_end_matches('/')))
        .collect();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for sequence in 1.. {
        tick.tick().await;
        let polls = urls.iter().map(|url| sim_gpus(&client, url));
        let mut gpus = Vec::new();
        let mut errors = Vec::new();
        for r in futures_util::future::join_all(polls).await {
            match r {
                Ok(g) => gpus.extend(g),
                Err(e) => errors.push(e),
            }
        }
        let mut sample = node_sample(&node, "sim", sequence, Ok(gpus));
        sample.error = errors.join("; ");
        if tx.send(sample).is_err() {
            return;
        }
    }
}

struct Agent {
    latest: watch::Receiver<pb::NodeSample>,
}

type SampleStream = Pin<Box<dyn Stream<Item = Result<pb::NodeSample, Status>> + Send>>;

#[tonic::async_trait]
impl TelemetryService for Agent {
    type WatchStream = SampleStream;

    async fn watch(
        &self,
        _request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        // The latest sample at once (once there is one), then each new one;
        // the stream ends when the sampler stops, and a sampler that has
        // stopped serves nothing (its last sample is not news).
        if self.latest.has_changed().is_err() {
            return Err(Status::unavailable("the agent's GPU sampler has stopped"));
        }
        let start = (self.latest.clone(), true);
        let stream = futures_util::stream::unfold(start, |(mut rx, first)| async move {
            let ok = if first {
                rx.wait_for(|s| s.sequence > 0).await.is_ok()
            } else {
                rx.changed().await.is_ok()
            };
            if !ok {
                return None;
            }
            let sample = rx.borrow_and_update().clone();
            Some((Ok(sample), (rx, false)))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// `GpuSample` to and from its protobuf message, field by field (both
/// literals are exhaustive, so a field added to one side and not the other
/// does not compile).
macro_rules! sample_conversions {
    ($($field:ident),* $(,)?) => {
        fn to_proto(s: GpuSample) -> pb::GpuSample {
            pb::GpuSample { $($field: s.$field),* }
        }
        fn from_proto(s: pb::GpuSample) -> GpuSample {
            GpuSample { $($field: s.$field),* }
        }
    };
}

sample_conversions!(
    index,
    uuid,
    name,
    utilization_pct,
    memory_used_bytes,
    memory_total_bytes,
    power_w,
    power_limit_w,
    temperature_c,
    throttle,
    xid_errors,
    last_xid,
    ecc_uncorrected,
    simulated,
);

/// How a gateway reaches one agent: its bearer token and its endpoint
/// (over TLS for an `https://` agent), built once from the configuration.
#[derive(Debug, Clone)]
pub struct AgentLink {
    pub token: Option<SecretString>,
    pub endpoint: tonic::transport::Endpoint,
}

/// Subscribes to the agent at `url` for as long as the receiver lives,
/// through `link`'s endpoint, sending its token as `authorization: Bearer
/// …` when given. `stale_after`: silence longer than this drops the
/// connection and reconnects.
pub fn subscribe(url: String, link: AgentLink, stale_after: Duration) -> watch::Receiver<Feed> {
    let (tx, rx) = watch::channel(Feed::waiting(&format!("agent {url}")));
    tokio::spawn(async move {
        let mut sequence = 0;
        // The last sample taken, by the agent's own (sequence, clock): what
        // an agent repeats on reconnecting is not news.
        let mut last = None;
        let mut backoff = BACKOFF_MIN;
        let mut connected = false;
        // Said once per outage (at start too); retries are logged at debug.
        let mut said = false;
        loop {
            let lost = follow(
                &url,
                &link,
                stale_after,
                &tx,
                &mut sequence,
                &mut last,
                &mut connected,
            )
            .await;
            if tx.is_closed() {
                return;
            }
            if connected {
                tracing::warn!(agent = %url, error = %lost, "node agent lost; reconnecting");
                connected = false;
                said = true;
                backoff = BACKOFF_MIN;
            } else if !said {
                tracing::warn!(agent = %url, error = %lost, "node agent unreachable; retrying");
                said = true;
            } else {
                tracing::debug!(agent = %url, error = %lost, "node agent unreachable");
            }
            sequence += 1;
            let _ = tx.send(Feed {
                sequence,
                samples: Err(format!("agent {url}: {lost}")),
            });
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    });
    rx
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The agent's gRPC endpoint, over `tls` when given.
pub fn endpoint(
    url: &str,
    tls: Option<tonic::transport::ClientTlsConfig>,
) -> Result<tonic::transport::Endpoint, String> {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())
        .map_err(|e| format!("invalid address: {e}"))?;
    match tls {
        Some(tls) => endpoint
            .tls_config(tls)
            .map_err(|e| format!("TLS: {}", error_chain(&e))),
        None => Ok(endpoint),
    }
}

/// An error and its sources, `: `-separated (tonic's transport errors say
/// little at the top).
fn error_chain(e: &dyn std::error::Error) -> String {
    sources(e.to_string(), e.source())
}

/// `top`, then each of `source`'s chain that it does not already say.
fn sources(top: String, mut source: Option<&dyn std::error::Error>) -> String {
    let mut out = top;
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// One connection: publishes samples until it fails; returns why.
async fn follow(
    url: &str,
    link: &AgentLink,
    stale_after: Duration,
    tx: &watch::Sender<Feed>,
    sequence: &mut u64,
    last: &mut Option<(u64, i64)>,
    connected: &mut bool,
) -> String {
    use switchyard_proto::v1::telemetry_service_client::TelemetryServiceClient;
    let endpoint = link.endpoint.clone().connect_timeout(stale_after);
    // Connecting and opening the stream, bounded: an agent that accepts
    // connections but never answers is as good as gone.
    let opened = tokio::time::timeout(stale_after, async {
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| format!("connect: {}", error_chain(&e)))?;
        let mut request = Request::new(pb::WatchRequest {});
        if let Some(token) = &link.token {
            let value = format!("Bearer {}", token.expose_secret())
                .parse()
                .map_err(|_| "agent_token: not a valid header value".to_owned())?;
            request.metadata_mut().insert("authorization", value);
        }
        TelemetryServiceClient::new(channel)
            .watch(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| {
                // A TLS refusal after the handshake (no client certificate)
                // shows only in the sources.
                format!(
                    "watch: {}",
                    sources(
                        status.message().to_owned(),
                        std::error::Error::source(&status)
                    )
                )
            })
    })
    .await;
    let mut stream = match opened {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return e,
        Err(_) => return format!("no answer within {} ms", stale_after.as_millis()),
    };
    loop {
        let message = match tokio::time::timeout(stale_after, stream.message()).await {
            Ok(Ok(Some(m))) => m,
            Ok(Ok(None)) => return "the agent closed the stream".into(),
            Ok(Err(status)) => return format!("stream: {}", status.message()),
            Err(_) => return format!("no sample for {} ms", stale_after.as_millis()),
        };
        let id = (message.sequence, message.unix_ms);
        if *last == Some(id) {
            continue;
        }
        *last = Some(id);
        if !*connected {
            tracing::info!(agent = %url, node = %message.node, source = %message.source, gpus = message.gpus.len(), "node agent connected");
            *connected = true;
        }
        *sequence += 1;
        let samples = if message.error.is_empty() || !message.gpus.is_empty() {
            if !message.error.is_empty() {
                tracing::debug!(agent = %url, error = %message.error, "node agent: some GPUs unavailable");
            }
            Ok(message.gpus.into_iter().map(from_proto).collect())
        } else {
            Err(format!("agent {url}: {}", message.error))
        };
        if tx
            .send(Feed {
                sequence: *sequence,
                samples,
            })
            .is_err()
        {
            return "unsubscribed".into();
        }
    }
}

/// NVML on this machine, sampled on its own thread (its calls block).
pub fn spawn_nvml(interval: Duration) -> watch::Receiver<Feed> {
    let (tx, rx) = watch::channel(Feed::waiting("NVML"));
    let spawned = std::thread::Builder::new()
        .name("nvml".into())
        .spawn(move || {
            let mut nvml = match Nvml::open() {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "NVML unavailable: backends with telemetry = \"nvml\" will be drained");
                    let _ = tx.send(Feed {
                        sequence: 1,
                        samples: Err(e),
                    });
                    return;
                }
            };
            sample_every(&mut nvml, interval, |sequence, samples| {
                let samples = samples.map(Arc::from);
                tx.send(Feed { sequence, samples }).is_ok()
            });
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the NVML thread");
    }
    rx
}
