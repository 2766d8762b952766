//! `cargo xtask bench bbr`: bbr-p2p against the kernel's `bbr`, side by side in one run, on the
//! same shaped links; writes the section "## bbr-p2p vs kernel bbr" of `docs/bench.md`.
//!
//! ```text
//!   p2pcc-bb-s (sender, iperf3 -c)      p2pcc-bb-r (router, ip_forward=1)        p2pcc-bb-d (receiver, iperf3 -s)
//!   p2pcc-bbs0 10.79.1.2  <-veth->  p2pcc-bbr1 10.79.1.1 | p2pcc-bbr2 10.79.2.1 [tbf]  <-veth->  p2pcc-bbd0 10.79.2.2
//!                                   FORWARD: [statistic DROP, data direction] -> NFQUEUE 0 (delay line, both directions)
//! ```
//!
//! Scenarios, each run for both algorithms in alternating order (A B, B A, A B, ...):
//! - (a) `deep`: tbf 100 Mbit/s, 2 MB buffer on the router's egress towards the receiver, plus
//!   the delay line's D each way: goodput and median RTT, bbr-p2p / bbr.
//! - (b) `shallow`: the same rate and delay, a shallow tbf buffer, and random loss of the
//!   sender's packets in the router's FORWARD chain: retransmitted bytes and goodput.
//! - (c) the per-call cost of bbr-p2p's struct_ops programs from `kernel.bpf_stats_enabled`,
//!   measured over every bbr-p2p run of (a) and (b); the sysctl is restored afterwards.
//!
//! bbr-p2p is registered by a `p2p-node run --cc bbr-p2p --require-ebpf` in the init namespace
//! for the length of the benchmark (registration is host-wide); iperf3 picks the algorithm per
//! socket with `-C`. Everything created (namespaces, the node, iperf3, the delay line, the
//! sysctl) is undone by guards on every exit path, Ctrl-C included.

use std::{
    fs, io,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::exec::{die_with_parent, echo_problems, release_node, stop_child};
use crate::{
    delay_line::{self, DelayLine},
    exec::{describe, exec, is_root, output, workspace_root},
    setup,
};

const SENDER_NS: &str = "p2pcc-bb-s";
const ROUTER_NS: &str = "p2pcc-bb-r";
const RECEIVER_NS: &str = "p2pcc-bb-d";
/// The router's interface towards the sender: where the sender's data packets come in.
const ROUTER_IN: &str = "p2pcc-bbr1";
/// The router's interface towards the receiver: the bottleneck's tbf sits on its egress.
const ROUTER_OUT: &str = "p2pcc-bbr2";
const RECEIVER_ADDR: &str = "10.79.2.2";
const IPERF_PORT: &str = "5201";
/// A port nothing listens on in the receiver namespace: connects to it measure the bare RTT.
const CLOSED_PORT: u16 = 9;
const NFQUEUE_NUM: u16 = 0;
const HEADING: &str = "## bbr-p2p vs kernel bbr";
/// The two algorithms, as the kernel names them: ours first.
const OURS: &str = "bbr_p2p";
const KERNEL: &str = "bbr";
/// How long the node may take to register bbr_p2p (a first start loads and verifies eBPF).
const REGISTER_TIMEOUT: Duration = Duration::from_secs(60);
/// RTT samples from the first seconds (STARTUP, DRAIN) are left out of the median RTT.
const RTT_SKIP_SECS: f64 = 2.0;
/// iperf3's reporting interval: the RTT sample rate.
const IPERF_INTERVAL: &str = "0.2";
/// Pause between runs, so the previous flow's queue has drained.
const PAUSE: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(100);

#[derive(clap::Args)]
pub struct BbrOptions {
    /// Repetitions per scenario and algorithm (runs alternate between the algorithms).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    reps: u32,
    /// Length of each iperf3 run.
    #[arg(long, default_value_t = 20, value_name = "SECS", value_parser = clap::value_parser!(u64).range(3..=300))]
    seconds: u64,
    /// One-way delay added by the NFQUEUE delay line in each direction (0: no delay line).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=500))]
    delay_ms: u64,
    /// Bottleneck rate (tc syntax).
    #[arg(long, default_value = "100mbit")]
    rate: String,
    /// tbf buffer of scenario (a), bytes.
    #[arg(long, default_value_t = 2_000_000)]
    deep_limit: u64,
    /// tbf buffer of scenario (b), bytes.
    #[arg(long, default_value_t = 15_000)]
    shallow_limit: u64,
    /// Random loss of the sender's packets in scenario (b).
    #[arg(long, default_value_t = 0.01)]
    loss: f64,
    /// Use the p2p-node already in target/release instead of building it first.
    #[arg(long)]
    skip_build: bool,
    /// The markdown file whose "## bbr-p2p vs kernel bbr" section is (re)written.
    #[arg(long, default_value = "docs/bench.md")]
    output: PathBuf,
}

/// One scenario: a tbf buffer and a random-loss probability.
struct Scenario {
    key: &'static str,
    title: &'static str,
    limit: u64,
    loss: f64,
}

/// What one iperf3 run measured.
#[derive(Clone)]
struct Run {
    algorithm: &'static str,
    rep: u32,
    /// Receiver-side goodput, bit/s.
    goodput_bps: f64,
    /// Retransmitted segments (tcpi_total_retrans at the end).
    retrans_segs: u64,
    /// The sender's MSS (bytes), to turn segments into bytes.
    mss: u64,
    /// Median of the sender's smoothed RTT (µs) over the reporting intervals after the first
    /// [`RTT_SKIP_SECS`].
    rtt_median_us: f64,
    /// 95th percentile of the same samples.
    rtt_p95_us: f64,
    /// The largest snd_cwnd reported (bytes).
    max_cwnd: u64,
    /// Bytes the sender sent.
    sent_bytes: u64,
}

impl Run {
    fn retrans_bytes(&self) -> u64 {
        self.retrans_segs * self.mss
    }
}

/// One BPF program's counters, from `bpftool prog show`.
#[derive(Clone, Debug)]
struct ProgStats {
    id: u64,
    name: String,
    kind: String,
    run_time_ns: u64,
    run_cnt: u64,
}

/// Counter deltas accumulated per program over the bbr-p2p runs of a scenario.
#[derive(Default, Clone)]
struct Cost {
    /// (name, type, run_time_ns, run_cnt) per program id, in id order.
    programs: Vec<(u64, String, String, u64, u64)>,
}

impl Cost {
    fn add(&mut self, before: &[ProgStats], after: &[ProgStats]) {
        for a in after {
            let Some(b) = before.iter().find(|b| b.id == a.id) else {
                continue;
            };
            let time = a.run_time_ns.saturating_sub(b.run_time_ns);
            let count = a.run_cnt.saturating_sub(b.run_cnt);
            match self.programs.iter_mut().find(|p| p.0 == a.id) {
                Some(p) => {
                    p.3 += time;
                    p.4 += count;
                }
                None => self
                    .programs
                    .push((a.id, a.name.clone(), a.kind.clone(), time, count)),
            }
        }
        self.programs.sort_by_key(|p| p.0);
    }

    /// (struct_ops time, cong_control calls): the per-ACK cost is their quotient.
    fn per_ack(&self) -> Option<(u64, u64)> {
        let acks = self
            .programs
            .iter()
            .find(|p| p.2 == "struct_ops" && p.1.starts_with("bbr_cong_contr"))?
            .4;
        let time = self
            .programs
            .iter()
            .filter(|p| p.2 == "struct_ops")
            .map(|p| p.3)
            .sum();
        Some((time, acks))
    }
}

pub fn run_bbr(options: &BbrOptions) -> anyhow::Result<()> {
    if !is_root() {
        bail!(
            "`cargo xtask bench bbr` needs root (network namespaces, BPF, sysctl): run it as root"
        );
    }
    if !(0.0..1.0).contains(&options.loss) {
        bail!("--loss must be in [0, 1): {}", options.loss);
    }
    let started = Instant::now();
    let started_at = SystemTime::now();
    setup::run()?;
    let root = workspace_root();
    let binary = release_node(!options.skip_build)?;

    install_stop_handler()?;
    delete_own_namespaces();

    let node = RegisteringNode::start(&binary)?;
    let stats_guard = BpfStatsGuard::enable()?;
    let mut bed = Testbed::build(&options.rate, options.deep_limit)?;
    let delay = Duration::from_millis(options.delay_ms);
    let mut line = None;
    if options.delay_ms > 0 {
        line = Some(delay_line::spawn(ROUTER_NS, NFQUEUE_NUM, delay)?);
        bed.add_delay_rule()?;
    }
    let ping = bed.ping()?;
    println!("[bench] base RTT through the router: {ping}");
    bed.start_iperf_server()?;

    let scenarios = [
        Scenario {
            key: "a",
            title: "deep buffer",
            limit: options.deep_limit,
            loss: 0.0,
        },
        Scenario {
            key: "b",
            title: "shallow buffer, random loss",
            limit: options.shallow_limit,
            loss: options.loss,
        },
    ];
    let mut results: Vec<(Vec<Run>, Cost)> = Vec::new();
    for scenario in &scenarios {
        bed.set_tbf(&options.rate, scenario.limit)?;
        bed.set_loss(scenario.loss)?;
        let mut runs = Vec::new();
        let mut cost = Cost::default();
        for rep in 0..options.reps {
            // Alternate which algorithm goes first: A B, B A, A B, ...
            let order = if rep % 2 == 0 {
                [OURS, KERNEL]
            } else {
                [KERNEL, OURS]
            };
            for algorithm in order {
                check_running(&node, line.as_ref())?;
                println!(
                    "[bench] ({}) {}: {algorithm}, repetition {}/{}",
                    scenario.key,
                    scenario.title,
                    rep + 1,
                    options.reps
                );
                let before = (algorithm == OURS).then(|| node.prog_stats()).transpose()?;
                let run = bed.iperf(algorithm, rep, options.seconds)?;
                if let Some(before) = before {
                    cost.add(&before, &node.prog_stats()?);
                }
                println!(
                    "[bench]   goodput {:.2} Mbit/s, median RTT {:.2} ms, retransmits {} segments",
                    run.goodput_bps / 1e6,
                    run.rtt_median_us / 1e3,
                    run.retrans_segs
                );
                runs.push(run);
                sleep_unless_stopped(PAUSE)?;
            }
        }
        results.push((runs, cost));
    }
    let line_stats = line.take().map(DelayLine::stop).transpose()?;
    drop(bed);
    let stats_restored = stats_guard.restore();
    drop(node);
    let elapsed = started.elapsed();

    let report = Report {
        options,
        scenarios: &scenarios,
        results: &results,
        ping: &ping,
        line_stats,
        stats_restored,
        started_at,
        elapsed,
    }
    .render()?;
    println!("\n{report}");
    let path = root.join(&options.output);
    write_section(&path, &report)?;
    println!("[bench] wrote {} ({:.0?})", path.display(), elapsed);
    Ok(())
}

/// Fails when the node or the delay line has died or a stop was requested.
fn check_running(node: &RegisteringNode, line: Option<&DelayLine>) -> anyhow::Result<()> {
    if stop_requested() {
        bail!("interrupted");
    }
    if line.is_some_and(DelayLine::is_finished) {
        bail!("the delay line stopped early (its error follows when it is joined)");
    }
    if !fs::read_to_string("/proc/sys/net/ipv4/tcp_available_congestion_control")?
        .split_whitespace()
        .any(|name| name == OURS)
    {
        bail!(
            "{OURS} is no longer registered (p2p-node pid {} exited?)",
            node.child.id()
        );
    }
    Ok(())
}

pub(crate) fn sleep_unless_stopped(duration: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + duration;
    while Instant::now() < deadline {
        if stop_requested() {
            bail!("interrupted");
        }
        thread::sleep(POLL);
    }
    Ok(())
}

/// Deletes this benchmark's namespaces left by a run that was killed outright.
fn delete_own_namespaces() {
    for ns in [SENDER_NS, ROUTER_NS, RECEIVER_NS] {
        if Path::new("/run/netns").join(ns).exists() {
            let _ = exec(Command::new("ip").args(["netns", "del", ns]));
        }
    }
}

/// The p2p-node that keeps bbr_p2p registered; stopped on drop.
struct RegisteringNode {
    child: Child,
    /// Ids of the BPF programs that appeared while the node started: its own (bpftool here
    /// reports no holder pids, so ownership is told by load time).
    programs: Vec<u64>,
}

impl RegisteringNode {
    fn start(binary: &Path) -> anyhow::Result<Self> {
        let mut cmd = Command::new(binary);
        cmd.args([
            "run",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--http",
            "127.0.0.1:0",
        ])
        .args(["--cc", "bbr-p2p", "--require-ebpf"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
        die_with_parent(&mut cmd);
        let before = prog_ids()?;
        println!("[bench] registering {OURS}: $ {}", describe(&cmd));
        let mut child = cmd.spawn().context("starting p2p-node")?;
        // Its log is echoed only on failure-relevant lines; the pipe is drained to the end.
        let stderr = child.stderr.take().expect("piped");
        echo_problems(stderr, "[p2p-node]");
        let mut node = Self::wait_registered(
            Self {
                child,
                programs: Vec::new(),
            },
            Instant::now() + REGISTER_TIMEOUT,
        )?;
        // Programs loaded right after the registration (if any) belong to the node too.
        sleep_unless_stopped(Duration::from_secs(1))?;
        node.programs = prog_ids()?
            .into_iter()
            .filter(|id| !before.contains(id))
            .collect();
        Ok(node)
    }

    fn wait_registered(mut node: Self, deadline: Instant) -> anyhow::Result<Self> {
        loop {
            let available =
                fs::read_to_string("/proc/sys/net/ipv4/tcp_available_congestion_control")?;
            if available.split_whitespace().any(|name| name == OURS) {
                return Ok(node);
            }
            if let Some(status) = node.child.try_wait()? {
                bail!("p2p-node exited before {OURS} was registered: {status}");
            }
            if Instant::now() > deadline || stop_requested() {
                bail!("{OURS} was not registered within {REGISTER_TIMEOUT:?}");
            }
            thread::sleep(POLL);
        }
    }

    /// The counters of the BPF programs this node loaded.
    fn prog_stats(&self) -> anyhow::Result<Vec<ProgStats>> {
        let listing = output(Command::new("bpftool").args(["prog", "show", "--json"]))?;
        parse_prog_stats(&listing, &self.programs)
    }
}

impl Drop for RegisteringNode {
    fn drop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(5));
    }
}

/// The ids of every loaded BPF program.
fn prog_ids() -> anyhow::Result<Vec<u64>> {
    let listing = output(Command::new("bpftool").args(["prog", "show", "--json"]))?;
    let programs: Value = serde_json::from_str(&listing).context("parsing bpftool's JSON")?;
    Ok(programs
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["id"].as_u64())
        .collect())
}

/// The programs with the given `ids` in `bpftool prog show --json` output, with their counters.
fn parse_prog_stats(listing: &str, ids: &[u64]) -> anyhow::Result<Vec<ProgStats>> {
    let programs: Value = serde_json::from_str(listing).context("parsing bpftool's JSON")?;
    let ours = |prog: &Value| prog["id"].as_u64().is_some_and(|id| ids.contains(&id));
    let is_bbr_p2p = |prog: &Value| {
        prog["type"] == "struct_ops" && prog["name"].as_str().is_some_and(|n| n.starts_with("bbr_"))
    };
    let programs = programs.as_array().map(Vec::as_slice).unwrap_or_default();
    // When another process registered bbr_p2p first, our node uses that registration and loaded
    // no struct_ops programs of its own: then count the registered ones, whoever loaded them.
    let node_registered = programs.iter().any(|p| ours(p) && is_bbr_p2p(p));
    let mut out = Vec::new();
    for prog in programs {
        if !(ours(prog) || (!node_registered && is_bbr_p2p(prog))) {
            continue;
        }
        out.push(ProgStats {
            id: prog["id"].as_u64().unwrap_or_default(),
            name: prog["name"].as_str().unwrap_or_default().to_owned(),
            kind: prog["type"].as_str().unwrap_or_default().to_owned(),
            run_time_ns: prog["run_time_ns"].as_u64().unwrap_or_default(),
            run_cnt: prog["run_cnt"].as_u64().unwrap_or_default(),
        });
    }
    Ok(out)
}

/// Turns `kernel.bpf_stats_enabled` on and puts the previous value back.
struct BpfStatsGuard {
    previous: Option<String>,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStatsGuard {
    fn enable() -> anyhow::Result<Self> {
        let previous = fs::read_to_string(BPF_STATS)
            .with_context(|| format!("reading {BPF_STATS}"))?
            .trim()
            .to_owned();
        fs::write(BPF_STATS, "1").with_context(|| format!("writing 1 to {BPF_STATS}"))?;
        println!("[bench] kernel.bpf_stats_enabled: {previous} -> 1");
        Ok(Self {
            previous: Some(previous),
        })
    }

    /// Restores the sysctl; returns the value it was restored to.
    fn restore(mut self) -> String {
        self.put_back().unwrap_or_else(|| "?".into())
    }

    fn put_back(&mut self) -> Option<String> {
        let previous = self.previous.take()?;
        match fs::write(BPF_STATS, &previous) {
            Ok(()) => println!("[bench] kernel.bpf_stats_enabled restored to {previous}"),
            Err(err) => eprintln!("[bench] restoring {BPF_STATS} to {previous}: {err}"),
        }
        Some(previous)
    }
}

impl Drop for BpfStatsGuard {
    fn drop(&mut self) {
        self.put_back();
    }
}

/// The three namespaces, the iperf3 server; all removed on drop (iptables rules and qdiscs go
/// with the router namespace).
struct Testbed {
    namespaces: Vec<&'static str>,
    server: Option<Child>,
    loss_rule: Option<String>,
}

impl Testbed {
    fn build(rate: &str, limit: u64) -> anyhow::Result<Self> {
        let mut bed = Self {
            namespaces: Vec::new(),
            server: None,
            loss_rule: None,
        };
        for ns in [SENDER_NS, ROUTER_NS, RECEIVER_NS] {
            exec(Command::new("ip").args(["netns", "add", ns]))?;
            bed.namespaces.push(ns);
            exec(Command::new("ip").args(["-n", ns, "link", "set", "lo", "up"]))?;
        }
        exec(Command::new("ip").args([
            "link",
            "add",
            "p2pcc-bbs0",
            "netns",
            SENDER_NS,
            "type",
            "veth",
            "peer",
            "name",
            ROUTER_IN,
            "netns",
            ROUTER_NS,
        ]))?;
        exec(Command::new("ip").args([
            "link",
            "add",
            ROUTER_OUT,
            "netns",
            ROUTER_NS,
            "type",
            "veth",
            "peer",
            "name",
            "p2pcc-bbd0",
            "netns",
            RECEIVER_NS,
        ]))?;
        for (ns, dev, cidr) in [
            (SENDER_NS, "p2pcc-bbs0", "10.79.1.2/24"),
            (ROUTER_NS, ROUTER_IN, "10.79.1.1/24"),
            (ROUTER_NS, ROUTER_OUT, "10.79.2.1/24"),
            (RECEIVER_NS, "p2pcc-bbd0", "10.79.2.2/24"),
        ] {
            exec(Command::new("ip").args(["-n", ns, "addr", "add", cidr, "dev", dev]))?;
            exec(Command::new("ip").args(["-n", ns, "link", "set", dev, "up"]))?;
        }
        exec(Command::new("ip").args([
            "-n",
            SENDER_NS,
            "route",
            "add",
            "default",
            "via",
            "10.79.1.1",
        ]))?;
        exec(Command::new("ip").args([
            "-n",
            RECEIVER_NS,
            "route",
            "add",
            "default",
            "via",
            "10.79.2.1",
        ]))?;
        exec(Command::new("ip").args([
            "netns",
            "exec",
            ROUTER_NS,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]))?;
        bed.set_tbf(rate, limit)?;
        Ok(bed)
    }

    fn set_tbf(&self, rate: &str, limit: u64) -> anyhow::Result<()> {
        exec(
            Command::new("tc")
                .args([
                    "-n", ROUTER_NS, "qdisc", "replace", "dev", ROUTER_OUT, "root",
                ])
                // A small burst (4 KB) so that the rate, not bursts, shapes the traffic.
                .args([
                    "tbf",
                    "rate",
                    rate,
                    "burst",
                    "32kbit",
                    "limit",
                    &limit.to_string(),
                ]),
        )
    }

    /// Every forwarded packet, both directions, goes through the delay line.
    fn add_delay_rule(&self) -> anyhow::Result<()> {
        let queue = NFQUEUE_NUM.to_string();
        exec(Command::new("ip").args([
            "netns",
            "exec",
            ROUTER_NS,
            "iptables-legacy",
            "-A",
            "FORWARD",
            "-j",
            "NFQUEUE",
            "--queue-num",
            &queue,
        ]))
    }

    /// Random loss of the sender's packets (data direction only), ahead of the delay line.
    fn set_loss(&mut self, probability: f64) -> anyhow::Result<()> {
        if let Some(rule) = self.loss_rule.take() {
            let mut args = vec![
                "netns",
                "exec",
                ROUTER_NS,
                "iptables-legacy",
                "-D",
                "FORWARD",
            ];
            args.extend(rule.split(' '));
            exec(Command::new("ip").args(args))?;
        }
        if probability > 0.0 {
            let rule = format!(
                "-i {ROUTER_IN} -m statistic --mode random --probability {probability} -j DROP"
            );
            let mut args = vec![
                "netns",
                "exec",
                ROUTER_NS,
                "iptables-legacy",
                "-I",
                "FORWARD",
                "1",
            ];
            args.extend(rule.split(' '));
            exec(Command::new("ip").args(args))?;
            self.loss_rule = Some(rule);
        }
        Ok(())
    }

    /// The round trip sender → receiver without load, as TCP sees it (no `ping` here): the
    /// time from SYN to the receiver's RST for a connect to a closed port, 10 times.
    fn ping(&self) -> anyhow::Result<String> {
        let target = std::net::SocketAddr::from(([10, 79, 2, 2], CLOSED_PORT));
        let mut rtts = crate::netns::tcp_round_trips(SENDER_NS, target, 10)?;
        Ok(format!(
            "TCP SYN→RST round trip over 10 tries: min {:.2} ms, median {:.2} ms, max {:.2} ms",
            quantile(&mut rtts, 0.0),
            quantile(&mut rtts, 0.5),
            quantile(&mut rtts, 1.0)
        ))
    }

    fn start_iperf_server(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            RECEIVER_NS,
            "iperf3",
            "-s",
            "-p",
            IPERF_PORT,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
        println!("[bench] $ {}", describe(&cmd));
        self.server = Some(cmd.spawn().context("starting the iperf3 server")?);
        // It listens within milliseconds; the client retries besides.
        thread::sleep(Duration::from_millis(500));
        Ok(())
    }

    /// One iperf3 flow of `seconds` from the sender to the receiver on `algorithm`.
    fn iperf(&self, algorithm: &'static str, rep: u32, seconds: u64) -> anyhow::Result<Run> {
        let secs = seconds.to_string();
        let mut last_error = None;
        for _attempt in 0..3 {
            let mut cmd = Command::new("ip");
            cmd.args([
                "netns",
                "exec",
                SENDER_NS,
                "iperf3",
                "-c",
                RECEIVER_ADDR,
                "-p",
                IPERF_PORT,
            ])
            .args(["-t", &secs, "-i", IPERF_INTERVAL, "-C", algorithm, "-J"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
            println!("[bench] $ {}", describe(&cmd));
            let child = cmd.spawn().context("starting iperf3")?;
            let out = wait_with_deadline(child, Duration::from_secs(seconds + 30))?;
            let text = String::from_utf8_lossy(&out.stdout);
            match parse_iperf(&text, algorithm, rep) {
                Ok(run) if out.status.success() => return Ok(run),
                Ok(_) | Err(_) => {
                    let stderr = String::from_utf8_lossy(&out.stderr);
                    let error = serde_json::from_str::<Value>(&text)
                        .ok()
                        .and_then(|v| v["error"].as_str().map(str::to_owned))
                        .unwrap_or_else(|| stderr.trim().to_owned());
                    println!(
                        "[bench]   iperf3 failed ({}): {error}; retrying",
                        out.status
                    );
                    last_error = Some(error);
                    sleep_unless_stopped(Duration::from_secs(1))?;
                }
            }
        }
        bail!(
            "iperf3 with {algorithm} failed 3 times: {}",
            last_error.unwrap_or_default()
        )
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.kill();
            let _ = server.wait();
        }
        for ns in self.namespaces.drain(..).rev() {
            if let Err(err) = exec(Command::new("ip").args(["netns", "del", ns])) {
                eprintln!("[bench] cleanup: {err:#}");
            }
        }
    }
}

/// Waits for `child` at most `limit`, killing it (and failing) past that or on a stop request.
pub(crate) fn wait_with_deadline(
    mut child: Child,
    limit: Duration,
) -> anyhow::Result<std::process::Output> {
    // Read stdout on a thread so that a large JSON document cannot fill the pipe and stall it.
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = io::Read::read_to_end(&mut stdout, &mut buf);
        buf
    });
    let err_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = io::Read::read_to_end(&mut stderr, &mut buf);
        buf
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline || stop_requested() {
            let _ = child.kill();
            let _ = child.wait();
            bail!("iperf3 did not finish within {limit:?} (or a stop was requested): killed");
        }
        thread::sleep(POLL);
    };
    Ok(std::process::Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    })
}

/// The numbers of one run from iperf3's `-J` output.
fn parse_iperf(json: &str, algorithm: &'static str, rep: u32) -> anyhow::Result<Run> {
    let v: Value = serde_json::from_str(json).context("parsing iperf3's JSON")?;
    if let Some(error) = v["error"].as_str() {
        bail!("iperf3: {error}");
    }
    let end = &v["end"];
    let goodput_bps = end["sum_received"]["bits_per_second"]
        .as_f64()
        .context("no end.sum_received.bits_per_second")?;
    let retrans_segs = end["sum_sent"]["retransmits"].as_u64().unwrap_or_default();
    let sent_bytes = end["sum_sent"]["bytes"].as_u64().unwrap_or_default();
    let mss = v["start"]["tcp_mss_default"].as_u64().unwrap_or(1448);
    let mut rtts = Vec::new();
    let mut max_cwnd = 0;
    for interval in v["intervals"].as_array().into_iter().flatten() {
        let stream = &interval["streams"][0];
        max_cwnd = max_cwnd.max(stream["snd_cwnd"].as_u64().unwrap_or_default());
        if stream["start"].as_f64().unwrap_or_default() < RTT_SKIP_SECS {
            continue;
        }
        if let Some(rtt) = stream["rtt"].as_f64() {
            rtts.push(rtt);
        }
    }
    if rtts.is_empty() {
        bail!("iperf3 reported no RTT samples after {RTT_SKIP_SECS} s");
    }
    Ok(Run {
        algorithm,
        rep,
        goodput_bps,
        retrans_segs,
        mss,
        rtt_median_us: quantile(&mut rtts.clone(), 0.5),
        rtt_p95_us: quantile(&mut rtts, 0.95),
        max_cwnd,
        sent_bytes,
    })
}

/// The q-quantile of `values` (nearest rank on the sorted values; the median averages the two
/// middle values of an even count).
fn quantile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if (q - 0.5).abs() < f64::EPSILON && n.is_multiple_of(2) {
        return (values[n / 2 - 1] + values[n / 2]) / 2.0;
    }
    let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
    values[rank - 1]
}

pub(crate) fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    quantile(&mut values.into_iter().collect::<Vec<_>>(), 0.5)
}

struct Report<'a> {
    options: &'a BbrOptions,
    scenarios: &'a [Scenario],
    results: &'a [(Vec<Run>, Cost)],
    ping: &'a str,
    line_stats: Option<delay_line::Stats>,
    stats_restored: String,
    started_at: SystemTime,
    elapsed: Duration,
}

impl Report<'_> {
    fn render(&self) -> anyhow::Result<String> {
        use std::fmt::Write as _;
        let o = self.options;
        let mut s = String::new();
        let kernel = output(Command::new("uname").args(["-r"]))?
            .trim()
            .to_owned();
        let cores = thread::available_parallelism().map_or(0, usize::from);
        let cpu = fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|m| m.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let date = output(
            Command::new("date")
                .arg("-u")
                .arg("+%Y-%m-%d %H:%M UTC")
                .arg(format!(
                    "--date=@{}",
                    self.started_at
                        .duration_since(SystemTime::UNIX_EPOCH)?
                        .as_secs()
                )),
        )?;
        let command = format!(
            "cargo xtask bench bbr --reps {} --seconds {} --delay-ms {} --rate {} --deep-limit {} --shallow-limit {} --loss {}",
            o.reps, o.seconds, o.delay_ms, o.rate, o.deep_limit, o.shallow_limit, o.loss
        );
        writeln!(s, "{HEADING}\n")?;
        writeln!(
            s,
            "Written by `cargo xtask bench bbr` (xtask/src/bench.rs); rerun it to refresh this section.\n"
        )?;
        writeln!(s, "- Command: `{command}` (as root)")?;
        writeln!(
            s,
            "- Date: {} (took {:.0} s)",
            date.trim(),
            self.elapsed.as_secs_f64()
        )?;
        writeln!(s, "- Machine: Linux {kernel}, {cores} cores ({cpu})")?;
        writeln!(
            s,
            "- Path: sender ns → router ns → receiver ns over veth; tbf `rate {} burst 32kbit` on the \
             router's egress towards the receiver; {}",
            o.rate,
            if o.delay_ms > 0 {
                format!(
                    "{} ms one-way delay each way from an NFQUEUE delay line in the router's FORWARD \
                     chain (xtask/src/delay_line.rs)",
                    o.delay_ms
                )
            } else {
                "no added delay (delay line off)".into()
            }
        )?;
        writeln!(s, "- Base RTT before the runs (no load): {}", self.ping)?;
        if let Some(line) = self.line_stats {
            writeln!(
                s,
                "- Delay line: {} packets held, at most {} at once, {} recvmmsg calls, {} batch verdicts, \
                 release after due: mean {:.3} ms, max {:.2} ms",
                line.packets,
                line.max_held,
                line.receive_calls,
                line.verdicts,
                line.total_late.as_secs_f64() * 1e3 / line.packets.max(1) as f64,
                line.max_late.as_secs_f64() * 1e3
            )?;
        }
        writeln!(
            s,
            "- Traffic: one iperf3 flow per run ({} s, `-C bbr_p2p` or `-C bbr` on the sender's socket), \
             {} repetitions per algorithm, alternating which goes first; bbr_p2p registered by \
             `p2p-node run --cc bbr-p2p --require-ebpf` in the init namespace, with its defaults \
             (warm start on: repetitions after the first start from the previous flow's estimates).",
            o.seconds, o.reps
        )?;
        writeln!(
            s,
            "- Goodput: iperf3's receiver-side rate. RTT: the sender's smoothed RTT (tcpi_rtt) every \
             {IPERF_INTERVAL} s, median over the run after its first {RTT_SKIP_SECS} s. Retransmitted \
             bytes: tcpi_total_retrans × MSS. Ratios are bbr-p2p / bbr of the medians over repetitions.\n"
        )?;

        writeln!(s, "### Summary\n")?;
        writeln!(
            s,
            "| scenario | metric | bbr-p2p | bbr | ratio | target | met |"
        )?;
        writeln!(s, "|---|---|---:|---:|---:|---:|---|")?;
        for (scenario, (runs, _)) in self.scenarios.iter().zip(self.results) {
            let med = |alg: &str, f: &dyn Fn(&Run) -> f64| {
                median(runs.iter().filter(|r| r.algorithm == alg).map(f))
            };
            let name = format!(
                "({}) {}: limit {} B{}",
                scenario.key,
                scenario.title,
                scenario.limit,
                if scenario.loss > 0.0 {
                    format!(", {}% loss", scenario.loss * 100.0)
                } else {
                    String::new()
                }
            );
            let mut row = |metric: &str,
                           ours: f64,
                           theirs: f64,
                           unit: &str,
                           target: Option<(bool, f64)>| {
                let ratio = ours / theirs;
                let ratio_text = if theirs > 0.0 {
                    format!("{ratio:.3}")
                } else {
                    "n/a".into()
                };
                let (target_text, met) = match target {
                    Some((at_least, bound)) => (
                        format!("{} {bound}", if at_least { "≥" } else { "≤" }),
                        if (at_least && ratio >= bound) || (!at_least && ratio <= bound) {
                            "yes"
                        } else {
                            "**no**"
                        },
                    ),
                    None => (String::new(), ""),
                };
                writeln!(
                    s,
                    "| {name} | {metric} | {ours:.2}{unit} | {theirs:.2}{unit} | {ratio_text} | {target_text} | {met} |"
                )
            };
            let goodput = |r: &Run| r.goodput_bps / 1e6;
            let rtt = |r: &Run| r.rtt_median_us / 1e3;
            let retrans = |r: &Run| r.retrans_bytes() as f64 / 1e6;
            let retrans_share =
                |r: &Run| 100.0 * r.retrans_bytes() as f64 / r.sent_bytes.max(1) as f64;
            if scenario.loss > 0.0 {
                row(
                    "retransmitted",
                    med(OURS, &retrans),
                    med(KERNEL, &retrans),
                    " MB",
                    Some((false, 0.5)),
                )?;
                row(
                    "retransmitted / sent",
                    med(OURS, &retrans_share),
                    med(KERNEL, &retrans_share),
                    " %",
                    None,
                )?;
                row(
                    "goodput",
                    med(OURS, &goodput),
                    med(KERNEL, &goodput),
                    " Mbit/s",
                    None,
                )?;
                row(
                    "median RTT",
                    med(OURS, &rtt),
                    med(KERNEL, &rtt),
                    " ms",
                    None,
                )?;
            } else {
                row(
                    "goodput",
                    med(OURS, &goodput),
                    med(KERNEL, &goodput),
                    " Mbit/s",
                    Some((true, 0.99)),
                )?;
                row(
                    "median RTT",
                    med(OURS, &rtt),
                    med(KERNEL, &rtt),
                    " ms",
                    Some((false, 1.05)),
                )?;
                row(
                    "retransmitted",
                    med(OURS, &retrans),
                    med(KERNEL, &retrans),
                    " MB",
                    None,
                )?;
            }
        }

        writeln!(
            s,
            "\n### Per-call cost of bbr-p2p's programs (`kernel.bpf_stats_enabled`)\n"
        )?;
        writeln!(
            s,
            "Counter deltas over all bbr-p2p runs of each scenario, for the BPF programs the \
             registering p2p-node loaded: bbr-p2p's struct_ops programs and, for comparison, the \
             node's telemetry tracepoint programs (`tracing`), which run for every TCP socket of the \
             host whichever algorithm it uses. bpf_stats adds its own clock reads to every call. \
             kernel.bpf_stats_enabled was set to 1 for the benchmark and restored to {} afterwards. \
             Nanoseconds vary with the machine's load (2 cores, shared with builds): compare \
             programs within one run rather than across runs.\n",
            self.stats_restored
        )?;
        writeln!(s, "| scenario | program | type | calls | ns/call |")?;
        writeln!(s, "|---|---|---|---:|---:|")?;
        for (scenario, (_, cost)) in self.scenarios.iter().zip(self.results) {
            for (_, name, kind, time, count) in &cost.programs {
                if *count == 0 {
                    continue;
                }
                writeln!(
                    s,
                    "| ({}) | {name} | {kind} | {count} | {:.1} |",
                    scenario.key,
                    *time as f64 / *count as f64
                )?;
            }
            if let Some((time, acks)) = cost.per_ack().filter(|&(_, acks)| acks > 0) {
                writeln!(
                    s,
                    "| ({}) | **all struct_ops programs per ACK** (their time / cong_control calls) | | {acks} | **{:.1}** |",
                    scenario.key,
                    time as f64 / acks as f64
                )?;
            }
        }

        writeln!(s, "\n### Raw runs\n")?;
        writeln!(
            s,
            "| scenario | # | algorithm | goodput Mbit/s | median RTT ms | p95 RTT ms | retrans segs | retrans MB | sent MB | max cwnd KB |"
        )?;
        writeln!(s, "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")?;
        for (scenario, (runs, _)) in self.scenarios.iter().zip(self.results) {
            for run in runs {
                writeln!(
                    s,
                    "| ({}) | {} | {} | {:.2} | {:.2} | {:.2} | {} | {:.2} | {:.1} | {:.0} |",
                    scenario.key,
                    run.rep + 1,
                    run.algorithm,
                    run.goodput_bps / 1e6,
                    run.rtt_median_us / 1e3,
                    run.rtt_p95_us / 1e3,
                    run.retrans_segs,
                    run.retrans_bytes() as f64 / 1e6,
                    run.sent_bytes as f64 / 1e6,
                    run.max_cwnd as f64 / 1e3
                )?;
            }
        }
        Ok(s)
    }
}

/// Replaces the section under `section`'s own first line ([`HEADING`] for this benchmark) in
/// `path` (up to the next `## ` heading) with `section`, keeping every other section; appends it
/// when absent, creates the file when missing.
pub(crate) fn write_section(path: &Path, section: &str) -> anyhow::Result<()> {
    let existing = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => "# Benchmarks\n".to_owned(),
        Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
    };
    let updated = replace_section(&existing, section);
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fs::write(path, updated).with_context(|| format!("writing {}", path.display()))
}

fn replace_section(existing: &str, section: &str) -> String {
    let section = format!("{}\n", section.trim_end());
    let heading = section.lines().next().unwrap_or(HEADING).trim_end();
    let lines: Vec<&str> = existing.lines().collect();
    let start = lines.iter().position(|l| l.trim_end() == heading);
    match start {
        Some(start) => {
            let end = lines[start + 1..]
                .iter()
                .position(|l| l.starts_with("## "))
                .map_or(lines.len(), |i| start + 1 + i);
            let mut out = lines[..start].join("\n");
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(&section);
            if end < lines.len() {
                out.push('\n');
                out.push_str(&lines[end..].join("\n"));
                out.push('\n');
            }
            out
        }
        None => {
            let mut out = existing.trim_end().to_owned();
            out.push_str("\n\n");
            out.push_str(&section);
            out
        }
    }
}

/// Set by SIGINT/SIGTERM; every waiting loop polls it.
static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_signal: libc::c_int) {
    STOP_REQUESTED.store(true, Ordering::SeqCst);
}

/// Turns SIGINT and SIGTERM into a flag, so the guards get to tear everything down.
pub(crate) fn install_stop_handler() -> anyhow::Result<()> {
    let handler: extern "C" fn(libc::c_int) = on_stop_signal;
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        if unsafe { libc::signal(signal, handler as libc::sighandler_t) } == libc::SIG_ERR {
            bail!(
                "installing a handler for signal {signal}: {}",
                io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

pub(crate) fn stop_requested() -> bool {
    STOP_REQUESTED.load(Ordering::SeqCst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_only_its_own_section() {
        let doc =
            "# Benchmarks\n\n## bbr-p2p vs kernel bbr\n\nold\n### sub\nold\n\n## Probes\n\nkept\n";
        let out = replace_section(doc, "## bbr-p2p vs kernel bbr\n\nnew\n");
        assert_eq!(
            out,
            "# Benchmarks\n\n## bbr-p2p vs kernel bbr\n\nnew\n\n## Probes\n\nkept\n"
        );
        let out = replace_section(
            "# Benchmarks\n\n## Probes\n\nkept\n",
            "## bbr-p2p vs kernel bbr\n\nnew",
        );
        assert_eq!(
            out,
            "# Benchmarks\n\n## Probes\n\nkept\n\n## bbr-p2p vs kernel bbr\n\nnew\n"
        );
    }

    #[test]
    fn quantiles() {
        assert_eq!(quantile(&mut [3.0, 1.0, 2.0], 0.5), 2.0);
        assert_eq!(quantile(&mut [4.0, 1.0, 2.0, 3.0], 0.5), 2.5);
        assert_eq!(
            quantile(&mut (1..=100).map(f64::from).collect::<Vec<_>>(), 0.95),
            95.0
        );
    }

    #[test]
    fn reads_iperf_json() {
        let json = r#"{"start":{"tcp_mss_default":1448},
            "intervals":[
              {"streams":[{"start":0.0,"rtt":50000,"snd_cwnd":100000}]},
              {"streams":[{"start":2.0,"rtt":21000,"snd_cwnd":300000}]},
              {"streams":[{"start":2.2,"rtt":23000,"snd_cwnd":200000}]}],
            "end":{"sum_sent":{"retransmits":10,"bytes":1000},"sum_received":{"bits_per_second":9.5e7}}}"#;
        let run = parse_iperf(json, OURS, 0).unwrap();
        assert_eq!(run.retrans_bytes(), 14480);
        assert_eq!(run.rtt_median_us, 22000.0);
        assert_eq!(run.max_cwnd, 300000);
    }

    #[test]
    fn reads_bpftool_listing() {
        let json = r#"[{"id":5,"type":"struct_ops","name":"bbr_cong_contro","run_time_ns":100,"run_cnt":4,"pids":[{"pid":42,"comm":"p2p-node"}]},
                      {"id":6,"type":"tracing","name":"other","run_time_ns":1,"run_cnt":1,"pids":[{"pid":7,"comm":"x"}]}]"#;
        let stats = parse_prog_stats(json, &[5]).unwrap();
        assert_eq!(stats.len(), 1);
        assert_eq!(stats[0].run_cnt, 4);
        let mut cost = Cost::default();
        let mut after = stats.clone();
        after[0].run_time_ns = 400;
        after[0].run_cnt = 10;
        cost.add(&stats, &after);
        assert_eq!(cost.per_ack(), Some((300, 6)));
    }
}
