//! `cargo xtask bench probes`: what the node's four TCP probe programs (`tcp_probe`,
//! `tcp_retransmit_skb`, `tcp_cong_state_set`, `tcp_destroy_sock`) cost; writes the section
//! "## Probes" of `docs/bench.md`.
//!
//! Everything runs over loopback in one namespace, `p2pcc-pb`, with an iperf3 server in it:
//! - (a) cost per event: a release `p2p-node run --bpf-stats --bench-probe-floor` in the
//!   namespace (the kernel counts run time per program while the node holds its stats fd: the
//!   `kernel.bpf_stats_enabled` sysctl is not touched), in two arms per repetition:
//!   *tracked*, with `--observe-all` (the probes mark iperf3's sockets and track them as the
//!   node's own: one clean bulk run and one with random drops of the data direction,
//!   `iptables-legacy ... -m statistic`, so that the retransmit and congestion-state programs
//!   fire too), and *foreign*, without it (iperf3's sockets are not the node's: one clean run).
//!   `--bench-probe-floor` attaches an empty program to `tcp_probe` beside the probes: the
//!   floor, measured on the same events. `run_time_ns / run_cnt` of each program over the arm
//!   comes from `bpftool prog show --json`; the report gives medians over repetitions, and
//!   `tcp_probe` − floor per repetition. When bpftrace is installed, a naive baseline in the
//!   tracked arm: a bpftrace one-liner on the classic `tcp:tcp_probe` tracepoint counting
//!   events per port pair in a hash map.
//! - (b) throughput: clean bulk runs with no node, with the node as deployed (all probes
//!   attached, iperf3's sockets foreign to it) and with `--observe-all` (all probes, every
//!   socket tracked), no run statistics, rotating which arm goes first; medians and ratios.
//!   In the tracked arm the node's own counter of refreshes (`/metrics`) over `tcp_probe`'s
//!   `run_cnt` gives the share of events that refreshed a snapshot, and a third window, a slow stream (200 kbit/s in 1400-byte writes,
//!   so nearly every event is the socket's first in a refresh interval), bounds what the
//!   refresh branch costs: `ns/event` is a mean over events, and a rare heavy branch weighs in
//!   it (see the report's refresh table).
//! - (c) the probes' share of the transfer's CPU time, from (a)'s runs: the run time the kernel
//!   accounted to the node's four programs (plus one empty program's per event, standing in for
//!   the tracepoint's dispatch, which the accounting does not see) over the CPU time iperf3's
//!   two processes used for the same bytes. Both are measured in the same run, so the machine's
//!   other load moves them together, which (b)'s goodput ratios cannot claim.
//!
//! Every process and the namespace are removed by guards on every exit path, Ctrl-C included.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::bench_report::quantile;
use crate::exec::{die_with_parent, echo_problems, release_node, stop_child};
use crate::{
    bench::{
        install_stop_handler, median, record_header, sleep_unless_stopped, stop_requested,
        wait_with_deadline, write_section,
    },
    exec::{describe, exec, is_root, output, workspace_root},
    netns::RandomLoss,
    setup,
};

const NS: &str = "p2pcc-pb";
const IPERF_PORT: &str = "5201";
const HEADING: &str = "## Probes";
/// The node's programs, as bpftool names them.
const PROGRAMS: [&str; 4] = [
    "tcp_probe",
    "tcp_retransmit_skb",
    "tcp_cong_state_set",
    "tcp_destroy_sock",
];
/// `tcp_probe`'s observe-all form (the tracked arm's), reported as `tcp_probe`.
const TCP_PROBE_ALL: &str = "tcp_probe_all";
/// The empty program on `tcp_probe` (`--bench-probe-floor`), as bpftool names it.
const FLOOR: &str = "tcp_probe_floor";
/// The pieces of the probes' path, each alone on `tcp_probe` beside the floor
/// (`--bench-probe-floor`; nodes built before them have none): name, what it does.
const DIAGS: [(&str, &str); 3] = [
    ("diag_load", "one load of `sk->sk_bpf_storage`"),
    ("diag_helper", "one helper call, `bpf_skc_to_tcp_sock`"),
    (
        "diag_storage",
        "one `bpf_sk_storage_get` without create (a map no socket has an entry in)",
    ),
];
/// Issue 12's targets: `tcp_probe` above the floor for tracked and for foreign sockets, and
/// throughput with the probes attached over none.
const TARGET_TRACKED_OVER_FLOOR_NS: f64 = 30.0;
const TARGET_FOREIGN_OVER_FLOOR_NS: f64 = 10.0;
const TARGET_THROUGHPUT_RATIO: f64 = 0.99;
/// The baseline: one hash-map update per tcp_probe event, as a first tracing program would do.
const BASELINE_SCRIPT: &str =
    "tracepoint:tcp:tcp_probe { @events[args->sport, args->dport] = count(); }";
/// How long the node may take to load and attach its programs.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between runs, so the previous run's sockets are gone.
const PAUSE: Duration = Duration::from_secs(1);
const POLL: Duration = Duration::from_millis(100);
/// A little over the node's snapshot period (its collector reads the kernel once a second).
const SNAPSHOT_PERIOD: Duration = Duration::from_millis(1100);

#[derive(clap::Args)]
pub struct ProbesOptions {
    /// Repetitions of (a).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=20))]
    reps: u32,
    /// Length of each iperf3 run of (a).
    #[arg(long, default_value_t = 5, value_name = "SECS", value_parser = clap::value_parser!(u64).range(2..=120))]
    seconds: u64,
    /// Rotations of (b)'s three arms: many short runs, so that the other load of a shared
    /// machine drifts across all arms alike.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u32).range(1..=60))]
    rotations: u32,
    /// Length of each iperf3 run of (b).
    #[arg(long, default_value_t = 2, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=120))]
    rotation_seconds: u64,
    /// Random drop probability of the data direction in (a)'s lossy runs.
    #[arg(long, default_value_t = 0.0005)]
    loss: f64,
    /// Use the p2p-node already in target/release instead of building it first.
    #[arg(long)]
    skip_build: bool,
    /// The markdown file whose "## Probes" generated block is (re)written (notes outside its
    /// markers are kept).
    #[arg(long, default_value = "docs/bench.md")]
    output: PathBuf,
}

/// Run time and count of one program at one moment.
#[derive(Clone, Debug, PartialEq)]
struct ProgCounters {
    name: String,
    run_time_ns: u64,
    run_cnt: u64,
}

/// One program's cost over one repetition of (a).
#[derive(Clone, Debug, Default)]
struct Cost {
    run_time_ns: u64,
    run_cnt: u64,
}

impl Cost {
    fn ns_per_event(&self) -> Option<f64> {
        (self.run_cnt > 0).then(|| self.run_time_ns as f64 / self.run_cnt as f64)
    }
}

pub fn run(options: &ProbesOptions) -> anyhow::Result<()> {
    if !is_root() {
        bail!("`cargo xtask bench probes` needs root (network namespaces, BPF): run it as root");
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

    let others = foreign_tracing_programs()?;
    if !others.is_empty() {
        println!(
            "[bench] note: other TCP tracing programs are attached ({}): they run in both arms of (b)",
            others.join(", ")
        );
    }
    let mut bed = Namespace::create()?;
    let congestion_control = output(Command::new("ip").args([
        "netns",
        "exec",
        NS,
        "sysctl",
        "-n",
        "net.ipv4.tcp_congestion_control",
    ]))?
    .trim()
    .to_owned();

    // (a) cost per event, tracked and foreign arms alternating.
    let mut costs: [Vec<Vec<(String, Cost)>>; 2] = Default::default();
    let mut volumes: [Vec<Volume>; 2] = Default::default();
    let mut refreshes: Vec<RefreshWindows> = Vec::new();
    let baseline = Baseline::start()?;
    for rep in 0..options.reps {
        for (arm, tracked) in [(0, true), (1, false)] {
            println!(
                "[bench] (a) repetition {}/{}: {} sockets",
                rep + 1,
                options.reps,
                ARMS_A[arm]
            );
            let node = ProbeNode::start(&binary, Mode::Measured { tracked })?;
            let baseline = baseline.as_ref().filter(|_| tracked);
            let before = program_counters(&node, baseline)?;
            let tracked_before = node.tracked_events()?;
            let mut volume = Volume::default();
            volume.add(&bed.iperf(options.seconds)?);
            sleep_unless_stopped(PAUSE)?;
            if tracked {
                bed.set_loss(options.loss)?;
                let lossy = bed.iperf(options.seconds);
                bed.set_loss(0.0)?;
                volume.add(&lossy?);
                sleep_unless_stopped(PAUSE)?;
            }
            volumes[arm].push(volume);
            let after = program_counters(&node, baseline)?;
            if tracked {
                let bulk = node
                    .tracked_events()?
                    .since(tracked_before)
                    .with_events(&before, &after);
                bed.iperf_with(options.seconds, SLOW_STREAM)?;
                sleep_unless_stopped(PAUSE)?;
                let slow_counters = program_counters(&node, baseline)?;
                let slow = node
                    .tracked_events()?
                    .since(bulk.plus(tracked_before))
                    .with_events(&after, &slow_counters);
                refreshes.push(RefreshWindows {
                    bulk,
                    slow,
                    slow_over_floor: over_floor(&[deltas(&after, &slow_counters)], "tcp_probe")
                        .first()
                        .copied(),
                });
            }
            drop(node);
            let rep_costs = deltas(&before, &after);
            for (name, cost) in &rep_costs {
                println!(
                    "[bench]   {name}: {} events, {} ns/event",
                    cost.run_cnt,
                    cost.ns_per_event()
                        .map_or("-".to_owned(), |ns| format!("{ns:.1}"))
                );
            }
            costs[arm].push(rep_costs);
        }
    }
    drop(baseline);

    // (b) throughput: no node, the node as deployed, observe-all; rotating the first arm.
    let mut runs: [Vec<Run>; 3] = Default::default();
    for rep in 0..options.rotations {
        for k in 0..ARMS_B.len() {
            let arm = (rep as usize + k) % ARMS_B.len();
            println!(
                "[bench] (b) rotation {}/{}: {}",
                rep + 1,
                options.rotations,
                ARMS_B[arm]
            );
            let node = match arm {
                0 => None,
                1 => Some(ProbeNode::start(
                    &binary,
                    Mode::Plain { observe_all: false },
                )?),
                _ => Some(ProbeNode::start(
                    &binary,
                    Mode::Plain { observe_all: true },
                )?),
            };
            let run = bed.iperf(options.rotation_seconds)?;
            drop(node);
            println!(
                "[bench]   {:.2} Gbit/s, {:.3} CPU s/GB",
                run.bps / 1e9,
                run.cpu_s_per_gb
            );
            runs[arm].push(run);
            sleep_unless_stopped(PAUSE)?;
        }
    }
    drop(bed);

    let report = render(&Report {
        options,
        costs: &costs,
        volumes: &volumes,
        refreshes: &refreshes,
        runs: &runs,
        others: &others,
        congestion_control: &congestion_control,
        started_at,
        elapsed: started.elapsed(),
    })?;
    println!("\n{report}");
    let path = root.join(&options.output);
    write_section(&path, "bench probes", &report)?;
    println!("[bench] wrote {}", path.display());
    Ok(())
}

/// The benchmark's namespace with an iperf3 server in it; removed on drop.
struct Namespace {
    server: Option<Child>,
    loss: Option<RandomLoss>,
}

impl Namespace {
    fn create() -> anyhow::Result<Self> {
        if Path::new("/run/netns").join(NS).exists() {
            crate::netns::delete(NS)?;
        }
        exec(Command::new("ip").args(["netns", "add", NS]))?;
        let mut bed = Self {
            server: None,
            loss: None,
        };
        exec(Command::new("ip").args(["-n", NS, "link", "set", "lo", "up"]))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", NS, "iperf3", "-s", "-p", IPERF_PORT])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        println!("[bench] $ {}", describe(&cmd));
        bed.server = Some(cmd.spawn().context("starting the iperf3 server")?);
        thread::sleep(Duration::from_millis(500));
        Ok(bed)
    }

    /// Drops the data direction (towards the server's port) with `probability`; 0 removes it.
    fn set_loss(&mut self, probability: f64) -> anyhow::Result<()> {
        if let Some(loss) = self.loss.take() {
            loss.remove()?;
        }
        if probability > 0.0 {
            let matches = ["-p", "tcp", "--dport", IPERF_PORT];
            self.loss = Some(RandomLoss::insert(NS, "OUTPUT", &matches, probability)?);
        }
        Ok(())
    }

    /// One bulk iperf3 run over loopback.
    fn iperf(&self, seconds: u64) -> anyhow::Result<Run> {
        self.iperf_with(seconds, &[])
    }

    /// One iperf3 run over loopback with `extra` client arguments.
    fn iperf_with(&self, seconds: u64, extra: &[&str]) -> anyhow::Result<Run> {
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            NS,
            "iperf3",
            "-c",
            "127.0.0.1",
            "-p",
            IPERF_PORT,
        ])
        .args(["-t", &seconds.to_string(), "-J"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
        println!("[bench] $ {}", describe(&cmd));
        let child = cmd.spawn().context("starting iperf3")?;
        let out = wait_with_deadline(child, Duration::from_secs(seconds + 30))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let goodput = Run::parse(&text);
        if !out.status.success() {
            bail!(
                "iperf3 failed ({}): {}{}",
                out.status,
                goodput.err().map_or(String::new(), |e| format!("{e:#} ")),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        goodput
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.kill();
            let _ = server.wait();
        }
        if let Err(err) = crate::netns::delete(NS) {
            eprintln!("[bench] cleanup: {err:#}");
        }
    }
}

/// One iperf3 run: the receiver's goodput, and the CPU time both iperf3 processes used per GB
/// received. The CPU time is each process's own (getrusage: user + system, as iperf3 reports
/// it), which on this kernel (tick-based accounting, no IRQ time accounting) includes the
/// softirq work, the probes included, done while it was the running task: unlike goodput it does
/// not fall when other processes take the CPUs.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Run {
    bps: f64,
    cpu_s_per_gb: f64,
    /// Received, GB (10^9 bytes).
    gb: f64,
}

impl Run {
    /// From iperf3's `-J` output.
    fn parse(json: &str) -> anyhow::Result<Self> {
        let v: Value = serde_json::from_str(json).context("parsing iperf3's JSON")?;
        if let Some(error) = v["error"].as_str() {
            bail!("iperf3: {error}");
        }
        let received = &v["end"]["sum_received"];
        let field = |v: &Value, name: &str| {
            v[name]
                .as_f64()
                .with_context(|| format!("no {name} in iperf3's end section"))
        };
        let bps = field(received, "bits_per_second")?;
        let bytes = field(received, "bytes")?;
        let seconds = field(received, "seconds")?;
        let cpu = &v["end"]["cpu_utilization_percent"];
        let cpu_percent = field(cpu, "host_total")? + field(cpu, "remote_total")?;
        if bytes <= 0.0 {
            bail!("iperf3 received nothing");
        }
        Ok(Self {
            bps,
            cpu_s_per_gb: cpu_percent / 100.0 * seconds / (bytes / 1e9),
            gb: bytes / 1e9,
        })
    }
}

/// (a)'s arms, by index.
const ARMS_A: [&str; 2] = ["tracked", "foreign"];
/// (b)'s arms, by index.
const ARMS_B: [&str; 3] = [
    "no node",
    "node, probes attached (iperf3's sockets foreign)",
    "node --observe-all (every socket tracked)",
];

/// How a benchmark node runs.
#[derive(Clone, Copy)]
enum Mode {
    /// (a): run-time statistics and the floor program; `tracked`: with `--observe-all`.
    Measured { tracked: bool },
    /// (b): the probes only.
    Plain { observe_all: bool },
}

/// A release p2p-node in the namespace; stopped on drop.
struct ProbeNode {
    child: Child,
    /// Programs it must attach before it is ready.
    programs: Vec<&'static str>,
    /// Programs read when present (the diagnostic pieces).
    optional: Vec<&'static str>,
}

impl ProbeNode {
    fn start(binary: &Path, mode: Mode) -> anyhow::Result<Self> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", NS])
            .arg(binary)
            .args(["run", "--listen", "/ip4/127.0.0.1/tcp/4001"])
            .args(["--http", "127.0.0.1:9464", "--require-ebpf"])
            // The kernel's cubic for the node's own sockets: no bbr-p2p registration.
            .args(["--cc", "cubic"]);
        let mut programs = PROGRAMS.to_vec();
        let mut optional = Vec::new();
        let observe_all = match mode {
            Mode::Measured { tracked } => {
                cmd.args(["--bpf-stats", "--bench-probe-floor"]);
                // The node attaches the floor after the pieces: once it is there, all are.
                programs.push(FLOOR);
                optional.extend(DIAGS.map(|(name, _)| name));
                tracked
            }
            Mode::Plain { observe_all } => observe_all,
        };
        if observe_all {
            cmd.arg("--observe-all");
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        die_with_parent(&mut cmd);
        println!("[bench] $ {}", describe(&cmd));
        let mut child = cmd.spawn().context("starting p2p-node")?;
        let stderr = child.stderr.take().expect("piped");
        echo_problems(stderr, "[p2p-node]");
        let mut node = Self {
            child,
            programs,
            optional,
        };
        let deadline = Instant::now() + ATTACH_TIMEOUT;
        loop {
            let found = node.counters()?;
            let attached = node
                .programs
                .iter()
                .filter(|p| found.iter().any(|c| c.name == **p))
                .count();
            if attached == node.programs.len() {
                return Ok(node);
            }
            if let Some(status) = node.child.try_wait()? {
                bail!("p2p-node exited before attaching its probes: {status}");
            }
            if Instant::now() > deadline || stop_requested() {
                bail!(
                    "p2p-node attached {attached} of {} probe programs within {ATTACH_TIMEOUT:?}",
                    node.programs.len()
                );
            }
            thread::sleep(POLL);
        }
    }

    /// Tracked events and refreshes as the node's `/metrics` reports them, after waiting out
    /// its once-a-second snapshot.
    fn tracked_events(&self) -> anyhow::Result<TrackedEvents> {
        thread::sleep(SNAPSHOT_PERIOD);
        let metrics = crate::netns::http_get(NS, "http://127.0.0.1:9464/metrics")?;
        Ok(TrackedEvents::parse(&metrics))
    }

    /// The node's probe programs and their counters (`tcp_probe_all` as `tcp_probe`).
    fn counters(&self) -> anyhow::Result<Vec<ProgCounters>> {
        let listing = output(Command::new("bpftool").args(["prog", "show", "--json"]))?;
        let mut names = self.programs.clone();
        names.extend(&self.optional);
        names.push(TCP_PROBE_ALL);
        let mut found = held_programs(&listing, &held_prog_ids(self.child.id()), &names)?;
        for c in &mut found {
            if c.name == TCP_PROBE_ALL {
                c.name = "tcp_probe".to_owned();
            }
        }
        Ok(found)
    }
}

impl Drop for ProbeNode {
    fn drop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(5));
    }
}

/// The bpftrace baseline program; `None` when bpftrace is not installed. Stopped on drop.
struct Baseline {
    child: Child,
}

/// The name bpftool gives the baseline's program (bpftrace names it after the probe).
const BASELINE_NAME: &str = "tcp_probe (bpftrace baseline)";

impl Baseline {
    fn start() -> anyhow::Result<Option<Self>> {
        if Command::new("bpftrace")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            println!("[bench] bpftrace is not installed: no baseline (apt-get install bpftrace)");
            return Ok(None);
        }
        let mut cmd = Command::new("bpftrace");
        cmd.args(["-e", BASELINE_SCRIPT])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0);
        println!("[bench] baseline: $ {}", describe(&cmd));
        let mut child = cmd.spawn().context("starting bpftrace")?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("Attaching") {
                    let _ = tx.send(());
                }
            }
        });
        let baseline = Self { child };
        rx.recv_timeout(ATTACH_TIMEOUT)
            .context("bpftrace did not attach its probe")?;
        // "Attaching" is printed just before the attach itself.
        thread::sleep(Duration::from_secs(1));
        Ok(Some(baseline))
    }

    fn counters(&self) -> anyhow::Result<Option<ProgCounters>> {
        let listing = output(Command::new("bpftool").args(["prog", "show", "--json"]))?;
        let programs: Value = serde_json::from_str(&listing).context("parsing bpftool's JSON")?;
        let ids = held_prog_ids(self.child.id());
        Ok(programs
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| held_by(p, &ids) && p["type"] == "tracepoint")
            .map(|p| ProgCounters {
                name: BASELINE_NAME.to_owned(),
                run_time_ns: p["run_time_ns"].as_u64().unwrap_or_default(),
                run_cnt: p["run_cnt"].as_u64().unwrap_or_default(),
            }))
    }
}

impl Drop for Baseline {
    fn drop(&mut self) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pids fit in pid_t");
        // SAFETY: our own unreaped child: the pid cannot have been reused.
        unsafe { libc::kill(pid, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            thread::sleep(POLL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn program_counters(
    node: &ProbeNode,
    baseline: Option<&Baseline>,
) -> anyhow::Result<Vec<ProgCounters>> {
    let mut out = node.counters()?;
    if let Some(b) = baseline {
        out.extend(b.counters()?);
    }
    Ok(out)
}

fn held_by(prog: &Value, ids: &[u64]) -> bool {
    prog["id"].as_u64().is_some_and(|id| ids.contains(&id))
}

/// Ids of the BPF programs process `pid` holds, directly or through a link, from the
/// `prog_id:` lines of `/proc/<pid>/fdinfo` (`bpftool prog show` lists no holder pids on this
/// platform's bpftool).
fn held_prog_ids(pid: u32) -> Vec<u64> {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return Vec::new();
    };
    let mut ids: Vec<u64> = fds
        .flatten()
        .filter_map(|fd| fs::read_to_string(fd.path()).ok())
        .flat_map(|info| prog_ids_in_fdinfo(&info))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

fn prog_ids_in_fdinfo(info: &str) -> Vec<u64> {
    info.lines()
        .filter_map(|l| l.strip_prefix("prog_id:")?.trim().parse().ok())
        .collect()
}

/// Processes holding each of `ids`: `comm pid` per id, in `ids` order.
fn holders(ids: &[u64]) -> Vec<(u64, Vec<String>)> {
    let mut out: Vec<(u64, Vec<String>)> = ids.iter().map(|&id| (id, Vec::new())).collect();
    for proc in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = proc
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let held = held_prog_ids(pid);
        for (id, names) in &mut out {
            if held.contains(id) {
                let comm = fs::read_to_string(proc.path().join("comm")).unwrap_or_default();
                names.push(format!("{} {pid}", comm.trim()));
            }
        }
    }
    out
}

/// Programs named in `names` among `ids`, from `bpftool prog show --json`, in `names` order.
fn held_programs(listing: &str, ids: &[u64], names: &[&str]) -> anyhow::Result<Vec<ProgCounters>> {
    let programs: Value = serde_json::from_str(listing).context("parsing bpftool's JSON")?;
    let programs = programs.as_array().map(Vec::as_slice).unwrap_or_default();
    Ok(names
        .iter()
        .filter_map(|name| {
            let p = programs
                .iter()
                .find(|p| held_by(p, ids) && p["name"] == *name)?;
            Some(ProgCounters {
                name: (*name).to_owned(),
                run_time_ns: p["run_time_ns"].as_u64().unwrap_or_default(),
                run_cnt: p["run_cnt"].as_u64().unwrap_or_default(),
            })
        })
        .collect())
}

/// Tracing programs on TCP events held by processes other than this benchmark's (another
/// node, a bcc tool): they add to both arms of (b).
fn foreign_tracing_programs() -> anyhow::Result<Vec<String>> {
    let listing = output(Command::new("bpftool").args(["prog", "show", "--json"]))?;
    let programs: Value = serde_json::from_str(&listing).context("parsing bpftool's JSON")?;
    let tcp: Vec<(u64, String)> = programs
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            matches!(
                p["type"].as_str(),
                Some("tracing" | "tracepoint" | "raw_tracepoint")
            ) && p["name"].as_str().is_some_and(|n| n.contains("tcp"))
        })
        .filter_map(|p| Some((p["id"].as_u64()?, p["name"].as_str()?.to_owned())))
        .collect();
    let ids: Vec<u64> = tcp.iter().map(|(id, _)| *id).collect();
    Ok(holders(&ids)
        .into_iter()
        .zip(&tcp)
        .map(|((_, held_by), (id, name))| format!("{name} #{id} (held by {})", held_by.join(", ")))
        .collect())
}

/// Per-program (time, count) deltas between two readings, in `after`'s order.
fn deltas(before: &[ProgCounters], after: &[ProgCounters]) -> Vec<(String, Cost)> {
    after
        .iter()
        .filter_map(|a| {
            let b = before.iter().find(|b| b.name == a.name)?;
            Some((
                a.name.clone(),
                Cost {
                    run_time_ns: a.run_time_ns.saturating_sub(b.run_time_ns),
                    run_cnt: a.run_cnt.saturating_sub(b.run_cnt),
                },
            ))
        })
        .collect()
}

/// The slow stream of the tracked arm: 200 kbit/s in 1400-byte writes, a segment every ~55 ms,
/// more than a refresh interval, so nearly every `tcp_probe` event refreshes.
const SLOW_STREAM: &[&str] = &["-b", "200K", "-l", "1400"];

/// Tracked `tcp_probe` events and refreshes: the refreshes from the node's `/metrics`, the
/// events from the kernel's `run_cnt` (in the tracked arm every TCP socket is tracked).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct TrackedEvents {
    events: f64,
    refreshes: f64,
}

impl TrackedEvents {
    fn parse(metrics: &str) -> Self {
        let value = |name: &str| {
            metrics
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
                .unwrap_or(0.0)
        };
        Self {
            events: 0.0,
            refreshes: value("p2pcc_ebpf_probe_refreshes_total"),
        }
    }

    /// With the events `tcp_probe` ran between two readings of the programs' counters.
    fn with_events(self, before: &[ProgCounters], after: &[ProgCounters]) -> Self {
        let runs = deltas(before, after)
            .into_iter()
            .find(|(name, _)| name == "tcp_probe")
            .map_or(0, |(_, cost)| cost.run_cnt);
        Self {
            events: runs as f64,
            ..self
        }
    }

    fn since(self, earlier: Self) -> Self {
        Self {
            events: self.events - earlier.events,
            refreshes: self.refreshes - earlier.refreshes,
        }
    }

    fn plus(self, other: Self) -> Self {
        Self {
            events: self.events + other.events,
            refreshes: self.refreshes + other.refreshes,
        }
    }

    /// Share of the events that refreshed.
    fn share(self) -> Option<f64> {
        (self.events > 0.0).then(|| self.refreshes / self.events)
    }
}

/// One repetition of the tracked arm: its bulk runs and its slow stream.
#[derive(Clone, Copy, Debug)]
struct RefreshWindows {
    bulk: TrackedEvents,
    slow: TrackedEvents,
    /// `tcp_probe` − floor over the slow stream, ns per event.
    slow_over_floor: Option<f64>,
}

impl RefreshWindows {
    /// An upper bound of one refresh's cost: the slow stream's mean over its share of
    /// refreshing events (as if its other events cost nothing; a slow socket is colder than a
    /// bulk one, so its refreshes cost more, too).
    fn refresh_bound(&self) -> Option<f64> {
        let share = self.slow.share().filter(|&r| r > 0.0)?;
        Some(self.slow_over_floor? / share)
    }
}

/// What iperf3 moved in one arm of one repetition of (a), and the CPU time it took.
#[derive(Clone, Copy, Debug, Default)]
struct Volume {
    gb: f64,
    cpu_s: f64,
}

impl Volume {
    fn add(&mut self, run: &Run) {
        self.gb += run.gb;
        self.cpu_s += run.cpu_s_per_gb * run.gb;
    }
}

/// (c) for one repetition of one arm: the probes' run time per GB (µs) and their share of
/// iperf3's CPU time, the floor's run time per event counted once more for the dispatch.
fn cpu_share(rep: &[(String, Cost)], volume: Volume) -> Option<(f64, f64)> {
    let probes: u64 = rep
        .iter()
        .filter(|(n, _)| PROGRAMS.contains(&n.as_str()))
        .map(|(_, c)| c.run_time_ns)
        .sum();
    let floor = rep.iter().find(|(n, _)| n == FLOOR)?.1.run_time_ns;
    if volume.gb <= 0.0 || volume.cpu_s <= 0.0 {
        return None;
    }
    let ns = (probes + floor) as f64;
    Some((ns / 1e3 / volume.gb, ns / (volume.cpu_s * 1e9)))
}

struct Report<'a> {
    options: &'a ProbesOptions,
    /// Per (a) arm, per repetition, per program.
    costs: &'a [Vec<Vec<(String, Cost)>>; 2],
    /// Per (a) arm, per repetition: iperf3's bytes and CPU time.
    volumes: &'a [Vec<Volume>; 2],
    /// Per repetition of (a)'s tracked arm: refreshes in the bulk runs and in the slow stream.
    refreshes: &'a [RefreshWindows],
    /// Per (b) arm, its run of each rotation, in rotation order.
    runs: &'a [Vec<Run>; 3],
    others: &'a [String],
    /// The namespace's default, which iperf3's sockets use.
    congestion_control: &'a str,
    started_at: SystemTime,
    elapsed: Duration,
}

/// ns/event of `name` in each repetition of one arm.
fn per_rep(reps: &[Vec<(String, Cost)>], name: &str) -> Vec<f64> {
    reps.iter()
        .filter_map(|rep| rep.iter().find(|(n, _)| n == name)?.1.ns_per_event())
        .collect()
}

/// `program` minus the floor, per repetition (both measured on the same events).
fn over_floor(reps: &[Vec<(String, Cost)>], program: &str) -> Vec<f64> {
    reps.iter()
        .filter_map(|rep| {
            let ns = |name: &str| rep.iter().find(|(n, _)| n == name)?.1.ns_per_event();
            Some(ns(program)? - ns(FLOOR)?)
        })
        .collect()
}

/// Median, min and max.
fn spread(v: &[f64]) -> (f64, f64, f64) {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (median(v.iter().copied()), min, max)
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**missed**" }
}

fn render(r: &Report<'_>) -> anyhow::Result<String> {
    use std::fmt::Write as _;
    let o = r.options;
    let mut s = String::new();
    s.push_str(&record_header(
        HEADING,
        "Cost of the node's four TCP probe programs against an empty program on the same \
         tracepoint, and bulk throughput with them attached (issue 12, step 3).",
        &format!(
            "cargo xtask bench probes --reps {} --seconds {} --loss {} --rotations {} --rotation-seconds {}",
            o.reps, o.seconds, o.loss, o.rotations, o.rotation_seconds
        ),
        r.started_at,
        r.elapsed,
    )?);
    writeln!(
        s,
        "- Traffic: iperf3 over loopback in namespace `{NS}`, one stream, {} s per run, the \
         namespace's default congestion control ({}).",
        o.seconds, r.congestion_control
    )?;
    if r.others.is_empty() {
        writeln!(s, "- No other TCP tracing programs were attached.")?;
    } else {
        writeln!(
            s,
            "- Other TCP tracing programs were attached at the start (they ran in every arm): {}.",
            r.others.join("; ")
        )?;
    }

    writeln!(
        s,
        "\n### (a) Cost per event\n\n`p2p-node run --bpf-stats --bench-probe-floor` (run-time \
         statistics from the node's BPF_ENABLE_STATS fd, the sysctl left alone; the floor \
         `{FLOOR}` is an empty BTF tracepoint program on `tcp_probe`, attached beside the probes, \
         so it runs on the same events and its ns/event includes the kernel's run-time \
         accounting). Each repetition has two arms: **tracked** (`--observe-all`: the probes \
         mark iperf3's sockets and track them as the node's own; one clean and one lossy run, \
         random drop {} of the data direction with `iptables-legacy -m statistic`) and \
         **foreign** (no `--observe-all`: iperf3's sockets are not the node's; one clean run). \
         ns/event = Δrun_time_ns / Δrun_cnt over the arm, from `bpftool prog show --json`; \
         medians over {} repetitions.\n",
        o.loss, o.reps
    )?;
    writeln!(
        s,
        "| arm | program | events per repetition (median) | ns/event median | min – max |"
    )?;
    writeln!(s, "|---|---|---:|---:|---:|")?;
    let mut names: Vec<&str> = PROGRAMS.to_vec();
    names.push(FLOOR);
    names.extend(DIAGS.map(|(name, _)| name));
    names.push(BASELINE_NAME);
    for (arm, reps) in r.costs.iter().enumerate() {
        for name in &names {
            let events = median(reps.iter().filter_map(|rep| {
                rep.iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, c)| c.run_cnt as f64)
            }));
            let v = per_rep(reps, name);
            if v.is_empty() {
                let optional = *name == BASELINE_NAME || name.starts_with("diag_");
                if !optional && (arm == 0 || *name == "tcp_probe" || *name == FLOOR) {
                    writeln!(s, "| {} | `{name}` | {events:.0} | – | – |", ARMS_A[arm])?;
                }
                continue;
            }
            let min = v.iter().copied().fold(f64::INFINITY, f64::min);
            let max = v.iter().copied().fold(0.0, f64::max);
            writeln!(
                s,
                "| {} | `{name}` | {events:.0} | {:.1} | {min:.1} – {max:.1} |",
                ARMS_A[arm],
                median(v.iter().copied())
            )?;
        }
    }
    writeln!(
        s,
        "\n`tcp_probe` − floor, per repetition (same events), median:\n\n\
         | sockets | median ns | min – max | target | |\n|---|---:|---:|---|---|"
    )?;
    for (arm, target) in [TARGET_TRACKED_OVER_FLOOR_NS, TARGET_FOREIGN_OVER_FLOOR_NS]
        .into_iter()
        .enumerate()
    {
        let v = over_floor(&r.costs[arm], "tcp_probe");
        if v.is_empty() {
            writeln!(
                s,
                "| {} | – | – | ≤ floor + {target} ns | no data |",
                ARMS_A[arm]
            )?;
            continue;
        }
        let med = median(v.iter().copied());
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        writeln!(
            s,
            "| {} | {med:.1} | {min:.1} – {max:.1} | ≤ floor + {target} ns | {} |",
            ARMS_A[arm],
            verdict(med <= target)
        )?;
    }
    if r.costs
        .iter()
        .flatten()
        .flatten()
        .any(|(n, _)| n.starts_with("diag_"))
    {
        writeln!(
            s,
            "\nThe pieces of that path, each alone in a program on `tcp_probe` beside the floor \
             (same events; they run after the probes and before the floor, so the lines `tcp_probe` \
             touched are in cache for them: what a piece costs warm), minus the floor, per \
             repetition, median (min – max):\n\n| piece | tracked arm | foreign arm |\n\
             |---|---:|---:|"
        )?;
        for (name, what) in DIAGS {
            let cell = |arm: usize| {
                let v = over_floor(&r.costs[arm], name);
                if v.is_empty() {
                    return "–".to_owned();
                }
                let (med, min, max) = spread(&v);
                format!("{med:.1} ({min:.1} – {max:.1})")
            };
            writeln!(s, "| `{name}`: {what} | {} | {} |", cell(0), cell(1))?;
        }
    }
    if r.costs[0]
        .iter()
        .any(|rep| rep.iter().any(|(n, _)| n == BASELINE_NAME))
    {
        writeln!(
            s,
            "\nBaseline, in the tracked arm's runs: `bpftrace -e '{BASELINE_SCRIPT}'` (classic \
             tracepoint, one hash-map update per event)."
        )?;
    }
    render_refreshes(&mut s, r)?;

    writeln!(
        s,
        "\n### (b) Bulk loopback throughput, all probes attached vs none\n\n\
         Three arms, {} rotations of {} s runs (the first arm rotates), no run-time statistics: \
         no node; `p2p-node run` (all four programs attached; iperf3's sockets are foreign to \
         the node, as every socket but its own is on a deployed host); `p2p-node run \
         --observe-all` (every TCP socket tracked). Goodput is the receiver's; *paired* is each \
         rotation's run over the same rotation's no-node run (adjacent in time, so the machine's \
         other load drifts less between them). CPU s/GB is the CPU time of both iperf3 processes \
         (getrusage, as iperf3 reports it; on this kernel it includes the softirq work and the \
         probes run in their context) per GB received: it does not fall when other processes \
         take the CPUs, so its ratio (no node / arm) is the throughput ratio a CPU-bound \
         transfer would see on an idle machine. Quantiles p25 – p75. Target ratio ≥ \
         {TARGET_THROUGHPUT_RATIO}.\n",
        o.rotations, o.rotation_seconds
    )?;
    writeln!(
        s,
        "| | goodput Gbit/s median (p25 – p75) | ratio of medians | paired ratio median (p25 – p75) | CPU s/GB median (p25 – p75) | CPU ratio no node / arm |"
    )?;
    writeln!(s, "|---|---|---|---|---|---|")?;
    let quartiles = |v: &[f64]| {
        let mut v = v.to_vec();
        (
            quantile(&mut v, 0.25),
            median(v.iter().copied()),
            quantile(&mut v, 0.75),
        )
    };
    let bps = |arm: usize| r.runs[arm].iter().map(|run| run.bps).collect::<Vec<_>>();
    let cpu = |arm: usize| {
        r.runs[arm]
            .iter()
            .map(|run| run.cpu_s_per_gb)
            .collect::<Vec<_>>()
    };
    let none_bps = median(bps(0));
    let none_cpu = median(cpu(0));
    for (arm, name) in ARMS_B.iter().enumerate() {
        let (g25, g50, g75) = quartiles(&bps(arm));
        let (c25, c50, c75) = quartiles(&cpu(arm));
        let (ratio, paired, cpu_ratio) = if arm == 0 {
            ("–".to_owned(), "–".to_owned(), "–".to_owned())
        } else {
            let paired: Vec<f64> = r.runs[arm]
                .iter()
                .zip(&r.runs[0])
                .map(|(run, none)| run.bps / none.bps)
                .collect();
            let (p25, p50, p75) = quartiles(&paired);
            let ratio = g50 / none_bps;
            let cpu_ratio = none_cpu / c50;
            (
                format!("{ratio:.3}"),
                format!(
                    "**{p50:.3}** ({p25:.3} – {p75:.3}) {}",
                    verdict(p50 >= TARGET_THROUGHPUT_RATIO)
                ),
                format!(
                    "**{cpu_ratio:.3}** {}",
                    verdict(cpu_ratio >= TARGET_THROUGHPUT_RATIO)
                ),
            )
        };
        writeln!(
            s,
            "| {} | {:.2} ({:.2} – {:.2}) | {ratio} | {paired} | {c50:.3} ({c25:.3} – {c75:.3}) | {cpu_ratio} |",
            name,
            g50 / 1e9,
            g25 / 1e9,
            g75 / 1e9,
        )?;
    }
    render_cpu_share(&mut s, r)?;
    Ok(s)
}

/// (a)'s refresh table: how much of the tracked mean is the refresh branch.
fn render_refreshes(s: &mut String, r: &Report<'_>) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    if r.refreshes.is_empty() {
        return Ok(());
    }
    let bulk_over = over_floor(&r.costs[0], "tcp_probe");
    let shares = |f: fn(&RefreshWindows) -> TrackedEvents| {
        r.refreshes
            .iter()
            .filter_map(|w| f(w).share())
            .collect::<Vec<_>>()
    };
    let cell = |v: &[f64], scale: f64, digits: usize| {
        if v.is_empty() {
            return "–".to_owned();
        }
        let (med, min, max) = spread(v);
        format!(
            "{:.digits$} ({:.digits$} – {:.digits$})",
            med * scale,
            min * scale,
            max * scale
        )
    };
    let slow_over: Vec<f64> = r
        .refreshes
        .iter()
        .filter_map(|w| w.slow_over_floor)
        .collect();
    let bound: Vec<f64> = r
        .refreshes
        .iter()
        .filter_map(RefreshWindows::refresh_bound)
        .collect();
    let part: Vec<f64> = r
        .refreshes
        .iter()
        .filter_map(|w| Some(w.bulk.share()? * w.refresh_bound()?))
        .collect();
    let common: Vec<f64> = r
        .refreshes
        .iter()
        .zip(&bulk_over)
        .filter_map(|(w, &mean)| {
            let (share, bound) = (w.bulk.share()?, w.refresh_bound()?);
            Some(((mean - share * bound) / (1.0 - share)).max(0.0))
        })
        .collect();
    writeln!(
        s,
        "\nThe tracked mean and the refresh branch. ns/event is a **mean** over events \
         (Δrun_time_ns / Δrun_cnt), and the medians above are medians of per-repetition means: \
         a refresh (the typed cast, two map lookups, ~20 field loads and stores) weighs in it by \
         its share of events. The node's `p2pcc_ebpf_probe_refreshes_total` over `tcp_probe`'s `run_cnt` \
         gives the share; a third window per repetition, a slow stream (`iperf3 {}`: a segment \
         every ~55 ms, so nearly every event refreshes), bounds one refresh's cost: its mean \
         over its share of refreshing events (a slow socket's lines and code are colder than a \
         bulk socket's, so this over-states a bulk refresh). Per repetition, median (min – max):\n\n\
         | | value |\n|---|---:|\n\
         | bulk runs: events that refreshed | {}% |\n\
         | slow stream: events that refreshed | {}% |\n\
         | slow stream: `tcp_probe` − floor, ns | {} |\n\
         | one refresh, upper bound, ns | {} |\n\
         | the refreshes' part of the bulk mean, upper bound, ns | {} |\n\
         | the other events, over the floor, lower bound, ns | {} |",
        SLOW_STREAM.join(" "),
        cell(&shares(|w| w.bulk), 100.0, 2),
        cell(&shares(|w| w.slow), 100.0, 1),
        cell(&slow_over, 1.0, 1),
        cell(&bound, 1.0, 0),
        cell(&part, 1.0, 1),
        cell(&common, 1.0, 1),
    )?;
    Ok(())
}

/// (c): the probes' share of the transfer's CPU time, per arm of (a).
fn render_cpu_share(s: &mut String, r: &Report<'_>) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    writeln!(
        s,
        "\n### (c) The probes' share of the transfer's CPU time\n\n\
         From (a)'s runs: the run time the kernel accounted to the node's four programs in the \
         arm, plus the floor's (one empty program per event, standing in for the tracepoint's \
         dispatch, which the run-time accounting does not see), over the CPU time of both iperf3 \
         processes for the same bytes (getrusage, softirq work included). Both come from the \
         same runs, so the machine's other load moves them together; `1 − share` is the \
         throughput ratio of a transfer bound by this CPU work (the run-time accounting itself, \
         on in these runs only, makes the share an upper bound). Medians over repetitions \
         (min – max). Target ratio ≥ {TARGET_THROUGHPUT_RATIO}.\n\n\
         | arm | GB per repetition | iperf3 CPU s/GB | probes + dispatch µs/GB | share of CPU | `1 − share` | |\n\
         |---|---:|---:|---:|---:|---:|---|"
    )?;
    for (arm, reps) in r.costs.iter().enumerate() {
        let rows: Vec<(Volume, (f64, f64))> = reps
            .iter()
            .zip(&r.volumes[arm])
            .filter_map(|(rep, &v)| Some((v, cpu_share(rep, v)?)))
            .collect();
        if rows.is_empty() {
            writeln!(s, "| {} | – | – | – | – | – | no data |", ARMS_A[arm])?;
            continue;
        }
        let gb = median(rows.iter().map(|(v, _)| v.gb));
        let cpu = median(rows.iter().map(|(v, _)| v.cpu_s / v.gb));
        let (us, us_min, us_max) = spread(&rows.iter().map(|(_, c)| c.0).collect::<Vec<_>>());
        let shares: Vec<f64> = rows.iter().map(|(_, c)| c.1).collect();
        let (share, share_min, share_max) = spread(&shares);
        writeln!(
            s,
            "| {} | {gb:.1} | {cpu:.3} | {us:.1} ({us_min:.1} – {us_max:.1}) | {:.4}% ({:.4} – \
             {:.4}) | **{:.5}** | {} |",
            ARMS_A[arm],
            share * 100.0,
            share_min * 100.0,
            share_max * 100.0,
            1.0 - share,
            verdict(1.0 - share >= TARGET_THROUGHPUT_RATIO)
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_node_programs_by_id_and_name() {
        let listing = r#"[
            {"id":1,"type":"tracing","name":"tcp_probe","run_time_ns":100,"run_cnt":4},
            {"id":2,"type":"tracing","name":"tcp_probe","run_time_ns":999,"run_cnt":1},
            {"id":3,"type":"tracing","name":"tcp_destroy_sock"},
            {"id":4,"type":"struct_ops","name":"bbr_init","run_time_ns":5,"run_cnt":5}
        ]"#;
        let link = "pos:\t0\nflags:\t02000002\nlink_type:\ttracing\nlink_id:\t3\nprog_tag:\tab\nprog_id:\t3\n";
        assert_eq!(prog_ids_in_fdinfo(link), vec![3]);
        let found = held_programs(listing, &[1, 3, 4], &PROGRAMS).unwrap();
        assert!(
            held_programs(listing, &[1, 3, 4], &[FLOOR])
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            found,
            vec![
                ProgCounters {
                    name: "tcp_probe".into(),
                    run_time_ns: 100,
                    run_cnt: 4
                },
                ProgCounters {
                    name: "tcp_destroy_sock".into(),
                    run_time_ns: 0,
                    run_cnt: 0
                },
            ]
        );
    }

    #[test]
    fn cost_is_the_delta_over_the_repetition() {
        let at = |t, c| {
            vec![ProgCounters {
                name: "tcp_probe".into(),
                run_time_ns: t,
                run_cnt: c,
            }]
        };
        let d = deltas(&at(1000, 10), &at(4000, 60));
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].1.ns_per_event(), Some(60.0));
        assert_eq!(deltas(&at(5, 5), &at(5, 5))[0].1.ns_per_event(), None);
    }

    #[test]
    fn probe_over_floor_is_per_repetition() {
        let cost = |t, c| Cost {
            run_time_ns: t,
            run_cnt: c,
        };
        let reps = vec![
            vec![
                ("tcp_probe".to_owned(), cost(500, 10)),
                (FLOOR.to_owned(), cost(300, 10)),
            ],
            // No floor events in this repetition: no difference.
            vec![("tcp_probe".to_owned(), cost(500, 10))],
        ];
        assert_eq!(over_floor(&reps, "tcp_probe"), vec![20.0]);
        assert_eq!(per_rep(&reps, "tcp_probe"), vec![50.0, 50.0]);
    }

    #[test]
    fn writes_only_its_own_block() {
        let dir = std::env::temp_dir().join(format!("p2pcc-bench-probes-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bench.md");
        let doc = "# Benchmarks\n\n## bbr-p2p vs kernel bbr\n\nkept\n\n## Probes\n\n\
                   <!-- generated: bench probes -->\nold\n<!-- end generated: bench probes -->\n\n\
                   ### Session notes\n\nkept\n";
        fs::write(&path, doc).unwrap();
        write_section(&path, "bench probes", "## Probes\n\nnew\n").unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            doc.replace("old", "new")
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reads_goodput_and_cpu_per_gb() {
        let json = r#"{"end":{"sum_received":{"bits_per_second":4.0e10,"bytes":2.0e10,"seconds":4.0},
            "cpu_utilization_percent":{"host_total":60.0,"remote_total":40.0}}}"#;
        // (60% + 40%) of 4 s = 4 CPU s for 20 GB.
        assert_eq!(
            Run::parse(json).unwrap(),
            Run {
                bps: 4.0e10,
                cpu_s_per_gb: 0.2,
                gb: 20.0
            }
        );
        assert!(Run::parse(r#"{"error":"unable to connect"}"#).is_err());
        assert!(Run::parse(r#"{"end":{"sum_received":{"bits_per_second":1.0}}}"#).is_err());
    }

    #[test]
    fn bounds_a_refresh_by_the_slow_streams_mean() {
        let text = "# HELP x\np2pcc_ebpf_probe_refreshes_total_extra 5\n\
                    p2pcc_ebpf_probe_refreshes_total 20\n";
        let counters = |run_cnt| {
            vec![ProgCounters {
                name: "tcp_probe".to_owned(),
                run_time_ns: 0,
                run_cnt,
            }]
        };
        let bulk = TrackedEvents::parse(text).with_events(&counters(500), &counters(1500));
        assert_eq!(
            bulk,
            TrackedEvents {
                events: 1000.0,
                refreshes: 20.0
            }
        );
        let slow = TrackedEvents {
            events: 100.0,
            refreshes: 90.0,
        };
        assert_eq!(bulk.plus(slow).since(bulk), slow);
        // 90 of 100 slow events refreshed, at a mean of 2700 ns: a refresh costs ≤ 3000 ns.
        let w = RefreshWindows {
            bulk,
            slow,
            slow_over_floor: Some(2700.0),
        };
        assert!((w.refresh_bound().unwrap() - 3000.0).abs() < 1e-9);
        let idle = RefreshWindows {
            slow: TrackedEvents::default(),
            ..w
        };
        assert_eq!(idle.refresh_bound(), None, "no slow events: no bound");
    }

    #[test]
    fn cpu_share_counts_the_probes_and_one_floor_over_iperfs_cpu() {
        let cost = |name: &str, run_time_ns| {
            (
                name.to_owned(),
                Cost {
                    run_time_ns,
                    run_cnt: 1000,
                },
            )
        };
        let rep = vec![
            cost("tcp_probe", 3_000_000),
            cost("tcp_destroy_sock", 1_000_000),
            cost(FLOOR, 1_000_000),
            cost("diag_helper", 7_000_000),
        ];
        let mut volume = Volume::default();
        volume.add(&Run {
            bps: 1.0,
            cpu_s_per_gb: 0.5,
            gb: 2.0,
        });
        // 5 ms of probes and floor (the diagnostic piece is not the probes') for 2 GB and 1 s.
        let (us_per_gb, share) = cpu_share(&rep, volume).unwrap();
        assert!((us_per_gb - 2_500.0).abs() < 1e-9, "{us_per_gb}");
        assert!((share - 0.005).abs() < 1e-12, "{share}");
        assert_eq!(cpu_share(&rep, Volume::default()), None);
    }
}
