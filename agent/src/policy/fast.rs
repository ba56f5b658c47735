//! The quickest way to read a policy file whose VMs are written plainly,
//! one `key: value` a line, as a generated policy of many VMs is:
//!
//! ```yaml
//! vms:
//!   - name: web-1
//!     subscription: contoso-prod
//!     interface: tap-web1     # a comment
//!     addresses: [10.0.0.4, "fd00::4"]
//! ```
//!
//! The file is cut in three at the line `vms:`: what comes before it (the
//! header) and after its list (the trailer) are read by [`stream`], each on
//! its own; the list between is read here, a line at a time, without a
//! YAML parser. Only lines whose meaning is plain are read this way: an item
//! (`- key: value` at the list's column), a field of it (`key: value` two
//! columns further in), a blank line or a comment. A value is a plain scalar
//! of a few safe characters, or a quoted one without escapes, or (for
//! `addresses`) a one-line flow list of those. Anything else (another shape,
//! a tab, a non-ASCII byte, an anchor, a document marker in the header or
//! trailer, a duplicate or unknown key) gives `None`, and the caller reads
//! the file the usual way: the result of the two ways is the same (the
//! tests compare them on many files), this one is only faster and tells
//! where each VM is in the text ([`Layout`]), which is what lets a changed
//! file be read VM by VM ([`super::update`]).

use super::{
    limits::MAX_SCALAR,
    raw::{Field, RawPolicy, RawVm},
    source::Layout,
    stream,
};

/// Reads `text`, its VMs going to `vm` one at a time with their index; or
/// `None` (some VMs may have gone to `vm` already).
pub fn read(text: &str, vm: &mut dyn FnMut(usize, RawVm)) -> Option<(RawPolicy, Layout)> {
    // Printable ASCII and newlines only: a tab, a CR or a control
    // character (which serde_norway's parser refuses, even in a comment)
    // leaves the file to the other readers.
    let printable = |b: &u8| (0x20..0x7f).contains(b) || *b == b'\n';
    if !text.as_bytes().iter().all(printable) || u32::try_from(text.len()).is_err() {
        return None;
    }
    let at = vms_line(text)?;
    let header = &text[..at];
    let list_start = (at + "vms:".len() + 1).min(text.len());
    if !plain_part(header) {
        return None;
    }
    let mut raw = RawPolicy::default();
    let mut seen: Vec<String> = Vec::new();
    stream::read_part(header, true, &mut raw, &mut seen, &mut |_, _| {})?;
    if seen.iter().any(|k| k == "vms") {
        return None;
    }
    seen.push("vms".to_owned());

    let mut list = List::new(None);
    let mut index = 0;
    let end = list.scan(text, list_start, &mut |_, item| {
        vm(index, item);
        index += 1;
    })?;
    let trailer = &text[end..];
    if !plain_part(trailer) {
        return None;
    }
    stream::read_part(trailer, true, &mut raw, &mut seen, &mut |_, _| {})?;
    Some((
        raw,
        Layout {
            starts: list.starts,
            end: u32::try_from(end).ok()?,
            column: u32::try_from(list.column.unwrap_or(0)).ok()?,
        },
    ))
}

/// Reads `text[from..to]` as items of a list at `column` (a part of a list
/// [`read`] read before): the items, each with its start. `None` unless the
/// part is whole items and nothing else.
pub fn read_items(
    text: &str,
    from: usize,
    to: usize,
    column: usize,
) -> Option<Vec<(usize, RawVm)>> {
    let part = text.get(..to)?;
    let printable = |b: &u8| (0x20..0x7f).contains(b) || *b == b'\n';
    if !part.get(from..)?.as_bytes().iter().all(printable) {
        return None;
    }
    let mut list = List::new(Some(column));
    let mut items = Vec::new();
    let end = list.scan(part, from, &mut |start, item| items.push((start, item)))?;
    (end == to).then_some(items)
}

/// Where the line `vms:` starts: at the start of a line, alone on it.
fn vms_line(text: &str) -> Option<usize> {
    text.match_indices("vms:").map(|(i, _)| i).find(|&i| {
        (i == 0 || text.as_bytes()[i - 1] == b'\n')
            && matches!(text.as_bytes().get(i + 4), None | Some(b'\n'))
    })
}

/// Whether a header or trailer can be read alone: no document markers or
/// directives (which would make it another document), no tab or CR.
fn plain_part(text: &str) -> bool {
    !text.contains(['\t', '\r'])
        && text.split('\n').all(|line| {
            !line.starts_with("---") && !line.starts_with("...") && !line.starts_with('%')
        })
}

/// The reading of one list.
struct List {
    /// The items' column, once the first item is seen.
    column: Option<usize>,
    starts: Vec<u32>,
}

impl List {
    fn new(column: Option<usize>) -> Self {
        Self {
            column,
            starts: Vec::new(),
        }
    }

    /// Reads items from `from` until the list ends (a line at column 0
    /// that is not an item, or the end of `text`); returns where it ended.
    /// Each item goes to `each` with the start of its line.
    fn scan(
        &mut self,
        text: &str,
        from: usize,
        each: &mut dyn FnMut(usize, RawVm),
    ) -> Option<usize> {
        let mut pos = from;
        let mut item: Option<(usize, Item)> = None;
        let end = loop {
            if pos >= text.len() {
                break text.len();
            }
            let line_end = text[pos..].find('\n').map_or(text.len(), |i| pos + i);
            let line = &text[pos..line_end];
            if line.contains(['\t', '\r']) {
                return None;
            }
            let rest = line.trim_start_matches(' ');
            let indent = line.len() - rest.len();
            let next = (line_end + 1).min(text.len());
            if rest.is_empty() || rest.starts_with('#') {
                pos = next;
                continue;
            }
            let column = match self.column {
                Some(c) => c,
                None if rest.starts_with("- ") => {
                    self.column = Some(indent);
                    indent
                }
                // `vms:` with no list after it.
                None if indent == 0 => break pos,
                None => return None,
            };
            if indent == column && rest.starts_with("- ") {
                let pair = &rest[2..];
                if pair.starts_with(' ') {
                    // `-   key:` puts the item's keys at another column.
                    return None;
                }
                if let Some((start, done)) = item.take() {
                    each(start, done.finish());
                }
                self.starts.push(u32::try_from(pos).ok()?);
                let mut fields = Item::default();
                fields.pair(pair)?;
                item = Some((pos, fields));
            } else if indent == column + 2
                && let Some((_, fields)) = item.as_mut()
            {
                fields.pair(rest)?;
            } else if indent == 0 && !rest.starts_with('-') {
                break pos;
            } else {
                return None;
            }
            pos = next;
        };
        if let Some((start, done)) = item.take() {
            each(start, done.finish());
        }
        Some(end)
    }
}

/// The fields of one VM as they are read.
#[derive(Default)]
struct Item {
    vm: RawVm,
    seen: u8,
}

impl Item {
    /// One `key: value` (the text after the indentation and any `- `).
    fn pair(&mut self, text: &str) -> Option<()> {
        let (key, value) = text.split_once(':')?;
        let bit = match key {
            "name" => 1,
            "subscription" => 2,
            "interface" => 4,
            "addresses" => 8,
            "started" => 16,
            "override" => 32,
            _ => return None,
        };
        if self.seen & bit != 0 {
            return None;
        }
        self.seen |= bit;
        // `key:` then the end of the line, or at least one space.
        if !value.is_empty() && !value.starts_with(' ') {
            return None;
        }
        let value = value.trim_start_matches(' ');
        if key == "addresses" {
            self.vm.addresses = if value.is_empty() || value.starts_with('#') {
                None
            } else {
                Some(list(value)?)
            };
            return Some(());
        }
        let field = if value.is_empty() || value.starts_with('#') {
            Field::Null
        } else {
            let (field, rest) = scalar(value, false)?;
            end_of_line(rest)?;
            field
        };
        match key {
            "name" => self.vm.name = field,
            "subscription" => self.vm.subscription = field,
            "interface" => self.vm.interface = field,
            "started" => self.vm.started = field,
            _ => self.vm.override_verdict = field,
        }
        Some(())
    }

    fn finish(self) -> RawVm {
        self.vm
    }
}

/// What may follow a value: nothing, spaces, or spaces and a comment.
fn end_of_line(rest: &str) -> Option<()> {
    let after = rest.trim_start_matches(' ');
    (after.is_empty() || after.starts_with('#') && after.len() < rest.len()).then_some(())
}

/// `addresses`: a flow list on one line of scalars.
fn list(value: &str) -> Option<Vec<Field>> {
    let mut rest = value.strip_prefix('[')?.trim_start_matches(' ');
    let mut items = Vec::new();
    if let Some(after) = rest.strip_prefix(']') {
        end_of_line(after)?;
        return Some(items);
    }
    loop {
        let (item, after) = scalar(rest, true)?;
        items.push(item);
        let after = after.trim_start_matches(' ');
        if let Some(after) = after.strip_prefix(']') {
            end_of_line(after)?;
            return Some(items);
        }
        rest = after.strip_prefix(',')?.trim_start_matches(' ');
        if rest.starts_with(']') || rest.starts_with(',') {
            return None;
        }
    }
}

/// A scalar at the start of `text`, and what follows it. Plain scalars are
/// of letters, digits and `_ . / - : + @` (in a flow list: `_ . / - :`),
/// start with a letter, a digit, `_`, `.` or `/`, never have a `:` before
/// a space or at their end, and end at a space (or `,` `]` in a list);
/// `null`, `Null`, `NULL` and `~` are null. Quoted ones have no escape.
fn scalar(text: &str, in_list: bool) -> Option<(Field, &str)> {
    let bytes = text.as_bytes();
    let (field, rest) = match bytes.first()? {
        b'"' => {
            let close = text[1..].find(['"', '\\'])? + 1;
            if bytes[close] != b'"' {
                return None;
            }
            (Field::Text(text[1..close].to_owned()), &text[close + 1..])
        }
        b'\'' => {
            let close = text[1..].find('\'')? + 1;
            if bytes.get(close + 1) == Some(&b'\'') {
                // `''` is a quote inside.
                return None;
            }
            (Field::Text(text[1..close].to_owned()), &text[close + 1..])
        }
        first => {
            let stops: &[u8] = if in_list { b" ,]" } else { b" " };
            let len = bytes
                .iter()
                .position(|b| stops.contains(b))
                .unwrap_or(bytes.len());
            let word = &text[..len];
            if matches!(word, "null" | "Null" | "NULL" | "~") {
                return Some((Field::Null, &text[len..]));
            }
            let safe = |b: &u8| {
                b.is_ascii_alphanumeric()
                    || matches!(b, b'_' | b'.' | b'/' | b'-' | b':')
                    || !in_list && matches!(b, b'+' | b'@')
            };
            let starts_well = first.is_ascii_alphanumeric() || matches!(first, b'_' | b'.' | b'/');
            if !starts_well || !word.bytes().all(|b| safe(&b)) || word.ends_with(':') {
                return None;
            }
            (Field::Text(word.to_owned()), &text[len..])
        }
    };
    // A value beyond the bound: the other readers say so.
    match &field {
        Field::Text(t) if t.len() > MAX_SCALAR => None,
        _ => Some((field, rest)),
    }
}
