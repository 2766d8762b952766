//! Several flows through one bottleneck (issue 10's fairness scenarios (d) and (e) in a packet
//! simulation): bbr-p2p flows, optionally a CUBIC flow, sharing a tail-drop FIFO. The
//! assertions are about the shares (Jain's index of the flows' goodputs over a window all of
//! them share), not about the model's own numbers.

use std::collections::VecDeque;

use super::{MSS, RateTag, Rng, conn};
use crate::bbr::*;

/// Simulation step, µs.
const DT_US: u64 = 10;

/// One packet of a flow.
#[derive(Clone, Copy)]
struct Sent {
    tag: RateTag,
    /// ACKed or marked lost: out of flight.
    done: bool,
}

/// CUBIC (RFC 9438) in outline: slow start, β = 0.7, C = 0.4, the Reno-friendly region; not
/// paced (the kernel's cubic sends a window's worth as fast as ACKs clock it out).
#[derive(Default)]
struct Cubic {
    w_max: f64,
    epoch_us: u64,
    /// Reno-friendly estimate, packets.
    w_est: f64,
    cwnd: f64,
    ssthresh: f64,
}

impl Cubic {
    fn new() -> Self {
        Self {
            cwnd: f64::from(TCP_INIT_CWND),
            ssthresh: f64::INFINITY,
            ..Self::default()
        }
    }

    fn on_ack(&mut self, acked: u32, now_us: u64, srtt_us: u64) {
        for _ in 0..acked {
            if self.cwnd < self.ssthresh {
                self.cwnd += 1.0;
                continue;
            }
            if self.epoch_us == 0 {
                self.epoch_us = now_us;
                self.w_est = self.cwnd;
                if self.w_max < self.cwnd {
                    self.w_max = self.cwnd;
                }
            }
            let k = (self.w_max * 0.3 / 0.4).cbrt();
            let t = (now_us - self.epoch_us) as f64 / 1e6 + srtt_us as f64 / 1e6;
            let target = 0.4 * (t - k).powi(3) + self.w_max;
            self.w_est += 3.0 * 0.3 / 1.7 / self.cwnd;
            let target = target.max(self.w_est).min(1.5 * self.cwnd);
            if target > self.cwnd {
                self.cwnd += (target - self.cwnd) / self.cwnd;
            } else {
                self.cwnd += 0.01 / self.cwnd;
            }
        }
    }

    fn on_loss(&mut self) {
        self.w_max = self.cwnd;
        self.cwnd = (self.cwnd * 0.7).max(2.0);
        self.ssthresh = self.cwnd;
        self.epoch_us = 0;
    }
}

/// The algorithm a flow runs.
enum Algorithm {
    BbrP2p(Box<Bbr>),
    Cubic(Cubic),
}

/// One sender, its packets and its ACK clock.
struct Flow {
    alg: Algorithm,
    c: Conn,
    start_us: u64,
    started: bool,
    packets: Vec<Sent>,
    acks: VecDeque<(usize, u64)>,
    next_send: f64,
    first_tx_us: u64,
    first_undone: usize,
    highest_acked: Option<usize>,
    recovery_end: usize,
    last_ack_us: u64,
    srtt: u64,
    kernel_min_rtt: u32,
    inflight: u32,
    cwnd_limited: bool,
    rng: Rng,
    /// Packets delivered inside the measurement window.
    window_delivered: u64,
    sent: u64,
    lost: u64,
    diag: Diag,
}

/// What `BBR_SIM_DIAG` prints at the end of a run, and each flow's STARTUP exit rate.
#[derive(Default)]
struct Diag {
    /// Max-bw estimate when STARTUP ended, Mbit/s.
    startup_exit_mbit: Option<f64>,
    mode: u8,
    bw_hi: [u32; 2],
    /// Delivered count and time at the last advance of the max-bw filter.
    delivered_at_adv: u32,
    t_adv: u64,
    /// Phase of the ACK that last raised the filter's current slot (9: not PROBE_BW).
    raise_phase: u8,
    events: Vec<String>,
    /// bbr-p2p's ACKs, those the fast path took, and those of them taken while draining
    /// through a standing queue (deviations 17 and 18).
    acks: [u64; 3],
}

impl Flow {
    fn new(alg: Algorithm, start_us: u64, seed: u64) -> Self {
        Self {
            alg,
            c: conn(),
            start_us,
            started: false,
            packets: Vec::new(),
            acks: VecDeque::new(),
            next_send: 0.0,
            first_tx_us: 0,
            first_undone: 0,
            highest_acked: None,
            recovery_end: 0,
            last_ack_us: 0,
            srtt: 0,
            kernel_min_rtt: u32::MAX,
            inflight: 0,
            cwnd_limited: false,
            rng: Rng(seed),
            window_delivered: 0,
            sent: 0,
            lost: 0,
            diag: Diag::default(),
        }
    }

    fn bbr(&self) -> Option<&Bbr> {
        match &self.alg {
            Algorithm::BbrP2p(s) => Some(s),
            Algorithm::Cubic(_) => None,
        }
    }

    fn start(&mut self, cfg: &BbrConfig) {
        self.c.now_us = self.start_us.max(1);
        self.c.delivered_mstamp_us = self.c.now_us;
        self.next_send = self.start_us as f64;
        self.last_ack_us = self.start_us;
        if let Algorithm::BbrP2p(s) = &mut self.alg {
            s.init(&mut self.c, cfg);
        }
    }

    fn ca_state_change(&mut self, cfg: &BbrConfig, state: u8) {
        match &mut self.alg {
            Algorithm::BbrP2p(s) => {
                if state != TCP_CA_OPEN {
                    self.c.ssthresh = s.on_ssthresh(&self.c);
                }
                s.on_set_state(&mut self.c, cfg, state);
            }
            Algorithm::Cubic(cubic) => {
                if state != TCP_CA_OPEN {
                    cubic.on_loss();
                }
            }
        }
        self.c.ca_state = state;
    }

    /// ACKs that arrived by `t`: loss detection (3 packets of reordering), recovery, the rate
    /// sample and the algorithm; then the retransmission timer.
    fn receive_acks(&mut self, t: u64, window: (u64, u64), cfg: &BbrConfig) {
        let mut newest: Option<usize> = None;
        let mut acked = 0u32;
        let prior_in_flight = self.inflight;
        while let Some(&(p, at)) = self.acks.front() {
            if at > t {
                break;
            }
            self.acks.pop_front();
            let pkt = &mut self.packets[p];
            if !pkt.done {
                pkt.done = true;
                self.inflight -= 1;
            }
            acked += 1;
            self.c.delivered += 1;
            self.c.delivered_mstamp_us = t;
            if (window.0..window.1).contains(&t) {
                self.window_delivered += 1;
            }
            if newest.is_none_or(|n| self.packets[n].tag.delivered <= self.packets[p].tag.delivered)
            {
                newest = Some(p);
            }
            self.highest_acked = Some(self.highest_acked.map_or(p, |h| h.max(p)));
        }
        if let Some(n) = newest {
            self.last_ack_us = t;
            let mut losses = 0;
            let horizon = self.highest_acked.unwrap_or(0).saturating_sub(3);
            while self.first_undone < horizon {
                let pkt = &mut self.packets[self.first_undone];
                if !pkt.done {
                    pkt.done = true;
                    self.inflight -= 1;
                    losses += 1;
                }
                self.first_undone += 1;
            }
            self.c.lost += losses;
            self.lost += u64::from(losses);
            if losses > 0 && self.c.ca_state == TCP_CA_OPEN {
                self.ca_state_change(cfg, TCP_CA_RECOVERY);
                self.recovery_end = self.packets.len();
            } else if self.c.ca_state != TCP_CA_OPEN
                && self.highest_acked.unwrap_or(0) >= self.recovery_end
            {
                self.ca_state_change(cfg, TCP_CA_OPEN);
            }
            let pkt = self.packets[n];
            let rtt = t - pkt.tag.sent_us;
            self.srtt = if self.srtt == 0 {
                rtt
            } else {
                (7 * self.srtt + rtt) / 8
            };
            self.kernel_min_rtt = self.kernel_min_rtt.min(rtt as u32);
            self.first_tx_us = pkt.tag.sent_us;
            let c = &mut self.c;
            if c.app_limited != 0 && after32(c.delivered, c.app_limited) {
                c.app_limited = 0;
            }
            c.now_us = t;
            c.clock_ns = t * 1000;
            c.packets_in_flight = self.inflight;
            c.srtt_us_x8 = (self.srtt * 8) as u32;
            c.kernel_min_rtt_us = self.kernel_min_rtt;
            c.cwnd_limited = self.cwnd_limited;
            c.wstamp_ns = (self.next_send.max(t as f64) * 1000.0) as u64;
            let rs = pkt
                .tag
                .sample(t, c, self.kernel_min_rtt, losses, acked, prior_in_flight);
            match &mut self.alg {
                Algorithm::BbrP2p(s) => {
                    let draining = s.cruise_drain != 0;
                    let fast = super::ack_both(s, c, &rs, cfg, &mut self.rng);
                    let acks = &mut self.diag.acks;
                    acks[0] += 1;
                    acks[1] += u64::from(fast);
                    acks[2] += u64::from(fast && draining);
                }
                Algorithm::Cubic(cubic) => {
                    if c.ca_state == TCP_CA_OPEN {
                        cubic.on_ack(acked, t, self.srtt);
                    }
                    c.cwnd = cubic.cwnd as u32;
                }
            }
            self.cwnd_limited = false;
        }
        if self.inflight > 0 && t - self.last_ack_us > 200_000.max(2 * self.srtt) {
            for pkt in self.packets[self.first_undone..]
                .iter_mut()
                .filter(|p| !p.done)
            {
                pkt.done = true;
                self.c.lost += 1;
                self.lost += 1;
            }
            self.inflight = 0;
            self.ca_state_change(cfg, TCP_CA_LOSS);
            self.recovery_end = self.packets.len();
            self.c.cwnd = 1;
            if let Algorithm::Cubic(cubic) = &mut self.alg {
                cubic.cwnd = 1.0;
            }
            self.last_ack_us = t;
        }
    }

    /// Sends what cwnd and (for bbr-p2p) pacing allow by `t`; returns the packets sent.
    fn send(&mut self, t: u64, out: &mut Vec<usize>) {
        let tf = t as f64;
        let paced = matches!(self.alg, Algorithm::BbrP2p(_));
        self.next_send = self.next_send.max(tf - DT_US as f64);
        while !paced || self.next_send <= tf {
            if self.inflight >= self.c.cwnd {
                self.cwnd_limited = true;
                break;
            }
            if self.inflight == 0 {
                self.first_tx_us = t;
                self.c.delivered_mstamp_us = t;
            }
            out.push(self.packets.len());
            self.packets.push(Sent {
                tag: RateTag::stamp(t, &self.c, self.first_tx_us),
                done: false,
            });
            self.sent += 1;
            self.inflight += 1;
            let rate = (self.c.pacing_rate as f64).max(1.0);
            self.next_send += f64::from(MSS) / rate * 1e6;
        }
    }
}

/// A bottleneck shared by several flows: `mbit` Mbit/s, a tail-drop FIFO of `buffer_bytes`,
/// `rtt_ms` of propagation delay for the round trip.
struct Shared {
    rate_pkts_per_us: f64,
    rtt_us: u64,
    buffer_pkts: usize,
}

/// What each flow got over the shared window.
#[derive(Debug)]
pub(super) struct Shares {
    /// Mbit/s per flow, in start order.
    pub(super) mbit: Vec<f64>,
    /// Packets lost ÷ sent, all flows.
    pub(super) loss_fraction: f64,
    /// Each bbr-p2p flow's max-bw estimate when it left STARTUP, Mbit/s, in start order.
    startup_exit_mbit: Vec<Option<f64>>,
    /// [`Diag::acks`] summed over the flows.
    acks: [u64; 3],
}

impl Shares {
    /// Jain's index (Σx)² / (n·Σx²).
    pub(super) fn jain(&self) -> f64 {
        let sum: f64 = self.mbit.iter().sum();
        let sq: f64 = self.mbit.iter().map(|x| x * x).sum();
        sum * sum / (self.mbit.len() as f64 * sq)
    }
}

impl Shared {
    fn new(mbit: f64, rtt_ms: u64, buffer_bytes: usize) -> Self {
        Self {
            rate_pkts_per_us: mbit * 1e6 / 8.0 / f64::from(MSS) / 1e6,
            rtt_us: rtt_ms * 1000,
            buffer_pkts: (buffer_bytes / MSS as usize).max(1),
        }
    }

    /// Runs `flows` (started at their `start_us`) until `end_us`; the shares are measured over
    /// `[window_start_us, end_us)`. `trace` prints each bbr-p2p flow's state every 500 ms.
    fn run(
        &self,
        mut flows: Vec<Flow>,
        cfg: &BbrConfig,
        window_start_us: u64,
        end_us: u64,
        trace: bool,
    ) -> Shares {
        let svc_us = 1.0 / self.rate_pkts_per_us;
        let mut queue: VecDeque<(usize, usize, f64)> = VecDeque::new();
        let mut link_free = 0.0f64;
        let mut out = Vec::new();
        let mut t = 0u64;
        while t < end_us {
            t += DT_US;
            let tf = t as f64;
            while let Some(&(f, p, depart)) = queue.front() {
                if depart > tf {
                    break;
                }
                queue.pop_front();
                flows[f].acks.push_back((p, depart as u64 + self.rtt_us));
            }
            for (i, flow) in flows.iter_mut().enumerate() {
                if t < flow.start_us {
                    continue;
                }
                if !flow.started {
                    flow.started = true;
                    flow.start(cfg);
                }
                flow.receive_acks(t, (window_start_us, end_us), cfg);
                if let Some(s) = flow.bbr() {
                    let d = &flow.diag;
                    let (mode, phase, bw_hi) = (s.mode, s.cycle_idx, s.bw_hi);
                    let mut ev = Vec::new();
                    let mut exit = d.startup_exit_mbit;
                    if d.mode == Mode::Startup as u8 && mode != d.mode {
                        exit = Some(mbit_of_bw(s.max_bw()));
                        ev.push(format!(
                            "t {:.2} i{i} STARTUP exit bw {:.1} loss-exit {}",
                            tf / 1e6,
                            mbit_of_bw(s.max_bw()),
                            s.inflight_hi != UNBOUNDED
                        ));
                    }
                    let adv = bw_hi[1] == 0 && d.bw_hi[1] != 0 && bw_hi[0] == d.bw_hi[1];
                    let mut newd = (d.delivered_at_adv, d.t_adv);
                    let raise_phase = if bw_hi[1] > d.bw_hi[1] {
                        if mode == Mode::ProbeBw as u8 {
                            phase
                        } else {
                            9
                        }
                    } else {
                        d.raise_phase
                    };
                    if adv {
                        let secs = (t - d.t_adv) as f64 / 1e6;
                        let rate =
                            f64::from(flow.c.delivered - d.delivered_at_adv) * f64::from(MSS) * 8.0
                                / secs.max(1e-6)
                                / 1e6;
                        ev.push(format!(
                            "t {:.2} i{i} advance: slots [{:.1}, {:.1}] -> [{:.1}, 0]; cycle {:.2} s delivered {:.1} Mbit/s, cycle max/avg {:.2}, bw_lo {:.1} max-from-phase {}",
                            tf / 1e6,
                            mbit_of_bw(d.bw_hi[0]),
                            mbit_of_bw(d.bw_hi[1]),
                            mbit_of_bw(bw_hi[0]),
                            secs,
                            rate,
                            mbit_of_bw(d.bw_hi[1]) / rate.max(1e-6),
                            if s.bw_lo == UNBOUNDED { -1.0 } else { mbit_of_bw(s.bw_lo) },
                            d.raise_phase
                        ));
                        newd = (flow.c.delivered, t);
                    }
                    let d = &mut flow.diag;
                    d.mode = mode;
                    d.bw_hi = bw_hi;
                    d.raise_phase = raise_phase;
                    d.startup_exit_mbit = exit;
                    (d.delivered_at_adv, d.t_adv) = newd;
                    d.events.extend(ev);
                }
                out.clear();
                flow.send(t, &mut out);
                for &p in &out {
                    if queue.len() < self.buffer_pkts {
                        let depart = link_free.max(tf) + svc_us;
                        link_free = depart;
                        queue.push_back((i, p, depart));
                    }
                }
            }
            if trace && t.is_multiple_of(500_000) {
                let states: Vec<String> = flows
                    .iter()
                    .filter(|f| t >= f.start_us)
                    .map(|f| match f.bbr() {
                        Some(s) => format!(
                            "{}{} cw {} bw {:.1} lo {:.1} hi {} ilo {} mrtt {:.1}",
                            &s.mode().name()[..2],
                            s.phase() as u8,
                            f.c.cwnd,
                            mbit_of_bw(s.max_bw()),
                            if s.bw_lo == UNBOUNDED {
                                -1.0
                            } else {
                                mbit_of_bw(s.bw_lo)
                            },
                            s.inflight_hi as i32,
                            s.inflight_lo as i32,
                            f64::from(s.min_rtt_us) / 1000.0
                        ),
                        None => format!("cubic cw {}", f.c.cwnd),
                    })
                    .collect();
                eprintln!(
                    "t {:>5} q {:>3} | {}",
                    t / 1000,
                    queue.len(),
                    states.join(" | ")
                );
            }
        }
        if std::env::var_os("BBR_SIM_DIAG").is_some() {
            let mut all: Vec<&String> = flows.iter().flat_map(|f| f.diag.events.iter()).collect();
            all.sort_by(|a, b| {
                let ta: f64 = a.split(' ').nth(1).unwrap().parse().unwrap();
                let tb: f64 = b.split(' ').nth(1).unwrap().parse().unwrap();
                ta.partial_cmp(&tb).unwrap()
            });
            for e in all {
                eprintln!("{e}");
            }
        }
        let secs = (end_us - window_start_us) as f64 / 1e6;
        let (sent, lost) = flows
            .iter()
            .fold((0, 0), |(s, l), f| (s + f.sent, l + f.lost));
        Shares {
            mbit: flows
                .iter()
                .map(|f| f.window_delivered as f64 * f64::from(MSS) * 8.0 / secs / 1e6)
                .collect(),
            loss_fraction: lost as f64 / sent.max(1) as f64,
            startup_exit_mbit: flows.iter().map(|f| f.diag.startup_exit_mbit).collect(),
            acks: flows.iter().fold([0; 3], |a, f| {
                let b = f.diag.acks;
                [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
            }),
        }
    }
}

fn mbit_of_bw(bw: u32) -> f64 {
    f64::from(bw) * f64::from(MSS) * 8.0 / BW_UNIT as f64
}

fn trace() -> bool {
    std::env::var_os("BBR_SIM_TRACE").is_some()
}

/// Scenario (e): eight bbr-p2p flows on 100 Mbit/s, 20 ms, a 1-BDP buffer, started 1 s apart,
/// measured over the `window_s` seconds after the last one started.
pub(super) fn eight_staggered(cfg: &BbrConfig, window_s: u64, seed: u64) -> Shares {
    let path = Shared::new(100.0, 20, 250_000);
    let flows = (0..8)
        .map(|i| {
            Flow::new(
                Algorithm::BbrP2p(Box::default()),
                i * 1_000_000,
                seed * 31 + i,
            )
        })
        .collect();
    path.run(flows, cfg, 7_000_000, (7 + window_s) * 1_000_000, trace())
}

/// Scenario (d): one bbr-p2p flow and one CUBIC flow started together on 100 Mbit/s, 20 ms,
/// a buffer of `bdps` BDPs, measured over `[skip_s, secs)`.
pub(super) fn with_cubic(cfg: &BbrConfig, bdps: f64, skip_s: u64, secs: u64, seed: u64) -> Shares {
    let path = Shared::new(100.0, 20, (250_000.0 * bdps) as usize);
    let flows = vec![
        Flow::new(Algorithm::BbrP2p(Box::default()), 0, seed),
        Flow::new(Algorithm::Cubic(Cubic::new()), 0, seed + 1),
    ];
    path.run(flows, cfg, skip_s * 1_000_000, secs * 1_000_000, trace())
}

/// Scenario (e) over four seeds. Without deviation 14 (the short-term bounds were cut only
/// when a flow's own flight exceeded its BDP estimate) the first flow, whose estimate dates
/// from when it had the link alone, kept 29–36 Mbit/s of 100 and the mean index was 0.70
/// (0.63–0.76); the bench's kernel record for bbr-p2p was 0.86 (kernel bbr 0.63). Without
/// deviation 15 (STARTUP's plateau counted rounds in loss recovery) 3 of these seeds' 28 late
/// flows left STARTUP below 5 Mbit/s (0.9–1.2: most of their first flight lost in the full
/// queue) and stayed small; 57 of 448 over 64 seeds (`SIM_SEEDS=64`), 4 with it. Without
/// deviation 18 (DOWN at v3's 0.91, no drain while cruising through a standing queue) the
/// mean index was 0.860 over these seeds (0.881 over 64, sd 0.049); with it 0.956 (0.953,
/// sd 0.022). It left more late flows' STARTUP below 5 Mbit/s (2 of these 28, at 4.7; 16 of
/// 448 over 64 seeds) but none stayed small: the lowest share here is 7.9 Mbit/s.
#[test]
fn sim_eight_staggered_flows_share_the_link() {
    let window: u64 = std::env::var("SIM_WINDOW").map_or(12, |w| w.parse().unwrap());
    let seeds: u64 = std::env::var("SIM_SEEDS").map_or(4, |n| n.parse().unwrap());
    let mut jains = Vec::new();
    let mut firsts = Vec::new();
    let mut late_exits = Vec::new();
    let mut acks = [0; 3];
    for seed in 1..=seeds {
        let shares = eight_staggered(&BbrConfig::DEFAULT, window, seed);
        eprintln!(
            "seed {seed}: Jain {:.3}, loss {:.4}, {:?}, ACKs (all, fast, fast draining) {:?}",
            shares.jain(),
            shares.loss_fraction,
            shares.mbit,
            shares.acks
        );
        (0..3).for_each(|i| acks[i] += shares.acks[i]);
        let total: f64 = shares.mbit.iter().sum();
        assert!(total > 90.0, "seed {seed}: the link is used: {shares:?}");
        jains.push(shares.jain());
        firsts.push(shares.mbit[0]);
        late_exits.extend(
            shares.startup_exit_mbit[1..]
                .iter()
                .map(|e| e.unwrap_or(0.0)),
        );
    }
    let mean = jains.iter().sum::<f64>() / jains.len() as f64;
    let sd = (jains.iter().map(|j| (j - mean).powi(2)).sum::<f64>() / jains.len() as f64).sqrt();
    let min = jains.iter().copied().fold(f64::INFINITY, f64::min);
    let above = jains.iter().filter(|&&j| j >= 0.95).count();
    let first = firsts.iter().sum::<f64>() / firsts.len() as f64;
    let low = late_exits.iter().filter(|&&e| e < 5.0).count();
    eprintln!(
        "{seeds} seeds: mean Jain {mean:.3} (sd {sd:.3}, min {min:.3}, {above} >= 0.95), first flow \
         {first:.1} Mbit/s, late flows leaving STARTUP below 5 Mbit/s: {low} of {}; exits {late_exits:.1?}",
        late_exits.len()
    );
    assert!(mean >= 0.93, "mean Jain's index {mean:.3}: {jains:?}");
    // Every ACK went through `ack_both`; the draining flows' fast path is among them.
    assert!(
        acks[2] * 20 > acks[0],
        "fast ACKs while draining: {acks:?} (all, fast, fast draining)"
    );
    assert!(
        low * 10 < late_exits.len(),
        "{low} late flows left STARTUP below 5 Mbit/s: {late_exits:.1?}"
    );
}

/// Scenario (d): beside CUBIC on half a BDP of buffer the two share (bench target: Jain ≥
/// 0.8). On 4 BDPs CUBIC's queue holds the RTT at 4–5× the propagation delay, and bbr-p2p's
/// flight is bounded by 2 × its bandwidth × the 20 ms it measured before the queue formed
/// until its min-RTT estimate takes a queue-laden minimum: at the first PROBE_RTT that could
/// not drain the queue (deviation 16, ~5 s), not when the 10 s window expires (v3). Over the
/// bench's 12 s window, four seeds: mean Jain 0.63 without deviation 16 (bbr-p2p 11–13
/// Mbit/s of 100), 0.72 with it.
#[test]
fn sim_one_flow_beside_cubic() {
    let half = with_cubic(&BbrConfig::DEFAULT, 0.5, 0, 12, 1);
    eprintln!("0.5 BDP, 0-12 s: Jain {:.3}, {:?}", half.jain(), half.mbit);
    assert!(half.jain() >= 0.8, "{half:?}");
    let deep: Vec<Shares> = (1..=4)
        .map(|seed| with_cubic(&BbrConfig::DEFAULT, 4.0, 0, 12, seed))
        .collect();
    let mean = deep.iter().map(Shares::jain).sum::<f64>() / deep.len() as f64;
    eprintln!("4 BDP, 0-12 s: mean Jain {mean:.3}, {deep:?}");
    assert!(mean >= 0.69, "4 BDP, 0-12 s: mean Jain {mean:.3}: {deep:?}");
    let secs: u64 = std::env::var("SIM_SECS").map_or(30, |w| w.parse().unwrap());
    let first = with_cubic(&BbrConfig::DEFAULT, 4.0, 0, 5, 1);
    let later = with_cubic(&BbrConfig::DEFAULT, 4.0, 15, secs, 1);
    eprintln!(
        "4 BDP: 0-5 s Jain {:.3} {:?}; 15-{secs} s Jain {:.3} {:?}",
        first.jain(),
        first.mbit,
        later.jain(),
        later.mbit
    );
    assert!(
        later.mbit[0] > 1.3 * first.mbit[0],
        "bbr-p2p's share once its min RTT holds the queue: {later:?}, before: {first:?}"
    );
}
