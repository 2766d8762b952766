//! Careful Resume for bbr-p2p: a connection to a peer this node has measured before starts from
//! that measurement, carefully. The decisions are plain functions here, shared by the node
//! (which holds the records, keyed by the peer's authenticated PeerId, and offers a hint) and the
//! eBPF program (which applies the hint on the socket's next ACK), so the host tests check the
//! very logic the kernel runs.
//!
//! Model: RFC 9959 (draft-ietf-tsvwg-careful-resume, "Convergence of Congestion Control from
//! Retained State"). Its phases, as bbr-p2p runs them:
//!
//! ```text
//!  node: record for this PeerId?  ──no / stale / invalid──▶ COLD (reason)
//!        │ yes: hint written into the socket's storage after the noise handshake
//!        ▼
//!  RECONNAISSANCE  first ACK with an RTT sample of a flight sent while data was waiting
//!        │         (not application-limited: past the handshake and idle time), in STARTUP?
//!        │ RTT outside [saved/2, 10×saved] or jump ≤ cwnd ──▶ COLD (rtt_mismatch / jump_too_small)
//!        ▼ jump: cwnd = saved BDP / 2 (≤ 1× saved BDP), paced at jump / current RTT;
//!  UNVALIDATED     the round that carries the jump         ─┐ loss above BBR's threshold, or
//!        ▼                                                  ├─▶ the round's min RTT grew:
//!  VALIDATING      the round that acknowledges it          ─┘   RETREATED (reason)
//!        │         (+ up to 8 more while no flight tests       cwnd = pipe / 2, pacing = the
//!        ▼          the record: application/window-limited)    measured delivery rate
//!  RESUMED         normal BBR from here
//! ```
//!
//! The jump seeds BBR's bandwidth estimate with the saved rate (so the model's cwnd and pacing
//! follow the record), while [`Action::Hold`] caps cwnd and pacing: half the ceiling at half the
//! saved rate while unvalidated, the ceiling at the saved rate while validating (and STARTUP's
//! plateau detector is held off: rounds paced under a cap show no growth by construction). At
//! the end of the validating round — two rounds after the round the jump happened in —
//! [`validating_round_end`] decides on the highest delivery rate the path showed since the
//! jump and on whether any flight of the round tested the record ([`AckView::evidence`]):
//! - at least 80% of the saved rate: the record located the path's capacity; the pipe counts as
//!   full and STARTUP ends (PROBE_BW probes beyond it);
//! - no flight of the round tested the record — every delivery sample application-limited (a
//!   new yamux stream starts with 256 KiB of credit) or its flight held by a receive window
//!   below the saved BDP: no evidence either way, so the connection stays VALIDATING at the
//!   record's rate (deviation 8) and the next round is judged, up to [`MAX_LIMITED_ROUNDS`];
//! - less, from flights that did use the window, or still no evidence after those rounds
//!   ([`Reason::RateLimited`]): the seed gives way to the rate the path did carry and
//!   STARTUP goes on growing from there (RFC 9959's rule of continuing from the validated pipe,
//!   not from the unused credit). A record above the path's capacity therefore never outlives
//!   those two rounds, and a connection the application held back is not declared full at a
//!   rate it never tested (which would leave it in PROBE_BW at that rate and teach the node a
//!   lower record each time). cwnd falls to the validated pipe (bytes acknowledged since the
//!   jump) if it is above it: the jump's window was never carried by the path, and STARTUP
//!   growing on from it overran a slower path (one changed-path bench run: 434 kB lost).
//!
//! A retreat replaces the seed at once.
//!
//! Deviations from RFC 9959 (each is a BBR-specific choice):
//! 1. Saved state is BBR's model (bottleneck bandwidth, min RTT, `inflight_hi`), not a cwnd:
//!    `saved_cwnd` is the BDP (bandwidth × min RTT), capped by the saved `inflight_hi`.
//! 2. Congestion during the unvalidated and validating phases is BBR's own verdict, not any
//!    single loss. RFC 9959 sends those phases to Safe Retreat when the sender sees congestion
//!    (its examples: a lost packet, an ECN-CE mark) and leaves the judging to the congestion
//!    control. BBRv3 does not treat a lost packet as congestion: it ends STARTUP on loss only
//!    after a round with at least `full_loss_cnt` = 6 discontiguous losses and a loss rate above
//!    `loss_thresh` = 2% (draft-ietf-ccwg-bbr §4.3.1.3; `cc_ebpf::bbr` deviations 1–2), and the
//!    resumed flow is in STARTUP, so that is the verdict applied ([`AckView::loss_too_high`]),
//!    on the ACK that reaches it rather than at the round's end. The six losses are what makes
//!    the rate mean something: at 1% random loss a 170-packet round loses 6 or more about once
//!    in 120 rounds, where "more than 2%" alone (4 losses) is crossed about once in 11 — the
//!    earlier per-round rule retreated 2 of 7 resumed runs at 1% loss in `bench warm`, and
//!    3 of 20 in the host simulation with the 2% rule alone, against 0 of 20 now. A round
//!    whose minimum RTT exceeds the base RTT by a quarter (plus [`RTT_GROWTH_SLACK_US`] for
//!    timer noise on sub-millisecond paths) also retreats: a standing queue means the jump
//!    exceeds the path.
//! 3. Safe retreat sets cwnd to half the pipe the jump validated (RFC 9959 §3.5) *and* the pacing
//!    rate to the delivery rate measured since the jump (the contradicted rate is never kept);
//!    the connection then leaves STARTUP as BBR does when STARTUP meets loss. For two more round
//!    boundaries the rest of the jump's flight is acknowledged at the rate the bottleneck serves
//!    it, and a delivery sample above the estimate raises it ([`Action::Remeasured`]): the
//!    retreat comes before most of those ACKs, and bbr-p2p raises its estimate otherwise only
//!    on probe feedback. After the retreat BBR's own recovery governs cwnd (packet
//!    conservation, then the model's bounds) instead of RFC 9959's "CWND is not increased"
//!    until the last unvalidated packet is acknowledged: pacing at the measured rate is what
//!    keeps the flow from refilling the queue.
//! 4. The phases advance per BBR packet-timed round instead of per acknowledged packet number.
//! 5. The record's lifetime is a node setting (default 10 minutes).
//! 6. Records carry no policer flag (the issue asked for one: "a record measured while a policer
//!    was active is not used"). bbr-p2p follows BBRv3, which removed BBRv1's long-term
//!    (policer) bandwidth model (`lt_bw`: ≥ 20% loss over 4–16 rounds at a steady delivery
//!    rate): v3's loss response (`inflight_hi` and `bw_lo` cut when a round loses more than 2%)
//!    holds a flow behind a token-bucket policer near the policed rate, so v1's detector would
//!    not fire on bbr-p2p's flows and the flag would always be false. What protects a resumed
//!    connection from a record inflated by a policer's bursts is validation: more than 2% loss,
//!    or RTT growth, in the two rounds after the jump retreats to the measured delivery rate.
//! 7. The gate from Reconnaissance to Unvalidated. RFC 9959 lets the sender jump once an ACK
//!    has acknowledged the initial data without congestion and the RTT is confirmed, optionally
//!    deferred until the flow has more data to send than the CWND allows (the qlog trigger
//!    `cwnd_limited`). BBR's STARTUP is paced at 2.77× its estimate with cwnd at 2× the BDP, so
//!    it is rarely cwnd-limited: waiting for a cwnd-limited flight let STARTUP's cwnd outgrow
//!    the jump first (`jump_too_small` in 6 of 10 same-path bench runs, and in 2 of 20 bulk
//!    flows in the host simulation). The gate is the first ACK with an RTT sample of a flight
//!    sent while data was waiting ([`AckView::data_waiting`]: the rate sample is not
//!    application-limited — held by pacing, cwnd or the receive window, not by a lack of
//!    data); handshake and idle flights are application-limited, so the hint waits past them.
//!    A jump the receive window or a flow-control window then holds back ends as RFC 9959's
//!    rate-limited Unvalidated phase does, without keeping the unused credit
//!    ([`validation_end`]): cwnd = the validated pipe (RFC 9959 sets it to PipeSize when the
//!    sender leaves the Unvalidated phase rate-limited), bandwidth = the highest rate measured.
//!    Unlike RFC 9959 this exit comes at the end of the validating round, not when the
//!    sender is first seen rate-limited, and cwnd is only lowered to the pipe, never raised.
//! 8. A rate-limited validating round is no evidence. RFC 9959 ends validation when the last
//!    unvalidated packet is acknowledged, and a sender rate-limited in the Unvalidated phase
//!    continues from the capacity it used (cwnd = flight size, then PipeSize). For BBR that
//!    rule throws the record away exactly when the application or a window held the flow: the
//!    seed gave way to the held-back rate, STARTUP started over from it and overshot like a
//!    cold start (session 6's same-path trace: 137 kB lost after yamux's credit held rounds
//!    2–3). BBR's own rule is that a rate sample of an application-limited flight does not
//!    lower the bandwidth estimate. So a validating round whose flights were all
//!    application-limited (the kernel's `rs->is_app_limited`) or held by a receive window
//!    below the saved BDP (`tp->snd_wnd`; the kernel does not mark those samples) is no
//!    evidence: the connection stays in the validating phase — cwnd ≤ the saved BDP, pacing ≤
//!    the saved rate, the record's seed kept, loss and RTT growth still retreating on every
//!    ACK and round — for at most [`MAX_LIMITED_ROUNDS`] such rounds. The record's rate is
//!    only ever tested, never exceeded, while it waits: what the sender puts on the path in
//!    those rounds is bounded by the application's offer and by the saved BDP per round.
//!    After the bound validation ends as in deviation 7 ([`Reason::RateLimited`]).

/// Name of the socket-storage map of [`ResumeSlot`]s: the node creates a socket's entry after the
/// noise handshake (a hint, or why there is none); bbr-p2p applies it and records the outcome.
pub const BBR_RESUME_MAP: &str = "BBR_RESUME";

/// One socket's careful resume: written by the node (the hint: `start` = [`Start::Offered`], or
/// [`Start::Cold`] with the reason no hint exists), then owned by bbr-p2p.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResumeSlot {
    // --- from the node ---
    /// Saved bottleneck bandwidth, bytes/s.
    pub bw_bytes_per_sec: u64,
    /// Ceiling of the resumed cwnd, bytes ([`Hint::ceiling_bytes`]).
    pub ceiling_bytes: u64,
    /// Saved min RTT, µs.
    pub min_rtt_us: u32,
    // --- bbr-p2p's ---
    /// The RTT the jump was confirmed with, µs.
    pub base_rtt_us: u32,
    /// Pacing rate of the jump, bytes/s.
    pub jump_pacing_bytes_per_sec: u64,
    /// `tp->delivered` at the jump (the pipe is what was delivered since).
    pub jump_delivered: u32,
    /// `tp->delivered` from which a sent packet's delivery sample can be evidence (deviation
    /// 8): raised to `delivered + in flight` on entering the validating phase and on every ACK
    /// that shows the receive window below the ceiling — the kernel's own marker for
    /// application-limited samples (`tp->app_limited`), applied to the receive window.
    pub evidence_from: u32,
    /// Unused (was the round's `tp->lost`; loss is BBR's verdict now).
    pub _reserved: u32,
    /// Smallest RTT sample of the current round, µs (`u32::MAX`: none).
    pub round_min_rtt_us: u32,
    /// [`Start`].
    pub start: u8,
    /// [`Reason`].
    pub reason: u8,
    /// Round boundaries since the jump (saturates).
    pub rounds: u8,
    /// 1 once an ACK of the current round carried evidence ([`AckView::evidence`]).
    pub evidence: u8,
    /// Validating rounds that ended without evidence (see [`MAX_LIMITED_ROUNDS`]).
    pub limited_rounds: u8,
    pub _pad: [u8; 3],
    /// Highest delivery rate the path showed since the jump, bytes/s.
    pub measured_bytes_per_sec: u64,
}
const _: () = assert!(core::mem::size_of::<ResumeSlot>() == 64);

impl ResumeSlot {
    /// The node's entry for a connection it offers `hint` to.
    #[inline(always)]
    pub const fn offered(hint: &Hint) -> Self {
        Self {
            bw_bytes_per_sec: hint.bw_bytes_per_sec,
            ceiling_bytes: hint.ceiling_bytes,
            min_rtt_us: hint.min_rtt_us,
            base_rtt_us: 0,
            jump_pacing_bytes_per_sec: 0,
            jump_delivered: 0,
            evidence_from: 0,
            _reserved: 0,
            round_min_rtt_us: u32::MAX,
            start: Start::Offered as u8,
            reason: Reason::None as u8,
            rounds: 0,
            evidence: 0,
            limited_rounds: 0,
            _pad: [0; 3],
            measured_bytes_per_sec: 0,
        }
    }

    /// The node's entry for a connection that starts cold, and why.
    #[inline(always)]
    pub const fn cold(reason: Reason) -> Self {
        let mut slot = Self::offered(&Hint {
            bw_bytes_per_sec: 0,
            min_rtt_us: 0,
            ceiling_bytes: 0,
        });
        slot.start = Start::Cold as u8;
        slot.reason = reason as u8;
        slot
    }

    #[inline(always)]
    pub const fn hint(&self) -> Hint {
        Hint {
            bw_bytes_per_sec: self.bw_bytes_per_sec,
            min_rtt_us: self.min_rtt_us,
            ceiling_bytes: self.ceiling_bytes,
        }
    }
}

/// RFC 9959 §4.2.1: the path is confirmed only if the current RTT is at least half the saved RTT
/// (a much shorter RTT is another, unknown path) ...
pub const RTT_CONFIRM_MIN_DIVISOR: u64 = 2;
/// ... and at most ten times it (a much longer RTT makes the saved rate meaningless).
pub const RTT_CONFIRM_MAX_FACTOR: u64 = 10;
/// A round's min RTT above `base × 5/4` means a standing queue of a quarter of the path's delay
/// (BBR's own "still growing" threshold of 1.25, applied to delay).
pub const RTT_GROWTH_NUM: u64 = 5;
pub const RTT_GROWTH_DEN: u64 = 4;
/// Added to the growth bound: on sub-millisecond paths (namespaces, a LAN) delayed ACKs and timer
/// granularity move RTT samples by hundreds of microseconds without any queue.
pub const RTT_GROWTH_SLACK_US: u64 = 1_000;

/// How a connection started.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// A normal STARTUP (the reason says why no record was used).
    Cold = 0,
    /// Jumped; the round carrying the jump is in flight.
    Unvalidated = 1,
    /// The jump's round was acknowledged without contradiction; the next one validates it.
    Validating = 2,
    /// The jump was validated: the connection runs on from the record's rate.
    Resumed = 3,
    /// The path contradicted the record during validation: safe retreat (the reason says how).
    Retreated = 4,
    /// The node wrote a hint; no ACK has carried it into the algorithm yet.
    Offered = 5,
}

impl Start {
    #[inline(always)]
    pub const fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Unvalidated,
            2 => Self::Validating,
            3 => Self::Resumed,
            4 => Self::Retreated,
            5 => Self::Offered,
            _ => Self::Cold,
        }
    }

    /// The three states users see: `cold`, `resumed` (jumped; validating or validated) or
    /// `retreated`. A hint not yet applied is still `cold`.
    #[inline(always)]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Cold | Self::Offered => "cold",
            Self::Unvalidated | Self::Validating | Self::Resumed => "resumed",
            Self::Retreated => "retreated",
        }
    }
}

/// Why a connection started cold, or retreated.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    None = 0,
    /// The node has no record for this PeerId.
    NoRecord = 1,
    /// The record is older than the node's freshness limit.
    Stale = 2,
    // 3 was `Policer` (deviation 6): not reused, so an older node's entries still read right.
    /// The handshake RTT is outside RFC 9959's bounds of the saved one.
    RttMismatch = 4,
    /// The hint arrived after the connection had left STARTUP.
    NotInStartup = 5,
    /// Half the saved BDP is no more than the cwnd the connection already has.
    JumpTooSmall = 6,
    /// Loss above BBR's threshold in the unvalidated phase.
    Loss = 7,
    /// The RTT grew in the unvalidated phase (the jump built a queue).
    RttGrowth = 8,
    /// The record holds a zero bandwidth or RTT (never measured properly).
    Invalid = 9,
    /// The connection does not run bbr-p2p, or warm start is switched off.
    Disabled = 10,
    /// On a resumed connection: validation ended after [`MAX_LIMITED_ROUNDS`] validating rounds
    /// in which every flight was application- or receive-window-limited, so the record's rate
    /// was never tested; the flow went on from the rate it did carry ([`validation_end`]).
    RateLimited = 11,
}

impl Reason {
    #[inline(always)]
    pub const fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::NoRecord,
            2 => Self::Stale,
            4 => Self::RttMismatch,
            5 => Self::NotInStartup,
            6 => Self::JumpTooSmall,
            7 => Self::Loss,
            8 => Self::RttGrowth,
            9 => Self::Invalid,
            10 => Self::Disabled,
            11 => Self::RateLimited,
            _ => Self::None,
        }
    }

    #[inline(always)]
    pub const fn name(self) -> &'static str {
        match self {
            Self::None => "",
            Self::NoRecord => "no_record",
            Self::Stale => "stale",
            Self::RttMismatch => "rtt_mismatch",
            Self::NotInStartup => "not_in_startup",
            Self::JumpTooSmall => "jump_too_small",
            Self::Loss => "loss",
            Self::RttGrowth => "rtt_growth",
            Self::Invalid => "invalid",
            Self::Disabled => "disabled",
            Self::RateLimited => "rate_limited",
        }
    }
}

/// What a connection to a peer measured, as the node keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SavedPath {
    /// Bottleneck bandwidth, bytes per second.
    pub bw_bytes_per_sec: u64,
    pub min_rtt_us: u32,
    /// BBR's loss bound on inflight, bytes (`None`: unbounded).
    pub inflight_hi_bytes: Option<u64>,
    /// When the bandwidth sample was taken, ms (the node's wall clock).
    pub sampled_at_ms: u64,
}

/// What the node writes for bbr-p2p into a new connection's storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hint {
    pub bw_bytes_per_sec: u64,
    pub min_rtt_us: u32,
    /// Ceiling of the resumed cwnd, bytes: the saved BDP, or `inflight_hi` if lower.
    pub ceiling_bytes: u64,
}

/// `a / b`, 0 when `b` is 0: no division-by-zero panic path (the struct_ops loader cannot
/// relocate the call to it).
#[inline(always)]
const fn div(a: u64, b: u64) -> u64 {
    match a.checked_div(b) {
        Some(q) => q,
        None => 0,
    }
}

/// Bandwidth-delay product in bytes.
#[inline(always)]
pub const fn bdp_bytes(bw_bytes_per_sec: u64, rtt_us: u32) -> u64 {
    // u128 would not compile for BPF; split so `bw × rtt` cannot overflow for any u32 RTT.
    (bw_bytes_per_sec / 1_000_000) * rtt_us as u64
        + (bw_bytes_per_sec % 1_000_000) * rtt_us as u64 / 1_000_000
}

/// The node's decision, when a connection to a known peer finishes its handshake: the hint to
/// offer, or why the connection starts cold. `max_age_ms` is the freshness limit.
#[inline(always)]
pub fn offer(saved: &SavedPath, now_ms: u64, max_age_ms: u64) -> Result<Hint, Reason> {
    if saved.bw_bytes_per_sec == 0 || saved.min_rtt_us == 0 {
        return Err(Reason::Invalid);
    }
    // A sample from the future (the clock went back) has no known age: stale.
    if saved.sampled_at_ms > now_ms || now_ms - saved.sampled_at_ms > max_age_ms {
        return Err(Reason::Stale);
    }
    let bdp = bdp_bytes(saved.bw_bytes_per_sec, saved.min_rtt_us);
    let ceiling_bytes = match saved.inflight_hi_bytes {
        Some(hi) if hi < bdp => hi,
        _ => bdp,
    };
    Ok(Hint {
        bw_bytes_per_sec: saved.bw_bytes_per_sec,
        min_rtt_us: saved.min_rtt_us,
        ceiling_bytes,
    })
}

/// RFC 9959 §4.2.1: whether the current RTT confirms the saved path.
#[inline(always)]
pub const fn rtt_confirms(saved_rtt_us: u32, current_rtt_us: u32) -> bool {
    let (saved, current) = (saved_rtt_us as u64, current_rtt_us as u64);
    current * RTT_CONFIRM_MIN_DIVISOR >= saved && current <= saved * RTT_CONFIRM_MAX_FACTOR
}

/// The jump into the unvalidated phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Jump {
    /// The resumed cwnd, bytes: half the ceiling (RFC 9959's `jump_cwnd` = saved_cwnd / 2).
    pub cwnd_bytes: u64,
    /// Pacing rate for the jump, bytes/s: the jump over one current RTT, so the jump is spread
    /// over the round (never above the saved bandwidth, as the current RTT is ≥ half the saved).
    pub pacing_bytes_per_sec: u64,
}

/// bbr-p2p's decision on the first ACK that carries an RTT sample after the hint: jump, or why
/// not. `cwnd_bytes` is what the connection already has.
#[inline(always)]
pub fn jump(hint: &Hint, current_rtt_us: u32, cwnd_bytes: u64) -> Result<Jump, Reason> {
    if current_rtt_us == 0 || !rtt_confirms(hint.min_rtt_us, current_rtt_us) {
        return Err(Reason::RttMismatch);
    }
    let cwnd = hint.ceiling_bytes / 2;
    if cwnd <= cwnd_bytes {
        return Err(Reason::JumpTooSmall);
    }
    Ok(Jump {
        cwnd_bytes: cwnd,
        pacing_bytes_per_sec: div(cwnd * 1_000_000, current_rtt_us as u64),
    })
}

/// Whether a round of the unvalidated or validating phase showed a standing queue: its
/// smallest RTT sample (µs, `u32::MAX`: none) above the RTT the jump was confirmed with by more
/// than a quarter plus [`RTT_GROWTH_SLACK_US`]. Loss is judged per ACK by BBR's own signal
/// ([`AckView::loss_too_high`]), not here.
#[inline(always)]
pub fn rtt_grew(round_min_rtt_us: u32, base_rtt_us: u32) -> bool {
    let bound = u64::from(base_rtt_us) * RTT_GROWTH_NUM / RTT_GROWTH_DEN + RTT_GROWTH_SLACK_US;
    round_min_rtt_us != u32::MAX && u64::from(round_min_rtt_us) > bound
}

/// The phase after a round ended: contradiction retreats, otherwise one step towards resumed.
#[inline(always)]
pub fn after_round(start: Start, contradiction: Option<Reason>) -> (Start, Reason) {
    match (start, contradiction) {
        (Start::Unvalidated | Start::Validating, Some(reason)) => (Start::Retreated, reason),
        (Start::Unvalidated, None) => (Start::Validating, Reason::None),
        (Start::Validating, None) => (Start::Resumed, Reason::None),
        (other, _) => (other, Reason::None),
    }
}

/// Safe retreat (RFC 9959 §3.5, with deviation 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retreat {
    pub cwnd_bytes: u64,
    pub pacing_bytes_per_sec: u64,
}

/// The retreat from a contradicted jump: cwnd to half the pipe (bytes acknowledged since the
/// jump, the part of it the path carried), never below `min_cwnd_bytes`; pacing to the delivery
/// rate the path showed during the jump.
#[inline(always)]
pub fn retreat(pipe_bytes: u64, delivery_rate_bytes_per_sec: u64, min_cwnd_bytes: u64) -> Retreat {
    let half = pipe_bytes / 2;
    Retreat {
        cwnd_bytes: if half > min_cwnd_bytes {
            half
        } else {
            min_cwnd_bytes
        },
        pacing_bytes_per_sec: delivery_rate_bytes_per_sec,
    }
}

/// Bytes per second as BBR's bandwidth unit (packets/µs << 24) for segments of `mss` bytes,
/// saturating at `u32::MAX` (the inverse of `bbr::bw_to_bytes_per_sec`).
#[inline(always)]
pub const fn bytes_per_sec_to_bw(bytes_per_sec: u64, mss: u32) -> u32 {
    if mss == 0 {
        return 0;
    }
    // Rates are capped below 2^40 B/s (1 TB/s) so the shift cannot overflow.
    const CAP: u64 = (1 << 40) - 1;
    let bytes = if bytes_per_sec > CAP {
        CAP
    } else {
        bytes_per_sec
    };
    let bw = div(bytes << 24, mss as u64 * 1_000_000);
    if bw > u32::MAX as u64 {
        u32::MAX
    } else {
        bw as u32
    }
}

/// What one ACK shows bbr-p2p's resume logic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AckView {
    /// The connection is still in STARTUP (the pipe was never found full).
    pub in_startup: bool,
    /// This ACK's RTT sample, µs (0: none).
    pub rtt_us: u32,
    /// The packet this ACK acknowledges was sent while the application had more data queued
    /// than the flow let out (the rate sample is not application-limited: the flight was held
    /// by pacing, cwnd or the receive window, not by a lack of data) — what a jump is for.
    /// Handshake and idle flights are application-limited: the hint waits past them.
    pub data_waiting: bool,
    /// This ACK ends a packet-timed round.
    pub round_start: bool,
    /// `tp->delivered`, `tp->lost` (packets).
    pub delivered: u32,
    pub lost: u32,
    pub mss: u32,
    pub cwnd_bytes: u64,
    /// This ACK's delivery-rate sample, bytes/s (0: none). Samples of flights the application
    /// or a window held back count too: each is a rate the path carried (a lower bound of its
    /// capacity), which is what validation and retreat need.
    pub delivery_rate_bytes_per_sec: u64,
    /// BBR's own congestion verdict on loss, as of this ACK: the current loss round has had at
    /// least `full_loss_cnt` (6) lossy ACKs and has lost more than `loss_thresh` (2%) of the
    /// flight it began with — BBRv3's condition for ending STARTUP on loss
    /// (`bbr_check_loss_too_high_in_startup`, in `cc_ebpf::bbr` deviations 1–2). Deviation 2.
    pub loss_too_high: bool,
    /// The peer's advertised receive window as of this ACK, bytes (`tp->snd_wnd`; `u64::MAX`:
    /// unknown or unlimited).
    pub snd_wnd_bytes: u64,
    /// `tp->delivered` when the packet this ACK's sample is about was sent (`rs->prior_delivered`).
    pub prior_delivered: u32,
    /// Packets in flight after this ACK (`tcp_packets_in_flight`).
    pub packets_in_flight: u32,
}

impl AckView {
    /// Whether this ACK's delivery sample is evidence about the record during validation
    /// (deviation 8): its packet was sent while data was waiting (the kernel did not mark the
    /// sample application-limited) and after `evidence_from` ([`ResumeSlot::evidence_from`]):
    /// after every packet sent before validation began, or while the receive window was
    /// below the validating phase's window, had been delivered. A delivery sample spans the
    /// ACKs of the packets that were in flight when its packet left, so only then is the whole
    /// interval paced at the record's rate with the window open. A flight the application, a
    /// flow-control window or the receive window held back shows what the sender offered, not
    /// what the path can carry: no evidence that the path is slower (BBR's rule: an
    /// application-limited sample never lowers the bandwidth estimate).
    #[inline(always)]
    pub const fn evidence(&self, evidence_from: u32) -> bool {
        // `!before(prior_delivered, evidence_from)` in sequence space.
        self.data_waiting && (self.prior_delivered.wrapping_sub(evidence_from) as i32) >= 0
    }

    /// `delivered + in flight`: a packet sent from now on has `prior_delivered` at least this
    /// only once everything in flight now has been delivered (the kernel's `tp->app_limited`).
    #[inline(always)]
    pub const fn flight_end(&self) -> u32 {
        self.delivered.wrapping_add(self.packets_in_flight)
    }
}

/// What bbr-p2p must do after [`on_ack`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    None,
    /// Jump now: seed the bandwidth estimate with the saved rate (the slot's), set cwnd and
    /// pacing to the jump's.
    Jump(Jump),
    /// Unvalidated or validating: keep cwnd at most `cwnd_cap_bytes` and pacing at most
    /// `pacing_cap_bytes_per_sec` (the model alone would pace STARTUP's gain over the seed).
    Hold {
        cwnd_cap_bytes: u64,
        pacing_cap_bytes_per_sec: u64,
    },
    /// Validated ([`validation_end`]). `pipe_full`: the path carried the record's rate; the
    /// pipe counts as full (STARTUP ends) and the seeded estimate stays (`bw_bytes_per_sec` and
    /// `cwnd_cap_bytes` are 0). Otherwise `bw_bytes_per_sec`, the rate the path carried,
    /// replaces the seed, cwnd falls to at most `cwnd_cap_bytes` — the validated pipe, the
    /// bytes acknowledged since the jump — and STARTUP goes on from there.
    Validated {
        bw_bytes_per_sec: u64,
        pipe_full: bool,
        cwnd_cap_bytes: u64,
    },
    /// Safe retreat: leave STARTUP with these controls, the estimate set to the measured rate.
    Retreat(Retreat),
    /// After a retreat, the rest of the jump's flight is still being acknowledged, at the rate
    /// the bottleneck serves it: a delivery sample above the estimate raises it to this rate.
    Remeasured {
        bw_bytes_per_sec: u64,
    },
}

/// bbr-p2p's careful resume per ACK, for a socket whose node wrote `slot`. Phases as in the
/// module's diagram; the validation rounds are the round that carries the jump and the one
/// after it (the round the jump happened in ends first and is not judged: its packets left
/// before the jump).
#[inline(always)]
pub fn on_ack(slot: &mut ResumeSlot, a: &AckView, min_cwnd_bytes: u64) -> Action {
    match Start::from_u8(slot.start) {
        Start::Offered => {
            if !a.in_startup {
                slot.start = Start::Cold as u8;
                slot.reason = Reason::NotInStartup as u8;
                return Action::None;
            }
            if a.rtt_us == 0 || !a.data_waiting {
                return Action::None;
            }
            match jump(&slot.hint(), a.rtt_us, a.cwnd_bytes) {
                Err(reason) => {
                    slot.start = Start::Cold as u8;
                    slot.reason = reason as u8;
                    Action::None
                }
                Ok(j) => {
                    slot.start = Start::Unvalidated as u8;
                    slot.base_rtt_us = a.rtt_us;
                    slot.jump_pacing_bytes_per_sec = j.pacing_bytes_per_sec;
                    slot.jump_delivered = a.delivered;
                    slot.round_min_rtt_us = u32::MAX;
                    slot.rounds = 0;
                    slot.evidence = 0;
                    slot.limited_rounds = 0;
                    slot.measured_bytes_per_sec = 0;
                    Action::Jump(j)
                }
            }
        }
        phase @ (Start::Unvalidated | Start::Validating) => {
            if a.rtt_us != 0 && a.rtt_us < slot.round_min_rtt_us {
                slot.round_min_rtt_us = a.rtt_us;
            }
            if a.delivery_rate_bytes_per_sec > slot.measured_bytes_per_sec {
                slot.measured_bytes_per_sec = a.delivery_rate_bytes_per_sec;
            }
            // Loss: BBR's own verdict, on the ACK that reaches it (deviation 2). RTT growth:
            // each round's minimum, at the round's end; the first boundary ends the round the
            // jump happened in, whose packets left before the jump: not judged.
            let mut verdict = if a.loss_too_high {
                Some(Reason::Loss)
            } else {
                None
            };
            if a.round_start {
                let grew = rtt_grew(slot.round_min_rtt_us, slot.base_rtt_us);
                slot.round_min_rtt_us = u32::MAX;
                slot.rounds = slot.rounds.saturating_add(1);
                if verdict.is_none() && slot.rounds > 1 && grew {
                    verdict = Some(Reason::RttGrowth);
                }
            }
            // Evidence of the round that just ended; a round-start ACK acknowledges the first
            // packet of the next round, so it counts towards that one.
            let evidence = slot.evidence != 0;
            if a.round_start {
                slot.evidence = 0;
            }
            if phase == Start::Validating && a.evidence(slot.evidence_from) {
                slot.evidence = 1;
            }
            if a.snd_wnd_bytes < slot.ceiling_bytes {
                slot.evidence_from = a.flight_end();
            }
            let judged = a.round_start && slot.rounds > 1;
            let end = validating_round_end(
                slot.measured_bytes_per_sec,
                slot.bw_bytes_per_sec,
                evidence,
                slot.limited_rounds,
            );
            if verdict.is_none() && judged && phase == Start::Validating && end == RoundEnd::Wait {
                // No flight of the round tested the record: keep it (held below) one more round.
                slot.limited_rounds += 1;
            } else if verdict.is_some() || judged {
                let (next, reason) = after_round(phase, verdict);
                slot.start = next as u8;
                slot.reason = reason as u8;
                match next {
                    Start::Retreated => {
                        slot.rounds = 0;
                        let pipe = u64::from(a.delivered.wrapping_sub(slot.jump_delivered))
                            * u64::from(a.mss);
                        return Action::Retreat(retreat(
                            pipe,
                            slot.measured_bytes_per_sec,
                            min_cwnd_bytes,
                        ));
                    }
                    Start::Resumed => {
                        if end == RoundEnd::Unevidenced {
                            slot.reason = Reason::RateLimited as u8;
                        }
                        let pipe = u64::from(a.delivered.wrapping_sub(slot.jump_delivered))
                            * u64::from(a.mss);
                        return validation_end(
                            slot.measured_bytes_per_sec,
                            slot.bw_bytes_per_sec,
                            slot.jump_pacing_bytes_per_sec,
                            pipe,
                        );
                    }
                    Start::Validating => {
                        // Packets sent from here are paced at the record's rate; a sample is
                        // evidence once its interval holds only those (deviation 8).
                        slot.evidence_from = a.flight_end();
                    }
                    _ => {}
                }
            }
            // Unvalidated: the jump (half the ceiling, at the jump's rate). Validating: the jump
            // was carried; up to the ceiling (1x the saved BDP) at the saved rate.
            if Start::from_u8(slot.start) == Start::Unvalidated {
                Action::Hold {
                    cwnd_cap_bytes: slot.ceiling_bytes / 2,
                    pacing_cap_bytes_per_sec: slot.jump_pacing_bytes_per_sec,
                }
            } else {
                Action::Hold {
                    cwnd_cap_bytes: slot.ceiling_bytes,
                    pacing_cap_bytes_per_sec: slot.bw_bytes_per_sec,
                }
            }
        }
        Start::Retreated if !decided(slot) => {
            // The jump's flight, sent before the retreat, is acknowledged for up to two more
            // round boundaries at the rate the path serves it: an estimate taken from the
            // samples before the retreat (mostly the start's small flights) would pace far
            // below the path until PROBE_BW's first probe (bbr-p2p raises its estimate only
            // on probe feedback, `cc_ebpf::bbr` deviation 12).
            if a.round_start {
                slot.rounds = slot.rounds.saturating_add(1);
            }
            if a.delivery_rate_bytes_per_sec > slot.measured_bytes_per_sec {
                slot.measured_bytes_per_sec = a.delivery_rate_bytes_per_sec;
                return Action::Remeasured {
                    bw_bytes_per_sec: a.delivery_rate_bytes_per_sec,
                };
            }
            Action::None
        }
        Start::Cold | Start::Resumed | Start::Retreated => Action::None,
    }
}

/// Round boundaries after a retreat during which the jump's flight is still measured.
pub const RETREAT_MEASURE_ROUNDS: u8 = 2;

/// Validating rounds that may end without evidence ([`AckView::evidence`]: every flight of
/// the round application- or receive-window-limited) before validation ends on what was
/// measured anyway (deviation 8). While it waits the record's rate is kept but never exceeded
/// (cwnd ≤ the saved BDP, pacing ≤ the saved rate) and loss and RTT growth still retreat, on
/// every ACK and every round. Eight rounds: a window that doubles per round it is exhausted
/// (the receiver's autotuned window, yamux's auto-tuned stream window) grows from 64 KiB to
/// 16 MiB — the BDP of 1 Gbit/s at 130 ms — in eight; a flow still held back after that is
/// held by its application, which may not test the record for a long time, and RFC 9959
/// allows the unvalidated state no longer than that (its Unvalidated phase lasts one RTT,
/// and it then sets cwnd to what was used). RFC 7661 lets a rate-limited sender keep an
/// unvalidated cwnd for up to five minutes; this bound is far shorter.
pub const MAX_LIMITED_ROUNDS: u8 = 8;

/// How a validating round that ended without contradiction (no loss verdict, no RTT growth)
/// ends validation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoundEnd {
    /// The path carried at least 80% of the record's rate: validated, the pipe is full.
    Full,
    /// Flights that used the window showed less: the path carries less than the record; the
    /// flow goes on from what it carried ([`validation_end`]).
    Lower,
    /// No flight of the round tested the record (all application- or window-limited): no
    /// evidence either way; validate on the next round (at most [`MAX_LIMITED_ROUNDS`]).
    Wait,
    /// [`MAX_LIMITED_ROUNDS`] rounds without evidence: the flow goes on from what it carried
    /// ([`Reason::RateLimited`]).
    Unevidenced,
}

/// The end of a validating round without contradiction. `measured`: the highest delivery rate
/// since the jump (bytes/s; 0: none); `saved`: the record's rate; `evidence`: an ACK of the
/// round carried evidence ([`AckView::evidence`]); `limited_rounds`: validating rounds that
/// already ended without.
#[inline(always)]
pub const fn validating_round_end(
    measured: u64,
    saved: u64,
    evidence: bool,
    limited_rounds: u8,
) -> RoundEnd {
    // `saved - saved / 5`: 80% without a multiplication (no 128-bit overflow check in BPF).
    if measured != 0 && measured >= saved - saved / 5 {
        RoundEnd::Full
    } else if evidence {
        RoundEnd::Lower
    } else if limited_rounds < MAX_LIMITED_ROUNDS {
        RoundEnd::Wait
    } else {
        RoundEnd::Unevidenced
    }
}

/// Whether careful resume has nothing left to do on this socket: cold, resumed, or retreated
/// and done measuring the jump's flight.
#[inline(always)]
pub const fn decided(slot: &ResumeSlot) -> bool {
    match Start::from_u8(slot.start) {
        Start::Cold | Start::Resumed => true,
        Start::Retreated => slot.rounds >= RETREAT_MEASURE_ROUNDS,
        _ => false,
    }
}

/// How a validation without contradiction ends. `measured`: the highest delivery rate since the
/// jump (bytes/s; 0: no sample); `saved`: the record's rate; `jump_paced`: the rate the jump was
/// paced at; `pipe_bytes`: bytes acknowledged since the jump. The pipe is full when the path
/// delivered at least 80% of the record's rate (the record located its capacity); otherwise
/// STARTUP goes on from what the path carried (or, with no sample at all, from the jump's rate,
/// which the path did not contradict), with cwnd no larger than the pipe it validated (RFC
/// 9959's rate-limited exit from the Unvalidated phase: the jump's unused window is not kept).
#[inline(always)]
pub const fn validation_end(measured: u64, saved: u64, jump_paced: u64, pipe_bytes: u64) -> Action {
    // `saved - saved / 5`: 80% without a multiplication (no 128-bit overflow check in BPF).
    if measured != 0 && measured >= saved - saved / 5 {
        Action::Validated {
            bw_bytes_per_sec: 0,
            pipe_full: true,
            cwnd_cap_bytes: 0,
        }
    } else {
        Action::Validated {
            bw_bytes_per_sec: if measured != 0 { measured } else { jump_paced },
            pipe_full: false,
            cwnd_cap_bytes: pipe_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;
    /// 100 Mbit/s, 40 ms: the issue's bench path.
    fn saved(age_ms: u64) -> SavedPath {
        SavedPath {
            bw_bytes_per_sec: 12_500_000,
            min_rtt_us: 40_000,
            inflight_hi_bytes: None,
            sampled_at_ms: 1_000_000 - age_ms,
        }
    }

    #[test]
    fn offer_table() {
        let max_age = 10 * MIN;
        let now = 1_000_000;
        let cases: [(&str, SavedPath, Result<u64, Reason>); 6] = [
            (
                "fresh record: ceiling is the BDP (500 kB)",
                saved(1_000),
                Ok(500_000),
            ),
            ("just within the age limit", saved(max_age), Ok(500_000)),
            ("stale record", saved(max_age + 1), Err(Reason::Stale)),
            (
                "sampled in the future (clock went back)",
                SavedPath {
                    sampled_at_ms: now + 1,
                    ..saved(0)
                },
                Err(Reason::Stale),
            ),
            (
                "zero bandwidth",
                SavedPath {
                    bw_bytes_per_sec: 0,
                    ..saved(0)
                },
                Err(Reason::Invalid),
            ),
            (
                "inflight_hi below the BDP caps the ceiling",
                SavedPath {
                    inflight_hi_bytes: Some(300_000),
                    ..saved(0)
                },
                Ok(300_000),
            ),
        ];
        for (what, record, want) in cases {
            let got = offer(&record, now, max_age).map(|h| h.ceiling_bytes);
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn rtt_bounds_are_rfc_9959s() {
        // saved 40 ms: confirmed within [20 ms, 400 ms].
        let cases = [
            (19_999, false),
            (20_000, true),
            (40_000, true),
            (400_000, true),
            (400_001, false),
        ];
        for (current, want) in cases {
            assert_eq!(rtt_confirms(40_000, current), want, "current {current} us");
        }
    }

    #[test]
    fn jump_table() {
        let hint = offer(&saved(0), 1_000_000, MIN).unwrap();
        let iw = 10 * 1448;
        let cases: [(&str, u32, u64, Result<Jump, Reason>); 5] = [
            (
                "same RTT: half the BDP, paced at half the saved rate",
                40_000,
                iw,
                Ok(Jump {
                    cwnd_bytes: 250_000,
                    pacing_bytes_per_sec: 6_250_000,
                }),
            ),
            (
                "RTT at half the saved one: pacing reaches, never exceeds, the saved rate",
                20_000,
                iw,
                Ok(Jump {
                    cwnd_bytes: 250_000,
                    pacing_bytes_per_sec: 12_500_000,
                }),
            ),
            (
                "RTT mismatch: much shorter",
                10_000,
                iw,
                Err(Reason::RttMismatch),
            ),
            (
                "RTT mismatch: much longer",
                500_000,
                iw,
                Err(Reason::RttMismatch),
            ),
            (
                "cwnd already above the jump",
                40_000,
                300_000,
                Err(Reason::JumpTooSmall),
            ),
        ];
        for (what, rtt, cwnd, want) in cases {
            assert_eq!(jump(&hint, rtt, cwnd), want, "{what}");
        }
    }

    #[test]
    fn rtt_growth_table() {
        let cases = [
            ("no growth", 40_300, 40_000, false),
            ("RTT grew by half: a standing queue", 60_000, 40_000, true),
            ("within a quarter plus slack", 50_900, 40_000, false),
            ("just above a quarter plus slack", 51_001, 40_000, true),
            ("no RTT sample in the round", u32::MAX, 40_000, false),
            (
                "sub-ms path: 600 us of jitter is not growth",
                700,
                100,
                false,
            ),
        ];
        for (what, round_min, base, want) in cases {
            assert_eq!(rtt_grew(round_min, base), want, "{what}");
        }
    }

    #[test]
    fn phases_advance_per_round_and_retreat_on_contradiction() {
        let clean = None;
        let loss = Some(Reason::Loss);
        assert_eq!(
            after_round(Start::Unvalidated, clean),
            (Start::Validating, Reason::None)
        );
        assert_eq!(
            after_round(Start::Validating, clean),
            (Start::Resumed, Reason::None)
        );
        assert_eq!(
            after_round(Start::Unvalidated, loss),
            (Start::Retreated, Reason::Loss)
        );
        assert_eq!(
            after_round(Start::Validating, Some(Reason::RttGrowth)),
            (Start::Retreated, Reason::RttGrowth)
        );
        // Once resumed (or cold, or retreated) later rounds change nothing.
        assert_eq!(
            after_round(Start::Resumed, loss),
            (Start::Resumed, Reason::None)
        );
        assert_eq!(after_round(Start::Cold, loss), (Start::Cold, Reason::None));
        assert_eq!(
            after_round(Start::Retreated, loss),
            (Start::Retreated, Reason::None)
        );
    }

    #[test]
    fn retreat_uses_the_measured_rate_not_the_record() {
        // The record said 100 Mbit/s; the path delivered 20 Mbit/s (2.5 MB/s) and 90 kB of the
        // jump was acknowledged.
        let r = retreat(90_000, 2_500_000, 4 * 1448);
        assert_eq!(
            r,
            Retreat {
                cwnd_bytes: 45_000,
                pacing_bytes_per_sec: 2_500_000
            }
        );
        // Almost nothing got through: the cwnd floor holds.
        assert_eq!(retreat(1_000, 100_000, 4 * 1448).cwnd_bytes, 4 * 1448);
    }

    #[test]
    fn validation_ends_full_only_at_the_records_rate() {
        // Record 12.5 MB/s; the jump was paced at 6.25 MB/s.
        let (saved, paced) = (12_500_000, 6_250_000);
        // 120 packets acknowledged since the jump.
        let pipe = 120 * 1448;
        let full = Action::Validated {
            bw_bytes_per_sec: 0,
            pipe_full: true,
            cwnd_cap_bytes: 0,
        };
        let go_on = |bw| Action::Validated {
            bw_bytes_per_sec: bw,
            pipe_full: false,
            cwnd_cap_bytes: pipe,
        };
        let cases = [
            ("the path carried the record's rate", 12_000_000, full),
            ("exactly 80% of the record", 10_000_000, full),
            (
                "held back (a 256 KiB yamux window at 40 ms): STARTUP goes on from 6.5 MB/s",
                6_500_000,
                go_on(6_500_000),
            ),
            (
                "a slower path that built no queue: STARTUP from its rate",
                2_500_000,
                go_on(2_500_000),
            ),
            ("no sample at all: from the jump's rate", 0, go_on(paced)),
        ];
        for (what, measured, want) in cases {
            assert_eq!(validation_end(measured, saved, paced, pipe), want, "{what}");
        }
    }

    const MSS: u32 = 1448;

    fn ack(delivered: u32, lost: u32, rtt_us: u32, round_start: bool) -> AckView {
        AckView {
            in_startup: true,
            rtt_us,
            data_waiting: true,
            round_start,
            delivered,
            lost,
            mss: MSS,
            cwnd_bytes: 10 * u64::from(MSS),
            delivery_rate_bytes_per_sec: 0,
            loss_too_high: false,
            snd_wnd_bytes: u64::MAX,
            // A round's flight is 170 packets here: the packet acknowledged now left one
            // flight ago.
            prior_delivered: delivered.wrapping_sub(FLIGHT),
            packets_in_flight: FLIGHT,
        }
    }

    /// Packets in flight, and delivered per round, in the per-ACK tables.
    const FLIGHT: u32 = 170;

    fn offered() -> ResumeSlot {
        ResumeSlot::offered(&offer(&saved(0), 1_000_000, MIN).unwrap())
    }

    /// One round after the jump: packets delivered and lost in it, its min RTT, and whether
    /// BBR's loss signal ([`AckView::loss_too_high`]) is up on the ACK in its middle.
    type R = (u32, u32, u32, bool);

    /// Runs `rounds` through a slot that jumped at delivered = 100, returning the decisive
    /// action (retreat or validation; `Action::None` if neither came) and the slot. Every
    /// round's flights used the window and carried 5 MB/s (40% of the record).
    fn run(rounds: &[R]) -> (Action, ResumeSlot) {
        let mut open = [round(5_000_000, Limit::None); 8];
        for (o, &(d, l, rtt, too_high)) in open.iter_mut().zip(rounds) {
            *o = Round {
                delivered: d,
                lost: l,
                rtt_us: rtt,
                loss_too_high: too_high,
                ..*o
            };
        }
        run_rounds(&open[..rounds.len()])
    }

    /// What held a round's flights back.
    #[derive(Clone, Copy)]
    enum Limit {
        /// Nothing: pacing or cwnd (the samples are evidence).
        None,
        /// The application (the kernel marks the samples application-limited).
        App,
        /// The receiver advertised this many bytes (below the 500 kB saved BDP: no evidence).
        Rwnd(u64),
    }

    /// One round after the jump.
    #[derive(Clone, Copy)]
    struct Round {
        delivered: u32,
        lost: u32,
        rtt_us: u32,
        /// BBR's loss signal on the ACK in the round's middle.
        loss_too_high: bool,
        /// The round's delivery samples, bytes/s.
        rate: u64,
        limit: Limit,
    }

    const fn round(rate: u64, limit: Limit) -> Round {
        Round {
            delivered: 170,
            lost: 0,
            rtt_us: 40_300,
            loss_too_high: false,
            rate,
            limit,
        }
    }

    fn run_rounds(rounds: &[Round]) -> (Action, ResumeSlot) {
        let mut slot = offered();
        let jumped = on_ack(&mut slot, &ack(100, 0, 40_000, false), 4 * 1448);
        assert!(matches!(jumped, Action::Jump(_)), "{jumped:?}");
        // The round the jump happened in ends: its RTT is not judged.
        let first = on_ack(&mut slot, &ack(110, 5, 40_000, true), 4 * 1448);
        assert!(matches!(first, Action::Hold { .. }), "{first:?}");
        let (mut delivered, mut lost, mut decisive) = (110, 5, Action::None);
        let mut keep = |a: Action| {
            if matches!(a, Action::Retreat(_) | Action::Validated { .. }) {
                decisive = a;
            }
        };
        let limited = |mut a: AckView, limit: Limit| {
            match limit {
                Limit::None => {}
                Limit::App => a.data_waiting = false,
                Limit::Rwnd(bytes) => a.snd_wnd_bytes = bytes,
            }
            a
        };
        for (i, r) in rounds.iter().enumerate() {
            let mut a = ack(
                delivered + r.delivered / 2,
                lost + r.lost / 2,
                r.rtt_us,
                false,
            );
            a.delivery_rate_bytes_per_sec = r.rate;
            a.loss_too_high = r.loss_too_high;
            keep(on_ack(&mut slot, &limited(a, r.limit), 4 * 1448));
            delivered += r.delivered;
            lost += r.lost;
            // The round-start ACK acknowledges the next round's first packet: its limit.
            let mut end = ack(delivered, lost, r.rtt_us, true);
            end.loss_too_high = r.loss_too_high;
            let next = rounds.get(i + 1).unwrap_or(r).limit;
            keep(on_ack(&mut slot, &limited(end, next), 4 * 1448));
        }
        (decisive, slot)
    }

    #[test]
    fn validating_round_end_table() {
        // Record 12.5 MB/s.
        let saved = 12_500_000;
        let max = MAX_LIMITED_ROUNDS;
        let cases = [
            (
                "the record's rate, tested",
                12_000_000,
                true,
                0,
                RoundEnd::Full,
            ),
            (
                "80% seen on application-limited flights still shows the path carries it",
                10_000_000,
                false,
                0,
                RoundEnd::Full,
            ),
            (
                "less, on flights that used the window",
                6_000_000,
                true,
                0,
                RoundEnd::Lower,
            ),
            (
                "less, every flight held back: wait",
                6_000_000,
                false,
                0,
                RoundEnd::Wait,
            ),
            ("no sample at all: wait", 0, false, 0, RoundEnd::Wait),
            (
                "held back, last round allowed",
                6_000_000,
                false,
                max - 1,
                RoundEnd::Wait,
            ),
            (
                "held back for the whole bound",
                6_000_000,
                false,
                max,
                RoundEnd::Unevidenced,
            ),
            (
                "evidence after waiting: judged on it",
                6_000_000,
                true,
                max,
                RoundEnd::Lower,
            ),
        ];
        for (what, measured, evidence, limited, want) in cases {
            assert_eq!(
                validating_round_end(measured, saved, evidence, limited),
                want,
                "{what}"
            );
        }
    }

    #[test]
    fn evidence_table() {
        // Evidence from packets sent at delivered = 1000 on.
        let from = 1_000;
        let sent_at = |prior_delivered| AckView {
            prior_delivered,
            ..ack(prior_delivered.wrapping_add(FLIGHT), 0, 40_000, false)
        };
        let cases = [
            ("sent at the mark, data waiting", sent_at(1_000), true),
            ("sent after it", sent_at(1_200), true),
            (
                "sent before it: the sample spans earlier ACKs",
                sent_at(999),
                false,
            ),
            (
                "application-limited",
                AckView {
                    data_waiting: false,
                    ..sent_at(1_200)
                },
                false,
            ),
        ];
        for (what, a, want) in cases {
            assert_eq!(a.evidence(from), want, "{what}");
        }
        // Sequence space: `delivered` wraps.
        assert!(sent_at(5).evidence(u32::MAX - 5));
        assert!(!sent_at(u32::MAX - 5).evidence(5));
        // The mark a window-limited ACK sets: past everything in flight.
        assert_eq!(ack(500, 0, 40_000, false).flight_end(), 500 + FLIGHT);
    }

    /// Deviation 8: validating rounds whose flights did not test the record keep it; loss and
    /// RTT growth still retreat while it waits; the wait is bounded.
    #[test]
    fn rate_limited_validation_table() {
        // 5 MB/s is 40% of the record; 11.5 MB/s is 92%.
        let app = round(5_000_000, Limit::App);
        let rwnd = round(5_000_000, Limit::Rwnd(200_000));
        let open_low = round(5_000_000, Limit::None);
        let at_record = round(11_500_000, Limit::None);
        let lossy = Round {
            lost: 20,
            loss_too_high: true,
            ..app
        };
        let queued = Round {
            rtt_us: 70_000,
            ..app
        };
        let max = usize::from(MAX_LIMITED_ROUNDS);
        let full = Action::Validated {
            bw_bytes_per_sec: 0,
            pipe_full: true,
            cwnd_cap_bytes: 0,
        };
        // After the jump's round (flights that used the window, 40%): `held` validating rounds
        // of the first kind, then optionally one of the second.
        type Case = (
            &'static str,
            Round,
            usize,
            Option<Round>,
            Start,
            Reason,
            Option<Action>,
        );
        let cases: [Case; 8] = [
            (
                "two application-limited validating rounds (the second is judged): still validating",
                app,
                2,
                None,
                Start::Validating,
                Reason::None,
                None,
            ),
            (
                "two receive-window-limited validating rounds: still validating",
                rwnd,
                2,
                None,
                Start::Validating,
                Reason::None,
                None,
            ),
            (
                "held back, then a round at the record's rate: validated, pipe full",
                app,
                3,
                Some(at_record),
                Start::Resumed,
                Reason::None,
                Some(full),
            ),
            (
                "held back, then flights that used the window at 40%: the path is slower",
                app,
                3,
                Some(open_low),
                Start::Resumed,
                Reason::None,
                Some(Action::Validated {
                    bw_bytes_per_sec: 5_000_000,
                    pipe_full: false,
                    // Acknowledged since the jump at 100: 10 + 5 rounds of 170.
                    cwnd_cap_bytes: (10 + 170 * 5) * 1448,
                }),
            ),
            (
                "held back, then BBR's loss signal: retreat",
                app,
                3,
                Some(lossy),
                Start::Retreated,
                Reason::Loss,
                None,
            ),
            (
                "held back, then a standing queue: retreat",
                app,
                3,
                Some(queued),
                Start::Retreated,
                Reason::RttGrowth,
                None,
            ),
            (
                "held back for the whole bound: still validating",
                app,
                max,
                None,
                Start::Validating,
                Reason::None,
                None,
            ),
            (
                "held back beyond the bound: goes on from what it carried",
                app,
                max + 1,
                None,
                Start::Resumed,
                Reason::RateLimited,
                Some(Action::Validated {
                    bw_bytes_per_sec: 5_000_000,
                    pipe_full: false,
                    cwnd_cap_bytes: (10 + 170 * (max as u64 + 2)) * 1448,
                }),
            ),
        ];
        for (what, held, n, then, start, reason, action) in cases {
            let mut buf = [open_low; 16];
            buf[1..=n].fill(held);
            let len = match then {
                Some(r) => {
                    buf[n + 1] = r;
                    n + 2
                }
                None => n + 1,
            };
            let (decisive, slot) = run_rounds(&buf[..len]);
            assert_eq!(
                (Start::from_u8(slot.start), Reason::from_u8(slot.reason)),
                (start, reason),
                "{what}"
            );
            if let Some(want) = action {
                assert_eq!(decisive, want, "{what}");
            }
        }
    }

    #[test]
    fn per_ack_phases_table() {
        type Case<'a> = (&'a str, &'a [R], Start, Reason);
        let cases: [Case<'_>; 9] = [
            (
                "clean jump round",
                &[(170, 0, 40_500, false)],
                Start::Validating,
                Reason::None,
            ),
            (
                "two clean rounds: the first validating round's samples still span the jump's \
                 half-rate ACKs, no evidence yet",
                &[(170, 0, 40_500, false), (170, 0, 40_200, false)],
                Start::Validating,
                Reason::None,
            ),
            (
                "three clean rounds: the second validating round's samples left in the first, \
                 so they still span the jump's half-rate ACKs",
                &[
                    (170, 0, 40_500, false),
                    (170, 0, 40_200, false),
                    (170, 0, 40_200, false),
                ],
                Start::Validating,
                Reason::None,
            ),
            (
                "four clean rounds validate",
                &[
                    (170, 0, 40_500, false),
                    (170, 0, 40_200, false),
                    (170, 0, 40_200, false),
                    (170, 0, 40_200, false),
                ],
                Start::Resumed,
                Reason::None,
            ),
            (
                "BBR's loss signal in the unvalidated phase",
                &[(150, 20, 40_500, true)],
                Start::Retreated,
                Reason::Loss,
            ),
            (
                "BBR's loss signal while validating",
                &[(170, 0, 40_500, false), (150, 20, 40_500, true)],
                Start::Retreated,
                Reason::Loss,
            ),
            (
                "RTT growth while validating",
                &[(170, 0, 40_500, false), (170, 0, 70_000, false)],
                Start::Retreated,
                Reason::RttGrowth,
            ),
            (
                // 3 of 170 lost is 1.8%, 5 of 170 is 2.9%: neither raised BBR's signal
                // (below 2%, or fewer than 6 lossy ACKs), so neither retreats.
                "random loss BBR does not call congestion is not a retreat",
                &[
                    (167, 3, 40_100, false),
                    (165, 5, 40_100, false),
                    (166, 4, 40_100, false),
                    (167, 3, 40_100, false),
                ],
                Start::Resumed,
                Reason::None,
            ),
            (
                "no round ended yet after the jump's: still unvalidated",
                &[],
                Start::Unvalidated,
                Reason::None,
            ),
        ];
        for (what, rounds, start, reason) in cases {
            let (_, slot) = run(rounds);
            assert_eq!(
                (Start::from_u8(slot.start), Reason::from_u8(slot.reason)),
                (start, reason),
                "{what}"
            );
        }
    }

    #[test]
    fn retreat_is_to_the_measured_rate_and_half_the_pipe() {
        // Retreat on the ACK that raised the signal, mid-round: 110 + 75 delivered, 85 packets
        // since the jump at 100; measured 5 MB/s.
        let (action, _) = run(&[(150, 20, 40_500, true)]);
        assert_eq!(
            action,
            Action::Retreat(Retreat {
                cwnd_bytes: 85 * 1448 / 2,
                pacing_bytes_per_sec: 5_000_000
            })
        );
        // The run's delivery samples are 5 MB/s, 40% of the 12.5 MB/s record: validated, and
        // STARTUP goes on from 5 MB/s instead of declaring the pipe full, with cwnd at most
        // what was acknowledged since the jump (at 100) when validation ended (at 110 + 4 × 170:
        // the third validating round is the first whose samples left after every packet sent
        // before validation was delivered: evidence).
        let (action, _) = run(&[
            (170, 0, 40_500, false),
            (170, 0, 40_200, false),
            (170, 0, 40_200, false),
            (170, 0, 40_200, false),
        ]);
        assert_eq!(
            action,
            Action::Validated {
                bw_bytes_per_sec: 5_000_000,
                pipe_full: false,
                cwnd_cap_bytes: 690 * 1448,
            }
        );
    }

    #[test]
    fn after_a_retreat_the_jumps_flight_is_measured_for_two_rounds() {
        // Retreated mid-round on samples of 5 MB/s.
        let (_, mut slot) = run(&[(150, 20, 40_500, true)]);
        assert_eq!(Start::from_u8(slot.start), Start::Retreated);
        assert!(
            !decided(&slot),
            "the jump's flight is still being acknowledged"
        );
        let mut a = ack(300, 40, 45_000, false);
        // (delivery sample, round boundary, expected action, decided after)
        let cases = [
            (4_000_000, false, Action::None, false),
            (
                6_000_000,
                false,
                Action::Remeasured {
                    bw_bytes_per_sec: 6_000_000,
                },
                false,
            ),
            // `run` ended the retreat's round (one boundary); this is the second.
            (2_500_000, true, Action::None, true),
        ];
        for (i, (rate, round_start, want, done)) in cases.into_iter().enumerate() {
            a.delivery_rate_bytes_per_sec = rate;
            a.round_start = round_start;
            assert_eq!(on_ack(&mut slot, &a, 4 * 1448), want, "ACK {i}");
            assert_eq!(decided(&slot), done, "ACK {i}");
        }
        assert_eq!(Reason::from_u8(slot.reason), Reason::Loss);
    }

    #[test]
    fn holds_the_jump_while_unvalidated() {
        let mut slot = offered();
        let Action::Jump(j) = on_ack(&mut slot, &ack(100, 0, 40_000, false), 5792) else {
            panic!("no jump");
        };
        assert_eq!(j.cwnd_bytes, 250_000);
        assert_eq!(
            on_ack(&mut slot, &ack(101, 0, 40_000, false), 5792),
            Action::Hold {
                cwnd_cap_bytes: 250_000,
                pacing_cap_bytes_per_sec: 6_250_000
            }
        );
        // The round the jump happened in ends, then the jump's round is carried cleanly:
        // validating, up to the full saved BDP at the saved rate.
        on_ack(&mut slot, &ack(110, 0, 40_000, true), 5792);
        assert_eq!(
            on_ack(&mut slot, &ack(280, 0, 40_100, true), 5792),
            Action::Hold {
                cwnd_cap_bytes: 500_000,
                pacing_cap_bytes_per_sec: 12_500_000
            }
        );
        assert_eq!(Start::from_u8(slot.start), Start::Validating);
    }

    #[test]
    fn offered_but_not_taken() {
        let cases: [(&str, AckView, Start, Reason); 5] = [
            (
                "left STARTUP before the hint",
                AckView {
                    in_startup: false,
                    ..ack(5, 0, 40_000, false)
                },
                Start::Cold,
                Reason::NotInStartup,
            ),
            (
                "no RTT sample yet: wait",
                ack(5, 0, 0, false),
                Start::Offered,
                Reason::None,
            ),
            (
                "application-limited (handshake, idle): wait for data",
                AckView {
                    data_waiting: false,
                    ..ack(5, 0, 40_000, false)
                },
                Start::Offered,
                Reason::None,
            ),
            (
                "RTT mismatch",
                ack(5, 0, 5_000, false),
                Start::Cold,
                Reason::RttMismatch,
            ),
            (
                "cwnd already larger",
                AckView {
                    cwnd_bytes: 400_000,
                    ..ack(5, 0, 40_000, false)
                },
                Start::Cold,
                Reason::JumpTooSmall,
            ),
        ];
        for (what, a, start, reason) in cases {
            let mut slot = offered();
            assert_eq!(on_ack(&mut slot, &a, 5792), Action::None, "{what}");
            assert_eq!(
                (Start::from_u8(slot.start), Reason::from_u8(slot.reason)),
                (start, reason),
                "{what}"
            );
        }
        // A cold entry from the node stays cold.
        let mut slot = ResumeSlot::cold(Reason::Stale);
        assert_eq!(
            on_ack(&mut slot, &ack(5, 0, 40_000, true), 5792),
            Action::None
        );
        assert_eq!(Reason::from_u8(slot.reason), Reason::Stale);
    }

    #[test]
    fn bandwidth_units_round_trip() {
        // 12.5 MB/s at MSS 1448: 12.5e6 × 2^24 / 1448e6 = 144_830.8 units.
        let bw = bytes_per_sec_to_bw(12_500_000, 1448);
        assert_eq!(bw, 144_830);
        assert_eq!(crate::bbr::bw_to_bytes_per_sec(bw, 1448), 12_499_918);
        assert_eq!(bytes_per_sec_to_bw(1 << 50, 1), u32::MAX);
        assert_eq!(bytes_per_sec_to_bw(1_000, 0), 0);
    }

    #[test]
    fn bdp_does_not_overflow() {
        assert_eq!(bdp_bytes(12_500_000, 40_000), 500_000);
        assert_eq!(bdp_bytes(1_234_567, 1_000_000), 1_234_567);
        // 100 Gbit/s and the largest RTT: no overflow.
        assert_eq!(
            bdp_bytes(12_500_000_000, u32::MAX),
            12_500 * u64::from(u32::MAX)
        );
    }
}
