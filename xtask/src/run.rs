//! `cargo xtask run`: a local testbed of N p2p-node processes, one per network namespace, all
//! connected through a router namespace that holds the bottleneck.
//!
//! ```text
//!            init namespace: p2pcc-host 10.77.250.1  (route 10.77.0.0/16 via the router)
//!                               |
//!            p2pcc-hr 10.77.250.2
//!   router namespace p2pcc-r (ip_forward=1)
//!            p2pcc-r1 10.77.1.1 [tbf]   p2pcc-r2 10.77.2.1 [tbf]   ...
//!                 |                          |
//!   p2pcc-n1: p2pcc-n1 10.77.1.2   p2pcc-n2: p2pcc-n2 10.77.2.2   ...   (default via .1)
//! ```
//!
//! The tbf qdiscs sit on the router's egress towards each node, not on the senders' own veths:
//! there TCP Small Queues would keep the queue short for every algorithm (see PLATFORM.md), and
//! the algorithms would look alike. The host link lets a browser or curl on the host reach each
//! node's HTTP endpoint.
//!
//! Everything created is removed when the run ends, whichever way it ends (the [`Testbed`] guard).

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
    exec::{describe, exec, is_root},
    netns, setup,
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
/// The bottleneck: 100 Mbit/s with a 2 MB buffer, the setting PLATFORM.md's measurements used
/// (a full buffer then holds ~160 ms, enough for loss-based algorithms to show bufferbloat).
/// The burst (4 KB) stays small so that the rate, not bursts, shapes the traffic.
const TBF: &[&str] = &[
    "tbf", "rate", "100mbit", "burst", "32kbit", "limit", "2000000",
];
/// How long node 1 may take to print its listen address (a first start loads eBPF programs).
const NODE_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the nodes get to exit after SIGTERM before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How often waiting loops look at the stop flag and the nodes.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

#[derive(clap::Args)]
pub struct Options {
    /// Number of nodes (1 to 249: node i gets the address 10.77.i.2).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..HOST_SUBNET as i64))]
    nodes: u8,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long, value_name = "SECS")]
    duration: Option<u64>,
    /// Congestion control per node, comma-separated; repeated in turn when shorter than --nodes.
    #[arg(long, value_delimiter = ',', default_value = "bbr-p2p,cubic,bbr")]
    cc: Vec<String>,
    /// Do not generate traffic (by default every other node uploads to node 1 periodically,
    /// with the libp2p perf protocol, so the graphs show connections under load).
    #[arg(long)]
    no_traffic: bool,
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
    testbed.build_network(options.nodes)?;

    let algorithms = algorithms(options);
    let spawn = |testbed: &mut Testbed, i: u8, peer: Option<&str>| {
        testbed.start_node(&NodeCommand {
            binary: &binary,
            i,
            algorithm: algorithms[usize::from(i - 1)],
            peer,
        })
    };

    // Node 1 is the others' bootstrap peer: its address (with its peer id) is known only once it
    // prints it.
    let ready = spawn(&mut testbed, 1, None)?;
    let Some(bootstrap) = testbed.wait_for_address(&ready)? else {
        println!("[run] interrupted while node 1 was starting");
        return Ok(());
    };
    println!("[run] node 1 listens on {bootstrap}");
    for i in 2..=options.nodes {
        spawn(&mut testbed, i, Some(&bootstrap))?;
    }

    print_table(&algorithms);
    let traffic = (!options.no_traffic && options.nodes > 1).then(|| {
        let target = bootstrap.rsplit('/').next().unwrap_or_default().to_owned();
        spawn_traffic(options.nodes, target)
    });
    let result = testbed.wait_until_stopped(options.duration.map(Duration::from_secs));
    TRAFFIC_STOP.store(true, Ordering::SeqCst);
    if let Some(traffic) = traffic {
        let _ = traffic.join();
    }
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

/// Bytes each other node uploads to node 1 per traffic round (≈ 2 s at 100 Mbit/s).
const TRAFFIC_BYTES: u64 = 25_000_000;
/// Time between the starts of traffic rounds.
const TRAFFIC_PERIOD: Duration = Duration::from_secs(15);
/// Tells the traffic thread to stop (the testbed is going down).
static TRAFFIC_STOP: AtomicBool = AtomicBool::new(false);

/// Every [`TRAFFIC_PERIOD`] until the run stops, asks nodes 2..=n in turn to upload
/// [`TRAFFIC_BYTES`] to node 1 through their HTTP API (`POST /api/perf`). Bounded: one request
/// at a time, each with a read timeout.
fn spawn_traffic(nodes: u8, target_peer: String) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let body = format!(r#"{{"peer":"{target_peer}","upload_bytes":{TRAFFIC_BYTES}}}"#);
        let running = || !TRAFFIC_STOP.load(Ordering::SeqCst) && !stop_requested();
        // The first round waits a little: the other nodes are still connecting.
        let mut next = Instant::now() + TRAFFIC_PERIOD / 3;
        let mut round: u64 = 0;
        while running() {
            if Instant::now() < next {
                thread::sleep(POLL_INTERVAL);
                continue;
            }
            next = Instant::now() + TRAFFIC_PERIOD;
            let i = 2 + (round % u64::from(nodes - 1)) as u8;
            if let Err(err) = perf_request(i, &body) {
                println!("[run] traffic n{i} -> n1: {err}");
            }
            round += 1;
        }
    })
}

/// One `POST /api/perf` to node `i` (from the host, over the host–router link).
fn perf_request(i: u8, body: &str) -> anyhow::Result<()> {
    use std::io::{Read as _, Write as _};
    let address = format!("{}:{HTTP_PORT}", node_ip(i));
    let mut stream =
        std::net::TcpStream::connect_timeout(&address.parse()?, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        stream,
        "POST /api/perf HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        testbed_token(),
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.split_whitespace().nth(1).unwrap_or("?");
    if status != "200" {
        bail!(
            "HTTP {status}: {}",
            response.split("\r\n\r\n").nth(1).unwrap_or("").trim()
        );
    }
    Ok(())
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
    /// The bootstrap peer's multiaddr; `None` for node 1.
    peer: Option<&'a str>,
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
}

impl Testbed {
    fn build_network(&mut self, nodes: u8) -> anyhow::Result<()> {
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
        for i in 1..=nodes {
            self.add_node_link(i)?;
        }
        self.add_host_link()
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
        exec(
            Command::new("tc")
                .args(["-n", ROUTER_NS, "qdisc", "add", "dev", &router_veth, "root"])
                .args(TBF),
        )
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
            .args(["--http", &format!("{ip}:{HTTP_PORT}")]);
        if let Some(peer) = node.peer {
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
                bail!("node 1 printed no /p2p/ address within {NODE_READY_TIMEOUT:?}");
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
        // Deleting a namespace destroys its veths, and with them their peers (the host link).
        for namespace in self.namespaces.drain(..).rev() {
            if let Err(err) = exec(Command::new("ip").args(["netns", "del", &namespace])) {
                eprintln!("[run] cleanup: {err:#}");
            }
        }
        if self.host_link
            && netns::link_exists(HOST_LINK)
            && let Err(err) = exec(Command::new("ip").args(["link", "del", HOST_LINK]))
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
            no_traffic: false,
        };
        assert_eq!(algorithms(&options), ["a", "b", "a", "b", "a"]);
    }
}
