//! What the machine is, and what its CPUs and a process spend: /proc reads.

use std::{path::Path, process::Command};

use anyhow::{Context as _, Result, bail};

/// The machine the figures were measured on.
#[derive(Debug, Clone)]
pub struct Machine {
    pub cpu_model: String,
    pub cpus: usize,
    /// Whether /proc/cpuinfo has the `hypervisor` flag (a VM).
    pub virtualised: bool,
    pub kernel: String,
    pub memory_gib: f64,
    /// `git describe`-like: the commit measured, `+dirty` when the tree
    /// had uncommitted changes.
    pub commit: String,
    /// The 1- and 5-minute load averages as the run began (they lag: the
    /// builds just before it are in them).
    pub load_at_start: (f64, f64),
    /// The share of the CPUs' time other work took over 2 s just before
    /// the run.
    pub busy_before: f64,
}

impl Machine {
    pub fn read(workspace: &Path) -> Result<Self> {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").context("reading /proc/cpuinfo")?;
        let field = |name: &str| {
            cpuinfo
                .lines()
                .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        };
        let cpu_model = field("model name").unwrap_or_else(|| "unknown".to_owned());
        let virtualised =
            field("flags").is_some_and(|f| f.split_whitespace().any(|x| x == "hypervisor"));
        let cpus = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .context("reading the kernel release")?
            .trim()
            .to_owned();
        let meminfo = std::fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
        let kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        Ok(Self {
            cpu_model,
            cpus,
            virtualised,
            kernel,
            memory_gib: kib / 1024.0 / 1024.0,
            commit: commit(workspace),
            load_at_start: load_average()?,
            busy_before: busy_share(std::time::Duration::from_secs(2))?,
        })
    }
}

/// The 1- and 5-minute load averages (`/proc/loadavg`).
fn load_average() -> Result<(f64, f64)> {
    let text = std::fs::read_to_string("/proc/loadavg").context("reading /proc/loadavg")?;
    let mut f = text.split_whitespace().map(str::parse::<f64>);
    match (f.next(), f.next()) {
        (Some(Ok(one)), Some(Ok(five))) => Ok((one, five)),
        _ => bail!("/proc/loadavg: unexpected content: {text}"),
    }
}

fn commit(workspace: &Path) -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(workspace)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let Some(sha) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown".to_owned();
    };
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    if dirty { format!("{sha}+dirty") } else { sha }
}

/// The clock ticks a second of /proc/stat and /proc/PID/stat.
pub fn user_hz() -> f64 {
    // SAFETY: sysconf(3) has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

/// The CPU time of every CPU, summed, from the `cpu` line of /proc/stat, in
/// seconds: what the benchmarks need of it.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTimes {
    pub system: f64,
    pub softirq: f64,
    /// Time the hypervisor gave another guest while this one wanted to run.
    pub steal: f64,
    /// Idle and waiting for I/O.
    pub idle: f64,
    /// Every column, idle included.
    pub total: f64,
}

impl CpuTimes {
    pub fn read() -> Result<Self> {
        let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        let line = stat
            .lines()
            .find(|l| l.starts_with("cpu "))
            .context("/proc/stat has no `cpu` line")?;
        let f: Vec<f64> = line
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap_or(0.0))
            .collect();
        if f.len() < 7 {
            bail!("/proc/stat: short `cpu` line: {line}");
        }
        let hz = user_hz();
        // user nice system idle iowait irq softirq [steal ...]
        // (guest and guest_nice, after steal, are already in user and nice.)
        Ok(Self {
            system: f[2] / hz,
            softirq: f[6] / hz,
            steal: f.get(7).copied().unwrap_or(0.0) / hz,
            idle: (f[3] + f[4]) / hz,
            total: f.iter().take(8).sum::<f64>() / hz,
        })
    }

    /// What was spent from `earlier` to `self`.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            system: self.system - earlier.system,
            softirq: self.softirq - earlier.softirq,
            steal: self.steal - earlier.steal,
            idle: self.idle - earlier.idle,
            total: self.total - earlier.total,
        }
    }
}

/// The share of all CPUs' time that was not idle over the next `window`,
/// in which this process sleeps: how busy other work keeps the machine.
pub fn busy_share(window: std::time::Duration) -> Result<f64> {
    let before = CpuTimes::read()?;
    std::thread::sleep(window);
    let spent = CpuTimes::read()?.since(&before);
    Ok(if spent.total > 0.0 {
        1.0 - spent.idle / spent.total
    } else {
        0.0
    })
}

/// The CPU time process `pid` has run, all its threads, in seconds: the sum
/// of `/proc/PID/task/*/schedstat` (nanoseconds), or `/proc/PID/stat`'s
/// utime + stime (clock ticks) where schedstat is missing.
pub fn process_cpu_seconds(pid: u32) -> Result<f64> {
    let tasks = Path::new("/proc").join(pid.to_string()).join("task");
    let mut total_ns = 0u64;
    let mut found = false;
    for entry in
        std::fs::read_dir(&tasks).with_context(|| format!("reading {}", tasks.display()))?
    {
        let Ok(entry) = entry else { continue };
        let Ok(text) = std::fs::read_to_string(entry.path().join("schedstat")) else {
            continue;
        };
        if let Some(ns) = text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
        {
            total_ns += ns;
            found = true;
        }
    }
    if found {
        return Ok(total_ns as f64 / 1e9);
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name is in parentheses and may hold spaces.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("/proc/PID/stat without a command name")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ... utime(11) stime(12).
    let ticks: f64 = f
        .get(11..13)
        .context("/proc/PID/stat too short")?
        .iter()
        .map(|v| v.parse::<f64>().unwrap_or(0.0))
        .sum();
    Ok(ticks / user_hz())
}

/// The peak resident set size of process `pid` (`VmHWM`), in MiB.
pub fn peak_rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmHWM in /proc/PID/status")?;
    Ok(kib / 1024.0)
}

/// The name of the program process `pid` runs (`/proc/PID/comm`).
pub fn process_name(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}
