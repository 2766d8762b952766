//! Host tests of the BBRv3 model: table-driven phase transitions and bounds, cases stated in
//! draft-ietf-ccwg-bbr, and a packet-level simulation of a bottleneck with a finite buffer and
//! random loss in which the assertions are about the path (utilisation, loss), not about the
//! model's own numbers.

use std::collections::VecDeque;

use super::*;

const MSS: u32 = 1448;

fn conn() -> Conn {
    Conn {
        now_us: 1_000_000,
        delivered_mstamp_us: 1_000_000,
        mss: MSS,
        cwnd: TCP_INIT_CWND,
        cwnd_clamp: u32::MAX,
        max_pacing_rate: u64::MAX,
        pacing_shift: 10,
        kernel_min_rtt_us: u32::MAX,
        ssthresh: TCP_INFINITE_SSTHRESH,
        ..Conn::default()
    }
}

/// Bandwidth in the model's unit for `mbit` Mbit/s at MSS-sized packets.
fn bw_of_mbit(mbit: u64) -> u32 {
    (mbit * 1_000_000 / 8 * BW_UNIT / u64::from(MSS) / 1_000_000) as u32
}

/// A deterministic random source (xorshift64*), for the model and the simulated loss.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    }

    fn chance(&mut self, p: f64) -> bool {
        f64::from(self.next()) < p * f64::from(u32::MAX)
    }
}

fn no_rand() -> impl FnMut() -> u32 {
    || 0
}

/// Deviation 17's differential check, on every ACK of the simulations: the ACK goes through
/// the fast path (the full model when it does not apply), and from the same state, socket
/// and random source through the full model alone; both must leave the same state (every
/// field, the envelope included) and the same socket (cwnd, pacing rate, ...). Returns
/// whether the fast path took the ACK.
///
/// The glue keeps the fast path's working set in the socket between full ACKs, where this
/// exports it from the state for each ACK: after a fast ACK, the working set it leaves must
/// equal the one exported from the state it was folded into, so that the next ACK sees the
/// same either way.
fn ack_both(s: &mut Bbr, c: &mut Conn, rs: &RateSample, cfg: &BbrConfig, rng: &mut Rng) -> bool {
    let (mut full, mut c_full, mut rng_full) = (*s, *c, rng.clone());
    let mut held = FastState::default();
    s.export_fast(&mut held);
    let ack = FastAck::of(c, rs, 0);
    let fast = s.on_ack_fast_first(c, rs, cfg, &mut || rng.next());
    full.on_ack(&mut c_full, rs, cfg, &mut || rng_full.next());
    assert_eq!(
        (&*s, &*c),
        (&full, &c_full),
        "fast path (took the ACK: {fast}) against the full model on {rs:?}"
    );
    assert_eq!(held.ack(&ack), fast);
    if fast {
        let mut again = FastState::default();
        s.export_fast(&mut again);
        assert_eq!(held.flags & FastState::DIRTY, FastState::DIRTY);
        held.flags &= !FastState::DIRTY;
        assert_eq!(
            held, again,
            "the working set held across a fast ACK on {rs:?}"
        );
    }
    fast
}

/// A flow in PROBE_BW on a 100 Mbit/s, 20 ms path (BDP ≈ 173 packets), cwnd at 2 BDP.
fn probe_bw(phase: Phase) -> (Bbr, Conn) {
    let mut s = Bbr(BbrState {
        mode: Mode::ProbeBw as u8,
        cycle_idx: phase as u8,
        full_bw_reached: 1,
        min_rtt_us: 20_000,
        probe_rtt_min_us: 20_000,
        bw_hi: [bw_of_mbit(100), 0],
        bw_lo: UNBOUNDED,
        inflight_lo: UNBOUNDED,
        inflight_hi: UNBOUNDED,
        bw_probe_up_cnt: UNBOUNDED,
        probe_wait_us: 2_500_000,
        init_cwnd: 10,
        ..BbrState::default()
    });
    let c = Conn {
        cwnd: 346,
        packets_in_flight: 200,
        delivered: 100_000,
        ..conn()
    };
    s.cycle_stamp_us = c.delivered_mstamp_us;
    s.refresh_tso_segs_goal(&c);
    s.min_rtt_stamp_us = c.now_us;
    s.probe_rtt_min_stamp_us = c.now_us;
    (s, c)
}

#[test]
fn probe_bw_phase_transitions() {
    let cfg = BbrConfig::DEFAULT;
    // (name, start phase, set-up, expected phase)
    type Setup = fn(&mut Bbr, &mut Conn, &mut RateSample);
    let table: [(&str, Phase, Setup, Phase); 11] = [
        (
            "DOWN stays while inflight is above the BDP",
            Phase::Down,
            |_, _, rs| rs.prior_in_flight = 250,
            Phase::Down,
        ),
        (
            "DOWN cruises once inflight is at the BDP",
            Phase::Down,
            |_, _, rs| rs.prior_in_flight = 170,
            Phase::Cruise,
        ),
        (
            "DOWN cruises at the BDP even if inflight_hi less headroom is below it (deviation 11)",
            Phase::Down,
            |s, _, rs| {
                s.inflight_hi = 180;
                rs.prior_in_flight = 170;
            },
            Phase::Cruise,
        ),
        (
            "DOWN probes when the wait is over even if not drained",
            Phase::Down,
            |_, c, rs| {
                c.delivered_mstamp_us += 2_600_000;
                rs.prior_in_flight = 250;
            },
            Phase::Refill,
        ),
        (
            "CRUISE holds before the probe wait",
            Phase::Cruise,
            |_, c, _| c.delivered_mstamp_us += 2_400_000,
            Phase::Cruise,
        ),
        (
            "CRUISE probes after the probe wait",
            Phase::Cruise,
            |_, c, _| c.delivered_mstamp_us += 2_600_000,
            Phase::Refill,
        ),
        (
            "CRUISE probes after 63 rounds (Reno coexistence)",
            Phase::Cruise,
            |s, _, _| s.rounds_since_probe = 63,
            Phase::Refill,
        ),
        (
            "REFILL waits for the round to end",
            Phase::Refill,
            |_, _, _| (),
            Phase::Refill,
        ),
        (
            "REFILL goes UP at the round's end",
            Phase::Refill,
            |s, _, _| s.round_start = 1,
            Phase::Up,
        ),
        (
            "UP ends when the delivery rate stopped growing",
            Phase::Up,
            |s, _, _| s.full_bw_now = 1,
            Phase::Down,
        ),
        (
            "UP continues while inflight_hi limits it",
            Phase::Up,
            |s, c, _| {
                s.full_bw_now = 1;
                s.inflight_hi = 300;
                c.cwnd = 300;
                c.cwnd_limited = true;
            },
            Phase::Up,
        ),
    ];
    for (name, phase, setup, want) in table {
        let (mut s, mut c) = probe_bw(phase);
        let mut rs = RateSample {
            prior_in_flight: 200,
            acked_sacked: 2,
            delivered: 170,
            interval_us: 20_000,
            ..Default::default()
        };
        setup(&mut s, &mut c, &mut rs);
        s.update_cycle_phase(&mut c, &rs, &cfg, bw_of_mbit(100), &mut no_rand());
        assert_eq!(s.phase(), want, "{name}");
    }
}

/// Deviation 18: a cruising flow whose loss round ended without an RTT sample within a quarter
/// of `min_rtt` (20 ms here) paces at DOWN's gain until an ACK's RTT sample comes within it;
/// leaving CRUISE ends it too.
#[test]
fn cruising_through_a_standing_queue_drains_until_an_rtt_sample_comes_near_min_rtt() {
    let cfg = BbrConfig::DEFAULT;
    let (down, one) = (cfg.probe_down_gain, BBR_UNIT);
    // (name, draining before, the ACK ends a loss round, its RTT (and the round's lowest) ms,
    // probe time, then draining, pacing gain)
    let table: [(&str, u8, bool, u32, bool, u8, u32); 8] = [
        ("lowest 30 ms: drains", 0, true, 30, false, 1, down),
        ("came within 25 ms: cruises", 0, true, 24, false, 0, one),
        ("exactly 25 ms: cruises", 0, true, 25, false, 0, one),
        ("not judged mid-round", 0, false, 30, false, 0, one),
        ("RTT stays above: drains on", 1, false, 27, false, 1, down),
        ("an ACK within 25 ms ends it", 1, false, 24, false, 0, one),
        ("another such round: drains on", 1, true, 30, false, 1, down),
        ("the probe (REFILL) ends it", 1, true, 30, true, 0, one),
    ];
    for (name, before, round_end, round_min_ms, probe, want, gain) in table {
        let round_min = round_min_ms * 1000;
        let (mut s, mut c) = probe_bw(Phase::Cruise);
        s.cruise_drain = before;
        s.loss_round_start = u8::from(round_end);
        s.round_min_rtt_us = round_min;
        if probe {
            s.rounds_since_probe = 63;
        }
        let rs = RateSample {
            prior_in_flight: 200,
            acked_sacked: 2,
            delivered: 170,
            interval_us: 20_000,
            rtt_us: i64::from(round_min),
            ..Default::default()
        };
        s.update_cycle_phase(&mut c, &rs, &cfg, bw_of_mbit(100), &mut no_rand());
        s.update_gains(&cfg);
        assert_eq!((s.cruise_drain, s.pacing_gain), (want, gain), "{name}");
        assert_eq!(
            s.phase(),
            if probe { Phase::Refill } else { Phase::Cruise },
            "{name}"
        );
    }
}

/// An ACK in a probe round at 100 Mbit/s-ish (170 delivered over 20 ms) reporting `losses` and
/// sent with `prior_in_flight` packets in flight.
fn lossy_ack(losses: i32, prior_in_flight: u32) -> RateSample {
    RateSample {
        losses,
        prior_in_flight,
        acked_sacked: 1,
        delivered: 170,
        interval_us: 20_000,
        ..Default::default()
    }
}

#[test]
fn a_probe_round_losing_more_than_2_percent_sets_inflight_hi_to_the_inflight_then() {
    let cfg = BbrConfig::DEFAULT;
    let (mut s, mut c) = probe_bw(Phase::Up);
    s.bw_probe_samples = 1;
    // The loss round began with 200 packets in flight: 4 losses are 2%, 5 are more.
    s.loss_round_flight = 200;
    s.loss_round_lost = 0;
    s.loss_round_delivered = c.delivered + 1_000;
    let mut rand = no_rand();
    for lost in 1..=4 {
        c.lost = lost;
        let rs = lossy_ack(1, 230);
        s.on_ack(&mut c, &rs, &cfg, &mut rand);
        assert_eq!(
            s.phase(),
            Phase::Up,
            "{lost} losses of 200 are not above 2%"
        );
        assert_eq!(s.inflight_hi, UNBOUNDED);
    }
    c.lost = 5;
    let rs = lossy_ack(1, 240);
    s.on_ack(&mut c, &rs, &cfg, &mut rand);
    // Above 2%, in 5 lossy ACKs and no standing queue: not yet the probe's loss (deviation 20).
    assert_eq!(s.phase(), Phase::Up, "5 lossy ACKs");
    c.lost = 6;
    let rs = lossy_ack(1, 250);
    s.on_ack(&mut c, &rs, &cfg, &mut rand);
    assert_eq!(s.phase(), Phase::Down, "the probe ends");
    assert_eq!(
        s.inflight_hi, 240,
        "inflight_hi is the inflight where the threshold was crossed, not 0.7× it"
    );
    assert_eq!(s.loss_bound_count, 1);
    assert_eq!(s.prev_probe_too_high, 1);
}

#[test]
fn a_probe_crossing_the_threshold_in_recovery_bounds_inflight_hi_at_the_flight_it_sent_into() {
    // The round began with 200 in flight; by the ACK that crosses 2% the losses have left the
    // flight and recovery has cut it to 130. The lost packets were sent into 200 (v3's
    // `tx_in_flight`), which is where the path met loss, not 130 (nor the pipe floor, 173).
    let cfg = BbrConfig::DEFAULT;
    let (mut s, mut c) = probe_bw(Phase::Up);
    s.bw_probe_samples = 1;
    s.loss_round_flight = 200;
    s.loss_round_lost = 0;
    s.loss_round_delivered = c.delivered + 1_000;
    // One ACK reports all five: a queue stood through the round (deviation 20).
    s.round_min_rtt_us = 30_000;
    c.lost = 5;
    c.ca_state = TCP_CA_RECOVERY;
    let rs = lossy_ack(5, 130);
    s.on_ack(&mut c, &rs, &cfg, &mut no_rand());
    // The probe ends (DOWN, and CRUISE at once: 130 in flight is below the target).
    assert_ne!(s.phase(), Phase::Up);
    assert_eq!(s.loss_bound_count, 1);
    assert_eq!(s.inflight_hi, 200);
}

/// Deviation 20: a probe's round above the loss threshold ends the probe and bounds
/// `inflight_hi` (v3) through a queue that stood all round, or in at least `full_loss_cnt`
/// lossy ACKs; without either, 3–5 losses on a 100-packet flight (1% random loss does that
/// in 8% of such rounds) leave the probe going.
#[test]
fn a_probe_round_above_the_threshold_needs_a_standing_queue_or_six_lossy_acks() {
    let cfg = BbrConfig::DEFAULT;
    // (lossy ACKs of one loss each in a round that began with 100 in flight, their RTT
    // samples on a 20 ms min RTT, the probe ends)
    let table = [
        (3, 20_100, false),
        (5, 20_100, false),
        (6, 20_100, true),
        (3, 26_000, true),
        (2, 26_000, false),
    ];
    for (acks, round_min_rtt_us, ends) in table {
        let (mut s, mut c) = probe_bw(Phase::Up);
        s.bw_probe_samples = 1;
        s.loss_round_flight = 100;
        s.loss_round_lost = 0;
        s.loss_round_delivered = c.delivered + 1_000;
        s.round_min_rtt_us = u32::MAX;
        for lost in 1..=acks {
            c.lost = lost;
            let rs = RateSample {
                rtt_us: i64::from(round_min_rtt_us),
                ..lossy_ack(1, 110)
            };
            s.on_ack(&mut c, &rs, &cfg, &mut no_rand());
        }
        let case = format!("{acks} lossy ACKs, round min RTT {round_min_rtt_us} µs");
        assert_eq!(s.phase() != Phase::Up, ends, "{case}: {:?}", s.phase());
        assert_eq!(s.prev_probe_too_high == 1, ends, "{case}");
        assert_eq!(s.loss_bound_count == 1, ends, "{case}");
        assert_eq!(
            s.inflight_hi != UNBOUNDED,
            ends,
            "{case}: {}",
            s.inflight_hi
        );
    }
}

#[test]
fn loss_outside_probing_cuts_only_the_short_term_bounds() {
    let cfg = BbrConfig::DEFAULT;
    let bw = bw_of_mbit(100);
    // (phase or startup, bw_latest, inflight_latest, expected bw_lo, expected inflight_lo)
    let cases: [(Option<Phase>, u32, u32, u32, u32); 5] = [
        // Cruising after a lossy round: 0.7 × the bound, unless the round delivered more.
        (Some(Phase::Cruise), 0, 0, scale(bw, 180), scale(346, 180)),
        (Some(Phase::Cruise), bw - 10, 300, bw - 10, 300),
        (
            Some(Phase::Down),
            bw / 2,
            100,
            scale(bw, 180),
            scale(346, 180),
        ),
        // Probing phases and STARTUP take no short-term cut.
        (Some(Phase::Up), 0, 0, UNBOUNDED, UNBOUNDED),
        (None, 0, 0, UNBOUNDED, UNBOUNDED),
    ];
    for (phase, bw_latest, inflight_latest, want_bw_lo, want_inflight_lo) in cases {
        let (mut s, c) = probe_bw(phase.unwrap_or(Phase::Cruise));
        if phase.is_none() {
            s.mode = Mode::Startup as u8;
        }
        s.loss_in_round = 1;
        s.loss_high_in_round = 1;
        s.inflight_at_loss = 250;
        s.bw_latest = bw_latest;
        s.inflight_latest = inflight_latest;
        s.adapt_lower_bounds(&c, &cfg);
        assert_eq!(
            (s.bw_lo, s.inflight_lo),
            (want_bw_lo, want_inflight_lo),
            "{phase:?}"
        );
        assert_eq!(
            s.inflight_hi, UNBOUNDED,
            "{phase:?}: the long-term bound is not cut"
        );
    }
}

/// Deviation 14: a lossy round with a flight below this flow's BDP estimate cuts the
/// short-term bounds only if the bottleneck's queue stood all round (no RTT sample within a
/// quarter of `min_rtt`): then the flows sharing it have too much in flight, whatever this
/// flow's own estimate says.
#[test]
fn loss_below_the_pipe_cuts_the_short_term_bounds_only_through_a_standing_queue() {
    let cfg = BbrConfig::DEFAULT;
    let bw = bw_of_mbit(100);
    // (lowest RTT of the loss round µs, cut?) on a 20 ms min_rtt.
    let cases = [
        (20_100, false),
        (24_900, false),
        (25_100, true),
        (40_000, true),
        (u32::MAX, false),
    ];
    for (round_min_rtt_us, cut) in cases {
        let (mut s, c) = probe_bw(Phase::Cruise);
        s.loss_in_round = 1;
        s.loss_high_in_round = 1;
        // Below the pipe floor (≈ 173 packets at 100 Mbit/s × 20 ms).
        s.inflight_at_loss = 150;
        s.round_min_rtt_us = round_min_rtt_us;
        s.adapt_lower_bounds(&c, &cfg);
        let want = if cut {
            (scale(bw, 180), scale(346, 180))
        } else {
            (UNBOUNDED, UNBOUNDED)
        };
        assert_eq!(
            (s.bw_lo, s.inflight_lo),
            want,
            "round min RTT {round_min_rtt_us}"
        );
    }
}

#[test]
fn headroom_applies_only_when_cruising() {
    let cfg = BbrConfig::DEFAULT;
    // (mode, phase, expected cap with inflight_hi = 300; the BDP is 173)
    let table = [
        // 15% of 300 is 45; v3's fixed point (38/256 = 14.8%) leaves 256.
        (Mode::ProbeBw, Phase::Cruise, 256),
        (Mode::ProbeBw, Phase::Down, 300),
        (Mode::ProbeBw, Phase::Refill, 300),
        (Mode::ProbeBw, Phase::Up, 300),
        (Mode::ProbeRtt, Phase::Cruise, 256),
        (Mode::Startup, Phase::Up, 1000),
        (Mode::Drain, Phase::Up, 1000),
    ];
    for (mode, phase, want) in table {
        let (mut s, mut c) = probe_bw(phase);
        s.mode = mode as u8;
        s.inflight_hi = 300;
        c.cwnd = 1000;
        s.bound_cwnd_for_inflight_model(&mut c, &cfg);
        assert_eq!(c.cwnd, want, "{mode:?} {phase:?}");
    }
    // Deviation 11: the headroom comes out of the buffer, not the pipe: with inflight_hi at
    // 180, cruising keeps the BDP (173), not 154.
    let (mut s, mut c) = probe_bw(Phase::Cruise);
    s.inflight_hi = 180;
    c.cwnd = 1000;
    s.bound_cwnd_for_inflight_model(&mut c, &cfg);
    assert_eq!(c.cwnd, 173);
    // inflight_lo bounds every phase.
    let (mut s, mut c) = probe_bw(Phase::Up);
    s.inflight_lo = 120;
    c.cwnd = 1000;
    s.bound_cwnd_for_inflight_model(&mut c, &cfg);
    assert_eq!(c.cwnd, 120);
}

/// Deviation 11: the pipe is the BDP (173 packets here) plus the ACK-aggregation allowance
/// (`extra_acked`, 30 packets in the second column): a flight within it is not in a queue.
#[test]
fn the_pipe_includes_the_ack_aggregation_allowance() {
    let cfg = BbrConfig::DEFAULT;
    // (extra_acked, cruising cap with inflight_hi = 190, short-term cut after a lossy cruising
    // round at a flight of 190 / of 210, inflight_hi after a probe met loss at a flight of 150)
    let table = [(0, 173, true, true, 173), (30, 190, false, true, 203)];
    for (extra, cap, cut_190, cut_210, hi) in table {
        let (mut s, mut c) = probe_bw(Phase::Cruise);
        s.extra_acked = [extra, 0];
        s.inflight_hi = 190;
        c.cwnd = 1000;
        s.bound_cwnd_for_inflight_model(&mut c, &cfg);
        assert_eq!(c.cwnd, cap, "extra_acked {extra}: cruising cap");

        for (flight, want_cut) in [(190, cut_190), (210, cut_210)] {
            let (mut s, c) = probe_bw(Phase::Cruise);
            s.extra_acked = [0, extra];
            s.loss_in_round = 1;
            s.loss_high_in_round = 1;
            s.inflight_at_loss = flight;
            s.adapt_lower_bounds(&c, &cfg);
            assert_eq!(
                s.bw_lo != UNBOUNDED,
                want_cut,
                "extra_acked {extra}, flight {flight}: short-term cut"
            );
        }

        let (mut s, c) = probe_bw(Phase::Up);
        s.extra_acked = [extra, extra / 2];
        s.bw_probe_samples = 1;
        s.inflight_at_loss = 150;
        s.handle_inflight_too_high(&c, &lossy_ack(5, 150), &cfg, &mut no_rand());
        assert_eq!(s.inflight_hi, hi, "extra_acked {extra}: inflight_hi floor");
        assert_eq!(s.phase(), Phase::Down);
    }
}

#[test]
fn inflight_hi_grows_exponentially_per_round_while_probing_up() {
    let cfg = BbrConfig::DEFAULT;
    let (mut s, mut c) = probe_bw(Phase::Refill);
    s.inflight_hi = 256;
    c.cwnd = 256;
    c.cwnd_limited = true;
    s.round_start = 1;
    s.update_cycle_phase(&mut c, &RateSample::default(), &cfg, 0, &mut no_rand());
    assert_eq!(s.phase(), Phase::Up);
    let mut growth = vec![];
    for _round in 0..5u32 {
        let before = s.inflight_hi;
        // One round: cwnd packets ACKed, one at a time; cwnd follows inflight_hi.
        for i in 0..c.cwnd {
            // The ACK that started UP began the first round.
            s.round_start = u8::from(i == 0 && _round > 0);
            let rs = RateSample {
                acked_sacked: 1,
                prior_in_flight: c.cwnd,
                ..Default::default()
            };
            s.adapt_upper_bounds(&c, &rs, &cfg, &mut no_rand());
            // cwnd grows per ACK up to the bound (set_cwnd, then the inflight model's cap).
            c.cwnd = s.inflight_hi;
        }
        growth.push(s.inflight_hi - before);
    }
    // 1, 2, 4, 8, 16 packets per round (draft: "doubles each round"), within the rounding of
    // cwnd / 2^k ACKs per packet.
    for (round, g) in growth.iter().enumerate() {
        let want = 1u32 << round;
        assert!(
            (want..=want + 1).contains(g),
            "round {round}: grew {g}, want ~{want} ({growth:?})"
        );
    }
}

#[test]
fn undo_restores_the_bounds_a_spurious_recovery_cut() {
    let cfg = BbrConfig::DEFAULT;
    let (mut s, c) = probe_bw(Phase::Cruise);
    s.inflight_hi = 300;
    s.inflight_lo = 280;
    s.bw_lo = bw_of_mbit(90);
    s.on_ssthresh(&c);
    // Recovery cuts the short-term bounds.
    s.loss_in_round = 1;
    s.loss_high_in_round = 1;
    s.inflight_at_loss = 250;
    s.bw_latest = 0;
    s.inflight_latest = 0;
    s.adapt_lower_bounds(&c, &cfg);
    s.inflight_hi = 250;
    assert!(s.inflight_lo < 280 && s.bw_lo < bw_of_mbit(90));
    let cwnd = s.on_undo();
    assert_eq!(
        (s.inflight_hi, s.inflight_lo, s.bw_lo),
        (300, 280, bw_of_mbit(90))
    );
    assert_eq!(cwnd, 346, "cwnd from before the recovery");
    assert_eq!(s.undo_count, 1);
}

#[test]
fn recovery_conserves_packets_with_no_floor_or_cap_then_restores_cwnd() {
    let cfg = BbrConfig::DEFAULT;
    let (mut s, mut c) = probe_bw(Phase::Cruise);
    c.cwnd = 300;
    c.packets_in_flight = 2;
    s.on_ssthresh(&c);
    c.ca_state = TCP_CA_RECOVERY;
    let rs = RateSample {
        acked_sacked: 1,
        losses: 1,
        delivered: 2,
        interval_us: 100,
        ..Default::default()
    };
    let aggr = s.ack_aggregation_cwnd(&cfg);
    s.set_cwnd(&mut c, &rs, &cfg, 1, s.bw(), cfg.cwnd_gain, aggr);
    assert_eq!(
        c.cwnd, 3,
        "packet conservation: inflight + acked, below min_cwnd as the kernel does"
    );
    c.ca_state = TCP_CA_OPEN;
    let rs = RateSample {
        acked_sacked: 2,
        delivered: 2,
        interval_us: 100,
        ..Default::default()
    };
    let aggr = s.ack_aggregation_cwnd(&cfg);
    s.set_cwnd(&mut c, &rs, &cfg, 2, s.bw(), cfg.cwnd_gain, aggr);
    assert!(c.cwnd >= 300, "cwnd restored after recovery: {}", c.cwnd);
}

#[test]
fn loss_rate_is_measured_against_the_round_starting_flight() {
    let cfg = BbrConfig::DEFAULT;
    // (flight at round start, losses so far in the round, too high)
    let table = [
        (200, 4, false),
        (200, 5, true),
        (1000, 15, false),
        (1000, 21, true),
        (10, 1, true),
        (0, 1, true),
    ];
    for (flight, lost, high) in table {
        let (mut s, mut c) = probe_bw(Phase::Cruise);
        s.loss_round_flight = flight;
        s.loss_round_lost = 50;
        s.loss_round_delivered = c.delivered + 1_000;
        c.lost = 50 + lost;
        let rs = RateSample {
            losses: 1,
            prior_in_flight: 150,
            ..Default::default()
        };
        s.update_latest_delivery_signals(&c, &rs, &cfg, 0);
        assert_eq!(
            s.loss_high_in_round == 1,
            high,
            "{lost} lost of a {flight}-packet round"
        );
    }
}

// --- Cases stated in draft-ietf-ccwg-bbr (the section each follows is named) ---

#[test]
fn draft_startup_exits_on_six_loss_events_above_the_loss_threshold() {
    // §4.3.1.3 (Exiting Startup Based on Packet Loss): "The connection has been in fast
    // recovery for at least one full packet-timed round trip; the loss rate over the time
    // scale of a single full round trip exceeds BBRLossThresh (2%); there are at least
    // BBRStartupFullLossCnt=6 discontiguous sequence ranges lost in that round trip."
    let cfg = BbrConfig::DEFAULT;
    // (lossy ACKs in the round, packets lost of a 100-packet round, in recovery, exits)
    let table = [
        (6, 3, true, true),
        (5, 5, true, false),
        (6, 2, true, false),
        (6, 3, false, false),
        (15, 15, true, true),
    ];
    for (events, lost, recovery, exits) in table {
        let mut s = Bbr::default();
        let mut c = conn();
        s.init(&mut c, &cfg);
        s.min_rtt_us = 20_000;
        s.bw_hi = [bw_of_mbit(100), bw_of_mbit(100)];
        s.loss_round_flight = 100;
        s.loss_round_lost = c.lost;
        s.loss_round_delivered = c.delivered + 1_000_000;
        c.ca_state = if recovery {
            TCP_CA_RECOVERY
        } else {
            TCP_CA_OPEN
        };
        for i in 0..events {
            c.lost += if i < lost { 1 } else { 0 };
            let rs = RateSample {
                losses: 1,
                prior_in_flight: 100,
                ..Default::default()
            };
            s.update_latest_delivery_signals(&c, &rs, &cfg, 0);
        }
        // The round ends.
        s.loss_round_start = 1;
        s.check_loss_too_high_in_startup(&c, &cfg);
        assert_eq!(
            s.full_bw_reached == 1,
            exits,
            "{events} lossy ACKs, {lost}% lost, recovery {recovery}"
        );
        if exits {
            // "set BBR.inflight_longterm to its estimate of a safe level of in-flight data":
            // no lower than the BDP.
            assert!(
                s.inflight_hi >= s.bdp(bw_of_mbit(100), BBR_UNIT),
                "{}",
                s.inflight_hi
            );
        }
    }
}

#[test]
fn draft_constants() {
    // §2.7 / §5: BBRStartupPacingGain 2.77, BBRStartupCwndGain 2, BBRDrainPacingGain 0.35,
    // BBRLossThresh 2%, BBRBeta 0.7, BBRHeadroom 0.15, ProbeRTTInterval 5 s,
    // ProbeRTTDuration 200 ms, BBRProbeRTTCwndGain 0.5, MinRTTFilterLen 10 s.
    let c = BbrConfig::DEFAULT;
    let ratio = |x: u32| f64::from(x) / f64::from(BBR_UNIT);
    assert!((ratio(c.high_gain) - 2.77).abs() < 0.01);
    assert!((ratio(c.startup_cwnd_gain) - 2.0).abs() < 0.01);
    assert!((ratio(c.drain_gain) - 0.35).abs() < 0.01);
    assert_eq!(c.loss_thresh_per_mille, 20);
    assert!((ratio(c.loss_beta) - 0.7).abs() < 0.01);
    assert!((ratio(c.inflight_headroom) - 0.15).abs() < 0.01);
    assert_eq!(c.probe_rtt_interval_us, 5_000_000);
    assert_eq!(c.probe_rtt_duration_us, 200_000);
    assert!((ratio(c.probe_rtt_cwnd_gain) - 0.5).abs() < 0.01);
    assert_eq!(c.min_rtt_window_us, 10_000_000);
}

#[test]
fn draft_probe_rtt_holds_half_the_bdp() {
    // §4.3.4.4: "BBR.ProbeRTTCwndGain = 0.5 ... BBRProbeRTTCwnd() = max(0.5 × BDP, MinPipeCwnd)".
    let cfg = BbrConfig::DEFAULT;
    let (mut s, mut c) = probe_bw(Phase::Cruise);
    c.cwnd = 346;
    // No RTT sample as low as the minimum for 5 s.
    c.now_us += 5_000_001;
    let rs = RateSample {
        rtt_us: 25_000,
        acked_sacked: 1,
        delivered: 1,
        interval_us: 20_000,
        ..Default::default()
    };
    s.update_min_rtt(&mut c, &rs, &cfg, &mut no_rand());
    assert_eq!(s.mode(), Mode::ProbeRtt);
    s.update_gains(&cfg);
    let aggr = s.ack_aggregation_cwnd(&cfg);
    s.set_cwnd(&mut c, &rs, &cfg, 1, s.bw(), s.cwnd_gain, aggr);
    // 100 Mbit/s × 20 ms = 172.7 packets; half is 86.3, rounded up.
    assert_eq!(c.cwnd, 87);
}

#[test]
fn a_shortened_min_rtt_window_keeps_probe_rtt_inside_it() {
    // Deviation 7: with the min-RTT window shortened to 2 s, PROBE_RTT comes after 1 s without
    // a new minimum, while the filter still holds the old one: PROBE_RTT's cwnd is half the BDP
    // at the path's RTT, not at the queue-laden sample of the ACK that started it.
    let cfg = BbrConfig {
        min_rtt_window_us: 2_000_000,
        ..BbrConfig::DEFAULT
    };
    let queued = RateSample {
        rtt_us: 80_000,
        acked_sacked: 1,
        delivered: 1,
        interval_us: 20_000,
        ..Default::default()
    };
    // (µs since the last new minimum, PROBE_RTT entered)
    for (after_us, probe_rtt) in [(999_000, false), (1_000_001, true), (1_999_000, true)] {
        let (mut s, mut c) = probe_bw(Phase::Cruise);
        c.now_us += after_us;
        s.update_min_rtt(&mut c, &queued, &cfg, &mut no_rand());
        assert_eq!(s.mode() == Mode::ProbeRtt, probe_rtt, "after {after_us} µs");
        assert_eq!(s.min_rtt_us, 20_000, "after {after_us} µs");
        if probe_rtt {
            s.update_gains(&cfg);
            let aggr = s.ack_aggregation_cwnd(&cfg);
            s.set_cwnd(&mut c, &queued, &cfg, 1, s.bw(), s.cwnd_gain, aggr);
            assert_eq!(c.cwnd, 87, "half the BDP at 20 ms");
        }
    }
}

#[test]
fn a_probe_rtt_that_cannot_drain_the_queue_ends_the_min_rtt_window() {
    // Deviation 16: when PROBE_RTT ends, its lowest RTT sample (taken with the flight at half
    // the BDP) above cwnd_gain × min_rtt (2 × 20 ms) replaces the minimum; otherwise the 10 s
    // window keeps it (v3).
    let cfg = BbrConfig::DEFAULT;
    // (PROBE_RTT's lowest RTT µs, min RTT after it)
    let table = [
        (20_500, 20_000),
        (30_000, 20_000),
        (40_000, 20_000),
        (40_001, 40_001),
        (85_000, 85_000),
    ];
    for (lowest_us, expected) in table {
        let (mut s, mut c) = probe_bw(Phase::Cruise);
        s.mode = Mode::ProbeRtt as u8;
        c.now_us += 5_300_000;
        s.probe_rtt_min_us = lowest_us;
        s.probe_rtt_min_stamp_us = c.now_us - 300_000;
        s.probe_rtt_done_stamp_us = c.now_us - 1;
        s.check_probe_rtt_done(&mut c, &cfg, &mut no_rand());
        assert_eq!(s.mode(), Mode::ProbeBw, "lowest {lowest_us} µs");
        assert_eq!(s.min_rtt_us, expected, "lowest {lowest_us} µs");
    }
}

#[test]
fn draft_probe_time_is_the_sooner_of_wall_clock_and_reno_rounds() {
    // §4.3.3.5: "BBRIsRenoCoexistenceProbeTime(): reno_rounds = BBRTargetInflight();
    // rounds = min(reno_rounds, 63); return BBR.rounds_since_bw_probe >= rounds".
    let cfg = BbrConfig::DEFAULT;
    // (min RTT µs — so BDP at 100 Mbit/s, rounds since probe, probe now)
    let table = [
        (2_000, 17, false),
        (2_000, 18, true),
        (20_000, 62, false),
        (20_000, 63, true),
    ];
    for (min_rtt_us, rounds, probe) in table {
        let (mut s, mut c) = probe_bw(Phase::Cruise);
        s.min_rtt_us = min_rtt_us;
        c.cwnd = 1000;
        s.rounds_since_probe = rounds;
        let bdp = s.target_inflight(&c, &cfg);
        assert_eq!(
            s.check_time_to_probe_bw(&c, &cfg),
            probe,
            "min RTT {min_rtt_us} (BDP {bdp}), {rounds} rounds"
        );
    }
}

#[test]
fn draft_inflight_with_headroom() {
    // §4.6.4.5: "headroom = max(1, BBRHeadroom × inflight_longterm); max(inflight_longterm -
    // headroom, BBRMinPipeCwnd)".
    let cfg = BbrConfig::DEFAULT;
    let mut s = Bbr::default();
    for (hi, want) in [(100, 86), (1000, 852), (5, 4), (UNBOUNDED, UNBOUNDED)] {
        s.inflight_hi = hi;
        assert_eq!(s.inflight_with_headroom(&cfg), want, "inflight_hi {hi}");
    }
}

#[test]
fn probe_wait_is_drawn_when_entering_down_and_spans_two_to_three_seconds() {
    let cfg = BbrConfig::DEFAULT;
    let mut rng = Rng(7);
    let mut draws = 0;
    let mut waits = vec![];
    for _ in 0..200 {
        let (mut s, c) = probe_bw(Phase::Up);
        let mut rand = || {
            draws += 1;
            rng.next()
        };
        s.start_bw_probe_down(&c, &cfg, &mut rand);
        waits.push(s.probe_wait_us);
        assert!(s.rounds_since_probe < 2);
    }
    assert_eq!(draws, 400, "two draws per entry into DOWN, none elsewhere");
    assert!(waits.iter().all(|w| (2_000_000..3_000_000).contains(w)));
    let spread = waits.iter().max().unwrap() - waits.iter().min().unwrap();
    assert!(
        spread > 800_000,
        "randomised over the second: spread {spread} µs"
    );
}

/// One ACK of [`probe_bw`]'s flow through both paths (`ack_both`, default tunables): 2 packets
/// 200 µs after the last, a sample of 170 packets over 20 ms for data sent a round ago with
/// `prior_in_flight` packets in flight, an RTT sample of `rtt_us`, the next departure
/// `departure_in_us` away.
fn steady_ack(
    s: &mut Bbr,
    c: &mut Conn,
    rtt_us: i64,
    prior_in_flight: u32,
    departure_in_us: u64,
    rng: &mut Rng,
) -> bool {
    let prior_delivered = c.delivered - 170;
    c.delivered += 2;
    c.now_us += 200;
    c.delivered_mstamp_us = c.now_us;
    c.clock_ns = c.now_us * 1000;
    c.wstamp_ns = c.clock_ns + departure_in_us * 1000;
    let rs = RateSample {
        prior_delivered,
        acked_sacked: 2,
        delivered: 170,
        interval_us: 20_000,
        rtt_us,
        prior_in_flight,
        ..Default::default()
    };
    ack_both(s, c, &rs, &BbrConfig::DEFAULT, rng)
}

/// Deviation 17 with 18: a cruising flow draining a standing queue (DOWN's gain) takes the fast
/// path like a cruising one, at its own pacing rate, until the ACK whose RTT sample comes within
/// the queue margin (25 ms on 20 ms): that ACK takes the full path, which ends the drain. Each
/// ACK goes through both paths (`ack_both`).
#[test]
fn a_draining_cruise_takes_the_fast_path_until_an_rtt_sample_ends_the_drain() {
    let cfg = BbrConfig::DEFAULT;
    let (mut s, mut c) = probe_bw(Phase::Cruise);
    s.cruise_drain = 1;
    s.has_seen_rtt = 1;
    // The first ACK ends a loss round whose lowest RTT sample was 30 ms: the drain goes on.
    s.round_min_rtt_us = 30_000;
    let mut rng = Rng(7);
    let mut ack =
        |s: &mut Bbr, c: &mut Conn, rtt_ms: i64| steady_ack(s, c, rtt_ms * 1000, 200, 0, &mut rng);
    // 30 and 26 ms are above the margin: the drain goes on, on the fast path once the
    // round has started and the controls have settled.
    let mut fast = 0;
    for i in 0..40 {
        if ack(&mut s, &mut c, if i % 2 == 0 { 30 } else { 26 }) {
            fast += 1;
        }
    }
    assert!(fast >= 20, "fast ACKs while draining: {fast} of 40");
    assert_eq!((s.cruise_drain, s.pacing_gain), (1, cfg.probe_down_gain));
    let mut held = FastState::default();
    s.export_fast(&mut held);
    assert_eq!(held.rtt_floor_us, 25_001, "the margin, exactly");
    // 25 ms is within it: the full path takes the ACK and the drain ends.
    assert!(!ack(&mut s, &mut c, 25));
    assert_eq!((s.cruise_drain, s.pacing_gain), (0, BBR_UNIT));
    // Cruising again, at gain 1: fast again once the pacing rate is set.
    assert!((0..4).any(|_| ack(&mut s, &mut c, 30)));
}

/// Deviation 17 in DOWN: ACKs whose inflight at the next departure stays above the BDP (173
/// packets here, no `inflight_hi`) take the fast path at DOWN's pacing rate; the ACK that
/// brings it to the BDP takes the full path, which starts CRUISE. The departure counts: 185
/// packets in flight with the next packet due 2 ms from now (17 packets delivered by then)
/// end DOWN, 185 due now do not. Each ACK goes through both paths (`ack_both`).
#[test]
fn down_takes_the_fast_path_until_the_inflight_at_the_next_departure_reaches_the_bdp() {
    let cfg = BbrConfig::DEFAULT;
    let (mut s, mut c) = probe_bw(Phase::Down);
    s.has_seen_rtt = 1;
    let mut rng = Rng(7);
    let mut ack = |s: &mut Bbr, c: &mut Conn, prior_in_flight: u32, departure_in_us: u64| {
        steady_ack(s, c, 30_000, prior_in_flight, departure_in_us, &mut rng)
    };
    let mut fast = 0;
    for i in 0..40 {
        if ack(&mut s, &mut c, 300 - i, 1000) {
            fast += 1;
        }
    }
    assert!(fast >= 20, "fast ACKs in DOWN: {fast} of 40");
    assert_eq!(
        (s.phase(), s.pacing_gain),
        (Phase::Down, cfg.probe_down_gain)
    );
    let mut held = FastState::default();
    s.export_fast(&mut held);
    assert_eq!(held.flags & FastState::DOWN, FastState::DOWN);
    assert!(
        (170..=180).contains(&held.cruise_bar),
        "{}",
        held.cruise_bar
    );
    assert!(
        ack(&mut s, &mut c, 185, 0),
        "185 in flight now: DOWN goes on"
    );
    assert!(
        !ack(&mut s, &mut c, 185, 2000),
        "168 at the departure: CRUISE"
    );
    assert_eq!(s.phase(), Phase::Cruise);
}

#[test]
fn fast_path_skips_app_limited_acks_that_change_nothing() {
    let cfg = BbrConfig::DEFAULT;
    let (mut s, mut c) = probe_bw(Phase::Cruise);
    s.try_fast_path = 1;
    s.update_gains(&cfg);
    c.pacing_rate = 12_345;
    c.cwnd = 200;
    let rs = RateSample {
        is_app_limited: true,
        acked_sacked: 2,
        delivered: 50,
        interval_us: 20_000,
        rtt_us: 20_100,
        prior_in_flight: 100,
        ..Default::default()
    };
    s.on_ack(&mut c, &rs, &cfg, &mut no_rand());
    assert_eq!(
        (c.pacing_rate, c.cwnd),
        (12_345, 200),
        "fast path: controls untouched"
    );
    // Not app-limited: the full path sets them.
    let rs = RateSample {
        is_app_limited: false,
        ..rs
    };
    s.on_ack(&mut c, &rs, &cfg, &mut no_rand());
    assert_ne!(c.pacing_rate, 12_345);
}

#[test]
fn init_on_a_live_socket_keeps_its_clock() {
    let cfg = BbrConfig::DEFAULT;
    let mut s = Bbr::default();
    let mut c = Conn {
        now_us: 50_000_000,
        kernel_min_rtt_us: 20_000,
        srtt_us_x8: 8 * 21_000,
        cwnd: 200,
        ..conn()
    };
    s.init(&mut c, &cfg);
    let rs = RateSample {
        rtt_us: 21_000,
        acked_sacked: 2,
        delivered: 2,
        interval_us: 20_000,
        prior_in_flight: 200,
        ..Default::default()
    };
    c.now_us += 1_000;
    s.on_ack(&mut c, &rs, &cfg, &mut no_rand());
    assert_ne!(
        s.mode(),
        Mode::ProbeRtt,
        "the first ACK after a switch is no reason for PROBE_RTT"
    );
}

// --- Packet-level simulation ---

/// What the kernel's rate sampler stamps on a packet when it is sent (`tcp_rate_skb_sent`);
/// both simulators' packets carry it and turn its ACK into a [`RateSample`] with it.
#[derive(Clone, Copy)]
struct RateTag {
    sent_us: u64,
    delivered: u32,
    delivered_mstamp_us: u64,
    first_tx_us: u64,
    app_limited: bool,
}

impl RateTag {
    /// The stamp of a packet sent at `now_us` on `c`, its flight having begun at `first_tx_us`.
    fn stamp(now_us: u64, c: &Conn, first_tx_us: u64) -> Self {
        Self {
            sent_us: now_us,
            delivered: c.delivered,
            delivered_mstamp_us: c.delivered_mstamp_us,
            first_tx_us,
            app_limited: c.app_limited != 0,
        }
    }

    /// `tcp_rate_gen`: the sample of the ACK at `now_us` of this packet, `c.delivered` already
    /// counting it. The interval is the longer of the send and the ACK intervals; one shorter
    /// than the kernel's min RTT is invalid (-1).
    fn sample(
        &self,
        now_us: u64,
        c: &Conn,
        kernel_min_rtt_us: u32,
        losses: u32,
        acked_sacked: u32,
        prior_in_flight: u32,
    ) -> RateSample {
        let snd_us = self.sent_us - self.first_tx_us;
        let ack_us = now_us - self.delivered_mstamp_us;
        let mut interval_us = snd_us.max(ack_us) as i64;
        if interval_us < i64::from(kernel_min_rtt_us) {
            interval_us = -1;
        }
        RateSample {
            prior_delivered: self.delivered,
            delivered: (c.delivered - self.delivered) as i32,
            interval_us,
            rtt_us: (now_us - self.sent_us) as i64,
            losses: losses as i32,
            acked_sacked,
            prior_in_flight,
            is_app_limited: self.app_limited,
            is_ack_delayed: false,
            ack_compressed: interval_us > 0 && snd_us > ack_us,
        }
    }
}

/// One packet of the single-flow simulation.
#[derive(Clone, Copy)]
struct Packet {
    tag: RateTag,
    /// Dropped on the way (tail drop or random loss): never ACKed.
    dropped: bool,
    /// ACKed or marked lost: out of flight.
    done: bool,
}

/// A bottleneck link: `rate` packets/µs with a tail-drop buffer of `buffer_pkts`, a
/// propagation delay of `rtt_us` for the round trip, and random loss `loss` on the way in.
struct Path {
    rate_pkts_per_us: f64,
    rtt_us: u64,
    buffer_pkts: usize,
    loss: f64,
    /// A careful-resume hint the node wrote before the first ACK (`tests/resume.rs`).
    resume: Option<cc_ebpf_common::resume::Hint>,
    /// The receiver's window, packets: `(initial, growth)` — it starts at `initial` and grows by
    /// `growth` packets for every packet delivered (a fresh receiver's window opens as data
    /// arrives); the sender never has more than the window out and is then neither cwnd- nor
    /// application-limited. `None`: unlimited.
    rwnd: Option<(u32, u32)>,
    /// The application's flow-control window (a yamux stream's credit), packets, as `rwnd`:
    /// when it holds the sender, the sender is application-limited and marks it as the kernel
    /// does (`tcp_rate_check_app_limited`). `None`: a bulk sender that always has data.
    app: Option<(u32, u32)>,
    /// Application-limited phases: `(period, cap)` — in the second half of every `period` µs
    /// the application keeps at most `cap` packets in flight (marked as `app`).
    app_phases: Option<(u64, u32)>,
    /// Each ACK reaches the sender up to this many µs late (uniform, in order): the jitter of
    /// a delay line or a receiver's GRO, which spreads the delivery-rate samples around the
    /// link's rate so that a max filter over them reads above it.
    ack_jitter_us: u64,
}

/// What a simulated transfer achieved.
#[derive(Debug)]
struct Outcome {
    /// Delivered ÷ what the link could carry, after the first `warmup` seconds.
    utilisation: f64,
    /// Packets lost ÷ packets sent.
    loss_fraction: f64,
    /// Median and 95th percentile RTT samples, µs.
    rtt_p50_us: u64,
    rtt_p95_us: u64,
    /// Median and 95th percentile of the smoothed RTT (the kernel's `srtt`, what the bench
    /// reads as `tcpi_rtt`) sampled every 10 ms after the warm-up, µs.
    srtt_p50_us: u64,
    srtt_p95_us: u64,
    /// Smallest `inflight_hi` after STARTUP ended (u32::MAX: never bounded).
    min_inflight_hi: u32,
    bdp_pkts: f64,
    /// Careful resume's outcome (`Start`, `Reason`), when the path carried a hint.
    start: (u8, u8),
    /// Packets lost in the first 2 s.
    lost_first_2s: u64,
    /// Highest pacing rate (bytes/s) once careful resume had decided (0: never decided).
    max_pacing_after_resume: u64,
    /// When careful resume's validation ended (`Action::Validated`): the cwnd it left and the
    /// packets the path had delivered since the jump (the validated pipe), both in packets.
    after_validation: Option<(u32, u32)>,
    /// When 8 MiB had been delivered, µs (`bench warm`'s transfer).
    time_to_8mib_us: Option<u64>,
    /// ACKs the fast path took (deviation 17), of all ACKs.
    fast_acks: u64,
    all_acks: u64,
    /// Of the fast ACKs, those taken in PROBE_BW DOWN and in a CRUISE draining a standing
    /// queue (deviation 18), by the state before the ACK.
    fast_down_acks: u64,
    fast_drain_acks: u64,
    /// Packets delivered in each second of the transfer (the bench's goodput counts from 0).
    delivered_per_s: Vec<u64>,
}

impl Path {
    fn mbit(mbit: f64, rtt_ms: u64, buffer_bytes: usize, loss: f64) -> Self {
        Self {
            rate_pkts_per_us: mbit * 1e6 / 8.0 / f64::from(MSS) / 1e6,
            rtt_us: rtt_ms * 1000,
            buffer_pkts: (buffer_bytes / MSS as usize).max(1),
            loss,
            resume: None,
            rwnd: None,
            app: None,
            app_phases: None,
            ack_jitter_us: 0,
        }
    }

    /// Runs a bulk transfer on bbr-p2p for `secs` seconds, in steps of 10 µs; the sender is
    /// paced and cwnd-limited like TCP, losses are detected by later ACKs (3 packets of
    /// reordering window) and recovery follows the kernel's state machine in outline.
    fn run(&self, cfg: &BbrConfig, secs: u64, seed: u64) -> Outcome {
        const DT_US: u64 = 10;
        let warmup_us = 3_000_000;
        let mut rng = Rng(seed);
        let mut model_rng = Rng(seed ^ 0x5555);
        let mut jitter_rng = Rng(seed ^ 0xaaaa);
        let mut last_ack_at = 0u64;
        let mut s = Bbr::default();
        let mut c = conn();
        c.now_us = 1;
        c.delivered_mstamp_us = 1;
        s.init(&mut c, cfg);
        let svc_us = 1.0 / self.rate_pkts_per_us;
        let mut packets: Vec<Packet> = Vec::new();
        // Bottleneck queue: (packet, departure time); then ACKs in flight back: (packet, arrival).
        let mut queue: VecDeque<(usize, f64)> = VecDeque::new();
        let mut link_free = 0.0f64;
        let mut acks: VecDeque<(usize, u64)> = VecDeque::new();
        let mut next_send = 0.0f64;
        let mut first_tx_us = 0u64;
        let mut first_undone = 0usize;
        let mut highest_acked: Option<usize> = None;
        let mut recovery_end = 0usize;
        let mut last_ack_us = 0u64;
        let mut srtt = 0u64;
        let mut kernel_min_rtt = u32::MAX;
        let mut inflight = 0u32;
        let mut cwnd_limited = false;
        let (mut sent, mut lost_total, mut delivered_after_warmup) = (0u64, 0u64, 0u64);
        let mut rtts = Vec::new();
        let mut srtts = Vec::new();
        let mut min_inflight_hi = u32::MAX;
        let mut slot = self
            .resume
            .map(|h| cc_ebpf_common::resume::ResumeSlot::offered(&h));
        let mut lost_first_2s = 0u64;
        let mut max_pacing_after_resume = 0u64;
        let mut jump_delivered = 0u32;
        let mut after_validation = None;
        let mut time_to_8mib_us = None;
        let (mut all_acks, mut fast_acks) = (0u64, 0u64);
        let (mut fast_down_acks, mut fast_drain_acks) = (0u64, 0u64);
        let end_us = secs * 1_000_000;
        let mut delivered_per_s = vec![0u64; secs as usize];
        let mut t = 0u64;
        while t < end_us {
            t += DT_US;
            let tf = t as f64;
            c.now_us = t;
            c.clock_ns = t * 1000;
            // The link serves its queue.
            while let Some(&(p, depart)) = queue.front() {
                if depart > tf {
                    break;
                }
                queue.pop_front();
                let mut at = depart as u64 + self.rtt_us;
                if self.ack_jitter_us > 0 {
                    at += u64::from(jitter_rng.next()) % self.ack_jitter_us;
                    at = at.max(last_ack_at);
                    last_ack_at = at;
                }
                acks.push_back((p, at));
            }
            // ACKs arrive.
            let mut newest: Option<usize> = None;
            let mut acked = 0u32;
            let prior_in_flight = inflight;
            while let Some(&(p, at)) = acks.front() {
                if at > t {
                    break;
                }
                acks.pop_front();
                let pkt = &mut packets[p];
                if !pkt.done {
                    pkt.done = true;
                    inflight -= 1;
                }
                acked += 1;
                c.delivered += 1;
                c.delivered_mstamp_us = t;
                if t > warmup_us {
                    delivered_after_warmup += 1;
                }
                delivered_per_s[((t - 1) / 1_000_000) as usize] += 1;
                if newest.is_none_or(|n| packets[n].tag.delivered <= packets[p].tag.delivered) {
                    newest = Some(p);
                }
                highest_acked = Some(highest_acked.map_or(p, |h| h.max(p)));
            }
            if time_to_8mib_us.is_none() && u64::from(c.delivered) * u64::from(MSS) >= 8 << 20 {
                time_to_8mib_us = Some(t);
            }
            if let Some(n) = newest {
                last_ack_us = t;
                // Losses: packets sent 3 or more before the highest ACKed one and still out.
                let mut losses = 0;
                let horizon = highest_acked.unwrap_or(0).saturating_sub(3);
                while first_undone < horizon {
                    let pkt = &mut packets[first_undone];
                    if !pkt.done {
                        pkt.done = true;
                        inflight -= 1;
                        losses += 1;
                    }
                    first_undone += 1;
                }
                c.lost += losses;
                lost_total += u64::from(losses);
                if t <= 2_000_000 {
                    lost_first_2s += u64::from(losses);
                }
                if losses > 0 && c.ca_state == TCP_CA_OPEN {
                    c.ssthresh = s.on_ssthresh(&c);
                    c.ca_state = TCP_CA_RECOVERY;
                    s.on_set_state(&mut c, cfg, TCP_CA_RECOVERY);
                    recovery_end = packets.len();
                } else if c.ca_state != TCP_CA_OPEN && highest_acked.unwrap_or(0) >= recovery_end {
                    c.ca_state = TCP_CA_OPEN;
                    s.on_set_state(&mut c, cfg, TCP_CA_OPEN);
                }
                let pkt = packets[n];
                let rtt = t - pkt.tag.sent_us;
                rtts.push(rtt);
                srtt = if srtt == 0 { rtt } else { (7 * srtt + rtt) / 8 };
                kernel_min_rtt = kernel_min_rtt.min(rtt as u32);
                first_tx_us = pkt.tag.sent_us;
                if c.app_limited != 0 && after32(c.delivered, c.app_limited) {
                    c.app_limited = 0;
                }
                c.packets_in_flight = inflight;
                c.srtt_us_x8 = (srtt * 8) as u32;
                c.kernel_min_rtt_us = kernel_min_rtt;
                c.cwnd_limited = cwnd_limited;
                c.wstamp_ns = (next_send.max(tf) * 1000.0) as u64;
                let rs = pkt
                    .tag
                    .sample(t, &c, kernel_min_rtt, losses, acked, prior_in_flight);
                let (hi_before, phase_before) = (s.inflight_hi, (s.mode(), s.phase()));
                let draining = s.in_phase(Phase::Cruise) && s.cruise_drain != 0;
                let took = ack_both(&mut s, &mut c, &rs, cfg, &mut model_rng);
                fast_acks += u64::from(took);
                fast_down_acks += u64::from(took && phase_before == (Mode::ProbeBw, Phase::Down));
                fast_drain_acks += u64::from(took && draining);
                all_acks += 1;
                // Careful resume's stage, as bbr_p2p.rs runs it after the model.
                if let Some(slot) = slot.as_mut().filter(|_| s.resume_pending != 0) {
                    let rwnd = self.rwnd.map_or(u64::MAX, |(initial, growth)| {
                        u64::from(initial.saturating_add(growth.saturating_mul(c.delivered)))
                            * u64::from(MSS)
                    });
                    let view = s.resume_view(&c, &rs, cfg, Bbr::sample_bw(&rs), rwnd);
                    let min_cwnd = u64::from(cfg.min_cwnd) * u64::from(MSS);
                    let before = slot.start;
                    let action = cc_ebpf_common::resume::on_ack(slot, &view, min_cwnd);
                    s.resume_apply(&mut c, cfg, action, slot.bw_bytes_per_sec);
                    match action {
                        Action::Jump(_) => jump_delivered = c.delivered,
                        Action::Validated { .. } => {
                            after_validation = Some((c.cwnd, c.delivered - jump_delivered));
                        }
                        _ => {}
                    }
                    if std::env::var_os("BBR_SIM_TRACE").is_some()
                        && (action != Action::None || slot.start != before)
                    {
                        eprintln!(
                            "t {:>6} ms resume {:?} {:?} start {} reason {} lost {} infl {}",
                            t / 1000,
                            action,
                            view,
                            slot.start,
                            slot.reason,
                            lost_total,
                            inflight
                        );
                    }
                    if cc_ebpf_common::resume::decided(slot) {
                        s.resume_pending = 0;
                    }
                }
                if slot.is_some() && s.resume_pending == 0 {
                    max_pacing_after_resume = max_pacing_after_resume.max(c.pacing_rate);
                }
                if std::env::var_os("BBR_SIM_TRACE").is_some()
                    && (s.inflight_hi < hi_before || phase_before != (s.mode(), s.phase()))
                {
                    eprintln!(
                        "t {:>6} ms {:?} -> {:?}/{:?} cwnd {} infl {} prior {} hi {} -> {} lo {} bw_lo {} max_bw {} lost {} fl {} ev {}",
                        t / 1000,
                        phase_before,
                        s.mode(),
                        s.phase(),
                        c.cwnd,
                        inflight,
                        prior_in_flight,
                        hi_before as i32,
                        s.inflight_hi as i32,
                        s.inflight_lo as i32,
                        s.bw_lo as i32,
                        s.max_bw(),
                        c.lost - s.loss_round_lost,
                        s.loss_round_flight,
                        s.loss_events_in_round
                    );
                }
                cwnd_limited = false;
                let window = std::env::var("BBR_SIM_TRACE_MS").ok().and_then(|w| {
                    let (a, b) = w.split_once('-')?;
                    Some((a.parse::<u64>().ok()? * 1000, b.parse::<u64>().ok()? * 1000))
                });
                if (std::env::var_os("BBR_SIM_TRACE_ALL").is_some() && t % 50_000 < DT_US)
                    || window.is_some_and(|(a, b)| (a..b).contains(&t))
                {
                    eprintln!(
                        "T {:>6} ms {:?}/{:?} cwnd {} infl {} hi {} lo {} bw_lo {} max_bw {} pacing {} loss {} probes {} ca {} prior {}",
                        t / 1000,
                        s.mode(),
                        s.phase(),
                        c.cwnd,
                        inflight,
                        s.inflight_hi as i32,
                        s.inflight_lo as i32,
                        s.bw_lo as i32,
                        s.max_bw(),
                        c.pacing_rate,
                        lost_total,
                        s.bw_probe_count,
                        c.ca_state,
                        s.prior_cwnd
                    );
                    if window.is_some() {
                        eprintln!(
                            "    sample {} (del {} int {} compressed {} app {}) bw_hi {:?} ack_phase {} too_high {} risky {} full_bw {} cnt {} now {} cwnd_limited {} rtt {} loss_ev {}",
                            Bbr::sample_bw(&rs),
                            rs.delivered,
                            rs.interval_us,
                            rs.ack_compressed,
                            rs.is_app_limited,
                            s.bw_hi,
                            s.ack_phase,
                            s.prev_probe_too_high,
                            s.stopped_risky_probe,
                            s.full_bw,
                            s.full_bw_cnt,
                            s.full_bw_now,
                            c.cwnd_limited,
                            rs.rtt_us,
                            rs.losses
                        );
                    }
                }
                if s.full_bw_reached != 0 && s.mode() != Mode::Startup {
                    min_inflight_hi = min_inflight_hi.min(s.inflight_hi);
                }
            }
            if t > warmup_us && t.is_multiple_of(10_000) && srtt != 0 {
                srtts.push(srtt);
            }
            // Retransmission timeout: everything out is lost.
            if inflight > 0 && t - last_ack_us > 200_000.max(2 * srtt) {
                for pkt in packets[first_undone..].iter_mut().filter(|p| !p.done) {
                    pkt.done = true;
                    c.lost += 1;
                    lost_total += 1;
                }
                inflight = 0;
                c.ssthresh = s.on_ssthresh(&c);
                s.on_set_state(&mut c, cfg, TCP_CA_LOSS);
                c.ca_state = TCP_CA_LOSS;
                recovery_end = packets.len();
                c.cwnd = 1;
                last_ack_us = t;
            }
            // The sender: paced, within cwnd.
            next_send = next_send.max(tf - DT_US as f64);
            while next_send <= tf {
                if inflight >= c.cwnd {
                    cwnd_limited = true;
                    break;
                }
                // Held by the receiver's window: neither cwnd- nor application-limited.
                if let Some((initial, growth)) = self.rwnd
                    && inflight >= initial.saturating_add(growth.saturating_mul(c.delivered))
                {
                    break;
                }
                // Held by the application: nothing to send while cwnd has room.
                if let Some((initial, growth)) = self.app
                    && inflight >= initial.saturating_add(growth.saturating_mul(c.delivered))
                {
                    c.app_limited = c.delivered.wrapping_add(inflight).max(1);
                    break;
                }
                if let Some((period, cap)) = self.app_phases
                    && t % period >= period / 2
                    && inflight >= cap
                {
                    c.app_limited = c.delivered.wrapping_add(inflight).max(1);
                    break;
                }
                if inflight == 0 {
                    first_tx_us = t;
                    c.delivered_mstamp_us = t;
                }
                let p = packets.len();
                let mut pkt = Packet {
                    tag: RateTag::stamp(t, &c, first_tx_us),
                    dropped: false,
                    done: false,
                };
                sent += 1;
                inflight += 1;
                if rng.chance(self.loss) || queue.len() >= self.buffer_pkts {
                    pkt.dropped = true;
                } else {
                    let depart = link_free.max(tf) + svc_us;
                    link_free = depart;
                    queue.push_back((p, depart));
                }
                packets.push(pkt);
                let rate = (c.pacing_rate as f64).max(1.0);
                next_send += f64::from(MSS) / rate * 1e6;
            }
        }
        rtts.sort_unstable();
        srtts.sort_unstable();
        let q = |f: f64| rtts[((rtts.len() - 1) as f64 * f) as usize];
        let sq = |f: f64| srtts[((srtts.len() - 1) as f64 * f) as usize];
        let capacity = self.rate_pkts_per_us * (end_us - warmup_us) as f64;
        Outcome {
            utilisation: delivered_after_warmup as f64 / capacity,
            loss_fraction: lost_total as f64 / sent as f64,
            rtt_p50_us: q(0.5),
            rtt_p95_us: q(0.95),
            srtt_p50_us: sq(0.5),
            srtt_p95_us: sq(0.95),
            min_inflight_hi,
            bdp_pkts: self.rate_pkts_per_us * self.rtt_us as f64,
            start: slot.map_or((0, 0), |s| (s.start, s.reason)),
            lost_first_2s,
            max_pacing_after_resume,
            after_validation,
            time_to_8mib_us,
            fast_acks,
            all_acks,
            fast_down_acks,
            fast_drain_acks,
            delivered_per_s,
        }
    }
}

#[test]
fn sim_deep_buffer_fills_the_link_with_a_short_queue() {
    let path = Path::mbit(100.0, 20, 2_000_000, 0.0);
    let out = path.run(&BbrConfig::DEFAULT, 20, 1);
    eprintln!("{out:?}");
    assert!(out.utilisation > 0.95, "{out:?}");
    assert!(
        out.rtt_p50_us < 25_000,
        "median RTT {} µs on a 20 ms path",
        out.rtt_p50_us
    );
    // Probing queues for a few rounds every 1.4 s (63 rounds): the 95th percentile stays
    // within half the propagation delay above it (a loss-based flow would fill the 2 MB
    // buffer: 180 ms). With v3's DOWN gain of 0.91 the probe's queue drained in ~200 ms and
    // the 95th percentile was 33.3 ms (deviation 18: 29.9 ms).
    assert!(
        out.rtt_p95_us < 31_000,
        "95th percentile RTT {} µs",
        out.rtt_p95_us
    );
    assert!(out.loss_fraction < 0.001, "{out:?}");
}

/// Deviation 18: with ACKs reaching the sender up to 3 ms late (a delay line's or a receiver's
/// jitter), the max filter of the delivery-rate samples reads above the link's rate, pacing 1%
/// under it is no margin, and on a deep buffer without loss v3 keeps a queue standing through
/// CRUISE (cwnd, 2 BDP, the only bound): median smoothed RTT 33.6–35.3 ms on this 20 ms path
/// without the deviation (seeds 1–4), 24.7–24.9 with it. The link stays used.
#[test]
fn sim_deep_buffer_with_ack_jitter_does_not_keep_a_standing_queue() {
    for seed in 1..=4 {
        let path = Path {
            ack_jitter_us: 3_000,
            ..Path::mbit(100.0, 20, 2_000_000, 0.0)
        };
        let out = path.run(&BbrConfig::DEFAULT, 20, seed);
        eprintln!("seed {seed}: {out:?}");
        assert!(out.utilisation > 0.95, "seed {seed}: {out:?}");
        assert!(
            out.srtt_p50_us < 28_000,
            "seed {seed}: median smoothed RTT {} µs on a 20 ms path",
            out.srtt_p50_us
        );
    }
}

#[test]
fn sim_one_bdp_buffer_with_random_loss_keeps_utilisation_and_inflight_hi_above_the_bdp() {
    let bdp_bytes = (100e6 / 8.0 * 0.020) as usize;
    for loss in [0.005, 0.01] {
        for seed in [1, 2, 3] {
            let path = Path::mbit(100.0, 20, bdp_bytes, loss);
            let out = path.run(&BbrConfig::DEFAULT, 20, seed);
            eprintln!("loss {loss} seed {seed}: {out:?}");
            assert!(out.utilisation > 0.90, "loss {loss} seed {seed}: {out:?}");
            assert!(
                f64::from(out.min_inflight_hi) >= out.bdp_pkts,
                "inflight_hi fell to {} below the BDP {:.0}",
                out.min_inflight_hi,
                out.bdp_pkts
            );
        }
    }
}

#[test]
fn sim_shallow_buffer_with_random_loss_loses_little_beyond_the_random_loss() {
    // 15 kB of buffer at 100 Mbit/s (10 packets), 1% random loss.
    let path = Path::mbit(100.0, 20, 15_000, 0.01);
    let out = path.run(&BbrConfig::DEFAULT, 20, 4);
    eprintln!("{out:?}");
    assert!(out.utilisation > 0.85, "{out:?}");
    assert!(
        out.loss_fraction < 0.02,
        "overflow on top of the 1% random loss: {out:?}"
    );
}

/// Deviation 20 (session 13): on a 15 kB buffer (10 packets) with 1% random loss, these three
/// seeds are the slowest of 200 without the deviation: STARTUP ended on loss at 0.73–0.86 of
/// the link with `inflight_hi` at 137–152 packets of a 173-packet pipe, and each later probe,
/// capped there and growing it by 1, 2, 4… packets a round, was ended after a round or two by
/// 3–4 random losses (2–3% of its flight) without a queue: 0.76–0.82 of the link over 12 s,
/// counted from the start as the bench counts. Probes that random loss does not end reach the
/// link at the first probe.
#[test]
fn sim_shallow_buffer_with_random_loss_recovers_from_a_low_startup_exit() {
    let path = Path::mbit(100.0, 20, 15_000, 0.01);
    for seed in [8, 57, 129] {
        let out = path.run(&BbrConfig::DEFAULT, 12, seed);
        let share = out.delivered_per_s.iter().sum::<u64>() as f64 / (path.rate_pkts_per_us * 12e6);
        eprintln!("seed {seed}: {share:.3} of the link over 12 s; {out:?}");
        assert!(share > 0.88, "seed {seed}: {share:.3} of the link; {out:?}");
    }
}

#[test]
fn sim_loss_response_off_overflows_the_shallow_buffer_more() {
    // The loss response is what keeps the shallow buffer from overflowing at every probe.
    let path = Path::mbit(100.0, 20, 15_000, 0.01);
    let on = path.run(&BbrConfig::DEFAULT, 20, 5);
    let off = path.run(
        &BbrConfig {
            loss_bound_enabled: 0,
            ..BbrConfig::DEFAULT
        },
        20,
        5,
    );
    eprintln!("on {on:?}\noff {off:?}");
    assert!(
        on.loss_fraction < off.loss_fraction,
        "on {on:?} off {off:?}"
    );
}

/// Deviation 12: probing up (gain 1.25), a sample the kernel took over the send interval
/// because the ACKs came back batched is the sending rate and does not raise `max_bw`; the
/// same rate with ACKs as spread out as the sends does.
#[test]
fn an_ack_compressed_sample_does_not_raise_the_estimate() {
    let cfg = BbrConfig::DEFAULT;
    for (compressed, want) in [(true, bw_of_mbit(100)), (false, bw_of_mbit(125))] {
        let (mut s, c) = probe_bw(Phase::Up);
        s.update_gains(&cfg);
        assert!(s.pacing_gain > BBR_UNIT);
        let rs = RateSample {
            acked_sacked: 2,
            delivered: 170,
            interval_us: 20_000,
            ack_compressed: compressed,
            ..Default::default()
        };
        s.ack_phase = ack_phase::PROBE_FEEDBACK;
        s.update_congestion_signals(&c, &rs, &cfg, bw_of_mbit(125));
        assert_eq!(s.max_bw(), want, "ack_compressed {compressed}");
    }
}

/// Deviation 17: every simulated ACK is checked against the full model (`ack_both`); here the
/// paths that exercise each part of it — a deep buffer (CRUISE with probes), random loss on a
/// 1-BDP and a 15 kB buffer (recovery, packet conservation, the loss rounds, the short-term
/// bounds), an application that holds the flight at 60 packets (a third of the BDP) every other
/// second (app-limited samples, v3's own fast path), 24 s (four PROBE_RTTs) —
/// and the share of ACKs the fast path takes, so that the check is not vacuous: among them
/// ACKs in DOWN on every path (on the 15 kB one with deviation 20's loss rounds around them)
/// and ACKs of a CRUISE draining a standing queue where a queue can stand (deviation 18).
#[test]
fn sim_fast_path_matches_the_full_model_and_takes_most_acks() {
    let bdp_bytes = (100e6 / 8.0 * 0.020) as usize;
    // (name, path, least share of fast ACKs, a queue can stand)
    let cases = [
        (
            "2 MB buffer",
            Path::mbit(100.0, 20, 2_000_000, 0.0),
            0.75,
            true,
        ),
        (
            "1 BDP, 1% loss",
            Path::mbit(100.0, 20, bdp_bytes, 0.01),
            0.75,
            true,
        ),
        (
            "15 kB, 1% loss",
            Path::mbit(100.0, 20, 15_000, 0.01),
            0.75,
            false,
        ),
        (
            "app-limited",
            Path {
                app_phases: Some((2_000_000, 60)),
                ..Path::mbit(100.0, 20, 2_000_000, 0.0)
            },
            0.6,
            true,
        ),
    ];
    for (name, path, least, queue) in cases {
        for seed in [1, 2] {
            let out = path.run(&BbrConfig::DEFAULT, 24, seed);
            let share = out.fast_acks as f64 / out.all_acks as f64;
            eprintln!(
                "{name} seed {seed}: fast path {} of {} ACKs ({share:.3}; {} in DOWN, {} draining), utilisation {:.3}",
                out.fast_acks,
                out.all_acks,
                out.fast_down_acks,
                out.fast_drain_acks,
                out.utilisation
            );
            assert!(
                share >= least,
                "{name} seed {seed}: fast path share {share:.3}"
            );
            assert!(out.fast_down_acks > 0, "{name} seed {seed}: none in DOWN");
            assert_eq!(
                out.fast_drain_acks > 0,
                queue,
                "{name} seed {seed}: draining fast ACKs {}",
                out.fast_drain_acks
            );
        }
    }
}

#[test]
fn sim_sub_millisecond_path_fills_the_link() {
    // A LAN-like path: 1 Gbit/s, 200 µs (BDP 17 packets, below a 1 ms TSO burst of 44): the
    // burst rule of deviation 12 must not freeze the estimate.
    let path = Path {
        rtt_us: 200,
        ..Path::mbit(1000.0, 1, 1_000_000, 0.0)
    };
    let out = path.run(&BbrConfig::DEFAULT, 6, 1);
    eprintln!("{out:?}");
    assert!(out.utilisation > 0.9, "{out:?}");
}

/// Deviation 12, table: which probing-time samples may raise `max_bw` (100 Mbit/s) to 125.
#[test]
fn only_probe_feedback_of_more_than_a_burst_raises_the_estimate() {
    let cfg = BbrConfig::DEFAULT;
    // (phase, ACK phase, packets delivered, raises)
    let table = [
        (Phase::Up, ack_phase::PROBE_FEEDBACK, 170, true),
        // ACKs of what REFILL sent, at the estimate.
        (Phase::Up, ack_phase::PROBE_STARTING, 170, false),
        // One TSO burst (at 125 Mbit/s, 1 ms of pacing is 10 packets).
        (Phase::Up, ack_phase::PROBE_FEEDBACK, 4, false),
        (Phase::Cruise, ack_phase::INIT, 170, false),
    ];
    for (phase, ack, delivered, raises) in table {
        let (mut s, mut c) = probe_bw(phase);
        s.update_gains(&cfg);
        s.ack_phase = ack;
        c.pacing_rate = 125_000_000 / 8;
        s.refresh_tso_segs_goal(&c);
        let rs = RateSample {
            acked_sacked: 2,
            delivered,
            interval_us: 20_000,
            ..Default::default()
        };
        s.update_congestion_signals(&c, &rs, &cfg, bw_of_mbit(125));
        let want = if raises {
            bw_of_mbit(125)
        } else {
            bw_of_mbit(100)
        };
        assert_eq!(
            s.max_bw(),
            want,
            "{phase:?} ack phase {ack} delivered {delivered}"
        );
    }
}

mod fairness;
mod resume;
mod shallow_loss;
mod tail;
