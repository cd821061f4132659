//! Structured logs (tracing) to stderr, JSON or text, and, when
//! `[tracing] otlp_endpoint` is set, the same spans exported to an
//! OpenTelemetry collector over OTLP/gRPC.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::{LogFormat, LoggingConfig, TracingConfig};

/// Keeps logging and span export running; dropping it flushes both.
pub struct Guard {
    _log: tracing_appender::non_blocking::WorkerGuard,
    tracer: Option<SdkTracerProvider>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("otlp", &self.tracer.is_some())
            .finish()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(p) = self.tracer.take()
            && let Err(e) = p.shutdown()
        {
            tracing::warn!(error = %e, "OpenTelemetry: spans not flushed at exit");
        }
    }
}

/// Install the subscriber without span export.
pub fn init(config: &LoggingConfig) -> Guard {
    match init_with(config, &TracingConfig::default()) {
        Ok(g) => g,
        // Without an endpoint nothing can fail; keep a working guard anyway.
        Err((g, _)) => g,
    }
}

/// Install the subscriber. Lines are formatted on the calling thread and
/// written by a background thread, so a slow stderr never stalls requests;
/// the writer blocks rather than drops when its buffer is full, so no request
/// line is lost. With an OTLP endpoint, spans are batched and exported from
/// the tokio runtime (call this inside it). Keep the guard alive until exit.
/// On an export setup error the logs still work: the error comes with the
/// guard.
pub fn init_with(
    config: &LoggingConfig,
    tracing_config: &TracingConfig,
) -> Result<Guard, (Guard, String)> {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::stderr());
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (fmt_json, fmt_text) = match config.format {
        LogFormat::Json => (
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    // One flat object per line, as before spans existed: a
                    // line's own fields carry the request id; span context
                    // goes to OTLP.
                    .with_current_span(false)
                    .with_span_list(false)
                    .with_writer(writer)
                    .with_target(false),
            ),
            None,
        ),
        LogFormat::Text => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .with_writer(writer)
                    .with_target(false)
                    .with_ansi(ansi),
            ),
        ),
    };
    let (provider, error) = match &tracing_config.otlp_endpoint {
        Some(endpoint) => match otlp(endpoint, tracing_config) {
            Ok(p) => (Some(p), None),
            Err(e) => (None, Some(e)),
        },
        None => (None, None),
    };
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("switchyard")));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt_json)
        .with(fmt_text)
        .with(otel)
        .try_init();
    let g = Guard {
        _log: guard,
        tracer: provider,
    };
    match error {
        None => Ok(g),
        Some(e) => Err((g, e)),
    }
}

fn otlp(endpoint: &str, t: &TracingConfig) -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| format!("OTLP exporter for {endpoint}: {e}"))?;
    let processor =
        opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .build();
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(t.service_name.clone())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            t.sample_ratio,
        ))))
        .with_resource(resource)
        .build())
}
