//! The TCP transport hook: every TCP stream libp2p-tcp produces (dialed or accepted) passes
//! through [`HookedStream::register`], which sets the node's congestion control on the socket and
//! registers its cookie in the [`SocketTable`]. The entry is removed when the stream is dropped.
//! The stream then goes through [`upgrade`] (noise, then yamux), which binds the PeerId noise
//! authenticated to that very socket: the join is exact whatever the addresses (NAT, several
//! peers behind one address, handshakes finishing together).
//!
//! libp2p-tcp 0.45 keeps its `Provider` trait private, so the hook sits on the transport's
//! output (`Transport::map`) instead: it runs once the TCP connection is established and before
//! any byte of the libp2p handshake, so the connection carries all its data on the chosen
//! algorithm (only the SYN exchange ran on the kernel default).

use std::{
    io,
    net::{IpAddr, SocketAddr},
    os::fd::AsFd,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use futures::{AsyncRead, AsyncWrite};
use libp2p::{
    Multiaddr, PeerId,
    core::{
        ConnectedPoint, Negotiated, Transport as _,
        muxing::StreamMuxerBox,
        transport::{Boxed, timeout::TransportTimeout},
        upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, Version},
    },
    noise,
    tcp::tokio::TcpStream,
    yamux,
};

pub use crate::sockets::HANDSHAKE_TIMEOUT;
use crate::sockets::{Direction, SocketTable};

/// A TCP stream registered in the [`SocketTable`] for as long as it lives.
#[derive(Debug)]
pub struct HookedStream {
    inner: TcpStream,
    cookie: u64,
    sockets: Arc<SocketTable>,
}

impl HookedStream {
    /// Applies the node's algorithm and registers the socket.
    pub fn register(
        sockets: Arc<SocketTable>,
        inner: TcpStream,
        endpoint: &ConnectedPoint,
    ) -> io::Result<Self> {
        let direction = if endpoint.is_dialer() {
            Direction::Outbound
        } else {
            Direction::Inbound
        };
        let local = inner.0.local_addr()?;
        let remote = inner.0.peer_addr()?;
        let cookie = sockets.register(inner.0.as_fd(), direction, local, remote)?;
        Ok(Self {
            inner,
            cookie,
            sockets,
        })
    }
}

impl Drop for HookedStream {
    fn drop(&mut self) {
        self.sockets.unregister(self.cookie);
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

/// The node's TCP transport: every stream is registered in `sockets` (with the node's
/// congestion control), secured with noise and multiplexed with yamux, its PeerId bound to its
/// socket; a connection not through all of that within [`HANDSHAKE_TIMEOUT`] is dropped.
pub fn tcp(
    key: &libp2p::identity::Keypair,
    sockets: Arc<SocketTable>,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, noise::Error> {
    let noise = noise::Config::new(key)?;
    let tcp = libp2p::tcp::tokio::Transport::new(libp2p::tcp::Config::default().nodelay(true));
    // `/dns4`, `/dns6` and `/dns` addresses are resolved when dialled (libp2p-dns, hickory:
    // /etc/hosts first, then the system's name servers; without /etc/resolv.conf the hosts file
    // alone, so `localhost` works offline).
    let tcp = if std::path::Path::new("/etc/resolv.conf").exists() {
        libp2p::dns::tokio::Transport::system(tcp).map_err(noise::Error::Io)?
    } else {
        libp2p::dns::tokio::Transport::custom(
            tcp,
            libp2p::dns::ResolverConfig::from_name_servers(Vec::new()),
            libp2p::dns::ResolverOpts::default(),
        )
    };
    let upgraded = tcp.and_then(move |stream, endpoint| {
        let noise = noise.clone();
        let sockets = sockets.clone();
        async move {
            let stream = HookedStream::register(sockets, stream, &endpoint)?;
            upgrade(stream, endpoint, noise).await
        }
    });
    Ok(TransportTimeout::new(upgraded, HANDSHAKE_TIMEOUT).boxed())
}

/// Secures and multiplexes a registered stream, and binds the PeerId noise authenticated to
/// exactly that stream's socket (by the cookie the stream carries, O(1)).
///
/// This is what libp2p's `upgrade(V1).authenticate(noise).multiplex(yamux)` does, written out
/// so the socket's cookie is still at hand when the remote's identity is known.
pub async fn upgrade(
    stream: HookedStream,
    endpoint: ConnectedPoint,
    noise: noise::Config,
) -> io::Result<(PeerId, StreamMuxerBox)> {
    let (cookie, sockets) = (stream.cookie, stream.sockets.clone());
    let (peer, secured) = negotiate(stream, noise, &endpoint).await?;
    sockets.bind_peer(cookie, peer);
    let muxer = negotiate(secured, yamux::Config::default(), &endpoint).await?;
    Ok((peer, StreamMuxerBox::new(muxer)))
}

/// Negotiates `upgrade` with multistream-select (protocol version 1) in the role the endpoint
/// gives, then runs it (libp2p-core's private `upgrade::apply`).
async fn negotiate<C, U, O, E>(io: C, upgrade: U, endpoint: &ConnectedPoint) -> io::Result<O>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: InboundConnectionUpgrade<Negotiated<C>, Output = O, Error = E>
        + OutboundConnectionUpgrade<Negotiated<C>, Output = O, Error = E>,
    E: std::error::Error + Send + Sync + 'static,
{
    let protocols = upgrade.protocol_info();
    match endpoint {
        ConnectedPoint::Dialer { role_override, .. } if role_override.is_dialer() => {
            let (info, io) = multistream_select::dialer_select_proto(io, protocols, Version::V1)
                .await
                .map_err(io::Error::other)?;
            upgrade
                .upgrade_outbound(io, info)
                .await
                .map_err(io::Error::other)
        }
        _ => {
            let (info, io) = multistream_select::listener_select_proto(io, protocols)
                .await
                .map_err(io::Error::other)?;
            upgrade
                .upgrade_inbound(io, info)
                .await
                .map_err(io::Error::other)
        }
    }
}

/// The IP and TCP port of a multiaddr, if it has both.
pub fn socket_addr(addr: &Multiaddr) -> Option<SocketAddr> {
    use libp2p::multiaddr::Protocol;
    let mut ip = None;
    for proto in addr.iter() {
        match proto {
            Protocol::Ip4(a) => ip = Some(IpAddr::V4(a)),
            Protocol::Ip6(a) => ip = Some(IpAddr::V6(a)),
            Protocol::Tcp(port) => return ip.map(|ip| SocketAddr::new(ip, port)),
            _ => {}
        }
    }
    None
}

/// `addr` with a leading `/dns4`, `/dns6` or `/dns` name replaced by the first address the
/// system resolver (getaddrinfo: /etc/hosts, then DNS) gives for it, of the family it asks for;
/// other addresses unchanged. `localhost` and `*.localhost` are the loopback addresses
/// (127.0.0.1, ::1) without asking anyone, as RFC 6761 says and as the DNS transport's resolver
/// (hickory) does, so a name means the same here and at a dial. Blocking. The error is one line
/// naming the address and the name.
pub fn resolve(addr: &Multiaddr) -> Result<Multiaddr, String> {
    use libp2p::multiaddr::Protocol;
    let mut parts = addr.iter();
    let (name, want): (String, fn(&IpAddr) -> bool) = match parts.next() {
        Some(Protocol::Dns4(name)) => (name.into_owned(), IpAddr::is_ipv4),
        Some(Protocol::Dns6(name)) => (name.into_owned(), IpAddr::is_ipv6),
        Some(Protocol::Dns(name)) => (name.into_owned(), |_| true),
        _ => return Ok(addr.clone()),
    };
    let family = if want(&IpAddr::from([0u8; 4])) && want(&IpAddr::from([0u16; 8])) {
        "an"
    } else if want(&IpAddr::from([0u8; 4])) {
        "an IPv4"
    } else {
        "an IPv6"
    };
    let lower = name.trim_end_matches('.').to_ascii_lowercase();
    let found = if lower == "localhost" || lower.ends_with(".localhost") {
        [
            IpAddr::from([127, 0, 0, 1]),
            IpAddr::from([0, 0, 0, 0, 0, 0, 0, 1]),
        ]
        .into_iter()
        .find(want)
        .expect("each family has a loopback address")
    } else {
        std::net::ToSocketAddrs::to_socket_addrs(&(name.as_str(), 0))
            .map_err(|e| format!("{addr}: {name} does not resolve ({e})"))?
            .map(|a| a.ip())
            .find(want)
            .ok_or_else(|| format!("{addr}: {name} has no {family} address"))?
    };
    let mut out = Multiaddr::empty().with(match found {
        IpAddr::V4(ip) => Protocol::Ip4(ip),
        IpAddr::V6(ip) => Protocol::Ip6(ip),
    });
    for p in parts {
        out.push(p);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(addr: &str) -> Result<String, String> {
        resolve(&addr.parse().unwrap()).map(|a| a.to_string())
    }

    #[test]
    fn localhost_is_the_loopback_address_of_the_family_asked_for() {
        assert_eq!(resolved("/dns6/localhost/tcp/1").unwrap(), "/ip6/::1/tcp/1");
        assert_eq!(
            resolved("/dns4/localhost/tcp/1").unwrap(),
            "/ip4/127.0.0.1/tcp/1"
        );
        assert_eq!(
            resolved("/dns6/node.LOCALHOST./tcp/1/p2p/12D3KooWPTwjw7J95d2iw5DRQq5Cz8XmjhGfGKkeB5rpf86Bckzs")
                .unwrap(),
            "/ip6/::1/tcp/1/p2p/12D3KooWPTwjw7J95d2iw5DRQq5Cz8XmjhGfGKkeB5rpf86Bckzs"
        );
        assert_eq!(resolved("/ip6/::1/tcp/1").unwrap(), "/ip6/::1/tcp/1");
        // Not a localhost name: asked of the system (`.invalid` never resolves, RFC 6761).
        let e = resolved("/dns6/localhost.invalid/tcp/1").unwrap_err();
        assert!(
            e.starts_with("/dns6/localhost.invalid/tcp/1: localhost.invalid "),
            "{e}"
        );
    }
}
