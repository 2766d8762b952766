//! Known peers: what bbr-p2p measured on this node's connections to each authenticated PeerId,
//! kept by the node (not the host) so a later connection to the same peer can resume carefully
//! (`cc_ebpf_common::resume`).
//!
//! A record is fed from bbr-p2p's per-socket state while a connection lives (every
//! [`OBSERVE_INTERVAL`]) and once more when it closes: bottleneck bandwidth (bytes/s), min RTT,
//! `inflight_hi`, and when the bandwidth sample was taken (the first time the node saw the current estimate, so an idle connection's record ages). Records are
//! an LRU of [`Config::capacity`] entries, optionally persisted in the data directory
//! ([`FILE_NAME`]): written atomically (temporary file, fsync, rename), read back bounded in size,
//! and treated as hostile (every record checked; a bad file starts the node with no records).
//!
//! Beside it, per PeerId and for connections on any algorithm, the receive side: the largest
//! `tcpi_rcv_space` the kernel measured on a connection to the peer, from which a new
//! connection's receive buffer starts (`crate::rcvwarm`; same capacity, freshness and file).
//! A node going down records its live connections once more before it saves.

use std::{
    collections::{BTreeMap, HashMap},
    fs,
    io::Read as _,
    os::fd::BorrowedFd,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, bail};
use cc_ebpf_common::{
    bbr::{BbrState, bw_to_bytes_per_sec},
    resume::{self, Reason, ResumeSlot, SavedPath},
};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use crate::{
    fsutil::{Existing, write_private},
    rcvwarm,
    sockets::{SocketInfo, SocketTable},
    telemetry::collector::BbrReader,
};

/// Records kept by default: above a node's connection limits (1024 inbound + 512 outbound
/// established) is not needed, as records matter for peers the node reconnects to often; 1024
/// records are ~150 kB of JSON.
pub const DEFAULT_CAPACITY: usize = 1024;
/// Largest `--known-peers` accepted.
pub const MAX_CAPACITY: usize = 65_536;
/// A record older than this is not used: long enough for the reconnections P2P nodes make all
/// day (Kademlia refreshes its buckets every 5 minutes, gossip meshes churn within minutes), short
/// enough that the cross traffic the record saw is likely still the same. The RTT check and the
/// validation phase limit the harm of a record that is wrong anyway.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(600);
/// How often the records of live connections are refreshed.
pub const OBSERVE_INTERVAL: Duration = Duration::from_secs(5);
/// The records' file in the data directory.
pub const FILE_NAME: &str = "known-peers.json";
/// Bytes a record takes at most in the file (a PeerId of 52 characters and five numbers).
const RECORD_FILE_BYTES: u64 = 256;
/// Largest record list `/api/peers/known` returns.
pub const MAX_LISTED: usize = 1000;

/// Bounds a record from the file must be within (anything else is hostile or corrupt).
const MAX_BW_BYTES_PER_SEC: u64 = 100_000_000_000; // 800 Gbit/s
const MAX_MIN_RTT_US: u32 = 60_000_000; // 60 s
const MAX_INFLIGHT_BYTES: u64 = 1 << 40;

#[derive(Clone, Debug)]
pub struct Config {
    /// Records kept (LRU).
    pub capacity: usize,
    /// Freshness limit: older records are not used.
    pub max_age: Duration,
    /// Where records persist; `None`: memory only.
    pub file: Option<PathBuf>,
    /// Bounds of the receive buffers started from records; `None`: every connection starts
    /// with the kernel's default.
    pub receive: Option<rcvwarm::Limits>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            capacity: DEFAULT_CAPACITY,
            max_age: DEFAULT_MAX_AGE,
            file: None,
            // Off by default (`--receive-warm`): no measured gain, docs/bench.md.
            receive: None,
        }
    }
}

/// One record, as the API lists it and the file stores it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub peer_id: String,
    pub bw_bytes_per_sec: u64,
    pub min_rtt_us: u32,
    pub inflight_hi_bytes: Option<u64>,
    /// When the bandwidth sample was taken, Unix ms.
    pub sampled_at_unix_ms: u64,
}

impl Record {
    fn saved_path(&self) -> SavedPath {
        SavedPath {
            bw_bytes_per_sec: self.bw_bytes_per_sec,
            min_rtt_us: self.min_rtt_us,
            inflight_hi_bytes: self.inflight_hi_bytes,
            sampled_at_ms: self.sampled_at_unix_ms,
        }
    }

    /// Whether a record read from the file is within sane bounds.
    fn plausible(&self) -> bool {
        self.peer_id.parse::<PeerId>().is_ok()
            && (1..=MAX_BW_BYTES_PER_SEC).contains(&self.bw_bytes_per_sec)
            && (1..=MAX_MIN_RTT_US).contains(&self.min_rtt_us)
            && self
                .inflight_hi_bytes
                .is_none_or(|b| (1..=MAX_INFLIGHT_BYTES).contains(&b))
    }
}

/// The receive side of a peer's record, as the file stores it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiveRecord {
    pub peer_id: String,
    /// Largest `tcpi_rcv_space` seen on a connection to the peer, bytes.
    pub rcv_space_bytes: u64,
    /// When it was seen, Unix ms.
    pub sampled_at_unix_ms: u64,
}

/// A record with its age, for `/api/peers/known`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KnownPeer {
    #[serde(flatten)]
    pub record: Record,
    pub age_seconds: f64,
    /// Whether a new connection would be offered this record now ("" if so, or why not:
    /// `stale`, `invalid`).
    pub unusable: String,
}

/// `/api/peers/known`: records, most recently used first, at most [`MAX_LISTED`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KnownPeers {
    pub capacity: usize,
    pub max_age_seconds: u64,
    pub total: usize,
    pub records: Vec<KnownPeer>,
}

/// What one look at a bbr-p2p socket shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observation {
    pub bw_bytes_per_sec: u64,
    pub min_rtt_us: u32,
    pub inflight_hi_bytes: Option<u64>,
    /// BBR found the pipe full at some point: the estimate is the path's, not the application's.
    pub pipe_filled: bool,
}

impl Observation {
    /// From bbr-p2p's socket state; `None` before it has a bandwidth and an RTT.
    pub fn from_bbr(s: &BbrState, mss: u32) -> Option<Self> {
        let bw = bw_to_bytes_per_sec(s.bw(), mss);
        if bw == 0 || s.min_rtt_us == 0 || s.min_rtt_us == u32::MAX {
            return None;
        }
        Some(Self {
            bw_bytes_per_sec: bw,
            min_rtt_us: s.min_rtt_us,
            inflight_hi_bytes: (s.inflight_hi != u32::MAX)
                .then(|| u64::from(s.inflight_hi) * u64::from(mss)),
            pipe_filled: s.full_bw_reached != 0,
        })
    }
}

/// The node's records.
#[derive(Debug)]
pub struct Store {
    config: Config,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// PeerId → (record, LRU tick).
    records: HashMap<PeerId, (Record, u64)>,
    /// LRU tick → PeerId, oldest first.
    order: BTreeMap<u64, PeerId>,
    tick: u64,
    /// Per live socket: the bandwidth estimate last seen and since when (Unix ms). Bounded by
    /// the socket table (entries leave when the socket closes).
    live: HashMap<u64, (u64, u64)>,
    /// Receive side per PeerId (at most `capacity`; the oldest sample leaves first).
    receive: HashMap<PeerId, rcvwarm::Saved>,
    /// Receive buffer granted ahead of autotuning per live socket, and their sum (bounded by
    /// [`rcvwarm::Limits::total`]; entries leave when the socket closes).
    granted: HashMap<u64, u64>,
    granted_total: u64,
    /// Changed since the last save.
    dirty: bool,
}

impl Inner {
    /// Sets what `cookie` holds of the receive total (0 removes it).
    fn grant(&mut self, cookie: u64, bytes: u64) {
        let old = if bytes == 0 {
            self.granted.remove(&cookie)
        } else {
            self.granted.insert(cookie, bytes)
        };
        self.granted_total = self.granted_total.saturating_sub(old.unwrap_or(0)) + bytes;
    }

    fn touch(&mut self, peer: PeerId) {
        self.tick += 1;
        let tick = self.tick;
        if let Some((_, t)) = self.records.get_mut(&peer) {
            self.order.remove(t);
            *t = tick;
            self.order.insert(tick, peer);
        }
    }

    fn insert(&mut self, peer: PeerId, record: Record, capacity: usize) {
        self.tick += 1;
        if let Some((_, old)) = self.records.insert(peer, (record, self.tick)) {
            self.order.remove(&old);
        }
        self.order.insert(self.tick, peer);
        while self.records.len() > capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.records.remove(&oldest);
        }
        self.dirty = true;
    }
}

/// Unix time now, ms.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Store {
    pub fn new(config: Config) -> Self {
        Self {
            config,
            inner: Mutex::new(Inner::default()),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("lock poisoned")
    }

    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One look at a live (or closing) socket to `peer`: updates the peer's record when the
    /// observation is worth keeping. An estimate from a connection whose pipe never filled is a
    /// lower bound of the path's rate (the application limited it): it replaces only a lower or
    /// stale record. (No policer flag: `cc_ebpf_common::resume`'s deviation 6.)
    pub fn observe(&self, cookie: u64, peer: PeerId, obs: &Observation, now_ms: u64) {
        let mut inner = self.lock();
        let since = match inner.live.get(&cookie) {
            Some(&(bw, since)) if bw == obs.bw_bytes_per_sec => since,
            _ => now_ms,
        };
        inner.live.insert(cookie, (obs.bw_bytes_per_sec, since));
        let max_age_ms = self.config.max_age.as_millis() as u64;
        let replace = match inner.records.get(&peer) {
            None => true,
            Some((old, _)) => {
                obs.pipe_filled
                    || obs.bw_bytes_per_sec >= old.bw_bytes_per_sec
                    || now_ms.saturating_sub(old.sampled_at_unix_ms) > max_age_ms
            }
        };
        if !replace {
            return;
        }
        let record = Record {
            peer_id: peer.to_base58(),
            bw_bytes_per_sec: obs.bw_bytes_per_sec,
            min_rtt_us: obs.min_rtt_us,
            inflight_hi_bytes: obs.inflight_hi_bytes,
            sampled_at_unix_ms: since,
        };
        let unchanged = inner.records.get(&peer).is_some_and(|(r, _)| *r == record);
        if !unchanged {
            inner.insert(peer, record, self.config.capacity);
        }
    }

    /// One look at the receive side of a live (or closing) socket to `peer`: `rcv_space` is
    /// the kernel's `tcpi_rcv_space`, which only grows over a connection's life. Kept when it is
    /// above what a default connection advertises anyway, and replaces a smaller or stale
    /// sample (a connection that carried little does not undo what a bulk one measured).
    pub fn observe_receive(&self, peer: PeerId, rcv_space: u64, now_ms: u64) {
        if rcv_space.saturating_mul(2) <= rcvwarm::DEFAULT_WINDOW {
            return;
        }
        let max_age_ms = self.config.max_age.as_millis() as u64;
        let mut inner = self.lock();
        let replace = inner.receive.get(&peer).is_none_or(|old| {
            rcv_space >= old.rcv_space_bytes
                || now_ms.saturating_sub(old.sampled_at_ms) > max_age_ms
        });
        if !replace {
            return;
        }
        if !inner.receive.contains_key(&peer) && inner.receive.len() >= self.config.capacity {
            // Full: the oldest sample leaves (a scan, only when a new peer comes into a full
            // table; at most `MAX_CAPACITY` entries).
            let oldest = inner
                .receive
                .iter()
                .min_by_key(|(_, s)| s.sampled_at_ms)
                .map(|(p, _)| *p);
            if let Some(oldest) = oldest {
                inner.receive.remove(&oldest);
            }
        }
        let saved = rcvwarm::Saved {
            rcv_space_bytes: rcv_space,
            sampled_at_ms: now_ms,
        };
        if inner.receive.insert(peer, saved) != Some(saved) {
            inner.dirty = true;
        }
    }

    /// Reserves the receive buffer a new connection (`cookie`) to `peer` starts with: the
    /// window to raise it to, or why it starts at the default. The reservation (about twice
    /// the window) counts towards the total until [`Store::settle`] or [`Store::closed`].
    pub fn reserve_receive(
        &self,
        cookie: u64,
        peer: &PeerId,
        now_ms: u64,
        rmem_max: u64,
    ) -> Result<u64, rcvwarm::Cold> {
        let limits = self.config.receive.ok_or(rcvwarm::Cold::NoRecord)?;
        let max_age_ms = self.config.max_age.as_millis() as u64;
        let mut inner = self.lock();
        let saved = inner.receive.get(peer).copied();
        let window = rcvwarm::window(
            saved,
            now_ms,
            max_age_ms,
            rmem_max,
            inner.granted_total,
            limits,
        )?;
        inner.grant(cookie, window.saturating_mul(2));
        Ok(window)
    }

    /// What the kernel actually granted `cookie` (its `sk_rcvbuf` after the raise minus before)
    /// replaces the reservation.
    pub fn settle(&self, cookie: u64, bytes: u64) {
        self.lock().grant(cookie, bytes);
    }

    /// Receive buffer granted ahead of autotuning to live connections, bytes.
    pub fn granted_total(&self) -> u64 {
        self.lock().granted_total
    }

    /// The socket closed (after its last [`Store::observe`]).
    pub fn closed(&self, cookie: u64) {
        let mut inner = self.lock();
        inner.live.remove(&cookie);
        inner.grant(cookie, 0);
    }

    /// The record of `peer` for a new connection (counts as a use for the LRU).
    pub fn saved_path(&self, peer: &PeerId) -> Result<SavedPath, Reason> {
        let mut inner = self.lock();
        let saved = inner
            .records
            .get(peer)
            .map(|(r, _)| r.saved_path())
            .ok_or(Reason::NoRecord)?;
        inner.touch(*peer);
        Ok(saved)
    }

    /// Forgets `peer`'s record (both sides); whether there was one.
    pub fn forget(&self, peer: &PeerId) -> bool {
        let mut inner = self.lock();
        let receive = inner.receive.remove(peer).is_some();
        let sent = match inner.records.remove(peer) {
            Some((_, tick)) => {
                inner.order.remove(&tick);
                true
            }
            None => false,
        };
        inner.dirty |= receive || sent;
        receive || sent
    }

    /// Records, most recently used first, at most [`MAX_LISTED`].
    pub fn list(&self, now_ms: u64) -> KnownPeers {
        let inner = self.lock();
        let max_age_ms = self.config.max_age.as_millis() as u64;
        let records = inner
            .order
            .values()
            .rev()
            .take(MAX_LISTED)
            .filter_map(|peer| inner.records.get(peer))
            .map(|(r, _)| KnownPeer {
                record: r.clone(),
                age_seconds: now_ms.saturating_sub(r.sampled_at_unix_ms) as f64 / 1e3,
                unusable: cc_ebpf_common::resume::offer(&r.saved_path(), now_ms, max_age_ms)
                    .err()
                    .map_or_else(String::new, |why| why.name().to_owned()),
            })
            .collect();
        KnownPeers {
            capacity: self.config.capacity,
            max_age_seconds: self.config.max_age.as_secs(),
            total: inner.records.len(),
            records,
        }
    }

    /// Largest file [`Store::load`] reads.
    fn max_file_bytes(&self) -> u64 {
        // Both lists: a sending-side and a receive-side record per peer at most.
        2 * self.config.capacity as u64 * RECORD_FILE_BYTES + 4096
    }

    /// Reads the records file (if configured and present): at most [`Store::max_file_bytes`],
    /// a regular file not reached through a symlink; records outside sane bounds are dropped,
    /// only the `capacity` most recently used are kept. Returns (kept, dropped).
    pub fn load(&self) -> anyhow::Result<(usize, usize)> {
        let Some(path) = &self.config.file else {
            return Ok((0, 0));
        };
        let text = match read_bounded(path, self.max_file_bytes()) {
            Ok(text) => text,
            Err(e)
                if e.downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound) =>
            {
                return Ok((0, 0));
            }
            Err(e) => return Err(e),
        };
        let file: File = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a known-peers file", path.display()))?;
        if file.version != FILE_VERSION {
            bail!(
                "{} has version {}, this node reads version {FILE_VERSION}",
                path.display(),
                file.version
            );
        }
        let mut inner = self.lock();
        let mut dropped = 0;
        // The file lists records oldest first: inserting in order rebuilds the LRU.
        for record in file.records {
            match record.peer_id.parse::<PeerId>() {
                Ok(peer) if record.plausible() => {
                    inner.insert(peer, record, self.config.capacity);
                }
                _ => dropped += 1,
            }
        }
        for r in file.receive {
            match r.peer_id.parse::<PeerId>() {
                Ok(peer)
                    if (1..=MAX_INFLIGHT_BYTES).contains(&r.rcv_space_bytes)
                        && inner.receive.len() < self.config.capacity =>
                {
                    inner.receive.insert(
                        peer,
                        rcvwarm::Saved {
                            rcv_space_bytes: r.rcv_space_bytes,
                            sampled_at_ms: r.sampled_at_unix_ms,
                        },
                    );
                }
                _ => dropped += 1,
            }
        }
        inner.dirty = false;
        // A PeerId listed twice is one record (the later wins): count what is held.
        Ok((inner.records.len(), dropped))
    }

    /// Writes the records if they changed since the last save: a new file beside the old one
    /// (mode 0600, `O_EXCL|O_NOFOLLOW`), fsynced, renamed over it.
    pub fn save(&self) -> anyhow::Result<()> {
        let Some(path) = &self.config.file else {
            return Ok(());
        };
        let text = {
            let mut inner = self.lock();
            if !inner.dirty {
                return Ok(());
            }
            inner.dirty = false;
            let records = inner
                .order
                .values()
                .filter_map(|peer| inner.records.get(peer))
                .map(|(r, _)| r.clone())
                .collect();
            let receive = inner
                .receive
                .iter()
                .map(|(peer, s)| ReceiveRecord {
                    peer_id: peer.to_base58(),
                    rcv_space_bytes: s.rcv_space_bytes,
                    sampled_at_unix_ms: s.sampled_at_ms,
                })
                .collect();
            serde_json::to_string(&File {
                version: FILE_VERSION,
                records,
                receive,
            })?
        };
        write_private(path, text.as_bytes(), Existing::Replace)
            .map(drop)
            .inspect_err(|_| self.lock().dirty = true)
    }
}

/// One look at a socket of the table: if it runs bbr-p2p and its PeerId is authenticated, its
/// state feeds the peer's record.
/// The receive side is kept for every authenticated socket, whatever its algorithm.
pub fn observe_socket(store: &Store, info: &SocketInfo, fd: BorrowedFd<'_>, read: &BbrReader) {
    let Some(peer) = info.peer else { return };
    let Ok(tcp) = crate::sockets::tcp_info(fd) else {
        return;
    };
    store.observe_receive(peer, u64::from(tcp.rcv_space), now_unix_ms());
    if info.algorithm != crate::ebpf::bbr::KERNEL_NAME {
        return;
    }
    let Some(state) = read(fd) else { return };
    if let Some(obs) = Observation::from_bbr(&state, tcp.snd_mss.max(1)) {
        store.observe(info.cookie, peer, &obs, now_unix_ms());
    }
}

/// Writes a socket's careful-resume entry into bbr-p2p's storage; whether it was written.
pub type ResumeWriter = Arc<dyn Fn(BorrowedFd<'_>, &ResumeSlot) -> bool + Send + Sync>;

/// The node's part of careful resume, once `info`'s PeerId is authenticated: the peer's record
/// as a hint for bbr-p2p, or why the connection starts cold (both written into the socket's
/// storage, where bbr-p2p takes them on its next ACK).
pub fn on_bound(store: &Store, info: &SocketInfo, fd: BorrowedFd<'_>, write: &ResumeWriter) {
    let Some(peer) = info.peer else { return };
    if info.algorithm != crate::ebpf::bbr::KERNEL_NAME {
        return;
    }
    let max_age_ms = store.config().max_age.as_millis() as u64;
    let slot = match store
        .saved_path(&peer)
        .and_then(|saved| resume::offer(&saved, now_unix_ms(), max_age_ms))
    {
        Ok(hint) => ResumeSlot::offered(&hint),
        Err(reason) => ResumeSlot::cold(reason),
    };
    if !write(fd, &slot) {
        tracing::debug!(%peer, "bbr-p2p takes no resume hints (an older object?)");
    }
}

/// The receiving side of the warm start, once `info`'s PeerId is authenticated: a fresh
/// receive record raises the socket's receive buffer (bounded, autotuning kept:
/// `crate::rcvwarm`). Whatever happens, the connection goes on.
pub fn warm_receiver(store: &Store, info: &SocketInfo, fd: BorrowedFd<'_>, rmem_max: u64) {
    let Some(peer) = info.peer else { return };
    let window = match store.reserve_receive(info.cookie, &peer, now_unix_ms(), rmem_max) {
        Ok(window) => window,
        Err(why) => {
            tracing::debug!(%peer, ?why, "receive buffer starts at the default");
            return;
        }
    };
    match rcvwarm::raise(fd, window) {
        Ok((before, after)) => {
            store.settle(info.cookie, after.saturating_sub(before));
            tracing::debug!(%peer, window, before, after, "receive buffer started warm");
        }
        Err(e) => {
            store.settle(info.cookie, 0);
            tracing::debug!(%peer, "raising the receive buffer: {e}");
        }
    }
}

/// One look at every live socket of the table (the periodic refresh, and a node's last look
/// before it saves at shutdown).
pub fn observe_live(store: &Store, sockets: &SocketTable, read: &BbrReader) {
    for info in sockets.snapshot() {
        sockets.with_fd(info.cookie, |fd| observe_socket(store, &info, fd, read));
    }
}

/// Feeds the store from the socket table: from every closing socket (through the table's close
/// hook), and from every live one each [`OBSERVE_INTERVAL`] on a thread of its own, which also
/// saves changed records. The thread runs for the life of the process. With `write`, every
/// authenticated bbr-p2p connection gets its careful-resume entry (the table's bind hook).
pub fn start(
    store: Arc<Store>,
    sockets: Arc<SocketTable>,
    read: BbrReader,
    write: Option<ResumeWriter>,
) {
    {
        let store = store.clone();
        // Read once: the namespace's maximum does not follow later sysctl changes (a restart
        // does).
        let rmem_max = rcvwarm::rmem_max().unwrap_or(0);
        sockets.set_bind_hook(Box::new(move |info, fd| {
            if let Some(write) = &write {
                on_bound(&store, info, fd, write);
            }
            warm_receiver(&store, info, fd, rmem_max);
        }));
    }
    {
        let (store, read) = (store.clone(), read.clone());
        sockets.set_close_hook(Box::new(move |info, fd| {
            observe_socket(&store, info, fd, &read);
            store.closed(info.cookie);
        }));
    }
    let spawned = std::thread::Builder::new()
        .name("known-peers".into())
        .spawn(move || {
            loop {
                std::thread::sleep(OBSERVE_INTERVAL);
                observe_live(&store, &sockets, &read);
                if let Err(e) = store.save() {
                    tracing::warn!("saving known peers: {e:#}");
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("known peers are recorded only when connections close: {e}");
    }
}

/// 2: records lost their `policer` flag (`cc_ebpf_common::resume`'s deviation 6); a version-1
/// file is set aside like any other version (records live 10 minutes by default).
const FILE_VERSION: u32 = 2;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: u32,
    records: Vec<Record>,
    /// Receive sides (absent in files written before them).
    #[serde(default)]
    receive: Vec<ReceiveRecord>,
}

fn read_bounded(path: &Path, max: u64) -> anyhow::Result<String> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(anyhow::Error::from)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    let mut text = String::new();
    file.take(max + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("reading {}", path.display()))?;
    if text.len() as u64 > max {
        bail!("{} is larger than {max} bytes", path.display());
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(bw: u64, filled: bool) -> Observation {
        Observation {
            bw_bytes_per_sec: bw,
            min_rtt_us: 40_000,
            inflight_hi_bytes: None,
            pipe_filled: filled,
        }
    }

    fn store(capacity: usize, file: Option<PathBuf>) -> Store {
        Store::new(Config {
            capacity,
            max_age: Duration::from_secs(600),
            file,
            receive: Some(rcvwarm::DEFAULT_LIMITS),
        })
    }

    fn tmp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("p2pcc-known-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn lru_keeps_the_most_recently_used() {
        let s = store(2, None);
        let [a, b, c] = [PeerId::random(), PeerId::random(), PeerId::random()];
        s.observe(1, a, &obs(1_000, true), 10);
        s.observe(2, b, &obs(2_000, true), 10);
        // Using a's record makes b the least recently used.
        assert!(s.saved_path(&a).is_ok());
        s.observe(3, c, &obs(3_000, true), 10);
        assert_eq!(s.len(), 2);
        assert_eq!(s.saved_path(&b), Err(Reason::NoRecord));
        assert_eq!(s.saved_path(&a).unwrap().bw_bytes_per_sec, 1_000);
        assert_eq!(s.saved_path(&c).unwrap().bw_bytes_per_sec, 3_000);
    }

    #[test]
    fn update_rules() {
        let s = store(8, None);
        let p = PeerId::random();
        s.observe(1, p, &obs(10_000, true), 1_000);
        // An application-limited (pipe never filled) lower estimate does not replace it ...
        s.observe(2, p, &obs(500, false), 2_000);
        assert_eq!(s.saved_path(&p).unwrap().bw_bytes_per_sec, 10_000);
        // ... a filled pipe's lower estimate does (the path got slower) ...
        s.observe(2, p, &obs(5_000, true), 3_000);
        assert_eq!(s.saved_path(&p).unwrap().bw_bytes_per_sec, 5_000);
        // A stale record is replaced by anything.
        s.observe(4, p, &obs(50, false), 4_000 + 601_000);
        assert_eq!(s.saved_path(&p).unwrap().bw_bytes_per_sec, 50);
    }

    #[test]
    fn sample_time_is_when_the_estimate_was_first_seen() {
        let s = store(8, None);
        let p = PeerId::random();
        s.observe(7, p, &obs(10_000, true), 1_000);
        // The same estimate seen later (an idle connection): the sample keeps its age.
        s.observe(7, p, &obs(10_000, true), 50_000);
        assert_eq!(s.saved_path(&p).unwrap().sampled_at_ms, 1_000);
        // A new estimate is a new sample.
        s.observe(7, p, &obs(12_000, true), 60_000);
        assert_eq!(s.saved_path(&p).unwrap().sampled_at_ms, 60_000);
        s.closed(7);
        assert!(s.lock().live.is_empty());
    }

    #[test]
    fn forget_and_list() {
        let s = store(8, None);
        let p = PeerId::random();
        s.observe(1, p, &obs(10_000, true), 1_000);
        let list = s.list(3_000);
        assert_eq!(list.total, 1);
        assert_eq!(list.records[0].record.peer_id, p.to_base58());
        assert_eq!(list.records[0].age_seconds, 2.0);
        assert_eq!(list.records[0].unusable, "");
        assert!(s.forget(&p));
        assert!(!s.forget(&p));
        assert_eq!(s.list(3_000).total, 0);
    }

    #[test]
    fn persists_across_restarts_atomically() {
        let dir = tmp_dir("persist");
        let path = dir.join(FILE_NAME);
        let s = store(8, Some(path.clone()));
        let [a, b] = [PeerId::random(), PeerId::random()];
        s.observe(1, a, &obs(1_000, true), 10);
        s.observe(2, b, &obs(2_000, true), 20);
        s.save().unwrap();
        let mode = fs::metadata(&path).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        let again = store(8, Some(path.clone()));
        assert_eq!(again.load().unwrap(), (2, 0));
        assert_eq!(again.saved_path(&b).unwrap().bw_bytes_per_sec, 2_000);
        // Only the temporary file's final name remains.
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(FILE_NAME)]);
        // A smaller capacity keeps the most recently used.
        let small = store(1, Some(path));
        assert_eq!(small.load().unwrap().0, 1);
        assert_eq!(small.saved_path(&a), Err(Reason::NoRecord));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn receive_side_rules_budget_and_persistence() {
        let dir = tmp_dir("receive");
        let path = dir.join(FILE_NAME);
        let s = store(2, Some(path.clone()));
        let [a, b, c] = [PeerId::random(), PeerId::random(), PeerId::random()];
        const RMEM_MAX: u64 = 6 << 20;
        // Nothing above the default window: not kept.
        s.observe_receive(a, 14_480, 1_000);
        assert_eq!(
            s.reserve_receive(1, &a, 1_000, RMEM_MAX),
            Err(rcvwarm::Cold::NoRecord)
        );
        // A bulk connection's sample, then a small one from a later connection: the larger stays.
        s.observe_receive(a, 500_000, 1_000);
        s.observe_receive(a, 40_000, 2_000);
        assert_eq!(s.reserve_receive(1, &a, 3_000, RMEM_MAX), Ok(1_000_000));
        assert_eq!(
            s.granted_total(),
            2_000_000,
            "reserved: about twice the window"
        );
        s.settle(1, 2_400_000);
        assert_eq!(s.granted_total(), 2_400_000);
        // Stale: not used, and replaced by anything kept.
        assert_eq!(
            s.reserve_receive(2, &a, 1_000 + 601_000, RMEM_MAX),
            Err(rcvwarm::Cold::Stale)
        );
        s.observe_receive(a, 100_000, 1_000 + 601_000);
        assert_eq!(s.reserve_receive(2, &a, 602_000, RMEM_MAX), Ok(200_000));
        assert_eq!(s.granted_total(), 2_800_000);
        // Closing releases what a socket held.
        s.closed(1);
        s.closed(2);
        assert_eq!(s.granted_total(), 0);
        // Bounded: a third peer evicts the oldest sample.
        s.observe_receive(b, 300_000, 700_000);
        s.observe_receive(c, 300_000, 800_000);
        assert_eq!(
            s.reserve_receive(3, &a, 800_000, RMEM_MAX),
            Err(rcvwarm::Cold::NoRecord)
        );
        assert_eq!(s.reserve_receive(4, &b, 800_000, RMEM_MAX), Ok(600_000));
        // Persisted beside the sending side's records; forget removes it.
        s.save().unwrap();
        let again = store(2, Some(path));
        assert_eq!(again.load().unwrap(), (0, 0), "no sending-side records");
        assert_eq!(again.reserve_receive(5, &c, 800_000, RMEM_MAX), Ok(600_000));
        assert!(again.forget(&c));
        assert_eq!(
            again.reserve_receive(6, &c, 800_000, RMEM_MAX),
            Err(rcvwarm::Cold::NoRecord)
        );
        // Off: nothing is raised.
        let off = Store::new(Config {
            receive: None,
            ..Config::default()
        });
        off.observe_receive(a, 500_000, 1_000);
        assert_eq!(
            off.reserve_receive(7, &a, 1_000, RMEM_MAX),
            Err(rcvwarm::Cold::NoRecord)
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn hostile_files_are_refused_or_filtered() {
        let dir = tmp_dir("hostile");
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(FILE_NAME);
        let s = store(4, Some(path.clone()));
        // Too large.
        fs::write(&path, vec![b' '; 2 * 4 * 256 + 4097]).unwrap();
        let e = s.load().unwrap_err().to_string();
        assert!(e.contains("larger than"), "{e}");
        // A symlink.
        fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", &path).unwrap();
        assert!(s.load().is_err());
        fs::remove_file(&path).unwrap();
        // Records out of bounds are dropped, good ones kept.
        let good = PeerId::random().to_base58();
        let text = format!(
            r#"{{"version":{FILE_VERSION},"records":[
            {{"peer_id":"{good}","bw_bytes_per_sec":1000,"min_rtt_us":100,"inflight_hi_bytes":null,"sampled_at_unix_ms":5}},
            {{"peer_id":"not-a-peer","bw_bytes_per_sec":1000,"min_rtt_us":100,"inflight_hi_bytes":null,"sampled_at_unix_ms":5}},
            {{"peer_id":"{good}","bw_bytes_per_sec":0,"min_rtt_us":100,"inflight_hi_bytes":null,"sampled_at_unix_ms":5}},
            {{"peer_id":"{good}","bw_bytes_per_sec":1000,"min_rtt_us":4000000000,"inflight_hi_bytes":null,"sampled_at_unix_ms":5}}]}}"#
        );
        fs::write(&path, text).unwrap();
        assert_eq!(s.load().unwrap(), (1, 3));
        // A version-1 file (records with a policer flag) is set aside, not half-read.
        let v1 = format!(
            r#"{{"version":1,"records":[{{"peer_id":"{good}","bw_bytes_per_sec":1000,"min_rtt_us":100,"inflight_hi_bytes":null,"policer":false,"sampled_at_unix_ms":5}}]}}"#
        );
        fs::write(&path, v1).unwrap();
        let fresh = store(4, Some(path.clone()));
        assert!(fresh.load().is_err());
        assert!(fresh.is_empty());
        // Garbage: an error, nothing loaded.
        let s2 = store(4, Some(path.clone()));
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..200 {
            let len = (seed % 600) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    b"{}[]\":,0123456789abcdefversionrecordspeer_id "[(seed % 45) as usize]
                })
                .collect();
            fs::write(&path, &bytes).unwrap();
            let _ = s2.load();
            assert!(s2.len() <= 4);
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}

/// Fuzz target (see `crate::fuzz`): the known-peers file, which whoever can write the data dir
/// (or a crash mid-write on another implementation) may leave in any shape.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;
    use crate::fuzz::for_a_while;

    fn records() -> impl Strategy<Value = Vec<Record>> {
        let peer = prop_oneof![
            Just(PeerId::random().to_string()),
            Just(PeerId::random().to_string()),
            ".{0,8}",
        ];
        let bw = prop_oneof![0u64..3, 1u64..MAX_BW_BYTES_PER_SEC + 2, any::<u64>()];
        let rtt = prop_oneof![
            0u32..3,
            (MAX_MIN_RTT_US - 1)..=(MAX_MIN_RTT_US + 1),
            any::<u32>()
        ];
        let inflight = proptest::option::of(prop_oneof![0u64..3, any::<u64>()]);
        let record = (peer, bw, rtt, inflight, any::<u64>()).prop_map(
            |(peer_id, bw_bytes_per_sec, min_rtt_us, inflight_hi_bytes, at)| Record {
                peer_id,
                bw_bytes_per_sec,
                min_rtt_us,
                inflight_hi_bytes,
                sampled_at_unix_ms: at,
            },
        );
        proptest::collection::vec(record, 0..12)
    }

    /// Whole files: well-formed with hostile records, other versions, cut-off or plain bytes.
    fn files() -> impl Strategy<Value = Vec<u8>> {
        let well_formed = || {
            (prop_oneof![Just(FILE_VERSION), any::<u32>()], records()).prop_map(
                |(version, records)| {
                    serde_json::to_vec(&File {
                        version,
                        records,
                        receive: Vec::new(),
                    })
                    .unwrap()
                },
            )
        };
        let cut = (well_formed(), any::<prop::sample::Index>()).prop_map(|(mut b, at)| {
            b.truncate(at.index(b.len() + 1));
            b
        });
        prop_oneof![4 => well_formed(), 1 => cut, 1 => proptest::collection::vec(any::<u8>(), 0..64)]
    }

    /// Found by `known_peers_files`: a PeerId listed twice was counted as two kept records.
    #[test]
    fn a_peer_listed_twice_is_one_record() {
        let dir = std::env::temp_dir().join(format!("p2pcc-known-twice-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("known-peers.json");
        let record = Record {
            peer_id: PeerId::random().to_string(),
            bw_bytes_per_sec: 1,
            min_rtt_us: 1,
            inflight_hi_bytes: None,
            sampled_at_unix_ms: 0,
        };
        let records = vec![record.clone(), record];
        let text = serde_json::to_vec(&File {
            version: FILE_VERSION,
            records,
            receive: Vec::new(),
        })
        .unwrap();
        fs::write(&path, text).unwrap();
        let s = Store::new(Config {
            file: Some(path),
            ..Config::default()
        });
        assert_eq!(s.load().unwrap(), (1, 0));
        assert_eq!(s.len(), 1);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn known_peers_files() {
        let dir = std::env::temp_dir().join(format!("p2pcc-fuzz-known-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("known-peers.json");
        let copy = dir.join("copy.json");
        const CAPACITY: usize = 4;
        let store = |file: &Path| {
            Store::new(Config {
                capacity: CAPACITY,
                max_age: Duration::from_secs(600),
                file: Some(file.to_owned()),
                receive: None,
            })
        };
        for_a_while("known-peers file", files(), |bytes| {
            fs::write(&path, &bytes).unwrap();
            let s = store(&path);
            let Ok((kept, _dropped)) = s.load() else {
                prop_assert!(s.is_empty());
                return Ok(());
            };
            prop_assert!(kept <= CAPACITY && s.len() == kept);
            let listed = s.list(now_unix_ms());
            for known in &listed.records {
                prop_assert!(known.record.plausible(), "{:?}", known.record);
            }
            // Saved (to another file) and read back: the same records, in the same order.
            let saved = store(&copy);
            *saved.lock() = std::mem::take(&mut *s.lock());
            saved.lock().dirty = true;
            let _ = fs::remove_file(&copy);
            saved.save().unwrap();
            let again = store(&copy);
            again.load().unwrap();
            let records =
                |k: KnownPeers| k.records.into_iter().map(|r| r.record).collect::<Vec<_>>();
            prop_assert_eq!(records(again.list(0)), records(saved.list(0)));
            Ok(())
        });
        let _ = fs::remove_dir_all(&dir);
    }
}
