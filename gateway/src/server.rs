//! Serving: bind, log the address, and shut down gracefully on SIGTERM or
//! SIGINT: stop accepting, let in-flight requests (streams included) finish
//! within `server.shutdown_grace_secs`, then commit the usage ledger's
//! last rows and exit.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;

use crate::api;
use crate::app::App;
use crate::config::Config;

pub async fn serve(config: &Config, app: App) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.server.listen).await?;
    let addr = listener.local_addr()?;
    let app = Arc::new(app);
    if let Some(fleet) = &app.fleet {
        fleet.spawn_poller();
    }
    if app.metrics {
        crate::metrics::spawn_upkeep();
        crate::dashboard::spawn_sampler();
    }
    if let Some(batches) = &app.batches {
        crate::batch::runner::spawn(app.clone(), batches.clone());
        if let Some(listen) = config.batch.grpc_listen {
            crate::batch::grpc::serve(listen, batches.clone(), app.master_key.clone()).await?;
        }
    }
    let groups: Vec<&str> = app.groups.iter().map(|g| g.name.as_str()).collect();
    tracing::info!(addr = %addr, model_groups = ?groups, "listening");
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    // Small SSE chunks must not wait for Nagle's algorithm.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let server = axum::serve(listener, api::router(app.clone()))
        .with_graceful_shutdown(async move {
            let _ = stop_rx.changed().await;
        })
        .into_future();
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => {
            flush_ledger(&app).await;
            return Ok(result?);
        }
        signal = shutdown_signal() => tracing::info!(signal, "shutting down: no new connections; waiting for in-flight requests"),
    }
    app.shutting_down.store(true, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    let result = match tokio::time::timeout(grace, &mut server).await {
        Ok(result) => {
            tracing::info!("in-flight requests finished");
            result
        }
        Err(_) => {
            tracing::warn!(
                grace_secs = grace.as_secs(),
                "grace period over; exiting with requests still in flight"
            );
            Ok(())
        }
    };
    flush_ledger(&app).await;
    tracing::info!("shutdown complete");
    Ok(result?)
}

/// Commit the usage rows still in the ledger writer's window, so a clean
/// shutdown loses none (budgets are reloaded from them at start).
async fn flush_ledger(app: &Arc<App>) {
    if let Some(access) = app.access.clone() {
        let _ = tokio::task::spawn_blocking(move || access.ledger.flush()).await;
    }
}

async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return ctrl_c().await,
        };
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            s = ctrl_c() => s,
        }
    }
    #[cfg(not(unix))]
    {
        ctrl_c().await
    }
}

async fn ctrl_c() -> &'static str {
    match tokio::signal::ctrl_c().await {
        Ok(()) => "SIGINT",
        Err(_) => std::future::pending().await,
    }
}
