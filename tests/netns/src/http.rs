//! A plain HTTP GET from inside a network namespace, for the agent's
//! `/metrics`, `/healthz` and `/readyz` (which listen on the loopback of the
//! hypervisor namespace).

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use crate::{
    bpf::in_netns,
    error::{Error, Result},
    netns::Netns,
};

/// What a GET got back.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    pub body: String,
}

/// `GET path` from `addr`, connected from inside `ns` (10 s at most).
pub fn get(ns: &Netns, addr: SocketAddr, path: &str) -> Result<Response> {
    let path = path.to_owned();
    in_netns(&ns.path(), move || {
        let what = format!("GET http://{addr}{path}");
        let timeout = Duration::from_secs(10);
        let mut stream = TcpStream::connect_timeout(&addr, timeout)
            .map_err(|e| Error::io(format!("{what}: connecting"), e))?;
        stream
            .set_read_timeout(Some(timeout))
            .map_err(|e| Error::io(&what, e))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .map_err(|e| Error::io(format!("{what}: sending"), e))?;
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .map_err(|e| Error::io(format!("{what}: reading"), e))?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| Error::Other(format!("{what}: not an HTTP response:\n{text}")))?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::Other(format!("{what}: no status in:\n{head}")))?;
        let content_type = head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_owned())
        });
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_owned()
        };
        Ok(Response {
            status,
            content_type,
            body,
        })
    })
}

/// The body of a `Transfer-Encoding: chunked` response.
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(
            super::dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            "hello world"
        );
    }
}
