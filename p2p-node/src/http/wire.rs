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

/// The status code and body (de-chunked, then UTF-8 with invalid bytes replaced) of a raw
/// HTTP/1.1 response; `None` if malformed. Works on bytes: chunk sizes count bytes, and a chunk
/// may end inside a multi-byte character.
pub fn parse_response(raw: impl AsRef<[u8]>) -> Option<(u16, String)> {
    let raw = raw.as_ref();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let (head, body) = (String::from_utf8_lossy(&raw[..split]), &raw[split + 4..]);
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Some((status, String::from_utf8_lossy(body).into_owned()));
    }
    let mut rest = body;
    let mut out = Vec::new();
    while let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&rest[..line_end]).ok()?;
        let n = usize::from_str_radix(size.trim(), 16).ok()?;
        let tail = &rest[line_end + 2..];
        if n == 0 || tail.len() < n {
            break;
        }
        out.extend_from_slice(&tail[..n]);
        rest = tail[n..].strip_prefix(b"\r\n").unwrap_or(&tail[n..]);
    }
    Some((status, String::from_utf8_lossy(&out).into_owned()))
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
        // Found by the fuzz target below: a chunk size that ends inside a character (sizes
        // count bytes) panicked on a `str` slice; now it is malformed framing. A character
        // split across two chunks reads back whole.
        let split =
            "HTTP/1.1 0 X\r\nTransfer-Encoding: chunked\r\n\r\na\r\n\u{13440}𞠀𑾰\r\n0\r\n\r\n";
        assert_eq!(parse_response(split), None);
        let whole = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n\xc3\r\n1\r\n\xa9\r\n0\r\n\r\n";
        assert_eq!(parse_response(whole), Some((200, "é".into())));
        assert!(
            request_text("PUT", "h", "/api/cc", Some("t"), "{}")
                .contains("Authorization: Bearer t\r\n")
        );
    }
}

/// Fuzz target (see `crate::fuzz`): responses the CLI reads from whatever listens on the
/// node's address.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;
    use crate::fuzz::for_a_while;

    fn responses() -> impl Strategy<Value = String> {
        let chunk = ("[0-9a-fA-F]{1,3}", "\\PC{0,12}")
            .prop_map(|(size, data)| format!("{size}\r\n{data}\r\n"));
        let chunked =
            (any::<u16>(), proptest::collection::vec(chunk, 0..5)).prop_map(|(status, chunks)| {
                format!(
                    "HTTP/1.1 {status} X\r\nTransfer-Encoding: chunked\r\n\r\n{}0\r\n\r\n",
                    chunks.concat()
                )
            });
        prop_oneof![
            ".{0,64}",
            "HTTP/1.1 [0-9]{1,4} .{0,8}\r\n\r\n\\PC{0,32}",
            chunked
        ]
    }

    #[test]
    fn http_responses() {
        for_a_while("HTTP responses (CLI)", responses(), |raw| {
            if let Some((status, body)) = parse_response(&raw) {
                prop_assert!(raw.contains(&status.to_string()));
                prop_assert!(body.len() <= raw.len());
            }
            Ok(())
        });
    }
}
