//! `bbr-p2p` as a struct_ops `tcp_congestion_ops`: the kernel glue around the algorithm in
//! `cc_ebpf::bbr` (model, state machine, variant features — read that file first).
//!
//! Each op reads the socket fields the algorithm needs into a [`Conn`], runs the algorithm on
//! the socket's [`BbrState`] (socket storage, also read by the node with the socket as key),
//! and writes back only what a congestion control may change: `snd_cwnd`, `snd_ssthresh`,
//! `app_limited` and `sk_pacing_rate`. The per-ACK fast path works on its own copy in the
//! socket's `icsk_ca_priv` ([`FastState`], deviation 17), which every op folds back into the
//! state before using it.
#![no_std]
#![no_main]

use core::mem::MaybeUninit;

use aya_ebpf::{
    helpers::generated::{
        bpf_get_prandom_u32, bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_sk_storage_get,
    },
    macros::map,
    maps::Array,
};
use cc_ebpf::{
    OpsArgs,
    bbr::{AckStage, Bbr, Conn, FastAck, FastState, RateSample},
    kernel::*,
};
use cc_ebpf_common::{
    TCP_CONG_NON_RESTRICTED,
    bbr::{BBR_CONFIG_SLOTS, BBR_SCRATCH_WORDS, BbrConfig, BbrStorage, Mode},
    resume::{self, ResumeSlot},
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

/// Per-socket state and scratch ([`BbrStorage`]): one socket-storage value, so an ACK makes
/// one storage lookup. Socket storage is sized by the sockets that use it (max_entries must be 0).
#[unsafe(no_mangle)]
#[unsafe(link_section = "maps")]
pub static BBR_STATE: MapDef = MapDef {
    map_type: MAP_TYPE_SK_STORAGE,
    key_size: 4,
    value_size: core::mem::size_of::<BbrStorage>() as u32,
    max_entries: 0,
    map_flags: F_NO_PREALLOC,
    id: 0,
    pinning: 0,
};

/// The socket as read for the current op and the op's rate sample: kept in socket storage
/// (the scratch words of [`BbrStorage`]) rather than on the stack, for the verifier (see
/// [`stage_barrier`]).
#[repr(C)]
pub struct Scratch {
    conn: Conn,
    rs: RateSample,
}
const _: () = assert!(
    core::mem::size_of::<Scratch>() <= 8 * BBR_SCRATCH_WORDS
        && core::mem::align_of::<Scratch>() <= 8,
    "Scratch must fit BbrStorage::scratch"
);

/// The socket's storage value; `create` makes it (zeroed) if the socket has none yet.
#[inline(always)]
fn storage(sk: KernelPtr, create: bool) -> Option<&'static mut BbrStorage> {
    let flags = if create { SK_STORAGE_CREATE } else { 0 };
    // SAFETY: the map is a socket-storage map of BbrStorage values; `sk` is the op's socket.
    let ptr = unsafe {
        bpf_sk_storage_get(
            (&raw const BBR_STATE).cast_mut().cast(),
            sk.as_ptr().cast(),
            core::ptr::null_mut(),
            flags,
        )
    };
    // SAFETY: a non-null result points to this socket's value, which the kernel keeps alive
    // for the program's run.
    (!ptr.is_null()).then(|| unsafe { &mut *ptr.cast::<BbrStorage>() })
}

/// The socket's state; `create` makes it (zeroed) if the socket has none yet.
#[inline(always)]
fn state(sk: KernelPtr, create: bool) -> Option<&'static mut Bbr> {
    // SAFETY: Bbr is a transparent wrapper of BbrState.
    storage(sk, create).map(|s| unsafe { &mut *(&raw mut s.state).cast::<Bbr>() })
}

/// The fast path's working set in the socket's own `icsk_ca_priv` (deviation 17 of
/// `cc_ebpf::bbr`): reached without a map lookup. A `tcp_congestion_ops` program may read and
/// write that area (`bpf_tcp_ca_btf_struct_access`, 6.1 and 6.18); TCP zeroes it when a socket
/// is assigned an algorithm, so it reads as invalid until a full ACK writes it.
///
/// # Safety
/// `sk` must be the op's socket, in one of this algorithm's ops.
#[inline(always)]
unsafe fn fast_state(sk: KernelPtr) -> &'static mut FastState {
    // SAFETY: per the contract: `icsk_ca_priv` is this algorithm's, 104 bytes, 8-aligned
    // (FastState's size is asserted to be ICSK_CA_PRIV_SIZE); every access is checked by the
    // verifier against the area's bounds.
    unsafe {
        &mut *sk
            .as_ptr()
            .add(INET_CONNECTION_SOCK__ICSK_CA_PRIV.offset())
            .cast::<FastState>()
    }
}

/// The tunables, in two slots: the node fills the slot not in use, then switches
/// [`BBR_CFG_SLOT`] to it, so an ACK never reads half old, half new values; it then waits for an
/// RCU grace period before it may rewrite the slot it left (`p2p-node/src/ebpf/bbr.rs`,
/// `wait_for_running_ops`), so no op is still reading that one.
#[map]
static BBR_CONFIG: Array<BbrConfig> = Array::with_max_entries(BBR_CONFIG_SLOTS, 0);

/// The config generation: its low bit is the index of the [`BBR_CONFIG`] slot in use.
#[map]
static BBR_CFG_SLOT: Array<u32> = Array::with_max_entries(1, 0);

/// Careful-resume entries ([`ResumeSlot`]): made by the node after a connection's noise
/// handshake (a hint, or why the connection starts cold), then advanced here per ACK. Socket
/// storage, sized by the sockets that use it.
#[unsafe(no_mangle)]
#[unsafe(link_section = "maps")]
pub static BBR_RESUME: MapDef = MapDef {
    map_type: MAP_TYPE_SK_STORAGE,
    key_size: 4,
    value_size: core::mem::size_of::<ResumeSlot>() as u32,
    max_entries: 0,
    map_flags: F_NO_PREALLOC,
    id: 0,
    pinning: 0,
};

/// The socket's careful-resume entry, if the node made one (never created here).
#[inline(always)]
fn resume_slot(sk: KernelPtr) -> Option<&'static mut ResumeSlot> {
    // SAFETY: the map is a socket-storage map of ResumeSlot values; `sk` is the op's socket.
    let ptr = unsafe {
        bpf_sk_storage_get(
            (&raw const BBR_RESUME).cast_mut().cast(),
            sk.as_ptr().cast(),
            core::ptr::null_mut(),
            0,
        )
    };
    // SAFETY: a non-null result points to this socket's value, alive for the program's run.
    (!ptr.is_null()).then(|| unsafe { &mut *ptr.cast::<ResumeSlot>() })
}

/// The config generation in use (0 until the node writes the tunables).
#[inline(always)]
fn config_gen() -> u32 {
    // SAFETY: a single aligned u32 load of the map value (the writer stores it whole).
    BBR_CFG_SLOT
        .get_ptr(0)
        .map(|p| unsafe { core::ptr::read_volatile(p) })
        .unwrap_or(0)
}

/// The tunables of generation `generation`; `None` when its slot holds none (all zero: the
/// node has not written them), in which case the caller uses [`BbrConfig::DEFAULT`].
#[inline(always)]
fn config_at(generation: u32) -> Option<&'static BbrConfig> {
    BBR_CONFIG.get(generation & 1).filter(|c| c.high_gain != 0)
}

/// Stores each field of [`BbrConfig::DEFAULT`] as an immediate: a whole-struct copy would be
/// a `memcpy` from `.rodata`, global data the struct_ops loader cannot relocate.
macro_rules! write_default_config {
    ($p:expr; $($field:ident),* $(,)?) => {
        $(
            // SAFETY: `$p` points to a BbrConfig-sized, aligned stack slot.
            unsafe { core::ptr::addr_of_mut!((*$p).$field).write_volatile(BbrConfig::DEFAULT.$field) };
        )*
    };
}

/// The tunables in use, or [`BbrConfig::DEFAULT`] written into `fallback` (only on that path,
/// so the common path does not pay for the stores).
#[inline(always)]
fn config_or_default(fallback: &mut MaybeUninit<BbrConfig>) -> &BbrConfig {
    config_or_default_at(config_gen(), fallback)
}

/// [`config_or_default`] for generation `generation`.
#[inline(always)]
fn config_or_default_at(generation: u32, fallback: &mut MaybeUninit<BbrConfig>) -> &BbrConfig {
    if let Some(cfg) = config_at(generation) {
        return cfg;
    }
    let p = fallback.as_mut_ptr();
    write_default_config!(p;
        high_gain, startup_cwnd_gain, drain_gain, cwnd_gain, probe_up_gain, probe_down_gain,
        min_rtt_window_us, probe_rtt_interval_us, probe_rtt_duration_us, probe_rtt_cwnd_gain,
        min_cwnd, full_bw_thresh, full_bw_rounds, full_loss_cnt, extra_acked_gain,
        loss_bound_enabled, loss_thresh_per_mille, loss_beta, inflight_headroom,
        probe_wait_base_us, probe_wait_rand_us, probe_max_rounds, resume_enabled,
    );
    const _: () = assert!(
        core::mem::size_of::<BbrConfig>() == 23 * 4,
        "list every field above"
    );
    // SAFETY: every field was written above (the struct has no padding: 23 u32s, 92 bytes).
    unsafe { fallback.assume_init_ref() }
}

/// Code that exists for the verifier: an opaque helper call between the stages of an ACK.
/// LLVM must assume it may change the socket's state (the storage pointer came from a helper),
/// so each stage reloads the state from the map value instead of carrying the previous
/// stage's branch outcomes in registers. The verifier sees unknown values there, so the paths
/// of one stage merge before the next instead of multiplying (without it, the inlined model
/// exceeded the verifier's 1M-instruction budget). The helper is inlined by the kernel into a
/// per-CPU load.
#[inline(always)]
fn stage_barrier() {
    // SAFETY: helper without arguments.
    unsafe { bpf_get_smp_processor_id() };
}

#[inline(always)]
fn random() -> u32 {
    // SAFETY: helper without arguments.
    unsafe { bpf_get_prandom_u32() }
}

/// The kernel's `tcp_packets_in_flight()`: packets out, less those SACKed or marked lost, plus
/// retransmissions in flight.
///
/// # Safety
/// `tp` must be the op's socket (a `tcp_sock`).
#[inline(always)]
unsafe fn packets_in_flight(tp: KernelPtr) -> u32 {
    // SAFETY: generated offsets of fields of tcp_sock.
    unsafe {
        let left_out = tp
            .u32(TCP_SOCK__SACKED_OUT)
            .wrapping_add(tp.u32(TCP_SOCK__LOST_OUT));
        tp.u32(TCP_SOCK__PACKETS_OUT)
            .wrapping_sub(left_out)
            .wrapping_add(tp.u32(TCP_SOCK__RETRANS_OUT))
    }
}

/// Reads the socket into a [`Conn`] (every field, through [`read_conn_fields`]).
///
/// # Safety
/// `tp` must be the op's socket (a `tcp_sock`).
#[inline(always)]
unsafe fn read_conn(tp: KernelPtr) -> Conn {
    let mut c = Conn::default();
    // SAFETY: `tp` per the contract; `c` is a local.
    unsafe { read_conn_fields(tp, &raw mut c, true, true) };
    c
}

/// Reads the socket into the full path's [`Conn`] in `c` (the scratch words of the socket's
/// storage) one field at a time, where [`read_conn`] followed by a copy held all 22 values at
/// once and spilled most of them to the stack on the way. Two fields are read only when the
/// model can use them: `srtt_us_x8` on an ACK that initialises the state or comes before
/// the first RTT sample (`init_pacing_rate_from_rtt`), `kernel_min_rtt_us` on one that
/// initialises it; otherwise they are 0.
///
/// # Safety
/// `tp` must be the op's socket (a `tcp_sock`); `c` must be valid for writes.
#[inline(always)]
unsafe fn read_conn_into(tp: KernelPtr, c: *mut Conn, bbr: &Bbr) {
    let init = bbr.init_cwnd == 0;
    // SAFETY: per the contract.
    unsafe { read_conn_fields(tp, c, init || bbr.has_seen_rtt == 0, init) };
}

/// Writes every field of the [`Conn`] at `c` from the socket, one at a time; `srtt_us_x8` only
/// with `srtt`, `kernel_min_rtt_us` only with `min_rtt` (else 0). The one list of the socket
/// fields a [`Conn`] holds: the pattern below stops compiling when [`Conn`] gains a field, so
/// none is left unwritten in the reused scratch words.
///
/// # Safety
/// `tp` must be the op's socket (a `tcp_sock`); `c` must be valid for writes.
#[inline(always)]
unsafe fn read_conn_fields(tp: KernelPtr, c: *mut Conn, srtt: bool, min_rtt: bool) {
    #[expect(dead_code, reason = "a compile-time check only")]
    fn every_field_is_written(c: Conn) {
        let Conn {
            now_us: _,
            delivered: _,
            delivered_mstamp_us: _,
            lost: _,
            packets_in_flight: _,
            ca_state: _,
            cwnd_limited: _,
            srtt_us_x8: _,
            kernel_min_rtt_us: _,
            mss: _,
            cwnd_clamp: _,
            max_pacing_rate: _,
            pacing_shift: _,
            wstamp_ns: _,
            clock_ns: _,
            cwnd: _,
            pacing_rate: _,
            ssthresh: _,
            app_limited: _,
        } = c;
    }
    // SAFETY: generated offsets of fields of tcp_sock (which begins with sock); `c` per the
    // contract.
    unsafe {
        (*c).now_us = tp.u64(TCP_SOCK__TCP_MSTAMP);
        (*c).delivered = tp.u32(TCP_SOCK__DELIVERED);
        (*c).delivered_mstamp_us = tp.u64(TCP_SOCK__DELIVERED_MSTAMP);
        (*c).lost = tp.u32(TCP_SOCK__LOST);
        (*c).packets_in_flight = packets_in_flight(tp);
        (*c).ca_state = tp.bits8(
            INET_CONNECTION_SOCK__ICSK_CA_STATE,
            INET_CONNECTION_SOCK__ICSK_CA_STATE_SHIFT,
            INET_CONNECTION_SOCK__ICSK_CA_STATE_BITS,
        );
        (*c).cwnd_limited = tp.bits8(
            TCP_SOCK__IS_CWND_LIMITED,
            TCP_SOCK__IS_CWND_LIMITED_SHIFT,
            TCP_SOCK__IS_CWND_LIMITED_BITS,
        ) != 0;
        (*c).srtt_us_x8 = if srtt { tp.u32(TCP_SOCK__SRTT_US) } else { 0 };
        (*c).kernel_min_rtt_us = if min_rtt {
            tp.u32(TCP_SOCK__RTT_MIN + MINMAX_S0_V)
        } else {
            0
        };
        (*c).mss = tp.u32(TCP_SOCK__MSS_CACHE);
        (*c).cwnd_clamp = tp.u32(TCP_SOCK__SND_CWND_CLAMP);
        (*c).max_pacing_rate = tp.u64(SOCK__SK_MAX_PACING_RATE);
        (*c).pacing_shift = tp.u8(SOCK__SK_PACING_SHIFT);
        (*c).wstamp_ns = tp.u64(TCP_SOCK__TCP_WSTAMP_NS);
        (*c).clock_ns = tp.u64(TCP_SOCK__TCP_CLOCK_CACHE);
        (*c).cwnd = tp.u32(TCP_SOCK__SND_CWND);
        (*c).pacing_rate = tp.u64(SOCK__SK_PACING_RATE);
        (*c).ssthresh = tp.u32(TCP_SOCK__SND_SSTHRESH);
        (*c).app_limited = tp.u32(TCP_SOCK__APP_LIMITED);
    }
}

/// Reads the op's rate sample, once per ACK: the fast path and, if it declines, the full model
/// use the same copy. `ack_compressed` is left false: only the full path computes it (it needs
/// the socket's clock).
///
/// # Safety
/// `rs` must be the op's rate sample.
#[inline(always)]
unsafe fn read_rate_sample(rs: KernelPtr) -> RateSample {
    // SAFETY: generated offsets of fields of struct rate_sample.
    unsafe {
        RateSample {
            prior_delivered: rs.u32(RATE_SAMPLE__PRIOR_DELIVERED),
            delivered: rs.u32(RATE_SAMPLE__DELIVERED) as i32,
            interval_us: rs.u64(RATE_SAMPLE__INTERVAL_US) as i64,
            rtt_us: rs.u64(RATE_SAMPLE__RTT_US) as i64,
            losses: rs.u32(RATE_SAMPLE__LOSSES) as i32,
            acked_sacked: rs.u32(RATE_SAMPLE__ACKED_SACKED),
            prior_in_flight: rs.u32(RATE_SAMPLE__PRIOR_IN_FLIGHT),
            is_app_limited: rs.u8(RATE_SAMPLE__IS_APP_LIMITED) != 0,
            is_ack_delayed: rs.u8(RATE_SAMPLE__IS_ACK_DELAYED) != 0,
            ack_compressed: false,
        }
    }
}

/// Reads what the fast path needs (deviation 17 of `cc_ebpf::bbr`) besides the rate sample:
/// 8 socket fields (the flight only in packet conservation, the departure clocks only in
/// DOWN).
///
/// # Safety
/// `tp` must be the op's socket (a `tcp_sock`).
#[inline(always)]
unsafe fn read_fast_ack(tp: KernelPtr, rs: RateSample, fast: &FastState, cfg_gen: u32) -> FastAck {
    // SAFETY: generated offsets of fields of tcp_sock.
    unsafe {
        FastAck {
            cfg_gen,
            now_us: tp.u64(TCP_SOCK__TCP_MSTAMP),
            delivered_mstamp_us: tp.u64(TCP_SOCK__DELIVERED_MSTAMP),
            ca_state: tp.bits8(
                INET_CONNECTION_SOCK__ICSK_CA_STATE,
                INET_CONNECTION_SOCK__ICSK_CA_STATE_SHIFT,
                INET_CONNECTION_SOCK__ICSK_CA_STATE_BITS,
            ),
            packets_in_flight: if fast.flags & FastState::PACKET_CONSERVATION != 0 {
                packets_in_flight(tp)
            } else {
                0
            },
            wstamp_ns: if fast.flags & FastState::DOWN != 0 {
                tp.u64(TCP_SOCK__TCP_WSTAMP_NS)
            } else {
                0
            },
            clock_ns: if fast.flags & FastState::DOWN != 0 {
                tp.u64(TCP_SOCK__TCP_CLOCK_CACHE)
            } else {
                0
            },
            cwnd: tp.u32(TCP_SOCK__SND_CWND),
            cwnd_clamp: tp.u32(TCP_SOCK__SND_CWND_CLAMP),
            mss: tp.u32(TCP_SOCK__MSS_CACHE),
            pacing_rate: tp.u64(SOCK__SK_PACING_RATE),
            max_pacing_rate: tp.u64(SOCK__SK_MAX_PACING_RATE),
            rs,
        }
    }
}

/// The four values a congestion control may change, as they were before the op ran: only
/// those that changed are stored back (and only these are kept, not a whole second [`Conn`],
/// to spare the 512-byte stack).
#[derive(Clone, Copy)]
struct Controls {
    cwnd: u32,
    ssthresh: u32,
    app_limited: u32,
    pacing_rate: u64,
}

impl Controls {
    fn of(c: &Conn) -> Self {
        Self {
            cwnd: c.cwnd,
            ssthresh: c.ssthresh,
            app_limited: c.app_limited,
            pacing_rate: c.pacing_rate,
        }
    }
}

/// Writes back what the algorithm may have changed; untouched fields are not stored.
///
/// # Safety
/// As [`read_conn`]; every field written is one a congestion control may write.
#[inline(always)]
unsafe fn write_conn(tp: KernelPtr, before: Controls, after: &Conn) {
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

/// The TCP clock now: `tcp_mstamp` of a live socket switching to bbr-p2p may be seconds old
/// (deviation 4 of `cc_ebpf::bbr`); it is `ktime_get_ns() / 1000` (`tcp_clock_us()`).
#[inline(always)]
fn fresh_now_us(c: &Conn) -> u64 {
    // SAFETY: helper without arguments.
    c.now_us.max(unsafe { bpf_ktime_get_ns() } / 1000)
}

/// `init(sk)`: a connection starts on (or switches to) bbr-p2p.
///
/// # Safety
/// Only the kernel calls it, with the context pointer of this op.
#[unsafe(no_mangle)]
#[unsafe(link_section = "struct_ops/init")]
pub unsafe extern "C" fn bbr_init(ctx: *const u64) {
    // SAFETY: argument 0 of every tcp_congestion_ops op is the socket.
    let sk = unsafe { OpsArgs::new(ctx).ptr(0) };
    let Some(bbr) = state(sk, true) else {
        return;
    };
    // SAFETY: `sk` is the op's socket.
    unsafe { fast_state(sk) }.flags = 0;
    let mut fallback = MaybeUninit::uninit();
    let cfg = config_or_default(&mut fallback);
    // SAFETY: `sk` is the op's tcp_sock.
    let mut c = unsafe { read_conn(sk) };
    let before = Controls::of(&c);
    c.now_us = fresh_now_us(&c);
    bbr.init(&mut c, cfg);
    // SAFETY: as above.
    unsafe {
        write_conn(sk, before, &c);
        if sk.u32(SOCK__SK_PACING_STATUS) == SK_PACING_NONE {
            sk.set_u32(SOCK__SK_PACING_STATUS, SK_PACING_NEEDED);
        }
    }
}

/// `cong_control(sk, ack, flag, rs)`: the per-ACK entry point (Linux ≥ 6.10).
///
/// # Safety
/// Only the kernel calls it, with the context pointer of this op.
#[unsafe(no_mangle)]
#[unsafe(link_section = "struct_ops/cong_control")]
pub unsafe extern "C" fn bbr_cong_control(ctx: *const u64) {
    // SAFETY: cong_control's arguments are (struct sock *, u32, int, const struct rate_sample *).
    let (sk, rs) = unsafe {
        let args = OpsArgs::new(ctx);
        (args.ptr(0), args.ptr(3))
    };
    on_ack(sk, rs);
}

/// `cong_control(sk, rs)`: the same entry point on kernels before 6.10; the loader picks the
/// form whose argument count matches the running kernel's BTF (section suffix `@<arguments>`).
///
/// # Safety
/// Only the kernel calls it, with the context pointer of this op.
#[unsafe(no_mangle)]
#[unsafe(link_section = "struct_ops/cong_control@2")]
pub unsafe extern "C" fn bbr_cong_control_2(ctx: *const u64) {
    // SAFETY: cong_control's arguments are (struct sock *, const struct rate_sample *).
    let (sk, rs) = unsafe {
        let args = OpsArgs::new(ctx);
        (args.ptr(0), args.ptr(1))
    };
    on_ack(sk, rs);
}

#[inline(always)]
fn on_ack(sk: KernelPtr, rs: KernelPtr) {
    let cfg_gen = config_gen();
    // SAFETY: `rs` is the op's rate sample.
    let sample = unsafe { read_rate_sample(rs) };
    // Deviation 17: an ACK that changes nothing the controls depend on takes the fast path,
    // on the working set in `icsk_ca_priv` (no map lookup); it reads 8 socket fields instead
    // of 22 and leaves cwnd and pacing rate as they are.
    {
        // SAFETY: `sk` is the op's socket.
        let fast = unsafe { fast_state(sk) };
        if fast.flags & FastState::OK != 0 {
            // SAFETY: `sk` is the op's tcp_sock.
            let ack = unsafe { read_fast_ack(sk, sample, fast, cfg_gen) };
            if fast.ack(&ack) {
                return;
            }
        }
    }
    // Created here if `init` could not (storage allocation failed then): a socket without
    // state would otherwise stay at its initial window.
    let Some(storage) = storage(sk, true) else {
        return;
    };
    // SAFETY: Bbr is a transparent wrapper of BbrState; Scratch fits the scratch words and
    // their alignment (asserted above), and all-zero is a valid Scratch (plain integers).
    let (bbr, sc) = unsafe {
        (
            &mut *(&raw mut storage.state).cast::<Bbr>(),
            (&raw mut storage.scratch).cast::<Scratch>(),
        )
    };
    // The fast ACKs since the last full one, into the state the full model runs on.
    // SAFETY: `sk` is the op's socket.
    unsafe { fast_state(sk) }.fold_into(bbr);
    let mut fallback = MaybeUninit::uninit();
    let cfg = config_or_default_at(cfg_gen, &mut fallback);
    // SAFETY: `sc` points to this socket's scratch value, alive for the program's run; generated
    // offsets of struct rate_sample and tcp_sock fields.
    unsafe {
        (*sc).rs = sample;
        read_conn_into(sk, &raw mut (*sc).conn, bbr);
        // tcp_rate_gen: interval_us = max(send interval, tcp_mstamp - prior_mstamp).
        let ack_us = (*sc)
            .conn
            .now_us
            .wrapping_sub(rs.u64(RATE_SAMPLE__PRIOR_MSTAMP)) as i64;
        (*sc).rs.ack_compressed = (*sc).rs.interval_us > ack_us.max(0);
    }
    // SAFETY: as above.
    let before = Controls::of(unsafe { &(*sc).conn });
    if bbr.init_cwnd == 0 {
        // Fresh storage, never initialised. This ACK initialises; the next runs the model
        // (returning here keeps the verifier from walking the model once per init outcome).
        // SAFETY: as above.
        let c = unsafe { &mut (*sc).conn };
        c.now_us = fresh_now_us(c);
        bbr.init(c, cfg);
    } else {
        let bbr: *mut Bbr = bbr;
        // SAFETY (each deref below): the storage values live for the program's run and nothing
        // else references them meanwhile; each stage borrows them afresh after the barrier.
        let ack = unsafe { (*bbr).ack_begin(&(*sc).conn, &(*sc).rs, cfg) };
        let before = unsafe { &*bbr }.ack_snapshot();
        // Written out rather than a loop over `AckStage::ALL` (that array would be global
        // data, which the loader cannot relocate).
        macro_rules! stages {
            ($($stage:expr),*) => {$(
                stage_barrier();
                let state = unsafe { &mut *bbr };
                if ack.runs($stage, before, state.ack_snapshot()) {
                    unsafe { state.ack_stage($stage, &mut (*sc).conn, &(*sc).rs, cfg, ack, &mut || random()) };
                }
            )*};
        }
        stages!(
            AckStage::Model,
            AckStage::Drain,
            AckStage::Cycle,
            AckStage::MinRtt,
            AckStage::Controls,
            AckStage::End
        );
        stage_barrier();
        // SAFETY: as above.
        let state = unsafe { &mut *bbr };
        state.refresh_fast_path(cfg, cfg_gen);
        if state.resume_pending != 0 {
            // SAFETY: as above.
            unsafe { resume_stage(sk, state, &mut (*sc).conn, &(*sc).rs, cfg, ack.sample_bw) };
        }
        // The working set for the next ACKs (resume_stage clears `fast_ok` where it acts).
        stage_barrier();
        // SAFETY: as above; `sk` is the op's socket.
        unsafe { (*bbr).export_fast(fast_state(sk)) };
    }
    stage_barrier();
    // SAFETY: `sk` is the op's tcp_sock; `sc` as above.
    unsafe { write_conn(sk, before, &(*sc).conn) };
}

/// Careful resume's step of the ACK (deviation 8 of `cc_ebpf::bbr`), after the model set
/// pacing and cwnd: the socket's resume entry, if the node made one, is advanced by
/// `resume::on_ack` and its decision applied; the outcome is mirrored into the state the node
/// reads. Runs only while `resume_pending`: until the entry is decided, or the connection
/// leaves STARTUP without one.
#[inline(always)]
fn resume_stage(
    sk: KernelPtr,
    bbr: &mut Bbr,
    c: &mut Conn,
    rs: &RateSample,
    cfg: &BbrConfig,
    sample_bw: u32,
) {
    let Some(slot) = resume_slot(sk) else {
        if bbr.mode() != Mode::Startup || bbr.full_bw_reached != 0 {
            bbr.resume_pending = 0;
        }
        return;
    };
    // SAFETY: generated offset of a tcp_sock field; `sk` is the op's socket.
    let snd_wnd = unsafe { sk.u32(TCP_SOCK__SND_WND) };
    let view = bbr.resume_view(c, rs, cfg, sample_bw, u64::from(snd_wnd));
    let min_cwnd_bytes = u64::from(cfg.min_cwnd) * u64::from(c.mss);
    let action = resume::on_ack(slot, &view, min_cwnd_bytes);
    bbr.resume_apply(c, cfg, action, slot.bw_bytes_per_sec);
    bbr.start = slot.start;
    bbr.start_reason = slot.reason;
    if resume::decided(slot) {
        bbr.resume_pending = 0;
    }
}

/// `ssthresh(sk)`: entering loss recovery.
///
/// # Safety
/// Only the kernel calls it, with the context pointer of this op.
#[unsafe(no_mangle)]
#[unsafe(link_section = "struct_ops/ssthresh")]
pub unsafe extern "C" fn bbr_ssthresh(ctx: *const u64) -> u32 {
    // SAFETY: argument 0 is the socket.
    let sk = unsafe { OpsArgs::new(ctx).ptr(0) };
    // SAFETY: `sk` is the op's tcp_sock.
    let c = unsafe { read_conn(sk) };
    match state(sk, false) {
        Some(bbr) => {
            // SAFETY: `sk` is the op's socket.
            unsafe { fast_state(sk) }.fold_into(bbr);
            bbr.on_ssthresh(&c)
        }
        None => c.ssthresh,
    }
}

/// `undo_cwnd(sk)`: the loss was spurious.
///
/// # Safety
/// Only the kernel calls it, with the context pointer of this op.
#[unsafe(no_mangle)]
#[unsafe(link_section = "struct_ops/undo_cwnd")]
pub unsafe extern "C" fn bbr_undo_cwnd(ctx: *const u64) -> u32 {
    // SAFETY: argument 0 is the socket.
    let sk = unsafe { OpsArgs::new(ctx).ptr(0) };
    // SAFETY: `sk` is the op's tcp_sock.
    let c = unsafe { read_conn(sk) };
    match state(sk, false) {
        Some(bbr) if bbr.init_cwnd != 0 => {
            // SAFETY: `sk` is the op's socket.
            unsafe { fast_state(sk) }.fold_into(bbr);
            bbr.on_undo().max(c.cwnd)
        }
        _ => c.cwnd,
    }
}

/// `cwnd_event(sk, event)`.
///
/// # Safety
/// Only the kernel calls it, with the context pointer of this op.
#[unsafe(no_mangle)]
#[unsafe(link_section = "struct_ops/cwnd_event")]
pub unsafe extern "C" fn bbr_cwnd_event(ctx: *const u64) {
    // SAFETY: cwnd_event's arguments are (struct sock *, enum tcp_ca_event).
    let (sk, event) = unsafe {
        let args = OpsArgs::new(ctx);
        (args.ptr(0), args.get(1) as u32)
    };
    let Some(bbr) = state(sk, false).filter(|b| b.init_cwnd != 0) else {
        return;
    };
    // SAFETY: `sk` is the op's socket.
    unsafe { fast_state(sk) }.fold_into(bbr);
    let mut fallback = MaybeUninit::uninit();
    let cfg = config_or_default(&mut fallback);
    // SAFETY: `sk` is the op's tcp_sock.
    let mut c = unsafe { read_conn(sk) };
    let before = Controls::of(&c);
    bbr.on_cwnd_event(&mut c, cfg, event, &mut || random());
    // SAFETY: as above.
    unsafe { write_conn(sk, before, &c) };
}

/// `set_state(sk, new_state)`.
///
/// # Safety
/// Only the kernel calls it, with the context pointer of this op.
#[unsafe(no_mangle)]
#[unsafe(link_section = "struct_ops/set_state")]
pub unsafe extern "C" fn bbr_set_state(ctx: *const u64) {
    // SAFETY: set_state's arguments are (struct sock *, u8).
    let (sk, new_state) = unsafe {
        let args = OpsArgs::new(ctx);
        (args.ptr(0), args.get(1) as u8)
    };
    let Some(bbr) = state(sk, false).filter(|b| b.init_cwnd != 0) else {
        return;
    };
    // SAFETY: `sk` is the op's socket.
    unsafe { fast_state(sk) }.fold_into(bbr);
    let mut fallback = MaybeUninit::uninit();
    let cfg = config_or_default(&mut fallback);
    // SAFETY: `sk` is the op's tcp_sock.
    let mut c = unsafe { read_conn(sk) };
    let before = Controls::of(&c);
    bbr.on_set_state(&mut c, cfg, new_state);
    // SAFETY: as above.
    unsafe { write_conn(sk, before, &c) };
}
