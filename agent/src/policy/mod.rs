//! The policy engine: reads and validates a policy file (SPEC, "Policy
//! file"), and decides each VM's verdict at a time (SPEC, "A VM's verdict at
//! time T"). Pure: no kernel, no clock; [`load`] is the only I/O.
//!
//! Reading is two steps. The structure is read into [`raw`] types that keep
//! every scalar as text: by [`fast`] when the VMs are written plainly (a
//! line at a time, no YAML parser), else by [`stream`] (serde_norway, one
//! item at a time, so that a large file does not need many times its size in
//! memory), else by serde_norway's own reader (for its precise errors).
//! [`validate`] then checks every value and reports every problem. Lines and
//! columns are looked up ([`locate`]) only when there is an error to report,
//! so a large valid file costs no location table. A changed file is read
//! VM by VM when only VMs changed ([`update`]).
//!
//! The verdicts come in two forms: [`Verdicts`], a byte a VM (what the
//! agent keeps), and [`Desired`], every VM with its reason; a reason is
//! found again when it is asked for ([`Policy::decide`]).

mod agree;
mod fast;
pub mod limits;
mod locate;
mod model;
mod names;
mod offers;
mod raw;
pub mod report;
mod stream;
mod update;
mod validate;
mod verdict;

#[cfg(test)]
mod tests;

use std::{
    fmt,
    path::{Path, PathBuf},
};

use sha2::{Digest, Sha256};
use thiserror::Error;

pub use agree::{ReadBy, readers_agree};
pub use limits::{DEFAULT_MAX_POLICY_BYTES, Limits};
pub use model::{
    Action, DEFAULT_CUTOFF, DEFAULT_PORTS, Enforcement, Exemption, ExemptionRule, Hook, MAX_PORTS,
    Mode, Offer, Policy, Restricted, Subscription, Verdict, Vm,
};
pub use names::{MAX_IFNAME, check_ifname, check_name};
pub use offers::BUILTIN_OFFERS;
pub use update::{Applied, Base, Change, MAX_SPLICE, Prepared, prepare};
pub use validate::{parse_date, parse_prefix, parse_time};
pub use verdict::{
    Desired, Enforced, Facts, InterfaceVerdict, Reason, Restriction, Since, UNKNOWN_INTERFACE_CODE,
    Verdicts, VmVerdict, evaluate, fmt_time, unknown_reason, verdicts,
};

/// One problem in a policy file, at a 1-based line and column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

#[derive(Debug, Error)]
pub enum PolicyError {
    #[error("reading the policy {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Every problem found, in file order. Displays one
    /// `file:line:col: message` a line.
    #[error("{}", lines(.0))]
    Invalid(Vec<Diagnostic>),
}

fn lines(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl PolicyError {
    /// The diagnostics, if the policy was read but is invalid.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            PolicyError::Invalid(d) => d,
            PolicyError::Io { .. } => &[],
        }
    }
}

/// Reads and validates the policy at `path`, within `limits`. Messages
/// name the file as `path` is given.
pub fn load(path: &Path, limits: Limits) -> Result<Policy, PolicyError> {
    from_vec(path, read(path, limits)?)
}

/// The bytes of the policy file at `path`: a regular file within the size
/// cap ([`limits::read`]).
pub fn read(path: &Path, limits: Limits) -> Result<Vec<u8>, PolicyError> {
    limits::read(path, limits)
}

/// Parses a policy file's bytes, already read from `path` (which is only
/// used in messages).
pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Policy, PolicyError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => parse(&path.display().to_string(), text),
        Err(e) => Err(not_utf8(path, bytes, &e)),
    }
}

/// Parses a policy file's bytes, already read from `path`; the policy keeps
/// them, so that a later version of the file can be read VM by VM
/// ([`Policy::update`]).
pub fn from_vec(path: &Path, bytes: Vec<u8>) -> Result<Policy, PolicyError> {
    from_vec_hashed(path, bytes, None)
}

/// [`from_vec`], the sha256 of the bytes given if it is known.
fn from_vec_hashed(
    path: &Path,
    bytes: Vec<u8>,
    hash: Option<String>,
) -> Result<Policy, PolicyError> {
    let text =
        String::from_utf8(bytes).map_err(|e| not_utf8(path, e.as_bytes(), &e.utf8_error()))?;
    let (mut policy, layout) = parse_text(&path.display().to_string(), &text, hash)?;
    policy.source = Some(std::sync::Arc::new(update::Source { text, layout }));
    Ok(policy)
}

fn not_utf8(path: &Path, bytes: &[u8], e: &std::str::Utf8Error) -> PolicyError {
    let valid = &bytes[..e.valid_up_to()];
    let line = valid.split(|b| *b == b'\n').count();
    let line_start = valid.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let column = String::from_utf8_lossy(&valid[line_start..])
        .chars()
        .count()
        + 1;
    PolicyError::Invalid(vec![Diagnostic {
        file: path.display().to_string(),
        line,
        column,
        message: "the policy file is not UTF-8 text".to_owned(),
    }])
}

/// About how many VMs a policy file has, without reading it: the `name:`
/// keys in it (each VM has one; subscriptions have none). For sizing what
/// must be ready before the file is read; a file that holds more is fine.
pub fn estimate_vms(bytes: &[u8]) -> usize {
    memchr::memmem::find_iter(bytes, b"name:").count()
}

/// Validates the policy text `text`; `file` names it in messages.
pub fn parse(file: &str, text: &str) -> Result<Policy, PolicyError> {
    parse_text(file, text, None).map(|(policy, _)| policy)
}

/// [`parse`] with serde_norway's reader only (the reference the other
/// readers are checked against: [`agree`]).
pub fn parse_by_serde(file: &str, text: &str) -> Result<Policy, PolicyError> {
    parse_with(file, text, None, Readers::SerdeOnly).map(|(policy, _)| policy)
}

/// The policy of `text`, and where its VMs are when [`fast`] read it.
fn parse_text(
    file: &str,
    text: &str,
    hash: Option<String>,
) -> Result<(Policy, Option<fast::Layout>), PolicyError> {
    parse_with(file, text, hash, Readers::All)
}

/// Which readers [`parse_with`] may use.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Readers {
    All,
    /// serde_norway's own only ([`agree`] compares the readers).
    SerdeOnly,
}

fn parse_with(
    file: &str,
    text: &str,
    hash: Option<String>,
    readers: Readers,
) -> Result<(Policy, Option<fast::Layout>), PolicyError> {
    let diagnostic = |pos: locate::Pos, message: String| Diagnostic {
        file: file.to_owned(),
        line: pos.line,
        column: pos.column,
        message,
    };
    if locate::is_empty_document(text) {
        return Err(PolicyError::Invalid(vec![diagnostic(
            locate::Pos::START,
            "the policy file is empty; it needs at least `version: 1`".to_owned(),
        )]));
    }
    // The line reader for plainly written VMs; the streaming reader for any
    // other well-formed file; serde_norway's own (which holds the whole
    // document) for its precise errors otherwise, once the file is known to
    // be within the structural bounds. Each starts afresh.
    let mut validator = validate::Validator::new();
    let mut layout = None;
    let fast = match readers {
        Readers::All => fast::read(text, &mut |i, vm| validator.vm(i, vm)),
        Readers::SerdeOnly => None,
    };
    let raw = if let Some((raw, found)) = fast {
        layout = Some(found);
        raw
    } else {
        validator = validate::Validator::new();
        let streamed = match readers {
            Readers::All => stream::read(text, &mut |i, vm| validator.vm(i, vm)),
            Readers::SerdeOnly => Err(locate::Pos::START),
        };
        match streamed {
            Ok(raw) => raw,
            Err(stopped) => {
                guarded(text, diagnostic)?;
                if text.len() > limits::MAX_SERDE_BYTES {
                    return Err(PolicyError::Invalid(too_large_for_serde(
                        text, stopped, diagnostic,
                    )));
                }
                match serde_norway::from_str::<raw::RawPolicy>(text) {
                    Ok(raw) => {
                        validator = validate::Validator::new();
                        raw
                    }
                    Err(e) => {
                        return Err(PolicyError::Invalid(serde_failed(text, &e, diagnostic)));
                    }
                }
            }
        }
    };
    let hash = hash.unwrap_or_else(|| sha256_hex(text.as_bytes()));
    let policy = validator.finish(raw, hash).map_err(|(issues, dropped)| {
        let mut locs: Vec<&locate::Loc> = Vec::with_capacity(issues.len() * 2);
        for issue in &issues {
            locs.push(&issue.at);
            if let Some(first) = &issue.first {
                locs.push(first);
            }
        }
        let mut positions = locate::resolve(text, &locs).into_iter();
        let mut found: Vec<(locate::Pos, String)> = issues
            .into_iter()
            .map(|issue| {
                let pos = positions.next().unwrap_or(locate::Pos::START);
                let message = match issue.first {
                    Some(_) => {
                        let first = positions.next().unwrap_or(locate::Pos::START);
                        format!("{} (first at line {})", issue.message, first.line)
                    }
                    None => issue.message,
                };
                (pos, message)
            })
            .collect();
        found.sort_by_key(|(pos, _)| *pos);
        PolicyError::Invalid(limits::cap_counted(
            found
                .into_iter()
                .map(|(pos, message)| diagnostic(pos, message))
                .collect(),
            dropped,
        ))
    })?;
    Ok((policy, layout))
}

/// When serde gave up: every duplicate key, unknown field and extra document
/// in the file (or its syntax error), and serde's own error unless one of
/// those is it.
fn serde_failed(
    text: &str,
    error: &serde_norway::Error,
    diagnostic: impl Fn(locate::Pos, String) -> Diagnostic,
) -> Vec<Diagnostic> {
    let found = locate::lint(text);
    let pos = error
        .location()
        .map_or(locate::Pos::START, |l| locate::Pos {
            line: l.line().max(1),
            column: l.column().max(1),
        });
    let mut message = error.to_string();
    if let Some(l) = error.location() {
        let suffix = format!(" at line {} column {}", l.line(), l.column());
        if let Some(i) = message.find(&suffix) {
            message.replace_range(i..i + suffix.len(), "");
        }
    }
    let covered = found.iter().any(|f| {
        matches!(
            f.kind,
            locate::FoundKind::Syntax | locate::FoundKind::ExtraDocument
        )
    }) || (!found.is_empty()
        && (message.contains("unknown field") || message.contains("duplicate field")));
    let mut out: Vec<(locate::Pos, String)> =
        found.into_iter().map(|f| (f.pos, f.message)).collect();
    if !covered {
        out.push((pos, message));
    }
    out.sort_by_key(|(pos, _)| *pos);
    limits::cap(out.into_iter().map(|(p, m)| diagnostic(p, m)).collect())
}

/// A file too large for serde_norway's reader (which holds about twenty
/// times the file) that the streaming reader could not read: every
/// duplicate key, unknown field and extra document in it, or, when there
/// is none, where the streaming reader stopped.
fn too_large_for_serde(
    text: &str,
    stopped: locate::Pos,
    diagnostic: impl Fn(locate::Pos, String) -> Diagnostic,
) -> Vec<Diagnostic> {
    let found = locate::lint(text);
    if !found.is_empty() {
        return limits::cap(
            found
                .into_iter()
                .map(|f| diagnostic(f.pos, f.message))
                .collect(),
        );
    }
    vec![diagnostic(
        stopped,
        format!(
            "this is not a policy's structure (a value of the wrong shape, or a null where a mapping or list belongs); the file is over {} bytes, too large for a more precise message: check the part from here",
            limits::MAX_SERDE_BYTES
        ),
    )]
}

/// `Ok` when `text` is within the structural bounds, else every breach.
/// A syntax error is reported here too (with every duplicate key and
/// unknown field before it): serde_norway's parser never sees a file that
/// the event parser could not read to its end.
fn guarded(
    text: &str,
    diagnostic: impl Fn(locate::Pos, String) -> Diagnostic,
) -> Result<(), PolicyError> {
    let found = limits::guard(text);
    let found: Vec<Diagnostic> = if !found.breaches.is_empty() {
        found
            .breaches
            .into_iter()
            .map(|b| diagnostic(b.pos, b.message))
            .collect()
    } else if found.syntax_error {
        locate::lint(text)
            .into_iter()
            .map(|f| diagnostic(f.pos, f.message))
            .collect()
    } else {
        Vec::new()
    };
    if found.is_empty() {
        return Ok(());
    }
    Err(PolicyError::Invalid(limits::cap(found)))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(64);
    for b in digest {
        use fmt::Write as _;
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a64(parts: &[&[u8]]) -> u64 {
    let mut h = FNV_OFFSET;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(FNV_PRIME);
        }
    }
    h
}

/// Stable across runs and builds (FNV-1a 64 of `"vm:" + name`); keys the
/// per-VM counters in the kernel.
pub fn vm_key(name: &str) -> u64 {
    fnv1a64(&[b"vm:", name.as_bytes()])
}

/// Same for an interface that belongs to no VM (FNV-1a 64 of `"if:" + ifname`).
pub fn unknown_key(ifname: &str) -> u64 {
    fnv1a64(&[b"if:", ifname.as_bytes()])
}
