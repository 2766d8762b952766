//! `/api/perf`: a throughput test against a peer.

use std::net::SocketAddr;

use axum::{
    Json,
    extract::{ConnectInfo, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};

use crate::http::AppState;

/// `POST /api/perf`'s body (`p2p-node perf` builds it: [`crate::cli::ApiChange::perf`]).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerfRequest {
    /// The remote's PeerId (it must be connected).
    pub peer: String,
    /// Bytes to upload (default 0).
    #[serde(default)]
    pub upload_bytes: u64,
    /// Bytes to download (default 0).
    #[serde(default)]
    pub download_bytes: u64,
}

pub async fn perf(
    State(state): State<AppState>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Json(req): Json<PerfRequest>,
) -> Response {
    let Ok(peer) = req.peer.parse::<libp2p::PeerId>() else {
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
        Ok(report) => {
            tracing::info!(target: "audit", %from, action = "perf", %peer, upload = req.upload_bytes, download = req.download_bytes, result = "ok", "perf run");
            Json(report).into_response()
        }
        Err(e) => {
            tracing::info!(target: "audit", %from, action = "perf", %peer, result = %format!("{e:#}"), "perf failed");
            (StatusCode::BAD_GATEWAY, format!("{e:#}")).into_response()
        }
    }
}
