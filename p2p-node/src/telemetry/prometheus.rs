//! Prometheus export: encodes the latest [`Snapshot`](super::snapshot::Snapshot) (no kernel
//! access at scrape time), so a series exists exactly while its peer is connected (as of the
//! last collection).

use std::{collections::BTreeMap, fmt};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Unit,
};

use super::{PeerConnection, TcpState, Telemetry, busiest_per_peer};

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
struct PeerStateLabels {
    peer_id: String,
    algorithm: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlgorithmStateLabels {
    algorithm: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProgramLabels {
    program: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: String,
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
        let snapshot = self.telemetry.snapshot();
        let rows = &snapshot.connections;
        let probes = snapshot.probes.as_ref();
        let top: Vec<&PeerConnection> = busiest_per_peer(rows)
            .into_iter()
            .filter(|c| snapshot.top_peers.binary_search(&c.peer_id).is_ok())
            .collect();
        let peers: Vec<(PeerLabels, TcpState)> = top
            .iter()
            .copied()
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
        counter(
            e,
            "peer_retransmitted_bytes",
            "Bytes retransmitted on the peer's connection (tcp_retransmit_skb).",
            None,
            peers
                .iter()
                .map(|(l, t)| (l.clone(), t.retransmitted_bytes)),
        )?;
        gauge(
            e,
            "peer_send_window",
            "Receive window the peer advertises (what this side may send).",
            Some(Unit::Bytes),
            per_peer(|t| f64::from(t.send_window_bytes)),
        )?;
        gauge(
            e,
            "peer_receive_window",
            "Receive window this side advertises to the peer.",
            Some(Unit::Bytes),
            per_peer(|t| f64::from(t.receive_window_bytes)),
        )?;
        counter(
            e,
            "peer_ca_transitions",
            "Congestion-state changes of the peer's connection (tcp_cong_state_set).",
            None,
            peers
                .iter()
                .map(|(l, t)| (l.clone(), u64::from(t.ca_transitions))),
        )?;
        {
            let mut metric = e.encode_descriptor(
                "peer_ca_state",
                "Time the peer's connection spent in each congestion-avoidance state since the node began tracking it.",
                Some(&Unit::Seconds),
                MetricType::Counter,
            )?;
            for (l, t) in &peers {
                for (state, seconds) in t.ca_state_seconds.by_state() {
                    let labels = PeerStateLabels {
                        peer_id: l.peer_id.clone(),
                        algorithm: l.algorithm.clone(),
                        state: state.into(),
                    };
                    ConstCounter::new(seconds).encode(metric.encode_family(&labels)?)?;
                }
            }
        }

        let mut by_algorithm: BTreeMap<String, i64> = BTreeMap::new();
        for row in rows {
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

        let bbr: Vec<(String, super::BbrView)> = top
            .iter()
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

        let closed = &snapshot.closed;
        let algo = |a: &String| AlgorithmLabels {
            algorithm: a.clone(),
        };
        counter(
            e,
            "closed_connections",
            "TCP connections whose tracking ended (final record from tcp_destroy_sock, or read by the node when none came).",
            None,
            closed.iter().map(|(a, c)| (algo(a), c.connections)),
        )?;
        counter(
            e,
            "closed_bytes_acked",
            "Bytes acknowledged over connections whose tracking ended.",
            None,
            closed.iter().map(|(a, c)| (algo(a), c.bytes_acked)),
        )?;
        counter(
            e,
            "closed_retransmitted_bytes",
            "Bytes retransmitted over connections whose tracking ended.",
            None,
            closed.iter().map(|(a, c)| (algo(a), c.retransmitted_bytes)),
        )?;
        {
            let mut metric = e.encode_descriptor(
                "closed_ca_state",
                "Time connections whose tracking ended spent in each congestion-avoidance state.",
                Some(&Unit::Seconds),
                MetricType::Counter,
            )?;
            for (a, c) in closed {
                for (i, state) in cc_ebpf_common::CA_STATES.iter().enumerate() {
                    let labels = AlgorithmStateLabels {
                        algorithm: a.clone(),
                        state: (*state).into(),
                    };
                    ConstCounter::new(c.ca_state_ns[i] as f64 / 1e9)
                        .encode(metric.encode_family(&labels)?)?;
                }
            }
        }

        if let Some(probes) = probes {
            let mut metric = e.encode_descriptor(
                "tcp_srtt_seconds",
                "Smoothed RTT of every tracked connection, sampled on one in four tcp_probe events (per ACK), by congestion control; log2 buckets aggregated in the kernel.",
                None,
                MetricType::Histogram,
            )?;
            for (algorithm, h) in &probes.rtt_histograms {
                let mut buckets: Vec<(f64, u64)> = h
                    .buckets
                    .iter()
                    .enumerate()
                    .map(|(i, &n)| ((1u64 << (i + 1)) as f64 / 1e6, n))
                    .collect();
                buckets.push((f64::MAX, 0));
                let labels = AlgorithmLabels {
                    algorithm: crate::ebpf::bbr::user_name(algorithm).to_owned(),
                };
                metric
                    .encode_family(&labels)?
                    .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                        h.sum_us as f64 / 1e6,
                        h.count,
                        &buckets,
                        None,
                    )?;
            }
        }

        single(
            e,
            "cc_switches",
            "Switches of the node's congestion control since it started (PUT /api/cc).",
            MetricType::Counter,
            ConstCounter::new(crate::cc::switches()),
        )?;
        let attached = probes.map_or(0, |p| p.programs.len() as i64);
        single(
            e,
            "ebpf_programs_attached",
            "eBPF programs loaded and attached by this node.",
            MetricType::Gauge,
            ConstGauge::new(attached),
        )?;
        single(
            e,
            "ebpf_probes_loaded",
            "1 when the TCP probes are loaded, 0 when the node runs without them (see its log).",
            MetricType::Gauge,
            ConstGauge::new(i64::from(probes.is_some())),
        )?;
        if let Some(probes) = probes {
            let counters = probes.counters;
            gauge(
                e,
                "ebpf_program_load_failures",
                "Optional probe programs that failed to load or attach (1 per program; the reason is in the log).",
                None,
                probes.failed.iter().map(|(p, _)| {
                    (
                        ProgramLabels {
                            program: (*p).into(),
                        },
                        1i64,
                    )
                }),
            )?;
            let map = |m: &str| MapLabels { map: m.into() };
            gauge(
                e,
                "ebpf_map_entries",
                "Entries in each eBPF map.",
                None,
                probes
                    .maps
                    .iter()
                    .map(|&(m, entries, _)| (map(m), entries as i64)),
            )?;
            gauge(
                e,
                "ebpf_map_capacity",
                "max_entries of each eBPF map.",
                None,
                probes
                    .maps
                    .iter()
                    .map(|&(m, _, capacity)| (map(m), i64::from(capacity))),
            )?;
            single(
                e,
                "ebpf_sockets_closing",
                "Sockets the node dropped whose entry waits for tcp_destroy_sock (removed by the node after 90 s).",
                MetricType::Gauge,
                ConstGauge::new(probes.closing as i64),
            )?;
            single(
                e,
                "ebpf_probe_events",
                "tcp_probe events the probe ran for (all sockets).",
                MetricType::Counter,
                ConstCounter::new(counters.events),
            )?;
            counter(
                e,
                "ebpf_tracked_events",
                "Events of tracked sockets per tracepoint program other than tcp_probe.",
                None,
                [
                    ("tcp_retransmit_skb", counters.retransmit_events),
                    ("tcp_cong_state_set", counters.cong_state_events),
                    ("tcp_destroy_sock", counters.destroy_events),
                ]
                .map(|(p, n)| (ProgramLabels { program: p.into() }, n)),
            )?;
            single(
                e,
                "ebpf_events_lost",
                "Probe events that could not be recorded: socket map full, final-record ring buffer full, or RTT histogram map unable to take an algorithm.",
                MetricType::Counter,
                ConstCounter::new(counters.lost()),
            )?;
            let (destroyed, expired) = closed.values().fold((0, 0), |(d, x), c| {
                (d + c.connections - c.expired, x + c.expired)
            });
            counter(
                e,
                "ebpf_final_records",
                "Final records of ended sockets by source: destroy (tcp_destroy_sock) or expired (no destroy within 90 s; read and removed by the node).",
                None,
                [("destroy", destroyed), ("expired", expired)]
                    .map(|(s, n)| (SourceLabels { source: s.into() }, n)),
            )?;
            let run = &probes.run_stats;
            let program = |p: &str| ProgramLabels { program: p.into() };
            counter(
                e,
                "ebpf_program_runs",
                "Runs of each eBPF program (BPF_OBJ_GET_INFO_BY_FD run_cnt; counted only while kernel.bpf_stats_enabled is on: `p2p-node run --bpf-stats` or `sysctl kernel.bpf_stats_enabled=1`).",
                None,
                run.iter().map(|(p, r)| (program(p), r.run_count)),
            )?;
            {
                let mut metric = e.encode_descriptor(
                    "ebpf_program_run",
                    "Time spent running each eBPF program (BPF_OBJ_GET_INFO_BY_FD run_time_ns; counted only while kernel.bpf_stats_enabled is on: `p2p-node run --bpf-stats` or `sysctl kernel.bpf_stats_enabled=1`).",
                    Some(&Unit::Seconds),
                    MetricType::Counter,
                )?;
                for (p, r) in run {
                    ConstCounter::new(r.run_time_ns as f64 / 1e9)
                        .encode(metric.encode_family(&program(p))?)?;
                }
            }
            single(
                e,
                "ebpf_stats_enabled",
                "1 while kernel.bpf_stats_enabled is on (run time and count are being counted).",
                MetricType::Gauge,
                ConstGauge::new(i64::from(probes.stats_enabled)),
            )?;
        }
        Ok(())
    }
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
