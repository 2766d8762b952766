//! The libp2p `perf` protocol (libp2p/specs `perf/perf.md`): measured bulk transfer.
//!
//! The client opens a stream, sends the number of bytes it wants back as a big-endian u64,
//! uploads its bytes and closes its write side; the server discards the upload, then sends the
//! requested bytes and closes. Requests above [`MAX_TRANSFER_BYTES`] are refused, and at most
//! [`MAX_INBOUND`] inbound transfers run at once; the excess is reset.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream, StreamProtocol};
use serde::Serialize;
use tokio::sync::Semaphore;

pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/perf/1.0.0");
/// Largest transfer either side accepts in one direction (1 GiB).
pub const MAX_TRANSFER_BYTES: u64 = 1 << 30;
/// Inbound transfers served at once.
pub const MAX_INBOUND: usize = 8;
/// A transfer that makes no progress for this long is abandoned.
const STALL_TIMEOUT: Duration = Duration::from_secs(10);
const CHUNK: usize = 64 * 1024;

/// Inbound perf streams refused (over the concurrency limit or malformed).
pub static REJECTED: AtomicU64 = AtomicU64::new(0);

#[derive(Clone, Debug, Serialize)]
pub struct PerfReport {
    pub upload_bytes: u64,
    pub download_bytes: u64,
    pub upload_seconds: f64,
    pub download_seconds: f64,
    pub upload_bits_per_second: f64,
    pub download_bits_per_second: f64,
}

/// Runs one transfer as the client.
pub async fn run(
    mut control: libp2p_stream::Control,
    peer: PeerId,
    upload_bytes: u64,
    download_bytes: u64,
) -> anyhow::Result<PerfReport> {
    if upload_bytes > MAX_TRANSFER_BYTES || download_bytes > MAX_TRANSFER_BYTES {
        bail!("perf transfers are limited to {MAX_TRANSFER_BYTES} bytes per direction");
    }
    let mut stream = control
        .open_stream(peer, PROTOCOL)
        .await
        .with_context(|| format!("opening a perf stream to {peer}"))?;
    let start = Instant::now();
    stream.write_all(&download_bytes.to_be_bytes()).await?;
    send(&mut stream, upload_bytes).await?;
    stream.close().await?;
    let upload_seconds = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let received = drain(&mut stream).await?;
    let download_seconds = start.elapsed().as_secs_f64();
    if received != download_bytes {
        bail!("peer sent {received} bytes, {download_bytes} were requested");
    }
    let rate = |bytes: u64, secs: f64| {
        if secs > 0.0 {
            bytes as f64 * 8.0 / secs
        } else {
            0.0
        }
    };
    Ok(PerfReport {
        upload_bytes,
        download_bytes,
        upload_seconds,
        download_seconds,
        upload_bits_per_second: rate(upload_bytes, upload_seconds),
        download_bits_per_second: rate(download_bytes, download_seconds),
    })
}

/// Serves inbound perf streams in the background.
pub fn serve(mut control: libp2p_stream::Control) -> anyhow::Result<()> {
    let mut incoming = control
        .accept(PROTOCOL)
        .context("perf protocol registered twice")?;
    let slots = Arc::new(Semaphore::new(MAX_INBOUND));
    tokio::spawn(async move {
        while let Some((peer, stream)) = incoming.next().await {
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                REJECTED.fetch_add(1, Ordering::Relaxed);
                drop(stream);
                continue;
            };
            tokio::spawn(async move {
                if let Err(e) = respond(stream).await {
                    REJECTED.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, "perf stream failed: {e:#}");
                }
                drop(permit);
            });
        }
    });
    Ok(())
}

async fn respond(mut stream: Stream) -> anyhow::Result<()> {
    let mut header = [0u8; 8];
    with_deadline(stream.read_exact(&mut header)).await?;
    let requested = u64::from_be_bytes(header);
    if requested > MAX_TRANSFER_BYTES {
        bail!("perf request for {requested} bytes exceeds the {MAX_TRANSFER_BYTES}-byte limit");
    }
    drain(&mut stream).await?;
    send(&mut stream, requested).await?;
    stream.close().await?;
    Ok(())
}

async fn send(stream: &mut Stream, mut bytes: u64) -> anyhow::Result<()> {
    let buf = vec![0u8; CHUNK];
    while bytes > 0 {
        let n = bytes.min(CHUNK as u64) as usize;
        with_deadline(stream.write_all(&buf[..n])).await?;
        bytes -= n as u64;
    }
    Ok(())
}

async fn drain(stream: &mut Stream) -> anyhow::Result<u64> {
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = with_deadline(stream.read(&mut buf)).await?;
        if n == 0 {
            return Ok(total);
        }
        total += n as u64;
        if total > MAX_TRANSFER_BYTES {
            bail!("peer sent more than {MAX_TRANSFER_BYTES} bytes");
        }
    }
}

async fn with_deadline<T>(io: impl Future<Output = std::io::Result<T>>) -> anyhow::Result<T> {
    tokio::time::timeout(STALL_TIMEOUT, io)
        .await
        .context("perf transfer stalled")?
        .map_err(Into::into)
}
