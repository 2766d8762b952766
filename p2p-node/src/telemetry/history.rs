//! A short time series per peer for the live page: one point per second, the last
//! [`POINTS`] seconds, for at most [`PEERS`] peers (the busiest); a peer's series is dropped
//! when it disconnects. Bounded in memory: PEERS × POINTS points.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::Mutex,
    time::SystemTime,
};

use serde::Serialize;

use super::{PeerConnection, busiest_per_peer};

/// Seconds of history per peer.
pub const POINTS: usize = 180;
/// Peers with a history (the busiest by bytes).
pub const PEERS: usize = 64;

/// One sample of a peer's busiest connection. Counters are cumulative (the page takes their
/// differences between samples).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Point {
    /// Unix time, seconds.
    pub t: u64,
    /// The connection's congestion control.
    pub algorithm: String,
    pub cwnd_segments: Option<u32>,
    pub srtt_seconds: Option<f64>,
    pub min_rtt_seconds: Option<f64>,
    pub pacing_rate_bytes_per_second: Option<u64>,
    pub delivery_rate_bytes_per_second: Option<u64>,
    pub bytes_acked: Option<u64>,
    pub bytes_received: Option<u64>,
    pub retransmitted_bytes: Option<u64>,
    /// Seconds spent in the recovery and loss states since tracking began.
    pub loss_recovery_seconds: Option<f64>,
    pub ca_state: Option<&'static str>,
    /// bbr-p2p's mode, for connections running it.
    pub bbr_mode: Option<&'static str>,
    /// How a bbr-p2p connection started: cold, resumed or retreated (careful resume).
    pub bbr_start: Option<&'static str>,
}

#[derive(Debug, Default)]
pub struct History {
    peers: Mutex<BTreeMap<String, VecDeque<Point>>>,
}

impl History {
    /// Adds a point for each of the busiest peers in `rows`; forgets peers no longer in them.
    pub fn record(&self, rows: &[PeerConnection], now: SystemTime) {
        let t = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut busiest = busiest_per_peer(rows);
        let volume = |c: &PeerConnection| c.tcp.map_or(0, |t| t.bytes_acked + t.bytes_received);
        busiest.sort_by_key(|c| std::cmp::Reverse(volume(c)));
        busiest.truncate(PEERS);
        let mut peers = self.peers.lock().expect("lock poisoned");
        peers.retain(|id, _| busiest.iter().any(|c| &c.peer_id == id));
        for c in busiest {
            let series = peers.entry(c.peer_id.clone()).or_default();
            let tcp = c.tcp.as_ref();
            series.push_back(Point {
                t,
                algorithm: c.algorithm.clone(),
                cwnd_segments: tcp.map(|t| t.cwnd_segments),
                srtt_seconds: tcp.map(|t| t.srtt_seconds),
                min_rtt_seconds: tcp.map(|t| t.min_rtt_seconds),
                pacing_rate_bytes_per_second: tcp.and_then(|t| t.pacing_rate_bytes_per_second),
                delivery_rate_bytes_per_second: tcp.map(|t| t.delivery_rate_bytes_per_second),
                bytes_acked: tcp.map(|t| t.bytes_acked),
                bytes_received: tcp.map(|t| t.bytes_received),
                retransmitted_bytes: tcp.map(|t| t.retransmitted_bytes),
                loss_recovery_seconds: tcp
                    .map(|t| t.ca_state_seconds.recovery + t.ca_state_seconds.loss),
                ca_state: tcp.map(|t| t.ca_state),
                bbr_mode: c.bbr.as_ref().map(|b| b.mode),
                bbr_start: c.bbr.as_ref().map(|b| b.start),
            });
            while series.len() > POINTS {
                series.pop_front();
            }
        }
    }

    /// Every peer's series, oldest point first.
    pub fn snapshot(&self) -> BTreeMap<String, Vec<Point>> {
        self.peers
            .lock()
            .expect("lock poisoned")
            .iter()
            .map(|(id, s)| (id.clone(), s.iter().cloned().collect()))
            .collect()
    }

    /// The newest point of every peer sampled at the newest sample time (peers that left are
    /// already gone), and that time; what the live page's event stream sends each second.
    pub fn latest(&self) -> (u64, BTreeMap<String, Point>) {
        let peers = self.peers.lock().expect("lock poisoned");
        let newest = peers
            .values()
            .filter_map(|s| s.back().map(|p| p.t))
            .max()
            .unwrap_or(0);
        let latest = peers
            .iter()
            .filter_map(|(id, s)| {
                s.back()
                    .filter(|p| p.t == newest)
                    .map(|p| (id.clone(), p.clone()))
            })
            .collect();
        (newest, latest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sockets::Direction;
    use std::time::Duration;

    fn conn(peer: &str, cookie: u64) -> PeerConnection {
        PeerConnection {
            peer_id: peer.into(),
            cookie,
            direction: Direction::Outbound,
            local: String::new(),
            remote: String::new(),
            algorithm: "cubic".into(),
            tcp: None,
            bbr: None,
        }
    }

    #[test]
    fn bounded_per_peer_and_forgets_disconnected_peers() {
        let h = History::default();
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        for i in 0..(POINTS as u64 + 20) {
            h.record(
                &[conn("a", 1), conn("b", 2)],
                start + Duration::from_secs(i),
            );
        }
        let s = h.snapshot();
        assert_eq!(s["a"].len(), POINTS);
        assert_eq!(s["a"].first().unwrap().t, 1_020);
        h.record(&[conn("b", 2)], start + Duration::from_secs(500));
        let s = h.snapshot();
        assert!(!s.contains_key("a"));
        assert_eq!(s.len(), 1);
        let (t, latest) = h.latest();
        assert_eq!(t, 1_500);
        assert_eq!(latest.keys().collect::<Vec<_>>(), ["b"]);
        assert_eq!(latest["b"].algorithm, "cubic");
    }
}
