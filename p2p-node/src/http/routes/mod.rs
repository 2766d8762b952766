//! The API's handlers, one file per area.

pub mod cc;
pub mod files;
pub mod live;
pub mod metrics;
pub mod node;
pub mod perf;

use axum::{
    http::StatusCode,
    response::{Html, IntoResponse, Response},
};

pub async fn page() -> Html<&'static str> {
    Html(include_str!("../page.html"))
}

pub fn bad_request(message: impl std::fmt::Display) -> Response {
    (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response()
}
