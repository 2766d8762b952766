//! The credential check: reads stay open, changes need the token.

use axum::{
    extract::{Request, State},
    http::{Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::AppState;

/// Reads stay open (`/metrics` is scraped without credentials); changes need the token.
pub(super) async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
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

#[cfg(test)]
mod tests {
    use super::*;

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
