//! 200 peers, K = 32: `/metrics` carries exactly the 32 busiest peers' series (by recent
//! throughput) plus the all-peer histograms;
//! after every peer disconnects no per-peer series and no map entries remain (the kernel's
//! `tcp_destroy_sock` removes them and its final records are counted). The output passes
//! `promtool check metrics`.
//!
//! Real and fast: the probes are loaded in this process and 200 loopback TCP connections are
//! registered through the node's socket table, exactly as the TCP transport registers them.

mod common;

use std::{
    collections::BTreeSet,
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    os::fd::AsFd as _,
    sync::Arc,
    time::Duration,
};

use common::{eventually, kernel_tests_possible, metric_value};
use p2p_node::{
    ebpf::{self, Probes},
    sockets::{Direction, SocketTable},
    telemetry::{
        Telemetry,
        collector::Collector,
        prometheus::{TcpCollector, to_prometheus_text},
    },
};
use prometheus_client::registry::Registry;

const PEERS: usize = 200;
const K: usize = 32;

fn scrape(registry: &Registry) -> String {
    let mut om = String::new();
    prometheus_client::encoding::text::encode(&mut om, registry).unwrap();
    to_prometheus_text(&om)
}

fn peer_ids(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| l.starts_with("p2pcc_peer_"))
        .filter_map(|l| {
            let start = l.find("peer_id=\"")? + 9;
            let end = start + l[start..].find('"')?;
            Some(l[start..end].to_owned())
        })
        .collect()
}

#[test]
fn two_hundred_peers_export_the_top_32_and_leave_nothing_behind() {
    if !kernel_tests_possible() {
        return;
    }
    ebpf::preflight().expect("preflight");
    let probes = Arc::new(Probes::load(false).expect("loading the probes"));
    let table = SocketTable::global();
    table.set_observer(probes.clone());
    let telemetry = Telemetry::start(Collector::new(table.clone(), Some(probes.clone()), None, K));
    let mut registry = Registry::default();
    registry
        .sub_registry_with_prefix("p2pcc")
        .register_collector(Box::new(TcpCollector::new(telemetry.clone())));

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut conns = Vec::new();
    let mut busiest = Vec::new();
    for i in 0..PEERS {
        let client = TcpStream::connect(addr).unwrap();
        let (server, _) = listener.accept().unwrap();
        let cookie = table
            .register(
                client.as_fd(),
                Direction::Outbound,
                client.local_addr().unwrap(),
                addr,
            )
            .unwrap();
        let peer = libp2p::PeerId::random();
        table.bind_peer(cookie, peer);
        if i >= PEERS - K {
            busiest.push(peer.to_base58());
        }
        conns.push((cookie, client, server));
    }
    // Traffic for a few collections: the last K peers send 100× what the others send, so
    // they are the busiest by recent throughput whatever the collector picked first (the
    // top-K set has hysteresis). A reply after each write: tcp_probe sees a segment before
    // the kernel processes it, so the second exchange's segments carry the first one's
    // acknowledged bytes.
    let traffic_until = std::time::Instant::now() + 3 * p2p_node::telemetry::collector::INTERVAL;
    while std::time::Instant::now() < traffic_until {
        for (i, (_, client, server)) in conns.iter().enumerate() {
            let bytes = if i >= PEERS - K { 100_000 } else { 1_000 };
            for len in [bytes, 1] {
                (&*client).write_all(&vec![7u8; len]).unwrap();
                let mut buf = vec![0u8; len];
                (&*server).read_exact(&mut buf).unwrap();
                (&*server).write_all(&[1]).unwrap();
                (&*client).read_exact(&mut [0u8; 1]).unwrap();
            }
        }
    }

    // Every socket saw its ACKs: the top 32 by bytes are exported, no one else.
    let text = eventually(Duration::from_secs(10), || {
        let t = scrape(&registry);
        (peer_ids(&t).len() == K && t.contains("p2pcc_tcp_srtt_seconds_bucket")).then_some(t)
    })
    .unwrap_or_else(|| panic!("never exactly {K} peers:\n{}", scrape(&registry)));
    let exported = peer_ids(&text);
    let expected: BTreeSet<String> = busiest.into_iter().collect();
    assert_eq!(exported, expected, "the K busiest peers are exported");
    let algorithm = p2p_node::sockets::congestion(conns[0].1.as_fd()).unwrap();
    assert_eq!(
        metric_value(
            &text,
            &format!("p2pcc_connections{{algorithm=\"{algorithm}\"}}")
        ),
        Some(PEERS as f64)
    );
    assert!(
        metric_value(&text, "p2pcc_ebpf_map_entries{map=\"SOCK_STATS\"}").unwrap() >= PEERS as f64
    );
    let samples: f64 = text
        .lines()
        .filter(|l| l.starts_with("p2pcc_tcp_srtt_seconds_count"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        // The kernel samples one tcp_probe event in four into the histogram.
        samples >= PEERS as f64 / 4.0,
        "srtt histogram has {samples} samples"
    );
    promtool(&text);

    // Everyone disconnects: the node unregisters, then closes.
    for (cookie, client, server) in conns {
        table.unregister(cookie);
        drop(client);
        drop(server);
    }
    let text = eventually(Duration::from_secs(20), || {
        let t = scrape(&registry);
        (metric_value(&t, "p2pcc_ebpf_map_entries{map=\"SOCK_STATS\"}") == Some(0.0)
            && metric_value(&t, "p2pcc_ebpf_sockets_closing") == Some(0.0))
        .then_some(t)
    })
    .unwrap_or_else(|| panic!("map entries remain:\n{}", scrape(&registry)));
    assert!(peer_ids(&text).is_empty(), "per-peer series remain");
    assert!(probes.all_stats().is_empty());
    assert_eq!(
        metric_value(&text, "p2pcc_ebpf_final_records_total{source=\"destroy\"}"),
        Some(PEERS as f64),
        "every socket's final record came from tcp_destroy_sock"
    );
    let lost: Vec<f64> = ["sock_stats_full", "final_records_full", "rtt_hist_full"]
        .iter()
        .map(|reason| {
            metric_value(
                &text,
                &format!("p2pcc_ebpf_events_lost_total{{reason=\"{reason}\"}}"),
            )
            .unwrap_or_else(|| panic!("no events_lost series for {reason}"))
        })
        .collect();
    assert_eq!(lost, [0.0; 3], "events lost by reason");
    promtool(&text);
}

/// `promtool check metrics` on the text; any reported problem fails the test.
fn promtool(text: &str) {
    let mut child = match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED promtool: {e} (apt-get install prometheus)");
            return;
        }
        Err(e) => panic!("promtool: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics: {report}"
    );
}
