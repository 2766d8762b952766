//! `/metrics`: Prometheus text or OpenMetrics, by content negotiation.

use axum::{
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};

use crate::{http::AppState, telemetry};

pub async fn metrics(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    use telemetry::prometheus::{PROMETHEUS_TEXT, to_prometheus_text, wants_openmetrics};
    // Encoding walks every series (and the collectors read kernel maps): off the async workers.
    let registry = state.registry.clone();
    let encoded = tokio::task::spawn_blocking(move || {
        let mut body = String::new();
        prometheus_client::encoding::text::encode(&mut body, &registry).map(|()| body)
    })
    .await
    .unwrap_or(Err(std::fmt::Error));
    match encoded {
        // Content negotiation: OpenMetrics for scrapers that ask for it (Prometheus), the
        // classic text format (what promtool checks) for everyone else.
        Ok(body)
            if wants_openmetrics(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok())) =>
        {
            (
                [(
                    header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )],
                body,
            )
                .into_response()
        }
        Ok(body) => (
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
