//! File sharing, after the series' "distributed file sharing system": a shared file is split into
//! chunks, its id is the SHA-256 of a manifest listing the chunk hashes, providers are announced in
//! the Kademlia DHT, and a fetch pulls chunks from several providers in parallel, verifies each
//! by its hash (refetching a bad one from another provider) and only then renames the result into
//! place.
//!
//! Wire protocol `/p2p-cc/files/1.0.0` (libp2p request-response, one request per stream):
//! - request: `tag u8` (0 manifest, 1 chunk) ‖ `file id [32]` ‖ `chunk index u32 BE` (37 bytes);
//! - response: `tag u8` (0 manifest, 1 chunk, 2 not found, 3 busy, 4 error) ‖ body until EOF
//!   (the manifest bytes, the chunk bytes, nothing, nothing, a UTF-8 reason).
//!
//! Manifest (the bytes whose SHA-256 is the file id): `version u8 = 1` ‖ `size u64 BE` ‖
//! `chunk size u32 BE` ‖ `chunk count u32 BE` ‖ `SHA-256 of each chunk [32]...`. The file's name
//! is not part of it, so the same content shared under two names has one id and both providers
//! serve it.
//!
//! Bounds: files up to [`MAX_FILE_BYTES`], at most [`MAX_CHUNKS`] chunks of at most
//! [`MAX_CHUNK_BYTES`], [`MAX_SHARED_FILES`] shared files, [`MAX_SERVING`] chunk reads at once
//! (the excess is answered "busy"), [`MAX_PARALLEL_CHUNKS`] chunk requests in flight per fetch and
//! per provider a window sized from that connection's bandwidth-delay product (see
//! [`provider_window`]), between [`MIN_PER_PROVIDER`] and [`MAX_PER_PROVIDER`] chunks. A provider
//! that does not answer within the request timeout (`Config::request_timeout`) fails that chunk,
//! which goes to another provider. A "busy" answer is not a failure: the provider is asked
//! again after a back-off ([`busy_backoff`]).
//!
//! A fetch is resumable and cancel-safe (see [`fetch`]): `<out>.part` and its chunk map
//! `<out>.part.map` (at most [`MAX_MAP_BYTES`]) survive an interrupted fetch, and the next one
//! keeps every chunk of `.part` that the map lists and that still hashes right. Once the file
//! is complete the fetcher serves it and announces itself as a provider.

use std::{
    collections::{HashMap, VecDeque},
    fmt, io,
    os::unix::fs::FileExt as _,
    path::{Path, PathBuf},
    str::FromStr,
    time::Instant,
};

use futures::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, StreamExt as _};
use libp2p::{PeerId, StreamProtocol, kad, request_response};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use super::Client;

pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/p2p-cc/files/1.0.0");
/// Chunk size of files this node shares (256 KiB: large enough that per-request overhead is
/// small, small enough that a refetch after a bad chunk is cheap).
pub const CHUNK_BYTES: u32 = 256 * 1024;
/// Smallest chunk size accepted in a manifest.
pub const MIN_CHUNK_BYTES: u32 = 4 * 1024;
/// Largest chunk size accepted in a manifest.
pub const MAX_CHUNK_BYTES: u32 = 1024 * 1024;
/// Largest file shared or fetched (4 GiB).
pub const MAX_FILE_BYTES: u64 = 4 << 30;
/// Most chunks in a manifest: a 4 GiB file in 256 KiB chunks.
pub const MAX_CHUNKS: u32 = 16 * 1024;
/// Largest manifest on the wire.
pub const MAX_MANIFEST_BYTES: usize = MANIFEST_HEADER_BYTES + 32 * MAX_CHUNKS as usize;
/// Files this node shares at once.
pub const MAX_SHARED_FILES: usize = 256;
/// Chunk reads served at once; more requests are answered "busy".
pub const MAX_SERVING: usize = 32;
/// Providers a fetch uses.
pub const MAX_PROVIDERS: usize = 16;
/// Chunk requests in flight per fetch (64 × 256 KiB: 16 MiB of chunks in flight at most).
pub const MAX_PARALLEL_CHUNKS: usize = 64;
/// Chunk requests in flight per provider within a fetch, before its rate is known and at least.
pub const MIN_PER_PROVIDER: usize = 4;
/// Chunk requests in flight per provider at most (16 MiB at the default chunk size: a 1 Gbit/s
/// path with 100 ms of RTT, with room to grow).
pub const MAX_PER_PROVIDER: usize = 64;
/// The window holds this many BDPs, so the fetch's rate can grow past what it measured
/// (BBR's cwnd gain: a window of exactly one BDP would cap the rate where it was measured).
const WINDOW_BDP_GAIN: f64 = 2.0;
/// A provider that fails this many chunks is dropped from the fetch.
pub const MAX_PROVIDER_FAILURES: u32 = 3;
/// First back-off after a "busy" answer; it doubles with each busy in a row, up to
/// [`BUSY_BACKOFF_MAX`].
pub const BUSY_BACKOFF_MIN: std::time::Duration = std::time::Duration::from_millis(50);
pub const BUSY_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(2);
/// "Busy" answers in a row from one provider (≈ 15 s of back-off) that count as one failure.
pub const MAX_BUSY_STREAK: u32 = 12;
/// Pause before a provider whose manifest request failed, or whose connection closed under
/// chunk requests, is asked again: long enough for the closing connection to be gone and a new
/// one to be dialled, short next to a fetch.
const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(500);
/// Pauses per provider and fetch after chunk requests failed on a closing connection (all the
/// requests one close fails share one pause); more closes count as failures, so a provider
/// whose connections keep closing costs at most 3 × [`RETRY_PAUSE`] before it is dropped.
const MAX_CLOSED_RETRIES: u32 = 3;
/// Test faults remembered at once.
const MAX_FAULTS: usize = 64;
/// Requests held back by the "stall" fault at once.
const MAX_STALLED: usize = 16;

const MANIFEST_VERSION: u8 = 1;
const MANIFEST_HEADER_BYTES: usize = 1 + 8 + 4 + 4;
const REQUEST_BYTES: usize = 1 + 32 + 4;
const MAX_ERROR_BYTES: usize = 512;
/// Largest response body: a manifest or a chunk.
const MAX_RESPONSE_BYTES: usize = if MAX_MANIFEST_BYTES > MAX_CHUNK_BYTES as usize {
    MAX_MANIFEST_BYTES
} else {
    MAX_CHUNK_BYTES as usize
};

/// A file's id: the SHA-256 of its manifest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct FileId(pub [u8; 32]);

/// Multihash code of SHA2-256, and its digest length.
const MULTIHASH_SHA2_256: u8 = 0x12;
const SHA2_256_BYTES: u8 = 32;
/// CID version 1, and the `raw` multicodec (the id is the digest of the manifest's bytes).
const CID_V1: u8 = 0x01;
const MULTICODEC_RAW: u8 = 0x55;

impl FileId {
    /// The DHT key its providers are announced under: the id as a multihash (SHA2-256), which is
    /// how go-libp2p and js-libp2p key provider records (`cid.multihash.bytes`), so their
    /// `FindProviders(cid)` finds ours.
    pub fn key(&self) -> kad::RecordKey {
        kad::RecordKey::new(&self.multihash())
    }

    /// `0x12 0x20 <digest>`: SHA2-256, 32 bytes (every code is below 0x80, so one varint byte).
    pub fn multihash(&self) -> Vec<u8> {
        let mut bytes = vec![MULTIHASH_SHA2_256, SHA2_256_BYTES];
        bytes.extend_from_slice(&self.0);
        bytes
    }

    /// The id as a CIDv1 (`raw` codec) in multibase base32, the form other implementations
    /// print and parse (`bafkrei…`).
    pub fn cid(&self) -> String {
        let mut bytes = vec![CID_V1, MULTICODEC_RAW];
        bytes.extend_from_slice(&self.multihash());
        format!("b{}", base32_lower(&bytes))
    }
}

/// RFC 4648 base32, lower case, no padding (multibase `b`).
fn base32_lower(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl FromStr for FileId {
    type Err = FileError;
    fn from_str(s: &str) -> Result<Self, FileError> {
        let mut id = [0u8; 32];
        hex::decode_to_slice(s, &mut id)
            .map_err(|_| FileError::BadId(s.chars().take(80).collect()))?;
        Ok(Self(id))
    }
}

impl Serialize for FileId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{0:?} is not a file id (64 hex digits)")]
    BadId(String),
    #[error("malformed manifest: {0}")]
    Manifest(String),
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} has {size} bytes; files are limited to {MAX_FILE_BYTES} bytes")]
    TooLarge { path: PathBuf, size: u64 },
    #[error("this node already shares {MAX_SHARED_FILES} files")]
    StoreFull,
    #[error("no provider of file {0} found in the DHT")]
    NoProviders(FileId),
    #[error("no provider sent a manifest matching file id {id}: {last_error}")]
    NoManifest { id: FileId, last_error: String },
    #[error("chunk {index} of file {id} failed at every provider; last error: {last_error}")]
    ChunkFailed {
        id: FileId,
        index: u32,
        last_error: String,
    },
    #[error("{0} already exists; refusing to overwrite it")]
    OutputExists(PathBuf),
    #[error(
        "{0} (a partial download's name) is a symlink or not a private regular file of this node; refusing to open or follow it"
    )]
    PartExists(PathBuf),
    #[error("a fetch into {0} is already running")]
    FetchRunning(PathBuf),
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("request to {peer} failed: {reason}")]
    Request {
        peer: PeerId,
        reason: String,
        /// libp2p's `OutboundFailure::ConnectionClosed`: the connection the request went out on
        /// closed before the answer (e.g. the old connection to a restarted peer), which says
        /// nothing about the provider; see [`closed_retry`].
        connection_closed: bool,
    },
    #[error("too many file requests or DHT queries in flight; try again")]
    Busy,
    #[error("the node has stopped")]
    NodeStopped,
}

/// The list of chunk hashes that names a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub size: u64,
    pub chunk_bytes: u32,
    pub chunks: Vec<[u8; 32]>,
}

impl Manifest {
    /// The canonical bytes (see the module docs); their SHA-256 is the file id.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MANIFEST_HEADER_BYTES + 32 * self.chunks.len());
        out.push(MANIFEST_VERSION);
        out.extend_from_slice(&self.size.to_be_bytes());
        out.extend_from_slice(&self.chunk_bytes.to_be_bytes());
        out.extend_from_slice(&(self.chunks.len() as u32).to_be_bytes());
        for hash in &self.chunks {
            out.extend_from_slice(hash);
        }
        out
    }

    /// Parses and checks a manifest: version, bounds, and a chunk count that matches the size.
    pub fn decode(bytes: &[u8]) -> Result<Self, FileError> {
        let bad = |why: String| FileError::Manifest(why);
        if bytes.len() < MANIFEST_HEADER_BYTES {
            return Err(bad(format!(
                "{} bytes is shorter than the header",
                bytes.len()
            )));
        }
        if bytes[0] != MANIFEST_VERSION {
            return Err(bad(format!("unknown version {}", bytes[0])));
        }
        let size = u64::from_be_bytes(bytes[1..9].try_into().expect("8 bytes"));
        let chunk_bytes = u32::from_be_bytes(bytes[9..13].try_into().expect("4 bytes"));
        let count = u32::from_be_bytes(bytes[13..17].try_into().expect("4 bytes"));
        if size > MAX_FILE_BYTES {
            return Err(bad(format!("size {size} exceeds {MAX_FILE_BYTES}")));
        }
        if !(MIN_CHUNK_BYTES..=MAX_CHUNK_BYTES).contains(&chunk_bytes) {
            return Err(bad(format!(
                "chunk size {chunk_bytes} outside {MIN_CHUNK_BYTES}..={MAX_CHUNK_BYTES}"
            )));
        }
        if count > MAX_CHUNKS {
            return Err(bad(format!("{count} chunks exceed {MAX_CHUNKS}")));
        }
        if u64::from(count) != size.div_ceil(u64::from(chunk_bytes)) {
            return Err(bad(format!(
                "{count} chunks do not cover {size} bytes in chunks of {chunk_bytes}"
            )));
        }
        let hashes = &bytes[MANIFEST_HEADER_BYTES..];
        if hashes.len() != 32 * count as usize {
            return Err(bad(format!(
                "{} hash bytes for {count} chunks",
                hashes.len()
            )));
        }
        Ok(Self {
            size,
            chunk_bytes,
            chunks: hashes
                .chunks_exact(32)
                .map(|h| h.try_into().expect("32 bytes"))
                .collect(),
        })
    }

    pub fn id(&self) -> FileId {
        FileId(Sha256::digest(self.encode()).into())
    }

    pub fn offset(&self, index: u32) -> u64 {
        u64::from(index) * u64::from(self.chunk_bytes)
    }

    /// Length of chunk `index` (the last one may be short).
    pub fn chunk_len(&self, index: u32) -> usize {
        (self.size - self.offset(index)).min(u64::from(self.chunk_bytes)) as usize
    }

    /// Reads and hashes an open file (blocking); `name` is what errors call it.
    pub fn build(file: &std::fs::File, name: &str) -> Result<Self, FileError> {
        let path = Path::new(name);
        let read = |source| FileError::Read {
            path: path.to_owned(),
            source,
        };
        let meta = file.metadata().map_err(read)?;
        if !meta.is_file() {
            return Err(read(io::Error::other(
                "not a regular file (devices, fifos and directories are not shared)",
            )));
        }
        let size = meta.len();
        if size > MAX_FILE_BYTES {
            return Err(FileError::TooLarge {
                path: path.to_owned(),
                size,
            });
        }
        let mut manifest = Self {
            size,
            chunk_bytes: CHUNK_BYTES,
            chunks: Vec::new(),
        };
        let count = size.div_ceil(u64::from(CHUNK_BYTES)) as u32;
        let mut buf = vec![0u8; CHUNK_BYTES as usize];
        for index in 0..count {
            let len = manifest.chunk_len(index);
            file.read_exact_at(&mut buf[..len], manifest.offset(index))
                .map_err(read)?;
            manifest.chunks.push(Sha256::digest(&buf[..len]).into());
        }
        Ok(manifest)
    }
}

// ---------------------------------------------------------------------------------------------
// Wire format

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    Manifest(FileId),
    Chunk(FileId, u32),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// Manifest bytes (checked by the fetcher against the id).
    Manifest(Vec<u8>),
    Chunk(Vec<u8>),
    NotFound,
    Busy,
    Error(String),
}

/// The request-response codec for [`PROTOCOL`]; reads are bounded before they allocate.
#[derive(Clone, Copy, Debug, Default)]
pub struct Codec;

fn invalid(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

impl request_response::Codec for Codec {
    type Protocol = StreamProtocol;
    type Request = Request;
    type Response = Response;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut buf = [0u8; REQUEST_BYTES];
        io.read_exact(&mut buf).await?;
        let id = FileId(buf[1..33].try_into().expect("32 bytes"));
        let index = u32::from_be_bytes(buf[33..37].try_into().expect("4 bytes"));
        match buf[0] {
            0 => Ok(Request::Manifest(id)),
            1 => Ok(Request::Chunk(id, index)),
            t => Err(invalid(format!("unknown request type {t}"))),
        }
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut tag = [0u8; 1];
        io.read_exact(&mut tag).await?;
        let mut body = Vec::new();
        io.take(MAX_RESPONSE_BYTES as u64 + 1)
            .read_to_end(&mut body)
            .await?;
        if body.len() > MAX_RESPONSE_BYTES {
            return Err(invalid(format!(
                "response exceeds {MAX_RESPONSE_BYTES} bytes"
            )));
        }
        match tag[0] {
            0 => Ok(Response::Manifest(body)),
            1 if body.len() <= MAX_CHUNK_BYTES as usize => Ok(Response::Chunk(body)),
            1 => Err(invalid(format!("chunk exceeds {MAX_CHUNK_BYTES} bytes"))),
            2 => Ok(Response::NotFound),
            3 => Ok(Response::Busy),
            4 => {
                body.truncate(MAX_ERROR_BYTES);
                Ok(Response::Error(String::from_utf8_lossy(&body).into_owned()))
            }
            t => Err(invalid(format!("unknown response type {t}"))),
        }
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Request,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let (tag, id, index) = match req {
            Request::Manifest(id) => (0u8, id, 0u32),
            Request::Chunk(id, index) => (1, id, index),
        };
        let mut buf = [0u8; REQUEST_BYTES];
        buf[0] = tag;
        buf[1..33].copy_from_slice(&id.0);
        buf[33..37].copy_from_slice(&index.to_be_bytes());
        io.write_all(&buf).await?;
        io.close().await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Response,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let (tag, body): (u8, &[u8]) = match &res {
            Response::Manifest(b) => (0, b),
            Response::Chunk(b) => (1, b),
            Response::NotFound => (2, &[]),
            Response::Busy => (3, &[]),
            Response::Error(e) => (4, &e.as_bytes()[..e.len().min(MAX_ERROR_BYTES)]),
        };
        io.write_all(&[tag]).await?;
        io.write_all(body).await?;
        io.close().await
    }
}

// ---------------------------------------------------------------------------------------------
// Serving (owned by the event loop)

/// A file this node shares: the fd opened when it was shared (chunks are read from it, never
/// by reopening a path that may have been swapped since; see `http::confine`).
#[derive(Clone, Debug)]
pub struct SharedFile {
    pub id: FileId,
    pub name: String,
    pub file: std::sync::Arc<std::fs::File>,
    pub manifest: Manifest,
}

/// What `GET /api/files` lists.
#[derive(Clone, Debug, Serialize)]
pub struct SharedSummary {
    pub id: FileId,
    pub name: String,
    pub size: u64,
    pub chunks: usize,
}

/// Test hook: misbehave when serving one chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Flip a byte of the chunk.
    Corrupt,
    /// Never answer (the requester times out).
    Stall,
    /// Answer "busy" this many more times, then serve the chunk.
    Busy(u32),
}

/// A chunk read finished; the event loop sends the response.
pub struct Served {
    pub channel: request_response::ResponseChannel<Response>,
    pub response: Response,
}

/// The files this node serves, and the bounded work of serving them.
pub struct Store {
    files: HashMap<FileId, SharedFile>,
    faults: HashMap<(FileId, u32), Fault>,
    stalled: VecDeque<request_response::ResponseChannel<Response>>,
    serving: usize,
    served: mpsc::Sender<Served>,
}

type Channel = request_response::ResponseChannel<Response>;

/// What [`Store::handle`] did with a request.
pub enum Handled {
    /// Send this response now.
    Now(Channel, Response),
    /// The response will arrive on the `served` channel (or never, for a stall fault).
    Later,
    /// Answer without data and count the refusal.
    Refused(Refusal, Channel),
}

/// Why an inbound request got no data (counted as rejections).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    NotFound,
    Busy,
    BadIndex,
}

impl Store {
    pub fn new() -> (Self, mpsc::Receiver<Served>) {
        let (served, rx) = mpsc::channel(MAX_SERVING);
        (
            Self {
                files: HashMap::new(),
                faults: HashMap::new(),
                stalled: VecDeque::new(),
                serving: 0,
                served,
            },
            rx,
        )
    }

    pub fn insert(&mut self, file: SharedFile) -> Result<(), FileError> {
        if !self.files.contains_key(&file.id) && self.files.len() >= MAX_SHARED_FILES {
            return Err(FileError::StoreFull);
        }
        self.files.insert(file.id, file);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    pub fn list(&self) -> Vec<SharedSummary> {
        self.files
            .values()
            .map(|f| SharedSummary {
                id: f.id,
                name: f.name.clone(),
                size: f.manifest.size,
                chunks: f.manifest.chunks.len(),
            })
            .collect()
    }

    pub fn set_fault(&mut self, id: FileId, index: u32, fault: Option<Fault>) {
        match fault {
            Some(f) if self.faults.len() < MAX_FAULTS || self.faults.contains_key(&(id, index)) => {
                self.faults.insert((id, index), f);
            }
            Some(_) => tracing::warn!("test fault table full"),
            None => {
                self.faults.remove(&(id, index));
            }
        }
    }

    /// A chunk read came back.
    pub fn finished(&mut self) {
        self.serving = self.serving.saturating_sub(1);
    }

    /// Answers a request: at once (manifest, refusals) or via a blocking read whose result
    /// arrives on the `served` channel.
    pub fn handle(
        &mut self,
        request: Request,
        channel: request_response::ResponseChannel<Response>,
    ) -> Handled {
        let (id, index) = match request {
            Request::Manifest(id) => {
                return match self.files.get(&id) {
                    Some(f) => Handled::Now(channel, Response::Manifest(f.manifest.encode())),
                    None => Handled::Refused(Refusal::NotFound, channel),
                };
            }
            Request::Chunk(id, index) => (id, index),
        };
        let Some(file) = self.files.get(&id) else {
            return Handled::Refused(Refusal::NotFound, channel);
        };
        let Some(&expected) = file.manifest.chunks.get(index as usize) else {
            return Handled::Refused(Refusal::BadIndex, channel);
        };
        let fault = self.faults.get(&(id, index)).copied();
        if let Some(Fault::Busy(n)) = fault {
            match n.checked_sub(1) {
                Some(left) => self.faults.insert((id, index), Fault::Busy(left)),
                None => self.faults.remove(&(id, index)),
            };
            if n > 0 {
                return Handled::Refused(Refusal::Busy, channel);
            }
        }
        if fault == Some(Fault::Stall) {
            if self.stalled.len() >= MAX_STALLED {
                self.stalled.pop_front();
            }
            self.stalled.push_back(channel);
            return Handled::Later;
        }
        if self.serving >= MAX_SERVING {
            return Handled::Refused(Refusal::Busy, channel);
        }
        self.serving += 1;
        let shared = file.file.clone();
        let offset = file.manifest.offset(index);
        let len = file.manifest.chunk_len(index);
        let served = self.served.clone();
        tokio::task::spawn_blocking(move || {
            let response = match read_chunk(&shared, offset, len, &expected) {
                Ok(mut bytes) => {
                    if fault == Some(Fault::Corrupt)
                        && let Some(b) = bytes.first_mut()
                    {
                        *b ^= 0xff;
                    }
                    Response::Chunk(bytes)
                }
                Err(e) => Response::Error(e),
            };
            // At most MAX_SERVING reads are in flight and the channel holds as many.
            let _ = served.blocking_send(Served { channel, response });
        });
        Handled::Later
    }
}

/// Reads a chunk and checks it still matches the manifest (the file may have changed on disk).
fn read_chunk(
    file: &std::fs::File,
    offset: u64,
    len: usize,
    expected: &[u8; 32],
) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset)
        .map_err(|e| format!("reading the shared file: {e}"))?;
    if Sha256::digest(&buf).as_slice() != expected {
        return Err("the shared file changed on disk since it was shared".into());
    }
    Ok(buf)
}

// ---------------------------------------------------------------------------------------------
// Fetching (runs in the caller's task, talks to the event loop through the Client)

/// What a fetch did.
#[derive(Clone, Debug, Serialize)]
pub struct FetchReport {
    pub id: FileId,
    /// Where the file was written; sent as its file name only (no local paths in responses).
    #[serde(rename = "name", serialize_with = "ser_file_name")]
    pub path: PathBuf,
    pub size: u64,
    pub chunks: usize,
    pub seconds: f64,
    pub bytes_per_second: f64,
    /// Chunks each provider delivered (verified).
    pub providers: Vec<ProviderReport>,
    /// Chunks that failed verification and were fetched again.
    pub corrupt_chunks: u32,
    /// Chunk requests that failed otherwise (timeouts, errors) and were retried.
    pub failed_requests: u32,
    /// "Busy" answers (a provider's, or this node's own request limit): backed off and asked
    /// again, not counted as failures.
    pub busy_responses: u32,
    /// Chunks a previous, interrupted fetch left in `.part` (listed in its chunk map and
    /// verified again), not fetched this time.
    pub resumed_chunks: u32,
    /// Whether this node now serves the file and announced itself as its provider.
    pub providing: bool,
    /// Why the provider announcement did not happen or did not reach the DHT.
    pub provide_error: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ProviderReport {
    #[serde(serialize_with = "ser_peer")]
    pub peer: PeerId,
    pub chunks: u32,
    pub failures: u32,
}

fn ser_file_name<S: serde::Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&path.file_name().unwrap_or_default().to_string_lossy())
}

fn ser_peer<S: serde::Serializer>(peer: &PeerId, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(peer)
}

/// Fetches `id` into `out`: providers from the DHT, manifest checked against the id, chunks in
/// parallel from all providers, each verified. Writes `<out>.part`, records each verified chunk
/// in the chunk map `<out>.part.map`, and renames `.part` into place only when every chunk is
/// there; then this node serves the file and announces itself as a provider.
///
/// Resumable and cancel-safe: a fetch that fails, is cancelled (its future dropped) or whose
/// process is killed leaves `.part` and its map behind, and the next fetch into the same name
/// takes over every chunk the map lists *after hashing it again* (the map is a hint, never
/// trusted: a chunk whose bytes do not match is fetched again). A chunk's bit is written after
/// its bytes, so the map never claims a chunk that was not written, whatever point the fetch
/// stopped at; a write already handed to the blocking pool when the future is dropped finishes
/// on its own, and holds the `.part` lock until then.
///
/// Both files are opened relative to `out`'s directory, never through a symlink
/// (`O_NOFOLLOW`), and only if they are regular files with one link, owned by this user — a
/// symlink, a hard link to another file or a fifo planted at either name is refused, not
/// followed or truncated. `.part` is locked (`flock`) while a fetch writes it: a second fetch
/// into the same name is refused. The final name is taken by `renameat2(RENAME_NOREPLACE)`
/// (atomic, never replaces what appeared there meanwhile).
pub async fn fetch(client: &Client, id: FileId, out: &Path) -> Result<FetchReport, FileError> {
    let target = OutputTarget::new(out)?;
    if target.final_exists() {
        return Err(FileError::OutputExists(out.to_owned()));
    }
    let start = Instant::now();
    let mut providers = client.get_providers(id).await?;
    providers.retain(|p| *p != client.local_peer_id());
    providers.truncate(MAX_PROVIDERS);
    if providers.is_empty() {
        return Err(FileError::NoProviders(id));
    }
    let manifest = fetch_manifest(client, id, &providers).await?;

    let (part, created) = target.open_part()?;
    let map = target.open_map(id, manifest.chunks.len() as u32, created)?;
    let part = std::sync::Arc::new(part);
    let mut report = fetch_chunks(
        client,
        id,
        &manifest,
        &providers,
        part.clone(),
        map,
        &target.part_path(),
    )
    .await?;
    target.commit()?;
    target.remove_map();
    report.path = out.to_owned();
    report.seconds = start.elapsed().as_secs_f64();
    report.bytes_per_second = if report.seconds > 0.0 {
        manifest.size as f64 / report.seconds
    } else {
        0.0
    };
    // Every chunk verified: serve the file from the fd that wrote it (the name may be swapped
    // by now; the fd is the verified content) and announce it in the DHT.
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match client.provide(part, name, manifest).await {
        Ok(share) => {
            report.providing = true;
            report.provide_error = share.dht_error;
        }
        Err(e) => report.provide_error = Some(e.to_string()),
    }
    Ok(report)
}

/// Where a fetch writes: `out`'s directory, held open, and the final, `.part` and map names in it.
struct OutputTarget {
    dir: std::os::fd::OwnedFd,
    out: PathBuf,
    name: std::ffi::CString,
    part: std::ffi::CString,
    map: std::ffi::CString,
}

/// The chunk map's file: magic, file id, chunk count, then one bit per chunk (bit `i % 8` of
/// byte `i / 8`), set once the chunk is written and verified.
const MAP_MAGIC: &[u8; 8] = b"p2pccmap";
const MAP_HEADER_BYTES: usize = 8 + 32 + 4;
/// Largest chunk map (the map of a [`MAX_CHUNKS`] file); a longer file is not read.
const MAX_MAP_BYTES: usize = MAP_HEADER_BYTES + MAX_CHUNKS as usize / 8;

/// The map's bits if `bytes` is the map of file `id` in `count` chunks: right magic, id,
/// count and length, and no bit set past the last chunk. Anything else (another file's map,
/// a truncated or hostile one) is `None`: the fetch starts that file over.
pub fn parse_chunk_map(bytes: &[u8], id: FileId, count: u32) -> Option<Vec<u8>> {
    let bits_len = (count as usize).div_ceil(8);
    if count > MAX_CHUNKS || bytes.len() != MAP_HEADER_BYTES + bits_len {
        return None;
    }
    let (header, bits) = bytes.split_at(MAP_HEADER_BYTES);
    if &header[..8] != MAP_MAGIC || header[8..40] != id.0 || header[40..44] != count.to_be_bytes() {
        return None;
    }
    let spare = bits_len * 8 - count as usize;
    if spare > 0 && bits[bits_len - 1] >> (8 - spare) != 0 {
        return None;
    }
    Some(bits.to_vec())
}

/// The chunk map of a fetch in progress: the bits in memory, and the file they are kept in.
struct ChunkMap {
    file: std::sync::Arc<std::fs::File>,
    bits: Vec<u8>,
}

impl ChunkMap {
    fn is_set(&self, index: u32) -> bool {
        self.bits[index as usize / 8] & (1 << (index % 8)) != 0
    }

    /// Sets (or clears) chunk `index`'s bit in memory; returns the byte to write and where.
    fn update(&mut self, index: u32, set: bool) -> (u64, u8) {
        let byte = &mut self.bits[index as usize / 8];
        if set {
            *byte |= 1 << (index % 8);
        } else {
            *byte &= !(1 << (index % 8));
        }
        ((MAP_HEADER_BYTES + index as usize / 8) as u64, *byte)
    }

    /// Writes all the bits (after the verification at resume cleared some).
    fn write_all(&self) -> io::Result<()> {
        self.file.write_all_at(&self.bits, MAP_HEADER_BYTES as u64)
    }
}

/// Refuses what a local attacker could plant at a name the fetch writes: anything but a
/// regular file with one link, owned by this process's user.
fn check_private_file(file: &std::fs::File) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = file.metadata()?;
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    Ok(meta.is_file() && meta.nlink() == 1 && meta.uid() == uid)
}

impl OutputTarget {
    fn new(out: &Path) -> Result<Self, FileError> {
        use std::os::{fd::FromRawFd as _, unix::ffi::OsStrExt as _};
        let write_err = |source| FileError::Write {
            path: out.to_owned(),
            source,
        };
        let invalid = || write_err(io::Error::from(io::ErrorKind::InvalidInput));
        let name = out.file_name().ok_or_else(invalid)?;
        let dir = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let c = |b: &[u8]| std::ffi::CString::new(b).map_err(|_| invalid());
        let dir_c = c(dir.as_os_str().as_bytes())?;
        // SAFETY: a valid NUL-terminated path; the fd returned is owned below.
        let fd = unsafe {
            libc::open(
                dir_c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(write_err(io::Error::last_os_error()));
        }
        let mut part = name.as_bytes().to_vec();
        part.extend_from_slice(b".part");
        let mut map = part.clone();
        map.extend_from_slice(b".map");
        Ok(Self {
            // SAFETY: a fresh fd from open(2), owned by nobody else.
            dir: unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) },
            out: out.to_owned(),
            name: c(name.as_bytes())?,
            part: c(&part)?,
            map: c(&map)?,
        })
    }

    fn part_path(&self) -> PathBuf {
        part_path(&self.out)
    }

    fn map_path(&self) -> PathBuf {
        let mut name = part_path(&self.out).into_os_string();
        name.push(".map");
        PathBuf::from(name)
    }

    /// Whether anything (a file, a symlink, a directory) is at the final name.
    fn final_exists(&self) -> bool {
        use std::os::fd::AsRawFd as _;
        // SAFETY: an all-zero stat is a valid output buffer.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid dir fd, NUL-terminated name, valid stat buffer.
        unsafe {
            libc::fstatat(
                self.dir.as_raw_fd(),
                self.name.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            ) == 0
        }
    }

    /// `openat(dir, name, flags | O_NOFOLLOW | O_CLOEXEC, mode)`.
    fn open_at(&self, name: &std::ffi::CStr, flags: i32, mode: u32) -> io::Result<std::fs::File> {
        use std::os::fd::{AsRawFd as _, FromRawFd as _};
        // SAFETY: valid dir fd and NUL-terminated name; the fd returned is owned below.
        let fd = unsafe {
            libc::openat(
                self.dir.as_raw_fd(),
                name.as_ptr(),
                flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                mode as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd from openat(2), owned by nobody else.
        Ok(unsafe { std::fs::File::from_raw_fd(fd) })
    }

    /// Opens the `.part` file a previous fetch left, or creates it (`O_EXCL`); locks it.
    /// Returns whether it was created.
    fn open_part(&self) -> Result<(std::fs::File, bool), FileError> {
        use std::os::fd::AsRawFd as _;
        let refused = || FileError::PartExists(self.part_path());
        let write_err = |source| FileError::Write {
            path: self.part_path(),
            source,
        };
        let (file, created) = match self.open_at(&self.part, libc::O_RDWR, 0) {
            Ok(file) => (file, false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let flags = libc::O_RDWR | libc::O_CREAT | libc::O_EXCL;
                match self.open_at(&self.part, flags, 0o644) {
                    Ok(file) => (file, true),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(refused()),
                    Err(e) => return Err(write_err(e)),
                }
            }
            // ELOOP: a symlink at the name. ENXIO, EWOULDBLOCK…: not something to write into.
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(refused()),
            Err(e) => return Err(write_err(e)),
        };
        if !check_private_file(&file).map_err(write_err)? {
            return Err(refused());
        }
        // SAFETY: a valid fd.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            return Err(if e.kind() == io::ErrorKind::WouldBlock {
                FileError::FetchRunning(self.out.clone())
            } else {
                write_err(e)
            });
        }
        Ok((file, created))
    }

    /// Opens (or creates) the chunk map beside `.part`; its bits count only if it is the map
    /// of this very file and `.part` was not just created, else it starts empty.
    fn open_map(&self, id: FileId, count: u32, part_created: bool) -> Result<ChunkMap, FileError> {
        use std::io::Read as _;
        let map_err = |source| FileError::Write {
            path: self.map_path(),
            source,
        };
        let file = match self.open_at(&self.map, libc::O_RDWR | libc::O_CREAT, 0o600) {
            Ok(file) => file,
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(FileError::PartExists(self.map_path()));
            }
            Err(e) => return Err(map_err(e)),
        };
        if !check_private_file(&file).map_err(map_err)? {
            return Err(FileError::PartExists(self.map_path()));
        }
        let mut bytes = Vec::new();
        (&file)
            .take(MAX_MAP_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(map_err)?;
        let bits = match parse_chunk_map(&bytes, id, count) {
            Some(bits) if !part_created => bits,
            _ => {
                let bits = vec![0u8; (count as usize).div_ceil(8)];
                let mut fresh = Vec::with_capacity(MAP_HEADER_BYTES + bits.len());
                fresh.extend_from_slice(MAP_MAGIC);
                fresh.extend_from_slice(&id.0);
                fresh.extend_from_slice(&count.to_be_bytes());
                fresh.extend_from_slice(&bits);
                file.set_len(0).map_err(map_err)?;
                file.write_all_at(&fresh, 0).map_err(map_err)?;
                bits
            }
        };
        Ok(ChunkMap {
            file: std::sync::Arc::new(file),
            bits,
        })
    }

    /// Removes the chunk map once the file is in place.
    fn remove_map(&self) {
        use std::os::fd::AsRawFd as _;
        // SAFETY: valid dir fd and NUL-terminated name.
        unsafe { libc::unlinkat(self.dir.as_raw_fd(), self.map.as_ptr(), 0) };
    }

    /// Renames `.part` to the final name, unless something appeared there meanwhile.
    fn commit(&self) -> Result<(), FileError> {
        use std::os::fd::AsRawFd as _;
        let dir = self.dir.as_raw_fd();
        // SAFETY: valid dir fds and NUL-terminated names.
        let r = unsafe {
            libc::renameat2(
                dir,
                self.part.as_ptr(),
                dir,
                self.name.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        Err(if e.kind() == io::ErrorKind::AlreadyExists {
            FileError::OutputExists(self.out.clone())
        } else {
            FileError::Write {
                path: self.out.clone(),
                source: e,
            }
        })
    }
}

fn part_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_owned();
    name.push(".part");
    out.with_file_name(name)
}

async fn fetch_manifest(
    client: &Client,
    id: FileId,
    providers: &[PeerId],
) -> Result<Manifest, FileError> {
    let mut last_error = String::from("no provider answered");
    // A provider whose connection failed or that was busy gets a second ask after a pause (a
    // connection closing as the request went out, e.g. right after a restart, is not a refusal).
    let mut retry = Vec::new();
    for (round, peers) in [providers.to_vec(), Vec::new()].into_iter().enumerate() {
        let peers = if round == 0 {
            peers
        } else if retry.is_empty() {
            break;
        } else {
            tokio::time::sleep(RETRY_PAUSE).await;
            std::mem::take(&mut retry)
        };
        for peer in peers {
            match client.request(peer, Request::Manifest(id)).await {
                Ok(Response::Manifest(bytes)) => {
                    if bytes.len() > MAX_MANIFEST_BYTES {
                        last_error = format!("{peer} sent an oversized manifest");
                        continue;
                    }
                    if FileId(Sha256::digest(&bytes).into()) != id {
                        last_error = format!("{peer} sent a manifest that does not hash to the id");
                        continue;
                    }
                    match Manifest::decode(&bytes) {
                        Ok(m) => return Ok(m),
                        Err(e) => last_error = format!("{peer}: {e}"),
                    }
                }
                Ok(Response::Busy) => {
                    last_error = format!("{peer} answered busy");
                    retry.push(peer);
                }
                Ok(other) => last_error = format!("{peer} answered {}", describe(&other)),
                Err(FileError::NodeStopped) => return Err(FileError::NodeStopped),
                Err(e) => {
                    last_error = format!("{peer}: {e}");
                    retry.push(peer);
                }
            }
        }
    }
    Err(FileError::NoManifest { id, last_error })
}

fn describe(response: &Response) -> String {
    match response {
        Response::Manifest(_) => "with a manifest".into(),
        Response::Chunk(_) => "with a chunk".into(),
        Response::NotFound => "not found".into(),
        Response::Busy => "busy".into(),
        Response::Error(e) => format!("error: {e}"),
    }
}

/// Per-provider state within one fetch.
struct Provider {
    peer: PeerId,
    in_flight: usize,
    chunks: u32,
    failures: u32,
    /// Chunk bytes received from it and since when (its first request): its delivery rate.
    bytes: u64,
    since: Instant,
    /// The chunk requests it may have in flight: [`provider_window`].
    window: usize,
    /// "Busy" answers in a row, and when it may be asked again (see [`busy_backoff`]).
    busy_streak: u32,
    resume_at: Option<Instant>,
    /// Pauses taken after chunk requests failed on a closing connection, and the end of the
    /// last one (see [`closed_retry`]).
    closed_retries: u32,
    closed_until: Option<Instant>,
}

/// A chunk request to `provider` failed because its connection closed at `now`: whether the
/// chunk is asked of it again instead of counting a failure. The first such failure starts a
/// pause of [`RETRY_PAUSE`] (the provider gets no requests until it ends); failures during the
/// pause are the same close's other requests and share it; [`MAX_CLOSED_RETRIES`] pauses at
/// most, then closes count as failures like timeouts do.
fn closed_retry(provider: &mut Provider, now: Instant) -> bool {
    if provider.closed_until.is_some_and(|t| now < t) {
        return true;
    }
    if provider.closed_retries >= MAX_CLOSED_RETRIES {
        return false;
    }
    provider.closed_retries += 1;
    let until = now + RETRY_PAUSE;
    provider.closed_until = Some(until);
    provider.resume_at = Some(provider.resume_at.map_or(until, |t| t.max(until)));
    true
}

/// A provider that answered "busy" `streak` times in a row is asked again after this long:
/// [`BUSY_BACKOFF_MIN`] doubling up to [`BUSY_BACKOFF_MAX`]. Busy is not a failure; only
/// [`MAX_BUSY_STREAK`] busies in a row (about 15 s of back-off) count as one.
pub fn busy_backoff(streak: u32) -> std::time::Duration {
    let doublings = streak.saturating_sub(1).min(16);
    (BUSY_BACKOFF_MIN * (1 << doublings)).min(BUSY_BACKOFF_MAX)
}

/// Chunk requests to keep in flight to a provider: the connection's bandwidth-delay product —
/// the rate chunks arrive at from it, times the connection's min RTT — in chunks, times
/// [`WINDOW_BDP_GAIN`], bounded by [`MIN_PER_PROVIDER`] and [`MAX_PER_PROVIDER`]. Without a
/// rate or an RTT yet, the minimum.
pub fn provider_window(
    delivered_bytes: u64,
    elapsed: std::time::Duration,
    min_rtt: Option<std::time::Duration>,
    chunk_bytes: u32,
) -> usize {
    let (Some(min_rtt), true) = (min_rtt, elapsed.as_secs_f64() > 0.0) else {
        return MIN_PER_PROVIDER;
    };
    let rate = delivered_bytes as f64 / elapsed.as_secs_f64();
    let bdp_chunks = rate * min_rtt.as_secs_f64() / f64::from(chunk_bytes.max(1));
    ((bdp_chunks * WINDOW_BDP_GAIN).ceil() as usize).clamp(MIN_PER_PROVIDER, MAX_PER_PROVIDER)
}

/// The smallest min RTT the kernel reports among the node's connections to `peer`.
fn min_rtt_to(peer: PeerId) -> Option<std::time::Duration> {
    let table = crate::sockets::SocketTable::global();
    table
        .snapshot()
        .into_iter()
        .filter(|socket| socket.peer == Some(peer))
        .filter_map(|socket| {
            // One socket at a time: the table is locked only while its TCP_INFO is read.
            table
                .with_fd(socket.cookie, |fd| crate::sockets::tcp_info(fd).ok())
                .flatten()
        })
        .filter(|info| info.min_rtt_us > 0 && info.min_rtt_us != u32::MAX)
        .map(|info| std::time::Duration::from_micros(u64::from(info.min_rtt_us)))
        .min()
}

async fn fetch_chunks(
    client: &Client,
    id: FileId,
    manifest: &Manifest,
    peers: &[PeerId],
    file: std::sync::Arc<std::fs::File>,
    mut map: ChunkMap,
    part: &Path,
) -> Result<FetchReport, FileError> {
    let write_err = |source| FileError::Write {
        path: part.to_owned(),
        source,
    };
    file.set_len(manifest.size).map_err(write_err)?;
    let count = manifest.chunks.len();

    // Resume: every chunk the map lists is hashed again; those that match are kept.
    let listed: Vec<u32> = (0..count as u32).filter(|&i| map.is_set(i)).collect();
    let kept = {
        let (file, manifest, listed) = (file.clone(), manifest.clone(), listed.clone());
        tokio::task::spawn_blocking(move || {
            listed
                .into_iter()
                .map(|i| {
                    let (offset, len) = (manifest.offset(i), manifest.chunk_len(i));
                    read_chunk(&file, offset, len, &manifest.chunks[i as usize]).is_ok()
                })
                .collect::<Vec<bool>>()
        })
        .await
        .map_err(|e| write_err(io::Error::other(e)))?
    };
    let mut resumed_chunks = 0u32;
    for (&index, ok) in listed.iter().zip(kept) {
        if ok {
            resumed_chunks += 1;
        } else {
            map.update(index, false);
        }
    }
    if resumed_chunks as usize != listed.len() {
        tracing::info!(%id, listed = listed.len(), resumed_chunks, "chunk map listed chunks that do not verify; fetching them again");
        map.write_all().map_err(write_err)?;
    }

    let mut providers: Vec<Provider> = peers
        .iter()
        .map(|&peer| Provider {
            peer,
            in_flight: 0,
            chunks: 0,
            failures: 0,
            bytes: 0,
            since: Instant::now(),
            window: MIN_PER_PROVIDER,
            busy_streak: 0,
            resume_at: None,
            closed_retries: 0,
            closed_until: None,
        })
        .collect();
    // Providers (bit per index in `providers`) that already failed each chunk.
    let mut tried = vec![0u32; count];
    let mut last_error: Vec<Option<String>> = vec![None; count];
    let mut queue: VecDeque<u32> = (0..count as u32).filter(|&i| !map.is_set(i)).collect();
    let mut in_flight = futures::stream::FuturesUnordered::new();
    let mut done = resumed_chunks as usize;
    let (mut corrupt_chunks, mut failed_requests, mut busy_responses) = (0u32, 0u32, 0u32);

    while done < count {
        // Hand out chunks while there is room.
        let now = Instant::now();
        while in_flight.len() < MAX_PARALLEL_CHUNKS {
            let Some(&index) = queue.front() else { break };
            let eligible = |p: &(usize, &Provider)| {
                tried[index as usize] & (1 << p.0) == 0 && p.1.failures < MAX_PROVIDER_FAILURES
            };
            if !providers.iter().enumerate().any(|p| eligible(&p)) {
                return Err(FileError::ChunkFailed {
                    id,
                    index,
                    last_error: last_error[index as usize]
                        .take()
                        .unwrap_or_else(|| "every provider failed too often".into()),
                });
            }
            // Spread chunks over providers, starting at a different one per chunk.
            let n = providers.len();
            let Some(slot) = (0..n).map(|k| (index as usize + k) % n).find(|&i| {
                let p = &providers[i];
                eligible(&(i, p)) && p.in_flight < p.window && p.resume_at.is_none_or(|t| t <= now)
            }) else {
                break; // every eligible provider is busy or backing off; wait for one.
            };
            queue.pop_front();
            providers[slot].in_flight += 1;
            let peer = providers[slot].peer;
            in_flight.push(async move {
                (
                    slot,
                    index,
                    client.request(peer, Request::Chunk(id, index)).await,
                )
            });
        }

        if in_flight.is_empty() {
            // Nothing in flight and nothing handed out: every provider is backing off.
            let Some(wake) = providers.iter().filter_map(|p| p.resume_at).min() else {
                break;
            };
            tokio::time::sleep_until(wake.into()).await;
            continue;
        }
        let Some((slot, index, result)) = in_flight.next().await else {
            break;
        };
        providers[slot].in_flight -= 1;
        let i = index as usize;
        let failure = match result {
            Ok(Response::Chunk(bytes)) => {
                if bytes.len() != manifest.chunk_len(index)
                    || Sha256::digest(&bytes).as_slice() != manifest.chunks[i]
                {
                    corrupt_chunks += 1;
                    client.metrics.chunks_corrupt.inc();
                    Some(format!(
                        "{} sent chunk {index} with a wrong hash",
                        providers[slot].peer
                    ))
                } else {
                    // The chunk's bytes, then its bit: the map never lists an unwritten
                    // chunk, also when this future is dropped while the write runs.
                    let (file, map_file) = (file.clone(), map.file.clone());
                    let offset = manifest.offset(index);
                    let (bit_offset, bit_byte) = map.update(index, true);
                    tokio::task::spawn_blocking(move || {
                        file.write_all_at(&bytes, offset)?;
                        map_file.write_all_at(&[bit_byte], bit_offset)
                    })
                    .await
                    .map_err(|e| write_err(io::Error::other(e)))?
                    .map_err(write_err)?;
                    let provider = &mut providers[slot];
                    provider.chunks += 1;
                    provider.busy_streak = 0;
                    provider.bytes += manifest.chunk_len(index) as u64;
                    provider.window = provider_window(
                        provider.bytes,
                        provider.since.elapsed(),
                        min_rtt_to(provider.peer),
                        manifest.chunk_bytes,
                    );
                    done += 1;
                    None
                }
            }
            Ok(Response::Busy) => {
                // Not a failure: the chunk waits, the provider is asked again later.
                busy_responses += 1;
                let provider = &mut providers[slot];
                provider.busy_streak += 1;
                provider.resume_at = Some(Instant::now() + busy_backoff(provider.busy_streak));
                if provider.busy_streak >= MAX_BUSY_STREAK {
                    provider.busy_streak = 0;
                    Some(format!(
                        "{} answered busy {MAX_BUSY_STREAK} times in a row",
                        provider.peer
                    ))
                } else {
                    queue.push_front(index);
                    None
                }
            }
            Ok(other) => {
                failed_requests += 1;
                Some(format!(
                    "{} answered {}",
                    providers[slot].peer,
                    describe(&other)
                ))
            }
            Err(FileError::NodeStopped) => return Err(FileError::NodeStopped),
            Err(FileError::Busy) => {
                // Our own node has too many requests in flight: wait, charge no provider.
                busy_responses += 1;
                providers[slot].resume_at = Some(Instant::now() + BUSY_BACKOFF_MIN);
                queue.push_front(index);
                None
            }
            Err(FileError::Request {
                connection_closed: true,
                ..
            }) if closed_retry(&mut providers[slot], Instant::now()) => {
                // The connection closed under the request: ask the same provider again.
                tracing::info!(%id, index, peer = %providers[slot].peer, "connection closed under a chunk request; asking again after a pause");
                queue.push_front(index);
                None
            }
            Err(e) => {
                failed_requests += 1;
                Some(format!("{}: {e}", providers[slot].peer))
            }
        };
        if let Some(why) = failure {
            tracing::debug!(%id, index, "chunk failed: {why}");
            tried[i] |= 1 << slot;
            providers[slot].failures += 1;
            last_error[i] = Some(why);
            queue.push_front(index);
        }
    }
    if done < count {
        return Err(FileError::ChunkFailed {
            id,
            index: queue.front().copied().unwrap_or_default(),
            last_error: "the fetch stopped before every chunk arrived".into(),
        });
    }
    file.sync_all().map_err(write_err)?;
    Ok(FetchReport {
        id,
        path: part.to_owned(),
        size: manifest.size,
        chunks: count,
        seconds: 0.0,
        bytes_per_second: 0.0,
        providers: providers
            .iter()
            .map(|p| ProviderReport {
                peer: p.peer,
                chunks: p.chunks,
                failures: p.failures,
            })
            .collect(),
        corrupt_chunks,
        failed_requests,
        busy_responses,
        resumed_chunks,
        providing: false,
        provide_error: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closing_connection_pauses_its_provider_once_per_close_and_at_most_3_times() {
        let t0 = Instant::now();
        let mut p = Provider {
            peer: PeerId::random(),
            in_flight: 0,
            chunks: 0,
            failures: 0,
            bytes: 0,
            since: t0,
            window: MIN_PER_PROVIDER,
            busy_streak: 0,
            resume_at: None,
            closed_retries: 0,
            closed_until: None,
        };
        let ms = std::time::Duration::from_millis;
        // One close fails several requests at once: they share one pause.
        assert!(closed_retry(&mut p, t0));
        assert!(closed_retry(&mut p, t0 + ms(10)));
        assert_eq!((p.closed_retries, p.resume_at), (1, Some(t0 + RETRY_PAUSE)));
        // A later close starts a second pause; a longer busy back-off is not shortened.
        let busy_until = t0 + RETRY_PAUSE * 4;
        p.resume_at = Some(busy_until);
        assert!(closed_retry(&mut p, t0 + RETRY_PAUSE));
        assert_eq!((p.closed_retries, p.resume_at), (2, Some(busy_until)));
        assert!(closed_retry(&mut p, t0 + RETRY_PAUSE * 2));
        // The fourth close after the third pause counts as a failure.
        assert!(!closed_retry(&mut p, t0 + RETRY_PAUSE * 3));
        assert_eq!(p.closed_retries, MAX_CLOSED_RETRIES);
    }

    #[test]
    fn provider_keys_are_sha2_256_multihashes_and_ids_print_as_cids() {
        // SHA2-256 of nothing: its CIDv1 (raw) is the well-known empty-file CID.
        let empty = FileId(Sha256::digest(b"").into());
        assert_eq!(
            empty.cid(),
            "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
        );
        // libp2p's own multihash decoder reads the key back: code, length, digest.
        let key = empty.key();
        let mh = libp2p::multihash::Multihash::<64>::from_bytes(key.as_ref()).unwrap();
        assert_eq!(mh.code(), 0x12);
        assert_eq!(mh.digest(), &empty.0[..]);
    }

    #[test]
    fn chunk_maps_are_read_only_when_they_are_this_files_map() {
        let id = FileId([7; 32]);
        let count = 13u32;
        let mut good = MAP_MAGIC.to_vec();
        good.extend_from_slice(&id.0);
        good.extend_from_slice(&count.to_be_bytes());
        good.extend_from_slice(&[0b1010_0101, 0b0001_0000]);
        assert_eq!(
            parse_chunk_map(&good, id, count),
            Some(vec![0b1010_0101, 0b0001_0000])
        );
        let broken = |at: usize, byte: u8| {
            let mut b = good.clone();
            b[at] ^= byte;
            b
        };
        for (bytes, why) in [
            (broken(0, 1), "magic"),
            (broken(8, 1), "another file's id"),
            (broken(43, 1), "another chunk count"),
            (good[..good.len() - 1].to_vec(), "truncated"),
            ([good.clone(), vec![0]].concat(), "too long"),
            (broken(45, 0b1000_0000), "a bit past the last chunk"),
        ] {
            assert_eq!(parse_chunk_map(&bytes, id, count), None, "{why}");
        }
        assert_eq!(parse_chunk_map(&good, FileId([8; 32]), count), None);
        assert_eq!(parse_chunk_map(&good, id, 16), None);
        // A map for more chunks than any manifest allows is never read.
        assert_eq!(parse_chunk_map(&good, id, MAX_CHUNKS + 1), None);
    }

    #[test]
    fn busy_backs_off_exponentially_within_bounds() {
        use std::time::Duration;
        assert_eq!(busy_backoff(1), BUSY_BACKOFF_MIN);
        assert_eq!(busy_backoff(2), Duration::from_millis(100));
        assert_eq!(busy_backoff(4), Duration::from_millis(400));
        assert_eq!(busy_backoff(7), BUSY_BACKOFF_MAX);
        assert_eq!(busy_backoff(u32::MAX), BUSY_BACKOFF_MAX);
        // A streak of MAX_BUSY_STREAK busies waits seconds, not forever, before it counts.
        let total: Duration = (1..MAX_BUSY_STREAK).map(busy_backoff).sum();
        assert!(
            total > Duration::from_secs(5) && total < Duration::from_secs(30),
            "{total:?}"
        );
    }

    #[test]
    fn provider_window_follows_the_bdp_within_bounds() {
        use std::time::Duration;
        let second = Duration::from_secs(1);
        // No RTT or no time yet: the minimum.
        assert_eq!(
            provider_window(1 << 20, second, None, CHUNK_BYTES),
            MIN_PER_PROVIDER
        );
        let rtt = Some(Duration::from_millis(100));
        assert_eq!(
            provider_window(0, Duration::ZERO, rtt, CHUNK_BYTES),
            MIN_PER_PROVIDER
        );
        // 12.5 MB/s (100 Mbit/s) × 100 ms = 1.25 MB ≈ 4.8 chunks of 256 KiB; twice that, rounded up.
        assert_eq!(provider_window(12_500_000, second, rtt, CHUNK_BYTES), 10);
        // 125 MB/s × 200 ms is 95 chunks: bounded.
        let long = Some(Duration::from_millis(200));
        assert_eq!(
            provider_window(125_000_000, second, long, CHUNK_BYTES),
            MAX_PER_PROVIDER
        );
    }

    fn manifest(size: u64) -> Manifest {
        let count = size.div_ceil(u64::from(CHUNK_BYTES));
        Manifest {
            size,
            chunk_bytes: CHUNK_BYTES,
            chunks: (0..count).map(|i| [i as u8; 32]).collect(),
        }
    }

    #[test]
    fn manifest_round_trips_and_names_the_file() {
        for size in [0, 1, u64::from(CHUNK_BYTES), u64::from(CHUNK_BYTES) * 3 + 7] {
            let m = manifest(size);
            assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
            let id = m.id();
            assert_eq!(id.to_string().parse::<FileId>().unwrap(), id);
        }
        assert_ne!(manifest(1).id(), manifest(2).id());
        let m = manifest(u64::from(CHUNK_BYTES) + 5);
        assert_eq!(m.chunk_len(0), CHUNK_BYTES as usize);
        assert_eq!(m.chunk_len(1), 5);
    }

    #[test]
    fn malformed_manifests_are_refused() {
        let good = manifest(u64::from(CHUNK_BYTES) * 2).encode();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (good[..10].to_vec(), "shorter than the header"),
            (
                {
                    let mut b = good.clone();
                    b[0] = 9;
                    b
                },
                "unknown version",
            ),
            (
                {
                    let mut b = good.clone();
                    b.push(0);
                    b
                },
                "hash bytes",
            ),
            (
                {
                    let mut b = good.clone();
                    b[13..17].copy_from_slice(&3u32.to_be_bytes());
                    b
                },
                "do not cover",
            ),
            (
                {
                    let mut b = good.clone();
                    b[9..13].copy_from_slice(&1u32.to_be_bytes());
                    b
                },
                "chunk size",
            ),
            (
                {
                    let mut b = good.clone();
                    b[1..9].copy_from_slice(&u64::MAX.to_be_bytes());
                    b
                },
                "exceeds",
            ),
        ];
        for (bytes, want) in cases {
            let err = Manifest::decode(&bytes).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should mention {want:?}");
        }
    }

    #[test]
    fn bad_file_ids_are_refused() {
        for bad in ["", "zz", &"0".repeat(63), &"g".repeat(64), &"0".repeat(66)] {
            let err = bad.parse::<FileId>().unwrap_err().to_string();
            assert!(err.contains("is not a file id"), "{err}");
        }
    }

    #[test]
    fn codec_round_trips_and_bounds_responses() {
        use request_response::Codec as _;
        futures::executor::block_on(async {
            let mut codec = Codec;
            let id = manifest(1).id();
            for req in [Request::Manifest(id), Request::Chunk(id, 7)] {
                let mut buf = Vec::new();
                codec.write_request(&PROTOCOL, &mut buf, req).await.unwrap();
                let got = codec.read_request(&PROTOCOL, &mut &buf[..]).await.unwrap();
                assert_eq!(got, req);
            }
            for res in [
                Response::Chunk(vec![1, 2, 3]),
                Response::NotFound,
                Response::Busy,
                Response::Error("nope".into()),
            ] {
                let mut buf = Vec::new();
                codec
                    .write_response(&PROTOCOL, &mut buf, res.clone())
                    .await
                    .unwrap();
                let got = codec.read_response(&PROTOCOL, &mut &buf[..]).await.unwrap();
                assert_eq!(got, res);
            }
            let mut huge = vec![1u8];
            huge.resize(MAX_RESPONSE_BYTES + 2, 0);
            let err = codec
                .read_response(&PROTOCOL, &mut &huge[..])
                .await
                .unwrap_err();
            assert!(err.to_string().contains("exceeds"), "{err}");
            let err = codec
                .read_request(&PROTOCOL, &mut &[9u8; REQUEST_BYTES][..])
                .await
                .unwrap_err();
            assert!(err.to_string().contains("unknown request type"), "{err}");
        });
    }
}

/// Fuzz targets (see `crate::fuzz`): what a hostile peer sends on [`PROTOCOL`] — requests,
/// responses and chunk framing — and the manifest and ids it names.
#[cfg(test)]
mod fuzz {
    use futures::{executor::block_on, io::Cursor};
    use proptest::{collection::vec, prelude::*};
    use request_response::Codec as _;

    use super::*;
    use crate::fuzz::for_a_while;

    fn read_request(bytes: &[u8]) -> io::Result<Request> {
        block_on(Codec.read_request(&PROTOCOL, &mut Cursor::new(bytes)))
    }

    fn read_response(bytes: &[u8]) -> io::Result<Response> {
        block_on(Codec.read_response(&PROTOCOL, &mut Cursor::new(bytes)))
    }

    fn write_request(request: Request) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        block_on(Codec.write_request(&PROTOCOL, &mut out, request)).unwrap();
        out.into_inner()
    }

    fn write_response(response: Response) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        block_on(Codec.write_response(&PROTOCOL, &mut out, response)).unwrap();
        out.into_inner()
    }

    /// Lengths around every bound the codec checks, and small ones.
    fn body_len() -> impl Strategy<Value = usize> {
        let around = |n: usize| n.saturating_sub(2)..=n + 2;
        prop_oneof![
            40 => 0..1024usize,
            4 => around(MAX_ERROR_BYTES),
            1 => around(MAX_CHUNK_BYTES as usize),
            1 => around(MAX_RESPONSE_BYTES),
        ]
    }

    #[test]
    fn requests() {
        let bytes = prop_oneof![
            vec(any::<u8>(), 0..80),
            (0u8..3, any::<[u8; 32]>(), any::<u32>()).prop_map(|(tag, id, index)| {
                let mut b = vec![tag];
                b.extend_from_slice(&id);
                b.extend_from_slice(&index.to_be_bytes());
                b
            }),
        ];
        for_a_while("file-sharing requests", bytes, |bytes| {
            match read_request(&bytes) {
                Ok(request) => {
                    prop_assert!(bytes.len() >= REQUEST_BYTES);
                    let again = write_request(request);
                    prop_assert_eq!(read_request(&again).unwrap(), request);
                    // What was read is exactly the frame (a manifest request ignores the index).
                    prop_assert_eq!(&again[..33], &bytes[..33]);
                }
                Err(_) => prop_assert!(bytes.len() < REQUEST_BYTES || bytes[0] > 1),
            }
            Ok(())
        });
    }

    #[test]
    fn responses_and_chunk_framing() {
        let frames = (
            any::<u8>(),
            body_len(),
            any::<u8>(),
            vec(any::<u8>(), 0..64),
        )
            .prop_map(|(tag, len, fill, head)| {
                let mut b = vec![tag % 6];
                b.extend(
                    head.iter()
                        .copied()
                        .chain(std::iter::repeat(fill))
                        .take(len),
                );
                b
            });
        for_a_while("file-sharing responses", frames, |bytes| {
            let Ok(response) = read_response(&bytes) else {
                return Ok(());
            };
            let body = bytes.len().saturating_sub(1);
            prop_assert!(body <= MAX_RESPONSE_BYTES);
            match &response {
                Response::Chunk(c) => prop_assert!(c.len() <= MAX_CHUNK_BYTES as usize),
                Response::Error(e) => prop_assert!(e.len() <= 3 * MAX_ERROR_BYTES),
                _ => {}
            }
            // Written back and read again: the same response (an error message longer than
            // the limit is cut on the way out; that cut is what a receiver sees).
            let again = read_response(&write_response(response.clone())).unwrap();
            match (&response, &again) {
                (Response::Error(a), Response::Error(b)) if a.len() > MAX_ERROR_BYTES => {
                    prop_assert!(b.len() <= 3 * MAX_ERROR_BYTES)
                }
                _ => prop_assert_eq!(&again, &response),
            }
            Ok(())
        });
    }

    /// Manifest headers near and past every bound, with hash bytes that fit or do not.
    fn manifest_bytes() -> impl Strategy<Value = Vec<u8>> {
        let size = prop_oneof![
            Just(0u64),
            1u64..10_000_000,
            (MAX_FILE_BYTES - 2)..=(MAX_FILE_BYTES + 2),
            any::<u64>(),
        ];
        let chunk = prop_oneof![
            Just(CHUNK_BYTES),
            (MIN_CHUNK_BYTES - 1)..=(MIN_CHUNK_BYTES + 1),
            (MAX_CHUNK_BYTES - 1)..=(MAX_CHUNK_BYTES + 1),
            any::<u32>(),
        ];
        let structured = (0u8..3, size, chunk, -2i64..=2, 0usize..40).prop_map(
            |(version, size, chunk_bytes, count_skew, extra)| {
                let count = if chunk_bytes == 0 {
                    0
                } else {
                    (size.div_ceil(u64::from(chunk_bytes)) as i64 + count_skew).max(0) as u32
                };
                let mut b = vec![version];
                b.extend_from_slice(&size.to_be_bytes());
                b.extend_from_slice(&chunk_bytes.to_be_bytes());
                b.extend_from_slice(&count.to_be_bytes());
                // Hash bytes for up to a few hundred chunks; large counts get a short tail.
                let hashes = (count.min(300) as usize * 32 + extra).saturating_sub(20);
                b.extend((0..hashes).map(|i| i as u8));
                b
            },
        );
        prop_oneof![vec(any::<u8>(), 0..200), structured]
    }

    #[test]
    fn manifests() {
        for_a_while("manifests", manifest_bytes(), |bytes| {
            let Ok(m) = Manifest::decode(&bytes) else {
                return Ok(());
            };
            prop_assert_eq!(m.encode(), bytes);
            prop_assert!(m.size <= MAX_FILE_BYTES);
            // The chunks tile the file exactly: what a fetcher writes is what the size says.
            let mut covered = 0u64;
            for index in 0..m.chunks.len() as u32 {
                prop_assert_eq!(m.offset(index), covered);
                let len = m.chunk_len(index);
                prop_assert!(len >= 1 && len <= m.chunk_bytes as usize);
                covered += len as u64;
            }
            prop_assert_eq!(covered, m.size);
            Ok(())
        });
    }

    #[test]
    fn file_ids() {
        let text = prop_oneof![
            ".{0,80}",
            "[0-9a-fA-F]{62,66}",
            any::<[u8; 32]>().prop_map(hex::encode),
        ];
        for_a_while("file ids", text, |text| {
            if let Ok(id) = text.parse::<FileId>() {
                prop_assert_eq!(id.to_string(), text.to_ascii_lowercase());
                prop_assert_eq!(id.to_string().parse::<FileId>().unwrap(), id);
            }
            Ok(())
        });
    }
}
