//! The line reader reads what the streaming reader (and serde_norway) reads,
//! on every file it accepts; and it accepts the plain files it is for.

use super::{
    inputs::{EXAMPLE, PIECES, PLAIN, Rng, repeat_line, replace_value},
    scale::big_policy,
};
use crate::policy::{
    fast,
    raw::{RawPolicy, RawVm},
    stream,
};

fn with_vms(
    read: impl FnOnce(&mut dyn FnMut(usize, RawVm)) -> Option<RawPolicy>,
) -> Option<String> {
    let mut vms = Vec::new();
    let mut raw = read(&mut |i, vm| vms.push((i, vm)))?;
    for (n, (i, _)) in vms.iter().enumerate() {
        assert_eq!(n, *i);
    }
    if !vms.is_empty() {
        raw.vms = Some(vms.into_iter().map(|(_, vm)| vm).collect());
    }
    Some(format!("{raw:?}"))
}

/// What the line reader reads, if it reads the file.
fn fast_read(text: &str) -> Option<String> {
    with_vms(|vm| fast::read(text, vm).map(|(raw, _)| raw))
}

/// What the other readers read, if one does.
fn reference(text: &str) -> Option<String> {
    with_vms(|vm| stream::read(text, vm).ok()).or_else(|| {
        serde_norway::from_str::<RawPolicy>(text)
            .ok()
            .map(|raw| format!("{raw:?}"))
    })
}

#[test]
fn plain_files_are_read_line_by_line() {
    for text in [
        PLAIN,
        EXAMPLE,
        &big_policy(50),
        "version: 1\nvms:\n",
        "vms:\nversion: 1\n",
    ] {
        let fast = fast_read(text).unwrap_or_else(|| panic!("not read by lines:\n{text}"));
        assert_eq!(Some(fast), reference(text), "{text}");
    }
    let (_, layout) = fast::read(PLAIN, &mut |_, _| {}).expect("plain");
    let starts: Vec<usize> = layout.starts.iter().map(|&s| s as usize).collect();
    for start in &starts {
        assert!(PLAIN[*start..].starts_with("  - name: "), "{start}");
    }
    assert_eq!((starts.len(), layout.column), (3, 2));
    assert_eq!(layout.end as usize, PLAIN.len());
}

#[test]
fn unusual_files_are_left_to_the_other_readers() {
    for text in [
        "version: 1\nvms:\n  - {name: a, interface: tap0}\n",
        "version: 1\nvms:\n  - name: a\n    interface: \"t\\x61p\"\n",
        "version: 1\nvms:\n  - name: a b\n",
        "version: 1\nvms:\n  - name: a\n      subscription: s\n",
        "version: 1\nvms:\n  -   name: a\n      subscription: s\n",
        "version: 1\nvms:\n  - name: a\n    bogus: 1\n",
        "version: 1\nvms:\n  - name: a\n    name: b\n",
        "version: 1\nvms:\n  - name: &x a\n",
        "version: 1\nvms:\n  - name: a\n\tsubscription: s\n",
        "version: 1\nvms:\n  - name: |\n      a\n",
        "version: 1\nvms:\n  - name: a\n---\nversion: 1\n",
        "--- !!map\nversion: 1\nvms:\n  - name: a\n",
        "version: 1\nvms:\n  - name: é\n",
        "version: 1\nvms: []\n",
        "version: 1\nvms:\n- name: a\nvms:\n- name: b\n",
    ] {
        assert_eq!(fast_read(text), None, "{text}");
    }
}

/// Random edits of plain files: wherever the line reader accepts one, it
/// reads what the other readers read.
#[test]
fn edited_files_read_alike() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let bases = [
        PLAIN.to_owned(),
        big_policy(3),
        "vms:\n- name: a\n  interface: t\nversion: 1\n".to_owned(),
    ];
    let mut accepted = 0;
    for round in 0..10_000 {
        let mut text = bases[round % bases.len()].clone();
        for _ in 0..=rng.below(3) {
            let at = rng.below(text.len() + 1);
            match rng.below(5) {
                // A value replaced.
                3 | 4 => replace_value(&mut rng, &mut text, &['\n']),
                0 => text.insert_str(at, PIECES[rng.below(PIECES.len())]),
                1 if at < text.len() => {
                    text.remove(at);
                }
                _ => repeat_line(&mut rng, &mut text, at),
            }
        }
        if let Some(fast) = fast_read(&text) {
            accepted += 1;
            assert_eq!(
                Some(&fast),
                reference(&text).as_ref(),
                "the line reader reads this differently:\n{text}"
            );
        }
    }
    // Most edits keep the file plain enough.
    assert!(accepted > 500, "only {accepted} edited files read by lines");
}
