//! `cargo xtask run`: a local testbed of N p2p-node processes, one per network namespace, all
//! connected through a router namespace that holds the bottleneck.
//!
//! ```text
//!            init namespace: p2pcc-host 10.77.250.1  (route 10.77.0.0/16 via the router)
//!                               |
//!            p2pcc-hr 10.77.250.2
//!   router namespace p2pcc-r (ip_forward=1)
//!            p2pcc-r1 10.77.1.1 [htb]   p2pcc-r2 10.77.2.1 [htb]   ...
//!                 |                          |
//!   p2pcc-n1: p2pcc-n1 10.77.1.2   p2pcc-n2: p2pcc-n2 10.77.2.2   ...   (default via .1)
//!
//!   router FORWARD:  -i/-o p2pcc-r<i> statistic DROP (link loss)
//!                    -o p2pcc-r<i> NFQUEUE <i>  → a delay line holding packets RTT_i/2
//! ```
//!
//! Each node's link ([`crate::link`]: `--link` presets and per-node overrides) is applied on the
//! router's egress towards the node: an htb for the rate (small packets, i.e. ACKs, first; see
//! `add_bottleneck`), a byte FIFO of the buffer, and a delay of RTT/2 — the
//! NFQUEUE delay line of `xtask/src/delay_line.rs` (one per node, on a thread of this process),
//! or netem with the htb as its child where the kernel has netem. The shaper sits on the router, not
//! on the senders' own veths: there TCP Small Queues would keep the queue short for every
//! algorithm (see PLATFORM.md), and the algorithms would look alike. Before the nodes start, the
//! round trip of every link is measured through the shaped path and compared with the
//! configured one (within [`RTT_TOLERANCE`]). The host link lets a browser or curl on the host
//! reach each node's HTTP endpoint.
//!
//! Everything created is removed when the run ends, whichever way it ends (the [`Testbed`]
//! guard): nodes, delay lines, namespaces and with them their links, qdiscs and iptables rules.
//! After a SIGKILL of xtask the nodes get SIGTERM from the kernel (parent-death signal) and the
//! delay lines die with the process; the next start kills anything left in `p2pcc-*` namespaces
//! and deletes them.

use std::{
    io::{self, BufRead as _, BufReader, Read},
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::exec::{die_with_parent, release_node};
use crate::{
    delay_line::{self, DelayLine},
    exec::{describe, exec, is_root, output},
    link::{self, Link},
    netns::{self, RandomLoss},
    overview, prometheus, setup,
    workload::{self, NodeApi, Traffic},
};

/// The router namespace; every node's link ends here.
const ROUTER_NS: &str = "p2pcc-r";
/// The host's end of the host–router link, in the init namespace.
const HOST_LINK: &str = "p2pcc-host";
/// The router's end of the host–router link.
const HOST_LINK_PEER: &str = "p2pcc-hr";
/// Third octet of the host–router subnet; node numbers stay below it.
const HOST_SUBNET: u8 = 250;
/// libp2p TCP port every node listens on (each has its own address, so they can share it).
const LISTEN_PORT: u16 = 4001;
/// The nodes' HTTP port (metrics and API); 9464 is the usual Prometheus exporter port.
const HTTP_PORT: u16 = 9464;
/// How far the measured round trip of a link may be from the configured one (issue 11).
const RTT_TOLERANCE: f64 = 0.10;
/// Packets up to this size (IP length) skip the data queue at the bottleneck: pure ACKs are
/// 52 bytes with timestamps and SACK blocks add up to 40.
const SMALL_PACKET_BYTES: u32 = 128;
/// Round trips measured per link at start.
const RTT_TRIES: usize = 10;
/// A TCP port nothing listens on in the node namespaces (the RTT probe's target: the RST
/// comes back from the node's kernel).
const CLOSED_PORT: u16 = 9;
/// How long node 1 may take to print its listen address (a first start loads eBPF programs).
const NODE_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections without streams close after this (the node's default is 30 s; the testbed's
/// connections should outlive the pauses between transfers).
const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// How long the nodes get to exit after SIGTERM before they are killed: above a node's own
/// bound (3 s for in-flight HTTP requests, then its cleanup; p2p-node's `http::limits`), so
/// only a hung node is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How often waiting loops look at the stop flag and the nodes.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

#[derive(clap::Args)]
pub struct Options {
    /// Number of nodes (1 to 249: node i gets the address 10.77.i.2).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..HOST_SUBNET as i64))]
    nodes: u8,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long, value_name = "SECS")]
    duration: Option<u64>,
    /// Congestion control per node, comma-separated; repeated in turn when shorter than --nodes.
    #[arg(long, value_delimiter = ',', default_value = "bbr-p2p,bbr,cubic,reno")]
    cc: Vec<String>,
    /// The links (repeatable): a preset for every node (lan, wan, bufferbloat, lossy; default
    /// wan: 100 Mbit/s, 40 ms, 4 BDP buffer), or one node's link as `n2=lossy` or
    /// `n2=20mbit,80ms,0.5bdp,1%` (fields in any order, omitted ones from the default).
    #[arg(long, value_name = "PRESET|nI=SPEC")]
    link: Vec<String>,
    /// Generated traffic (xtask/src/workload.rs): none; light (files shared and fetched); heavy
    /// (light plus back-to-back bulk uploads in a ring n1→n2→…→n1, long enough to fill the
    /// buffers).
    #[arg(long, value_enum, default_value = "heavy")]
    traffic: Traffic,
    /// Where the testbed's live page (xtask/src/overview.rs) listens.
    #[arg(long, default_value = "127.0.0.1:9400")]
    overview: String,
    /// Also start Debian's prometheus on 127.0.0.1:9090, scraping every node (the configuration
    /// is dashboards/prometheus/prometheus.yml with this run's targets).
    #[arg(long)]
    prometheus: bool,
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    if !is_root() {
        bail!("`cargo xtask run` needs root (network namespaces, BPF): run it as root");
    }
    if options.cc.iter().any(String::is_empty) {
        bail!(
            "--cc has an empty algorithm name: {:?}",
            options.cc.join(",")
        );
    }
    let links = link::links(options.nodes, &options.link)?;
    setup::run()?;
    let binary = release_node(true)?;

    // From here on a Ctrl-C must not kill xtask before the guard has removed the testbed.
    install_stop_handler()?;
    println!("[run] removing leftovers of earlier runs");
    netns::delete_leftovers()?;

    let mut testbed = Testbed::default();
    println!(
        "[run] creating the testbed: router {ROUTER_NS} and {} node namespaces",
        options.nodes
    );
    testbed.build_network(&links)?;
    if !testbed.check_round_trips(&links)? {
        println!("[run] interrupted while measuring the links");
        return Ok(());
    }

    let algorithms = algorithms(options);
    workload::prepare_dirs()?;
    // Each node's peer id is known only once it prints its address. Node 1 is the others'
    // bootstrap peer, and each node also dials the one before it by its address: the bulk
    // uploads go round the ring n1→n2→…→n1 (workload.rs), so every upload finds its connection
    // up (with node 1 alone, an upload could start before Kademlia had told the sender the
    // receiver's address and fail with "no addresses for peer").
    let mut peer_ids = Vec::new();
    let mut addresses: Vec<String> = Vec::new();
    for i in 1..=options.nodes {
        let mut peers: Vec<&str> = addresses.first().into_iter().map(String::as_str).collect();
        if addresses.len() > 1 {
            peers.extend(addresses.last().map(String::as_str));
        }
        let ready = testbed.start_node(&NodeCommand {
            binary: &binary,
            i,
            algorithm: algorithms[usize::from(i - 1)],
            peers,
        })?;
        let Some(address) = testbed.wait_for_address(&ready)? else {
            println!("[run] interrupted while n{i} was starting");
            return Ok(());
        };
        println!("[run] n{i} listens on {address}");
        peer_ids.push(address.rsplit('/').next().unwrap_or_default().to_owned());
        addresses.push(address);
    }

    print_table(&algorithms);
    let apis: Vec<NodeApi> = (1..)
        .zip(peer_ids)
        .zip(&links)
        .map(|((i, peer_id), link)| NodeApi {
            name: format!("n{i}"),
            http: format!("{}:{HTTP_PORT}", node_ip(i)),
            peer_id,
            link: *link,
        })
        .collect();
    let upstreams = apis
        .iter()
        .zip(&algorithms)
        .map(|(api, algorithm)| overview::Upstream {
            name: api.name.clone(),
            address: api.http.clone(),
            algorithm: (*algorithm).to_owned(),
            link: api.link.to_string(),
        })
        .collect();
    let _proxy = overview::serve(&options.overview, upstreams)?;
    println!(
        "[run] the testbed's live page: http://{}/  (switching needs the token {})",
        options.overview,
        testbed_token()
    );
    let _prometheus = if options.prometheus {
        let targets: Vec<String> = apis.iter().map(|api| api.http.clone()).collect();
        Some(prometheus::start(&targets)?)
    } else {
        None
    };
    let mut workload = workload::start(options.traffic, &apis, testbed_token(), stop_requested)?;
    let result = testbed.wait_until_stopped(options.duration.map(Duration::from_secs));
    // The workload first (its requests in flight are abandoned within 0.1 s): the nodes then
    // have no transfer to finish and stop on SIGTERM, and no request fails because they did.
    workload.stop();
    testbed.teardown();
    drop(workload);
    result
    // `testbed` drops here, on success and on every `?` above: nodes stopped, namespaces deleted.
}

/// The congestion control of each node, in node order: `--cc` repeated in turn.
fn algorithms(options: &Options) -> Vec<&str> {
    (1..=options.nodes)
        .map(|i| options.cc[usize::from(i - 1) % options.cc.len()].as_str())
        .collect()
}

fn node_namespace(i: u8) -> String {
    format!("p2pcc-n{i}")
}

fn node_ip(i: u8) -> String {
    format!("10.77.{i}.2")
}

fn http_url(i: u8) -> String {
    format!("http://{}:{HTTP_PORT}/", node_ip(i))
}

/// The token for changes through the nodes' APIs: random per run.
fn testbed_token() -> &'static str {
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOKEN.get_or_init(|| {
        let mut bytes = [0u8; 16];
        // SAFETY: getrandom writes at most `bytes.len()` bytes into the buffer.
        let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
        assert_eq!(n, bytes.len() as isize, "getrandom failed");
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    })
}

fn print_table(algorithms: &[&str]) {
    println!();
    println!("{:<6} {:<10} {:<10} http", "node", "namespace", "algorithm");
    for (i, algorithm) in (1..).zip(algorithms) {
        println!(
            "{:<6} {:<10} {:<10} {}",
            format!("n{i}"),
            node_namespace(i),
            algorithm,
            http_url(i)
        );
    }
    println!();
    println!("Switch a node's algorithm live (token of this run):");
    println!(
        "  P2PCC_HTTP_TOKEN={} target/release/p2p-node cc set cubic --node {}",
        testbed_token(),
        http_url(1).trim_end_matches('/')
    );
    println!();
}

/// Set by SIGINT/SIGTERM; the waiting loops poll it.
static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_signal: libc::c_int) {
    STOP_REQUESTED.store(true, Ordering::SeqCst);
}

/// Turns SIGINT and SIGTERM into a flag, so xtask outlives them and tears the testbed down.
fn install_stop_handler() -> anyhow::Result<()> {
    // libc takes the handler as an address.
    let handler: extern "C" fn(libc::c_int) = on_stop_signal;
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        let previous = unsafe { libc::signal(signal, handler as libc::sighandler_t) };
        if previous == libc::SIG_ERR {
            bail!(
                "installing a handler for signal {signal}: {}",
                io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

fn stop_requested() -> bool {
    STOP_REQUESTED.load(Ordering::SeqCst)
}

/// What one node is started with.
struct NodeCommand<'a> {
    binary: &'a Path,
    i: u8,
    algorithm: &'a str,
    /// Multiaddrs to dial (`--peer`): node 1's and the previous node's; none for node 1.
    peers: Vec<&'a str>,
}

/// A started node process.
struct Node {
    name: String,
    child: Child,
}

/// Everything a run created, removed again on drop: the guard that makes cleanup happen on
/// every exit path (success, error, panic, Ctrl-C).
#[derive(Default)]
struct Testbed {
    /// Namespaces created so far, in order.
    namespaces: Vec<String>,
    /// Whether the host–router veth exists.
    host_link: bool,
    nodes: Vec<Node>,
    /// One per node link, when the kernel has no netem.
    delay_lines: Vec<DelayLine>,
    /// Two per lossy link (one a direction), in the router namespace.
    loss_rules: Vec<RandomLoss>,
}

impl Testbed {
    fn build_network(&mut self, links: &[Link]) -> anyhow::Result<()> {
        self.add_namespace(ROUTER_NS)?;
        exec(Command::new("ip").args([
            "netns",
            "exec",
            ROUTER_NS,
            "sysctl",
            "-q",
            "-w",
            "net.ipv4.ip_forward=1",
        ]))?;
        let netem = has_netem();
        println!(
            "[run] delay: {}",
            if netem {
                "netem (the kernel has it), the shaper as its child"
            } else {
                "no netem in this kernel: NFQUEUE delay lines in the router's FORWARD chain"
            }
        );
        for (i, link) in (1..).zip(links) {
            self.add_node_link(i)?;
            self.shape(i, link, netem)?;
            println!("[run] link n{i}: {link}");
        }
        self.add_host_link()
    }

    /// The link's rate, buffer, delay and loss on the router's side of node i's veth.
    fn shape(&mut self, i: u8, link: &Link, netem: bool) -> anyhow::Result<()> {
        let router_veth = format!("p2pcc-r{i}");
        let tc = || {
            let mut cmd = Command::new("tc");
            cmd.args(["-n", ROUTER_NS, "qdisc", "add", "dev", &router_veth]);
            cmd
        };
        if netem {
            let delay = format!("{}us", link.one_way_delay().as_micros());
            // netem's own queue must hold a full buffer plus what is in flight in the delay.
            let limit = (link.buffer_bytes() + link.bdp_bytes()) / 1000 + 1000;
            exec(
                tc().args(["root", "handle", "1:", "netem", "delay", &delay])
                    .args(["limit", &limit.to_string()]),
            )?;
            self.add_bottleneck(&router_veth, link, &["parent", "1:1"])?;
        } else {
            self.add_bottleneck(&router_veth, link, &["root"])?;
            let queue_num = u16::from(i);
            self.delay_lines.push(delay_line::spawn_forwarding(
                ROUTER_NS,
                queue_num,
                Some(&router_veth),
                link.one_way_delay(),
            )?);
        }
        if link.loss > 0.0 {
            // Both directions, ahead of the delay rules (inserted at the top).
            for direction in ["-i", "-o"] {
                let matches = [direction, router_veth.as_str()];
                self.loss_rules.push(RandomLoss::insert(
                    ROUTER_NS, "FORWARD", &matches, link.loss,
                )?);
            }
        }
        Ok(())
    }

    /// The bottleneck on the router's egress towards a node, at `parent` (`root`, or under
    /// netem): an htb at the link's rate with two classes — packets of up to
    /// [`SMALL_PACKET_BYTES`] (pure ACKs, handshakes) first, everything else in a byte FIFO of the
    /// link's buffer. Why the ACK class: in the testbed every node both sends and receives bulk
    /// data, so the ACKs of a node's uploads return through a queue that another node's uploads
    /// fill; in one FIFO a node's RTT would show that other node's queue as much as its own,
    /// and no algorithm could be told apart. (Routers that prioritise ACKs, e.g. CAKE's
    /// ack-filter, exist; a single FIFO is the other common case.)
    fn add_bottleneck(&self, veth: &str, link: &Link, parent: &[&str]) -> anyhow::Result<()> {
        let tc = |object: &str| {
            let mut cmd = Command::new("tc");
            cmd.args(["-n", ROUTER_NS, object, "add", "dev", veth]);
            cmd
        };
        let rate = format!("{}bit", link.rate_bits_per_second);
        let burst = link.burst_bytes().to_string();
        let ack_rate = format!("{}bit", link.rate_bits_per_second / 20);
        let data_rate = format!("{}bit", link.rate_bits_per_second / 20 * 19);
        exec(
            tc("qdisc")
                .args(parent)
                .args(["handle", "10:", "htb", "default", "20"]),
        )?;
        exec(
            tc("class")
                .args(["parent", "10:", "classid", "10:1", "htb", "rate", &rate])
                .args(["ceil", &rate, "burst", &burst, "cburst", &burst])
                // Explicit, as on the leaves: htb's default (rate / r2q, 1.25 MB at 100 Mbit/s)
                // is over its 200000-byte limit, and the kernel warns "quantum of class 100001
                // is big". An inner class does not use its quantum.
                .args(["quantum", "1514"]),
        )?;
        for (class, class_rate, prio) in [("10:10", &ack_rate, "0"), ("10:20", &data_rate, "1")] {
            exec(
                tc("class")
                    .args([
                        "parent", "10:1", "classid", class, "htb", "rate", class_rate,
                    ])
                    .args(["ceil", &rate, "burst", &burst, "cburst", &burst])
                    .args(["prio", prio, "quantum", "1514"]),
            )?;
        }
        exec(
            tc("qdisc")
                .args(["parent", "10:20", "bfifo", "limit"])
                .arg(link.buffer_bytes().to_string()),
        )?;
        exec(tc("qdisc").args(["parent", "10:10", "pfifo", "limit", "1000"]))?;
        iptables(&[
            "-t",
            "mangle",
            "-A",
            "POSTROUTING",
            "-o",
            veth,
            "-m",
            "length",
            "--length",
            &format!("0:{SMALL_PACKET_BYTES}"),
            "-j",
            "CLASSIFY",
            "--set-class",
            "10:10",
        ])
    }

    /// Measures each link's round trip through the shaped path (node i to the next node's
    /// closed port), prints it against the configured one, and fails when any is off by more
    /// than [`RTT_TOLERANCE`]. `Ok(false)` when a stop was requested meanwhile.
    fn check_round_trips(&mut self, links: &[Link]) -> anyhow::Result<bool> {
        if links.len() < 2 {
            println!("[run] one node: no path between nodes to measure");
            return Ok(true);
        }
        let mut off = Vec::new();
        for (i, link) in (1..).zip(links) {
            if stop_requested() {
                return Ok(false);
            }
            let j = i % links.len() as u8 + 1;
            let configured = path_rtt(link, &links[usize::from(j - 1)]);
            let target = std::net::SocketAddr::new(node_ip(j).parse()?, CLOSED_PORT);
            let mut rtts = netns::tcp_round_trips(&node_namespace(i), target, RTT_TRIES)?;
            rtts.sort_by(f64::total_cmp);
            let median = rtts[rtts.len() / 2];
            let error = (median - configured).abs() / configured.max(f64::EPSILON);
            let verdict = if error <= RTT_TOLERANCE { "ok" } else { "OFF" };
            println!(
                "[run] RTT n{i}→n{j}: configured {configured:.2} ms, measured median {median:.2} ms \
                 (min {:.2}, max {:.2}; {:+.1}%) {verdict}",
                rtts[0],
                rtts[rtts.len() - 1],
                (median - configured) / configured.max(f64::EPSILON) * 100.0
            );
            if error > RTT_TOLERANCE {
                off.push(format!("n{i}→n{j}"));
            }
        }
        if !off.is_empty() {
            bail!(
                "the delay line is off by more than {:.0}% on {}",
                RTT_TOLERANCE * 100.0,
                off.join(", ")
            );
        }
        Ok(true)
    }

    fn add_namespace(&mut self, name: &str) -> anyhow::Result<()> {
        exec(Command::new("ip").args(["netns", "add", name]))?;
        self.namespaces.push(name.to_owned());
        exec(Command::new("ip").args(["-n", name, "link", "set", "lo", "up"]))
    }

    /// Node namespace i and its veth to the router, with the bottleneck on the router's end.
    fn add_node_link(&mut self, i: u8) -> anyhow::Result<()> {
        let namespace = node_namespace(i);
        let veth = namespace.as_str(); // the node's end is named like its namespace
        let router_veth = format!("p2pcc-r{i}");
        let node_cidr = format!("{}/24", node_ip(i));
        let router_ip = format!("10.77.{i}.1");
        let router_cidr = format!("{router_ip}/24");
        self.add_namespace(&namespace)?;
        // Created with both ends already in their namespaces, so a failure leaves nothing in the
        // init namespace.
        exec(
            Command::new("ip")
                .args(["link", "add", veth, "netns", &namespace, "type", "veth"])
                .args(["peer", "name", &router_veth, "netns", ROUTER_NS]),
        )?;
        exec(Command::new("ip").args(["-n", &namespace, "addr", "add", &node_cidr, "dev", veth]))?;
        exec(Command::new("ip").args(["-n", &namespace, "link", "set", veth, "up"]))?;
        exec(Command::new("ip").args([
            "-n", &namespace, "route", "add", "default", "via", &router_ip,
        ]))?;
        exec(Command::new("ip").args([
            "-n",
            ROUTER_NS,
            "addr",
            "add",
            &router_cidr,
            "dev",
            &router_veth,
        ]))?;
        exec(Command::new("ip").args(["-n", ROUTER_NS, "link", "set", &router_veth, "up"]))?;
        Ok(())
    }

    /// The veth from the init namespace to the router, so the host reaches every node's HTTP port.
    fn add_host_link(&mut self) -> anyhow::Result<()> {
        let host_cidr = format!("10.77.{HOST_SUBNET}.1/24");
        let router_ip = format!("10.77.{HOST_SUBNET}.2");
        let router_cidr = format!("{router_ip}/24");
        exec(
            Command::new("ip")
                .args(["link", "add", HOST_LINK, "type", "veth"])
                .args(["peer", "name", HOST_LINK_PEER, "netns", ROUTER_NS]),
        )?;
        self.host_link = true;
        exec(Command::new("ip").args(["addr", "add", &host_cidr, "dev", HOST_LINK]))?;
        exec(Command::new("ip").args(["link", "set", HOST_LINK, "up"]))?;
        exec(Command::new("ip").args([
            "-n",
            ROUTER_NS,
            "addr",
            "add",
            &router_cidr,
            "dev",
            HOST_LINK_PEER,
        ]))?;
        exec(Command::new("ip").args(["-n", ROUTER_NS, "link", "set", HOST_LINK_PEER, "up"]))?;
        exec(Command::new("ip").args(["route", "add", "10.77.0.0/16", "via", &router_ip]))
    }

    /// Starts one node in its namespace; its output is echoed with an `[n<i>]` prefix. Returns
    /// a receiver of every multiaddr with a peer id (`/p2p/`) it prints.
    fn start_node(&mut self, node: &NodeCommand<'_>) -> anyhow::Result<mpsc::Receiver<String>> {
        let namespace = node_namespace(node.i);
        let ip = node_ip(node.i);
        let mut cmd = Command::new("ip");
        // Flags as in p2p-node/src/cli.rs (`RunArgs`). The API listens on the node's testbed
        // address, not loopback, so changes through it need the testbed's token (given in the
        // environment, not on the command line where `ps` would show it).
        cmd.env("P2PCC_HTTP_TOKEN", testbed_token());
        cmd.args(["netns", "exec", &namespace])
            .arg(node.binary)
            .arg("run")
            .args(["--listen", &format!("/ip4/{ip}/tcp/{LISTEN_PORT}")])
            .args(["--cc", node.algorithm])
            .args(["--http", &format!("{ip}:{HTTP_PORT}")])
            // The workload's connections stay up between transfers.
            .args(["--idle-timeout-secs", &IDLE_TIMEOUT.as_secs().to_string()])
            // State, shared files and downloads under the run's directory (removed at the end).
            .arg("--data-dir")
            .arg(std::path::Path::new(workload::WORK_DIR).join(format!("n{}", node.i)))
            .args(["--share-dir", workload::SHARE_DIR])
            .args(["--download-dir", workload::DOWNLOAD_DIR]);
        for peer in &node.peers {
            cmd.args(["--peer", peer]);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Its own process group: Ctrl-C reaches only xtask, which stops the nodes in order.
        cmd.process_group(0);
        die_with_parent(&mut cmd);

        let name = format!("n{}", node.i);
        println!(
            "[run] starting {name} ({}): $ {}",
            node.algorithm,
            describe(&cmd)
        );
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting node {name}"))?;
        let (addresses, received) = mpsc::channel();
        // Both streams are read to the end: a node blocked on a full pipe would stall.
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        echo_lines(stdout, name.clone(), addresses.clone());
        echo_lines(stderr, name.clone(), addresses);
        self.nodes.push(Node { name, child });
        Ok(received)
    }

    /// Waits for the first `/p2p/` multiaddr the newest node prints; `None` if a stop was
    /// requested meanwhile.
    fn wait_for_address(
        &mut self,
        addresses: &mpsc::Receiver<String>,
    ) -> anyhow::Result<Option<String>> {
        let deadline = Instant::now() + NODE_READY_TIMEOUT;
        loop {
            match addresses.recv_timeout(POLL_INTERVAL) {
                Ok(address) => return Ok(Some(address)),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                // Both output streams closed: the node exited; its status is reported below.
                Err(mpsc::RecvTimeoutError::Disconnected) => thread::sleep(POLL_INTERVAL),
            }
            if stop_requested() {
                return Ok(None);
            }
            if let Some((name, status)) = self.exited_node()? {
                bail!("node {name} exited before printing its /p2p/ address: {status}");
            }
            if Instant::now() > deadline {
                bail!("the node printed no /p2p/ address within {NODE_READY_TIMEOUT:?}");
            }
        }
    }

    /// Runs until a signal, the end of `duration`, or a node exiting (which is an error).
    fn wait_until_stopped(&mut self, duration: Option<Duration>) -> anyhow::Result<()> {
        let deadline = duration.map(|duration| Instant::now() + duration);
        match duration {
            Some(duration) => println!("[run] running for {duration:?} (Ctrl-C stops earlier)"),
            None => println!("[run] running until Ctrl-C"),
        }
        loop {
            let exited = self.exited_node()?;
            // Checked after the nodes: a signal that ended a node has also set the flag by now.
            if stop_requested() {
                println!("[run] stopping: signal received");
                return Ok(());
            }
            if let Some((name, status)) = exited {
                bail!("node {name} exited: {status}");
            }
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                println!("[run] stopping: --duration elapsed");
                return Ok(());
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// The first node that has exited, with its status.
    fn exited_node(&mut self) -> anyhow::Result<Option<(String, ExitStatus)>> {
        for node in &mut self.nodes {
            if let Some(status) = node
                .child
                .try_wait()
                .with_context(|| format!("checking node {}", node.name))?
            {
                return Ok(Some((node.name.clone(), status)));
            }
        }
        Ok(None)
    }

    /// SIGTERM to every node, up to [`STOP_GRACE`] for them to exit, then SIGKILL.
    fn stop_nodes(&mut self) {
        for node in &mut self.nodes {
            if matches!(node.child.try_wait(), Ok(None)) {
                let pid = libc::pid_t::try_from(node.child.id()).expect("pids fit in pid_t");
                // SAFETY: kill has no memory-safety preconditions; the pid is our own unreaped
                // child, so it cannot have been reused by another process.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
        }
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline
            && self
                .nodes
                .iter_mut()
                .any(|node| matches!(node.child.try_wait(), Ok(None)))
        {
            thread::sleep(POLL_INTERVAL);
        }
        for node in &mut self.nodes {
            if matches!(node.child.try_wait(), Ok(None)) {
                println!(
                    "[run] {} did not stop within {STOP_GRACE:?}: killing it",
                    node.name
                );
                // Errors here mean it exited meanwhile; wait() below reaps it either way.
                let _ = node.child.kill();
            }
            let _ = node.child.wait();
        }
        self.nodes.clear();
    }

    /// Stops the nodes and deletes what was created; failures are reported, not raised, since
    /// this runs from `drop` and the rest must still be attempted.
    fn teardown(&mut self) {
        if !self.nodes.is_empty() {
            println!("[run] stopping {} nodes", self.nodes.len());
            self.stop_nodes();
        }
        for rule in self.loss_rules.drain(..) {
            if let Err(err) = rule.remove() {
                eprintln!("[run] cleanup: {err:#}");
            }
        }
        // Before the namespace goes: a delay line's socket lives in it and releases what it holds.
        for (i, line) in (1..).zip(self.delay_lines.drain(..)) {
            match line.stop() {
                // How faithful the delay was: a release after its due time adds to every RTT
                // the nodes measure (on a loaded machine the line's thread wakes late).
                Ok(stats) => println!(
                    "[run] delay line n{i}: {} packets, released after due: mean {:.3} ms, max {:.1} ms",
                    stats.packets,
                    stats.total_late.as_secs_f64() * 1e3 / stats.packets.max(1) as f64,
                    stats.max_late.as_secs_f64() * 1e3
                ),
                Err(err) => eprintln!("[run] cleanup: delay line n{i}: {err:#}"),
            }
        }
        // Deleting a namespace destroys its veths, and with them their peers (the host link).
        for namespace in self.namespaces.drain(..).rev() {
            if let Err(err) = netns::delete(&namespace) {
                eprintln!("[run] cleanup: {err:#}");
            }
        }
        if self.host_link
            && let Err(err) = netns::delete_link(HOST_LINK)
        {
            eprintln!("[run] cleanup: {err:#}");
        }
        self.host_link = false;
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// The round trip configured for the path between two nodes' links, milliseconds: each link
/// delays the packets towards its node by half its RTT.
fn path_rtt(a: &Link, b: &Link) -> f64 {
    (a.one_way_delay() + b.one_way_delay()).as_secs_f64() * 1e3
}

/// `iptables-legacy` in the router namespace (nftables' `queue` is not built into every kernel;
/// the xtables NFQUEUE target is, see PLATFORM.md).
fn iptables(args: &[&str]) -> anyhow::Result<()> {
    exec(
        Command::new("ip")
            .args(["netns", "exec", ROUTER_NS, "iptables-legacy"])
            .args(args),
    )
}

/// Whether the kernel has the netem qdisc: try it on the router's loopback and take it off.
fn has_netem() -> bool {
    let added = output(Command::new("tc").args([
        "-n", ROUTER_NS, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms",
    ]))
    .is_ok();
    if added {
        let _ =
            output(Command::new("tc").args(["-n", ROUTER_NS, "qdisc", "del", "dev", "lo", "root"]));
    }
    added
}

/// Echoes `stream` line by line as `[name] line` on a thread of its own, and sends every
/// multiaddr with a peer id it sees to `addresses`.
fn echo_lines(stream: impl Read + Send + 'static, name: String, addresses: mpsc::Sender<String>) {
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        // read_until, not lines(): a stray non-UTF-8 byte must not end the echo (and the drain).
        while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end();
            println!("[{name}] {text}");
            if let Some(address) = p2p_multiaddr(text) {
                // The receiver is gone once the address is known; later sends may fail.
                let _ = addresses.send(address);
            }
            line.clear();
        }
    });
}

/// The multiaddr ending in `/p2p/<peer id>` in a log line, e.g. from
/// `listening on /ip4/10.77.1.2/tcp/4001/p2p/12D3KooW...`. Tolerates the ANSI colour codes and
/// `key=value` framing of tracing output around it.
fn p2p_multiaddr(line: &str) -> Option<String> {
    let is_multiaddr_char = |c: char| c.is_ascii_alphanumeric() || "/.:-_".contains(c);
    let at = line.find("/p2p/")?;
    // Back to the start of the run of multiaddr characters, then forward to its first '/':
    // that drops a glued-on prefix such as the `0m` of an ANSI reset.
    let run_start = line[..at]
        .rfind(|c: char| !is_multiaddr_char(c))
        .map_or(0, |i| i + 1);
    let start = run_start + line[run_start..].find('/')?;
    let end = line[at..]
        .find(|c: char| !is_multiaddr_char(c))
        .map_or(line.len(), |i| at + i);
    let address = line[start..end].trim_end_matches(['.', ':']);
    // A bare `/p2p/` with no peer id is not an address to dial.
    (address.len() > at - start + "/p2p/".len()).then(|| address.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_p2p_multiaddr_in_log_lines() {
        let address = "/ip4/10.77.1.2/tcp/4001/p2p/12D3KooWAbc";
        for line in [
            format!("listening on {address}"),
            format!("listening on {address}."),
            format!("2026-11-25T12:00:00Z INFO p2p_node: listening address={address}"),
            format!("\x1b[2maddress\x1b[0m\x1b[2m=\x1b[0m{address}\x1b[0m"),
            format!("listening on \"{address}\""),
        ] {
            assert_eq!(p2p_multiaddr(&line).as_deref(), Some(address), "{line:?}");
        }
        assert_eq!(p2p_multiaddr("listening on /ip4/10.77.1.2/tcp/4001"), None);
        assert_eq!(p2p_multiaddr("no peer id in /p2p/ here"), None);
    }

    #[test]
    fn algorithms_cycle_over_nodes() {
        let options = Options {
            nodes: 5,
            duration: None,
            cc: vec!["a".into(), "b".into()],
            link: Vec::new(),
            traffic: Traffic::Heavy,
            overview: String::new(),
            prometheus: false,
        };
        assert_eq!(algorithms(&options), ["a", "b", "a", "b", "a"]);
    }
}
