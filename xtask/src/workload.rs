//! The testbed's workload (`cargo xtask run --traffic none|light|heavy`), driven through the
//! nodes' HTTP APIs from threads of xtask:
//!
//! - `light`: every node shares a file of [`FILE_BYTES`] at start (DHT provider record and a
//!   gossip announcement), then every [`FETCH_PERIOD`] one node in turn fetches another node's
//!   file (found through the DHT, verified chunk by chunk) and deletes its copy;
//! - `heavy` (the default): `light` plus bulk libp2p perf uploads in a ring, node i to node i+1,
//!   back to back, each [`BULK_SECONDS`] long at the receiver's link rate: long enough for a
//!   loss-based algorithm to fill the bottleneck's buffer and keep it full. In the ring every
//!   router egress queue (towards node i+1) carries exactly one bulk sender (node i), so the
//!   queue a node's uploads meet is the one its own algorithm builds; the ACKs of those uploads
//!   come back through node i's own egress queue, which node i-1's algorithm fills.
//!
//! Every request is bounded by a read timeout; the threads stop when asked ([`Workload::stop`],
//! or the guard's drop) within [`POLL`]: a request in flight is abandoned, its connection closed
//! (the node drops the request), and what fails after the stop is not reported.

use std::{
    fs,
    io::{self, Read as _, Write as _},
    net::TcpStream,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::link::Link;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Traffic {
    /// No generated traffic (only the nodes' own DHT, gossip, identify and ping).
    None,
    /// Files shared and fetched between the nodes.
    Light,
    /// Files plus continuous bulk uploads in a ring (n1→n2→…→n1).
    Heavy,
}

/// A node as the workload sees it.
#[derive(Clone, Debug)]
pub struct NodeApi {
    /// `n<i>`.
    pub name: String,
    /// `ip:port` of its HTTP API.
    pub http: String,
    pub peer_id: String,
    pub link: Link,
}

/// Size of the file each node shares.
const FILE_BYTES: usize = 8 << 20;
/// Time between the starts of two file fetches (one node fetches at a time).
const FETCH_PERIOD: Duration = Duration::from_secs(10);
/// Length of one bulk upload at the receiver's link rate.
const BULK_SECONDS: u64 = 20;
/// The nodes' perf transfers are limited to 1 GiB (p2p-node `perf::MAX_TRANSFER_BYTES`).
const MAX_BULK_BYTES: u64 = 1 << 30;
/// Where the shared files and fetched copies live for the run (removed at start and end).
pub const WORK_DIR: &str = "/tmp/p2pcc-run";
/// The directory the nodes share files from (`--share-dir`): the API shares nothing else.
pub const SHARE_DIR: &str = "/tmp/p2pcc-run/shared";
/// The directory the nodes fetch into (`--download-dir`): `fetch` takes a file name only.
pub const DOWNLOAD_DIR: &str = "/tmp/p2pcc-run/downloads";

/// A fresh [`WORK_DIR`] with the share and download directories, before the nodes start (a
/// node checks its directories when it starts).
pub fn prepare_dirs() -> anyhow::Result<()> {
    let _ = fs::remove_dir_all(WORK_DIR);
    for dir in [SHARE_DIR, DOWNLOAD_DIR] {
        fs::create_dir_all(dir).with_context(|| format!("creating {dir}"))?;
    }
    Ok(())
}

/// How long to wait before retrying a failed request.
const RETRY_PAUSE: Duration = Duration::from_secs(2);
/// Longest wait for a bulk upload's connection before the first upload.
const CONNECT_WAIT: Duration = Duration::from_secs(15);
/// Poll step of the waiting loops.
const POLL: Duration = Duration::from_millis(100);

/// The workload's threads; stopped and joined on drop.
pub struct Workload {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Workload {
    /// Stops the threads and waits for them: before the nodes stop, so that no request of the
    /// workload is cut off by a node's exit (the nodes' directories stay until the drop).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(WORK_DIR);
    }
}

/// Starts the workload; `stopped` is the run's own stop condition (a signal), checked along
/// with the guard's flag.
pub fn start(
    traffic: Traffic,
    nodes: &[NodeApi],
    token: &'static str,
    stopped: fn() -> bool,
) -> anyhow::Result<Workload> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut workload = Workload {
        stop: Arc::clone(&stop),
        threads: Vec::new(),
    };
    if traffic == Traffic::None || nodes.len() < 2 {
        return Ok(workload);
    }
    let running = {
        let stop = Arc::clone(&stop);
        move || !stop.load(Ordering::SeqCst) && !stopped()
    };

    let files_nodes = nodes.to_vec();
    let files_running = running.clone();
    workload.threads.push(thread::spawn(move || {
        share_and_fetch(&files_nodes, token, &files_running);
    }));

    if traffic == Traffic::Heavy {
        for (k, sender) in nodes.iter().enumerate() {
            let receiver = nodes[(k + 1) % nodes.len()].clone();
            let sender = sender.clone();
            let running = running.clone();
            workload.threads.push(thread::spawn(move || {
                bulk_uploads(&sender, &receiver, token, &running);
            }));
        }
    }
    Ok(workload)
}

/// Bytes of one bulk upload to `receiver`: [`BULK_SECONDS`] at its link's rate.
fn bulk_bytes(receiver: &Link) -> u64 {
    (receiver.rate_bits_per_second / 8 * BULK_SECONDS).min(MAX_BULK_BYTES)
}

/// Back-to-back perf uploads from `sender` to `receiver` until the run stops.
fn bulk_uploads(sender: &NodeApi, receiver: &NodeApi, token: &str, running: &impl Fn() -> bool) {
    let bytes = bulk_bytes(&receiver.link);
    let body = serde_json::json!({ "peer": receiver.peer_id, "upload_bytes": bytes }).to_string();
    // At a tenth of the link rate an upload would still finish within this.
    let timeout = Duration::from_secs(BULK_SECONDS * 10 + 30);
    println!(
        "[traffic] bulk {}→{}: {} MB uploads, back to back",
        sender.name,
        receiver.name,
        bytes / 1_000_000
    );
    wait_for_connection(sender, receiver, token, running);
    while running() {
        match request(
            "POST",
            &sender.http,
            "/api/perf",
            &body,
            token,
            timeout,
            running,
        ) {
            Err(err) if running() => {
                println!("[traffic] bulk {}→{}: {err:#}", sender.name, receiver.name);
                pause(RETRY_PAUSE, running);
            }
            // Stopped meanwhile: the request was abandoned, nothing to report.
            Err(_) | Ok(_) => {}
        }
    }
}

/// Each node shares a file; then, every [`FETCH_PERIOD`], one node in turn fetches the file of
/// the node two places on (the next one when there are two), and deletes its copy.
fn share_and_fetch(nodes: &[NodeApi], token: &str, running: &impl Fn() -> bool) {
    let mut ids = vec![None; nodes.len()];
    let mut round = 0usize;
    let mut next = Instant::now();
    while running() {
        // Sharing is retried each round until it worked (a node may still be joining the DHT).
        for (node, id) in nodes.iter().zip(ids.iter_mut()) {
            if id.is_none() {
                match share(node, token, running) {
                    Ok(file_id) => {
                        println!("[traffic] {} shares file {}", node.name, &file_id[..16]);
                        *id = Some(file_id);
                    }
                    Err(err) if running() => println!("[traffic] {} share: {err:#}", node.name),
                    Err(_) => {}
                }
            }
        }
        pause(next.saturating_duration_since(Instant::now()), running);
        next = Instant::now() + FETCH_PERIOD;
        let fetcher = round % nodes.len();
        let owner = (fetcher + 2.min(nodes.len() - 1)) % nodes.len();
        round += 1;
        let Some(id) = &ids[owner] else { continue };
        // A file name: the node writes it into its download directory.
        let name = format!("fetched-{}-{round}", nodes[fetcher].name);
        let out = PathBuf::from(DOWNLOAD_DIR).join(&name);
        let body = serde_json::json!({ "id": id, "out": name }).to_string();
        match request(
            "POST",
            &nodes[fetcher].http,
            "/api/files/fetch",
            &body,
            token,
            FETCH_PERIOD * 6,
            running,
        ) {
            Err(err) if running() => println!(
                "[traffic] {} fetch of {}'s file: {err:#}",
                nodes[fetcher].name, nodes[owner].name
            ),
            Err(_) | Ok(_) => {}
        }
        let _ = fs::remove_file(&out);
    }
}

/// Writes the node's file (pseudo-random bytes, distinct per node) and shares it; returns its id.
fn share(node: &NodeApi, token: &str, running: &impl Fn() -> bool) -> anyhow::Result<String> {
    let path = PathBuf::from(SHARE_DIR).join(format!("shared-{}.bin", node.name));
    if !path.exists() {
        let seed = node
            .peer_id
            .bytes()
            .fold(0x9e37_79b9_7f4a_7c15_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            });
        fs::write(&path, pseudo_random(seed, FILE_BYTES))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let body = serde_json::json!({ "path": path }).to_string();
    let response = request(
        "POST",
        &node.http,
        "/api/files",
        &body,
        token,
        Duration::from_secs(30),
        running,
    )?;
    let report: serde_json::Value =
        serde_json::from_str(&response).context("reading the share report")?;
    report["id"]
        .as_str()
        .map(str::to_owned)
        .context("the share report has no id")
}

/// `len` bytes of xorshift64* output: incompressible enough, and reproducible per seed.
fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend(state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Sleeps up to `duration`, returning early when the run stops.
fn pause(duration: Duration, running: &impl Fn() -> bool) {
    let until = Instant::now() + duration;
    while running() && Instant::now() < until {
        thread::sleep(POLL);
    }
}

/// One request with the run's token on its own connection; the response body on 200 (the
/// routes used reply with a length, not chunked). Abandoned (the connection closed, an error
/// returned) when the answer takes longer than `timeout` or the run stops.
fn request(
    method: &str,
    address: &str,
    path: &str,
    body: &str,
    token: &str,
    timeout: Duration,
    running: &impl Fn() -> bool,
) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect_timeout(&address.parse()?, Duration::from_secs(2))
        .with_context(|| format!("connecting to {address}"))?;
    // Short reads, so that a stop is seen while a long transfer is in flight.
    stream.set_read_timeout(Some(POLL))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let deadline = Instant::now() + timeout;
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&buf[..n]),
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                if !running() {
                    bail!("{method} {path} to {address}: abandoned, the run stops");
                }
                if Instant::now() >= deadline {
                    bail!("{method} {path} to {address}: no answer within {timeout:?}");
                }
            }
            Err(err) => {
                return Err(err).with_context(|| format!("{method} {path} to {address}"));
            }
        }
    }
    let response = String::from_utf8_lossy(&response);
    if response.is_empty() {
        bail!("{method} {path} to {address}: the connection closed without an answer");
    }
    let status = response.split_whitespace().nth(1).unwrap_or("?");
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .trim();
    if status != "200" {
        bail!("{method} {path}: HTTP {status}: {body}");
    }
    Ok(body.to_owned())
}

/// Waits (at most [`CONNECT_WAIT`]) until `sender` lists a connection to `receiver` in its
/// `/api/peers` (refreshed once a second): the run has each node dial its predecessor, so the
/// connection is normally up, and an upload started before would dial by PeerId alone.
fn wait_for_connection(
    sender: &NodeApi,
    receiver: &NodeApi,
    token: &str,
    running: &impl Fn() -> bool,
) {
    let deadline = Instant::now() + CONNECT_WAIT;
    while running() && Instant::now() < deadline {
        let listed = request(
            "GET",
            &sender.http,
            "/api/peers",
            "",
            token,
            Duration::from_secs(5),
            running,
        )
        .ok()
        .and_then(|body| serde_json::from_str::<Vec<serde_json::Value>>(&body).ok())
        .is_some_and(|peers| {
            peers
                .iter()
                .any(|p| p["peer_id"] == receiver.peer_id.as_str())
        });
        if listed {
            return;
        }
        pause(Duration::from_millis(500), running);
    }
    println!(
        "[traffic] bulk {}→{}: not connected after {CONNECT_WAIT:?}; uploading anyway",
        sender.name, receiver.name
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_uploads_last_their_seconds_at_the_link_rate() {
        let wan = Link::preset("wan").unwrap();
        assert_eq!(bulk_bytes(&wan), 250_000_000);
        let lan = Link::preset("lan").unwrap();
        assert_eq!(bulk_bytes(&lan), MAX_BULK_BYTES);
    }

    #[test]
    fn pseudo_random_bytes_differ_per_seed_and_have_the_length() {
        let a = pseudo_random(1, 1000);
        assert_eq!(a.len(), 1000);
        assert_ne!(a, pseudo_random(2, 1000));
        assert_eq!(a, pseudo_random(1, 1000));
    }
}
