//! `/api/node`, `/api/peers`, `/api/history`, `/healthz`: what the node is and what it sees.

use std::net::SocketAddr;

use axum::{
    Json,
    extract::{ConnectInfo, Path, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use crate::{cc, http::AppState, telemetry};

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
    /// Each probe, algorithm and kernel facility: available, or why not and what is lost.
    features: Vec<crate::ebpf::features::Feature>,
}

#[derive(Serialize)]
struct ProgramStatus {
    name: &'static str,
    id: u32,
}

/// 200 when the node's event loop answers within a second, 503 otherwise.
pub async fn healthz(State(state): State<AppState>) -> Response {
    let answer = tokio::time::timeout(std::time::Duration::from_secs(1), state.client.info()).await;
    match answer {
        Ok(Ok(_)) => "ok\n".into_response(),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}\n")).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "event loop busy\n").into_response(),
    }
}

pub async fn node(State(state): State<AppState>) -> Response {
    let snapshot = state.telemetry.snapshot();
    match state.client.info().await {
        Ok(info) => Json(NodeResponse {
            info,
            algorithm: cc::current(),
            ebpf: EbpfStatus {
                status: state.ebpf_status.to_string(),
                features: snapshot.features.to_vec(),
                programs: snapshot
                    .probes
                    .as_ref()
                    .map(|p| {
                        p.programs
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

/// Every authenticated connection, as of the latest snapshot (encoded once per snapshot).
pub async fn peers(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        axum::body::Body::from(state.exports.latest().peers_json.clone()),
    )
        .into_response()
}

/// The path measurements the node keeps per peer (bounded: [`crate::known::MAX_LISTED`]).
pub async fn known(State(state): State<AppState>) -> Json<crate::known::KnownPeers> {
    Json(state.known.list(crate::known::now_unix_ms()))
}

/// Forgets one peer's measurements: its next connection starts cold.
pub async fn forget(
    State(state): State<AppState>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Path(peer): Path<String>,
) -> Response {
    let Ok(id) = peer.parse::<libp2p::PeerId>() else {
        tracing::info!(target: "audit", %from, action = "known forget", result = "not a PeerId", "refused");
        return super::bad_request("not a PeerId");
    };
    if state.known.forget(&id) {
        tracing::info!(target: "audit", %from, action = "known forget", peer = %id, result = "ok", "record forgotten");
        if let Err(e) = state.known.save() {
            tracing::warn!("saving known peers: {e:#}");
        }
        (StatusCode::OK, "forgotten\n").into_response()
    } else {
        (StatusCode::NOT_FOUND, "no record for this peer\n").into_response()
    }
}

pub async fn history(
    State(state): State<AppState>,
) -> Json<std::collections::BTreeMap<String, Vec<telemetry::history::Point>>> {
    Json(state.telemetry.history.snapshot())
}
