//! `/api/node`, `/api/peers`, `/api/history`, `/healthz`: what the node is and what it sees.

use axum::{
    Json,
    extract::State,
    http::StatusCode,
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
    match state.client.info().await {
        Ok(info) => Json(NodeResponse {
            info,
            algorithm: cc::current(),
            ebpf: EbpfStatus {
                status: state.ebpf_status.to_string(),
                programs: state
                    .telemetry
                    .snapshot()
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

/// Every authenticated connection, as of the latest snapshot.
pub async fn peers(State(state): State<AppState>) -> Response {
    Json(&state.telemetry.snapshot().connections).into_response()
}

pub async fn history(
    State(state): State<AppState>,
) -> Json<std::collections::BTreeMap<String, Vec<telemetry::history::Point>>> {
    Json(state.telemetry.history.snapshot())
}
