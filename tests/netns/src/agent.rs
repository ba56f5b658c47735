//! The agent under test, run in the hypervisor namespace.
//!
//! It is started with `nsenter --net=/var/run/netns/HV`, not `ip netns exec`:
//! the latter remounts /sys, which hides /sys/fs/bpf, where the agent pins.

use std::{
    ffi::{OsStr, OsString},
    path::{Path, PathBuf},
    process::{Child, ExitStatus},
    sync::{Arc, Mutex, mpsc},
    time::Duration,
};

use serde_json::Value;

use crate::{
    cmd::{self, Finished, NoLine},
    error::{Error, Result},
    names::{self, TempDir},
    netns::Netns,
};

/// How long `run` may take to print its readiness line.
pub const READY_TIMEOUT: Duration = Duration::from_mins(1);

/// The agent binary: `$EGRESS_GUARD_BIN` (set by `cargo xtask test`).
pub fn agent_bin() -> Result<PathBuf> {
    match std::env::var_os("EGRESS_GUARD_BIN") {
        Some(p) if !p.is_empty() => {
            let p = PathBuf::from(p);
            if p.is_file() {
                Ok(p)
            } else {
                Err(Error::Other(format!(
                    "EGRESS_GUARD_BIN={} is not a file: build the agent first (`cargo build -p egress-guard`), or run `cargo xtask test`",
                    p.display()
                )))
            }
        }
        _ => Err(Error::Other(
            "EGRESS_GUARD_BIN is not set: run the end-to-end tests with `cargo xtask test`, or set it to the agent binary's absolute path".to_owned(),
        )),
    }
}

/// An `egress-guard run` process in a hypervisor namespace, with its own pin
/// directory `/sys/fs/bpf/egt-<pid>-<n>`. Dropping it kills the process, runs
/// `detach` and removes the pin directory, whatever state it was left in.
#[derive(Debug)]
pub struct Agent<'a> {
    hv: &'a Netns,
    bin: PathBuf,
    policy: PathBuf,
    extra: Vec<OsString>,
    pin_dir: PathBuf,
    tag: String,
    command: String,
    child: Child,
    exit: Option<ExitStatus>,
    stdout: Arc<Mutex<Vec<String>>>,
    lines: mpsc::Receiver<String>,
    stderr: PathBuf,
    detached: bool,
    _dir: TempDir,
}

impl<'a> Agent<'a> {
    /// Starts `bin run --policy POLICY --pin-dir DIR` in `hv` and waits for its
    /// readiness line.
    pub fn start(hv: &'a Netns, bin: &Path, policy: &Path) -> Result<Self> {
        let mut agent = Self::spawn(hv, bin, policy, &[] as &[&str])?;
        agent.wait_ready(READY_TIMEOUT)?;
        Ok(agent)
    }

    /// Starts the agent without waiting for it, with more arguments after
    /// `run --policy POLICY --pin-dir DIR`.
    pub fn spawn<S: AsRef<OsStr>>(
        hv: &'a Netns,
        bin: &Path,
        policy: &Path,
        extra: &[S],
    ) -> Result<Self> {
        let tag = names::unique_tag();
        let pin_dir = Path::new(names::BPFFS).join(&tag);
        let dir = TempDir::new("agent")?;
        let stderr = dir.path().join("agent.stderr");
        let extra: Vec<OsString> = extra.iter().map(|e| e.as_ref().to_owned()).collect();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let launched = launch(hv, bin, policy, &pin_dir, &extra, &stderr, &stdout)?;
        Ok(Self {
            hv,
            bin: bin.to_owned(),
            policy: policy.to_owned(),
            extra,
            pin_dir,
            tag,
            command: launched.command,
            child: launched.child,
            exit: None,
            stdout,
            lines: launched.lines,
            stderr,
            detached: false,
            _dir: dir,
        })
    }

    /// Starts the agent again on the same pin directory (and so the same
    /// state directory), as a service manager restarts it, once the previous
    /// process has ended ([`Agent::stop`] or [`Agent::kill`] first). `bin`
    /// runs another build (an upgrade); `None` runs the same binary again.
    /// Its logs go on in the same stderr file. Does not wait for `ready`.
    pub fn respawn(&mut self, bin: Option<&Path>) -> Result<()> {
        if self.wait_exit(Duration::ZERO)?.is_none() {
            return Err(Error::Other(format!(
                "respawn: the agent (pid {}) is still running; stop or kill it first",
                self.pid()
            )));
        }
        if let Some(bin) = bin {
            bin.clone_into(&mut self.bin);
        }
        let launched = launch(
            self.hv,
            &self.bin,
            &self.policy,
            &self.pin_dir,
            &self.extra,
            &self.stderr,
            &self.stdout,
        )?;
        self.command = launched.command;
        self.child = launched.child;
        self.lines = launched.lines;
        self.exit = None;
        Ok(())
    }

    /// [`Agent::respawn`], then waits for `ready`.
    pub fn restart(&mut self, bin: Option<&Path>) -> Result<()> {
        self.respawn(bin)?;
        self.wait_ready(READY_TIMEOUT)
    }

    /// Waits for a stdout line containing `ready`. On failure (timeout, or the
    /// agent ended), the error shows what it printed.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        match cmd::await_line(&self.lines, timeout, |l| l.contains("ready")) {
            Ok(_) => Ok(()),
            Err(NoLine::Ended) => {
                let status = self.wait_exit(Duration::from_secs(5))?;
                Err(Error::Other(format!(
                    "the agent ended ({}) before it printed `ready`\n`{}`\n{}",
                    status.map_or_else(|| "still running".to_owned(), |s| s.to_string()),
                    self.command,
                    self.output()
                )))
            }
            Err(NoLine::TimedOut) => Err(Error::Timeout {
                what: format!("the agent to print `ready`: `{}`", self.command),
                timeout,
                details: self.output(),
            }),
        }
    }

    /// The process id of the agent.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// The policy file the agent was started with.
    pub fn policy(&self) -> &Path {
        &self.policy
    }

    /// `<pin dir>/links`, where the agent pins one link per enforced
    /// interface.
    pub fn links_dir(&self) -> PathBuf {
        self.pin_dir.join("links")
    }

    /// The log events the agent wrote so far, when it runs with
    /// `--log-format json` (lines that are not JSON objects are skipped).
    pub fn json_logs(&self) -> Vec<Value> {
        self.stderr()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(Value::is_object)
            .collect()
    }

    /// The log events (`--log-format json`) with this message.
    pub fn logged(&self, message: &str) -> Vec<Value> {
        self.json_logs()
            .into_iter()
            .filter(|e| e["message"] == message)
            .collect()
    }

    /// What the agent printed on stderr (its logs) so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The lines the agent printed on stdout so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Stdout and stderr, for error messages (without terminal colours).
    pub fn output(&self) -> String {
        format!(
            "--- agent stdout ---\n{}\n--- agent stderr ---\n{}",
            strip_ansi(&self.stdout_lines().join("\n")),
            strip_ansi(&self.stderr())
        )
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.exit.is_none() && matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `timeout` for the process to end; `None` if it has not.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        if let Some(status) = self.exit {
            return Ok(Some(status));
        }
        let status = cmd::wait_within(&mut self.child, timeout)?;
        self.exit = status;
        Ok(status)
    }

    /// Sends SIGTERM and waits (10 s) for the process to end. Returns how it
    /// ended; an error (with its logs) if it did not end.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.wait_exit(Duration::ZERO)? {
            return Ok(status);
        }
        cmd::signal(self.pid(), libc::SIGTERM);
        let timeout = Duration::from_secs(10);
        match self.wait_exit(timeout)? {
            Some(status) => Ok(status),
            None => Err(Error::Timeout {
                what: "the agent to end after SIGTERM".to_owned(),
                timeout,
                details: self.output(),
            }),
        }
    }

    /// SIGKILL: the agent gets no chance to clean anything up.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.wait_exit(Duration::ZERO)? {
            return Ok(status);
        }
        cmd::signal(self.pid(), libc::SIGKILL);
        self.wait_exit(Duration::from_secs(10))?
            .ok_or_else(|| Error::Other("the agent did not end after SIGKILL".to_owned()))
    }

    /// Runs `egress-guard ARGS...` in the hypervisor namespace (through
    /// nsenter, so that bpffs is visible), whatever its exit status.
    pub fn ctl<I, S>(&self, args: I) -> Result<Finished>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        cmd::output_within(
            self.hv.nsenter(&self.bin).args(args),
            Duration::from_mins(1),
        )
    }

    /// `egress-guard status --pin-dir DIR EXTRA...`, whatever its exit
    /// status.
    pub fn status(&self, extra: &[&str]) -> Result<Finished> {
        let mut args = vec![OsStr::new("status"), OsStr::new("--pin-dir")];
        args.push(self.pin_dir.as_os_str());
        args.extend(extra.iter().map(OsStr::new));
        self.ctl(args)
    }

    /// `egress-guard status --pin-dir DIR --format json EXTRA...`, parsed;
    /// an error unless it exits 0.
    pub fn status_json_with(&self, extra: &[&str]) -> Result<Value> {
        let mut args = vec!["--format", "json"];
        args.extend(extra);
        let out = self.status(&args)?.check()?;
        serde_json::from_str(&out.stdout).map_err(|source| Error::Json {
            command: out.command,
            output: out.stdout,
            source,
        })
    }

    /// `egress-guard status --pin-dir DIR --format json`, parsed.
    pub fn status_json(&self) -> Result<Value> {
        self.status_json_with(&[])
    }

    /// `egress-guard status --pin-dir DIR` (the table), as printed.
    pub fn status_text(&self) -> Result<Finished> {
        self.status(&[])?.check()
    }

    /// `egress-guard detach --pin-dir DIR`; an error unless it exits 0.
    pub fn detach(&mut self) -> Result<Finished> {
        let out = self
            .ctl([
                OsStr::new("detach"),
                OsStr::new("--pin-dir"),
                self.pin_dir.as_os_str(),
            ])?
            .check()?;
        self.detached = true;
        Ok(out)
    }

    fn cleanup(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(e) = self.kill() {
            problems.push(format!("killing the agent: {e}"));
        }
        if !self.detached
            && self.pin_dir.exists()
            && let Err(e) = self.detach()
        {
            problems.push(format!("detach: {e}"));
        }
        if self.pin_dir.exists()
            && let Err(e) = std::fs::remove_dir_all(&self.pin_dir)
        {
            problems.push(format!("removing {}: {e}", self.pin_dir.display()));
        }
        // The agent's state directory is named after the pin directory
        // (`sys-fs-bpf-egt_<pid>_<n>`).
        if let Ok(entries) = std::fs::read_dir(names::AGENT_STATE_ROOT) {
            let suffix = format!("-{}", self.tag);
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().replace('_', "-");
                if name.ends_with(&suffix)
                    && let Err(e) = std::fs::remove_dir_all(entry.path())
                {
                    problems.push(format!("removing {}: {e}", entry.path().display()));
                }
            }
        }
        problems
    }
}

impl Drop for Agent<'_> {
    fn drop(&mut self) {
        for problem in self.cleanup() {
            eprintln!(
                "warning: cleaning up the agent of {}: {problem}",
                self.pin_dir.display()
            );
        }
    }
}

/// A started `run` process.
struct Launched {
    command: String,
    child: Child,
    lines: mpsc::Receiver<String>,
}

/// Starts `bin run --policy POLICY --pin-dir DIR EXTRA...` in `hv`, its
/// stderr appended to `stderr`, its stdout lines collected in `stdout` and
/// sent on the returned channel.
fn launch(
    hv: &Netns,
    bin: &Path,
    policy: &Path,
    pin_dir: &Path,
    extra: &[OsString],
    stderr: &Path,
    stdout: &Arc<Mutex<Vec<String>>>,
) -> Result<Launched> {
    let stderr_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(stderr)
        .map_err(|e| Error::io(format!("opening {}", stderr.display()), e))?;
    let mut cmd = hv.nsenter(bin);
    cmd.arg("run")
        .arg("--policy")
        .arg(policy)
        .arg("--pin-dir")
        .arg(pin_dir)
        .args(extra);
    let spawned = cmd::spawn_with_lines(&mut cmd, stderr_file, Some(Arc::clone(stdout)))?;
    Ok(Launched {
        command: spawned.command,
        child: spawned.child,
        lines: spawned.lines,
    })
}

/// `text` without ANSI escape sequences (`ESC [ ... letter`).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The entry of `vm` in a status or check document's `vms`, found by VM name
/// or by interface name.
pub fn vm_entry<'v>(doc: &'v Value, vm: &str) -> Option<&'v Value> {
    doc.get("vms")?.as_array()?.iter().find(|v| {
        v.get("name").and_then(Value::as_str) == Some(vm)
            || v.get("interface").and_then(Value::as_str) == Some(vm)
    })
}

/// The packets held back from `vm` (a VM name or its interface) in a status
/// document: `vms[].held_back.packets`.
pub fn held_back_packets(status: &Value, vm: &str) -> Option<u64> {
    vm_entry(status, vm)?
        .get("held_back")?
        .get("packets")?
        .as_u64()
}

#[cfg(test)]
mod tests {
    #[test]
    fn strip_ansi_removes_colours_only() {
        assert_eq!(
            super::strip_ansi("\u{1b}[2mtime\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m x=1"),
            "time  INFO x=1"
        );
    }
}
