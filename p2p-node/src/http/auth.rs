//! Who may talk to the node: the `Host` check every request passes (DNS rebinding) and the token
//! every change needs (also on loopback: any local user can reach 127.0.0.1).
//!
//! The token lives in a file only its owner can read (0600), created with a random value on first
//! start; it never appears on a command line (argv is world-readable through /proc).

use std::{
    fs,
    io::Read as _,
    net::{IpAddr, SocketAddr},
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    path::Path,
};

use anyhow::{Context as _, bail};
use axum::{
    extract::{Request, State},
    http::{Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::AppState;
use crate::fsutil::{Existing, write_private};

/// The environment variable a token may come from instead of the file (node and CLI).
pub const TOKEN_ENV: &str = "P2PCC_HTTP_TOKEN";
/// Shortest token accepted from the environment (generated ones are 64 hex digits).
const MIN_TOKEN_LEN: usize = 16;

/// The local address a request came in on (its connection's), set by the server loop.
#[derive(Clone, Copy, Debug)]
pub struct LocalAddr(pub Option<SocketAddr>);

/// `Host` names, besides `localhost` and IP literals of loopback or the listening address, that
/// requests may carry (`--http-host`).
#[derive(Clone, Debug, Default)]
pub struct AllowedHosts(pub Vec<String>);

impl AllowedHosts {
    /// Whether a `Host` header value names this node: `localhost`, a loopback IP, the address
    /// the connection came in on, or a configured name (port ignored, case-insensitive).
    pub fn allows(&self, host: &str, local: Option<SocketAddr>) -> bool {
        let name = host_name(host);
        if name.eq_ignore_ascii_case("localhost") {
            return true;
        }
        if let Ok(ip) = name.parse::<IpAddr>() {
            return ip.is_loopback() || local.is_some_and(|l| l.ip() == ip);
        }
        self.0
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(name))
    }
}

/// The name part of a `Host` value: without the port, IPv6 brackets removed.
fn host_name(host: &str) -> &str {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default();
    }
    host.rsplit_once(':').map_or(host, |(name, _port)| name)
}

/// Every request: a `Host` that names this node, or 403 (a browser page that rebinds its own
/// name to 127.0.0.1 sends its own name as `Host`).
pub(super) async fn require_host(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let local = request.extensions().get::<LocalAddr>().and_then(|l| l.0);
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok());
    match host {
        Some(host) if state.allowed_hosts.allows(host, local) => next.run(request).await,
        _ => (
            StatusCode::FORBIDDEN,
            format!(
                "Host {:?} does not name this node: use its address or localhost, or start it with --http-host <name>\n",
                host.unwrap_or("")
            ),
        )
            .into_response(),
    }
}

/// Reads stay open (`/metrics` is scraped without credentials); changes need the token.
pub(super) async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let read_only = matches!(*request.method(), Method::GET | Method::HEAD);
    if !read_only {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token);
        if !given.is_some_and(|given| tokens_equal(given, &state.token)) {
            return (
                StatusCode::UNAUTHORIZED,
                "this request changes the node: send `Authorization: Bearer <token>` with the token from the \
                 node's token file (printed when it starts; the p2p-node CLI reads it by default)\n",
            )
                .into_response();
        }
    }
    next.run(request).await
}

/// The credentials of `Authorization: Bearer <token>`; the scheme is case-insensitive (RFC 9110).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Compares tokens in time independent of where they differ (and of their lengths): equal
/// SHA-256 digests, compared with a fold over all bytes.
fn tokens_equal(given: &str, expected: &str) -> bool {
    use sha2::{Digest, Sha256};
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// The node's token: from `P2PCC_HTTP_TOKEN` if set, else from `path`, created there with a
/// random value (mode 0600, parent directories 0700) if absent.
pub fn node_token(path: &Path) -> anyhow::Result<String> {
    if let Ok(token) = std::env::var(TOKEN_ENV) {
        let token = token.trim().to_owned();
        if token.len() < MIN_TOKEN_LEN {
            bail!("{TOKEN_ENV} must be at least {MIN_TOKEN_LEN} characters");
        }
        return Ok(token);
    }
    match read_token_file(path) {
        Ok(token) => return Ok(token),
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(e),
    }
    create_token_file(path)?;
    eprintln!(
        "created the HTTP API token in {} (mode 0600; changes through the API need it)",
        path.display()
    );
    read_token_file(path)
}

fn is_not_found(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound)
}

/// Reads a token file: a regular file (not a symlink), not readable by group or others, whose
/// first line is the token.
pub fn read_token_file(path: &Path) -> anyhow::Result<String> {
    let mut file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(anyhow::Error::from)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        bail!("the token file {} is not a regular file", path.display());
    }
    if meta.mode() & 0o077 != 0 {
        bail!(
            "the token file {} is readable by others (mode {:o}): `chmod 600` it",
            path.display(),
            meta.mode() & 0o777
        );
    }
    let mut text = String::new();
    file.read_to_string(&mut text)
        .with_context(|| format!("reading the token file {}", path.display()))?;
    let token = text.lines().next().unwrap_or_default().trim().to_owned();
    if token.len() < MIN_TOKEN_LEN {
        bail!(
            "the token in {} is shorter than {MIN_TOKEN_LEN} characters",
            path.display()
        );
    }
    Ok(token)
}

/// Writes a fresh random token next to `path` and links it into place, so that two nodes
/// starting at once agree on one token and nobody ever reads a half-written file.
fn create_token_file(path: &Path) -> anyhow::Result<()> {
    let mut bytes = [0u8; 32];
    // SAFETY: the buffer is valid for writes of its length.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if usize::try_from(n).ok() != Some(bytes.len()) {
        return Err(std::io::Error::last_os_error()).context("getrandom for the HTTP token");
    }
    // Another node that created it first wins: its token is the one read back.
    write_private(
        path,
        format!("{}\n", hex::encode(bytes)).as_bytes(),
        Existing::Keep,
    )
    .map(drop)
    .with_context(|| format!("creating the token file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn tokens_compare_equal_only_when_equal() {
        assert!(tokens_equal(
            "a-token-of-some-length",
            "a-token-of-some-length"
        ));
        assert!(!tokens_equal(
            "a-token-of-some-length",
            "a-token-of-some-lengtH"
        ));
        assert!(!tokens_equal("short", "a-token-of-some-length"));
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer "), None);
    }

    #[test]
    fn hosts_naming_the_node_pass_and_others_do_not() {
        let local: SocketAddr = "10.0.0.5:9464".parse().unwrap();
        let hosts = AllowedHosts(vec!["node.example".into()]);
        for ok in [
            "localhost",
            "LOCALHOST:9464",
            "127.0.0.1",
            "127.0.0.1:9464",
            "[::1]:9464",
            "10.0.0.5:9464",
            "Node.Example:80",
        ] {
            assert!(hosts.allows(ok, Some(local)), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:9464",
            "10.0.0.6",
            "",
            "localhost.evil.example",
            "[::2]:1",
        ] {
            assert!(!hosts.allows(bad, Some(local)), "{bad}");
        }
    }

    #[test]
    fn token_file_is_created_private_and_read_back() {
        let dir = std::env::temp_dir().join(format!("p2pcc-token-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = dir.join("sub").join("http-token");
        create_token_file(&path).unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(
            fs::metadata(path.parent().unwrap()).unwrap().mode() & 0o777,
            0o700
        );
        let token = read_token_file(&path).unwrap();
        assert_eq!(token.len(), 64);
        // A second creation keeps the first token.
        create_token_file(&path).unwrap();
        assert_eq!(read_token_file(&path).unwrap(), token);
        // Readable by others: refused.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_token_file(&path).unwrap_err().to_string();
        assert!(e.contains("readable by others (mode 644)"), "{e}");
        // A symlink in its place: refused.
        let link = dir.join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(read_token_file(&link).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}

/// Fuzz target (see `crate::fuzz`): the `Host` and `Authorization` headers of every request
/// (web pages and local users choose them).
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;
    use crate::fuzz::for_a_while;

    fn headers() -> impl Strategy<Value = (String, String)> {
        let host = prop_oneof![
            ".{0,24}",
            "(localhost|LocalHost|127\\.0\\.0\\.[0-9]{1,3}|\\[::1\\]|evil\\.example|node\\.lan)(:[0-9]{0,6})?\\.?",
            "\\[[0-9a-f:.]{0,20}\\]?(:[0-9]{1,5})?",
        ];
        let auth = prop_oneof![
            ".{0,24}",
            "[ \\t]{0,2}(bearer|Bearer|BEARER|Basic|)[ \\t]{0,3}[ -~]{0,20}"
        ];
        (host, auth)
    }

    #[test]
    fn host_and_authorization_headers() {
        let local: SocketAddr = "10.9.9.1:9464".parse().unwrap();
        let configured = AllowedHosts(vec!["node.lan".into()]);
        for_a_while(
            "Host and Authorization headers",
            headers(),
            |(host, auth)| {
                let name = host_name(&host);
                if configured.allows(&host, Some(local)) {
                    // Only this node's names pass: a rebinding page's own name never does.
                    let ok = name.eq_ignore_ascii_case("localhost")
                        || name.eq_ignore_ascii_case("node.lan")
                        || name
                            .parse::<IpAddr>()
                            .is_ok_and(|ip| ip.is_loopback() || ip == local.ip());
                    prop_assert!(ok, "{host:?} allowed as {name:?}");
                }
                prop_assert!(!AllowedHosts::default().allows("evil.example", Some(local)));
                if let Some(token) = bearer_token(&auth) {
                    prop_assert!(!token.is_empty() && token.trim() == token);
                    prop_assert!(auth.contains(token));
                    prop_assert!(auth.trim_start()[..6].eq_ignore_ascii_case("bearer"));
                    prop_assert!(tokens_equal(token, token));
                    let longer = format!("{token}x");
                    prop_assert!(!tokens_equal(token, &longer));
                }
                Ok(())
            },
        );
    }
}
