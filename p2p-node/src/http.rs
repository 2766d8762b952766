//! HTTP: `/metrics` (OpenMetrics text), the JSON API and the live page.

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context as _;
use axum::{
    Json, Router,
    extract::{ConnectInfo, Request, State},
    http::{Method, StatusCode, header},
    middleware::{self, Next},
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
    /// When set, every request that changes something (any method but GET/HEAD) must carry
    /// `Authorization: Bearer <token>`. Required when the API binds beyond loopback.
    pub token: Option<Arc<String>>,
}

pub async fn serve(addr: SocketAddr, state: AppState) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/", get(page))
        .route("/metrics", get(metrics))
        .route("/api/node", get(node))
        .route("/api/peers", get(peers))
        .route("/api/history", get(history))
        .route("/api/cc", get(get_cc).put(put_cc))
        .route("/api/cc/tunables", get(get_tunables).put(put_tunables))
        .route("/api/perf", post(perf))
        .route("/api/files", get(files_list).post(files_share))
        .route("/api/files/fetch", post(files_fetch))
        .route("/api/announcements", get(announcements))
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the HTTP API to {addr}"))?;
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
    .context("HTTP server")
}

/// Reads stay open (`/metrics` is scraped without credentials); changes need the token.
async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let read_only = matches!(*request.method(), Method::GET | Method::HEAD);
    if let (false, Some(token)) = (read_only, &state.token) {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|given| tokens_equal(given, token)) {
            return (
                StatusCode::UNAUTHORIZED,
                "this request changes the node: send `Authorization: Bearer <token>` (the node's --http-token)\n",
            )
                .into_response();
        }
    }
    next.run(request).await
}

/// Compares tokens in time independent of where they differ (and of their lengths): equal
/// SHA-256 digests, compared with a fold over all bytes.
fn tokens_equal(given: &str, expected: &str) -> bool {
    use sha2::{Digest, Sha256};
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// The text of an HTTP/1.1 request to a node's API (JSON body, `Connection: close`), with
/// `Authorization: Bearer <token>` when given: what `p2p-node`'s subcommands and the tests send.
pub fn request_text(
    method: &str,
    host: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> String {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The status code and body (de-chunked) of a raw HTTP/1.1 response; `None` if malformed.
pub fn parse_response(raw: &str) -> Option<(u16, String)> {
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Some((status, body.to_owned()));
    }
    let mut rest = body;
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).ok()?;
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    Some((status, out))
}

fn bad_request(message: impl std::fmt::Display) -> Response {
    (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_responses() {
        let plain = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        assert_eq!(parse_response(plain), Some((200, "ok".into())));
        let chunked = "HTTP/1.1 400 Bad Request\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked), Some((400, "abcde".into())));
        assert_eq!(parse_response("garbage"), None);
        assert!(
            request_text("PUT", "h", "/api/cc", Some("t"), "{}")
                .contains("Authorization: Bearer t\r\n")
        );
    }

    #[test]
    fn tokens_compare_equal_only_when_equal() {
        assert!(tokens_equal(
            "a-token-of-some-length",
            "a-token-of-some-length"
        ));
        assert!(!tokens_equal(
            "a-token-of-some-length",
            "a-token-of-some-lengtH"
        ));
        assert!(!tokens_equal("short", "a-token-of-some-length"));
    }
}

#[derive(serde::Deserialize)]
struct CcRequest {
    algorithm: String,
}

async fn put_cc(
    State(state): State<AppState>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    body: axum::body::Bytes,
) -> Response {
    let req: CcRequest = match serde_json::from_slice(&body) {
        Ok(req) => req,
        Err(e) => return bad_request(format!("expected {{\"algorithm\": \"<name>\"}}: {e}")),
    };
    if let Err(e) = cc::validate(&req.algorithm) {
        return bad_request(format!("{e:#}"));
    }
    let before = cc::current();
    match cc::switch(&req.algorithm, &state.telemetry.bbr) {
        Ok(report) => {
            tracing::info!(target: "audit", %from, from_algorithm = %before, to_algorithm = %req.algorithm, switched = report.switched, failed = report.failed.len(), "congestion control changed");
            Json(report).into_response()
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}\n")).into_response(),
    }
}

fn bbr_handle(state: &AppState) -> Result<Arc<crate::ebpf::bbr::BbrP2p>, Box<Response>> {
    state.telemetry.bbr.read().expect("lock poisoned").clone().ok_or_else(|| {
        Box::new((
            StatusCode::CONFLICT,
            "bbr-p2p is not loaded on this node (start it with --cc bbr-p2p, or switch to it with PUT /api/cc)\n",
        )
            .into_response())
    })
}

async fn get_tunables(State(state): State<AppState>) -> Response {
    let bbr = match bbr_handle(&state) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    match bbr.config() {
        Ok(config) => Json(crate::tunables::to_json(&config)).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reading the tunables: {e}\n"),
        )
            .into_response(),
    }
}

async fn put_tunables(
    State(state): State<AppState>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    body: axum::body::Bytes,
) -> Response {
    let bbr = match bbr_handle(&state) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let changes: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return bad_request(format!("expected a JSON object of tunables: {e}")),
    };
    let current = match bbr.config() {
        Ok(c) => c,
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reading the tunables: {e}\n"),
            )
                .into_response();
        }
    };
    let (new, applied) = match crate::tunables::apply(&current, &changes) {
        Ok(x) => x,
        Err(e) => return bad_request(e),
    };
    if let Err(e) = bbr.set_config(new) {
        return bad_request(e);
    }
    for (name, old, value) in applied {
        tracing::info!(target: "audit", %from, tunable = name, old, new = value, "bbr-p2p tunable changed");
    }
    Json(crate::tunables::to_json(&new)).into_response()
}

async fn metrics(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    use telemetry::prometheus::{PROMETHEUS_TEXT, to_prometheus_text, wants_openmetrics};
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        // Content negotiation: OpenMetrics for scrapers that ask for it (Prometheus), the
        // classic text format (what promtool checks) for everyone else.
        Ok(()) if wants_openmetrics(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok())) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Ok(()) => (
            [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
            to_prometheus_text(&body),
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
    Json(telemetry::connections(&state.telemetry))
}

async fn history(
    State(state): State<AppState>,
) -> Json<std::collections::BTreeMap<String, Vec<telemetry::history::Point>>> {
    Json(state.telemetry.history.snapshot())
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

#[derive(serde::Deserialize)]
struct ShareRequest {
    /// Path of the file on the node's host (the CLI sends an absolute one).
    path: std::path::PathBuf,
}

#[derive(serde::Deserialize)]
struct FetchRequest {
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

async fn files_list(State(state): State<AppState>) -> Response {
    match state.client.shared_files().await {
        Ok(files) => Json(files).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}")).into_response(),
    }
}

async fn files_share(State(state): State<AppState>, Json(req): Json<ShareRequest>) -> Response {
    match state.client.share(&req.path).await {
        Ok(report) => Json(report).into_response(),
        Err(e) => file_error(e),
    }
}

async fn files_fetch(State(state): State<AppState>, Json(req): Json<FetchRequest>) -> Response {
    let id = match req.id.parse() {
        Ok(id) => id,
        Err(e) => return file_error(e),
    };
    match state.client.fetch(id, &req.out).await {
        Ok(report) => Json(report).into_response(),
        Err(e) => file_error(e),
    }
}

async fn announcements(State(state): State<AppState>) -> Response {
    match state.client.announcements().await {
        Ok(recent) => Json(recent).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}")).into_response(),
    }
}
