//! HTTP: `/metrics` (OpenMetrics text), the JSON API and the live page.
//!
//! `routes/` holds the handlers (one file per area of the API), `auth` the credential check every
//! change passes, `wire` the few lines of HTTP/1.1 the CLI and the tests speak to a node.

mod auth;
mod routes;
mod wire;

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context as _;
use axum::{
    Router, middleware,
    routing::{get, post},
};
use prometheus_client::registry::Registry;

use crate::{node::Client, telemetry};

pub use wire::{parse_response, request_text};

#[derive(Clone)]
pub struct AppState {
    pub client: Client,
    pub registry: Arc<Registry>,
    pub telemetry: telemetry::Telemetry,
    /// One sentence: "loaded", or why the eBPF part is not running.
    pub ebpf_status: Arc<String>,
    /// When set, every request that changes something (any method but GET/HEAD) must carry
    /// `Authorization: Bearer <token>`. Required when the API binds beyond loopback.
    pub token: Option<Arc<String>>,
}

/// Every route of the API, behind the credential check.
fn router(state: AppState) -> Router {
    use routes::{cc, files, metrics, node, perf};
    Router::new()
        .route("/", get(routes::page))
        .route("/metrics", get(metrics::metrics))
        .route("/api/node", get(node::node))
        .route("/api/peers", get(node::peers))
        .route("/api/history", get(node::history))
        .route("/api/cc", get(cc::get_cc).put(cc::put_cc))
        .route(
            "/api/cc/tunables",
            get(cc::get_tunables).put(cc::put_tunables),
        )
        .route("/api/perf", post(perf::perf))
        .route("/api/files", get(files::list).post(files::share))
        .route("/api/files/fetch", post(files::fetch))
        .route("/api/announcements", get(files::announcements))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .with_state(state)
}

pub async fn serve(addr: SocketAddr, state: AppState) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the HTTP API to {addr}"))?;
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
    .context("HTTP server")
}
