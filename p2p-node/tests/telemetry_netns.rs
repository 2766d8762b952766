//! Two nodes in two network namespaces: the per-peer TCP state a node exports on `/metrics` is
//! what the kernel reports for the same socket (`getsockopt(TCP_INFO)`).

mod common;

use std::{
    os::fd::AsFd as _,
    time::{Duration, Instant},
};

use common::{NetnsPair, Node, eventually, kernel_tests_possible, metric};
use p2p_node::{
    sockets,
    telemetry::{PeerConnection, collector::INTERVAL},
};

/// cwnd may move by the last ACKs between the probe's snapshot and our getsockopt.
fn cwnd_agrees(exported: f64, kernel: u32) -> bool {
    (exported - f64::from(kernel)).abs() <= (0.1 * f64::from(kernel)).max(2.0)
}

/// srtt is smoothed over many ACKs; it moves little between two reads of an idle connection.
fn srtt_agrees(exported_s: f64, kernel_us: u32) -> bool {
    let kernel_s = f64::from(kernel_us) / 1e6;
    (exported_s - kernel_s).abs() <= (0.25 * kernel_s).max(100e-6)
}

/// Pacing rate follows cwnd/srtt (cubic: 2x in slow start, 1.2x after), so it moves with them.
fn pacing_agrees(exported: f64, kernel: u64) -> bool {
    let kernel = kernel as f64;
    (exported - kernel).abs() <= 0.25 * kernel
}

#[test]
fn per_peer_metrics_match_tcp_info_between_namespaces() {
    if !kernel_tests_possible() {
        return;
    }
    let net = NetnsPair::new("tele", 1);
    let a = Node::start(&net.a, &net.addr_a, &[]);
    let b = Node::start(
        &net.b,
        &net.addr_b,
        &["--peer", &a.multiaddr, "--cc", "cubic"],
    );

    // B connects to A; the connection shows up in B's API with its PeerId.
    let peers = eventually(Duration::from_secs(15), || {
        let body = b.get("/api/peers");
        let v: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
        v.iter()
            .any(|p| p["peer_id"] == a.peer_id.as_str())
            .then_some(v)
    })
    .expect("B never listed A as a peer");
    let conn = peers
        .iter()
        .find(|p| p["peer_id"] == a.peer_id.as_str())
        .unwrap();
    let cookie = conn["cookie"].as_u64().unwrap();
    assert_eq!(conn["algorithm"], "cubic");

    // Real traffic: 64 MiB from B to A over the veth.
    let (status, report) = b.http(
        "POST",
        "/api/perf",
        &format!(
            r#"{{"peer":"{}","upload_bytes":67108864,"download_bytes":1048576}}"#,
            a.peer_id
        ),
    );
    assert_eq!(status, 200, "perf failed: {report}");
    eprintln!("perf: {report}");

    // The socket as the kernel sees it, read from B's own fd.
    let fd = b
        .socket_by_cookie(cookie)
        .expect("B's socket with the API's cookie");
    assert_eq!(sockets::cookie(fd.as_fd()).unwrap(), cookie);
    assert_eq!(sockets::congestion(fd.as_fd()).unwrap(), "cubic");

    // The probe refreshes an entry at the first segment of a later kernel tick, from the
    // state before that segment, so an idle socket's entry lags its last segment (probes.rs
    // header): under load that last ACK moved srtt 814us -> 2681us. Keepalive makes A answer
    // B every second with an ACK of nothing new, which refreshes B's entry and changes none of
    // the fields compared below: the entry must then equal TCP_INFO.
    let one_s: libc::c_int = 1;
    sockets::set_option(fd.as_fd(), libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, one_s).unwrap();
    sockets::set_option(fd.as_fd(), libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, one_s).unwrap();
    sockets::set_option(fd.as_fd(), libc::SOL_SOCKET, libc::SO_KEEPALIVE, one_s).unwrap();

    let label = ("peer_id", a.peer_id.as_str());
    let mut last = String::new();
    let agreed = eventually(Duration::from_secs(10), || {
        let text = b.get("/metrics");
        let info = sockets::tcp_info(fd.as_fd()).unwrap();
        let cwnd = metric(&text, "p2pcc_peer_cwnd_segments", label)?;
        let srtt = metric(&text, "p2pcc_peer_srtt_seconds", label)?;
        let acked = metric(&text, "p2pcc_peer_acked_bytes_total", label)?;
        let pacing = metric(&text, "p2pcc_peer_pacing_rate_bytes_per_second", label)?;
        let refreshes = common::metric_value(&text, "p2pcc_ebpf_probe_refreshes_total")?;
        last = format!(
            "exported cwnd {cwnd} srtt {srtt}s acked {acked} pacing {pacing} refreshes {refreshes}; TCP_INFO cwnd {} rtt {}us acked {} pacing {} segs_in {} data_segs_in {}",
            info.snd_cwnd,
            info.rtt_us,
            info.bytes_acked,
            info.pacing_rate,
            info.segs_in,
            info.data_segs_in
        );
        // Value series carry only peer_id; the algorithm is on peer_info.
        let algorithm_label = text.contains(&format!(
            "p2pcc_peer_cwnd_segments{{peer_id=\"{}\"}}",
            a.peer_id
        )) && text.contains(&format!(
            "p2pcc_peer_info{{peer_id=\"{}\",algorithm=\"cubic\",direction=\"outbound\"}} 1",
            a.peer_id
        ));
        // bytes_acked: the probe runs before the ACK it sees is processed, so it may trail
        // the kernel by the last ACK's worth.
        let acked_ok = acked <= info.bytes_acked as f64
            && acked >= 67_108_864.0
            && info.bytes_acked as f64 - acked <= 1_048_576.0;
        // B's node tracks only this socket, and a refresh is one tcp_probe event, which runs
        // once per segment the socket receives: at least one (the keepalive's), at most one per
        // segment (segs_in counts a GRO'd data segment once per MSS, so it bounds the events).
        let events_ok = refreshes >= 1.0 && refreshes <= f64::from(info.segs_in);
        (cwnd > 0.0
            && srtt > 0.0
            && events_ok
            && algorithm_label
            && acked_ok
            && cwnd_agrees(cwnd, info.snd_cwnd)
            && srtt_agrees(srtt, info.rtt_us)
            && pacing_agrees(pacing, info.pacing_rate))
        .then(|| last.clone())
    });
    match agreed {
        Some(values) => eprintln!("agreed: {values}"),
        None => panic!("metrics never agreed with TCP_INFO: {last}"),
    }

    // eBPF health: the four probes and the collector's refresh (iter/tcp) are attached.
    let text = b.get("/metrics");
    assert!(text.contains("p2pcc_ebpf_programs_attached 5"), "{text}");
}

/// Transfers checked in [`an_idle_sockets_snapshot_is_the_kernels_within_two_collections`].
const IDLE_ROUNDS: usize = 3;

/// After a bulk transfer ends and the socket goes idle, the node's snapshot of it (`/api/peers`)
/// equals the kernel's own TCP_INFO of the socket (read from the node's fd, not from the
/// probes' maps) within the next two collections: bytes acknowledged and received, nothing in
/// flight, cwnd, retransmissions. `tcp_probe` alone refreshes at most once per kernel tick, from
/// the state before the segment it fires for, so an idle socket kept whatever lag its last
/// burst of ACKs left until its next segment (libp2p pings every 15 s); the collector's
/// `iter/tcp` refresh makes it exact.
#[test]
fn an_idle_sockets_snapshot_is_the_kernels_within_two_collections() {
    if !kernel_tests_possible() {
        return;
    }
    let net = NetnsPair::new("tidle", 13);
    let a = Node::start(&net.a, &net.addr_a, &[]);
    let b = Node::start(
        &net.b,
        &net.addr_b,
        &["--peer", &a.multiaddr, "--cc", "cubic"],
    );
    let peers = |node: &Node| -> Vec<PeerConnection> {
        serde_json::from_str(&node.get("/api/peers")).expect("/api/peers")
    };
    let cookie = eventually(Duration::from_secs(15), || {
        peers(&b)
            .iter()
            .find(|p| p.peer_id == a.peer_id)
            .map(|p| p.cookie)
    })
    .expect("B never listed A as a peer");
    let fd = b
        .socket_by_cookie(cookie)
        .expect("B's socket with the API's cookie");

    for round in 1..=IDLE_ROUNDS {
        let (status, report) = b.http(
            "POST",
            "/api/perf",
            &format!(
                r#"{{"peer":"{}","upload_bytes":16777216,"download_bytes":65536}}"#,
                a.peer_id
            ),
        );
        assert_eq!(status, 200, "perf failed: {report}");

        // Idle: nothing unacknowledged or unsent, and no byte counter moving for 100 ms.
        let mut previous = None;
        let idle_at = eventually(Duration::from_secs(10), || {
            std::thread::sleep(Duration::from_millis(100));
            let info = sockets::tcp_info(fd.as_fd()).unwrap();
            let now = (info.bytes_acked, info.bytes_received, info.segs_in);
            let idle = info.unacked == 0 && info.notsent_bytes == 0 && previous == Some(now);
            previous = Some(now);
            idle.then(Instant::now)
        })
        .expect("the socket never went idle after the transfer");

        // Two collections (one per INTERVAL) plus time for a collection on a loaded machine.
        let deadline = idle_at + 2 * INTERVAL + Duration::from_millis(500);
        let mut last;
        let exact = loop {
            let snapshot = peers(&b).into_iter().find(|p| p.cookie == cookie);
            let info = sockets::tcp_info(fd.as_fd()).unwrap();
            let tcp = snapshot
                .and_then(|p| p.tcp)
                .expect("B's snapshot of the socket");
            last = format!(
                "snapshot acked {} received {} in flight {} cwnd {} retrans {}; TCP_INFO acked {} received {} unacked {} cwnd {} total_retrans {}",
                tcp.bytes_acked,
                tcp.bytes_received,
                tcp.packets_in_flight,
                tcp.cwnd_segments,
                tcp.retransmitted_segments,
                info.bytes_acked,
                info.bytes_received,
                info.unacked,
                info.snd_cwnd,
                info.total_retrans
            );
            let exact = tcp.bytes_acked == info.bytes_acked
                && tcp.bytes_received == info.bytes_received
                && tcp.packets_in_flight == info.unacked
                && info.unacked == 0
                && tcp.cwnd_segments == info.snd_cwnd
                && tcp.retransmitted_segments == info.total_retrans;
            if exact || Instant::now() >= deadline {
                break exact;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        eprintln!(
            "round {round}: {} {:.2} s after idle: {last}",
            if exact { "exact" } else { "NOT exact" },
            idle_at.elapsed().as_secs_f64()
        );
        assert!(
            exact,
            "round {round}: the idle socket's snapshot is not the kernel's within two collections: {last}"
        );
    }
}

#[test]
fn missing_privileges_give_one_clear_sentence() {
    if !kernel_tests_possible() {
        return;
    }
    let nobody = common::as_nobody(&[]);
    let out = std::process::Command::new(&nobody[0])
        .args(&nobody[1..])
        .arg(env!("CARGO_BIN_EXE_p2p-node"))
        .args([
            "run",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--http",
            "127.0.0.1:0",
            "--require-ebpf",
        ])
        .output()
        .expect("running setpriv");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error: p2p-node cannot load its eBPF programs: missing CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN"),
        "{stderr}"
    );
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{stderr}"
    );
}
