//! Prometheus export: encodes the latest [`Snapshot`] (no kernel access at scrape time), so a
//! series exists exactly while its peer is connected, as of the last collection.
//!
//! Every metric family is defined once, in [`FAMILIES`] and [`PROCESS_FAMILIES`]: name, type,
//! unit, help, labels and how its series come out of a snapshot. That table drives the exporter,
//! the README's metric table ([`markdown_table`]) and the dashboard check.
//!
//! Per-peer value series carry only `peer_id`, so they continue across a congestion-control
//! switch; what changes (algorithm, direction) is on `p2pcc_peer_info{...} 1`, joined in queries
//! with `* on(peer_id) group_left(algorithm) p2pcc_peer_info`. A peer is represented by its
//! busiest connection; only the top-K peers by recent throughput (with hysteresis, see
//! [`super::topk`]) get per-peer series.

use std::{collections::BTreeMap, fmt};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Unit,
};

use super::{BbrView, PeerConnection, TcpState, Telemetry, busiest_per_peer, snapshot::Snapshot};

/// How a family's values behave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
        }
    }
}

/// One sample's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Int(u64),
    Float(f64),
    /// `(sum, count, [(upper bound, count in this bucket)])`, the `+Inf` bucket last.
    Histogram(f64, u64, Vec<(f64, u64)>),
}

/// One series of a family: label values in the family's label order, and the value.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub labels: Vec<String>,
    pub value: Value,
}

/// What a family's series are computed from.
pub struct View<'a> {
    pub snapshot: &'a Snapshot,
    /// The busiest connection of each top-K peer, sorted by PeerId.
    pub top: Vec<&'a PeerConnection>,
}

/// A metric family, defined once.
pub struct Family {
    /// Without the prefix, the unit and `_total`: the exported name is
    /// `<prefix>_<name>_<unit>[_total]`.
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Option<&'static str>,
    pub help: &'static str,
    pub labels: &'static [&'static str],
    pub series: fn(&View<'_>) -> Vec<Series>,
}

impl Family {
    /// The name as Prometheus text shows it, with `prefix` (`p2pcc` or none), the unit and
    /// `_total` for counters.
    pub fn exported_name(&self, prefix: Option<&str>) -> String {
        let mut name = prefix.map_or_else(String::new, |p| format!("{p}_"));
        name.push_str(self.name);
        if let Some(unit) = self.unit {
            name.push('_');
            name.push_str(unit);
        }
        if self.kind == Kind::Counter {
            name.push_str("_total");
        }
        name
    }
}

/// The `p2pcc_` families.
pub const PREFIX: &str = "p2pcc";

fn one(value: Value) -> Vec<Series> {
    vec![Series {
        labels: Vec::new(),
        value,
    }]
}

/// A per-peer value from the peer's busiest connection; peers without TCP state (not yet seen
/// by the probe) or without the value get no series.
fn per_peer(v: &View<'_>, f: impl Fn(&TcpState) -> Option<Value>) -> Vec<Series> {
    v.top
        .iter()
        .filter_map(|c| {
            Some(Series {
                labels: vec![c.peer_id.clone()],
                value: f(c.tcp.as_ref()?)?,
            })
        })
        .collect()
}

/// A per-peer value of bbr-p2p's model, for peers whose busiest connection runs it.
fn per_bbr_peer(v: &View<'_>, f: impl Fn(&BbrView) -> Option<Value>) -> Vec<Series> {
    v.top
        .iter()
        .filter_map(|c| {
            Some(Series {
                labels: vec![c.peer_id.clone()],
                value: f(c.bbr.as_ref()?)?,
            })
        })
        .collect()
}

/// A state set: one series per possible state, 1 for the current one, 0 for the others (so a
/// change of state changes values, not series).
fn state_set(
    v: &View<'_>,
    states: &[&'static str],
    current: impl Fn(&PeerConnection) -> Option<&'static str>,
) -> Vec<Series> {
    v.top
        .iter()
        .filter_map(|c| Some((c, current(c)?)))
        .flat_map(|(c, now)| {
            states.iter().map(move |&state| Series {
                labels: vec![c.peer_id.clone(), state.to_owned()],
                value: Value::Int(u64::from(state == now)),
            })
        })
        .collect()
}

fn by_algorithm(v: &View<'_>, f: impl Fn(&super::ClosedTotals) -> Value) -> Vec<Series> {
    v.snapshot
        .closed
        .iter()
        .map(|(a, c)| Series {
            labels: vec![a.clone()],
            value: f(c),
        })
        .collect()
}

fn probes<'a>(v: &View<'a>) -> Option<&'a super::snapshot::ProbeSnapshot> {
    v.snapshot.probes.as_ref()
}

fn labelled<'a, T: 'a>(
    items: impl IntoIterator<Item = &'a T>,
    f: impl Fn(&T) -> (String, Value),
) -> Vec<Series> {
    items
        .into_iter()
        .map(|t| {
            let (label, value) = f(t);
            Series {
                labels: vec![label],
                value,
            }
        })
        .collect()
}

const BBR_MODES: [&str; 4] = ["startup", "drain", "probe_bw", "probe_rtt"];
const START_STATES: [&str; 3] = ["cold", "resumed", "retreated"];

/// Every `p2pcc_` family, in export order.
pub const FAMILIES: &[Family] = &[
    Family {
        name: "build_info",
        kind: Kind::Gauge,
        unit: None,
        help: "Always 1; the node's version in a label.",
        labels: &["version"],
        series: |_| {
            vec![Series {
                labels: vec![env!("CARGO_PKG_VERSION").to_owned()],
                value: Value::Int(1),
            }]
        },
    },
    Family {
        name: "peer_info",
        kind: Kind::Gauge,
        unit: None,
        help: "Always 1 for each peer with per-peer series; carries the labels that can change (join with `* on(peer_id) group_left(algorithm) p2pcc_peer_info`).",
        labels: &["peer_id", "algorithm", "direction"],
        series: |v| {
            v.top
                .iter()
                .map(|c| Series {
                    labels: vec![
                        c.peer_id.clone(),
                        c.algorithm.clone(),
                        match c.direction {
                            crate::sockets::Direction::Inbound => "inbound".into(),
                            crate::sockets::Direction::Outbound => "outbound".into(),
                        },
                    ],
                    value: Value::Int(1),
                })
                .collect()
        },
    },
    Family {
        name: "peer_cwnd",
        kind: Kind::Gauge,
        unit: Some("segments"),
        help: "Congestion window of the peer's connection.",
        labels: &["peer_id"],
        series: |v| per_peer(v, |t| Some(Value::Int(u64::from(t.cwnd_segments)))),
    },
    Family {
        name: "peer_ssthresh",
        kind: Kind::Gauge,
        unit: Some("segments"),
        help: "Slow-start threshold of the peer's connection (absent while in initial slow start).",
        labels: &["peer_id"],
        series: |v| per_peer(v, |t| Some(Value::Int(u64::from(t.ssthresh_segments?)))),
    },
    Family {
        name: "peer_srtt",
        kind: Kind::Gauge,
        unit: Some("seconds"),
        help: "Smoothed round-trip time of the peer's connection.",
        labels: &["peer_id"],
        series: |v| per_peer(v, |t| Some(Value::Float(t.srtt_seconds))),
    },
    Family {
        name: "peer_min_rtt",
        kind: Kind::Gauge,
        unit: Some("seconds"),
        help: "Minimum round-trip time the kernel measured on the peer's connection.",
        labels: &["peer_id"],
        series: |v| per_peer(v, |t| Some(Value::Float(t.min_rtt_seconds))),
    },
    Family {
        name: "peer_pacing_rate",
        kind: Kind::Gauge,
        unit: Some("bytes_per_second"),
        help: "Pacing rate of the peer's connection (absent when unlimited).",
        labels: &["peer_id"],
        series: |v| per_peer(v, |t| Some(Value::Int(t.pacing_rate_bytes_per_second?))),
    },
    Family {
        name: "peer_delivery_rate",
        kind: Kind::Gauge,
        unit: Some("bytes_per_second"),
        help: "Delivery rate of the latest rate sample of the peer's connection.",
        labels: &["peer_id"],
        series: |v| per_peer(v, |t| Some(Value::Int(t.delivery_rate_bytes_per_second))),
    },
    Family {
        name: "peer_in_flight",
        kind: Kind::Gauge,
        unit: Some("segments"),
        help: "Segments sent and not yet acknowledged.",
        labels: &["peer_id"],
        series: |v| per_peer(v, |t| Some(Value::Int(u64::from(t.packets_in_flight)))),
    },
    Family {
        name: "peer_acked",
        kind: Kind::Counter,
        unit: Some("bytes"),
        help: "Bytes the peer acknowledged on its connection.",
        labels: &["peer_id"],
        series: |v| per_peer(v, |t| Some(Value::Int(t.bytes_acked))),
    },
    Family {
        name: "peer_received",
        kind: Kind::Counter,
        unit: Some("bytes"),
        help: "Bytes received from the peer on its connection.",
        labels: &["peer_id"],
        series: |v| per_peer(v, |t| Some(Value::Int(t.bytes_received))),
    },
    Family {
        name: "peer_retransmitted",
        kind: Kind::Counter,
        unit: Some("segments"),
        help: "Segments retransmitted on the peer's connection (tcpi_total_retrans).",
        labels: &["peer_id"],
        series: |v| per_peer(v, |t| Some(Value::Int(u64::from(t.retransmitted_segments)))),
    },
    Family {
        name: "peer_retransmitted",
        kind: Kind::Counter,
        unit: Some("bytes"),
        help: "Bytes retransmitted on the peer's connection (tcp_retransmit_skb).",
        labels: &["peer_id"],
        series: |v| per_peer(v, |t| Some(Value::Int(t.retransmitted_bytes))),
    },
    Family {
        name: "peer_send_window",
        kind: Kind::Gauge,
        unit: Some("bytes"),
        help: "Receive window the peer advertises (what this side may send).",
        labels: &["peer_id"],
        series: |v| per_peer(v, |t| Some(Value::Int(u64::from(t.send_window_bytes)))),
    },
    Family {
        name: "peer_receive_window",
        kind: Kind::Gauge,
        unit: Some("bytes"),
        help: "Receive window this side advertises to the peer.",
        labels: &["peer_id"],
        series: |v| per_peer(v, |t| Some(Value::Int(u64::from(t.receive_window_bytes)))),
    },
    Family {
        name: "peer_ca_transitions",
        kind: Kind::Counter,
        unit: None,
        help: "Congestion-state changes of the peer's connection (tcp_cong_state_set).",
        labels: &["peer_id"],
        series: |v| per_peer(v, |t| Some(Value::Int(u64::from(t.ca_transitions)))),
    },
    Family {
        name: "peer_ca_state",
        kind: Kind::Counter,
        unit: Some("seconds"),
        help: "Time the peer's connection spent in each congestion-avoidance state since the node began tracking it.",
        labels: &["peer_id", "state"],
        series: |v| {
            v.top
                .iter()
                .filter_map(|c| Some((c, c.tcp?)))
                .flat_map(|(c, t)| {
                    t.ca_state_seconds
                        .by_state()
                        .map(|(state, seconds)| Series {
                            labels: vec![c.peer_id.clone(), state.to_owned()],
                            value: Value::Float(seconds),
                        })
                })
                .collect()
        },
    },
    Family {
        name: "bbr_mode",
        kind: Kind::Gauge,
        unit: None,
        help: "bbr-p2p state machine mode of the peer's connection (1 for the current mode, 0 for the others).",
        labels: &["peer_id", "mode"],
        series: |v| state_set(v, &BBR_MODES, |c| Some(c.bbr.as_ref()?.mode)),
    },
    Family {
        name: "bbr_bandwidth",
        kind: Kind::Gauge,
        unit: Some("bytes_per_second"),
        help: "bbr-p2p bottleneck bandwidth estimate (BtlBw) of the peer's path.",
        labels: &["peer_id"],
        series: |v| per_bbr_peer(v, |b| Some(Value::Int(b.bandwidth_bytes_per_second))),
    },
    Family {
        name: "bbr_min_rtt",
        kind: Kind::Gauge,
        unit: Some("seconds"),
        help: "bbr-p2p propagation delay estimate (RTprop) of the peer's path.",
        labels: &["peer_id"],
        series: |v| per_bbr_peer(v, |b| Some(Value::Float(b.min_rtt_seconds))),
    },
    Family {
        name: "bbr_pacing_gain",
        kind: Kind::Gauge,
        unit: Some("ratio"),
        help: "bbr-p2p pacing gain (1.0 = pace at BtlBw).",
        labels: &["peer_id"],
        series: |v| per_bbr_peer(v, |b| Some(Value::Float(b.pacing_gain))),
    },
    Family {
        name: "bbr_cwnd_gain",
        kind: Kind::Gauge,
        unit: Some("ratio"),
        help: "bbr-p2p cwnd gain (multiple of the BDP).",
        labels: &["peer_id"],
        series: |v| per_bbr_peer(v, |b| Some(Value::Float(b.cwnd_gain))),
    },
    Family {
        name: "bbr_inflight_hi",
        kind: Kind::Gauge,
        unit: Some("segments"),
        help: "bbr-p2p maximum safe volume in flight (BBRv3 inflight_hi: the inflight at which a round lost more than 2%; absent while unbounded).",
        labels: &["peer_id"],
        series: |v| per_bbr_peer(v, |b| Some(Value::Int(u64::from(b.inflight_hi_segments?)))),
    },
    Family {
        name: "bbr_start",
        kind: Kind::Gauge,
        unit: None,
        help: "How the peer's connection started (1 for its state): cold, resumed (careful resume from the peer's record) or retreated (the path contradicted the record).",
        labels: &["peer_id", "state"],
        series: |v| state_set(v, &START_STATES, |c| Some(c.bbr.as_ref()?.start)),
    },
    Family {
        name: "bbr_probe_rtt",
        kind: Kind::Counter,
        unit: None,
        help: "Times the peer's connection entered PROBE_RTT.",
        labels: &["peer_id"],
        series: |v| per_bbr_peer(v, |b| Some(Value::Int(u64::from(b.probe_rtt_count)))),
    },
    Family {
        name: "bbr_loss_bound",
        kind: Kind::Counter,
        unit: None,
        help: "Times a round losing more than 2% set inflight_hi of the peer's connection.",
        labels: &["peer_id"],
        series: |v| per_bbr_peer(v, |b| Some(Value::Int(u64::from(b.loss_bound_count)))),
    },
    Family {
        name: "connections",
        kind: Kind::Gauge,
        unit: None,
        help: "Authenticated TCP connections by congestion control.",
        labels: &["algorithm"],
        series: |v| {
            let mut n: BTreeMap<&str, u64> = BTreeMap::new();
            for c in &v.snapshot.connections {
                *n.entry(&c.algorithm).or_default() += 1;
            }
            n.into_iter()
                .map(|(a, n)| Series {
                    labels: vec![a.to_owned()],
                    value: Value::Int(n),
                })
                .collect()
        },
    },
    Family {
        name: "sockets_unbound",
        kind: Kind::Gauge,
        unit: None,
        help: "TCP sockets of the node without an authenticated PeerId (handshake in progress or failed).",
        labels: &[],
        series: |v| one(Value::Int(v.snapshot.unbound_sockets as u64)),
    },
    Family {
        name: "sockets_unbound_past_handshake_timeout",
        kind: Kind::Gauge,
        unit: None,
        help: "TCP sockets still without a PeerId longer than the handshake timeout after they were registered (should be 0: the transport drops a socket whose handshake runs out).",
        labels: &[],
        series: |v| one(Value::Int(v.snapshot.unbound_past_handshake_timeout as u64)),
    },
    Family {
        name: "closed_connections",
        kind: Kind::Counter,
        unit: None,
        help: "TCP connections whose tracking ended (final record from tcp_destroy_sock, or read by the node when none came).",
        labels: &["algorithm"],
        series: |v| by_algorithm(v, |c| Value::Int(c.connections)),
    },
    Family {
        name: "closed_acked",
        kind: Kind::Counter,
        unit: Some("bytes"),
        help: "Bytes acknowledged over connections whose tracking ended.",
        labels: &["algorithm"],
        series: |v| by_algorithm(v, |c| Value::Int(c.bytes_acked)),
    },
    Family {
        name: "closed_retransmitted",
        kind: Kind::Counter,
        unit: Some("bytes"),
        help: "Bytes retransmitted over connections whose tracking ended.",
        labels: &["algorithm"],
        series: |v| by_algorithm(v, |c| Value::Int(c.retransmitted_bytes)),
    },
    Family {
        name: "closed_ca_state",
        kind: Kind::Counter,
        unit: Some("seconds"),
        help: "Time connections whose tracking ended spent in each congestion-avoidance state.",
        labels: &["algorithm", "state"],
        series: |v| {
            v.snapshot
                .closed
                .iter()
                .flat_map(|(a, c)| {
                    cc_ebpf_common::CA_STATES
                        .iter()
                        .zip(c.ca_state_ns)
                        .map(|(state, ns)| Series {
                            labels: vec![a.clone(), (*state).to_owned()],
                            value: Value::Float(ns as f64 / 1e9),
                        })
                })
                .collect()
        },
    },
    Family {
        name: "cc_switches",
        kind: Kind::Counter,
        unit: None,
        help: "Switches of the node's congestion control since it started (PUT /api/cc).",
        labels: &[],
        series: |_| one(Value::Int(crate::cc::switches())),
    },
    Family {
        name: "tcp_srtt",
        kind: Kind::Histogram,
        unit: Some("seconds"),
        help: "Smoothed RTT of every tracked connection, sampled at each refresh of its snapshot (at most one sample per kernel tick of the socket's activity, so weighted by time), by congestion control; log2 buckets aggregated in the kernel.",
        labels: &["algorithm"],
        series: |v| {
            let Some(p) = probes(v) else {
                return Vec::new();
            };
            labelled(&p.rtt_histograms, |(algorithm, h)| {
                let mut buckets: Vec<(f64, u64)> = h
                    .buckets
                    .iter()
                    .enumerate()
                    .map(|(i, &n)| ((1u64 << (i + 1)) as f64 / 1e6, n))
                    .collect();
                buckets.push((f64::MAX, 0));
                (
                    crate::ebpf::bbr::user_name(algorithm).to_owned(),
                    Value::Histogram(h.sum_us as f64 / 1e6, h.count, buckets),
                )
            })
        },
    },
    Family {
        name: "ebpf_probes_loaded",
        kind: Kind::Gauge,
        unit: None,
        help: "1 when the TCP probes are loaded, 0 when the node runs without them (see its log).",
        labels: &[],
        series: |v| one(Value::Int(u64::from(probes(v).is_some()))),
    },
    Family {
        name: "kernel_feature_available",
        kind: Kind::Gauge,
        unit: None,
        help: "1 for each probe, algorithm and kernel facility this kernel lets the node use, 0 for each it does not (why, and what is lost: /api/node `features`).",
        labels: &["kind", "name"],
        series: |v| {
            v.snapshot
                .features
                .iter()
                .map(|f| Series {
                    labels: vec![f.kind.as_str().to_owned(), f.name.clone()],
                    value: Value::Int(u64::from(f.available)),
                })
                .collect()
        },
    },
    Family {
        name: "ebpf_programs_attached",
        kind: Kind::Gauge,
        unit: None,
        help: "eBPF programs loaded and attached by this node.",
        labels: &[],
        series: |v| one(Value::Int(probes(v).map_or(0, |p| p.programs.len() as u64))),
    },
    Family {
        name: "ebpf_program_load_failed",
        kind: Kind::Gauge,
        unit: None,
        help: "1 for each optional probe program that failed to load or attach (the reason is in the log).",
        labels: &["program"],
        series: |v| {
            probes(v).map_or_else(Vec::new, |p| {
                labelled(&p.failed, |(program, _)| {
                    ((*program).to_owned(), Value::Int(1))
                })
            })
        },
    },
    Family {
        name: "ebpf_map_entries",
        kind: Kind::Gauge,
        unit: None,
        help: "Entries in each eBPF map.",
        labels: &["map"],
        series: |v| {
            probes(v).map_or_else(Vec::new, |p| {
                labelled(&p.maps, |(m, n, _)| {
                    ((*m).to_owned(), Value::Int(*n as u64))
                })
            })
        },
    },
    Family {
        name: "ebpf_map_capacity",
        kind: Kind::Gauge,
        unit: None,
        help: "max_entries of each eBPF map.",
        labels: &["map"],
        series: |v| {
            probes(v).map_or_else(Vec::new, |p| {
                labelled(&p.maps, |(m, _, c)| {
                    ((*m).to_owned(), Value::Int(u64::from(*c)))
                })
            })
        },
    },
    Family {
        name: "ebpf_sockets_closing",
        kind: Kind::Gauge,
        unit: None,
        help: "Sockets the node dropped whose entry waits for tcp_destroy_sock (removed by the node after 90 s).",
        labels: &[],
        series: |v| probes(v).map_or_else(Vec::new, |p| one(Value::Int(p.closing as u64))),
    },
    Family {
        name: "ebpf_probe_refreshes",
        kind: Kind::Counter,
        unit: None,
        help: "tcp_probe events that refreshed a tracked socket's snapshot (the socket's first event of each kernel tick, >= 1 ms, or its first after a congestion-state change); other events are not counted (every socket's runs are the kernel's run_cnt, with --bpf-stats).",
        labels: &[],
        series: |v| probes(v).map_or_else(Vec::new, |p| one(Value::Int(p.counters.refreshes))),
    },
    Family {
        name: "ebpf_tracked_events",
        kind: Kind::Counter,
        unit: None,
        help: "Events of tracked sockets per tracepoint program other than tcp_probe.",
        labels: &["program"],
        series: |v| {
            probes(v).map_or_else(Vec::new, |p| {
                let c = p.counters;
                labelled(
                    &[
                        ("tcp_retransmit_skb", c.retransmit_events),
                        ("tcp_cong_state_set", c.cong_state_events),
                        ("tcp_destroy_sock", c.destroy_events),
                    ],
                    |(program, n)| ((*program).to_owned(), Value::Int(*n)),
                )
            })
        },
    },
    Family {
        name: "ebpf_events_lost",
        kind: Kind::Counter,
        unit: None,
        help: "Probe events that could not be recorded, by reason: sock_stats_full (socket map update failed), final_records_full (ring buffer full), rtt_hist_full (histogram map could not take an algorithm).",
        labels: &["reason"],
        series: |v| {
            probes(v).map_or_else(Vec::new, |p| {
                let c = p.counters;
                labelled(
                    &[
                        ("sock_stats_full", c.update_failed),
                        ("final_records_full", c.final_lost),
                        ("rtt_hist_full", c.hist_lost),
                    ],
                    |(reason, n)| ((*reason).to_owned(), Value::Int(*n)),
                )
            })
        },
    },
    Family {
        name: "ebpf_final_records",
        kind: Kind::Counter,
        unit: None,
        help: "Final records of ended sockets by source: destroy (tcp_destroy_sock) or expired (no destroy within 90 s; read and removed by the node).",
        labels: &["source"],
        series: |v| {
            if probes(v).is_none() {
                return Vec::new();
            }
            let (destroyed, expired) = v.snapshot.closed.values().fold((0, 0), |(d, x), c| {
                (d + c.connections - c.expired, x + c.expired)
            });
            labelled(&[("destroy", destroyed), ("expired", expired)], |(s, n)| {
                ((*s).to_owned(), Value::Int(*n))
            })
        },
    },
    Family {
        name: "ebpf_program_runs",
        kind: Kind::Counter,
        unit: None,
        help: "Runs of each eBPF program (BPF_OBJ_GET_INFO_BY_FD run_cnt; counted only while kernel.bpf_stats_enabled is on: `p2p-node run --bpf-stats` or `sysctl kernel.bpf_stats_enabled=1`).",
        labels: &["program"],
        series: |v| {
            probes(v).map_or_else(Vec::new, |p| {
                labelled(&p.run_stats, |(program, r)| {
                    ((*program).to_owned(), Value::Int(r.run_count))
                })
            })
        },
    },
    Family {
        name: "ebpf_program_run",
        kind: Kind::Counter,
        unit: Some("seconds"),
        help: "Time spent running each eBPF program (BPF_OBJ_GET_INFO_BY_FD run_time_ns; counted only while kernel.bpf_stats_enabled is on).",
        labels: &["program"],
        series: |v| {
            probes(v).map_or_else(Vec::new, |p| {
                labelled(&p.run_stats, |(program, r)| {
                    (
                        (*program).to_owned(),
                        Value::Float(r.run_time_ns as f64 / 1e9),
                    )
                })
            })
        },
    },
    Family {
        name: "ebpf_stats_enabled",
        kind: Kind::Gauge,
        unit: None,
        help: "1 while kernel.bpf_stats_enabled is on (run time and count are being counted).",
        labels: &[],
        series: |v| {
            probes(v).map_or_else(Vec::new, |p| one(Value::Int(u64::from(p.stats_enabled))))
        },
    },
    Family {
        name: "telemetry_collect_duration",
        kind: Kind::Gauge,
        unit: Some("seconds"),
        help: "How long the latest collection (all kernel reads behind /metrics and /api/peers) took.",
        labels: &[],
        series: |v| one(Value::Float(v.snapshot.collect_seconds)),
    },
    Family {
        name: "telemetry_refresh_duration",
        kind: Kind::Gauge,
        unit: Some("seconds"),
        help: "How long the latest refresh of every tracked socket's snapshot took (the iter/tcp walk over the TCP sockets of the node's network namespace; part of the collect duration of the collection that ran it). Walks are spaced to take at most 5% of the time on average: one longer than 50 ms delays the next ones. Absent when the refresh is unavailable (see p2pcc_kernel_feature_available{name=\"iter_tcp\"}).",
        labels: &[],
        series: |v| {
            probes(v)
                .and_then(|p| p.refresh_seconds)
                .map_or_else(Vec::new, |s| one(Value::Float(s)))
        },
    },
    Family {
        name: "telemetry_snapshot_timestamp",
        kind: Kind::Gauge,
        unit: Some("seconds"),
        help: "Unix time of the snapshot this scrape encodes (collections run once per second).",
        labels: &[],
        series: |v| one(Value::Float(v.snapshot.taken_unix_ms as f64 / 1e3)),
    },
];

/// The standard process families (no prefix, as every Prometheus client library exports them).
pub const PROCESS_FAMILIES: &[Family] = &[
    Family {
        name: "process_resident_memory",
        kind: Kind::Gauge,
        unit: Some("bytes"),
        help: "Resident memory size of the node.",
        labels: &[],
        series: |v| one(Value::Int(v.snapshot.process.resident_bytes)),
    },
    Family {
        name: "process_open_fds",
        kind: Kind::Gauge,
        unit: None,
        help: "Open file descriptors of the node.",
        labels: &[],
        series: |v| one(Value::Int(v.snapshot.process.open_fds)),
    },
    Family {
        name: "process_cpu",
        kind: Kind::Counter,
        unit: Some("seconds"),
        help: "User and system CPU time of the node.",
        labels: &[],
        series: |v| one(Value::Float(v.snapshot.process.cpu_seconds)),
    },
    Family {
        name: "process_start_time",
        kind: Kind::Gauge,
        unit: Some("seconds"),
        help: "Start time of the node since the Unix epoch.",
        labels: &[],
        series: |v| one(Value::Float(v.snapshot.process.start_unix_seconds)),
    },
];

impl<'a> View<'a> {
    pub fn new(snapshot: &'a Snapshot) -> Self {
        let top = busiest_per_peer(&snapshot.connections)
            .into_iter()
            .filter(|c| snapshot.top_peers.binary_search(&c.peer_id).is_ok())
            .collect();
        Self { snapshot, top }
    }
}

fn encode_families(
    encoder: &mut DescriptorEncoder,
    families: &[Family],
    view: &View<'_>,
) -> fmt::Result {
    for family in families {
        let unit = family.unit.map(|u| Unit::Other(u.to_owned()));
        let metric_type = match family.kind {
            Kind::Gauge => MetricType::Gauge,
            Kind::Counter => MetricType::Counter,
            Kind::Histogram => MetricType::Histogram,
        };
        let mut metric =
            encoder.encode_descriptor(family.name, family.help, unit.as_ref(), metric_type)?;
        let series = (family.series)(view);
        if family.labels.is_empty() {
            // One series, encoded without a label set (`name 1`, not `name{} 1`).
            if let Some(s) = series.into_iter().next() {
                encode_value(family.kind, s.value, metric)?;
            }
            continue;
        }
        for s in series {
            let labels: Vec<(&str, &str)> = family
                .labels
                .iter()
                .copied()
                .zip(s.labels.iter().map(String::as_str))
                .collect();
            encode_value(family.kind, s.value, metric.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

fn encode_value(kind: Kind, value: Value, sample: MetricEncoder<'_>) -> fmt::Result {
    let mut sample = sample;
    match (kind, value) {
        (Kind::Gauge, Value::Int(n)) => {
            ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX)).encode(sample)
        }
        (Kind::Gauge, Value::Float(x)) => ConstGauge::new(x).encode(sample),
        (Kind::Counter, Value::Int(n)) => ConstCounter::new(n).encode(sample),
        (Kind::Counter, Value::Float(x)) => ConstCounter::new(x).encode(sample),
        (Kind::Histogram, Value::Histogram(sum, count, buckets)) => {
            sample.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
        }
        // A family's series function produces the kind the family declares
        // (`every_family_produces_its_declared_labels_and_kind`).
        _ => Ok(()),
    }
}

/// The `p2pcc_` families, registered under the `p2pcc` prefix.
#[derive(Debug)]
pub struct TcpCollector {
    telemetry: Telemetry,
}

impl TcpCollector {
    pub fn new(telemetry: Telemetry) -> Self {
        Self { telemetry }
    }
}

impl Collector for TcpCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let snapshot = self.telemetry.snapshot();
        encode_families(&mut encoder, FAMILIES, &View::new(&snapshot))
    }
}

/// The `process_*` families, registered without a prefix.
#[derive(Debug)]
pub struct ProcessCollector {
    telemetry: Telemetry,
}

impl ProcessCollector {
    pub fn new(telemetry: Telemetry) -> Self {
        Self { telemetry }
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let snapshot = self.telemetry.snapshot();
        encode_families(&mut encoder, PROCESS_FAMILIES, &View::new(&snapshot))
    }
}

/// Every family's exported name with its kind, labels and help, as a Markdown table (the
/// README's metric table is this output; a test keeps them equal).
pub fn markdown_table() -> String {
    let mut out = String::from("| Metric | Type | Labels | Meaning |\n|---|---|---|---|\n");
    let rows = FAMILIES
        .iter()
        .map(|f| (f, Some(PREFIX)))
        .chain(PROCESS_FAMILIES.iter().map(|f| (f, None)));
    for (f, prefix) in rows {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            f.exported_name(prefix),
            f.kind.name(),
            f.labels
                .iter()
                .map(|l| format!("`{l}`"))
                .collect::<Vec<_>>()
                .join(", "),
            f.help.replace('|', "\\|"),
        ));
    }
    out
}

/// Every exported family name (Prometheus text names: with unit and `_total`).
pub fn exported_names() -> Vec<String> {
    FAMILIES
        .iter()
        .map(|f| f.exported_name(Some(PREFIX)))
        .chain(PROCESS_FAMILIES.iter().map(|f| f.exported_name(None)))
        .collect()
}

/// Content type of [`to_prometheus_text`]'s output.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether a scraper's `Accept` header asks for OpenMetrics (Prometheus does; curl, promtool
/// pipelines and most tools do not and get the classic text format).
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// Converts prometheus-client's OpenMetrics text to the Prometheus text format 0.0.4 that
/// `promtool check metrics` and classic scrapers read: counter families are named with their
/// `_total` suffix in HELP/TYPE, `# UNIT` lines, `_created` samples and `# EOF` are dropped, and
/// OpenMetrics-only types (info, stateset, unknown) become gauges/untyped.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    use std::collections::HashMap;
    let mut types: HashMap<&str, &str> = HashMap::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some((name, ty)) = rest.split_once(' ')
        {
            types.insert(name, ty.trim());
        }
    }
    let renamed = |name: &str| -> String {
        match types.get(name).copied() {
            Some("counter") => format!("{name}_total"),
            Some("info") => format!("{name}_info"),
            _ => name.to_owned(),
        }
    };
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            out.push_str(&format!("# HELP {} {help}\n", renamed(name)));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let ty = match ty.trim() {
                "info" | "stateset" => "gauge",
                "unknown" => "untyped",
                t => t,
            };
            out.push_str(&format!("# TYPE {} {ty}\n", renamed(name)));
            continue;
        }
        let sample_name = line.split(['{', ' ']).next().unwrap_or("");
        if sample_name
            .strip_suffix("_created")
            .is_some_and(|base| types.get(base) == Some(&"counter"))
        {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::{BbrView, snapshot::ProbeSnapshot};
    use cc_ebpf_common::SockStats;

    fn connection(peer: &str, cookie: u64, algorithm: &str, bytes: u64) -> PeerConnection {
        let s = SockStats {
            bytes_acked: bytes,
            cwnd_segments: 10,
            ssthresh_segments: 20,
            pacing_rate_bytes_per_sec: 1000,
            events: 1,
            ..Default::default()
        };
        PeerConnection {
            peer_id: peer.into(),
            cookie,
            direction: crate::sockets::Direction::Outbound,
            local: String::new(),
            remote: String::new(),
            algorithm: algorithm.into(),
            tcp: Some(TcpState::new(&s, 0)),
            bbr: (algorithm == "bbr-p2p").then(|| {
                let state = cc_ebpf_common::bbr::BbrState {
                    inflight_hi: 100,
                    ..Default::default()
                };
                BbrView::new(&state, 1448)
            }),
        }
    }

    fn snapshot(algorithm: &str) -> Snapshot {
        Snapshot {
            connections: vec![
                connection("a", 1, algorithm, 10),
                connection("a", 2, algorithm, 500),
                connection("b", 3, algorithm, 100),
                connection("c", 4, algorithm, 100),
            ],
            top_peers: vec!["a".into(), "b".into()],
            probes: Some(ProbeSnapshot {
                programs: vec![("tcp_probe", 1)],
                failed: vec![("tcp_destroy_sock", "no".into())],
                rtt_histograms: vec![("cubic".into(), Default::default())],
                maps: vec![("SOCK_STATS", 4, 8192)],
                run_stats: vec![("tcp_probe", Default::default())],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn every_family_produces_its_declared_labels_and_kind() {
        for algorithm in ["cubic", "bbr-p2p"] {
            let snap = snapshot(algorithm);
            let view = View::new(&snap);
            for f in FAMILIES.iter().chain(PROCESS_FAMILIES) {
                for s in (f.series)(&view) {
                    assert_eq!(s.labels.len(), f.labels.len(), "{}", f.name);
                    let kind_ok = matches!(
                        (f.kind, &s.value),
                        (Kind::Gauge | Kind::Counter, Value::Int(_) | Value::Float(_))
                            | (Kind::Histogram, Value::Histogram(..))
                    );
                    assert!(kind_ok, "{}: {:?}", f.name, s.value);
                }
            }
        }
    }

    #[test]
    fn names_are_unique_unit_last_and_per_peer_values_keyed_by_peer_only() {
        let names = exported_names();
        let unique: std::collections::BTreeSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        assert!(names.contains(&"p2pcc_peer_acked_bytes_total".to_owned()));
        assert!(names.contains(&"process_cpu_seconds_total".to_owned()));
        for f in FAMILIES {
            if f.name.starts_with("peer_") || f.name.starts_with("bbr_") {
                assert_eq!(f.labels[0], "peer_id", "{}", f.name);
                if f.name != "peer_info" {
                    assert!(!f.labels.contains(&"algorithm"), "{}", f.name);
                }
            }
        }
    }

    #[test]
    fn only_top_peers_get_series_from_their_busiest_connection() {
        let snap = snapshot("cubic");
        let view = View::new(&snap);
        let acked = FAMILIES
            .iter()
            .find(|f| f.exported_name(None) == "peer_acked_bytes_total")
            .unwrap();
        let series = (acked.series)(&view);
        assert_eq!(
            series,
            vec![
                Series {
                    labels: vec!["a".into()],
                    value: Value::Int(500)
                },
                Series {
                    labels: vec!["b".into()],
                    value: Value::Int(100)
                },
            ]
        );
    }

    fn encode(snap: Snapshot) -> String {
        let (_tx, rx) = tokio::sync::watch::channel(std::sync::Arc::new(snap));
        let mut registry = prometheus_client::registry::Registry::default();
        let telemetry = Telemetry::from_receiver(rx);
        registry
            .sub_registry_with_prefix(PREFIX)
            .register_collector(Box::new(TcpCollector::new(telemetry.clone())));
        registry.register_collector(Box::new(ProcessCollector::new(telemetry)));
        let mut om = String::new();
        prometheus_client::encoding::text::encode(&mut om, &registry).unwrap();
        to_prometheus_text(&om)
    }

    #[test]
    fn a_switch_changes_peer_info_only() {
        let series = |text: &str| -> std::collections::BTreeSet<String> {
            text.lines()
                .filter(|l| !l.starts_with('#') && l.contains("peer_id=\""))
                .map(|l| l.rsplit_once(' ').unwrap().0.to_owned())
                .collect()
        };
        let before = series(&encode(snapshot("cubic")));
        let after = series(&encode(snapshot("reno")));
        let changed: Vec<_> = before.symmetric_difference(&after).collect();
        assert_eq!(
            changed,
            vec![
                "p2pcc_peer_info{peer_id=\"a\",algorithm=\"cubic\",direction=\"outbound\"}",
                "p2pcc_peer_info{peer_id=\"a\",algorithm=\"reno\",direction=\"outbound\"}",
                "p2pcc_peer_info{peer_id=\"b\",algorithm=\"cubic\",direction=\"outbound\"}",
                "p2pcc_peer_info{peer_id=\"b\",algorithm=\"reno\",direction=\"outbound\"}",
            ]
        );
        assert!(before.contains("p2pcc_peer_cwnd_segments{peer_id=\"a\"}"));
    }

    #[test]
    fn readme_metric_table_is_the_family_table() {
        let readme = include_str!("../../../README.md");
        let begin = "<!-- metrics table: generated from FAMILIES -->\n";
        let end = "<!-- end of metrics table -->";
        let start = readme
            .find(begin)
            .expect("README has the metrics table markers")
            + begin.len();
        let stop = start + readme[start..].find(end).expect("end marker");
        let table = markdown_table();
        if std::env::var_os("P2PCC_PRINT_METRICS_TABLE").is_some() {
            print!("{table}");
        }
        assert_eq!(
            &readme[start..stop],
            table,
            "README's metric table is out of date (P2PCC_PRINT_METRICS_TABLE=1 prints it)"
        );
    }

    #[test]
    fn every_declared_family_is_in_the_text() {
        let text = encode(snapshot("bbr-p2p"));
        for name in exported_names() {
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} missing:\n{text}"
            );
        }
        assert!(
            text.contains("p2pcc_bbr_mode{peer_id=\"a\",mode=\"startup\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("p2pcc_bbr_mode{peer_id=\"a\",mode=\"drain\"} 0\n"),
            "{text}"
        );
        assert!(text.contains("p2pcc_build_info{version=\""), "{text}");
        assert!(text.contains("\np2pcc_ebpf_probes_loaded 1\n"), "{text}");
        assert!(text.contains("\np2pcc_sockets_unbound 0\n"), "{text}");
    }

    #[test]
    fn openmetrics_becomes_prometheus_text() {
        let om = "# HELP p2pcc_x_bytes Bytes.\n# TYPE p2pcc_x_bytes counter\n# UNIT p2pcc_x_bytes bytes\n\
                  p2pcc_x_bytes_total{a=\"1\"} 3\np2pcc_x_bytes_created{a=\"1\"} 1.5\n\
                  # HELP g A gauge.\n# TYPE g gauge\ng 1\n\
                  # HELP v Build.\n# TYPE v info\nv_info{version=\"1\"} 1\n\
                  # HELP h Hist.\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 0\nh_sum 0\nh_count 0\n# EOF\n";
        let text = to_prometheus_text(om);
        assert_eq!(
            text,
            "# HELP p2pcc_x_bytes_total Bytes.\n# TYPE p2pcc_x_bytes_total counter\n\
             p2pcc_x_bytes_total{a=\"1\"} 3\n\
             # HELP g A gauge.\n# TYPE g gauge\ng 1\n\
             # HELP v_info Build.\n# TYPE v_info gauge\nv_info{version=\"1\"} 1\n\
             # HELP h Hist.\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 0\nh_sum 0\nh_count 0\n"
        );
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4"
        )));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(None));
    }
}
