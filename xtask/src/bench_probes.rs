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
    /// The markdown file whose "## Probes" section is (re)written.
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
            bed.iperf(options.seconds)?;
            sleep_unless_stopped(PAUSE)?;
            if tracked {
                bed.set_loss(options.loss)?;
                let lossy = bed.iperf(options.seconds);
                bed.set_loss(0.0)?;
                lossy?;
                sleep_unless_stopped(PAUSE)?;
            }
            let after = program_counters(&node, baseline)?;
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
        runs: &runs,
        others: &others,
        congestion_control: &congestion_control,
        started_at,
        elapsed: started.elapsed(),
    })?;
    println!("\n{report}");
    let path = root.join(&options.output);
    write_section(&path, &report)?;
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
            exec(Command::new("ip").args(["netns", "del", NS]))?;
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
        if let Err(err) = exec(Command::new("ip").args(["netns", "del", NS])) {
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

struct Report<'a> {
    options: &'a ProbesOptions,
    /// Per (a) arm, per repetition, per program.
    costs: &'a [Vec<Vec<(String, Cost)>>; 2],
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
    Ok(s)
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
    fn writes_only_its_own_section() {
        let dir = std::env::temp_dir().join(format!("p2pcc-bench-probes-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bench.md");
        fs::write(
            &path,
            "# Benchmarks\n\n## bbr-p2p vs kernel bbr\n\nkept\n\n## Probes\n\nold\n",
        )
        .unwrap();
        write_section(&path, "## Probes\n\nnew\n").unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "# Benchmarks\n\n## bbr-p2p vs kernel bbr\n\nkept\n\n## Probes\n\nnew\n"
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
                cpu_s_per_gb: 0.2
            }
        );
        assert!(Run::parse(r#"{"error":"unable to connect"}"#).is_err());
        assert!(Run::parse(r#"{"end":{"sum_received":{"bits_per_second":1.0}}}"#).is_err());
    }
}
