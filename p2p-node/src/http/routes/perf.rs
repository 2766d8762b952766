//! `/api/perf`: a throughput test against a peer.

use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};

use crate::http::AppState;

#[derive(serde::Deserialize)]
pub struct PerfRequest {
    peer: String,
    #[serde(default)]
    upload_bytes: u64,
    #[serde(default)]
    download_bytes: u64,
}

pub async fn perf(State(state): State<AppState>, Json(req): Json<PerfRequest>) -> Response {
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
