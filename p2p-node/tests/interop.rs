//! Interoperability with another libp2p implementation: js-libp2p (interop/js/peer.mjs, the npm
//! packages pinned by interop/js/package-lock.json, installed by `cargo xtask setup`) against
//! our node on 127.0.0.1, through the real TCP transport, noise and yamux.
//!
//! Each test starts our node in this process and the js peer as a child (killed when the test
//! ends, and bounded by its own deadline), reads the js peer's JSON lines and asks our node's
//! API, so every exchange is checked from both sides:
//! - identify: each side saw the other's agent version, protocol version and protocols;
//! - ping: each side measured a round trip to the other;
//! - Kademlia (`/p2p-cc/kad/1.0.0`): the js peer finds our node as the provider of a shared
//!   file by its CID, and a second node of ours by FIND_NODE through the first; our first node
//!   has the js peer in its routing table, and our second node finds the js peer as the provider
//!   of a CID the js peer announced;
//! - gossipsub (v1.1, signed messages, the status topic): an announcement each way, each
//!   accepted by the receiver's validation.
//!
//! Without Node.js or the installed packages the tests print why and pass, except under
//! `CI=true`, where that is a failure (`cargo xtask setup` installs them).

mod common;

use std::{path::PathBuf, process::Stdio, time::Duration};

use common::wait_for;
use libp2p::{Multiaddr, PeerId, identity::Keypair};
use p2p_node::{
    node::{
        self, Client, Config, KAD_PROTOCOL,
        files::FileId,
        gossip::{self, Announcement},
    },
    sockets::SocketTable,
};
use prometheus_client::registry::Registry;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tokio::{
    io::{AsyncBufReadExt as _, BufReader, Lines},
    process::{Child, ChildStdout, Command},
};

/// Every socket of every node in this process gets this algorithm (not the kernel default).
const ALGORITHM: &str = "reno";
/// The js peer exits by itself after this long, whatever happens to the test.
const JS_DEADLINE: Duration = Duration::from_secs(90);
/// Longest wait for any one exchange.
const EXCHANGE: Duration = Duration::from_secs(30);
/// The tests run one at a time: the socket table is process-global.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The interop/js directory, when Node.js and the packages are installed; else why not.
fn js_peer_dir() -> Result<PathBuf, String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../interop/js");
    let node = std::process::Command::new("node").arg("--version").output();
    let version = match node {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        _ => return Err("`node` (Node.js) is not on PATH".into()),
    };
    // js-libp2p 3 needs Node.js 20 or later (with interop/js/polyfill.mjs).
    let major: Option<u32> = version
        .strip_prefix('v')
        .and_then(|v| v.split('.').next()?.parse().ok());
    if major.is_none_or(|major| major < 20) {
        return Err(format!("Node.js {version} is older than 20"));
    }
    if !dir.join("node_modules/libp2p/package.json").is_file() {
        return Err(format!(
            "{} has no node_modules (run `cargo xtask setup`)",
            dir.display()
        ));
    }
    Ok(dir)
}

/// The js peer's directory, or `None` (with a message) when the tests cannot run here. Under
/// CI a missing js peer fails the test.
fn js_peer_or_skip() -> Option<PathBuf> {
    match js_peer_dir() {
        Ok(dir) => Some(dir),
        Err(reason) if std::env::var_os("CI").is_some() => {
            panic!("js-libp2p interop cannot run: {reason}; CI is set, so this is a failure")
        }
        Err(reason) => {
            eprintln!("skipped: js-libp2p interop cannot run: {reason}");
            None
        }
    }
}

/// `node interop/js/peer.mjs …`, killed on drop.
struct JsPeer {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    peer_id: PeerId,
    /// Every line read so far (for failure messages).
    seen: Vec<Value>,
}

impl JsPeer {
    async fn spawn(dir: &PathBuf, args: &[String]) -> Self {
        let mut child = Command::new("node")
            .current_dir(dir)
            .arg("peer.mjs")
            .args(args)
            .args(["--deadline-ms", &JS_DEADLINE.as_millis().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("starting node peer.mjs");
        let stdout = child.stdout.take().unwrap();
        let mut peer = JsPeer {
            child,
            lines: BufReader::new(stdout).lines(),
            peer_id: PeerId::random(),
            seen: Vec::new(),
        };
        let listening = peer.expect("listening", |_| true).await;
        peer.peer_id = listening["peer_id"].as_str().unwrap().parse().unwrap();
        peer
    }

    /// The first line (read so far or still to come) with `"event": event` that `accept`s,
    /// within [`EXCHANGE`].
    async fn expect(&mut self, event: &str, accept: impl Fn(&Value) -> bool) -> Value {
        let found = |v: &Value| v["event"] == event && accept(v);
        if let Some(v) = self.seen.iter().find(|v| found(v)) {
            return v.clone();
        }
        let deadline = tokio::time::Instant::now() + EXCHANGE;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.next_line()).await;
            let line = match line {
                Ok(Ok(Some(line))) => line,
                Ok(Ok(None)) => panic!("the js peer exited; its output: {:#?}", self.seen),
                Ok(Err(e)) => panic!("reading the js peer's output: {e}"),
                Err(_) => panic!(
                    "no {event:?} line from the js peer within {EXCHANGE:?}; its output: {:#?}",
                    self.seen
                ),
            };
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("js peer printed {line:?}, not JSON: {e}"));
            self.seen.push(v.clone());
            if found(&v) {
                return v;
            }
        }
    }
}

impl Drop for JsPeer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

struct OurNode {
    client: Client,
    addr: Multiaddr,
    _registry: Registry,
}

impl OurNode {
    async fn start(peers: Vec<Multiaddr>) -> Self {
        SocketTable::global().set_algorithm(Some(ALGORITHM.into()));
        let config = Config {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            peers,
            idle_timeout: Duration::from_secs(60),
            ping_interval: Duration::from_secs(1),
            ..Config::default()
        };
        let mut registry = Registry::default();
        let client = node::spawn(Keypair::generate_ed25519(), config, &mut registry).unwrap();
        // `/api/node`'s listen addresses end in `/p2p/<our id>`.
        let addr = wait_for("a listen address", EXCHANGE, || async {
            client.info().await.unwrap().listen_addrs.first().cloned()
        })
        .await;
        let addr: Multiaddr = addr.parse().unwrap();
        OurNode {
            client,
            addr,
            _registry: registry,
        }
    }
}

/// `addr` without its trailing `/p2p/<id>`, as text.
fn without_peer_id(addr: &str) -> &str {
    addr.split("/p2p/").next().unwrap_or(addr)
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identify_and_ping_both_ways_with_js_libp2p() {
    let Some(dir) = js_peer_or_skip() else { return };
    let _serial = SERIAL.lock().await;
    let ours = OurNode::start(Vec::new()).await;
    let our_id = ours.client.local_peer_id().to_string();
    let mut js = JsPeer::spawn(
        &dir,
        &["--dial".into(), ours.addr.to_string(), "--ping".into()],
    )
    .await;

    // The js side identified us.
    let seen = js.expect("identify", |v| v["peer_id"] == our_id).await;
    let agent = seen["agent_version"].as_str().unwrap_or_default();
    assert!(agent.starts_with("p2p-node/"), "our agent version: {seen}");
    assert_eq!(seen["protocol_version"], "/p2p-cc/0.1.0", "{seen}");
    let protocols = strings(&seen["protocols"]);
    for want in [
        "/ipfs/id/1.0.0",
        "/ipfs/ping/1.0.0",
        KAD_PROTOCOL.as_ref(),
        "/meshsub/1.1.0",
    ] {
        assert!(
            protocols.contains(&want),
            "js saw our protocols {protocols:?}, no {want}"
        );
    }

    // The js side pinged us.
    let ping = js.expect("ping", |v| v["peer_id"] == our_id).await;
    let rtt_ms = ping["rtt_ms"].as_f64().expect("a number");
    assert!((0.0..5000.0).contains(&rtt_ms), "js ping round trip {ping}");

    // Our node identified the js peer and pinged it (every second, see OurNode::start).
    let (identity, rtt) = wait_for(
        "our node to identify and ping the js peer",
        EXCHANGE,
        || async {
            let connections = ours.client.connections().await.unwrap();
            let c = connections.into_iter().find(|c| c.peer == js.peer_id)?;
            Some((c.identify?, c.ping_rtt?))
        },
    )
    .await;
    assert!(
        identity.agent_version.starts_with("js-libp2p/"),
        "js agent version: {identity:?}"
    );
    for want in ["/ipfs/id/1.0.0", "/ipfs/ping/1.0.0", KAD_PROTOCOL.as_ref()] {
        assert!(
            identity.protocols.iter().any(|p| p == want),
            "we saw the js protocols {:?}, no {want}",
            identity.protocols
        );
    }
    assert!(rtt < Duration::from_secs(5), "our ping round trip {rtt:?}");
    eprintln!(
        "js saw {agent} (ping {rtt_ms} ms); we saw {} (ping {rtt:?})",
        identity.agent_version
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kademlia_providers_and_peers_both_ways_with_js_libp2p() {
    let Some(dir) = js_peer_or_skip() else { return };
    let _serial = SERIAL.lock().await;
    let a = OurNode::start(Vec::new()).await;
    let b = OurNode::start(vec![a.addr.clone()]).await;
    let (a_id, b_id) = (a.client.local_peer_id(), b.client.local_peer_id());
    wait_for(
        "our first node to have the second in its routing table",
        EXCHANGE,
        || async {
            a.client
                .routing_table()
                .await
                .unwrap()
                .contains(&b_id)
                .then_some(())
        },
    )
    .await;

    // A file our first node shares, looked up by js-libp2p through its CID.
    let file_dir = std::env::temp_dir().join(format!("p2pcc-interop-{}", std::process::id()));
    std::fs::create_dir_all(&file_dir).unwrap();
    let path = file_dir.join("shared.bin");
    std::fs::write(&path, b"shared with js-libp2p\n".repeat(1000)).unwrap();
    let shared = a
        .client
        .share(std::fs::File::open(&path).unwrap(), "shared.bin".into())
        .await
        .unwrap();
    std::fs::remove_dir_all(&file_dir).unwrap();
    // Content only the js peer provides (the digest of a name unique to this run).
    let js_content =
        FileId(Sha256::digest(format!("provided by js-libp2p, run {}", std::process::id())).into());

    let mut js = JsPeer::spawn(
        &dir,
        &[
            "--dial".into(),
            a.addr.to_string(),
            "--find-providers".into(),
            shared.cid.clone(),
            "--find-peer".into(),
            b_id.to_string(),
            "--provide".into(),
            js_content.cid(),
        ],
    )
    .await;

    // js-libp2p parsed our CID text and found our node under its multihash.
    let found = js.expect("providers", |_| true).await;
    assert_eq!(
        found["cid"],
        shared.cid.as_str(),
        "the CID re-encoded by js: {found}"
    );
    let a_listen = without_peer_id(&a.addr.to_string()).to_owned();
    let providers = found["providers"].as_array().unwrap();
    assert!(
        providers.iter().any(|p| p["peer_id"] == a_id.to_string()
            && strings(&p["addrs"])
                .iter()
                .any(|x| without_peer_id(x) == a_listen)),
        "js found providers {found}, not our node at {a_listen}"
    );

    // FIND_NODE through our first node gave js-libp2p our second node and its address.
    let b_listen = without_peer_id(&b.addr.to_string()).to_owned();
    let peer = js
        .expect("find_peer", |v| v["peer_id"] == b_id.to_string())
        .await;
    assert!(
        strings(&peer["addrs"])
            .iter()
            .any(|x| without_peer_id(x) == b_listen),
        "js found our second node at {peer}, not at {b_listen}"
    );

    // Our nodes: the js peer (a DHT server on our protocol) is in the first one's routing table,
    // and the second one finds its provider record through the DHT.
    let js_id = js.peer_id;
    wait_for("the js peer in our routing table", EXCHANGE, || async {
        a.client
            .routing_table()
            .await
            .unwrap()
            .contains(&js_id)
            .then_some(())
    })
    .await;
    js.expect("provided", |v| v["cid"] == js_content.cid())
        .await;
    let providers = wait_for(
        "our second node to find the js peer's provider record",
        EXCHANGE,
        || async {
            let providers = b.client.get_providers(js_content).await.ok()?;
            providers.contains(&js_id).then_some(providers)
        },
    )
    .await;
    eprintln!(
        "js found our provider {a_id} by CID {} and our node {b_id} by FIND_NODE; \
         we found the js provider {js_id} (of {providers:?})",
        shared.cid
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossipsub_status_announcements_both_ways_with_js_libp2p() {
    let Some(dir) = js_peer_or_skip() else { return };
    let _serial = SERIAL.lock().await;
    let ours = OurNode::start(Vec::new()).await;
    let our_id = ours.client.local_peer_id();
    // Written out by hand, not by our encoder: what another implementation would send.
    let js_status = r#"{"kind":"status","algorithm":"js-libp2p","connected_peers":1,"routing_table_peers":1,"shared_files":0}"#;
    let mut js = JsPeer::spawn(
        &dir,
        &[
            "--dial".into(),
            ours.addr.to_string(),
            "--topic".into(),
            gossip::TOPIC.into(),
            "--publish".into(),
            js_status.into(),
        ],
    )
    .await;
    let js_id = js.peer_id;

    // js → us: signed by the js peer, accepted by our validation.
    let received = wait_for("the js peer's status announcement", EXCHANGE, || async {
        let recent = ours.client.announcements().await.unwrap();
        recent.into_iter().find(|r| r.author == js_id)
    })
    .await;
    assert_eq!(
        received.announcement,
        Announcement::Status {
            algorithm: "js-libp2p".into(),
            connected_peers: 1,
            routing_table_peers: 1,
            shared_files: 0,
        }
    );

    // us → js: once the js peer is in our mesh for the topic.
    wait_for("the js peer in our gossipsub mesh", EXCHANGE, || async {
        (ours.client.info().await.unwrap().gossip_mesh_peers >= 1).then_some(())
    })
    .await;
    let status = Announcement::Status {
        algorithm: "bbr-p2p".into(),
        connected_peers: 1,
        routing_table_peers: 1,
        shared_files: 0,
    };
    ours.client.publish(status).await.unwrap();
    let seen = js
        .expect("gossip", |v| v["from"] == our_id.to_string())
        .await;
    assert_eq!(seen["topic"], gossip::TOPIC, "{seen}");
    let data: Value = serde_json::from_str(seen["data"].as_str().unwrap()).unwrap();
    assert_eq!(data["kind"], "status", "{seen}");
    assert_eq!(data["algorithm"], "bbr-p2p", "{seen}");
}
