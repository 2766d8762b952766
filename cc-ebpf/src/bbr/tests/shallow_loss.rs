//! Scenario (b)'s spread in the host model (session 13): one flow on a 15 kB buffer with 1%
//! random loss for 12 s over many seeds, its goodput from the first second as the bench counts
//! it. Prints only. `cargo test --lib --release explore_shallow_loss -- --ignored --nocapture`;
//! `SIM_SEEDS` seeds (32 by default), `SIM_SECS` seconds (12), `SIM_SEED` one seed alone (with
//! `BBR_SIM_TRACE`, its transitions; `BBR_SIM_TRACE_MS=1850-1920`, every ACK in that window).

use super::*;

#[test]
#[ignore]
fn explore_shallow_loss() {
    let seeds: u64 = std::env::var("SIM_SEEDS").map_or(32, |n| n.parse().unwrap());
    let secs: u64 = std::env::var("SIM_SECS").map_or(12, |n| n.parse().unwrap());
    let mbit = |pkts: u64, secs: u64| pkts as f64 * f64::from(MSS) * 8.0 / secs as f64 / 1e6;
    let mut all = Vec::new();
    let only: Option<u64> = std::env::var("SIM_SEED").ok().map(|n| n.parse().unwrap());
    for seed in (1..=seeds).filter(|s| only.is_none_or(|o| o == *s)) {
        let o = Path::mbit(100.0, 20, 15_000, 0.01).run(&BbrConfig::DEFAULT, secs, seed);
        let total = mbit(o.delivered_per_s.iter().sum(), secs);
        let per_s: Vec<String> = o
            .delivered_per_s
            .iter()
            .map(|&p| format!("{:.0}", mbit(p, 1)))
            .collect();
        eprintln!(
            "seed {seed:>3}: {total:5.1} Mbit/s, lost {:.2} %, per second {}",
            o.loss_fraction * 100.0,
            per_s.join(" ")
        );
        all.push(total);
    }
    all.sort_by(f64::total_cmp);
    let q = |f: f64| all[((all.len() - 1) as f64 * f).round() as usize];
    eprintln!(
        "{seeds} seeds: min {:.1} p10 {:.1} p25 {:.1} median {:.1} max {:.1}",
        q(0.0),
        q(0.1),
        q(0.25),
        q(0.5),
        q(1.0)
    );
}
