//! TCP probes: per-socket TCP state for the node's telemetry.
//!
//! `tp_btf/tcp_probe` runs on every segment an established socket receives. It keeps the latest
//! state of each tracked socket in `SOCK_STATS` (keyed by socket cookie, the value `SO_COOKIE`
//! returns). The node inserts an entry for each of its own sockets; other sockets are skipped
//! after one map lookup, unless `PROBE_CONFIG.observe_all` is set.
#![no_std]
#![no_main]

use aya_ebpf::{
    helpers::generated::{bpf_get_socket_cookie, bpf_ktime_get_ns, bpf_skc_to_tcp_sock},
    macros::{btf_tracepoint, map},
    maps::{Array, LruHashMap, PerCpuArray},
    programs::BtfTracePointContext,
};
use cc_ebpf::kernel::*;
use cc_ebpf_common::{ProbeConfig, ProbeCounters, SOCK_STATS_MAX_ENTRIES, SockStats};

cc_ebpf::license!();

/// Latest state per socket cookie. Bounded by `SOCK_STATS_MAX_ENTRIES` (see its sizing note).
#[map]
static SOCK_STATS: LruHashMap<u64, SockStats> =
    LruHashMap::with_max_entries(SOCK_STATS_MAX_ENTRIES, 0);

/// One entry: the probe configuration written by the node.
#[map]
static PROBE_CONFIG: Array<ProbeConfig> = Array::with_max_entries(1, 0);

/// One entry per CPU: the probes' own counters.
#[map]
static PROBE_COUNTERS: PerCpuArray<ProbeCounters> = PerCpuArray::with_max_entries(1, 0);

/// `BPF_NOEXIST`: create the entry only if absent.
const BPF_NOEXIST: u64 = 1;

#[btf_tracepoint(function = "tcp_probe")]
pub fn tcp_probe(ctx: BtfTracePointContext) -> i32 {
    // SAFETY: argument 0 of the tcp_probe tracepoint is `struct sock *sk`.
    let sk: *mut core::ffi::c_void = ctx.arg(0);
    on_tcp_probe(sk);
    0
}

#[inline(always)]
fn on_tcp_probe(sk: *mut core::ffi::c_void) {
    let counters = PROBE_COUNTERS.get_ptr_mut(0);
    if let Some(c) = counters {
        // SAFETY: per-CPU value, only this CPU writes it while the program runs.
        unsafe { (*c).events += 1 };
    }
    // SAFETY: `sk` is the tracepoint's socket argument, a BTF-typed `struct sock *`.
    let cookie = unsafe { bpf_get_socket_cookie(sk) };
    let entry = match SOCK_STATS.get_ptr_mut(cookie) {
        Some(entry) => entry,
        None => {
            let observe_all = PROBE_CONFIG.get(0).is_some_and(|c| c.observe_all != 0);
            if !observe_all {
                if let Some(c) = counters {
                    // SAFETY: as above.
                    unsafe { (*c).skipped += 1 };
                }
                return;
            }
            let inserted = SOCK_STATS.insert(cookie, SockStats::default(), BPF_NOEXIST);
            match (inserted, SOCK_STATS.get_ptr_mut(cookie)) {
                (_, Some(entry)) => entry,
                _ => {
                    if let Some(c) = counters {
                        // SAFETY: as above.
                        unsafe { (*c).update_failed += 1 };
                    }
                    return;
                }
            }
        }
    };
    // SAFETY: the helper returns a BTF-typed `struct tcp_sock *` or null (not a TCP socket).
    let tp = unsafe { KernelPtr::new(bpf_skc_to_tcp_sock(sk)) };
    if tp.is_null() {
        return;
    }
    // SAFETY: `entry` points into the map value; `tp` is a verified tcp_sock and every offset
    // is a field of it (tcp_sock starts with inet_connection_sock, which starts with sock).
    unsafe {
        let s = &mut *entry;
        s.cwnd_segments = tp.u32(TCP_SOCK__SND_CWND);
        s.ssthresh_segments = tp.u32(TCP_SOCK__SND_SSTHRESH);
        s.srtt_us = tp.u32(TCP_SOCK__SRTT_US) >> 3;
        s.min_rtt_us = tp.u32(TCP_SOCK__RTT_MIN + MINMAX_S0_V);
        s.mss_bytes = tp.u32(TCP_SOCK__MSS_CACHE);
        s.rate_delivered_segments = tp.u32(TCP_SOCK__RATE_DELIVERED);
        s.rate_interval_us = tp.u32(TCP_SOCK__RATE_INTERVAL_US);
        s.snd_wnd_bytes = tp.u32(TCP_SOCK__SND_WND);
        s.total_retrans_segments = tp.u32(TCP_SOCK__TOTAL_RETRANS);
        s.packets_out_segments = tp.u32(TCP_SOCK__PACKETS_OUT);
        s.pacing_rate_bytes_per_sec = tp.u64(SOCK__SK_PACING_RATE);
        s.bytes_acked = tp.u64(TCP_SOCK__BYTES_ACKED);
        s.bytes_received = tp.u64(TCP_SOCK__BYTES_RECEIVED);
        s.updated_ns = bpf_ktime_get_ns();
        s.events += 1;
    }
}
