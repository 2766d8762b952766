//! Giving freed heap back to the kernel after connections close.
//!
//! glibc's malloc keeps memory a thread freed in that thread's arena and returns an arena's pages
//! to the kernel only from its top, and only above a threshold that grows with the largest
//! allocation seen (up to 32 MB). A node whose peers churn therefore keeps near its peak heap
//! resident although it holds nothing: measured in `tests/telemetry_scale.rs`, 1,000
//! connect/disconnect cycles took RSS from 61.3 MB to 65.3 MB, and `malloc_trim(0)` then brought
//! it to 41.0 MB — the growth was the allocator's retention, not live state. So after connections
//! closed (the socket count fell below its peak since the last trim), at most once per
//! [`TRIM_INTERVAL`], [`Trim::after`] calls `malloc_trim(0)`, which releases the free pages of
//! every arena (`madvise(MADV_DONTNEED)`). A no-op on other C libraries.

use std::time::{Duration, Instant};

/// Shortest time between two trims (each walks every arena: ~ms at a 100 MB heap).
pub const TRIM_INTERVAL: Duration = Duration::from_secs(10);

/// When to trim: tracks the socket count's peak since the last trim.
#[derive(Debug)]
pub struct Trim {
    last: Instant,
    peak: usize,
}

impl Default for Trim {
    fn default() -> Self {
        Self::new()
    }
}

impl Trim {
    pub fn new() -> Self {
        Self {
            last: Instant::now(),
            peak: 0,
        }
    }

    /// Called with the current socket count (e.g. once per telemetry collection); trims when it
    /// fell below its peak since the last trim and the last trim is [`TRIM_INTERVAL`] old.
    /// Returns whether it trimmed.
    pub fn after(&mut self, sockets: usize) -> bool {
        self.peak = self.peak.max(sockets);
        if sockets >= self.peak || self.last.elapsed() < TRIM_INTERVAL {
            return false;
        }
        release_free_heap();
        self.last = Instant::now();
        self.peak = sockets;
        true
    }
}

#[cfg(target_env = "gnu")]
fn release_free_heap() {
    // SAFETY: malloc_trim only walks and releases the allocator's own free memory.
    unsafe { libc::malloc_trim(0) };
}

#[cfg(not(target_env = "gnu"))]
fn release_free_heap() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_only_after_the_count_fell_and_not_more_often_than_the_interval() {
        let mut t = Trim::new();
        t.last -= TRIM_INTERVAL;
        assert!(!t.after(5), "growing");
        assert!(!t.after(5), "steady");
        assert!(t.after(2), "fell below the peak");
        assert!(!t.after(1), "fell again, but the last trim is recent");
        t.last -= TRIM_INTERVAL;
        assert!(t.after(0), "the peak since the last trim was 2");
        assert!(!t.after(0), "nothing closed since");
    }
}
