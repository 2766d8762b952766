//! The TCP transport hook: every TCP stream libp2p-tcp produces (dialed or accepted) passes
//! through [`HookedStream::register`], which sets the node's congestion control on the socket and
//! registers its cookie in the [`SocketTable`]. The entry is removed when the stream is dropped.
//!
//! libp2p-tcp 0.45 keeps its `Provider` trait private, so the hook sits on the transport's
//! output (`Transport::map`) instead: it runs once the TCP connection is established and before
//! any byte of the libp2p handshake, so the connection carries all its data on the chosen
//! algorithm (only the SYN exchange ran on the kernel default).

use std::{
    io,
    net::{self, SocketAddr},
    os::fd::AsFd,
    pin::Pin,
    task::{Context, Poll},
};

use futures::{AsyncRead, AsyncWrite};
use libp2p::{Multiaddr, PeerId, core::ConnectedPoint, multiaddr::Protocol, tcp::tokio::TcpStream};

use crate::sockets::{Direction, SocketTable};

/// A TCP stream registered in the [`SocketTable`] for as long as it lives.
#[derive(Debug)]
pub struct HookedStream {
    inner: TcpStream,
    cookie: u64,
}

impl HookedStream {
    /// Applies the node's algorithm and registers the socket.
    pub fn register(inner: TcpStream, endpoint: &ConnectedPoint) -> io::Result<Self> {
        let direction = if endpoint.is_dialer() {
            Direction::Outbound
        } else {
            Direction::Inbound
        };
        let local = inner.0.local_addr()?;
        let remote = inner.0.peer_addr()?;
        let cookie = SocketTable::global().register(inner.0.as_fd(), direction, local, remote)?;
        Ok(Self { inner, cookie })
    }
}

impl Drop for HookedStream {
    fn drop(&mut self) {
        SocketTable::global().unregister(self.cookie);
    }
}

impl AsyncRead for HookedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for HookedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// Binds an authenticated PeerId to its socket. The transport's upgrade output does not carry
/// the socket, so the socket is found by its remote address and direction: for a dial, the
/// address dialed; for an accepted connection, the address it came from. Two sockets can only
/// share that key when both reach the same remote endpoint, whose PeerId is the same, so the
/// cookie → PeerId join stays exact.
pub fn bind_peer(peer: PeerId, endpoint: &ConnectedPoint) {
    let (remote, direction) = match endpoint {
        ConnectedPoint::Dialer { address, .. } => (address, Direction::Outbound),
        ConnectedPoint::Listener { send_back_addr, .. } => (send_back_addr, Direction::Inbound),
    };
    let Some(remote) = socket_addr(remote) else {
        return;
    };
    let table = SocketTable::global();
    if let Some(socket) = table
        .snapshot()
        .into_iter()
        .filter(|s| s.peer.is_none() && s.direction == direction && s.remote == remote)
        .min_by_key(|s| s.opened_unix_s)
    {
        table.bind_peer(socket.cookie, peer);
    }
}

/// The IP and TCP port of a multiaddr, if it has both.
pub fn socket_addr(addr: &Multiaddr) -> Option<SocketAddr> {
    let mut ip = None;
    for proto in addr.iter() {
        match proto {
            Protocol::Ip4(a) => ip = Some(net::IpAddr::V4(a)),
            Protocol::Ip6(a) => ip = Some(net::IpAddr::V6(a)),
            Protocol::Tcp(port) => return ip.map(|ip| SocketAddr::new(ip, port)),
            _ => {}
        }
    }
    None
}
