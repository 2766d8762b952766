//! `/metrics`: Prometheus text or OpenMetrics, by content negotiation.

use axum::{
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};

use crate::{http::AppState, telemetry};

pub async fn metrics(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
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
