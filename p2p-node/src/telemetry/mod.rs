//! Per-peer TCP telemetry. The flow is one way: kernel → [`collector`] (the only reader, once per
//! second) → [`snapshot::Snapshot`] (immutable, shared through a `watch` channel) → exporters
//! ([`prometheus`] for `/metrics`, the HTTP API's `/api/peers`, [`history`], the live page's
//! stream). `/metrics` and `/api/peers` are encoded once per snapshot ([`exports`]) and served
//! as cached bytes. Exporters never touch the kernel; telemetry holds no control state.

pub mod collector;
pub mod exports;
pub mod history;
pub mod prometheus;
pub mod snapshot;
pub mod topk;

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Duration, SystemTime},
};

use cc_ebpf_common::{
    CA_STATES, SockStats,
    bbr::{BBR_UNIT, BbrState, Mode, bw_to_bytes_per_sec},
    resume::{Reason, Start},
    unpadded,
};
use serde::{Deserialize, Deserializer, Serialize};

use tokio::sync::watch;

use crate::ebpf::{Ended, bbr::user_name};

// The wire types of `/api/peers`: the server encodes them ([`exports`]) and `p2p-node peers`
// decodes them (`crate::tables`), so a field has one definition. Their `Option` fields are
// required when decoding (`deserialize_with = "Option::deserialize"`; serde's default reads a
// missing `Option` as `None`): the server always writes them, `null` when absent, so a renamed
// or removed field is an error naming it, not a column of blanks. Names from a fixed table
// ([`TableName`]) decode only to a name of that table ([`one_of`]).

/// One connection of the node with its latest TCP state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerConnection {
    pub peer_id: String,
    pub cookie: u64,
    pub direction: crate::sockets::Direction,
    pub local: String,
    pub remote: String,
    pub algorithm: String,
    /// `None` until the probe has seen the socket (or when the probes are not loaded).
    #[serde(deserialize_with = "Option::deserialize")]
    pub tcp: Option<TcpState>,
    /// bbr-p2p's model of the path, for sockets running it.
    #[serde(deserialize_with = "Option::deserialize")]
    pub bbr: Option<BbrView>,
}

/// bbr-p2p's per-socket state, decoded (a BPF congestion control cannot fill `ss -ti`'s
/// algorithm section, so this is where its internals are visible).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BbrView {
    #[serde(deserialize_with = "bbr_mode")]
    pub mode: TableName,
    /// Phase of PROBE_BW (`cc_ebpf_common::bbr::Phase`: 0 up, 1 down, 2 cruise, 3 refill).
    pub cycle_phase: u8,
    pub bandwidth_bytes_per_second: u64,
    pub min_rtt_seconds: f64,
    pub pacing_gain: f64,
    pub cwnd_gain: f64,
    /// Loss bound on inflight (`None`: unbounded).
    #[serde(deserialize_with = "Option::deserialize")]
    pub inflight_hi_segments: Option<u32>,
    pub full_bw_reached: bool,
    /// How the connection started: "cold", "resumed" (from this peer's record, careful resume)
    /// or "retreated" (resumed, then the path contradicted the record).
    #[serde(deserialize_with = "start_name")]
    pub start: TableName,
    /// Why it started cold or retreated ("" when not known or not applicable).
    #[serde(deserialize_with = "start_reason_name")]
    pub start_reason: TableName,
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
            start: start_of(s).0.name(),
            start_reason: start_of(s).1.name(),
            probe_rtt_count: s.probe_rtt_count,
            loss_bound_count: s.loss_bound_count,
            rounds: s.round_count,
        }
    }
}

/// How a bbr-p2p connection started, from its socket state.
pub fn start_of(s: &BbrState) -> (Start, Reason) {
    (Start::from_u8(s.start), Reason::from_u8(s.start_reason))
}

/// Decoded TCP state, in the units the API and metrics use.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct TcpState {
    pub cwnd_segments: u32,
    /// `None` while the socket is still in its initial slow start (ssthresh "infinite").
    #[serde(deserialize_with = "Option::deserialize")]
    pub ssthresh_segments: Option<u32>,
    pub srtt_seconds: f64,
    pub min_rtt_seconds: f64,
    pub mss_bytes: u32,
    /// `None` when unlimited.
    #[serde(deserialize_with = "Option::deserialize")]
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
    /// Current congestion-avoidance state: open, disorder, cwr, recovery or loss
    /// ([`UNKNOWN_CA_STATE`] for a value outside [`CA_STATES`]).
    #[serde(deserialize_with = "ca_state_name")]
    pub ca_state: TableName,
    pub ca_state_seconds: CaStateSeconds,
    pub ca_transitions: u32,
    /// Time since the node began tracking the socket.
    pub tracked_seconds: f64,
    pub probe_events: u64,
}

/// Time spent in each congestion-avoidance state (`enum tcp_ca_state`).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Default)]
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

/// [`TcpState::ca_state`] for a state outside [`CA_STATES`].
pub const UNKNOWN_CA_STATE: &str = "unknown";

/// A name from a fixed table (CA states, bbr-p2p modes, start states and reasons). Spelled as
/// an alias because serde's derive takes a field written `&'static str` for a string borrowed
/// from the input, which would make the types decodable only from `'static` input; these
/// fields decode through `one_of` instead.
pub type TableName = &'static str;

/// Decodes a name the server took from a fixed table back to that table's [`TableName`]; any
/// other name is an error that names the field (`what`) and the name.
fn one_of<'de, D: Deserializer<'de>>(
    d: D,
    what: &str,
    names: impl IntoIterator<Item = TableName>,
) -> Result<TableName, D::Error> {
    let name = String::deserialize(d)?;
    names
        .into_iter()
        .find(|n| *n == name)
        .ok_or_else(|| serde::de::Error::custom(format!("unknown {what} {name:?}")))
}

fn ca_state_name<'de, D: Deserializer<'de>>(d: D) -> Result<TableName, D::Error> {
    one_of(
        d,
        "ca_state",
        CA_STATES.into_iter().chain([UNKNOWN_CA_STATE]),
    )
}

// `from_u8` maps every byte to a variant, so each table below is every name `name()` gives.
fn bbr_mode<'de, D: Deserializer<'de>>(d: D) -> Result<TableName, D::Error> {
    one_of(
        d,
        "bbr mode",
        (0..=u8::MAX).map(|v| Mode::from_u8(v).name()),
    )
}

fn start_name<'de, D: Deserializer<'de>>(d: D) -> Result<TableName, D::Error> {
    one_of(d, "start", (0..=u8::MAX).map(|v| Start::from_u8(v).name()))
}

fn start_reason_name<'de, D: Deserializer<'de>>(d: D) -> Result<TableName, D::Error> {
    one_of(
        d,
        "start_reason",
        (0..=u8::MAX).map(|v| Reason::from_u8(v).name()),
    )
}

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
                .unwrap_or(UNKNOWN_CA_STATE),
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

/// The exporters' handle on the collector's snapshots, and the history fed from them.
#[derive(Clone)]
pub struct Telemetry {
    snapshot: watch::Receiver<Arc<snapshot::Snapshot>>,
    /// The live page's short per-peer time series.
    pub history: Arc<history::History>,
}

impl Telemetry {
    /// Starts the collector (first collection now, then every [`collector::INTERVAL`]) and the
    /// history thread that records each new snapshot.
    pub fn start(collector: collector::Collector) -> Self {
        Self::from_receiver(collector.spawn())
    }

    /// Exporters over snapshots from elsewhere (tests, or a collector already running). The
    /// history is recorded on a thread of its own, which ends with the channel.
    pub fn from_receiver(snapshot: watch::Receiver<Arc<snapshot::Snapshot>>) -> Self {
        let history: Arc<history::History> = Arc::default();
        let mut updates = snapshot.clone();
        let recorder = history.clone();
        let spawned = std::thread::Builder::new()
            .name("p2pcc-history".into())
            .spawn(move || {
                loop {
                    let s = updates.borrow_and_update().clone();
                    let at = SystemTime::UNIX_EPOCH + Duration::from_millis(s.taken_unix_ms);
                    recorder.record(&s.connections, at);
                    if futures::executor::block_on(updates.changed()).is_err() {
                        break;
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start the telemetry history thread: {e}");
        }
        Self { snapshot, history }
    }

    /// The latest snapshot (no syscall, no kernel access).
    pub fn snapshot(&self) -> Arc<snapshot::Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// A receiver that wakes on each new snapshot (for streams such as the live page's SSE).
    pub fn subscribe(&self) -> watch::Receiver<Arc<snapshot::Snapshot>> {
        self.snapshot.clone()
    }
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.snapshot();
        f.debug_struct("Telemetry")
            .field("sequence", &s.sequence)
            .field("connections", &s.connections.len())
            .field("probes", &s.probes.is_some())
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
    fn a_peer_is_represented_by_its_busiest_connection() {
        let rows = vec![row("a", 1, 10), row("a", 2, 500), row("b", 3, 100)];
        let cookies: Vec<u64> = busiest_per_peer(&rows).iter().map(|c| c.cookie).collect();
        assert_eq!(cookies, vec![2, 3]);
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
