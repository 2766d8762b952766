//! The snapshot: everything the exporters show, read from the kernel at one instant by the
//! [collector](super::collector) and shared, immutable, through a `tokio::sync::watch` channel.
//!
//! Plain data only: no fds, no locks, no handles. `/metrics`, `/api/peers`, the history and the
//! live page's stream all encode the same `Arc<Snapshot>`; requests between two collections see
//! the same values (at most [`INTERVAL`](super::collector::INTERVAL) old).

use std::collections::BTreeMap;

use cc_ebpf_common::{ProbeCounters, RttHist};

use super::{ClosedTotals, PeerConnection};
use crate::ebpf::RunStats;

/// What the node knew about its connections and its probes at [`Snapshot::taken_unix_ms`].
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Unix time of the collection, milliseconds.
    pub taken_unix_ms: u64,
    /// Monotonically increasing collection number (0: the empty snapshot before the first).
    pub sequence: u64,
    /// Every authenticated connection, sorted by PeerId then cookie.
    pub connections: Vec<PeerConnection>,
    /// Peers that get per-peer series: the busiest by recent throughput, with hysteresis
    /// (see [`super::topk`]); sorted.
    pub top_peers: Vec<String>,
    /// Registered sockets without an authenticated PeerId.
    pub unbound_sockets: usize,
    /// Of those, sockets registered longer than the handshake timeout ago: the transport drops
    /// a socket whose handshake runs out, so anything here is a join that was lost.
    pub unbound_past_handshake_timeout: usize,
    /// Totals of connections whose tracking ended, per algorithm.
    pub closed: BTreeMap<String, ClosedTotals>,
    /// `None` when the node runs without its probes.
    pub probes: Option<ProbeSnapshot>,
    /// Each probe, algorithm and kernel facility: available or why not (probed at start).
    pub features: std::sync::Arc<[crate::ebpf::features::Feature]>,
    pub process: ProcessStats,
    /// How long the collection took, seconds.
    pub collect_seconds: f64,
}

/// The probes' own health at collection time.
#[derive(Clone, Debug, Default)]
pub struct ProbeSnapshot {
    /// `(program, kernel id)` of each attached program.
    pub programs: Vec<(&'static str, u32)>,
    /// Programs that failed to load or attach, with the error.
    pub failed: Vec<(&'static str, String)>,
    pub counters: ProbeCounters,
    /// Smoothed-RTT histograms per algorithm (kernel name).
    pub rtt_histograms: Vec<(String, RttHist)>,
    /// `(map, entries, max_entries)`.
    pub maps: Vec<(&'static str, usize, u32)>,
    /// Dropped sockets whose entry waits for `tcp_destroy_sock`.
    pub closing: usize,
    pub run_stats: Vec<(&'static str, RunStats)>,
    /// `kernel.bpf_stats_enabled` is on (by this node or anyone).
    pub stats_enabled: bool,
    /// How long the latest refresh of every tracked socket's entry (the `iter/tcp` walk,
    /// `Probes::refresh`) took, seconds: this collection's, or an earlier one's while the walk's
    /// time budget (`collector::WalkBudget`) spaces walks out; `None` without it or after a
    /// failed walk.
    pub refresh_seconds: Option<f64>,
}

/// The node process itself, from `/proc/self`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessStats {
    pub resident_bytes: u64,
    pub open_fds: u64,
    pub cpu_seconds: f64,
    pub start_unix_seconds: f64,
}

impl ProcessStats {
    /// Reads `/proc/self/{statm,stat,fd}`; fields it cannot read stay 0.
    pub fn read() -> Self {
        let page = page_size();
        let resident_bytes = std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
            .map_or(0, |pages| pages * page);
        let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
        let (cpu_seconds, start_unix_seconds) = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| parse_stat(&s))
            .unwrap_or_default();
        Self {
            resident_bytes,
            open_fds,
            cpu_seconds,
            start_unix_seconds,
        }
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as u64 } else { 4096 }
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if n > 0 { n as f64 } else { 100.0 }
}

/// `(utime + stime, start time)` in seconds from `/proc/self/stat` (fields after the
/// parenthesised command name, which may itself hold spaces and parentheses).
fn parse_stat(stat: &str) -> Option<(f64, f64)> {
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime is field 14, stime 15, starttime 22.
    let field = |n: usize| fields.get(n - 3)?.parse::<f64>().ok();
    let ticks = clock_ticks();
    let cpu = (field(14)? + field(15)?) / ticks;
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok())
    });
    let start = boot.map_or(0.0, |b| b + field(22).unwrap_or(0.0) / ticks);
    Some((cpu, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_stats_are_this_process() {
        let p = ProcessStats::read();
        assert!(p.resident_bytes > 1 << 20, "{p:?}");
        assert!(p.open_fds >= 3, "{p:?}");
        assert!(p.start_unix_seconds > 1.0e9, "{p:?}");
        // Burn CPU (the machine is shared: compare with the thread's own CPU clock) and see
        // the process counter follow.
        let before = p.cpu_seconds;
        let thread_cpu = || {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: valid pointer to a timespec.
            unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
            ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
        };
        let start = thread_cpu();
        let mut x = 0u64;
        while thread_cpu() - start < 0.2 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let after = ProcessStats::read().cpu_seconds;
        assert!(after >= before + 0.15, "{before} -> {after}");
    }

    #[test]
    fn stat_with_odd_command_name() {
        let line = "42 (a) b (c) R 1 2 3 4 5 6 7 8 9 10 250 150 0 0 20 0 1 0 500 0 0";
        let (cpu, _) = parse_stat(line).unwrap();
        assert!((cpu - 400.0 / clock_ticks()).abs() < 1e-9);
    }
}
