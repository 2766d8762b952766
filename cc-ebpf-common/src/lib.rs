//! Types and constants shared by the p2p-cc eBPF programs (`cc-ebpf`) and the node that loads them.
//!
//! Everything crossing the kernel/user boundary is `#[repr(C)]`, `Copy`, free of `bool` and of
//! implicit padding, with a compile-time size check. With the `user` feature the types implement
//! `aya::Pod`; with `std` the crate also carries the host-side BTF reader ([`btf`]) and the resolver
//! of the kernel field offsets ([`layout`]) the loader patches into the programs before loading.
#![no_std]

#[cfg(feature = "std")]
extern crate std;

#[cfg(feature = "std")]
pub mod btf;
pub mod layout;
pub mod resume;

/// Name of the LRU hash map holding the latest TCP state per socket, keyed by socket cookie.
pub const SOCK_STATS_MAP: &str = "SOCK_STATS";
/// Name of the per-CPU array map of probe self-counters ([`ProbeCounters`]).
pub const PROBE_COUNTERS_MAP: &str = "PROBE_COUNTERS";
/// Name of the LRU per-CPU hash map of smoothed-RTT histograms per congestion control
/// ([`RttHist`]), keyed by the address of the algorithm's `tcp_congestion_ops`.
pub const RTT_HIST_MAP: &str = "RTT_HIST";
/// Name of the ring buffer carrying one [`FinalRecord`] per destroyed tracked socket.
pub const FINAL_RECORDS_MAP: &str = "FINAL_RECORDS";
/// Name of the socket-storage map marking the sockets the probes track ([`SockTrack`]).
pub const SOCK_TRACK_MAP: &str = "SOCK_TRACK";

/// Name of `tcp_probe`'s program for the node's own sockets, and of its observe-all form (every
/// TCP socket of the host is tracked): the loader attaches one of them, chosen at load.
pub const TCP_PROBE_PROGRAM: &str = "tcp_probe";
pub const TCP_PROBE_ALL_PROGRAM: &str = "tcp_probe_all";
/// Name of the `iter/tcp` program the collector runs before each read of the maps: it refreshes
/// every tracked socket's [`SockStats`] from its `tcp_sock` (exact for an idle socket).
pub const REFRESH_PROGRAM: &str = "refresh_tcp";

/// Sockets tracked at once. Sized for a node's connection limits (1024 inbound + 512 outbound,
/// see the node's connection management) with 4x headroom for the observe-every-socket mode,
/// where the LRU evicts the least recently updated socket (counted in `ProbeCounters`).
pub const SOCK_STATS_MAX_ENTRIES: u32 = 8192;

/// Congestion-control algorithms with an RTT histogram at once. A host offers a handful
/// (reno, cubic, bbr, bbr-p2p, a test algorithm); a struct_ops algorithm registered again gets
/// a new ops address, so this leaves room for re-registrations before the LRU evicts the oldest.
pub const RTT_HIST_MAX_ENTRIES: u32 = 64;

/// Bytes of the final-record ring buffer (a power of two, as the kernel requires):
/// 256 KiB = ~1200 records of [`FinalRecord`] (+8 bytes header each), enough for every socket
/// of a node closing at once between two drains (the node drains every second). A full buffer
/// drops the record and counts it (`ProbeCounters::final_lost`).
pub const FINAL_RECORDS_BYTES: u32 = 256 * 1024;

/// Log2 buckets of the RTT histogram: bucket `i` counts smoothed RTTs in `[2^i, 2^(i+1))` µs
/// (bucket 0 also counts 0 µs); the last bucket, 2^27 µs ≈ 134 s, is above any TCP srtt.
pub const RTT_HIST_BUCKETS: usize = 28;

/// The kernel's congestion-avoidance states (`enum tcp_ca_state`), in their numeric order.
pub const CA_STATES: [&str; 5] = ["open", "disorder", "cwr", "recovery", "loss"];

/// `floor(log2(v))` for `v >= 1`, 0 for `v == 0`: branch-only, no loop (it runs in eBPF).
#[inline(always)]
pub const fn log2_u32(mut v: u32) -> u32 {
    let mut r = 0;
    if v >= 1 << 16 {
        v >>= 16;
        r += 16;
    }
    if v >= 1 << 8 {
        v >>= 8;
        r += 8;
    }
    if v >= 1 << 4 {
        v >>= 4;
        r += 4;
    }
    if v >= 1 << 2 {
        v >>= 2;
        r += 2;
    }
    if v >= 1 << 1 {
        r += 1;
    }
    r
}

/// Histogram bucket of a smoothed RTT in microseconds (clamped to the last bucket).
#[inline(always)]
pub const fn rtt_bucket(srtt_us: u32) -> usize {
    let b = log2_u32(srtt_us) as usize;
    if b < RTT_HIST_BUCKETS {
        b
    } else {
        RTT_HIST_BUCKETS - 1
    }
}

/// Latest TCP state of one socket, written by the `tcp_probe` program on every ACK that passes
/// the kernel's probe point, plus what the retransmit and congestion-state tracepoints add up.
/// The node inserts it zeroed except `opened_ns`/`ca_state_since_ns` (its registration time).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockStats {
    /// `tcp_sock.snd_cwnd`, segments.
    pub cwnd_segments: u32,
    /// `tcp_sock.snd_ssthresh`, segments (`0x7fffffff` = infinite, slow start not yet left).
    pub ssthresh_segments: u32,
    /// Smoothed RTT, microseconds (`tcp_sock.srtt_us >> 3`).
    pub srtt_us: u32,
    /// Windowed minimum RTT seen by the kernel, microseconds (`tcp_sock.rtt_min`).
    pub min_rtt_us: u32,
    /// `tcp_sock.mss_cache`, bytes.
    pub mss_bytes: u32,
    /// Segments delivered in the latest rate sample (`tcp_sock.rate_delivered`).
    pub rate_delivered_segments: u32,
    /// Interval of the latest rate sample, microseconds (`tcp_sock.rate_interval_us`).
    pub rate_interval_us: u32,
    /// `tcp_sock.snd_wnd`, bytes (peer's advertised receive window).
    pub snd_wnd_bytes: u32,
    /// `tcp_sock.total_retrans`, segments retransmitted over the connection's life.
    pub total_retrans_segments: u32,
    /// `tcp_sock.packets_out`, segments in flight.
    pub packets_out_segments: u32,
    /// `sock.sk_pacing_rate`, bytes per second (`u64::MAX` = unlimited).
    pub pacing_rate_bytes_per_sec: u64,
    /// `tcp_sock.bytes_acked`, bytes.
    pub bytes_acked: u64,
    /// `tcp_sock.bytes_received`, bytes.
    pub bytes_received: u64,
    /// `bpf_ktime_get_ns()` of the latest update.
    pub updated_ns: u64,
    /// Refreshes of this entry by `tcp_probe` (at most one per kernel tick, plus one after each
    /// congestion-state change: see [`SockTrack::due`]). The collector's refreshes are
    /// [`SockStats::walk_refreshes`].
    pub events: u64,
    /// `tcp_sock.rcv_wnd`, bytes (the receive window this side advertises).
    pub rcv_wnd_bytes: u32,
    /// Current congestion-avoidance state (index into [`CA_STATES`]) as last accounted.
    pub ca_state: u32,
    /// Segments retransmitted successfully (`tcp_retransmit_skb` with err 0, GSO segments).
    pub retrans_segments: u32,
    /// Congestion-state changes (to a different state).
    pub ca_transitions: u32,
    /// Bytes retransmitted successfully (`skb->len` of each retransmission, as
    /// `tcpi_bytes_retrans` counts them).
    pub retrans_bytes: u64,
    /// CLOCK_MONOTONIC ns when tracking began (registration, or first event in observe-all).
    pub opened_ns: u64,
    /// CLOCK_MONOTONIC ns when the current `ca_state` began (time in it is not yet in
    /// `ca_state_ns`: add `now - ca_state_since_ns` when reading).
    pub ca_state_since_ns: u64,
    /// Nanoseconds spent in each state of [`CA_STATES`], up to `ca_state_since_ns`.
    pub ca_state_ns: [u64; 5],
    /// Times each state of [`CA_STATES`] was entered.
    pub ca_state_entries: [u32; 5],
    /// Refreshes of this entry by the collector's walk ([`REFRESH_PROGRAM`], once per
    /// collection while the socket is in the node's network namespace), wrapping.
    pub walk_refreshes: u32,
}
const _: () = assert!(core::mem::size_of::<SockStats>() == 184);

impl SockStats {
    /// A fresh entry for a socket tracked from `now_ns` (CLOCK_MONOTONIC), in state Open.
    pub const fn opened_at(now_ns: u64) -> Self {
        Self {
            cwnd_segments: 0,
            ssthresh_segments: 0,
            srtt_us: 0,
            min_rtt_us: 0,
            mss_bytes: 0,
            rate_delivered_segments: 0,
            rate_interval_us: 0,
            snd_wnd_bytes: 0,
            total_retrans_segments: 0,
            packets_out_segments: 0,
            pacing_rate_bytes_per_sec: 0,
            bytes_acked: 0,
            bytes_received: 0,
            updated_ns: 0,
            events: 0,
            rcv_wnd_bytes: 0,
            ca_state: 0,
            retrans_segments: 0,
            ca_transitions: 0,
            retrans_bytes: 0,
            opened_ns: now_ns,
            ca_state_since_ns: now_ns,
            ca_state_ns: [0; 5],
            ca_state_entries: [0; 5],
            walk_refreshes: 0,
        }
    }

    /// Whether the entry holds the socket's state: some refresh (a `tcp_probe` event or the
    /// collector's walk) copied it since the node inserted the entry zeroed.
    #[inline(always)]
    pub const fn refreshed(&self) -> bool {
        self.events > 0 || self.walk_refreshes > 0
    }

    /// Closes the current state's interval at `now_ns` and moves to `new_state` (the logic the
    /// `tcp_cong_state_set` program runs; host-tested). Returns `false` for an unknown state.
    #[inline(always)]
    pub fn change_ca_state(&mut self, new_state: u32, now_ns: u64) -> bool {
        // One opaque value: otherwise LLVM may bounds-check one copy of the state and index
        // with another, which the eBPF verifier cannot follow.
        // SAFETY: reading a local.
        let new_state = unsafe { core::ptr::read_volatile(&new_state) };
        self.account_ca_state(now_ns);
        if new_state as usize >= CA_STATES.len() {
            return false;
        }
        if new_state != self.ca_state {
            self.ca_transitions = self.ca_transitions.wrapping_add(1);
            if let Some(n) = state_slot(&mut self.ca_state_entries, new_state) {
                *n = n.wrapping_add(1);
            }
            self.ca_state = new_state;
        }
        true
    }

    /// Adds the time since `ca_state_since_ns` to the current state.
    #[inline(always)]
    pub fn account_ca_state(&mut self, now_ns: u64) {
        let elapsed = now_ns.saturating_sub(self.ca_state_since_ns);
        if let Some(t) = state_slot(&mut self.ca_state_ns, self.ca_state) {
            *t += elapsed;
        }
        self.ca_state_since_ns = now_ns;
    }

    /// Time in each state up to `now_ns`, including the current state's open interval.
    pub fn ca_state_ns_at(&self, now_ns: u64) -> [u64; 5] {
        let mut out = self.ca_state_ns;
        if let Some(t) = out.get_mut(self.ca_state as usize) {
            *t += now_ns.saturating_sub(self.ca_state_since_ns);
        }
        out
    }
}

/// The element for a congestion state, by constant indices: the eBPF verifier must see a bounded
/// offset, and a computed index is bounds-checked in one register and used from another copy.
#[inline(always)]
fn state_slot<T>(a: &mut [T; 5], state: u32) -> Option<&mut T> {
    let [open, disorder, cwr, recovery, loss] = a;
    match state {
        0 => Some(open),
        1 => Some(disorder),
        2 => Some(cwr),
        3 => Some(recovery),
        4 => Some(loss),
        _ => None,
    }
}

/// Smoothed-RTT histogram of one congestion control, per CPU (summed in userspace), updated on
/// every `tcp_probe` event of a tracked socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RttHist {
    /// The algorithm's name (`tcp_congestion_ops.name`), NUL-padded; set on the CPU that
    /// created the entry, zero on the others.
    pub name: [u8; 16],
    pub count: u64,
    /// Sum of the samples, microseconds.
    pub sum_us: u64,
    /// See [`RTT_HIST_BUCKETS`].
    pub buckets: [u64; RTT_HIST_BUCKETS],
}
const _: () = assert!(core::mem::size_of::<RttHist>() == 256);

impl Default for RttHist {
    fn default() -> Self {
        Self {
            name: [0; 16],
            count: 0,
            sum_us: 0,
            buckets: [0; RTT_HIST_BUCKETS],
        }
    }
}

/// What `tcp_destroy_sock` emits for a tracked socket before removing its entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FinalRecord {
    pub cookie: u64,
    /// The socket's congestion control at destruction, NUL-padded.
    pub algorithm: [u8; 16],
    /// The entry as it was, with the current state's time accounted up to destruction.
    pub stats: SockStats,
}
const _: () = assert!(core::mem::size_of::<FinalRecord>() == 208);

/// A tracked socket's mark, in socket storage ([`SOCK_TRACK_MAP`]): the node inserts one per
/// socket it owns (by fd, `owned = 1`); `tcp_probe`'s observe-all form creates one (zeroed,
/// `owned = 0`) for any other socket. The kernel frees it with the socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockTrack {
    /// The kernel's tick counter (`jiffies64`) at the last refresh; 0: refresh at the next
    /// event (none yet, or a congestion-state change since). The counter starts at
    /// `INITIAL_JIFFIES`, 2^32 − 300 s of ticks, and only grows: never 0 itself.
    pub refreshed_jiffies: u64,
    /// The socket's cookie (its key in `SOCK_STATS`), so the probes need no cookie helper
    /// call per event: written by the node with the mark, or by `tcp_probe` when observe-all
    /// mode creates the mark (0 until then).
    pub cookie: u64,
    /// 1: a socket of the node; 0: created by observe-all mode.
    pub owned: u32,
    pub _reserved: u32,
}
const _: () = assert!(core::mem::size_of::<SockTrack>() == 24);

impl SockTrack {
    /// The node's mark for one of its sockets, whose cookie is `cookie`.
    pub const fn owned(cookie: u64) -> Self {
        Self {
            refreshed_jiffies: 0,
            cookie,
            owned: 1,
            _reserved: 0,
        }
    }

    /// Whether the event at tick `now_jiffies` refreshes the snapshot: the first event of the
    /// socket, the first after a congestion-state change ([`SockTrack::refresh_next`]) or the
    /// first of a new kernel tick (≥ 1 ms: HZ ≤ 1000; 4 ms at this host's HZ = 250); if so it is
    /// recorded as the last refresh. The logic `tcp_probe` runs; host-tested.
    #[inline(always)]
    pub fn due(&mut self, now_jiffies: u64) -> bool {
        if now_jiffies == self.refreshed_jiffies {
            return false;
        }
        self.refreshed_jiffies = now_jiffies;
        true
    }

    /// The next event refreshes (a congestion-state change: its cwnd and ssthresh matter now).
    #[inline(always)]
    pub fn refresh_next(&mut self) {
        self.refreshed_jiffies = 0;
    }
}

/// Self-counters of the probes, per CPU (summed in userspace). Events of sockets the probes do
/// not track are not counted here: the kernel's `run_cnt` (bpf_stats) counts every run.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeCounters {
    /// `tcp_probe` events that refreshed a tracked socket's [`SockStats`] (see
    /// [`SockTrack::due`]). The other events of tracked sockets are not counted: the kernel's
    /// `run_cnt` (bpf_stats) counts every run.
    pub refreshes: u64,
    /// Map updates that failed (map full in observe-all mode).
    pub update_failed: u64,
    /// `tcp_retransmit_skb` events for tracked sockets.
    pub retransmit_events: u64,
    /// `tcp_cong_state_set` events for tracked sockets.
    pub cong_state_events: u64,
    /// `tcp_destroy_sock` events for tracked sockets (each emits a final record).
    pub destroy_events: u64,
    /// Final records dropped because the ring buffer was full.
    pub final_lost: u64,
    /// RTT samples not recorded (histogram map could not take a new algorithm).
    pub hist_lost: u64,
}
const _: () = assert!(core::mem::size_of::<ProbeCounters>() == 56);

impl ProbeCounters {
    /// Events that could not be recorded, of any kind.
    pub const fn lost(&self) -> u64 {
        self.update_failed + self.final_lost + self.hist_lost
    }
}

/// ELF section carrying an object's [`StructOpsDecl`].
pub const STRUCT_OPS_DECL_SECTION: &str = ".p2pcc.struct_ops";
/// ELF section prefix of struct_ops programs: `struct_ops/<member of the ops struct>`.
pub const STRUCT_OPS_PROG_PREFIX: &str = "struct_ops/";

/// `TCP_CONG_NON_RESTRICTED`: any network namespace may select the algorithm as its default.
/// Without it a namespace's `sysctl net.ipv4.tcp_congestion_control=<name>` fails with EPERM
/// (and, on 6.x kernels, each such attempt leaks the struct_ops map).
pub const TCP_CONG_NON_RESTRICTED: u32 = 0x1;

/// What a struct_ops object declares about the ops it implements: the kernel struct type, the
/// name to register under, and the ops' `flags`. The loader fills the struct's `name` and
/// `flags` members from it and each function-pointer member from the program in section
/// `struct_ops/<member>`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StructOpsDecl {
    /// NUL-padded kernel type name, e.g. `tcp_congestion_ops`.
    pub type_name: [u8; 32],
    /// NUL-padded name (`TCP_CA_NAME_MAX` = 16 including the NUL).
    pub name: [u8; 16],
    pub flags: u32,
    pub _reserved: u32,
}
const _: () = assert!(core::mem::size_of::<StructOpsDecl>() == 56);

impl StructOpsDecl {
    /// Builds a declaration at compile time; names that do not fit fail the build.
    pub const fn new(type_name: &str, name: &str, flags: u32) -> Self {
        Self {
            type_name: padded::<32>(type_name),
            name: padded::<16>(name),
            flags,
            _reserved: 0,
        }
    }
}

/// `s` as a NUL-padded array; panics (at compile time when const) if it does not fit.
pub const fn padded<const N: usize>(s: &str) -> [u8; N] {
    let bytes = s.as_bytes();
    assert!(bytes.len() < N, "name too long");
    let mut out = [0u8; N];
    let mut i = 0;
    while i < bytes.len() {
        out[i] = bytes[i];
        i += 1;
    }
    out
}

/// The string in a NUL-padded array.
pub fn unpadded(bytes: &[u8]) -> &str {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    core::str::from_utf8(&bytes[..end]).unwrap_or("")
}

pub mod bbr;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: each type is `#[repr(C)]`, `Copy`, made only of integers, and has no padding
    // (checked by the size asserts above), so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::SockStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SockTrack {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ProbeCounters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RttHist {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FinalRecord {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::bbr::BbrState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::bbr::BbrConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::resume::ResumeSlot {}
}

#[cfg(test)]
mod probe_tests {
    use super::*;

    #[test]
    fn log2_buckets() {
        assert_eq!(log2_u32(0), 0);
        assert_eq!(log2_u32(1), 0);
        assert_eq!(log2_u32(2), 1);
        assert_eq!(log2_u32(3), 1);
        assert_eq!(log2_u32(1023), 9);
        assert_eq!(log2_u32(1024), 10);
        assert_eq!(log2_u32(u32::MAX), 31);
        for v in 1..100_000u32 {
            assert_eq!(log2_u32(v), 31 - v.leading_zeros());
        }
        assert_eq!(rtt_bucket(u32::MAX), RTT_HIST_BUCKETS - 1);
    }

    #[test]
    fn refresh_once_per_tick_or_after_a_state_change() {
        let mut t = SockTrack::owned(7);
        assert!(t.due(5_000), "first event");
        assert!(!t.due(5_000));
        assert!(!t.due(5_000));
        assert!(t.due(5_001), "next tick");
        assert_eq!(t.refreshed_jiffies, 5_001);
        assert!(!t.due(5_001));
        t.refresh_next();
        assert!(t.due(5_001), "after a state change, same tick");
        assert!(!t.due(5_001));
        assert_eq!((t.owned, t.cookie), (1, 7));
    }

    #[test]
    fn ca_state_time_adds_up() {
        let mut s = SockStats::opened_at(1_000);
        assert!(s.change_ca_state(1, 3_000)); // open 2000
        assert!(s.change_ca_state(3, 4_000)); // disorder 1000
        assert!(s.change_ca_state(3, 4_500)); // same state: no transition
        assert!(s.change_ca_state(0, 10_000)); // recovery 6000
        assert!(!s.change_ca_state(9, 10_000));
        assert_eq!(s.ca_transitions, 3);
        assert_eq!(s.ca_state_entries, [1, 1, 0, 1, 0]);
        let at = s.ca_state_ns_at(11_000);
        assert_eq!(at, [3_000, 1_000, 0, 6_000, 0]);
        assert_eq!(at.iter().sum::<u64>(), 11_000 - 1_000);
    }
}
