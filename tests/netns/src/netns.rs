//! A named network namespace (`ip netns add`), deleted with everything in it
//! when dropped.

use std::{
    ffi::OsStr,
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use crate::{
    cmd::{self, Finished},
    error::{Error, Result},
    names,
};

/// A network namespace. Dropping it kills the processes left in it and deletes
/// it, which also destroys its interfaces (and the veth peers of those).
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates the namespace `name` (use [`names::unique_tag`] to make one) and
    /// brings its loopback up.
    pub fn create(name: &str) -> Result<Self> {
        cmd::run(Command::new("ip").args(["netns", "add", name]))?;
        let ns = Self {
            name: name.to_owned(),
        };
        ns.ip(["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/var/run/netns/NAME`, for `nsenter --net=`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }

    /// `ip netns exec NAME program`: for ordinary programs. It remounts /sys
    /// in a private mount namespace, which hides /sys/fs/bpf: use
    /// [`Netns::nsenter`] for anything that needs bpffs (the agent).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// `nsenter --net=/var/run/netns/NAME program`: enters only the network
    /// namespace, so the host's mounts (bpffs) stay visible.
    pub fn nsenter(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.path().display()))
            .arg(program);
        cmd
    }

    /// Runs `program args...` in the namespace; an error unless it exits 0.
    pub fn run<I, S>(&self, program: &str, args: I) -> Result<Finished>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        cmd::run(self.command(program).args(args))
    }

    /// `ip -n NAME args...`; an error unless it exits 0.
    pub fn ip<I, S>(&self, args: I) -> Result<Finished>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        cmd::run(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// `ip -j link show dev DEV`: the interface as `ip` describes it (its
    /// `ifindex`, `address`, ...).
    pub fn link_json(&self, dev: &str) -> Result<serde_json::Value> {
        let out = self.ip(["-j", "link", "show", "dev", dev])?;
        let doc: serde_json::Value =
            serde_json::from_str(&out.stdout).map_err(|source| Error::Json {
                command: out.command.clone(),
                output: out.stdout.clone(),
                source,
            })?;
        Ok(doc[0].clone())
    }

    /// Creates a veth pair: `dev` here, `peer` in `other`.
    pub fn veth_to(&self, dev: &str, other: &Netns, peer: &str) -> Result<()> {
        self.ip([
            "link",
            "add",
            dev,
            "type",
            "veth",
            "peer",
            "name",
            peer,
            "netns",
            other.name(),
        ])?;
        Ok(())
    }

    /// Gives `dev` the addresses `v4`/24 and `v6`/64 (no duplicate address
    /// detection, so the IPv6 one works at once).
    pub fn add_addrs(&self, dev: &str, v4: Ipv4Addr, v6: Ipv6Addr) -> Result<()> {
        self.ip(["addr", "add", &format!("{v4}/24"), "dev", dev])?;
        self.ip([
            "-6",
            "addr",
            "add",
            &format!("{v6}/64"),
            "dev",
            dev,
            "nodad",
        ])?;
        Ok(())
    }

    /// Sets a sysctl of this namespace (`net.*` keys are per namespace).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.run("sysctl", ["-q", "-w", &format!("{key}={value}")])?;
        Ok(())
    }

    /// The names of the interfaces in this namespace (`ip -j link show`).
    pub fn links(&self) -> Result<Vec<String>> {
        let out = self.ip(["-j", "link", "show"])?;
        let links: Vec<serde_json::Value> =
            serde_json::from_str(&out.stdout).map_err(|source| Error::Json {
                command: out.command.clone(),
                output: out.stdout.clone(),
                source,
            })?;
        Ok(links
            .iter()
            .filter_map(|l| l.get("ifname").and_then(serde_json::Value::as_str))
            .map(str::to_owned)
            .collect())
    }

    /// Runs `ping` from this namespace to `to` until it answers or `timeout`
    /// passes.
    pub fn wait_reachable(&self, to: std::net::IpAddr, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let out = cmd::output_within(
                self.command("ping")
                    .args(["-n", "-c", "1", "-W", "1", &to.to_string()]),
                Duration::from_secs(5),
            )?;
            if out.success() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let routes = self.ip(["route"]).map(|o| o.stdout).unwrap_or_default();
                let routes6 = self
                    .ip(["-6", "route"])
                    .map(|o| o.stdout)
                    .unwrap_or_default();
                let addrs = self
                    .ip(["-br", "addr"])
                    .map(|o| o.stdout)
                    .unwrap_or_default();
                return Err(Error::Timeout {
                    what: format!("{to} to answer ping from namespace {}", self.name),
                    timeout,
                    details: format!(
                        "last attempt: `{}` ({})\n{}{}\naddresses:\n{addrs}routes:\n{routes}{routes6}",
                        out.command, out.status, out.stdout, out.stderr
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn destroy(&self) -> Result<()> {
        for pid in names::namespace_pids(&self.name)? {
            cmd::signal(pid, libc::SIGKILL);
        }
        cmd::run(Command::new("ip").args(["netns", "delete", &self.name]))?;
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = self.destroy() {
            eprintln!(
                "warning: could not delete network namespace {}: {e}",
                self.name
            );
        }
    }
}
