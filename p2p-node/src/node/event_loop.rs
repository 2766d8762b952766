//! The event loop: owns the swarm, answers the [`Client`](super::Client)'s commands and handles
//! swarm events.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Arc,
    time::Duration,
};

use futures::StreamExt as _;
use libp2p::{
    Multiaddr, PeerId, Swarm,
    core::ConnectedPoint,
    gossipsub, identify, kad, memory_connection_limits,
    metrics::Recorder as _,
    ping, request_response,
    swarm::{
        ConnectionDenied, ConnectionId, DialError, ListenError, SwarmEvent,
        dial_opts::{DialOpts, PeerCondition},
    },
};
use tokio::sync::{mpsc, oneshot};

use super::{
    Behaviour, BehaviourEvent, Config, ConnectionInfo, KAD_PROTOCOL, MAX_DIALS_PER_TICK,
    MAX_IDENTIFY_ADDRS, MAX_PENDING_QUERIES, MAX_PENDING_REQUESTS, NodeInfo, RemoteIdentity,
    bootstrap::Bootstrap,
    client::{Command, RequestReply, ShareReply},
    files,
    files::{FileError, FileId},
    gossip, limits,
    metrics::{DeniedLabels, GossipRejectLabels, NodeMetrics, RefusedLabels},
};
use crate::sockets::{Direction, SocketTable};

struct PendingProviders {
    found: HashSet<PeerId>,
    reply: oneshot::Sender<Result<Vec<PeerId>, FileError>>,
    id: FileId,
}

pub(super) struct EventLoop {
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
    limits: limits::Limits,
    streams: Arc<limits::StreamLimiter>,
    maintenance: tokio::time::Interval,
    status: tokio::time::Interval,
    /// Lost bootstrap peers and when to dial each again.
    bootstrap: Bootstrap,
    redial: tokio::time::Interval,
    /// When each connection last answered a ping (only connections that have answered one;
    /// bounded by the connection limits), and how long one may go without ([`Self::on_ping`]).
    ping_ok: HashMap<ConnectionId, tokio::time::Instant>,
    ping_deadline: Duration,
    /// The last status published and when: an identical one is not published again within
    /// [`STATUS_REPEAT`] (gossipsub would refuse it as a duplicate, with a warning, while its
    /// content-addressed id is still in the duplicate cache).
    last_status: Option<(gossip::Announcement, tokio::time::Instant)>,
}

/// How often lost bootstrap peers are checked for a due redial (the backoff's resolution).
const REDIAL_CHECK: Duration = Duration::from_millis(500);

/// How long an unchanged status goes unrepeated; well past gossipsub's duplicate cache (60 s).
const STATUS_REPEAT: Duration = Duration::from_secs(300);

fn interval(period: Duration) -> tokio::time::Interval {
    let mut i = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    i
}

impl EventLoop {
    pub(super) fn new(
        swarm: Swarm<Behaviour>,
        commands: mpsc::Receiver<Command>,
        metrics: libp2p::metrics::Metrics,
        node_metrics: Arc<NodeMetrics>,
        config: &Config,
        limits: limits::Limits,
        streams: Arc<limits::StreamLimiter>,
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
            limits,
            streams,
            maintenance: interval(config.maintenance_interval),
            status: interval(config.status_interval),
            bootstrap: Bootstrap::new(&config.peers),
            redial: interval(REDIAL_CHECK),
            ping_ok: HashMap::new(),
            ping_deadline: config.ping_interval + config.ping_timeout,
            last_status: None,
        }
    }

    pub(super) async fn run(mut self) {
        loop {
            // Biased: local work (the API's commands, finished chunk reads, timers) before new
            // swarm events, so a flood of peers cannot starve `/api/node` or a fetch.
            tokio::select! {
                biased;
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => return,
                },
                Some(served) = self.served.recv() => {
                    self.store.finished();
                    self.respond(served.channel, served.response);
                }
                _ = self.maintenance.tick() => self.maintain_peers(),
                _ = self.redial.tick() => {
                    self.close_unresponsive();
                    self.redial_bootstrap();
                }
                _ = self.status.tick() => self.announce_status(),
                event = self.swarm.select_next_some() => self.on_event(event),
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
                    limits: self.limits.clone(),
                    denied: self.node_metrics.resource_denied.snapshot(),
                    streams_inbound: self.streams.open().0,
                    streams_outbound: self.streams.open().1,
                    gossip_rejected: self.node_metrics.gossip_rejected_total(),
                    gossip_graylisted_peers: self
                        .swarm
                        .connected_peers()
                        .filter_map(|p| self.swarm.behaviour().gossipsub.peer_score(p))
                        .filter(|score| *score < gossip::GRAYLIST_THRESHOLD)
                        .count(),
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
            Command::GossipScore { peer, reply } => {
                let _ = reply.send(self.swarm.behaviour().gossipsub.peer_score(&peer));
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

    /// Another, authenticated identity answered at an address the routing table holds for
    /// `peer` (a node restarted without `--key` gets a new PeerId): the record is dropped.
    /// libp2p-kad keeps a peer's last address through failed dials and does not count
    /// `WrongPeerId` as one, so every query (kad's automatic bootstrap runs one whenever a new
    /// peer enters a small table) dialled it again, and each dial was a connection the other
    /// node saw open and close within milliseconds (seen in the fetch_resume kernel test: the
    /// restarted fetcher's connections to the provider flapping for ~300 ms). Bootstrap peers
    /// (`--peer`) keep their own addresses and are still redialled.
    fn forget_moved_address(&mut self, peer: PeerId, obtained: PeerId, address: &Multiaddr) {
        if self
            .swarm
            .behaviour_mut()
            .kad
            .remove_address(&peer, address)
            .is_some()
        {
            tracing::info!(%peer, %obtained, %address, "routing table: another identity answers at this address of the peer, address removed");
        }
    }

    /// Dials the bootstrap peers whose backoff has passed.
    fn redial_bootstrap(&mut self) {
        for (peer, addrs) in self.bootstrap.due(tokio::time::Instant::now()) {
            self.node_metrics.bootstrap_redials.inc();
            tracing::info!(%peer, "redialling bootstrap peer");
            let opts = DialOpts::peer_id(peer)
                .addresses(addrs)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            match self.swarm.dial(opts) {
                Ok(()) | Err(DialError::DialPeerConditionFalse(_)) => {}
                Err(e) => {
                    tracing::warn!(%peer, %e, "bootstrap dial failed");
                    self.bootstrap
                        .dial_failed(&peer, tokio::time::Instant::now());
                }
            }
        }
    }

    /// The health-check policy libp2p-ping leaves to the application: a connection that has
    /// answered pings and then goes a ping interval plus a ping timeout without answering one
    /// (its first failed ping; the handler itself reports only the second) is closed, by
    /// [`Self::close_unresponsive`] or on a reported failure. A connection that never answered a
    /// ping (the peer lacks the protocol or resets its streams) is not judged by pings: the idle
    /// timeout and TCP handle it.
    fn on_ping(&mut self, event: ping::Event) {
        match &event.result {
            Ok(rtt) => {
                self.ping_ok
                    .insert(event.connection, tokio::time::Instant::now());
                if let Some(connection) = self.connections.get_mut(&event.connection) {
                    connection.ping_rtt = Some(*rtt);
                }
            }
            Err(ping::Failure::Unsupported) => {}
            Err(failure) => {
                if self.ping_ok.remove(&event.connection).is_some() {
                    tracing::info!(peer = %event.peer, %failure, "closing unresponsive connection");
                    self.close_dead(event.connection);
                }
            }
        }
    }

    /// Closes the connections that stopped answering pings (see [`Self::on_ping`]).
    fn close_unresponsive(&mut self) {
        let now = tokio::time::Instant::now();
        let deadline = self.ping_deadline;
        let dead: Vec<ConnectionId> = self
            .ping_ok
            .iter()
            .filter(|(_, last)| now.duration_since(**last) > deadline)
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            self.ping_ok.remove(&id);
            let peer = self.connections.get(&id).map(|c| c.peer);
            tracing::info!(
                ?peer,
                "closing connection: no ping answered for {deadline:?}"
            );
            self.close_dead(id);
        }
    }

    fn close_dead(&mut self, connection: ConnectionId) {
        if self.swarm.close_connection(connection) {
            self.node_metrics.connections_unresponsive.inc();
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
        let limit = if let Some(denied) = cause.downcast_ref::<limits::Denied>() {
            let denials = &self.node_metrics.resource_denied;
            denials.count(denied.scope, denied.limit);
            "connection_limit"
        } else if cause
            .downcast_ref::<memory_connection_limits::MemoryUsageLimitExceeded>()
            .is_some()
        {
            let denials = &self.node_metrics.resource_denied;
            denials.count(limits::Scope::System, limits::Limit::Memory);
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
                if self.bootstrap.connected(&peer_id) {
                    // Back from a loss: refresh the routing table now, not at the next period.
                    tracing::info!(%peer_id, "bootstrap peer reconnected");
                    let _ = self.swarm.behaviour_mut().kad.bootstrap();
                }
                let info = match endpoint {
                    ConnectedPoint::Dialer { address, .. } => ConnectionInfo {
                        peer: peer_id,
                        direction: Direction::Outbound,
                        remote: address,
                        local: None,
                        identify: None,
                        ping_rtt: None,
                    },
                    ConnectedPoint::Listener {
                        local_addr,
                        send_back_addr,
                    } => ConnectionInfo {
                        peer: peer_id,
                        direction: Direction::Inbound,
                        remote: send_back_addr,
                        local: Some(local_addr),
                        identify: None,
                        ping_rtt: None,
                    },
                };
                self.connections.insert(connection_id, info);
                tracing::info!(%peer_id, "connected");
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                cause,
                num_established,
                ..
            } => {
                self.connections.remove(&connection_id);
                self.ping_ok.remove(&connection_id);
                if num_established == 0 {
                    self.bootstrap
                        .disconnected(&peer_id, tokio::time::Instant::now());
                }
                tracing::info!(%peer_id, ?cause, "connection closed");
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                if let DialError::Denied { cause } = &error {
                    self.count_denied("outbound", cause);
                }
                if let (Some(peer), DialError::WrongPeerId { obtained, address }) =
                    (peer_id, &error)
                {
                    self.forget_moved_address(peer, *obtained, address);
                }
                if let Some(peer) = peer_id
                    && !self.swarm.is_connected(&peer)
                {
                    self.bootstrap
                        .dial_failed(&peer, tokio::time::Instant::now());
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
                if let identify::Event::Received {
                    peer_id,
                    info,
                    connection_id,
                } = e
                {
                    if let Some(connection) = self.connections.get_mut(&connection_id) {
                        connection.identify = Some(RemoteIdentity {
                            agent_version: info.agent_version.clone(),
                            protocol_version: info.protocol_version.clone(),
                            protocols: info.protocols.iter().map(|p| p.to_string()).collect(),
                        });
                    }
                    if info.protocols.contains(&KAD_PROTOCOL) {
                        for addr in info.listen_addrs.into_iter().take(MAX_IDENTIFY_ADDRS) {
                            self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                        }
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(e)) => {
                self.metrics.record(&e);
                self.on_ping(e);
            }
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
                        connection_closed: matches!(
                            error,
                            request_response::OutboundFailure::ConnectionClosed
                        ),
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
