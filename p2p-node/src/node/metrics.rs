//! The node's own Prometheus counters (prefix `p2pcc_`).

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::{gossip, limits::Denials};

/// `reason` label of the rejection counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct GossipRejectLabels {
    pub(super) reason: gossip::Rejection,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct DeniedLabels {
    pub(super) direction: &'static str,
    /// `connection_limit`, `memory` or `other`.
    pub(super) limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RefusedLabels {
    /// `not_found`, `busy` or `bad_index`.
    pub(super) reason: &'static str,
}

/// The node's own counters (prefix `p2pcc_`).
pub struct NodeMetrics {
    pub(super) gossip_rejected: Family<GossipRejectLabels, Counter>,
    pub(super) gossip_accepted: Counter,
    pub(super) connections_denied: Family<DeniedLabels, Counter>,
    /// Refusals by the resource limits, by scope and limit.
    pub(super) resource_denied: Denials,
    pub(super) file_requests_refused: Family<RefusedLabels, Counter>,
    pub(super) chunks_served: Counter,
    pub(super) chunks_corrupt: Counter,
    pub(super) routing_table_peers: Gauge,
    /// Connections closed because their pings failed (see `bootstrap`).
    pub(super) connections_unresponsive: Counter,
    /// Dials of lost bootstrap peers.
    pub(super) bootstrap_redials: Counter,
}

impl NodeMetrics {
    pub(super) fn new(registry: &mut Registry) -> Self {
        let m = Self {
            gossip_rejected: Family::default(),
            gossip_accepted: Counter::default(),
            connections_denied: Family::default(),
            resource_denied: Denials::default(),
            file_requests_refused: Family::default(),
            chunks_served: Counter::default(),
            chunks_corrupt: Counter::default(),
            routing_table_peers: Gauge::default(),
            connections_unresponsive: Counter::default(),
            bootstrap_redials: Counter::default(),
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
            "resource_denied",
            "Connections and streams refused by a resource limit, by scope and limit",
            m.resource_denied.family(),
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
        r.register(
            "connections_unresponsive",
            "Connections closed because the peer stopped answering pings",
            m.connections_unresponsive.clone(),
        );
        r.register(
            "bootstrap_redials",
            "Dials of a --peer bootstrap peer after its connection was lost or a dial failed",
            m.bootstrap_redials.clone(),
        );
        m
    }

    pub(super) fn gossip_rejected_total(&self) -> u64 {
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

    pub(super) fn connections_denied_total(&self) -> u64 {
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
