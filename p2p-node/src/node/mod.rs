//! The libp2p node: behaviours, the swarm, the event loop that owns it, and the [`Client`] the
//! rest of the program uses to talk to it (bounded channels, oneshot replies).
//!
//! Protocols: identify, ping, Kademlia (`/p2p-cc/kad/1.0.0`, server mode, bootstrapped from the
//! configured peers and refreshed periodically), gossipsub ([`gossip::TOPIC`]), file sharing
//! ([`files`], request-response) and `perf` ([`perf`], libp2p-stream). Resource limits per scope
//! ([`limits`]: connections, streams, memory from the cgroup) refuse the excess; every refusal is
//! counted in `p2pcc_resource_denied_total{scope,limit}` (connections also in
//! `p2pcc_connections_denied_total{direction,limit}`).
//!
//! Connections whose pings fail are closed, and the `--peer` bootstrap peers are redialled with
//! backoff when lost ([`bootstrap`]).
//!
//! Files: `client.rs` (the API handle), `event_loop.rs` (owns the swarm), `metrics.rs`,
//! `limits.rs`, `bootstrap.rs` (reconnection policy), one file per protocol.

pub mod bootstrap;
mod client;
mod event_loop;
pub mod files;
pub mod gossip;
pub mod limits;
mod metrics;
pub mod perf;
pub mod transport;

pub use client::{Client, ShareReport};

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Transport as _, core::muxing::StreamMuxerBox, gossipsub,
    identify, identity::Keypair, kad, memory_connection_limits, multiaddr::Protocol, ping,
    request_response, swarm::NetworkBehaviour, yamux,
};
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::sockets::{Direction, SocketTable};
use event_loop::EventLoop;
use metrics::NodeMetrics;

/// Identify protocol version string.
const PROTOCOL_VERSION: &str = "/p2p-cc/0.1.0";
/// Identify agent version: the program and its version (as go- and js-libp2p name theirs).
const AGENT_VERSION: &str = concat!("p2p-node/", env!("CARGO_PKG_VERSION"));
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
    /// Peers to dial at start (`--peer`): any multiaddr. One ending in `/p2p/<PeerId>` also
    /// seeds the DHT (which bootstraps from it) and is redialled with backoff whenever it is
    /// lost (see [`bootstrap`]; up to [`bootstrap::MAX_BOOTSTRAP_PEERS`]); one without a PeerId
    /// is dialled once. Default: none.
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
    /// Open inbound streams per peer (all its connections); more are reset. Default 128.
    pub max_streams_inbound: u32,
    /// Open outbound streams per peer; more wait for a slot. Default 256.
    pub max_streams_outbound: u32,
    /// Share of the memory limit (the cgroup's `memory.max`, or host RAM without one) the node
    /// may use; new connections are refused above it, and the connection and stream limits
    /// shrink to fit it (see [`limits`]). Default 0.9.
    pub max_memory_fraction: f64,
    /// Kademlia re-bootstrap (routing-table refresh) interval. Default 5 min.
    pub bootstrap_interval: Duration,
    /// Dial peers from the routing table while fewer than this many are connected (so gossip
    /// has a mesh). Default 8; 0 disables.
    pub min_peers: usize,
    /// How often the connection count is checked against `min_peers`. Default 10 s.
    pub maintenance_interval: Duration,
    /// A ping is sent on every connection this often. Default 15 s (libp2p-ping's).
    pub ping_interval: Duration,
    /// A ping not answered within this fails; a connection that has answered pings and then goes
    /// a ping interval plus this long without an answer is closed ([`bootstrap`]). Default 20 s
    /// (libp2p-ping's).
    pub ping_timeout: Duration,
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
            max_streams_inbound: 128,
            max_streams_outbound: 256,
            max_memory_fraction: 0.9,
            bootstrap_interval: Duration::from_secs(300),
            min_peers: 8,
            maintenance_interval: Duration::from_secs(10),
            ping_interval: Duration::from_secs(15),
            ping_timeout: Duration::from_secs(20),
            status_interval: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
            sockets: SocketTable::global().clone(),
        }
    }
}

#[derive(NetworkBehaviour)]
pub struct Behaviour {
    limits: limits::Behaviour,
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
    /// The effective resource limits (after scaling to the memory budget).
    pub limits: limits::Limits,
    /// Refusals by scope and limit since start (connections and streams; non-zero ones).
    pub denied: Vec<limits::DeniedCount>,
    /// Streams open now, whole node.
    pub streams_inbound: u32,
    pub streams_outbound: u32,
    /// Gossip messages rejected by validation since start.
    pub gossip_rejected: u64,
    /// Connected peers whose gossipsub score is below the graylist threshold (ignored).
    pub gossip_graylisted_peers: usize,
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
    /// What the remote said about itself in identify, once its message arrived (identify caps
    /// a message at 4 KiB, which bounds these).
    pub identify: Option<RemoteIdentity>,
    /// The round trip of the last answered ping on this connection.
    pub ping_rtt: Option<Duration>,
}

/// The parts of a remote's identify message the node keeps per connection.
#[derive(Clone, Debug, Serialize)]
pub struct RemoteIdentity {
    pub agent_version: String,
    pub protocol_version: String,
    pub protocols: Vec<String>,
}

fn ser_peer<S: serde::Serializer>(peer: &PeerId, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(peer)
}

/// Builds the swarm, starts listening and dialing, and spawns the event loop.
pub fn spawn(key: Keypair, config: Config, registry: &mut Registry) -> anyhow::Result<Client> {
    let local_peer_id = key.public().to_peer_id();
    // libp2p-metrics prefixes its families with `libp2p_` itself: given the root registry,
    // names are `libp2p_swarm_…`, not `libp2p_libp2p_swarm_…`.
    let metrics = libp2p::metrics::Metrics::new(registry);
    let node_metrics = Arc::new(NodeMetrics::new(registry));
    let resource_limits = limits::Limits::derive(
        &config,
        limits::MemoryBudget::detect(config.max_memory_fraction),
        protocol_limits(),
    );
    tracing::info!(
        memory = ?resource_limits.memory,
        system = ?resource_limits.system,
        peer = ?resource_limits.peer,
        "resource limits"
    );
    let streams_limiter =
        limits::StreamLimiter::new(&resource_limits, node_metrics.resource_denied.clone());
    let muxer_limiter = streams_limiter.clone();
    let mut yamux_config = yamux::Config::default();
    yamux_config
        .set_max_num_streams((config.max_streams_inbound + config.max_streams_outbound) as usize);

    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_other_transport(
            |key| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
                // Every connection's streams count against the stream limits.
                Ok(transport::tcp(key, config.sockets.clone())?
                    .map(move |(peer, muxer), _| {
                        let muxer = limits::LimitedMuxer::new(muxer, peer, muxer_limiter.clone());
                        (peer, StreamMuxerBox::new(muxer))
                    })
                    .boxed())
            },
        )?
        .with_bandwidth_metrics(registry)
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
                    limits: limits::Behaviour::new(&resource_limits),
                    memory: memory_connection_limits::Behaviour::with_max_bytes(
                        usize::try_from(resource_limits.memory.limit_bytes).unwrap_or(usize::MAX),
                    ),
                    identify: identify::Behaviour::new(
                        identify::Config::new(PROTOCOL_VERSION.into(), key.public())
                            .with_agent_version(AGENT_VERSION.into()),
                    ),
                    ping: ping::Behaviour::new(
                        ping::Config::new()
                            .with_interval(config.ping_interval)
                            .with_timeout(config.ping_timeout),
                    ),
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
        .with_swarm_config(|c| {
            c.with_idle_connection_timeout(config.idle_timeout)
                .with_max_negotiating_inbound_streams(config.max_streams_inbound as usize)
        })
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
    let event_loop = EventLoop::new(
        swarm,
        rx,
        metrics,
        node_metrics.clone(),
        &config,
        resource_limits,
        streams_limiter,
    );
    tokio::spawn(event_loop.run());
    Ok(Client {
        commands,
        streams,
        local_peer_id,
        metrics: node_metrics,
    })
}

/// Each protocol's own stream bound (the protocol scope, see [`limits`]).
fn protocol_limits() -> Vec<limits::ProtocolLimit> {
    let limit = |protocol: &str, streams: usize, enforced_by: &'static str| limits::ProtocolLimit {
        protocol: protocol.to_owned(),
        streams_inbound_per_connection: streams as u32,
        enforced_by,
    };
    vec![
        limit(
            files::PROTOCOL.as_ref(),
            MAX_FILE_STREAMS,
            "request-response max_concurrent_streams",
        ),
        limit(KAD_PROTOCOL.as_ref(), 32, "libp2p-kad handler (fixed)"),
        limit(
            "/meshsub/1.1.0",
            1,
            "gossipsub handler (one stream per direction)",
        ),
        limit(
            perf::PROTOCOL.as_ref(),
            perf::MAX_INBOUND,
            "perf::serve semaphore (whole node)",
        ),
    ]
}
