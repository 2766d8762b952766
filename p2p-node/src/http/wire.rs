//! The few lines of HTTP/1.1 the CLI and the tests speak to a node (no HTTP client dependency).

/// The text of an HTTP/1.1 request to a node's API (JSON body, `Connection: close`), with
/// `Authorization: Bearer <token>` when given: what `p2p-node`'s subcommands and the tests send.
pub fn request_text(
    method: &str,
    host: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> String {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The status code and body (de-chunked) of a raw HTTP/1.1 response; `None` if malformed.
pub fn parse_response(raw: &str) -> Option<(u16, String)> {
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Some((status, body.to_owned()));
    }
    let mut rest = body;
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).ok()?;
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    Some((status, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_responses() {
        let plain = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        assert_eq!(parse_response(plain), Some((200, "ok".into())));
        let chunked = "HTTP/1.1 400 Bad Request\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked), Some((400, "abcde".into())));
        assert_eq!(parse_response("garbage"), None);
        assert!(
            request_text("PUT", "h", "/api/cc", Some("t"), "{}")
                .contains("Authorization: Bearer t\r\n")
        );
    }
}
