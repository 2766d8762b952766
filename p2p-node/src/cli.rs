//! Command line (clap).

use std::{net::SocketAddr, path::PathBuf};

use clap::{Parser, Subcommand};
use libp2p::Multiaddr;

/// Default address of the HTTP API, metrics and live page.
pub const DEFAULT_HTTP: &str = "127.0.0.1:9464";

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
    Run(RunArgs),
    /// Show or change the congestion control of a running node.
    Cc {
        #[command(subcommand)]
        action: CcAction,
        /// The running node's HTTP API.
        #[arg(long, default_value = concat!("http://", "127.0.0.1:9464"), global = true)]
        node: String,
        /// Token for changes, when the node requires one (or env P2PCC_HTTP_TOKEN).
        #[arg(long, env = "P2PCC_HTTP_TOKEN", global = true, hide_env_values = true)]
        token: Option<String>,
    },
    /// Print the running node's peers and their TCP state, like `ss -ti`.
    Peers {
        /// The running node's HTTP API.
        #[arg(long, default_value = concat!("http://", "127.0.0.1:9464"))]
        node: String,
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
    },
    /// Share a file from a running node: it serves the file's chunks and announces itself as a
    /// provider in the DHT and on gossip. Prints the file id.
    Share {
        /// The file (read by the node, so it must be on the node's host).
        path: PathBuf,
        /// The running node's HTTP API.
        #[arg(long, default_value = concat!("http://", "127.0.0.1:9464"))]
        node: String,
    },
    /// Fetch a file by id through a running node, from all its providers in parallel; every
    /// chunk is verified. The output appears only once the whole file is verified.
    Fetch {
        /// The file id (64 hex digits, as `share` printed it).
        id: String,
        /// Where to write the file (must not exist).
        #[arg(long)]
        out: PathBuf,
        /// The running node's HTTP API.
        #[arg(long, default_value = concat!("http://", "127.0.0.1:9464"))]
        node: String,
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
        #[arg(long = "set", value_name = "NAME=VALUE")]
        set: Vec<String>,
    },
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Address to listen on (repeatable), e.g. /ip4/0.0.0.0/tcp/4001.
    #[arg(long, required = true)]
    pub listen: Vec<Multiaddr>,
    /// Peer to connect to (repeatable), a full multiaddr ending in /p2p/<PeerId>.
    #[arg(long)]
    pub peer: Vec<Multiaddr>,
    /// Congestion control for every TCP connection of the node (default: the kernel's default).
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
    /// Token required for changes through the HTTP API (`Authorization: Bearer <token>`);
    /// mandatory when --http is not a loopback address.
    #[arg(
        long,
        conflicts_with = "http_token_file",
        hide_env_values = true,
        env = "P2PCC_HTTP_TOKEN"
    )]
    pub http_token: Option<String>,
    /// File holding the HTTP token (first line).
    #[arg(long)]
    pub http_token_file: Option<PathBuf>,
    /// Exit if the eBPF programs cannot be loaded, instead of running without telemetry.
    #[arg(long)]
    pub require_ebpf: bool,
    /// Close connections without open streams after this many seconds.
    #[arg(long, default_value_t = 30)]
    pub idle_timeout_secs: u64,
    /// Peers with per-peer metric series: the busiest K by bytes (others are in the
    /// all-peer histograms and totals only).
    #[arg(long, default_value_t = crate::telemetry::DEFAULT_TOP_PEERS)]
    pub top_peers: usize,
    /// Turn on the kernel's per-program run time and count (BPF_ENABLE_STATS, as
    /// `kernel.bpf_stats_enabled=1`) while the node runs, for p2pcc_ebpf_program_run_*.
    /// The kernel turns it off again when the node exits.
    #[arg(long)]
    pub bpf_stats: bool,
}
