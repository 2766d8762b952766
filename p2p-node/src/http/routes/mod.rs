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

/// The CLI's requests (`cli::ApiChange`) decode in the handlers' own extractors, sent with the
/// content type of the CLI's request text, and carry what the subcommand was given; a field
/// the server does not know is refused by name, not defaulted.
#[cfg(test)]
mod cli_requests {
    use axum::{Json, body::Body, extract::FromRequest as _};
    use serde::de::DeserializeOwned;

    use super::{cc, files::FetchRequest, files::ShareRequest, perf::PerfRequest};
    use crate::cli::ApiChange;

    /// Runs `Json<T>`, the extractor of the perf and files handlers, on `body` as the CLI
    /// sends it.
    fn extract<T: DeserializeOwned>(change: &ApiChange, body: &str) -> Result<T, String> {
        let text = crate::http::request_text(change.method, "node", change.path, None, body);
        let content_type = text
            .lines()
            .find_map(|line| line.strip_prefix("Content-Type: "))
            .expect("the CLI sends a content type");
        let request = axum::http::Request::builder()
            .method(change.method)
            .uri(change.path)
            .header("content-type", content_type)
            .body(Body::from(body.to_owned()))
            .unwrap();
        futures::executor::block_on(Json::<T>::from_request(request, &()))
            .map(|Json(req)| req)
            .map_err(|e| e.body_text())
    }

    #[test]
    fn cli_requests_decode_in_the_servers_extractors() {
        let peer = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";
        let change = ApiChange::perf(peer, 5_000_000, 7);
        assert_eq!((change.method, change.path), ("POST", "/api/perf"));
        let perf: PerfRequest = extract(&change, &change.body).unwrap();
        assert_eq!(
            (perf.peer.as_str(), perf.upload_bytes, perf.download_bytes),
            (peer, 5_000_000, 7)
        );

        let change = ApiChange::share("/srv/share/a b.bin".into());
        assert_eq!((change.method, change.path), ("POST", "/api/files"));
        let share: ShareRequest = extract(&change, &change.body).unwrap();
        assert_eq!(share.path, std::path::Path::new("/srv/share/a b.bin"));

        let id = "ab".repeat(32);
        let change = ApiChange::fetch(&id, "copy.bin");
        assert_eq!((change.method, change.path), ("POST", "/api/files/fetch"));
        let fetch: FetchRequest = extract(&change, &change.body).unwrap();
        assert_eq!(
            (fetch.id.as_str(), fetch.out.as_str()),
            (id.as_str(), "copy.bin")
        );

        let change = ApiChange::cc_set("cubic");
        assert_eq!((change.method, change.path), ("PUT", "/api/cc"));
        let set = cc::decode_cc_request(change.body.as_bytes()).ok().unwrap();
        assert_eq!(set.algorithm, "cubic");

        // A client that spells a field differently (not built from these types) hears which.
        let change = ApiChange::perf(peer, 1, 0);
        let renamed = change.body.replace("upload_bytes", "upload");
        let refused = extract::<PerfRequest>(&change, &renamed).unwrap_err();
        assert!(refused.contains("unknown field `upload`"), "{refused}");
        assert!(cc::decode_cc_request(br#"{"algorithm":"cubic","algo":1}"#).is_err());
    }
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
