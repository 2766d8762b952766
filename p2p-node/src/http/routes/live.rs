//! The live pages: the node's page, the testbed overview, their scripts (uPlot embedded at
//! build time, the shared chart code) and the event stream that feeds them.

use axum::{
    extract::State,
    http::{StatusCode, header},
    response::{Html, IntoResponse, Response},
};
use serde::Serialize;

use crate::{cc, http::AppState, telemetry};

/// The testbed's overview (every node of a `cargo xtask run`, through its proxy; on a lone node,
/// just this one).
pub async fn overview() -> Html<&'static str> {
    Html(include_str!("../overview.html"))
}

/// uPlot, embedded at build time (build.rs); a script that explains how to install it when it
/// was missing.
pub async fn uplot_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!(concat!(env!("OUT_DIR"), "/uplot.js")),
    )
}

pub async fn uplot_css() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!(concat!(env!("OUT_DIR"), "/uplot.css")),
    )
}

/// The chart code both pages share.
pub async fn charts_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../charts.js"),
    )
}

/// Event streams open at once; more are refused (each holds a connection and a timer).
const MAX_EVENT_STREAMS: usize = 32;
static EVENT_STREAMS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Counts an open event stream; the count drops with it.
struct StreamSlot;

impl StreamSlot {
    fn take() -> Option<Self> {
        use std::sync::atomic::Ordering;
        EVENT_STREAMS
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < MAX_EVENT_STREAMS).then_some(n + 1)
            })
            .ok()
            .map(|_| Self)
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        EVENT_STREAMS.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// One `sample` event per second for the live pages (Server-Sent Events): a thin encoder of
/// the 1 Hz history sampler's newest points (telemetry/history.rs) and the node's algorithm.
pub async fn events(State(state): State<AppState>) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let Some(slot) = StreamSlot::take() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("at most {MAX_EVENT_STREAMS} event streams at once\n"),
        )
            .into_response();
    };
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let stream =
        futures::stream::unfold((state, tick, slot), |(state, mut tick, slot)| async move {
            tick.tick().await;
            let (t, peers) = state.telemetry.history.latest();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let sample = Sample {
                t: if peers.is_empty() { now } else { t },
                algorithm: cc::current(),
                peers,
            };
            let event = Event::default().event("sample").json_data(&sample);
            Some((event, (state, tick, slot)))
        });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// What one `sample` event carries.
#[derive(Serialize)]
struct Sample {
    /// Unix time of the sample, seconds.
    t: u64,
    /// The node's algorithm (a change is a switch: the pages mark it on every chart).
    algorithm: String,
    peers: std::collections::BTreeMap<String, telemetry::history::Point>,
}
