//! What `p2p-node peers` and `p2p-node known` print: the API's answers, decoded into the types
//! the server encodes (`/api/peers`: [`PeerConnection`]; `/api/peers/known`: [`KnownPeers`]),
//! rendered as text tables. A field the server renames or drops is a decoding error naming it
//! (see the note on the wire types in [`crate::telemetry`]), never a column of blanks.

use std::fmt::Write as _;

use crate::{known::KnownPeers, telemetry::PeerConnection};

/// `/api/peers` as `p2p-node peers` prints it: one row per connection, like `ss -ti`.
pub fn peers(peers: &[PeerConnection]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<54} {:<8} {:<22} {:<8} {:<22} {:>6} {:>9} {:>9} {:>11} {:>12} {:>7} {:>11} {:>10}",
        "PEER",
        "CC",
        "REMOTE",
        "CA",
        "START",
        "CWND",
        "SRTT(ms)",
        "MINRTT",
        "PACING(B/s)",
        "ACKED(B)",
        "RETRANS",
        "RETRANS(B)",
        "SNDWND(B)"
    );
    let num = |n: Option<u64>| n.map_or("-".into(), |n| n.to_string());
    let ms = |seconds: Option<f64>| seconds.map_or("-".into(), |s| format!("{:.2}", s * 1e3));
    for p in peers {
        let t = p.tcp;
        let start = match &p.bbr {
            Some(b) if !b.start_reason.is_empty() => format!("{}({})", b.start, b.start_reason),
            Some(b) => b.start.to_owned(),
            None => "-".to_owned(),
        };
        let _ = writeln!(
            out,
            "{:<54} {:<8} {:<22} {:<8} {:<22} {:>6} {:>9} {:>9} {:>11} {:>12} {:>7} {:>11} {:>10}",
            p.peer_id,
            p.algorithm,
            p.remote,
            t.map_or("-", |t| t.ca_state),
            start,
            num(t.map(|t| t.cwnd_segments.into())),
            ms(t.map(|t| t.srtt_seconds)),
            ms(t.map(|t| t.min_rtt_seconds)),
            num(t.and_then(|t| t.pacing_rate_bytes_per_second)),
            num(t.map(|t| t.bytes_acked)),
            num(t.map(|t| t.retransmitted_segments.into())),
            num(t.map(|t| t.retransmitted_bytes)),
            num(t.map(|t| t.send_window_bytes.into())),
        );
    }
    out
}

/// `/api/peers/known` as `p2p-node known` prints it: a summary line, then one row per record.
pub fn known(known: &KnownPeers) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} of {} records; used up to {} s old",
        known.total, known.capacity, known.max_age_seconds
    );
    let _ = writeln!(
        out,
        "{:<54} {:>14} {:>10} {:>14} {:>8} {:<10}",
        "PEER", "BW(Mbit/s)", "MINRTT(ms)", "INFLIGHT_HI(B)", "AGE(s)", "UNUSABLE"
    );
    for k in &known.records {
        let r = &k.record;
        let _ = writeln!(
            out,
            "{:<54} {:>14.1} {:>10.2} {:>14} {:>8.0} {:<10}",
            r.peer_id,
            r.bw_bytes_per_sec as f64 * 8.0 / 1e6,
            f64::from(r.min_rtt_us) / 1e3,
            r.inflight_hi_bytes.map_or("-".into(), |b| b.to_string()),
            k.age_seconds,
            k.unusable,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use cc_ebpf_common::{
        SockStats,
        bbr::{BbrState, Mode},
        resume::{Reason, Start},
    };
    use prometheus_client::registry::Registry;

    use super::*;
    use crate::{
        sockets::Direction,
        telemetry::{BbrView, TcpState, exports::Encoded, snapshot::Snapshot},
    };

    /// Two connections as the collector builds them from kernel state: one running bbr-p2p
    /// that resumed from a record and retreated on loss, now in recovery; one the probes have
    /// not seen yet.
    fn snapshot() -> Snapshot {
        let mut s = SockStats {
            cwnd_segments: 10,
            srtt_us: 1500,
            min_rtt_us: 1000,
            mss_bytes: 1448,
            pacing_rate_bytes_per_sec: 125_000,
            bytes_acked: 4_000_000,
            total_retrans_segments: 3,
            retrans_bytes: 4344,
            snd_wnd_bytes: 65_535,
            events: 7,
            ..SockStats::opened_at(1_000_000_000)
        };
        s.change_ca_state(3, 2_000_000_000);
        let bbr = BbrState {
            mode: Mode::ProbeBw as u8,
            min_rtt_us: 1000,
            start: Start::Retreated as u8,
            start_reason: Reason::Loss as u8,
            ..Default::default()
        };
        let connection = |peer: &str, tcp, bbr| PeerConnection {
            peer_id: peer.to_owned(),
            cookie: 1,
            direction: Direction::Outbound,
            local: "10.0.0.1:50000".into(),
            remote: "10.0.0.2:4001".into(),
            algorithm: "bbr-p2p".into(),
            tcp,
            bbr,
        };
        Snapshot {
            connections: vec![
                connection(
                    "peer-a",
                    Some(TcpState::new(&s, 3_000_000_000)),
                    Some(BbrView::new(&bbr, 1448)),
                ),
                connection("peer-b", None, None),
            ],
            ..Default::default()
        }
    }

    /// `/api/peers` as the server sends it: the snapshot through the server's own encoder.
    fn server_body(snapshot: &Snapshot) -> serde_json::Value {
        let encoded = Encoded::new(snapshot, &Registry::default());
        serde_json::from_slice(&encoded.peers_json).unwrap()
    }

    fn decode(body: &serde_json::Value) -> Result<Vec<PeerConnection>, String> {
        serde_json::from_str(&body.to_string()).map_err(|e| e.to_string())
    }

    #[test]
    fn peers_decodes_what_the_server_encodes() {
        let snapshot = snapshot();
        let decoded = decode(&server_body(&snapshot)).unwrap();
        assert_eq!(decoded, snapshot.connections);

        let table = peers(&decoded);
        let rows: Vec<Vec<&str>> = table
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rows.len(), 3, "{table}");
        assert_eq!(rows[0][..5], ["PEER", "CC", "REMOTE", "CA", "START"]);
        assert_eq!(
            rows[1],
            [
                "peer-a",
                "bbr-p2p",
                "10.0.0.2:4001",
                "recovery",
                "retreated(loss)",
                "10",
                "1.50",
                "1.00",
                "125000",
                "4000000",
                "3",
                "4344",
                "65535"
            ]
        );
        assert_eq!(rows[2][..3], ["peer-b", "bbr-p2p", "10.0.0.2:4001"]);
        assert_eq!(rows[2][3..], ["-"; 10]);
    }

    /// A field the server renamed or dropped, or a name outside its table, fails decoding with
    /// an error that names it (serde would read a missing `Option` as `None`: blank columns).
    #[test]
    fn a_changed_field_fails_decoding_by_name() {
        let body = server_body(&snapshot());
        let changed = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut body = body.clone();
            f(&mut body[0]);
            decode(&body).unwrap_err()
        };
        let renamed = changed(&|c| {
            let tcp = c.as_object_mut().unwrap().remove("tcp").unwrap();
            c["tcp_state"] = tcp;
        });
        assert!(renamed.contains("missing field `tcp`"), "{renamed}");
        let dropped = changed(&|c| {
            c["tcp"]
                .as_object_mut()
                .unwrap()
                .remove("pacing_rate_bytes_per_second");
        });
        assert!(
            dropped.contains("missing field `pacing_rate_bytes_per_second`"),
            "{dropped}"
        );
        let unknown = changed(&|c| c["tcp"]["ca_state"] = "opened".into());
        assert!(unknown.contains("unknown ca_state \"opened\""), "{unknown}");
        let unknown = changed(&|c| c["bbr"]["start_reason"] = "lost".into());
        assert!(
            unknown.contains("unknown start_reason \"lost\""),
            "{unknown}"
        );
    }
}
