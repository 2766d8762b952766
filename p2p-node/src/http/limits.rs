//! The HTTP server's bounds, all hyper / tower-http settings: how long a client may take to send
//! its request head, how long a request may run, how large a body may be, how many connections
//! are served at once; and a graceful shutdown (in-flight requests finish, the listener closes).
//!
//! axum's own `serve` sets no timer, so hyper's header read timeout would never fire; this loop
//! is axum's, with the timer, the cap and the connection's local address (for the `Host` check).

use std::{future::Future, sync::Arc, time::Duration};

use axum::{Router, extract::ConnectInfo};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::Semaphore};

use super::auth::LocalAddr;

/// Time a client has to send a request head, from the connection's start or the end of the
/// previous response: idle and slow-drip connections are closed after it.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a request may take to produce its response head (503 after it), except the routes below.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Time for the routes that move data between peers (`/api/files/fetch`, `/api/perf`).
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(600);
/// Largest request body: every body of the API is a small JSON object.
pub const BODY_LIMIT_BYTES: usize = 16 * 1024;
/// Upper bound of the connection cap; the cap is also at most half the fd limit.
const MAX_CONNECTIONS: usize = 8192;
/// Time in-flight requests get to finish after SIGTERM. Below the 5 s every stopper of ours
/// gives before SIGKILL (`cargo xtask run`, the benches, the tests' node handles), with room
/// for what follows (saving the known peers, deleting a link-less bbr-p2p registration, the
/// runtime's bounded shutdown in main.rs): a node stopped mid-transfer still cleans up after
/// itself instead of being killed (on Linux < 6.4 a killed node leaves bbr-p2p registered).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Connections served at once: half the process's file-descriptor limit (the rest stays for
/// libp2p's sockets, eBPF objects and files), at most [`MAX_CONNECTIONS`]. Beyond it new
/// connections wait in the kernel's accept queue, holding none of the node's descriptors.
pub fn connection_cap() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit to write into.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
    } else {
        1024
    };
    (soft / 2).clamp(16, MAX_CONNECTIONS)
}

/// Raises the soft file-descriptor limit to the hard one (what Go does for every program):
/// a node holds a socket per peer and per HTTP client.
pub fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid rlimit pointers; setrlimit only lowers nothing here (cur := max).
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then lets in-flight requests finish
/// (for at most [`SHUTDOWN_GRACE`]).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: wait instead of spinning; the connection stays queued.
                    tracing::warn!("accepting an HTTP connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let local = LocalAddr(stream.local_addr().ok());
        let service = tower::ServiceExt::map_request(
            app.clone(),
            move |mut request: axum::extract::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(remote));
                request.extensions_mut().insert(local);
                request
            },
        );
        let service = hyper_util::service::TowerToHyperService::new(service);
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // Errors here are the client's (reset, timeout, malformed request): nothing to do.
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "HTTP requests still running {SHUTDOWN_GRACE:?} after shutdown began: dropped"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::{Read as _, Write as _},
        net::TcpStream,
        time::Instant,
    };

    use axum::routing::get;

    use super::*;

    /// Serves a one-route app on an ephemeral loopback port; returns the port.
    fn start(cap: usize) -> u16 {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap().port()).unwrap();
                let app = Router::new().route("/", get(|| async { "ok" }));
                serve(listener, app, cap, std::future::pending()).await;
            });
        });
        rx.recv().unwrap()
    }

    #[test]
    fn a_slow_header_drip_is_cut_off_after_the_header_read_timeout() {
        let port = start(16);
        let mut drip = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let start = Instant::now();
        drip.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n")
            .unwrap();
        drip.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let cut = loop {
            assert!(start.elapsed() < Duration::from_secs(15), "never cut off");
            let _ = drip.write_all(b"X-Drip: a\r\n");
            let mut buf = [0u8; 256];
            match drip.read(&mut buf) {
                Ok(0) => break start.elapsed(),
                Ok(n) => panic!("answered: {}", String::from_utf8_lossy(&buf[..n])),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => break start.elapsed(),
            }
            std::thread::sleep(Duration::from_millis(300));
        };
        assert!(
            cut >= HEADER_READ_TIMEOUT - Duration::from_millis(100)
                && cut < HEADER_READ_TIMEOUT + Duration::from_secs(2),
            "cut after {cut:?}"
        );
    }

    #[test]
    fn connections_beyond_the_cap_wait_and_a_complete_request_is_answered() {
        let port = start(4);
        let idle: Vec<TcpStream> = (0..4)
            .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
            .collect();
        // The fifth waits in the accept queue until an idle one is closed by the timeout.
        let start = Instant::now();
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut response = String::new();
        s.read_to_string(&mut response).unwrap();
        assert!(response.ends_with("ok"), "{response}");
        let waited = start.elapsed();
        assert!(
            waited >= HEADER_READ_TIMEOUT - Duration::from_millis(500),
            "served after {waited:?}: the cap of 4 was not applied"
        );
        drop(idle);
    }
}
