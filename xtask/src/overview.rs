//! The testbed's one URL: a small reverse proxy that `cargo xtask run` serves on the host's
//! loopback, so one page (one origin) reaches every node:
//!
//! - `GET /api/testbed`: the nodes (name, path prefix, algorithm at start, link), generated here;
//! - `/n/<i>/<path>`: forwarded to node i's HTTP API as `/<path>` (its own page, event stream,
//!   `PUT /api/cc` with the caller's own `Authorization` header: the proxy adds no credential);
//! - anything else (`/`, `/assets/...`): forwarded to node 1, whose `/overview` is the page.
//!
//! Why xtask and not a node: the page needs every node's event stream and switch control from one
//! origin; a node serving it would have to accept cross-origin requests to its API (CORS on a
//! credentialed endpoint), while the proxy lives exactly as long as the testbed and only on
//! 127.0.0.1. Bounded: [`MAX_CONNECTIONS`] at once, request heads up to [`MAX_HEAD_BYTES`], one
//! request per connection (`Connection: close` both ways, so a browser's keep-alive cannot carry
//! a second request past the routing).

use std::{
    io::{self, Read as _, Write as _},
    net::{Shutdown, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
    time::Duration,
};

use anyhow::Context as _;

/// Connections served at once (an event stream holds one for as long as the page is open).
const MAX_CONNECTIONS: usize = 64;
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// A client must send its request head within this.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// One node behind the proxy.
#[derive(Clone, Debug)]
pub struct Upstream {
    pub name: String,
    /// `ip:port` of its HTTP API.
    pub address: String,
    pub algorithm: String,
    pub link: String,
}

/// The running proxy; stops accepting on drop (streams in progress end with the nodes).
pub struct Proxy {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Serves the overview on `listen` (e.g. `127.0.0.1:9400`).
pub fn serve(listen: &str, upstreams: Vec<Upstream>) -> anyhow::Result<Proxy> {
    let listener =
        TcpListener::bind(listen).with_context(|| format!("binding the overview to {listen}"))?;
    listener.set_nonblocking(true)?;
    let stop = Arc::new(AtomicBool::new(false));
    let thread_stop = Arc::clone(&stop);
    let upstreams = Arc::new(upstreams);
    let open = Arc::new(AtomicUsize::new(0));
    let thread = thread::Builder::new()
        .name("overview".into())
        .spawn(move || {
            while !thread_stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        if open.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                            open.fetch_sub(1, Ordering::SeqCst);
                            let _ = respond(
                                client,
                                "503 Service Unavailable",
                                "text/plain",
                                "too many connections\n",
                            );
                            continue;
                        }
                        let upstreams = Arc::clone(&upstreams);
                        let open = Arc::clone(&open);
                        thread::spawn(move || {
                            let _ = handle(client, &upstreams);
                            open.fetch_sub(1, Ordering::SeqCst);
                        });
                    }
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(50));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(50)),
                }
            }
        })
        .context("starting the overview thread")?;
    Ok(Proxy {
        stop,
        thread: Some(thread),
    })
}

/// Where a request goes.
#[derive(Debug, PartialEq)]
enum Route<'a> {
    Testbed,
    /// Upstream index and the path to ask it for.
    Node(usize, String),
    NotFound,
    /// Forwarded to node 1 with the path unchanged (`/` becomes `/overview`).
    First(&'a str),
}

fn route(path: &str, nodes: usize) -> Route<'_> {
    if path == "/api/testbed" {
        return Route::Testbed;
    }
    if let Some(rest) = path.strip_prefix("/n/") {
        let (number, tail) = rest.split_once('/').unwrap_or((rest, ""));
        return match number.parse::<usize>() {
            Ok(i) if (1..=nodes).contains(&i) => Route::Node(i - 1, format!("/{tail}")),
            _ => Route::NotFound,
        };
    }
    Route::First(path)
}

fn handle(mut client: TcpStream, upstreams: &[Upstream]) -> io::Result<()> {
    client.set_nonblocking(false)?;
    client.set_read_timeout(Some(HEAD_TIMEOUT))?;
    let mut buf = Vec::with_capacity(2048);
    let head_end = loop {
        if let Some(end) = find_head_end(&buf) {
            break end;
        }
        if buf.len() >= MAX_HEAD_BYTES {
            return respond(
                client,
                "431 Request Header Fields Too Large",
                "text/plain",
                "request head too large\n",
            );
        }
        let mut chunk = [0u8; 4096];
        let n = client.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    client.set_read_timeout(None)?;
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let body_start = buf[head_end..].to_vec();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut words = request_line.split(' ');
    let (method, path, version) = (
        words.next().unwrap_or_default(),
        words.next().unwrap_or_default(),
        words.next().unwrap_or("HTTP/1.1"),
    );
    let (index, upstream_path) = match route(path, upstreams.len()) {
        Route::Testbed => {
            return respond(
                client,
                "200 OK",
                "application/json",
                &testbed_json(upstreams),
            );
        }
        Route::NotFound => return respond(client, "404 Not Found", "text/plain", "no such node\n"),
        Route::Node(i, p) => (i, p),
        Route::First("/") => (0, "/overview".to_owned()),
        Route::First(p) => (0, p.to_owned()),
    };
    let mut upstream = TcpStream::connect_timeout(
        &upstreams[index]
            .address
            .parse()
            .map_err(|_| io::Error::other("bad upstream address"))?,
        Duration::from_secs(2),
    )?;
    let mut forwarded = format!("{method} {upstream_path} {version}\r\n");
    for line in lines.filter(|line| !line.is_empty()) {
        let name = line.split(':').next().unwrap_or_default().trim();
        if !name.eq_ignore_ascii_case("connection") {
            forwarded.push_str(line);
            forwarded.push_str("\r\n");
        }
    }
    forwarded.push_str("Connection: close\r\n\r\n");
    upstream.write_all(forwarded.as_bytes())?;
    upstream.write_all(&body_start[4..])?;
    // The rest of a request body, if any, while the response streams back.
    let mut client_reader = client.try_clone()?;
    let mut upstream_writer = upstream.try_clone()?;
    let uploader = thread::spawn(move || {
        let _ = io::copy(&mut client_reader, &mut upstream_writer);
        let _ = upstream_writer.shutdown(Shutdown::Write);
    });
    let _ = io::copy(&mut upstream, &mut client);
    let _ = client.shutdown(Shutdown::Both);
    let _ = upstream.shutdown(Shutdown::Both);
    let _ = uploader.join();
    Ok(())
}

/// Index of the `\r\n\r\n` that ends the head (the body starts 4 bytes later).
fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

fn respond(mut client: TcpStream, status: &str, content_type: &str, body: &str) -> io::Result<()> {
    write!(
        client,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn testbed_json(upstreams: &[Upstream]) -> String {
    let nodes: Vec<_> = upstreams
        .iter()
        .enumerate()
        .map(|(i, u)| {
            serde_json::json!({
                "name": u.name,
                "base": format!("/n/{}", i + 1),
                "algorithm": u.algorithm,
                "link": u.link,
            })
        })
        .collect();
    serde_json::json!({ "nodes": nodes }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_node_prefix() {
        assert_eq!(route("/api/testbed", 4), Route::Testbed);
        assert_eq!(
            route("/n/2/api/events", 4),
            Route::Node(1, "/api/events".into())
        );
        assert_eq!(route("/n/4/", 4), Route::Node(3, "/".into()));
        assert_eq!(route("/n/4", 4), Route::Node(3, "/".into()));
        assert_eq!(route("/n/5/", 4), Route::NotFound);
        assert_eq!(route("/n/0/", 4), Route::NotFound);
        assert_eq!(route("/n/x/", 4), Route::NotFound);
        assert_eq!(
            route("/assets/uplot.js", 4),
            Route::First("/assets/uplot.js")
        );
    }

    #[test]
    fn finds_the_end_of_the_head() {
        assert_eq!(
            find_head_end(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody"),
            Some(23)
        );
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n"), None);
    }
}
