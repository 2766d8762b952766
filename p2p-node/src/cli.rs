//! Command line (clap).

use std::{net::SocketAddr, path::PathBuf};

use clap::{Parser, Subcommand};
use libp2p::Multiaddr;

/// Default address of the HTTP API, metrics and live page.
pub const DEFAULT_HTTP: &str = "127.0.0.1:9464";

/// Name of the token file in the data dir.
pub const TOKEN_FILE_NAME: &str = "http-token";

/// Where a node keeps its state when `--data-dir` is not given: systemd's `StateDirectory`,
/// `/var/lib/p2p-node` for root, else the user's XDG state directory.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY") {
        // systemd lists several directories separated by ':' when several are configured.
        if let Some(first) = dir
            .to_string_lossy()
            .split(':')
            .next()
            .filter(|d| !d.is_empty())
        {
            return PathBuf::from(first);
        }
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/p2p-node");
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    state.join("p2p-node")
}

/// The token file a client reads when not told otherwise.
pub fn default_token_file() -> PathBuf {
    default_data_dir().join(TOKEN_FILE_NAME)
}

#[derive(Debug, Parser)]
#[command(
    name = "p2p-node",
    version,
    about = "A libp2p node with eBPF congestion control and per-peer TCP telemetry"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the node.
    Run(Box<RunArgs>),
    /// Show or change the congestion control of a running node.
    Cc {
        #[command(subcommand)]
        action: CcAction,
        /// The running node's HTTP API.
        #[arg(long, default_value = concat!("http://", "127.0.0.1:9464"), global = true)]
        node: String,
        /// The node's token file, for changes (default: the default data dir's; env
        /// P2PCC_HTTP_TOKEN takes precedence). Never a token on the command line.
        #[arg(long, global = true)]
        token_file: Option<PathBuf>,
    },
    /// Print the running node's peers and their TCP state, like `ss -ti`.
    Peers {
        /// The running node's HTTP API.
        #[arg(long, default_value = concat!("http://", "127.0.0.1:9464"))]
        node: String,
    },
    /// List the path measurements the node keeps per peer (careful resume), or forget one.
    Known {
        /// Forget this peer's record (a PeerId); needs the token.
        #[arg(long)]
        forget: Option<String>,
        /// The running node's HTTP API.
        #[arg(long, default_value = concat!("http://", "127.0.0.1:9464"))]
        node: String,
        /// The node's token file (default: the default data dir's; env P2PCC_HTTP_TOKEN takes
        /// precedence).
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Run a libp2p perf transfer from a running node to one of its peers.
    Perf {
        /// PeerId of the remote (must be connected).
        peer: String,
        /// Bytes to upload.
        #[arg(long, default_value_t = 0)]
        upload: u64,
        /// Bytes to download.
        #[arg(long, default_value_t = 0)]
        download: u64,
        /// The running node's HTTP API.
        #[arg(long, default_value = concat!("http://", "127.0.0.1:9464"))]
        node: String,
        /// The node's token file (default: the default data dir's; env P2PCC_HTTP_TOKEN takes
        /// precedence).
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Share a file from a running node: it serves the file's chunks and announces itself as a
    /// provider in the DHT and on gossip. Prints the file id.
    Share {
        /// The file: on the node's host, under one of its --share-dir directories.
        path: PathBuf,
        /// The running node's HTTP API.
        #[arg(long, default_value = concat!("http://", "127.0.0.1:9464"))]
        node: String,
        /// The node's token file (default: the default data dir's; env P2PCC_HTTP_TOKEN takes
        /// precedence).
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Fetch a file by id through a running node, from all its providers in parallel; every
    /// chunk is verified. The output appears only once the whole file is verified.
    Fetch {
        /// The file id (64 hex digits, as `share` printed it).
        id: String,
        /// File name in the node's download directory (--download-dir); must not exist.
        #[arg(long)]
        out: String,
        /// The running node's HTTP API.
        #[arg(long, default_value = concat!("http://", "127.0.0.1:9464"))]
        node: String,
        /// The node's token file (default: the default data dir's; env P2PCC_HTTP_TOKEN takes
        /// precedence).
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CcAction {
    /// The node's algorithm and the ones available.
    List,
    /// Switch the node, its new and established connections, to an algorithm.
    Set {
        /// bbr-p2p, bbr, cubic, reno, or any name in tcp_available_congestion_control.
        algorithm: String,
    },
    /// Show bbr-p2p's tunables, or change some (`--set name=value`, repeatable).
    Tunables {
        /// A tunable to change (repeatable); all are validated together, and it needs the token.
        #[arg(long = "set", value_name = "NAME=VALUE")]
        set: Vec<String>,
    },
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Address to listen on (repeatable), e.g. /ip4/0.0.0.0/tcp/4001.
    #[arg(long, required = true)]
    pub listen: Vec<Multiaddr>,
    /// Peer to connect to (repeatable): a multiaddr; one ending in /p2p/<PeerId> is redialled
    /// with backoff whenever it is lost, one without a PeerId is dialled once.
    #[arg(long)]
    pub peer: Vec<Multiaddr>,
    /// Congestion control for every TCP connection of the node (default: bbr-p2p when the
    /// kernel can run it, else the kernel's default, with a warning).
    #[arg(long)]
    pub cc: Option<String>,
    /// HTTP API, /metrics and live page.
    #[arg(long, default_value = DEFAULT_HTTP)]
    pub http: SocketAddr,
    /// Identity key file; created (mode 0600) if absent. Without it the identity is ephemeral.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Observe every TCP socket on the host, not only the node's own.
    #[arg(long)]
    pub observe_all: bool,
    /// Benchmark only (`cargo xtask bench probes`): also attach an empty program to tcp_probe
    /// and the diagnostic pieces of the probes' path (one load, one helper call, one lookup),
    /// the floor the probes' cost is measured against.
    #[arg(long, hide = true)]
    pub bench_probe_floor: bool,
    /// The node's state: the HTTP token file, downloads. Default: $STATE_DIRECTORY (systemd),
    /// /var/lib/p2p-node for root, else $XDG_STATE_HOME/p2p-node or ~/.local/state/p2p-node.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// File holding the token changes through the HTTP API need (`Authorization: Bearer
    /// <token>`); created with a random token, mode 0600, if absent. Default:
    /// <data-dir>/http-token. The environment variable P2PCC_HTTP_TOKEN overrides it.
    #[arg(long)]
    pub http_token_file: Option<PathBuf>,
    /// A `Host` name requests may use besides localhost and the node's addresses (repeatable);
    /// others get 403 (DNS rebinding).
    #[arg(long)]
    pub http_host: Vec<String>,
    /// A directory whose files `share` may publish (repeatable). None (the default): sharing by
    /// path is disabled.
    #[arg(long)]
    pub share_dir: Vec<PathBuf>,
    /// Where `fetch` writes files (by name only). Default: <data-dir>/downloads.
    #[arg(long)]
    pub download_dir: Option<PathBuf>,
    /// Exit if the eBPF programs cannot be loaded, instead of running without telemetry.
    #[arg(long)]
    pub require_ebpf: bool,
    /// Close connections without open streams after this many seconds.
    #[arg(long, default_value_t = 30)]
    pub idle_timeout_secs: u64,
    /// Ping every connection this often, seconds.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub ping_interval_secs: u64,
    /// A ping unanswered this long fails; a connection that has answered pings and then goes a
    /// ping interval plus this long without an answer is closed (and a lost --peer redialled
    /// with backoff), seconds.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub ping_timeout_secs: u64,
    /// Established inbound connections (the memory budget may lower it; see /api/node).
    #[arg(long, default_value_t = 1024)]
    pub max_inbound: u32,
    /// Established outbound connections (the memory budget may lower it).
    #[arg(long, default_value_t = 512)]
    pub max_outbound: u32,
    /// Connections still handshaking, per direction.
    #[arg(long, default_value_t = 128)]
    pub max_pending: u32,
    /// Peers with per-peer metric series: the busiest K by bytes (others are in the
    /// all-peer histograms and totals only).
    #[arg(long, default_value_t = crate::telemetry::DEFAULT_TOP_PEERS)]
    pub top_peers: usize,
    /// Turn on the kernel's per-program run time and count (BPF_ENABLE_STATS, as
    /// `kernel.bpf_stats_enabled=1`) while the node runs, for p2pcc_ebpf_program_run_*.
    /// The kernel turns it off again when the node exits.
    #[arg(long)]
    pub bpf_stats: bool,
    /// Peers whose path measurements (bbr-p2p) the node keeps for careful resume, least
    /// recently used forgotten first.
    #[arg(long, default_value_t = crate::known::DEFAULT_CAPACITY as u64,
          value_parser = clap::value_parser!(u64).range(1..=crate::known::MAX_CAPACITY as u64))]
    pub known_peers: u64,
    /// A path measurement older than this is not used to resume a connection, seconds.
    #[arg(long, default_value_t = crate::known::DEFAULT_MAX_AGE.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub known_peers_max_age_secs: u64,
    /// Keep path measurements in memory only (default: also in <data-dir>/known-peers.json,
    /// so they survive restarts).
    #[arg(long)]
    pub no_known_peers_file: bool,
    /// Start a known peer's connection with the TCP receive buffer its record asks for
    /// (bounded; README "Known peers"). Off by default: no measured gain (docs/bench.md).
    #[arg(long)]
    pub receive_warm: bool,
}

/// A change a subcommand asks of the running node: method, API path and JSON body, the body
/// built from the server's own request type, so that a renamed field fails to compile here
/// instead of reaching the node as a 400 or a silently defaulted field.
#[derive(Debug)]
pub struct ApiChange {
    pub method: &'static str,
    pub path: &'static str,
    pub body: String,
}

impl ApiChange {
    fn new(method: &'static str, path: &'static str, request: &impl serde::Serialize) -> Self {
        Self {
            method,
            path,
            body: serde_json::to_string(request).expect("a request type serializes"),
        }
    }

    /// `cc set`: `PUT /api/cc`.
    pub fn cc_set(algorithm: &str) -> Self {
        let request = crate::http::CcRequest {
            algorithm: algorithm.to_owned(),
        };
        Self::new("PUT", "/api/cc", &request)
    }

    /// `share`: `POST /api/files`, with the file's path as given (the CLI canonicalizes it).
    pub fn share(path: PathBuf) -> Self {
        Self::new("POST", "/api/files", &crate::http::ShareRequest { path })
    }

    /// `fetch`: `POST /api/files/fetch`.
    pub fn fetch(id: &str, out: &str) -> Self {
        let request = crate::http::FetchRequest {
            id: id.to_owned(),
            out: out.to_owned(),
        };
        Self::new("POST", "/api/files/fetch", &request)
    }

    /// `perf`: `POST /api/perf`.
    pub fn perf(peer: &str, upload_bytes: u64, download_bytes: u64) -> Self {
        let request = crate::http::PerfRequest {
            peer: peer.to_owned(),
            upload_bytes,
            download_bytes,
        };
        Self::new("POST", "/api/perf", &request)
    }
}
