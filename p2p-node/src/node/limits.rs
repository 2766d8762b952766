//! Resource limits in the manner of go-libp2p's resource manager (`p2p/host/resource-manager`):
//! limits per *scope* — `system` (the whole node), `peer` (one remote PeerId), `protocol` — on
//! connections, streams and memory. Anything above a limit is refused, and every refusal is
//! counted by `(scope, limit)` in `p2pcc_resource_denied_total` and `/api/node`.
//!
//! ```text
//!   connection ──► pending limit (system) ──► handshake ──► conns in/out (system), conns (peer)
//!                  memory (system)                          │
//!                                                           ▼
//!   stream ──────► streams in/out (system, peer) ──► multistream-select ──► protocol handler
//!                  (LimitedMuxer, below yamux)               (protocol scope: each handler's
//!                                                             own concurrency bound)
//! ```
//!
//! Defaults (the "P2P Production Best Practices" series this project grew from): 1,024 inbound
//! and 512 outbound connections, 128 inbound and 256 outbound streams per peer, connections idle
//! for 30 s closed. The memory budget is a fraction (0.9) of the cgroup's memory limit (cgroup v2
//! `memory.max`, or v1 `memory.limit_in_bytes` on hybrid hosts) when there is one, of host RAM
//! otherwise; the connection and system stream limits shrink to fit that budget (go-libp2p's
//! `ScalingLimitConfig` does the same with per-GiB increments).
//!
//! Deviations from go-libp2p's rcmgr, on purpose or for lack of a hook in rust-libp2p:
//! 1. Memory is not reserved per stream or buffer (rust-libp2p's muxers do not ask a manager);
//!    the `memory` limit compares the process's resident memory with the budget when a
//!    connection opens (libp2p's `memory_connection_limits`).
//! 2. Protocol-scope stream limits are each protocol handler's own bound (request-response's
//!    `max_concurrent_streams`, Kademlia's fixed 32 per connection, gossipsub's one stream per
//!    direction). They are reported in [`Limits::protocols`], not enforced or counted here.
//! 3. An outbound stream above a limit waits for a free slot (the swarm's substream-upgrade
//!    timeout then fails it for the handler) instead of failing at once: a muxer error would
//!    close the whole connection in rust-libp2p. It is counted once when it starts waiting.
//! 4. No transient scope, allowlist or service scope; no stream idle timeout (the series' 60 s):
//!    gossipsub and Kademlia keep long-lived streams that are legitimately quiet.
//! 5. yamux's per-connection receive window stays at its 1 GiB default: libp2p-yamux 0.48 does
//!    not expose it. Its stream count is set to the per-peer stream limits.

use std::{
    collections::{HashMap, HashSet},
    convert::Infallible,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll, Waker},
};

use futures::{AsyncRead, AsyncWrite};
use libp2p::{
    Multiaddr, PeerId,
    core::{
        ConnectedPoint, Endpoint,
        muxing::{StreamMuxer, StreamMuxerEvent},
        transport::PortUse,
    },
    swarm::{
        ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
        THandlerOutEvent, ToSwarm,
        behaviour::{ConnectionClosed, ConnectionEstablished, DialFailure, ListenFailure},
        dummy,
    },
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
};
use serde::Serialize;

use super::Config;

/// Memory one connection may hold: the yamux default receive window (256 KiB, the yamux
/// spec's initial credit) on each of the four protocols a peer keeps a stream open on
/// (identify, Kademlia, gossipsub, files).
pub const CONNECTION_BYTES: u64 = 4 * STREAM_BYTES;
/// Memory one stream may hold: yamux's initial 256 KiB receive window.
pub const STREAM_BYTES: u64 = 256 * 1024;
/// System-wide stream limits before memory scaling (go-libp2p's system defaults for 1 GiB are
/// of this order; a node with 1,024 peers at 128 inbound streams each would otherwise be
/// allowed 131,072 streams).
const SYSTEM_STREAMS_INBOUND: u32 = 4096;
const SYSTEM_STREAMS_OUTBOUND: u32 = 8192;
/// Limits never scale below this (a node must keep a few peers even in a tiny cgroup).
const MIN_CONNS: u32 = 8;
const MIN_STREAMS: u32 = 64;
/// cgroup v1 reports "no limit" as a page-rounded `i64::MAX`; anything at or above this is
/// no limit.
const V1_UNLIMITED: u64 = 1 << 60;

/// A scope of the resource manager.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// The whole node.
    System,
    /// One remote PeerId (all its connections).
    Peer,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::System => "system",
            Scope::Peer => "peer",
        }
    }
}

/// A limit within a scope.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// Inbound connections still handshaking.
    ConnsPendingInbound,
    /// Outbound connections still handshaking.
    ConnsPendingOutbound,
    /// Established inbound connections.
    ConnsInbound,
    /// Established outbound connections.
    ConnsOutbound,
    /// Established connections in either direction (the peer scope's).
    Conns,
    StreamsInbound,
    StreamsOutbound,
    /// Resident memory above the budget.
    Memory,
}

impl Limit {
    pub const ALL: [Limit; 8] = [
        Limit::ConnsPendingInbound,
        Limit::ConnsPendingOutbound,
        Limit::ConnsInbound,
        Limit::ConnsOutbound,
        Limit::Conns,
        Limit::StreamsInbound,
        Limit::StreamsOutbound,
        Limit::Memory,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Limit::ConnsPendingInbound => "conns_pending_inbound",
            Limit::ConnsPendingOutbound => "conns_pending_outbound",
            Limit::ConnsInbound => "conns_inbound",
            Limit::ConnsOutbound => "conns_outbound",
            Limit::Conns => "conns",
            Limit::StreamsInbound => "streams_inbound",
            Limit::StreamsOutbound => "streams_outbound",
            Limit::Memory => "memory",
        }
    }
}

/// A refusal: the error a denied connection carries (`ConnectionDenied` wraps it).
#[derive(Debug, thiserror::Error)]
#[error("{} limit {} reached (at most {max})", scope.as_str(), limit.as_str())]
pub struct Denied {
    pub scope: Scope,
    pub limit: Limit,
    pub max: u64,
}

/// Labels of `p2pcc_resource_denied_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeniedLabels {
    pub scope: &'static str,
    pub limit: &'static str,
}

/// Refusal counters, shared by the connection behaviour (event loop) and the muxers (tasks).
#[derive(Clone, Default)]
pub struct Denials(Family<DeniedLabels, Counter>);

impl Denials {
    pub fn family(&self) -> Family<DeniedLabels, Counter> {
        self.0.clone()
    }

    pub fn count(&self, scope: Scope, limit: Limit) {
        self.0
            .get_or_create(&DeniedLabels {
                scope: scope.as_str(),
                limit: limit.as_str(),
            })
            .inc();
    }

    /// Non-zero counters, for `/api/node`.
    pub fn snapshot(&self) -> Vec<DeniedCount> {
        let mut out = Vec::new();
        for scope in [Scope::System, Scope::Peer] {
            for limit in Limit::ALL {
                let labels = DeniedLabels {
                    scope: scope.as_str(),
                    limit: limit.as_str(),
                };
                // `get` would create the series; only read those that exist.
                let count = self.0.get(&labels).map(|c| c.get()).unwrap_or(0);
                if count > 0 {
                    out.push(DeniedCount {
                        scope,
                        limit,
                        count,
                    });
                }
            }
        }
        out
    }

    pub fn total(&self) -> u64 {
        self.snapshot().iter().map(|d| d.count).sum()
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct DeniedCount {
    pub scope: Scope,
    pub limit: Limit,
    pub count: u64,
}

/// Where the memory budget came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemorySource {
    /// A cgroup v2 `memory.max` (the file named).
    CgroupV2(PathBuf),
    /// A cgroup v1 `memory.limit_in_bytes` (the file named).
    CgroupV1(PathBuf),
    /// `MemTotal` of `/proc/meminfo`: no cgroup limit below it.
    Host,
}

#[derive(Clone, Debug, Serialize)]
pub struct MemoryBudget {
    pub source: MemorySource,
    /// The limit found: the cgroup's, or host RAM.
    pub available_bytes: u64,
    /// The budget: `available_bytes × max_memory_fraction`.
    pub limit_bytes: u64,
}

impl MemoryBudget {
    /// The smallest of host RAM and every memory limit on this process's cgroups (and their
    /// ancestors, which bound it too).
    pub fn detect(fraction: f64) -> Self {
        let host = read_meminfo_total(Path::new("/proc/meminfo")).unwrap_or(u64::MAX);
        let (source, available_bytes) = cgroup_limits(
            &std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default(),
            &std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default(),
        )
        .into_iter()
        .filter(|(_, bytes)| *bytes < host)
        .min_by_key(|(_, bytes)| *bytes)
        .unwrap_or((MemorySource::Host, host));
        Self::new(source, available_bytes, fraction)
    }

    pub fn new(source: MemorySource, available_bytes: u64, fraction: f64) -> Self {
        Self {
            source,
            available_bytes,
            limit_bytes: (available_bytes as f64 * fraction.clamp(0.0, 1.0)) as u64,
        }
    }
}

fn read_meminfo_total(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// One cgroup hierarchy mount from `/proc/self/mountinfo`.
#[derive(Debug, PartialEq, Eq)]
struct CgroupMount {
    /// The path inside the hierarchy that is mounted (usually `/`).
    root: String,
    mount_point: PathBuf,
    v2: bool,
    /// v1 only: the hierarchy carries the memory controller.
    memory: bool,
}

fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    text.lines()
        .filter_map(|line| {
            // `id parent major:minor root mount_point options [optional...] - fstype source super`
            let (left, right) = line.split_once(" - ")?;
            let fields: Vec<&str> = left.split(' ').collect();
            let mut right = right.split(' ');
            let fstype = right.next()?;
            let super_options = right.nth(1).unwrap_or("");
            let v2 = fstype == "cgroup2";
            if !v2 && fstype != "cgroup" {
                return None;
            }
            Some(CgroupMount {
                root: unescape_mountinfo(fields.get(3)?),
                mount_point: PathBuf::from(unescape_mountinfo(fields.get(4)?)),
                v2,
                memory: !v2 && super_options.split(',').any(|o| o == "memory"),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> String {
    let mut out = String::new();
    let mut rest = field;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(c) => {
                out.push(c as char);
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The directory of this process's cgroup in `mount`, given its path from `/proc/self/cgroup`.
fn cgroup_dir(mount: &CgroupMount, path: &str) -> Option<PathBuf> {
    let relative = if mount.root == "/" {
        path
    } else {
        path.strip_prefix(mount.root.as_str())?
    };
    Some(mount.mount_point.join(relative.trim_start_matches('/')))
}

/// A limit file's value; `None` for "max" / v1's "unlimited".
fn parse_limit(text: &str) -> Option<u64> {
    let bytes: u64 = text.trim().parse().ok()?;
    (bytes < V1_UNLIMITED).then_some(bytes)
}

/// Every memory limit on the process's cgroups and their ancestors.
fn cgroup_limits(proc_cgroup: &str, mountinfo: &str) -> Vec<(MemorySource, u64)> {
    let mounts = parse_mountinfo(mountinfo);
    let mut found = Vec::new();
    for line in proc_cgroup.lines() {
        // `hierarchy-id:controllers:path`; v2 is `0::path`.
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let v2 = id == "0" && controllers.is_empty();
        if !v2 && !controllers.split(',').any(|c| c == "memory") {
            continue;
        }
        let file = if v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        for mount in mounts.iter().filter(|m| m.v2 == v2 && (v2 || m.memory)) {
            let Some(mut dir) = cgroup_dir(mount, path) else {
                continue;
            };
            loop {
                let limit_file = dir.join(file);
                if let Some(bytes) = std::fs::read_to_string(&limit_file)
                    .ok()
                    .and_then(|t| parse_limit(&t))
                {
                    let source = if v2 {
                        MemorySource::CgroupV2(limit_file)
                    } else {
                        MemorySource::CgroupV1(limit_file)
                    };
                    found.push((source, bytes));
                }
                if dir == mount.mount_point || !dir.pop() {
                    break;
                }
            }
        }
    }
    found
}

/// Limits of one scope. `None`: the scope has no such limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ScopeLimits {
    pub conns_pending: Option<u32>,
    pub conns_inbound: Option<u32>,
    pub conns_outbound: Option<u32>,
    pub conns: Option<u32>,
    pub streams_inbound: u32,
    pub streams_outbound: u32,
}

/// A protocol's own stream bound (see deviation 2 in the module docs).
#[derive(Clone, Debug, Serialize)]
pub struct ProtocolLimit {
    pub protocol: String,
    /// Concurrent inbound streams per connection.
    pub streams_inbound_per_connection: u32,
    pub enforced_by: &'static str,
}

/// The effective limits of a node (`/api/node`'s `limits`).
#[derive(Clone, Debug, Serialize)]
pub struct Limits {
    pub memory: MemoryBudget,
    pub system: ScopeLimits,
    pub peer: ScopeLimits,
    pub protocols: Vec<ProtocolLimit>,
    pub idle_timeout_s: u64,
}

impl Limits {
    /// The configured limits, scaled down to what `memory` can hold.
    pub fn derive(config: &Config, memory: MemoryBudget, protocols: Vec<ProtocolLimit>) -> Self {
        let conns_fit = u32::try_from(memory.limit_bytes / CONNECTION_BYTES).unwrap_or(u32::MAX);
        let streams_fit = u32::try_from(memory.limit_bytes / STREAM_BYTES).unwrap_or(u32::MAX);
        // Split what fits in the configured inbound:outbound ratio (2:1 by default).
        let share = |part: u32, whole: u32, fit: u32| -> u32 {
            let scaled = (u64::from(fit) * u64::from(part) / u64::from(whole.max(1))) as u32;
            part.min(scaled.max(MIN_CONNS.min(part)))
        };
        let conns_total = config.max_inbound.saturating_add(config.max_outbound);
        let streams_total = SYSTEM_STREAMS_INBOUND + SYSTEM_STREAMS_OUTBOUND;
        let stream_share = |part: u32| -> u32 {
            let scaled =
                (u64::from(streams_fit) * u64::from(part) / u64::from(streams_total)) as u32;
            part.min(scaled.max(MIN_STREAMS))
        };
        Self {
            system: ScopeLimits {
                conns_pending: Some(config.max_pending),
                conns_inbound: Some(share(config.max_inbound, conns_total, conns_fit)),
                conns_outbound: Some(share(config.max_outbound, conns_total, conns_fit)),
                conns: None,
                streams_inbound: stream_share(SYSTEM_STREAMS_INBOUND),
                streams_outbound: stream_share(SYSTEM_STREAMS_OUTBOUND),
            },
            peer: ScopeLimits {
                conns_pending: None,
                conns_inbound: None,
                conns_outbound: None,
                conns: Some(config.max_per_peer),
                streams_inbound: config.max_streams_inbound,
                streams_outbound: config.max_streams_outbound,
            },
            memory,
            protocols,
            idle_timeout_s: config.idle_timeout.as_secs(),
        }
    }
}

fn check(
    scope: Scope,
    limit: Limit,
    max: Option<u32>,
    current: usize,
) -> Result<(), ConnectionDenied> {
    match max {
        Some(max) if current >= max as usize => Err(ConnectionDenied::new(Denied {
            scope,
            limit,
            max: max.into(),
        })),
        _ => Ok(()),
    }
}

/// Connection limits of the system and peer scopes, as a behaviour (rust-libp2p's
/// `connection_limits` is the model; this one reports which scope and limit refused).
pub struct Behaviour {
    system: ScopeLimits,
    peer: ScopeLimits,
    pending_inbound: HashSet<ConnectionId>,
    pending_outbound: HashSet<ConnectionId>,
    inbound: HashSet<ConnectionId>,
    outbound: HashSet<ConnectionId>,
    /// Bounded by the established connections.
    per_peer: HashMap<PeerId, HashSet<ConnectionId>>,
}

impl Behaviour {
    pub fn new(limits: &Limits) -> Self {
        Self {
            system: limits.system,
            peer: limits.peer,
            pending_inbound: HashSet::new(),
            pending_outbound: HashSet::new(),
            inbound: HashSet::new(),
            outbound: HashSet::new(),
            per_peer: HashMap::new(),
        }
    }

    fn check_peer(&self, peer: &PeerId) -> Result<(), ConnectionDenied> {
        let current = self.per_peer.get(peer).map_or(0, HashSet::len);
        check(Scope::Peer, Limit::Conns, self.peer.conns, current)
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let pending = self.system.conns_pending;
        check(
            Scope::System,
            Limit::ConnsPendingInbound,
            pending,
            self.pending_inbound.len(),
        )?;
        self.pending_inbound.insert(connection_id);
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.pending_inbound.remove(&connection_id);
        let max = self.system.conns_inbound;
        check(Scope::System, Limit::ConnsInbound, max, self.inbound.len())?;
        self.check_peer(&peer)?;
        Ok(dummy::ConnectionHandler)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _: Option<PeerId>,
        _: &[Multiaddr],
        _: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        let pending = self.system.conns_pending;
        check(
            Scope::System,
            Limit::ConnsPendingOutbound,
            pending,
            self.pending_outbound.len(),
        )?;
        self.pending_outbound.insert(connection_id);
        Ok(Vec::new())
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.pending_outbound.remove(&connection_id);
        let max = self.system.conns_outbound;
        check(
            Scope::System,
            Limit::ConnsOutbound,
            max,
            self.outbound.len(),
        )?;
        self.check_peer(&peer)?;
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            }) => {
                match endpoint {
                    ConnectedPoint::Listener { .. } => self.inbound.insert(connection_id),
                    ConnectedPoint::Dialer { .. } => self.outbound.insert(connection_id),
                };
                self.per_peer
                    .entry(peer_id)
                    .or_default()
                    .insert(connection_id);
            }
            FromSwarm::ConnectionClosed(ConnectionClosed {
                peer_id,
                connection_id,
                ..
            }) => {
                self.inbound.remove(&connection_id);
                self.outbound.remove(&connection_id);
                if let Some(set) = self.per_peer.get_mut(&peer_id) {
                    set.remove(&connection_id);
                    if set.is_empty() {
                        self.per_peer.remove(&peer_id);
                    }
                }
            }
            // A connection another behaviour denied after ours accepted it, or one that failed
            // in its handshake, is no longer pending.
            FromSwarm::DialFailure(DialFailure { connection_id, .. }) => {
                self.pending_outbound.remove(&connection_id);
            }
            FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) => {
                self.pending_inbound.remove(&connection_id);
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

/// Open streams per direction.
#[derive(Clone, Copy, Debug, Default)]
struct Open {
    inbound: u32,
    outbound: u32,
}

impl Open {
    fn get(&mut self, direction: Endpoint) -> &mut u32 {
        match direction {
            Endpoint::Listener => &mut self.inbound,
            Endpoint::Dialer => &mut self.outbound,
        }
    }
}

#[derive(Default)]
struct StreamState {
    system: Open,
    /// Peers with open streams; bounded by the connections.
    peers: HashMap<PeerId, Open>,
    /// Muxers waiting for an outbound slot, by muxer id; bounded by the connections.
    waiting: HashMap<u64, Waker>,
}

/// Stream limits of the system and peer scopes, shared by every connection's muxer.
pub struct StreamLimiter {
    system: ScopeLimits,
    peer: ScopeLimits,
    state: Mutex<StreamState>,
    denials: Denials,
    next_muxer: AtomicU64,
}

impl StreamLimiter {
    pub fn new(limits: &Limits, denials: Denials) -> Arc<Self> {
        Arc::new(Self {
            system: limits.system,
            peer: limits.peer,
            state: Mutex::new(StreamState::default()),
            denials,
            next_muxer: AtomicU64::new(0),
        })
    }

    /// Open streams of the whole node `(inbound, outbound)`.
    pub fn open(&self) -> (u32, u32) {
        let state = self.state.lock().expect("stream limiter poisoned");
        (state.system.inbound, state.system.outbound)
    }

    fn acquire(self: &Arc<Self>, peer: PeerId, direction: Endpoint) -> Result<Permit, Denied> {
        let (limit, system_max, peer_max) = match direction {
            Endpoint::Listener => (
                Limit::StreamsInbound,
                self.system.streams_inbound,
                self.peer.streams_inbound,
            ),
            Endpoint::Dialer => (
                Limit::StreamsOutbound,
                self.system.streams_outbound,
                self.peer.streams_outbound,
            ),
        };
        let mut state = self.state.lock().expect("stream limiter poisoned");
        if *state.system.get(direction) >= system_max {
            return Err(Denied {
                scope: Scope::System,
                limit,
                max: system_max.into(),
            });
        }
        let open = state.peers.entry(peer).or_default();
        if *open.get(direction) >= peer_max {
            let denied = Denied {
                scope: Scope::Peer,
                limit,
                max: peer_max.into(),
            };
            if open.inbound == 0 && open.outbound == 0 {
                state.peers.remove(&peer);
            }
            return Err(denied);
        }
        *open.get(direction) += 1;
        *state.system.get(direction) += 1;
        Ok(Permit {
            limiter: self.clone(),
            peer,
            direction,
        })
    }

    fn release(&self, peer: PeerId, direction: Endpoint) {
        let waiting = {
            let mut state = self.state.lock().expect("stream limiter poisoned");
            *state.system.get(direction) -= 1;
            if let Some(open) = state.peers.get_mut(&peer) {
                *open.get(direction) -= 1;
                if open.inbound == 0 && open.outbound == 0 {
                    state.peers.remove(&peer);
                }
            }
            if direction == Endpoint::Dialer {
                std::mem::take(&mut state.waiting)
            } else {
                HashMap::new()
            }
        };
        for waker in waiting.into_values() {
            waker.wake();
        }
    }
}

/// One open stream's place in the limits; released on drop.
struct Permit {
    limiter: Arc<StreamLimiter>,
    peer: PeerId,
    direction: Endpoint,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.limiter.release(self.peer, self.direction);
    }
}

/// A stream muxer whose streams count against the [`StreamLimiter`]: an inbound stream above a
/// limit is reset at once (dropped), an outbound one waits for a slot (deviation 3).
pub struct LimitedMuxer<M> {
    inner: M,
    peer: PeerId,
    id: u64,
    limiter: Arc<StreamLimiter>,
    /// An outbound stream is waiting for a slot (its refusal was counted).
    outbound_waiting: bool,
}

impl<M> LimitedMuxer<M> {
    pub fn new(inner: M, peer: PeerId, limiter: Arc<StreamLimiter>) -> Self {
        Self {
            inner,
            peer,
            id: limiter.next_muxer.fetch_add(1, Ordering::Relaxed),
            limiter,
            outbound_waiting: false,
        }
    }
}

impl<M> Drop for LimitedMuxer<M> {
    fn drop(&mut self) {
        if let Ok(mut state) = self.limiter.state.lock() {
            state.waiting.remove(&self.id);
        }
    }
}

impl<M> StreamMuxer for LimitedMuxer<M>
where
    M: StreamMuxer + Unpin,
    M::Substream: Unpin,
{
    type Substream = LimitedStream<M::Substream>;
    type Error = M::Error;

    fn poll_inbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        loop {
            let stream = match Pin::new(&mut this.inner).poll_inbound(cx) {
                Poll::Ready(Ok(stream)) => stream,
                other => return other.map_ok(|_| unreachable!("matched above")),
            };
            match this.limiter.acquire(this.peer, Endpoint::Listener) {
                Ok(permit) => {
                    return Poll::Ready(Ok(LimitedStream {
                        inner: stream,
                        _permit: permit,
                    }));
                }
                Err(denied) => {
                    this.limiter.denials.count(denied.scope, denied.limit);
                    tracing::debug!(peer = %this.peer, %denied, "inbound stream reset");
                    drop(stream);
                }
            }
        }
    }

    fn poll_outbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        let permit = match this.limiter.acquire(this.peer, Endpoint::Dialer) {
            Ok(permit) => permit,
            Err(denied) => {
                let mut state = this.limiter.state.lock().expect("stream limiter poisoned");
                state.waiting.insert(this.id, cx.waker().clone());
                drop(state);
                if !this.outbound_waiting {
                    this.outbound_waiting = true;
                    this.limiter.denials.count(denied.scope, denied.limit);
                    tracing::debug!(peer = %this.peer, %denied, "outbound stream waits");
                }
                return Poll::Pending;
            }
        };
        this.outbound_waiting = false;
        Pin::new(&mut this.inner)
            .poll_outbound(cx)
            .map_ok(|inner| LimitedStream {
                inner,
                _permit: permit,
            })
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        Pin::new(&mut self.get_mut().inner).poll(cx)
    }
}

/// A stream holding its place in the limits.
pub struct LimitedStream<S> {
    inner: S,
    _permit: Permit,
}

impl<S: AsyncRead + Unpin> AsyncRead for LimitedStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for LimitedStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
25 30 0:22 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs ro,mode=755
31 25 0:27 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
32 25 0:28 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
33 25 0:29 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
40 30 0:35 /kubepods/pod1 /mnt/my\\040cg rw - cgroup2 cgroup2 rw";

    #[test]
    fn mountinfo_finds_cgroup_mounts_and_the_memory_hierarchy() {
        let mounts = parse_mountinfo(MOUNTINFO);
        assert_eq!(mounts.len(), 4);
        assert!(mounts[0].memory && !mounts[0].v2);
        assert!(!mounts[1].memory);
        assert!(mounts[2].v2 && mounts[2].mount_point == Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(mounts[3].mount_point, Path::new("/mnt/my cg"));
        assert_eq!(mounts[3].root, "/kubepods/pod1");
    }

    #[test]
    fn a_cgroup_path_maps_into_the_mount_minus_its_root() {
        let mounts = parse_mountinfo(MOUNTINFO);
        assert_eq!(
            cgroup_dir(&mounts[0], "/a/b"),
            Some(PathBuf::from("/sys/fs/cgroup/memory/a/b"))
        );
        assert_eq!(
            cgroup_dir(&mounts[3], "/kubepods/pod1/c"),
            Some(PathBuf::from("/mnt/my cg/c"))
        );
        assert_eq!(cgroup_dir(&mounts[3], "/elsewhere"), None);
    }

    #[test]
    fn limit_files_parse_max_and_v1_unlimited_as_none() {
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("9223372036854771712\n"), None);
        assert_eq!(parse_limit("67108864\n"), Some(64 << 20));
        assert_eq!(parse_limit("garbage"), None);
    }

    #[test]
    fn limits_read_from_a_cgroup_tree_take_every_level() {
        let dir = std::env::temp_dir().join(format!("p2pcc-cgroup-unit-{}", std::process::id()));
        let leaf = dir.join("a/b");
        std::fs::create_dir_all(&leaf).unwrap();
        std::fs::write(dir.join("a/memory.max"), "1048576\n").unwrap();
        std::fs::write(leaf.join("memory.max"), "max\n").unwrap();
        let mountinfo = format!("33 25 0:29 / {} rw - cgroup2 cgroup2 rw", dir.display());
        let found = cgroup_limits("0::/a/b\n", &mountinfo);
        assert_eq!(
            found,
            vec![(MemorySource::CgroupV2(dir.join("a/memory.max")), 1 << 20)]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn limits_for(bytes: u64) -> Limits {
        let memory = MemoryBudget::new(MemorySource::Host, bytes, 1.0);
        Limits::derive(&Config::default(), memory, Vec::new())
    }

    #[test]
    fn plenty_of_memory_keeps_the_series_defaults() {
        let l = limits_for(64 << 30);
        assert_eq!(l.system.conns_inbound, Some(1024));
        assert_eq!(l.system.conns_outbound, Some(512));
        assert_eq!(l.system.conns_pending, Some(128));
        assert_eq!(
            (l.peer.streams_inbound, l.peer.streams_outbound),
            (128, 256)
        );
        assert_eq!(
            (l.system.streams_inbound, l.system.streams_outbound),
            (4096, 8192)
        );
        assert_eq!(l.peer.conns, Some(2));
        assert_eq!(l.idle_timeout_s, 30);
    }

    #[test]
    fn a_small_budget_shrinks_connections_and_streams_but_not_below_the_floor() {
        // 96 MiB hold 96 connections of 1 MiB, split 2:1 → 64 in, 32 out.
        let l = limits_for(96 << 20);
        assert_eq!(l.system.conns_inbound, Some(64));
        assert_eq!(l.system.conns_outbound, Some(32));
        // 384 streams of 256 KiB, split 1:2 → 128 in, 256 out.
        assert_eq!(
            (l.system.streams_inbound, l.system.streams_outbound),
            (128, 256)
        );
        let tiny = limits_for(1 << 20);
        assert_eq!(tiny.system.conns_inbound, Some(MIN_CONNS));
        assert_eq!(tiny.system.streams_inbound, MIN_STREAMS);
    }
}
