//! The guest's command port: its second serial port (`/dev/ttyS1`), which
//! QEMU connects to a unix socket the harness listens on.
//!
//! The protocol (the other side is `tests/fixtures/guest_init.sh`): the
//! guest prints `EGT-READY <kernel>` once it is configured; the harness then
//! sends `ID BASE64(script)` lines, one at a time, and the guest answers each
//! with `EGT-BEGIN ID`, the script's output (stdout and stderr) in base64,
//! and `EGT-END ID STATUS`. Base64 both ways keeps the bytes exact over a
//! serial line, whatever they are; the markers carry the id, so a late answer
//! to an earlier command can never be taken for this one's.

use std::{
    io::{BufRead, BufReader, ErrorKind, Write},
    os::unix::net::{UnixListener, UnixStream},
    time::{Duration, Instant},
};

use crate::error::{Error, Result};

/// What one command printed and how it ended.
#[derive(Debug, Clone)]
pub struct Output {
    /// The script, as sent.
    pub script: String,
    /// Its exit status in the guest.
    pub status: i32,
    /// stdout and stderr, interleaved as the guest's shell wrote them.
    pub output: String,
    pub elapsed: Duration,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status == 0
    }
}

/// The connected command port.
#[derive(Debug)]
pub(crate) struct Port {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
    next_id: u64,
}

impl Port {
    /// Waits until QEMU connects to `listener`, until `deadline`.
    pub(crate) fn accept(listener: &UnixListener, deadline: Instant) -> Result<Self> {
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io("setting the command socket non-blocking", e))?;
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    stream
                        .set_nonblocking(false)
                        .map_err(|e| Error::io("setting the command port blocking", e))?;
                    let reader = BufReader::new(
                        stream
                            .try_clone()
                            .map_err(|e| Error::io("cloning the command port", e))?,
                    );
                    return Ok(Self {
                        stream,
                        reader,
                        next_id: 0,
                    });
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        return Err(Error::Other(
                            "QEMU did not connect to the command port".to_owned(),
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(Error::io("accepting QEMU's command port", e)),
            }
        }
    }

    /// The next line, without its newline; `None` at `deadline`.
    fn line(&mut self, deadline: Instant) -> Result<Option<String>> {
        let mut buf = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.stream
                .set_read_timeout(Some(left.min(Duration::from_millis(200))))
                .map_err(|e| Error::io("setting a read timeout on the command port", e))?;
            match self.reader.read_until(b'\n', &mut buf) {
                Ok(0) => {
                    return Err(Error::Other(
                        "the guest's command port closed (QEMU ended?)".to_owned(),
                    ));
                }
                Ok(_) if buf.ends_with(b"\n") => {
                    buf.pop();
                    if buf.ends_with(b"\r") {
                        buf.pop();
                    }
                    return Ok(Some(String::from_utf8_lossy(&buf).into_owned()));
                }
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => return Err(Error::io("reading the command port", e)),
            }
        }
    }

    /// Waits for the guest's `EGT-READY` line; returns what follows it (the
    /// kernel release), or `None` at `deadline`.
    pub(crate) fn wait_ready(&mut self, deadline: Instant) -> Result<Option<String>> {
        while let Some(line) = self.line(deadline)? {
            if let Some(rest) = line.strip_prefix("EGT-READY") {
                return Ok(Some(rest.trim().to_owned()));
            }
        }
        Ok(None)
    }

    /// Runs `script` in the guest and waits up to `timeout` for its answer.
    pub(crate) fn run(&mut self, script: &str, timeout: Duration) -> Result<Output> {
        let started = Instant::now();
        let deadline = started + timeout;
        self.next_id += 1;
        let id = self.next_id;
        let request = format!("{id} {}\n", encode(script.as_bytes()));
        self.stream
            .write_all(request.as_bytes())
            .map_err(|e| Error::io("writing to the guest's command port", e))?;
        let begin = format!("EGT-BEGIN {id}");
        let end = format!("EGT-END {id} ");
        let timed_out = || Error::Timeout {
            what: format!("the guest to answer command {id}"),
            timeout,
            details: format!("--- script ---\n{script}"),
        };
        loop {
            match self.line(deadline)? {
                Some(l) if l == begin => break,
                Some(_) => {}
                None => return Err(timed_out()),
            }
        }
        let mut body = String::new();
        loop {
            let Some(l) = self.line(deadline)? else {
                return Err(timed_out());
            };
            if let Some(status) = l.strip_prefix(&end) {
                let status = status.trim().parse().map_err(|_| {
                    Error::Other(format!("the guest answered an odd status line {l:?}"))
                })?;
                let output = decode(&body).ok_or_else(|| {
                    Error::Other(format!("the guest's answer is not base64: {body:?}"))
                })?;
                return Ok(Output {
                    script: script.to_owned(),
                    status,
                    output: String::from_utf8_lossy(&output).into_owned(),
                    elapsed: started.elapsed(),
                });
            }
            body.push_str(&l);
        }
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub(crate) fn encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 (whitespace ignored); `None` if it is not.
pub(crate) fn decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace()) {
        if c == b'=' {
            break;
        }
        let v = ALPHABET.iter().position(|a| *a == c)?;
        acc = (acc << 6) | u32::try_from(v).ok()?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).ok()?);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::{decode, encode};

    #[test]
    fn base64_round_trips_and_matches_the_standard() {
        assert_eq!(encode(b""), "");
        assert_eq!(encode(b"f"), "Zg==");
        assert_eq!(encode(b"fo"), "Zm8=");
        assert_eq!(encode(b"foo"), "Zm9v");
        assert_eq!(encode(b"foob"), "Zm9vYg==");
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(decode(&encode(&all)).as_deref(), Some(&all[..]));
        assert_eq!(decode("Zm9v\nYmFy\n").as_deref(), Some(&b"foobar"[..]));
        assert_eq!(decode("Zm9v!"), None);
    }
}
