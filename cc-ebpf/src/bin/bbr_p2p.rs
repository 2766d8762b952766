//! `bbr-p2p` as a struct_ops `tcp_congestion_ops`: the kernel glue around the algorithm in
//! `cc_ebpf::bbr` (model, state machine, variant features — read that file first).
//!
//! Each op reads the socket fields the algorithm needs into a [`Conn`], runs the algorithm on
//! the socket's [`BbrState`] (socket storage, also read by the node with the socket as key),
//! and writes back only what a congestion control may change: `snd_cwnd`, `snd_ssthresh`,
//! `app_limited` and `sk_pacing_rate`.
#![no_std]
#![no_main]

use aya_ebpf::{
    helpers::generated::{bpf_get_prandom_u32, bpf_sk_storage_get},
    macros::map,
    maps::{Array, LruHashMap},
};
use cc_ebpf::{
    OpsArgs,
    bbr::{Bbr, Conn, RateSample},
    kernel::*,
};
use cc_ebpf_common::{
    TCP_CONG_NON_RESTRICTED,
    bbr::{BBR_WARM_MAX_ENTRIES, BbrConfig, BbrState, WarmEntry, WarmKey},
};

cc_ebpf::license!();
// The kernel allows only [A-Za-z0-9_.] in names: users say `bbr-p2p`, the kernel `bbr_p2p`.
cc_ebpf::struct_ops!("tcp_congestion_ops", "bbr_p2p", TCP_CONG_NON_RESTRICTED);

/// aya-ebpf's map definition layout (`bpf_map_def`), for the map type it has no wrapper for.
#[repr(C)]
pub struct MapDef {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    id: u32,
    pinning: u32,
}

/// `BPF_MAP_TYPE_SK_STORAGE`.
const MAP_TYPE_SK_STORAGE: u32 = 24;
/// `BPF_F_NO_PREALLOC`, required for socket storage.
const F_NO_PREALLOC: u32 = 1;
/// `BPF_SK_STORAGE_GET_F_CREATE`.
const SK_STORAGE_CREATE: u64 = 1;
/// `SK_PACING_NONE` / `SK_PACING_NEEDED`: ask TCP to pace internally (no fq qdisc here).
const SK_PACING_NONE: u32 = 0;
const SK_PACING_NEEDED: u32 = 1;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// Per-socket state. Socket storage is sized by the sockets that use it (max_entries must be 0).
#[unsafe(no_mangle)]
#[unsafe(link_section = "maps")]
pub static BBR_STATE: MapDef = MapDef {
    map_type: MAP_TYPE_SK_STORAGE,
    key_size: 4,
    value_size: core::mem::size_of::<BbrState>() as u32,
    max_entries: 0,
    map_flags: F_NO_PREALLOC,
    id: 0,
    pinning: 0,
};

/// One entry: the tunables. The node writes the defaults before registering.
#[map]
static BBR_CONFIG: Array<BbrConfig> = Array::with_max_entries(1, 0);

/// Warm-start records per remote address (bounded, least recently used forgotten first).
#[map]
static BBR_WARM: LruHashMap<WarmKey, WarmEntry> =
    LruHashMap::with_max_entries(BBR_WARM_MAX_ENTRIES, 0);

/// The socket's state, created on first use.
#[inline(always)]
fn state(sk: KernelPtr, create: bool) -> Option<&'static mut Bbr> {
    let flags = if create { SK_STORAGE_CREATE } else { 0 };
    // SAFETY: the map is a socket-storage map of BbrState values; `sk` is the op's socket.
    let ptr = unsafe {
        bpf_sk_storage_get(
            (&raw const BBR_STATE).cast_mut().cast(),
            sk.as_ptr().cast(),
            core::ptr::null_mut(),
            flags,
        )
    };
    // SAFETY: a non-null result points to this socket's value, which the kernel keeps alive
    // for the program's run; Bbr is a transparent wrapper of BbrState.
    (!ptr.is_null()).then(|| unsafe { &mut *ptr.cast::<Bbr>() })
}

#[inline(always)]
fn config() -> Option<&'static BbrConfig> {
    // Defaults are written by the node before registration; an all-zero entry means it was not.
    BBR_CONFIG.get(0).filter(|c| c.high_gain != 0)
}

#[inline(always)]
fn random() -> u32 {
    // SAFETY: helper without arguments.
    unsafe { bpf_get_prandom_u32() }
}

/// Reads the socket into a [`Conn`].
///
/// # Safety
/// `tp` must be the op's socket (a `tcp_sock`).
#[inline(always)]
unsafe fn read_conn(tp: KernelPtr) -> Conn {
    // SAFETY: generated offsets of fields of tcp_sock (which begins with sock).
    unsafe {
        let packets_out = tp.u32(TCP_SOCK__PACKETS_OUT);
        let left_out = tp
            .u32(TCP_SOCK__SACKED_OUT)
            .wrapping_add(tp.u32(TCP_SOCK__LOST_OUT));
        Conn {
            now_us: tp.u64(TCP_SOCK__TCP_MSTAMP),
            delivered: tp.u32(TCP_SOCK__DELIVERED),
            delivered_mstamp_us: tp.u64(TCP_SOCK__DELIVERED_MSTAMP),
            lost: tp.u32(TCP_SOCK__LOST),
            // tcp_packets_in_flight()
            packets_in_flight: packets_out
                .wrapping_sub(left_out)
                .wrapping_add(tp.u32(TCP_SOCK__RETRANS_OUT)),
            ca_state: tp.bits8(
                INET_CONNECTION_SOCK__ICSK_CA_STATE,
                INET_CONNECTION_SOCK__ICSK_CA_STATE_SHIFT,
                INET_CONNECTION_SOCK__ICSK_CA_STATE_BITS,
            ),
            srtt_us_x8: tp.u32(TCP_SOCK__SRTT_US),
            kernel_min_rtt_us: tp.u32(TCP_SOCK__RTT_MIN + MINMAX_S0_V),
            mss: tp.u32(TCP_SOCK__MSS_CACHE),
            cwnd_clamp: tp.u32(TCP_SOCK__SND_CWND_CLAMP),
            max_pacing_rate: tp.u64(SOCK__SK_MAX_PACING_RATE),
            pacing_shift: tp.u8(SOCK__SK_PACING_SHIFT),
            wstamp_ns: tp.u64(TCP_SOCK__TCP_WSTAMP_NS),
            clock_ns: tp.u64(TCP_SOCK__TCP_CLOCK_CACHE),
            cwnd: tp.u32(TCP_SOCK__SND_CWND),
            pacing_rate: tp.u64(SOCK__SK_PACING_RATE),
            ssthresh: tp.u32(TCP_SOCK__SND_SSTHRESH),
            app_limited: tp.u32(TCP_SOCK__APP_LIMITED),
        }
    }
}

/// Writes back what the algorithm may have changed; untouched fields are not stored.
///
/// # Safety
/// As [`read_conn`]; every field written is one a congestion control may write.
#[inline(always)]
unsafe fn write_conn(tp: KernelPtr, before: &Conn, after: &Conn) {
    // SAFETY: per the contract (writable: snd_cwnd, snd_ssthresh, app_limited, sk_pacing_rate).
    unsafe {
        if after.cwnd != before.cwnd {
            tp.set_u32(TCP_SOCK__SND_CWND, after.cwnd);
        }
        if after.ssthresh != before.ssthresh {
            tp.set_u32(TCP_SOCK__SND_SSTHRESH, after.ssthresh);
        }
        if after.app_limited != before.app_limited {
            tp.set_u32(TCP_SOCK__APP_LIMITED, after.app_limited);
        }
        if after.pacing_rate != before.pacing_rate {
            tp.set_u64(SOCK__SK_PACING_RATE, after.pacing_rate);
        }
    }
}

/// The remote address of the socket, the warm-start key (`family` 0: neither IPv4 nor IPv6).
///
/// Always a fully initialised value: returning an `Option` here let LLVM store the key's
/// uninitialised registers on the `None` path, which the verifier rejects (`!read_ok`).
///
/// # Safety
/// `sk` must be the op's socket.
#[inline(always)]
unsafe fn warm_key(sk: KernelPtr) -> WarmKey {
    let mut key = WarmKey {
        family: 0,
        addr: [0; 16],
    };
    // SAFETY: generated offsets of sock_common fields.
    unsafe {
        let family = sk.u16(SOCK__SKC_FAMILY);
        if family == AF_INET {
            key.family = u32::from(family);
            key.addr[..4].copy_from_slice(&sk.u32(SOCK__SKC_DADDR).to_ne_bytes());
        } else if family == AF_INET6 {
            key.family = u32::from(family);
            key.addr[..8].copy_from_slice(&sk.u64(SOCK__SKC_V6_DADDR).to_ne_bytes());
            key.addr[8..].copy_from_slice(&sk.u64(SOCK__SKC_V6_DADDR + 8).to_ne_bytes());
        }
    }
    key
}

/// `init(sk)`: a connection starts on (or switches to) bbr-p2p.
#[unsafe(no_mangle)]
#[unsafe(link_section = "struct_ops/init")]
pub extern "C" fn bbr_init(ctx: *const u64) {
    // SAFETY: argument 0 of every tcp_congestion_ops op is the socket.
    let sk = unsafe { OpsArgs::new(ctx).ptr(0) };
    let (Some(bbr), Some(cfg)) = (state(sk, true), config()) else {
        return;
    };
    // SAFETY: `sk` is the op's tcp_sock.
    let before = unsafe { read_conn(sk) };
    let mut c = before;
    // SAFETY: as above.
    let key = unsafe { warm_key(sk) };
    // SAFETY: the value is copied out before the map can change it.
    let warm = if key.family != 0 {
        unsafe { BBR_WARM.get(&key) }.copied()
    } else {
        None
    };
    bbr.init(&mut c, cfg, warm.as_ref(), random());
    // SAFETY: as above.
    unsafe {
        write_conn(sk, &before, &c);
        if sk.u32(SOCK__SK_PACING_STATUS) == SK_PACING_NONE {
            sk.set_u32(SOCK__SK_PACING_STATUS, SK_PACING_NEEDED);
        }
    }
}

/// `cong_control(sk, ack, flag, rs)`: the per-ACK entry point (Linux ≥ 6.10).
#[unsafe(no_mangle)]
#[unsafe(link_section = "struct_ops/cong_control")]
pub extern "C" fn bbr_cong_control(ctx: *const u64) {
    // SAFETY: cong_control's arguments are (struct sock *, u32, int, const struct rate_sample *).
    let (sk, rs) = unsafe {
        let args = OpsArgs::new(ctx);
        (args.ptr(0), args.ptr(3))
    };
    on_ack(sk, rs);
}

/// `cong_control(sk, rs)`: the same entry point on kernels before 6.10; the loader picks the
/// form whose argument count matches the running kernel's BTF (section suffix `@<arguments>`).
#[unsafe(no_mangle)]
#[unsafe(link_section = "struct_ops/cong_control@2")]
pub extern "C" fn bbr_cong_control_2(ctx: *const u64) {
    // SAFETY: cong_control's arguments are (struct sock *, const struct rate_sample *).
    let (sk, rs) = unsafe {
        let args = OpsArgs::new(ctx);
        (args.ptr(0), args.ptr(1))
    };
    on_ack(sk, rs);
}

#[inline(always)]
fn on_ack(sk: KernelPtr, rs: KernelPtr) {
    let (Some(bbr), Some(cfg)) = (state(sk, false), config()) else {
        return;
    };
    // SAFETY: generated offsets of struct rate_sample fields (and tcp_sock's clock).
    let sample = unsafe {
        let interval_us = rs.u64(RATE_SAMPLE__INTERVAL_US) as i64;
        // tcp_rate_gen: interval_us = max(send interval, tcp_mstamp - prior_mstamp); when the
        // send interval is the longer one the ACKs came back compressed (deviation 7 in bbr.rs).
        let ack_us = sk
            .u64(TCP_SOCK__TCP_MSTAMP)
            .wrapping_sub(rs.u64(RATE_SAMPLE__PRIOR_MSTAMP)) as i64;
        RateSample {
            prior_delivered: rs.u32(RATE_SAMPLE__PRIOR_DELIVERED),
            delivered: rs.u32(RATE_SAMPLE__DELIVERED) as i32,
            interval_us,
            rtt_us: rs.u64(RATE_SAMPLE__RTT_US) as i64,
            losses: rs.u32(RATE_SAMPLE__LOSSES) as i32,
            acked_sacked: rs.u32(RATE_SAMPLE__ACKED_SACKED),
            prior_in_flight: rs.u32(RATE_SAMPLE__PRIOR_IN_FLIGHT),
            is_app_limited: rs.u8(RATE_SAMPLE__IS_APP_LIMITED) != 0,
            is_ack_delayed: rs.u8(RATE_SAMPLE__IS_ACK_DELAYED) != 0,
            ack_compressed: interval_us > ack_us.max(0),
        }
    };
    // SAFETY: `sk` is the op's tcp_sock.
    let before = unsafe { read_conn(sk) };
    let mut c = before;
    bbr.on_ack(&mut c, &sample, cfg, random());
    // SAFETY: as above.
    unsafe { write_conn(sk, &before, &c) };
}

/// `ssthresh(sk)`: entering loss recovery.
#[unsafe(no_mangle)]
#[unsafe(link_section = "struct_ops/ssthresh")]
pub extern "C" fn bbr_ssthresh(ctx: *const u64) -> u32 {
    // SAFETY: argument 0 is the socket.
    let sk = unsafe { OpsArgs::new(ctx).ptr(0) };
    // SAFETY: `sk` is the op's tcp_sock.
    let c = unsafe { read_conn(sk) };
    match state(sk, false) {
        Some(bbr) => bbr.on_ssthresh(&c),
        None => c.ssthresh,
    }
}

/// `undo_cwnd(sk)`: the loss was spurious.
#[unsafe(no_mangle)]
#[unsafe(link_section = "struct_ops/undo_cwnd")]
pub extern "C" fn bbr_undo_cwnd(ctx: *const u64) -> u32 {
    // SAFETY: argument 0 is the socket.
    let sk = unsafe { OpsArgs::new(ctx).ptr(0) };
    // SAFETY: `sk` is the op's tcp_sock.
    let c = unsafe { read_conn(sk) };
    match state(sk, false) {
        Some(bbr) => bbr.on_undo(&c),
        None => c.cwnd,
    }
}

/// `cwnd_event(sk, event)`.
#[unsafe(no_mangle)]
#[unsafe(link_section = "struct_ops/cwnd_event")]
pub extern "C" fn bbr_cwnd_event(ctx: *const u64) {
    // SAFETY: cwnd_event's arguments are (struct sock *, enum tcp_ca_event).
    let (sk, event) = unsafe {
        let args = OpsArgs::new(ctx);
        (args.ptr(0), args.get(1) as u32)
    };
    let (Some(bbr), Some(cfg)) = (state(sk, false), config()) else {
        return;
    };
    // SAFETY: `sk` is the op's tcp_sock.
    let before = unsafe { read_conn(sk) };
    let mut c = before;
    bbr.on_cwnd_event(&mut c, cfg, event, random());
    // SAFETY: as above.
    unsafe { write_conn(sk, &before, &c) };
}

/// `set_state(sk, new_state)`.
#[unsafe(no_mangle)]
#[unsafe(link_section = "struct_ops/set_state")]
pub extern "C" fn bbr_set_state(ctx: *const u64) {
    // SAFETY: set_state's arguments are (struct sock *, u8).
    let (sk, new_state) = unsafe {
        let args = OpsArgs::new(ctx);
        (args.ptr(0), args.get(1) as u8)
    };
    let Some(bbr) = state(sk, false) else {
        return;
    };
    // SAFETY: `sk` is the op's tcp_sock.
    let c = unsafe { read_conn(sk) };
    bbr.on_set_state(&c, new_state, random());
}

/// `min_tso_segs(sk)`.
#[unsafe(no_mangle)]
#[unsafe(link_section = "struct_ops/min_tso_segs")]
pub extern "C" fn bbr_min_tso_segs(ctx: *const u64) -> u32 {
    // SAFETY: argument 0 is the socket.
    let sk = unsafe { OpsArgs::new(ctx).ptr(0) };
    // SAFETY: generated offset of sock.sk_pacing_rate.
    Bbr::min_tso_segs(unsafe { sk.u64(SOCK__SK_PACING_RATE) })
}

/// `sndbuf_expand(sk)`: 3 × cwnd of send buffer, as tcp_bbr.c (pacing keeps more queued).
#[unsafe(no_mangle)]
#[unsafe(link_section = "struct_ops/sndbuf_expand")]
pub extern "C" fn bbr_sndbuf_expand(_ctx: *const u64) -> u32 {
    3
}

/// `release(sk)`: the connection leaves bbr-p2p (closes or switches); record what it learned
/// about the path for the next connection to the same address (variant feature 2).
#[unsafe(no_mangle)]
#[unsafe(link_section = "struct_ops/release")]
pub extern "C" fn bbr_release(ctx: *const u64) {
    // SAFETY: argument 0 is the socket.
    let sk = unsafe { OpsArgs::new(ctx).ptr(0) };
    let Some(bbr) = state(sk, false) else {
        return;
    };
    // SAFETY: generated offsets of the op's tcp_sock.
    let (now_us, key) = unsafe { (sk.u64(TCP_SOCK__TCP_MSTAMP), warm_key(sk)) };
    if let Some(record) = bbr.warm_record(now_us).filter(|_| key.family != 0) {
        let _ = BBR_WARM.insert(&key, &record, 0);
    }
}
