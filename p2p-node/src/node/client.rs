//! The [`Client`]: how the rest of the program talks to the event loop (bounded command
//! channel, oneshot replies).

use std::{path::Path, sync::Arc};

use anyhow::Context as _;
use libp2p::PeerId;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use super::{
    ConnectionInfo, NodeInfo, files,
    files::{FileError, FileId},
    gossip,
    metrics::NodeMetrics,
    perf,
};

/// What a share did.
#[derive(Clone, Debug, Serialize)]
pub struct ShareReport {
    pub id: FileId,
    /// The id as a CIDv1 (other libp2p implementations find providers by it).
    pub cid: String,
    pub name: String,
    pub size: u64,
    pub chunks: usize,
    /// Whether the provider record reached peers in the DHT (it is stored locally either way
    /// and republished periodically).
    pub dht_published: bool,
    pub dht_error: Option<String>,
}

pub(super) enum Command {
    Info(oneshot::Sender<NodeInfo>),
    Connections(oneshot::Sender<Vec<ConnectionInfo>>),
    RoutingTable(oneshot::Sender<Vec<PeerId>>),
    Announcements(oneshot::Sender<Vec<gossip::Received>>),
    Publish {
        announcement: gossip::Announcement,
        reply: oneshot::Sender<Result<(), String>>,
    },
    Share {
        file: files::SharedFile,
        reply: ShareReply,
    },
    SharedFiles(oneshot::Sender<Vec<files::SharedSummary>>),
    GetProviders {
        id: FileId,
        reply: oneshot::Sender<Result<Vec<PeerId>, FileError>>,
    },
    Request {
        peer: PeerId,
        request: files::Request,
        reply: RequestReply,
    },
    PublishRaw {
        data: Vec<u8>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    GossipScore {
        peer: PeerId,
        reply: oneshot::Sender<Option<f64>>,
    },
    SetFault {
        id: FileId,
        index: u32,
        fault: Option<files::Fault>,
    },
}

/// A handle to the running node.
#[derive(Clone)]
pub struct Client {
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) streams: libp2p_stream::Control,
    pub(super) local_peer_id: PeerId,
    pub(super) metrics: Arc<NodeMetrics>,
}

impl Client {
    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer_id
    }

    async fn call<T>(&self, command: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(command(tx)).await.ok()?;
        rx.await.ok()
    }

    pub async fn info(&self) -> anyhow::Result<NodeInfo> {
        self.call(Command::Info)
            .await
            .context("the node has stopped")
    }

    /// The swarm's established connections.
    pub async fn connections(&self) -> anyhow::Result<Vec<ConnectionInfo>> {
        self.call(Command::Connections)
            .await
            .context("the node has stopped")
    }

    /// Peers in the Kademlia routing table.
    pub async fn routing_table(&self) -> anyhow::Result<Vec<PeerId>> {
        self.call(Command::RoutingTable)
            .await
            .context("the node has stopped")
    }

    /// The most recent validated gossip announcements (at most [`gossip::MAX_RECENT`]).
    pub async fn announcements(&self) -> anyhow::Result<Vec<gossip::Received>> {
        self.call(Command::Announcements)
            .await
            .context("the node has stopped")
    }

    /// Publishes an announcement on [`gossip::TOPIC`].
    pub async fn publish(&self, announcement: gossip::Announcement) -> anyhow::Result<()> {
        self.call(|reply| Command::Publish {
            announcement,
            reply,
        })
        .await
        .context("the node has stopped")?
        .map_err(|e| anyhow::anyhow!("publishing on {}: {e}", gossip::TOPIC))
    }

    /// Shares an open file under `name`: hashes it, serves it (from this fd), announces it in
    /// the DHT and on gossip. Open it with `http::confine::FilePolicy::open_shared`.
    pub async fn share(&self, file: std::fs::File, name: String) -> Result<ShareReport, FileError> {
        let file = std::sync::Arc::new(file);
        let hashed = file.clone();
        let label = name.clone();
        let manifest = tokio::task::spawn_blocking(move || files::Manifest::build(&hashed, &label))
            .await
            .map_err(|_| FileError::NodeStopped)??;
        self.provide(file, name, manifest).await
    }

    /// Serves an open file whose content `manifest` describes (hashed by [`Client::share`], or
    /// verified chunk by chunk by a fetch) and announces it in the DHT and on gossip.
    pub(super) async fn provide(
        &self,
        file: Arc<std::fs::File>,
        name: String,
        manifest: files::Manifest,
    ) -> Result<ShareReport, FileError> {
        let id = manifest.id();
        let name = if name.is_empty() {
            id.to_string()
        } else {
            name
        };
        let report = ShareReport {
            id,
            cid: id.cid(),
            name: name.clone(),
            size: manifest.size,
            chunks: manifest.chunks.len(),
            dht_published: false,
            dht_error: None,
        };
        let file = files::SharedFile {
            id,
            name,
            file,
            manifest,
        };
        let published = self
            .call(|reply| Command::Share { file, reply })
            .await
            .ok_or(FileError::NodeStopped)??;
        Ok(ShareReport {
            dht_published: published.is_ok(),
            dht_error: published.err(),
            ..report
        })
    }

    pub async fn shared_files(&self) -> anyhow::Result<Vec<files::SharedSummary>> {
        self.call(Command::SharedFiles)
            .await
            .context("the node has stopped")
    }

    /// Fetches a file by id from its providers into `out` (see [`files::fetch`]).
    pub async fn fetch(&self, id: FileId, out: &Path) -> Result<files::FetchReport, FileError> {
        files::fetch(self, id, out).await
    }

    /// Providers of `id` found in the DHT.
    pub async fn get_providers(&self, id: FileId) -> Result<Vec<PeerId>, FileError> {
        self.call(|reply| Command::GetProviders { id, reply })
            .await
            .ok_or(FileError::NodeStopped)?
    }

    /// One file-protocol request.
    pub async fn request(
        &self,
        peer: PeerId,
        request: files::Request,
    ) -> Result<files::Response, FileError> {
        self.call(|reply| Command::Request {
            peer,
            request,
            reply,
        })
        .await
        .ok_or(FileError::NodeStopped)?
    }

    /// Test hook: publish bytes on the topic without the checks [`Client::publish`] makes, as
    /// a misbehaving peer would.
    #[doc(hidden)]
    pub async fn publish_raw(&self, data: Vec<u8>) -> anyhow::Result<()> {
        self.call(|reply| Command::PublishRaw { data, reply })
            .await
            .context("the node has stopped")?
            .map_err(|e| anyhow::anyhow!("publishing on {}: {e}", gossip::TOPIC))
    }

    /// This node's gossipsub score of `peer` (`None`: not connected, or scoring off).
    pub async fn gossip_score(&self, peer: PeerId) -> anyhow::Result<Option<f64>> {
        self.call(|reply| Command::GossipScore { peer, reply })
            .await
            .context("the node has stopped")
    }

    /// Test hook: make this node misbehave when serving chunk `index` of `id`.
    #[doc(hidden)]
    pub async fn set_fault(&self, id: FileId, index: u32, fault: Option<files::Fault>) {
        let _ = self
            .commands
            .send(Command::SetFault { id, index, fault })
            .await;
    }

    /// Runs a perf transfer with `peer` (see [`perf`]).
    pub async fn perf(
        &self,
        peer: PeerId,
        upload_bytes: u64,
        download_bytes: u64,
    ) -> anyhow::Result<perf::PerfReport> {
        perf::run(self.streams.clone(), peer, upload_bytes, download_bytes).await
    }
}

/// Share's reply: the local store's verdict, then the DHT publication's.
pub(super) type ShareReply = oneshot::Sender<Result<Result<(), String>, FileError>>;
pub(super) type RequestReply = oneshot::Sender<Result<files::Response, FileError>>;
