//! `bbr-p2p`: BBR (v1, as Linux `net/ipv4/tcp_bbr.c`) with two additions for P2P nodes.
//!
//! # The model
//! BBR estimates two properties of the path and paces at their product:
//! - `BtlBw`, the bottleneck bandwidth: a windowed max (10 rounds) of delivery-rate samples;
//! - `RTprop`, the round-trip propagation time: a windowed min (10 s) of RTT samples.
//!
//! It sends at `pacing_gain × BtlBw` and keeps at most `cwnd_gain × BtlBw × RTprop` (the BDP,
//! plus an allowance for ACK aggregation) in flight, varying the gains by state:
//!
//! ```text
//!            |
//!            V
//!   +---> STARTUP  ----+     pacing 2.89, cwnd 2.89, until bw grew < 25% for 3 rounds
//!   |        |         |
//!   |        V         |
//!   |      DRAIN   ----+     pacing 0.35 until inflight <= BDP
//!   |        |         |
//!   |        V         |
//!   +---> PROBE_BW ----+     pacing cycle 1.25, 0.75, 1 ×6 (random start), cwnd 2
//!   |      ^    |      |
//!   |      |    |      |
//!   |      +----+      |
//!   |                  |
//!   +---- PROBE_RTT <--+     min RTT not refreshed for 10 s: 4 packets for 200 ms and a round
//! ```
//!
//! # Reference and deviations
//! Each function below names the tcp_bbr.c function it follows. Deviations, all deliberate:
//! 1. Timers (min-RTT window, PROBE_RTT duration) run on the TCP microsecond clock
//!    (`tcp_mstamp`) instead of jiffies: BPF programs cannot read `tcp_jiffies32`.
//! 2. State lives in socket storage rather than `icsk_ca_priv` (it no longer fits in 104 bytes);
//!    fields are unpacked (no bitfields), so `lt_rtt_cnt` and `full_bw_cnt` saturate instead of
//!    wrapping at 7 and 3 bits.
//! 3. `MAX_TCP_HEADER` in the TSO budget is a constant (320 bytes, x86_64's value with the usual
//!    configs): the kernel's depends on config options a program cannot see.
//! 4. **Loss-bounded probing** (after BBRv3): while probing (STARTUP, or the 1.25 phase of
//!    PROBE_BW), more than 2% of a round's packets lost (and at least 3) ends the probe and
//!    sets `inflight_hi` = 0.7 × the inflight that met the loss (never below 0.7 × BDP, as
//!    BBRv3's floor); cwnd never exceeds it, also during recovery. Each later probe that
//!    reached the bound without such loss raises it, by 1/16 of it at first, doubling each
//!    time; after a probe that met loss, the next two probe phases cruise at gain 1 (BBRv3
//!    spaces probes by seconds once loss has bounded it). BBRv1 ignores loss outside recovery and keeps overflowing shallow buffers at every
//!    probe. (BBRv3 also keeps a short-term bound, `inflight_lo`, for lossy cruising rounds;
//!    this variant leaves cruising rounds to BBRv1's behaviour, so random loss is not
//!    mistaken for a full buffer.)
//! 5. **Warm start** (RFC 9040 temporal sharing): on release, a connection that measured its
//!    path records `BtlBw` and `RTprop` per remote address; a new connection to that address
//!    within 2 minutes starts in PROBE_BW from them (cwnd = the BDP at cwnd gain, paced at
//!    BtlBw) instead of a blind STARTUP. During its first 3 rounds, a round whose min RTT
//!    exceeds 2× the recorded one (and by more than 1 ms), or whose loss exceeds the
//!    threshold, reverts it to STARTUP with the initial window.
//! 6. Tunables come from a config map ([`BbrConfig`]) read once per ACK, not compile-time
//!    constants; the defaults are tcp_bbr.c's values.
//! 7. An ACK-compressed rate sample cannot raise the max-bandwidth filter above its current
//!    value. When ACKs come back faster than their packets were sent, `tcp_rate_gen` divides
//!    by the send interval, so the sample is our own sending rate (2.89× or 1.25× the estimate
//!    while probing), not the path's; on a sub-millisecond path through a token bucket the
//!    kernel test saw estimates of 180–330 Mbit/s on a 100 Mbit/s link from such samples.
//!
//! Everything here is plain arithmetic on [`BbrState`], [`Conn`] and [`RateSample`], so it runs
//! unchanged in the eBPF program and in host unit tests.
//!
//! Code shaped for the verifier: no division without a zero check (a Rust divide by zero
//! would panic, and the panic handler is an infinite loop the verifier rejects); array indexes
//! masked to the array length.

use cc_ebpf_common::bbr::{
    BBR_UNIT, BW_SCALE, BW_UNIT, BbrConfig, BbrState, MinmaxSample, Mode, WarmEntry, WarmStart,
};

/// `TCP_INIT_CWND`.
pub const TCP_INIT_CWND: u32 = 10;
/// `TCP_INFINITE_SSTHRESH`.
pub const TCP_INFINITE_SSTHRESH: u32 = 0x7fff_ffff;
/// `enum tcp_ca_state`.
pub const TCP_CA_OPEN: u8 = 0;
pub const TCP_CA_RECOVERY: u8 = 3;
pub const TCP_CA_LOSS: u8 = 4;
/// `CA_EVENT_TX_START`: first transmission when no packets are in flight.
pub const CA_EVENT_TX_START: u32 = 0;
/// Phases of the PROBE_BW gain cycle.
pub const CYCLE_LEN: u8 = 8;
/// The random start phase is drawn from the last `CYCLE_RAND` phases (never the 0.75 one).
const CYCLE_RAND: u32 = 7;
/// Minimum pacing rate (bits/s) for 2-segment TSO bursts (`bbr_min_tso_rate`).
const MIN_TSO_RATE_BITS: u64 = 1_200_000;
/// Pace 1% below the estimate to keep the bottleneck queue from growing (`bbr_pacing_margin_percent`).
const PACING_MARGIN_PERCENT: u64 = 1;
/// `GSO_LEGACY_MAX_SIZE - 1 - MAX_TCP_HEADER` (deviation 3).
const TSO_MAX_BYTES: u64 = 65_536 - 1 - 320;
/// Long-term bandwidth sampling (policer detection), as tcp_bbr.c.
const LT_INTVL_MIN_RTTS: u8 = 4;
/// Loss rate (of 256) that marks a long-term interval as policed: 50/256 = 19.5%.
const LT_LOSS_THRESH: u32 = 50;
/// Two intervals within 1/8 of each other are a consistent policer rate.
const LT_BW_RATIO: u32 = BBR_UNIT / 8;
/// ... or within 4 kbit/s (bytes/s).
const LT_BW_DIFF_BYTES: u64 = 4000 / 8;
/// Rounds to keep using the long-term rate before re-probing.
const LT_BW_MAX_RTTS: u8 = 48;
/// Rounds a max of extra ACKed data is kept (`bbr_extra_acked_win_rtts`).
const EXTRA_ACKED_WIN_RTTS: u8 = 5;
/// Reset the ACK epoch when this much data was ACKed in it (`bbr_ack_epoch_acked_reset_thresh`).
const ACK_EPOCH_ACKED_RESET: u32 = 1 << 20;
/// Cap on the aggregation allowance: 100 ms at BtlBw (`bbr_extra_acked_max_us`).
const EXTRA_ACKED_MAX_US: u64 = 100_000;
/// Losses in a round below this never count as "too high" (one or two losses in a small
/// round are noise, not a full buffer).
const LOSS_MIN_PACKETS: u32 = 3;
/// The first raise of `inflight_hi` after a cut is this fraction of it (1/16), doubling with
/// each loss-free probe: the pre-cut level (1/0.7 = +43%) is back within 3 probes.
const INFLIGHT_HI_FIRST_STEP_DIV: u32 = 16;
/// Probe phases to cruise through after a probe that met loss: BBRv3 waits seconds between
/// probes once loss bounded it; BBRv1's cycle probes every 8 rounds, which on a shallow buffer
/// overflows it every time. Two skipped probes space lossy probes by at least 24 rounds.
const PROBES_TO_SKIP_AFTER_LOSS: u8 = 2;
/// Largest step by which `inflight_hi` grows after a loss-free probe, packets.
const INFLIGHT_HI_MAX_STEP: u32 = 1 << 10;
/// Queueing a warm start may add before it counts as contradicting the record: on
/// sub-millisecond paths a few packets of queue double the RTT without meaning anything.
const WARM_RTT_SLACK_US: u64 = 1_000;
/// `inflight_hi` when no loss has bounded it.
pub const INFLIGHT_UNBOUNDED: u32 = u32::MAX;

/// The socket as the algorithm sees it: values read before the ACK is processed, and the four
/// it may change (`cwnd`, `pacing_rate`, `ssthresh`, `app_limited`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Conn {
    /// `tp->tcp_mstamp`, µs.
    pub now_us: u64,
    pub delivered: u32,
    /// `tp->delivered_mstamp`, µs.
    pub delivered_mstamp_us: u64,
    pub lost: u32,
    /// `tcp_packets_in_flight(tp)`.
    pub packets_in_flight: u32,
    /// `inet_csk(sk)->icsk_ca_state`.
    pub ca_state: u8,
    /// `tp->srtt_us` (<< 3, 0 until the first sample).
    pub srtt_us_x8: u32,
    /// `tcp_min_rtt(tp)`.
    pub kernel_min_rtt_us: u32,
    pub mss: u32,
    pub cwnd_clamp: u32,
    pub max_pacing_rate: u64,
    pub pacing_shift: u8,
    /// `tp->tcp_wstamp_ns`: earliest departure time of the next packet.
    pub wstamp_ns: u64,
    /// `tp->tcp_clock_cache`, ns.
    pub clock_ns: u64,
    pub cwnd: u32,
    pub pacing_rate: u64,
    pub ssthresh: u32,
    pub app_limited: u32,
}

/// The fields of the kernel's `struct rate_sample` BBR uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateSample {
    pub prior_delivered: u32,
    /// Packets delivered in the sample interval (negative: invalid sample).
    pub delivered: i32,
    pub interval_us: i64,
    pub rtt_us: i64,
    pub losses: i32,
    pub acked_sacked: u32,
    pub prior_in_flight: u32,
    pub is_app_limited: bool,
    pub is_ack_delayed: bool,
    /// The ACKs came back faster than the packets were sent (`interval_us` is the send
    /// interval, longer than `tcp_mstamp - prior_mstamp`): deviation 7.
    pub ack_compressed: bool,
}

#[inline(always)]
fn div_u64(a: u64, b: u64) -> u64 {
    a.checked_div(b).unwrap_or(0)
}

/// `after(a, b)` for 32-bit sequence-like counters.
#[inline(always)]
fn after32(a: u32, b: u32) -> bool {
    (b.wrapping_sub(a) as i32) < 0
}

impl Conn {
    /// Bytes per second for `rate` packets/µs << BW_SCALE at `gain` (`bbr_rate_bytes_per_sec`).
    fn rate_bytes_per_sec(&self, rate: u64, gain: u32) -> u64 {
        let r = (rate * u64::from(self.mss) * u64::from(gain)) >> BBR_SCALE_U64;
        (r * (1_000_000 / 100 * (100 - PACING_MARGIN_PERCENT))) >> BW_SCALE
    }
}

const BBR_SCALE_U64: u64 = cc_ebpf_common::bbr::BBR_SCALE as u64;

/// The algorithm over a socket's [`BbrState`] (a newtype: the state type is shared with
/// userspace in `cc-ebpf-common`; the arithmetic lives here). Same layout as the state, so the
/// eBPF program views its socket-storage value as one.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bbr(pub BbrState);

impl core::ops::Deref for Bbr {
    type Target = BbrState;
    fn deref(&self) -> &BbrState {
        &self.0
    }
}

impl core::ops::DerefMut for Bbr {
    fn deref_mut(&mut self) -> &mut BbrState {
        &mut self.0
    }
}

impl Bbr {
    /// `bbr_init`: a new connection (or a switch to this algorithm). `warm` is the record for
    /// the remote address, if any; `random` picks the PROBE_BW phase a warm start begins in.
    pub fn init(&mut self, c: &mut Conn, cfg: &BbrConfig, warm: Option<&WarmEntry>, random: u32) {
        self.0 = BbrState::default();
        c.ssthresh = TCP_INFINITE_SSTHRESH;
        self.next_round_delivered = c.delivered;
        self.prev_ca_state = TCP_CA_OPEN;
        self.min_rtt_us = c.kernel_min_rtt_us;
        self.min_rtt_stamp_us = c.now_us;
        self.inflight_hi = INFLIGHT_UNBOUNDED;
        self.inflight_hi_step = 1;
        self.round_start_delivered = c.delivered;
        self.round_start_lost = c.lost;
        self.round_min_rtt_us = u32::MAX;
        self.init_pacing_rate_from_rtt(c, cfg);
        self.reset_lt_bw_sampling(c);
        self.set_mode(Mode::Startup);
        self.pacing_gain = cfg.high_gain;
        self.cwnd_gain = cfg.high_gain;
        self.ack_epoch_stamp_us = c.now_us;
        if let Some(w) = warm.filter(|w| self.warm_usable(w, c, cfg)) {
            self.start_warm(c, cfg, w, random);
            // A warm start never was in STARTUP.
            self.modes_seen &= !(1 << Mode::Startup as u8);
        }
    }

    /// A record is used when enabled, fresh and complete.
    fn warm_usable(&self, w: &WarmEntry, c: &Conn, cfg: &BbrConfig) -> bool {
        cfg.warm_start_enabled != 0
            && w.bw > 0
            && w.min_rtt_us > 0
            && w.min_rtt_us != u32::MAX
            && c.now_us >= w.stamp_us
            && c.now_us - w.stamp_us <= u64::from(cfg.warm_start_max_age_us)
    }

    /// Variant feature 2: start in PROBE_BW from the record.
    fn start_warm(&mut self, c: &mut Conn, cfg: &BbrConfig, w: &WarmEntry, random: u32) {
        self.warm_start = WarmStart::Warm as u8;
        self.warm_bw = w.bw;
        self.warm_min_rtt_us = w.min_rtt_us;
        self.min_rtt_us = if self.min_rtt_us == 0 || self.min_rtt_us == u32::MAX {
            w.min_rtt_us
        } else {
            self.min_rtt_us.min(w.min_rtt_us)
        };
        self.bw_filter = [MinmaxSample {
            t: self.round_count,
            v: w.bw,
        }; 3];
        self.full_bw = w.bw;
        self.full_bw_reached = 1;
        self.reset_probe_bw_mode(c, random);
        self.update_gains(cfg);
        let target = self.bdp(w.bw, cfg.cwnd_gain).max(cfg.min_cwnd);
        c.cwnd = c.cwnd.max(target.min(c.cwnd_clamp));
        c.pacing_rate = self.bw_to_pacing_rate(c, w.bw, BBR_UNIT);
        self.has_seen_rtt = 1;
    }

    /// What to record for the remote address when the connection ends (`None`: it learned
    /// nothing trustworthy: still in STARTUP, or no RTT sample).
    pub fn warm_record(&self, now_us: u64) -> Option<WarmEntry> {
        (self.full_bw_reached != 0
            && self.max_bw() > 0
            && self.min_rtt_us != 0
            && self.min_rtt_us != u32::MAX)
            .then_some(WarmEntry {
                bw: self.max_bw(),
                min_rtt_us: self.min_rtt_us,
                stamp_us: now_us,
            })
    }

    /// `bbr_main` (the `cong_control` op): update the model, then pacing rate, then cwnd.
    pub fn on_ack(&mut self, c: &mut Conn, rs: &RateSample, cfg: &BbrConfig, random: u32) {
        self.update_model(c, rs, cfg, random);
        let bw = self.bw();
        self.set_pacing_rate(c, cfg, bw, self.pacing_gain);
        self.set_cwnd(c, rs, cfg, rs.acked_sacked, bw, self.cwnd_gain);
    }

    /// `bbr_update_model`.
    fn update_model(&mut self, c: &mut Conn, rs: &RateSample, cfg: &BbrConfig, random: u32) {
        self.update_bw(c, rs, cfg, random);
        self.check_loss_too_high(c, rs, cfg);
        self.check_warm_start(c, rs, cfg);
        self.update_ack_aggregation(c, rs, cfg);
        self.update_cycle_phase(c, rs, cfg);
        self.check_full_bw_reached(rs, cfg);
        self.check_drain(c, cfg, random);
        self.update_min_rtt(c, rs, cfg, random);
        self.update_gains(cfg);
    }

    /// Enters `mode`, remembering that the connection has been in it (DRAIN can last less
    /// than one ACK, so sampling the mode would miss it).
    fn set_mode(&mut self, mode: Mode) {
        self.mode = mode as u8;
        self.modes_seen |= 1 << (mode as u8);
    }

    /// `bbr_init_pacing_rate_from_rtt`: cwnd / srtt at high gain (1 ms before any RTT sample).
    fn init_pacing_rate_from_rtt(&mut self, c: &mut Conn, cfg: &BbrConfig) {
        let rtt_us = if c.srtt_us_x8 != 0 {
            self.has_seen_rtt = 1;
            (c.srtt_us_x8 >> 3).max(1)
        } else {
            1000
        };
        let bw = div_u64(u64::from(c.cwnd) * BW_UNIT, u64::from(rtt_us));
        c.pacing_rate =
            self.bw_to_pacing_rate(c, bw.min(u64::from(u32::MAX)) as u32, cfg.high_gain);
    }

    /// `bbr_bw_to_pacing_rate`.
    fn bw_to_pacing_rate(&self, c: &Conn, bw: u32, gain: u32) -> u64 {
        c.rate_bytes_per_sec(u64::from(bw), gain)
            .min(c.max_pacing_rate)
    }

    /// `bbr_set_pacing_rate`: never lower the rate in STARTUP (the estimate is still growing).
    fn set_pacing_rate(&mut self, c: &mut Conn, cfg: &BbrConfig, bw: u32, gain: u32) {
        let rate = self.bw_to_pacing_rate(c, bw, gain);
        if self.has_seen_rtt == 0 && c.srtt_us_x8 != 0 {
            self.init_pacing_rate_from_rtt(c, cfg);
        }
        if self.full_bw_reached != 0 || rate > c.pacing_rate {
            c.pacing_rate = rate;
        }
    }

    /// `bbr_min_tso_segs`.
    pub fn min_tso_segs(pacing_rate: u64) -> u32 {
        if pacing_rate < MIN_TSO_RATE_BITS >> 3 {
            1
        } else {
            2
        }
    }

    /// `bbr_tso_segs_goal`: segments per TSO burst at the current pacing rate.
    fn tso_segs_goal(c: &Conn) -> u32 {
        let bytes = (c.pacing_rate >> (c.pacing_shift & 63)).min(TSO_MAX_BYTES);
        let segs = (div_u64(bytes, u64::from(c.mss)) as u32).max(Self::min_tso_segs(c.pacing_rate));
        segs.min(0x7f)
    }

    /// `bbr_save_cwnd`: remember cwnd before recovery or PROBE_RTT, to restore it after.
    pub fn save_cwnd(&mut self, cwnd: u32) {
        if self.prev_ca_state < TCP_CA_RECOVERY && self.mode() != Mode::ProbeRtt {
            self.prior_cwnd = cwnd;
        } else {
            self.prior_cwnd = self.prior_cwnd.max(cwnd);
        }
    }

    /// `bbr_cwnd_event`: restarting from idle paces at BtlBw rather than a probing gain.
    pub fn on_cwnd_event(&mut self, c: &mut Conn, cfg: &BbrConfig, event: u32, random: u32) {
        if event == CA_EVENT_TX_START && c.app_limited != 0 {
            self.idle_restart = 1;
            self.ack_epoch_stamp_us = c.now_us;
            self.ack_epoch_acked = 0;
            if self.mode() == Mode::ProbeBw {
                self.set_pacing_rate(c, cfg, self.bw(), BBR_UNIT);
            } else if self.mode() == Mode::ProbeRtt {
                self.check_probe_rtt_done(c, random);
            }
        }
    }

    /// `bbr_bdp`: gain × BtlBw × RTprop, in packets, rounded up.
    fn bdp(&self, bw: u32, gain: u32) -> u32 {
        if self.min_rtt_us == u32::MAX {
            return TCP_INIT_CWND;
        }
        let w = u64::from(bw) * u64::from(self.min_rtt_us);
        (((w * u64::from(gain)) >> BBR_SCALE_U64).div_ceil(BW_UNIT)).min(u64::from(u32::MAX)) as u32
    }

    /// `bbr_quantization_budget`: room for TSO bursts and delayed ACKs.
    fn quantization_budget(&self, c: &Conn, cwnd: u32) -> u32 {
        let mut cwnd = cwnd.saturating_add(3 * Self::tso_segs_goal(c));
        cwnd = cwnd.saturating_add(1) & !1;
        if self.mode() == Mode::ProbeBw && self.cycle_idx == 0 {
            cwnd = cwnd.saturating_add(2);
        }
        cwnd
    }

    /// `bbr_inflight`.
    fn inflight(&self, c: &Conn, bw: u32, gain: u32) -> u32 {
        self.quantization_budget(c, self.bdp(bw, gain))
    }

    /// `bbr_packets_in_net_at_edt`: inflight when the next packet departs, under pacing.
    fn packets_in_net_at_edt(&self, c: &Conn, inflight_now: u32) -> u32 {
        let edt_ns = c.wstamp_ns.max(c.clock_ns);
        let interval_us = (edt_ns - c.clock_ns) / 1000;
        let interval_delivered = ((u64::from(self.bw()) * interval_us) >> BW_SCALE) as u32;
        let mut inflight_at_edt = inflight_now;
        if self.pacing_gain > BBR_UNIT {
            inflight_at_edt = inflight_at_edt.saturating_add(Self::tso_segs_goal(c));
        }
        inflight_at_edt.saturating_sub(interval_delivered)
    }

    /// `bbr_ack_aggregation_cwnd`.
    fn ack_aggregation_cwnd(&self, cfg: &BbrConfig) -> u32 {
        if cfg.extra_acked_gain == 0 || self.full_bw_reached == 0 {
            return 0;
        }
        let max_aggr = (u64::from(self.bw()) * EXTRA_ACKED_MAX_US / BW_UNIT) as u32;
        let extra = self.extra_acked[0].max(self.extra_acked[1]);
        let aggr = ((u64::from(cfg.extra_acked_gain) * u64::from(extra)) >> BBR_SCALE_U64) as u32;
        aggr.min(max_aggr)
    }

    /// `bbr_set_cwnd_to_recover_or_restore`: packet conservation in the first round of
    /// recovery; restore the saved cwnd when recovery ends. Returns the cwnd and whether
    /// conservation decides it.
    fn recover_or_restore(&mut self, c: &Conn, rs: &RateSample, acked: u32) -> (u32, bool) {
        let prev = self.prev_ca_state;
        let state = c.ca_state;
        let mut cwnd = c.cwnd;
        if rs.losses > 0 {
            cwnd = (cwnd as i64 - i64::from(rs.losses)).max(1) as u32;
        }
        if state == TCP_CA_RECOVERY && prev != TCP_CA_RECOVERY {
            self.packet_conservation = 1;
            self.next_round_delivered = c.delivered;
            cwnd = c.packets_in_flight.saturating_add(acked);
        } else if prev >= TCP_CA_RECOVERY && state < TCP_CA_RECOVERY {
            cwnd = cwnd.max(self.prior_cwnd);
            self.packet_conservation = 0;
        }
        self.prev_ca_state = state;
        if self.packet_conservation != 0 {
            return (cwnd.max(c.packets_in_flight.saturating_add(acked)), true);
        }
        (cwnd, false)
    }

    /// `bbr_set_cwnd`, plus the `inflight_hi` cap (deviation 4).
    fn set_cwnd(
        &mut self,
        c: &mut Conn,
        rs: &RateSample,
        cfg: &BbrConfig,
        acked: u32,
        bw: u32,
        gain: u32,
    ) {
        let mut cwnd = c.cwnd;
        if acked != 0 {
            let (recovered, conserving) = self.recover_or_restore(c, rs, acked);
            cwnd = recovered;
            if conserving {
                cwnd = cwnd.min(self.inflight_hi).max(cfg.min_cwnd);
            } else {
                let mut target = self.bdp(bw, gain);
                target = target.saturating_add(self.ack_aggregation_cwnd(cfg));
                target = self.quantization_budget(c, target);
                if self.full_bw_reached != 0 {
                    cwnd = cwnd.saturating_add(acked).min(target);
                } else if cwnd < target || c.delivered < TCP_INIT_CWND {
                    cwnd = cwnd.saturating_add(acked);
                }
                if cwnd >= self.inflight_hi && self.mode() == Mode::ProbeBw && self.cycle_idx == 0 {
                    self.probe_hit_bound = 1;
                }
                cwnd = cwnd.min(self.inflight_hi).max(cfg.min_cwnd);
            }
        }
        c.cwnd = cwnd.min(c.cwnd_clamp);
        if self.mode() == Mode::ProbeRtt {
            c.cwnd = c.cwnd.min(cfg.min_cwnd);
        }
    }

    /// `bbr_is_next_cycle_phase`.
    fn is_next_cycle_phase(&self, c: &Conn, rs: &RateSample) -> bool {
        let is_full_length =
            c.delivered_mstamp_us.saturating_sub(self.cycle_stamp_us) > u64::from(self.min_rtt_us);
        if self.pacing_gain == BBR_UNIT {
            return is_full_length;
        }
        let inflight = self.packets_in_net_at_edt(c, rs.prior_in_flight);
        let bw = self.max_bw();
        if self.pacing_gain > BBR_UNIT {
            // The probe also ends once the loss bound caps inflight (deviation 4).
            return is_full_length
                && (rs.losses > 0
                    || inflight >= self.inflight(c, bw, self.pacing_gain)
                    || inflight >= self.inflight_hi);
        }
        is_full_length || inflight <= self.inflight(c, bw, BBR_UNIT)
    }

    /// `bbr_advance_cycle_phase`; leaving a probe that reached `inflight_hi` without loss
    /// raises the bound (deviation 4).
    fn advance_cycle_phase(&mut self, c: &Conn) {
        if self.cycle_idx == 0 && self.inflight_hi != INFLIGHT_UNBOUNDED {
            if self.probes_to_skip > 0 {
                self.probes_to_skip -= 1;
            } else if self.round_loss_high == 0 && self.probe_hit_bound != 0 {
                self.inflight_hi = self.inflight_hi.saturating_add(self.inflight_hi_step);
                self.inflight_hi_step = (self.inflight_hi_step * 2).min(INFLIGHT_HI_MAX_STEP);
            }
            self.probe_hit_bound = 0;
        }
        self.cycle_idx = (self.cycle_idx + 1) & (CYCLE_LEN - 1);
        self.cycle_stamp_us = c.delivered_mstamp_us;
    }

    /// `bbr_update_cycle_phase`.
    fn update_cycle_phase(&mut self, c: &Conn, rs: &RateSample, _cfg: &BbrConfig) {
        if self.mode() == Mode::ProbeBw && self.is_next_cycle_phase(c, rs) {
            self.advance_cycle_phase(c);
        }
    }

    /// `bbr_reset_probe_bw_mode`: enter PROBE_BW at a random phase other than the 0.75 one.
    fn reset_probe_bw_mode(&mut self, c: &Conn, random: u32) {
        self.set_mode(Mode::ProbeBw);
        self.cycle_idx = CYCLE_LEN - 1 - (random % CYCLE_RAND) as u8;
        self.advance_cycle_phase(c);
    }

    /// `bbr_reset_mode`.
    fn reset_mode(&mut self, c: &Conn, random: u32) {
        if self.full_bw_reached == 0 {
            self.set_mode(Mode::Startup);
        } else {
            self.reset_probe_bw_mode(c, random);
        }
    }

    /// `bbr_reset_lt_bw_sampling_interval`.
    fn reset_lt_bw_sampling_interval(&mut self, c: &Conn) {
        self.lt_last_stamp_ms = (c.delivered_mstamp_us / 1000) as u32;
        self.lt_last_delivered = c.delivered;
        self.lt_last_lost = c.lost;
        self.lt_rtt_cnt = 0;
    }

    /// `bbr_reset_lt_bw_sampling`.
    fn reset_lt_bw_sampling(&mut self, c: &Conn) {
        self.lt_bw = 0;
        self.lt_use_bw = 0;
        self.lt_is_sampling = 0;
        self.reset_lt_bw_sampling_interval(c);
    }

    /// `bbr_lt_bw_interval_done`: two consistent lossy intervals reveal a policer's rate.
    fn lt_bw_interval_done(&mut self, c: &Conn, bw: u32) {
        if self.lt_bw != 0 {
            let diff = bw.abs_diff(self.lt_bw);
            if u64::from(diff) * u64::from(BBR_UNIT)
                <= u64::from(LT_BW_RATIO) * u64::from(self.lt_bw)
                || c.rate_bytes_per_sec(u64::from(diff), BBR_UNIT) <= LT_BW_DIFF_BYTES
            {
                self.lt_bw = ((u64::from(bw) + u64::from(self.lt_bw)) >> 1) as u32;
                self.lt_use_bw = 1;
                self.pacing_gain = BBR_UNIT;
                self.lt_rtt_cnt = 0;
                return;
            }
        }
        self.lt_bw = bw;
        self.reset_lt_bw_sampling_interval(c);
    }

    /// `bbr_lt_bw_sampling`: detect token-bucket policers from lossy intervals.
    fn lt_bw_sampling(&mut self, c: &Conn, rs: &RateSample, random: u32) {
        if self.lt_use_bw != 0 {
            if self.mode() == Mode::ProbeBw && self.round_start != 0 {
                self.lt_rtt_cnt = self.lt_rtt_cnt.saturating_add(1);
                if self.lt_rtt_cnt >= LT_BW_MAX_RTTS {
                    self.reset_lt_bw_sampling(c);
                    self.reset_probe_bw_mode(c, random);
                }
            }
            return;
        }
        if self.lt_is_sampling == 0 {
            if rs.losses == 0 {
                return;
            }
            self.reset_lt_bw_sampling_interval(c);
            self.lt_is_sampling = 1;
        }
        if rs.is_app_limited {
            self.reset_lt_bw_sampling(c);
            return;
        }
        if self.round_start != 0 {
            self.lt_rtt_cnt = self.lt_rtt_cnt.saturating_add(1);
        }
        if self.lt_rtt_cnt < LT_INTVL_MIN_RTTS {
            return;
        }
        if self.lt_rtt_cnt > 4 * LT_INTVL_MIN_RTTS {
            self.reset_lt_bw_sampling(c);
            return;
        }
        if rs.losses == 0 {
            return;
        }
        let lost = c.lost.wrapping_sub(self.lt_last_lost);
        let delivered = c.delivered.wrapping_sub(self.lt_last_delivered);
        if delivered == 0
            || u64::from(lost) << BBR_SCALE_U64 < u64::from(LT_LOSS_THRESH) * u64::from(delivered)
        {
            return;
        }
        let t = ((c.delivered_mstamp_us / 1000) as u32).wrapping_sub(self.lt_last_stamp_ms) as i32;
        if t < 1 {
            return;
        }
        if t as u32 >= u32::MAX / 1000 {
            self.reset_lt_bw_sampling(c);
            return;
        }
        let bw = div_u64(u64::from(delivered) * BW_UNIT, u64::from(t as u32) * 1000);
        self.lt_bw_interval_done(c, bw.min(u64::from(u32::MAX)) as u32);
    }

    /// `bbr_update_bw`: packet-timed rounds and the max-bandwidth filter.
    fn update_bw(&mut self, c: &Conn, rs: &RateSample, cfg: &BbrConfig, random: u32) {
        self.round_start = 0;
        if rs.delivered < 0 || rs.interval_us <= 0 {
            return;
        }
        if !after32(self.next_round_delivered, rs.prior_delivered) {
            self.next_round_delivered = c.delivered;
            self.round_count = self.round_count.wrapping_add(1);
            self.round_start = 1;
            self.packet_conservation = 0;
            self.start_loss_round(c);
        }
        self.lt_bw_sampling(c, rs, random);
        let bw = div_u64(rs.delivered as u64 * BW_UNIT, rs.interval_us as u64)
            .min(u64::from(u32::MAX)) as u32;
        self.last_bw_sample = bw;
        // Deviation 7: an ACK-compressed sample measures our sending rate, not the path's.
        let bw = if rs.ack_compressed && self.max_bw() != 0 {
            bw.min(self.max_bw())
        } else {
            bw
        };
        if !rs.is_app_limited || bw >= self.max_bw() {
            self.bw_filter_update(cfg.bw_filter_rounds, self.round_count, bw);
        }
        if rs.rtt_us > 0 {
            self.round_min_rtt_us = self
                .round_min_rtt_us
                .min(rs.rtt_us.min(i64::from(u32::MAX)) as u32);
        }
    }

    /// Starts the per-round loss accounting of deviation 4.
    fn start_loss_round(&mut self, c: &Conn) {
        self.round_start_delivered = c.delivered;
        self.round_start_lost = c.lost;
        self.round_loss_high = 0;
    }

    /// Deviation 4: while probing (STARTUP, or the up phase of PROBE_BW), more than
    /// `loss_thresh_per_mille` of this round's packets lost (at least 3) ends the probe and
    /// bounds inflight: `inflight_hi` = `inflight_hi_beta` × the inflight that met the loss, but
    /// never below `inflight_hi_beta` × BDP (as BBRv3's floor of 0.7 × its target inflight), so
    /// random loss cannot ratchet the bound below the path's capacity.
    fn check_loss_too_high(&mut self, c: &Conn, rs: &RateSample, cfg: &BbrConfig) {
        if cfg.loss_bound_enabled == 0 || rs.losses <= 0 || self.round_loss_high != 0 {
            return;
        }
        let lost = c.lost.wrapping_sub(self.round_start_lost);
        let delivered = c.delivered.wrapping_sub(self.round_start_delivered);
        let sent = u64::from(lost) + u64::from(delivered);
        if lost < LOSS_MIN_PACKETS
            || u64::from(lost) * 1000 <= u64::from(cfg.loss_thresh_per_mille) * sent
        {
            return;
        }
        self.round_loss_high = 1;
        let probing = self.mode() == Mode::Startup
            || (self.mode() == Mode::ProbeBw && self.pacing_gain > BBR_UNIT);
        if !probing || rs.is_app_limited {
            return;
        }
        let beta =
            |x: u32| ((u64::from(x) * u64::from(cfg.inflight_hi_beta)) >> BBR_SCALE_U64) as u32;
        let at_loss = beta(rs.prior_in_flight.min(self.inflight_hi));
        let floor = if self.max_bw() > 0 {
            beta(self.bdp(self.max_bw(), BBR_UNIT))
        } else {
            0
        };
        self.inflight_hi = at_loss.max(floor).max(cfg.min_cwnd);
        self.inflight_hi_step = (self.inflight_hi / INFLIGHT_HI_FIRST_STEP_DIV).max(1);
        self.loss_bound_count = self.loss_bound_count.saturating_add(1);
        if self.mode() == Mode::Startup {
            // The pipe is as full as the buffer allows: leave STARTUP (to DRAIN).
            self.full_bw_reached = 1;
            self.full_bw = self.max_bw();
        } else {
            // End the probe phase now: on to the 0.75 phase that drains it; cruise through the
            // next probe phases.
            self.cycle_idx = 0;
            self.cycle_stamp_us = 0;
            self.advance_cycle_phase(c);
            self.probes_to_skip = PROBES_TO_SKIP_AFTER_LOSS;
        }
    }

    /// Deviation 5: during the first rounds of a warm start, check the record against what the
    /// path shows; revert to STARTUP if it contradicts it.
    fn check_warm_start(&mut self, c: &mut Conn, rs: &RateSample, cfg: &BbrConfig) {
        if self.warm_start != WarmStart::Warm as u8
            || u32::from(self.warm_rounds) >= cfg.warm_start_check_rounds
        {
            return;
        }
        let rtt_limit = ((u64::from(self.warm_min_rtt_us)
            * u64::from(cfg.warm_start_rtt_tolerance))
            >> BBR_SCALE_U64)
            .max(u64::from(self.warm_min_rtt_us) + WARM_RTT_SLACK_US);
        let too_slow = self.round_start != 0
            && self.round_min_rtt_us != u32::MAX
            && u64::from(self.round_min_rtt_us) > rtt_limit;
        if too_slow || (self.round_loss_high != 0 && rs.losses > 0) {
            self.warm_start = WarmStart::FellBack as u8;
            self.bw_filter = [MinmaxSample {
                t: self.round_count,
                v: 0,
            }; 3];
            self.full_bw = 0;
            self.full_bw_cnt = 0;
            self.full_bw_reached = 0;
            self.set_mode(Mode::Startup);
            self.min_rtt_us = self.round_min_rtt_us.min(c.kernel_min_rtt_us);
            self.min_rtt_stamp_us = c.now_us;
            c.cwnd = c.cwnd.min(TCP_INIT_CWND);
            return;
        }
        if self.round_start != 0 {
            self.warm_rounds = self.warm_rounds.saturating_add(1);
            self.round_min_rtt_us = u32::MAX;
        }
    }

    /// `minmax_running_max` over `win` rounds (the kernel's lib/win_minmax.c).
    fn bw_filter_update(&mut self, win: u32, t: u32, v: u32) {
        let f = &mut self.bw_filter;
        let sample = MinmaxSample { t, v };
        let dt = t.wrapping_sub(f[2].t);
        if v >= f[0].v || dt > win {
            *f = [sample; 3];
            return;
        }
        if v >= f[1].v {
            f[1] = sample;
            f[2] = sample;
        } else if v >= f[2].v {
            f[2] = sample;
        }
        // minmax_subwin_update
        let dt = t.wrapping_sub(f[0].t);
        if dt > win {
            f[0] = f[1];
            f[1] = f[2];
            f[2] = sample;
            if t.wrapping_sub(f[0].t) > win {
                f[0] = f[1];
                f[1] = f[2];
                f[2] = sample;
            }
        } else if f[1].t == f[0].t && dt > win / 4 {
            f[1] = sample;
            f[2] = sample;
        } else if f[2].t == f[1].t && dt > win / 2 {
            f[2] = sample;
        }
    }

    /// `bbr_update_ack_aggregation`: how much more than BtlBw the ACKs deliver in bursts.
    fn update_ack_aggregation(&mut self, c: &Conn, rs: &RateSample, cfg: &BbrConfig) {
        if cfg.extra_acked_gain == 0
            || rs.acked_sacked == 0
            || rs.delivered < 0
            || rs.interval_us <= 0
        {
            return;
        }
        if self.round_start != 0 {
            self.extra_acked_win_rtts = self.extra_acked_win_rtts.saturating_add(1).min(0x1f);
            if self.extra_acked_win_rtts >= EXTRA_ACKED_WIN_RTTS {
                self.extra_acked_win_rtts = 0;
                self.extra_acked_win_idx ^= 1;
                let idx = usize::from(self.extra_acked_win_idx & 1);
                self.extra_acked[idx] = 0;
            }
        }
        let epoch_us = c
            .delivered_mstamp_us
            .saturating_sub(self.ack_epoch_stamp_us);
        let mut expected = (u64::from(self.bw()) * epoch_us / BW_UNIT) as u32;
        if self.ack_epoch_acked <= expected
            || self.ack_epoch_acked.saturating_add(rs.acked_sacked) >= ACK_EPOCH_ACKED_RESET
        {
            self.ack_epoch_acked = 0;
            self.ack_epoch_stamp_us = c.delivered_mstamp_us;
            expected = 0;
        }
        self.ack_epoch_acked = self
            .ack_epoch_acked
            .saturating_add(rs.acked_sacked)
            .min(0xf_ffff);
        let extra = (self.ack_epoch_acked - expected.min(self.ack_epoch_acked)).min(c.cwnd);
        let idx = usize::from(self.extra_acked_win_idx & 1);
        let slot = &mut self.extra_acked[idx];
        if extra > *slot {
            *slot = extra;
        }
    }

    /// `bbr_check_full_bw_reached`: bandwidth stopped growing by 25% for 3 rounds.
    fn check_full_bw_reached(&mut self, rs: &RateSample, cfg: &BbrConfig) {
        if self.full_bw_reached != 0 || self.round_start == 0 || rs.is_app_limited {
            return;
        }
        let thresh = (u64::from(self.full_bw) * u64::from(cfg.full_bw_thresh)) >> BBR_SCALE_U64;
        if u64::from(self.max_bw()) >= thresh {
            self.full_bw = self.max_bw();
            self.full_bw_cnt = 0;
            return;
        }
        self.full_bw_cnt = self.full_bw_cnt.saturating_add(1);
        self.full_bw_reached = u8::from(u32::from(self.full_bw_cnt) >= cfg.full_bw_rounds);
    }

    /// `bbr_check_drain`: STARTUP → DRAIN when the pipe is full; DRAIN → PROBE_BW when the
    /// queue is gone.
    fn check_drain(&mut self, c: &mut Conn, cfg: &BbrConfig, random: u32) {
        if self.mode() == Mode::Startup && self.full_bw_reached != 0 {
            self.set_mode(Mode::Drain);
            c.ssthresh = self.inflight(c, self.max_bw(), BBR_UNIT);
            self.update_gains(cfg);
        }
        if self.mode() == Mode::Drain
            && self.packets_in_net_at_edt(c, c.packets_in_flight)
                <= self.inflight(c, self.max_bw(), BBR_UNIT)
        {
            self.reset_probe_bw_mode(c, random);
        }
    }

    /// `bbr_check_probe_rtt_done`.
    fn check_probe_rtt_done(&mut self, c: &mut Conn, random: u32) {
        if !(self.probe_rtt_done_stamp_us != 0 && c.now_us > self.probe_rtt_done_stamp_us) {
            return;
        }
        self.min_rtt_stamp_us = c.now_us;
        c.cwnd = c.cwnd.max(self.prior_cwnd);
        self.reset_mode(c, random);
    }

    /// `bbr_update_min_rtt`: the 10 s min filter and PROBE_RTT.
    fn update_min_rtt(&mut self, c: &mut Conn, rs: &RateSample, cfg: &BbrConfig, random: u32) {
        let filter_expired = c.now_us > self.min_rtt_stamp_us + u64::from(cfg.min_rtt_window_us);
        if rs.rtt_us >= 0
            && ((rs.rtt_us as u64) < u64::from(self.min_rtt_us)
                || (filter_expired && !rs.is_ack_delayed))
        {
            self.min_rtt_us = rs.rtt_us.min(i64::from(u32::MAX)) as u32;
            self.min_rtt_stamp_us = c.now_us;
        }
        if cfg.probe_rtt_duration_us > 0
            && filter_expired
            && self.idle_restart == 0
            && self.mode() != Mode::ProbeRtt
        {
            self.set_mode(Mode::ProbeRtt);
            self.save_cwnd(c.cwnd);
            self.probe_rtt_done_stamp_us = 0;
            self.probe_rtt_count = self.probe_rtt_count.saturating_add(1);
        }
        if self.mode() == Mode::ProbeRtt {
            // Mark the sample app-limited so that the low rate of PROBE_RTT does not lower BtlBw.
            let v = c.delivered.wrapping_add(c.packets_in_flight);
            c.app_limited = if v != 0 { v } else { 1 };
            if self.probe_rtt_done_stamp_us == 0 && c.packets_in_flight <= cfg.min_cwnd {
                self.probe_rtt_done_stamp_us = c.now_us + u64::from(cfg.probe_rtt_duration_us);
                self.probe_rtt_round_done = 0;
                self.next_round_delivered = c.delivered;
            } else if self.probe_rtt_done_stamp_us != 0 {
                if self.round_start != 0 {
                    self.probe_rtt_round_done = 1;
                }
                if self.probe_rtt_round_done != 0 {
                    self.check_probe_rtt_done(c, random);
                }
            }
        }
        if rs.delivered > 0 {
            self.idle_restart = 0;
        }
    }

    /// `bbr_update_gains`.
    fn update_gains(&mut self, cfg: &BbrConfig) {
        let (pacing, cwnd) = match self.mode() {
            Mode::Startup => (cfg.high_gain, cfg.high_gain),
            Mode::Drain => (cfg.drain_gain, cfg.high_gain),
            Mode::ProbeBw => {
                let pacing = if self.lt_use_bw != 0 {
                    BBR_UNIT
                } else {
                    match self.cycle_idx & (CYCLE_LEN - 1) {
                        0 if self.probes_to_skip > 0 => BBR_UNIT,
                        0 => cfg.probe_up_gain,
                        1 => cfg.probe_down_gain,
                        _ => BBR_UNIT,
                    }
                };
                (pacing, cfg.cwnd_gain)
            }
            Mode::ProbeRtt => (BBR_UNIT, BBR_UNIT),
        };
        self.pacing_gain = pacing;
        self.cwnd_gain = cwnd;
    }

    /// `bbr_undo_cwnd`: a spurious loss signal; restart full-pipe and policer detection.
    pub fn on_undo(&mut self, c: &Conn) -> u32 {
        self.full_bw = 0;
        self.full_bw_cnt = 0;
        self.reset_lt_bw_sampling(c);
        c.cwnd
    }

    /// `bbr_ssthresh`: BBR does not use ssthresh; save cwnd for recovery.
    pub fn on_ssthresh(&mut self, c: &Conn) -> u32 {
        self.save_cwnd(c.cwnd);
        c.ssthresh
    }

    /// `bbr_set_state`: an RTO ends the round and counts as loss for policer detection.
    pub fn on_set_state(&mut self, c: &Conn, new_state: u8, random: u32) {
        if new_state == TCP_CA_LOSS {
            let rs = RateSample {
                losses: 1,
                ..RateSample::default()
            };
            self.prev_ca_state = TCP_CA_LOSS;
            self.full_bw = 0;
            self.round_start = 1;
            self.lt_bw_sampling(c, &rs, random);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSS: u32 = 1448;

    fn conn() -> Conn {
        Conn {
            now_us: 1_000_000,
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

    /// A fluid model of one flow over a bottleneck of `bw` (packets/µs << 24) with propagation
    /// delay `rtt_us` and an unbounded buffer: the sender is paced at the pacing rate and
    /// limited by cwnd; inflight beyond the BDP queues at the bottleneck and adds delay.
    /// Every `loss_every`-th ACK reports one lost packet.
    struct Path {
        bw: u32,
        rtt_us: u64,
        loss_every: u32,
    }

    impl Path {
        /// Runs `acks` ACKs of 2 packets through `s`, returning the modes entered.
        fn run(&self, s: &mut Bbr, c: &mut Conn, cfg: &BbrConfig, acks: u32) -> Vec<Mode> {
            let mut modes = vec![s.mode()];
            let bw = f64::from(self.bw) / BW_UNIT as f64; // packets per µs
            let bdp = bw * self.rtt_us as f64;
            // The first flight: the initial window (a warm start paces the rest out).
            let mut inflight = f64::from(c.cwnd.min(TCP_INIT_CWND));
            for i in 0..acks {
                let acked = 2.0;
                let delivery_rate = bw.min(inflight.max(acked) / self.rtt_us as f64);
                let dt = acked / delivery_rate;
                let queue_us = (inflight - bdp).max(0.0) / bw;
                let rtt_us = self.rtt_us as f64 + queue_us;
                let prior_in_flight = inflight as u32;
                let prior_delivered = c.delivered.saturating_sub(prior_in_flight);
                // The sender refills at the pacing rate, up to cwnd.
                let pacing = c.pacing_rate as f64 / f64::from(MSS) / 1e6;
                let room = (f64::from(c.cwnd) - (inflight - acked)).max(0.0);
                inflight = inflight - acked + (pacing * dt).min(room);
                c.now_us += dt.max(1.0) as u64;
                c.delivered += acked as u32;
                c.delivered_mstamp_us = c.now_us;
                c.clock_ns = c.now_us * 1000;
                c.wstamp_ns = c.clock_ns;
                c.packets_in_flight = inflight as u32;
                // The kernel's rate sampler: samples of data sent while app-limited are marked,
                // and the mark ends once everything sent before it is delivered.
                let is_app_limited = c.app_limited != 0;
                if c.app_limited != 0 && after32(c.delivered, c.app_limited) {
                    c.app_limited = 0;
                }
                let losses =
                    i32::from(self.loss_every > 0 && i % self.loss_every == self.loss_every - 1);
                c.lost += losses as u32;
                let rs = RateSample {
                    prior_delivered,
                    delivered: (delivery_rate * rtt_us) as i32,
                    interval_us: rtt_us as i64,
                    rtt_us: rtt_us as i64,
                    losses,
                    acked_sacked: acked as u32,
                    prior_in_flight,
                    is_app_limited,
                    is_ack_delayed: false,
                    ack_compressed: false,
                };
                s.on_ack(c, &rs, cfg, i);
                if *modes.last().unwrap() != s.mode() {
                    modes.push(s.mode());
                }
            }
            modes
        }
    }

    #[test]
    fn max_filter_keeps_the_max_of_the_window() {
        let mut s = Bbr::default();
        // (round, value, expected max)
        // The window is inclusive: a sample from round 1 still counts in round 11 (dt > win expires).
        let table = [
            (1, 100, 100),
            (2, 50, 100),
            (5, 80, 100),
            (11, 60, 100),
            (12, 10, 80),
            (16, 20, 60),
            (30, 5, 5),
        ];
        for (t, v, want) in table {
            s.bw_filter_update(10, t, v);
            assert_eq!(s.max_bw(), want, "round {t} sample {v}");
        }
    }

    /// Deviation 7: a sample the kernel took over the send interval because the ACKs came back
    /// batched is our sending rate and does not raise the estimate; the same rate with ACKs as
    /// spread out as the sends does.
    #[test]
    fn an_ack_compressed_sample_does_not_raise_the_estimate() {
        let cfg = BbrConfig::DEFAULT;
        let c = conn();
        let est = bw_of_mbit(100);
        // 125 Mbit/s over 10 ms in MSS packets, the delivered count the kernel reports.
        let delivered = (u64::from(bw_of_mbit(125)) * 10_000 / BW_UNIT) as i32;
        for (compressed, raised) in [(true, false), (false, true)] {
            let mut s = Bbr::default();
            s.bw_filter_update(cfg.bw_filter_rounds, 0, est);
            let rs = RateSample {
                delivered,
                interval_us: 10_000,
                acked_sacked: 2,
                ack_compressed: compressed,
                ..Default::default()
            };
            s.update_bw(&c, &rs, &cfg, 0);
            assert_eq!(
                s.max_bw() > est,
                raised,
                "ack_compressed {compressed}: {}",
                s.max_bw()
            );
        }
    }

    #[test]
    fn gains_follow_the_mode_and_cycle() {
        let cfg = BbrConfig::DEFAULT;
        let mut s = Bbr::default();
        let table = [
            (Mode::Startup, 0, 739, 739),
            (Mode::Drain, 0, 88, 739),
            (Mode::ProbeBw, 0, 320, 512),
            (Mode::ProbeBw, 1, 192, 512),
            (Mode::ProbeBw, 5, 256, 512),
            (Mode::ProbeRtt, 0, 256, 256),
        ];
        for (mode, idx, pacing, cwnd) in table {
            s.mode = mode as u8;
            s.cycle_idx = idx;
            s.update_gains(&cfg);
            assert_eq!(
                (s.pacing_gain, s.cwnd_gain),
                (pacing, cwnd),
                "{mode:?} phase {idx}"
            );
        }
    }

    #[test]
    fn probe_bw_starts_at_a_random_phase_but_never_the_draining_one() {
        let c = conn();
        for random in 0..64 {
            let mut s = Bbr::default();
            s.reset_probe_bw_mode(&c, random);
            assert_eq!(s.mode(), Mode::ProbeBw);
            assert_ne!(s.cycle_idx, 1, "random {random}");
        }
    }

    #[test]
    fn full_pipe_after_three_rounds_without_25_percent_growth() {
        let cfg = BbrConfig::DEFAULT;
        let mut s = Bbr::default();
        let rs = RateSample::default();
        // (max bw this round, full pipe reached after it)
        let table = [
            (100, false),
            (200, false),
            (240, false),
            (245, false),
            (249, true),
        ];
        for (round, (bw, reached)) in table.into_iter().enumerate() {
            s.bw_filter = [MinmaxSample {
                t: round as u32,
                v: bw,
            }; 3];
            s.round_start = 1;
            s.check_full_bw_reached(&rs, &cfg);
            assert_eq!(s.full_bw_reached != 0, reached, "round {round} bw {bw}");
        }
    }

    #[test]
    fn bdp_and_pacing_arithmetic() {
        let mut s = Bbr::default();
        let c = conn();
        // 100 Mbit/s × 20 ms = 250 kB ≈ 172.7 packets of 1448 B; gain 2 → 346 (rounded up).
        s.min_rtt_us = 20_000;
        let bw = bw_of_mbit(100);
        assert_eq!(s.bdp(bw, BBR_UNIT), 173);
        assert_eq!(s.bdp(bw, 2 * BBR_UNIT), 346);
        // Pacing at gain 1: 100 Mbit/s = 12.5 MB/s, minus the 1% margin.
        let rate = s.bw_to_pacing_rate(&c, bw, BBR_UNIT);
        assert!((12_300_000..12_400_000).contains(&rate), "{rate}");
        s.min_rtt_us = u32::MAX;
        assert_eq!(s.bdp(bw, BBR_UNIT), TCP_INIT_CWND);
    }

    #[test]
    fn a_flow_goes_startup_drain_probe_bw_and_probe_rtt_after_ten_seconds() {
        let cfg = BbrConfig::DEFAULT;
        let mut s = Bbr::default();
        let mut c = conn();
        s.init(&mut c, &cfg, None, 0);
        let path = Path {
            bw: bw_of_mbit(100),
            rtt_us: 20_000,
            loss_every: 0,
        };
        let modes = path.run(&mut s, &mut c, &cfg, 20_000);
        assert_eq!(
            &modes[..3],
            &[Mode::Startup, Mode::Drain, Mode::ProbeBw],
            "{modes:?}"
        );
        let bw_err = (f64::from(s.max_bw()) / f64::from(path.bw) - 1.0).abs();
        assert!(bw_err < 0.1, "bw estimate off by {bw_err}");
        assert!((20_000..21_000).contains(&s.min_rtt_us), "{}", s.min_rtt_us);
        // 20 000 ACKs of 2 packets at ~8.6 packets/ms is ~4.6 s: no PROBE_RTT yet.
        assert_eq!(s.probe_rtt_count, 0);
        let modes = path.run(&mut s, &mut c, &cfg, 30_000);
        assert!(modes.contains(&Mode::ProbeRtt), "{modes:?}");
        assert_eq!(s.probe_rtt_count, 1);
        assert_eq!(s.mode(), Mode::ProbeBw, "back to PROBE_BW after PROBE_RTT");
    }

    #[test]
    fn loss_in_startup_ends_it_and_bounds_inflight() {
        let cfg = BbrConfig::DEFAULT;
        let mut s = Bbr::default();
        let mut c = conn();
        s.init(&mut c, &cfg, None, 0);
        // 10% loss: far above the 2% threshold.
        let path = Path {
            bw: bw_of_mbit(100),
            rtt_us: 20_000,
            loss_every: 10,
        };
        path.run(&mut s, &mut c, &cfg, 400);
        assert_eq!(s.full_bw_reached, 1);
        assert!(s.loss_bound_count >= 1);
        assert_ne!(s.inflight_hi, INFLIGHT_UNBOUNDED);
        assert!(c.cwnd <= s.inflight_hi.max(cfg.min_cwnd));
    }

    #[test]
    fn loss_bound_off_behaves_like_bbr_v1() {
        let cfg = BbrConfig {
            loss_bound_enabled: 0,
            ..BbrConfig::DEFAULT
        };
        let mut s = Bbr::default();
        let mut c = conn();
        s.init(&mut c, &cfg, None, 0);
        let path = Path {
            bw: bw_of_mbit(100),
            rtt_us: 20_000,
            loss_every: 10,
        };
        path.run(&mut s, &mut c, &cfg, 400);
        assert_eq!(s.loss_bound_count, 0);
        assert_eq!(s.inflight_hi, INFLIGHT_UNBOUNDED);
    }

    #[test]
    fn loss_free_probes_raise_the_bound_by_doubling_steps() {
        let mut s = Bbr(BbrState {
            inflight_hi: 100,
            inflight_hi_step: 1,
            mode: Mode::ProbeBw as u8,
            ..Default::default()
        });
        let c = conn();
        let mut seen = vec![];
        for _ in 0..4 {
            s.cycle_idx = 0;
            s.probe_hit_bound = 1;
            s.advance_cycle_phase(&c);
            seen.push(s.inflight_hi);
        }
        assert_eq!(seen, [101, 103, 107, 115]);
        // A probe that never reached the bound says nothing about it.
        s.cycle_idx = 0;
        s.advance_cycle_phase(&c);
        assert_eq!(s.inflight_hi, 115);
        // A probe that met loss does not raise it.
        s.cycle_idx = 0;
        s.probe_hit_bound = 1;
        s.round_loss_high = 1;
        s.advance_cycle_phase(&c);
        assert_eq!(s.inflight_hi, 115);
    }

    #[test]
    fn a_lossy_probe_skips_the_next_two_probes() {
        let cfg = BbrConfig::DEFAULT;
        let c = conn();
        let mut s = Bbr(BbrState {
            mode: Mode::ProbeBw as u8,
            min_rtt_us: 20_000,
            inflight_hi: INFLIGHT_UNBOUNDED,
            ..Default::default()
        });
        s.bw_filter = [MinmaxSample {
            t: 0,
            v: bw_of_mbit(100),
        }; 3];
        s.cycle_idx = 0;
        s.update_gains(&cfg);
        assert_eq!(s.pacing_gain, cfg.probe_up_gain);
        // 10 of 100 packets lost in the probe round.
        let c_lossy = Conn {
            lost: 10,
            delivered: 90,
            ..c
        };
        let rs = RateSample {
            losses: 1,
            prior_in_flight: 200,
            delivered: 1,
            interval_us: 1,
            ..Default::default()
        };
        s.check_loss_too_high(&c_lossy, &rs, &cfg);
        assert_eq!(s.loss_bound_count, 1);
        assert_eq!(s.cycle_idx, 1, "the probe ended");
        // The next two phase-0s cruise at 1.0; the third probes again.
        let mut gains = vec![];
        for _ in 0..3 {
            s.cycle_idx = 0;
            s.update_gains(&cfg);
            gains.push(s.pacing_gain);
            s.advance_cycle_phase(&c);
        }
        assert_eq!(gains, [BBR_UNIT, BBR_UNIT, cfg.probe_up_gain]);
    }

    #[test]
    fn warm_start_decision() {
        let cfg = BbrConfig::DEFAULT;
        let bw = bw_of_mbit(100);
        let fresh = WarmEntry {
            bw,
            min_rtt_us: 20_000,
            stamp_us: 1_000_000 - 1_000,
        };
        let stale = WarmEntry {
            stamp_us: 0,
            ..fresh
        };
        let c0 = conn();
        // (record, enabled, expected start)
        let table = [
            (None, 1, WarmStart::Cold),
            (Some(fresh), 1, WarmStart::Warm),
            (Some(fresh), 0, WarmStart::Cold),
            (Some(WarmEntry { bw: 0, ..fresh }), 1, WarmStart::Cold),
            (
                Some(stale),
                1,
                if c0.now_us - stale.stamp_us <= u64::from(cfg.warm_start_max_age_us) {
                    WarmStart::Warm
                } else {
                    WarmStart::Cold
                },
            ),
        ];
        for (record, enabled, want) in table {
            let cfg = BbrConfig {
                warm_start_enabled: enabled,
                ..cfg
            };
            let mut s = Bbr::default();
            let mut c = conn();
            s.init(&mut c, &cfg, record.as_ref(), 3);
            assert_eq!(s.warm_start, want as u8, "{record:?} enabled {enabled}");
            if want == WarmStart::Warm {
                assert_eq!(s.mode(), Mode::ProbeBw);
                assert_eq!(s.max_bw(), bw);
                assert_eq!(
                    c.cwnd,
                    s.bdp(bw, cfg.cwnd_gain),
                    "cwnd starts at the BDP at cwnd gain"
                );
            } else {
                assert_eq!(s.mode(), Mode::Startup);
                assert_eq!(c.cwnd, TCP_INIT_CWND);
            }
        }
    }

    #[test]
    fn a_warm_start_that_the_path_contradicts_falls_back_to_startup() {
        let cfg = BbrConfig::DEFAULT;
        let record = WarmEntry {
            bw: bw_of_mbit(100),
            min_rtt_us: 20_000,
            stamp_us: 999_000,
        };
        // The path is now 10× slower: cwnd at the old BDP builds a queue, RTT far above 2×.
        let path = Path {
            bw: bw_of_mbit(10),
            rtt_us: 20_000,
            loss_every: 0,
        };
        let mut s = Bbr::default();
        let mut c = conn();
        s.init(&mut c, &cfg, Some(&record), 0);
        assert_eq!(s.warm_start, WarmStart::Warm as u8);
        path.run(&mut s, &mut c, &cfg, 200);
        assert_eq!(s.warm_start, WarmStart::FellBack as u8);
        // The same path as recorded keeps the warm start.
        let same = Path {
            bw: bw_of_mbit(100),
            rtt_us: 20_000,
            loss_every: 0,
        };
        let mut s = Bbr::default();
        let mut c = conn();
        s.init(&mut c, &cfg, Some(&record), 0);
        same.run(&mut s, &mut c, &cfg, 2_000);
        assert_eq!(s.warm_start, WarmStart::Warm as u8);
        assert_eq!(s.mode(), Mode::ProbeBw);
        let record = s
            .warm_record(c.now_us)
            .expect("a measured path is recorded");
        assert!((f64::from(record.bw) / f64::from(bw_of_mbit(100)) - 1.0).abs() < 0.1);
    }

    #[test]
    fn recovery_conserves_packets_then_restores_cwnd() {
        let cfg = BbrConfig::DEFAULT;
        let mut s = Bbr(BbrState {
            mode: Mode::ProbeBw as u8,
            full_bw_reached: 1,
            min_rtt_us: 20_000,
            inflight_hi: INFLIGHT_UNBOUNDED,
            ..Default::default()
        });
        s.bw_filter = [MinmaxSample {
            t: 0,
            v: bw_of_mbit(100),
        }; 3];
        let mut c = Conn {
            cwnd: 300,
            packets_in_flight: 250,
            ..conn()
        };
        s.on_ssthresh(&c);
        assert_eq!(s.prior_cwnd, 300);
        c.ca_state = TCP_CA_RECOVERY;
        let rs = RateSample {
            acked_sacked: 2,
            losses: 1,
            delivered: 2,
            interval_us: 100,
            ..Default::default()
        };
        s.set_cwnd(&mut c, &rs, &cfg, 2, s.bw(), s.cwnd_gain.max(BBR_UNIT));
        assert_eq!(c.cwnd, 252, "packet conservation: inflight + acked");
        c.ca_state = TCP_CA_OPEN;
        let rs = RateSample {
            acked_sacked: 2,
            delivered: 2,
            interval_us: 100,
            ..Default::default()
        };
        s.set_cwnd(&mut c, &rs, &cfg, 2, s.bw(), 2 * BBR_UNIT);
        assert!(c.cwnd >= 300, "cwnd restored after recovery: {}", c.cwnd);
    }
}
