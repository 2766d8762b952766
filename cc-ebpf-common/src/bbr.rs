//! Shared types of the `bbr-p2p` congestion control: its per-socket state (socket storage,
//! read by the node with the socket as key), its run-time configuration, and the warm-start
//! records kept per remote address.

/// Name of the socket-storage map holding each socket's [`BbrState`].
pub const BBR_STATE_MAP: &str = "BBR_STATE";
/// Name of the single-entry array holding the [`BbrConfig`].
pub const BBR_CONFIG_MAP: &str = "BBR_CONFIG";
/// Name of the LRU map of warm-start records ([`WarmKey`] → [`WarmEntry`]).
pub const BBR_WARM_MAP: &str = "BBR_WARM";
/// Remote addresses remembered for warm start: well above a node's peer count (1536
/// connections at the default limits); the least recently used address is forgotten first.
pub const BBR_WARM_MAX_ENTRIES: u32 = 4096;

/// Fixed-point unit of gains: 256 = 1.0 (as `BBR_UNIT` in tcp_bbr.c).
pub const BBR_SCALE: u32 = 8;
pub const BBR_UNIT: u32 = 1 << BBR_SCALE;
/// Fixed-point unit of bandwidth in packets per microsecond: `BW_UNIT` = 2^24.
pub const BW_SCALE: u32 = 24;
pub const BW_UNIT: u64 = 1 << BW_SCALE;

/// BBR's state machine (tcp_bbr.c `enum bbr_mode`).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Ramp up the sending rate rapidly to fill the pipe (gain 2/ln 2).
    Startup = 0,
    /// Drain the queue STARTUP created (gain ln 2/2).
    Drain = 1,
    /// Cruise at the estimated bandwidth, probing for more in an 8-phase gain cycle.
    ProbeBw = 2,
    /// Cut inflight to 4 packets for 200 ms to re-measure the propagation delay.
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

/// How the connection started (variant feature 2).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WarmStart {
    /// No fresh record for this remote address: a normal STARTUP.
    Cold = 0,
    /// Started from the recorded bandwidth and min RTT, skipping STARTUP.
    Warm = 1,
    /// Started warm, but the first rounds contradicted the record: fell back to STARTUP.
    FellBack = 2,
}

/// Per-socket BBR state: the model of tcp_bbr.c's `struct bbr` (unpacked: it lives in socket
/// storage, not in the 104-byte `icsk_ca_priv`), the variant's additions, and counters the node
/// exports. Times are microseconds of the TCP clock (`tcp_mstamp`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BbrState {
    // --- bandwidth model ---
    /// Windowed max filter of delivery rate samples, `(round, bw)` ×3 (kernel `struct minmax`);
    /// bw in packets/µs << [`BW_SCALE`].
    pub bw_filter: [MinmaxSample; 3],
    /// Long-term (policer) bandwidth estimate, packets/µs << BW_SCALE.
    pub lt_bw: u32,
    /// Bandwidth at the last full-pipe check, packets/µs << BW_SCALE.
    pub full_bw: u32,
    // --- rounds ---
    /// Packet-timed rounds elapsed.
    pub round_count: u32,
    /// `tp->delivered` that ends the current round.
    pub next_round_delivered: u32,
    // --- min RTT ---
    pub min_rtt_us: u32,
    pub prior_cwnd: u32,
    pub min_rtt_stamp_us: u64,
    /// End of the current PROBE_RTT (0: not yet scheduled).
    pub probe_rtt_done_stamp_us: u64,
    /// Start of the current gain-cycle phase (`tp->delivered_mstamp`).
    pub cycle_stamp_us: u64,
    // --- ACK aggregation ---
    pub ack_epoch_stamp_us: u64,
    pub ack_epoch_acked: u32,
    pub extra_acked: [u32; 2],
    // --- long-term bandwidth sampling ---
    pub lt_last_delivered: u32,
    pub lt_last_lost: u32,
    /// Milliseconds, as tcp_bbr.c.
    pub lt_last_stamp_ms: u32,
    // --- gains (BBR_UNIT = 1.0) ---
    pub pacing_gain: u32,
    pub cwnd_gain: u32,
    // --- loss-bounded probing (variant feature 1) ---
    /// Upper bound on inflight after probing met loss; `u32::MAX` = unbounded.
    pub inflight_hi: u32,
    /// `tp->delivered` / `tp->lost` at the start of the current round.
    pub round_start_delivered: u32,
    pub round_start_lost: u32,
    /// Segments to add to `inflight_hi` after the next loss-free probe (doubles each time).
    pub inflight_hi_step: u32,
    // --- warm start (variant feature 2) ---
    /// The recorded bandwidth and min RTT the connection started from.
    pub warm_bw: u32,
    pub warm_min_rtt_us: u32,
    // --- flags and small counters (u8 each, no bitfields) ---
    pub mode: u8,
    pub prev_ca_state: u8,
    pub packet_conservation: u8,
    pub round_start: u8,
    pub idle_restart: u8,
    pub probe_rtt_round_done: u8,
    pub lt_is_sampling: u8,
    pub lt_rtt_cnt: u8,
    pub lt_use_bw: u8,
    pub full_bw_reached: u8,
    pub full_bw_cnt: u8,
    pub cycle_idx: u8,
    pub has_seen_rtt: u8,
    pub extra_acked_win_rtts: u8,
    pub extra_acked_win_idx: u8,
    /// [`WarmStart`].
    pub warm_start: u8,
    /// Rounds since a warm start (saturates); the record is checked during the first ones.
    pub warm_rounds: u8,
    /// Whether loss exceeded the threshold during the current round.
    pub round_loss_high: u8,
    /// Bit `1 << mode` for every [`Mode`] the connection has been in.
    pub modes_seen: u8,
    /// Whether the current probe phase was limited by `inflight_hi`.
    pub probe_hit_bound: u8,
    /// Probe phases still to cruise through (gain 1.0) after a probe that met loss.
    pub probes_to_skip: u8,
    pub _pad: [u8; 3],
    // --- counters for the node ---
    /// Times PROBE_RTT was entered.
    pub probe_rtt_count: u32,
    /// Times probing stopped because of loss (inflight_hi set or lowered).
    pub loss_bound_count: u32,
    /// Latest delivery-rate sample, packets/µs << BW_SCALE.
    pub last_bw_sample: u32,
    /// Smallest RTT sample of the current round, µs (`u32::MAX`: none yet).
    pub round_min_rtt_us: u32,
}
const _: () = assert!(core::mem::size_of::<BbrState>() == 176);

/// One sample of the kernel's `struct minmax`: `t` is the round count, `v` the value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MinmaxSample {
    pub t: u32,
    pub v: u32,
}

impl BbrState {
    pub fn mode(&self) -> Mode {
        Mode::from_u8(self.mode)
    }

    /// The max-filtered bandwidth, packets/µs << BW_SCALE.
    pub fn max_bw(&self) -> u32 {
        self.bw_filter[0].v
    }

    /// The bandwidth BBR uses: the long-term estimate when a policer was detected.
    pub fn bw(&self) -> u32 {
        if self.lt_use_bw != 0 {
            self.lt_bw
        } else {
            self.max_bw()
        }
    }
}

/// Converts packets/µs << BW_SCALE to bytes per second.
pub fn bw_to_bytes_per_sec(bw: u32, mss: u32) -> u64 {
    ((u64::from(bw) * u64::from(mss)) * 1_000_000) >> BW_SCALE
}

/// Tunables of `bbr-p2p`, one entry of the [`BBR_CONFIG_MAP`] array. Gains are in
/// [`BBR_UNIT`]s. [`BbrConfig::DEFAULT`] lists each default and why; the node can replace the
/// entry at run time (new values apply from the next ACK).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BbrConfig {
    /// Pacing and cwnd gain in STARTUP.
    pub high_gain: u32,
    /// Pacing gain in DRAIN.
    pub drain_gain: u32,
    /// cwnd gain in PROBE_BW.
    pub cwnd_gain: u32,
    /// Pacing gain of the probing-up phase of the PROBE_BW cycle.
    pub probe_up_gain: u32,
    /// Pacing gain of the draining phase that follows it.
    pub probe_down_gain: u32,
    /// Window of the max-bandwidth filter, in rounds.
    pub bw_filter_rounds: u32,
    /// Window of the min-RTT filter, µs.
    pub min_rtt_window_us: u32,
    /// Time spent in PROBE_RTT at the minimum cwnd, µs.
    pub probe_rtt_duration_us: u32,
    /// cwnd in PROBE_RTT and the floor elsewhere, packets.
    pub min_cwnd: u32,
    /// Growth that counts as "still growing" for full-pipe detection, BBR_UNIT-scaled.
    pub full_bw_thresh: u32,
    /// Rounds without that growth that mean the pipe is full.
    pub full_bw_rounds: u32,
    /// Gain on the ACK-aggregation allowance added to cwnd.
    pub extra_acked_gain: u32,
    /// 1: loss-bounded probing on (variant feature 1).
    pub loss_bound_enabled: u32,
    /// Loss rate within a round that ends probing, per mille of the packets sent in it.
    pub loss_thresh_per_mille: u32,
    /// `inflight_hi` = this × the inflight at which loss exceeded the threshold (BBR_UNIT-scaled).
    pub inflight_hi_beta: u32,
    /// 1: warm start per remote address on (variant feature 2).
    pub warm_start_enabled: u32,
    /// A record older than this is ignored, µs.
    pub warm_start_max_age_us: u32,
    /// A warm start falls back to STARTUP when a round's min RTT exceeds this multiple of
    /// the recorded one (BBR_UNIT-scaled).
    pub warm_start_rtt_tolerance: u32,
    /// Rounds during which a warm start is checked against the record.
    pub warm_start_check_rounds: u32,
    pub _reserved: u32,
}
const _: () = assert!(core::mem::size_of::<BbrConfig>() == 80);

impl BbrConfig {
    pub const DEFAULT: Self = Self {
        // 2/ln(2) ≈ 2.885: the smallest gain that doubles the sending rate each round.
        high_gain: BBR_UNIT * 2885 / 1000 + 1,
        // ln(2)/2: drains in one round the queue STARTUP built at high_gain.
        drain_gain: BBR_UNIT * 1000 / 2885,
        // 2×BDP: tolerates delayed and stretched ACKs while keeping the queue bounded.
        cwnd_gain: BBR_UNIT * 2,
        // 5/4: probes for 25% more bandwidth for one min RTT per cycle.
        probe_up_gain: BBR_UNIT * 5 / 4,
        // 3/4: drains what the probe queued, in the next phase.
        probe_down_gain: BBR_UNIT * 3 / 4,
        // A full gain cycle (8 phases) plus 2 rounds, as tcp_bbr.c's bbr_bw_rtts.
        bw_filter_rounds: 10,
        // 10 s: propagation delay changes rarely; re-probe that often.
        min_rtt_window_us: 10_000_000,
        // 200 ms: long enough to drain the queue on paths of up to ~200 ms RTT.
        probe_rtt_duration_us: 200_000,
        // 4 packets: lets delayed ACKs still flow while the queue drains.
        min_cwnd: 4,
        // 25%: a STARTUP round that grows bandwidth less than this did not find more.
        full_bw_thresh: BBR_UNIT * 5 / 4,
        // 3 rounds without growth: the pipe is full.
        full_bw_rounds: 3,
        // 1.0: cwnd gets the full ACK-aggregation allowance, as tcp_bbr.c.
        extra_acked_gain: BBR_UNIT,
        loss_bound_enabled: 1,
        // 2% loss in a round ends probing (BBRv3's bbr_loss_thresh).
        loss_thresh_per_mille: 20,
        // 0.7: bound inflight 30% below the level that lost packets (BBRv3's beta).
        inflight_hi_beta: BBR_UNIT * 7 / 10,
        warm_start_enabled: 1,
        // 2 minutes: P2P nodes reconnect to the same peers within that; a path older than
        // that is treated as unknown.
        warm_start_max_age_us: 120_000_000,
        // 2×: a queue as large as the path's own delay means the record overestimates bw.
        warm_start_rtt_tolerance: BBR_UNIT * 2,
        // 3 rounds: the window the full-pipe check also needs.
        warm_start_check_rounds: 3,
        _reserved: 0,
    };

    /// Checks ranges; the message names the field.
    pub fn validate(&self) -> Result<(), &'static str> {
        let c = self;
        let checks: [(bool, &'static str); 12] = [
            (
                c.high_gain >= BBR_UNIT && c.high_gain <= 4 * BBR_UNIT,
                "high_gain must be within 1.0..=4.0",
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
                c.bw_filter_rounds >= 2 && c.bw_filter_rounds <= 100,
                "bw_filter_rounds must be within 2..=100",
            ),
            (
                c.min_rtt_window_us >= 1_000_000 && c.min_rtt_window_us <= 60_000_000,
                "min_rtt_window_us must be within 1 s..=60 s",
            ),
            (
                c.probe_rtt_duration_us >= 10_000 && c.probe_rtt_duration_us <= 1_000_000,
                "probe_rtt_duration_us must be within 10 ms..=1 s",
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
                c.loss_thresh_per_mille >= 1
                    && c.loss_thresh_per_mille <= 500
                    && c.inflight_hi_beta > 0
                    && c.inflight_hi_beta <= BBR_UNIT,
                "loss_thresh_per_mille must be 1..=500 and inflight_hi_beta within (0, 1.0]",
            ),
            (
                c.warm_start_rtt_tolerance > BBR_UNIT
                    && c.warm_start_check_rounds >= 1
                    && c.warm_start_check_rounds <= 20
                    && c.loss_bound_enabled <= 1
                    && c.warm_start_enabled <= 1,
                "warm_start_rtt_tolerance must exceed 1.0, warm_start_check_rounds be 1..=20, and the enable flags 0 or 1",
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

/// Warm-start key: the remote address of a connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct WarmKey {
    /// `AF_INET` (2) or `AF_INET6` (10).
    pub family: u32,
    /// IPv4 in the first 4 bytes (network order), or the IPv6 address.
    pub addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<WarmKey>() == 20);

/// What a finished connection to an address learned.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WarmEntry {
    /// Max-filtered bandwidth, packets/µs << BW_SCALE.
    pub bw: u32,
    pub min_rtt_us: u32,
    /// TCP clock (µs) when it was recorded.
    pub stamp_us: u64,
}
const _: () = assert!(core::mem::size_of::<WarmEntry>() == 16);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_tcp_bbr() {
        let c = BbrConfig::DEFAULT;
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.high_gain, 739);
        assert_eq!(c.drain_gain, 88);
        assert_eq!(c.probe_up_gain, 320);
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
