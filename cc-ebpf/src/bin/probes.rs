//! TCP probes: per-socket TCP state for the node's telemetry.
//!
//! Four BTF tracepoints. Each first loads the socket's `sk_bpf_storage` pointer: a socket with
//! no socket storage at all (of any map: every socket of a host where nothing else uses socket
//! storage) is not tracked and exits there, after one field load and no helper call. Only a
//! socket that has some storage asks `SOCK_TRACK` (one `bpf_sk_storage_get` without create)
//! whether it is tracked. Tracked sockets are keyed by socket cookie (the value `SO_COOKIE`
//! returns) in `SOCK_STATS`; the cookie is kept in the socket's mark, so no event calls the
//! cookie helper:
//! - `tcp_probe` (every segment an established socket receives): on the first event of a new
//!   kernel tick (`jiffies64`, inlined by the verifier: ≥ 1 ms, 4 ms at HZ = 250), or the first
//!   after a congestion-state change, refreshes the socket's entry in `SOCK_STATS` and adds a
//!   smoothed-RTT sample to the per-algorithm log2 histogram `RTT_HIST`. Before the storage
//!   lookup, a socket with storage is asked whether the kernel already stamped it in this tick
//!   (`seen_this_tick`: `tcp_sock.rcv_tstamp`, `icsk_ack.lrcvtime`, read through the
//!   `bpf_rdonly_cast` kfunc, which costs no call): if so, an earlier event of this tick went on
//!   and refreshed, and this one ends there, after three loads and two compares. The events that
//!   go on and are not due (see `SockTrack::due`) cost the lookup, two loads and a compare;
//! - `tcp_retransmit_skb`: retransmitted segments and bytes (every event);
//! - `tcp_cong_state_set`: time in each congestion state and the transitions (as bcc's tcpcong),
//!   and the next `tcp_probe` event refreshes;
//! - `tcp_destroy_sock`: a last refresh and a final record to `FINAL_RECORDS`, then the entry
//!   is removed.
//!
//! And one iterator, `refresh_tcp` (`iter/tcp`), which the collector runs before each read of
//! the maps: it refreshes every tracked socket's entry from its `tcp_sock` (see its note).
//!
//! The node marks each of its own sockets in `SOCK_TRACK` (by fd) and inserts its `SOCK_STATS`
//! entry. `tcp_probe` comes in two forms and the loader attaches one: `tcp_probe` tracks the
//! node's sockets only; `tcp_probe_all` (observe-all mode) marks any other TCP socket itself.
//! The mode is fixed at load, so no event reads a configuration, and any mark with a cookie is
//! tracked. When the node drops a socket it leaves the entry for `tcp_destroy_sock` to finish
//! (so the final record has the last retransmits and state time) and removes it itself only if
//! no destroy came within a grace period: removal on either side is idempotent (deleting a
//! missing key is a no-op). The mark goes with the socket (the kernel frees socket storage).
//!
//! Between `tcp_probe`'s refreshes a socket's entry lags its latest segments by less than one
//! kernel tick. The collector's walk refreshes every tracked socket just before it reads the
//! maps, so a collection reads each socket as it was at the walk: an idle socket exactly, from
//! the first collection after its last segment; an active one may have moved on by the read.
//! Without the walk (its load failed) an idle socket keeps the lag until its next segment or
//! its destroy (which refreshes). The stamps are written after the tracepoint, by the kernel's own receive path, so that bound
//! has two narrow exceptions: a tick that turns between an event and its stamp (the next
//! events of the new tick are skipped unrefreshed: < 2 ticks then), and the tick a connection
//! is established in (the handshake stamps it; its first refresh is in the next tick). A
//! congestion-state change in a tick the socket was already seen in refreshes at the socket's
//! first event of a later tick, within the same bound. On a kernel without `bpf_rdonly_cast`
//! (Linux < 6.2) every event goes on to the lookup, as before the test.
//!
//! Fields are read with direct BTF-checked loads at the loader-patched offsets; the typed
//! `tcp_sock` cast and the two map lookups (`SOCK_STATS`, `RTT_HIST`) are on the refresh only.
//! Per-CPU counters count tracked sockets' refreshes and their other programs' events; every
//! run of every program is the kernel's `run_cnt` (bpf_stats).
#![no_std]
#![no_main]

use aya_ebpf::{
    btf_maps::SkStorage,
    helpers::{
        bpf_probe_read_kernel, bpf_probe_read_kernel_buf,
        generated::{
            bpf_get_socket_cookie, bpf_jiffies64, bpf_ktime_get_ns, bpf_sk_storage_get,
            bpf_skc_to_tcp_sock,
        },
    },
    macros::{btf_map, btf_tracepoint, map},
    maps::{LruHashMap, LruPerCpuHashMap, PerCpuArray, RingBuf},
    programs::BtfTracePointContext,
};
use cc_ebpf::kernel::*;
use cc_ebpf_common::{
    FINAL_RECORDS_BYTES, FinalRecord, ProbeCounters, RTT_HIST_MAX_ENTRIES, RttHist,
    SOCK_STATS_MAX_ENTRIES, SockStats, SockTrack, layout::TypeIndex, rtt_bucket,
};

cc_ebpf::license!();

/// Latest state per socket cookie. Bounded by `SOCK_STATS_MAX_ENTRIES` (see its sizing note).
#[map]
static SOCK_STATS: LruHashMap<u64, SockStats> =
    LruHashMap::with_max_entries(SOCK_STATS_MAX_ENTRIES, 0);

/// Smoothed-RTT histogram per congestion control, keyed by the address of its
/// `tcp_congestion_ops`. Bounded by `RTT_HIST_MAX_ENTRIES` (see its sizing note); per CPU so
/// the per-ACK increment needs no atomics.
#[map]
static RTT_HIST: LruPerCpuHashMap<u64, RttHist> =
    LruPerCpuHashMap::with_max_entries(RTT_HIST_MAX_ENTRIES, 0);

/// Final records of destroyed tracked sockets. `FINAL_RECORDS_BYTES` (see its sizing note).
#[map]
static FINAL_RECORDS: RingBuf = RingBuf::with_byte_size(FINAL_RECORDS_BYTES, 0);

/// The tracked sockets' marks. Socket storage lives and dies with its socket, so it is bounded
/// by the sockets that carry it (the node's, at most its connection limits; with
/// `tcp_probe_all` every TCP socket on the host): `max_entries` must be 0 for this map type. A BTF map
/// definition, because the kernel requires BTF for the key and value of socket storage.
#[btf_map]
static SOCK_TRACK: SkStorage<SockTrack> = SkStorage::new();

/// One entry per CPU: the probes' own counters.
#[map]
static PROBE_COUNTERS: PerCpuArray<ProbeCounters> = PerCpuArray::with_max_entries(1, 0);

unsafe extern "C" {
    /// kfunc (Linux >= 6.2): `obj` as a read-only, untrusted pointer to the vmlinux struct whose
    /// BTF id is `btf_id` (a constant), through which loads are fault-safe; the verifier
    /// replaces the call with a register move. The loader links the call by name
    /// (`p2p_node::ebpf::kfunc`); on a kernel without the kfunc the call becomes `r0 = 0`, which
    /// the caller checks.
    fn bpf_rdonly_cast(obj: *const core::ffi::c_void, btf_id: u32) -> *mut core::ffi::c_void;
}

/// Whether the kernel already processed a segment of this socket in the current tick: it
/// stamps `tcp_sock.rcv_tstamp` with the tick (`tcp_jiffies32`) in `tcp_ack` (every accepted
/// ACK) and `icsk_ack.lrcvtime` in `tcp_event_data_recv` (every data segment), both after this
/// tracepoint. Then an earlier event of this tick went past this test and (on a tracked socket)
/// refreshed its entry. False on a kernel without `bpf_rdonly_cast` (every event goes on).
#[inline(always)]
fn seen_this_tick(sk: Sk) -> bool {
    // SAFETY: the kfunc only retypes `sk` (a socket the kernel passed; `tcp_probe` fires for TCP
    // sockets only), read-only and fault-safe.
    let tp = unsafe { bpf_rdonly_cast(sk.cast_const(), type_id(TypeIndex::TCP_SOCK)) };
    if tp.is_null() {
        return false;
    }
    // The low 32 bits, as the kernel stores them. SAFETY: no-arg helper, inlined to one load.
    let now = unsafe { bpf_jiffies64() } as u32;
    // SAFETY: `tp` is typed `struct tcp_sock` (untrusted: loads through it are fault-safe);
    // both fields are u32 members of it.
    unsafe {
        let tp = KernelPtr::new(tp);
        tp.u32(TCP_SOCK__RCV_TSTAMP) == now
            || tp.u32(INET_CONNECTION_SOCK__ICSK_ACK_LRCVTIME) == now
    }
}

/// `BPF_NOEXIST`: create the entry only if absent.
const BPF_NOEXIST: u64 = 1;
/// `BPF_SK_STORAGE_GET_F_CREATE`.
const SK_STORAGE_CREATE: u64 = 1;

type Sk = *mut core::ffi::c_void;

/// The socket's mark, created (zeroed: not owned) when `create` is set; null when absent.
#[inline(always)]
fn track(sk: Sk, create: bool) -> *mut SockTrack {
    let flags = if create { SK_STORAGE_CREATE } else { 0 };
    // SAFETY: the map is a socket-storage map of SockTrack values; `sk` is a BTF-typed socket
    // (the helper returns null for anything but a full socket).
    unsafe {
        bpf_sk_storage_get(
            core::ptr::from_ref(&SOCK_TRACK).cast_mut().cast(),
            sk.cast(),
            core::ptr::null_mut(),
            flags,
        )
    }
    .cast()
}

/// Whether the socket has any socket storage (of any map): one load of `sk->sk_bpf_storage`,
/// no helper call. Without storage a socket carries no mark.
#[inline(always)]
fn has_storage(sk: Sk) -> bool {
    // SAFETY: `sk` is the tracepoint's BTF-typed `struct sock *`; `sk_bpf_storage` is a pointer
    // member of it, only compared with null here (never dereferenced).
    unsafe { KernelPtr::new(sk).u64(SOCK__SK_BPF_STORAGE) != 0 }
}

/// The mark and cookie of a tracked socket (the node's own, or any marked one when
/// `tcp_probe_all` is attached), or `None` for every other socket.
#[inline(always)]
fn tracked(sk: Sk) -> Option<(*mut SockTrack, u64)> {
    if !has_storage(sk) {
        return None;
    }
    let t = track(sk, false);
    if t.is_null() {
        return None;
    }
    // SAFETY: a non-null result points to this socket's storage value.
    let cookie = unsafe { (*t).cookie };
    (cookie != 0).then_some((t, cookie))
}

#[inline(always)]
fn count(f: impl FnOnce(&mut ProbeCounters)) {
    if let Some(c) = PROBE_COUNTERS.get_ptr_mut(0) {
        // SAFETY: per-CPU value, only this CPU writes it while the program runs.
        f(unsafe { &mut *c });
    }
}

/// The node's sockets only (the default).
#[btf_tracepoint(function = "tcp_probe")]
pub fn tcp_probe(ctx: BtfTracePointContext) -> i32 {
    // Argument 0 of tcp_probe is `struct sock *sk`.
    let sk: Sk = ctx.arg(0);
    on_tcp_probe(sk, false);
    0
}

/// Observe-all mode: every TCP socket of the host is tracked.
#[btf_tracepoint(function = "tcp_probe")]
pub fn tcp_probe_all(ctx: BtfTracePointContext) -> i32 {
    let sk: Sk = ctx.arg(0);
    on_tcp_probe(sk, true);
    0
}

/// `tcp_retransmit_skb(const struct sock *sk, const struct sk_buff *skb, int err)` (Linux ≥
/// 6.10, which fires it for failed attempts too).
#[btf_tracepoint(function = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb(ctx: BtfTracePointContext) -> i32 {
    // The tracepoint's arguments, as its BTF prototype declares them.
    let (sk, skb, err): (Sk, *mut u8, u64) = (ctx.arg(0), ctx.arg(1), ctx.arg(2));
    // A failed attempt (err != 0, e.g. -EBUSY when the qdisc is full) retransmitted nothing;
    // the kernel counts only successes in tcpi_total_retrans / tcpi_bytes_retrans.
    on_retransmit(sk, skb, err as u32 == 0);
    0
}

/// `tcp_retransmit_skb(const struct sock *sk, const struct sk_buff *skb)`: the two-argument
/// form of kernels before 6.10, where the tracepoint fires only for a retransmission that was
/// sent. A program may not read an argument its BTF prototype lacks ("invalid bpf_context
/// access"), so this form is a program of its own; the loader picks one by the prototype.
#[btf_tracepoint(function = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb_2args(ctx: BtfTracePointContext) -> i32 {
    let (sk, skb): (Sk, *mut u8) = (ctx.arg(0), ctx.arg(1));
    on_retransmit(sk, skb, true);
    0
}

#[inline(always)]
fn on_retransmit(sk: Sk, skb: *mut u8, sent: bool) {
    let Some((_, cookie)) = tracked(sk) else {
        return;
    };
    let Some(entry) = SOCK_STATS.get_ptr_mut(cookie) else {
        return;
    };
    count(|c| c.retransmit_events += 1);
    if !sent {
        return;
    }
    // SAFETY: `skb` is the tracepoint's BTF-typed `struct sk_buff *`; `len` is a u32 member and
    // `tcp_gso_segs` a u16 inside the TCP control block `cb` (a char array member).
    let (len, segs) = unsafe {
        let skb = KernelPtr::new(skb);
        (
            skb.u32(SK_BUFF__LEN),
            skb.u16(SK_BUFF__CB + TCP_SKB_CB__TCP_GSO_SEGS),
        )
    };
    // SAFETY: map value; the socket lock serialises this socket's events.
    unsafe {
        let s = &mut *entry;
        s.retrans_bytes += u64::from(len);
        s.retrans_segments += u32::from(segs).max(1);
    }
}

/// `tcp_cong_state_set(struct sock *sk, const u8 ca_state)`: runs before the kernel stores the
/// new state, so the entry's `ca_state` is the one being left; the socket's next `tcp_probe`
/// event refreshes its entry.
#[btf_tracepoint(function = "tcp_cong_state_set")]
pub fn tcp_cong_state_set(ctx: BtfTracePointContext) -> i32 {
    // The tracepoint's arguments, as its BTF prototype declares them.
    let (sk, state): (Sk, u64) = (ctx.arg(0), ctx.arg(1));
    let Some((mark, cookie)) = tracked(sk) else {
        return 0;
    };
    // SAFETY: this socket's storage value, serialised by the socket lock.
    unsafe { (*mark).refresh_next() };
    let Some(entry) = SOCK_STATS.get_ptr_mut(cookie) else {
        return 0;
    };
    count(|c| c.cong_state_events += 1);
    // SAFETY: map value, serialised by the socket lock; no-arg helper.
    unsafe { (*entry).change_ca_state(state as u32 & 0xff, bpf_ktime_get_ns()) };
    0
}

/// `tcp_destroy_sock(struct sock *sk)`: final record, then the entry goes.
#[btf_tracepoint(function = "tcp_destroy_sock")]
pub fn tcp_destroy_sock(ctx: BtfTracePointContext) -> i32 {
    // Argument 0 is `struct sock *sk`.
    let sk: Sk = ctx.arg(0);
    let Some((_, cookie)) = tracked(sk) else {
        return 0;
    };
    let Some(entry) = SOCK_STATS.get_ptr_mut(cookie) else {
        return 0;
    };
    count(|c| c.destroy_events += 1);
    // SAFETY: map value, serialised by the socket lock.
    let s = unsafe { &mut *entry };
    // SAFETY: no-arg helper.
    s.account_ca_state(unsafe { bpf_ktime_get_ns() });
    // SAFETY: the helper returns a typed `tcp_sock *` or null.
    let tp = unsafe { KernelPtr::new(bpf_skc_to_tcp_sock(sk)) };
    if !tp.is_null() {
        // The last segments since the latest refresh: the final record is exact.
        s.events += 1;
        // SAFETY: `tp` is a verified tcp_sock.
        unsafe { refresh(s, tp) };
    }
    match FINAL_RECORDS.reserve::<FinalRecord>(0) {
        Some(mut slot) => {
            let mut algorithm = [0u8; 16];
            // SAFETY: the ops pointer is a member of the verified `tcp_sock` and `name` a
            // 16-byte member of the ops (read with the fault-safe helper).
            unsafe {
                if !tp.is_null() {
                    let ops = tp.u64(INET_CONNECTION_SOCK__ICSK_CA_OPS);
                    if ops != 0 {
                        algorithm = bpf_probe_read_kernel(
                            (ops as usize + TCP_CONGESTION_OPS__NAME) as *const [u8; 16],
                        )
                        .unwrap_or([0; 16]);
                    }
                }
            }
            slot.write(FinalRecord {
                cookie,
                algorithm,
                stats: *s,
            });
            slot.submit(0);
        }
        None => count(|c| c.final_lost += 1),
    }
    let _ = SOCK_STATS.remove(cookie);
    0
}

#[inline(always)]
fn on_tcp_probe(sk: Sk, observe_all: bool) {
    // A socket without any socket storage is not the node's: the common case on a busy host
    // ends here, after one field load.
    let mark = if has_storage(sk) {
        // A socket with storage (the node's, or one with another map's): most events of a
        // busy socket end here, before the storage lookup.
        if seen_this_tick(sk) {
            return;
        }
        track(sk, false)
    } else {
        core::ptr::null_mut()
    };
    let mark = match (mark.is_null(), observe_all) {
        (false, _) => mark,
        // No mark (no storage, or storage of another map only): not the node's socket.
        (true, false) => return,
        (true, true) => {
            let mark = track(sk, true);
            if mark.is_null() {
                return;
            }
            // A mark just created: its cookie, once per socket.
            // SAFETY: `sk` is the tracepoint's BTF-typed socket; `mark` points to its storage
            // value, serialised by the socket lock.
            unsafe { (*mark).cookie = bpf_get_socket_cookie(sk) };
            mark
        }
    };
    // SAFETY: `mark` points to this socket's storage value; the socket lock serialises this
    // socket's events. jiffies64 is a no-arg helper the verifier turns into one load.
    let due = unsafe { (*mark).cookie != 0 && (*mark).due(bpf_jiffies64()) };
    if !due {
        return;
    }
    count(|c| c.refreshes += 1);
    // SAFETY: the helper returns a BTF-typed `struct tcp_sock *` or null (not a TCP socket).
    let tp = unsafe { KernelPtr::new(bpf_skc_to_tcp_sock(sk)) };
    if tp.is_null() {
        return;
    }
    // SAFETY: as above.
    let cookie = unsafe { (*mark).cookie };
    let entry = match SOCK_STATS.get_ptr_mut(cookie) {
        Some(entry) => entry,
        None => {
            // Observe-all mode's first refresh (or an entry the LRU evicted).
            // SAFETY: no-arg helper.
            let mut fresh = SockStats::opened_at(unsafe { bpf_ktime_get_ns() });
            // SAFETY: `tp` is a verified tcp_sock; `icsk_ca_state` is a bitfield of
            // inet_connection_sock, the head of tcp_sock.
            fresh.ca_state = u32::from(unsafe {
                tp.bits8(
                    INET_CONNECTION_SOCK__ICSK_CA_STATE,
                    INET_CONNECTION_SOCK__ICSK_CA_STATE_SHIFT,
                    INET_CONNECTION_SOCK__ICSK_CA_STATE_BITS,
                )
            });
            let inserted = SOCK_STATS.insert(cookie, fresh, BPF_NOEXIST);
            match (inserted, SOCK_STATS.get_ptr_mut(cookie)) {
                (_, Some(entry)) => entry,
                _ => {
                    count(|c| c.update_failed += 1);
                    return;
                }
            }
        }
    };
    // SAFETY: `entry` points into the map value; `tp` is a verified tcp_sock.
    let (srtt_us, ops) = unsafe {
        let s = &mut *entry;
        s.events += 1;
        refresh(s, tp)
    };
    // Only sockets with an RTT sample count (srtt is 0 before the first one). One sample per
    // refresh: the histogram is weighted by time (≤ one sample per tick of a socket's activity).
    if srtt_us != 0 {
        record_rtt(ops, srtt_us);
    }
}

/// `struct bpf_iter__tcp`, the context of an `iter/tcp` program (`DEFINE_BPF_ITER_FUNC(tcp,
/// ...)` in net/ipv4/tcp_ipv4.c): each member is one 8-byte context slot.
#[repr(C)]
pub struct IterTcp {
    meta: *mut core::ffi::c_void,
    /// Null at the end of the walk; otherwise a listening, established, time-wait or
    /// request socket.
    sk_common: *mut core::ffi::c_void,
    uid: u32,
}

/// The collector's refresh (`iter/tcp`): before each read of the maps it walks every TCP socket
/// of the node's network namespace and copies each tracked socket's state into its entry with
/// the same [`refresh`] `tcp_probe` uses. So an idle socket's entry is exact at the next
/// collection, where `tcp_probe` alone leaves it lagging until its next segment (its refresh
/// is at most one per tick and reads the state before the segment it fires for). It prints
/// nothing: the collector's read returns 0 once the walk is done.
///
/// Why `iter/tcp`, which visits every TCP socket of the namespace, and not
/// `iter/bpf_sk_storage_map` over `SOCK_TRACK`, which visits only the tracked ones: the kernel
/// calls an `iter/tcp` program with the socket locked (`bpf_iter_tcp_seq_show`: `lock_sock`
/// for a full socket, in Linux 6.1 as in 6.18), so the refresh is serialised with the
/// socket's softirq receive path (segments arriving meanwhile wait in its backlog) and with
/// `tcp_probe`'s own refresh of the same entry: the fields are copied from one consistent
/// state, and `SOCK_STATS` keeps one writer per socket at a time, as the probes' other
/// programs assume. The socket-storage iterator runs under RCU only, so its copy could mix
/// fields from before and after an ACK (bytes acked without the packets it took out of
/// flight) and race `tcp_probe`'s write of the entry. What `iter/tcp` costs instead (measured,
/// docs/bench.md session 15): it scans every bucket of the namespace's established-socket hash
/// table, which a namespace shares with the host unless created with
/// `net.ipv4.tcp_child_ehash_entries` (~2 ms per walk for this host's 262,144 buckets; 0.08 ms
/// with 1,024 of its own), and visits, locking each briefly as `ss -ti` does, every TCP socket
/// of the namespace, the node's or not (~0.9 µs each: 4.0 ms a walk at 1,000 peers with both
/// ends in the namespace). The storage-map iterator would skip both; at ≤ 0.4 % of one core
/// per second, exactness decided.
///
/// No RTT histogram sample: `RTT_HIST` is weighted by time of activity (one sample per tick a
/// socket receives segments in); a sample per collection of an idle socket would weight idle
/// time. `events` counts `tcp_probe`'s refreshes only; this one counts in `walk_refreshes`.
/// An entry the node has not inserted (or that a destroy removed) is left alone: the walk
/// never creates entries.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/tcp")]
pub extern "C" fn refresh_tcp(ctx: *mut IterTcp) -> i32 {
    // SAFETY: the kernel passes its `bpf_iter__tcp`; `sk_common` is a context load the
    // verifier types as a socket or null.
    let sk = unsafe { (*ctx).sk_common };
    if sk.is_null() {
        return 0;
    }
    // SAFETY: the helper returns a BTF-typed `struct tcp_sock *`, or null for a time-wait or
    // request socket.
    let tp = unsafe { bpf_skc_to_tcp_sock(sk.cast()) };
    if tp.is_null() {
        return 0;
    }
    // `tp` as the socket: `tcp_sock` starts with `sock`, which `tracked` reads and the storage
    // helper takes (a `sock_common` pointer would be out of bounds for `sk_bpf_storage`).
    let Some((_, cookie)) = tracked(tp.cast()) else {
        return 0;
    };
    let Some(entry) = SOCK_STATS.get_ptr_mut(cookie) else {
        return 0;
    };
    // SAFETY: map value, serialised with the socket's other programs by the socket lock (see
    // above); `tp` is a verified tcp_sock.
    unsafe {
        let s = &mut *entry;
        s.walk_refreshes = s.walk_refreshes.wrapping_add(1);
        refresh(s, KernelPtr::new(tp.cast::<u8>()));
    }
    0
}

/// Copies the socket's state into its entry; returns the smoothed RTT (µs) and the address of
/// its congestion control's ops.
///
/// # Safety
/// `tp` is a verified, non-null `tcp_sock`; every offset is a field of it (tcp_sock starts
/// with inet_connection_sock, which starts with sock).
#[inline(always)]
unsafe fn refresh(s: &mut SockStats, tp: KernelPtr) -> (u32, u64) {
    // SAFETY: as the caller promises.
    unsafe {
        let srtt_us = tp.u32(TCP_SOCK__SRTT_US) >> 3;
        s.cwnd_segments = tp.u32(TCP_SOCK__SND_CWND);
        s.ssthresh_segments = tp.u32(TCP_SOCK__SND_SSTHRESH);
        s.srtt_us = srtt_us;
        s.min_rtt_us = tp.u32(TCP_SOCK__RTT_MIN + MINMAX_S0_V);
        s.mss_bytes = tp.u32(TCP_SOCK__MSS_CACHE);
        s.rate_delivered_segments = tp.u32(TCP_SOCK__RATE_DELIVERED);
        s.rate_interval_us = tp.u32(TCP_SOCK__RATE_INTERVAL_US);
        s.snd_wnd_bytes = tp.u32(TCP_SOCK__SND_WND);
        s.rcv_wnd_bytes = tp.u32(TCP_SOCK__RCV_WND);
        s.total_retrans_segments = tp.u32(TCP_SOCK__TOTAL_RETRANS);
        s.packets_out_segments = tp.u32(TCP_SOCK__PACKETS_OUT);
        s.pacing_rate_bytes_per_sec = tp.u64(SOCK__SK_PACING_RATE);
        s.bytes_acked = tp.u64(TCP_SOCK__BYTES_ACKED);
        s.bytes_received = tp.u64(TCP_SOCK__BYTES_RECEIVED);
        // The TCP clock (`tcp_clock_ns()`, the same monotonic clock as bpf_ktime_get_ns) as of
        // the socket's previous segment: a field load instead of a helper call.
        s.updated_ns = tp.u64(TCP_SOCK__TCP_MSTAMP) * 1000;
        (srtt_us, tp.u64(INET_CONNECTION_SOCK__ICSK_CA_OPS))
    }
}

#[inline(always)]
fn record_rtt(ops: u64, srtt_us: u32) {
    let hist = match RTT_HIST.get_ptr_mut(ops) {
        Some(h) => h,
        None => match new_hist(ops) {
            Some(h) => h,
            None => {
                count(|c| c.hist_lost += 1);
                return;
            }
        },
    };
    // SAFETY: this CPU's copy of the map value.
    unsafe {
        let h = &mut *hist;
        h.count += 1;
        h.sum_us += u64::from(srtt_us);
        if let Some(b) = h.buckets.get_mut(rtt_bucket(srtt_us)) {
            *b += 1;
        }
    }
}

/// First sample of an algorithm: creates its histogram with the algorithm's name (slow path,
/// once per algorithm and CPU at most).
///
/// The new entry is copied from [`EMPTY_HIST`] and named in place: a 256-byte histogram built
/// on the stack put tcp_probe over Linux 6.1's 512-byte combined stack limit (verifier budget).
#[inline(always)]
fn new_hist(ops: u64) -> Option<*mut RttHist> {
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "by value, the static would be copied onto the BPF stack first"
    )]
    let _ = RTT_HIST.insert(ops, &EMPTY_HIST, BPF_NOEXIST);
    let hist = RTT_HIST.get_ptr_mut(ops)?;
    // SAFETY: this CPU's copy of the map value; `ops` is a `tcp_congestion_ops *` loaded from
    // the socket and the fault-safe helper reads its 16-byte `name` (zeros if it faults).
    unsafe {
        let name = &mut (*hist).name;
        if bpf_probe_read_kernel_buf((ops as usize + TCP_CONGESTION_OPS__NAME) as *const u8, name)
            .is_err()
        {
            *name = [0; 16];
        }
    }
    Some(hist)
}

/// The value a new [`RTT_HIST`] entry starts from (global data, not stack).
static EMPTY_HIST: RttHist = RttHist {
    name: [0; 16],
    count: 0,
    sum_us: 0,
    buckets: [0; cc_ebpf_common::RTT_HIST_BUCKETS],
};
