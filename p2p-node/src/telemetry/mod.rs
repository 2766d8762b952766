//! Per-peer TCP telemetry: joins the probes' per-socket state to PeerIds (collect), and exports
//! it as Prometheus metrics at scrape time (export).

pub mod prometheus;

use std::{collections::HashMap, sync::Arc};

use std::os::fd::BorrowedFd;

use cc_ebpf_common::{
    SockStats,
    bbr::{BBR_UNIT, BbrState, WarmStart, bw_to_bytes_per_sec},
};
use serde::Serialize;

use crate::{
    ebpf::{Probes, bbr::user_name},
    sockets::SocketTable,
};

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
    /// bbr-p2p's model of the path, for sockets running it.
    pub bbr: Option<BbrView>,
}

/// bbr-p2p's per-socket state, decoded (a BPF congestion control cannot fill `ss -ti`'s
/// algorithm section, so this is where its internals are visible).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct BbrView {
    pub mode: &'static str,
    /// Phase of the PROBE_BW gain cycle (0: probing up at 1.25, 1: draining at 0.75).
    pub cycle_phase: u8,
    pub bandwidth_bytes_per_second: u64,
    pub min_rtt_seconds: f64,
    pub pacing_gain: f64,
    pub cwnd_gain: f64,
    /// Loss bound on inflight (`None`: unbounded).
    pub inflight_hi_segments: Option<u32>,
    pub full_bw_reached: bool,
    /// "cold", "warm" or "fell_back".
    pub warm_start: &'static str,
    pub probe_rtt_count: u32,
    pub loss_bound_count: u32,
    pub rounds: u32,
}

impl BbrView {
    pub fn new(s: &BbrState, mss: u32) -> Self {
        Self {
            mode: s.mode().name(),
            cycle_phase: s.cycle_idx,
            bandwidth_bytes_per_second: bw_to_bytes_per_sec(s.bw(), mss),
            min_rtt_seconds: if s.min_rtt_us == u32::MAX {
                0.0
            } else {
                f64::from(s.min_rtt_us) / 1e6
            },
            pacing_gain: f64::from(s.pacing_gain) / f64::from(BBR_UNIT),
            cwnd_gain: f64::from(s.cwnd_gain) / f64::from(BBR_UNIT),
            inflight_hi_segments: (s.inflight_hi != u32::MAX).then_some(s.inflight_hi),
            full_bw_reached: s.full_bw_reached != 0,
            warm_start: match s.warm_start {
                x if x == WarmStart::Warm as u8 => "warm",
                x if x == WarmStart::FellBack as u8 => "fell_back",
                _ => "cold",
            },
            probe_rtt_count: s.probe_rtt_count,
            loss_bound_count: s.loss_bound_count,
            rounds: s.round_count,
        }
    }
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
pub fn connections(telemetry: &Telemetry) -> Vec<PeerConnection> {
    let probes = telemetry.probes.as_deref();
    let bbr = telemetry.bbr.read().expect("lock poisoned").clone();
    let bbr = bbr.as_deref();
    let mut rows: Vec<PeerConnection> = SocketTable::global()
        .with_each(|s| {
            let tcp = probes
                .and_then(|p| p.stats(s.cookie))
                .as_ref()
                .map(TcpState::from);
            let on_bbr = user_name(&s.algorithm) == crate::ebpf::bbr::NAME;
            let bbr = bbr.filter(|_| on_bbr).and_then(|b| {
                // SAFETY: `with_each` holds the table lock, and a socket unregisters before
                // its fd closes, so `s.fd` is this socket's open fd.
                let fd = unsafe { BorrowedFd::borrow_raw(s.fd) };
                let mss = tcp.map_or(1448, |t| t.mss_bytes.max(1));
                b.state(fd).map(|state| BbrView::new(&state, mss))
            });
            Some(PeerConnection {
                peer_id: s.peer?.to_base58(),
                cookie: s.cookie,
                direction: s.direction,
                local: s.local.to_string(),
                remote: s.remote.to_string(),
                algorithm: user_name(&s.algorithm).to_owned(),
                tcp,
                bbr,
            })
        })
        .into_iter()
        .flatten()
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
    pub bbr: crate::cc::BbrSlot,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("probes", &self.probes.is_some())
            .field(
                "bbr",
                &self.bbr.read().map(|b| b.is_some()).unwrap_or(false),
            )
            .finish()
    }
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
