//! The control plane against local users, browsers and idle clients, as real processes: a root
//! node in a namespace; an unprivileged uid (`nobody`, through `setpriv`) running the CLI against
//! it; paths outside the share and download directories; a rebinding `Host`; 2,000 idle
//! connections and a slow header drip.

mod common;

use std::{
    fs,
    io::{Read as _, Write as _},
    net::TcpStream,
    os::unix::fs::MetadataExt as _,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use common::{NetnsPair, Node, enter_netns, eventually, kernel_tests_possible, raw_http_in_ns};

/// Runs the p2p-node CLI as uid/gid 65534 (`nobody`, no capabilities) inside `ns`.
fn cli_as_nobody(ns: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(common::as_nobody(&[]))
        .arg(env!("CARGO_BIN_EXE_p2p-node"))
        .args(args)
        .env_remove("P2PCC_HTTP_TOKEN")
        .output()
        .expect("running setpriv");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

fn node_fds(node: &Node) -> usize {
    fs::read_dir(format!("/proc/{}/fd", node.pid()))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn an_unprivileged_user_changes_nothing_and_paths_stay_confined() {
    if !kernel_tests_possible() {
        return;
    }
    let net = NetnsPair::new("sec", 7);
    let outside = common::test_data_dir("outside");
    let share = outside.join("share");
    fs::create_dir_all(&share).unwrap();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(share.join("data.bin"), &data).unwrap();
    fs::write(outside.join("secret"), b"not for peers").unwrap();
    std::os::unix::fs::symlink(outside.join("secret"), share.join("escape")).unwrap();

    let a = Node::start(
        &net.a,
        &net.addr_a,
        &["--share-dir", share.to_str().unwrap()],
    );
    let b = Node::start(&net.b, &net.addr_b, &["--peer", &a.multiaddr]);
    let downloads = b.data_dir.join("downloads");
    let a_token_file = a.data_dir.join("http-token");

    // The token file is the owner's alone; nobody cannot read it, so every change it tries
    // through the CLI is refused with 401, and nothing changed.
    assert_eq!(fs::metadata(&a_token_file).unwrap().mode() & 0o777, 0o600);
    let token_file = a_token_file.to_str().unwrap();
    let before_cc = a.get("/api/cc");
    let before_tunables = a.get("/api/cc/tunables");
    for args in [
        vec!["cc", "set", "cubic"],
        vec!["cc", "tunables", "--set", "min_cwnd=7"],
        vec!["share", "/etc/shadow"],
        vec!["fetch", &"ab".repeat(32), "--out", "x.bin"],
        vec!["perf", &b.peer_id, "--upload", "1000"],
    ] {
        let mut args = args.clone();
        args.extend(["--token-file", token_file]);
        let (ok, output) = cli_as_nobody(&net.a, &args);
        assert!(!ok, "{args:?} succeeded as nobody: {output}");
        assert!(output.contains("HTTP 401"), "{args:?}: {output}");
        assert!(output.contains("Permission denied"), "{args:?}: {output}");
    }
    // Reads stay open to everyone.
    let (ok, output) = cli_as_nobody(&net.a, &["cc", "list"]);
    assert!(ok, "{output}");
    assert_eq!(a.get("/api/cc"), before_cc);
    assert_eq!(a.get("/api/cc/tunables"), before_tunables);
    let files: serde_json::Value = serde_json::from_str(&a.get("/api/files")).unwrap();
    assert_eq!(files, serde_json::json!([]), "nothing was shared");

    // With the token: only files under the share dir.
    let share_req = |path: &str| {
        a.http(
            "POST",
            "/api/files",
            &serde_json::json!({ "path": path }).to_string(),
        )
    };
    for (path, rule) in [
        ("/etc/shadow", "not under a share directory"),
        (
            outside.join("secret").to_str().unwrap(),
            "not under a share directory",
        ),
        ("escape", "symlinks out of it are not followed"),
        ("../secret", "`..` is refused"),
        ("/dev/zero", "not under a share directory"),
        (".", "not a regular file"),
    ] {
        let (status, body) = share_req(path);
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains(rule), "{path}: {body}");
        assert!(!body.contains(outside.to_str().unwrap()), "{body}");
    }
    let (status, body) = share_req("data.bin");
    assert_eq!(status, 200, "{body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let listing = a.get("/api/files");
    assert!(listing.contains("data.bin"), "{listing}");
    assert!(
        !listing.contains(share.to_str().unwrap()),
        "a local path in {listing}"
    );

    // Fetch writes only by name into the download dir; bad names are 400 and create nothing.
    let cron = outside.join("cron-x");
    let fetch = |out: &str| {
        b.http(
            "POST",
            "/api/files/fetch",
            &serde_json::json!({ "id": id, "out": out }).to_string(),
        )
    };
    for (out, rule) in [
        (cron.to_str().unwrap(), "not an absolute path"),
        ("/etc/cron.d/x", "not an absolute path"),
        ("../x.bin", "`..` is refused"),
        ("sub/x.bin", "without `/`"),
        ("", "is empty"),
    ] {
        let (status, body) = fetch(out);
        assert_eq!(status, 400, "{out}: {body}");
        assert!(body.contains(rule), "{out}: {body}");
    }
    assert!(!cron.exists() && !Path::new("/etc/cron.d/x").exists());
    assert!(!outside.join("x.bin").exists());
    let entries = || {
        let mut names: Vec<String> = fs::read_dir(&downloads)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(
        entries(),
        Vec::<String>::new(),
        "a refused fetch created a file"
    );

    // A symlink planted at the `.part` name, or at the final name: refused, target untouched.
    let victim = outside.join("victim");
    fs::write(&victim, b"keep me").unwrap();
    std::os::unix::fs::symlink(&victim, downloads.join("planted.bin.part")).unwrap();
    std::os::unix::fs::symlink(&victim, downloads.join("taken.bin")).unwrap();
    // The DHT needs a moment to carry A's provider record.
    let (status, body) = eventually(Duration::from_secs(20), || {
        let (status, body) = fetch("planted.bin");
        (status != 404).then_some((status, body))
    })
    .expect("B never found A as a provider");
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("refusing to open or follow it"), "{body}");
    let (status, body) = fetch("taken.bin");
    assert_eq!(status, 409, "{body}");
    assert_eq!(fs::read(&victim).unwrap(), b"keep me");
    assert!(
        fs::symlink_metadata(downloads.join("planted.bin.part"))
            .unwrap()
            .is_symlink()
    );
    assert!(
        fs::symlink_metadata(downloads.join("taken.bin"))
            .unwrap()
            .is_symlink()
    );
    assert_eq!(entries(), ["planted.bin.part", "taken.bin"]);

    // A good name: the file arrives whole, the answer names it without a path.
    let (status, body) = fetch("good.bin");
    assert_eq!(status, 200, "{body}");
    assert!(
        !body.contains(downloads.to_str().unwrap()),
        "a local path in {body}"
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["name"],
        "good.bin"
    );
    assert_eq!(fs::read(downloads.join("good.bin")).unwrap(), data);
    assert_eq!(entries(), ["good.bin", "planted.bin.part", "taken.bin"]);

    // A rebinding page's Host is refused, also with the token.
    let request = format!(
        "PUT /api/cc HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 22\r\n\r\n{{\"algorithm\":\"cubic\"}}",
        a.token
    );
    let (status, body) = raw_http_in_ns(&net.a, 9464, &request, Duration::from_secs(10)).unwrap();
    assert_eq!(status, 403, "{body}");
    assert_eq!(a.get("/api/cc"), before_cc);

    // Every mutation left one audit line naming the client.
    let log = b.stderr.lock().unwrap().clone();
    let audits = log.lines().filter(|l| l.contains(" audit:")).count();
    assert!(audits >= 8, "{audits} audit lines:\n{log}");
    assert!(
        log.lines()
            .any(|l| l.contains(" audit:") && l.contains("from=127.0.0.1:")),
        "{log}"
    );
    drop((a, b));
    let _ = fs::remove_dir_all(&outside);
}

#[test]
fn idle_connections_and_slow_headers_cannot_exhaust_the_node() {
    if !kernel_tests_possible() {
        return;
    }
    const IDLE: usize = 2000;
    const HOLD: Duration = Duration::from_secs(30);
    let net = NetnsPair::new("idle", 8);
    let a = Node::start(&net.a, &net.addr_a, &[]);
    let limit: usize = fs::read_to_string(format!("/proc/{}/limits", a.pid()))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        .unwrap();
    let ns = net.a.clone();
    let pid = a.pid();
    // The attacker (own thread, in the node's namespace): 2,000 connections that never send a
    // byte, reopened as the node closes them, for 30 s.
    let attacker = std::thread::spawn(move || {
        enter_netns(&ns).unwrap();
        let connect = || {
            let s = TcpStream::connect(("127.0.0.1", 9464)).unwrap();
            s.set_nonblocking(true).unwrap();
            s
        };
        let mut idle: Vec<TcpStream> = (0..IDLE).map(|_| connect()).collect();
        let mut reopened = 0usize;
        let start = Instant::now();
        while start.elapsed() < HOLD {
            for s in idle.iter_mut() {
                let mut byte = [0u8; 1];
                let closed = match s.read(&mut byte) {
                    Ok(0) => true,
                    Ok(_) => false,
                    Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
                };
                if closed {
                    *s = connect();
                    reopened += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        reopened
    });
    // The drip (own thread): a request head sent one header line every 300 ms, never finished.
    let ns = net.a.clone();
    let dripper = std::thread::spawn(move || -> (Duration, String) {
        enter_netns(&ns).unwrap();
        std::thread::sleep(Duration::from_secs(2));
        let mut drip = TcpStream::connect(("127.0.0.1", 9464)).unwrap();
        let start = Instant::now();
        drip.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .unwrap();
        drip.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        loop {
            if start.elapsed() > Duration::from_secs(20) {
                return (start.elapsed(), "never cut off".into());
            }
            if let Err(e) = drip.write_all(b"X-Drip: a\r\n") {
                return (start.elapsed(), format!("write: {e}"));
            }
            let mut buf = [0u8; 256];
            match drip.read(&mut buf) {
                Ok(0) => return (start.elapsed(), "closed".into()),
                Ok(n) => {
                    return (
                        start.elapsed(),
                        format!("answered {}", String::from_utf8_lossy(&buf[..n])),
                    );
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return (start.elapsed(), format!("read: {e}")),
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    std::thread::sleep(Duration::from_secs(2));
    let mut slowest = Duration::ZERO;
    let mut most_fds = 0;
    let until = Instant::now() + HOLD - Duration::from_secs(4);
    while Instant::now() < until {
        let start = Instant::now();
        let (status, body) = common::http_in_ns(
            &net.a,
            9464,
            "GET",
            "/metrics",
            "",
            None,
            Duration::from_secs(5),
        )
        .expect("/metrics under load");
        assert_eq!(status, 200, "{body}");
        slowest = slowest.max(start.elapsed());
        most_fds = most_fds.max(
            fs::read_dir(format!("/proc/{pid}/fd"))
                .map(|d| d.count())
                .unwrap_or(0),
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let reopened = attacker.join().unwrap();
    let (drip_cut, how) = dripper.join().unwrap();
    eprintln!(
        "slowest /metrics {slowest:?}; most node fds {most_fds} (limit {limit}); idle connections the node closed and the attacker reopened: {reopened}; drip ended after {drip_cut:?}: {how}"
    );
    assert!(
        slowest < Duration::from_secs(1),
        "/metrics took {slowest:?}"
    );
    assert!(most_fds < limit, "{most_fds} fds, limit {limit}");
    assert!(
        reopened >= IDLE,
        "the node kept idle connections open: {reopened} closed"
    );
    assert!(how == "closed" || how.starts_with("read: "), "drip: {how}");
    assert!(
        drip_cut >= Duration::from_secs(4) && drip_cut < Duration::from_secs(10),
        "drip cut after {drip_cut:?} (header read timeout 5 s)"
    );
    // The attacker's sockets are gone with its thread; the node's fds come back down.
    eventually(Duration::from_secs(5), || {
        (node_fds(&a) < 200).then_some(())
    })
    .unwrap_or_else(|| panic!("idle connections still held: {} fds", node_fds(&a)));
}

/// Least privilege, as the systemd unit runs the node: a non-root uid with exactly CAP_BPF,
/// CAP_PERFMON and CAP_NET_ADMIN loads the probes, registers bbr-p2p, serves, carries a
/// transfer and switches its connections; without any one of the three it stops with one
/// sentence naming that one.
#[test]
fn runs_as_an_unprivileged_user_with_exactly_its_capabilities() {
    use std::os::fd::AsFd as _;
    if !kernel_tests_possible() {
        return;
    }
    // capability.h: CAP_NET_ADMIN 12, CAP_PERFMON 38, CAP_BPF 39.
    const EXACT: u64 = (1 << 12) | (1 << 38) | (1 << 39);
    let net = NetnsPair::new("caps", 9);
    let nobody = common::as_nobody(&common::NODE_CAPS);
    let nobody: Vec<&str> = nobody.iter().map(String::as_str).collect();
    let a = Node::start_wrapped(
        &nobody,
        &net.a,
        &net.addr_a,
        "127.0.0.1:9464",
        &["--cc", "bbr-p2p"],
    );
    let status = fs::read_to_string(format!("/proc/{}/status", a.pid())).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .trim()
            .to_owned()
    };
    assert_eq!(field("Uid:"), "65534\t65534\t65534\t65534", "{status}");
    assert_eq!(
        u64::from_str_radix(&field("CapEff:"), 16).unwrap(),
        EXACT,
        "{status}"
    );
    let log = a.stderr.lock().unwrap().clone();
    assert!(
        log.contains("registered congestion control bbr-p2p"),
        "A did not register bbr-p2p itself:\n{log}"
    );
    assert!(common::available_cc().contains(&"bbr_p2p".to_owned()));
    let node: serde_json::Value = serde_json::from_str(&a.get("/api/node")).unwrap();
    assert_eq!(node["ebpf"]["status"], "loaded", "{node}");

    // A second node as the same user: bbr-p2p is A's registration, and finding its maps by id
    // needs CAP_SYS_ADMIN, which this node lacks: it says so and uses a kernel algorithm.
    let b = Node::start_wrapped(
        &nobody,
        &net.b,
        &net.addr_b,
        "127.0.0.1:9464",
        &["--peer", &a.multiaddr, "--cc", "cubic"],
    );
    let (status, body) = b.http("PUT", "/api/cc", r#"{"algorithm":"bbr-p2p"}"#);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("needs CAP_SYS_ADMIN"), "{body}");

    // A carries a transfer to B on bbr-p2p; the probes see it; switching moves the connection.
    let algorithms = || -> Vec<String> {
        common::node_sockets(&a)
            .iter()
            .map(|(_, fd)| p2p_node::sockets::congestion(fd.as_fd()).unwrap())
            .collect()
    };
    eventually(Duration::from_secs(15), || {
        (!algorithms().is_empty()).then_some(())
    })
    .expect("B connected to A");
    assert!(
        algorithms().iter().all(|c| c == "bbr_p2p"),
        "{:?}",
        algorithms()
    );
    // The exporter's snapshot is refreshed once a second.
    let refreshes = || common::metric_value(&a.get("/metrics"), "p2pcc_ebpf_probe_refreshes_total");
    std::thread::sleep(Duration::from_millis(1100));
    let before = refreshes().unwrap_or(0.0);
    let (status, body) = a.http(
        "POST",
        "/api/perf",
        &format!(r#"{{"peer":"{}","upload_bytes":20000000}}"#, b.peer_id),
    );
    assert_eq!(status, 200, "{body}");
    eventually(Duration::from_secs(5), || {
        refreshes().filter(|&r| r > before)
    })
    .unwrap_or_else(|| {
        panic!(
            "tcp_probe refreshed {before} -> {:?} for 20 MB",
            refreshes()
        )
    });
    for (name, kernel) in [("cubic", "cubic"), ("bbr-p2p", "bbr_p2p")] {
        let (status, body) = a.http("PUT", "/api/cc", &format!(r#"{{"algorithm":"{name}"}}"#));
        assert_eq!(status, 200, "{body}");
        let report: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(report["switched"].as_u64().unwrap() >= 1, "{body}");
        assert_eq!(report["failed"], serde_json::json!([]), "{body}");
        assert!(
            algorithms().iter().all(|c| c == kernel),
            "{:?}",
            algorithms()
        );
    }
    // Its exit unregisters bbr-p2p, also without root.
    drop(b);
    drop(a);
    assert!(!common::available_cc().contains(&"bbr_p2p".to_owned()));

    // Each capability dropped in turn: one `error:` line naming exactly that capability.
    for dropped in common::NODE_CAPS {
        let kept: Vec<&str> = common::NODE_CAPS
            .into_iter()
            .filter(|c| *c != dropped)
            .collect();
        let data_dir = common::test_data_dir("caps");
        let out = Command::new("ip")
            .args(["netns", "exec", &net.a])
            .args(common::as_nobody(&kept))
            .arg(env!("CARGO_BIN_EXE_p2p-node"))
            .args(["run", "--listen", "/ip4/127.0.0.1/tcp/0", "--http"])
            .args(["127.0.0.1:0", "--require-ebpf", "--data-dir"])
            .arg(&data_dir)
            .output()
            .expect("running setpriv");
        let _ = fs::remove_dir_all(&data_dir);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "ran without {dropped}: {stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{stderr}");
        let named = format!("CAP_{}", dropped.to_uppercase());
        assert!(
            errors[0].contains(&format!("missing {named} (")),
            "without {named}: {stderr}"
        );
    }
}

/// The shipped unit passes `systemd-analyze verify` without a warning (unknown keys only warn,
/// so stderr must be empty too), with ExecStart pointed at the built binary.
#[test]
fn the_systemd_unit_verifies() {
    let unit = fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/p2p-node.service"
    ))
    .unwrap();
    for key in [
        "AmbientCapabilities=CAP_BPF CAP_PERFMON CAP_NET_ADMIN",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "StateDirectory=p2p-node",
    ] {
        assert!(unit.contains(key), "the unit lacks {key}");
    }
    let dir = common::test_data_dir("unit");
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join("p2p-node.service");
    fs::write(
        &path,
        unit.replace("/usr/local/bin/p2p-node", env!("CARGO_BIN_EXE_p2p-node")),
    )
    .unwrap();
    let out = match Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
    {
        Ok(out) => out,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED: systemd-analyze: {e} (cargo xtask setup installs it)");
            return;
        }
        Err(e) => panic!("systemd-analyze: {e}"),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze warned:\n{stderr}"
    );
    let _ = fs::remove_dir_all(&dir);
}

/// Adopting another process's bbr-p2p maps checks their shape first: crafted maps named like
/// ours, with another value size or type, are refused with an error naming the map (a lookup
/// into this build's buffer would let the kernel write past it).
///
/// The test crafts every map adoption looks for (the newest map of each name wins, so maps of
/// other processes are never the ones read) and holds them only as fds: they are gone when it
/// ends, whatever the host had or has.
#[test]
fn adopting_a_map_of_the_wrong_shape_is_refused_by_name() {
    use p2p_node::ebpf::{
        bbr::{BbrP2p, config_map_shape, config_slot_map_shape},
        sys,
    };
    if !kernel_tests_possible() {
        return;
    }
    const ARRAY: u32 = 2; // BPF_MAP_TYPE_ARRAY
    let craft = |name: &str, value_size: u32| {
        sys::map_create(&sys::MapCreate {
            map_type: ARRAY,
            name,
            key_size: 4,
            value_size,
            max_entries: 1,
            map_flags: 0,
            btf_fd: None,
            btf_key_type_id: 0,
            btf_value_type_id: 0,
            btf_vmlinux_value_type_id: 0,
        })
        .unwrap_or_else(|e| panic!("creating the crafted map {name}: {e}"))
    };
    let right = config_map_shape().value_size;
    // The slot map has the right shape throughout: adoption gets past it to the maps tested.
    let _slot = craft("BBR_CFG_SLOT", config_slot_map_shape().value_size);
    // A config map 8 bytes larger than ours (and some state map): refused, naming BBR_CONFIG.
    let _state = craft("BBR_STATE", 8);
    let config = craft("BBR_CONFIG", right + 8);
    let e = BbrP2p::attach_existing()
        .expect_err("a config map of the wrong value size was not refused")
        .to_string();
    assert!(e.starts_with("map BBR_CONFIG (id "), "{e}");
    assert!(e.contains(&format!("value size {}", right + 8)), "{e}");
    assert!(e.contains("refusing to adopt it"), "{e}");
    drop(config);
    // The right config but a state map that is not socket storage: refused, naming BBR_STATE.
    let _config = craft("BBR_CONFIG", right);
    let e = BbrP2p::attach_existing()
        .expect_err("a state map of the wrong type was not refused")
        .to_string();
    assert!(e.starts_with("map BBR_STATE (id "), "{e}");
    assert!(e.contains("has type 2"), "{e}");
}
