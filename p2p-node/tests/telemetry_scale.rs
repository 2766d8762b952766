//! Telemetry at scale. 1,000 concurrent peer connections to one node: every socket's PeerId in
//! the node's `/api/peers` is the identity of the peer on the other end of that very socket, and
//! no socket stays unbound. 1,000 connect/disconnect cycles (10,000 with `--ignored`): no map
//! entry, per-peer series or unbound socket is left, every connection ended with a final record,
//! RSS grows ≤ 10%.
//!
//! Node A runs in namespace `a`. The test process runs 1,000 small swarms (one identity each,
//! only a connection, no protocols) on a runtime whose threads live in namespace `b`, so all
//! 1,000 PeerIds come from one address — what a NAT or a load balancer would show the node,
//! and the case the old address-based join could get wrong. Each client swarm uses the node's
//! own transport with a socket table of its own, so the test knows each client's local port and
//! can check A's socket-level join against it.

mod common;

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use common::{NetnsPair, Node, enter_netns, eventually, kernel_tests_possible, metric_value};
use futures::StreamExt as _;
use libp2p::{Multiaddr, PeerId, swarm::SwarmEvent};
use p2p_node::{heap::TRIM_INTERVAL, node::transport, sockets::SocketTable};

const PEERS: usize = 1000;
/// Dials in flight at once: below the node's pending-connection limit (128).
const WAVE: usize = 100;

/// One client: its identity and the local address of its (only) socket to A. Dropping it
/// drops its swarm, which closes the connection.
struct Client {
    peer: PeerId,
    local: SocketAddr,
    swarm: tokio::task::JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.swarm.abort();
    }
}

/// Starts a client swarm that dials `target` and keeps the connection; reports the client's
/// identity and socket once the connection is established (or the error).
async fn client(target: Multiaddr) -> Result<Client, String> {
    let sockets = SocketTable::new();
    let table = sockets.clone();
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_other_transport(
            move |key| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
                Ok(transport::tcp(key, table.clone())?)
            },
        )
        .map_err(|e| e.to_string())?
        .with_behaviour(|_| libp2p::swarm::dummy::Behaviour)
        .map_err(|e| e.to_string())?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(600)))
        .build();
    let peer = *swarm.local_peer_id();
    swarm.dial(target).map_err(|e| e.to_string())?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut tx = Some(tx);
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::ConnectionEstablished { .. } => {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(Ok(()));
                    }
                }
                SwarmEvent::OutgoingConnectionError { error, .. } => {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(Err(error.to_string()));
                    }
                }
                _ => {}
            }
        }
    });
    let established = rx.await.map_err(|e| e.to_string());
    if let Err(e) | Ok(Err(e)) = established {
        task.abort();
        return Err(e);
    }
    let socket = sockets.snapshot();
    match socket.as_slice() {
        [s] => Ok(Client {
            peer,
            local: s.local,
            swarm: task,
        }),
        other => {
            task.abort();
            Err(format!("client {peer} has {} sockets", other.len()))
        }
    }
}

/// A runtime whose threads live in namespace `ns` (the sockets they create are in it).
fn runtime_in(ns: &str) -> tokio::runtime::Runtime {
    let ns = ns.to_owned();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(move || enter_netns(&ns).expect("entering the clients' namespace"))
        .build()
        .unwrap()
}

/// Connects `n` clients to `target`, [`WAVE`] at a time.
async fn connect(target: &Multiaddr, n: usize) -> Vec<Client> {
    connect_in_waves(target, n, WAVE).await
}

/// Connects `n` clients to `target`, `wave` at a time.
async fn connect_in_waves(target: &Multiaddr, n: usize, wave_size: usize) -> Vec<Client> {
    let mut clients = Vec::with_capacity(n);
    for wave in 0..n.div_ceil(wave_size) {
        let dials: Vec<_> = (0..wave_size.min(n - wave * wave_size))
            .map(|_| tokio::spawn(client(target.clone())))
            .collect();
        for dial in dials {
            match dial.await.unwrap() {
                Ok(c) => clients.push(c),
                Err(e) => panic!("a client could not connect to A: {e}"),
            }
        }
    }
    clients
}

#[test]
fn a_thousand_peers_behind_one_address_are_each_bound_to_their_own_socket() {
    if !kernel_tests_possible() {
        return;
    }
    let net = NetnsPair::new("scale", 7);
    let a = Node::start(
        &net.a,
        &net.addr_a,
        &["--idle-timeout-secs", "600", "--cc", "cubic"],
    );
    let target: Multiaddr = a.multiaddr.parse().unwrap();
    let runtime = runtime_in(&net.b);
    let started = std::time::Instant::now();
    let clients = runtime.block_on(connect(&target, PEERS));
    eprintln!(
        "{} clients connected in {:.1} s",
        clients.len(),
        started.elapsed().as_secs_f64()
    );
    let all_from_one_address = clients
        .iter()
        .all(|c| c.local.ip() == clients[0].local.ip());
    assert!(all_from_one_address, "the clients share one address");

    // A's view, once its collector has seen every connection bound.
    let expected: HashMap<String, String> = clients
        .iter()
        .map(|c| (c.local.to_string(), c.peer.to_base58()))
        .collect();
    let mut last = Vec::new();
    let listed = eventually(Duration::from_secs(30), || {
        let body = a.get("/api/peers");
        last = serde_json::from_str::<Vec<serde_json::Value>>(&body).unwrap();
        (last.len() >= PEERS).then_some(())
    });
    assert!(
        listed.is_some(),
        "A lists {} connections, expected {PEERS}",
        last.len()
    );
    let mut matched = 0;
    let mut wrong = Vec::new();
    for conn in &last {
        let remote = conn["remote"].as_str().unwrap();
        let peer = conn["peer_id"].as_str().unwrap();
        match expected.get(remote) {
            Some(p) if p == peer => matched += 1,
            Some(p) => wrong.push(format!("{remote}: A says {peer}, the socket's peer is {p}")),
            None => wrong.push(format!("{remote}: not a client socket ({peer})")),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong joins: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
    assert_eq!(matched, PEERS, "every client socket is listed once");

    // No socket is left without its PeerId, now or past the handshake timeout.
    let text = a.get("/metrics");
    let value = |series: &str| -> f64 {
        metric_value(&text, series).unwrap_or_else(|| panic!("no {series} in /metrics"))
    };
    assert_eq!(value("p2pcc_sockets_unbound"), 0.0);
    assert_eq!(value("p2pcc_sockets_unbound_past_handshake_timeout"), 0.0);
    assert_eq!(
        value("p2pcc_connections{algorithm=\"cubic\"}"),
        PEERS as f64
    );
    let rss = value("process_resident_memory_bytes");
    eprintln!(
        "A at {PEERS} peers: RSS {:.1} MB, collection {:.1} ms",
        rss / 1e6,
        value("p2pcc_telemetry_collect_duration_seconds") * 1e3
    );

    // What a scrape and an API call cost at 1,000 peers (recorded, not asserted: this is a debug
    // build on shared cores; `cargo xtask bench scale` is where the targets belong).
    let p99 = |path: &str| {
        let mut ms: Vec<f64> = (0..100)
            .map(|_| {
                let t = std::time::Instant::now();
                a.get(path);
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        ms.sort_by(f64::total_cmp);
        ms[98]
    };
    eprintln!(
        "A at {PEERS} peers, 100 requests each: /metrics p99 {:.1} ms, /api/peers p99 {:.1} ms",
        p99("/metrics"),
        p99("/api/peers")
    );
    drop(clients);
    drop(runtime);
}

/// Connect/disconnect cycles of the full churn test, [`CHURN_WAVE`] connections at a time.
const CYCLES: usize = 10_000;
/// Connections per churn batch. Each noise handshake of a debug build takes CPU time: with 100 at
/// once on a loaded 2-core machine (load 10) one went past the 20 s handshake timeout.
const CHURN_WAVE: usize = 50;
/// Cycles of the CI-sized churn test.
const CI_CYCLES: usize = 1_000;

#[test]
#[ignore = "~90 s in a debug build (64 s of churn at load 4-8, docs/bench.md), more than the CI \
            budget gives one test; run with --ignored; `churn_leaves_nothing_behind` runs the same \
            checks over 1,000 cycles in CI"]
fn ten_thousand_connect_disconnect_cycles_leave_nothing_behind() {
    churn(CYCLES, "churn", 8);
}

/// The churn test at CI size: the same checks over 1,000 cycles.
#[test]
fn churn_leaves_nothing_behind() {
    churn(CI_CYCLES, "churnci", 9);
}

/// `cycles` connect/disconnect cycles, [`CHURN_WAVE`] at a time, after a warm-up of [`WAVE`]
/// connections: no map entry, per-peer series or unbound socket is left, every connection ended
/// with a final record, RSS grows ≤ 10%.
///
/// RSS is compared after the node's heap trim ran (`p2p_node::heap`: at most once per
/// `TRIM_INTERVAL` after connections closed): the baseline one interval after the warm-up, the
/// final value within two intervals after the churn. Without the trim glibc keeps the churn's
/// freed heap resident (measured: +6.4% after 1,000 cycles, +19% after 10,000, and 33% below the
/// warm-up once trimmed), which is the allocator's retention, not state the node holds.
fn churn(cycles: usize, name: &str, subnet: u8) {
    if !kernel_tests_possible() {
        return;
    }
    let net = NetnsPair::new(name, subnet);
    let a = Node::start(&net.a, &net.addr_a, &["--cc", "cubic"]);
    let target: Multiaddr = a.multiaddr.parse().unwrap();
    let runtime = runtime_in(&net.b);
    let metric = |series: &str| metric_value(&a.get("/metrics"), series);
    let settled = |what: &str| {
        let mut last = String::new();
        eventually(Duration::from_secs(60), || {
            let text = a.get("/metrics");
            let entries = metric_value(&text, "p2pcc_ebpf_map_entries{map=\"SOCK_STATS\"}");
            let closing = metric_value(&text, "p2pcc_ebpf_sockets_closing");
            let unbound = metric_value(&text, "p2pcc_sockets_unbound");
            let peer_series = text
                .lines()
                .filter(|l| l.starts_with("p2pcc_peer_"))
                .count();
            let connections: f64 = text
                .lines()
                .filter(|l| l.starts_with("p2pcc_connections{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            last = format!(
                "SOCK_STATS entries {entries:?}, closing {closing:?}, unbound {unbound:?}, \
                 per-peer series {peer_series}, connections {connections}"
            );
            (entries == Some(0.0)
                && closing == Some(0.0)
                && unbound == Some(0.0)
                && peer_series == 0
                && connections == 0.0)
                .then_some(())
        })
        .unwrap_or_else(|| panic!("{what}: state left behind: {last}"));
    };

    // One wave first, so the baseline includes what the first connections allocate.
    drop(runtime.block_on(connect_in_waves(&target, WAVE, CHURN_WAVE)));
    settled("after the warm-up");
    std::thread::sleep(TRIM_INTERVAL + Duration::from_secs(2));
    let baseline = metric("process_resident_memory_bytes").expect("RSS");
    let started = std::time::Instant::now();
    for _ in 0..cycles / CHURN_WAVE {
        drop(runtime.block_on(connect_in_waves(&target, CHURN_WAVE, CHURN_WAVE)));
    }
    eprintln!(
        "{cycles} cycles in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    settled("after the churn");
    let trimmed = eventually(2 * TRIM_INTERVAL + Duration::from_secs(5), || {
        metric("process_resident_memory_bytes").filter(|rss| *rss <= baseline * 1.10)
    });
    let text = a.get("/metrics");
    let rss = trimmed
        .unwrap_or_else(|| metric_value(&text, "process_resident_memory_bytes").expect("RSS"));
    let closed: f64 = text
        .lines()
        .filter(|l| l.starts_with("p2pcc_closed_connections_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    eprintln!(
        "A's RSS {:.1} MB after the warm-up, {:.1} MB after the churn ({:+.1}%); {closed} closed",
        baseline / 1e6,
        rss / 1e6,
        (rss / baseline - 1.0) * 100.0
    );
    if let Some(trimmed) = rss_after_malloc_trim(a.child.id()) {
        eprintln!(
            "A's RSS after malloc_trim(0) (gdb): {:.1} MB ({:+.1}% over the warm-up)",
            trimmed / 1e6,
            (trimmed / baseline - 1.0) * 100.0
        );
    }
    assert_eq!(
        closed,
        (cycles + WAVE) as f64,
        "every connection's tracking ended with a final record"
    );
    assert!(
        rss <= baseline * 1.10,
        "RSS grew from {baseline} to {rss} bytes (more than 10%)"
    );
    drop(runtime);
}

/// Diagnostic only: RSS of `pid` after it ran glibc's `malloc_trim(0)` (called through gdb, when
/// installed), to tell memory the allocator keeps from memory still in use.
fn rss_after_malloc_trim(pid: u32) -> Option<f64> {
    let status = std::process::Command::new("gdb")
        .args([
            "-p",
            &pid.to_string(),
            "-batch",
            "-ex",
            "call (int) malloc_trim(0)",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?;
    if !status.success() {
        return None;
    }
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: f64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096.0)
}
