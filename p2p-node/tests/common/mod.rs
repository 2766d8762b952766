//! Real-kernel test harness: network namespaces joined by veth, nodes started inside them, HTTP
//! requests made from inside a namespace, and `getsockopt` on a node's socket via `pidfd_getfd`.
//!
//! Everything created is removed by `Drop`, also when a test fails. In CI (`CI` set) a missing
//! capability fails the test; elsewhere it skips with the reason.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

/// Returns `false` (after printing why) when the machine cannot run kernel tests; panics in CI.
pub fn kernel_tests_possible() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let reason = if !root {
        Some("not running as root (namespaces and eBPF need CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_BPF)")
    } else if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        Some("the kernel has no BTF (/sys/kernel/btf/vmlinux)")
    } else {
        None
    };
    match reason {
        None => true,
        Some(why) if std::env::var_os("CI").is_some() => {
            panic!("kernel test cannot run in CI: {why}")
        }
        Some(why) => {
            eprintln!("SKIPPED: {why}");
            false
        }
    }
}

/// Runs a command, panicking with its output if it fails.
/// Deletes network namespace `ns` (quietly, if it exists), aborting its TCP sockets first
/// (`ss -K`): a connection closed while the test's path is torn down cannot deliver its FIN and
/// lingers as an orphan for minutes, keeping its congestion control (a bbr_p2p struct_ops map)
/// and the namespace alive after the test.
pub fn delete_netns(ns: &str) {
    let _ = Command::new("ip")
        .args(["netns", "exec", ns, "ss", "-K", "-t", "-a"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = Command::new("ip")
        .args(["netns", "del", ns])
        .stderr(Stdio::null())
        .status();
}

pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two namespaces joined by a veth pair: `<name>-a` 10.99.<n>.1, `<name>-b` 10.99.<n>.2.
pub struct NetnsPair {
    pub a: String,
    pub b: String,
    pub addr_a: String,
    pub addr_b: String,
}

impl NetnsPair {
    pub fn new(name: &str, subnet: u8) -> Self {
        let pair = Self {
            a: format!("p2pcc-{name}-a"),
            b: format!("p2pcc-{name}-b"),
            addr_a: format!("10.99.{subnet}.1"),
            addr_b: format!("10.99.{subnet}.2"),
        };
        pair.cleanup();
        sh(&["ip", "netns", "add", &pair.a]);
        sh(&["ip", "netns", "add", &pair.b]);
        sh(&[
            "ip", "link", "add", "p2pcc-va", "netns", &pair.a, "type", "veth", "peer", "p2pcc-vb",
            "netns", &pair.b,
        ]);
        for (ns, dev, addr) in [
            (&pair.a, "p2pcc-va", &pair.addr_a),
            (&pair.b, "p2pcc-vb", &pair.addr_b),
        ] {
            address_and_up(ns, dev, addr);
        }
        pair
    }

    fn cleanup(&self) {
        for ns in [&self.a, &self.b] {
            delete_netns(ns);
        }
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// A `p2p-node run` process inside a namespace; killed on drop.
pub struct Node {
    pub child: Child,
    pub ns: String,
    pub http_port: u16,
    /// The first `listening on …/p2p/<id>` multiaddr it printed.
    pub multiaddr: String,
    pub peer_id: String,
    pub stderr: std::sync::Arc<std::sync::Mutex<String>>,
    /// The node's `--data-dir` (removed on drop when the harness made it).
    pub data_dir: std::path::PathBuf,
    own_data_dir: bool,
    /// The token it created in its data dir (what `http` sends).
    pub token: String,
}

/// A fresh data dir for a test node.
pub fn test_data_dir(name: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "p2pcc-test-{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

impl Node {
    pub fn start(ns: &str, listen_ip: &str, extra: &[&str]) -> Self {
        Self::start_with_http(ns, listen_ip, "127.0.0.1:9464", extra)
    }

    /// As [`Node::start`], with the HTTP API on `http` (its port must be 9464).
    pub fn start_with_http(ns: &str, listen_ip: &str, http: &str, extra: &[&str]) -> Self {
        Self::start_wrapped(&[], ns, listen_ip, http, extra)
    }

    /// As [`Node::start_with_http`], run through `wrapper` inside the namespace (a program and
    /// its arguments, e.g. a shell that joins a cgroup and then execs its arguments; the pid
    /// stays the node's).
    pub fn start_wrapped(
        wrapper: &[&str],
        ns: &str,
        listen_ip: &str,
        http: &str,
        extra: &[&str],
    ) -> Self {
        let http_port = 9464;
        let own_data_dir = !extra.contains(&"--data-dir");
        let data_dir = match extra.iter().position(|a| *a == "--data-dir") {
            Some(i) => std::path::PathBuf::from(extra[i + 1]),
            None => test_data_dir(ns),
        };
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", ns])
            .args(wrapper)
            .args([env!("CARGO_BIN_EXE_p2p-node"), "run"])
            .args(["--listen", &format!("/ip4/{listen_ip}/tcp/4001")])
            .args(["--http", http, "--require-ebpf"])
            .args(extra);
        if own_data_dir {
            command.arg("--data-dir").arg(&data_dir);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting p2p-node");
        let stderr_buf = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut stderr = child.stderr.take().expect("piped");
        let sink = stderr_buf.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                eprint!("[node] {}", String::from_utf8_lossy(&buf[..n]));
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.to_owned());
                }
            }
        });
        let multiaddr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "node in {ns} did not start listening; stderr:\n{}",
                    stderr_buf.lock().unwrap()
                );
            }
        };
        let peer_id = multiaddr.rsplit('/').next().unwrap().to_owned();
        let token = match std::env::var("P2PCC_HTTP_TOKEN") {
            Ok(token) => token,
            Err(_) => p2p_node::http::auth::read_token_file(&data_dir.join("http-token"))
                .unwrap_or_else(|e| panic!("the node in {ns} made no token file: {e:#}")),
        };
        let node = Self {
            child,
            ns: ns.to_owned(),
            http_port,
            multiaddr,
            peer_id,
            stderr: stderr_buf,
            data_dir,
            own_data_dir,
            token,
        };
        node.wait_http();
        node
    }

    fn wait_http(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.try_http("GET", "/api/node", "").is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("node in {} has no HTTP API", self.ns);
    }

    /// An HTTP request to the node's API, made from inside its namespace.
    pub fn http(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        self.try_http(method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub fn get(&self, path: &str) -> String {
        let (status, body) = self.http("GET", path, "");
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// A request with the node's token.
    fn try_http(&self, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
        self.try_http_auth(method, path, body, Some(&self.token))
    }

    /// An HTTP request with `Authorization: Bearer <token>` when given.
    pub fn http_auth(
        &self,
        method: &str,
        path: &str,
        body: &str,
        token: Option<&str>,
    ) -> (u16, String) {
        self.try_http_auth(method, path, body, token)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    fn try_http_auth(
        &self,
        method: &str,
        path: &str,
        body: &str,
        token: Option<&str>,
    ) -> std::io::Result<(u16, String)> {
        http_in_ns(
            &self.ns,
            self.http_port,
            method,
            path,
            body,
            token,
            Duration::from_secs(60),
        )
    }

    /// Duplicates the node's socket with this cookie into the test process.
    pub fn socket_by_cookie(&self, cookie: u64) -> Option<OwnedFd> {
        let pid = self.pid();
        // SAFETY: plain syscall; the returned fd is owned below.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
        assert!(
            pidfd >= 0,
            "pidfd_open({pid}): {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: pidfd is a fresh fd we own.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
        for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
            let Ok(target) = std::fs::read_link(entry.path()) else {
                continue;
            };
            if !target.to_string_lossy().starts_with("socket:") {
                continue;
            }
            let Ok(num) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            // SAFETY: plain syscall; a non-negative result is a new fd we own.
            let fd =
                unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), num, 0) } as i32;
            if fd < 0 {
                continue;
            }
            // SAFETY: fresh fd from pidfd_getfd.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            use std::os::fd::AsFd as _;
            if p2p_node::sockets::cookie(fd.as_fd()).ok() == Some(cookie) {
                return Some(fd);
            }
        }
        None
    }

    /// The p2p-node process (child of `ip netns exec`, which execs it: same pid).
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
        if self.own_data_dir {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

impl Node {
    /// SIGTERM, then SIGKILL after 5 s (the node bounds its own shutdown below that:
    /// `http::limits::SHUTDOWN_GRACE`).
    fn stop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Moves the calling thread into a named network namespace.
pub fn enter_netns(ns: &str) -> std::io::Result<()> {
    let file = std::fs::File::open(format!("/run/netns/{ns}"))?;
    // SAFETY: valid fd of a network namespace file; affects only this thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Value of the series `name{...label="value"...}` in Prometheus text, if present.
pub fn metric(text: &str, name: &str, label: (&str, &str)) -> Option<f64> {
    let needle = format!("{}=\"{}\"", label.0, label.1);
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{') && l.contains(&needle))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Value of the series `name` in Prometheus text, if present: an unlabelled name, or a name with
/// its labels spelled exactly as exported (`p2pcc_connections{algorithm="cubic"}`).
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Polls `f` until it returns `Some` or the timeout passes.
pub fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The async form of [`eventually`] for in-process nodes: polls `f` every 100 ms until it
/// returns `Some`, panicking after `limit` with `what` it waited for.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A TCP connection from namespace `a` to a sink in namespace `b`, both in this process.
pub struct TcpFlow {
    pub client: TcpStream,
    sink: Option<std::thread::JoinHandle<u64>>,
}

impl TcpFlow {
    /// Connects from `net.a` to a sink on `net.addr_b:port`, the client using `cc`.
    pub fn open(net: &NetnsPair, port: u16, cc: &str) -> Self {
        Self::between(&net.a, &net.b, &net.addr_b, port, cc)
    }

    /// Connects from namespace `client_ns` to a sink in `server_ns` on `server_addr:port`.
    pub fn between(
        client_ns: &str,
        server_ns: &str,
        server_addr: &str,
        port: u16,
        cc: &str,
    ) -> Self {
        let (ready_tx, ready_rx) = mpsc::channel();
        let ns_b = server_ns.to_owned();
        let addr_b = server_addr.to_owned();
        let sink = std::thread::spawn(move || {
            enter_netns(&ns_b).expect("entering namespace b");
            let listener = std::net::TcpListener::bind((addr_b.as_str(), port)).expect("bind sink");
            ready_tx.send(()).unwrap();
            let (mut conn, _) = listener.accept().expect("accept");
            let mut buf = vec![0u8; 1 << 16];
            let mut total = 0u64;
            while let Ok(n) = conn.read(&mut buf) {
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            total
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("sink ready");
        let ns_a = client_ns.to_owned();
        let target = format!("{server_addr}:{port}");
        let cc = cc.to_owned();
        let client = std::thread::spawn(move || {
            enter_netns(&ns_a).expect("entering namespace a");
            let socket =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            use std::os::fd::AsFd as _;
            p2p_node::sockets::set_congestion(socket.as_fd(), &cc)
                .expect("setting the congestion control");
            socket
                .connect(&target.parse::<std::net::SocketAddr>().unwrap().into())
                .expect("connect");
            TcpStream::from(socket)
        })
        .join()
        .expect("client thread");
        Self {
            client,
            sink: Some(sink),
        }
    }

    /// Sends `bytes` (bounded by a 60 s write timeout).
    pub fn send(&mut self, bytes: usize) {
        self.client
            .set_write_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let chunk = vec![0u8; 1 << 16];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len());
            self.client.write_all(&chunk[..n]).expect("sending");
            left -= n;
        }
    }

    /// Closes the client and returns what the sink received.
    pub fn finish(mut self) -> u64 {
        let _ = self.client.shutdown(std::net::Shutdown::Write);
        self.sink.take().unwrap().join().expect("sink thread")
    }
}

/// Algorithms the kernel currently offers.
pub fn available_cc() -> Vec<String> {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_congestion_control")
        .unwrap()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// sender ⇄ router ⇄ receiver, with the bottleneck (tbf) on the router's egress towards the
/// receiver, where queues build as on a real link (see PLATFORM.md).
pub struct Routed {
    pub sender: String,
    pub router: String,
    pub receiver: String,
    pub sender_addr: String,
    pub receiver_addr: String,
}

/// Gives `dev` in namespace `ns` the address `addr`/24 and brings it and the namespace's
/// loopback up.
pub fn address_and_up(ns: &str, dev: &str, addr: &str) {
    sh(&[
        "ip",
        "-n",
        ns,
        "addr",
        "add",
        &format!("{addr}/24"),
        "dev",
        dev,
    ]);
    sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
    sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
}

impl Routed {
    /// `rate` and `limit` as tc's tbf takes them, e.g. "100mbit" and "2000000" (bytes).
    pub fn new(name: &str, n: u8, rate: &str, limit: &str) -> Self {
        let t = Self {
            sender: format!("p2pcc-{name}-s"),
            router: format!("p2pcc-{name}-r"),
            receiver: format!("p2pcc-{name}-d"),
            sender_addr: format!("10.{n}.1.2"),
            receiver_addr: format!("10.{n}.2.2"),
        };
        t.cleanup();
        for ns in [&t.sender, &t.router, &t.receiver] {
            sh(&["ip", "netns", "add", ns]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        sh(&[
            "ip", "link", "add", "p2pcc-s0", "netns", &t.sender, "type", "veth", "peer",
            "p2pcc-r1", "netns", &t.router,
        ]);
        sh(&[
            "ip",
            "link",
            "add",
            "p2pcc-r2",
            "netns",
            &t.router,
            "type",
            "veth",
            "peer",
            "p2pcc-d0",
            "netns",
            &t.receiver,
        ]);
        for (ns, dev, addr) in [
            (&t.sender, "p2pcc-s0", format!("10.{n}.1.2/24")),
            (&t.router, "p2pcc-r1", format!("10.{n}.1.1/24")),
            (&t.router, "p2pcc-r2", format!("10.{n}.2.1/24")),
            (&t.receiver, "p2pcc-d0", format!("10.{n}.2.2/24")),
        ] {
            sh(&["ip", "-n", ns, "addr", "add", &addr, "dev", dev]);
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        sh(&[
            "ip",
            "-n",
            &t.sender,
            "route",
            "add",
            "default",
            "via",
            &format!("10.{n}.1.1"),
        ]);
        sh(&[
            "ip",
            "-n",
            &t.receiver,
            "route",
            "add",
            "default",
            "via",
            &format!("10.{n}.2.1"),
        ]);
        sh(&[
            "ip",
            "netns",
            "exec",
            &t.router,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
        sh(&[
            "tc", "-n", &t.router, "qdisc", "add", "dev", "p2pcc-r2", "root", "tbf", "rate", rate,
            "burst", "32kbit", "limit", limit,
        ]);
        t
    }

    fn cleanup(&self) {
        for ns in [&self.sender, &self.router, &self.receiver] {
            delete_netns(ns);
        }
    }

    /// Drops each of the sender's packets (the data direction) with `probability` at the
    /// router, ahead of anything else in its FORWARD chain (a delay line's NFQUEUE rule). The
    /// tests' one spelling of the rule, the same text as xtask's `netns::RandomLoss`; it goes
    /// with the router namespace when `self` is dropped.
    pub fn random_loss(&self, probability: f64) {
        sh(&[
            "ip",
            "netns",
            "exec",
            &self.router,
            "iptables-legacy",
            "-I",
            "FORWARD",
            "1",
            "-i",
            "p2pcc-r1",
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            &probability.to_string(),
            "-j",
            "DROP",
        ]);
    }

    /// A flow from the sender to a sink on the receiver.
    pub fn flow(&self, port: u16, cc: &str) -> TcpFlow {
        TcpFlow::between(&self.sender, &self.receiver, &self.receiver_addr, port, cc)
    }
}

impl Drop for Routed {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// The xtask binary `cargo xtask test` built (it runs these tests): its `delay-line` subcommand.
fn xtask_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let xtask = dir.join("xtask");
    assert!(
        xtask.exists(),
        "{} is missing: run the kernel tests through `cargo xtask test` (it builds the delay line)",
        xtask.display()
    );
    xtask
}

/// The delay line serving the router's NFQUEUE; stopped (all packets released, its rule
/// deleted) on drop. `xtask delay-line --forward-rule` adds the FORWARD rule itself: the rule is
/// spelled once, in xtask/src/delay_line.rs (this crate cannot depend on xtask, a binary).
pub struct DelayLine {
    child: Child,
    /// Kept open so that the line's last words do not hit a closed pipe.
    _stdout: BufReader<std::process::ChildStdout>,
}

impl DelayLine {
    pub fn start(router: &str, delay_ms: u64) -> Self {
        let mut child = Command::new(xtask_binary())
            .args([
                "delay-line",
                "--ns",
                router,
                "--delay-ms",
                &delay_ms.to_string(),
                "--forward-rule",
            ])
            .args(["--duration", "600"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the delay line");
        // It prints "holding" once the queue is bound and the rule is in (after the echo of
        // the iptables command); end of output first means it exited.
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        while !line.starts_with("[delay-line] holding") {
            line.clear();
            if stdout.read_line(&mut line).expect("reading the delay line") == 0 {
                let _ = child.kill();
                panic!(
                    "the delay line exited before holding packets: {:?}",
                    child.wait()
                );
            }
        }
        Self {
            child,
            _stdout: stdout,
        }
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        // SAFETY: signalling our own child: SIGINT makes it release what it holds and exit.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
    }
}

/// Every TCP socket of `node` listed in its `/api/peers`, duplicated into this process:
/// `(cookie, fd)`.
pub fn node_sockets(node: &Node) -> Vec<(u64, std::os::fd::OwnedFd)> {
    let peers: Vec<serde_json::Value> = serde_json::from_str(&node.get("/api/peers")).unwrap();
    peers
        .iter()
        .filter_map(|p| {
            let cookie = p["cookie"].as_u64()?;
            Some((cookie, node.socket_by_cookie(cookie)?))
        })
        .collect()
}

/// A POST with `token` to the node API on 127.0.0.1:9464 inside `ns` (for use from another
/// thread).
pub fn post_in_ns(ns: &str, path: &str, body: &str, token: &str) -> (u16, String) {
    http_in_ns(
        ns,
        9464,
        "POST",
        path,
        body,
        Some(token),
        Duration::from_secs(120),
    )
    .expect("HTTP request")
}

/// An HTTP request to 127.0.0.1:`port` made from inside namespace `ns` (on its own thread,
/// which enters the namespace).
pub fn http_in_ns(
    ns: &str,
    port: u16,
    method: &str,
    path: &str,
    body: &str,
    token: Option<&str>,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    let request = p2p_node::http::request_text(method, "127.0.0.1", path, token, body);
    raw_http_in_ns(ns, port, &request, timeout)
}

/// Sends `request` verbatim to 127.0.0.1:`port` inside `ns`; the status and body of the answer.
pub fn raw_http_in_ns(
    ns: &str,
    port: u16,
    request: &str,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    let ns = ns.to_owned();
    let request = request.to_owned();
    std::thread::spawn(move || -> std::io::Result<(u16, String)> {
        enter_netns(&ns)?;
        let mut stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(timeout))?;
        stream.write_all(request.as_bytes())?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        let response = String::from_utf8_lossy(&response);
        p2p_node::http::parse_response(response.as_bytes())
            .ok_or_else(|| std::io::Error::other(format!("malformed HTTP response: {response}")))
    })
    .join()
    .expect("http thread panicked")
}

/// The capabilities the node needs to load its probes and register and use bbr-p2p (README,
/// "Least privilege"; deploy/p2p-node.service), as `setpriv` names them.
pub const NODE_CAPS: [&str; 3] = ["bpf", "perfmon", "net_admin"];

/// A `setpriv` command line (program and arguments, to put before the command it runs) that
/// runs it as uid/gid 65534 (`nobody`, no supplementary groups) with exactly `caps` (setpriv's
/// names, e.g. `net_admin`): inheritable and ambient, so they survive the exec of a binary
/// without file capabilities; none at all when `caps` is empty.
pub fn as_nobody(caps: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ]
    .map(str::to_owned)
    .into();
    let plus: String = caps.iter().map(|c| format!(",+{c}")).collect();
    args.push(format!("--inh-caps=-all{plus}"));
    if !caps.is_empty() {
        args.push(format!("--ambient-caps={}", &plus[1..]));
    }
    args
}
