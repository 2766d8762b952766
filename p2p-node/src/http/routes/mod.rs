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

/// Fuzz target (see `crate::fuzz`): the JSON bodies of the mutating routes, decoded as the
/// handlers decode them and then checked as they check them.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use crate::fuzz::for_a_while;

    fn bodies() -> impl Strategy<Value = Vec<u8>> {
        let text = prop_oneof![
            ".{0,16}",
            "[0-9a-f]{64}",
            "12D3KooW[1-9A-HJ-NP-Za-km-z]{44}",
            "(cubic|reno|bbr|bbr-p2p)",
        ];
        let number = prop_oneof![
            any::<u64>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            text.clone().prop_map(serde_json::Value::from),
            Just(serde_json::Value::Null),
        ];
        let field = proptest::sample::select(vec![
            "path",
            "id",
            "out",
            "peer",
            "upload_bytes",
            "download_bytes",
            "algorithm",
            "x",
        ]);
        let value = prop_oneof![text.prop_map(serde_json::Value::from), number];
        let object = proptest::collection::btree_map(field, value, 0..5).prop_map(|m| {
            serde_json::to_vec(
                &m.into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect::<serde_json::Map<_, _>>(),
            )
            .unwrap()
        });
        prop_oneof![3 => object, 1 => proptest::collection::vec(any::<u8>(), 0..64)]
    }

    #[test]
    fn api_json_bodies() {
        let dir = std::env::temp_dir().join(format!("p2pcc-fuzz-routes-{}", std::process::id()));
        let policy = crate::http::confine::FilePolicy::new(&[], &dir).unwrap();
        for_a_while("API JSON bodies", bodies(), |body| {
            if let Ok(req) = serde_json::from_slice::<super::files::ShareRequest>(&body) {
                // No share directory configured: every path is refused, none opened.
                prop_assert!(policy.open_shared(&req.path).is_err());
            }
            if let Ok(req) = serde_json::from_slice::<super::files::FetchRequest>(&body) {
                let _ = req.id.parse::<crate::node::files::FileId>();
                if let Ok(out) = policy.download_path(&req.out) {
                    prop_assert_eq!(out.parent(), Some(policy.download_dir()));
                }
            }
            if let Ok(req) = serde_json::from_slice::<super::perf::PerfRequest>(&body) {
                let _ = req.peer.parse::<libp2p::PeerId>();
                let _ = (req.upload_bytes, req.download_bytes);
            }
            if let Ok(req) = serde_json::from_slice::<super::cc::CcRequest>(&body) {
                // A kernel algorithm passes without probing; any other name would make
                // `validate` probe bbr-p2p by loading it (kernel state: not in a unit test).
                let kernel =
                    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_congestion_control")
                        .unwrap_or_default();
                if kernel.split_whitespace().any(|n| n == req.algorithm) {
                    prop_assert!(crate::cc::validate(&req.algorithm).is_ok());
                }
            }
            Ok(())
        });
        let _ = std::fs::remove_dir_all(&dir);
    }
}
