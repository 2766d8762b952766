//! The exporters' output, encoded once per snapshot. Each time the collector publishes a
//! snapshot, a thread of its own (`p2pcc-encoder`, off the async workers) encodes `/metrics`
//! (OpenMetrics and the classic Prometheus text, the whole registry: ours and libp2p's
//! families) and `/api/peers` (JSON), and publishes the bytes on a `watch` channel. A request
//! then costs a reference-count increment: no encoding, no copy, no lock held across anything.
//!
//! Scrapes and API calls between two snapshots get byte-identical answers. libp2p's families
//! are sampled when the snapshot is encoded, so they too are at most one collection interval
//! ([`INTERVAL`](super::collector::INTERVAL)) old.

use std::sync::Arc;

use axum::body::Bytes;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use super::{Telemetry, prometheus::to_prometheus_text, snapshot::Snapshot};

/// One snapshot's answers, ready to send.
#[derive(Debug)]
pub struct Encoded {
    /// The snapshot's [`Snapshot::sequence`].
    pub sequence: u64,
    /// `(OpenMetrics, Prometheus text 0.0.4)`, or why the registry could not be encoded.
    pub metrics: Result<(Bytes, Bytes), String>,
    /// `/api/peers`: every authenticated connection.
    pub peers_json: Bytes,
}

impl Encoded {
    /// Encodes `snapshot` and the registry (whose `p2pcc_` collector encodes the latest
    /// snapshot: the same one unless a newer one was published meanwhile).
    pub fn new(snapshot: &Snapshot, registry: &Registry) -> Self {
        let mut openmetrics = String::new();
        let metrics = prometheus_client::encoding::text::encode(&mut openmetrics, registry)
            .map(|()| {
                let text = to_prometheus_text(&openmetrics);
                (Bytes::from(openmetrics), Bytes::from(text))
            })
            .map_err(|e| format!("encoding metrics: {e}"));
        let peers_json = serde_json::to_vec(&snapshot.connections)
            .map_or_else(|e| Bytes::from(format!("[] /* {e} */")), Bytes::from);
        Self {
            sequence: snapshot.sequence,
            metrics,
            peers_json,
        }
    }
}

/// The handlers' side: the latest encoding.
#[derive(Clone, Debug)]
pub struct Exports {
    latest: watch::Receiver<Arc<Encoded>>,
}

impl Exports {
    /// Encodes the current snapshot now (so the first request has an answer), then every new
    /// one on the encoder thread, which ends with the snapshot channel or with the last
    /// [`Exports`].
    pub fn start(telemetry: &Telemetry, registry: Arc<Registry>) -> Self {
        let mut updates = telemetry.subscribe();
        let first = Encoded::new(&updates.borrow_and_update().clone(), &registry);
        let (tx, latest) = watch::channel(Arc::new(first));
        let spawned = std::thread::Builder::new()
            .name("p2pcc-encoder".into())
            .spawn(move || {
                while !tx.is_closed() && futures::executor::block_on(updates.changed()).is_ok() {
                    let snapshot = updates.borrow_and_update().clone();
                    tx.send_replace(Arc::new(Encoded::new(&snapshot, &registry)));
                }
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start the telemetry encoder thread: {e}");
        }
        Self { latest }
    }

    /// The latest encoding (no syscall, no encoding).
    pub fn latest(&self) -> Arc<Encoded> {
        self.latest.borrow().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::{
        PeerConnection,
        prometheus::{PREFIX, TcpCollector},
    };

    fn snapshot(sequence: u64, peers: &[&str]) -> Arc<Snapshot> {
        Arc::new(Snapshot {
            sequence,
            connections: peers
                .iter()
                .enumerate()
                .map(|(i, p)| PeerConnection {
                    peer_id: (*p).to_owned(),
                    cookie: i as u64,
                    direction: crate::sockets::Direction::Inbound,
                    local: "127.0.0.1:1".into(),
                    remote: "127.0.0.1:2".into(),
                    algorithm: "cubic".into(),
                    tcp: None,
                    bbr: None,
                })
                .collect(),
            ..Default::default()
        })
    }

    #[test]
    fn each_snapshot_is_encoded_once_and_served_as_is() {
        let (tx, rx) = watch::channel(snapshot(1, &["a"]));
        let telemetry = Telemetry::from_receiver(rx);
        let mut registry = Registry::default();
        registry
            .sub_registry_with_prefix(PREFIX)
            .register_collector(Box::new(TcpCollector::new(telemetry.clone())));
        let exports = Exports::start(&telemetry, Arc::new(registry));

        let first = exports.latest();
        assert_eq!(first.sequence, 1);
        let peers: serde_json::Value = serde_json::from_slice(&first.peers_json).unwrap();
        assert_eq!(peers[0]["peer_id"], "a");
        let (om, text) = first.metrics.as_ref().unwrap();
        assert!(om.ends_with(b"# EOF\n"));
        let text = std::str::from_utf8(text).unwrap();
        assert!(
            text.contains("\np2pcc_connections{algorithm=\"cubic\"} 1\n"),
            "{text}"
        );
        // Between snapshots: the same bytes (the same allocation, not a re-encoding).
        assert_eq!(
            exports.latest().peers_json.as_ptr(),
            first.peers_json.as_ptr()
        );

        tx.send_replace(snapshot(2, &["a", "b"]));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while exports.latest().sequence != 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "snapshot 2 not encoded"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let second = exports.latest();
        let peers: serde_json::Value = serde_json::from_slice(&second.peers_json).unwrap();
        assert_eq!(peers.as_array().unwrap().len(), 2);
        let text = std::str::from_utf8(&second.metrics.as_ref().unwrap().1).unwrap();
        assert!(
            text.contains("\np2pcc_connections{algorithm=\"cubic\"} 2\n"),
            "{text}"
        );
    }
}
