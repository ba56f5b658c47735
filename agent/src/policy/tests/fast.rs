//! The line reader reads what the streaming reader (and serde_norway) reads,
//! on every file it accepts; and it accepts the plain files it is for.

use super::scale::big_policy;
use crate::policy::{
    fast,
    raw::{RawPolicy, RawVm},
    stream,
};

const EXAMPLE: &str = include_str!("../../../../deploy/policy.example.yaml");

/// A policy in the shape the benchmarks and generators write.
pub const PLAIN: &str = "version: 1
enforcement:
  ports: [25]
  attach: [\"tap*\"]
  allow_destinations: [198.51.100.25/32]
subscriptions:
  - id: dev-msdn
    offer: msdn
    created: 2019-04-02
  - id: prod-payg
    offer: pay-as-you-go
    created: 2020-05-01
    exemption:
      granted: 2021-01-10T12:00:00Z
vms:
  - name: vm-a
    subscription: dev-msdn
    interface: tap-a
  # a comment
  - name: vm-b
    subscription: prod-payg
    interface: \"tap-b\"   # quoted
    started: 2021-01-11T08:00:00Z
    addresses: [10.0.0.4, \"fd00::4\", fd00::5]

  - name: 'vm-c'
    subscription: prod-payg
    interface: tap-c
    override: allow
    addresses: []
";

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

/// A small random generator (xorshift), so that the test needs no crate and
/// gives the same files every run.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub(super) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Bits of YAML that change what a line means.
pub(super) const PIECES: &[&str] = &[
    " ", "  ", "\n", "\n  ", "\n    ", "- ", "-", ":", ": ", "#", " #", "\"", "'", "[", "]", "{",
    "}", ",", "&a ", "*a", "!!str ", "|", ">", "~", "null", "\t", "---\n", "...\n", "?", "name",
    "vms:\n", "a", "1", "%", "\\", "@", "+", "/", ".",
];

/// Values that mean something else than their text, or nearly.
pub(super) const VALUES: &[&str] = &[
    "~",
    "null",
    "Null",
    "NULL",
    "nul",
    "",
    " ",
    "\"\"",
    "''",
    "'a''b'",
    "\"a\\\"b\"",
    "\"a b\"",
    "'a b'",
    "[]",
    "[ ]",
    "[~]",
    "[null]",
    "[a, ]",
    "[a,b]",
    "[a ,b]",
    "[,a]",
    "[a",
    "a]",
    "a:",
    "a: b",
    "a:b",
    "-a",
    "- a",
    "a #c",
    "a#c",
    "a  #c",
    "\"x\" #c",
    "\"x\"#c",
    "'x' #c",
    "true",
    "0x1",
    "1e3",
    "[10.0.0.1,fd00::]",
    "[fd00::, a]",
    "[\"fd00::1\"]",
    "[fd00::1]",
    "@a",
    "a@b",
    "+1",
    "a+b",
    "a b",
    ".a",
    "/a",
    "_a",
    "a.b/c-d:e",
    "2021-01-11T08:00:00Z",
    "allow",
    "{}",
    "{a: b}",
    "*a",
    "&a b",
    "!!str a",
    "|",
    ">-",
    "?",
    "%a",
    "`a`",
    "a,b",
    "a]b",
    "a[b",
];

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
                3 | 4 => {
                    let values: Vec<usize> = text.match_indices(": ").map(|(i, _)| i + 2).collect();
                    if let Some(&start) = values.get(rng.below(values.len().max(1))) {
                        let end = text[start..].find('\n').map_or(text.len(), |i| start + i);
                        text.replace_range(start..end, VALUES[rng.below(VALUES.len())]);
                    }
                }
                0 => text.insert_str(at, PIECES[rng.below(PIECES.len())]),
                1 if at < text.len() => {
                    text.remove(at);
                }
                _ => {
                    // A line repeated, or moved.
                    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
                    let end = text[at..].find('\n').map_or(text.len(), |i| at + i + 1);
                    let line = text[start..end].to_owned();
                    let to = rng.below(text.len() + 1);
                    if text.is_char_boundary(to) {
                        text.insert_str(to, &line);
                    }
                }
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
