//! Shared types of the `bbr-p2p` congestion control: its per-socket state (socket storage,
//! read by the node with the socket as key) and its run-time configuration. Careful resume's
//! types (the node's per-socket hint) are in [`crate::resume`].

/// Name of the socket-storage map holding each socket's [`BbrStorage`] (its [`BbrState`] first).
pub const BBR_STATE_MAP: &str = "BBR_STATE";
/// Name of the two-slot array holding the [`BbrConfig`] (see [`BBR_CONFIG_SLOT_MAP`]).
pub const BBR_CONFIG_MAP: &str = "BBR_CONFIG";
/// Name of the single-entry array holding the config generation: its low bit is the index of
/// the [`BBR_CONFIG_MAP`] slot in use. A writer fills the other slot, then stores the next
/// generation (one aligned 32-bit store, which a program reads whole): an ACK sees the old
/// tunables or the new ones, never a mix, and a program that remembers the generation knows
/// whether the tunables changed since (the per-ACK fast path, `cc_ebpf::bbr` deviation 17).
pub const BBR_CONFIG_SLOT_MAP: &str = "BBR_CFG_SLOT";
/// Slots of the [`BBR_CONFIG_MAP`] array: the one in use and the one being written.
pub const BBR_CONFIG_SLOTS: u32 = 2;

/// Fixed-point unit of gains: 256 = 1.0 (as `BBR_UNIT` in tcp_bbr.c).
pub const BBR_SCALE: u32 = 8;
pub const BBR_UNIT: u32 = 1 << BBR_SCALE;
/// Fixed-point unit of bandwidth in packets per microsecond: `BW_UNIT` = 2^24.
pub const BW_SCALE: u32 = 24;
pub const BW_UNIT: u64 = 1 << BW_SCALE;

/// BBR's state machine (`enum bbr_mode`).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Ramp up the sending rate rapidly to fill the pipe (pacing gain 2.77).
    Startup = 0,
    /// Drain the queue STARTUP created (pacing gain 0.35).
    Drain = 1,
    /// Cruise at the estimated bandwidth; probe for more every 2–3 s ([`Phase`]).
    ProbeBw = 2,
    /// Cut inflight to half the BDP for 200 ms to re-measure the propagation delay.
    ProbeRtt = 3,
}

impl Mode {
    pub const fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Drain,
            2 => Self::ProbeBw,
            3 => Self::ProbeRtt,
            _ => Self::Startup,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Startup => "startup",
            Self::Drain => "drain",
            Self::ProbeBw => "probe_bw",
            Self::ProbeRtt => "probe_rtt",
        }
    }
}

/// The phases of PROBE_BW (BBRv3's `enum bbr_pacing_gain_phase`; the values are v3's).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Probe for bandwidth: pacing gain 1.25, `inflight_hi` grows exponentially per round.
    Up = 0,
    /// Drain the queue the probe made: pacing gain 0.75 (v3: 0.91), until inflight is at the BDP.
    Down = 1,
    /// Cruise at the estimate with 15% headroom below `inflight_hi`, for 2–3 s.
    Cruise = 2,
    /// One round at gain 1 with the short-term bounds lifted, before probing up.
    Refill = 3,
}

impl Phase {
    pub const fn from_u8(v: u8) -> Self {
        match v & 3 {
            0 => Self::Up,
            1 => Self::Down,
            2 => Self::Cruise,
            _ => Self::Refill,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
            Self::Cruise => "cruise",
            Self::Refill => "refill",
        }
    }
}

/// `inflight_hi`, `inflight_lo` and `bw_lo` when no signal has bounded them (v3's `~0U`).
pub const UNBOUNDED: u32 = u32::MAX;

/// Per-socket BBR state: BBRv3's `struct bbr` (unpacked: it lives in socket storage, not in
/// the 104-byte `icsk_ca_priv`), the variant's additions, and counters the node exports.
/// Times are microseconds of the TCP clock (`tcp_mstamp`); bandwidths packets/µs <<
/// [`BW_SCALE`]; volumes packets.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BbrState {
    // --- clocks ---
    pub min_rtt_stamp_us: u64,
    /// When `probe_rtt_min_us` was sampled (the PROBE_RTT interval runs from here).
    pub probe_rtt_min_stamp_us: u64,
    /// End of the current PROBE_RTT (0: not yet scheduled).
    pub probe_rtt_done_stamp_us: u64,
    /// Start of the current PROBE_BW phase (`tp->delivered_mstamp`).
    pub cycle_stamp_us: u64,
    pub ack_epoch_stamp_us: u64,
    // --- the model's upper and lower bounds ---
    /// Max delivery rate of the previous and the current probe cycle (v3's 2-cycle filter).
    pub bw_hi: [u32; 2],
    /// Short-term bandwidth bound after loss outside probing ([`UNBOUNDED`]: none).
    pub bw_lo: u32,
    /// Max delivery rate over the latest round.
    pub bw_latest: u32,
    /// Maximum safe volume in flight: where the loss rate crossed the threshold ([`UNBOUNDED`]).
    pub inflight_hi: u32,
    /// Short-term volume bound after loss outside probing ([`UNBOUNDED`]: none).
    pub inflight_lo: u32,
    /// Max packets delivered in one sample interval over the latest round.
    pub inflight_latest: u32,
    /// Delivery rate at the last full-pipe check.
    pub full_bw: u32,
    pub min_rtt_us: u32,
    /// Min RTT over the PROBE_RTT interval (5 s).
    pub probe_rtt_min_us: u32,
    pub prior_cwnd: u32,
    // --- rounds ---
    /// Packet-timed rounds elapsed.
    pub round_count: u32,
    /// `tp->delivered` that ends the current round.
    pub next_round_delivered: u32,
    /// `tp->delivered` that ends the current loss-accounting round.
    pub loss_round_delivered: u32,
    /// `tp->lost` when the loss-accounting round began.
    pub loss_round_lost: u32,
    /// Packets in flight when the loss-accounting round began: the round's loss rate is
    /// measured against it (deviation 1).
    pub loss_round_flight: u32,
    // --- ACK aggregation ---
    pub ack_epoch_acked: u32,
    pub extra_acked: [u32; 2],
    // --- gains (BBR_UNIT = 1.0) ---
    pub pacing_gain: u32,
    pub cwnd_gain: u32,
    // --- undo of a spurious recovery ---
    pub undo_bw_lo: u32,
    pub undo_inflight_lo: u32,
    pub undo_inflight_hi: u32,
    // --- probing ---
    /// Packets ACKed per one-packet raise of `inflight_hi` in PROBE_BW UP.
    pub bw_probe_up_cnt: u32,
    pub bw_probe_up_acks: u32,
    /// Time in DOWN/CRUISE before the next probe (2–3 s, drawn when entering DOWN).
    pub probe_wait_us: u32,
    // --- counters for the node ---
    /// Times PROBE_RTT was entered.
    pub probe_rtt_count: u32,
    /// Times loss above the threshold set `inflight_hi` (a probe or STARTUP ended by loss).
    pub loss_bound_count: u32,
    /// Bandwidth probes started (REFILL entered).
    pub bw_probe_count: u32,
    /// Spurious recoveries undone.
    pub undo_count: u32,
    /// Inflight when the loss threshold was last crossed.
    pub inflight_at_loss: u32,
    /// Latest delivery-rate sample.
    pub last_bw_sample: u32,
    /// Smallest RTT sample of the current loss round, µs (`u32::MAX`: none yet).
    pub round_min_rtt_us: u32,
    // --- flags and small counters (u8 each, no bitfields) ---
    pub mode: u8,
    /// [`Phase`] while in PROBE_BW.
    pub cycle_idx: u8,
    pub prev_ca_state: u8,
    pub round_start: u8,
    pub idle_restart: u8,
    pub probe_rtt_round_done: u8,
    pub full_bw_reached: u8,
    /// The delivery rate stopped growing (3 rounds under +25%) since the last reset.
    pub full_bw_now: u8,
    pub full_bw_cnt: u8,
    pub has_seen_rtt: u8,
    /// cwnd at init (at most 127).
    pub init_cwnd: u8,
    pub extra_acked_win_rtts: u8,
    pub extra_acked_win_idx: u8,
    /// cwnd reached its target: app-limited ACKs may skip the model update.
    pub try_fast_path: u8,
    /// Rounds of exponential `inflight_hi` growth in this probe.
    pub bw_probe_up_rounds: u8,
    /// Rounds since the last probe (saturates at 255).
    pub rounds_since_probe: u8,
    /// Where the ACKs stand relative to the probe (v3's `enum bbr_ack_phase`).
    pub ack_phase: u8,
    /// ACKs now carry samples of the probe: loss above the threshold bounds `inflight_hi`.
    pub bw_probe_samples: u8,
    pub prev_probe_too_high: u8,
    pub stopped_risky_probe: u8,
    pub loss_round_start: u8,
    pub loss_in_round: u8,
    /// The losses of this round exceed the threshold fraction of its starting flight.
    pub loss_high_in_round: u8,
    /// ACKs that reported losses in this round (saturates at 15).
    pub loss_events_in_round: u8,
    /// How the connection started: a [`crate::resume::Start`] (careful resume, variant
    /// feature 2), mirrored from the socket's resume entry.
    pub start: u8,
    /// Why it started cold or retreated: a [`crate::resume::Reason`].
    pub start_reason: u8,
    /// Bit `1 << mode` for every [`Mode`] the connection has been in.
    pub modes_seen: u8,
    pub packet_conservation: u8,
    /// 1 while careful resume may still act on the connection (the socket's resume entry is
    /// looked up on each ACK only then).
    pub resume_pending: u8,
    /// Segments per TSO burst at the pacing rate last set (`bbr_tso_segs_goal`), kept so that
    /// an ACK that does not change the pacing rate divides nothing for it.
    pub tso_segs_goal: u8,
    /// 1: cruising at the DOWN gain this round, because the queue stood through the last
    /// one (`cc_ebpf::bbr` deviation 18).
    pub cruise_drain: u8,
    pub _pad: [u8; 1],
    // --- the per-ACK fast path (`cc_ebpf::bbr` deviation 17): what the last full ACK left
    // that an ACK changing nothing would recompute identically; valid while `fast_ok` ---
    /// The earlier of the PROBE_RTT interval's and the min-RTT window's expiry, µs.
    pub fast_rtt_deadline_us: u64,
    /// cwnd target (`bbr_set_cwnd`'s, after the quantization budget), packets.
    pub fast_target: u32,
    /// The cap `bbr_bound_cwnd_for_inflight_model` applies (at least `min_cwnd`), packets.
    pub fast_cap: u32,
    pub fast_min_cwnd: u32,
    /// `min(probe_max_rounds, BDP)`: the Reno-coexistence round bound before the cwnd term.
    pub fast_reno_rounds: u32,
    /// A delivery-rate sample at or above this restarts full-pipe detection
    /// ([`u32::MAX`]: the pipe is full, nothing does).
    pub fast_full_bw_bar: u32,
    /// The config generation (`BBR_CFG_SLOT`'s value) the envelope was computed with.
    pub fast_cfg_gen: u32,
    /// 1: the fields above hold, for the state as the last full ACK left it.
    pub fast_ok: u8,
    /// 1: `extra_acked_gain` is not 0 (the ACK-aggregation estimate runs).
    pub fast_aggr: u8,
    pub _pad2: [u8; 2],
    /// In PROBE_BW DOWN: an ACK whose inflight at the next departure is at or below this
    /// ends the phase (`bbr_check_time_to_cruise`), packets; 0 elsewhere.
    pub fast_cruise_bar: u32,
}
const _: () = assert!(core::mem::size_of::<BbrState>() == 248);

/// 8-byte words after the state in each socket's storage value, for the eBPF side's per-op
/// scratch (the socket as read for the current ACK and its rate sample, kept off the 512-byte
/// stack). In the same value as the state so that an ACK makes one storage lookup, not two.
pub const BBR_SCRATCH_WORDS: usize = 18;

/// The value of [`BBR_STATE_MAP`]: the state the node reads, then the eBPF side's scratch
/// (meaningless to the node; it reads the whole value and keeps [`BbrStorage::state`]).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BbrStorage {
    pub state: BbrState,
    pub scratch: [u64; BBR_SCRATCH_WORDS],
}
const _: () = assert!(core::mem::size_of::<BbrStorage>() == 248 + 8 * BBR_SCRATCH_WORDS);

impl BbrState {
    pub fn mode(&self) -> Mode {
        Mode::from_u8(self.mode)
    }

    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.cycle_idx)
    }

    /// The max-filtered bandwidth (`bbr_max_bw`), packets/µs << BW_SCALE.
    pub fn max_bw(&self) -> u32 {
        self.bw_hi[0].max(self.bw_hi[1])
    }

    /// The bandwidth BBR paces at (`bbr_bw`): the max filter, capped by the short-term bound.
    pub fn bw(&self) -> u32 {
        self.max_bw().min(self.bw_lo)
    }
}

/// Converts packets/µs << BW_SCALE to bytes per second.
pub fn bw_to_bytes_per_sec(bw: u32, mss: u32) -> u64 {
    ((u64::from(bw) * u64::from(mss)) * 1_000_000) >> BW_SCALE
}

/// Tunables of `bbr-p2p`, one slot of the [`BBR_CONFIG_MAP`] array. Gains are in
/// [`BBR_UNIT`]s. [`BbrConfig::DEFAULT`] lists each default and why (BBRv3's values); the node
/// can replace the tunables at run time (new values apply from the next ACK).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BbrConfig {
    /// Pacing gain in STARTUP.
    pub high_gain: u32,
    /// cwnd gain in STARTUP and DRAIN.
    pub startup_cwnd_gain: u32,
    /// Pacing gain in DRAIN.
    pub drain_gain: u32,
    /// cwnd gain in PROBE_BW (plus 0.25 while probing up).
    pub cwnd_gain: u32,
    /// Pacing gain of PROBE_BW UP.
    pub probe_up_gain: u32,
    /// Pacing gain of PROBE_BW DOWN.
    pub probe_down_gain: u32,
    /// Window of the min-RTT filter, µs.
    pub min_rtt_window_us: u32,
    /// PROBE_RTT comes when no RTT sample was this low for this long, µs (at most half the
    /// min-RTT window, so that the filter still holds a drained sample when it comes).
    pub probe_rtt_interval_us: u32,
    /// Time spent in PROBE_RTT at the reduced cwnd, µs.
    pub probe_rtt_duration_us: u32,
    /// cwnd in PROBE_RTT as a fraction of the BDP.
    pub probe_rtt_cwnd_gain: u32,
    /// The floor of cwnd, packets.
    pub min_cwnd: u32,
    /// Growth that counts as "still growing" for full-pipe detection, BBR_UNIT-scaled.
    pub full_bw_thresh: u32,
    /// Rounds without that growth that mean the pipe is full.
    pub full_bw_rounds: u32,
    /// ACKs reporting loss in one STARTUP round that, with the loss rate above the
    /// threshold, end STARTUP.
    pub full_loss_cnt: u32,
    /// Gain on the ACK-aggregation allowance added to cwnd.
    pub extra_acked_gain: u32,
    /// 1: loss bounds the model (inflight_hi, bw_lo, inflight_lo); 0: loss is ignored
    /// outside recovery, as BBRv1.
    pub loss_bound_enabled: u32,
    /// Loss rate within a round that bounds `inflight_hi`, per mille of the round's flight.
    pub loss_thresh_per_mille: u32,
    /// Multiplicative cut of `bw_lo` / `inflight_lo` per lossy round (BBR_UNIT-scaled).
    pub loss_beta: u32,
    /// Headroom left below `inflight_hi` when cruising, BBR_UNIT-scaled.
    pub inflight_headroom: u32,
    /// Least time between bandwidth probes, µs.
    pub probe_wait_base_us: u32,
    /// Random extra time between probes, up to this, µs.
    pub probe_wait_rand_us: u32,
    /// Probe at the latest after this many rounds (or after the BDP in packets, if smaller):
    /// the time a Reno flow would take to grow by that much.
    pub probe_max_rounds: u32,
    /// 1: careful resume from the node's per-PeerId records on (variant feature 2); the
    /// records, their freshness and the decision live in the node and `crate::resume`.
    pub resume_enabled: u32,
}
const _: () = assert!(core::mem::size_of::<BbrConfig>() == 92);

impl BbrConfig {
    pub const DEFAULT: Self = Self {
        // 2.77: BBRv3's STARTUP pacing gain (the 2/ln 2 of v1 less the margin its cwnd gain
        // of 2 no longer needs).
        high_gain: BBR_UNIT * 277 / 100 + 1,
        // 2×BDP: enough to double the delivery rate each round.
        startup_cwnd_gain: BBR_UNIT * 2,
        // ln(2)/2.885: drains in about one round the queue STARTUP built.
        drain_gain: BBR_UNIT * 1000 / 2885,
        // 2×BDP: tolerates delayed and stretched ACKs while keeping the queue bounded.
        cwnd_gain: BBR_UNIT * 2,
        // 5/4: probes for 25% more bandwidth.
        probe_up_gain: BBR_UNIT * 5 / 4,
        // 0.75 (BBRv2's; v3 has 0.91): drains the 0.25 BDP a probe at 1.25 queues in about
        // one min RTT; also the gain of a CRUISE round through a standing queue
        // (`cc_ebpf::bbr` deviation 18).
        probe_down_gain: BBR_UNIT * 3 / 4,
        // 10 s: propagation delay changes rarely.
        min_rtt_window_us: 10_000_000,
        // 5 s: BBRv3's PROBE_RTT interval (shorter than v1's 10 s, at a shallower cut).
        probe_rtt_interval_us: 5_000_000,
        // 200 ms: long enough to drain the queue on paths of up to ~200 ms RTT.
        probe_rtt_duration_us: 200_000,
        // 0.5×BDP: drains any queue while keeping half the pipe busy.
        probe_rtt_cwnd_gain: BBR_UNIT / 2,
        // 4 packets: lets delayed ACKs still flow.
        min_cwnd: 4,
        // 25%: a round that grows bandwidth less than this did not find more.
        full_bw_thresh: BBR_UNIT * 5 / 4,
        // 3 rounds without growth: the pipe is full.
        full_bw_rounds: 3,
        // 6 lossy ACKs in a round: more than random loss in a short round produces.
        full_loss_cnt: 6,
        // 1.0: cwnd gets the full ACK-aggregation allowance.
        extra_acked_gain: BBR_UNIT,
        loss_bound_enabled: 1,
        // 2% of a round: above the random loss of most paths, below a full buffer's overflow.
        loss_thresh_per_mille: 20,
        // 0.7: BBRv3's beta (a 30% cut per lossy round of the short-term bounds).
        loss_beta: BBR_UNIT - BBR_UNIT * 30 / 100,
        // 15%: leaves room in the buffer for other flows to probe into.
        inflight_headroom: BBR_UNIT * 15 / 100,
        // 2 s + up to 1 s: probes spaced in wall-clock time, desynchronised between flows.
        probe_wait_base_us: 2_000_000,
        probe_wait_rand_us: 1_000_000,
        // 63 rounds: a Reno flow's time to grow cwnd by 63 packets; probing no later keeps
        // bbr-p2p's share against Reno/CUBIC on short-BDP paths.
        probe_max_rounds: 63,
        // Off: careful resume works (tests/resume.rs) but measured slower than a cold start
        // in `cargo xtask bench warm` (docs/bench.md); on with `resume_enabled = 1`.
        resume_enabled: 0,
    };

    /// Checks ranges; the message names the field.
    pub fn validate(&self) -> Result<(), &'static str> {
        let c = self;
        let checks: [(bool, &'static str); 18] = [
            (
                c.high_gain >= BBR_UNIT && c.high_gain <= 4 * BBR_UNIT,
                "high_gain must be within 1.0..=4.0",
            ),
            (
                c.startup_cwnd_gain >= BBR_UNIT && c.startup_cwnd_gain <= 4 * BBR_UNIT,
                "startup_cwnd_gain must be within 1.0..=4.0",
            ),
            (
                c.drain_gain > 0 && c.drain_gain <= BBR_UNIT,
                "drain_gain must be within (0, 1.0]",
            ),
            (
                c.cwnd_gain >= BBR_UNIT && c.cwnd_gain <= 4 * BBR_UNIT,
                "cwnd_gain must be within 1.0..=4.0",
            ),
            (
                c.probe_up_gain >= BBR_UNIT && c.probe_up_gain <= 2 * BBR_UNIT,
                "probe_up_gain must be within 1.0..=2.0",
            ),
            (
                c.probe_down_gain > 0 && c.probe_down_gain <= BBR_UNIT,
                "probe_down_gain must be within (0, 1.0]",
            ),
            (
                c.min_rtt_window_us >= 1_000_000 && c.min_rtt_window_us <= 60_000_000,
                "min_rtt_window_us must be within 1 s..=60 s",
            ),
            (
                c.probe_rtt_interval_us >= 1_000_000 && c.probe_rtt_interval_us <= 60_000_000,
                "probe_rtt_interval_us must be within 1 s..=60 s",
            ),
            (
                c.probe_rtt_duration_us >= 10_000 && c.probe_rtt_duration_us <= 1_000_000,
                "probe_rtt_duration_us must be within 10 ms..=1 s",
            ),
            (
                c.probe_rtt_cwnd_gain > 0 && c.probe_rtt_cwnd_gain <= BBR_UNIT,
                "probe_rtt_cwnd_gain must be within (0, 1.0]",
            ),
            (
                c.min_cwnd >= 2 && c.min_cwnd <= 64,
                "min_cwnd must be within 2..=64",
            ),
            (
                c.full_bw_rounds >= 1 && c.full_bw_rounds <= 10 && c.full_bw_thresh > BBR_UNIT,
                "full_bw_rounds must be 1..=10 and full_bw_thresh above 1.0",
            ),
            (
                c.full_loss_cnt >= 1 && c.full_loss_cnt <= 15,
                "full_loss_cnt must be within 1..=15",
            ),
            (
                c.loss_thresh_per_mille >= 1
                    && c.loss_thresh_per_mille <= 500
                    && c.loss_beta > 0
                    && c.loss_beta <= BBR_UNIT,
                "loss_thresh_per_mille must be 1..=500 and loss_beta within (0, 1.0]",
            ),
            (
                c.inflight_headroom <= BBR_UNIT / 2,
                "inflight_headroom must be within 0..=0.5",
            ),
            (
                c.probe_wait_base_us >= 100_000
                    && c.probe_wait_base_us <= 60_000_000
                    && c.probe_wait_rand_us <= 10_000_000,
                "probe_wait_base_us must be within 100 ms..=60 s and probe_wait_rand_us at most 10 s",
            ),
            (
                c.probe_max_rounds >= 1 && c.probe_max_rounds <= 255,
                "probe_max_rounds must be within 1..=255",
            ),
            (
                c.loss_bound_enabled <= 1 && c.resume_enabled <= 1,
                "loss_bound_enabled and resume_enabled must be 0 or 1",
            ),
        ];
        match checks.iter().find(|(ok, _)| !ok) {
            Some((_, why)) => Err(why),
            None => Ok(()),
        }
    }
}

impl Default for BbrConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_bbr_v3_but_for_the_down_gain() {
        let c = BbrConfig::DEFAULT;
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.high_gain, 710);
        assert_eq!(c.drain_gain, 88);
        assert_eq!(c.probe_up_gain, 320);
        // BBRv2's 0.75, not v3's 0.91 (`cc_ebpf::bbr` deviation 18).
        assert_eq!(c.probe_down_gain, 192);
    }

    #[test]
    fn validation_names_the_field() {
        let c = BbrConfig {
            cwnd_gain: 10 * BBR_UNIT,
            ..BbrConfig::DEFAULT
        };
        assert_eq!(c.validate(), Err("cwnd_gain must be within 1.0..=4.0"));
    }

    #[test]
    fn bandwidth_unit_conversion() {
        // 1 packet per µs of 1000 bytes = 1 GB/s.
        assert_eq!(bw_to_bytes_per_sec(1 << BW_SCALE, 1000), 1_000_000_000);
    }
}
