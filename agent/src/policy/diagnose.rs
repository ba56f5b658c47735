//! What a policy file that could not be read says: every problem at its
//! line and column, in file order, within the cap on diagnostics.
//!
//! Invariants: positions are found by one walk of the file, only when
//! there is an error ([`super::locate`]); when serde_norway gave up, every
//! duplicate key, unknown field and extra document is reported (not only
//! the first), and serde's own message only when none of those is it.

use super::{
    error::{Diagnostic, PolicyError},
    limits,
    locate::{FoundKind, Loc, Pos, lint, resolve},
    validate::Issue,
};

/// The issues validation found (and how many more it only counted), at
/// their lines and columns, in file order.
pub(super) fn invalid(
    text: &str,
    issues: Vec<Issue>,
    dropped: usize,
    diagnostic: impl Fn(Pos, String) -> Diagnostic,
) -> PolicyError {
    let mut locs: Vec<&Loc> = Vec::with_capacity(issues.len() * 2);
    for issue in &issues {
        locs.push(&issue.at);
        if let Some(first) = &issue.first {
            locs.push(first);
        }
    }
    let mut positions = resolve(text, &locs).into_iter();
    let mut found: Vec<(Pos, String)> = issues
        .into_iter()
        .map(|issue| {
            let pos = positions.next().unwrap_or(Pos::START);
            let message = match issue.first {
                Some(_) => {
                    let first = positions.next().unwrap_or(Pos::START);
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
}

/// When serde gave up: every duplicate key, unknown field and extra document
/// in the file (or its syntax error), and serde's own error unless one of
/// those is it.
pub(super) fn serde_failed(
    text: &str,
    error: &serde_norway::Error,
    diagnostic: impl Fn(Pos, String) -> Diagnostic,
) -> Vec<Diagnostic> {
    let found = lint(text);
    let pos = error.location().map_or(Pos::START, |l| Pos {
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
    let covered = found
        .iter()
        .any(|f| matches!(f.kind, FoundKind::Syntax | FoundKind::ExtraDocument))
        || (!found.is_empty()
            && (message.contains("unknown field") || message.contains("duplicate field")));
    let mut out: Vec<(Pos, String)> = found.into_iter().map(|f| (f.pos, f.message)).collect();
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
pub(super) fn too_large_for_serde(
    text: &str,
    stopped: Pos,
    diagnostic: impl Fn(Pos, String) -> Diagnostic,
) -> Vec<Diagnostic> {
    let found = lint(text);
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
pub(super) fn guarded(
    text: &str,
    diagnostic: impl Fn(Pos, String) -> Diagnostic,
) -> Result<(), PolicyError> {
    let found = limits::guard(text);
    let found: Vec<Diagnostic> = if !found.breaches.is_empty() {
        found
            .breaches
            .into_iter()
            .map(|b| diagnostic(b.pos, b.message))
            .collect()
    } else if found.syntax_error {
        lint(text)
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
