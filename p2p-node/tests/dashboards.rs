//! The Grafana dashboard and Prometheus config in `dashboards/` match what a node exports.

mod common;

use std::{collections::BTreeSet, time::Duration};

use common::{NetnsPair, Node, eventually, kernel_tests_possible};

fn dashboard_metrics() -> BTreeSet<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../dashboards/grafana/p2p-cc.json"
    );
    let text = std::fs::read_to_string(path).expect("dashboard JSON");
    let json: serde_json::Value = serde_json::from_str(&text).expect("dashboard is valid JSON");
    let mut names = BTreeSet::new();
    let mut exprs = Vec::new();
    for panel in json["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    for templ in json["templating"]["list"].as_array().unwrap() {
        if let Some(q) = templ["query"].as_str() {
            exprs.push(q.to_owned());
        }
    }
    for expr in exprs {
        let mut rest = expr.as_str();
        while let Some(at) = rest.find("p2pcc_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            names.insert(name);
        }
    }
    names
}

#[test]
fn every_dashboard_metric_is_a_declared_family() {
    let declared = p2p_node::telemetry::prometheus::exported_names();
    let names = dashboard_metrics();
    let unknown: Vec<&String> = names
        .iter()
        .filter(|n| {
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| n.strip_suffix(s))
                .unwrap_or(n);
            !declared.iter().any(|d| d == *n || d == base)
        })
        .collect();
    assert!(
        unknown.is_empty(),
        "the dashboard queries families the node does not declare: {unknown:?}"
    );
}

#[test]
fn every_dashboard_metric_is_exported_by_a_node() {
    if !kernel_tests_possible() {
        return;
    }
    let names = dashboard_metrics();
    assert!(names.len() > 15, "{names:?}");
    let net = NetnsPair::new("dash", 6);
    let a = Node::start(&net.a, &net.addr_a, &[]);
    let b = Node::start(&net.b, &net.addr_b, &["--peer", &a.multiaddr]);
    let text = eventually(Duration::from_secs(15), || {
        let t = b.get("/metrics");
        t.contains("p2pcc_peer_cwnd_segments{").then_some(t)
    })
    .expect("B exports per-peer series");
    let families: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| {
            !families.contains(n.as_str())
                && !families.contains(n.strip_suffix("_total").unwrap_or(n))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "dashboard uses metrics the node does not export: {missing:?}"
    );
}

#[test]
fn prometheus_config_is_valid() {
    let config = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../dashboards/prometheus/prometheus.yml"
    );
    match std::process::Command::new("promtool")
        .args(["check", "config", config])
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED: promtool not available ({e})")
        }
        Err(e) => panic!("promtool is required in CI (Debian package prometheus): {e}"),
    }
}
