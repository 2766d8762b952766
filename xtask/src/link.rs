//! The testbed's links: what `cargo xtask run --link ...` accepts, and the shaping each link gets.
//!
//! A link is the path between one node and the router: a rate, a base round-trip time, a buffer
//! sized in bandwidth-delay products, and random loss. The router applies it on its egress
//! towards the node (an htb for the rate, a byte FIFO of the buffer, a delay of RTT/2 — the NFQUEUE delay line, or
//! netem where the kernel has it) and drops packets at random in both directions. A path between
//! nodes `a` and `b` therefore sees a round trip of `(rtt_a + rtt_b) / 2`: the configured RTT
//! when both links share it, as with every preset.
//!
//! Presets (`--link <preset>` for every node; `--link n2=<preset>` or `--link n2=20mbit,80ms,0.5bdp,1%`
//! for one, any field omitted taken from the default):
//!
//! | preset        | rate      | base RTT | buffer  | loss | what it shows |
//! |---------------|-----------|----------|---------|------|---------------|
//! | `lan`         | 1 Gbit/s  | 2 ms     | 2 BDP   | 0    | a fast, short path: little room for any queue |
//! | `wan` (default) | 100 Mbit/s | 40 ms | 4 BDP  | 0    | a full buffer adds 160 ms: loss-based algorithms fill it, model-based ones do not |
//! | `bufferbloat` | 20 Mbit/s | 40 ms    | 16 BDP  | 0    | a home uplink with an oversized buffer (640 ms when full) |
//! | `lossy`       | 50 Mbit/s | 80 ms    | 0.5 BDP | 1 %  | a shallow buffer and random loss: loss-based algorithms back off, BBR keeps its rate |

use std::{fmt, time::Duration};

use anyhow::{Context as _, bail};

/// One link's shape.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Link {
    pub rate_bits_per_second: u64,
    /// Round trip added by the path (half of it on the way to the node, see the module docs).
    pub rtt: Duration,
    /// The bottleneck's buffer as a multiple of the bandwidth-delay product (rate × RTT).
    pub buffer_bdp: f64,
    /// Probability that a packet to or from the node is dropped, in [0, 1).
    pub loss: f64,
}

/// The smallest buffer any link gets, bytes: ten full-size packets, so a tiny BDP (`lan`, or
/// a fraction of a BDP) still holds a burst.
const MIN_BUFFER_BYTES: u64 = 15_140;
/// The smallest burst, bytes: small, so that the rate, not bursts, shapes the traffic.
const MIN_BURST_BYTES: u64 = 4_096;
/// The shaper's burst as the bytes sent at the link's rate in this time: above ~300 Mbit/s a 4 KB
/// burst would need more timer wake-ups than the kernel gives a shaper.
const BURST_TIME: Duration = Duration::from_micros(250);

impl Link {
    pub const PRESETS: [(&'static str, Link); 4] = [
        (
            "lan",
            Link {
                rate_bits_per_second: 1_000_000_000,
                rtt: Duration::from_millis(2),
                buffer_bdp: 2.0,
                loss: 0.0,
            },
        ),
        (
            "wan",
            Link {
                rate_bits_per_second: 100_000_000,
                rtt: Duration::from_millis(40),
                buffer_bdp: 4.0,
                loss: 0.0,
            },
        ),
        (
            "bufferbloat",
            Link {
                rate_bits_per_second: 20_000_000,
                rtt: Duration::from_millis(40),
                buffer_bdp: 16.0,
                loss: 0.0,
            },
        ),
        (
            "lossy",
            Link {
                rate_bits_per_second: 50_000_000,
                rtt: Duration::from_millis(80),
                buffer_bdp: 0.5,
                loss: 0.01,
            },
        ),
    ];

    pub fn preset(name: &str) -> Option<Link> {
        Self::PRESETS
            .iter()
            .find(|(preset, _)| *preset == name)
            .map(|&(_, link)| link)
    }

    /// The bandwidth-delay product, bytes.
    pub fn bdp_bytes(&self) -> u64 {
        (self.rate_bits_per_second as f64 / 8.0 * self.rtt.as_secs_f64()) as u64
    }

    /// The bottleneck's buffer (its data queue), bytes.
    pub fn buffer_bytes(&self) -> u64 {
        ((self.bdp_bytes() as f64 * self.buffer_bdp) as u64).max(MIN_BUFFER_BYTES)
    }

    pub fn burst_bytes(&self) -> u64 {
        ((self.rate_bits_per_second as f64 / 8.0 * BURST_TIME.as_secs_f64()) as u64)
            .max(MIN_BURST_BYTES)
    }

    /// The delay added on the router's egress towards the node.
    pub fn one_way_delay(&self) -> Duration {
        self.rtt / 2
    }

    /// Applies `spec`'s fields (`20mbit`, `80ms`, `0.5bdp`, `1%`, comma-separated, any order
    /// and subset) or a preset name on top of `self`.
    fn with_spec(self, spec: &str) -> anyhow::Result<Link> {
        if let Some(preset) = Self::preset(spec) {
            return Ok(preset);
        }
        let mut link = self;
        for field in spec.split(',').map(str::trim) {
            if let Some(rate) = parse_rate(field) {
                link.rate_bits_per_second = rate.with_context(|| format!("rate {field:?}"))?;
            } else if let Some(ms) = field.strip_suffix("ms") {
                let ms: f64 = ms
                    .parse()
                    .with_context(|| format!("RTT {field:?}: expected e.g. 40ms"))?;
                if !(0.0..=10_000.0).contains(&ms) {
                    bail!("RTT {field:?}: expected 0 to 10000 ms");
                }
                link.rtt = Duration::from_secs_f64(ms / 1e3);
            } else if let Some(bdp) = field.strip_suffix("bdp") {
                let bdp: f64 = bdp
                    .parse()
                    .with_context(|| format!("buffer {field:?}: expected e.g. 0.5bdp"))?;
                if !(0.01..=100.0).contains(&bdp) {
                    bail!("buffer {field:?}: expected 0.01 to 100 BDPs");
                }
                link.buffer_bdp = bdp;
            } else if let Some(percent) = field.strip_suffix('%') {
                let percent: f64 = percent
                    .parse()
                    .with_context(|| format!("loss {field:?}: expected e.g. 1%"))?;
                if !(0.0..50.0).contains(&percent) {
                    bail!("loss {field:?}: expected 0 to 50 %");
                }
                link.loss = percent / 100.0;
            } else {
                bail!(
                    "{field:?} is neither a preset ({}) nor a rate (20mbit), RTT (80ms), buffer (0.5bdp) or loss (1%)",
                    preset_names()
                );
            }
        }
        Ok(link)
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} Mbit/s, {:.1} ms RTT, buffer {} BDP ({} kB), {}% loss",
            self.rate_bits_per_second as f64 / 1e6,
            self.rtt.as_secs_f64() * 1e3,
            self.buffer_bdp,
            self.buffer_bytes() / 1000,
            self.loss * 100.0
        )
    }
}

fn preset_names() -> String {
    Link::PRESETS
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join("|")
}

/// `Some(rate)` when `field` ends in a rate unit (`kbit`, `mbit`, `gbit`).
fn parse_rate(field: &str) -> Option<anyhow::Result<u64>> {
    let (number, scale) = [("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3)]
        .into_iter()
        .find_map(|(unit, scale)| field.strip_suffix(unit).map(|n| (n, scale)))?;
    Some((|| {
        let value: f64 = number.parse().context("expected e.g. 20mbit")?;
        let bits = value * scale;
        if !(100e3..=10e9).contains(&bits) {
            bail!("expected 100kbit to 10gbit");
        }
        Ok(bits as u64)
    })())
}

/// Every node's link, from the `--link` values: a preset or spec for all nodes, then
/// `n<i>=<preset or spec>` overrides, in the order given.
pub fn links(nodes: u8, specs: &[String]) -> anyhow::Result<Vec<Link>> {
    let mut default = Link::preset("wan").expect("wan is a preset");
    let mut overrides = Vec::new();
    for spec in specs {
        match spec.split_once('=') {
            Some((node, spec)) => {
                let i: u8 = node
                    .strip_prefix('n')
                    .and_then(|i| i.parse().ok())
                    .filter(|i| (1..=nodes).contains(i))
                    .with_context(|| {
                        format!("--link {node}=...: expected a node n1 to n{nodes}")
                    })?;
                overrides.push((i, spec));
            }
            None => {
                default = default
                    .with_spec(spec)
                    .with_context(|| format!("--link {spec}"))?;
            }
        }
    }
    let mut links = vec![default; usize::from(nodes)];
    for (i, spec) in overrides {
        let link = &mut links[usize::from(i - 1)];
        *link = link
            .with_spec(spec)
            .with_context(|| format!("--link n{i}={spec}"))?;
    }
    Ok(links)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_wan_and_presets_apply_to_all() {
        let links = links(2, &[]).unwrap();
        assert_eq!(links[0], Link::preset("wan").unwrap());
        let links = links_of(&["lossy"]);
        assert!(links.iter().all(|l| l.loss == 0.01));
    }

    fn links_of(specs: &[&str]) -> Vec<Link> {
        let specs: Vec<String> = specs.iter().map(|s| (*s).to_owned()).collect();
        links(3, &specs).unwrap()
    }

    #[test]
    fn per_node_overrides_change_only_their_fields() {
        let links = links_of(&["n2=20mbit,80ms,0.5bdp,1%", "n3=10ms"]);
        let wan = Link::preset("wan").unwrap();
        assert_eq!(links[0], wan);
        assert_eq!(links[1].rate_bits_per_second, 20_000_000);
        assert_eq!(links[1].rtt, Duration::from_millis(80));
        assert_eq!(links[1].buffer_bdp, 0.5);
        assert!((links[1].loss - 0.01).abs() < 1e-12);
        assert_eq!(links[2].rtt, Duration::from_millis(10));
        assert_eq!(links[2].rate_bits_per_second, wan.rate_bits_per_second);
    }

    #[test]
    fn wan_buffer_holds_four_bdps() {
        let wan = Link::preset("wan").unwrap();
        // 100 Mbit/s × 40 ms = 500 kB; 4 of them drain in 160 ms at the link's rate.
        assert_eq!(wan.bdp_bytes(), 500_000);
        assert_eq!(wan.buffer_bytes(), 2_000_000);
        assert_eq!(wan.one_way_delay(), Duration::from_millis(20));
        assert_eq!(wan.burst_bytes(), MIN_BURST_BYTES);
    }

    #[test]
    fn rejects_bad_specs_with_the_field_named() {
        for (spec, expected) in [
            ("n9=wan", "expected a node n1 to n3"),
            ("fast", "neither a preset"),
            ("n1=20mbit,80", "neither a preset"),
            ("60%", "loss"),
            ("1bit", "neither a preset"),
            ("0.001kbit", "rate"),
        ] {
            let err = links(3, &[spec.to_owned()]).unwrap_err();
            assert!(format!("{err:#}").contains(expected), "{spec}: {err:#}");
        }
    }
}
