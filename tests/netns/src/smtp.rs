//! A real SMTP server (aiosmtpd) in the internet namespace, and a real SMTP
//! client (swaks) in a VM namespace.

use std::{
    ffi::OsString,
    net::IpAddr,
    path::PathBuf,
    process::{Command, Stdio},
    sync::OnceLock,
    time::Duration,
};

use serde::Deserialize;

use crate::{
    cmd,
    error::{Error, Result},
    names::{TempDir, unique_tag},
    netns::Netns,
    script::Script,
    topology::{RELAY_V4, RELAY_V6, SINK_V4, SINK_V6, Topology, Vm},
};

/// The sink's source, written to a temporary file when a sink starts (so the
/// fixtures work wherever the binary that uses them runs from).
pub const SINK_SCRIPT: &str = include_str!("../../fixtures/smtp_sink.py");

/// The python that runs the sink: `$EGRESS_GUARD_PYTHON`, else
/// `/usr/bin/python3` when it has aiosmtpd (Debian's python3-aiosmtpd; a pyenv
/// shim may shadow `python3` on PATH), else `python3` from PATH.
pub fn python() -> &'static str {
    static PYTHON: OnceLock<String> = OnceLock::new();
    PYTHON.get_or_init(|| {
        if let Ok(p) = std::env::var("EGRESS_GUARD_PYTHON") {
            return p;
        }
        let debian = "/usr/bin/python3";
        let has_aiosmtpd = Command::new(debian)
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if has_aiosmtpd { debian } else { "python3" }.to_owned()
    })
}

/// One message the sink received.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Received {
    /// The client's address as the sink saw it.
    pub peer: IpAddr,
    pub peer_port: u16,
    /// The address and port it was received on.
    pub server: IpAddr,
    pub server_port: u16,
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
}

/// The SMTP sink process. Stopped on drop.
#[derive(Debug)]
pub struct SmtpSink {
    script: Script,
    log: PathBuf,
}

impl SmtpSink {
    /// Starts the sink in `ns`, listening on every address and port given, and
    /// waits until it listens.
    pub fn start(ns: &Netns, addrs: &[IpAddr], ports: &[u16]) -> Result<Self> {
        let dir = TempDir::new("smtp-sink")?;
        let log = dir.write("received.jsonl", "")?;
        let mut args: Vec<OsString> = vec!["--log".into(), log.clone().into()];
        for addr in addrs {
            args.extend(["--listen".into(), addr.to_string().into()]);
        }
        for port in ports {
            args.extend(["--port".into(), port.to_string().into()]);
        }
        let script = Script::start(ns, dir, "smtp_sink", SINK_SCRIPT, &args, "listening")?;
        Ok(Self { script, log })
    }

    /// The usual sink of a topology: the sink and relay addresses, IPv4 and
    /// IPv6, ports 25 and 587, in the internet namespace.
    pub fn start_in(topology: &Topology) -> Result<Self> {
        Self::start(
            &topology.internet,
            &[
                SINK_V4.into(),
                SINK_V6.into(),
                RELAY_V4.into(),
                RELAY_V6.into(),
            ],
            &[25, 587],
        )
    }

    /// What the sink printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.script.stderr()
    }

    /// Every message received so far.
    pub fn received(&self) -> Result<Vec<Received>> {
        let text = std::fs::read_to_string(&self.log)
            .map_err(|e| Error::io(format!("reading {}", self.log.display()), e))?;
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l).map_err(|source| Error::Json {
                    command: self.script.command().to_owned(),
                    output: l.to_owned(),
                    source,
                })
            })
            .collect()
    }

    /// The message for recipient `rcpt`, if it has arrived.
    pub fn received_for(&self, rcpt: &str) -> Result<Option<Received>> {
        Ok(self
            .received()?
            .into_iter()
            .find(|r| r.rcpt_tos.iter().any(|t| t == rcpt)))
    }

    /// Sends one message from `vm` to `server:port` with swaks, and looks
    /// whether it arrived here. `timeout` bounds each step of the SMTP
    /// dialogue (the connection attempt above all): a held-back attempt takes
    /// about that long.
    pub fn try_deliver(
        &self,
        vm: &Vm,
        server: IpAddr,
        port: u16,
        timeout: Duration,
    ) -> Result<Delivery> {
        let attempt = send_mail(&vm.ns, server, port, timeout)?;
        // swaks reports success after the server's 250 to DATA, which the
        // sink sends after it wrote the line: no need to wait.
        let received = self.received_for(&attempt.rcpt)?;
        Ok(Delivery {
            vm: vm.host_if.clone(),
            attempt,
            received,
        })
    }
}

impl Drop for SmtpSink {
    /// SIGTERM first, so that it ends in order; [`Script`] kills it after
    /// 3 s.
    fn drop(&mut self) {
        let _ = self.script.terminate(Duration::from_secs(3));
    }
}

/// One try of swaks.
#[derive(Debug, Clone)]
pub struct MailAttempt {
    pub command: String,
    pub server: IpAddr,
    pub port: u16,
    /// The unique recipient, to find the message at the sink.
    pub rcpt: String,
    /// swaks exited 0: the server accepted the message.
    pub accepted: bool,
    pub exit_code: Option<i32>,
    /// What swaks printed (stdout and stderr).
    pub output: String,
    pub elapsed: Duration,
}

/// Sends one message with swaks from namespace `ns`. Never fails because the
/// mail did not go through (see [`MailAttempt::accepted`]); fails only when
/// swaks could not be run.
pub fn send_mail(ns: &Netns, server: IpAddr, port: u16, timeout: Duration) -> Result<MailAttempt> {
    let rcpt = format!("{}@example.test", unique_tag());
    let target = match server {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    };
    let mut cmd = ns.command("swaks");
    cmd.args([
        "--server",
        &target,
        "--to",
        &rcpt,
        "--from",
        "sender@vm.egress-guard.test",
        "--helo",
        "vm.egress-guard.test",
        "--timeout",
        &format!("{}s", timeout.as_secs().max(1)),
        "--header",
        "Subject: egress-guard test",
    ]);
    let out = cmd::output_within(&mut cmd, timeout * 4 + Duration::from_secs(10))?;
    if out.code() == Some(127) || out.stderr.contains("No such file") {
        return Err(out.into_error());
    }
    Ok(MailAttempt {
        accepted: out.success(),
        exit_code: out.code(),
        output: format!("{}{}", out.stdout, out.stderr),
        elapsed: out.elapsed,
        command: out.command,
        server,
        port,
        rcpt,
    })
}

/// A message sent and, if it arrived, what the sink saw.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The VM's host-side interface name.
    pub vm: String,
    pub attempt: MailAttempt,
    pub received: Option<Received>,
}

impl Delivery {
    /// swaks succeeded and the sink has the message.
    pub fn delivered(&self) -> bool {
        self.attempt.accepted && self.received.is_some()
    }

    /// One line for logs and assertion messages, with swaks' output below.
    pub fn describe(&self) -> String {
        let a = &self.attempt;
        format!(
            "{} -> {}:{}: {} after {:.1}s (client exit {:?}, sink {})\n`{}`\n{}",
            self.vm,
            a.server,
            a.port,
            if self.delivered() {
                "delivered"
            } else {
                "NOT delivered"
            },
            a.elapsed.as_secs_f64(),
            a.exit_code,
            match &self.received {
                Some(r) => format!("got it from {} on port {}", r.peer, r.server_port),
                None => "has nothing".to_owned(),
            },
            a.command,
            a.output.trim_end()
        )
    }
}
