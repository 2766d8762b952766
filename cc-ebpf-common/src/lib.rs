//! Types and constants shared by the p2p-cc eBPF programs (`cc-ebpf`) and the node that loads them.
//!
//! Everything crossing the kernel/user boundary is `#[repr(C)]`, `Copy`, free of `bool` and of
//! implicit padding, with a compile-time size check. With the `user` feature the types implement
//! `aya::Pod`; with `std` the crate also carries the host-side BTF reader ([`btf`]) and the kernel
//! layout generator ([`layout`]) that build scripts and the loader use.
#![no_std]

#[cfg(feature = "std")]
extern crate std;

#[cfg(feature = "std")]
pub mod btf;
#[cfg(feature = "std")]
pub mod layout;

/// Name of the LRU hash map holding the latest TCP state per socket, keyed by socket cookie.
pub const SOCK_STATS_MAP: &str = "SOCK_STATS";
/// Name of the single-entry array map holding probe configuration ([`ProbeConfig`]).
pub const PROBE_CONFIG_MAP: &str = "PROBE_CONFIG";
/// Name of the per-CPU array map of probe self-counters ([`ProbeCounters`]).
pub const PROBE_COUNTERS_MAP: &str = "PROBE_COUNTERS";

/// Sockets tracked at once. Sized for a node's connection limits (1024 inbound + 512 outbound,
/// see the node's connection management) with 4x headroom for the observe-every-socket mode,
/// where the LRU evicts the least recently updated socket (counted in `ProbeCounters`).
pub const SOCK_STATS_MAX_ENTRIES: u32 = 8192;

/// Latest TCP state of one socket, written by the `tcp_probe` program on every ACK that passes
/// the kernel's probe point. All values are copied from the socket as the kernel holds them.
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
    /// Probe events seen for this socket.
    pub events: u64,
}
const _: () = assert!(core::mem::size_of::<SockStats>() == 80);

/// Probe configuration, one entry at index 0 of [`PROBE_CONFIG_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeConfig {
    /// 0: only sockets the node registered in [`SOCK_STATS_MAP`] are updated (the default);
    /// 1: every TCP socket on the host gets an entry.
    pub observe_all: u32,
    pub _reserved: u32,
}
const _: () = assert!(core::mem::size_of::<ProbeConfig>() == 8);

/// Self-counters of the probes, per CPU (summed in userspace).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeCounters {
    /// `tcp_probe` events seen (all sockets).
    pub events: u64,
    /// Events for sockets the node does not track (skipped cheaply).
    pub skipped: u64,
    /// Map updates that failed (map full in observe-all mode).
    pub update_failed: u64,
}
const _: () = assert!(core::mem::size_of::<ProbeCounters>() == 24);

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
    unsafe impl aya::Pod for super::ProbeConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ProbeCounters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::bbr::BbrState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::bbr::BbrConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::bbr::WarmKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::bbr::WarmEntry {}
}
