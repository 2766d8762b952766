//! `/api/files`, `/api/files/fetch`, `/api/announcements`: file sharing.

use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};

use crate::http::AppState;

#[derive(serde::Deserialize)]
pub struct ShareRequest {
    /// Path of the file on the node's host (the CLI sends an absolute one).
    path: std::path::PathBuf,
}

#[derive(serde::Deserialize)]
pub struct FetchRequest {
    id: String,
    /// Where the node writes the file; refused if it exists.
    out: std::path::PathBuf,
}

fn file_error(e: crate::node::files::FileError) -> Response {
    use crate::node::files::FileError as E;
    let status = match &e {
        E::BadId(_) | E::Read { .. } | E::TooLarge { .. } => StatusCode::BAD_REQUEST,
        E::NoProviders(_) => StatusCode::NOT_FOUND,
        E::OutputExists(_) => StatusCode::CONFLICT,
        E::StoreFull | E::Busy | E::NodeStopped => StatusCode::SERVICE_UNAVAILABLE,
        E::Write { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        E::Manifest(_) | E::NoManifest { .. } | E::ChunkFailed { .. } | E::Request { .. } => {
            StatusCode::BAD_GATEWAY
        }
    };
    (status, format!("{:#}", anyhow::Error::from(e))).into_response()
}

pub async fn list(State(state): State<AppState>) -> Response {
    match state.client.shared_files().await {
        Ok(files) => Json(files).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}")).into_response(),
    }
}

pub async fn share(State(state): State<AppState>, Json(req): Json<ShareRequest>) -> Response {
    match state.client.share(&req.path).await {
        Ok(report) => Json(report).into_response(),
        Err(e) => file_error(e),
    }
}

pub async fn fetch(State(state): State<AppState>, Json(req): Json<FetchRequest>) -> Response {
    let id = match req.id.parse() {
        Ok(id) => id,
        Err(e) => return file_error(e),
    };
    match state.client.fetch(id, &req.out).await {
        Ok(report) => Json(report).into_response(),
        Err(e) => file_error(e),
    }
}

pub async fn announcements(State(state): State<AppState>) -> Response {
    match state.client.announcements().await {
        Ok(recent) => Json(recent).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}")).into_response(),
    }
}
