//! bbr-p2p on the real kernel: transfers through a tbf bottleneck on a router namespace, with
//! the algorithm's state read back from its socket storage.

mod common;

use std::{
    os::fd::AsFd as _,
    time::{Duration, Instant},
};

use cc_ebpf_common::{
    bbr::{BbrState, Mode, Phase, UNBOUNDED},
    resume::{Reason, Start},
};
use common::{DelayLine, Routed, kernel_tests_possible};
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

/// A bulk flow over a 100 Mbit/s bottleneck with a 20 ms round trip (a delay line of 10 ms each
/// way at the router) fills it, passes STARTUP → DRAIN → PROBE_BW and estimates the rate the
/// path carries.
///
/// The round trip makes the test measure the algorithm rather than the machine's scheduler.
/// Without propagation delay the path's RTT is ~25 µs: the BDP is under one packet, cwnd is
/// only the quantization budget plus the ACK-aggregation allowance, and BBR's round-counted
/// windows (`extra_acked`'s 5 rounds, the bandwidth filter's cycles) span 1–3 ms, less than a
/// loaded 2-core machine stalls the ACK path. Measured at load 8–12 without delay (5 s each):
/// bbr-p2p kept 24–35 packets in flight and carried 75–94 Mbit/s (6 of 8 runs under 90);
/// compressed ACKs gave delivery-rate samples of 300–500 Mbit/s (the kernel drops only samples
/// shorter than min_rtt, here 25 µs) and once a 115 Mbit/s estimate; kernel bbr carried 92–94
/// Mbit/s behind a 10 ms standing queue. An inflated sample needs ACKs compressed by a tenth
/// of the sample's interval (≥ min_rtt): with 5 ms each way one run of 10 estimated 113 Mbit/s;
/// with 10 ms each way 6 of 6 passed (93.5–96.7 Mbit/s, estimate 96.1–96.3).
///
/// "Fills" is judged against kernel bbr on the same path, alternating, two 5 s runs each, the
/// better run of each side (≥ 0.9 of its goodput; 5 s include STARTUP): the delay line's pace is
/// the machine's, and this VM's stolen CPU time (18% of the ticks during one run of this test,
/// /proc/stat) comes in bursts. On the
/// re-provisioned machine of 2026-12-02 the former absolute bar, 90 Mbit/s, failed 4 of 6 runs
/// at load ≤ 1.5 (76.6–95.0 Mbit/s), and kernel bbr itself carried 79.0–95.3 in 5 runs on this
/// path (bbr-p2p beside it: 0.94–0.98 of that); a 12 s trace of each on a 2 MB buffer without
/// loss delivered 89.1 (bbr-p2p) and 84.3 (bbr) Mbit/s with smoothed RTTs of 41–50 ms.
#[test]
fn fills_the_link_goes_startup_drain_probe_bw() {
    if !kernel_tests_possible() {
        return;
    }
    let bbr = register();
    let net = Routed::new("bbr", 61, "100mbit", "2000000");
    let _delay = DelayLine::start(&net.router, 10);
    // The yardstick: kernel bbr over the same path, alternating with bbr-p2p, two 5 s runs
    // each; each side's better run counts (this VM's stolen CPU time comes in bursts).
    let kernel = |port| {
        let mut flow = net.flow(port, "bbr");
        let start = Instant::now();
        let mut sent = 0u64;
        while start.elapsed() < Duration::from_secs(5) {
            flow.send(256 << 10);
            sent += 256 << 10;
        }
        let mbit = sent as f64 * 8.0 / start.elapsed().as_secs_f64() / 1e6;
        flow.finish();
        mbit
    };
    let ours = |port| {
        let mut flow = net.flow(port, "bbr_p2p");
        assert_eq!(sockets::congestion(flow.client.as_fd()).unwrap(), "bbr_p2p");
        let (mbit, state, _) = run(&mut flow, &bbr, 5);
        let info = sockets::tcp_info(flow.client.as_fd()).unwrap();
        flow.finish();
        (mbit, state, info)
    };
    let kernel_1 = kernel(5102);
    let (mbit_1, state_1, info_1) = ours(5101);
    let kernel_2 = kernel(5103);
    let (mbit_2, state_2, info_2) = ours(5104);
    let kernel_mbit = kernel_1.max(kernel_2);
    // The better run's state is judged (the same run whose goodput counts).
    let (mbit, state, info) = if mbit_1 >= mbit_2 {
        (mbit_1, state_1, info_1)
    } else {
        (mbit_2, state_2, info_2)
    };
    eprintln!(
        "goodput {mbit_1:.1}, {mbit_2:.1} Mbit/s (kernel bbr, alternating: {kernel_1:.1}, {kernel_2:.1}); mode {:?}; probe_rtt {}; min_rtt {} us; bw {} B/s; retrans {}",
        state.mode(),
        state.probe_rtt_count,
        state.min_rtt_us,
        cc_ebpf_common::bbr::bw_to_bytes_per_sec(state.max_bw(), info.snd_mss),
        info.total_retrans
    );
    assert!(
        kernel_mbit >= 50.0,
        "the path itself is broken: kernel bbr carried {kernel_mbit:.1} of 100 Mbit/s"
    );
    assert!(
        mbit >= 0.9 * kernel_mbit,
        "bbr-p2p carried {mbit:.1} Mbit/s, kernel bbr {kernel_mbit:.1} on the same path"
    );
    assert!(
        seen(&state, Mode::Startup) && seen(&state, Mode::Drain) && seen(&state, Mode::ProbeBw),
        "modes seen {:#b}",
        state.modes_seen
    );
    assert_eq!(state.full_bw_reached, 1);
    // The bandwidth estimate is what the path carries: at least 0.9 of the best goodput either
    // algorithm reached on it (a max filter of delivery rates is not below a 5 s average), and
    // not above the link rate (100 Mbit/s) by more than 10%. The path's rate, not the link's, is
    // the floor: the delay line forwards at the machine's pace, and the project's CI once
    // carried 61.4–71.7 Mbit/s with either algorithm (bbr-p2p's estimate 72.0 there, against
    // the former fixed floor of 85).
    let bw =
        cc_ebpf_common::bbr::bw_to_bytes_per_sec(state.max_bw(), info.snd_mss) as f64 * 8.0 / 1e6;
    let carried = mbit.max(kernel_mbit);
    assert!(
        bw >= 0.9 * carried && bw <= 110.0,
        "BtlBw estimate {bw:.1} Mbit/s; the path carried {carried:.1} Mbit/s"
    );
    // A socket without the node's careful-resume entry starts cold (resume per PeerId is
    // tested with nodes in tests/resume.rs; there is no host-wide record any more).
    assert_eq!(
        (
            Start::from_u8(state.start),
            Reason::from_u8(state.start_reason)
        ),
        (Start::Cold, Reason::None)
    );
}

/// The kernel's monotonic clock in µs: the clock of `tcp_mstamp`, which stamps the state.
fn kernel_now_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) },
        0
    );
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// PROBE_RTT comes when no RTT sample has been as low as the window's minimum for the
/// PROBE_RTT interval, and drains the queue to measure the path's RTT. With the min-RTT window
/// shortened to 4 s through the config map, the interval is 2 s (deviation 7: half the
/// window, v3's 5 s of 10 s). The namespaces start with no propagation delay: RTT samples vary
/// with the queue and the scheduler, and a new lowest sample legitimately restarts the timer
/// (v3's `probe_rtt_min_us` filter) — on a quiet machine a flow that drains its queue in every
/// cruise can keep restarting it, and then no PROBE_RTT is due (seen in CI: 0 entries, 4
/// restarts in 7 s). So after 1.5 s the path's RTT rises by 2 ms (a delay line of 1 ms each way
/// at the router; this kernel has no netem): no
/// later sample can reach the old minimum, the timer must expire and PROBE_RTT must come, and
/// by the end the min-RTT window (4 s) has followed the path (≥ 1 ms). Each entry is checked
/// against the timer read back from the socket: none before the timer expired, none missed once
/// it had, and each drained the queue (its lowest RTT within 1 ms of the path's).
#[test]
fn probe_rtt_follows_the_min_rtt_window() {
    if !kernel_tests_possible() {
        return;
    }
    const INTERVAL_US: u64 = 2_000_000;
    // PROBE_RTT starts on the first ACK after expiry; ACKs come every few µs here, so this
    // only covers the scheduling of this process between its samples.
    const LATE_US: u64 = 300_000;
    // The path's RTT rise after 1.5 s: the delay line holds every forwarded packet, data and
    // ACKs, for half of it.
    const RISE_US: u32 = 2_000;
    let bbr = register();
    let config = cc_ebpf_common::bbr::BbrConfig {
        min_rtt_window_us: 2 * INTERVAL_US as u32,
        ..bbr.config().unwrap()
    };
    bbr.set_config(config).unwrap();
    let net = Routed::new("bbrrtt", 63, "100mbit", "2000000");
    let mut flow = net.flow(5104, "bbr_p2p");
    let start = Instant::now();
    let mut samples: Vec<(u64, BbrState)> = Vec::new();
    let mut delay = None;
    while start.elapsed() < Duration::from_secs(7) {
        if delay.is_none() && start.elapsed() >= Duration::from_millis(1500) {
            delay = Some(DelayLine::start(&net.router, RISE_US as u64 / 2_000));
        }
        flow.send(64 << 10);
        let state = bbr.state(flow.client.as_fd()).expect("bbr-p2p state");
        samples.push((kernel_now_us(), state));
    }
    flow.finish();
    let count = samples.last().unwrap().1.probe_rtt_count;
    let mut resets = 0;
    for pair in samples.windows(2) {
        let ((_, before), (now, after)) = (pair[0], pair[1]);
        resets += u32::from(after.probe_rtt_min_stamp_us != before.probe_rtt_min_stamp_us);
        if after.probe_rtt_count > before.probe_rtt_count {
            // Entered: not before the timer (as last read) expired.
            assert!(
                now >= before.probe_rtt_min_stamp_us + INTERVAL_US,
                "PROBE_RTT {} entered {} ms after the timer's last restart",
                after.probe_rtt_count,
                (now - before.probe_rtt_min_stamp_us) / 1000
            );
        }
        if before.mode() == Mode::ProbeRtt && after.mode() != Mode::ProbeRtt {
            // Left: the lowest RTT while in it is the path's (tens of µs), not a queue's.
            eprintln!(
                "PROBE_RTT {}: lowest RTT {} us, min RTT {} us",
                after.probe_rtt_count, after.probe_rtt_min_us, after.min_rtt_us
            );
            assert!(
                after.probe_rtt_min_us < RISE_US + 1_000,
                "PROBE_RTT {} did not drain the queue: lowest RTT {} us",
                after.probe_rtt_count,
                after.probe_rtt_min_us
            );
        }
        if after.mode() != Mode::ProbeRtt {
            // Not in PROBE_RTT: the timer has not been expired for long.
            assert!(
                now <= after.probe_rtt_min_stamp_us + INTERVAL_US + LATE_US,
                "no PROBE_RTT {} ms after the timer's last restart",
                (now - after.probe_rtt_min_stamp_us) / 1000
            );
        }
    }
    eprintln!(
        "PROBE_RTT entered {count} times in 7 s with a 2 s interval; timer restarted {resets} \
         times in {} samples",
        samples.len()
    );
    assert!(
        (1..=3).contains(&count),
        "PROBE_RTT entered {count} times (at most once per interval)"
    );
    assert!(
        samples.iter().any(|(_, s)| s.mode() == Mode::ProbeRtt),
        "no sample caught PROBE_RTT"
    );
    let last = samples.last().unwrap().1;
    assert!(
        last.min_rtt_us >= RISE_US / 2,
        "min RTT {} us 5.5 s after the path's RTT rose by {RISE_US} us: the 4 s window did not \
         follow the path",
        last.min_rtt_us
    );
}

/// Issue 10's "Done when": on a path of one BDP of buffer with 1% random loss, loss that is not
/// congestion never drives the maximum safe volume in flight (`inflight_hi`, read from the
/// socket's exported state) below the path's BDP. The path is 100 Mbit/s with 20 ms of
/// propagation delay (the delay line, 10 ms each way) and a 250 kB buffer; its BDP is fixed by
/// the link, not by the model's estimate: 100 Mbit/s × 20 ms over 1514-byte frames (tbf counts
/// the Ethernet header) is 165 packets.
///
/// A thread of its own samples the state every 20 ms while the test's thread sends (sampling
/// between writes took too few samples on a loaded machine); the test asserts it got at least
/// one sample per 100 ms of the 12 s.
#[test]
fn random_loss_does_not_bound_inflight_hi_below_the_bdp() {
    if !kernel_tests_possible() {
        return;
    }
    const BDP_PACKETS: u32 = 100_000_000 / 8 * 20 / 1000 / 1514;
    const SECS: u64 = 12;
    let bbr = register();
    let net = Routed::new("bbrloss", 64, "100mbit", "250000");
    let _line = common::DelayLine::start(&net.router, 10);
    net.random_loss(0.01);
    let mut flow = net.flow(5105, "bbr_p2p");
    let sampled = flow
        .client
        .try_clone()
        .expect("a second handle on the socket");
    let done = std::sync::atomic::AtomicBool::new(false);
    let start = Instant::now();
    let (sent, samples) = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut samples: Vec<(Duration, BbrState)> = Vec::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let state = bbr.state(sampled.as_fd()).expect("bbr-p2p state");
                samples.push((start.elapsed(), state));
                std::thread::sleep(Duration::from_millis(20));
            }
            samples
        });
        let mut sent = 0u64;
        while start.elapsed() < Duration::from_secs(SECS) {
            flow.send(64 << 10);
            sent += 64 << 10;
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (sent, sampler.join().expect("sampler thread"))
    });
    let mbit = sent as f64 * 8.0 / start.elapsed().as_secs_f64() / 1e6;
    let info = sockets::tcp_info(flow.client.as_fd()).unwrap();
    flow.finish();
    let (_, state) = *samples.last().expect("samples");
    let bounded: Vec<&(Duration, BbrState)> = samples
        .iter()
        .filter(|(_, s)| s.inflight_hi != cc_ebpf_common::bbr::UNBOUNDED)
        .collect();
    let lowest = bounded.iter().min_by_key(|(_, s)| s.inflight_hi);
    let widest_gap = samples
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .max()
        .unwrap_or_default();
    eprintln!(
        "goodput {mbit:.1} Mbit/s, {} retransmitted of {} sent; {} samples (widest gap {} ms), \
         inflight_hi bounded in {} (lowest {:?}, BDP {BDP_PACKETS}); loss bounds set {}, probes {}",
        info.total_retrans,
        info.data_segs_out,
        samples.len(),
        widest_gap.as_millis(),
        bounded.len(),
        lowest.map(|(_, s)| s.inflight_hi),
        state.loss_bound_count,
        state.bw_probe_count
    );
    // The model's course (for `--nocapture`): every 0.5 s, and each change of inflight_hi.
    let to_mbit =
        |bw: u32| cc_ebpf_common::bbr::bw_to_bytes_per_sec(bw, info.snd_mss) as f64 * 8e-6;
    let mut last: Option<(Duration, u32)> = None;
    for (at, s) in &samples {
        let changed = last.is_none_or(|(_, hi)| hi != s.inflight_hi);
        let periodic = last.is_none_or(|(t, _)| *at >= t + Duration::from_millis(500));
        if !(changed || periodic) {
            continue;
        }
        last = Some((*at, s.inflight_hi));
        eprintln!(
            "{:6.2} s {:?}/{:?}: bw_hi {:.1}/{:.1} bw_lo {:.1} Mbit/s, inflight_hi {} lo {} at_loss \
             {}, min_rtt {} us, loss bounds {}, probes {}",
            at.as_secs_f64(),
            s.mode(),
            s.phase(),
            to_mbit(s.bw_hi[0]),
            to_mbit(s.bw_hi[1]),
            to_mbit(s.bw_lo),
            s.inflight_hi,
            s.inflight_lo,
            s.inflight_at_loss,
            s.min_rtt_us,
            s.loss_bound_count,
            s.bw_probe_count
        );
    }
    // The test means something only if the loss happened and the flow probed through it.
    assert!(
        info.total_retrans as f64 > 0.005 * info.data_segs_out as f64,
        "{} of {} segments retransmitted: the 1% loss did not happen",
        info.total_retrans,
        info.data_segs_out
    );
    assert!(
        samples.len() as u64 >= SECS * 10,
        "{} samples in {SECS} s (at least one per 100 ms wanted)",
        samples.len()
    );
    assert_eq!(state.mode(), Mode::ProbeBw, "mode at the end");
    assert!(state.bw_probe_count >= 2, "{} probes", state.bw_probe_count);
    for (at, s) in &samples {
        assert!(
            s.inflight_hi >= BDP_PACKETS,
            "at {:.2} s ({:?}/{:?}): inflight_hi {} below the BDP of {BDP_PACKETS} packets",
            at.as_secs_f64(),
            s.mode(),
            s.phase(),
            s.inflight_hi
        );
    }
}

/// One sample of a traced flow: the socket's `tcp_info`, and bbr-p2p's state when it is ours.
struct TraceSample {
    at: Duration,
    info: sockets::TcpInfo,
    state: Option<BbrState>,
}

/// A diagnostic, not a check (ignored; `--ignored --nocapture`): one flow of `cc` for 12 s on
/// issue 10's loss path (100 Mbit/s, 20 ms, `P2PCC_TRACE_LIMIT` bytes of buffer, default one
/// BDP; `P2PCC_TRACE_LOSS` random loss, default 1%), its `tcp_info` and (bbr-p2p) state read
/// every 10 ms by a thread of its own; prints where the time goes: recovery, cwnd- vs
/// pacing-limited, the phases and the short-term bounds.
fn trace_flow(cc: &str, n: u8) -> Vec<TraceSample> {
    let limit = std::env::var("P2PCC_TRACE_LIMIT").unwrap_or_else(|_| "250000".into());
    let loss: f64 = std::env::var("P2PCC_TRACE_LOSS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.01);
    let bbr = register();
    let net = Routed::new("bbrtrace", n, "100mbit", &limit);
    let _line = common::DelayLine::start(&net.router, 10);
    net.random_loss(loss);
    let mut flow = net.flow(5106, cc);
    let sampled = flow.client.try_clone().expect("a second handle");
    let done = std::sync::atomic::AtomicBool::new(false);
    let start = Instant::now();
    let samples = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut samples = Vec::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                samples.push(TraceSample {
                    at: start.elapsed(),
                    info: sockets::tcp_info(sampled.as_fd()).unwrap(),
                    state: bbr.state(sampled.as_fd()),
                });
                std::thread::sleep(Duration::from_millis(10));
            }
            samples
        });
        while start.elapsed() < Duration::from_secs(12) {
            flow.send(64 << 10);
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        sampler.join().expect("sampler")
    });
    flow.finish();
    // Where the retransmissions came from: packets the random-loss rule dropped (its counter)
    // and packets the bottleneck's tbf dropped (a full buffer).
    let rules = common::sh(&[
        "ip",
        "netns",
        "exec",
        &net.router,
        "iptables-legacy",
        "-L",
        "FORWARD",
        "-v",
        "-x",
        "-n",
    ]);
    let random_drops: u64 = rules
        .lines()
        .filter(|l| l.contains("statistic"))
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    let qdisc = common::sh(&[
        "tc",
        "-n",
        &net.router,
        "-s",
        "qdisc",
        "show",
        "dev",
        "p2pcc-r2",
    ]);
    let queue_drops: u64 = qdisc
        .split("dropped ")
        .nth(1)
        .and_then(|t| t.split(',').next()?.trim().parse().ok())
        .unwrap_or(0);
    let last = &samples.last().expect("samples").info;
    eprintln!(
        "{cc}: over the whole flow {} segments retransmitted of {} sent; dropped by the random-loss \
         rule {random_drops}, by the bottleneck queue {queue_drops}",
        last.total_retrans, last.data_segs_out
    );
    samples
}

/// Packets in flight by the kernel's own count (`tcp_packets_in_flight`).
fn inflight(i: &sockets::TcpInfo) -> u32 {
    (i.unacked + i.retrans).saturating_sub(i.sacked + i.lost)
}

/// `P2PCC_TRACE_DUMP=<path>`: every sample of a traced flow as CSV in `<path>.<cc>`, the
/// socket's columns first; the model's columns follow for bbr-p2p (kernel bbr has no state).
fn dump_trace(path: &str, cc: &str, samples: &[TraceSample]) {
    use std::fmt::Write as _;
    let mss = samples.first().map_or(1448, |x| x.info.snd_mss);
    let to_mbit = |bw: u32| cc_ebpf_common::bbr::bw_to_bytes_per_sec(bw, mss) as f64 * 8e-6;
    let mut csv = String::from("t,ca,cwnd,inflight,pacing,srtt,retrans");
    if samples.iter().any(|x| x.state.is_some()) {
        csv.push_str(
            ",mode,phase,max_bw,bw_lo,inflight_hi,inflight_lo,at_loss,pipe,min_rtt,round_min_rtt,\
             bw_latest,extra_acked,tso,too_high,risky,ack_phase,loss_bounds,probes",
        );
    }
    csv.push('\n');
    for x in samples {
        let _ = write!(
            csv,
            "{:.3},{},{},{},{:.1},{},{}",
            x.at.as_secs_f64(),
            x.info.ca_state,
            x.info.snd_cwnd,
            inflight(&x.info),
            x.info.pacing_rate as f64 * 8e-6,
            x.info.rtt_us,
            x.info.total_retrans
        );
        if let Some(st) = x.state {
            let _ = write!(
                csv,
                ",{:?},{:?},{:.1},{:.1},{},{},{},{:.0},{},{},{:.1},{},{},{},{},{},{},{}",
                st.mode(),
                st.phase(),
                to_mbit(st.max_bw()),
                if st.bw_lo == UNBOUNDED {
                    0.0
                } else {
                    to_mbit(st.bw_lo)
                },
                st.inflight_hi,
                st.inflight_lo,
                st.inflight_at_loss,
                f64::from(st.max_bw()) * f64::from(st.min_rtt_us) / (1u64 << 24) as f64,
                st.min_rtt_us,
                st.round_min_rtt_us,
                to_mbit(st.bw_latest),
                st.extra_acked[0].max(st.extra_acked[1]),
                st.tso_segs_goal,
                st.prev_probe_too_high,
                st.stopped_risky_probe,
                st.ack_phase,
                st.loss_bound_count,
                st.bw_probe_count
            );
        }
        csv.push('\n');
    }
    std::fs::write(format!("{path}.{cc}"), csv).unwrap();
}

fn summarize(cc: &str, samples: &[TraceSample]) {
    // From 2 s on (after STARTUP), as the bench's RTT statistics.
    let s: Vec<&TraceSample> = samples
        .iter()
        .filter(|s| s.at >= Duration::from_secs(2))
        .collect();
    let n = s.len() as f64;
    let mss = s[0].info.snd_mss;
    let acked = s.last().unwrap().info.bytes_acked - s[0].info.bytes_acked;
    let secs = (s.last().unwrap().at - s[0].at).as_secs_f64();
    let recovery = s.iter().filter(|x| x.info.ca_state >= 3).count() as f64 / n;
    let cwnd_limited = s
        .iter()
        .filter(|x| inflight(&x.info) + 2 >= x.info.snd_cwnd)
        .count() as f64
        / n;
    let mean = |f: &dyn Fn(&TraceSample) -> f64| s.iter().map(|x| f(x)).sum::<f64>() / n;
    let retrans = s.last().unwrap().info.total_retrans - s[0].info.total_retrans;
    let out = s.last().unwrap().info.data_segs_out - s[0].info.data_segs_out;
    eprintln!(
        "{cc}: goodput {:.1} Mbit/s (2-12 s), retrans {retrans}/{out}; {} samples; recovery {:.0}%, \
         inflight >= cwnd-2 {:.0}%; mean cwnd {:.0}, inflight {:.0}, pacing {:.1} Mbit/s, srtt {:.1} ms, \
         delivery_rate {:.1} Mbit/s; sndbuf-limited {:.0}% of busy",
        acked as f64 * 8.0 / secs / 1e6,
        s.len(),
        recovery * 100.0,
        cwnd_limited * 100.0,
        mean(&|x| f64::from(x.info.snd_cwnd)),
        mean(&|x| f64::from(inflight(&x.info))),
        mean(&|x| x.info.pacing_rate as f64 * 8e-6),
        mean(&|x| f64::from(x.info.rtt_us) / 1000.0),
        mean(&|x| x.info.delivery_rate as f64 * 8e-6),
        (s.last().unwrap().info.sndbuf_limited - s[0].info.sndbuf_limited) as f64 * 100.0
            / (s.last().unwrap().info.busy_time - s[0].info.busy_time).max(1) as f64,
    );
    // The bench's RTT statistic is the smoothed RTT's median and 95th percentile.
    let mut srtts: Vec<u32> = s.iter().map(|x| x.info.rtt_us).collect();
    srtts.sort_unstable();
    let srtt_q =
        |q: f64| f64::from(srtts[((srtts.len() - 1) as f64 * q).round() as usize]) / 1000.0;
    eprintln!(
        "  srtt p50 {:.1} ms, p90 {:.1}, p95 {:.1}, p99 {:.1}, max {:.1}",
        srtt_q(0.5),
        srtt_q(0.9),
        srtt_q(0.95),
        srtt_q(0.99),
        srtt_q(1.0)
    );
    if s[0].state.is_none() {
        return;
    }
    // Which phases the tail comes from: the samples at or above the 90th percentile.
    let tail = srtt_q(0.9) * 1000.0;
    let tail_samples: Vec<&&TraceSample> = s
        .iter()
        .filter(|x| f64::from(x.info.rtt_us) >= tail)
        .collect();
    for (mode, phase) in [
        (Mode::ProbeBw, Some(Phase::Up)),
        (Mode::ProbeBw, Some(Phase::Down)),
        (Mode::ProbeBw, Some(Phase::Cruise)),
        (Mode::ProbeBw, Some(Phase::Refill)),
        (Mode::ProbeRtt, None),
        (Mode::Startup, None),
        (Mode::Drain, None),
    ] {
        let of = |x: &TraceSample| {
            let st = x.state.unwrap();
            st.mode() == mode && (phase.is_none() || Some(st.phase()) == phase)
        };
        let in_tail = tail_samples.iter().filter(|x| of(x)).count();
        let all: Vec<u32> = s.iter().filter(|x| of(x)).map(|x| x.info.rtt_us).collect();
        if all.is_empty() {
            continue;
        }
        eprintln!(
            "  srtt >= p90 ({:.1} ms) in {mode:?}/{phase:?}: {:.0}% of the tail; {:.0}% of samples \
             there, srtt mean {:.1} max {:.1} ms",
            tail / 1000.0,
            in_tail as f64 * 100.0 / tail_samples.len().max(1) as f64,
            all.len() as f64 * 100.0 / n,
            all.iter().map(|&r| f64::from(r)).sum::<f64>() / all.len() as f64 / 1000.0,
            f64::from(*all.iter().max().unwrap()) / 1000.0
        );
    }
    let to_mbit = |bw: u32| cc_ebpf_common::bbr::bw_to_bytes_per_sec(bw, mss) as f64 * 8e-6;
    // Per phase: share of samples, goodput while in it, cwnd-limited share, bounds.
    for phase in [Phase::Down, Phase::Cruise, Phase::Refill, Phase::Up] {
        let idx: Vec<usize> = (1..s.len())
            .filter(|&i| {
                let st = s[i].state.unwrap();
                st.mode() == Mode::ProbeBw && st.phase() == phase
            })
            .collect();
        if idx.is_empty() {
            continue;
        }
        let k = idx.len() as f64;
        let bytes: u64 = idx
            .iter()
            .map(|&i| s[i].info.bytes_acked - s[i - 1].info.bytes_acked)
            .sum();
        let time: f64 = idx
            .iter()
            .map(|&i| (s[i].at - s[i - 1].at).as_secs_f64())
            .sum();
        let st = |i: usize| s[i].state.unwrap();
        let lo_bounded = idx.iter().filter(|&&i| st(i).bw_lo != UNBOUNDED).count() as f64;
        let ilo_bounded = idx
            .iter()
            .filter(|&&i| st(i).inflight_lo != UNBOUNDED)
            .count() as f64;
        let avg = |f: &dyn Fn(usize) -> f64| idx.iter().map(|&i| f(i)).sum::<f64>() / k;
        eprintln!(
            "  {phase:?}: {:.0}% of samples, {:.1} Mbit/s delivered, recovery {:.0}%, inflight >= \
             cwnd-2 {:.0}%; mean cwnd {:.0} inflight {:.0} pacing {:.1}; max_bw {:.1}, bw_lo set \
             {:.0}% (mean when set {:.1}), inflight_lo set {:.0}% (mean {:.0}), inflight_hi {:.0}, \
             BDP est {:.0}",
            k * 100.0 / n,
            bytes as f64 * 8.0 / time / 1e6,
            idx.iter().filter(|&&i| s[i].info.ca_state >= 3).count() as f64 * 100.0 / k,
            idx.iter()
                .filter(|&&i| inflight(&s[i].info) + 2 >= s[i].info.snd_cwnd)
                .count() as f64
                * 100.0
                / k,
            avg(&|i| f64::from(s[i].info.snd_cwnd)),
            avg(&|i| f64::from(inflight(&s[i].info))),
            avg(&|i| s[i].info.pacing_rate as f64 * 8e-6),
            avg(&|i| to_mbit(st(i).max_bw())),
            lo_bounded * 100.0 / k,
            idx.iter()
                .filter(|&&i| st(i).bw_lo != UNBOUNDED)
                .map(|&i| to_mbit(st(i).bw_lo))
                .sum::<f64>()
                / lo_bounded.max(1.0),
            ilo_bounded * 100.0 / k,
            idx.iter()
                .filter(|&&i| st(i).inflight_lo != UNBOUNDED)
                .map(|&i| f64::from(st(i).inflight_lo))
                .sum::<f64>()
                / ilo_bounded.max(1.0),
            avg(&|i| f64::from(st(i).inflight_hi.min(100_000))),
            avg(&|i| f64::from(st(i).max_bw()) * f64::from(st(i).min_rtt_us) / (1u64 << 24) as f64),
        );
    }
    let last = s.last().unwrap().state.unwrap();
    eprintln!(
        "  probes {}, loss bounds {}, probe_rtt {}, undo {}",
        last.bw_probe_count, last.loss_bound_count, last.probe_rtt_count, last.undo_count
    );
}

#[test]
#[ignore = "diagnostic: prints where the time goes under random loss (--nocapture)"]
fn trace_random_loss_side_by_side() {
    if !kernel_tests_possible() {
        return;
    }
    // `P2PCC_TRACE_CC`: one algorithm alone.
    let only = std::env::var("P2PCC_TRACE_CC").ok();
    for (cc, n) in [("bbr_p2p", 65), ("bbr", 66)]
        .into_iter()
        .filter(|(cc, _)| only.as_deref().is_none_or(|o| o == *cc))
    {
        let samples = trace_flow(cc, n);
        summarize(cc, &samples);
        if let Ok(path) = std::env::var("P2PCC_TRACE_DUMP") {
            dump_trace(&path, cc, &samples);
        }
    }
}
