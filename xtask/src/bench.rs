//! `cargo xtask bench bbr`: bbr-p2p against the kernel's `bbr`, side by side in one run, on the
//! same shaped links (issue 10's scenarios (a)–(f)); writes the section "## bbr-p2p vs kernel bbr"
//! of `docs/bench.md` and its plots in `docs/bench/`.
//!
//! ```text
//!   p2pcc-bb-s (sender, iperf3 -c)      p2pcc-bb-r (router, ip_forward=1)        p2pcc-bb-d (receiver, iperf3 -s ×8)
//!   p2pcc-bbs0 10.79.1.2  <-veth->  p2pcc-bbr1 10.79.1.1 | p2pcc-bbr2 10.79.2.1 [tbf]  <-veth->  p2pcc-bbd0 10.79.2.2
//!                                   FORWARD: [statistic DROP, data direction] -> NFQUEUE 0 (delay line, both directions)
//! ```
//!
//! Scenarios (`--scenario a,c` or `all`; BDP = rate × 2 × delay, 250 kB by default), each run for
//! both algorithms in alternating order (A B, B A, ...) for `--reps` repetitions:
//! - (a) deep buffer: tbf limit 2 MB, one flow.
//! - (b) shallow buffer: 15 kB, 1% random loss of the sender's packets, one flow.
//! - (c) random-loss sweep: 1 BDP, loss 0.5 / 1 / 2 %, one flow.
//! - (d) coexistence: 0.5 and 4 BDP, one flow of the algorithm and one cubic flow started together.
//! - (e) eight flows of the algorithm on 1 BDP, started `--stagger` s apart and ending together.
//! - (f) cost: as (a) with bpf_stats off, machine-wide kernel CPU per GB sent.
//!
//! In (a)–(e) `kernel.bpf_stats_enabled` is on and the counters of bbr-p2p's struct_ops programs
//! give the per-ACK cost; the sysctl is restored afterwards. The first repetition of each
//! algorithm also samples `ss -tin` in the sender namespace every 100 ms (cwnd, pacing rate, RTT).
//!
//! Each invocation writes its raw runs to `target/bench/bbr-<letter>.json` and then re-renders the
//! section from every such file present (see bench_report.rs), so scenarios can be run one per
//! hold of the shared kernel lock. bbr-p2p is registered by a `p2p-node run --cc bbr-p2p
//! --require-ebpf` in the init namespace (registration is host-wide); iperf3 picks the algorithm per
//! socket with `-C`. Everything created (namespaces, the node, iperf3, the delay line, the sysctl)
//! is undone by guards on every exit path, Ctrl-C included.

use std::{
    fs, io,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, bail};
use serde_json::Value;

pub(crate) use crate::bench_report::median;
use crate::bench_report::{
    self as report, CpuTicks, Flow, GroupRecord, KERNEL, OURS, ProgCost, Series, Trial,
    VariantRecord, quantile,
};
use crate::exec::{die_with_parent, echo_problems, release_node, stop_child};
use crate::{
    delay_line::{self, DelayLine},
    exec::{describe, exec, is_root, output, workspace_root},
    netns::RandomLoss,
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
/// The first iperf3 server's port; flow i of a run uses `FIRST_PORT + i` (one server each: an
/// iperf3 server takes one test at a time).
const FIRST_PORT: u16 = 5201;
/// The most flows in one run: scenario (e).
const MAX_FLOWS: usize = 8;
/// A port nothing listens on in the receiver namespace: connects to it measure the bare RTT.
const CLOSED_PORT: u16 = 9;
const NFQUEUE_NUM: u16 = 0;
/// How long the node may take to register bbr_p2p (a first start loads and verifies eBPF).
const REGISTER_TIMEOUT: Duration = Duration::from_secs(60);
/// RTT samples from a flow's first seconds (STARTUP, DRAIN) are left out of its RTT quantiles.
const RTT_SKIP_SECS: f64 = 2.0;
/// iperf3's reporting interval: the RTT sample rate.
const IPERF_INTERVAL: &str = "0.2";
/// `ss -tin` sampling period for the time-series plots.
const SS_PERIOD: Duration = Duration::from_millis(100);
/// Pause between runs, so the previous flow's queue has drained.
const PAUSE: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(100);
/// Buffers of (a) and (f), (b); loss of (b); losses of (c); buffers of (d), in BDPs: issue 10's.
const DEEP_LIMIT: u64 = 2_000_000;
const SHALLOW_LIMIT: u64 = 15_000;
const SHALLOW_LOSS: f64 = 0.01;
const SWEEP_LOSSES: [(&str, f64); 3] = [("c05", 0.005), ("c1", 0.01), ("c2", 0.02)];
const COEXIST_BDPS: [(&str, f64); 2] = [("d05", 0.5), ("d4", 4.0)];
/// Where the plots go, relative to the markdown file.
const PLOT_DIR: &str = "bench";

#[derive(clap::Args)]
pub struct BbrOptions {
    /// Scenarios to run: letters a–f, comma-separated, or `all`. Each invocation's results are
    /// merged with those of earlier ones into one docs/bench.md section.
    #[arg(long, default_value = "all")]
    scenario: String,
    /// Repetitions per scenario and algorithm (runs alternate between the algorithms).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=20))]
    reps: u32,
    /// Length of the measured window all flows share (a run lasts `--warmup` + this, plus the
    /// stagger in (e)).
    #[arg(long, default_value_t = 12, value_name = "SECS", value_parser = clap::value_parser!(u64).range(3..=300))]
    seconds: u64,
    /// One-way delay added by the NFQUEUE delay line in each direction (0: no delay line).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=500))]
    delay_ms: u64,
    /// Bottleneck rate (tc syntax: kbit, mbit, gbit).
    #[arg(long, default_value = "100mbit")]
    rate: String,
    /// Seconds every flow runs before that window, for both algorithms alike (a question of
    /// convergence: e.g. (d) after BBR's first 10 s min-RTT window). RTTs are still taken from
    /// each flow's third second on, retransmits and CPU over the whole run.
    #[arg(long, default_value_t = 0, value_name = "SECS", value_parser = clap::value_parser!(u64).range(0..=120))]
    warmup: u64,
    /// Seconds between the starts of scenario (e)'s flows.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(0..=10))]
    stagger: u64,
    /// Use the p2p-node already in target/release instead of building it first.
    #[arg(long)]
    skip_build: bool,
    /// Run nothing: redraw the section and plots from target/bench/bbr-*.json.
    #[arg(long)]
    render_only: bool,
    /// The markdown file whose "## bbr-p2p vs kernel bbr" generated block is (re)written (notes
    /// outside its markers are kept).
    #[arg(long, default_value = "docs/bench.md")]
    output: PathBuf,
}

/// One configuration of a scenario: a buffer, a loss rate, and the flows of each run.
struct Variant {
    key: String,
    title: String,
    limit: u64,
    loss: f64,
    /// A cubic flow beside the algorithm's (d).
    competitor: bool,
    /// Flows of the algorithm.
    flows: usize,
}

fn variants(group: char, bdp: u64) -> Vec<Variant> {
    let one = |key: &str, title: String, limit: u64, loss: f64| Variant {
        key: key.into(),
        title,
        limit,
        loss,
        competitor: false,
        flows: 1,
    };
    match group {
        'a' => vec![one("a", format!("{DEEP_LIMIT} B"), DEEP_LIMIT, 0.0)],
        'b' => vec![one(
            "b",
            format!("{SHALLOW_LIMIT} B, {}% loss", SHALLOW_LOSS * 100.0),
            SHALLOW_LIMIT,
            SHALLOW_LOSS,
        )],
        'c' => SWEEP_LOSSES
            .iter()
            .map(|&(key, loss)| one(key, format!("1 BDP, {}% loss", loss * 100.0), bdp, loss))
            .collect(),
        'd' => COEXIST_BDPS
            .iter()
            .map(|&(key, bdps)| Variant {
                competitor: true,
                ..one(
                    key,
                    format!("{bdps} BDP, + cubic"),
                    (bdp as f64 * bdps) as u64,
                    0.0,
                )
            })
            .collect(),
        'e' => vec![Variant {
            flows: MAX_FLOWS,
            ..one("e", format!("1 BDP, {MAX_FLOWS} flows"), bdp, 0.0)
        }],
        'f' => vec![one("f", format!("{DEEP_LIMIT} B, CPU"), DEEP_LIMIT, 0.0)],
        _ => Vec::new(),
    }
}

/// The scenario letters `spec` names, in order, without repeats.
fn parse_scenarios(spec: &str) -> anyhow::Result<Vec<char>> {
    let mut groups = Vec::new();
    for part in spec.split(',').map(str::trim) {
        if part == "all" {
            groups.extend(report::GROUPS);
            continue;
        }
        let mut chars = part.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) if report::GROUPS.contains(&c) => groups.push(c),
            _ => bail!("--scenario {part:?}: expected one of a, b, c, d, e, f or all"),
        }
    }
    let mut unique = Vec::new();
    for g in report::GROUPS {
        if groups.contains(&g) {
            unique.push(g);
        }
    }
    Ok(unique)
}

/// bits per second of a tc rate (`100mbit`).
fn parse_rate(rate: &str) -> anyhow::Result<u64> {
    let lower = rate.to_ascii_lowercase();
    for (unit, scale) in [("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3)] {
        if let Some(number) = lower.strip_suffix(unit) {
            let n: f64 = number
                .parse()
                .with_context(|| format!("rate {rate:?}: not a number before {unit}"))?;
            if n > 0.0 && n.is_finite() {
                return Ok((n * scale) as u64);
            }
        }
    }
    bail!("rate {rate:?}: expected a positive number with kbit, mbit or gbit")
}

fn records_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from)
        .join("bench")
}

pub fn run_bbr(options: &BbrOptions) -> anyhow::Result<()> {
    let groups = parse_scenarios(&options.scenario)?;
    let rate_bps = parse_rate(&options.rate)?;
    let bdp = (rate_bps as f64 / 8.0 * 2.0 * options.delay_ms as f64 / 1e3) as u64;
    let dir = records_dir();
    if !options.render_only {
        if !is_root() {
            bail!(
                "`cargo xtask bench bbr` needs root (network namespaces, BPF, sysctl): run it as root"
            );
        }
        setup::run()?;
        let binary = release_node(!options.skip_build)?;
        install_stop_handler()?;
        delete_own_namespaces();
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for group in groups {
            let record = run_group(options, group, &binary, bdp)?;
            let path = dir.join(format!("bbr-{group}.json"));
            fs::write(&path, serde_json::to_string(&record)?)
                .with_context(|| format!("writing {}", path.display()))?;
            println!("[bench] ({group}) raw runs in {}", path.display());
        }
    }
    let records = report::load_records(&dir)?;
    let (section, plots) = report::render(&records, PLOT_DIR);
    let path = workspace_root().join(&options.output);
    let plot_dir = path.parent().unwrap_or(Path::new(".")).join(PLOT_DIR);
    fs::create_dir_all(&plot_dir).with_context(|| format!("creating {}", plot_dir.display()))?;
    for (name, svg) in plots {
        let file = plot_dir.join(name);
        fs::write(&file, svg).with_context(|| format!("writing {}", file.display()))?;
    }
    write_section(&path, "bench bbr", &section)?;
    println!(
        "[bench] wrote {} ({} scenario records) and its plots in {}",
        path.display(),
        records.len(),
        plot_dir.display()
    );
    Ok(())
}

/// Runs one scenario letter, both algorithms, every variant and repetition, on a fresh testbed.
fn run_group(
    options: &BbrOptions,
    group: char,
    binary: &Path,
    bdp: u64,
) -> anyhow::Result<GroupRecord> {
    let started = Instant::now();
    let started_at = SystemTime::now();
    let variants = variants(group, bdp);
    let node = RegisteringNode::start(binary)?;
    // (f) measures CPU as deployed: without bpf_stats' clock reads on every program call.
    let stats_on = group != 'f';
    let stats_guard = BpfStatsGuard::set(if stats_on { "1" } else { "0" })?;
    let mut bed = Testbed::build(&options.rate, DEEP_LIMIT)?;
    let mut line = None;
    if options.delay_ms > 0 {
        // Every forwarded packet, both directions, goes through the delay line.
        line = Some(delay_line::spawn_forwarding(
            ROUTER_NS,
            NFQUEUE_NUM,
            None,
            Duration::from_millis(options.delay_ms),
        )?);
    }
    let base_rtt = bed.ping()?;
    println!("[bench] base RTT through the router: {base_rtt}");
    bed.start_iperf_servers()?;

    let mut records = Vec::new();
    for variant in &variants {
        bed.set_tbf(&options.rate, variant.limit)?;
        bed.set_loss(variant.loss)?;
        let mut trials = Vec::new();
        let mut cost = Vec::new();
        for rep in 0..options.reps {
            let order = if rep % 2 == 0 {
                [OURS, KERNEL]
            } else {
                [KERNEL, OURS]
            };
            for algorithm in order {
                check_running(&node, line.as_ref())?;
                println!(
                    "[bench] ({group}) {}: {algorithm}, repetition {}/{}",
                    variant.title,
                    rep + 1,
                    options.reps
                );
                let flows = flow_plan(
                    variant,
                    algorithm,
                    options.warmup + options.seconds,
                    options.stagger,
                );
                let sample = rep == 0 && group != 'f';
                let before = (algorithm == OURS && stats_on)
                    .then(|| node.prog_stats())
                    .transpose()?;
                let trial = bed.trial(algorithm, rep, &flows, options.seconds, sample)?;
                if let Some(before) = before {
                    report::add_cost(&mut cost, &before, &node.prog_stats()?);
                }
                println!(
                    "[bench]   {:.2} Mbit/s, median RTT {:.2} ms, p95 {:.2} ms, retransmitted {:.2} MB, Jain {:.3}, kernel CPU {:.3} s/GB",
                    trial.throughput_mbps(),
                    trial.rtt_median_ms(),
                    trial.rtt_p95_ms(),
                    trial.retrans_mb(),
                    trial.jain(),
                    trial.cpu_s_per_gb(report::CLOCK_TICKS)
                );
                trials.push(trial);
                sleep_unless_stopped(PAUSE)?;
            }
        }
        records.push(VariantRecord {
            key: variant.key.clone(),
            title: variant.title.clone(),
            limit_bytes: variant.limit,
            loss: variant.loss,
            trials,
            cost,
        });
    }
    let line_stats = line.take().map(DelayLine::stop).transpose()?;
    drop(bed);
    stats_guard.restore();
    drop(node);

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
            .arg("+%Y-%m-%d %H:%M")
            .arg(format!(
                "--date=@{}",
                started_at.duration_since(SystemTime::UNIX_EPOCH)?.as_secs()
            )),
    )?;
    Ok(GroupRecord {
        group,
        command: format!(
            "cargo xtask bench bbr --scenario {group} --reps {} --seconds {} --delay-ms {} --rate {} --stagger {}{}",
            options.reps,
            options.seconds,
            options.delay_ms,
            options.rate,
            options.stagger,
            if options.warmup > 0 {
                format!(" --warmup {}", options.warmup)
            } else {
                String::new()
            }
        ),
        date: date.trim().to_owned(),
        source: source_version(),
        elapsed_s: started.elapsed().as_secs_f64(),
        machine: format!("Linux {kernel}, {cores} cores ({cpu})"),
        base_rtt,
        delay_line: line_stats.as_ref().map(delay_line_summary),
        bpf_stats: if stats_on { "1" } else { "0" }.into(),
        seconds: options.seconds,
        reps: options.reps,
        bdp_bytes: bdp,
        variants: records,
    })
}

/// Mean lateness of the delay line's releases above which an invocation is flagged as run on a
/// slowed path. Invocations on a quiet machine release 0.025–0.05 ms late on average
/// (docs/bench.md's records); with the hypervisor stealing CPU or builds running beside it the
/// line ran 0.2–1.4 ms late and both algorithms carried 27–78 Mbit/s of a 100 Mbit/s link
/// (docs/bench.md, "(a) tail: draining at 0.75, session 9").
const LATE_PATH_MS: f64 = 0.1;

/// One line on what the delay line did in an invocation; flags a path the machine slowed.
pub(crate) fn delay_line_summary(l: &delay_line::Stats) -> String {
    let mean_late_ms = l.total_late.as_secs_f64() * 1e3 / l.packets.max(1) as f64;
    let verdict = if mean_late_ms > LATE_PATH_MS {
        eprintln!(
            "[bench] WARNING: the delay line released packets {mean_late_ms:.3} ms late on \
             average (> {LATE_PATH_MS} ms): the machine slowed the path, so this invocation \
             measures the machine as much as the algorithms"
        );
        format!(
            " — **late path** (mean > {LATE_PATH_MS} ms: the machine slowed the path; not a \
             record of the targets)"
        )
    } else {
        String::new()
    };
    format!(
        "{} packets held, at most {} at once, release after due: mean {mean_late_ms:.3} ms, max {:.2} ms{verdict}",
        l.packets,
        l.max_held,
        l.max_late.as_secs_f64() * 1e3
    )
}

/// The commit the workspace is at, `-dirty` when files other than the bench's own output
/// (docs/, which earlier scenarios of the same session rewrite) differ from it.
fn source_version() -> String {
    let git = |args: &[&str]| {
        output(Command::new("git").current_dir(workspace_root()).args(args))
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    };
    let commit = git(&["describe", "--always"]);
    if git(&["status", "--porcelain", "--", ".", ":!docs"]).is_empty() {
        commit
    } else {
        format!("{commit}-dirty")
    }
}

/// One flow of a run: its server port, congestion control, start offset and length.
#[derive(Clone, Debug, PartialEq)]
struct PlannedFlow {
    port: u16,
    cc: &'static str,
    start: Duration,
    seconds: u64,
}

/// The flows of one run. Staggered flows all end together, so every flow is active during the
/// last `seconds` of the run: the window fairness is measured over.
fn flow_plan(
    variant: &Variant,
    algorithm: &'static str,
    seconds: u64,
    stagger: u64,
) -> Vec<PlannedFlow> {
    let n = variant.flows;
    let mut flows: Vec<PlannedFlow> = (0..n)
        .map(|i| PlannedFlow {
            port: FIRST_PORT + i as u16,
            cc: algorithm,
            start: Duration::from_secs(i as u64 * stagger),
            seconds: seconds + (n - 1 - i) as u64 * stagger,
        })
        .collect();
    if variant.competitor {
        flows.push(PlannedFlow {
            port: FIRST_PORT + n as u16,
            cc: "cubic",
            start: Duration::ZERO,
            seconds,
        });
    }
    flows
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
        thread::sleep(POLL.min(duration));
    }
    Ok(())
}

/// Deletes this benchmark's namespaces left by a run that was killed outright.
fn delete_own_namespaces() {
    for ns in [SENDER_NS, ROUTER_NS, RECEIVER_NS] {
        if Path::new("/run/netns").join(ns).exists() {
            let _ = crate::netns::delete(ns);
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
    fn prog_stats(&self) -> anyhow::Result<Vec<ProgCost>> {
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
fn parse_prog_stats(listing: &str, ids: &[u64]) -> anyhow::Result<Vec<ProgCost>> {
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
        out.push(ProgCost {
            id: prog["id"].as_u64().unwrap_or_default(),
            name: prog["name"].as_str().unwrap_or_default().to_owned(),
            kind: prog["type"].as_str().unwrap_or_default().to_owned(),
            time_ns: prog["run_time_ns"].as_u64().unwrap_or_default(),
            count: prog["run_cnt"].as_u64().unwrap_or_default(),
        });
    }
    Ok(out)
}

/// Sets `kernel.bpf_stats_enabled` and puts the previous value back.
struct BpfStatsGuard {
    previous: Option<String>,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStatsGuard {
    fn set(value: &str) -> anyhow::Result<Self> {
        let previous = fs::read_to_string(BPF_STATS)
            .with_context(|| format!("reading {BPF_STATS}"))?
            .trim()
            .to_owned();
        fs::write(BPF_STATS, value).with_context(|| format!("writing {value} to {BPF_STATS}"))?;
        println!("[bench] kernel.bpf_stats_enabled: {previous} -> {value}");
        Ok(Self {
            previous: Some(previous),
        })
    }

    /// Restores the sysctl (the guard's drop would too; this says where it happens).
    fn restore(mut self) {
        self.put_back();
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
    servers: Vec<Child>,
    loss: Option<RandomLoss>,
}

impl Testbed {
    fn build(rate: &str, limit: u64) -> anyhow::Result<Self> {
        let mut bed = Self {
            namespaces: Vec::new(),
            servers: Vec::new(),
            loss: None,
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

    /// Random loss of the sender's packets (data direction only), ahead of the delay line.
    fn set_loss(&mut self, probability: f64) -> anyhow::Result<()> {
        if let Some(loss) = self.loss.take() {
            loss.remove()?;
        }
        if probability > 0.0 {
            let matches = ["-i", ROUTER_IN];
            self.loss = Some(RandomLoss::insert(
                ROUTER_NS,
                "FORWARD",
                &matches,
                probability,
            )?);
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

    /// One iperf3 server per port a run may use.
    fn start_iperf_servers(&mut self) -> anyhow::Result<()> {
        for i in 0..=MAX_FLOWS {
            let port = (FIRST_PORT + i as u16).to_string();
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", RECEIVER_NS, "iperf3", "-s", "-p", &port])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0);
            die_with_parent(&mut cmd);
            if i == 0 {
                println!(
                    "[bench] $ {} (and ports up to {})",
                    describe(&cmd),
                    usize::from(FIRST_PORT) + MAX_FLOWS
                );
            }
            self.servers
                .push(cmd.spawn().context("starting an iperf3 server")?);
        }
        // They listen within milliseconds; the clients retry besides.
        thread::sleep(Duration::from_millis(500));
        Ok(())
    }

    /// One run of `flows` (retried whole, up to three times, when an iperf3 fails).
    fn trial(
        &self,
        algorithm: &'static str,
        rep: u32,
        flows: &[PlannedFlow],
        window_secs: u64,
        sample: bool,
    ) -> anyhow::Result<Trial> {
        let mut last_error = String::new();
        for _attempt in 0..3 {
            match self.try_trial(algorithm, rep, flows, window_secs, sample) {
                Ok(trial) => return Ok(trial),
                Err(err) if !stop_requested() => {
                    println!("[bench]   run failed: {err:#}; retrying");
                    last_error = format!("{err:#}");
                    sleep_unless_stopped(PAUSE)?;
                }
                Err(err) => return Err(err),
            }
        }
        bail!("the {algorithm} run failed 3 times: {last_error}")
    }

    fn try_trial(
        &self,
        algorithm: &'static str,
        rep: u32,
        flows: &[PlannedFlow],
        window_secs: u64,
        sample: bool,
    ) -> anyhow::Result<Trial> {
        let sampler = sample.then(SsSampler::start);
        let cpu_before = read_cpu()?;
        let handles: Vec<_> = flows
            .iter()
            .cloned()
            .map(|flow| thread::spawn(move || run_flow(&flow)))
            .collect();
        let mut outputs = Vec::new();
        let mut error = None;
        for handle in handles {
            match handle.join() {
                Ok(Ok(text)) => outputs.push(text),
                Ok(Err(err)) => error = Some(err),
                Err(_) => error = Some(anyhow::anyhow!("an iperf3 thread panicked")),
            }
        }
        let cpu = read_cpu()?.since(cpu_before);
        let series = sampler.map(SsSampler::finish).unwrap_or_default();
        if let Some(err) = error {
            return Err(err);
        }
        let flows = flows
            .iter()
            .zip(&outputs)
            .map(|(plan, text)| {
                let window_start = plan.seconds.saturating_sub(window_secs) as f64;
                parse_flow(text, plan.cc, window_start, window_secs as f64)
                    .with_context(|| format!("flow to port {}", plan.port))
            })
            .collect::<anyhow::Result<Vec<Flow>>>()?;
        Ok(Trial {
            algorithm: algorithm.into(),
            rep,
            flows,
            cpu,
            series,
        })
    }
}

/// Waits `flow.start`, runs its iperf3 client and returns its JSON output.
fn run_flow(flow: &PlannedFlow) -> anyhow::Result<String> {
    sleep_unless_stopped(flow.start)?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", SENDER_NS, "iperf3", "-c", RECEIVER_ADDR])
        .args([
            "-p",
            &flow.port.to_string(),
            "-t",
            &flow.seconds.to_string(),
        ])
        .args(["-i", IPERF_INTERVAL, "-C", flow.cc, "-J"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    die_with_parent(&mut cmd);
    println!("[bench] $ {}", describe(&cmd));
    let child = cmd.spawn().context("starting iperf3")?;
    let out = wait_with_deadline(child, Duration::from_secs(flow.seconds + 30))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let error = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).trim().to_owned());
        bail!(
            "iperf3 ({}, port {}) {}: {error}",
            flow.cc,
            flow.port,
            out.status
        );
    }
    Ok(text)
}

fn read_cpu() -> anyhow::Result<CpuTicks> {
    let stat = fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    CpuTicks::parse(&stat).context("no aggregate cpu line in /proc/stat")
}

/// Samples `ss -tin` in the sender namespace every [`SS_PERIOD`] on its own thread.
struct SsSampler {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<Vec<SsSample>>,
}

impl SsSampler {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let started = Instant::now();
            let mut samples = Vec::new();
            // Bounded: one run lasts at most a few minutes (--seconds ≤ 300, --warmup ≤ 120,
            // plus the stagger).
            while !flag.load(Ordering::SeqCst) && samples.len() < 200_000 {
                let next = Instant::now() + SS_PERIOD;
                let mut cmd = Command::new("ss");
                cmd.args(["-N", SENDER_NS, "-tinH", "dst", RECEIVER_ADDR]);
                if let Ok(text) = output(&mut cmd) {
                    samples.extend(parse_ss(&text, started.elapsed().as_secs_f64()));
                }
                thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            samples
        });
        Self { stop, thread }
    }

    fn finish(self) -> Vec<Series> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .join()
            .map(|samples| series_of(&samples))
            .unwrap_or_default()
    }
}

/// One socket in one `ss -tin` listing.
#[derive(Clone, Debug, PartialEq)]
struct SsSample {
    t: f64,
    local_port: u16,
    dst_port: u16,
    cc: String,
    cwnd_bytes: f64,
    pacing_bps: f64,
    rtt_ms: f64,
    bytes_sent: u64,
}

/// The sockets of one `ss -tinH` listing (a state line, then a tab-indented info line each).
fn parse_ss(text: &str, t: f64) -> Vec<SsSample> {
    let mut out = Vec::new();
    let mut ports = None;
    for line in text.lines() {
        if !line.starts_with(char::is_whitespace) {
            // ESTAB 0 0 10.79.1.2:40000 10.79.2.2:5201
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port = |f: Option<&&str>| {
                f.and_then(|a| a.rsplit_once(':'))
                    .and_then(|(_, p)| p.parse().ok())
            };
            ports = port(fields.get(3)).zip(port(fields.get(4)));
            continue;
        }
        let Some((local_port, dst_port)) = ports.take() else {
            continue;
        };
        let tokens: Vec<&str> = line.split_whitespace().collect();
        let field = |name: &str| {
            tokens
                .iter()
                .find_map(|t| t.strip_prefix(name).and_then(|v| v.strip_prefix(':')))
        };
        let number = |name: &str| field(name).and_then(|v| v.parse::<f64>().ok());
        let cc = tokens
            .iter()
            .find(|t| ["bbr_p2p", "bbr", "cubic", "reno"].contains(t))
            .map_or_else(String::new, |t| (*t).to_owned());
        let pacing_bps = tokens
            .iter()
            .position(|t| *t == "pacing_rate")
            .and_then(|i| tokens.get(i + 1))
            .and_then(|v| parse_ss_rate(v))
            .unwrap_or(f64::NAN);
        let rtt_ms = field("rtt")
            .and_then(|v| v.split('/').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN);
        let cwnd_bytes = number("cwnd").unwrap_or(f64::NAN) * number("mss").unwrap_or(f64::NAN);
        // A socket still connecting or already closing lacks some of these: not a sample.
        if !(cwnd_bytes.is_finite() && pacing_bps.is_finite() && rtt_ms.is_finite()) {
            continue;
        }
        out.push(SsSample {
            t,
            local_port,
            dst_port,
            cc,
            cwnd_bytes,
            pacing_bps,
            rtt_ms,
            bytes_sent: number("bytes_sent").unwrap_or_default() as u64,
        });
    }
    out
}

/// `ss`'s rates: `98.5Mbps`, `1.2Gbps`, `640Kbps`, `800bps`.
fn parse_ss_rate(text: &str) -> Option<f64> {
    for (unit, scale) in [("Gbps", 1e9), ("Mbps", 1e6), ("Kbps", 1e3), ("bps", 1.0)] {
        if let Some(n) = text.strip_suffix(unit) {
            return n.parse::<f64>().ok().map(|n| n * scale);
        }
    }
    None
}

/// One series per destination port: iperf3's data connection, the socket to that port that
/// sent the most (its control connection sends a few hundred bytes).
fn series_of(samples: &[SsSample]) -> Vec<Series> {
    let mut ports: Vec<u16> = samples.iter().map(|s| s.dst_port).collect();
    ports.sort_unstable();
    ports.dedup();
    ports
        .into_iter()
        .filter_map(|port| {
            let data = samples
                .iter()
                .filter(|s| s.dst_port == port)
                .max_by_key(|s| s.bytes_sent)?;
            let points = samples
                .iter()
                .filter(|s| s.dst_port == port && s.local_port == data.local_port)
                .map(|s| (s.t, s.cwnd_bytes, s.pacing_bps, s.rtt_ms))
                .collect();
            Some(Series {
                cc: data.cc.clone(),
                dst_port: port,
                points,
            })
        })
        .collect()
}

impl Drop for Testbed {
    fn drop(&mut self) {
        for mut server in self.servers.drain(..) {
            let _ = server.kill();
            let _ = server.wait();
        }
        for ns in self.namespaces.drain(..).rev() {
            if let Err(err) = crate::netns::delete(ns) {
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

/// One flow's numbers from iperf3's `-J` output; the fairness rate is the sender's bytes in the
/// reporting intervals inside `[window_start, window_start + window_len]` (flow-local seconds).
fn parse_flow(json: &str, cc: &str, window_start: f64, window_len: f64) -> anyhow::Result<Flow> {
    let v: Value = serde_json::from_str(json).context("parsing iperf3's JSON")?;
    if let Some(error) = v["error"].as_str() {
        bail!("iperf3: {error}");
    }
    let end = &v["end"];
    let goodput_bps = end["sum_received"]["bits_per_second"]
        .as_f64()
        .context("no end.sum_received.bits_per_second")?;
    let mut rtt_us = Vec::new();
    let mut max_cwnd_bytes = 0;
    let (mut window_bytes, mut window_secs) = (0.0, 0.0);
    // iperf3's interval bounds carry rounding noise of a few ms.
    const SLACK: f64 = 0.05;
    for interval in v["intervals"].as_array().into_iter().flatten() {
        let stream = &interval["streams"][0];
        max_cwnd_bytes = max_cwnd_bytes.max(stream["snd_cwnd"].as_u64().unwrap_or_default());
        let start = stream["start"].as_f64().unwrap_or_default();
        let stop = stream["end"].as_f64().unwrap_or_default();
        if start >= window_start - SLACK && stop <= window_start + window_len + SLACK {
            window_bytes += stream["bytes"].as_f64().unwrap_or_default();
            window_secs += stream["seconds"].as_f64().unwrap_or_default();
        }
        if start >= RTT_SKIP_SECS
            && let Some(rtt) = stream["rtt"].as_f64()
        {
            rtt_us.push(rtt);
        }
    }
    if rtt_us.is_empty() {
        bail!("iperf3 reported no RTT samples after {RTT_SKIP_SECS} s");
    }
    if window_secs <= 0.0 {
        bail!("iperf3 reported no interval inside the shared window");
    }
    Ok(Flow {
        cc: cc.to_owned(),
        goodput_bps,
        window_bps: window_bytes * 8.0 / window_secs,
        retrans_segs: end["sum_sent"]["retransmits"].as_u64().unwrap_or_default(),
        mss: v["start"]["tcp_mss_default"].as_u64().unwrap_or(1448),
        sent_bytes: end["sum_sent"]["bytes"].as_u64().unwrap_or_default(),
        rtt_us,
        max_cwnd_bytes,
    })
}

/// Writes a benchmark's generated record (`section`: its `## ` heading, then the body) into
/// `path`, touching only the block between `<!-- generated: NAME -->` and `<!-- end generated:
/// NAME -->` under that heading: notes written by hand in the same section, before or after the
/// block, are kept. A section without the markers is appended (the file is created when
/// missing); a heading already there without them is an error that changes nothing (put the
/// markers around its generated part first).
pub(crate) fn write_section(path: &Path, name: &str, section: &str) -> anyhow::Result<()> {
    let existing = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => "# Benchmarks\n".to_owned(),
        Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
    };
    let updated = replace_generated(&existing, name, section)
        .with_context(|| format!("updating {}", path.display()))?;
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fs::write(path, updated).with_context(|| format!("writing {}", path.display()))
}

/// The head of a benchmark's record in docs/bench.md: its heading, what it measures, the
/// command that wrote it, when, how long it took, and the machine it ran on.
pub(crate) fn record_header(
    heading: &str,
    purpose: &str,
    command: &str,
    started_at: SystemTime,
    elapsed: Duration,
) -> anyhow::Result<String> {
    let date = crate::exec::utc_minute(started_at)?;
    Ok(format!(
        "{heading}\n\n{purpose} Written by:\n\n```\n{command}\n```\n\n\
         - Run: {} (took {elapsed:.0?})\n- Machine: {}\n",
        date.trim(),
        machine()?
    ))
}

/// Kernel, CPU model and count, memory: what the numbers depend on.
fn machine() -> anyhow::Result<String> {
    let kernel = output(Command::new("uname").arg("-r"))?;
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_owned();
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let mem_gib = fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("MemTotal:")?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or("?".to_owned(), |kb| {
            format!("{:.0} GiB", kb / 1024.0 / 1024.0)
        });
    let iperf = output(Command::new("iperf3").arg("--version"))
        .ok()
        .and_then(|v| v.lines().next().map(str::to_owned))
        .unwrap_or_default();
    Ok(format!(
        "Linux {}, {cpus} × {model}, {mem_gib}; {iperf}",
        kernel.trim()
    ))
}

/// [`write_section`]'s text edit: `section`'s body replaces what lies between `name`'s markers.
fn replace_generated(existing: &str, name: &str, section: &str) -> anyhow::Result<String> {
    let (begin, end) = (
        format!("<!-- generated: {name} -->"),
        format!("<!-- end generated: {name} -->"),
    );
    let section = section.trim();
    let (heading, body) = section.split_once('\n').unwrap_or((section, ""));
    let block = format!("{begin}\n{}\n{end}", body.trim());
    if let Some(start) = existing.find(&begin) {
        let stop = existing[start..]
            .find(&end)
            .map(|i| start + i + end.len())
            .with_context(|| format!("{begin} has no {end}"))?;
        return Ok(format!(
            "{}{block}{}",
            &existing[..start],
            &existing[stop..]
        ));
    }
    if existing.lines().any(|line| line.trim_end() == heading) {
        bail!(
            "{heading:?} has no generated-block markers: put {begin} and {end} around its \
             generated part (what is outside them is kept)"
        );
    }
    Ok(format!("{}\n\n{heading}\n\n{block}\n", existing.trim_end()))
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
    fn a_delay_line_that_ran_late_flags_its_invocation() {
        let line = |packets: u64, total_late_ms: u64| delay_line::Stats {
            packets,
            max_held: 100,
            total_late: Duration::from_millis(total_late_ms),
            max_late: Duration::from_millis(20),
            ..Default::default()
        };
        // The quiet records: 0.025-0.05 ms late on average.
        let quiet = delay_line_summary(&line(1_000_000, 40_000));
        assert!(quiet.contains("mean 0.040 ms"), "{quiet}");
        assert!(!quiet.contains("late path"), "{quiet}");
        // Session 9's degraded invocations: 0.2-1.4 ms.
        let late = delay_line_summary(&line(1_000_000, 400_000));
        assert!(
            late.contains("mean 0.400 ms") && late.contains("**late path**"),
            "{late}"
        );
        // No packet held: no division by zero, no flag.
        assert!(!delay_line_summary(&line(0, 0)).contains("late path"));
    }

    #[test]
    fn record_header_heads_a_section_that_replaces_the_old_one() {
        let header = record_header(
            "## Probes",
            "What it measures.",
            "cargo xtask bench probes --reps 5",
            SystemTime::UNIX_EPOCH + Duration::from_secs(86_400),
            Duration::from_secs(201),
        )
        .unwrap();
        let lines: Vec<&str> = header.lines().collect();
        assert_eq!(
            lines[..7],
            [
                "## Probes",
                "",
                "What it measures. Written by:",
                "",
                "```",
                "cargo xtask bench probes --reps 5",
                "```",
            ]
        );
        assert_eq!(lines[8], "- Run: 1970-01-02 00:00 UTC (took 201s)");
        assert!(lines[9].starts_with("- Machine: Linux "), "{}", lines[9]);
        let doc = "# B\n\n## Probes\n\n<!-- generated: bench probes -->\nold\n\
                   <!-- end generated: bench probes -->\n\n### Notes\n\nkept\n\n## Next\n";
        let replaced = replace_generated(doc, "bench probes", &header).unwrap();
        assert!(
            !replaced.contains("old") && replaced.contains("- Run: 1970-01-02 00:00 UTC"),
            "{replaced}"
        );
        assert_eq!(replaced.matches("## Probes").count(), 1, "{replaced}");
        assert!(
            replaced.ends_with(
                "<!-- end generated: bench probes -->\n\n### Notes\n\nkept\n\n## Next\n"
            ),
            "{replaced}"
        );
    }

    #[test]
    fn replaces_only_its_own_block() {
        let doc = "# Benchmarks\n\n## bbr-p2p vs kernel bbr\n\nintro kept\n\n\
                   <!-- generated: bench bbr -->\nold\n### sub\nold\n<!-- end generated: bench bbr -->\n\n\
                   ### hand-written\nkept\n\n## Probes\n\n<!-- generated: bench probes -->\nkept\n\
                   <!-- end generated: bench probes -->\n";
        let out = replace_generated(doc, "bench bbr", "## bbr-p2p vs kernel bbr\n\nnew\n").unwrap();
        assert_eq!(out, doc.replace("old\n### sub\nold", "new"));
        // Absent: appended under its heading, with its markers.
        let out = replace_generated(
            "# Benchmarks\n\n## Probes\n\nkept\n",
            "bench bbr",
            "## bbr-p2p vs kernel bbr\n\nnew",
        )
        .unwrap();
        assert_eq!(
            out,
            "# Benchmarks\n\n## Probes\n\nkept\n\n## bbr-p2p vs kernel bbr\n\n\
             <!-- generated: bench bbr -->\nnew\n<!-- end generated: bench bbr -->\n"
        );
        // The heading without markers (hand-written text the writer cannot tell apart): refused.
        let err = replace_generated(
            "# Benchmarks\n\n## Probes\n\nnotes\n",
            "bench probes",
            "## Probes\n\nnew",
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("<!-- generated: bench probes -->"),
            "{err}"
        );
        // A begin marker without its end: refused.
        assert!(
            replace_generated(
                "<!-- generated: bench probes -->\nx\n",
                "bench probes",
                "## Probes\n\nnew"
            )
            .is_err()
        );
    }

    #[test]
    fn reads_iperf_json() {
        let json = r#"{"start":{"tcp_mss_default":1448},
            "intervals":[
              {"streams":[{"start":0.0,"end":2.0,"seconds":2.0,"bytes":1000,"rtt":50000,"snd_cwnd":100000}]},
              {"streams":[{"start":2.0,"end":2.2,"seconds":0.2,"bytes":2500000,"rtt":21000,"snd_cwnd":300000}]},
              {"streams":[{"start":2.2,"end":2.401,"seconds":0.201,"bytes":2500000,"rtt":23000,"snd_cwnd":200000}]}],
            "end":{"sum_sent":{"retransmits":10,"bytes":1000},"sum_received":{"bits_per_second":9.5e7}}}"#;
        let flow = parse_flow(json, OURS, 2.0, 0.4).unwrap();
        assert_eq!(flow.retrans_bytes(), 14480);
        assert_eq!(flow.rtt_us, vec![21000.0, 23000.0]);
        assert_eq!(flow.max_cwnd_bytes, 300000);
        assert_eq!(flow.goodput_bps, 9.5e7);
        // 5 MB in 0.401 s: the first interval lies outside the window.
        assert!((flow.window_bps - 5e6 * 8.0 / 0.401).abs() < 1.0);
        assert!(
            parse_flow(json, OURS, 10.0, 2.0).is_err(),
            "no interval in the window"
        );
        assert!(parse_flow(r#"{"error":"busy"}"#, OURS, 0.0, 1.0).is_err());
    }

    #[test]
    fn reads_ss_listing() {
        let text = "ESTAB 0      0      10.79.1.2:40002 10.79.2.2:5201\n\t cubic wscale:7,7 rto:204 rtt:1.5/0.75 mss:1448 cwnd:10 bytes_sent:180 pacing_rate 77.2Mbps delivery_rate 1Mbps\n\
ESTAB 0      3000   10.79.1.2:40004 10.79.2.2:5201\n\t ts sack bbr wscale:7,7 rto:224 rtt:21.25/0.3 mss:1448 pmtu:1500 cwnd:180 bytes_sent:123456 bbr:(bw:95Mbps,mrtt:20.5) pacing_rate 1.02Gbps delivery_rate 94.1Mbps\n\
ESTAB 0      0      10.79.1.2:40006 10.79.2.2:5202\n\t bbr_p2p rtt:30/1 mss:1000 cwnd:50 bytes_sent:999 pacing_rate 640Kbps\n";
        let samples = parse_ss(text, 1.5);
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[1].cc, "bbr");
        assert_eq!(samples[1].local_port, 40004);
        assert_eq!(samples[1].dst_port, 5201);
        assert_eq!(samples[1].cwnd_bytes, 180.0 * 1448.0);
        assert_eq!(samples[1].pacing_bps, 1.02e9);
        assert_eq!(samples[1].rtt_ms, 21.25);
        assert_eq!(samples[2].cc, "bbr_p2p");
        assert_eq!(samples[2].pacing_bps, 640e3);
        let series = series_of(&samples);
        assert_eq!(series.len(), 2);
        assert_eq!(
            series[0].cc, "bbr",
            "the data connection, not iperf3's control one"
        );
        assert_eq!(series[0].points, vec![(1.5, 180.0 * 1448.0, 1.02e9, 21.25)]);
        assert_eq!(series[1].dst_port, 5202);
        assert_eq!(parse_ss_rate("800bps"), Some(800.0));
        assert_eq!(parse_ss_rate("fast"), None);
    }

    #[test]
    fn reads_bpftool_listing() {
        let json = r#"[{"id":5,"type":"struct_ops","name":"bbr_cong_contro","run_time_ns":100,"run_cnt":4,"pids":[{"pid":42,"comm":"p2p-node"}]},
                      {"id":6,"type":"tracing","name":"other","run_time_ns":1,"run_cnt":1,"pids":[{"pid":7,"comm":"x"}]}]"#;
        let stats = parse_prog_stats(json, &[5]).unwrap();
        assert_eq!(stats.len(), 1);
        assert_eq!(stats[0].count, 4);
        assert_eq!(stats[0].time_ns, 100);
    }

    #[test]
    fn scenarios_and_flow_plans() {
        assert_eq!(parse_scenarios("all").unwrap(), report::GROUPS.to_vec());
        assert_eq!(parse_scenarios("e, a,a").unwrap(), vec!['a', 'e']);
        assert!(parse_scenarios("g").is_err());
        assert!(parse_scenarios("ab").is_err());
        assert_eq!(parse_rate("100mbit").unwrap(), 100_000_000);
        assert_eq!(parse_rate("1.5Gbit").unwrap(), 1_500_000_000);
        assert!(parse_rate("100").is_err());
        let bdp = 250_000;
        let c = variants('c', bdp);
        assert_eq!(
            c.iter().map(|v| v.loss).collect::<Vec<_>>(),
            [0.005, 0.01, 0.02]
        );
        assert!(c.iter().all(|v| v.limit == bdp));
        let d = variants('d', bdp);
        assert_eq!(
            d.iter().map(|v| v.limit).collect::<Vec<_>>(),
            [125_000, 1_000_000]
        );
        let plan = flow_plan(&d[0], OURS, 12, 1);
        assert_eq!(plan.len(), 2);
        assert_eq!(
            (plan[1].cc, plan[1].port, plan[1].seconds),
            ("cubic", 5202, 12)
        );
        // (e): flow i starts at i s and lasts 12 + (7 - i) s: all end at 19 s.
        let e = flow_plan(&variants('e', bdp)[0], KERNEL, 12, 1);
        assert_eq!(e.len(), 8);
        for (i, f) in e.iter().enumerate() {
            assert_eq!(f.start.as_secs() + f.seconds, 19, "flow {i}");
            assert_eq!(f.port, 5201 + i as u16);
        }
    }
}
