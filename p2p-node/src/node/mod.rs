//! The libp2p node: behaviours, the swarm, the event loop that owns it, and the [`Client`] the
//! rest of the program uses to talk to it (bounded channels, oneshot replies).
//!
//! Protocols: identify, ping, Kademlia (`/p2p-cc/kad/1.0.0`, server mode, bootstrapped from the
//! configured peers and refreshed periodically), gossipsub ([`gossip::TOPIC`]), file sharing
//! ([`files`], request-response) and `perf` ([`perf`], libp2p-stream). Connection limits and a
//! memory limit refuse connections; every refusal is counted in `p2pcc_connections_denied_total`.

pub mod files;
pub mod gossip;
pub mod perf;
pub mod transport;

use std::{
    collections::{HashMap, HashSet, VecDeque},
    path::Path,
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use futures::StreamExt;
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, connection_limits,
    core::ConnectedPoint,
    gossipsub, identify,
    identity::Keypair,
    kad, memory_connection_limits,
    metrics::Recorder as _,
    multiaddr::Protocol,
    ping, request_response,
    swarm::{
        ConnectionDenied, ConnectionId, DialError, ListenError, NetworkBehaviour, SwarmEvent,
        dial_opts::{DialOpts, PeerCondition},
    },
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::sockets::{Direction, SocketTable};
use files::{FileError, FileId};

/// Identify protocol version string.
const PROTOCOL_VERSION: &str = "/p2p-cc/0.1.0";
/// Our DHT (not the public IPFS one: a node of this project should not join that by accident).
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/p2p-cc/kad/1.0.0");
/// Commands queued to the event loop before senders wait.
const COMMAND_QUEUE: usize = 64;
/// A DHT query (bootstrap, providers) gives up after this long.
const KAD_QUERY_TIMEOUT: Duration = Duration::from_secs(30);
/// DHT queries waiting for an answer on behalf of a caller; more are refused.
const MAX_PENDING_QUERIES: usize = 64;
/// File requests waiting for an answer; more are refused ("busy").
const MAX_PENDING_REQUESTS: usize = 256;
/// File request-response streams per connection.
const MAX_FILE_STREAMS: usize = 64;
/// Listen addresses taken from one identify message.
const MAX_IDENTIFY_ADDRS: usize = 8;
/// Dials started per maintenance tick to reach `min_peers`.
const MAX_DIALS_PER_TICK: usize = 8;
/// Provider records and DHT records kept (see kad's `MemoryStoreConfig`).
const MAX_DHT_RECORDS: usize = 1024;

/// Node configuration. Defaults follow the connection limits of the series this project grew
/// from ("P2P Production Best Practices").
#[derive(Clone, Debug)]
pub struct Config {
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start (full multiaddrs ending in `/p2p/<PeerId>`); the DHT bootstraps
    /// from them.
    pub peers: Vec<Multiaddr>,
    /// Close connections without open streams after this long. Default 30 s.
    pub idle_timeout: Duration,
    /// Established inbound connections. Default 1024.
    pub max_inbound: u32,
    /// Established outbound connections. Default 512.
    pub max_outbound: u32,
    /// Pending (handshaking) connections per direction. Default 128.
    pub max_pending: u32,
    /// Established connections per peer. Default 2.
    pub max_per_peer: u32,
    /// Refuse new connections above this share of system memory. Default 0.9.
    pub max_memory_fraction: f64,
    /// Kademlia re-bootstrap (routing-table refresh) interval. Default 5 min.
    pub bootstrap_interval: Duration,
    /// Dial peers from the routing table while fewer than this many are connected (so gossip
    /// has a mesh). Default 8; 0 disables.
    pub min_peers: usize,
    /// How often the connection count is checked against `min_peers`. Default 10 s.
    pub maintenance_interval: Duration,
    /// How often the node announces its status on the gossip topic. Default 60 s.
    pub status_interval: Duration,
    /// A file request (manifest or chunk) not answered within this fails, and the chunk goes
    /// to another provider. Default 10 s.
    pub request_timeout: Duration,
    /// The table the transport registers the node's sockets in (and binds PeerIds to). Default:
    /// the process's table ([`SocketTable::global`]); several swarms in one process (tests)
    /// each pass their own.
    pub sockets: Arc<SocketTable>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: Vec::new(),
            peers: Vec::new(),
            idle_timeout: Duration::from_secs(30),
            max_inbound: 1024,
            max_outbound: 512,
            max_pending: 128,
            max_per_peer: 2,
            max_memory_fraction: 0.9,
            bootstrap_interval: Duration::from_secs(300),
            min_peers: 8,
            maintenance_interval: Duration::from_secs(10),
            status_interval: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
            sockets: SocketTable::global().clone(),
        }
    }
}

#[derive(NetworkBehaviour)]
pub struct Behaviour {
    limits: connection_limits::Behaviour,
    memory: memory_connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    gossipsub: gossipsub::Behaviour,
    files: request_response::Behaviour<files::Codec>,
    stream: libp2p_stream::Behaviour,
}

/// What the node says about itself (`GET /api/node`).
#[derive(Clone, Debug, Serialize)]
pub struct NodeInfo {
    pub peer_id: String,
    pub listen_addrs: Vec<String>,
    pub connected_peers: usize,
    pub inbound_connections: usize,
    pub outbound_connections: usize,
    /// Peers in the Kademlia routing table.
    pub routing_table_peers: usize,
    /// Peers in this node's gossipsub mesh for the status topic.
    pub gossip_mesh_peers: usize,
    pub shared_files: usize,
    /// Connections refused by a limit since start.
    pub connections_denied: u64,
    /// Gossip messages rejected by validation since start.
    pub gossip_rejected: u64,
}

/// One established connection, as the swarm reported it.
#[derive(Clone, Debug, Serialize)]
pub struct ConnectionInfo {
    #[serde(serialize_with = "ser_peer")]
    pub peer: PeerId,
    pub direction: Direction,
    /// The remote's address: the one dialed, or the one the connection came from.
    pub remote: Multiaddr,
    /// The local listen address an inbound connection arrived on.
    pub local: Option<Multiaddr>,
}

fn ser_peer<S: serde::Serializer>(peer: &PeerId, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(peer)
}

/// `reason` label of the rejection counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GossipRejectLabels {
    reason: gossip::Rejection,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeniedLabels {
    direction: &'static str,
    /// `connection_limit`, `memory` or `other`.
    limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    /// `not_found`, `busy` or `bad_index`.
    reason: &'static str,
}

/// The node's own counters (prefix `p2pcc_`).
pub struct NodeMetrics {
    gossip_rejected: Family<GossipRejectLabels, Counter>,
    gossip_accepted: Counter,
    connections_denied: Family<DeniedLabels, Counter>,
    file_requests_refused: Family<RefusedLabels, Counter>,
    chunks_served: Counter,
    chunks_corrupt: Counter,
    routing_table_peers: Gauge,
}

impl NodeMetrics {
    fn new(registry: &mut Registry) -> Self {
        let m = Self {
            gossip_rejected: Family::default(),
            gossip_accepted: Counter::default(),
            connections_denied: Family::default(),
            file_requests_refused: Family::default(),
            chunks_served: Counter::default(),
            chunks_corrupt: Counter::default(),
            routing_table_peers: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("p2pcc");
        r.register(
            "gossip_rejected",
            "Gossip messages rejected by validation, by reason",
            m.gossip_rejected.clone(),
        );
        r.register(
            "gossip_accepted",
            "Gossip messages that passed validation",
            m.gossip_accepted.clone(),
        );
        r.register(
            "connections_denied",
            "Connections refused by a connection or memory limit",
            m.connections_denied.clone(),
        );
        r.register(
            "file_requests_refused",
            "Inbound file requests answered without data, by reason",
            m.file_requests_refused.clone(),
        );
        r.register(
            "file_chunks_served",
            "File chunks sent to peers",
            m.chunks_served.clone(),
        );
        r.register(
            "file_chunks_corrupt",
            "Fetched file chunks that failed hash verification (and were refetched)",
            m.chunks_corrupt.clone(),
        );
        r.register(
            "kad_routing_table_peers",
            "Peers in the Kademlia routing table",
            m.routing_table_peers.clone(),
        );
        m
    }

    fn gossip_rejected_total(&self) -> u64 {
        [
            gossip::Rejection::Unsigned,
            gossip::Rejection::Oversized,
            gossip::Rejection::Malformed,
            gossip::Rejection::Invalid,
        ]
        .into_iter()
        .map(|reason| {
            self.gossip_rejected
                .get_or_create(&GossipRejectLabels { reason })
                .get()
        })
        .sum()
    }

    fn connections_denied_total(&self) -> u64 {
        let mut total = 0;
        for direction in ["inbound", "outbound"] {
            for limit in ["connection_limit", "memory", "other"] {
                total += self
                    .connections_denied
                    .get_or_create(&DeniedLabels { direction, limit })
                    .get();
            }
        }
        total
    }
}

/// What a share did.
#[derive(Clone, Debug, Serialize)]
pub struct ShareReport {
    pub id: FileId,
    pub name: String,
    pub size: u64,
    pub chunks: usize,
    /// Whether the provider record reached peers in the DHT (it is stored locally either way
    /// and republished periodically).
    pub dht_published: bool,
    pub dht_error: Option<String>,
}

enum Command {
    Info(oneshot::Sender<NodeInfo>),
    Connections(oneshot::Sender<Vec<ConnectionInfo>>),
    RoutingTable(oneshot::Sender<Vec<PeerId>>),
    Announcements(oneshot::Sender<Vec<gossip::Received>>),
    Publish {
        announcement: gossip::Announcement,
        reply: oneshot::Sender<Result<(), String>>,
    },
    Share {
        file: files::SharedFile,
        reply: ShareReply,
    },
    SharedFiles(oneshot::Sender<Vec<files::SharedSummary>>),
    GetProviders {
        id: FileId,
        reply: oneshot::Sender<Result<Vec<PeerId>, FileError>>,
    },
    Request {
        peer: PeerId,
        request: files::Request,
        reply: RequestReply,
    },
    PublishRaw {
        data: Vec<u8>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    SetFault {
        id: FileId,
        index: u32,
        fault: Option<files::Fault>,
    },
}

/// A handle to the running node.
#[derive(Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    streams: libp2p_stream::Control,
    local_peer_id: PeerId,
    metrics: Arc<NodeMetrics>,
}

impl Client {
    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer_id
    }

    async fn call<T>(&self, command: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(command(tx)).await.ok()?;
        rx.await.ok()
    }

    pub async fn info(&self) -> anyhow::Result<NodeInfo> {
        self.call(Command::Info)
            .await
            .context("the node has stopped")
    }

    /// The swarm's established connections.
    pub async fn connections(&self) -> anyhow::Result<Vec<ConnectionInfo>> {
        self.call(Command::Connections)
            .await
            .context("the node has stopped")
    }

    /// Peers in the Kademlia routing table.
    pub async fn routing_table(&self) -> anyhow::Result<Vec<PeerId>> {
        self.call(Command::RoutingTable)
            .await
            .context("the node has stopped")
    }

    /// The most recent validated gossip announcements (at most [`gossip::MAX_RECENT`]).
    pub async fn announcements(&self) -> anyhow::Result<Vec<gossip::Received>> {
        self.call(Command::Announcements)
            .await
            .context("the node has stopped")
    }

    /// Publishes an announcement on [`gossip::TOPIC`].
    pub async fn publish(&self, announcement: gossip::Announcement) -> anyhow::Result<()> {
        self.call(|reply| Command::Publish {
            announcement,
            reply,
        })
        .await
        .context("the node has stopped")?
        .map_err(|e| anyhow::anyhow!("publishing on {}: {e}", gossip::TOPIC))
    }

    /// Shares a file: hashes it, serves it, announces it in the DHT and on gossip.
    pub async fn share(&self, path: &Path) -> Result<ShareReport, FileError> {
        let owned = path.to_owned();
        let manifest = tokio::task::spawn_blocking(move || files::Manifest::build(&owned))
            .await
            .map_err(|_| FileError::NodeStopped)??;
        let id = manifest.id();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| id.to_string());
        let report = ShareReport {
            id,
            name: name.clone(),
            size: manifest.size,
            chunks: manifest.chunks.len(),
            dht_published: false,
            dht_error: None,
        };
        let file = files::SharedFile {
            id,
            name,
            path: path.to_owned(),
            manifest,
        };
        let published = self
            .call(|reply| Command::Share { file, reply })
            .await
            .ok_or(FileError::NodeStopped)??;
        Ok(ShareReport {
            dht_published: published.is_ok(),
            dht_error: published.err(),
            ..report
        })
    }

    pub async fn shared_files(&self) -> anyhow::Result<Vec<files::SharedSummary>> {
        self.call(Command::SharedFiles)
            .await
            .context("the node has stopped")
    }

    /// Fetches a file by id from its providers into `out` (see [`files::fetch`]).
    pub async fn fetch(&self, id: FileId, out: &Path) -> Result<files::FetchReport, FileError> {
        files::fetch(self, id, out).await
    }

    /// Providers of `id` found in the DHT.
    pub async fn get_providers(&self, id: FileId) -> Result<Vec<PeerId>, FileError> {
        self.call(|reply| Command::GetProviders { id, reply })
            .await
            .ok_or(FileError::NodeStopped)?
    }

    /// One file-protocol request.
    pub async fn request(
        &self,
        peer: PeerId,
        request: files::Request,
    ) -> Result<files::Response, FileError> {
        self.call(|reply| Command::Request {
            peer,
            request,
            reply,
        })
        .await
        .ok_or(FileError::NodeStopped)?
    }

    /// Test hook: publish bytes on the topic without the checks [`Client::publish`] makes, as
    /// a misbehaving peer would.
    #[doc(hidden)]
    pub async fn publish_raw(&self, data: Vec<u8>) -> anyhow::Result<()> {
        self.call(|reply| Command::PublishRaw { data, reply })
            .await
            .context("the node has stopped")?
            .map_err(|e| anyhow::anyhow!("publishing on {}: {e}", gossip::TOPIC))
    }

    /// Test hook: make this node misbehave when serving chunk `index` of `id`.
    #[doc(hidden)]
    pub async fn set_fault(&self, id: FileId, index: u32, fault: Option<files::Fault>) {
        let _ = self
            .commands
            .send(Command::SetFault { id, index, fault })
            .await;
    }

    /// Runs a perf transfer with `peer` (see [`perf`]).
    pub async fn perf(
        &self,
        peer: PeerId,
        upload_bytes: u64,
        download_bytes: u64,
    ) -> anyhow::Result<perf::PerfReport> {
        perf::run(self.streams.clone(), peer, upload_bytes, download_bytes).await
    }
}

/// Builds the swarm, starts listening and dialing, and spawns the event loop.
pub fn spawn(key: Keypair, config: Config, registry: &mut Registry) -> anyhow::Result<Client> {
    let local_peer_id = key.public().to_peer_id();
    let metrics = libp2p::metrics::Metrics::new(registry.sub_registry_with_prefix("libp2p"));
    let node_metrics = Arc::new(NodeMetrics::new(registry));
    let limits = connection_limits::ConnectionLimits::default()
        .with_max_pending_incoming(Some(config.max_pending))
        .with_max_pending_outgoing(Some(config.max_pending))
        .with_max_established_incoming(Some(config.max_inbound))
        .with_max_established_outgoing(Some(config.max_outbound))
        .with_max_established_per_peer(Some(config.max_per_peer));

    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_other_transport(
            |key| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
                Ok(transport::tcp(key, config.sockets.clone())?)
            },
        )?
        .with_bandwidth_metrics(registry.sub_registry_with_prefix("libp2p"))
        .with_behaviour(
            |key| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
                let peer_id = key.public().to_peer_id();
                let mut kad_config = kad::Config::new(KAD_PROTOCOL);
                kad_config
                    .set_periodic_bootstrap_interval(Some(config.bootstrap_interval))
                    .set_query_timeout(KAD_QUERY_TIMEOUT);
                let store = kad::store::MemoryStore::with_config(
                    peer_id,
                    kad::store::MemoryStoreConfig {
                        max_records: MAX_DHT_RECORDS,
                        max_provided_keys: MAX_DHT_RECORDS,
                        max_providers_per_key: files::MAX_PROVIDERS,
                        ..Default::default()
                    },
                );
                let mut kad = kad::Behaviour::with_config(peer_id, store, kad_config);
                // Answer DHT queries even without a confirmed external address (testbeds, LANs).
                kad.set_mode(Some(kad::Mode::Server));
                Ok(Behaviour {
                    limits: connection_limits::Behaviour::new(limits),
                    memory: memory_connection_limits::Behaviour::with_max_percentage(
                        config.max_memory_fraction,
                    ),
                    identify: identify::Behaviour::new(identify::Config::new(
                        PROTOCOL_VERSION.into(),
                        key.public(),
                    )),
                    ping: ping::Behaviour::default(),
                    kad,
                    gossipsub: gossip::behaviour(key)?,
                    files: request_response::Behaviour::with_codec(
                        files::Codec,
                        [(files::PROTOCOL, request_response::ProtocolSupport::Full)],
                        request_response::Config::default()
                            .with_request_timeout(config.request_timeout)
                            .with_max_concurrent_streams(MAX_FILE_STREAMS),
                    ),
                    stream: libp2p_stream::Behaviour::new(),
                })
            },
        )?
        .with_swarm_config(|c| c.with_idle_connection_timeout(config.idle_timeout))
        .build();

    for addr in &config.listen {
        swarm
            .listen_on(addr.clone())
            .with_context(|| format!("listening on {addr}"))?;
    }
    for addr in &config.peers {
        if let Some(Protocol::P2p(peer)) = addr.iter().last() {
            let mut without_p2p = addr.clone();
            without_p2p.pop();
            swarm.behaviour_mut().kad.add_address(&peer, without_p2p);
        }
        swarm
            .dial(addr.clone())
            .with_context(|| format!("dialing {addr}"))?;
    }
    if !config.peers.is_empty() {
        // Fails only without known peers (no `--peer` carried a PeerId); the periodic bootstrap
        // and identify fill the table then.
        let _ = swarm.behaviour_mut().kad.bootstrap();
    }

    let streams = swarm.behaviour().stream.new_control();
    perf::serve(streams.clone())?;
    let (commands, rx) = mpsc::channel(COMMAND_QUEUE);
    tokio::spawn(EventLoop::new(swarm, rx, metrics, node_metrics.clone(), &config).run());
    Ok(Client {
        commands,
        streams,
        local_peer_id,
        metrics: node_metrics,
    })
}

/// Share's reply: the local store's verdict, then the DHT publication's.
type ShareReply = oneshot::Sender<Result<Result<(), String>, FileError>>;
type RequestReply = oneshot::Sender<Result<files::Response, FileError>>;

struct PendingProviders {
    found: HashSet<PeerId>,
    reply: oneshot::Sender<Result<Vec<PeerId>, FileError>>,
    id: FileId,
}

struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    metrics: libp2p::metrics::Metrics,
    node_metrics: Arc<NodeMetrics>,
    topic: gossipsub::IdentTopic,
    /// Established connections (bounded by the connection limits).
    connections: HashMap<ConnectionId, ConnectionInfo>,
    recent: VecDeque<gossip::Received>,
    store: files::Store,
    served: mpsc::Receiver<files::Served>,
    /// The maps below are bounded by `MAX_PENDING_QUERIES` / `MAX_PENDING_REQUESTS`.
    pending_provide: HashMap<kad::QueryId, ShareReply>,
    pending_providers: HashMap<kad::QueryId, PendingProviders>,
    pending_requests: HashMap<request_response::OutboundRequestId, (PeerId, RequestReply)>,
    min_peers: usize,
    maintenance: tokio::time::Interval,
    status: tokio::time::Interval,
    /// The last status published and when: an identical one is not published again within
    /// [`STATUS_REPEAT`] (gossipsub would refuse it as a duplicate, with a warning, while its
    /// content-addressed id is still in the duplicate cache).
    last_status: Option<(gossip::Announcement, tokio::time::Instant)>,
}

/// How long an unchanged status goes unrepeated; well past gossipsub's duplicate cache (60 s).
const STATUS_REPEAT: Duration = Duration::from_secs(300);

fn interval(period: Duration) -> tokio::time::Interval {
    let mut i = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    i
}

impl EventLoop {
    fn new(
        swarm: Swarm<Behaviour>,
        commands: mpsc::Receiver<Command>,
        metrics: libp2p::metrics::Metrics,
        node_metrics: Arc<NodeMetrics>,
        config: &Config,
    ) -> Self {
        let (store, served) = files::Store::new();
        Self {
            swarm,
            commands,
            metrics,
            node_metrics,
            topic: gossipsub::IdentTopic::new(gossip::TOPIC),
            connections: HashMap::new(),
            recent: VecDeque::new(),
            store,
            served,
            pending_provide: HashMap::new(),
            pending_providers: HashMap::new(),
            pending_requests: HashMap::new(),
            min_peers: config.min_peers,
            maintenance: interval(config.maintenance_interval),
            status: interval(config.status_interval),
            last_status: None,
        }
    }

    async fn run(mut self) {
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_event(event),
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => return,
                },
                Some(served) = self.served.recv() => {
                    self.store.finished();
                    self.respond(served.channel, served.response);
                }
                _ = self.maintenance.tick() => self.maintain_peers(),
                _ = self.status.tick() => self.announce_status(),
            }
        }
    }

    fn routing_table(&mut self) -> Vec<PeerId> {
        self.swarm
            .behaviour_mut()
            .kad
            .kbuckets()
            .flat_map(|b| b.iter().map(|e| *e.node.key.preimage()).collect::<Vec<_>>())
            .collect()
    }

    fn publish(&mut self, announcement: &gossip::Announcement) -> Result<(), String> {
        let data = gossip::encode(announcement)?;
        self.swarm
            .behaviour_mut()
            .gossipsub
            .publish(self.topic.clone(), data)
            .map(|_| ())
            .map_err(|e| match e {
                gossipsub::PublishError::NoPeersSubscribedToTopic => {
                    "no connected peer is subscribed to the topic yet".to_owned()
                }
                e => format!("{e:?}"),
            })
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Info(reply) => {
                let peer_id = *self.swarm.local_peer_id();
                let inbound = self
                    .connections
                    .values()
                    .filter(|c| c.direction == Direction::Inbound)
                    .count();
                let routing_table_peers = self.routing_table().len();
                let topic = self.topic.hash();
                let _ = reply.send(NodeInfo {
                    peer_id: peer_id.to_base58(),
                    listen_addrs: self
                        .swarm
                        .listeners()
                        .map(|a| format!("{a}/p2p/{peer_id}"))
                        .collect(),
                    connected_peers: self.swarm.connected_peers().count(),
                    inbound_connections: inbound,
                    outbound_connections: self.connections.len() - inbound,
                    routing_table_peers,
                    gossip_mesh_peers: self.swarm.behaviour().gossipsub.mesh_peers(&topic).count(),
                    shared_files: self.store.len(),
                    connections_denied: self.node_metrics.connections_denied_total(),
                    gossip_rejected: self.node_metrics.gossip_rejected_total(),
                });
            }
            Command::Connections(reply) => {
                let _ = reply.send(self.connections.values().cloned().collect());
            }
            Command::RoutingTable(reply) => {
                let _ = reply.send(self.routing_table());
            }
            Command::Announcements(reply) => {
                let _ = reply.send(self.recent.iter().cloned().collect());
            }
            Command::Publish {
                announcement,
                reply,
            } => {
                let _ = reply.send(self.publish(&announcement));
            }
            Command::Share { file, reply } => {
                let announcement = gossip::Announcement::File {
                    id: file.id.to_string(),
                    name: file.name.chars().take(gossip::MAX_NAME_BYTES / 4).collect(),
                    size: file.manifest.size,
                };
                let id = file.id;
                if let Err(e) = self.store.insert(file) {
                    let _ = reply.send(Err(e));
                    return;
                }
                if let Err(e) = self.publish(&announcement) {
                    tracing::debug!(%id, "file announcement not published: {e}");
                }
                match self.swarm.behaviour_mut().kad.start_providing(id.key()) {
                    Ok(query) if self.pending_provide.len() < MAX_PENDING_QUERIES => {
                        self.pending_provide.insert(query, reply);
                    }
                    Ok(_) => {
                        let _ = reply.send(Ok(Err("publishing in the background".into())));
                    }
                    Err(e) => {
                        let _ = reply.send(Ok(Err(format!("DHT provider store: {e}"))));
                    }
                }
            }
            Command::SharedFiles(reply) => {
                let _ = reply.send(self.store.list());
            }
            Command::GetProviders { id, reply } => {
                if self.pending_providers.len() >= MAX_PENDING_QUERIES {
                    let _ = reply.send(Err(FileError::Busy));
                    return;
                }
                let query = self.swarm.behaviour_mut().kad.get_providers(id.key());
                self.pending_providers.insert(
                    query,
                    PendingProviders {
                        found: HashSet::new(),
                        reply,
                        id,
                    },
                );
            }
            Command::Request {
                peer,
                request,
                reply,
            } => {
                if self.pending_requests.len() >= MAX_PENDING_REQUESTS {
                    let _ = reply.send(Err(FileError::Busy));
                    return;
                }
                let id = self
                    .swarm
                    .behaviour_mut()
                    .files
                    .send_request(&peer, request);
                self.pending_requests.insert(id, (peer, reply));
            }
            Command::PublishRaw { data, reply } => {
                let result = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(self.topic.clone(), data)
                    .map(|_| ())
                    .map_err(|e| format!("{e:?}"));
                let _ = reply.send(result);
            }
            Command::SetFault { id, index, fault } => self.store.set_fault(id, index, fault),
        }
    }

    /// Dials routing-table peers while fewer than `min_peers` are connected.
    fn maintain_peers(&mut self) {
        let connected: HashSet<PeerId> = self.swarm.connected_peers().copied().collect();
        let wanted = self.min_peers.saturating_sub(connected.len());
        if wanted == 0 {
            return;
        }
        let candidates: Vec<PeerId> = self
            .routing_table()
            .into_iter()
            .filter(|p| !connected.contains(p))
            .take(wanted.min(MAX_DIALS_PER_TICK))
            .collect();
        for peer in candidates {
            let opts = DialOpts::peer_id(peer)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                tracing::debug!(%peer, %e, "dial from routing table failed");
            }
        }
    }

    fn announce_status(&mut self) {
        let routing_table_peers = self.routing_table().len() as u32;
        let algorithm = SocketTable::global()
            .algorithm()
            .unwrap_or_else(|| "default".into());
        let status = gossip::Announcement::Status {
            algorithm,
            connected_peers: self.swarm.connected_peers().count() as u32,
            routing_table_peers,
            shared_files: self.store.len() as u32,
        };
        let now = tokio::time::Instant::now();
        if let Some((last, at)) = &self.last_status
            && *last == status
            && now.duration_since(*at) < STATUS_REPEAT
        {
            tracing::debug!("status unchanged: not published again");
            return;
        }
        match self.publish(&status) {
            Ok(()) => self.last_status = Some((status, now)),
            Err(e) => tracing::debug!("status not published: {e}"),
        }
    }

    fn respond(
        &mut self,
        channel: request_response::ResponseChannel<files::Response>,
        response: files::Response,
    ) {
        if matches!(response, files::Response::Chunk(_)) {
            self.node_metrics.chunks_served.inc();
        }
        // Fails only if the requester gave up (timeout, closed connection).
        let _ = self
            .swarm
            .behaviour_mut()
            .files
            .send_response(channel, response);
    }

    fn count_denied(&self, direction: &'static str, cause: &ConnectionDenied) {
        let limit = if cause
            .downcast_ref::<connection_limits::Exceeded>()
            .is_some()
        {
            "connection_limit"
        } else if cause
            .downcast_ref::<memory_connection_limits::MemoryUsageLimitExceeded>()
            .is_some()
        {
            "memory"
        } else {
            "other"
        };
        self.node_metrics
            .connections_denied
            .get_or_create(&DeniedLabels { direction, limit })
            .inc();
        tracing::debug!(direction, %cause, "connection denied");
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        self.metrics.record(&event);
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                // The line users copy into another node's `--peer`; tests and xtask read it.
                println!("listening on {address}/p2p/{}", self.swarm.local_peer_id());
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                let info = match endpoint {
                    ConnectedPoint::Dialer { address, .. } => ConnectionInfo {
                        peer: peer_id,
                        direction: Direction::Outbound,
                        remote: address,
                        local: None,
                    },
                    ConnectedPoint::Listener {
                        local_addr,
                        send_back_addr,
                    } => ConnectionInfo {
                        peer: peer_id,
                        direction: Direction::Inbound,
                        remote: send_back_addr,
                        local: Some(local_addr),
                    },
                };
                self.connections.insert(connection_id, info);
                tracing::info!(%peer_id, "connected");
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                cause,
                ..
            } => {
                self.connections.remove(&connection_id);
                tracing::info!(%peer_id, ?cause, "connection closed");
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                if let DialError::Denied { cause } = &error {
                    self.count_denied("outbound", cause);
                }
                tracing::warn!(?peer_id, %error, "dial failed");
            }
            SwarmEvent::IncomingConnectionError { error, .. } => {
                if let ListenError::Denied { cause } = &error {
                    self.count_denied("inbound", cause);
                }
                tracing::debug!(%error, "incoming connection failed");
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(e)) => {
                self.metrics.record(&e);
                if let identify::Event::Received { peer_id, info, .. } = e
                    && info.protocols.contains(&KAD_PROTOCOL)
                {
                    for addr in info.listen_addrs.into_iter().take(MAX_IDENTIFY_ADDRS) {
                        self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(e)) => self.metrics.record(&e),
            SwarmEvent::Behaviour(BehaviourEvent::Kad(e)) => {
                self.metrics.record(&e);
                self.on_kad(e);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(e)) => {
                self.metrics.record(&e);
                self.on_gossip(e);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Files(e)) => self.on_files(e),
            _ => {}
        }
    }

    fn on_kad(&mut self, event: kad::Event) {
        match event {
            kad::Event::RoutingUpdated { .. } => {
                let n = self.routing_table().len();
                self.node_metrics.routing_table_peers.set(n as i64);
            }
            kad::Event::OutboundQueryProgressed {
                id, result, step, ..
            } => match result {
                kad::QueryResult::StartProviding(result) => {
                    if let Some(reply) = self.pending_provide.remove(&id) {
                        let _ = reply.send(Ok(result.map(|_| ()).map_err(|e| e.to_string())));
                    }
                }
                kad::QueryResult::GetProviders(result) => {
                    let local = *self.swarm.local_peer_id();
                    let Some(pending) = self.pending_providers.get_mut(&id) else {
                        return;
                    };
                    if let Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) = result {
                        for p in providers.into_iter().filter(|p| *p != local) {
                            if pending.found.len() < files::MAX_PROVIDERS {
                                pending.found.insert(p);
                            }
                        }
                    }
                    let enough = pending.found.len() >= files::MAX_PROVIDERS;
                    if step.last || enough {
                        if let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                            q.finish();
                        }
                        let pending = self.pending_providers.remove(&id).expect("present");
                        let result = if pending.found.is_empty() {
                            Err(FileError::NoProviders(pending.id))
                        } else {
                            Ok(pending.found.into_iter().collect())
                        };
                        let _ = pending.reply.send(result);
                    }
                }
                kad::QueryResult::Bootstrap(result) => {
                    tracing::debug!(?result, "kad bootstrap step");
                }
                _ => {}
            },
            _ => {}
        }
    }

    fn on_gossip(&mut self, event: gossipsub::Event) {
        let gossipsub::Event::Message {
            propagation_source,
            message_id,
            message,
        } = event
        else {
            return;
        };
        let acceptance = match gossip::validate(&message) {
            Ok(received) => {
                self.node_metrics.gossip_accepted.inc();
                if self.recent.len() >= gossip::MAX_RECENT {
                    self.recent.pop_front();
                }
                self.recent.push_back(received);
                gossipsub::MessageAcceptance::Accept
            }
            Err(reason) => {
                self.node_metrics
                    .gossip_rejected
                    .get_or_create(&GossipRejectLabels { reason })
                    .inc();
                tracing::debug!(%propagation_source, ?reason, "gossip message rejected");
                gossipsub::MessageAcceptance::Reject
            }
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&message_id, &propagation_source, acceptance);
    }

    fn on_files(&mut self, event: request_response::Event<files::Request, files::Response>) {
        match event {
            request_response::Event::Message {
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => match self.store.handle(request, channel) {
                files::Handled::Now(channel, response) => self.respond(channel, response),
                files::Handled::Later => {}
                files::Handled::Refused(refusal, channel) => {
                    let (reason, response) = match refusal {
                        files::Refusal::NotFound => ("not_found", files::Response::NotFound),
                        files::Refusal::Busy => ("busy", files::Response::Busy),
                        files::Refusal::BadIndex => {
                            ("bad_index", files::Response::Error("no such chunk".into()))
                        }
                    };
                    self.node_metrics
                        .file_requests_refused
                        .get_or_create(&RefusedLabels { reason })
                        .inc();
                    self.respond(channel, response);
                }
            },
            request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some((_, reply)) = self.pending_requests.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                }
            }
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => {
                if let Some((peer, reply)) = self.pending_requests.remove(&request_id) {
                    let _ = reply.send(Err(FileError::Request {
                        peer,
                        reason: error.to_string(),
                    }));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "inbound file request failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }
}
