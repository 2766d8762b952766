//! Careful resume on the packet-level simulation (`Path::run`): the resume stage runs after the
//! model on every ACK as `bbr_p2p.rs` runs it. The record is the bench path: 100 Mbit/s,
//! 40 ms (12.5 MB/s, BDP 500 kB); the assertions are about the path (losses, retreats), with
//! bounds derived from the path, not from the implementation's formulas.

use cc_ebpf_common::resume::{Hint, Reason, SavedPath, Start, offer};

use super::*;

const RECORD: SavedPath = SavedPath {
    bw_bytes_per_sec: 12_500_000,
    min_rtt_us: 40_000,
    inflight_hi_bytes: None,
    sampled_at_ms: 0,
};

fn hint() -> Hint {
    offer(&RECORD, 0, 1).unwrap()
}

fn resumed_cfg() -> BbrConfig {
    BbrConfig {
        resume_enabled: 1,
        ..BbrConfig::DEFAULT
    }
}

fn start(out: &Outcome) -> (Start, Reason) {
    (Start::from_u8(out.start.0), Reason::from_u8(out.start.1))
}

/// Issue 13's 1% case: on the record's own path with 1% random loss, a resumed flow must not
/// be retreated in ≥ 90% of runs. Random loss BBR does not call congestion (v3's STARTUP rule:
/// ≥ 6 lossy ACKs in a round and more than 2% of its flight) must not retreat it.
#[test]
fn sim_one_percent_random_loss_rarely_retreats_a_resumed_flow() {
    let path = Path {
        resume: Some(hint()),
        ..Path::mbit(100.0, 40, 500_000, 0.01)
    };
    let mut starts = Vec::new();
    for seed in 1..=20 {
        let out = path.run(&resumed_cfg(), 4, seed);
        starts.push(start(&out));
    }
    eprintln!("{starts:?}");
    let jumped = starts
        .iter()
        .filter(|(s, _)| matches!(s, Start::Resumed | Start::Retreated))
        .count();
    let kept = starts.iter().filter(|(s, _)| *s == Start::Resumed).count();
    assert_eq!(
        jumped, 20,
        "every run jumps on a cwnd-limited bulk flow: {starts:?}"
    );
    assert!(
        kept * 10 >= jumped * 9,
        "{kept} of {jumped} kept: {starts:?}"
    );
}

/// The changed path's inherent excess in packets: the 250 kB jump less what one 40 ms round
/// of the 20 Mbit/s link and the 25 kB buffer take (≈ 86).
fn changed_path_inherent_excess() -> u64 {
    let mss = f64::from(MSS);
    let jump_pkts = 250_000.0 / mss;
    let link_pkts = 20e6 / 8.0 * 0.040 / mss;
    let buffer_pkts = (25_000 / MSS) as f64;
    (jump_pkts - link_pkts - buffer_pkts).ceil() as u64
}

/// Issue 13's changed path: a record from 100 Mbit/s, now 20 Mbit/s with a 0.25-BDP buffer
/// (25 kB). The jump (half the saved BDP, 250 kB, paced over one 40 ms RTT) is all sent before
/// the first loss can be seen (a drop is reported a round trip after it happens), so what the
/// link and buffer cannot take is lost whatever the sender does next: 250 kB − 20 Mbit/s × 40
/// ms − 25 kB = 125 kB, 86 packets. Beyond that the resumed flow may lose no more than a cold
/// start does, must retreat on loss, and must never again pace above what the path carried
/// (here 1.25 × 20 Mbit/s, PROBE_BW's probing gain, bounds it).
#[test]
fn sim_changed_path_retreats_and_loses_only_the_jumps_inherent_excess() {
    let inherent = changed_path_inherent_excess();
    for seed in 1..=3 {
        let cold = Path::mbit(20.0, 40, 25_000, 0.0).run(&BbrConfig::DEFAULT, 4, seed);
        let resumed = Path {
            resume: Some(hint()),
            ..Path::mbit(20.0, 40, 25_000, 0.0)
        }
        .run(&resumed_cfg(), 4, seed);
        eprintln!(
            "seed {seed}: cold lost {} util {:.3}; resumed lost {} util {:.3} {:?}, pacing after \
             {} B/s; inherent {inherent}",
            cold.lost_first_2s,
            cold.utilisation,
            resumed.lost_first_2s,
            resumed.utilisation,
            start(&resumed),
            resumed.max_pacing_after_resume
        );
        assert_eq!(start(&resumed), (Start::Retreated, Reason::Loss));
        assert!(
            resumed.lost_first_2s <= cold.lost_first_2s + inherent,
            "resumed lost {} > cold {} + the jump's inherent {inherent}",
            resumed.lost_first_2s,
            cold.lost_first_2s
        );
        assert!(
            resumed.max_pacing_after_resume as f64 <= 1.25 * 20e6 / 8.0 * 1.01,
            "paced at {} B/s after the retreat",
            resumed.max_pacing_after_resume
        );
        // Completion-side: the retreat must not leave the flow crawling.
        assert!(resumed.utilisation > 0.9 * cold.utilisation, "{resumed:?}");
    }
}

/// A run's start and, if validation ended below 80%, (cwnd, validated pipe) in packets.
type HeldRun = ((Start, Reason), Option<(u32, u32)>);

/// Issue 13's changed path when the receiver's window holds the jump back (`rwnd`: initial
/// packets, growth per packet delivered), seeds 1–3: the starts, and for each seed that ended
/// validation below 80% of the record the cwnd it left and the validated pipe. Whatever the
/// start, the flow may lose no more than a cold start with the same window plus the jump's
/// inherent excess (86 packets, as in the test above), and must not crawl; after a validation
/// below 80% cwnd must be no more than what the path acknowledged since the jump (RFC 9959's
/// validated pipe; before c8daa41 it stayed at 189 packets over a 28-packet pipe).
fn changed_path_held_by_the_receive_window(rwnd: (u32, u32)) -> Vec<HeldRun> {
    let inherent = changed_path_inherent_excess();
    let rwnd = Some(rwnd);
    let mut runs = Vec::new();
    for seed in 1..=3 {
        let cold = Path {
            rwnd,
            ..Path::mbit(20.0, 40, 25_000, 0.0)
        }
        .run(&BbrConfig::DEFAULT, 4, seed);
        let resumed = Path {
            resume: Some(hint()),
            rwnd,
            ..Path::mbit(20.0, 40, 25_000, 0.0)
        }
        .run(&resumed_cfg(), 4, seed);
        eprintln!(
            "seed {seed}: cold lost {} util {:.3}; resumed lost {} util {:.3} {:?}, after \
             validation (cwnd, pipe) {:?}; inherent {inherent}",
            cold.lost_first_2s,
            cold.utilisation,
            resumed.lost_first_2s,
            resumed.utilisation,
            start(&resumed),
            resumed.after_validation,
        );
        if let Some((cwnd, pipe)) = resumed.after_validation {
            assert!(
                cwnd <= pipe,
                "cwnd {cwnd} after validation, path delivered {pipe} since the jump"
            );
        }
        assert!(
            resumed.lost_first_2s <= cold.lost_first_2s + inherent,
            "resumed lost {} > cold {} + the jump's inherent {inherent}",
            resumed.lost_first_2s,
            cold.lost_first_2s
        );
        assert!(resumed.utilisation > 0.9 * cold.utilisation, "{resumed:?}");
        runs.push((start(&resumed), resumed.after_validation));
    }
    runs
}

/// The window starts at 4 packets and doubles per round (one session-5 bench run: the jump
/// was not contradicted, validation ended below 80% of the record, and the flow lost 434 kB).
/// Flights held by a window below the saved BDP are no evidence (`resume.rs` deviation 8), so
/// validation waits at the record's rate; once the window opens past the new path's link and
/// buffer, BBR's loss verdict retreats the flow — within the bounds above.
#[test]
fn sim_changed_path_held_by_the_receive_window_retreats_when_it_opens() {
    for (start, _) in changed_path_held_by_the_receive_window((4, 1)) {
        assert_eq!(start, (Start::Retreated, Reason::Loss));
    }
}

/// A window that never opens (40 packets, 58 kB, below the new path's 125 kB of link and
/// buffer): no loss, no queue, no verdict, no evidence. Validation ends after the bound of
/// rounds without evidence (`Reason::RateLimited`) at a fraction of the record's rate, with
/// cwnd no more than the validated pipe.
#[test]
fn sim_changed_path_held_by_a_window_that_never_opens_keeps_only_the_validated_pipe() {
    for (start, after_validation) in changed_path_held_by_the_receive_window((40, 0)) {
        assert_eq!(start, (Start::Resumed, Reason::RateLimited));
        assert!(after_validation.is_some(), "validation never ended");
    }
}

/// Issue 13's same path with the receiver's and the application's windows of a fresh libp2p
/// connection: the receive window starts at 64 KiB (44 packets) and yamux's stream credit at
/// 256 KiB (181 packets), each doubling per round it is used up. The validating rounds are
/// application- or window-limited, which is no evidence against the record (deviation 8):
/// the resumed flow must keep the record (validated at its rate, not a STARTUP overshoot
/// from the held-back rate), lose no more than a cold start, and deliver 8 MiB no later.
///
/// Also without those windows (a sender that always has data and a receiver that advertises
/// enough): what resume gives when neither the application nor the receiver holds it back.
#[test]
fn sim_same_path_held_by_windows_keeps_the_record() {
    fn held(resume: Option<Hint>) -> Path {
        Path {
            resume,
            rwnd: Some((44, 1)),
            app: Some((181, 1)),
            ..Path::mbit(100.0, 40, 500_000, 0.0)
        }
    }
    fn bulk(resume: Option<Hint>) -> Path {
        Path {
            resume,
            ..Path::mbit(100.0, 40, 500_000, 0.0)
        }
    }
    let paths: [(u64, fn(Option<Hint>) -> Path); 4] = [(1, held), (2, held), (3, held), (1, bulk)];
    for (seed, path) in paths {
        let cold = path(None).run(&BbrConfig::DEFAULT, 4, seed);
        let resumed = path(Some(hint())).run(&resumed_cfg(), 4, seed);
        eprintln!(
            "seed {seed}: cold lost {} 8 MiB at {:?} us; resumed lost {} 8 MiB at {:?} us {:?}",
            cold.lost_first_2s,
            cold.time_to_8mib_us,
            resumed.lost_first_2s,
            resumed.time_to_8mib_us,
            start(&resumed),
        );
        assert_eq!(start(&resumed), (Start::Resumed, Reason::None));
        assert!(resumed.lost_first_2s <= cold.lost_first_2s, "{resumed:?}");
        assert!(
            resumed.time_to_8mib_us.unwrap() <= cold.time_to_8mib_us.unwrap(),
            "{resumed:?}"
        );
    }
}
