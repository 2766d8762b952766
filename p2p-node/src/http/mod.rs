//! HTTP: `/metrics` (OpenMetrics text), the JSON API and the live page.
//!
//! `routes/` holds the handlers (one file per area of the API), `auth` the `Host` check and the
//! credential every change needs, `limits` the server's timeouts, body and connection bounds,
//! `wire` the few lines of HTTP/1.1 the CLI and the tests speak to a node. The request bodies'
//! types are public: the CLI builds its requests from them (`cli::ApiChange`).

pub mod auth;
pub mod confine;
pub mod limits;
mod routes;
mod wire;

use std::{future::Future, net::SocketAddr, sync::Arc};

use anyhow::Context as _;
use axum::{
    Router,
    http::StatusCode,
    middleware,
    routing::{get, post},
};
use tower_http::{limit::RequestBodyLimitLayer, timeout::TimeoutLayer};

use crate::{node::Client, telemetry};

pub use routes::{
    cc::CcRequest,
    files::{FetchRequest, ShareRequest},
    perf::PerfRequest,
};
pub use wire::{parse_response, request_text};

#[derive(Clone)]
pub struct AppState {
    pub client: Client,
    pub telemetry: telemetry::Telemetry,
    /// `/metrics` and `/api/peers`, encoded once per snapshot.
    pub exports: telemetry::exports::Exports,
    /// The bbr-p2p handle (control: switching and tunables).
    pub bbr: crate::cc::BbrSlot,
    /// One sentence: "loaded", or why the eBPF part is not running.
    pub ebpf_status: Arc<String>,
    /// Every request that changes something (any method but GET/HEAD) must carry
    /// `Authorization: Bearer <token>`, also on loopback.
    pub token: Arc<String>,
    /// `Host` names accepted besides localhost and the node's addresses.
    pub allowed_hosts: Arc<auth::AllowedHosts>,
    /// Where `share` may read and `fetch` may write.
    pub files: Arc<confine::FilePolicy>,
    /// Path measurements per peer (careful resume).
    pub known: Arc<crate::known::Store>,
}

/// Every route of the API, behind the `Host` check and the credential check, with a body limit
/// and a time limit per route.
fn router(state: AppState) -> Router {
    use routes::{cc, files, live, metrics, node, perf};
    let quick = Router::new()
        .route("/", get(routes::page))
        .route("/overview", get(live::overview))
        .route("/assets/uplot.js", get(live::uplot_js))
        .route("/assets/uplot.css", get(live::uplot_css))
        .route("/assets/charts.js", get(live::charts_js))
        .route("/metrics", get(metrics::metrics))
        .route("/healthz", get(node::healthz))
        .route("/api/node", get(node::node))
        .route("/api/peers", get(node::peers))
        .route("/api/peers/known", get(node::known))
        .route(
            "/api/peers/known/{peer}",
            axum::routing::delete(node::forget),
        )
        .route("/api/history", get(node::history))
        .route("/api/cc", get(cc::get_cc).put(cc::put_cc))
        .route(
            "/api/cc/tunables",
            get(cc::get_tunables).put(cc::put_tunables),
        )
        .route("/api/files", get(files::list).post(files::share))
        .route("/api/announcements", get(files::announcements))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            limits::REQUEST_TIMEOUT,
        ));
    let transfers = Router::new()
        .route("/api/perf", post(perf::perf))
        .route("/api/files/fetch", post(files::fetch))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            limits::TRANSFER_TIMEOUT,
        ));
    // Streams run as long as the page is open: no time limit (bounded in number instead).
    let streams = Router::new().route("/api/events", get(live::events));
    quick
        .merge(transfers)
        .merge(streams)
        .layer(RequestBodyLimitLayer::new(limits::BODY_LIMIT_BYTES))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_host,
        ))
        .with_state(state)
}

/// Serves the API on `addr` until `shutdown` completes (see [`limits::serve`]).
pub async fn serve(
    addr: SocketAddr,
    state: AppState,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the HTTP API to {addr}"))?;
    limits::serve(listener, router(state), limits::connection_cap(), shutdown).await;
    Ok(())
}
