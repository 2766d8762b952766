//! Which peers get per-peer series: the `k` busiest by recent throughput, with hysteresis so a
//! peer's series does not end and restart each time its traffic crosses another's.
//!
//! Recent throughput is an exponentially weighted moving average of the bytes (acked +
//! received) per second over all of the peer's connections, updated once per collection. An
//! incumbent keeps its place until a challenger's rate exceeds the incumbent's by
//! [`HYSTERESIS`].

use std::collections::{BTreeMap, BTreeSet};

/// A challenger must beat an incumbent's recent throughput by this factor to take its place.
pub const HYSTERESIS: f64 = 1.5;

/// Weight of the newest per-second sample in the moving average: 0.2 gives a time constant of
/// about five collections, long enough to ride out one idle second, short enough to follow a
/// transfer that started ten seconds ago.
pub const EWMA_WEIGHT: f64 = 0.2;

/// Folds one sample into a peer's moving average (`None`: the peer's first sample).
pub fn ewma(previous: Option<f64>, sample: f64) -> f64 {
    match previous {
        Some(p) => p + EWMA_WEIGHT * (sample - p),
        None => sample,
    }
}

/// The new top-`k` set given each connected peer's recent rate and the previous set. Peers
/// no longer connected (absent from `rates`) leave it.
pub fn select(
    previous: &BTreeSet<String>,
    rates: &BTreeMap<String, f64>,
    k: usize,
) -> BTreeSet<String> {
    let mut ranked: Vec<(&String, f64, bool)> = rates
        .iter()
        .map(|(peer, &rate)| {
            let incumbent = previous.contains(peer);
            let score = if incumbent { rate * HYSTERESIS } else { rate };
            (peer, score, incumbent)
        })
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.2.cmp(&a.2)).then(a.0.cmp(b.0)));
    ranked
        .into_iter()
        .take(k)
        .map(|(p, _, _)| p.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates(list: &[(&str, f64)]) -> BTreeMap<String, f64> {
        list.iter().map(|&(p, r)| (p.to_owned(), r)).collect()
    }

    fn set(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|&p| p.to_owned()).collect()
    }

    #[test]
    fn busiest_first_and_ties_keep_the_incumbent() {
        let r = rates(&[("a", 10.0), ("b", 30.0), ("c", 20.0)]);
        assert_eq!(select(&set(&[]), &r, 2), set(&["b", "c"]));
        assert_eq!(select(&set(&[]), &r, 0), set(&[]));
        let idle = rates(&[("a", 0.0), ("b", 0.0), ("c", 0.0)]);
        assert_eq!(select(&set(&["c"]), &idle, 1), set(&["c"]));
    }

    #[test]
    fn a_challenger_needs_the_margin() {
        let previous = set(&["a"]);
        // 1.4× the incumbent: not enough.
        assert_eq!(
            select(&previous, &rates(&[("a", 100.0), ("b", 140.0)]), 1),
            set(&["a"])
        );
        // 1.6×: replaces it.
        assert_eq!(
            select(&previous, &rates(&[("a", 100.0), ("b", 160.0)]), 1),
            set(&["b"])
        );
        // A disconnected incumbent leaves.
        assert_eq!(select(&previous, &rates(&[("b", 1.0)]), 1), set(&["b"]));
    }

    #[test]
    fn alternating_bursts_do_not_flap() {
        // Two peers taking turns at a similar rate: with the average and the margin, the
        // set changes at most once over twenty seconds.
        let mut avg: BTreeMap<String, f64> = BTreeMap::new();
        let mut top = BTreeSet::new();
        let mut changes = 0;
        for second in 0..20 {
            let (a, b) = if second % 2 == 0 {
                (100.0, 80.0)
            } else {
                (80.0, 100.0)
            };
            for (peer, sample) in [("a", a), ("b", b)] {
                let next = ewma(avg.get(peer).copied(), sample);
                avg.insert(peer.to_owned(), next);
            }
            let next = select(&top, &avg, 1);
            changes += usize::from(next != top);
            top = next;
        }
        assert_eq!(changes, 1, "{top:?}");
    }
}
