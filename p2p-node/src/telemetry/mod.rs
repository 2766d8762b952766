//! Per-peer TCP telemetry: joins the probes' per-socket state to PeerIds (collect), and exports
//! it as Prometheus metrics at scrape time (export).

pub mod history;
pub mod prometheus;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use std::os::fd::BorrowedFd;

use cc_ebpf_common::{
    CA_STATES, SockStats,
    bbr::{BBR_UNIT, BbrState, WarmStart, bw_to_bytes_per_sec},
    unpadded,
};
use serde::Serialize;

use crate::{
    ebpf::{Ended, Probes, bbr::user_name, monotonic_ns},
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
    /// `tcpi_total_retrans` (the kernel's count, read on each ACK).
    pub retransmitted_segments: u32,
    /// Bytes retransmitted (counted by the `tcp_retransmit_skb` program).
    pub retransmitted_bytes: u64,
    /// The peer's advertised receive window, bytes.
    pub send_window_bytes: u32,
    /// The receive window this side advertises, bytes.
    pub receive_window_bytes: u32,
    /// Current congestion-avoidance state: open, disorder, cwr, recovery or loss.
    pub ca_state: &'static str,
    pub ca_state_seconds: CaStateSeconds,
    pub ca_transitions: u32,
    /// Time since the node began tracking the socket.
    pub tracked_seconds: f64,
    pub probe_events: u64,
}

/// Time spent in each congestion-avoidance state (`enum tcp_ca_state`).
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Default)]
pub struct CaStateSeconds {
    pub open: f64,
    pub disorder: f64,
    pub cwr: f64,
    pub recovery: f64,
    pub loss: f64,
}

impl CaStateSeconds {
    pub fn from_ns(ns: [u64; 5]) -> Self {
        let s = |i: usize| ns[i] as f64 / 1e9;
        Self {
            open: s(0),
            disorder: s(1),
            cwr: s(2),
            recovery: s(3),
            loss: s(4),
        }
    }

    /// `(state name, seconds)` in [`CA_STATES`] order.
    pub fn by_state(&self) -> [(&'static str, f64); 5] {
        [
            (CA_STATES[0], self.open),
            (CA_STATES[1], self.disorder),
            (CA_STATES[2], self.cwr),
            (CA_STATES[3], self.recovery),
            (CA_STATES[4], self.loss),
        ]
    }

    pub fn total(&self) -> f64 {
        self.by_state().iter().map(|(_, s)| s).sum()
    }
}

/// `snd_ssthresh` before the first loss (`TCP_INFINITE_SSTHRESH`).
const INFINITE_SSTHRESH: u32 = 0x7fff_ffff;

impl TcpState {
    /// Decodes an entry read at `now_ns` (CLOCK_MONOTONIC; the current state's open interval
    /// is counted up to it).
    pub fn new(s: &SockStats, now_ns: u64) -> Self {
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
            retransmitted_bytes: s.retrans_bytes,
            send_window_bytes: s.snd_wnd_bytes,
            receive_window_bytes: s.rcv_wnd_bytes,
            ca_state: CA_STATES
                .get(s.ca_state as usize)
                .copied()
                .unwrap_or("unknown"),
            ca_state_seconds: CaStateSeconds::from_ns(s.ca_state_ns_at(now_ns)),
            ca_transitions: s.ca_transitions,
            tracked_seconds: now_ns.saturating_sub(s.opened_ns) as f64 / 1e9,
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
    let now_ns = monotonic_ns();
    let bbr = telemetry.bbr.read().expect("lock poisoned").clone();
    let bbr = bbr.as_deref();
    let mut rows: Vec<PeerConnection> = SocketTable::global()
        .with_each(|s| {
            let tcp = probes
                .and_then(|p| p.stats(s.cookie))
                .as_ref()
                .map(|s| TcpState::new(s, now_ns));
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

/// The `k` busiest peers (by bytes acked + received on their busiest connection), sorted by
/// PeerId: the peers that get per-peer series.
pub fn top_peers(rows: &[PeerConnection], k: usize) -> Vec<&PeerConnection> {
    let volume = |c: &PeerConnection| c.tcp.map_or(0, |t| t.bytes_acked + t.bytes_received);
    let mut peers = busiest_per_peer(rows);
    peers.sort_by(|a, b| volume(b).cmp(&volume(a)).then(a.peer_id.cmp(&b.peer_id)));
    peers.truncate(k);
    peers.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
    peers
}

/// Default number of peers with per-peer series (`--top-peers`).
pub const DEFAULT_TOP_PEERS: usize = 32;

/// Totals over connections whose tracking ended, per algorithm (from the final records).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClosedTotals {
    pub connections: u64,
    /// Ended without a `tcp_destroy_sock` record within the grace period (read by the node).
    pub expired: u64,
    pub bytes_acked: u64,
    pub bytes_received: u64,
    pub retransmitted_bytes: u64,
    pub retransmitted_segments: u64,
    pub ca_state_ns: [u64; 5],
}

impl ClosedTotals {
    pub fn add(&mut self, s: &SockStats, expired: bool) {
        self.connections += 1;
        self.expired += u64::from(expired);
        self.bytes_acked += s.bytes_acked;
        self.bytes_received += s.bytes_received;
        self.retransmitted_bytes += s.retrans_bytes;
        self.retransmitted_segments += u64::from(s.retrans_segments);
        for (t, x) in self.ca_state_ns.iter_mut().zip(s.ca_state_ns) {
            *t += x;
        }
    }
}

/// Folds ended sockets into per-algorithm totals (pure; unit-tested).
pub fn fold_ended(totals: &mut BTreeMap<String, ClosedTotals>, ended: &[Ended]) {
    for e in ended {
        let name = unpadded(&e.record.algorithm);
        let name = if name.is_empty() {
            "unknown"
        } else {
            user_name(name)
        };
        totals
            .entry(name.to_owned())
            .or_default()
            .add(&e.record.stats, e.expired);
    }
}

/// What the HTTP layer and the exporter share.
#[derive(Clone)]
pub struct Telemetry {
    pub probes: Option<Arc<Probes>>,
    pub bbr: crate::cc::BbrSlot,
    /// Peers with per-peer series (`--top-peers`).
    pub top_peers: usize,
    /// Totals of connections whose tracking ended, per algorithm.
    pub closed: Arc<Mutex<BTreeMap<String, ClosedTotals>>>,
    /// The live page's short per-peer time series.
    pub history: Arc<history::History>,
}

impl Telemetry {
    pub fn new(probes: Option<Arc<Probes>>, bbr: crate::cc::BbrSlot, top_peers: usize) -> Self {
        Self {
            probes,
            bbr,
            top_peers,
            closed: Arc::default(),
            history: Arc::default(),
        }
    }

    /// Drains the probes' final records into the closed-connection totals.
    pub fn collect_ended(&self) {
        if let Some(probes) = &self.probes {
            let ended = probes.take_ended();
            if !ended.is_empty() {
                fold_ended(&mut self.closed.lock().expect("lock poisoned"), &ended);
            }
        }
    }

    /// Collects the final records every second on a background thread (the ring buffer must
    /// not fill between scrapes); the thread ends when the probes are dropped.
    /// Samples every peer once a second into [`Telemetry::history`], for as long as the
    /// process runs.
    pub fn spawn_history(&self) {
        let this = self.clone();
        let _ = std::thread::Builder::new()
            .name("p2pcc-history".into())
            .spawn(move || {
                loop {
                    this.history
                        .record(&connections(&this), std::time::SystemTime::now());
                    std::thread::sleep(Duration::from_secs(1));
                }
            });
    }

    pub fn spawn_collector(&self) {
        let Some(probes) = &self.probes else { return };
        let probes = Arc::downgrade(probes);
        let this = Self {
            probes: None,
            ..self.clone()
        };
        let _ = std::thread::Builder::new()
            .name("p2pcc-final-records".into())
            .spawn(move || {
                while let Some(probes) = probes.upgrade() {
                    let ended = probes.take_ended();
                    drop(probes);
                    if !ended.is_empty() {
                        fold_ended(&mut this.closed.lock().expect("lock poisoned"), &ended);
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            });
    }
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("probes", &self.probes.is_some())
            .field("top_peers", &self.top_peers)
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
        let t = TcpState::new(&s, 0);
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

    #[test]
    fn state_time_counts_the_open_interval() {
        let mut s = SockStats::opened_at(1_000_000_000);
        s.events = 1;
        s.change_ca_state(3, 3_000_000_000);
        let t = TcpState::new(&s, 4_000_000_000);
        assert_eq!(t.ca_state, "recovery");
        assert_eq!(t.ca_state_seconds.open, 2.0);
        assert_eq!(t.ca_state_seconds.recovery, 1.0);
        assert_eq!(t.ca_state_seconds.total(), t.tracked_seconds);
    }

    fn row(peer: &str, cookie: u64, bytes: u64) -> PeerConnection {
        let s = SockStats {
            bytes_acked: bytes,
            events: 1,
            ..Default::default()
        };
        PeerConnection {
            peer_id: peer.into(),
            cookie,
            direction: crate::sockets::Direction::Inbound,
            local: String::new(),
            remote: String::new(),
            algorithm: "cubic".into(),
            tcp: Some(TcpState::new(&s, 0)),
            bbr: None,
        }
    }

    #[test]
    fn top_peers_by_traffic() {
        let rows = vec![
            row("a", 1, 10),
            row("a", 2, 500),
            row("b", 3, 100),
            row("c", 4, 300),
            row("d", 5, 0),
        ];
        let ids = |v: Vec<&PeerConnection>| v.iter().map(|c| c.cookie).collect::<Vec<_>>();
        assert_eq!(ids(top_peers(&rows, 2)), vec![2, 4]);
        assert_eq!(ids(top_peers(&rows, 10)), vec![2, 3, 4, 5]);
        assert!(top_peers(&rows, 0).is_empty());
    }

    #[test]
    fn ended_sockets_fold_by_algorithm() {
        let mut stats = SockStats::opened_at(0);
        stats.retrans_bytes = 1448;
        stats.ca_state_ns = [5, 0, 0, 7, 0];
        let record = |name: &str| cc_ebpf_common::FinalRecord {
            cookie: 1,
            algorithm: cc_ebpf_common::padded::<16>(name),
            stats,
        };
        let mut totals = BTreeMap::new();
        fold_ended(
            &mut totals,
            &[
                Ended {
                    record: record("cubic"),
                    expired: false,
                },
                Ended {
                    record: record("cubic"),
                    expired: true,
                },
                Ended {
                    record: record(""),
                    expired: false,
                },
            ],
        );
        let cubic = &totals["cubic"];
        assert_eq!((cubic.connections, cubic.expired), (2, 1));
        assert_eq!(cubic.retransmitted_bytes, 2896);
        assert_eq!(cubic.ca_state_ns, [10, 0, 0, 14, 0]);
        assert_eq!(totals["unknown"].connections, 1);
    }
}
