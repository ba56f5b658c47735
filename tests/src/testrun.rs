//! Running the loaded kernel programs on crafted frames with
//! BPF_PROG_TEST_RUN, for the TestRun tests (`tests/tests/it/testrun/`,
//! `tests/tests/it/events.rs`) and the benchmarks.
//!
//! A test run resolves the context's ingress ifindex in the caller's network
//! namespace: [`ThreadNetns`] gives a test thread one with interfaces of its
//! own. Without a context, a packet comes in on ifindex 1 (the loopback).

use std::{
    collections::BTreeSet,
    fs::File,
    os::fd::AsRawFd as _,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use aya::{TestRun as _, TestRunOptions};
use egress_guard::datapath::{Capacities, Datapath, KernelState};
use egress_guard_common::maps::{Config, IfaceEntry};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const TC_ACT_SHOT: u32 = 2;
pub const TC_ACT_REDIRECT: u32 = 7;
/// TC_ACT_UNSPEC (-1): under tcx, "next program" (we pass, others decide).
pub const TC_NEXT: u32 = u32::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Xdp,
    Tc,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Drop,
    /// Answered: the frame, rewritten into a reply, goes back to the VM.
    Reply,
}

/// What a run returned, and the frame as the program left it.
pub struct Outcome {
    pub verdict: Verdict,
    pub frame: Vec<u8>,
}

/// Loads the programs (unpinned) and writes `config`, the held `ports`, the
/// allowed destinations and one entry per `(ifindex, vm_key, verdict)`.
pub fn load(
    config: Config,
    ports: &[u16],
    allowed: &[&str],
    ifaces: &[(u32, u64, u32)],
) -> Datapath {
    let mut datapath =
        Datapath::load_unpinned(Capacities::default()).expect("loading the programs");
    let mut desired = KernelState {
        config,
        ports: ports.iter().copied().collect::<BTreeSet<_>>(),
        ..KernelState::default()
    };
    let allowed: Vec<_> = allowed
        .iter()
        .map(|p| p.parse().expect("a prefix"))
        .collect();
    desired.set_allowed(&allowed);
    for &(ifindex, vm_key, verdict) in ifaces {
        desired.ifaces.insert(
            ifindex,
            IfaceEntry {
                vm_key,
                verdict,
                flags: 0,
            },
        );
    }
    let actual = datapath.maps.read_state().expect("reading the maps");
    datapath
        .maps
        .apply(&actual, &desired)
        .expect("writing the maps");
    datapath
}

/// Runs `frame` through `hook` as if received on `ifindex` (`None`: no
/// context, ifindex 1).
pub fn run(datapath: &mut Datapath, hook: Hook, ifindex: Option<u32>, frame: &[u8]) -> Outcome {
    let mut out = vec![0u8; 4096];
    let (ret, size) = match hook {
        Hook::Xdp => {
            // struct xdp_md: data, data_end, data_meta, ingress_ifindex, ...
            let mut xdp_md = [0u8; 24];
            xdp_md[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
            if let Some(ifindex) = ifindex {
                xdp_md[12..16].copy_from_slice(&ifindex.to_ne_bytes());
            }
            let r = datapath
                .xdp()
                .unwrap()
                .test_run(TestRunOptions {
                    data_in: Some(frame),
                    data_out: Some(&mut out),
                    ctx_in: ifindex.is_some().then_some(&xdp_md[..]),
                    ..TestRunOptions::default()
                })
                .expect("XDP test run");
            (r.return_value, r.data_size_out)
        }
        Hook::Tc => {
            // struct __sk_buff (192 bytes), ifindex at offset 40.
            let mut skb = [0u8; 192];
            if let Some(ifindex) = ifindex {
                skb[40..44].copy_from_slice(&ifindex.to_ne_bytes());
            }
            let r = datapath
                .tc()
                .unwrap()
                .test_run(TestRunOptions {
                    data_in: Some(frame),
                    data_out: Some(&mut out),
                    ctx_in: ifindex.is_some().then_some(&skb[..]),
                    ..TestRunOptions::default()
                })
                .expect("TC test run");
            (r.return_value, r.data_size_out)
        }
    };
    let verdict = match (hook, ret) {
        (Hook::Xdp, XDP_PASS) | (Hook::Tc, TC_NEXT) => Verdict::Pass,
        (Hook::Xdp, XDP_DROP) | (Hook::Tc, TC_ACT_SHOT) => Verdict::Drop,
        (Hook::Xdp, XDP_TX) | (Hook::Tc, TC_ACT_REDIRECT) => Verdict::Reply,
        (hook, other) => panic!("{hook:?} returned {other}"),
    };
    out.truncate(size as usize);
    Outcome {
        verdict,
        frame: out,
    }
}

/// A network namespace the test thread can step into for a test run.
pub struct ThreadNetns {
    name: String,
}

/// The test thread inside a [`ThreadNetns`], until dropped.
pub struct Inside {
    previous: File,
}

impl Drop for Inside {
    fn drop(&mut self) {
        // SAFETY: plain setns(2) on an fd we own.
        let rc = unsafe { libc::setns(self.previous.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "returning to the original network namespace");
    }
}

impl ThreadNetns {
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "egt-{}-{}-{tag}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let ns = Self { name };
        Self::host(&["ip", "netns", "add", &ns.name]);
        ns
    }

    fn host(args: &[&str]) -> String {
        let out = Command::new(args[0])
            .args(&args[1..])
            .output()
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a command inside the namespace.
    pub fn run(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        Self::host(&full)
    }

    /// Adds a veth pair inside the namespace and returns the ifindex of `a`.
    pub fn veth(&self, a: &str, b: &str) -> u32 {
        self.run(&["ip", "link", "add", a, "type", "veth", "peer", b]);
        self.ifindex(a)
    }

    /// Adds a veth pair whose end `a` has ifindex `index`.
    pub fn veth_at(&self, a: &str, b: &str, index: u32) -> u32 {
        let index = index.to_string();
        self.run(&[
            "ip", "link", "add", a, "index", &index, "type", "veth", "peer", b,
        ]);
        self.ifindex(a)
    }

    pub fn ifindex(&self, ifname: &str) -> u32 {
        let out = self.run(&["cat", &format!("/sys/class/net/{ifname}/ifindex")]);
        out.trim().parse().expect("ifindex")
    }

    /// Moves the current thread into the namespace until the guard drops.
    pub fn enter(&self) -> Inside {
        let previous = File::open("/proc/thread-self/ns/net").expect("current netns");
        let target = File::open(format!("/var/run/netns/{}", self.name)).expect("test netns");
        // SAFETY: plain setns(2) on an fd we own.
        let rc = unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "entering {}", self.name);
        Inside { previous }
    }
}

impl Drop for ThreadNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
