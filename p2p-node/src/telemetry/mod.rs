//! Per-peer TCP telemetry: joins the probes' per-socket state to PeerIds (collect), and exports
//! it as Prometheus metrics at scrape time (export).

pub mod prometheus;

use std::{collections::HashMap, sync::Arc};

use cc_ebpf_common::SockStats;
use serde::Serialize;

use crate::{ebpf::Probes, sockets::SocketTable};

/// One connection of the node with its latest TCP state.
#[derive(Clone, Debug, Serialize)]
pub struct PeerConnection {
    pub peer_id: String,
    pub cookie: u64,
    pub direction: crate::sockets::Direction,
    pub local: String,
    pub remote: String,
    pub algorithm: String,
    /// `None` until the probe has seen the socket (or when the probes are not loaded).
    pub tcp: Option<TcpState>,
}

/// Decoded TCP state, in the units the API and metrics use.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct TcpState {
    pub cwnd_segments: u32,
    /// `None` while the socket is still in its initial slow start (ssthresh "infinite").
    pub ssthresh_segments: Option<u32>,
    pub srtt_seconds: f64,
    pub min_rtt_seconds: f64,
    pub mss_bytes: u32,
    /// `None` when unlimited.
    pub pacing_rate_bytes_per_second: Option<u64>,
    pub delivery_rate_bytes_per_second: u64,
    pub bytes_acked: u64,
    pub bytes_received: u64,
    pub packets_in_flight: u32,
    pub retransmitted_segments: u32,
    pub probe_events: u64,
}

/// `snd_ssthresh` before the first loss (`TCP_INFINITE_SSTHRESH`).
const INFINITE_SSTHRESH: u32 = 0x7fff_ffff;

impl From<&SockStats> for TcpState {
    fn from(s: &SockStats) -> Self {
        Self {
            cwnd_segments: s.cwnd_segments,
            ssthresh_segments: (s.ssthresh_segments < INFINITE_SSTHRESH)
                .then_some(s.ssthresh_segments),
            srtt_seconds: f64::from(s.srtt_us) / 1e6,
            min_rtt_seconds: f64::from(s.min_rtt_us) / 1e6,
            mss_bytes: s.mss_bytes,
            pacing_rate_bytes_per_second: (s.pacing_rate_bytes_per_sec != u64::MAX)
                .then_some(s.pacing_rate_bytes_per_sec),
            delivery_rate_bytes_per_second: delivery_rate(s),
            bytes_acked: s.bytes_acked,
            bytes_received: s.bytes_received,
            packets_in_flight: s.packets_out_segments,
            retransmitted_segments: s.total_retrans_segments,
            probe_events: s.events,
        }
    }
}

/// Delivery rate of the latest rate sample, as `tcp_get_info` computes `tcpi_delivery_rate`:
/// delivered segments × MSS per sampling interval.
pub fn delivery_rate(s: &SockStats) -> u64 {
    if s.rate_interval_us == 0 {
        return 0;
    }
    u64::from(s.rate_delivered_segments) * u64::from(s.mss_bytes) * 1_000_000
        / u64::from(s.rate_interval_us)
}

/// Every authenticated connection of the node with its TCP state.
pub fn connections(probes: Option<&Probes>) -> Vec<PeerConnection> {
    let mut rows: Vec<PeerConnection> = SocketTable::global()
        .snapshot()
        .into_iter()
        .filter_map(|s| {
            Some(PeerConnection {
                peer_id: s.peer?.to_base58(),
                cookie: s.cookie,
                direction: s.direction,
                local: s.local.to_string(),
                remote: s.remote.to_string(),
                algorithm: s.algorithm,
                tcp: probes
                    .and_then(|p| p.stats(s.cookie))
                    .as_ref()
                    .map(TcpState::from),
            })
        })
        .collect();
    rows.sort_by(|a, b| a.peer_id.cmp(&b.peer_id).then(a.cookie.cmp(&b.cookie)));
    rows
}

/// One connection per peer: the one that carried the most bytes (a peer has at most
/// `max_per_peer` connections; its busiest one represents it in per-peer series).
pub fn busiest_per_peer(rows: &[PeerConnection]) -> Vec<&PeerConnection> {
    let mut best: HashMap<&str, &PeerConnection> = HashMap::new();
    let volume = |c: &PeerConnection| c.tcp.map_or(0, |t| t.bytes_acked + t.bytes_received);
    for row in rows {
        let slot = best.entry(&row.peer_id).or_insert(row);
        if volume(row) > volume(slot) {
            *slot = row;
        }
    }
    let mut out: Vec<_> = best.into_values().collect();
    out.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
    out
}

/// What the HTTP layer and the exporter share.
#[derive(Clone)]
pub struct Telemetry {
    pub probes: Option<Arc<Probes>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_kernel_values() {
        let s = SockStats {
            cwnd_segments: 10,
            ssthresh_segments: INFINITE_SSTHRESH,
            srtt_us: 1500,
            min_rtt_us: 1000,
            mss_bytes: 1448,
            rate_delivered_segments: 20,
            rate_interval_us: 2000,
            pacing_rate_bytes_per_sec: u64::MAX,
            ..Default::default()
        };
        let t = TcpState::from(&s);
        assert_eq!(t.ssthresh_segments, None);
        assert_eq!(t.pacing_rate_bytes_per_second, None);
        assert!((t.srtt_seconds - 0.0015).abs() < 1e-12);
        // 20 segments × 1448 B in 2 ms = 14.48 MB/s
        assert_eq!(t.delivery_rate_bytes_per_second, 14_480_000);
        let zero_interval = SockStats {
            rate_interval_us: 0,
            ..s
        };
        assert_eq!(delivery_rate(&zero_interval), 0);
    }
}
