//! The node's TCP sockets: cookie → (PeerId, addresses, algorithm), the join every other part reads.
//!
//! The TCP transport hook (`node::transport`) registers every socket the node makes or accepts,
//! identified by its socket cookie (`SO_COOKIE`, the same id the eBPF probes see). The PeerId is
//! bound once the noise handshake on that socket authenticates the remote. The entry is removed
//! when the socket is dropped. libp2p-tcp's `Provider` trait has no `self`, so the table is one
//! per process ([`SocketTable::global`]).

use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    os::fd::{AsRawFd, BorrowedFd, RawFd},
    sync::{Arc, Mutex, OnceLock, RwLock},
    time::SystemTime,
};

use libp2p::PeerId;
use serde::{Deserialize, Serialize};

/// Sockets the node keeps at once; more are refused at the transport. Above the connection
/// limits (1024 inbound + 512 outbound established, plus pending handshakes).
pub const MAX_SOCKETS: usize = 4096;

/// How long a connection may take from TCP established to an authenticated, multiplexed
/// libp2p connection; the transport drops (and so unregisters) a socket when it runs out.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Who opened the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Inbound,
    Outbound,
}

/// One of the node's TCP sockets.
#[derive(Clone, Debug, Serialize)]
pub struct SocketInfo {
    pub cookie: u64,
    /// Set once the noise handshake authenticated the remote.
    #[serde(serialize_with = "ser_peer")]
    pub peer: Option<PeerId>,
    pub direction: Direction,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The congestion control the socket runs (`TCP_CONGESTION`).
    pub algorithm: String,
    /// Unix time the socket was registered, seconds.
    pub opened_unix_s: u64,
    /// When the socket was registered (for the handshake-timeout check).
    #[serde(skip)]
    pub registered: std::time::Instant,
    /// The socket's fd in this process: valid while the entry exists (the stream unregisters
    /// before it closes the fd), so use it only under [`SocketTable::with_fd`].
    #[serde(skip)]
    pub fd: RawFd,
}

impl std::fmt::Debug for SocketTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketTable")
            .field("sockets", &self.len())
            .finish_non_exhaustive()
    }
}

fn ser_peer<S: serde::Serializer>(peer: &Option<PeerId>, s: S) -> Result<S::Ok, S::Error> {
    match peer {
        Some(p) => s.serialize_str(&p.to_base58()),
        None => s.serialize_none(),
    }
}

/// Told when sockets come and go (the eBPF side starts and stops tracking them).
pub trait SocketObserver: Send + Sync {
    /// A socket of the node was registered; `fd` is open for the call.
    fn opened(&self, cookie: u64, fd: BorrowedFd<'_>);
    fn closed(&self, cookie: u64);
}

/// Called when setting the node's algorithm on a new socket fails because the kernel no
/// longer offers it (e.g. the node that registered bbr-p2p exited); returns whether it is
/// available again (registered anew).
pub type Reprovide = Box<dyn Fn(&str) -> bool + Send + Sync>;

/// Called with a socket's entry and its still-open fd just before it leaves the table (its
/// stream is being dropped): the last look at the socket's kernel state.
pub type CloseHook = Box<dyn Fn(&SocketInfo, BorrowedFd<'_>) + Send + Sync>;

/// Called with a socket's entry (its PeerId just bound) and its fd once the noise handshake
/// authenticated the remote, before the connection carries application data.
pub type BindHook = Box<dyn Fn(&SocketInfo, BorrowedFd<'_>) + Send + Sync>;

/// The node's socket table and the algorithm new sockets get.
pub struct SocketTable {
    sockets: Mutex<HashMap<u64, SocketInfo>>,
    algorithm: RwLock<Option<String>>,
    observer: RwLock<Option<Arc<dyn SocketObserver>>>,
    reprovide: RwLock<Option<Reprovide>>,
    close_hook: RwLock<Option<CloseHook>>,
    bind_hook: RwLock<Option<BindHook>>,
}

impl SocketTable {
    /// An empty table.
    pub fn new() -> Arc<Self> {
        Arc::new(SocketTable {
            sockets: Mutex::new(HashMap::new()),
            algorithm: RwLock::new(None),
            observer: RwLock::new(None),
            reprovide: RwLock::new(None),
            close_hook: RwLock::new(None),
            bind_hook: RwLock::new(None),
        })
    }

    /// The table of the node binary's process.
    pub fn global() -> &'static Arc<SocketTable> {
        static TABLE: OnceLock<Arc<SocketTable>> = OnceLock::new();
        TABLE.get_or_init(SocketTable::new)
    }

    /// Sockets registered now.
    pub fn len(&self) -> usize {
        self.sockets.lock().expect("lock poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sets the congestion control for sockets registered from now on (`None`: kernel default).
    pub fn set_algorithm(&self, algorithm: Option<String>) {
        *self.algorithm.write().expect("lock poisoned") = algorithm;
    }

    pub fn algorithm(&self) -> Option<String> {
        self.algorithm.read().expect("lock poisoned").clone()
    }

    pub fn set_observer(&self, observer: Arc<dyn SocketObserver>) {
        *self.observer.write().expect("lock poisoned") = Some(observer);
    }

    pub fn set_reprovide(&self, reprovide: Reprovide) {
        *self.reprovide.write().expect("lock poisoned") = Some(reprovide);
    }

    pub fn set_close_hook(&self, hook: CloseHook) {
        *self.close_hook.write().expect("lock poisoned") = Some(hook);
    }

    pub fn set_bind_hook(&self, hook: BindHook) {
        *self.bind_hook.write().expect("lock poisoned") = Some(hook);
    }

    /// Sets the node's algorithm on a socket, re-providing it once if the kernel lost it.
    fn apply_algorithm(&self, fd: BorrowedFd<'_>, name: &str) -> io::Result<()> {
        match set_congestion(fd, name) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let again = self
                    .reprovide
                    .read()
                    .expect("lock poisoned")
                    .as_ref()
                    .is_some_and(|reprovide| reprovide(name));
                if again {
                    set_congestion(fd, name)
                } else {
                    Err(e)
                }
            }
            result => result,
        }
    }

    /// Registers a new socket: applies the node's algorithm, records the cookie. Errors refuse
    /// the connection (table full, or the algorithm cannot be set).
    pub fn register(
        &self,
        fd: BorrowedFd<'_>,
        direction: Direction,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> io::Result<u64> {
        if let Some(name) = self.algorithm() {
            self.apply_algorithm(fd, &name)?;
        }
        let algorithm = congestion(fd)?;
        let cookie = cookie(fd)?;
        {
            let mut sockets = self.sockets.lock().expect("lock poisoned");
            if sockets.len() >= MAX_SOCKETS {
                return Err(io::Error::other(format!(
                    "socket table full ({MAX_SOCKETS} sockets)"
                )));
            }
            sockets.insert(
                cookie,
                SocketInfo {
                    cookie,
                    peer: None,
                    direction,
                    local,
                    remote,
                    algorithm,
                    opened_unix_s: SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs()),
                    registered: std::time::Instant::now(),
                    fd: fd.as_raw_fd(),
                },
            );
        }
        if let Some(observer) = self.observer.read().expect("lock poisoned").as_ref() {
            observer.opened(cookie, fd);
        }
        Ok(cookie)
    }

    /// Binds the authenticated PeerId to the socket (called by the socket's stream while it
    /// lives), then runs the bind hook.
    pub fn bind_peer(&self, cookie: u64, peer: PeerId) {
        let info = {
            let mut sockets = self.sockets.lock().expect("lock poisoned");
            let Some(s) = sockets.get_mut(&cookie) else {
                return;
            };
            s.peer = Some(peer);
            s.clone()
        };
        if let Some(hook) = self.bind_hook.read().expect("lock poisoned").as_ref() {
            // SAFETY: the caller is the socket's stream, which keeps the fd open meanwhile.
            hook(&info, unsafe { BorrowedFd::borrow_raw(info.fd) });
        }
    }

    /// Records that a socket now runs `algorithm`.
    pub fn set_socket_algorithm(&self, cookie: u64, algorithm: &str) {
        if let Some(s) = self.sockets.lock().expect("lock poisoned").get_mut(&cookie) {
            s.algorithm = algorithm.to_owned();
        }
    }

    /// Removes a socket (its stream is being dropped; the fd closes after this returns).
    pub fn unregister(&self, cookie: u64) {
        let removed = self.sockets.lock().expect("lock poisoned").remove(&cookie);
        if let (Some(info), Some(hook)) = (
            &removed,
            self.close_hook.read().expect("lock poisoned").as_ref(),
        ) {
            // SAFETY: only the stream's Drop calls this, before the stream's fd is closed.
            hook(info, unsafe { BorrowedFd::borrow_raw(info.fd) });
        }
        if removed.is_some()
            && let Some(observer) = self.observer.read().expect("lock poisoned").as_ref()
        {
            observer.closed(cookie);
        }
    }

    /// A copy of every entry.
    pub fn snapshot(&self) -> Vec<SocketInfo> {
        self.sockets
            .lock()
            .expect("lock poisoned")
            .values()
            .cloned()
            .collect()
    }

    /// Moves every socket of the table to `algorithm` (on the node's own fds, under the lock,
    /// so no fd can be closed and reused meanwhile) and records it; per socket the result.
    pub fn switch_all(&self, algorithm: &str) -> Vec<(u64, io::Result<()>)> {
        let mut sockets = self.sockets.lock().expect("lock poisoned");
        sockets
            .values_mut()
            .map(|s| {
                // SAFETY: the entry exists, so its stream (which owns the fd) has not dropped;
                // the lock keeps it from unregistering until we are done.
                let fd = unsafe { BorrowedFd::borrow_raw(s.fd) };
                let result = set_congestion(fd, algorithm).and_then(|()| {
                    s.algorithm = congestion(fd)?;
                    Ok(())
                });
                (s.cookie, result)
            })
            .collect()
    }

    /// Calls `f` with one socket's fd, the table locked for that one call only (the fd stays
    /// open meanwhile); `None` if the socket is gone.
    pub fn with_fd<T>(&self, cookie: u64, f: impl FnOnce(BorrowedFd<'_>) -> T) -> Option<T> {
        let sockets = self.sockets.lock().expect("lock poisoned");
        let s = sockets.get(&cookie)?;
        // SAFETY: the entry exists, so its stream (which owns the fd) has not dropped; the
        // lock keeps it from unregistering until `f` returns.
        let fd = unsafe { BorrowedFd::borrow_raw(s.fd) };
        Some(f(fd))
    }

    pub fn get(&self, cookie: u64) -> Option<SocketInfo> {
        self.sockets
            .lock()
            .expect("lock poisoned")
            .get(&cookie)
            .cloned()
    }
}

/// `setsockopt(TCP_CONGESTION)`.
pub fn set_congestion(fd: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    // SAFETY: valid fd; the option value is a byte buffer of the given length.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_CONGESTION,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        let e = io::Error::last_os_error();
        Err(io::Error::new(
            e.kind(),
            format!("setting TCP_CONGESTION to {name:?}: {e}"),
        ))
    }
}

/// `getsockopt(TCP_CONGESTION)`.
pub fn congestion(fd: BorrowedFd<'_>) -> io::Result<String> {
    let mut buf = [0u8; 16];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: valid fd; buffer and length describe writable memory.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_CONGESTION,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let bytes = &buf[..len as usize];
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    Ok(String::from_utf8_lossy(&bytes[..end]).into_owned())
}

/// `getsockopt(SO_COOKIE)`: the socket's id, as tracepoints and `ss -e` report it.
pub fn cookie(fd: BorrowedFd<'_>) -> io::Result<u64> {
    get_option(fd, libc::SOL_SOCKET, libc::SO_COOKIE)
}

/// A socket option's value as the kernel reads and writes it: plain data for which every bit
/// pattern is a valid value (integers, or `repr(C)` structs of integers).
///
/// # Safety
/// Implement only for types whose fields are valid for every bit pattern (the kernel writes
/// whatever bytes it has; bytes landing in padding are never read).
pub unsafe trait OptionValue: Copy + Default {}
// SAFETY: integers: every bit pattern is valid.
unsafe impl OptionValue for libc::c_int {}
// SAFETY: as above.
unsafe impl OptionValue for u64 {}
// SAFETY: `repr(C)` struct of u8/u32/u64 fields laid out as the uapi declares; every bit
// pattern of each is valid.
unsafe impl OptionValue for TcpInfo {}

/// `getsockopt(level, name)` of a fixed-size value. A kernel that knows a shorter version of
/// the value (older `tcp_info`) fills its prefix; the rest keeps `T::default()`.
pub fn get_option<T: OptionValue>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<T> {
    let mut value = T::default();
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: valid fd; `value` is writable for `len` bytes and any bytes the kernel writes
    // form a valid `T` (OptionValue); the kernel writes at most `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw mut value).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `setsockopt(level, name)` of a fixed-size value.
pub fn set_option<T: OptionValue>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: T,
) -> io::Result<()> {
    // SAFETY: valid fd; `value` is readable for its size, which is the length passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The kernel's `struct tcp_info` (uapi `linux/tcp.h`), up to `tcpi_snd_wnd`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpInfo {
    pub state: u8,
    pub ca_state: u8,
    pub retransmits: u8,
    pub probes: u8,
    pub backoff: u8,
    pub options: u8,
    pub wscale: u8,
    pub flags: u8,
    pub rto: u32,
    pub ato: u32,
    pub snd_mss: u32,
    pub rcv_mss: u32,
    pub unacked: u32,
    pub sacked: u32,
    pub lost: u32,
    pub retrans: u32,
    pub fackets: u32,
    pub last_data_sent: u32,
    pub last_ack_sent: u32,
    pub last_data_recv: u32,
    pub last_ack_recv: u32,
    pub pmtu: u32,
    pub rcv_ssthresh: u32,
    pub rtt_us: u32,
    pub rttvar_us: u32,
    pub snd_ssthresh: u32,
    pub snd_cwnd: u32,
    pub advmss: u32,
    pub reordering: u32,
    pub rcv_rtt: u32,
    pub rcv_space: u32,
    pub total_retrans: u32,
    pub pacing_rate: u64,
    pub max_pacing_rate: u64,
    pub bytes_acked: u64,
    pub bytes_received: u64,
    pub segs_out: u32,
    pub segs_in: u32,
    pub notsent_bytes: u32,
    pub min_rtt_us: u32,
    pub data_segs_in: u32,
    pub data_segs_out: u32,
    pub delivery_rate: u64,
    pub busy_time: u64,
    pub rwnd_limited: u64,
    pub sndbuf_limited: u64,
    pub delivered: u32,
    pub delivered_ce: u32,
    pub bytes_sent: u64,
    pub bytes_retrans: u64,
    pub dsack_dups: u32,
    pub reord_seen: u32,
    pub rcv_ooopack: u32,
    pub snd_wnd: u32,
}

/// `getsockopt(TCP_INFO)`.
pub fn tcp_info(fd: BorrowedFd<'_>) -> io::Result<TcpInfo> {
    get_option(fd, libc::IPPROTO_TCP, libc::TCP_INFO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;

    #[test]
    fn cookie_congestion_and_tcp_info_on_a_loopback_pair() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let a = cookie(client.as_fd()).unwrap();
        let b = cookie(server.as_fd()).unwrap();
        assert_ne!(a, 0);
        assert_ne!(a, b);
        assert_eq!(cookie(client.as_fd()).unwrap(), a, "a cookie is stable");
        set_congestion(client.as_fd(), "reno").unwrap();
        assert_eq!(congestion(client.as_fd()).unwrap(), "reno");
        let err = set_congestion(client.as_fd(), "no-such-cc").unwrap_err();
        assert!(err.to_string().contains("no-such-cc"), "{err}");
        let info = tcp_info(client.as_fd()).unwrap();
        assert_eq!(info.state, 1, "TCP_ESTABLISHED");
        assert!(info.snd_cwnd >= 1);
    }
}
