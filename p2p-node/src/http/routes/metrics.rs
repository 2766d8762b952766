//! `/metrics`: Prometheus text or OpenMetrics, by content negotiation. Both are encoded once
//! per snapshot (`telemetry::exports`); a scrape sends the cached bytes.

use axum::{
    body::Body,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};

use crate::{http::AppState, telemetry};

pub async fn metrics(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    use telemetry::prometheus::{PROMETHEUS_TEXT, wants_openmetrics};
    let encoded = state.exports.latest();
    match &encoded.metrics {
        // Content negotiation: OpenMetrics for scrapers that ask for it (Prometheus), the
        // classic text format (what promtool checks) for everyone else.
        Ok((openmetrics, _))
            if wants_openmetrics(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok())) =>
        {
            (
                [(
                    header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )],
                Body::from(openmetrics.clone()),
            )
                .into_response()
        }
        Ok((_, text)) => (
            [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
            Body::from(text.clone()),
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.clone()).into_response(),
    }
}
