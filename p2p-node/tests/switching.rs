//! Choosing and switching the congestion control of a running node: every established socket
//! of that node moves (and no socket of another process), per-peer series continue (only
//! `peer_info` changes), and bad requests change nothing.

mod common;

use std::{os::fd::AsFd as _, time::Duration};

use common::{NetnsPair, Node, eventually, kernel_tests_possible, node_sockets, raw_http_in_ns};
use p2p_node::sockets;

fn algorithms(node: &Node) -> Vec<String> {
    node_sockets(node)
        .iter()
        .map(|(_, fd)| sockets::congestion(fd.as_fd()).unwrap())
        .collect()
}

/// Per-peer value series (`p2pcc_peer_*` but `peer_info`) of `peer`: series → value.
fn peer_series(text: &str, peer: &str) -> std::collections::BTreeMap<String, f64> {
    let needle = format!("peer_id=\"{peer}\"");
    text.lines()
        .filter(|l| l.starts_with("p2pcc_peer_") && !l.starts_with("p2pcc_peer_info"))
        .filter(|l| l.contains(&needle))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[test]
fn switching_moves_every_established_socket_of_the_node_and_no_other() {
    if !kernel_tests_possible() {
        return;
    }
    let net = NetnsPair::new("sw", 4);
    let a = Node::start(&net.a, &net.addr_a, &["--cc", "reno"]);
    let b = Node::start(
        &net.b,
        &net.addr_b,
        &["--peer", &a.multiaddr, "--cc", "cubic"],
    );
    eventually(Duration::from_secs(15), || {
        (!node_sockets(&b).is_empty()).then_some(())
    })
    .expect("B connected to A");
    assert!(
        algorithms(&b).iter().all(|a| a == "cubic"),
        "{:?}",
        algorithms(&b)
    );

    // A transfer runs while B switches.
    let (b_ns, a_id, b_token) = (b.ns.clone(), a.peer_id.clone(), b.token.clone());
    let transfer = std::thread::spawn(move || {
        let body = format!(r#"{{"peer":"{a_id}","upload_bytes":1073741824}}"#);
        common::post_in_ns(&b_ns, "/api/perf", &body, &b_token)
    });
    std::thread::sleep(Duration::from_millis(300));

    // B's per-peer value series for A before any switch (bbr_* series exist only while a
    // connection runs bbr-p2p, so the continuity check is on peer_*).
    let before = eventually(Duration::from_secs(5), || {
        let series = peer_series(&b.get("/metrics"), &a.peer_id);
        series
            .contains_key(&format!(
                "p2pcc_peer_acked_bytes_total{{peer_id=\"{}\"}}",
                a.peer_id
            ))
            .then_some(series)
    })
    .expect("B exports A's per-peer series");
    for (name, kernel) in [("bbr-p2p", "bbr_p2p"), ("cubic", "cubic")] {
        let (status, body) = b.http("PUT", "/api/cc", &format!(r#"{{"algorithm":"{name}"}}"#));
        assert_eq!(status, 200, "{body}");
        let report: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(report["switched"].as_u64().unwrap() >= 1, "{body}");
        assert_eq!(report["failed"].as_array().unwrap().len(), 0, "{body}");
        let now = algorithms(&b);
        assert!(
            !now.is_empty() && now.iter().all(|a| a == kernel),
            "B's sockets after switching to {name}: {now:?}"
        );
        assert!(
            algorithms(&a).iter().all(|a| a == "reno"),
            "A's sockets changed: {:?}",
            algorithms(&a)
        );
        // After the next collection (scrapes encode the collector's snapshot) peer_info
        // carries the new algorithm, and every per-peer value series of before is still there
        // with the same labels: the switch changes values, not series.
        let info = format!(
            "p2pcc_peer_info{{peer_id=\"{}\",algorithm=\"{name}\",direction=\"outbound\"}} 1",
            a.peer_id
        );
        let mut text = String::new();
        let seen = eventually(Duration::from_secs(3), || {
            text = b.get("/metrics");
            text.contains(&info).then_some(())
        });
        assert!(
            seen.is_some(),
            "no {info} in:\n{}",
            text.lines()
                .filter(|l| l.contains("peer_info"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        let now = peer_series(&text, &a.peer_id);
        let ended: Vec<&String> = before.keys().filter(|k| !now.contains_key(*k)).collect();
        assert!(
            ended.is_empty(),
            "series ended by the switch to {name}: {ended:?}"
        );
        let acked = "p2pcc_peer_acked_bytes_total";
        let key = format!("{acked}{{peer_id=\"{}\"}}", a.peer_id);
        assert!(
            now[&key] >= before[&key],
            "{key} went back from {} to {}",
            before[&key],
            now[&key]
        );
        let cc: serde_json::Value = serde_json::from_str(&b.get("/api/cc")).unwrap();
        assert_eq!(cc["algorithm"], name);
    }
    let (status, report) = transfer.join().unwrap();
    assert_eq!(
        status, 200,
        "the transfer failed across the switches: {report}"
    );
}

#[test]
fn bad_names_bad_tunables_and_missing_tokens_change_nothing() {
    if !kernel_tests_possible() {
        return;
    }
    let net = NetnsPair::new("bad", 5);
    let a = Node::start_with_http(&net.a, &net.addr_a, "0.0.0.0:9464", &[]);
    let token = a.token.as_str();

    // Unknown algorithm: 400 with the valid names, nothing changes.
    let (status, body) = a.http_auth("PUT", "/api/cc", r#"{"algorithm":"nope"}"#, Some(token));
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("unknown or unavailable congestion control \"nope\"; available: "),
        "{body}"
    );
    assert!(body.contains("bbr-p2p") && body.contains("cubic"), "{body}");
    let cc: serde_json::Value = serde_json::from_str(&a.get("/api/cc")).unwrap();
    assert_eq!(cc["algorithm"], "bbr-p2p");
    let (status, body) = a.http_auth("PUT", "/api/cc", "not json", Some(token));
    assert_eq!(status, 400, "{body}");

    // Bad tunables: 400 naming the problem, nothing changes.
    let before = a.get("/api/cc/tunables");
    for (change, message) in [
        (
            r#"{"cwnd_gain": 99999}"#,
            "cwnd_gain must be within 1.0..=4.0",
        ),
        (
            r#"{"min_cwnd": "four"}"#,
            "min_cwnd must be a non-negative integer (segments), got \"four\"",
        ),
        (
            r#"{"min_cwnd": 8, "no_such": 1}"#,
            "unknown tunable \"no_such\"",
        ),
        (r#"[1, 2]"#, "expected a JSON object"),
    ] {
        let (status, body) = a.http_auth("PUT", "/api/cc/tunables", change, Some(token));
        assert_eq!(status, 400, "{change}: {body}");
        assert!(body.contains(message), "{change}: {body}");
    }
    assert_eq!(
        a.get("/api/cc/tunables"),
        before,
        "a rejected change altered the tunables"
    );
    // A good one applies and shows.
    let (status, body) = a.http_auth("PUT", "/api/cc/tunables", r#"{"min_cwnd": 6}"#, Some(token));
    assert_eq!(status, 200, "{body}");
    let t: serde_json::Value = serde_json::from_str(&a.get("/api/cc/tunables")).unwrap();
    assert_eq!(t["tunables"]["min_cwnd"], 6);
    // Changes of different tunables at the same time all apply: none writes back what it read
    // before another was applied.
    let changes = [
        ("min_cwnd", 7),
        ("cwnd_gain", 600),
        ("full_loss_cnt", 7),
        ("probe_max_rounds", 50),
    ];
    std::thread::scope(|s| {
        for (name, value) in changes {
            let a = &a;
            s.spawn(move || {
                let (status, body) = a.http_auth(
                    "PUT",
                    "/api/cc/tunables",
                    &format!(r#"{{"{name}": {value}}}"#),
                    Some(token),
                );
                assert_eq!(status, 200, "{name}: {body}");
            });
        }
    });
    let t: serde_json::Value = serde_json::from_str(&a.get("/api/cc/tunables")).unwrap();
    for (name, value) in changes {
        assert_eq!(
            t["tunables"][name], value,
            "{name} lost to a concurrent change: {t}"
        );
    }
    let (status, body) = a.http_auth("PUT", "/api/cc/tunables", r#"{"min_cwnd": 6}"#, Some(token));
    assert_eq!(status, 200, "{body}");

    // Missing or wrong token: 401, nothing changes; reads need none.
    for token in [None, Some("wrong-token-wrong-token-wrong")] {
        let (status, body) = a.http_auth("PUT", "/api/cc", r#"{"algorithm":"cubic"}"#, token);
        assert_eq!(status, 401, "{body}");
        assert!(body.contains("Authorization: Bearer <token>"), "{body}");
    }
    let cc: serde_json::Value = serde_json::from_str(&a.get("/api/cc")).unwrap();
    assert_eq!(cc["algorithm"], "bbr-p2p");
    let (status, _) = a.http("GET", "/metrics", "");
    assert_eq!(status, 200);

    // The token the node made for itself on first start: 64 hex digits in a file only its
    // owner can read, next to nothing else in its data dir.
    use std::os::unix::fs::MetadataExt as _;
    let token_file = a.data_dir.join("http-token");
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().mode() & 0o777,
        0o600
    );
    assert_eq!(token.len(), 64, "{token}");
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()), "{token}");
    assert!(
        a.stderr.lock().unwrap().contains(&format!(
            "HTTP API token (for changes) in {}",
            token_file.display()
        )),
        "the node did not say where its token is"
    );
    // The scheme is case-insensitive (RFC 9110); a rebinding page's Host is refused even with
    // the token; nothing changed on the way.
    let raw = |host: &str, scheme: &str| {
        let body = r#"{"min_cwnd": 5}"#;
        let request = format!(
            "PUT /api/cc/tunables HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nAuthorization: {scheme} {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        raw_http_in_ns(&net.a, 9464, &request, Duration::from_secs(10)).unwrap()
    };
    let (status, body) = raw("evil.example:9464", "Bearer");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("does not name this node"), "{body}");
    let t: serde_json::Value = serde_json::from_str(&a.get("/api/cc/tunables")).unwrap();
    assert_eq!(
        t["tunables"]["min_cwnd"], 6,
        "a refused request changed a tunable"
    );
    let (status, body) = raw("localhost:9464", "bEARER");
    assert_eq!(status, 200, "{body}");
    let t: serde_json::Value = serde_json::from_str(&a.get("/api/cc/tunables")).unwrap();
    assert_eq!(t["tunables"]["min_cwnd"], 5);
    let (status, body) = raw("127.0.0.1:9464", "Basic");
    assert_eq!(status, 401, "{body}");
}
