//! What the tests ask of a guest: mail sent with busybox's `sendmail` (a
//! real SMTP client) to the real sink, and bulk TCP with busybox's `nc` to a
//! receiver in the internet namespace that counts and hashes what arrives.

use std::{
    net::IpAddr,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use super::Guest;
use crate::{
    cmd,
    error::{Error, Result},
    names::unique_tag,
    netns::Netns,
    smtp::{Delivery, MailAttempt, SmtpSink, python},
};

/// The guest's SMTP client, run by `nc -e` with the connection on its stdin
/// and stdout: EHLO, MAIL, RCPT, DATA,
/// QUIT, each reply checked (`@@RCPT@@` is the recipient); the dialogue goes to /tmp/smtp.log, and
/// /tmp/smtp.result is written once the server accepted the message.
pub const SMTP_CLIENT: &str = r#"#!/bin/sh
log=/tmp/smtp.log
reply() {
    while IFS= read -r line; do
        line=$(printf '%s' "$line" | tr -d '\r')
        echo "S: $line" >> $log
        case "$line" in
        [0-9][0-9][0-9]-*) continue ;;
        "$1"*) return 0 ;;
        *) return 1 ;;
        esac
    done
    echo "(connection closed)" >> $log
    return 1
}
send() { echo "C: $1" >> $log; printf '%s\r\n' "$1"; }
reply 220 || exit 1
send "EHLO guest.egress-guard.test"; reply 250 || exit 1
send "MAIL FROM:<sender@guest.egress-guard.test>"; reply 250 || exit 1
send "RCPT TO:<@@RCPT@@>"; reply 250 || exit 1
send "DATA"; reply 354 || exit 1
printf 'From: <sender@guest.egress-guard.test>\r\nTo: <@@RCPT@@>\r\nSubject: egress-guard guest test\r\n\r\nsent by a real guest\r\n.\r\n'
echo "C: (the message)" >> $log
reply 250 || exit 1
echo accepted > /tmp/smtp.result
send "QUIT"; reply 221
"#;

impl Guest<'_> {
    /// Sends one message from the guest to `server:port` with an SMTP client
    /// made of busybox's `nc -e` and [`SMTP_CLIENT`] (busybox-static has no
    /// sendmail), killed after `timeout` (a held-back attempt takes that
    /// long). Accepted means the server answered 250 to the message. Never
    /// fails because the mail did not go through.
    pub fn send_mail(
        &mut self,
        server: IpAddr,
        port: u16,
        timeout: Duration,
    ) -> Result<MailAttempt> {
        let rcpt = format!("{}@example.test", unique_tag());
        let secs = timeout.as_secs().max(1);
        let client = SMTP_CLIENT.replace("@@RCPT@@", &rcpt);
        let script = format!(
            "rm -f /tmp/smtp.result /tmp/smtp.log\n\
             cat > /tmp/smtp.sh <<'EOF'\n{client}EOF\n\
             chmod +x /tmp/smtp.sh\n\
             timeout -s KILL {secs} nc {server} {port} -e /tmp/smtp.sh\n\
             cat /tmp/smtp.log 2>/dev/null\n\
             test -f /tmp/smtp.result\n"
        );
        let out = self.run(&script, timeout + Duration::from_secs(30))?;
        Ok(MailAttempt {
            command: format!(
                "(in the guest on {}) timeout -s KILL {secs} nc {server} {port} -e /tmp/smtp.sh",
                self.ifname()
            ),
            server,
            port,
            rcpt,
            accepted: out.success(),
            exit_code: Some(out.status),
            output: out.output,
            elapsed: out.elapsed,
        })
    }

    /// [`Guest::send_mail`], then whether `sink` has the message.
    pub fn try_deliver(
        &mut self,
        sink: &SmtpSink,
        server: IpAddr,
        port: u16,
        timeout: Duration,
    ) -> Result<Delivery> {
        let attempt = self.send_mail(server, port, timeout)?;
        let received = sink.received_for(&attempt.rcpt)?;
        Ok(Delivery {
            vm: self.ifname().to_owned(),
            attempt,
            received,
        })
    }

    /// Sends `mib` MiB of random bytes with busybox `nc` to `receiver` and
    /// returns what the guest sent (its count and SHA-256) and what arrived.
    pub fn send_bulk(&mut self, receiver: BulkReceiver, mib: u32) -> Result<Bulk> {
        let script = format!(
            "dd if=/dev/urandom of=/tmp/blob bs=1048576 count={mib} 2>/dev/null\n\
             echo sent $(wc -c < /tmp/blob) $(sha256sum < /tmp/blob | cut -d' ' -f1)\n\
             timeout -s KILL 120 nc {addr} {port} < /tmp/blob\n\
             rm -f /tmp/blob\n",
            addr = receiver.addr,
            port = receiver.port
        );
        let before = self.host_counters()?;
        let started = Instant::now();
        let out = self.run(&script, Duration::from_mins(3))?;
        let took = started.elapsed();
        let after = self.host_counters()?;
        let sent = out
            .output
            .lines()
            .find_map(|l| l.strip_prefix("sent "))
            .and_then(|l| {
                let (n, sum) = l.split_once(' ')?;
                Some((n.trim().parse().ok()?, sum.trim().to_owned()))
            })
            .ok_or_else(|| {
                Error::Other(format!(
                    "the guest did not say what it sent (exit {}):\n{}",
                    out.status, out.output
                ))
            })?;
        let arrived = receiver.finish()?;
        Ok(Bulk {
            sent,
            received: arrived,
            host_frames: after.0.saturating_sub(before.0),
            host_bytes: after.1.saturating_sub(before.1),
            nc_status: out.status,
            guest_output: out.output,
            took,
        })
    }
}

/// What a bulk transfer sent and received.
#[derive(Debug, Clone)]
pub struct Bulk {
    /// Bytes and SHA-256 of what the guest sent.
    pub sent: (u64, String),
    /// Bytes and SHA-256 of what arrived.
    pub received: (u64, String),
    /// Frames and bytes from the guest on the host-side interface meanwhile
    /// (see [`Guest::host_counters`]).
    pub host_frames: u64,
    pub host_bytes: u64,
    pub nc_status: i32,
    pub guest_output: String,
    /// The whole run in the guest (making the data included).
    pub took: Duration,
}

impl Bulk {
    /// The mean size of the guest's frames on the host-side interface: above
    /// an Ethernet frame's 1514 bytes only when the guest sent TCP
    /// super-frames (TSO) that the host took as they were.
    pub fn mean_frame(&self) -> u64 {
        self.host_bytes / self.host_frames.max(1)
    }

    /// Everything arrived, byte for byte.
    pub fn intact(&self) -> bool {
        self.sent.0 > 0 && self.sent == self.received
    }
}

/// Source of the receiver: accepts one connection, reads to EOF, prints
/// `received BYTES SHA256`.
const RECEIVER: &str = r#"
import hashlib, socket, sys
addr, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((addr, port))
s.listen(1)
print("listening", flush=True)
c, _ = s.accept()
h, n = hashlib.sha256(), 0
while True:
    b = c.recv(1 << 16)
    if not b:
        break
    h.update(b)
    n += len(b)
c.close()
print("received", n, h.hexdigest(), flush=True)
"#;

/// A one-connection TCP receiver (python) in a namespace.
#[derive(Debug)]
pub struct BulkReceiver {
    pub addr: IpAddr,
    pub port: u16,
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    command: String,
}

impl BulkReceiver {
    /// Starts it on `addr:port` in `ns` and waits until it listens.
    pub fn start(ns: &Netns, addr: IpAddr, port: u16) -> Result<Self> {
        let mut cmd = ns.command(python());
        cmd.args(["-u", "-c", RECEIVER, &addr.to_string(), &port.to_string()]);
        let spawned = cmd::spawn_with_lines(&mut cmd, Stdio::inherit(), None)?;
        let r = Self {
            addr,
            port,
            child: spawned.child,
            lines: spawned.lines,
            command: spawned.command,
        };
        match cmd::await_line(&r.lines, Duration::from_secs(10), |l| l == "listening") {
            Ok(_) => Ok(r),
            Err(why) => Err(Error::Other(format!(
                "the bulk receiver `{}` did not listen: {why:?}",
                r.command
            ))),
        }
    }

    /// Waits (60 s) for its count and hash.
    pub fn finish(mut self) -> Result<(u64, String)> {
        let line = self
            .lines
            .recv_timeout(Duration::from_mins(1))
            .map_err(|_| {
                Error::Other(format!(
                    "the bulk receiver `{}` printed no result: nothing arrived, or no EOF",
                    self.command
                ))
            })?;
        let _ = cmd::wait_within(&mut self.child, Duration::from_secs(5));
        let mut words = line.split_whitespace().skip(1);
        let n = words.next().and_then(|n| n.parse().ok());
        let sum = words.next().map(str::to_owned);
        n.zip(sum)
            .ok_or_else(|| Error::Other(format!("the bulk receiver printed {line:?}")))
    }
}

impl Drop for BulkReceiver {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
