//! `/api/cc` and `/api/cc/tunables`: the node's congestion control and bbr-p2p's tunables.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Json,
    extract::{ConnectInfo, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};

use super::bad_request;
use crate::{cc, http::AppState};

pub async fn get_cc() -> Response {
    match cc::available() {
        Ok(available) => {
            let unavailable: serde_json::Map<String, serde_json::Value> = cc::unavailable()
                .into_iter()
                .map(|(name, why)| (name.to_owned(), why.into()))
                .collect();
            Json(serde_json::json!({
                "algorithm": cc::current(),
                "available": available,
                "unavailable": unavailable,
            }))
            .into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")).into_response(),
    }
}

/// `PUT /api/cc`'s body (`p2p-node cc set` builds it: [`crate::cli::ApiChange::cc_set`]).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CcRequest {
    /// bbr-p2p or a name in tcp_available_congestion_control.
    pub algorithm: String,
}

/// `PUT /api/cc`'s decoding of its body (its own, for a message that shows the expected shape).
pub(super) fn decode_cc_request(body: &[u8]) -> Result<CcRequest, String> {
    serde_json::from_slice(body).map_err(|e| format!("expected {{\"algorithm\": \"<name>\"}}: {e}"))
}

pub async fn put_cc(
    State(state): State<AppState>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    body: axum::body::Bytes,
) -> Response {
    let req = match decode_cc_request(&body) {
        Ok(req) => req,
        Err(message) => return bad_request(message),
    };
    if let Err(e) = cc::validate(&req.algorithm) {
        tracing::info!(target: "audit", %from, action = "cc set", to_algorithm = %req.algorithm, result = %format!("{e:#}"), "refused");
        return bad_request(format!("{e:#}"));
    }
    let before = cc::current();
    // setsockopt over every socket of the node: off the async workers.
    let (name, slot) = (req.algorithm.clone(), state.bbr.clone());
    let switched = tokio::task::spawn_blocking(move || cc::switch(&name, &slot))
        .await
        .unwrap_or_else(|e| Err(anyhow::anyhow!("the switch task failed: {e}")));
    match switched {
        Ok(report) => {
            tracing::info!(target: "audit", %from, action = "cc set", from_algorithm = %before, to_algorithm = %req.algorithm, switched = report.switched, failed = report.failed.len(), result = "ok", "congestion control changed");
            Json(report).into_response()
        }
        Err(e) => {
            tracing::info!(target: "audit", %from, action = "cc set", to_algorithm = %req.algorithm, result = %format!("{e:#}"), "failed");
            (StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}\n")).into_response()
        }
    }
}

fn bbr_handle(state: &AppState) -> Result<Arc<crate::ebpf::bbr::BbrP2p>, Box<Response>> {
    state.bbr.read().expect("lock poisoned").clone().ok_or_else(|| {
        Box::new((
            StatusCode::CONFLICT,
            "bbr-p2p is not loaded on this node (start it with --cc bbr-p2p, or switch to it with PUT /api/cc)\n",
        )
            .into_response())
    })
}

pub async fn get_tunables(State(state): State<AppState>) -> Response {
    let bbr = match bbr_handle(&state) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    // The tunables' lock may be held by a PUT waiting out a grace period: off the runtime.
    let read = tokio::task::spawn_blocking(move || bbr.config().map_err(|e| e.to_string()))
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    match read {
        Ok(config) => Json(crate::tunables::to_json(&config)).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reading the tunables: {e}\n"),
        )
            .into_response(),
    }
}

pub async fn put_tunables(
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
    // Read, change and write under bbr-p2p's tunables lock (concurrent requests apply one after
    // the other); the write waits for ops still reading the slot it leaves, so off the runtime.
    let update = tokio::task::spawn_blocking(move || {
        bbr.update_config(|current| crate::tunables::apply(current, &changes))
    })
    .await;
    let (new, applied) = match update {
        Ok(Ok(x)) => x,
        Ok(Err(crate::ebpf::bbr::ConfigError::Refused(e))) => {
            tracing::info!(target: "audit", %from, action = "cc tunables", result = %e, "refused");
            return bad_request(e);
        }
        Ok(Err(e)) => {
            tracing::info!(target: "audit", %from, action = "cc tunables", result = %e, "failed");
            return (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response();
        }
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("applying the tunables: {e}\n"),
            )
                .into_response();
        }
    };
    for (name, old, value) in applied {
        tracing::info!(target: "audit", %from, action = "cc tunables", tunable = name, old, new = value, result = "ok", "bbr-p2p tunable changed");
    }
    Json(crate::tunables::to_json(&new)).into_response()
}
