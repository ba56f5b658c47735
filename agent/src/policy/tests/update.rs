//! A changed file read VM by VM gives the policy a full read gives.

use std::path::Path;

use super::{inputs::PLAIN, scale::big_policy};
use crate::policy::{Change, Policy, PolicyError, Verdict, from_vec, sha256_hex};

fn full(text: &str) -> Result<Policy, PolicyError> {
    from_vec(Path::new("p.yaml"), text.as_bytes().to_vec())
}

/// `old` updated to `new`: what changed, and the policy (or the error).
fn update(old: &str, new: &str) -> (Result<Change, PolicyError>, Policy) {
    let mut policy = full(old).expect("the old policy is valid");
    let before = format!("{policy:?}");
    let change = policy.update(
        Path::new("p.yaml"),
        new.as_bytes().to_vec(),
        sha256_hex(new.as_bytes()),
    );
    if change.is_err() {
        assert_eq!(
            format!("{policy:?}"),
            before,
            "a failed update changed the policy"
        );
    }
    (change, policy)
}

/// Everything a policy holds, its index looked up VM by VM.
fn same(a: &Policy, b: &Policy) {
    assert_eq!(a.vms, b.vms);
    assert_eq!(a.subscriptions, b.subscriptions);
    assert_eq!(a.enforcement, b.enforcement);
    assert_eq!(a.hash, b.hash);
    assert_eq!(a.text(), b.text());
    assert_eq!(
        a.source.as_ref().map(|s| &s.layout),
        b.source.as_ref().map(|s| &s.layout),
    );
    for (i, vm) in a.vms.iter().enumerate() {
        assert_eq!(a.vm_index_by_name(&vm.name), Some(i), "{}", vm.name);
        assert_eq!(a.vm_index_by_interface(&vm.interface), Some(i));
        assert_eq!(a.vm_index_by_key(vm.key), Some(i));
    }
    assert_eq!(format!("{:?}", a.index), format!("{:?}", b.index));
}

fn check(old: &str, new: &str) -> Result<Change, PolicyError> {
    let (change, updated) = update(old, new);
    match (&change, full(new)) {
        (Ok(_), Ok(expected)) => same(&updated, &expected),
        (Err(e), Err(expected)) => assert_eq!(e.to_string(), expected.to_string()),
        (got, expected) => panic!(
            "update gave {got:?}, a full read {:?}\n--- old:\n{old}\n--- new:\n{new}",
            expected.map(|_| ())
        ),
    }
    change
}

#[test]
fn a_changed_vm_is_read_alone() {
    let new = PLAIN.replace(
        "    interface: tap-a\n",
        "    interface: tap-a\n    override: allow\n",
    );
    assert_eq!(
        check(PLAIN, &new).expect("valid"),
        Change::Vms {
            at: 0,
            removed: 1,
            added: 1
        }
    );
    // Added at the end, and in the middle; removed.
    let added =
        format!("{PLAIN}  - name: vm-d\n    subscription: dev-msdn\n    interface: tap-d\n");
    // The VMs next to the change are read again with the new one (lines
    // added at the start of a VM may be fields of the one before).
    assert!(matches!(
        check(PLAIN, &added),
        Ok(Change::Vms { removed, added, .. }) if added == removed + 1
    ));
    let middle = PLAIN.replace(
        "  # a comment\n",
        "  - name: vm-x\n    subscription: dev-msdn\n    interface: tap-x\n",
    );
    assert!(matches!(check(PLAIN, &middle), Ok(Change::Vms { .. })));
    assert!(matches!(check(&middle, PLAIN), Ok(Change::Vms { .. })));
    let removed = PLAIN.replace(
        "  - name: vm-a\n    subscription: dev-msdn\n    interface: tap-a\n",
        "",
    );
    assert!(matches!(check(PLAIN, &removed), Ok(Change::Vms { .. })));
}

/// A field added at the end of a VM starts where the next VM started: the
/// texts compared from both ends cannot tell the two apart, so the VM
/// before is read again too, and gets the field.
#[test]
fn a_field_added_at_the_end_of_a_vm_belongs_to_it() {
    let old = PLAIN.replace("  # a comment\n", "");
    let new = old.replace(
        "    interface: tap-a\n",
        "    interface: tap-a\n    override: allow\n",
    );
    let change = check(&old, &new).expect("valid");
    assert!(matches!(change, Change::Vms { at: 0, .. }), "{change:?}");
    // (check compared the whole policy with a full read.)
    let (_, policy) = update(&old, &new);
    assert_eq!(policy.vms[0].override_verdict, Some(Verdict::Allow));
}

#[test]
fn other_changes_read_the_whole_file() {
    for new in [
        PLAIN.replace("ports: [25]", "ports: [25, 465]"),
        PLAIN.replace("created: 2019-04-02", "created: 2016-04-02"),
        format!("{PLAIN}offers: {{}}\n"),
    ] {
        assert_eq!(check(PLAIN, &new).expect("valid"), Change::Whole);
    }
}

#[test]
fn invalid_changes_are_reported_as_a_full_read_reports_them() {
    for new in [
        PLAIN.replace("interface: tap-c", "interface: tap-a"),
        PLAIN.replace("name: 'vm-c'", "name: vm-a"),
        PLAIN.replace(
            "subscription: dev-msdn\n    interface: tap-a",
            "subscription: nope\n    interface: tap-a",
        ),
        PLAIN.replace("started: 2021-01-11T08:00:00Z", "started: yesterday"),
        PLAIN.replace(
            "    interface: tap-a\n",
            "    interface: tap-a\n    colour: red\n",
        ),
    ] {
        assert!(
            matches!(check(PLAIN, &new), Err(PolicyError::Invalid(_))),
            "{new}"
        );
    }
}

/// Edits VM by VM, one after the other, on a larger file: each update is
/// what a full read of the file gives.
#[test]
fn successive_edits_stay_in_step_with_full_reads() {
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut below = |n: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % n as u64) as usize
    };
    let mut text = big_policy(40);
    let mut policy = full(&text).expect("valid");
    let mut serial = 0;
    for _ in 0..300 {
        let lines: Vec<&str> = text.lines().collect();
        let starts: Vec<usize> = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.starts_with("  - name: vm-"))
            .map(|(i, _)| i)
            .collect();
        let pick = starts[below(starts.len())];
        let mut lines: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
        serial += 1;
        match below(5) {
            // A VM's field changes.
            0 => {
                lines[pick + 3] =
                    format!("    addresses: [10.9.{}.{}]", serial / 250, serial % 250);
            }
            // An override comes or goes.
            1 => {
                if lines[pick + 1].starts_with("    override") {
                    lines.remove(pick + 1);
                } else {
                    lines.insert(pick + 1, "    override: block".to_owned());
                }
            }
            // A VM is added.
            2 => {
                lines.splice(
                    pick..pick,
                    [
                        format!("  - name: new-{serial}"),
                        "    subscription: sub-1".to_owned(),
                        format!("    interface: new{serial}"),
                    ],
                );
            }
            // A VM goes (if others are left).
            3 if starts.len() > 2 => {
                let end = starts
                    .iter()
                    .find(|&&s| s > pick)
                    .copied()
                    .unwrap_or(lines.len());
                lines.drain(pick..end);
            }
            // Two VMs far apart change at once.
            _ => {
                let other = starts[below(starts.len())];
                lines[pick + 2] = format!("    interface: if{serial}a");
                if other != pick {
                    lines[other + 2] = format!("    interface: if{serial}b");
                }
            }
        }
        let new = lines.join("\n") + "\n";
        let expected = full(&new);
        let change = policy.update(
            Path::new("p.yaml"),
            new.as_bytes().to_vec(),
            sha256_hex(new.as_bytes()),
        );
        match (change, expected) {
            (Ok(change), Ok(expected)) => {
                assert!(matches!(change, Change::Vms { .. }), "{change:?}");
                same(&policy, &expected);
                text = new;
            }
            (Err(_), Err(_)) => {}
            (got, expected) => panic!(
                "update {got:?}, full read {:?}:\n{new}",
                expected.map(|_| ())
            ),
        }
    }
}

/// The agent's reload in two steps: [`prepare`] (off the event loop),
/// then [`Policy::apply`] (on it), gives what `update` gives, and reads at
/// most `MAX_SPLICE` bytes of VMs in `apply`.
#[test]
fn prepared_then_applied() {
    use crate::policy::{Applied, MAX_SPLICE, Prepared, prepare};
    let path = Path::new("p.yaml");
    let old = big_policy(100);
    let mut policy = full(&old).expect("valid");
    let base = policy.base(None);

    assert!(matches!(
        prepare(path, old.as_bytes().to_vec(), Some(&base)),
        Prepared::InForce
    ));
    // One VM changed: put in place by `apply`.
    let new = old.replace("interface: tap7\n", "interface: tap7x\n");
    let prepared = prepare(path, new.as_bytes().to_vec(), Some(&base));
    assert!(matches!(prepared, Prepared::Splice { .. }), "{prepared:?}");
    let mut other = full(&old).expect("valid");
    match policy.apply(prepared) {
        Applied::Changed {
            change: Change::Vms { at: 6, .. },
            ..
        } => {}
        a => panic!("{a:?}"),
    }
    same(&policy, &full(&new).expect("valid"));
    // A plan made against another version is not applied: read whole.
    let prepared = prepare(path, new.as_bytes().to_vec(), Some(&base));
    let bytes = match other.apply(prepared) {
        Applied::ReadWhole { bytes, .. } => bytes,
        a => panic!("{a:?}"),
    };
    match other.apply(prepare(path, bytes, None)) {
        Applied::Changed {
            change: Change::Whole,
            ..
        } => {}
        a => panic!("{a:?}"),
    }
    same(&other, &policy);
    // The version rejected before is not read again.
    let bad = old.replace("interface: tap7\n", "interface: tap:7\n");
    let base = policy.base(Some(&sha256_hex(bad.as_bytes())));
    assert!(matches!(
        prepare(path, bad.as_bytes().to_vec(), Some(&base)),
        Prepared::Rejected
    ));
    // Invalid: read whole (off the loop) for the diagnostics; the policy
    // stays.
    let base = policy.base(None);
    let bytes = match policy.apply(prepare(path, bad.as_bytes().to_vec(), Some(&base))) {
        Applied::ReadWhole { bytes, .. } => bytes,
        a => panic!("{a:?}"),
    };
    match policy.apply(prepare(path, bytes, None)) {
        Applied::Invalid { error, .. } => {
            assert!(error.to_string().contains("tap:7"), "{error}");
        }
        a => panic!("{a:?}"),
    }
    same(&policy, &full(&new).expect("valid"));
    // More than MAX_SPLICE bytes of VMs changed: read whole, off the loop.
    let many = big_policy(MAX_SPLICE / 100);
    let mut policy = full(&many).expect("valid");
    let changed = many.replace("started: 2021-02-01", "started: 2021-02-02");
    match prepare(path, changed.as_bytes().to_vec(), Some(&policy.base(None))) {
        p @ Prepared::Whole { .. } => {
            assert!(matches!(
                policy.apply(p),
                Applied::Changed {
                    change: Change::Whole,
                    ..
                }
            ));
        }
        p => panic!("{p:?}"),
    }
}
