//! Careful resume on the real kernel (issue 13): nodes on a 100 Mbit/s, 40 ms path (tbf on a
//! router namespace, an NFQUEUE delay line of 20 ms each way: `cargo xtask delay-line`).
//!
//! X (bbr-p2p) accepts connections from Y and sends to it; X keeps a record per PeerId. A second
//! connection from the same PeerId starts resumed; a different PeerId at the same address does
//! not; a node in another namespace never sees X's records; after `DELETE` the peer starts cold.

mod common;

use std::{collections::HashSet, path::Path, time::Duration};

use common::{DelayLine, Node, Routed, eventually, kernel_tests_possible, test_data_dir};

/// The cookie of `node`'s newest connection to `peer` (one not in `seen`), once it is listed.
fn new_connection(node: &Node, peer: &str, seen: &mut HashSet<u64>) -> u64 {
    let cookie = eventually(Duration::from_secs(20), || {
        let v: Vec<serde_json::Value> = serde_json::from_str(&node.get("/api/peers")).unwrap();
        v.iter()
            .filter(|c| c["peer_id"] == peer)
            .filter_map(|c| c["cookie"].as_u64())
            .find(|cookie| !seen.contains(cookie))
    })
    .unwrap_or_else(|| panic!("no new connection to {peer}"));
    seen.insert(cookie);
    cookie
}

/// bbr-p2p's start of a connection, once decided (a reason is given, or it is not cold).
fn start(node: &Node, cookie: u64) -> (String, String) {
    eventually(Duration::from_secs(20), || {
        let v: Vec<serde_json::Value> = serde_json::from_str(&node.get("/api/peers")).unwrap();
        let c = v.iter().find(|c| c["cookie"] == cookie)?;
        let start = c["bbr"]["start"].as_str()?.to_owned();
        let reason = c["bbr"]["start_reason"].as_str()?.to_owned();
        (start != "cold" || !reason.is_empty()).then_some((start, reason))
    })
    .unwrap_or_else(|| panic!("bbr-p2p never decided how connection {cookie} starts"))
}

/// `start` of `node`'s next new connection to `peer`. bbr-p2p takes the node's resume entry on
/// the first ACK after the handshake binds the PeerId; an idle connection may see none for a
/// while (identify can finish before the bind, and ping comes every 15 s), so `node` first sends
/// `peer` 256 KiB on it.
/// A connection listed under `peer` can be one that is about to close (a dial that met another
/// identity at a reused address, a duplicate); when the upload finds no live connection, the
/// next new one is taken, up to three times.
fn new_start(node: &Node, peer: &str, seen: &mut HashSet<u64>) -> (String, String) {
    for attempt in 1..=3 {
        let cookie = new_connection(node, peer, seen);
        match try_upload(node, peer, 256 << 10) {
            Ok(()) => return start(node, cookie),
            Err(report) if attempt < 3 => {
                eprintln!("connection {cookie} to {peer} was gone before the upload: {report}");
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(report) => panic!("perf failed on three new connections to {peer}: {report}"),
        }
    }
    unreachable!()
}

fn known(node: &Node, peer: &str) -> bool {
    node.get("/api/peers/known").contains(peer)
}

/// When `node`'s record of `peer` was sampled (Unix ms), if it holds one.
fn record_sampled_at(node: &Node, peer: &str) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(&node.get("/api/peers/known")).unwrap();
    v["records"]
        .as_array()?
        .iter()
        .find(|r| r["peer_id"] == peer)
        .and_then(|r| r["sampled_at_unix_ms"].as_u64())
}

fn now_unix_ms() -> u64 {
    p2p_node::known::now_unix_ms()
}

/// `node`'s next new connection to `peer` starts cold on no record older than `since_ms`: either
/// `node` holds no record of `peer` (`no_record`), or the record that decided is `peer`'s own,
/// sampled after `since_ms` by another connection of the same PeerId that carried only its
/// handshake and closed (when a node restarts under another identity at the same address, the
/// other side's redial of the old identity meets the new one: noise authenticates it, the dial
/// fails on the PeerId, and that connection's tiny, application-limited record makes the jump
/// too small). A record older than `since_ms` (another identity's, or a forgotten one) must never
/// decide: with it the connection would start resumed.
fn assert_starts_cold(node: &Node, peer: &str, seen: &mut HashSet<u64>, since_ms: u64) {
    let (start, reason) = new_start(node, peer, seen);
    assert_eq!(start, "cold", "{peer} starts {start} ({reason})");
    if reason == "no_record" {
        return;
    }
    let sampled = record_sampled_at(node, peer);
    eprintln!(
        "{peer} started cold ({reason}) on a record sampled at {sampled:?} (step from {since_ms})"
    );
    assert_eq!(reason, "jump_too_small", "{peer} starts cold for {reason}");
    assert!(
        sampled.is_some_and(|at| at >= since_ms),
        "{peer}'s start was decided by a record older than this step: {sampled:?} < {since_ms}"
    );
}

/// Y: a node in `net`'s receiver namespace with the identity in `key` and the data dir `dir`
/// (its records survive a restart), dialing `peers`, with `extra` flags.
fn start_y(net: &Routed, key: &str, dir: &Path, peers: &[&Node], extra: &[&str]) -> Node {
    let mut args = vec!["--key", key, "--data-dir", dir.to_str().unwrap()];
    for peer in peers {
        args.extend(["--peer", peer.multiaddr.as_str()]);
    }
    args.extend(extra);
    Node::start(&net.receiver, &net.receiver_addr, &args)
}

fn upload(x: &Node, peer: &str, bytes: u64) {
    if let Err(report) = try_upload(x, peer, bytes) {
        panic!("perf failed: {report}");
    }
}

fn try_upload(x: &Node, peer: &str, bytes: u64) -> Result<(), String> {
    let (status, report) = x.http(
        "POST",
        "/api/perf",
        &format!(r#"{{"peer":"{peer}","upload_bytes":{bytes}}}"#),
    );
    if status != 200 {
        return Err(format!("HTTP {status}: {report}"));
    }
    eprintln!("perf to {peer}: {}", report.trim());
    Ok(())
}

#[test]
fn resumes_per_peer_id_only() {
    if !kernel_tests_possible() {
        return;
    }
    let net = Routed::new("resume", 12, "100mbit", "2000000");
    let _line = DelayLine::start(&net.router, 20);
    let x = Node::start(&net.sender, &net.sender_addr, &["--cc", "bbr-p2p"]);
    // Careful resume is off by default (docs/bench.md): on for this node's bbr-p2p.
    let (status, body) = x.http("PUT", "/api/cc/tunables", r#"{"resume_enabled":1}"#);
    assert_eq!(status, 200, "{body}");
    let dir = test_data_dir("resume-y");
    std::fs::create_dir_all(&dir).unwrap();
    let key = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let (k1, k2) = (key("y1.key"), key("y2.key"));
    let y = |key: &str| start_y(&net, key, &dir, &[&x], &[]);
    let mut seen = HashSet::new();

    // First connection from Y1: no record, cold. 16 MB teach X the path.
    let step = now_unix_ms();
    let y1 = y(&k1);
    let y1_id = y1.peer_id.clone();
    assert_starts_cold(&x, &y1_id, &mut seen, step);
    upload(&x, &y1_id, 16 << 20);
    eventually(Duration::from_secs(12), || known(&x, &y1_id).then_some(()))
        .expect("X kept no record for Y1");
    eprintln!("X's records: {}", x.get("/api/peers/known"));

    // The same PeerId reconnects: the jump waits for data (the handshake is application-
    // limited), then the connection is resumed and the same path validates it.
    drop(y1);
    let y1 = y(&k1);
    assert_eq!(y1.peer_id, y1_id);
    let cookie = new_connection(&x, &y1_id, &mut seen);
    upload(&x, &y1_id, 8 << 20);
    assert_eq!(start(&x, cookie), ("resumed".into(), String::new()));

    // Another node, in another namespace on the same host, connected to the same PeerId: X's
    // record is not its record (the old address-keyed map was host-wide). Careful resume is
    // switched on at W before Y1 connects to it: a connection made while it was off never
    // consults a hint (W dialing Y1 at its start raced the switch and stayed undecided).
    let step = now_unix_ms();
    let w = Node::start(&net.router, "10.12.1.1", &["--cc", "bbr-p2p"]);
    let (status, body) = w.http("PUT", "/api/cc/tunables", r#"{"resume_enabled":1}"#);
    assert_eq!(status, 200, "{body}");
    drop(y1);
    let y1 = start_y(&net, &k1, &dir, &[&x, &w], &[]);
    assert_eq!(y1.peer_id, y1_id);
    new_connection(&x, &y1_id, &mut seen);
    let mut w_seen = HashSet::new();
    assert_starts_cold(&w, &y1_id, &mut w_seen, step);
    drop(w);

    // A different PeerId at the same address: cold.
    drop(y1);
    let step = now_unix_ms();
    let y2 = y(&k2);
    assert_ne!(y2.peer_id, y1_id);
    assert_starts_cold(&x, &y2.peer_id, &mut seen, step);

    // After DELETE, Y1 starts cold.
    let step = now_unix_ms();
    let (status, body) = x.http("DELETE", &format!("/api/peers/known/{y1_id}"), "");
    assert_eq!(status, 200, "{body}");
    assert!(!known(&x, &y1_id), "DELETE left Y1's record");
    drop(y2);
    let _y1 = y(&k1);
    assert_starts_cold(&x, &y1_id, &mut seen, step);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `node`'s connection `cookie`: the kernel's `sk_rcvbuf` (SO_RCVBUF), `tcpi_rcv_space`, and
/// the receive low-water mark.
fn receive_side(node: &Node, cookie: u64) -> (u64, u64, i32) {
    use std::os::fd::AsFd as _;
    let fd = node
        .socket_by_cookie(cookie)
        .unwrap_or_else(|| panic!("no socket {cookie} in the node"));
    let rcvbuf = p2p_node::rcvwarm::rcvbuf(fd.as_fd()).unwrap();
    let rcv_space = p2p_node::sockets::tcp_info(fd.as_fd()).unwrap().rcv_space;
    let lowat = p2p_node::rcvwarm::rcvlowat(fd.as_fd()).unwrap();
    (rcvbuf, u64::from(rcv_space), lowat)
}

/// The receiving side of the warm start: Y receives 8 MB from X over the 40 ms path, restarts
/// (same key and data dir), and its new connection to X starts with a receive buffer larger
/// than the kernel's default and than what the kernel measured per round trip on the first
/// connection; its connection to W, a peer it never received from, starts at the default.
#[test]
fn a_known_peers_connection_starts_with_a_larger_receive_buffer() {
    if !kernel_tests_possible() {
        return;
    }
    let net = Routed::new("rcvwarm", 13, "100mbit", "2000000");
    let _line = DelayLine::start(&net.router, 20);
    let x = Node::start(&net.sender, &net.sender_addr, &[]);
    let w = Node::start(&net.router, "10.13.1.1", &[]);
    let default = common::sh(&[
        "ip",
        "netns",
        "exec",
        &net.receiver,
        "sysctl",
        "-n",
        "net.ipv4.tcp_rmem",
    ]);
    let default: u64 = default.split_whitespace().nth(1).unwrap().parse().unwrap();
    let dir = test_data_dir("rcvwarm-y");
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("y.key").to_str().unwrap().to_owned();
    let y = || start_y(&net, &key, &dir, &[&x, &w], &["--receive-warm"]);
    let mut seen = HashSet::new();

    // First connection: no record, the kernel's default buffer.
    let y1 = y();
    let cookie = new_connection(&y1, &x.peer_id, &mut seen);
    let (cold_rcvbuf, _, _) = receive_side(&y1, cookie);
    assert_eq!(
        cold_rcvbuf, default,
        "a connection without a record starts at tcp_rmem[1]"
    );
    upload(&x, &y1.peer_id, 8 << 20);
    // Y may hold two connections to X (both dial): the one that carried the transfer.
    let v: Vec<serde_json::Value> = serde_json::from_str(&y1.get("/api/peers")).unwrap();
    let measured_rcv_space = v
        .iter()
        .filter(|c| c["peer_id"] == x.peer_id.as_str())
        .filter_map(|c| c["cookie"].as_u64())
        .filter_map(|c| y1.socket_by_cookie(c).map(|_| receive_side(&y1, c).1))
        .max()
        .expect("Y lists its connection to X");
    eprintln!("first connection: rcv_space {measured_rcv_space} after 8 MB");
    assert!(
        measured_rcv_space > default,
        "the transfer grew rcv_space: {measured_rcv_space}"
    );
    // Y records its live connections once more when it shuts down.
    drop(y1);

    let y2 = y();
    let to_x = new_connection(&y2, &x.peer_id, &mut seen);
    let (warm_rcvbuf, _, lowat) = receive_side(&y2, to_x);
    let to_w = new_connection(&y2, &w.peer_id, &mut seen);
    let (w_rcvbuf, _, _) = receive_side(&y2, to_w);
    eprintln!(
        "second connection: sk_rcvbuf to X {warm_rcvbuf}, to W {w_rcvbuf} (default {default})"
    );
    assert!(
        warm_rcvbuf > default && warm_rcvbuf >= measured_rcv_space,
        "the known peer's connection holds at least a round trip of what it carried: \
         sk_rcvbuf {warm_rcvbuf}, rcv_space measured {measured_rcv_space}, default {default}"
    );
    assert_eq!(lowat, 1, "the low-water mark is back at one byte");
    assert_eq!(
        w_rcvbuf, default,
        "a peer never received from starts at the default"
    );

    // Without `--receive-warm` (the default), the same known peer starts at the default.
    drop(y2);
    let y3 = start_y(&net, &key, &dir, &[&x], &[]);
    let cookie = new_connection(&y3, &x.peer_id, &mut seen);
    assert_eq!(receive_side(&y3, cookie).0, default);
    drop(y3);
    let _ = std::fs::remove_dir_all(&dir);
}
