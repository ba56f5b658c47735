//! Benchmark 1: what egress-guard's programs cost per packet, class by
//! class, with BPF_PROG_TEST_RUN, against an empty XDP program and an empty
//! TC program run the same way in the same run.
//!
//! The programs are loaded as the TestRun tables load them
//! (`Datapath::load_unpinned`), with an exempt and a blocked interface in
//! the maps, in a namespace of our own where those interfaces exist (the
//! kernel resolves the context's ingress ifindex). Each class's frame runs
//! through our XDP program, the empty XDP program, our TC program and the
//! empty TC program, `repeat` times each, and the rounds interleave them
//! (empty, ours, ours, empty, ...) so that whatever else the machine does
//! falls on both alike; the figure is the median over rounds, and "added" is
//! the median of each round's difference.

use std::{
    collections::BTreeSet,
    os::fd::{AsFd as _, BorrowedFd},
};

use anyhow::{Context as _, Result, bail, ensure};
use egress_guard::datapath::{Capacities, Datapath, KernelState};
use egress_guard_common::{
    craft::{
        Frame,
        addr::{INTERNET4, INTERNET6, RELAY4, VM4, VM6},
    },
    maps::{ACTION_DROP, Config, IfaceEntry, MODE_ENFORCE, VERDICT_ALLOW, VERDICT_BLOCK},
};
use egress_guard_netns::{Netns, bpf::in_netns, names};

use crate::{
    rawbpf::{self, Run},
    signals, stats,
};

#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Runs of the program per BPF_PROG_TEST_RUN call.
    pub repeat: u32,
    /// Calls per (class, program), interleaved.
    pub rounds: usize,
}

/// Which of the two test interfaces a frame arrives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Exempt,
    Blocked,
}

/// One packet class.
struct Class {
    name: &'static str,
    frame_desc: &'static str,
    from: Origin,
    frame: Vec<u8>,
}

/// What one program costs on one class.
#[derive(Debug, Clone)]
pub struct Cost {
    /// Median ns/packet of our program (thread CPU time over the call).
    pub ns: f64,
    /// Median ns/packet of the empty program of the same type.
    pub empty_ns: f64,
    /// Median over rounds of (ours - empty).
    pub added_ns: f64,
    /// The best round of ours less the best round of the empty program:
    /// nearer what a quiet machine would show.
    pub best_added_ns: f64,
    /// The same two medians as the kernel reports them (whole ns).
    pub kernel_ns: f64,
    pub kernel_empty_ns: f64,
    /// What our program returned.
    pub retval: u32,
}

#[derive(Debug, Clone)]
pub struct ClassResult {
    pub name: &'static str,
    pub frame: &'static str,
    pub from: Origin,
    pub frame_len: usize,
    /// Whether our programs held the frame back.
    pub held: bool,
    pub xdp: Cost,
    pub tc: Cost,
}

#[derive(Debug, Clone)]
pub struct DatapathResult {
    pub params: Params,
    pub classes: Vec<ClassResult>,
    /// The empty programs over every class and round.
    pub empty_xdp_ns: f64,
    pub empty_tc_ns: f64,
    /// How long loading the two programs took (the verifier, mostly).
    pub load_s: f64,
}

/// The held-back goal and the passing goal, in ns added.
pub const GOAL_PASS_NS: f64 = 10.0;
pub const GOAL_HELD_NS: f64 = 25.0;

impl ClassResult {
    pub fn goal_ns(&self) -> f64 {
        if self.held {
            GOAL_HELD_NS
        } else {
            GOAL_PASS_NS
        }
    }
}

fn classes() -> Vec<Class> {
    let class = |name, frame_desc, from, frame| Class {
        name,
        frame_desc,
        from,
        frame,
    };
    vec![
        class(
            "exempt VM",
            "IPv4 TCP SYN to port 25, from the exempt VM",
            Origin::Exempt,
            Frame::tcp4(VM4, INTERNET4, 40000, 25).build(),
        ),
        class("non-IP", "ARP request", Origin::Blocked, Frame::arp()),
        class(
            "UDP",
            "IPv4 UDP to port 53",
            Origin::Blocked,
            Frame::udp4(VM4, INTERNET4, 40000, 53).build(),
        ),
        class(
            "TCP, another port",
            "IPv4 TCP SYN to port 443",
            Origin::Blocked,
            Frame::tcp4(VM4, INTERNET4, 40000, 443).build(),
        ),
        class(
            "TCP to 25, held back",
            "IPv4 TCP SYN to port 25",
            Origin::Blocked,
            Frame::tcp4(VM4, INTERNET4, 40000, 25).build(),
        ),
        class(
            "TCP to 25, allowed destination",
            "IPv4 TCP SYN to port 25 at a relay in allow_destinations",
            Origin::Blocked,
            Frame::tcp4(VM4, RELAY4, 40000, 25).build(),
        ),
        class(
            "IPv6, 3 extension headers, to 25",
            "IPv6 hop-by-hop + routing + destination options, TCP SYN to port 25",
            Origin::Blocked,
            Frame::tcp6(VM6, INTERNET6, 40000, 25)
                .ipv6_ext(0, 8)
                .ipv6_ext(43, 24)
                .ipv6_ext(60, 16)
                .build(),
        ),
        class(
            "IPv6, 3 extension headers, to 443",
            "the same headers, TCP SYN to port 443",
            Origin::Blocked,
            Frame::tcp6(VM6, INTERNET6, 40000, 443)
                .ipv6_ext(0, 8)
                .ipv6_ext(43, 24)
                .ipv6_ext(60, 16)
                .build(),
        ),
        class(
            "first fragment",
            "IPv4 first fragment (MF) of a TCP SYN to port 25",
            Origin::Blocked,
            Frame::tcp4(VM4, INTERNET4, 40000, 25)
                .fragment(9, 0, true)
                .build(),
        ),
        class(
            "later fragment",
            "IPv4 TCP fragment at offset 32",
            Origin::Blocked,
            Frame::tcp4(VM4, INTERNET4, 40000, 25)
                .fragment(9, 4, false)
                .payload(&[0; 24])
                .build(),
        ),
        class(
            "VLAN-tagged, to 25",
            "802.1Q tag, IPv4 TCP SYN to port 25",
            Origin::Blocked,
            Frame::tcp4(VM4, INTERNET4, 40000, 25).dot1q(10).build(),
        ),
        class(
            "VLAN-tagged, to 443",
            "802.1Q tag, IPv4 TCP SYN to port 443",
            Origin::Blocked,
            Frame::tcp4(VM4, INTERNET4, 40000, 443).dot1q(10).build(),
        ),
    ]
}

/// The ifindex of `dev` in `ns`.
pub fn ifindex(ns: &Netns, dev: &str) -> Result<u32> {
    let out = ns.ip(["-j", "link", "show", "dev", dev])?;
    let doc: serde_json::Value = serde_json::from_str(&out.stdout)
        .with_context(|| format!("`{}` printed {}", out.command, out.stdout))?;
    doc[0]["ifindex"]
        .as_u64()
        .and_then(|i| u32::try_from(i).ok())
        .with_context(|| format!("no ifindex for {dev}: {}", out.stdout))
}

/// `struct xdp_md` with the ingress ifindex (data_end is the frame length).
fn xdp_ctx(len: usize, ifindex: u32) -> [u8; 24] {
    let mut md = [0u8; 24];
    md[4..8].copy_from_slice(&u32::try_from(len).unwrap_or(0).to_ne_bytes());
    md[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    md
}

/// `struct __sk_buff` with the ifindex (offset 40).
fn skb_ctx(ifindex: u32) -> [u8; 192] {
    let mut skb = [0u8; 192];
    skb[40..44].copy_from_slice(&ifindex.to_ne_bytes());
    skb
}

pub fn run(params: Params) -> Result<DatapathResult> {
    let ns = Netns::create(&format!("{}-testrun", names::unique_tag()))?;
    for (a, b) in [("exempt0", "exempt1"), ("blocked0", "blocked1")] {
        ns.ip(["link", "add", a, "type", "veth", "peer", "name", b])?;
    }
    let exempt = ifindex(&ns, "exempt0")?;
    let blocked = ifindex(&ns, "blocked0")?;
    // TEST_RUN resolves the context's ifindex in the caller's namespace:
    // everything runs on a thread that entered ours.
    let outcome = in_netns(&ns.path(), move || Ok(measure(params, exempt, blocked)))?;
    drop(ns);
    outcome
}

/// Sets up the maps as the TestRun tables do: ports {25}, the relay
/// allowed, one exempt and one blocked interface.
fn load(exempt: u32, blocked: u32) -> Result<(Datapath, f64)> {
    let t = std::time::Instant::now();
    let mut datapath = Datapath::load_unpinned(Capacities::default())
        .context("loading egress-guard's programs")?;
    let load_s = t.elapsed().as_secs_f64();
    let mut desired = KernelState {
        config: Config {
            mode: MODE_ENFORCE,
            action: ACTION_DROP,
            generation: 1,
            ..Config::default()
        },
        ports: BTreeSet::from([25]),
        ..KernelState::default()
    };
    desired.set_allowed(&[
        "198.51.100.25/32".parse().expect("a valid prefix"),
        "2001:db8:100::25/128".parse().expect("a valid prefix"),
    ]);
    for (ifindex, vm_key, verdict) in [(exempt, 0xE, VERDICT_ALLOW), (blocked, 0xB, VERDICT_BLOCK)]
    {
        desired.ifaces.insert(
            ifindex,
            IfaceEntry {
                vm_key,
                verdict,
                flags: 0,
            },
        );
    }
    let actual = datapath.maps.read_state().context("reading the maps")?;
    datapath
        .maps
        .apply(&actual, &desired)
        .context("writing the maps")?;
    Ok((datapath, load_s))
}

/// Our run and the empty program's of one class under one hook.
struct RunPair {
    ours: Run,
    empty: Run,
}

impl RunPair {
    fn keep_in(self, samples: Option<&mut Samples>) {
        if let Some(s) = samples {
            s.ours.push(self.ours);
            s.empty.push(self.empty);
        }
    }
}

/// Runs `class` on our program and the empty one (`[ours, empty]`) one
/// after the other, ours first or second as the round says.
fn interleaved(
    [ours, empty]: [BorrowedFd<'_>; 2],
    hook: &str,
    class: &Class,
    ctx: &[u8],
    repeat: u32,
    ours_first: bool,
) -> Result<RunPair> {
    let run = |fd: BorrowedFd<'_>, what: &str| -> Result<Run> {
        rawbpf::test_run(fd, &class.frame, ctx, repeat)
            .with_context(|| format!("BPF_PROG_TEST_RUN of {what} on {}", class.name))
    };
    let ours_what = format!("egress-guard's {hook} program");
    let empty_what = format!("the empty {hook} program");
    Ok(if ours_first {
        let ours = run(ours, &ours_what)?;
        RunPair {
            ours,
            empty: run(empty, &empty_what)?,
        }
    } else {
        let empty = run(empty, &empty_what)?;
        RunPair {
            ours: run(ours, &ours_what)?,
            empty,
        }
    })
}

/// The samples of one (class, program type).
#[derive(Default)]
struct Samples {
    ours: Vec<Run>,
    empty: Vec<Run>,
}

impl Samples {
    fn cost(&self) -> Cost {
        let cpu = |v: &[Run]| stats::median(&v.iter().map(|r| r.cpu_ns).collect::<Vec<_>>());
        let kernel = |v: &[Run]| stats::median(&v.iter().map(|r| r.kernel_ns).collect::<Vec<_>>());
        let diffs: Vec<f64> = self
            .ours
            .iter()
            .zip(&self.empty)
            .map(|(o, e)| o.cpu_ns - e.cpu_ns)
            .collect();
        let best = |v: &[Run]| v.iter().map(|r| r.cpu_ns).fold(f64::INFINITY, f64::min);
        Cost {
            ns: cpu(&self.ours),
            empty_ns: cpu(&self.empty),
            added_ns: stats::median(&diffs),
            best_added_ns: best(&self.ours) - best(&self.empty),
            kernel_ns: kernel(&self.ours),
            kernel_empty_ns: kernel(&self.empty),
            retval: self.ours.first().map_or(0, |r| r.retval),
        }
    }
}

fn passes_xdp(retval: u32) -> bool {
    retval == rawbpf::XDP_PASS
}

fn passes_tc(retval: u32) -> bool {
    retval == rawbpf::TC_ACT_OK || retval == rawbpf::TC_ACT_UNSPEC
}

#[expect(clippy::too_many_lines, reason = "one measurement loop")]
fn measure(params: Params, exempt: u32, blocked: u32) -> Result<DatapathResult> {
    let (mut datapath, load_s) = load(exempt, blocked)?;
    let empty_xdp = rawbpf::empty_xdp().context("loading the empty XDP program")?;
    let empty_tc = rawbpf::empty_tc().context("loading the empty TC program")?;
    let classes = classes();
    let mut xdp: Vec<Samples> = classes.iter().map(|_| Samples::default()).collect();
    let mut tc: Vec<Samples> = classes.iter().map(|_| Samples::default()).collect();
    let ctxs: Vec<([u8; 24], [u8; 192])> = classes
        .iter()
        .map(|c| {
            let ifindex = match c.from {
                Origin::Exempt => exempt,
                Origin::Blocked => blocked,
            };
            (xdp_ctx(c.frame.len(), ifindex), skb_ctx(ifindex))
        })
        .collect();

    // Round 0 warms up (JIT'd code, caches, the map entries) and is not kept.
    for round in 0..=params.rounds {
        signals::check()?;
        let repeat = if round == 0 {
            params.repeat.min(100_000)
        } else {
            params.repeat
        };
        for (i, class) in classes.iter().enumerate() {
            let (xmd, skb) = &ctxs[i];
            let ours_first = (round + i) % 2 == 1;
            // The first round warms up and is not kept.
            let keep = round > 0;
            let xdp_prog = datapath.xdp()?.fd()?.as_fd();
            interleaved(
                [xdp_prog, empty_xdp.as_fd()],
                "XDP",
                class,
                xmd,
                repeat,
                ours_first,
            )?
            .keep_in(keep.then_some(&mut xdp[i]));
            let tc_prog = datapath.tc()?.fd()?.as_fd();
            interleaved(
                [tc_prog, empty_tc.as_fd()],
                "TC",
                class,
                skb,
                repeat,
                ours_first,
            )?
            .keep_in(keep.then_some(&mut tc[i]));
        }
    }

    let mut out = Vec::new();
    for (i, class) in classes.iter().enumerate() {
        let x = xdp[i].cost();
        let t = tc[i].cost();
        for r in &xdp[i].empty {
            ensure!(
                r.retval == rawbpf::XDP_PASS,
                "the empty XDP program returned {}",
                r.retval
            );
        }
        let held = !passes_xdp(x.retval);
        ensure!(
            held != passes_tc(t.retval),
            "{}: the XDP program returned {} and the TC program {}: they disagree",
            class.name,
            x.retval,
            t.retval
        );
        if xdp[i].ours.iter().any(|r| r.retval != x.retval)
            || tc[i].ours.iter().any(|r| r.retval != t.retval)
        {
            bail!(
                "{}: the programs' verdict changed between rounds",
                class.name
            );
        }
        out.push(ClassResult {
            name: class.name,
            frame: class.frame_desc,
            from: class.from,
            frame_len: class.frame.len(),
            held,
            xdp: x,
            tc: t,
        });
    }
    // The set-up must be what we think it is: the exempt VM passes, the
    // blocked VM's SYN to 25 is held back, ARP passes.
    let verdict = |name: &str| out.iter().find(|c| c.name == name).map(|c| c.held);
    ensure!(
        verdict("exempt VM") == Some(false),
        "the exempt VM's SYN to 25 was held back"
    );
    ensure!(
        verdict("TCP to 25, held back") == Some(true),
        "the blocked VM's SYN to 25 passed: the maps are not what the benchmark set"
    );
    ensure!(verdict("non-IP") == Some(false), "ARP was held back");
    println!("  loading both programs took {:.0} ms", load_s * 1000.0);
    for c in &out {
        println!(
            "  {:<34} {:<5} XDP {:6.2} ns (empty {:5.2}, added {:6.2}; kernel {:3.0}/{:3.0})  TC {:6.2} ns (empty {:5.2}, added {:6.2}; kernel {:3.0}/{:3.0})",
            c.name,
            if c.held { "held" } else { "pass" },
            c.xdp.ns,
            c.xdp.empty_ns,
            c.xdp.added_ns,
            c.xdp.kernel_ns,
            c.xdp.kernel_empty_ns,
            c.tc.ns,
            c.tc.empty_ns,
            c.tc.added_ns,
            c.tc.kernel_ns,
            c.tc.kernel_empty_ns,
        );
    }
    let all = |v: &[Samples]| {
        stats::median(
            &v.iter()
                .flat_map(|s| s.empty.iter().map(|r| r.cpu_ns))
                .collect::<Vec<_>>(),
        )
    };
    Ok(DatapathResult {
        params,
        classes: out,
        empty_xdp_ns: all(&xdp),
        empty_tc_ns: all(&tc),
        load_s,
    })
}
