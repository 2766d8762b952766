//! What the node says this kernel lets it do (`/api/node` `ebpf.features`, and
//! `p2pcc_kernel_feature_available`), checked against the kernel's own account: the trace
//! event's fields in tracefs, the kernel release, `tcp_available_congestion_control`.

mod common;

use common::{NetnsPair, Node, kernel_tests_possible};

fn release_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut parts = release.trim().split(['.', '-']);
    let mut next = || {
        parts
            .next()
            .and_then(|p| p.parse::<u32>().ok())
            .unwrap_or(0)
    };
    (next(), next()) >= (major, minor)
}

#[test]
fn the_node_reports_each_probe_algorithm_and_kernel_facility() {
    if !kernel_tests_possible() {
        return;
    }
    let net = NetnsPair::new("feat", 11);
    let node = Node::start(&net.a, &net.addr_a, &["--cc", "cubic"]);
    let info: serde_json::Value = serde_json::from_str(&node.get("/api/node")).unwrap();
    let features = info["ebpf"]["features"]
        .as_array()
        .expect("features")
        .clone();
    let find = |kind: &str, name: &str| {
        features
            .iter()
            .find(|f| f["kind"] == kind && f["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name} in {features:#?}"))
            .clone()
    };

    // Every probe attached; tcp_retransmit_skb in the form the kernel's tracepoint has: the
    // trace event carries `err` from Linux 6.10 on (the program reading it), not before.
    let format =
        std::fs::read_to_string("/sys/kernel/tracing/events/tcp/tcp_retransmit_skb/format")
            .or_else(|_| {
                std::fs::read_to_string(
                    "/sys/kernel/debug/tracing/events/tcp/tcp_retransmit_skb/format",
                )
            })
            .expect("tracefs (mount -t tracefs tracefs /sys/kernel/tracing)");
    let form = if format.contains("field:int err;") {
        "program tcp_retransmit_skb"
    } else {
        "program tcp_retransmit_skb_2args"
    };
    for tracepoint in [
        "tcp_probe",
        "tcp_retransmit_skb",
        "tcp_cong_state_set",
        "tcp_destroy_sock",
    ] {
        let f = find("probe", tracepoint);
        assert_eq!(f["available"], true, "{f}");
    }
    assert_eq!(find("probe", "tcp_retransmit_skb")["detail"], form);

    // Every algorithm the kernel lists is available to the node, and bbr-p2p here too.
    let kernel =
        std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_congestion_control").unwrap();
    for name in kernel
        .split_whitespace()
        .map(|n| n.replace("bbr_p2p", "bbr-p2p"))
    {
        assert_eq!(find("algorithm", &name)["available"], true, "{name}");
    }
    assert_eq!(find("algorithm", "bbr-p2p")["available"], true);

    // The collector's refresh of idle sockets (iter/tcp with socket storage, Linux >= 5.9):
    // loaded on every supported kernel, so unavailable here is a failure, not a skip.
    let refresh = find("kernel", "iter_tcp");
    assert_eq!(refresh["available"], true, "{refresh}");

    // struct_ops links: from Linux 6.4.
    let link = find("kernel", "struct_ops_link");
    assert_eq!(link["available"], release_at_least(6, 4), "{link}");
    // cong_control's prototype: 4 arguments here (6.18), 2 on 6.1 (the QEMU tier).
    let arity = find("kernel", "tcp_congestion_ops.cong_control");
    let detail = arity["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("4 arguments") || detail.starts_with("2 arguments"),
        "{arity}"
    );

    // The metric says the same, one series per feature.
    let metrics = node.get("/metrics");
    let series = |kind: &str, name: &str| {
        common::metric_value(
            &metrics,
            &format!("p2pcc_kernel_feature_available{{kind=\"{kind}\",name=\"{name}\"}}"),
        )
    };
    assert_eq!(series("probe", "tcp_retransmit_skb"), Some(1.0));
    assert_eq!(
        series("kernel", "struct_ops_link"),
        Some(if release_at_least(6, 4) { 1.0 } else { 0.0 })
    );
    let count = metrics
        .lines()
        .filter(|l| l.starts_with("p2pcc_kernel_feature_available{"))
        .count();
    assert_eq!(count, features.len(), "{metrics}");
}
