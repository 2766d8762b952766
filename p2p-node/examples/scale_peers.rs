//! Load for `cargo xtask bench scale`: `scale_peers <multiaddr> <n>` runs `n` libp2p peers (an
//! identity each, one connection to the target, no protocols) through the node's own TCP
//! transport, prints `connected <n>` once all are up, and keeps them until stdin closes.
//! Bounded: at most 2,000 peers, 100 dials in flight, 30 s per dial.

use std::{io::Read as _, time::Duration};

use futures::StreamExt as _;
use libp2p::{Multiaddr, swarm::SwarmEvent};
use p2p_node::{node::transport, sockets::SocketTable};

const MAX_PEERS: usize = 2000;
/// Dials in flight at once: below the node's pending-connection limit (128).
const WAVE: usize = 100;
const DIAL_TIMEOUT: Duration = Duration::from_secs(30);

/// One peer: dials `target` and keeps the connection; returns once it is established.
async fn peer(target: Multiaddr) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let sockets = SocketTable::new();
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_other_transport(
            move |key| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
                Ok(transport::tcp(key, sockets.clone())?)
            },
        )?
        .with_behaviour(|_| libp2p::swarm::dummy::Behaviour)?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build();
    swarm.dial(target)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut tx = Some(tx);
        loop {
            let outcome = match swarm.select_next_some().await {
                SwarmEvent::ConnectionEstablished { .. } => Ok(()),
                SwarmEvent::OutgoingConnectionError { error, .. } => Err(error.to_string()),
                _ => continue,
            };
            if let Some(tx) = tx.take() {
                let _ = tx.send(outcome);
            }
        }
    });
    match tokio::time::timeout(DIAL_TIMEOUT, rx).await {
        Ok(Ok(Ok(()))) => Ok(task),
        other => {
            task.abort();
            anyhow::bail!("a peer could not connect: {other:?}")
        }
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: scale_peers <multiaddr> <n>";
    let target: Multiaddr = args.next().ok_or_else(|| anyhow::anyhow!(usage))?.parse()?;
    let n: usize = args.next().ok_or_else(|| anyhow::anyhow!(usage))?.parse()?;
    anyhow::ensure!(n <= MAX_PEERS, "at most {MAX_PEERS} peers");
    p2p_node::http::limits::raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let peers = runtime.block_on(async {
        let mut peers = Vec::with_capacity(n);
        while peers.len() < n {
            let dials: Vec<_> = (0..WAVE.min(n - peers.len()))
                .map(|_| tokio::spawn(peer(target.clone())))
                .collect();
            for dial in dials {
                peers.push(dial.await??);
            }
        }
        anyhow::Ok(peers)
    })?;
    println!("connected {}", peers.len());
    // Held until the benchmark closes our stdin (or exits).
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    for p in &peers {
        p.abort();
    }
    Ok(())
}
