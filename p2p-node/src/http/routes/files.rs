//! `/api/files`, `/api/files/fetch`, `/api/announcements`: file sharing, confined to the share
//! and download directories (see `http::confine`). Responses carry file names, never local paths.

use std::{net::SocketAddr, path::Path};

use axum::{
    Json,
    extract::{ConnectInfo, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};

use crate::{http::AppState, node::files::FileError};

/// `POST /api/files`'s body (`p2p-node share` builds it: [`crate::cli::ApiChange::share`]).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareRequest {
    /// A file under one of the node's share directories: absolute, or relative to one.
    pub path: std::path::PathBuf,
}

/// `POST /api/files/fetch`'s body (`p2p-node fetch` builds it: [`crate::cli::ApiChange::fetch`]).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchRequest {
    /// The file id: 64 hex digits.
    pub id: String,
    /// File name in the node's download directory; refused if it exists.
    pub out: String,
}

/// The last component of a path, for messages (no local path leaves the node).
fn name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn file_error(e: FileError) -> Response {
    use FileError as E;
    let status = match &e {
        E::BadId(_) | E::Read { .. } | E::TooLarge { .. } => StatusCode::BAD_REQUEST,
        E::NoProviders(_) => StatusCode::NOT_FOUND,
        E::OutputExists(_) | E::PartExists(_) | E::FetchRunning(_) => StatusCode::CONFLICT,
        E::StoreFull | E::Busy | E::NodeStopped => StatusCode::SERVICE_UNAVAILABLE,
        E::Write { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        E::Manifest(_) | E::NoManifest { .. } | E::ChunkFailed { .. } | E::Request { .. } => {
            StatusCode::BAD_GATEWAY
        }
    };
    let message = match &e {
        E::Read { path, source } => format!("reading {}: {source}", name(path)),
        E::TooLarge { path, size } => format!(
            "{} has {size} bytes; files are limited to {} bytes",
            name(path),
            crate::node::files::MAX_FILE_BYTES
        ),
        E::OutputExists(path) => format!(
            "{} already exists in the download directory; refusing to overwrite it",
            name(path)
        ),
        E::PartExists(path) => format!(
            "{} (a partial download's name) in the download directory is a symlink or not a private regular file of this node; refusing to open or follow it",
            name(path)
        ),
        E::FetchRunning(path) => format!("a fetch into {} is already running", name(path)),
        E::Write { path, source } => format!("writing {}: {source}", name(path)),
        _ => format!("{:#}", anyhow::Error::from(e)),
    };
    (status, message + "\n").into_response()
}

fn refused(rule: super::super::confine::PathRule) -> Response {
    super::bad_request(rule)
}

pub async fn list(State(state): State<AppState>) -> Response {
    match state.client.shared_files().await {
        Ok(files) => Json(files).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}")).into_response(),
    }
}

pub async fn share(
    State(state): State<AppState>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Json(req): Json<ShareRequest>,
) -> Response {
    let policy = state.files.clone();
    let requested = req.path.clone();
    let checked = tokio::task::spawn_blocking(move || policy.open_shared(&requested)).await;
    let opened = match checked {
        Ok(Ok(opened)) => opened,
        Ok(Err(rule)) => {
            tracing::info!(target: "audit", %from, action = "share", result = %rule, "refused");
            return refused(rule);
        }
        Err(_) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, "share check failed\n").into_response();
        }
    };
    match state.client.share(opened.file, opened.name).await {
        Ok(report) => {
            tracing::info!(target: "audit", %from, action = "share", id = %report.id, name = %report.name, result = "ok", "file shared");
            Json(report).into_response()
        }
        Err(e) => {
            tracing::info!(target: "audit", %from, action = "share", result = %e, "failed");
            file_error(e)
        }
    }
}

pub async fn fetch(
    State(state): State<AppState>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Json(req): Json<FetchRequest>,
) -> Response {
    let id = match req.id.parse() {
        Ok(id) => id,
        Err(e) => return file_error(e),
    };
    let out = match state.files.download_path(&req.out) {
        Ok(out) => out,
        Err(rule) => {
            tracing::info!(target: "audit", %from, action = "fetch", %id, result = %rule, "refused");
            return refused(rule);
        }
    };
    match state.client.fetch(id, &out).await {
        Ok(report) => {
            tracing::info!(target: "audit", %from, action = "fetch", %id, name = %req.out, result = "ok", "file fetched");
            Json(report).into_response()
        }
        Err(e) => {
            tracing::info!(target: "audit", %from, action = "fetch", %id, name = %req.out, result = %e, "failed");
            file_error(e)
        }
    }
}

pub async fn announcements(State(state): State<AppState>) -> Response {
    match state.client.announcements().await {
        Ok(recent) => Json(recent).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}")).into_response(),
    }
}
