//! The collector: the only reader of the kernel for telemetry. Once per [`INTERVAL`] it reads
//! the probes' maps (one batched `BPF_MAP_LOOKUP_BATCH` walk per hash map), the final records,
//! and bbr-p2p's per-socket state, joins them to the node's socket table, and publishes an
//! immutable [`Snapshot`] on a `watch` channel. Exporters only encode snapshots.
//!
//! Before the reads, [`Probes::refresh`] walks the TCP sockets of the node's namespace with the
//! `iter/tcp` program, which refreshes every tracked socket's `SOCK_STATS` entry from its
//! `tcp_sock`: an idle socket is exact in every snapshot after its last segment (the probes
//! alone left its last tick of traffic out until its next segment). The walk's cost grows with
//! every TCP socket of the namespace, the node's or not (any local user can open sockets), so it
//! is bounded in time: after a walk that took `d`, the next runs no sooner than
//! `d × (1 / WALK_SHARE − 1)` later ([`WalkBudget`]): at most [`WALK_SHARE`] of the collector's
//! time on average. At ≤ 50 ms a walk (this host: ~2 ms + ~1 µs per socket) it runs at every
//! collection; beyond, idle sockets are exact at the next walk instead of the next collection.
//!
//! Syscalls per collection, independent of the number of scrapes: the walk's
//! `BPF_ITER_CREATE`, `read` and `close`, `SOCK_STATS` in
//! ⌈entries / 1,024⌉ + 1 batch reads, `RTT_HIST` in one, the counters in one lookup, one
//! `BPF_OBJ_GET_INFO_BY_FD` per program, one `sk_storage` lookup per bbr-p2p socket (that map
//! type has no batch read), and the `/proc/self` reads of the process metrics.
//!
//! Locks: the socket table is copied under its lock without syscalls; a bbr-p2p state lookup
//! needs the socket's fd open, so the table lock is held across that one lookup of one socket
//! ([`SocketTable::with_fd`]), never across the walk.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    os::fd::BorrowedFd,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use cc_ebpf_common::{RTT_HIST_MAP, SOCK_STATS_MAP, SockStats, bbr::BbrState};
use libp2p::PeerId;
use tokio::sync::watch;

use super::{
    BbrView, ClosedTotals, PeerConnection, TcpState, fold_ended,
    snapshot::{ProbeSnapshot, ProcessStats, Snapshot},
    topk,
};
use crate::{
    ebpf::features::Feature,
    ebpf::{Probes, bbr::user_name, monotonic_ns},
    sockets::SocketTable,
};

/// Time between collections. Scrapes and API calls in between see the same snapshot.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// The largest share of time the refresh walk may take on average (5 %: at one collection per
/// second, a walk of up to 50 ms runs every time).
pub const WALK_SHARE: f64 = 0.05;

/// When the next refresh walk may run: after a walk of `d` ending at `t`, not before
/// `t + d × (1 / WALK_SHARE − 1)`.
#[derive(Debug, Default)]
pub struct WalkBudget {
    not_before: Option<Instant>,
    /// The latest walk's duration, reported while later collections skip the walk.
    last: Option<Duration>,
}

impl WalkBudget {
    /// Whether a walk may run at `now`.
    pub fn allows(&self, now: Instant) -> bool {
        self.not_before.is_none_or(|t| now >= t)
    }

    /// Records a walk of `took` that ended at `ended`.
    pub fn spent(&mut self, took: Duration, ended: Instant) {
        self.last = Some(took);
        self.not_before = Some(ended + took.mul_f64(1.0 / WALK_SHARE - 1.0));
    }
}

/// Reads one socket's bbr-p2p state from its fd. Given by the control side (which owns the
/// bbr-p2p handle); telemetry keeps no control state.
pub type BbrReader = Arc<dyn Fn(BorrowedFd<'_>) -> Option<BbrState> + Send + Sync>;

/// MSS assumed for a bbr-p2p bandwidth when the probe has not seen the socket yet.
const DEFAULT_MSS: u32 = 1448;

/// Reads the kernel and builds snapshots; owned by the collector thread.
pub struct Collector {
    sockets: Arc<SocketTable>,
    probes: Option<Arc<Probes>>,
    bbr: Option<BbrReader>,
    top_k: usize,
    closed: BTreeMap<String, ClosedTotals>,
    /// Bytes (acked + received) per cookie at the previous collection.
    last_bytes: HashMap<u64, u64>,
    last_at: Option<Instant>,
    /// Recent throughput per peer, bytes per second (moving average).
    rates: BTreeMap<String, f64>,
    /// Each bound socket's PeerId in base58, kept from one collection to the next (encoding
    /// one costs ~1.5 µs: 1.5 ms per collection at 1,000 peers if redone each time).
    names: HashMap<u64, (PeerId, String)>,
    top: BTreeSet<String>,
    sequence: u64,
    /// What the kernel lets the node do (probed once at start), passed through to exporters.
    features: Arc<[Feature]>,
    walk: WalkBudget,
}

impl Collector {
    pub fn new(
        sockets: Arc<SocketTable>,
        probes: Option<Arc<Probes>>,
        bbr: Option<BbrReader>,
        top_k: usize,
    ) -> Self {
        Self {
            sockets,
            probes,
            bbr,
            top_k,
            closed: BTreeMap::new(),
            last_bytes: HashMap::new(),
            last_at: None,
            rates: BTreeMap::new(),
            names: HashMap::new(),
            top: BTreeSet::new(),
            sequence: 0,
            features: Arc::new([]),
            walk: WalkBudget::default(),
        }
    }

    /// The node's feature probe results (`ebpf::features`), for `/api/node` and the metric.
    pub fn with_features(mut self, features: Vec<Feature>) -> Self {
        self.features = features.into();
        self
    }

    /// One collection.
    pub fn collect(&mut self) -> Snapshot {
        let started = Instant::now();
        let sockets = self.sockets.snapshot();
        // Every tracked socket's entry from its tcp_sock first, so an idle socket is exact
        // (unless the walk's time budget says wait).
        if let Some(probes) = &self.probes
            && self.walk.allows(started)
        {
            match probes.refresh() {
                Some(took) => self.walk.spent(took, Instant::now()),
                // A failed walk (reported once by `refresh`): no duration to show.
                None => self.walk.last = None,
            }
        }
        let refresh = self.walk.last;
        let all_stats = self
            .probes
            .as_ref()
            .map(|p| p.all_stats())
            .unwrap_or_default();
        let stats_entries = all_stats.len();
        let stats: HashMap<u64, SockStats> = all_stats
            .into_iter()
            .filter(|(_, s)| s.refreshed())
            .collect();
        if let Some(probes) = &self.probes {
            fold_ended(&mut self.closed, &probes.take_ended());
        }
        let now_ns = monotonic_ns();
        let unbound_sockets = sockets.iter().filter(|s| s.peer.is_none()).count();
        let unbound_past_handshake_timeout = sockets
            .iter()
            .filter(|s| {
                s.peer.is_none()
                    && started.saturating_duration_since(s.registered)
                        > crate::sockets::HANDSHAKE_TIMEOUT
            })
            .count();
        let mut known_names = std::mem::take(&mut self.names);
        let mut names = HashMap::with_capacity(sockets.len());
        let mut connections: Vec<PeerConnection> = sockets
            .iter()
            .filter_map(|s| {
                let peer = s.peer?;
                let peer_id = match known_names.remove(&s.cookie) {
                    Some((known, name)) if known == peer => name,
                    _ => peer.to_base58(),
                };
                names.insert(s.cookie, (peer, peer_id.clone()));
                let tcp = stats.get(&s.cookie).map(|st| TcpState::new(st, now_ns));
                let algorithm = user_name(&s.algorithm).to_owned();
                let bbr = match &self.bbr {
                    Some(read) if algorithm == crate::ebpf::bbr::NAME => {
                        let mss = tcp.map_or(DEFAULT_MSS, |t| t.mss_bytes.max(1));
                        self.sockets
                            .with_fd(s.cookie, |fd| read(fd))
                            .flatten()
                            .map(|state| BbrView::new(&state, mss))
                    }
                    _ => None,
                };
                Some(PeerConnection {
                    peer_id,
                    cookie: s.cookie,
                    direction: s.direction,
                    local: s.local.to_string(),
                    remote: s.remote.to_string(),
                    algorithm,
                    tcp,
                    bbr,
                })
            })
            .collect();
        self.names = names;
        connections.sort_by(|a, b| a.peer_id.cmp(&b.peer_id).then(a.cookie.cmp(&b.cookie)));
        self.update_top(&connections, started);

        let probes = self.probes.as_ref().map(|p| {
            let (rtt_histograms, rtt_entries) = p.rtt_histograms();
            ProbeSnapshot {
                programs: p.programs().to_vec(),
                failed: p.failed().to_vec(),
                counters: p.counters(),
                rtt_histograms,
                maps: vec![
                    (SOCK_STATS_MAP, stats_entries, Probes::tracked_capacity()),
                    (RTT_HIST_MAP, rtt_entries, Probes::rtt_hist_capacity()),
                ],
                closing: p.closing(),
                run_stats: p.run_stats(),
                stats_enabled: p.run_stats_enabled() || bpf_stats_enabled(),
                refresh_seconds: refresh.map(|d| d.as_secs_f64()),
            }
        });
        self.sequence += 1;
        Snapshot {
            taken_unix_ms: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            sequence: self.sequence,
            connections,
            top_peers: self.top.iter().cloned().collect(),
            unbound_sockets,
            unbound_past_handshake_timeout,
            closed: self.closed.clone(),
            probes,
            features: self.features.clone(),
            process: ProcessStats::read(),
            collect_seconds: started.elapsed().as_secs_f64(),
        }
    }

    /// Updates each peer's recent throughput and the top-K set.
    fn update_top(&mut self, connections: &[PeerConnection], now: Instant) {
        let seconds = self
            .last_at
            .map_or(0.0, |t| now.duration_since(t).as_secs_f64());
        let mut bytes = HashMap::with_capacity(connections.len());
        let mut per_peer: BTreeMap<&str, f64> = BTreeMap::new();
        for c in connections {
            let total = c.tcp.map_or(0, |t| t.bytes_acked + t.bytes_received);
            // A connection first seen now carried all its bytes since the last collection.
            let previous = self.last_bytes.get(&c.cookie).copied().unwrap_or(0);
            bytes.insert(c.cookie, total);
            let delta = total.saturating_sub(previous) as f64;
            *per_peer.entry(&c.peer_id).or_default() +=
                if seconds > 0.0 { delta / seconds } else { 0.0 };
        }
        let rates = per_peer
            .into_iter()
            .map(|(peer, sample)| {
                let avg = topk::ewma(self.rates.get(peer).copied(), sample);
                (peer.to_owned(), avg)
            })
            .collect();
        self.rates = rates;
        self.top = topk::select(&self.top, &self.rates, self.top_k);
        self.last_bytes = bytes;
        self.last_at = Some(now);
    }

    /// Collects once now (so the first snapshot is real), then every [`INTERVAL`] on a thread
    /// of its own until every receiver is gone; after collections that saw connections closed it
    /// lets `heap::Trim` give freed heap back to the kernel.
    pub fn spawn(mut self) -> watch::Receiver<Arc<Snapshot>> {
        let (tx, rx) = watch::channel(Arc::new(self.collect()));
        let spawned = std::thread::Builder::new()
            .name("p2pcc-collector".into())
            .spawn(move || {
                let mut next = Instant::now() + INTERVAL;
                let mut trim = crate::heap::Trim::new();
                while !tx.is_closed() {
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                    // A late collection does not cause a burst of catch-up ones.
                    next = next.max(Instant::now()) + INTERVAL;
                    let snapshot = self.collect();
                    let sockets = snapshot.connections.len() + snapshot.unbound_sockets;
                    tx.send_replace(Arc::new(snapshot));
                    // After connections closed, their freed heap goes back to the kernel.
                    trim.after(sockets);
                }
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start the telemetry collector thread: {e}");
        }
        rx
    }
}

/// `kernel.bpf_stats_enabled` (also on while any process holds a `BPF_ENABLE_STATS` fd).
fn bpf_stats_enabled() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|s| s.trim() == "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_within_the_share_run_every_collection_and_long_ones_are_spaced() {
        let t0 = Instant::now();
        let mut budget = WalkBudget::default();
        assert!(budget.allows(t0), "the first collection walks");
        // A 4 ms walk (1,000 peers here) leaves the next collection, 1 s later, free to walk.
        budget.spent(Duration::from_millis(4), t0);
        assert!(budget.allows(t0 + INTERVAL));
        // A 200 ms walk (a namespace with ~200,000 sockets): no walk for the next 3.8 s, so
        // over the 4 s from its start the walk took 5 % of the time.
        budget.spent(Duration::from_millis(200), t0);
        assert!(!budget.allows(t0 + Duration::from_millis(3_799)));
        assert!(budget.allows(t0 + Duration::from_millis(3_800)));
        assert_eq!(budget.last, Some(Duration::from_millis(200)));
    }
}
