//! The corpus on every interface and hook, audit mode, and verdict
//! changes taking effect on the next packet.

#[allow(
    clippy::wildcard_imports,
    reason = "the TestRun vocabulary, shared by its modules"
)]
use super::*;

#[test]
fn the_corpus_gets_its_exact_verdicts_on_each_interface_and_hook() {
    let _serial = serial::shared(module_path!());
    let mut bench = Bench::enforce(ACTION_DROP);
    // Each role twice: an ifindex in `EG_IFACE_SLOTS`, one in `EG_IFACES`.
    let exempt = [bench.exempt, bench.exempt_high];
    let blocked = [bench.blocked, bench.blocked_high];
    let unlisted = [bench.unlisted, bench.unlisted_high];
    let corpus = corpus();
    let packets: usize = corpus.iter().map(|c| c.steps.len()).sum();
    assert!(packets >= 45, "the corpus has {packets} packets");
    let mut expected = Counters::default();
    for case in &corpus {
        for hook in [Hook::Xdp, Hook::Tc] {
            bench.forget_fragments();
            for (i, step) in case.steps.iter().enumerate() {
                let what = format!("{} (packet {}, {hook:?})", case.name, i + 1);
                // The exempt VM's traffic passes unparsed, whatever it is.
                for ifindex in exempt {
                    assert_eq!(
                        bench.run(hook, ifindex, &step.frame).verdict,
                        Verdict::Pass,
                        "exempt {ifindex}: {what}"
                    );
                }
                for ifindex in blocked.into_iter().chain(unlisted) {
                    let out = bench.run(hook, ifindex, &step.frame);
                    assert_eq!(out.verdict, step.verdict, "{ifindex}: {what}");
                    if out.verdict == Verdict::Pass {
                        assert_eq!(
                            out.frame, step.frame,
                            "a passing frame is untouched: {what}"
                        );
                    }
                }
                if let Some(why) = step.counted {
                    assert_eq!(step.verdict, Verdict::Drop, "{what}");
                    // Once on each of the two interfaces of each role.
                    expected.packets[why] += 2;
                    expected.bytes[why] += 2 * step.frame.len() as u64;
                }
                assert_eq!(
                    bench.counters(BLOCKED_KEY),
                    expected,
                    "counters after {what}"
                );
                assert_eq!(
                    bench.counters(UNLISTED_KEY),
                    expected,
                    "counters after {what}"
                );
            }
        }
    }
    assert_eq!(
        bench.counters(EXEMPT_KEY),
        Counters::default(),
        "an exempt VM is never counted"
    );
}

#[test]
fn audit_mode_counts_what_would_be_held_and_holds_nothing_back() {
    let _serial = serial::shared(module_path!());
    let mut bench = Bench::new(Config {
        mode: MODE_AUDIT,
        action: ACTION_RESET,
        generation: 1,
        ..Config::default()
    });
    let blocked = bench.blocked;
    let syn = Frame::tcp4(VM4, INTERNET4, 40000, 25).build();
    let orphan = later4(40, 25, 4, false);
    let mut bad_ihl = syn.clone();
    bad_ihl[14] = 0x43;
    for hook in [Hook::Xdp, Hook::Tc] {
        bench.forget_fragments();
        for frame in [&syn, &orphan, &bad_ihl] {
            let out = bench.run(hook, blocked, frame);
            assert_eq!(out.verdict, Verdict::Pass, "{hook:?}");
            assert_eq!(&out.frame, frame, "{hook:?}: audit changes nothing");
        }
    }
    let counters = bench.counters(BLOCKED_KEY);
    assert_eq!(counters.packets[reason::AUDIT], 6);
    for why in [
        reason::POLICY,
        reason::MALFORMED,
        reason::ORPHAN_FRAGMENT,
        reason::RESET_SENT,
    ] {
        assert_eq!(counters.packets[why], 0, "{}", reason::NAMES[why]);
    }
}

#[test]
fn a_verdict_change_takes_effect_on_the_next_packet() {
    let _serial = serial::shared(module_path!());
    let mut bench = Bench::enforce(ACTION_DROP);
    let blocked = bench.blocked;
    let syn = Frame::tcp4(VM4, INTERNET4, 40000, 25).build();
    assert_eq!(bench.run(Hook::Xdp, blocked, &syn).verdict, Verdict::Drop);
    bench
        .datapath
        .maps
        .set_interface(
            blocked,
            IfaceEntry {
                vm_key: BLOCKED_KEY,
                verdict: VERDICT_ALLOW,
                flags: 0,
            },
        )
        .unwrap();
    assert_eq!(bench.run(Hook::Xdp, blocked, &syn).verdict, Verdict::Pass);

    // Ports and allowed destinations follow the maps too.
    let mut state = bench.datapath.maps.read_state().unwrap();
    assert_eq!(state.ports, BTreeSet::from([25, 465]));
    state.ifaces.get_mut(&blocked).unwrap().verdict = VERDICT_BLOCK;
    state.ports = BTreeSet::from([2525]);
    let actual = bench.datapath.maps.read_state().unwrap();
    let report = bench.datapath.maps.apply(&actual, &state).unwrap();
    // One interface entry and three bitmap words (25, 465 and 2525 sit in
    // words 0, 7 and 39).
    assert_eq!(report.written, 4, "{report:?}");
    assert_eq!(bench.run(Hook::Tc, blocked, &syn).verdict, Verdict::Pass);
    let syn_2525 = Frame::tcp4(VM4, INTERNET4, 40000, 2525).build();
    assert_eq!(
        bench.run(Hook::Tc, blocked, &syn_2525).verdict,
        Verdict::Drop
    );
}

// --- replies ------------------------------------------------------------
