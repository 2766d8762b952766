//! One configuration through the cases that decide scenario (a)'s RTT tail and those it must
//! not cost (session 9, docs/bench.md "(a) tail: draining at 0.75"): one flow on a 2 MB
//! buffer with and without ACK jitter (utilisation, smoothed-RTT median and p95), random loss
//! on a 1-BDP and a 15 kB buffer, one flow beside CUBIC (Jain's index over `SIM_D_SEEDS`
//! seeds, 4 by default, and their mean), and eight staggered flows (Jain's index over
//! `SIM_SEEDS` seeds, 16 by default). Prints only; the assertions live in the
//! tests it mirrors. `cargo test --lib --release explore_tail -- --ignored --nocapture`;
//! `DOWN_GAIN` (in 1/256) overrides `probe_down_gain`, `ONLY_A` stops after the deep buffer.

use super::fairness::{eight_staggered, with_cubic};
use super::*;

fn cfg() -> BbrConfig {
    let mut c = BbrConfig::DEFAULT;
    if let Ok(g) = std::env::var("DOWN_GAIN") {
        c.probe_down_gain = g.parse().unwrap();
    }
    c
}

#[test]
#[ignore]
fn explore_tail() {
    let cfg = cfg();
    let seeds: u64 = std::env::var("SIM_SEEDS").map_or(16, |n| n.parse().unwrap());
    // (a): one flow, 2 MB buffer.
    let mut u = Vec::new();
    let mut p95 = Vec::new();
    let mut sp50 = Vec::new();
    let mut sp95 = Vec::new();
    for seed in 1..=4 {
        let o = Path::mbit(100.0, 20, 2_000_000, 0.0).run(&cfg, 20, seed);
        u.push(o.utilisation);
        p95.push(o.rtt_p95_us as f64 / 1000.0);
        sp50.push(o.srtt_p50_us as f64 / 1000.0);
        sp95.push(o.srtt_p95_us as f64 / 1000.0);
    }
    eprintln!("(a) util {u:.3?} rtt p95 {p95:.1?} srtt p50 {sp50:.1?} srtt p95 {sp95:.1?}");
    for jitter in [300, 1000, 3000] {
        let mut r = Vec::new();
        for seed in 1..=4 {
            let path = Path {
                ack_jitter_us: jitter,
                ..Path::mbit(100.0, 20, 2_000_000, 0.0)
            };
            let o = path.run(&cfg, 20, seed);
            r.push((
                (o.utilisation * 1000.0).round() / 1000.0,
                o.srtt_p50_us / 100,
                o.srtt_p95_us / 100,
            ));
        }
        eprintln!("(a) ack jitter {jitter} us: (util, srtt p50, p95 in 0.1 ms) {r:?}");
    }
    if std::env::var_os("ONLY_A").is_some() {
        return;
    }
    // Random loss: 1-BDP buffer 0.5/1/2 %, 15 kB 1 %.
    for (buf, loss) in [
        (250_000, 0.005),
        (250_000, 0.01),
        (250_000, 0.02),
        (15_000, 0.01),
    ] {
        let o: Vec<(f64, f64)> = (1..=3)
            .map(|seed| {
                let o = Path::mbit(100.0, 20, buf, loss).run(&cfg, 20, seed);
                (o.utilisation, o.loss_fraction * 100.0)
            })
            .collect();
        eprintln!("loss {loss} buf {buf}: (util, lost %) {o:.3?}");
    }
    // (d).
    let d_seeds: u64 = std::env::var("SIM_D_SEEDS").map_or(4, |n| n.parse().unwrap());
    let half: Vec<f64> = (1..=d_seeds)
        .map(|s| with_cubic(&cfg, 0.5, 0, 12, s).jain())
        .collect();
    let deep: Vec<_> = (1..=d_seeds)
        .map(|s| with_cubic(&cfg, 4.0, 0, 12, s))
        .collect();
    let deep_jain: Vec<f64> = deep.iter().map(|o| o.jain()).collect();
    let deep_bbr: Vec<f64> = deep.iter().map(|o| o.mbit[0]).collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    eprintln!(
        "(d) 0.5 BDP Jain {half:.3?} (mean {:.3}); 4 BDP Jain {deep_jain:.3?} (mean {:.3}) bbr-p2p {deep_bbr:.1?}",
        mean(&half),
        mean(&deep_jain)
    );
    // (e).
    let all: Vec<_> = (1..=seeds).map(|s| eight_staggered(&cfg, 12, s)).collect();
    let jains: Vec<f64> = all.iter().map(|s| s.jain()).collect();
    let tot = all.iter().map(|s| s.mbit.iter().sum::<f64>()).sum::<f64>() / all.len() as f64;
    let loss = all.iter().map(|s| s.loss_fraction).sum::<f64>() / all.len() as f64;
    let first = all.iter().map(|s| s.mbit[0]).sum::<f64>() / all.len() as f64;
    eprintln!(
        "(e) total {tot:.1} Mbit/s, lost {:.2} %, first flow {first:.1}",
        loss * 100.0
    );
    let mean = jains.iter().sum::<f64>() / jains.len() as f64;
    let sd = (jains.iter().map(|j| (j - mean).powi(2)).sum::<f64>() / jains.len() as f64).sqrt();
    eprintln!("(e) {seeds} seeds: mean Jain {mean:.3} sd {sd:.3}");
}
