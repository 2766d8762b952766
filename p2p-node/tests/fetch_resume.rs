//! A fetch between two node processes in two namespaces, its fetcher killed (SIGKILL) at 90%:
//! the restarted fetcher takes over what the killed one wrote and fetches only the rest.
//! The provider's link is shaped with `tbf` so the fetch lasts seconds and 90% can be caught.

mod common;

use std::{
    fs,
    time::{Duration, Instant},
};

use common::{NetnsPair, Node, eventually, http_in_ns, kernel_tests_possible, sh};

/// Chunks of the shared file (256 KiB each: 32 MiB).
const CHUNKS: usize = 128;

#[test]
fn a_fetch_killed_at_90_percent_resumes_and_refetches_at_most_12_percent() {
    if !kernel_tests_possible() {
        return;
    }
    let net = NetnsPair::new("resume", 12);
    // 80 Mbit/s out of the provider: the 32 MiB take about 3.5 s.
    sh(&[
        "tc", "-n", &net.a, "qdisc", "add", "dev", "p2pcc-va", "root", "tbf", "rate", "80mbit",
        "burst", "64kb", "latency", "50ms",
    ]);
    let share = common::test_data_dir("resume-share");
    fs::create_dir_all(&share).unwrap();
    let data: Vec<u8> = (0..CHUNKS * 256 * 1024)
        .map(|i| {
            (i as u64)
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .rotate_left(17) as u8
        })
        .collect();
    fs::write(share.join("big.bin"), &data).unwrap();
    let a = Node::start(
        &net.a,
        &net.addr_a,
        &["--share-dir", share.to_str().unwrap()],
    );
    let b_dir = common::test_data_dir("resume-b");
    let b_args = [
        "--peer",
        &a.multiaddr,
        "--data-dir",
        b_dir.to_str().unwrap(),
    ];
    let b = Node::start(&net.b, &net.addr_b, &b_args);
    let (status, body) = a.http("POST", "/api/files", r#"{"path":"big.bin"}"#);
    assert_eq!(status, 200, "{body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let request = serde_json::json!({ "id": id, "out": "big.bin" }).to_string();
    let map = b_dir.join("downloads/big.bin.part.map");
    let listed = || {
        fs::read(&map).map_or(0, |m| {
            m.get(44..)
                .unwrap_or_default()
                .iter()
                .map(|b| b.count_ones() as usize)
                .sum::<usize>()
        })
    };

    // The fetch runs on its own thread (its HTTP answer never comes: the node is killed).
    let (ns, port, token, req) = (net.b.clone(), b.http_port, b.token.clone(), request.clone());
    let killed_fetch = std::thread::spawn(move || {
        let (method, path, timeout) = ("POST", "/api/files/fetch", Duration::from_secs(120));
        http_in_ns(&ns, port, method, path, &req, Some(&token), timeout)
    });
    let start = Instant::now();
    let mut b = b;
    let at_kill = loop {
        let n = listed();
        if n * 10 >= CHUNKS * 9 {
            b.child.kill().unwrap();
            break n;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the fetch did not reach 90% in 60 s ({n} of {CHUNKS} chunks)"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    b.child.wait().unwrap();
    assert!(at_kill < CHUNKS, "killed too late: {at_kill} chunks");
    // The killed node closed the connection without an answer.
    let answer = killed_fetch.join().expect("the fetch's HTTP thread");
    assert!(answer.is_err(), "the killed fetcher answered: {answer:?}");
    assert!(!b_dir.join("downloads/big.bin").exists());
    let left = listed();
    eprintln!(
        "killed at {at_kill} of {CHUNKS} chunks after {:.2} s; the map lists {left}",
        start.elapsed().as_secs_f64()
    );
    drop(b);

    // The fetcher again, same data dir (its download directory and chunk map; a new PeerId:
    // no `--key`), same address.
    let b = Node::start(&net.b, &net.addr_b, &b_args);
    let (status, body) = eventually(Duration::from_secs(30), || {
        let (status, body) = b.http("POST", "/api/files/fetch", &request);
        (status != 404).then_some((status, body))
    })
    .expect("the restarted fetcher never found the provider");
    assert_eq!(status, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(fs::read(b_dir.join("downloads/big.bin")).unwrap(), data);
    let resumed = report["resumed_chunks"].as_u64().unwrap() as usize;
    let fetched: u64 = report["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["chunks"].as_u64().unwrap())
        .sum();
    eprintln!(
        "resumed {resumed} chunks, fetched {fetched} again ({:.1}%)",
        fetched as f64 * 100.0 / CHUNKS as f64
    );
    assert_eq!(resumed, left, "every chunk the map listed was kept");
    assert_eq!(resumed + fetched as usize, CHUNKS);
    assert!(
        fetched as f64 <= 0.12 * CHUNKS as f64,
        "re-downloaded {fetched} of {CHUNKS} chunks (> 12%)"
    );
    assert!(!b_dir.join("downloads/big.bin.part.map").exists());
    drop(b);
    let _ = fs::remove_dir_all(&b_dir);
    let _ = fs::remove_dir_all(&share);
}
