//! Inputs shared by the tests of the readers: plain and example policy
//! files, and random edits of them (a fixed seed: the same files every
//! run).

/// The example policy shipped in deploy/.
pub const EXAMPLE: &str = include_str!("../../../../deploy/policy.example.yaml");

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

/// A small random generator (xorshift), so that the test needs no crate and
/// gives the same files every run.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Bits of YAML that change what a line means.
pub const PIECES: &[&str] = &[
    " ", "  ", "\n", "\n  ", "\n    ", "- ", "-", ":", ": ", "#", " #", "\"", "'", "[", "]", "{",
    "}", ",", "&a ", "*a", "!!str ", "|", ">", "~", "null", "\t", "---\n", "...\n", "?", "name",
    "vms:\n", "a", "1", "%", "\\", "@", "+", "/", ".",
];

/// Values that mean something else than their text, or nearly.
pub const VALUES: &[&str] = &[
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

/// Replaces a value (what follows a `: `) chosen at random, up to the first
/// of `ends` (or the end of the text), by one of [`VALUES`].
pub fn replace_value(rng: &mut Rng, text: &mut String, ends: &[char]) {
    let values: Vec<usize> = text.match_indices(": ").map(|(i, _)| i + 2).collect();
    if let Some(&start) = values.get(rng.below(values.len().max(1))) {
        let end = text[start..].find(ends).map_or(text.len(), |i| start + i);
        text.replace_range(start..end, VALUES[rng.below(VALUES.len())]);
    }
}

/// Repeats the line that holds `at` somewhere at random (a line repeated,
/// or moved).
pub fn repeat_line(rng: &mut Rng, text: &mut String, at: usize) {
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let end = text[at..].find('\n').map_or(text.len(), |i| at + i + 1);
    let line = text[start..end].to_owned();
    let to = rng.below(text.len() + 1);
    if text.is_char_boundary(to) {
        text.insert_str(to, &line);
    }
}
