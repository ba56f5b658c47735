//! The issues a validation finds, and the checks of single fields that
//! every part of the file shares: a required or optional scalar, an item
//! of a list, a name, a word, a time, a day.
//!
//! Invariants: an issue is kept with the path of what it is about (a line
//! and column are found only when there is an error to report); at most
//! about [`MAX_ERRORS`] issues of VMs are kept, the rest only counted, so
//! memory stays bounded whatever the number of errors; a check that fails
//! records an issue and gives `None`, never a made-up value.

use chrono::{DateTime, NaiveDate, Utc};

use crate::policy::{
    choices::Word,
    limits::MAX_ERRORS,
    locate::{Loc, Path, Seg},
    names::check_name,
    raw::Field,
    values::{parse_date, parse_time},
};

/// One thing wrong with the file, before it has a line and column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issue {
    pub at: Loc,
    pub message: String,
    /// For a duplicate: the first occurrence, whose line the message adds.
    pub first: Option<Loc>,
}

/// A field that is not in the file.
struct Absent;

/// "a, b or c"
fn one_of(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

/// The issues found so far. Only as many are kept as a report can show:
/// once more than [`MAX_ERRORS`] issues of VMs are kept, an issue of a VM
/// after the last of those is only counted (VMs are in file order, so the
/// first issues in the file are all kept), and memory stays bounded
/// whatever the number of errors.
#[derive(Default)]
pub(crate) struct Checker {
    pub(crate) issues: Vec<Issue>,
    /// Issues found and not kept.
    pub(crate) dropped: usize,
    vm_issues: usize,
    last_vm: usize,
}

impl Checker {
    fn push(&mut self, issue: Issue) {
        let path = match &issue.at {
            Loc::Value(p) | Loc::Key(p) => p,
        };
        if let [Seg::Key(k), Seg::Index(i), ..] = path.as_slice()
            && k == "vms"
        {
            if self.vm_issues > MAX_ERRORS && *i > self.last_vm {
                self.dropped += 1;
                return;
            }
            self.vm_issues += 1;
            self.last_vm = self.last_vm.max(*i);
        }
        self.issues.push(issue);
    }

    pub(crate) fn error(&mut self, at: Loc, message: String) {
        self.push(Issue {
            at,
            message,
            first: None,
        });
    }

    pub(crate) fn duplicate(&mut self, at: Loc, first: Loc, message: String) {
        self.push(Issue {
            at,
            message,
            first: Some(first),
        });
    }

    /// The text of a field that is there: `Err(Absent)` when it is not,
    /// `None` when it is empty (reported with `empty`: at the value, or at
    /// the key when nothing follows it, `key:`).
    fn present(
        &mut self,
        field: Field,
        empty: impl FnOnce() -> String,
        path: impl Fn() -> Path,
    ) -> Result<Option<String>, Absent> {
        let at = match field {
            Field::Text(t) if !t.is_empty() => return Ok(Some(t)),
            Field::Absent => return Err(Absent),
            Field::Text(_) => Loc::Value(path()),
            Field::Null => Loc::Key(path()),
        };
        self.error(at, empty());
        Ok(None)
    }

    /// A result's value, or its error reported at the value.
    fn valid<T>(&mut self, result: Result<T, String>, path: impl Fn() -> Path) -> Option<T> {
        result
            .map_err(|why| self.error(Loc::Value(path()), why))
            .ok()
    }

    /// A required scalar: its text, or an error (missing: at the mapping
    /// that lacks it; null: at its key; empty: at the value). `whose` names
    /// the mapping ("every VM").
    pub(crate) fn required(
        &mut self,
        field: Field,
        key: &str,
        whose: &str,
        path: impl Fn() -> Path,
    ) -> Option<String> {
        self.present(field, || format!("`{key}` is empty"), &path)
            .unwrap_or_else(|Absent| {
                let mut parent = path();
                parent.pop();
                self.error(
                    Loc::Value(parent),
                    format!("missing `{key}`: {whose} needs one"),
                );
                None
            })
    }

    /// An item of a list: its text, or an error for an empty one.
    pub(crate) fn item(
        &mut self,
        field: Field,
        what: &str,
        list: &str,
        path: impl Fn() -> Path,
    ) -> Option<String> {
        match field {
            Field::Text(t) if !t.is_empty() => Some(t),
            _ => {
                self.error(Loc::Value(path()), format!("empty {what} in `{list}`"));
                None
            }
        }
    }

    /// A required name: [`Checker::required`], then [`check_name`].
    pub(crate) fn name(
        &mut self,
        field: Field,
        key: &str,
        whose: &str,
        path: impl Fn() -> Path,
    ) -> Option<String> {
        let text = self.required(field, key, whose, &path)?;
        self.valid(check_name(key, &text).map(|()| text), path)
    }

    /// An optional scalar: `None` when absent; null or empty is an error.
    pub(crate) fn optional(
        &mut self,
        field: Field,
        key: &str,
        path: impl Fn() -> Path,
    ) -> Option<String> {
        let empty = || format!("`{key}` is empty; give a value or leave the field out");
        self.present(field, empty, path).unwrap_or(None)
    }

    /// An optional setting written as one of a few words.
    pub(crate) fn choice<T: Word>(
        &mut self,
        field: Field,
        key: &str,
        path: impl Fn() -> Path,
    ) -> Option<T> {
        let text = self.optional(field, key, &path)?;
        let value = T::from_yaml(&text);
        if value.is_none() {
            let words: Vec<&str> = T::ALL.iter().map(|v| v.as_str()).collect();
            self.error(
                Loc::Value(path()),
                format!("bad `{key}` `{text}`: expected {}", one_of(&words)),
            );
        }
        value
    }

    pub(crate) fn time(
        &mut self,
        text: &str,
        key: &str,
        path: impl Fn() -> Path,
    ) -> Option<DateTime<Utc>> {
        let time = parse_time(text).map_err(|e| format!("bad `{key}` time: {e}"));
        self.valid(time, path)
    }

    pub(crate) fn date(
        &mut self,
        text: &str,
        key: &str,
        path: impl Fn() -> Path,
    ) -> Option<NaiveDate> {
        let day = parse_date(text).map_err(|e| format!("bad `{key}` date: {e}"));
        self.valid(day, path)
    }
}
