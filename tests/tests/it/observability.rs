//! Observability (issue 5), in network namespaces: per-VM counters by
//! reason, blocked-attempt events in the agent's log, `/metrics` parsed with
//! a real Prometheus text parser and checked exactly, `/healthz` and
//! `/readyz`, and `status` in both formats before and after a restart.
//!
//! The VMs send hand-made frames from their side of the veth with an
//! AF_PACKET socket (`egress_guard_netns::send_frames`): each is sent once,
//! never retransmitted, so counts are exact, and malformed frames and
//! fragments are possible. Every test builds its own topology and agent
//! (`$EGRESS_GUARD_BIN`, which `cargo xtask test` sets), removed when it
//! ends, also on failure. The tests run one at a time. Needs root.

#![allow(
    clippy::too_many_lines,
    reason = "each test is one story, told in order"
)]

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use chrono::{DateTime, Utc};
use egress_guard_common::{
    craft::Frame,
    maps::{EVENT_BURST, EVENT_INTERVAL_NS},
    parse::TCP_ACK,
};
use egress_guard_tests::netns::{
    Agent, TempDir, Topology, Vm, agent_bin, http, mac_address, require_root, send_frames,
    topology::{SINK_V4, SINK_V6},
    vm_entry,
};
use serde_json::Value;

use crate::fixtures::serial;

// ---------------------------------------------------------------------------
// Set-up
// ---------------------------------------------------------------------------

/// Where the agent serves metrics: the default address, on the loopback of
/// the test's own hypervisor namespace.
const METRICS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9725);

/// The repeat window the agents of these tests run with (seconds).
const REPEAT_WINDOW: u64 = 2;

/// How long anything the kernel or the agent does may take to show.
const SETTLE: Duration = Duration::from_secs(15);

const BLOCKED: &str = "vm-blocked";
const EXEMPT: &str = "vm-exempt";
const BLOCKED_SUB: &str = "dev-msdn";

/// A policy holding back port 25, with vm-blocked (msdn: blocked) and
/// vm-exempt (pay-as-you-go with an exemption, started since: allowed),
/// each named after its interface, less those in `without`.
fn policy(hook: &str, mode: &str, action: &str, without: &[&str]) -> String {
    let mut vms = String::new();
    for (name, sub, extra) in [
        (BLOCKED, BLOCKED_SUB, ""),
        (EXEMPT, "prod-payg", "    started: 2021-01-11T08:00:00Z\n"),
    ] {
        if !without.contains(&name) {
            let _ = write!(
                vms,
                "  - name: {name}\n    subscription: {sub}\n    interface: {name}\n{extra}"
            );
        }
    }
    format!(
        r"version: 1
enforcement:
  ports: [25]
  action: {action}
  mode: {mode}
  hook: {hook}
subscriptions:
  - id: {BLOCKED_SUB}
    offer: msdn
    created: 2019-04-02
  - id: prod-payg
    offer: pay-as-you-go
    created: 2020-05-01
    exemption:
      granted: 2021-01-10T12:00:00Z
vms:
{vms}"
    )
}

fn enforce(hook: &str) -> String {
    policy(hook, "enforce", "drop", &[])
}

/// A topology with the two VMs, a directory for the policy, the agent
/// binary. Dropped in reverse order of declaration in the tests (agent
/// first).
struct Setup {
    dir: TempDir,
    topo: Topology,
    bin: PathBuf,
}

impl Setup {
    fn new() -> Result<Self> {
        Ok(Self {
            dir: TempDir::new("policy")?,
            topo: Topology::builder()
                .routed_vm(BLOCKED)
                .routed_vm(EXEMPT)
                .build()?,
            bin: agent_bin()?,
        })
    }

    fn policy_path(&self) -> PathBuf {
        self.dir.path().join("policy.yaml")
    }

    fn write_policy(&self, text: &str) -> Result<PathBuf> {
        let path = self.policy_path();
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// The agent, logging JSON, with a short repeat window.
    fn start_agent(&self, text: &str) -> Result<Agent<'_>> {
        let path = self.write_policy(text)?;
        let window = REPEAT_WINDOW.to_string();
        let mut agent = Agent::spawn(
            &self.topo.hv,
            &self.bin,
            &path,
            &["--log-format", "json", "--repeat-window", &window],
        )?;
        agent.wait_ready(egress_guard_tests::netns::agent::READY_TIMEOUT)?;
        Ok(agent)
    }

    fn vm(&self, name: &str) -> &Vm {
        self.topo.vm(name)
    }

    /// What frames from `vm` need: its MAC and its host side's.
    fn sender(&self, name: &str) -> Result<Sender<'_>> {
        let vm = self.vm(name);
        Ok(Sender {
            vm,
            mac: mac_address(&vm.ns, "eth0")?,
            host_mac: mac_address(&self.topo.hv, &vm.host_if)?,
        })
    }

    fn scrape(&self) -> Result<Metrics> {
        Metrics::scrape(&self.topo.hv)
    }
}

/// Sends frames from a VM's eth0.
struct Sender<'a> {
    vm: &'a Vm,
    mac: [u8; 6],
    host_mac: [u8; 6],
}

impl Sender<'_> {
    /// A TCP SYN from the VM to `dst:25` over IPv4, from `sport`.
    fn syn4(&self, dst: Ipv4Addr, sport: u16) -> Vec<u8> {
        Frame::tcp4(self.vm.ipv4.octets(), dst.octets(), sport, 25)
            .macs(self.mac, self.host_mac)
            .seq(u32::from(sport))
            .build()
    }

    /// A TCP SYN to the sink's IPv6 address, port 25.
    fn syn6(&self, sport: u16) -> Vec<u8> {
        Frame::tcp6(self.vm.ipv6.octets(), SINK_V6.octets(), sport, 25)
            .macs(self.mac, self.host_mac)
            .build()
    }

    /// A segment to the sink's port 25 that is not a SYN.
    fn ack4(&self, sport: u16) -> Vec<u8> {
        Frame::tcp4(self.vm.ipv4.octets(), SINK_V4.octets(), sport, 25)
            .macs(self.mac, self.host_mac)
            .flags(TCP_ACK)
            .payload(b"EHLO x\r\n")
            .build()
    }

    /// Frames that could be TCP to port 25 but cannot be parsed far enough
    /// to tell: an IPv4 header length of 12 bytes, and a TCP header cut
    /// after its source port.
    fn malformed(&self) -> Vec<Vec<u8>> {
        let syn = self.syn4(SINK_V4, 40100);
        let mut bad_ihl = syn.clone();
        bad_ihl[14] = 0x43;
        let mut short_tcp = syn;
        short_tcp.truncate(34 + 2);
        short_tcp[16..18].copy_from_slice(&22u16.to_be_bytes());
        vec![bad_ihl, short_tcp]
    }

    /// A later fragment of a TCP datagram whose first fragment was never
    /// sent.
    fn orphan_fragment(&self, id: u32) -> Vec<u8> {
        Frame::tcp4(self.vm.ipv4.octets(), SINK_V4.octets(), 40200, 25)
            .macs(self.mac, self.host_mac)
            .fragment(id, 4, false)
            .payload(&[0; 24])
            .build()
    }

    fn send(&self, frames: &[Vec<u8>]) -> Result<()> {
        let sent = send_frames(&self.vm.ns, "eth0", frames)?;
        ensure!(
            sent == frames.len(),
            "sent {sent} of {} frames",
            frames.len()
        );
        Ok(())
    }
}

fn bytes(frames: &[Vec<u8>]) -> u64 {
    frames.iter().map(|f| f.len() as u64).sum()
}

/// A sample's value as the integer it must be (every series here counts
/// something).
#[allow(
    clippy::cast_sign_loss,
    clippy::cast_possible_truncation,
    reason = "checked to be a whole number from 0 to 2^53"
)]
fn whole(v: f64) -> Option<u64> {
    (v.fract().abs() < f64::EPSILON && (0.0..9.0e15).contains(&v)).then_some(v as u64)
}

/// `/metrics`, parsed with `prometheus-parse`.
struct Metrics {
    text: String,
    scrape: prometheus_parse::Scrape,
}

impl Metrics {
    fn scrape(hv: &egress_guard_tests::netns::Netns) -> Result<Self> {
        let r = http::get(hv, METRICS, "/metrics")?;
        ensure!(
            r.status == 200,
            "/metrics answered {}:\n{}",
            r.status,
            r.body
        );
        ensure!(
            r.content_type
                .as_deref()
                .is_some_and(|t| t.starts_with("application/openmetrics-text")),
            "/metrics content type {:?}",
            r.content_type
        );
        let scrape = prometheus_parse::Scrape::parse(r.body.lines().map(|l| Ok(l.to_owned())))
            .context("parsing /metrics")?;
        Ok(Self {
            text: r.body,
            scrape,
        })
    }

    /// The samples of `name` whose labels include `labels`.
    fn matching(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&prometheus_parse::Sample> {
        self.scrape
            .samples
            .iter()
            .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .collect()
    }

    /// The value of the one sample of `name` with exactly these labels
    /// (those given, none other), if there is one.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Result<Option<u64>> {
        let found: Vec<_> = self
            .matching(name, labels)
            .into_iter()
            .filter(|s| s.labels.len() == labels.len())
            .collect();
        ensure!(
            found.len() <= 1,
            "{} samples of {name}{labels:?}:\n{}",
            found.len(),
            self.text
        );
        let Some(sample) = found.first() else {
            return Ok(None);
        };
        let v = match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => whole(v),
            _ => None,
        };
        v.map(Some)
            .with_context(|| format!("{name}{labels:?} is not a count: {:?}", sample.value))
    }

    /// Like [`Metrics::value`], but the sample must be there.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Result<u64> {
        self.value(name, labels)?
            .with_context(|| format!("no sample {name}{labels:?} in /metrics:\n{}", self.text))
    }

    /// `egress_guard_held_back_packets_total` of vm-blocked for `reason`.
    fn held(&self, reason: &str) -> Result<u64> {
        self.get(
            "egress_guard_held_back_packets_total",
            &[
                ("vm", BLOCKED),
                ("subscription", BLOCKED_SUB),
                ("reason", reason),
            ],
        )
    }

    fn held_bytes(&self, reason: &str) -> Result<u64> {
        self.get(
            "egress_guard_held_back_bytes_total",
            &[
                ("vm", BLOCKED),
                ("subscription", BLOCKED_SUB),
                ("reason", reason),
            ],
        )
    }

    fn attempts(&self) -> Result<u64> {
        self.get(
            "egress_guard_blocked_attempts_total",
            &[("vm", BLOCKED), ("subscription", BLOCKED_SUB)],
        )
    }

    fn lost(&self, cause: &str) -> Result<u64> {
        self.get(
            "egress_guard_events_lost_total",
            &[
                ("vm", BLOCKED),
                ("subscription", BLOCKED_SUB),
                ("cause", cause),
            ],
        )
    }

    /// Whether any sample names `vm`.
    fn mentions_vm(&self, vm: &str) -> bool {
        self.scrape
            .samples
            .iter()
            .any(|s| s.labels.get("vm") == Some(vm))
    }
}

/// Polls `f` until it returns `Some`, for at most `timeout`.
fn until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("after {timeout:?}: still not {what}");
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Scrapes until `done` holds for the scrape; returns it.
fn scrape_until(s: &Setup, what: &str, done: impl Fn(&Metrics) -> Result<bool>) -> Result<Metrics> {
    let mut last = String::new();
    until(SETTLE, what, || {
        let m = s.scrape()?;
        if done(&m).unwrap_or(false) {
            return Ok(Some(m));
        }
        last = m.text;
        Ok(None)
    })
    .with_context(|| format!("the last /metrics:\n{last}"))
}

/// The agent's JSON log events with this message.
fn logged(agent: &Agent<'_>, message: &str) -> Vec<Value> {
    agent
        .json_logs()
        .into_iter()
        .filter(|e| e["message"] == message)
        .collect()
}

const ATTEMPT: &str = "blocked connection attempt";
const AUDITED: &str = "connection attempt let through (audit mode)";
const REPEATED: &str = "repeated blocked connection attempts";

fn time_of(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// Adds what the agent printed to a failure.
fn with_agent_output<T>(agent: &Agent<'_>, r: Result<T>) -> Result<T> {
    r.map_err(|e| anyhow::anyhow!("{e:#}\n\n{}", agent.output()))
}

/// Waits for the agent to apply policy generation `generation`.
fn await_generation(s: &Setup, generation: u64) -> Result<Metrics> {
    scrape_until(s, &format!("policy generation {generation}"), |m| {
        let found = m
            .matching("egress_guard_policy_generation", &[])
            .first()
            .and_then(|g| match g.value {
                prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => whole(v),
                _ => None,
            });
        Ok(found == Some(generation))
    })
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// 5 SYNs from a blocked VM: 5 packets held back for reason `policy`, their
/// bytes, 5 blocked attempts, none lost; one log line names the VM and its
/// subscription, a summary counts the 5. The agent's own series are right,
/// and `/healthz` and `/readyz` answer.
#[test]
fn five_syns_are_five_in_the_metrics_and_one_logged_attempt_with_a_summary() -> Result<()> {
    let _serial = serial::exclusive();
    require_root()?;
    let s = Setup::new()?;
    let started = Utc::now();
    let agent = s.start_agent(&enforce("auto"))?;
    let r = (|| {
        let hv = &s.topo.hv;
        let health = http::get(hv, METRICS, "/healthz")?;
        ensure!(
            health.status == 200 && health.body.trim() == "ok",
            "/healthz: {health:?}"
        );
        let ready = http::get(hv, METRICS, "/readyz")?;
        ensure!(ready.status == 200, "/readyz: {ready:?}");
        let missing = http::get(hv, METRICS, "/nothing")?;
        ensure!(missing.status == 404, "/nothing: {missing:?}");

        // The agent's own series, before any traffic.
        let m = s.scrape()?;
        let sha = egress_guard::policy::sha256_hex(&std::fs::read(s.policy_path())?);
        let path = s.policy_path().display().to_string();
        for (name, labels, want) in [
            ("egress_guard_vms", vec![("verdict", "block")], 1),
            ("egress_guard_vms", vec![("verdict", "allow")], 1),
            ("egress_guard_interfaces", vec![("hook", "tc")], 2),
            ("egress_guard_interfaces", vec![("hook", "xdp")], 0),
            ("egress_guard_interfaces", vec![("hook", "xdp-generic")], 0),
            (
                "egress_guard_policy_generation",
                vec![("sha256", sha.as_str()), ("path", path.as_str())],
                1,
            ),
            ("egress_guard_reloads_total", vec![], 0),
            ("egress_guard_reload_failures_total", vec![], 0),
            ("egress_guard_attach_failures_total", vec![], 0),
            ("egress_guard_ready", vec![], 1),
        ] {
            let got = m.get(name, &labels)?;
            ensure!(
                got == want,
                "{name}{labels:?} = {got}, expected {want}:\n{}",
                m.text
            );
        }
        let applied = m.get("egress_guard_last_apply_timestamp_seconds", &[])?;
        ensure!(
            i64::try_from(applied)
                .is_ok_and(|t| { t >= started.timestamp() - 1 && t <= Utc::now().timestamp() + 1 }),
            "last apply {applied}, the agent started at {started}"
        );
        // Nothing held back yet: no per-VM series at all.
        ensure!(
            !m.mentions_vm(BLOCKED) && !m.mentions_vm(EXEMPT),
            "{}",
            m.text
        );

        let blocked = s.sender(BLOCKED)?;
        let syns: Vec<Vec<u8>> = (0..5).map(|i| blocked.syn4(SINK_V4, 40001 + i)).collect();
        let t0 = Utc::now();
        blocked.send(&syns)?;
        let m = scrape_until(&s, "5 packets held back", |m| Ok(m.held("policy")? >= 5))?;
        ensure!(m.held("policy")? == 5, "{}", m.text);
        ensure!(m.held_bytes("policy")? == bytes(&syns), "{}", m.text);
        ensure!(m.attempts()? == 5, "{}", m.text);
        ensure!(
            m.lost("rate-limited")? == 0 && m.lost("ring-full")? == 0,
            "{}",
            m.text
        );
        for reason in [
            "malformed",
            "orphan-fragment",
            "audit",
            "reset-sent",
            "icmp-sent",
            "rate-limited",
        ] {
            ensure!(m.held(reason)? == 0, "{reason}:\n{}", m.text);
        }

        // The exempt VM's SYNs pass: nothing of it is counted.
        let exempt = s.sender(EXEMPT)?;
        exempt.send(&[exempt.syn4(SINK_V4, 40010), exempt.syn4(SINK_V4, 40011)])?;
        // Segments that are not SYNs are held back, but are not attempts.
        let acks = vec![blocked.ack4(40001), blocked.ack4(40002)];
        blocked.send(&acks)?;
        let m = scrape_until(&s, "7 packets held back", |m| Ok(m.held("policy")? >= 7))?;
        ensure!(m.held("policy")? == 7, "{}", m.text);
        ensure!(
            m.held_bytes("policy")? == bytes(&syns) + bytes(&acks),
            "{}",
            m.text
        );
        ensure!(m.attempts()? == 5, "ACKs are not attempts:\n{}", m.text);
        ensure!(
            !m.mentions_vm(EXEMPT),
            "the exempt VM has no series:\n{}",
            m.text
        );

        // The log: the first attempt, then (when the window ends) a summary
        // of all 5.
        let summary = until(SETTLE, "a summary of the 5 attempts logged", || {
            Ok(logged(&agent, REPEATED).into_iter().next())
        })?;
        let firsts = logged(&agent, ATTEMPT);
        ensure!(
            firsts.len() == 1,
            "one line for 5 attempts to one destination: {firsts:#?}"
        );
        let first = &firsts[0];
        let vm4 = blocked.vm.ipv4.to_string();
        let sink4 = SINK_V4.to_string();
        for (field, want) in [
            ("vm", Value::from(BLOCKED)),
            ("subscription", Value::from(BLOCKED_SUB)),
            ("interface", Value::from(BLOCKED)),
            ("family", Value::from("ipv4")),
            ("src", Value::from(vm4.as_str())),
            ("src_port", Value::from(40001)),
            ("dst", Value::from(sink4.as_str())),
            ("dst_port", Value::from(25)),
            ("level", Value::from("INFO")),
            ("target", Value::from("egress_guard::attempts")),
        ] {
            ensure!(
                first[field] == want,
                "{field}: {} in {first:#}",
                first[field]
            );
        }
        let at = time_of(&first["at"]).with_context(|| format!("no time in {first:#}"))?;
        ensure!(
            at >= t0 - chrono::TimeDelta::seconds(1) && at <= Utc::now(),
            "at {at}, sent at {t0}"
        );
        for (field, want) in [
            ("vm", Value::from(BLOCKED)),
            ("subscription", Value::from(BLOCKED_SUB)),
            ("dst", Value::from(sink4.as_str())),
            ("dst_port", Value::from(25)),
            ("count", Value::from(5)),
        ] {
            ensure!(
                summary[field] == want,
                "{field}: {} in {summary:#}",
                summary[field]
            );
        }
        ensure!(logged(&agent, REPEATED).len() == 1, "one summary");

        // IPv6: its own line.
        blocked.send(&[blocked.syn6(40020)])?;
        let v6 = until(SETTLE, "the IPv6 attempt logged", || {
            Ok(logged(&agent, ATTEMPT)
                .into_iter()
                .find(|e| e["family"] == "ipv6"))
        })?;
        ensure!(
            v6["dst"] == SINK_V6.to_string() && v6["vm"] == BLOCKED,
            "{v6:#}"
        );
        let m = scrape_until(&s, "6 attempts", |m| Ok(m.attempts()? >= 6))?;
        ensure!(m.attempts()? == 6 && m.held("policy")? == 8, "{}", m.text);
        Ok(())
    })();
    with_agent_output(&agent, r)
}

/// Each reason, provoked and counted exactly (packets and bytes), through
/// policy reloads that switch the mode and the action; the reload counter
/// and the generation follow.
#[test]
fn every_reason_is_counted_exactly_through_reloads() -> Result<()> {
    let _serial = serial::exclusive();
    require_root()?;
    let s = Setup::new()?;
    let agent = s.start_agent(&enforce("auto"))?;
    let r = (|| {
        let vm = s.sender(BLOCKED)?;
        // policy, malformed, orphan-fragment.
        let syn = vec![vm.syn4(SINK_V4, 41000)];
        let malformed = vm.malformed();
        let orphans = vec![vm.orphan_fragment(0x4242), vm.orphan_fragment(0x4343)];
        vm.send(&syn)?;
        vm.send(&malformed)?;
        vm.send(&orphans)?;
        let m = scrape_until(&s, "the orphan fragments counted", |m| {
            Ok(m.held("policy")? >= 1
                && m.held("malformed")? >= 2
                && m.held("orphan-fragment")? >= 2)
        })?;
        for (reason, frames) in [
            ("policy", &syn),
            ("malformed", &malformed),
            ("orphan-fragment", &orphans),
        ] {
            ensure!(
                m.held(reason)? == frames.len() as u64,
                "{reason}:\n{}",
                m.text
            );
            ensure!(
                m.held_bytes(reason)? == bytes(frames),
                "{reason} bytes:\n{}",
                m.text
            );
        }
        ensure!(m.attempts()? == 1, "{}", m.text);

        // audit: counted, let through, logged as such.
        s.write_policy(&policy("auto", "audit", "drop", &[]))?;
        let m = await_generation(&s, 2)?;
        ensure!(m.get("egress_guard_reloads_total", &[])? == 1, "{}", m.text);
        let audited = vec![vm.syn4(SINK_V4, 41001)];
        vm.send(&audited)?;
        let m = scrape_until(&s, "the audited SYN counted", |m| Ok(m.held("audit")? >= 1))?;
        ensure!(
            m.held("audit")? == 1 && m.held_bytes("audit")? == bytes(&audited),
            "{}",
            m.text
        );
        ensure!(
            m.held("policy")? == 1,
            "audit mode holds nothing back:\n{}",
            m.text
        );
        ensure!(
            m.attempts()? == 2,
            "an audited attempt is an attempt:\n{}",
            m.text
        );
        let line = until(SETTLE, "the audited attempt logged", || {
            Ok(logged(&agent, AUDITED).into_iter().next())
        })?;
        ensure!(
            line["vm"] == BLOCKED && line["src_port"] == 41001,
            "{line:#}"
        );

        // icmp-sent: the SYN is held back (policy) and answered.
        s.write_policy(&policy("auto", "enforce", "icmp", &[]))?;
        await_generation(&s, 3)?;
        vm.send(&[vm.syn4(SINK_V4, 41002)])?;
        let m = scrape_until(&s, "the ICMP reply counted", |m| {
            Ok(m.held("icmp-sent")? >= 1)
        })?;
        ensure!(
            m.held("icmp-sent")? == 1 && m.held("policy")? == 2,
            "{}",
            m.text
        );

        // reset-sent, then rate-limited: more SYNs at once than the reply
        // burst (40); each is answered or counted as rate-limited.
        s.write_policy(&policy("auto", "enforce", "reset", &[]))?;
        await_generation(&s, 4)?;
        vm.send(&[vm.syn4(SINK_V4, 41003)])?;
        let m = scrape_until(&s, "the RST counted", |m| Ok(m.held("reset-sent")? >= 1))?;
        ensure!(
            m.held("reset-sent")? == 1 && m.held("policy")? == 3,
            "{}",
            m.text
        );
        let flood: Vec<Vec<u8>> = (0..60).map(|i| vm.syn4(SINK_V4, 42000 + i)).collect();
        vm.send(&flood)?;
        let m = scrape_until(&s, "the 60 SYNs held back", |m| Ok(m.held("policy")? >= 63))?;
        let resets = m.held("reset-sent")? - 1;
        let limited = m.held("rate-limited")?;
        println!("60 SYNs at once: {resets} RSTs, {limited} rate-limited");
        ensure!(m.held("policy")? == 63, "{}", m.text);
        ensure!(
            resets + limited == 60 && limited >= 1,
            "every SYN answered or rate-limited, some rate-limited:\n{}",
            m.text
        );
        ensure!(
            m.held_bytes("rate-limited")? == limited * flood[0].len() as u64,
            "{}",
            m.text
        );
        ensure!(m.attempts()? == 64, "{}", m.text);
        ensure!(m.get("egress_guard_reloads_total", &[])? == 3, "{}", m.text);
        ensure!(
            m.get("egress_guard_reload_failures_total", &[])? == 0,
            "{}",
            m.text
        );
        Ok(())
    })();
    with_agent_output(&agent, r)
}

/// A rejected policy counts as a reload failure and the one in force stays;
/// a VM that leaves the policy leaves the metrics (its counters with it).
#[test]
fn a_rejected_policy_is_counted_and_a_vm_that_leaves_the_policy_leaves_the_metrics() -> Result<()> {
    let _serial = serial::exclusive();
    require_root()?;
    let s = Setup::new()?;
    let agent = s.start_agent(&enforce("auto"))?;
    let r = (|| {
        let vm = s.sender(BLOCKED)?;
        vm.send(&[vm.syn4(SINK_V4, 43000)])?;
        scrape_until(&s, "vm-blocked counted", |m| Ok(m.held("policy")? >= 1))?;

        s.write_policy("version: 1\ncolour: red\n")?;
        let m = scrape_until(&s, "a reload failure", |m| {
            Ok(m.get("egress_guard_reload_failures_total", &[])? >= 1)
        })?;
        ensure!(
            m.get("egress_guard_reload_failures_total", &[])? == 1,
            "{}",
            m.text
        );
        ensure!(m.get("egress_guard_reloads_total", &[])? == 0, "{}", m.text);
        ensure!(
            m.held("policy")? == 1,
            "the policy in force stays:\n{}",
            m.text
        );
        let st = agent.status_json()?;
        ensure!(
            st["rejected"].is_object(),
            "status shows the rejection:\n{st:#}"
        );

        s.write_policy(&policy("auto", "enforce", "drop", &[BLOCKED]))?;
        let m = await_generation(&s, 2)?;
        ensure!(
            !m.mentions_vm(BLOCKED),
            "vm-blocked left the policy:\n{}",
            m.text
        );
        ensure!(
            m.get("egress_guard_vms", &[("verdict", "block")])? == 0,
            "{}",
            m.text
        );
        ensure!(
            m.get("egress_guard_vms", &[("verdict", "allow")])? == 1,
            "{}",
            m.text
        );
        ensure!(
            m.get("egress_guard_interfaces", &[("hook", "tc")])? == 1,
            "{}",
            m.text
        );
        ensure!(m.get("egress_guard_reloads_total", &[])? == 1, "{}", m.text);
        let st = agent.status_json()?;
        ensure!(vm_entry(&st, BLOCKED).is_none(), "{st:#}");
        Ok(())
    })();
    with_agent_output(&agent, r)
}

/// `status` (table and JSON, and `--vm`) reads the same counters, verdicts,
/// hooks and last attempts while the agent runs, while it is stopped, and
/// after it is started again (after SIGTERM and after SIGKILL); an unknown
/// `--vm` is a usage error.
#[test]
fn status_in_both_formats_before_and_after_an_agent_restart() -> Result<()> {
    let _serial = serial::exclusive();
    require_root()?;
    let s = Setup::new()?;
    let mut agent = s.start_agent(&enforce("auto"))?;
    let r = (|| {
        let vm = s.sender(BLOCKED)?;
        let syns: Vec<Vec<u8>> = (0..3).map(|i| vm.syn4(SINK_V4, 44000 + i)).collect();
        vm.send(&syns)?;
        vm.send(&vm.malformed()[..1])?;
        scrape_until(&s, "3 SYNs and a malformed frame", |m| {
            Ok(m.held("policy")? >= 3 && m.held("malformed")? >= 1)
        })?;
        // The agent saves the last attempts within a second.
        until(SETTLE, "the last attempts in status --vm", || {
            let doc = status_vm(&agent)?;
            Ok((recent_count(&doc) == 3).then_some(()))
        })?;

        let check = |doc: &Value, running: bool, policy: u64, attempts: u64| -> Result<()> {
            ensure!(
                doc["agent"]["running"] == running,
                "agent.running:\n{doc:#}"
            );
            ensure!(
                doc["policy"]["path"] == s.policy_path().display().to_string(),
                "{doc:#}"
            );
            ensure!(doc["policy"]["generation"] == 1, "{doc:#}");
            let b = vm_entry(doc, BLOCKED).with_context(|| format!("{doc:#}"))?;
            ensure!(
                b["verdict"] == "block" && b["subscription"] == BLOCKED_SUB,
                "{b:#}"
            );
            ensure!(b["reason"].as_str().is_some_and(|r| !r.is_empty()), "{b:#}");
            ensure!(b["counters"]["policy"]["packets"] == policy, "{b:#}");
            ensure!(b["counters"]["malformed"]["packets"] == 1, "{b:#}");
            ensure!(b["held_back"]["packets"] == policy + 1, "{b:#}");
            ensure!(b["attempts"]["total"] == attempts, "{b:#}");
            ensure!(b["attempts"]["events"] == attempts, "{b:#}");
            let e = vm_entry(doc, EXEMPT).with_context(|| format!("{doc:#}"))?;
            ensure!(
                e["verdict"] == "allow" && e["held_back"]["packets"] == 0,
                "{e:#}"
            );
            let hooks: Vec<(&str, &str)> = doc["interfaces"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|i| {
                    (
                        i["name"].as_str().unwrap_or(""),
                        i["hook"].as_str().unwrap_or(""),
                    )
                })
                .collect();
            ensure!(
                hooks.contains(&(BLOCKED, "tc")) && hooks.contains(&(EXEMPT, "tc")),
                "interfaces and hooks: {hooks:?}"
            );
            Ok(())
        };

        check(&agent.status_json()?, true, 3, 3)?;
        check_table(&agent, true, 3)?;
        let doc = status_vm(&agent)?;
        let recent = &vm_entry(&doc, BLOCKED).context("--vm")?["recent_attempts"];
        ensure!(
            recent[0]["dst"] == SINK_V4.to_string() && recent[0]["dst_port"] == 25,
            "{doc:#}"
        );
        ensure!(
            doc["vms"].as_array().map(Vec::len) == Some(1),
            "only that VM:\n{doc:#}"
        );

        // An unknown VM: exit 2 and a message that says which VMs there are.
        for format in ["table", "json"] {
            let out = agent.ctl([
                "status",
                "--pin-dir",
                &agent.pin_dir().display().to_string(),
                "--vm",
                "no-such-vm",
                "--format",
                format,
            ])?;
            ensure!(
                out.code() == Some(2),
                "exit {:?}:\n{}{}",
                out.code(),
                out.stdout,
                out.stderr
            );
            ensure!(
                out.stderr.contains("no-such-vm")
                    && out.stderr.contains(BLOCKED)
                    && out.stdout.is_empty(),
                "{}",
                out.stderr
            );
        }

        // Stopped: the same, read from the pins and the state directory.
        let status = agent.stop()?;
        ensure!(status.code() == Some(0), "SIGTERM: {status}");
        check(&agent.status_json()?, false, 3, 3)?;
        check_table(&agent, false, 3)?;
        ensure!(
            recent_count(&status_vm(&agent)?) == 3,
            "last attempts while stopped"
        );
        // Enforcement and counting go on without the agent; the events wait
        // in the ring buffer.
        vm.send(&[vm.syn4(SINK_V4, 44010), vm.syn4(SINK_V4, 44011)])?;
        until(SETTLE, "the SYNs counted without an agent", || {
            let doc = agent.status_json()?;
            Ok(
                (vm_entry(&doc, BLOCKED).is_some_and(|b| b["counters"]["policy"]["packets"] == 5))
                    .then_some(()),
            )
        })?;

        // Started again: the counters read back, the waiting events are
        // logged, the last attempts go on.
        agent.restart(None)?;
        check(&agent.status_json()?, true, 5, 5)?;
        check_table(&agent, true, 5)?;
        let m = s.scrape()?;
        ensure!(
            m.held("policy")? == 5 && m.held("malformed")? == 1 && m.attempts()? == 5,
            "{}",
            m.text
        );
        let restarted = Utc::now();
        let queued = until(SETTLE, "the events queued while stopped logged", || {
            Ok(logged(&agent, ATTEMPT)
                .into_iter()
                .find(|e| e["src_port"] == 44010))
        })?;
        ensure!(
            time_of(&queued["at"]).is_some_and(|at| at < restarted),
            "the attempt is logged with the time it happened: {queued:#}"
        );
        until(SETTLE, "all 5 attempts in status --vm", || {
            Ok((recent_count(&status_vm(&agent)?) == 5).then_some(()))
        })?;

        // SIGKILL: nothing is lost either.
        agent.kill()?;
        agent.restart(None)?;
        check(&agent.status_json()?, true, 5, 5)?;
        let m = s.scrape()?;
        ensure!(m.held("policy")? == 5 && m.attempts()? == 5, "{}", m.text);
        ensure!(
            recent_count(&status_vm(&agent)?) == 5,
            "last attempts after SIGKILL"
        );

        // The copy of the policy in force that status evaluates, damaged
        // (say, written by a build that reads it differently): status still
        // shows the policy and the interfaces, no VMs, and says why.
        let status = agent.stop()?;
        ensure!(status.code() == Some(0), "SIGTERM: {status}");
        let copy = egress_guard::state::StateDir::for_pin_dir(agent.pin_dir()).policy_file();
        let text = std::fs::read_to_string(&copy).with_context(|| copy.display().to_string())?;
        ensure!(
            egress_guard::policy::sha256_hex(text.as_bytes())
                == egress_guard::policy::sha256_hex(&std::fs::read(s.policy_path())?),
            "the copy in {} is the policy in force",
            copy.display()
        );
        let damaged = "version: 1\nvms: [\n";
        std::fs::write(&copy, damaged)?;
        let damaged_status = |warning: &str| -> Result<()> {
            let out = agent.ctl([
                "status",
                "--pin-dir",
                &agent.pin_dir().display().to_string(),
                "--format",
                "json",
            ])?;
            ensure!(
                out.code() == Some(0),
                "exit {:?}: {}",
                out.code(),
                out.stderr
            );
            let doc: Value = serde_json::from_str(&out.stdout)?;
            ensure!(
                doc["vms"].as_array().is_some_and(Vec::is_empty)
                    && doc["interfaces"].as_array().is_some_and(|i| i.len() == 2)
                    && doc["policy"]["generation"] == 1,
                "{doc:#}"
            );
            ensure!(out.stderr.contains(warning), "the warning: {}", out.stderr);
            Ok(())
        };
        // Another file than the state names...
        damaged_status("does not match the state's sha256")?;
        // ... or the file it names, which this build cannot read.
        let state_file = copy.with_file_name("state.json");
        let mut state: Value = serde_json::from_slice(&std::fs::read(&state_file)?)?;
        state["policy"]["hash"] = egress_guard::policy::sha256_hex(damaged.as_bytes()).into();
        std::fs::write(&state_file, serde_json::to_vec(&state)?)?;
        damaged_status("does not read with this build")?;
        Ok(())
    })();
    with_agent_output(&agent, r)
}

/// The table and `--vm` table of `status`: vm-blocked blocked with `policy`
/// packets held back for reason policy and 1 malformed.
fn check_table(agent: &Agent<'_>, running: bool, policy: u64) -> Result<()> {
    let table = agent.status_text()?.stdout;
    let line = table
        .lines()
        .find(|l| l.starts_with(BLOCKED) && l.contains(BLOCKED_SUB))
        .with_context(|| format!("no row of VM {BLOCKED}:\n{table}"))?;
    ensure!(
        line.contains("block")
            && line.contains(&format!("policy {policy}"))
            && line.contains("malformed 1"),
        "{line}\n{table}"
    );
    ensure!(
        table.contains(if running {
            "Agent:         running"
        } else {
            "not running"
        }),
        "{table}"
    );
    let detail = agent
        .ctl([
            "status",
            "--pin-dir",
            &agent.pin_dir().display().to_string(),
            "--vm",
            BLOCKED,
        ])?
        .check()?
        .stdout;
    ensure!(
        detail.contains("last blocked attempts") && detail.contains(&format!("{SINK_V4}:25")),
        "{detail}"
    );
    ensure!(
        !detail.contains(EXEMPT),
        "--vm shows only that VM:\n{detail}"
    );
    Ok(())
}

/// `status --vm vm-blocked --format json`.
fn status_vm(agent: &Agent<'_>) -> Result<Value> {
    let out = agent
        .ctl([
            "status",
            "--pin-dir",
            &agent.pin_dir().display().to_string(),
            "--vm",
            BLOCKED,
            "--format",
            "json",
        ])?
        .check()?;
    serde_json::from_str(&out.stdout)
        .with_context(|| format!("status --vm printed:\n{}", out.stdout))
}

/// The attempts the last-attempts list of vm-blocked stands for.
fn recent_count(doc: &Value) -> u64 {
    vm_entry(doc, BLOCKED)
        .and_then(|b| b["recent_attempts"].as_array())
        .map_or(0, |list| {
            list.iter().filter_map(|r| r["count"].as_u64()).sum()
        })
}

/// A flood of SYNs, each to another destination: every one is counted and
/// held back, but only the VM's burst of events (and what its rate allows
/// while the flood lasts) reaches the agent, each logged; the rest are
/// counted as lost. Through native XDP this time.
#[test]
fn a_flood_of_syns_yields_a_bounded_number_of_events_and_the_rest_are_counted_lost() -> Result<()> {
    let _serial = serial::exclusive();
    require_root()?;
    let s = Setup::new()?;
    let agent = s.start_agent(&enforce("xdp"))?;
    let r = (|| {
        let vm = s.sender(BLOCKED)?;
        // 750 destinations in the three documentation networks.
        let flood: Vec<Vec<u8>> = (0..750u32)
            .map(|i| {
                let net = [[192, 0, 2], [198, 51, 100], [203, 0, 113]][(i / 250) as usize];
                let dst = Ipv4Addr::new(net[0], net[1], net[2], (i % 250 + 1) as u8);
                vm.syn4(dst, 20000 + i as u16)
            })
            .collect();
        let started = Instant::now();
        vm.send(&flood)?;
        let took = started.elapsed();
        let m = scrape_until(&s, "750 SYNs held back", |m| Ok(m.held("policy")? >= 750))?;
        ensure!(
            m.get("egress_guard_interfaces", &[("hook", "xdp")])? == 2,
            "{}",
            m.text
        );
        let attempts = m.attempts()?;
        let limited = m.lost("rate-limited")?;
        let full = m.lost("ring-full")?;
        let events = attempts - limited - full;
        println!("750 SYNs in {took:?}: {events} events, {limited} rate-limited, {full} ring-full");
        ensure!(m.held("policy")? == 750 && attempts == 750, "{}", m.text);
        let cpus = thread::available_parallelism().map_or(1, |n| n.get() as u64);
        let took_ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let allowed = EVENT_BURST + took_ns.div_ceil(EVENT_INTERVAL_NS) + 1 + cpus;
        ensure!(
            events >= EVENT_BURST && events <= allowed,
            "{events} events: expected {EVENT_BURST} to {allowed}"
        );
        ensure!(full == 0, "{}", m.text);
        // Every event that reached the agent is one log line (each SYN went
        // to another destination), and no more.
        until(SETTLE, "every event logged", || {
            Ok((logged(&agent, ATTEMPT).len() as u64 >= events).then_some(()))
        })?;
        thread::sleep(Duration::from_millis(500));
        let lines = logged(&agent, ATTEMPT);
        ensure!(
            lines.len() as u64 == events,
            "{} log lines for {events} events",
            lines.len()
        );
        ensure!(lines.iter().all(|l| l["vm"] == BLOCKED), "{lines:#?}");
        let st = agent.status_json()?;
        let b = vm_entry(&st, BLOCKED).context("status")?;
        ensure!(
            b["attempts"]["total"] == 750
                && b["attempts"]["events_lost"]["rate-limited"] == limited as u64,
            "{b:#}"
        );
        Ok(())
    })();
    with_agent_output(&agent, r)
}
