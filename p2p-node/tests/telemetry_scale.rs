//! 1,000 concurrent peer connections to one node: every socket's PeerId in the node's
//! `/api/peers` is the identity of the peer on the other end of that very socket, and no socket
//! stays unbound.
//!
//! Node A runs in namespace `a`. The test process runs 1,000 small swarms (one identity each,
//! only a connection, no protocols) on a runtime whose threads live in namespace `b`, so all
//! 1,000 PeerIds come from one address — what a NAT or a load balancer would show the node,
//! and the case the old address-based join could get wrong. Each client swarm uses the node's
//! own transport with a socket table of its own, so the test knows each client's local port and
//! can check A's socket-level join against it.

mod common;

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use common::{NetnsPair, Node, enter_netns, eventually, kernel_tests_possible};
use futures::StreamExt as _;
use libp2p::{Multiaddr, PeerId, swarm::SwarmEvent};
use p2p_node::{node::transport, sockets::SocketTable};

const PEERS: usize = 1000;
/// Dials in flight at once: below the node's pending-connection limit (128).
const WAVE: usize = 100;

/// One client: its identity and the local address of its (only) socket to A.
struct Client {
    peer: PeerId,
    local: SocketAddr,
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
    tokio::spawn(async move {
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
                SwarmEvent::ConnectionClosed { cause, .. } => {
                    eprintln!("client {peer}: connection closed: {cause:?}");
                }
                _ => {}
            }
        }
    });
    rx.await.map_err(|e| e.to_string())??;
    let socket = sockets.snapshot();
    match socket.as_slice() {
        [s] => Ok(Client {
            peer,
            local: s.local,
        }),
        other => Err(format!("client {peer} has {} sockets", other.len())),
    }
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
    let ns_b = net.b.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(move || enter_netns(&ns_b).expect("entering namespace b"))
        .build()
        .unwrap();

    let started = std::time::Instant::now();
    let clients: Vec<Client> = runtime.block_on(async {
        let mut clients = Vec::with_capacity(PEERS);
        for wave in 0..PEERS.div_ceil(WAVE) {
            let dials: Vec<_> = (0..WAVE.min(PEERS - wave * WAVE))
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
    });
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
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in /metrics"))
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
    drop(runtime);
    drop(a);
    drop(Arc::new(net));
}
