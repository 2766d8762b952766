//! Staying connected to the configured bootstrap peers (`--peer`) and noticing dead connections.
//!
//! rust-libp2p leaves both to the application: `libp2p-ping` only *reports* failures ("it is up
//! to the user to implement a health-check / connection management policy"), and the swarm never
//! redials by itself. The node's policy:
//!
//! - **Dead connections**: a connection that has answered pings and then goes a ping interval
//!   plus a ping timeout without answering one is closed (`EventLoop::on_ping`; the ping handler
//!   itself reports only the second failure in a row). With the defaults (a ping every 15 s, 20 s
//!   to answer) a silent peer is dropped after 35 s; a shorter outage is ridden out by TCP.
//!   Closing the connection ends its socket, so its per-peer telemetry series go with it. A
//!   connection that never answered a ping is not judged by pings (idle timeout and TCP).
//! - **Bootstrap peers** (every `--peer` ending in `/p2p/<PeerId>`): when the last connection to
//!   one closes, it is dialled again after [`FIRST_BACKOFF`]; each failed dial doubles the wait up
//!   to [`MAX_BACKOFF`], each with up to 25 % random jitter so nodes that lost the same peer do not
//!   redial in lockstep; a connection resets it. Addresses without a PeerId are dialled once.
//! - **The DHT**: reconnecting a bootstrap peer after a loss runs a Kademlia bootstrap at once
//!   (besides kad's periodic one), and routing-table peers are dialled while fewer than
//!   `min_peers` are connected (`EventLoop::maintain_peers`); kad keeps a peer's last address
//!   through dial failures, so the table survives an outage.
//!
//! The state here is plain data driven by the event loop, with the time passed in (unit-tested).

use std::{
    collections::HashMap,
    hash::{BuildHasher as _, RandomState},
    time::Duration,
};

use libp2p::{Multiaddr, PeerId, multiaddr::Protocol};
use tokio::time::Instant;

/// Wait before the first redial of a bootstrap peer whose connection closed.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between redials (a bootstrap peer that is down for long is tried twice a minute).
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Bootstrap peers tracked; `--peer` beyond this are dialled once at start, not redialled.
pub const MAX_BOOTSTRAP_PEERS: usize = 64;
/// Addresses kept per bootstrap peer.
const MAX_ADDRS_PER_PEER: usize = 8;

#[derive(Debug)]
struct Peer {
    addrs: Vec<Multiaddr>,
    /// The wait before the next redial after a failed one.
    backoff: Duration,
    /// When to dial next; `None` while connected or while a dial is in flight.
    due: Option<Instant>,
    connected: bool,
    /// Set when the peer was lost; cleared (and reported) by the next connection.
    lost: bool,
}

/// The bootstrap peers and when each is to be dialled again.
#[derive(Debug)]
pub struct Bootstrap {
    peers: HashMap<PeerId, Peer>,
    /// Randomly keyed per process: hashing a counter with it draws the jitter.
    jitter: RandomState,
    draws: u64,
}

impl Bootstrap {
    /// Tracks the peers of `addrs` that name a PeerId (the first [`MAX_BOOTSTRAP_PEERS`]); none
    /// is due: the node dials them all at start.
    pub fn new(addrs: &[Multiaddr]) -> Self {
        let mut peers: HashMap<PeerId, Peer> = HashMap::new();
        for addr in addrs {
            let Some(Protocol::P2p(peer)) = addr.iter().last() else {
                continue;
            };
            if !peers.contains_key(&peer) && peers.len() >= MAX_BOOTSTRAP_PEERS {
                continue;
            }
            let entry = peers.entry(peer).or_insert_with(|| Peer {
                addrs: Vec::new(),
                backoff: FIRST_BACKOFF,
                due: None,
                connected: false,
                lost: false,
            });
            if entry.addrs.len() < MAX_ADDRS_PER_PEER && !entry.addrs.contains(addr) {
                entry.addrs.push(addr.clone());
            }
        }
        Self {
            peers,
            jitter: RandomState::new(),
            draws: 0,
        }
    }

    /// Whether `peer` is a bootstrap peer.
    pub fn contains(&self, peer: &PeerId) -> bool {
        self.peers.contains_key(peer)
    }

    /// A connection to `peer` is established. True when it is a bootstrap peer that had been
    /// lost (the caller refreshes the DHT).
    pub fn connected(&mut self, peer: &PeerId) -> bool {
        let Some(p) = self.peers.get_mut(peer) else {
            return false;
        };
        p.connected = true;
        p.due = None;
        p.backoff = FIRST_BACKOFF;
        std::mem::take(&mut p.lost)
    }

    /// The last connection to `peer` closed: it is dialled again after [`FIRST_BACKOFF`].
    pub fn disconnected(&mut self, peer: &PeerId, now: Instant) {
        if !self.contains(peer) {
            return;
        }
        let wait = self.jittered(peer, FIRST_BACKOFF);
        let p = self.peers.get_mut(peer).expect("checked above");
        p.connected = false;
        p.lost = true;
        p.backoff = FIRST_BACKOFF;
        p.due = Some(now + wait);
    }

    /// A dial of `peer` failed: the next is scheduled, the wait doubling (up to
    /// [`MAX_BACKOFF`]). A failure while a redial is already scheduled (another part of the node
    /// dialled, e.g. the DHT) changes nothing: it must not postpone the redial.
    pub fn dial_failed(&mut self, peer: &PeerId, now: Instant) {
        let Some(backoff) = self
            .peers
            .get(peer)
            .filter(|p| !p.connected && p.due.is_none())
            .map(|p| p.backoff)
        else {
            return;
        };
        let wait = self.jittered(peer, backoff);
        let p = self.peers.get_mut(peer).expect("checked above");
        p.lost = true;
        p.due = Some(now + wait);
        p.backoff = (backoff * 2).min(MAX_BACKOFF);
    }

    /// The peers due for a dial at `now`, with their addresses; each is then not due again until
    /// its dial fails or its connection closes.
    pub fn due(&mut self, now: Instant) -> Vec<(PeerId, Vec<Multiaddr>)> {
        self.peers
            .iter_mut()
            .filter(|(_, p)| !p.connected && p.due.is_some_and(|due| due <= now))
            .map(|(peer, p)| {
                p.due = None;
                (*peer, p.addrs.clone())
            })
            .collect()
    }

    /// `base` plus up to a quarter of it, drawn at random.
    fn jittered(&mut self, peer: &PeerId, base: Duration) -> Duration {
        let quarter = base.as_millis() as u64 / 4;
        self.draws += 1;
        let draw = self.jitter.hash_one((peer, self.draws));
        base + Duration::from_millis(draw % (quarter + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(peer: PeerId, port: u16) -> Multiaddr {
        format!("/ip4/10.0.0.1/tcp/{port}/p2p/{peer}")
            .parse()
            .unwrap()
    }

    fn within(wait: Duration, base: Duration) -> bool {
        wait >= base && wait <= base + base / 4
    }

    #[test]
    fn only_addresses_with_a_peer_id_are_tracked_and_none_is_due_at_start() {
        let a = PeerId::random();
        let mut b = Bootstrap::new(&[
            addr(a, 1),
            addr(a, 2),
            addr(a, 1),
            "/ip4/10.0.0.2/tcp/3".parse().unwrap(),
        ]);
        assert!(b.contains(&a));
        assert_eq!(b.peers.len(), 1);
        assert_eq!(b.peers[&a].addrs, vec![addr(a, 1), addr(a, 2)]);
        assert!(b.due(Instant::now() + Duration::from_secs(3600)).is_empty());
    }

    #[test]
    fn a_lost_peer_is_redialled_with_doubling_backoff_until_it_connects() {
        let a = PeerId::random();
        let mut b = Bootstrap::new(&[addr(a, 1)]);
        let t0 = Instant::now();
        assert!(
            !b.connected(&a),
            "the first connection is not a reconnection"
        );
        b.disconnected(&a, t0);
        assert!(b.due(t0).is_empty(), "redialled without waiting");
        let first = b.peers[&a].due.unwrap() - t0;
        assert!(within(first, FIRST_BACKOFF), "{first:?}");
        let due = b.due(t0 + first);
        assert_eq!(due, vec![(a, vec![addr(a, 1)])]);
        assert!(
            b.due(t0 + first).is_empty(),
            "dialled twice while in flight"
        );

        // Failures double the wait up to the cap.
        let mut now = t0 + first;
        let mut expected = FIRST_BACKOFF;
        for _ in 0..8 {
            b.dial_failed(&a, now);
            let wait = b.peers[&a].due.unwrap() - now;
            assert!(within(wait, expected), "{wait:?} for {expected:?}");
            now += wait;
            assert_eq!(b.due(now).len(), 1);
            expected = (expected * 2).min(MAX_BACKOFF);
        }
        assert_eq!(expected, MAX_BACKOFF);

        // The connection reports the loss once and resets the backoff.
        assert!(b.connected(&a));
        assert!(!b.connected(&a));
        assert_eq!(b.peers[&a].backoff, FIRST_BACKOFF);
        assert!(
            b.due(now + MAX_BACKOFF * 2).is_empty(),
            "due while connected"
        );
        // A late dial failure (another address) does not schedule a connected peer.
        b.dial_failed(&a, now);
        assert!(b.peers[&a].due.is_none());
    }

    #[test]
    fn other_dials_failing_do_not_postpone_a_scheduled_redial() {
        let a = PeerId::random();
        let mut b = Bootstrap::new(&[addr(a, 1)]);
        let t0 = Instant::now();
        b.dial_failed(&a, t0);
        let due = b.peers[&a].due.unwrap();
        for i in 1..10 {
            b.dial_failed(&a, t0 + Duration::from_millis(100 * i));
        }
        assert_eq!(b.peers[&a].due, Some(due));
        assert_eq!(b.due(due).len(), 1);
    }

    #[test]
    fn a_failed_first_dial_is_retried_and_others_are_ignored() {
        let a = PeerId::random();
        let stranger = PeerId::random();
        let mut b = Bootstrap::new(&[addr(a, 1)]);
        let t0 = Instant::now();
        b.dial_failed(&a, t0);
        b.dial_failed(&stranger, t0);
        b.disconnected(&stranger, t0);
        assert!(!b.connected(&stranger));
        let due = b.due(t0 + FIRST_BACKOFF * 2);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].0, a);
    }

    #[test]
    fn the_number_of_bootstrap_peers_is_bounded() {
        let addrs: Vec<Multiaddr> = (0..MAX_BOOTSTRAP_PEERS + 10)
            .map(|i| addr(PeerId::random(), i as u16))
            .collect();
        assert_eq!(Bootstrap::new(&addrs).peers.len(), MAX_BOOTSTRAP_PEERS);
    }
}
