//! Running programs with a deadline, and errors that show what they printed.

use std::{
    ffi::OsStr,
    io::{BufRead, BufReader, Read},
    os::unix::process::CommandExt,
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::{Arc, Mutex, mpsc},
    thread,
    time::{Duration, Instant},
};

use crate::error::{Error, Result};

/// How long an ordinary set-up command (ip, sysctl, ...) may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The command line of `cmd`, for messages.
pub fn describe(cmd: &Command) -> String {
    let mut out = quote(cmd.get_program());
    for arg in cmd.get_args() {
        out.push(' ');
        out.push_str(&quote(arg));
    }
    out
}

fn quote(word: &OsStr) -> String {
    let s = word.to_string_lossy();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%[]".contains(c))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// What a finished program did.
#[derive(Debug, Clone)]
pub struct Finished {
    pub command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Finished {
    /// Whether it exited 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Its exit code, or `None` when a signal ended it.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// This outcome as an error, for a program that should have succeeded.
    pub fn into_error(self) -> Error {
        Error::Failed {
            command: self.command,
            status: self.status.to_string(),
            stdout: self.stdout,
            stderr: self.stderr,
        }
    }

    /// `Ok(self)` when it exited 0, else the error that shows its output.
    pub fn check(self) -> Result<Self> {
        if self.success() {
            Ok(self)
        } else {
            Err(self.into_error())
        }
    }
}

impl From<Finished> for Output {
    fn from(f: Finished) -> Self {
        Output {
            status: f.status,
            stdout: f.stdout.into_bytes(),
            stderr: f.stderr.into_bytes(),
        }
    }
}

/// Runs `cmd` to its end, or kills it after `timeout`. Stdin is closed;
/// stdout and stderr are captured. Does not look at the exit status.
pub fn output_within(cmd: &mut Command, timeout: Duration) -> Result<Finished> {
    let command = describe(cmd);
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Spawn {
            command: command.clone(),
            source,
        })?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let Some(status) = wait_within(&mut child, timeout)? else {
        let _ = child.kill();
        let _ = child.wait();
        let stdout = stdout.join().unwrap_or_default();
        let stderr = stderr.join().unwrap_or_default();
        return Err(Error::Timeout {
            what: format!("`{command}` to finish"),
            timeout,
            details: format!("--- stderr ---\n{stderr}--- stdout ---\n{stdout}"),
        });
    };
    Ok(Finished {
        command,
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
        elapsed: started.elapsed(),
    })
}

/// Runs `cmd` with [`DEFAULT_TIMEOUT`]; an error unless it exits 0.
pub fn run(cmd: &mut Command) -> Result<Finished> {
    output_within(cmd, DEFAULT_TIMEOUT)?.check()
}

/// Runs `program args...` with [`DEFAULT_TIMEOUT`]; an error unless it exits 0.
pub fn run_args<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Result<Finished> {
    run(Command::new(program).args(args))
}

/// Waits for `child` until `timeout`; `None` if it is still running then.
pub fn wait_within(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(Some(status)),
            Ok(None) if Instant::now() >= deadline => return Ok(None),
            Ok(None) => thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(Error::io("waiting for a child process", e)),
        }
    }
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// A program started by [`spawn_with_lines`].
#[derive(Debug)]
pub struct Spawned {
    pub child: Child,
    /// Its command line, for messages.
    pub command: String,
    /// Its stdout, line by line, as it prints them.
    pub lines: mpsc::Receiver<String>,
}

/// Starts `cmd` in a process group of its own (a Ctrl-C at the terminal
/// reaches the caller, which then stops it in order), stdin closed, stderr
/// to `stderr`. A thread reads its stdout and sends each line on
/// [`Spawned::lines`], after appending it to `keep` when given.
pub fn spawn_with_lines(
    cmd: &mut Command,
    stderr: impl Into<Stdio>,
    keep: Option<Arc<Mutex<Vec<String>>>>,
) -> Result<Spawned> {
    let command = describe(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .map_err(|source| Error::Spawn {
            command: command.clone(),
            source,
        })?;
    let (tx, lines) = mpsc::channel();
    let pipe = child.stdout.take();
    thread::spawn(move || {
        let Some(pipe) = pipe else { return };
        for line in BufReader::new(pipe)
            .lines()
            .map_while(std::result::Result::ok)
        {
            if let Some(keep) = &keep
                && let Ok(mut all) = keep.lock()
            {
                all.push(line.clone());
            }
            let _ = tx.send(line);
        }
    });
    Ok(Spawned {
        child,
        command,
        lines,
    })
}

/// Why [`await_line`] returned no line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoLine {
    /// Stdout closed: the program is ending or has ended.
    Ended,
    TimedOut,
}

/// Waits up to `timeout` for a line of `lines` for which `wanted` holds
/// (the others are skipped) and returns it.
pub fn await_line(
    lines: &mpsc::Receiver<String>,
    timeout: Duration,
    wanted: impl Fn(&str) -> bool,
) -> std::result::Result<String, NoLine> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if wanted(&line) => return Ok(line),
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => return Err(NoLine::TimedOut),
            Err(mpsc::RecvTimeoutError::Disconnected) => return Err(NoLine::Ended),
        }
    }
}

/// Sends `signal` to process `pid`; false if there is no such process.
pub fn signal(pid: u32, signal: libc::c_int) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill(2) takes plain integers and has no memory effects.
    unsafe { libc::kill(pid, signal) == 0 }
}

/// Whether a process with this pid exists.
pub fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}
