//! bbr-p2p on the real kernel: transfers through a tbf bottleneck on a router namespace, with
//! the algorithm's state read back from its socket storage.

mod common;

use std::{
    os::fd::AsFd as _,
    time::{Duration, Instant},
};

use cc_ebpf_common::bbr::{BbrState, Mode, WarmStart};
use common::{Routed, kernel_tests_possible};
use p2p_node::{ebpf::bbr::BbrP2p, sockets};

fn register() -> BbrP2p {
    let btf = cc_ebpf_common::btf::Btf::from_sys_fs().expect("kernel BTF");
    BbrP2p::register(&btf).expect("registering bbr-p2p")
}

fn seen(s: &BbrState, mode: Mode) -> bool {
    s.modes_seen & (1 << mode as u8) != 0
}

/// Sends for `secs` seconds, sampling the state every 100 ms; returns goodput (Mbit/s) and
/// the last state.
fn run(flow: &mut common::TcpFlow, bbr: &BbrP2p, secs: u64) -> (f64, BbrState, Vec<BbrState>) {
    let start = Instant::now();
    let mut samples = Vec::new();
    let mut last_sample = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        flow.send(256 << 10);
        sent += 256 << 10;
        if last_sample.elapsed() >= Duration::from_millis(100) {
            samples.push(
                bbr.state(flow.client.as_fd())
                    .expect("bbr-p2p state of the socket"),
            );
            last_sample = Instant::now();
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let state = bbr.state(flow.client.as_fd()).expect("bbr-p2p state");
    (sent as f64 * 8.0 / secs / 1e6, state, samples)
}

#[test]
fn fills_the_link_goes_startup_drain_probe_bw_and_starts_warm_next_time() {
    if !kernel_tests_possible() {
        return;
    }
    let bbr = register();
    let net = Routed::new("bbr", 61, "100mbit", "2000000");
    let mut flow = net.flow(5101, "bbr_p2p");
    assert_eq!(sockets::congestion(flow.client.as_fd()).unwrap(), "bbr_p2p");
    let (mbit, state, _) = run(&mut flow, &bbr, 5);
    let info = sockets::tcp_info(flow.client.as_fd()).unwrap();
    eprintln!(
        "goodput {mbit:.1} Mbit/s; mode {:?}; probe_rtt {}; min_rtt {} us; bw {} B/s; retrans {}",
        state.mode(),
        state.probe_rtt_count,
        state.min_rtt_us,
        cc_ebpf_common::bbr::bw_to_bytes_per_sec(state.max_bw(), info.snd_mss),
        info.total_retrans
    );
    assert!(mbit >= 90.0, "bbr-p2p used {mbit:.1} of 100 Mbit/s");
    assert!(
        seen(&state, Mode::Startup) && seen(&state, Mode::Drain) && seen(&state, Mode::ProbeBw),
        "modes seen {:#b}",
        state.modes_seen
    );
    assert_eq!(state.full_bw_reached, 1);
    // The bandwidth estimate is the link rate (100 Mbit/s minus framing), within 10%.
    let bw =
        cc_ebpf_common::bbr::bw_to_bytes_per_sec(state.max_bw(), info.snd_mss) as f64 * 8.0 / 1e6;
    assert!(
        (85.0..=110.0).contains(&bw),
        "BtlBw estimate {bw:.1} Mbit/s"
    );
    assert_eq!(state.warm_start, WarmStart::Cold as u8);
    flow.finish();

    // A second connection to the same address starts warm, from what the first one measured.
    let mut second = net.flow(5102, "bbr_p2p");
    let first = bbr
        .state(second.client.as_fd())
        .expect("state of the second socket");
    assert_eq!(
        first.warm_start,
        WarmStart::Warm as u8,
        "second connection did not start warm"
    );
    assert_eq!(first.mode(), Mode::ProbeBw);
    let (mbit2, state2, _) = run(&mut second, &bbr, 2);
    eprintln!(
        "warm connection: goodput {mbit2:.1} Mbit/s over 2 s, warm state {}",
        state2.warm_start
    );
    assert_eq!(
        state2.warm_start,
        WarmStart::Warm as u8,
        "the unchanged path must not make it fall back"
    );
    assert!(!seen(&state2, Mode::Startup));
}

/// PROBE_RTT comes when the min-RTT filter has not seen a new minimum for its window. The
/// namespaces here have no propagation delay to speak of (no netem), so RTT samples vary with
/// the queue; with the window shortened to 2 s through the config map, a 7 s flow must enter
/// PROBE_RTT at least twice and at most once per window.
#[test]
fn probe_rtt_follows_the_min_rtt_window() {
    if !kernel_tests_possible() {
        return;
    }
    let bbr = register();
    let config = cc_ebpf_common::bbr::BbrConfig {
        min_rtt_window_us: 2_000_000,
        ..bbr.config().unwrap()
    };
    bbr.set_config(config).unwrap();
    let net = Routed::new("bbrrtt", 63, "100mbit", "2000000");
    let mut flow = net.flow(5104, "bbr_p2p");
    let (_, state, samples) = run(&mut flow, &bbr, 7);
    eprintln!(
        "PROBE_RTT entered {} times in 7 s with a 2 s window",
        state.probe_rtt_count
    );
    assert!(
        (2..=4).contains(&state.probe_rtt_count),
        "PROBE_RTT entered {} times",
        state.probe_rtt_count
    );
    assert!(
        samples.iter().any(|s| s.mode() == Mode::ProbeRtt),
        "no sample caught PROBE_RTT"
    );
    flow.finish();
}

#[test]
fn shallow_buffer_losses_engage_the_loss_bound() {
    if !kernel_tests_possible() {
        return;
    }
    let bbr = register();
    // 12 kB of buffer at 100 Mbit/s: STARTUP's 2.89x overshoot overflows it.
    let net = Routed::new("bbrloss", 62, "100mbit", "12000");
    let mut flow = net.flow(5103, "bbr_p2p");
    let (mbit, state, _) = run(&mut flow, &bbr, 4);
    let info = sockets::tcp_info(flow.client.as_fd()).unwrap();
    eprintln!(
        "goodput {mbit:.1} Mbit/s; loss bound engaged {} times; inflight_hi {}; retrans {} of {} segs",
        state.loss_bound_count, state.inflight_hi, info.total_retrans, info.data_segs_out
    );
    assert!(info.total_retrans > 0, "the shallow buffer caused no loss");
    assert!(state.loss_bound_count >= 1, "loss bound never engaged");
    assert_ne!(state.inflight_hi, u32::MAX);
    flow.finish();
}

#[test]
#[ignore = "ad-hoc comparison"]
fn adhoc_compare_shallow() {
    let _bbr = register();
    for cc in ["bbr", "bbr_p2p", "cubic"] {
        let net = Routed::new("cmp", 64, "100mbit", "12000");
        let mut flow = net.flow(5105, cc);
        let start = Instant::now();
        let mut sent = 0u64;
        while start.elapsed() < Duration::from_secs(4) {
            flow.send(256 << 10);
            sent += 256 << 10;
        }
        let info = sockets::tcp_info(flow.client.as_fd()).unwrap();
        eprintln!(
            "{cc}: {:.1} Mbit/s retrans {} of {} segs ({:.1}%) rtt {}us cwnd {}",
            sent as f64 * 8.0 / start.elapsed().as_secs_f64() / 1e6,
            info.total_retrans,
            info.data_segs_out,
            info.total_retrans as f64 * 100.0 / info.data_segs_out as f64,
            info.rtt_us,
            info.snd_cwnd
        );
        flow.finish();
    }
}
