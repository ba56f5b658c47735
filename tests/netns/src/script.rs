//! A python script run in a namespace until it says it is ready: the SMTP
//! sink, the SYN stream and the SYN capture. Its stderr goes to a file in
//! its own temporary directory (shown in every error); it is killed on drop.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    time::Duration,
};

use crate::{
    cmd::{self, NoLine, spawn_with_lines},
    error::{Error, Result},
    names::TempDir,
    netns::Netns,
    smtp::python,
};

/// How long a script may take to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// A running script.
#[derive(Debug)]
pub struct Script {
    child: std::process::Child,
    command: String,
    stderr: PathBuf,
    dir: TempDir,
}

impl Script {
    /// Writes `source` as `NAME.py` into `dir` (where the caller may have
    /// put the files its `args` name), runs it with `args` in `ns`, and
    /// waits for a stdout line that starts with `ready_word`.
    pub fn start(
        ns: &Netns,
        dir: TempDir,
        name: &str,
        source: &str,
        args: &[OsString],
        ready_word: &str,
    ) -> Result<Self> {
        let script = dir.write(&format!("{name}.py"), source)?;
        let stderr = dir.path().join("stderr.log");
        let stderr_file = std::fs::File::create(&stderr)
            .map_err(|e| Error::io(format!("creating {}", stderr.display()), e))?;
        let mut cmd = ns.command(python());
        cmd.arg("-u").arg(&script).args(args);
        let spawned = spawn_with_lines(&mut cmd, stderr_file, None)?;
        let script = Self {
            child: spawned.child,
            command: spawned.command,
            stderr,
            dir,
        };
        match cmd::await_line(&spawned.lines, READY_TIMEOUT, |l| l.starts_with(ready_word)) {
            Ok(_) => Ok(script),
            Err(NoLine::Ended) => {
                // Let its last words reach the stderr file.
                std::thread::sleep(Duration::from_millis(100));
                Err(Error::Other(format!(
                    "`{}` ended before it printed {ready_word:?}\n--- stderr ---\n{}",
                    script.command,
                    script.stderr()
                )))
            }
            Err(NoLine::TimedOut) => Err(Error::Timeout {
                what: format!("`{}` to print {ready_word:?}", script.command),
                timeout: READY_TIMEOUT,
                details: format!("--- stderr ---\n{}", script.stderr()),
            }),
        }
    }

    /// Its command line.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// Its temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGTERM, then waits up to `timeout` for it to end; `None` if it
    /// has not.
    pub fn terminate(&mut self, timeout: Duration) -> Result<Option<std::process::ExitStatus>> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Ok(Some(status));
        }
        cmd::signal(self.child.id(), libc::SIGTERM);
        cmd::wait_within(&mut self.child, timeout)
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
