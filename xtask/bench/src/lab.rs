//! The namespace hypervisor benchmarks 2 to 4 share: two routed VMs, one
//! blocked (`vm-blk`) and one exempt (`vm-exm`), the agent under test, and
//! background programs that are killed when they go out of scope.

use std::{
    fs::File,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use egress_guard_netns::{Agent, TempDir, Topology, Vm, agent::READY_TIMEOUT, cmd};

use crate::policy::{Role, policy};

/// The blocked VM's host-side interface (and VM name).
pub const BLOCKED: &str = "vm-blk";
/// The exempt VM's.
pub const EXEMPT: &str = "vm-exm";

/// Where the program sits, or nothing at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Hook {
    None,
    Xdp,
    XdpGeneric,
    Tc,
}

impl Hook {
    /// The policy's `hook:` value.
    pub fn policy_value(self) -> &'static str {
        match self {
            Hook::None => "-",
            Hook::Xdp => "xdp",
            Hook::XdpGeneric => "xdp-generic",
            Hook::Tc => "tc",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Hook::None => "no agent",
            Hook::Xdp => "`xdp` (native)",
            Hook::XdpGeneric => "`xdp-generic`",
            Hook::Tc => "`tc` (tcx)",
        }
    }
}

pub struct Lab {
    pub topo: Topology,
    pub dir: TempDir,
    pub bin: PathBuf,
}

impl Lab {
    pub fn new(bin: &Path) -> Result<Self> {
        let topo = Topology::builder()
            .routed_vm(BLOCKED)
            .routed_vm(EXEMPT)
            .build()
            .context("building the namespace topology")?;
        Ok(Self {
            topo,
            dir: TempDir::new("bench")?,
            bin: bin.to_owned(),
        })
    }

    pub fn blocked(&self) -> &Vm {
        self.topo.vm(BLOCKED)
    }

    pub fn exempt(&self) -> &Vm {
        self.topo.vm(EXEMPT)
    }

    /// The two-VM policy with `hook`.
    pub fn policy(hook: Hook) -> String {
        policy(
            hook.policy_value(),
            &[],
            &[(BLOCKED, Role::Blocked), (EXEMPT, Role::Exempt)],
            0,
        )
    }

    /// Starts the agent on the two-VM policy with `hook` and waits for it to
    /// be ready; returns it with the hook `status` shows on the blocked VM's
    /// interface (the agent falls back to generic XDP where native XDP is
    /// not to be had).
    pub fn agent(&self, hook: Hook) -> Result<(Agent<'_>, String)> {
        let path = self.dir.write("policy.yaml", Self::policy(hook))?;
        let mut agent = Agent::spawn(&self.topo.hv, &self.bin, &path, &["--log-format", "json"])?;
        agent.wait_ready(READY_TIMEOUT)?;
        let status = agent.status_json()?;
        let actual = status["interfaces"]
            .as_array()
            .and_then(|a| a.iter().find(|i| i["name"] == BLOCKED))
            .and_then(|i| i["hook"].as_str())
            .map(str::to_owned)
            .with_context(|| format!("status shows no hook on {BLOCKED}:\n{status:#}"))?;
        Ok((agent, actual))
    }
}

/// A program running in the background; killed when dropped.
pub struct Background {
    pub child: Child,
    pub command: String,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Background {
    /// Starts `cmd` in a process group of its own (trafgen forks its
    /// senders; a signal goes to them all), its output in
    /// `<dir>/<name>.out` and `.err`.
    pub fn start(mut cmd: Command, dir: &Path, name: &str) -> Result<Self> {
        let stdout = dir.join(format!("{name}.out"));
        let stderr = dir.join(format!("{name}.err"));
        let command = cmd::describe(&cmd);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(File::create(&stdout)?)
            .stderr(File::create(&stderr)?)
            .process_group(0)
            .spawn()
            .with_context(|| format!("could not start `{command}`"))?;
        Ok(Self {
            child,
            command,
            stdout,
            stderr,
        })
    }

    /// What it printed so far, for error messages.
    pub fn output(&self) -> String {
        format!(
            "`{}`\n--- stdout ---\n{}--- stderr ---\n{}",
            self.command,
            std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        )
    }

    /// An error (with its output) if it has already ended.
    pub fn check_running(&mut self) -> Result<()> {
        if let Ok(Some(status)) = self.child.try_wait() {
            bail!("ended early ({status}): {}", self.output());
        }
        Ok(())
    }

    /// Sends `signal` to its process group.
    fn signal_group(&self, signal: libc::c_int) {
        if let Ok(pgid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) takes plain integers and has no memory effects.
            unsafe { libc::kill(-pgid, signal) };
        }
    }

    /// Sends `signal` to its process group, waits up to 10 s for the end
    /// (then kills the group).
    pub fn stop(&mut self, signal: libc::c_int) -> Result<()> {
        self.signal_group(signal);
        if cmd::wait_within(&mut self.child, Duration::from_secs(10))?.is_none() {
            self.signal_group(libc::SIGKILL);
            let _ = self.child.wait();
            bail!("did not end after signal {signal}: {}", self.output());
        }
        Ok(())
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // The group, also what it forked, and also when it has ended.
        self.signal_group(libc::SIGKILL);
        let _ = self.child.wait();
    }
}
