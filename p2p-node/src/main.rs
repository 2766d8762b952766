//! The `p2p-node` binary: command line and wiring (see the library for the parts).

use std::{
    fs, io::Write as _, os::unix::fs::OpenOptionsExt as _, path::Path, sync::Arc, time::Duration,
};

use anyhow::{Context as _, bail};
use clap::Parser as _;
use libp2p::identity::Keypair;
use prometheus_client::registry::Registry;

use p2p_node::{
    cc,
    cli::{self, CcAction, Cli, Command, RunArgs},
    ebpf, http, known, node,
    sockets::SocketTable,
    tables, telemetry,
};

/// Time the runtime's remaining tasks get after the node's shutdown (see `main`).
const RUNTIME_SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,libp2p_swarm=warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in piped or collected logs.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run(*args).await,
            Command::Cc {
                action,
                node,
                token_file,
            } => {
                let token = client_token(token_file.as_deref());
                let token = token.as_deref();
                let out = match action {
                    CcAction::List => client_get(&node, "/api/cc").await?,
                    CcAction::Set { algorithm } => {
                        let change = cli::ApiChange::cc_set(&algorithm);
                        client_request(&node, token, change.method, change.path, &change.body)
                            .await?
                    }
                    CcAction::Tunables { set } if set.is_empty() => {
                        client_get(&node, "/api/cc/tunables").await?
                    }
                    CcAction::Tunables { set } => {
                        let mut changes = serde_json::Map::new();
                        for item in &set {
                            let (name, value) = item
                                .split_once('=')
                                .with_context(|| format!("--set takes NAME=VALUE, got {item:?}"))?;
                            let value: u64 = value.parse().with_context(|| {
                                format!("{name}: {value:?} is not a non-negative integer")
                            })?;
                            changes.insert(name.to_owned(), value.into());
                        }
                        let body = serde_json::Value::Object(changes).to_string();
                        client_request(&node, token, "PUT", "/api/cc/tunables", &body).await?
                    }
                };
                println!("{}", out.trim_end());
                Ok(())
            }
            Command::Peers { node } => peers_table(&node).await,
            Command::Known {
                forget: Some(peer),
                node,
                token_file,
            } => {
                let path = format!("/api/peers/known/{}", peer.trim());
                print!(
                    "{}",
                    client_send(&node, token_file.as_deref(), "DELETE", &path, "").await?
                );
                Ok(())
            }
            Command::Known {
                forget: None, node, ..
            } => known_table(&node).await,
            Command::Share {
                path,
                node,
                token_file,
            } => {
                let path = std::fs::canonicalize(&path)
                    .with_context(|| format!("{} is not a readable file", path.display()))?;
                client_change(&node, token_file.as_deref(), cli::ApiChange::share(path)).await
            }
            Command::Fetch {
                id,
                out,
                node,
                token_file,
            } => {
                let change = cli::ApiChange::fetch(&id, &out);
                client_change(&node, token_file.as_deref(), change).await
            }
            Command::Perf {
                peer,
                upload,
                download,
                node,
                token_file,
            } => {
                let change = cli::ApiChange::perf(&peer, upload, download);
                client_change(&node, token_file.as_deref(), change).await
            }
        }
    });
    // Dropping the runtime would wait for every blocking task (a file being hashed or written)
    // however long it takes; the node's own cleanup already ran inside `block_on`, so what is
    // left gets a bounded time and the process exits before a stopper's SIGKILL (see
    // `http::limits::SHUTDOWN_GRACE`).
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_GRACE);
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    // Each connection holds a socket: the connection limits, not EMFILE, decide who is refused.
    http::limits::raise_fd_limit();
    if let Some(name) = &args.cc {
        cc::validate(name)?;
    }
    // `/dns4`, `/dns6`, `/dns` names: a listen address is resolved now (a listener binds an
    // address): a name that does not resolve stops the node with one line saying which. A
    // peer's name is resolved by the DNS transport at each dial; it is checked now only to say
    // so at once (one line) when it does not resolve: peers come and go (a container's name
    // appears when it starts), so the node starts anyway and redials a `/p2p/<PeerId>` address
    // with backoff (node::bootstrap); an address without a PeerId is dialled once.
    let listen = args
        .listen
        .iter()
        .map(|a| node::transport::resolve(a).map_err(|e| anyhow::anyhow!("--listen {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for peer in &args.peer {
        if let Err(e) = node::transport::resolve(peer) {
            let then = match peer.iter().last() {
                Some(libp2p::multiaddr::Protocol::P2p(_)) => format!(
                    "starting without it; dialled again with backoff ({} s doubling to {} s)",
                    node::bootstrap::FIRST_BACKOFF.as_secs(),
                    node::bootstrap::MAX_BACKOFF.as_secs()
                ),
                _ => "starting without it; not dialled again (no /p2p/<PeerId> to track it by)"
                    .to_owned(),
            };
            eprintln!("warning: --peer {e}; {then}");
        }
    }
    let key = match &args.key {
        Some(path) => load_or_create_key(path)?,
        None => Keypair::generate_ed25519(),
    };

    // eBPF: load the probes, or run without telemetry and say why in one sentence.
    let (probes, mut features) =
        match ebpf::preflight().and_then(|_| ebpf::Probes::load(args.observe_all)) {
            Ok(probes) => {
                let mut features = ebpf::features::probes(probes.status());
                features.push(ebpf::features::refresher(probes.refresher()));
                (Some(Arc::new(probes)), features)
            }
            Err(e) if args.require_ebpf => return Err(e.into()),
            Err(e) => {
                let why = ebpf::error_chain(&e);
                eprintln!("warning: running without TCP telemetry: {why}");
                let features = ebpf::features::probes(&ebpf::ProbeStatus::all_unavailable(&why));
                (None, features)
            }
        };
    // Held while the node runs: detached on exit.
    let _floor = match args.bench_probe_floor {
        true => {
            Some(ebpf::ProbeFloor::attach().context("attaching the benchmark's floor program")?)
        }
        false => None,
    };
    let ebpf_status = match &probes {
        Some(p) => {
            SocketTable::global().set_observer(p.clone());
            if args.bpf_stats {
                p.enable_run_stats()
                    .context("turning on eBPF run-time statistics (--bpf-stats)")?;
            }
            "loaded".to_owned()
        }
        None => "not loaded (see the node's log)".to_owned(),
    };
    let bbr = cc::configure(args.cc.as_deref())?;
    features.extend(cc::features());
    match ebpf::preflight() {
        Ok(btf) => features.extend(ebpf::features::kernel(&btf)),
        Err(e) => features.push(ebpf::features::Feature::unavailable(
            ebpf::features::Kind::Kernel,
            "ebpf",
            ebpf::error_chain(&e),
            "TCP telemetry and bbr-p2p",
        )),
    }
    let data_dir = args.data_dir.clone().unwrap_or_else(cli::default_data_dir);
    let token_file = args
        .http_token_file
        .clone()
        .unwrap_or_else(|| data_dir.join(cli::TOKEN_FILE_NAME));
    let token = http::auth::node_token(&token_file)?;
    if std::env::var_os(http::auth::TOKEN_ENV).is_none() {
        eprintln!("HTTP API token (for changes) in {}", token_file.display());
    }
    let download_dir = args
        .download_dir
        .clone()
        .unwrap_or_else(|| data_dir.join("downloads"));
    let files = http::confine::FilePolicy::new(&args.share_dir, &download_dir)?;
    if files.share_dirs().is_empty() {
        eprintln!(
            "sharing by path is disabled: start the node with --share-dir <dir> to share the files under a directory"
        );
    }
    eprintln!("fetched files go to {}", files.download_dir().display());

    let mut registry = Registry::default();
    let config = node::Config {
        listen,
        peers: args.peer.clone(),
        idle_timeout: Duration::from_secs(args.idle_timeout_secs),
        ping_interval: Duration::from_secs(args.ping_interval_secs),
        ping_timeout: Duration::from_secs(args.ping_timeout_secs),
        max_inbound: args.max_inbound,
        max_outbound: args.max_outbound,
        max_pending: args.max_pending,
        ..Default::default()
    };
    let client = node::spawn(key, config, &mut registry)?;
    // Telemetry reads bbr-p2p's per-socket state through the handle control owns.
    let read_bbr: telemetry::collector::BbrReader = {
        let slot = bbr.clone();
        Arc::new(move |fd| slot.read().ok()?.as_ref()?.state(fd))
    };
    let known = Arc::new(known::Store::new(known::Config {
        capacity: args.known_peers as usize,
        max_age: Duration::from_secs(args.known_peers_max_age_secs),
        file: (!args.no_known_peers_file).then(|| data_dir.join(known::FILE_NAME)),
        receive: args
            .receive_warm
            .then_some(p2p_node::rcvwarm::DEFAULT_LIMITS),
    }));
    match known.load() {
        Ok((0, 0)) => {}
        Ok((kept, dropped)) => {
            eprintln!("known peers: {kept} records loaded, {dropped} invalid dropped")
        }
        Err(e) => eprintln!("warning: known peers start empty: {e:#}"),
    }
    let write_resume: known::ResumeWriter = {
        let slot = bbr.clone();
        Arc::new(move |fd, entry| {
            slot.read()
                .ok()
                .and_then(|b| b.as_ref().map(|b| b.offer_resume(fd, entry)))
                .unwrap_or(false)
        })
    };
    let read_bbr_at_exit = read_bbr.clone();
    known::start(
        known.clone(),
        SocketTable::global().clone(),
        read_bbr.clone(),
        Some(write_resume),
    );
    let telemetry = telemetry::Telemetry::start(
        telemetry::collector::Collector::new(
            SocketTable::global().clone(),
            probes,
            Some(read_bbr),
            args.top_peers,
        )
        .with_features(features),
    );
    registry
        .sub_registry_with_prefix("p2pcc")
        .register_collector(Box::new(telemetry::prometheus::TcpCollector::new(
            telemetry.clone(),
        )));
    registry.register_collector(Box::new(telemetry::prometheus::ProcessCollector::new(
        telemetry.clone(),
    )));

    let registry = Arc::new(registry);
    let exports = telemetry::exports::Exports::start(&telemetry, registry.clone());
    let state = http::AppState {
        client,
        telemetry,
        exports,
        bbr,
        ebpf_status: Arc::new(ebpf_status),
        token: Arc::new(token),
        allowed_hosts: Arc::new(http::auth::AllowedHosts(args.http_host.clone())),
        files: Arc::new(files),
        known: known.clone(),
    };
    eprintln!("HTTP API and metrics on http://{}/", args.http);
    let result = http::serve(args.http, state, async {
        shutdown_signal().await;
        eprintln!("shutting down");
    })
    .await;
    // bbr-p2p registered without a link (Linux < 6.4) outlives the process unless deleted.
    // What the live connections measured is recorded once more before the last save.
    known::observe_live(&known, SocketTable::global(), &read_bbr_at_exit);
    if let Err(e) = known.save() {
        eprintln!("warning: saving known peers: {e:#}");
    }
    ebpf::struct_ops::unregister_at_exit();
    result
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Reads the node's identity, or creates it with owner-only permissions.
fn load_or_create_key(path: &Path) -> anyhow::Result<Keypair> {
    match fs::read(path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes)
            .with_context(|| format!("{} is not a libp2p key file", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            let bytes = key.to_protobuf_encoding().context("encoding the new key")?;
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("creating key file {}", path.display()))?;
            file.write_all(&bytes)?;
            eprintln!("created a new identity in {}", path.display());
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("reading key file {}", path.display())),
    }
}

/// The token a client sends with changes: `P2PCC_HTTP_TOKEN`, else the token file (given, or
/// the default data dir's). `None` if neither is readable: the node then answers 401, and the
/// reason the file could not be read is printed.
fn client_token(token_file: Option<&Path>) -> Option<String> {
    if let Ok(token) = std::env::var(http::auth::TOKEN_ENV) {
        return Some(token.trim().to_owned());
    }
    let path = token_file.map_or_else(cli::default_token_file, Path::to_path_buf);
    match http::auth::read_token_file(&path) {
        Ok(token) => Some(token),
        Err(e) => {
            eprintln!("note: no token for changes ({e:#}); give --token-file or P2PCC_HTTP_TOKEN");
            None
        }
    }
}

/// A change through the API, with the client's token.
async fn client_send(
    node: &str,
    token_file: Option<&Path>,
    method: &str,
    path: &str,
    body: &str,
) -> anyhow::Result<String> {
    let token = client_token(token_file);
    client_request(node, token.as_deref(), method, path, body).await
}

/// Sends a subcommand's change to the node with the token (see [`client_send`]) and prints
/// the node's answer.
async fn client_change(
    node: &str,
    token_file: Option<&Path>,
    change: cli::ApiChange,
) -> anyhow::Result<()> {
    print!(
        "{}",
        client_send(node, token_file, change.method, change.path, &change.body).await?
    );
    Ok(())
}

/// A minimal HTTP/1.1 client for the node's own API (plain text, loopback by default).
async fn client_request(
    node: &str,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: &str,
) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let authority = node
        .strip_prefix("http://")
        .with_context(|| format!("--node must be an http:// URL, got {node:?}"))?
        .trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(authority)
        .await
        .with_context(|| format!("connecting to the node at {node} (is it running?)"))?;
    let request = http::request_text(method, authority, path, token, body);
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (status, body) = http::parse_response(&response).context("malformed HTTP response")?;
    if status != 200 {
        bail!("HTTP {status}: {}", body.trim());
    }
    Ok(body)
}

async fn client_get(node: &str, path: &str) -> anyhow::Result<String> {
    client_request(node, None, "GET", path, "").await
}

async fn known_table(node: &str) -> anyhow::Result<()> {
    let body = client_get(node, "/api/peers/known").await?;
    let known: known::KnownPeers =
        serde_json::from_str(&body).context("decoding /api/peers/known")?;
    print!("{}", tables::known(&known));
    Ok(())
}

async fn peers_table(node: &str) -> anyhow::Result<()> {
    let body = client_get(node, "/api/peers").await?;
    let peers: Vec<telemetry::PeerConnection> =
        serde_json::from_str(&body).context("decoding /api/peers")?;
    print!("{}", tables::peers(&peers));
    Ok(())
}
