//! `/metrics`, `/healthz` and `/readyz` on `--metrics-addr`.
//!
//! Invariants: a scrape asks the run loop (which owns the agent) for a
//! snapshot over a channel and renders it here; when the loop does not
//! answer, the scrape gets 503, never stale figures; `/readyz` reads only
//! the shared ready flag.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::{render::render, snapshot::Snapshot};

/// The default `--metrics-addr`.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9725";

#[derive(Debug, Error)]
pub enum MetricsError {
    #[error("cannot listen on {addr} for metrics: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A scrape's request to the run loop.
pub type Request = oneshot::Sender<Snapshot>;

#[derive(Clone)]
struct Shared {
    requests: mpsc::Sender<Request>,
    ready: Arc<AtomicBool>,
}

/// Listens on `addr`; returns the channel the run loop answers scrapes on.
pub async fn serve(
    addr: SocketAddr,
    ready: Arc<AtomicBool>,
) -> Result<mpsc::Receiver<Request>, MetricsError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })?;
    let (requests, receiver) = mpsc::channel(16);
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(Shared { requests, ready });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            warn!(error = %e, "the metrics server stopped");
        }
    });
    Ok(receiver)
}

async fn metrics(State(shared): State<Shared>) -> impl IntoResponse {
    let (reply, answer) = oneshot::channel();
    if shared.requests.send(reply).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, String::new()).into_response();
    }
    match answer.await {
        Ok(snapshot) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            render(snapshot),
        )
            .into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, String::new()).into_response(),
    }
}

async fn readyz(State(shared): State<Shared>) -> impl IntoResponse {
    if shared.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: some interface is not enforced yet\n",
        )
    }
}
