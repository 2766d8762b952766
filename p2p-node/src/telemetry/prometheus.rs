//! Prometheus export, computed at scrape time from the probes' maps and the socket table, so a
//! series exists exactly while its peer is connected.

use std::{collections::BTreeMap, fmt, sync::Arc};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Unit,
};

use super::{PeerConnection, TcpState, Telemetry, busiest_per_peer, connections};
use crate::ebpf::Probes;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    peer_id: String,
    algorithm: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlgorithmLabels {
    algorithm: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MapLabels {
    map: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerModeLabels {
    peer_id: String,
    mode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerWarmLabels {
    peer_id: String,
    state: String,
}

/// Per-peer TCP state and the node's eBPF health, registered under the `p2pcc` prefix.
#[derive(Debug)]
pub struct TcpCollector {
    telemetry: Telemetry,
}

impl TcpCollector {
    pub fn new(telemetry: Telemetry) -> Self {
        Self { telemetry }
    }
}

fn gauge<L: EncodeLabelSet, V: prometheus_client::encoding::EncodeGaugeValue + Copy>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    series: impl IntoIterator<Item = (L, V)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, unit.as_ref(), MetricType::Gauge)?;
    for (labels, value) in series {
        ConstGauge::new(value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    series: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, unit.as_ref(), MetricType::Counter)?;
    for (labels, value) in series {
        ConstCounter::new(value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A metric without labels.
fn single(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric_type: MetricType,
    value: impl EncodeMetric,
) -> fmt::Result {
    value.encode(encoder.encode_descriptor(name, help, None, metric_type)?)
}

impl Collector for TcpCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let rows = connections(&self.telemetry);
        let probes: Option<&Arc<Probes>> = self.telemetry.probes.as_ref();
        let peers: Vec<(PeerLabels, TcpState)> = busiest_per_peer(&rows)
            .into_iter()
            .filter_map(|c: &PeerConnection| {
                let labels = PeerLabels {
                    peer_id: c.peer_id.clone(),
                    algorithm: c.algorithm.clone(),
                };
                Some((labels, c.tcp?))
            })
            .collect();
        let per_peer = |f: fn(&TcpState) -> f64| peers.iter().map(move |(l, t)| (l.clone(), f(t)));
        let e = &mut encoder;
        gauge(
            e,
            "peer_cwnd",
            "Congestion window of the peer's connection.",
            Some(Unit::Other("segments".into())),
            per_peer(|t| f64::from(t.cwnd_segments)),
        )?;
        gauge(
            e,
            "peer_ssthresh",
            "Slow-start threshold of the peer's connection (absent while in initial slow start).",
            Some(Unit::Other("segments".into())),
            peers
                .iter()
                .filter_map(|(l, t)| Some((l.clone(), f64::from(t.ssthresh_segments?)))),
        )?;
        gauge(
            e,
            "peer_srtt",
            "Smoothed round-trip time of the peer's connection.",
            Some(Unit::Seconds),
            per_peer(|t| t.srtt_seconds),
        )?;
        gauge(
            e,
            "peer_min_rtt",
            "Minimum round-trip time the kernel measured on the peer's connection.",
            Some(Unit::Seconds),
            per_peer(|t| t.min_rtt_seconds),
        )?;
        gauge(
            e,
            "peer_pacing_rate",
            "Pacing rate of the peer's connection (absent when unlimited).",
            Some(Unit::Other("bytes_per_second".into())),
            peers
                .iter()
                .filter_map(|(l, t)| Some((l.clone(), t.pacing_rate_bytes_per_second? as f64))),
        )?;
        gauge(
            e,
            "peer_delivery_rate",
            "Delivery rate of the latest rate sample of the peer's connection.",
            Some(Unit::Other("bytes_per_second".into())),
            per_peer(|t| t.delivery_rate_bytes_per_second as f64),
        )?;
        gauge(
            e,
            "peer_packets_in_flight",
            "Segments sent and not yet acknowledged.",
            Some(Unit::Other("segments".into())),
            per_peer(|t| f64::from(t.packets_in_flight)),
        )?;
        counter(
            e,
            "peer_bytes_acked",
            "Bytes the peer acknowledged on its connection.",
            None,
            peers.iter().map(|(l, t)| (l.clone(), t.bytes_acked)),
        )?;
        counter(
            e,
            "peer_bytes_received",
            "Bytes received from the peer on its connection.",
            None,
            peers.iter().map(|(l, t)| (l.clone(), t.bytes_received)),
        )?;
        counter(
            e,
            "peer_retransmitted_segments",
            "Segments retransmitted on the peer's connection.",
            None,
            peers
                .iter()
                .map(|(l, t)| (l.clone(), u64::from(t.retransmitted_segments))),
        )?;

        let mut by_algorithm: BTreeMap<String, i64> = BTreeMap::new();
        for row in &rows {
            *by_algorithm.entry(row.algorithm.clone()).or_default() += 1;
        }
        gauge(
            e,
            "connections",
            "Authenticated TCP connections by congestion control.",
            None,
            by_algorithm
                .into_iter()
                .map(|(algorithm, n)| (AlgorithmLabels { algorithm }, n)),
        )?;

        let bbr: Vec<(String, super::BbrView)> = busiest_per_peer(&rows)
            .into_iter()
            .filter_map(|c| Some((c.peer_id.clone(), c.bbr.clone()?)))
            .collect();
        let peer = |id: &String| PeerLabels {
            peer_id: id.clone(),
            algorithm: crate::ebpf::bbr::NAME.into(),
        };
        gauge(
            e,
            "bbr_mode",
            "bbr-p2p state machine mode of the peer's connection (1 for the current mode).",
            None,
            bbr.iter().map(|(id, b)| {
                (
                    PeerModeLabels {
                        peer_id: id.clone(),
                        mode: b.mode.into(),
                    },
                    1i64,
                )
            }),
        )?;
        gauge(
            e,
            "bbr_bandwidth",
            "bbr-p2p bottleneck bandwidth estimate (BtlBw) of the peer's path.",
            Some(Unit::Other("bytes_per_second".into())),
            bbr.iter()
                .map(|(id, b)| (peer(id), b.bandwidth_bytes_per_second as f64)),
        )?;
        gauge(
            e,
            "bbr_min_rtt",
            "bbr-p2p propagation delay estimate (RTprop) of the peer's path.",
            Some(Unit::Seconds),
            bbr.iter().map(|(id, b)| (peer(id), b.min_rtt_seconds)),
        )?;
        gauge(
            e,
            "bbr_pacing_gain",
            "bbr-p2p pacing gain (1.0 = pace at BtlBw).",
            Some(Unit::Other("ratio".into())),
            bbr.iter().map(|(id, b)| (peer(id), b.pacing_gain)),
        )?;
        gauge(
            e,
            "bbr_cwnd_gain",
            "bbr-p2p cwnd gain (multiple of the BDP).",
            Some(Unit::Other("ratio".into())),
            bbr.iter().map(|(id, b)| (peer(id), b.cwnd_gain)),
        )?;
        gauge(
            e,
            "bbr_inflight_hi",
            "bbr-p2p loss bound on inflight (absent while unbounded).",
            Some(Unit::Other("segments".into())),
            bbr.iter()
                .filter_map(|(id, b)| Some((peer(id), f64::from(b.inflight_hi_segments?)))),
        )?;
        gauge(
            e,
            "bbr_warm_start",
            "How the peer's connection started: cold, warm (from the per-address record) or fell_back.",
            None,
            bbr.iter().map(|(id, b)| {
                (
                    PeerWarmLabels {
                        peer_id: id.clone(),
                        state: b.warm_start.into(),
                    },
                    1i64,
                )
            }),
        )?;
        counter(
            e,
            "bbr_probe_rtt",
            "Times the peer's connection entered PROBE_RTT.",
            None,
            bbr.iter()
                .map(|(id, b)| (peer(id), u64::from(b.probe_rtt_count))),
        )?;
        counter(
            e,
            "bbr_loss_bound",
            "Times loss bounded the inflight of the peer's connection.",
            None,
            bbr.iter()
                .map(|(id, b)| (peer(id), u64::from(b.loss_bound_count))),
        )?;

        let attached = probes.map_or(0, |p| p.programs().len() as i64);
        single(
            e,
            "ebpf_programs_attached",
            "eBPF programs loaded and attached by this node.",
            MetricType::Gauge,
            ConstGauge::new(attached),
        )?;
        if let Some(probes) = probes {
            let counters = probes.counters();
            gauge(
                e,
                "ebpf_map_entries",
                "Entries in each eBPF map.",
                None,
                [(
                    MapLabels {
                        map: "SOCK_STATS".into(),
                    },
                    probes.tracked() as i64,
                )],
            )?;
            gauge(
                e,
                "ebpf_map_capacity",
                "max_entries of each eBPF map.",
                None,
                [(
                    MapLabels {
                        map: "SOCK_STATS".into(),
                    },
                    i64::from(Probes::tracked_capacity()),
                )],
            )?;
            single(
                e,
                "ebpf_probe_events",
                "tcp_probe events the probe ran for (all sockets).",
                MetricType::Counter,
                ConstCounter::new(counters.events),
            )?;
            single(
                e,
                "ebpf_events_lost",
                "Probe events that could not be recorded (map full).",
                MetricType::Counter,
                ConstCounter::new(counters.update_failed),
            )?;
        }
        Ok(())
    }
}
