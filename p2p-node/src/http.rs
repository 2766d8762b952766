//! HTTP: `/metrics` (OpenMetrics text), the JSON API and the live page.

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context as _;
use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::{get, post},
};
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::{cc, node::Client, telemetry};

#[derive(Clone)]
pub struct AppState {
    pub client: Client,
    pub registry: Arc<Registry>,
    pub telemetry: telemetry::Telemetry,
    /// One sentence: "loaded", or why the eBPF part is not running.
    pub ebpf_status: Arc<String>,
}

pub async fn serve(addr: SocketAddr, state: AppState) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/", get(page))
        .route("/metrics", get(metrics))
        .route("/api/node", get(node))
        .route("/api/peers", get(peers))
        .route("/api/cc", get(get_cc))
        .route("/api/perf", post(perf))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the HTTP API to {addr}"))?;
    axum::serve(listener, app).await.context("HTTP server")
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics: {e}"),
        )
            .into_response(),
    }
}

#[derive(Serialize)]
struct NodeResponse {
    #[serde(flatten)]
    info: crate::node::NodeInfo,
    algorithm: String,
    ebpf: EbpfStatus,
}

#[derive(Serialize)]
struct EbpfStatus {
    status: String,
    programs: Vec<ProgramStatus>,
}

#[derive(Serialize)]
struct ProgramStatus {
    name: &'static str,
    id: u32,
}

async fn node(State(state): State<AppState>) -> Response {
    match state.client.info().await {
        Ok(info) => Json(NodeResponse {
            info,
            algorithm: cc::current(),
            ebpf: EbpfStatus {
                status: state.ebpf_status.to_string(),
                programs: state
                    .telemetry
                    .probes
                    .as_ref()
                    .map(|p| {
                        p.programs()
                            .iter()
                            .map(|&(name, id)| ProgramStatus { name, id })
                            .collect()
                    })
                    .unwrap_or_default(),
            },
        })
        .into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}")).into_response(),
    }
}

async fn peers(State(state): State<AppState>) -> Json<Vec<telemetry::PeerConnection>> {
    Json(telemetry::connections(state.telemetry.probes.as_deref()))
}

async fn get_cc() -> Response {
    match cc::available() {
        Ok(available) => {
            Json(serde_json::json!({ "algorithm": cc::current(), "available": available }))
                .into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")).into_response(),
    }
}

#[derive(serde::Deserialize)]
struct PerfRequest {
    peer: String,
    #[serde(default)]
    upload_bytes: u64,
    #[serde(default)]
    download_bytes: u64,
}

async fn perf(State(state): State<AppState>, Json(req): Json<PerfRequest>) -> Response {
    let Ok(peer) = req.peer.parse() else {
        return (
            StatusCode::BAD_REQUEST,
            format!("{:?} is not a PeerId", req.peer),
        )
            .into_response();
    };
    match state
        .client
        .perf(peer, req.upload_bytes, req.download_bytes)
        .await
    {
        Ok(report) => Json(report).into_response(),
        Err(e) => (StatusCode::BAD_GATEWAY, format!("{e:#}")).into_response(),
    }
}

async fn page() -> Html<&'static str> {
    Html(include_str!("page.html"))
}
