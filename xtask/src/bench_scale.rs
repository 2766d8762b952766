//! `cargo xtask bench scale`: what the node's telemetry costs at 100, 500 and 1,000 peers
//! (issue 12); writes the section "## Telemetry at scale (issue 12)" of `docs/bench.md`.
//!
//! One namespace, `p2pcc-sc`, loopback only: a release `p2p-node run` and, for each peer count,
//! the release example `scale_peers` (that many libp2p identities, one connection each, through
//! the node's own TCP transport). Once the node's snapshot lists every connection:
//! - `/metrics` and `/api/peers` latency: `--requests` sequential requests each, timed by curl
//!   (`%{time_total}`, process start excluded), p50 and p99;
//! - syscalls per `/metrics` scrape: `strace -f -c` on the node while it serves `--requests`
//!   scrapes, minus a window of the same length without scrapes (the collector's own calls),
//!   divided by the scrapes;
//! - the node's RSS (`process_resident_memory_bytes`), one collection's duration
//!   (`p2pcc_telemetry_collect_duration_seconds`) and the memory of the BPF maps it holds (the
//!   `memlock` of each map fd in `/proc/<pid>/fdinfo`);
//! - the collector's refresh walk (`p2pcc_telemetry_refresh_duration_seconds`: the `iter/tcp`
//!   walk over every TCP socket of the namespace, the node's and the peers' ends), median and
//!   maximum over [`REFRESH_SAMPLES`] distinct collections.
//!
//! The peers, the node and the namespace are removed by guards on every exit path.

use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead as _, BufReader},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, bail};

use crate::{
    bench::{
        install_stop_handler, record_header, sleep_unless_stopped, stop_requested, write_section,
    },
    exec::{
        describe, die_with_parent, echo_problems, exec, is_root, output, release_node, stop_child,
        workspace_root,
    },
    setup,
};

const NS: &str = "p2pcc-sc";
const HEADING: &str = "## Telemetry at scale (issue 12)";
const LISTEN: &str = "/ip4/127.0.0.1/tcp/4011";
const HTTP: &str = "127.0.0.1:9474";
/// Issue 12's targets.
const TARGET_METRICS_P99_MS: f64 = 10.0;
const TARGET_PEERS_P99_MS: f64 = 20.0;
const TARGET_SYSCALLS: f64 = 50.0;
const TARGET_RSS_MB: f64 = 250.0;
/// Collections whose refresh walk is read per peer count.
const REFRESH_SAMPLES: usize = 5;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(300);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(clap::Args)]
pub struct ScaleOptions {
    /// Peer counts, in order.
    #[arg(long, value_delimiter = ',', default_value = "100,500,1000",
          value_parser = clap::value_parser!(u32).range(1..=2000))]
    peers: Vec<u32>,
    /// Requests per endpoint and peer count.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(10..=10000))]
    requests: u32,
    /// Use the binaries already in target/release instead of building them first.
    #[arg(long)]
    skip_build: bool,
    /// The markdown file whose generated block is (re)written (notes outside its markers are
    /// kept).
    #[arg(long, default_value = "docs/bench.md")]
    output: PathBuf,
}

/// What was measured at one peer count.
struct Row {
    peers: u32,
    metrics_ms: (f64, f64),
    api_peers_ms: (f64, f64),
    syscalls_per_scrape: f64,
    rss_mb: f64,
    map_mb: f64,
    collect_ms: f64,
    /// The refresh walk, (median, max) ms over [`REFRESH_SAMPLES`] collections.
    refresh_ms: (f64, f64),
    metrics_bytes: usize,
}

pub fn run(options: &ScaleOptions) -> anyhow::Result<()> {
    if !is_root() {
        bail!("`cargo xtask bench scale` needs root (network namespaces, BPF): run it as root");
    }
    let started = Instant::now();
    let started_at = SystemTime::now();
    setup::run()?;
    let root = workspace_root();
    let node_binary = release_node(!options.skip_build)?;
    if !options.skip_build {
        exec(Command::new("cargo").current_dir(&root).args([
            "build",
            "--release",
            "-p",
            "p2p-node",
            "--example",
            "scale_peers",
        ]))?;
    }
    let peers_binary = node_binary
        .parent()
        .context("release dir")?
        .join("examples/scale_peers");
    install_stop_handler()?;

    let bed = Namespace::create()?;
    let data_dir = std::env::temp_dir().join(format!("p2pcc-bench-scale-{}", std::process::id()));
    let node = Node::start(&node_binary, &data_dir)?;
    let mut rows = Vec::new();
    for &n in &options.peers {
        println!("[bench] {n} peers");
        let peers = Peers::start(&peers_binary, n)?;
        node.wait_for_connections(n)?;
        // Two more collections, so the snapshot has every connection's probe data.
        sleep_unless_stopped(Duration::from_secs(2))?;
        let metrics_ms = latency(&format!("http://{HTTP}/metrics"), options.requests)?;
        let api_peers_ms = latency(&format!("http://{HTTP}/api/peers"), options.requests)?;
        let syscalls_per_scrape = syscalls_per_scrape(node.pid(), options.requests)?;
        let text = get("/metrics")?;
        let refresh_ms = refresh_walk_ms()?;
        let row = Row {
            peers: n,
            metrics_ms,
            api_peers_ms,
            syscalls_per_scrape,
            rss_mb: value(&text, "process_resident_memory_bytes").unwrap_or(f64::NAN) / 1e6,
            map_mb: map_memlock_bytes(node.pid()) as f64 / 1e6,
            collect_ms: value(&text, "p2pcc_telemetry_collect_duration_seconds")
                .unwrap_or(f64::NAN)
                * 1e3,
            refresh_ms,
            metrics_bytes: text.len(),
        };
        println!(
            "[bench]   /metrics p50 {:.2} p99 {:.2} ms; /api/peers p50 {:.2} p99 {:.2} ms; \
             {:.1} syscalls/scrape; RSS {:.1} MB; maps {:.1} MB; collection {:.1} ms; \
             refresh walk {:.2} / {:.2} ms",
            row.metrics_ms.0,
            row.metrics_ms.1,
            row.api_peers_ms.0,
            row.api_peers_ms.1,
            row.syscalls_per_scrape,
            row.rss_mb,
            row.map_mb,
            row.collect_ms,
            row.refresh_ms.0,
            row.refresh_ms.1
        );
        rows.push(row);
        drop(peers);
        node.wait_for_connections(0)?;
    }
    drop(node);
    drop(bed);
    let _ = fs::remove_dir_all(&data_dir);

    let report = render(options, &rows, started_at, started.elapsed())?;
    println!("\n{report}");
    let path = root.join(&options.output);
    write_section(&path, "bench scale", &report)?;
    println!("[bench] wrote {}", path.display());
    Ok(())
}

/// The benchmark's namespace; removed (with anything left in it) on drop.
struct Namespace;

impl Namespace {
    fn create() -> anyhow::Result<Self> {
        if Path::new("/run/netns").join(NS).exists() {
            crate::netns::delete(NS)?;
        }
        exec(Command::new("ip").args(["netns", "add", NS]))?;
        exec(Command::new("ip").args(["-n", NS, "link", "set", "lo", "up"]))?;
        Ok(Self)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if let Err(err) = crate::netns::delete(NS) {
            eprintln!("[bench] cleanup: {err:#}");
        }
    }
}

/// The release node under test; stopped on drop.
struct Node {
    child: Child,
}

impl Node {
    fn start(binary: &Path, data_dir: &Path) -> anyhow::Result<Self> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", NS])
            .arg(binary)
            .args(["run", "--listen", LISTEN, "--http", HTTP, "--require-ebpf"])
            .args(["--idle-timeout-secs", "3600", "--cc", "cubic"])
            .arg("--data-dir")
            .arg(data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        die_with_parent(&mut cmd);
        println!("[bench] $ {}", describe(&cmd));
        let mut child = cmd.spawn().context("starting p2p-node")?;
        echo_problems(child.stderr.take().expect("piped"), "[p2p-node]");
        let node = Self { child };
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        while get("/metrics").is_err() {
            if Instant::now() > deadline || stop_requested() {
                bail!("p2p-node did not serve /metrics within {SETTLE_TIMEOUT:?}");
            }
            thread::sleep(Duration::from_millis(200));
        }
        Ok(node)
    }

    /// `ip netns exec` execs the node: the child is the node itself.
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the node's snapshot counts exactly `n` connections.
    fn wait_for_connections(&self, n: u32) -> anyhow::Result<()> {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        let mut last = f64::NAN;
        loop {
            if let Ok(text) = get("/metrics") {
                last = text
                    .lines()
                    .filter(|l| l.starts_with("p2pcc_connections{"))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum();
                if last == f64::from(n) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline || stop_requested() {
                bail!("the node lists {last} connections, expected {n}");
            }
            thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(10));
    }
}

/// The peers process; closing its stdin ends it (dropped: stdin closed, then stopped).
struct Peers {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Peers {
    fn start(binary: &Path, n: u32) -> anyhow::Result<Self> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", NS])
            .arg(binary)
            .arg(LISTEN)
            .arg(n.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        die_with_parent(&mut cmd);
        println!("[bench] $ {}", describe(&cmd));
        let mut child = cmd.spawn().context("starting scale_peers")?;
        echo_problems(child.stderr.take().expect("piped"), "[scale_peers]");
        let stdout = child.stdout.take().expect("piped");
        let stdin = child.stdin.take();
        let mut peers = Self { child, stdin };
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        loop {
            match rx.recv_timeout(Duration::from_millis(500)) {
                Ok(line) if line == format!("connected {n}") => return Ok(peers),
                Ok(_) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(_) => bail!("scale_peers exited before connecting {n} peers"),
            }
            if let Some(status) = peers.child.try_wait()? {
                bail!("scale_peers exited: {status}");
            }
            if Instant::now() > deadline || stop_requested() {
                peers.stdin.take();
                bail!("{n} peers did not connect within {CONNECT_TIMEOUT:?}");
            }
        }
    }
}

impl Drop for Peers {
    fn drop(&mut self) {
        self.stdin.take();
        stop_child(&mut self.child, Duration::from_secs(10));
    }
}

/// One GET to the node from inside the namespace.
fn get(path: &str) -> anyhow::Result<String> {
    crate::netns::http_get(NS, &format!("http://{HTTP}{path}"))
}

/// `requests` sequential GETs of `url` by one curl (connection reused as a browser or
/// Prometheus would); each transfer's `time_total`; returns (p50, p99) in ms.
fn latency(url: &str, requests: u32) -> anyhow::Result<(f64, f64)> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", NS, "curl", "-sf", "--max-time", "60"])
        .args(["-w", "%{time_total}\\n"]);
    // Each `-o` goes with one URL.
    for _ in 0..requests {
        cmd.args(["-o", "/dev/null", url]);
    }
    let text = output(&mut cmd)?;
    let mut ms: Vec<f64> = text
        .lines()
        .filter_map(|l| l.trim().parse::<f64>().ok())
        .map(|s| s * 1e3)
        .collect();
    if ms.len() != requests as usize {
        bail!("{url}: {} of {requests} requests timed", ms.len());
    }
    ms.sort_by(f64::total_cmp);
    Ok((percentile(&ms, 0.50), percentile(&ms, 0.99)))
}

/// The `q` quantile of sorted `v` (nearest rank).
fn percentile(v: &[f64], q: f64) -> f64 {
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// Syscalls the node makes per `/metrics` scrape: strace over `requests` scrapes minus strace
/// over an idle window of the same length (the collector's and runtime's own calls), over
/// `requests`.
fn syscalls_per_scrape(pid: u32, requests: u32) -> anyhow::Result<f64> {
    let (with, window) = traced(pid, || {
        latency(&format!("http://{HTTP}/metrics"), requests).map(drop)
    })?;
    let (idle, idle_window) = traced(pid, || sleep_unless_stopped(window))?;
    let idle = idle as f64 * window.as_secs_f64() / idle_window.as_secs_f64().max(1e-3);
    Ok(((with as f64 - idle) / f64::from(requests)).max(0.0))
}

/// Syscalls of process `pid` (all threads) while `during` runs, and how long it ran.
fn traced(
    pid: u32,
    during: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<(u64, Duration)> {
    let file =
        std::env::temp_dir().join(format!("p2pcc-bench-scale-strace-{}", std::process::id()));
    let mut strace = Command::new("strace")
        .args(["-f", "-c", "-o"])
        .arg(&file)
        .args(["-p", &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting strace (apt-get install strace)")?;
    // strace attaches to every thread before it counts.
    thread::sleep(Duration::from_secs(1));
    let t = Instant::now();
    let result = during();
    let window = t.elapsed();
    let spid = libc::pid_t::try_from(strace.id()).expect("pids fit in pid_t");
    // SAFETY: our own unreaped child: the pid cannot have been reused.
    unsafe { libc::kill(spid, libc::SIGINT) };
    strace.wait()?;
    result?;
    let text = fs::read_to_string(&file).context("reading strace's summary")?;
    let _ = fs::remove_file(&file);
    let total = strace_total(&text).context("no total in strace's summary")?;
    Ok((total, window))
}

/// The `calls` column of strace -c's `total` line.
fn strace_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.trim_end().ends_with("total"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The value of an unlabelled series in Prometheus text.
fn value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The collector's refresh walk in [`REFRESH_SAMPLES`] distinct collections (told apart by the
/// snapshot's timestamp), (median, max) in ms; NaN when the node reports none.
fn refresh_walk_ms() -> anyhow::Result<(f64, f64)> {
    let mut seen = BTreeMap::new();
    for _ in 0..REFRESH_SAMPLES * 3 {
        if seen.len() == REFRESH_SAMPLES {
            break;
        }
        let text = get("/metrics")?;
        let taken = value(&text, "p2pcc_telemetry_snapshot_timestamp_seconds");
        let walk = value(&text, "p2pcc_telemetry_refresh_duration_seconds");
        if let (Some(taken), Some(walk)) = (taken, walk) {
            seen.insert(taken.to_bits(), walk * 1e3);
        }
        sleep_unless_stopped(Duration::from_millis(400))?;
    }
    let mut ms: Vec<f64> = seen.into_values().collect();
    ms.sort_by(f64::total_cmp);
    Ok(match (ms.get(ms.len() / 2), ms.last()) {
        (Some(&median), Some(&max)) => (median, max),
        _ => (f64::NAN, f64::NAN),
    })
}

/// Sum of `memlock` over the distinct BPF maps process `pid` holds (its fdinfo).
fn map_memlock_bytes(pid: u32) -> u64 {
    let mut maps: BTreeMap<u64, u64> = BTreeMap::new();
    for fd in fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let Ok(info) = fs::read_to_string(fd.path()) else {
            continue;
        };
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
        };
        if let (Some(id), Some(memlock)) = (field("map_id:"), field("memlock:")) {
            maps.insert(id, memlock);
        }
    }
    maps.values().sum()
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**missed**" }
}

fn render(
    o: &ScaleOptions,
    rows: &[Row],
    started_at: SystemTime,
    elapsed: Duration,
) -> anyhow::Result<String> {
    use std::fmt::Write as _;
    let peers: Vec<String> = o.peers.iter().map(u32::to_string).collect();
    let mut s = record_header(
        HEADING,
        "What the node's telemetry costs with many peers connected.",
        &format!(
            "cargo xtask bench scale --peers {} --requests {}",
            peers.join(","),
            o.requests
        ),
        started_at,
        elapsed,
    )?;
    writeln!(
        s,
        "- Setup: release build; one namespace, loopback; `p2p-node run --cc cubic` and the \
         example `scale_peers` \
         (N libp2p identities, one connection each through the node's TCP transport). Latency: \
         {} sequential requests per endpoint by one curl (connection reused), `time_total`, \
         nearest-rank percentiles. Syscalls per scrape: `strace -f -c` on the node over {} \
         scrapes minus an idle window of the same length, ÷ scrapes. Map memory: `memlock` of \
         the BPF maps the node holds. Refresh walk: the collector's `iter/tcp` walk over every \
         TCP socket of the namespace (2 per peer: both ends are in it), median / max over {} \
         collections.\n",
        o.requests, o.requests, REFRESH_SAMPLES
    )?;
    writeln!(
        s,
        "| peers | `/metrics` p50 / p99 ms | `/api/peers` p50 / p99 ms | syscalls per scrape | \
         node RSS MB | BPF maps MB | one collection ms | refresh walk ms, median / max | \
         `/metrics` size KB |"
    )?;
    writeln!(s, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for r in rows {
        writeln!(
            s,
            "| {} | {:.2} / {:.2} | {:.2} / {:.2} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} / {:.2} | {:.0} |",
            r.peers,
            r.metrics_ms.0,
            r.metrics_ms.1,
            r.api_peers_ms.0,
            r.api_peers_ms.1,
            r.syscalls_per_scrape,
            r.rss_mb,
            r.map_mb,
            r.collect_ms,
            r.refresh_ms.0,
            r.refresh_ms.1,
            r.metrics_bytes as f64 / 1e3
        )?;
    }
    if let Some(r) = rows.iter().max_by_key(|r| r.peers) {
        writeln!(
            s,
            "\nTargets at {} peers (issue 12 states them at 1,000): `/metrics` p99 {:.2} ms ≤ \
             {TARGET_METRICS_P99_MS} ms: {}; `/api/peers` p99 {:.2} ms ≤ {TARGET_PEERS_P99_MS} \
             ms: {}; {:.1} syscalls per scrape ≤ {TARGET_SYSCALLS}: {}; RSS {:.1} MB ≤ \
             {TARGET_RSS_MB} MB: {}.",
            r.peers,
            r.metrics_ms.1,
            verdict(r.metrics_ms.1 <= TARGET_METRICS_P99_MS),
            r.api_peers_ms.1,
            verdict(r.api_peers_ms.1 <= TARGET_PEERS_P99_MS),
            r.syscalls_per_scrape,
            verdict(r.syscalls_per_scrape <= TARGET_SYSCALLS),
            r.rss_mb,
            verdict(r.rss_mb <= TARGET_RSS_MB)
        )?;
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_strace_totals() {
        let text = "% time     seconds  usecs/call     calls    errors syscall\n\
                    ------ ----------- ----------- --------- --------- ----------------\n \
                    60.00    0.000600          10        60           epoll_wait\n \
                    40.00    0.000400           5        80        20 recvfrom\n\
                    ------ ----------- ----------- --------- --------- ----------------\n\
                    100.00    0.001000           7       140        20 total\n";
        assert_eq!(strace_total(text), Some(140));
        let no_errors = "100.00    0.001000           7       140           total\n";
        assert_eq!(strace_total(no_errors), Some(140));
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 0.50), 50.0);
        assert_eq!(percentile(&[3.0], 0.99), 3.0);
    }
}
