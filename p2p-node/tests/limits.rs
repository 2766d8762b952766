//! Real-kernel tests of the resource limits (`node::limits`): a node in a network namespace,
//! a memory limit set on its cgroup, and a storm of libp2p peers dialling it at once from another
//! namespace. Every number asserted comes from the node's own API or the kernel's cgroup files.

mod common;

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::Poll,
    time::{Duration, Instant},
};

use common::{NetnsPair, Node, enter_netns, http_in_ns, kernel_tests_possible, metric};
use futures::future::poll_fn;
use libp2p::{
    Multiaddr, Transport as _,
    core::{
        Endpoint,
        muxing::{StreamMuxerBox, StreamMuxerExt as _},
        transport::{DialOpts, PortUse},
        upgrade::Version,
    },
    identity::Keypair,
    noise, yamux,
};
use serde_json::Value;

/// A memory cgroup made for one test, removed on drop (after the node in it is gone).
struct MemoryCgroup {
    dir: PathBuf,
    /// `memory.max` (v2) or `memory.limit_in_bytes` (v1).
    limit_file: PathBuf,
}

impl MemoryCgroup {
    /// A child of this process's own memory cgroup (v1, as on hybrid hosts) or of the v2 root
    /// (v2 allows controllers only in leaf groups below the root), limited to `bytes`.
    fn new(name: &str, bytes: u64) -> Self {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mount = |fstype: &str, option: Option<&str>| -> Option<PathBuf> {
            mountinfo.lines().find_map(|line| {
                let (left, right) = line.split_once(" - ")?;
                let mut right = right.split(' ');
                let ok = right.next()? == fstype
                    && option
                        .is_none_or(|o| right.nth(1).is_some_and(|s| s.split(',').any(|x| x == o)));
                ok.then(|| PathBuf::from(left.split(' ').nth(4).unwrap()))
            })
        };
        let v2 = mount("cgroup2", None).filter(|m| {
            std::fs::read_to_string(m.join("cgroup.controllers"))
                .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"))
        });
        let (dir, limit_file) = if let Some(root) = v2 {
            let _ = std::fs::write(root.join("cgroup.subtree_control"), "+memory");
            let dir = root.join(format!("p2pcc-test-{name}"));
            (dir.clone(), dir.join("memory.max"))
        } else {
            let root = mount("cgroup", Some("memory"))
                .expect("neither a cgroup v2 memory controller nor a v1 memory hierarchy");
            let own = std::fs::read_to_string("/proc/self/cgroup")
                .unwrap()
                .lines()
                .find_map(|l| {
                    let mut p = l.splitn(3, ':');
                    let (_, c, path) = (p.next()?, p.next()?, p.next()?);
                    c.split(',').any(|c| c == "memory").then(|| path.to_owned())
                })
                .expect("no memory line in /proc/self/cgroup");
            let dir = root
                .join(own.trim_start_matches('/'))
                .join(format!("p2pcc-test-{name}"));
            (dir.clone(), dir.join("memory.limit_in_bytes"))
        };
        let _ = std::fs::remove_dir(&dir);
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        std::fs::write(&limit_file, bytes.to_string())
            .unwrap_or_else(|e| panic!("writing {}: {e}", limit_file.display()));
        Self { dir, limit_file }
    }

    /// A shell command line for [`Node::start_wrapped`]: inside the namespace's own mount
    /// namespace (`ip netns exec` remounts /sys, hiding the cgroup filesystems), mount the
    /// cgroup hierarchy as a container runtime would, join this cgroup, exec the node.
    fn wrapper(&self) -> Vec<String> {
        let mount = if self.limit_file.ends_with("memory.max") {
            "mount -t cgroup2 none /sys/fs/cgroup".to_owned()
        } else {
            "mount -t tmpfs none /sys/fs/cgroup && mkdir /sys/fs/cgroup/memory && \
             mount -t cgroup -o memory none /sys/fs/cgroup/memory"
                .to_owned()
        };
        let procs = self.dir.join("cgroup.procs");
        vec![
            "sh".into(),
            "-c".into(),
            format!(r#"{mount} && echo $$ > "$0" && exec "$@""#),
            procs.display().to_string(),
        ]
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn node_info(node: &Node) -> Value {
    serde_json::from_str(&node.get("/api/node")).unwrap()
}

#[test]
fn a_memory_limit_on_the_nodes_cgroup_is_reflected_in_its_limits() {
    if !kernel_tests_possible() {
        return;
    }
    const LIMIT: u64 = 256 << 20;
    let cgroup = MemoryCgroup::new("limits-mem", LIMIT);
    let net = NetnsPair::new("limits-mem", 61);
    let wrapper = cgroup.wrapper();
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let limited = Node::start_wrapped(&wrapper, &net.a, &net.addr_a, "127.0.0.1:9464", &[]);
    let free = Node::start(&net.b, &net.addr_b, &[]);

    // The kernel put the node where we asked.
    let own = std::fs::read_to_string(format!("/proc/{}/cgroup", limited.pid())).unwrap();
    let leaf = cgroup.dir.file_name().unwrap().to_str().unwrap();
    assert!(own.contains(leaf), "node not in {leaf}: {own}");

    let info = node_info(&limited);
    let memory = &info["limits"]["memory"];
    eprintln!("limited node: {}", info["limits"]);
    assert_eq!(memory["available_bytes"].as_u64(), Some(LIMIT), "{memory}");
    // The node names the file it read (under its own view of the cgroup mount).
    let source = memory["source"].to_string();
    let file = cgroup.limit_file.file_name().unwrap().to_str().unwrap();
    assert!(
        source.contains(&format!("{leaf}/{file}")),
        "source {source} should name {leaf}/{file}"
    );
    let budget = memory["limit_bytes"].as_u64().unwrap();
    assert!(budget > 0 && budget < LIMIT, "budget {budget}");

    let free_info = node_info(&free);
    eprintln!("unlimited node: {}", free_info["limits"]);
    assert_eq!(free_info["limits"]["memory"]["source"], "host");
    let host_bytes = free_info["limits"]["memory"]["available_bytes"]
        .as_u64()
        .unwrap();
    assert!(host_bytes > LIMIT);
    // A quarter GiB cannot hold the default 1,024 + 512 connections; host RAM here can.
    let conns = |i: &Value, dir: &str| i["limits"]["system"][dir].as_u64().unwrap();
    assert_eq!(conns(&free_info, "conns_inbound"), 1024);
    assert_eq!(conns(&free_info, "conns_outbound"), 512);
    assert!(conns(&info, "conns_inbound") < 1024, "{}", info["limits"]);
    assert!(conns(&info, "conns_outbound") < 512, "{}", info["limits"]);
    assert!(
        info["limits"]["system"]["streams_inbound"].as_u64()
            < free_info["limits"]["system"]["streams_inbound"].as_u64()
    );
    drop(limited);
}

/// Dials `addr` as a fresh peer (its own key) and keeps the connection up until aborted.
async fn dial_and_hold(addr: Multiaddr) -> Result<(), String> {
    let key = Keypair::generate_ed25519();
    let mut transport = libp2p::tcp::tokio::Transport::new(libp2p::tcp::Config::default())
        .upgrade(Version::V1)
        .authenticate(noise::Config::new(&key).map_err(|e| e.to_string())?)
        .multiplex(yamux::Config::default())
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
        .boxed();
    let opts = DialOpts {
        role: Endpoint::Dialer,
        port_use: PortUse::New,
    };
    let dial = transport.dial(addr, opts).map_err(|e| e.to_string())?;
    let (_, mut muxer) = dial.await.map_err(|e| e.to_string())?;
    // Drive the connection (the node opens identify/kad/ping streams; drop them) until it ends.
    poll_fn(|cx| {
        loop {
            match muxer.poll_inbound_unpin(cx) {
                Poll::Ready(Ok(stream)) => drop(stream),
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Pending => break,
            }
        }
        match muxer.poll_unpin(cx) {
            Poll::Ready(Err(_)) => Poll::Ready(()),
            _ => Poll::Pending,
        }
    })
    .await;
    Ok(())
}

/// Times a GET from inside `ns`.
fn timed_get(ns: &str, path: &str) -> Duration {
    let start = Instant::now();
    let (status, body) = http_in_ns(ns, 9464, "GET", path, "", None, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(status, 200, "GET {path}: {body}");
    start.elapsed()
}

#[test]
fn a_thousand_peers_dialling_at_once_meet_exact_limits_and_the_node_stays_responsive() {
    if !kernel_tests_possible() {
        return;
    }
    const PEERS: usize = 1000;
    const MAX_INBOUND: u64 = 100;
    let net = NetnsPair::new("limits-storm", 62);
    let node = Node::start(
        &net.a,
        &net.addr_a,
        &[
            "--max-inbound",
            &MAX_INBOUND.to_string(),
            "--idle-timeout-secs",
            "300",
        ],
    );
    let addr: Multiaddr = node.multiaddr.parse().unwrap();

    // Probe /healthz and /metrics every 100 ms from the node's namespace during the storm.
    let storming = Arc::new(AtomicBool::new(true));
    let prober = {
        let ns = net.a.clone();
        let storming = storming.clone();
        std::thread::spawn(move || {
            let mut worst = Duration::ZERO;
            let mut probes = 0;
            while storming.load(Ordering::Relaxed) {
                for path in ["/healthz", "/metrics"] {
                    worst = worst.max(timed_get(&ns, path));
                    probes += 1;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (worst, probes)
        })
    };

    let dialer_ns = net.b.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(move || enter_netns(&dialer_ns).expect("entering the dialers' netns"))
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..PEERS)
        .map(|_| runtime.spawn(dial_and_hold(addr.clone())))
        .collect();

    // Every dial is either established or refused and counted by the node: wait until the
    // node's numbers account for all of them (or time out and report what they say).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut max_seen = 0;
    let (established, denied) = loop {
        let info = node_info(&node);
        let established = info["inbound_connections"].as_u64().unwrap();
        max_seen = max_seen.max(established);
        let denied: u64 = info["denied"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| {
                let limit = d["limit"].as_str().unwrap();
                limit.starts_with("conns") || limit == "memory"
            })
            .map(|d| d["count"].as_u64().unwrap())
            .sum();
        if established + denied >= PEERS as u64 || Instant::now() > deadline {
            eprintln!("node after the storm: {}", info["denied"]);
            break (established, denied);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    storming.store(false, Ordering::Relaxed);
    let (worst, probes) = prober.join().unwrap();
    // `/metrics` is encoded once per telemetry snapshot (1 Hz), so its counters may trail
    // `/api/node`'s live ones by a snapshot: wait (bounded) for one that has caught up.
    let denied_in_metrics = |metrics: &str| -> u64 {
        ["conns_pending_inbound", "conns_inbound", "conns", "memory"]
            .iter()
            .filter_map(|l| metric(metrics, "p2pcc_resource_denied_total", ("limit", l)))
            .sum::<f64>() as u64
    };
    let caught_up = Instant::now() + Duration::from_secs(5);
    let metrics = loop {
        let metrics = node.get("/metrics");
        if denied_in_metrics(&metrics) == denied || Instant::now() > caught_up {
            break metrics;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let info = node_info(&node);
    for task in tasks {
        task.abort();
    }
    runtime.shutdown_timeout(Duration::from_secs(5));

    eprintln!(
        "{PEERS} peers: {established} established (limit {MAX_INBOUND}, max seen {max_seen}), \
         {denied} refused; slowest of {probes} /healthz + /metrics probes: {worst:?}"
    );
    assert_eq!(established, MAX_INBOUND, "{}", info["denied"]);
    assert!(
        max_seen <= MAX_INBOUND,
        "the limit was exceeded: {max_seen}"
    );
    assert_eq!(
        established + denied,
        PEERS as u64,
        "every dial is established or refused and counted"
    );
    // The counters in /metrics are the ones in /api/node (within a snapshot).
    assert_eq!(denied_in_metrics(&metrics), denied, "{metrics}");
    assert!(worst < Duration::from_secs(1), "slowest probe {worst:?}");
    assert!(probes >= 2);
}
