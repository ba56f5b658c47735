//! Benchmark 3: drop capacity. A flood of TCP SYNs to port 25 from the
//! blocked VM (trafgen, one process on CPU 0, PACKET_MMAP, source ports
//! cycling), held back by egress-guard under each hook, and by nftables
//! rules that hold back the same traffic: a forward-chain rule and a netdev
//! ingress rule on the VM's host-side interface. Meanwhile the exempt VM
//! sends a modest stream of SYNs to port 25 (one per sequence number) that a
//! capture in the internet namespace counts, so its loss is exact.
//!
//! The figure is packets held back per CPU-second of softirq time: the
//! packets counted held back (egress-guard's counters, nftables' counters)
//! over a window, divided by the softirq time of all CPUs over the same
//! window (/proc/stat), which is where the receiving side's work runs (the
//! veth's backlog or NAPI poll, the hooks, the stack). The sender's own
//! work is system time and is reported apart.

use std::{collections::BTreeMap, path::Path, time::Duration};

use anyhow::{Context as _, Result, bail, ensure};
use egress_guard_common::maps::reason;
use egress_guard_netns::{Netns, SynCapture, SynStream, attachments, topology::SINK_V4};

use crate::{
    lab::{BLOCKED, Background, Hook, Lab},
    machine::CpuTimes,
    signals, stats,
};

#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// The measured window.
    pub seconds: f64,
    /// Flooding before the window opens.
    pub warmup: f64,
    pub rounds: usize,
    /// SYNs a second of the exempt VM's stream.
    pub exempt_rate: u32,
}

/// What holds the flood back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Holder {
    Guard(Hook),
    NftForward,
    NftIngress,
}

impl Holder {
    pub const ALL: [Holder; 5] = [
        Holder::Guard(Hook::Xdp),
        Holder::Guard(Hook::XdpGeneric),
        Holder::Guard(Hook::Tc),
        Holder::NftForward,
        Holder::NftIngress,
    ];

    pub fn label(self) -> String {
        match self {
            Holder::Guard(h) => format!("egress-guard {}", h.label()),
            Holder::NftForward => "nftables, forward chain".to_owned(),
            Holder::NftIngress => "nftables, netdev ingress".to_owned(),
        }
    }

    pub fn is_nft(self) -> bool {
        !matches!(self, Holder::Guard(_))
    }
}

/// One measured window.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub seconds: f64,
    /// Frames the sender put on the wire (its eth0's tx counter).
    pub offered: u64,
    /// Counted held back.
    pub held: u64,
    pub softirq_s: f64,
    pub system_s: f64,
    /// The exempt VM's stream over the whole flood.
    pub exempt_sent: u64,
    pub exempt_lost: u64,
    /// Frames the capture itself missed (then the loss is not exact).
    pub capture_drops: u64,
}

impl Window {
    pub fn per_cpu_second(&self) -> f64 {
        self.held as f64 / self.softirq_s
    }
}

#[derive(Debug, Clone, Default)]
pub struct HolderResult {
    pub actual_hook: String,
    pub windows: Vec<Window>,
    /// Held back per CPU-second over the best nftables figure of the round.
    pub vs_best_nft: Vec<f64>,
}

impl HolderResult {
    pub fn per_cpu_second(&self) -> f64 {
        stats::median(
            &self
                .windows
                .iter()
                .map(Window::per_cpu_second)
                .collect::<Vec<_>>(),
        )
    }
    pub fn held_pps(&self) -> f64 {
        stats::median(
            &self
                .windows
                .iter()
                .map(|w| w.held as f64 / w.seconds)
                .collect::<Vec<_>>(),
        )
    }
    pub fn offered_pps(&self) -> f64 {
        stats::median(
            &self
                .windows
                .iter()
                .map(|w| w.offered as f64 / w.seconds)
                .collect::<Vec<_>>(),
        )
    }
    /// Softirq CPU-seconds per second (1.0 = one CPU busy).
    pub fn softirq_cpus(&self) -> f64 {
        stats::median(
            &self
                .windows
                .iter()
                .map(|w| w.softirq_s / w.seconds)
                .collect::<Vec<_>>(),
        )
    }
    pub fn system_cpus(&self) -> f64 {
        stats::median(
            &self
                .windows
                .iter()
                .map(|w| w.system_s / w.seconds)
                .collect::<Vec<_>>(),
        )
    }
    pub fn exempt_sent(&self) -> u64 {
        self.windows.iter().map(|w| w.exempt_sent).sum()
    }
    pub fn exempt_lost(&self) -> u64 {
        self.windows.iter().map(|w| w.exempt_lost).sum()
    }
    pub fn capture_drops(&self) -> u64 {
        self.windows.iter().map(|w| w.capture_drops).sum()
    }
}

#[derive(Debug, Clone)]
pub struct FloodResult {
    pub params: Params,
    pub holders: BTreeMap<Holder, HolderResult>,
    pub commands: Vec<String>,
    /// The trafgen packet configuration.
    pub trafgen_config: String,
}

/// The goal: at least this many times the best nftables figure.
pub const GOAL_VS_NFT: f64 = 2.0;

pub const NFT_FORWARD: &str = r#"table inet egb_fwd {
  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname "vm-blk" meta l4proto tcp tcp dport 25 counter drop
  }
}
"#;

pub const NFT_INGRESS: &str = r#"table netdev egb_ingress {
  chain ingress {
    type filter hook ingress device "vm-blk" priority filter; policy accept;
    meta l4proto tcp tcp dport 25 counter drop
  }
}
"#;

fn link_json(ns: &Netns, dev: &str) -> Result<serde_json::Value> {
    let out = ns.ip(["-s", "-j", "link", "show", "dev", dev])?;
    let doc: serde_json::Value = serde_json::from_str(&out.stdout)
        .with_context(|| format!("`{}` printed {}", out.command, out.stdout))?;
    Ok(doc[0].clone())
}

fn tx_packets(ns: &Netns, dev: &str) -> Result<u64> {
    link_json(ns, dev)?["stats64"]["tx"]["packets"]
        .as_u64()
        .with_context(|| format!("no tx packet counter for {dev}"))
}

/// Every `counter` object's packets in an `nft -j` document, summed.
pub(crate) fn nft_counter_packets(v: &serde_json::Value) -> u64 {
    match v {
        serde_json::Value::Object(m) => m
            .iter()
            .map(|(k, v)| {
                if k == "counter" {
                    v["packets"].as_u64().unwrap_or(0)
                } else {
                    nft_counter_packets(v)
                }
            })
            .sum(),
        serde_json::Value::Array(a) => a.iter().map(nft_counter_packets).sum(),
        _ => 0,
    }
}

/// Packets egress-guard counted held back by policy, every VM, every CPU.
pub(crate) fn guard_held(pin_dir: &Path) -> Result<u64> {
    let maps =
        egress_guard::datapath::Maps::open_pinned(&egress_guard::datapath::PinDir::new(pin_dir))
            .with_context(|| format!("opening the maps pinned in {}", pin_dir.display()))?;
    Ok(maps
        .counters_by_key()?
        .values()
        .map(|c| c.packets[reason::POLICY])
        .sum())
}

/// What holds the flood back while it is in scope.
enum Holding<'a> {
    Guard(Box<egress_guard_netns::Agent<'a>>),
    Nft { table: &'static str },
}

impl Holding<'_> {
    fn held(&self, hv: &Netns) -> Result<u64> {
        match self {
            Holding::Guard(agent) => guard_held(agent.pin_dir()),
            Holding::Nft { table } => {
                let out = hv.run("nft", ["-j", "list", "table", table])?;
                let doc: serde_json::Value = serde_json::from_str(&out.stdout)
                    .with_context(|| format!("`{}` printed {}", out.command, out.stdout))?;
                Ok(nft_counter_packets(&doc))
            }
        }
    }
}

fn hold(lab: &Lab, holder: Holder) -> Result<(Holding<'_>, String)> {
    match holder {
        Holder::Guard(hook) => {
            let (agent, actual) = lab.agent(hook)?;
            Ok((Holding::Guard(Box::new(agent)), actual))
        }
        Holder::NftForward | Holder::NftIngress => {
            let (rules, table) = if holder == Holder::NftForward {
                (NFT_FORWARD, "inet egb_fwd")
            } else {
                (NFT_INGRESS, "netdev egb_ingress")
            };
            let path = lab.dir.write("rules.nft", rules)?;
            lab.topo
                .hv
                .run("nft", [std::ffi::OsStr::new("-f"), path.as_os_str()])?;
            Ok((Holding::Nft { table }, String::new()))
        }
    }
}

fn unhold(lab: &Lab, holding: Holding<'_>) -> Result<()> {
    match holding {
        Holding::Guard(agent) => drop(agent),
        Holding::Nft { table } => {
            let mut words = vec!["delete", "table"];
            words.extend(table.split(' '));
            lab.topo.hv.run("nft", words)?;
        }
    }
    Ok(())
}

/// The trafgen packet: Ethernet to the host side of the VM's veth (so that
/// the hypervisor routes it), IPv4 from the VM to the sink, TCP SYN to 25
/// from a source port that cycles.
fn trafgen_config(lab: &Lab) -> Result<String> {
    let host_mac = link_json(&lab.topo.hv, BLOCKED)?["address"]
        .as_str()
        .context("no MAC address on the VM's host-side interface")?
        .to_owned();
    let vm_mac = link_json(&lab.blocked().ns, "eth0")?["address"]
        .as_str()
        .context("no MAC address on the VM's eth0")?
        .to_owned();
    Ok(format!(
        "{{ eth(da={host_mac}, sa={vm_mac}), ipv4(sa={}, da={SINK_V4}, ttl=64, df), tcp(sp=dinc(1024, 65000), dp=25, syn, win=64240) }}\n",
        lab.blocked().ipv4
    ))
}

fn window(
    lab: &Lab,
    holder: Holder,
    params: Params,
    config: &std::path::Path,
    commands: &mut Vec<String>,
) -> Result<(Window, String)> {
    let (holding, actual) = hold(lab, holder)?;
    let result = (|| -> Result<Window> {
        let mut capture = SynCapture::start(&lab.topo.internet, "eth0", &[25])?;
        let mut stream = SynStream::start(lab.exempt(), SINK_V4, None, 25, params.exempt_rate)?;
        let mut tg = lab.blocked().ns.command("trafgen");
        tg.args(["-o", "eth0", "-i"])
            .arg(config)
            .args(["-P", "1", "--no-sock-mem", "-Q"]);
        let mut flood = Background::start(tg, lab.dir.path(), "trafgen")?;
        if commands.is_empty() {
            commands.push(flood.command.clone());
        }
        signals::sleep(Duration::from_secs_f64(params.warmup))?;
        flood.check_running()?;
        let (cpu0, held0, tx0) = (
            CpuTimes::read()?,
            holding.held(&lab.topo.hv)?,
            tx_packets(&lab.blocked().ns, "eth0")?,
        );
        let t0 = std::time::Instant::now();
        signals::sleep(Duration::from_secs_f64(params.seconds))?;
        let (held1, tx1, cpu1) = (
            holding.held(&lab.topo.hv)?,
            tx_packets(&lab.blocked().ns, "eth0")?,
            CpuTimes::read()?,
        );
        let seconds = t0.elapsed().as_secs_f64();
        flood.check_running()?;
        flood.stop(libc::SIGINT)?;
        let sent = stream.stop()?;
        std::thread::sleep(Duration::from_millis(300));
        let captured = capture.stop()?;
        ensure!(
            sent.errors == 0,
            "the exempt VM's stream failed: {:?}",
            sent.first_error
        );
        let lost = captured
            .missing(&[lab.exempt().ipv4.into()], sent.sent)
            .len() as u64;
        let cpu = cpu1.since(&cpu0);
        Ok(Window {
            seconds,
            offered: tx1.saturating_sub(tx0),
            held: held1.saturating_sub(held0),
            softirq_s: cpu.softirq,
            system_s: cpu.system,
            exempt_sent: sent.sent,
            exempt_lost: lost,
            capture_drops: captured.kernel_drops,
        })
    })();
    unhold(lab, holding)?;
    Ok((result?, actual))
}

pub fn run(lab: &Lab, params: Params) -> Result<FloodResult> {
    let trafgen = trafgen_config(lab)?;
    let config = lab.dir.write("syn-flood.trafgen", &trafgen)?;
    let mut holders: BTreeMap<Holder, HolderResult> = BTreeMap::new();
    let mut commands = Vec::new();
    for round in 0..params.rounds {
        let mut order = Holder::ALL;
        order.rotate_left(round % Holder::ALL.len());
        let mut this = BTreeMap::new();
        for holder in order {
            signals::check()?;
            let on = attachments(&lab.topo.hv, BLOCKED)?;
            ensure!(
                on.is_empty(),
                "left on the interface before {holder:?}: {on}"
            );
            let (w, actual) = window(lab, holder, params, &config, &mut commands)
                .with_context(|| format!("flood held back by {}", holder.label()))?;
            if w.held == 0 || w.softirq_s <= 0.0 {
                bail!(
                    "{}: {} held back with {:.3} s of softirq time: the flood was not held back where it is counted",
                    holder.label(),
                    w.held,
                    w.softirq_s
                );
            }
            println!(
                "  flood round {}: {:<34} offered {:5.2} Mpps, held {:5.2} Mpps, softirq {:4.2} CPUs, {:5.2} M held/CPU-s; exempt lost {}/{}",
                round + 1,
                holder.label(),
                w.offered as f64 / w.seconds / 1e6,
                w.held as f64 / w.seconds / 1e6,
                w.softirq_s / w.seconds,
                w.per_cpu_second() / 1e6,
                w.exempt_lost,
                w.exempt_sent
            );
            this.insert(holder, w.per_cpu_second());
            let entry = holders.entry(holder).or_default();
            entry.actual_hook = actual;
            entry.windows.push(w);
        }
        let best_nft = this
            .iter()
            .filter(|(h, _)| h.is_nft())
            .map(|(_, v)| *v)
            .fold(f64::NAN, f64::max);
        for (holder, v) in &this {
            holders
                .entry(*holder)
                .or_default()
                .vs_best_nft
                .push(v / best_nft);
        }
    }
    Ok(FloodResult {
        params,
        holders,
        commands,
        trafgen_config: trafgen,
    })
}
