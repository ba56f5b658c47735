//! Every SYN and every reason counted exactly in `/metrics` (packets and
//! bytes), through reloads that switch the mode and the action; each
//! attempt logged once, with a summary of its repeats.

#![allow(
    clippy::too_many_lines,
    reason = "each test is one story, told in order"
)]

use anyhow::{Context as _, Result, ensure};
use chrono::Utc;
use egress_guard_tests::netns::{http, policy::BLOCKED_SUB, require_root};
use serde_json::Value;

use super::{
    BLOCKED, EXEMPT, Lab, SETTLE, bytes, enforce,
    metrics::{ATTEMPT, AUDITED, METRICS, REPEATED, await_generation, scrape_until, until},
    policy, with_agent,
};
use crate::fixtures::{serial, time_of, with_agent_output};
use egress_guard_tests::netns::topology::{SINK_V4, SINK_V6};

/// 5 SYNs from a blocked VM: 5 packets held back for reason `policy`, their
/// bytes, 5 blocked attempts, none lost; one log line names the VM and its
/// subscription, a summary counts the 5. The agent's own series are right,
/// and `/healthz` and `/readyz` answer.
#[test]
fn five_syns_are_five_in_the_metrics_and_one_logged_attempt_with_a_summary() -> Result<()> {
    let _serial = serial::exclusive();
    require_root()?;
    let s = Lab::new()?;
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
            Ok(agent.logged(REPEATED).into_iter().next())
        })?;
        let firsts = agent.logged(ATTEMPT);
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
        ensure!(agent.logged(REPEATED).len() == 1, "one summary");

        // IPv6: its own line.
        blocked.send(&[blocked.syn6(40020)])?;
        let v6 = until(SETTLE, "the IPv6 attempt logged", || {
            Ok(agent
                .logged(ATTEMPT)
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
    with_agent("auto", |s, agent| {
        let vm = s.sender(BLOCKED)?;
        // policy, malformed, orphan-fragment.
        let syn = vec![vm.syn4(SINK_V4, 41000)];
        let malformed = vm.malformed();
        let orphans = vec![vm.orphan_fragment(0x4242), vm.orphan_fragment(0x4343)];
        vm.send(&syn)?;
        vm.send(&malformed)?;
        vm.send(&orphans)?;
        let m = scrape_until(s, "the orphan fragments counted", |m| {
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
        let m = await_generation(s, 2)?;
        ensure!(m.get("egress_guard_reloads_total", &[])? == 1, "{}", m.text);
        let audited = vec![vm.syn4(SINK_V4, 41001)];
        vm.send(&audited)?;
        let m = scrape_until(s, "the audited SYN counted", |m| Ok(m.held("audit")? >= 1))?;
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
            Ok(agent.logged(AUDITED).into_iter().next())
        })?;
        ensure!(
            line["vm"] == BLOCKED && line["src_port"] == 41001,
            "{line:#}"
        );

        // icmp-sent: the SYN is held back (policy) and answered.
        s.write_policy(&policy("auto", "enforce", "icmp", &[]))?;
        await_generation(s, 3)?;
        vm.send(&[vm.syn4(SINK_V4, 41002)])?;
        let m = scrape_until(s, "the ICMP reply counted", |m| {
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
        await_generation(s, 4)?;
        vm.send(&[vm.syn4(SINK_V4, 41003)])?;
        let m = scrape_until(s, "the RST counted", |m| Ok(m.held("reset-sent")? >= 1))?;
        ensure!(
            m.held("reset-sent")? == 1 && m.held("policy")? == 3,
            "{}",
            m.text
        );
        let flood: Vec<Vec<u8>> = (0..60).map(|i| vm.syn4(SINK_V4, 42000 + i)).collect();
        vm.send(&flood)?;
        let m = scrape_until(s, "the 60 SYNs held back", |m| Ok(m.held("policy")? >= 63))?;
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
    })
}
