//! Known peers on the real kernel: a node running bbr-p2p records what bbr-p2p measured on its
//! connection to an authenticated PeerId, lists it on `/api/peers/known`, keeps it across a
//! restart (data dir), and forgets it on an authenticated `DELETE`.

mod common;

use std::time::Duration;

use common::{NetnsPair, Node, eventually, kernel_tests_possible, test_data_dir};

fn known_record(node: &Node, peer: &str) -> Option<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(&node.get("/api/peers/known")).unwrap();
    v["records"]
        .as_array()?
        .iter()
        .find(|r| r["peer_id"] == peer)
        .cloned()
}

#[test]
fn records_are_per_peer_id_persisted_and_forgotten_with_the_token() {
    if !kernel_tests_possible() {
        return;
    }
    let net = NetnsPair::new("known", 11);
    let a = Node::start(&net.a, &net.addr_a, &[]);
    let dir = test_data_dir("known-b");
    let dir_arg = dir.to_str().unwrap();
    let b_args = [
        "--peer",
        &a.multiaddr,
        "--cc",
        "bbr-p2p",
        "--data-dir",
        dir_arg,
    ];
    let b = Node::start(&net.b, &net.addr_b, &b_args);
    eventually(Duration::from_secs(15), || {
        b.get("/api/peers").contains(&a.peer_id).then_some(())
    })
    .expect("B never connected to A");
    // 32 MiB from B to A.
    let (status, report) = b.http(
        "POST",
        "/api/perf",
        &format!(r#"{{"peer":"{}","upload_bytes":33554432}}"#, a.peer_id),
    );
    assert_eq!(status, 200, "perf failed: {report}");

    // Within one observation interval the record appears, with what bbr-p2p measured: a
    // bandwidth and a min RTT from the kernel, not zero, sampled recently.
    let record = eventually(Duration::from_secs(12), || known_record(&b, &a.peer_id))
        .expect("no record for A after a 32 MiB transfer");
    eprintln!("record: {record}");
    assert!(
        record["bw_bytes_per_sec"].as_u64().unwrap() > 1_000_000,
        "{record}"
    );
    let min_rtt = record["min_rtt_us"].as_u64().unwrap();
    assert!((1..100_000).contains(&min_rtt), "{record}");
    assert!(record["age_seconds"].as_f64().unwrap() < 15.0, "{record}");
    assert_eq!(record["unusable"], "", "{record}");

    // The record survives a restart of B (saved in its data dir).
    let file = dir.join("known-peers.json");
    eventually(Duration::from_secs(12), || {
        std::fs::read_to_string(&file)
            .ok()?
            .contains(&a.peer_id)
            .then_some(())
    })
    .expect("the record never reached the data dir");
    drop(b);
    let b = Node::start(&net.b, &net.addr_b, &["--data-dir", dir_arg]);
    let again = known_record(&b, &a.peer_id).expect("record lost across the restart");
    assert_eq!(again["bw_bytes_per_sec"], record["bw_bytes_per_sec"]);

    // Forgetting needs the token; a wrong PeerId is a 400, an unknown one a 404.
    let path = format!("/api/peers/known/{}", a.peer_id);
    let (status, _) = b.http_auth("DELETE", &path, "", None);
    assert_eq!(status, 401);
    assert!(
        known_record(&b, &a.peer_id).is_some(),
        "refused DELETE changed something"
    );
    let (status, body) = b.http("DELETE", "/api/peers/known/not-a-peer", "");
    assert_eq!((status, body.trim()), (400, "not a PeerId"));
    let (status, _) = b.http("DELETE", &path, "");
    assert_eq!(status, 200);
    assert!(known_record(&b, &a.peer_id).is_none());
    let (status, _) = b.http("DELETE", &path, "");
    assert_eq!(status, 404);
    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
}
