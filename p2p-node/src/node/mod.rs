//! The libp2p node: behaviours, the swarm, the event loop that owns it, and the [`Client`] the
//! rest of the program uses to talk to it (bounded channels, oneshot replies).

pub mod perf;
pub mod transport;

use std::{collections::HashMap, time::Duration};

use anyhow::Context as _;
use futures::StreamExt;
use libp2p::{
    Multiaddr, PeerId, Swarm, Transport as _, connection_limits, core::muxing::StreamMuxerBox,
    core::upgrade::Version, identify, identity::Keypair, memory_connection_limits,
    metrics::Recorder as _, noise, ping, swarm::NetworkBehaviour, swarm::SwarmEvent, yamux,
};
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

/// Identify protocol version string.
const PROTOCOL_VERSION: &str = "/p2p-cc/0.1.0";
/// Commands queued to the event loop before senders wait.
const COMMAND_QUEUE: usize = 64;

/// Node configuration. Defaults follow the connection limits of the series this project grew
/// from ("P2P Production Best Practices").
#[derive(Clone, Debug)]
pub struct Config {
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start (full multiaddrs ending in `/p2p/<PeerId>`).
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
        }
    }
}

#[derive(NetworkBehaviour)]
pub struct Behaviour {
    limits: connection_limits::Behaviour,
    memory: memory_connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    stream: libp2p_stream::Behaviour,
}

/// What the node says about itself.
#[derive(Clone, Debug, Serialize)]
pub struct NodeInfo {
    pub peer_id: String,
    pub listen_addrs: Vec<String>,
    pub connected_peers: usize,
}

enum Command {
    Info(oneshot::Sender<NodeInfo>),
}

/// A handle to the running node.
#[derive(Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    streams: libp2p_stream::Control,
    local_peer_id: PeerId,
}

impl Client {
    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer_id
    }

    pub async fn info(&self) -> anyhow::Result<NodeInfo> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Info(tx))
            .await
            .context("the node has stopped")?;
        rx.await.context("the node has stopped")
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
                let tcp = libp2p::tcp::tokio::Transport::new(
                    libp2p::tcp::Config::default().nodelay(true),
                );
                Ok(tcp
                    .and_then(|stream, endpoint| {
                        futures::future::ready(transport::HookedStream::register(stream, &endpoint))
                    })
                    .upgrade(Version::V1)
                    .authenticate(noise::Config::new(key)?)
                    .multiplex(yamux::Config::default())
                    .map(|(peer, muxer), endpoint| {
                        transport::bind_peer(peer, &endpoint);
                        (peer, StreamMuxerBox::new(muxer))
                    }))
            },
        )?
        .with_bandwidth_metrics(registry.sub_registry_with_prefix("libp2p"))
        .with_behaviour(|key| Behaviour {
            limits: connection_limits::Behaviour::new(limits),
            memory: memory_connection_limits::Behaviour::with_max_percentage(
                config.max_memory_fraction,
            ),
            identify: identify::Behaviour::new(identify::Config::new(
                PROTOCOL_VERSION.into(),
                key.public(),
            )),
            ping: ping::Behaviour::default(),
            stream: libp2p_stream::Behaviour::new(),
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(config.idle_timeout))
        .build();

    for addr in &config.listen {
        swarm
            .listen_on(addr.clone())
            .with_context(|| format!("listening on {addr}"))?;
    }
    for addr in &config.peers {
        swarm
            .dial(addr.clone())
            .with_context(|| format!("dialing {addr}"))?;
    }

    let streams = swarm.behaviour().stream.new_control();
    perf::serve(streams.clone())?;
    let (commands, rx) = mpsc::channel(COMMAND_QUEUE);
    tokio::spawn(EventLoop::new(swarm, rx, metrics).run());
    Ok(Client {
        commands,
        streams,
        local_peer_id,
    })
}

struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    metrics: libp2p::metrics::Metrics,
    /// Established connections per peer (bounded by the connection limits).
    connections: HashMap<PeerId, u32>,
}

impl EventLoop {
    fn new(
        swarm: Swarm<Behaviour>,
        commands: mpsc::Receiver<Command>,
        metrics: libp2p::metrics::Metrics,
    ) -> Self {
        Self {
            swarm,
            commands,
            metrics,
            connections: HashMap::new(),
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
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Info(reply) => {
                let peer_id = *self.swarm.local_peer_id();
                let _ = reply.send(NodeInfo {
                    peer_id: peer_id.to_base58(),
                    listen_addrs: self
                        .swarm
                        .listeners()
                        .map(|a| format!("{a}/p2p/{peer_id}"))
                        .collect(),
                    connected_peers: self.connections.len(),
                });
            }
        }
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        self.metrics.record(&event);
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                // The line users copy into another node's `--peer`; tests and xtask read it.
                println!("listening on {address}/p2p/{}", self.swarm.local_peer_id());
            }
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                *self.connections.entry(peer_id).or_default() += 1;
                tracing::info!(%peer_id, "connected");
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                cause,
                ..
            } => {
                if num_established == 0 {
                    self.connections.remove(&peer_id);
                } else {
                    self.connections.insert(peer_id, num_established);
                }
                tracing::info!(%peer_id, ?cause, "connection closed");
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::warn!(?peer_id, %error, "dial failed");
            }
            SwarmEvent::IncomingConnectionError { error, .. } => {
                tracing::debug!(%error, "incoming connection failed");
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(e)) => self.metrics.record(&e),
            SwarmEvent::Behaviour(BehaviourEvent::Ping(e)) => self.metrics.record(&e),
            _ => {}
        }
    }
}
