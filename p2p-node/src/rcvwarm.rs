//! The receiving side of a warm start (issue 13): a new connection to an authenticated PeerId
//! this node has a fresh record of starts with the receive buffer the kernel's autotuning would
//! otherwise reach only after a few round trips.
//!
//! What Linux offers, and why this mechanism (net/ipv4/tcp.c, tcp_input.c, net/core/sock.c):
//! - The advertised window is bounded by `rcv_ssthresh`, which grows per received segment (by up
//!   to twice its length, `tcp_grow_window`) but only while there is `room` below
//!   `tcp_space(sk)`, i.e. below what `sk_rcvbuf` allows. A new connection's `sk_rcvbuf` is
//!   `tcp_rmem[1]` (128 KiB: a 64 KiB window), and autotuning (`tcp_rcv_space_adjust`) raises it
//!   once per receiver RTT from what the application read. So on a fast path the window cannot
//!   grow within the first round trip at all.
//! - `SO_RCVBUF` would raise `sk_rcvbuf` but sets `SOCK_RCVBUF_LOCK`: autotuning stops for the
//!   connection's life (it could then never grow past the record, and a wrong record stays).
//! - `BPF_SOCK_OPS_RWND_INIT` and the route's `initrwnd` act at the SYN, before any PeerId is
//!   authenticated (and are keyed by address or cgroup, not by peer).
//! - `SO_RCVLOWAT` on TCP (`tcp_set_rcvlowat`) raises `sk_rcvbuf` to hold the given number of
//!   bytes (and `window_clamp` to it) **without** the lock, capped by `tcp_rmem[2] / 2`; setting
//!   it back to 1 right after leaves the buffer raised and readiness as before. Autotuning then
//!   goes on from the raised starting point. This is what [`raise`] does.
//!
//! Sizing ([`window`]): the record is the largest `tcpi_rcv_space` the kernel measured on this
//! node's connections to the peer — autotuning's own estimate of the bytes the peer delivered in
//! one receiver RTT, measured here, never a value the peer states. The start is twice that (the
//! window autotuning itself sizes for: `rcvwin = 2 × copied`), bounded per connection by
//! [`Limits::per_connection`] and `tcp_rmem[2] / 2`, and in total, over the node's live
//! connections, by [`Limits::total`]: a thousand known peers reconnecting at once get at most
//! `total` of buffer ahead of autotuning, not a thousand times the per-connection bound. The
//! buffer is a limit, not an allocation: memory is charged only for data that arrives and is not
//! yet read, as with any buffer autotuning grows.
//!
//! Deviations and limits:
//! 1. `rcv_ssthresh` itself cannot be raised after the handshake (no socket option does it;
//!    `TCP_WINDOW_CLAMP` raises it at most to the current window), so the first flight after the
//!    handshake is still held to the 64 KiB window; the raised buffer lets the window grow with
//!    every segment of that flight instead of waiting a round trip for autotuning.
//! 2. yamux's per-stream credit (256 KiB, auto-tuned per window update) is not configurable per
//!    connection in rust-libp2p 0.57 (libp2p-yamux 0.48 exposes only the stream count; yamux
//!    0.14's initial window is the spec's constant), so it is not warmed (docs/bench.md).
//! 3. The window is raised after noise, so the handshake's own round trips run on the default.

use std::{io, os::fd::BorrowedFd};

use crate::sockets::{get_option, set_option};

/// Bounds of the receive buffer granted ahead of autotuning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest window one connection starts with, bytes.
    pub per_connection: u64,
    /// Largest sum of the buffers granted to the node's live connections, bytes (counted as the
    /// `sk_rcvbuf` the kernel reports after the raise, minus the one before).
    pub total: u64,
}

/// 4 MiB per connection: 2 × the BDP of 100 Mbit/s × 160 ms, or of 1 Gbit/s × 16 ms; beyond it
/// autotuning takes over as for any connection. 64 MiB in total: sixteen such connections
/// starting at once, a small share of a node's memory (the kernel's own `tcp_mem` pressure
/// limits still apply on top).
pub const DEFAULT_LIMITS: Limits = Limits {
    per_connection: 4 << 20,
    total: 64 << 20,
};

/// What a new connection's window starts below which there is nothing to warm: the window a
/// default connection already advertises (`tcp_rmem[1]` of 128 KiB, half of it).
pub const DEFAULT_WINDOW: u64 = 64 << 10;

/// Why a connection's receive buffer starts at the default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cold {
    /// No record of the peer's receive side.
    NoRecord,
    /// The record is older than the freshness limit.
    Stale,
    /// The record asks for no more than the default window.
    Small,
    /// The node's total is spent by other live connections.
    Budget,
}

/// The receive side of a peer's record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Saved {
    /// Largest `tcpi_rcv_space` seen on a connection to the peer, bytes.
    pub rcv_space_bytes: u64,
    /// When it was seen, Unix ms.
    pub sampled_at_ms: u64,
}

/// The window a new connection to the peer starts with, bytes (see the module header), given
/// `granted` bytes of buffer already held by live connections and the kernel's `tcp_rmem[2]`.
pub fn window(
    saved: Option<Saved>,
    now_ms: u64,
    max_age_ms: u64,
    rmem_max: u64,
    granted: u64,
    limits: Limits,
) -> Result<u64, Cold> {
    let saved = saved.ok_or(Cold::NoRecord)?;
    if now_ms.saturating_sub(saved.sampled_at_ms) > max_age_ms {
        return Err(Cold::Stale);
    }
    let want = saved
        .rcv_space_bytes
        .saturating_mul(2)
        .min(limits.per_connection)
        .min(rmem_max / 2);
    if want <= DEFAULT_WINDOW {
        return Err(Cold::Small);
    }
    // The buffer holding `want` is about twice it (the kernel's default scaling ratio of
    // payload to memory), so half of what is left of the total is the largest window to grant.
    let left = limits.total.saturating_sub(granted) / 2;
    let want = want.min(left);
    if want <= DEFAULT_WINDOW {
        return Err(Cold::Budget);
    }
    Ok(want)
}

/// `getsockopt(SO_RCVBUF)`: the socket's `sk_rcvbuf`, bytes.
pub fn rcvbuf(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let value: libc::c_int = get_option(fd, libc::SOL_SOCKET, libc::SO_RCVBUF)?;
    Ok(value.max(0) as u64)
}

/// `getsockopt(SO_RCVLOWAT)`: the receive low-water mark, bytes.
pub fn rcvlowat(fd: BorrowedFd<'_>) -> io::Result<i32> {
    get_option(fd, libc::SOL_SOCKET, libc::SO_RCVLOWAT)
}

fn set_rcvlowat(fd: BorrowedFd<'_>, bytes: libc::c_int) -> io::Result<()> {
    set_option(fd, libc::SOL_SOCKET, libc::SO_RCVLOWAT, bytes)
}

/// Raises the socket's receive buffer to hold `window` bytes without locking autotuning (the
/// module header), then restores the low-water mark to 1 byte. Returns `sk_rcvbuf` before and
/// after, as the kernel reports them.
pub fn raise(fd: BorrowedFd<'_>, window: u64) -> io::Result<(u64, u64)> {
    let before = rcvbuf(fd)?;
    let bytes = libc::c_int::try_from(window).unwrap_or(libc::c_int::MAX);
    let raised = set_rcvlowat(fd, bytes);
    // Always back to 1, even if the raise failed half-way: a low-water mark left high would
    // delay every read of the connection.
    set_rcvlowat(fd, 1)?;
    raised?;
    Ok((before, rcvbuf(fd)?))
}

/// `net.ipv4.tcp_rmem`'s maximum in this process's network namespace (the bound autotuning
/// itself never passes); `None` if it cannot be read.
pub fn rmem_max() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_rmem")
        .ok()?
        .split_whitespace()
        .nth(2)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_000_000_000;
    const AGE: u64 = 600_000;
    const RMEM_MAX: u64 = 6 << 20;

    fn saved(rcv_space_bytes: u64, age_ms: u64) -> Option<Saved> {
        Some(Saved {
            rcv_space_bytes,
            sampled_at_ms: NOW - age_ms,
        })
    }

    /// (record, rmem_max, already granted, limits) → window or why cold.
    type Case = (Option<Saved>, u64, u64, Limits, Result<u64, Cold>);

    #[test]
    fn the_start_window_is_bounded_by_the_record_the_limits_and_the_budget() {
        let l = DEFAULT_LIMITS;
        let cases: &[Case] = &[
            (None, RMEM_MAX, 0, l, Err(Cold::NoRecord)),
            (saved(500_000, AGE + 1), RMEM_MAX, 0, l, Err(Cold::Stale)),
            // Exactly at the freshness limit is still fresh.
            (saved(500_000, AGE), RMEM_MAX, 0, l, Ok(1_000_000)),
            // The 100 Mbit/s, 40 ms path: ~500 kB per RTT → a 1 MB window.
            (saved(500_000, 1_000), RMEM_MAX, 0, l, Ok(1_000_000)),
            // A connection that never received in bulk: nothing above the default.
            (saved(14_480, 1_000), RMEM_MAX, 0, l, Err(Cold::Small)),
            (saved(32 << 10, 1_000), RMEM_MAX, 0, l, Err(Cold::Small)),
            // Per-connection bound.
            (saved(10 << 20, 1_000), RMEM_MAX, 0, l, Ok(3 << 20)),
            (saved(10 << 20, 1_000), 64 << 20, 0, l, Ok(4 << 20)),
            // The kernel's own maximum (tcp_rmem[2] / 2, SO_RCVLOWAT's cap).
            (saved(10 << 20, 1_000), 1 << 20, 0, l, Ok(512 << 10)),
            // The budget: what is left is shared out, then nothing.
            (
                saved(500_000, 1_000),
                RMEM_MAX,
                (64 << 20) - 600_000,
                l,
                Ok(300_000),
            ),
            (
                saved(500_000, 1_000),
                RMEM_MAX,
                (64 << 20) - 100_000,
                l,
                Err(Cold::Budget),
            ),
            (
                saved(500_000, 1_000),
                RMEM_MAX,
                100 << 20,
                l,
                Err(Cold::Budget),
            ),
            // A hostile record (it cannot come from a peer, but from a corrupt file): bounded.
            (saved(u64::MAX, 1_000), RMEM_MAX, 0, l, Ok(3 << 20)),
            // A record from the future (clock step back) counts as fresh, bounded as any.
            (
                saved(500_000, 0).map(|s| Saved {
                    sampled_at_ms: NOW + 5_000,
                    ..s
                }),
                RMEM_MAX,
                0,
                l,
                Ok(1_000_000),
            ),
        ];
        for (i, (rec, rmem, granted, limits, want)) in cases.iter().enumerate() {
            assert_eq!(
                window(*rec, NOW, AGE, *rmem, *granted, *limits),
                *want,
                "case {i}: {rec:?} rmem_max {rmem} granted {granted}"
            );
        }
    }

    #[test]
    fn raise_grows_the_buffer_and_restores_the_low_water_mark_on_a_loopback_pair() {
        use std::net::{TcpListener, TcpStream};
        use std::os::fd::AsFd as _;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let fd = server.as_fd();
        let (before, after) = raise(fd, 1 << 20).unwrap();
        assert!(after > before, "sk_rcvbuf {before} -> {after}");
        assert!(
            after >= 1 << 20,
            "a 1 MiB window needs at least 1 MiB of buffer: {after}"
        );
        // The low-water mark is back at 1 byte.
        assert_eq!(rcvlowat(fd).unwrap(), 1);
    }
}
