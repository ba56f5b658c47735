//! The programs against the host parser on the fuzzer's corpus.

#[allow(
    clippy::wildcard_imports,
    reason = "the TestRun vocabulary, shared by its modules"
)]
use super::*;

/// Whether BPF_PROG_TEST_RUN takes `frame` for `hook`: an Ethernet header,
/// and for an skb with an IPv4 or IPv6 EtherType the whole fixed IP header
/// (it refuses shorter ones with EINVAL; the XDP run, which takes them,
/// covers their parse).
fn test_run_takes(hook: Hook, frame: &[u8]) -> bool {
    match (hook, frame.get(12..14)) {
        (_, None) => false,
        (Hook::Tc, Some([0x08, 0x00])) => frame.len() >= 14 + 20,
        (Hook::Tc, Some([0x86, 0xdd])) => frame.len() >= 14 + 40,
        _ => true,
    }
}

/// The kernel programs against the host-compiled parser, on every frame of
/// the fuzzer's corpus and regressions (`ebpf/common/fuzz`): the fuzzer
/// checks the parser on the host; this checks that the programs, built for
/// BPF with their own packet access, fences and masks, decide as it does.
#[test]
fn the_programs_decide_as_the_host_parser_on_the_fuzz_corpus() {
    use egress_guard_common::{
        classify::{ClassKind, classify, later_fragment_may_be_tcp},
        parse::parse,
    };
    let _serial = serial::shared(module_path!());
    let netns = ThreadNetns::new("testrun");
    let blocked = netns.veth("blocked0", "blocked1");
    let mut datapath = testrun::load(
        Config {
            mode: MODE_ENFORCE,
            action: ACTION_DROP,
            generation: 1,
            ..Config::default()
        },
        &[25],
        &[],
        &[(blocked, BLOCKED_KEY, VERDICT_BLOCK)],
    );
    let fuzz = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ebpf/common/fuzz");
    let mut files = Vec::new();
    for dir in ["corpus/parse", "regressions/parse"] {
        for entry in std::fs::read_dir(fuzz.join(dir)).expect("the fuzz corpus") {
            files.push(entry.unwrap().path());
        }
    }
    assert!(files.len() > 200, "{} files", files.len());
    let _inside = netns.enter();
    for file in &files {
        let frame = std::fs::read(file).unwrap();
        let class = classify(frame.as_slice(), &parse(frame.as_slice()), |p| p == 25);
        let expected = match class.kind {
            ClassKind::HeldPort | ClassKind::Unparseable => Verdict::Drop,
            // An orphan, which is held if it may belong to TCP.
            ClassKind::LaterFragment if later_fragment_may_be_tcp(&class.ip) => Verdict::Drop,
            ClassKind::Pass | ClassKind::FirstFragment | ClassKind::LaterFragment => Verdict::Pass,
        };
        for hook in [Hook::Xdp, Hook::Tc] {
            if !test_run_takes(hook, &frame) {
                continue;
            }
            // Each frame on its own: no fragment state from the one before.
            let keys: Vec<_> = datapath.maps.frags.keys().map(Result::unwrap).collect();
            for key in keys {
                datapath.maps.frags.remove(&key).unwrap();
            }
            let out = testrun::run(&mut datapath, hook, Some(blocked), &frame);
            assert_eq!(
                out.verdict,
                expected,
                "{hook:?} on {} ({:?})",
                file.display(),
                class.kind
            );
        }
    }
}
