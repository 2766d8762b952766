//! Gossipsub on one topic, [`TOPIC`], where nodes announce shared files and their status.
//!
//! Messages are signed by their author, at most [`MAX_MESSAGE_BYTES`] long (larger ones are
//! dropped by gossipsub's codec) and JSON-encoded [`Announcement`]s. Every message is validated
//! before gossipsub forwards it ([`validate`]); a message that does not decode or breaks a bound
//! is rejected (the sender's score drops) and counted by reason.

use std::time::Duration;

use libp2p::{PeerId, gossipsub};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::files::{FileId, MAX_FILE_BYTES};

/// The status/announcement topic.
pub const TOPIC: &str = "p2p-cc/status/1";
/// Largest message on the wire (gossipsub's default is 64 KiB; announcements are small).
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024;
/// Longest file name in an announcement, bytes.
pub const MAX_NAME_BYTES: usize = 255;
/// Longest algorithm name (the kernel's `TCP_CA_NAME_MAX` minus the NUL).
pub const MAX_ALGORITHM_BYTES: usize = 15;
/// Announcements remembered for `GET /api/announcements`.
pub const MAX_RECENT: usize = 256;
/// Gossipsub heartbeat (mesh maintenance).
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Below this score a peer's messages and control frames are ignored altogether (gossipsub's
/// graylist). The other thresholds are gossipsub's defaults too: gossip −10, publish −50.
pub const GRAYLIST_THRESHOLD: f64 = -80.0;
/// P4, invalid messages: each rejected message counts against its sender, squared, times this
/// weight. Three rejections (−90) put a peer below [`GRAYLIST_THRESHOLD`].
const INVALID_MESSAGE_WEIGHT: f64 = -10.0;
/// The invalid-message counter decays to 10% over this long: a peer that stops misbehaving is
/// heard again after about ten quiet minutes.
const INVALID_MESSAGE_DECAY: Duration = Duration::from_secs(600);
/// P1, time in mesh: +0.01 per second, at most +10 (after 1,000 s): trust earned slowly and
/// never worth more than one rejected message.
const TIME_IN_MESH_WEIGHT: f64 = 0.01;
const TIME_IN_MESH_CAP: f64 = 1000.0;
/// P2, first deliveries of valid messages: +1 each, at most +10, decaying like P4.
const FIRST_DELIVERY_WEIGHT: f64 = 1.0;
const FIRST_DELIVERY_CAP: f64 = 10.0;

/// What nodes say on [`TOPIC`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Announcement {
    /// The author shares a file (and is a provider of it in the DHT).
    File { id: String, name: String, size: u64 },
    /// The author's periodic status.
    Status {
        algorithm: String,
        connected_peers: u32,
        routing_table_peers: u32,
        shared_files: u32,
    },
}

/// A validated announcement and who wrote it.
#[derive(Clone, Debug, Serialize)]
pub struct Received {
    #[serde(serialize_with = "ser_peer")]
    pub author: PeerId,
    pub announcement: Announcement,
}

fn ser_peer<S: serde::Serializer>(peer: &PeerId, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(peer)
}

/// Why a message was rejected (the `reason` label of `p2pcc_gossip_rejected_total`).
#[derive(
    Clone, Copy, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelValue,
)]
pub enum Rejection {
    /// No signed author.
    Unsigned,
    Oversized,
    /// Not JSON, or not an announcement.
    Malformed,
    /// Decoded, but a field breaks a bound.
    Invalid,
}

/// Checks a received message.
pub fn validate(message: &gossipsub::Message) -> Result<Received, Rejection> {
    let author = message.source.ok_or(Rejection::Unsigned)?;
    if message.data.len() > MAX_MESSAGE_BYTES {
        return Err(Rejection::Oversized);
    }
    let announcement: Announcement =
        serde_json::from_slice(&message.data).map_err(|_| Rejection::Malformed)?;
    check(&announcement)?;
    Ok(Received {
        author,
        announcement,
    })
}

fn check(announcement: &Announcement) -> Result<(), Rejection> {
    let ok = match announcement {
        Announcement::File { id, name, size } => {
            id.parse::<FileId>().is_ok()
                && !name.is_empty()
                && name.len() <= MAX_NAME_BYTES
                && !name.chars().any(char::is_control)
                && *size <= MAX_FILE_BYTES
        }
        Announcement::Status { algorithm, .. } => {
            algorithm.len() <= MAX_ALGORITHM_BYTES
                && algorithm
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        }
    };
    if ok { Ok(()) } else { Err(Rejection::Invalid) }
}

/// Encodes an announcement for publishing, checking the same bounds receivers check.
pub fn encode(announcement: &Announcement) -> Result<Vec<u8>, String> {
    check(announcement).map_err(|_| format!("announcement breaks a bound: {announcement:?}"))?;
    let data = serde_json::to_vec(announcement).map_err(|e| e.to_string())?;
    if data.len() > MAX_MESSAGE_BYTES {
        return Err(format!(
            "announcement is {} bytes, the limit is {MAX_MESSAGE_BYTES}",
            data.len()
        ));
    }
    Ok(data)
}

/// The gossipsub behaviour: signed messages, strict validation, application validation on,
/// content-addressed message ids (the same announcement twice is one message).
pub fn behaviour(key: &libp2p::identity::Keypair) -> anyhow::Result<gossipsub::Behaviour> {
    let config = gossipsub::ConfigBuilder::default()
        .heartbeat_interval(HEARTBEAT)
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        .max_transmit_size(MAX_MESSAGE_BYTES + 1024) // protobuf framing, signature and key
        .message_id_fn(|m: &gossipsub::Message| {
            let mut h = Sha256::new();
            h.update(m.source.map(|p| p.to_bytes()).unwrap_or_default());
            h.update(&m.data);
            gossipsub::MessageId::from(hex::encode(&h.finalize()[..20]))
        })
        .build()
        .map_err(|e| anyhow::anyhow!("gossipsub config: {e}"))?;
    let mut behaviour =
        gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Signed(key.clone()), config)
            .map_err(|e| anyhow::anyhow!("gossipsub: {e}"))?;
    let (params, thresholds) = score_params();
    behaviour
        .with_peer_score(params, thresholds)
        .map_err(|e| anyhow::anyhow!("gossipsub peer scoring: {e}"))?;
    behaviour
        .subscribe(&gossipsub::IdentTopic::new(TOPIC))
        .map_err(|e| anyhow::anyhow!("subscribing to {TOPIC}: {e}"))?;
    Ok(behaviour)
}

/// Peer scoring (gossipsub v1.1) for a quiet topic: one status per node per minute and the odd
/// file announcement. Parameters not named here are gossipsub's defaults, except:
/// - P3/P3b (mesh delivery deficits) off: honest peers are silent for minutes on this topic, and
///   a deficit penalty would prune them;
/// - P5 (application score) off: nothing in the node rates peers yet;
/// - P6 (IP colocation) off: testbeds and NATed LANs run many nodes behind one address.
fn score_params() -> (gossipsub::PeerScoreParams, gossipsub::PeerScoreThresholds) {
    let decay = gossipsub::score_parameter_decay(INVALID_MESSAGE_DECAY);
    let topic = gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: TIME_IN_MESH_WEIGHT,
        time_in_mesh_quantum: Duration::from_secs(1),
        time_in_mesh_cap: TIME_IN_MESH_CAP,
        first_message_deliveries_weight: FIRST_DELIVERY_WEIGHT,
        first_message_deliveries_decay: decay,
        first_message_deliveries_cap: FIRST_DELIVERY_CAP,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: INVALID_MESSAGE_WEIGHT,
        invalid_message_deliveries_decay: decay,
        ..Default::default()
    };
    let mut params = gossipsub::PeerScoreParams {
        app_specific_weight: 0.0,
        ip_colocation_factor_weight: 0.0,
        ..Default::default()
    };
    params
        .topics
        .insert(gossipsub::IdentTopic::new(TOPIC).hash(), topic);
    let thresholds = gossipsub::PeerScoreThresholds {
        graylist_threshold: GRAYLIST_THRESHOLD,
        ..Default::default()
    };
    (params, thresholds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(data: &[u8], source: Option<PeerId>) -> gossipsub::Message {
        gossipsub::Message {
            source,
            data: data.to_vec(),
            sequence_number: Some(1),
            topic: gossipsub::IdentTopic::new(TOPIC).hash(),
        }
    }

    #[test]
    fn valid_announcements_pass_and_bad_ones_are_rejected_by_reason() {
        let peer = PeerId::random();
        let file = Announcement::File {
            id: "ab".repeat(32),
            name: "a.bin".into(),
            size: 10,
        };
        let got = validate(&message(&encode(&file).unwrap(), Some(peer))).unwrap();
        assert_eq!(got.announcement, file);
        assert_eq!(got.author, peer);

        let cases: Vec<(Vec<u8>, Option<PeerId>, Rejection)> = vec![
            (b"{}".to_vec(), None, Rejection::Unsigned),
            (vec![b' '; MAX_MESSAGE_BYTES + 1], Some(peer), Rejection::Oversized),
            (b"not json".to_vec(), Some(peer), Rejection::Malformed),
            (br#"{"kind":"other"}"#.to_vec(), Some(peer), Rejection::Malformed),
            (
                br#"{"kind":"file","id":"xyz","name":"a","size":1}"#.to_vec(),
                Some(peer),
                Rejection::Invalid,
            ),
            (
                format!(r#"{{"kind":"file","id":"{}","name":"a\n","size":1}}"#, "ab".repeat(32))
                    .into_bytes(),
                Some(peer),
                Rejection::Invalid,
            ),
            (
                br#"{"kind":"status","algorithm":"bbr; rm -rf","connected_peers":1,"routing_table_peers":1,"shared_files":0}"#
                    .to_vec(),
                Some(peer),
                Rejection::Invalid,
            ),
        ];
        for (data, source, want) in cases {
            assert_eq!(validate(&message(&data, source)).unwrap_err(), want);
        }
    }
}

/// Fuzz target (see `crate::fuzz`): what any peer may publish on [`TOPIC`].
#[cfg(test)]
mod fuzz {
    use proptest::{collection::vec, prelude::*};

    use super::*;
    use crate::fuzz::for_a_while;

    /// Announcements with fields near and past their bounds, as JSON, and plain bytes.
    fn payloads() -> impl Strategy<Value = Vec<u8>> {
        let text = prop_oneof![
            ".{0,20}",
            "[a-z0-9_-]{14,17}",
            "\\PC{250,260}",
            "[\\x00-\\x1f]{1,3}"
        ];
        let file = (
            prop_oneof!["[0-9a-f]{64}", ".{0,70}"],
            text.clone(),
            prop_oneof![any::<u64>(), Just(MAX_FILE_BYTES), Just(MAX_FILE_BYTES + 1)],
        )
            .prop_map(|(id, name, size)| Announcement::File { id, name, size });
        let status = (text, any::<u32>(), any::<u32>(), any::<u32>()).prop_map(
            |(algorithm, connected_peers, routing_table_peers, shared_files)| {
                Announcement::Status {
                    algorithm,
                    connected_peers,
                    routing_table_peers,
                    shared_files,
                }
            },
        );
        let json = prop_oneof![file, status].prop_map(|a| serde_json::to_vec(&a).unwrap());
        let padded = (json.clone(), 0usize..(2 * MAX_MESSAGE_BYTES)).prop_map(|(mut j, pad)| {
            // Whitespace after the object: still JSON, possibly over the size bound.
            j.extend(std::iter::repeat_n(b' ', pad));
            j
        });
        prop_oneof![json, padded, vec(any::<u8>(), 0..300)]
    }

    #[test]
    fn gossip_payloads() {
        let source = PeerId::random();
        for_a_while("gossip payloads", payloads(), |data| {
            let message = gossipsub::Message {
                source: Some(source),
                data: data.clone(),
                sequence_number: Some(1),
                topic: gossipsub::IdentTopic::new(TOPIC).hash(),
            };
            let Ok(received) = validate(&message) else {
                return Ok(());
            };
            prop_assert!(data.len() <= MAX_MESSAGE_BYTES);
            // What a receiver accepts, a sender may send: both sides check the same bounds.
            let sent = encode(&received.announcement);
            prop_assert!(sent.is_ok(), "accepted but not sendable: {:?}", sent);
            match &received.announcement {
                Announcement::File { id, name, size } => {
                    prop_assert!(id.parse::<FileId>().is_ok());
                    prop_assert!(!name.is_empty() && name.len() <= MAX_NAME_BYTES);
                    prop_assert!(!name.chars().any(char::is_control));
                    prop_assert!(*size <= MAX_FILE_BYTES);
                }
                Announcement::Status { algorithm, .. } => {
                    prop_assert!(algorithm.len() <= MAX_ALGORITHM_BYTES);
                }
            }
            Ok(())
        });
    }
}
