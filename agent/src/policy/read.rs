//! Reading a policy file: its bytes from disk within the limits, then its
//! structure by the quickest reader that can read it, then validation.
//!
//! Invariants: the three readers ([`fast`], [`stream`], serde_norway's own)
//! give the same policy or the same diagnostics ([`super::agree`] checks
//! it): each starts afresh, and the next is tried only when one cannot
//! read the file; serde_norway's reader (which holds the whole document)
//! only sees a file within the structural bounds and
//! [`limits::MAX_SERDE_BYTES`]; lines and columns are looked up only when
//! there is an error to report ([`super::diagnose`]).

use std::{path::Path, sync::Arc};

use super::{
    diagnose,
    error::{Diagnostic, PolicyError},
    fast,
    keys::sha256_hex,
    limits::{self, Limits},
    locate,
    model::Policy,
    raw,
    source::{Layout, Source},
    stream,
    validate::Validator,
};

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
pub(crate) fn from_vec_hashed(
    path: &Path,
    bytes: Vec<u8>,
    hash: Option<String>,
) -> Result<Policy, PolicyError> {
    let text =
        String::from_utf8(bytes).map_err(|e| not_utf8(path, e.as_bytes(), &e.utf8_error()))?;
    let (mut policy, layout) = parse_text(&path.display().to_string(), &text, hash)?;
    policy.source = Some(Arc::new(Source { text, layout }));
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
) -> Result<(Policy, Option<Layout>), PolicyError> {
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
) -> Result<(Policy, Option<Layout>), PolicyError> {
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
    let mut validator = Validator::new();
    let mut layout = None;
    let fast = match readers {
        Readers::All => fast::read(text, &mut |i, vm| validator.vm(i, vm)),
        Readers::SerdeOnly => None,
    };
    let raw = if let Some((raw, found)) = fast {
        layout = Some(found);
        raw
    } else {
        validator = Validator::new();
        let streamed = match readers {
            Readers::All => stream::read(text, &mut |i, vm| validator.vm(i, vm)),
            Readers::SerdeOnly => Err(locate::Pos::START),
        };
        match streamed {
            Ok(raw) => raw,
            Err(stopped) => {
                diagnose::guarded(text, diagnostic)?;
                if text.len() > limits::MAX_SERDE_BYTES {
                    return Err(PolicyError::Invalid(diagnose::too_large_for_serde(
                        text, stopped, diagnostic,
                    )));
                }
                match serde_norway::from_str::<raw::RawPolicy>(text) {
                    Ok(raw) => {
                        validator = Validator::new();
                        raw
                    }
                    Err(e) => {
                        return Err(PolicyError::Invalid(diagnose::serde_failed(
                            text, &e, diagnostic,
                        )));
                    }
                }
            }
        }
    };
    let hash = hash.unwrap_or_else(|| sha256_hex(text.as_bytes()));
    let policy = validator
        .finish(raw, hash)
        .map_err(|(issues, dropped)| diagnose::invalid(text, issues, dropped, diagnostic))?;
    Ok((policy, layout))
}
