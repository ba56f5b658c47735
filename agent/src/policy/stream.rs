//! The quick way to read a valid file, in little memory.
//!
//! `serde_norway::from_str` holds every event of the document (with its
//! position) before it deserialises anything: about fifteen times the file's
//! size for a policy of 100,000 VMs. Here the events stream from
//! saphyr-parser instead, and serde_norway deserialises one small
//! [`Value`] at a time: a section, or one item of `subscriptions` or `vms`.
//! Each VM goes on to validation as soon as it is read.
//!
//! Anything unusual (a syntax error, a duplicate or unknown key, a value of
//! the wrong shape) gives `None`, and the caller reads the file with
//! `serde_norway::from_str`, whose errors carry their positions. So does
//! anything beyond the bounds ([`super::limits`]: an alias, a tag that is
//! not the core schema's, a scalar too long, nesting too deep), which the
//! caller then reports before serde_norway sees the file. Nothing is ever
//! copied: with no aliases, a node is read once.

use saphyr_parser::{Event, Marker, Parser, ScalarStyle, StrInput};
use serde::de::DeserializeOwned;
use serde_norway::{Mapping, Value, from_value};

use super::{
    limits::{MAX_DEPTH, MAX_SCALAR, core_tag},
    locate::Pos,
    raw::{Field, RawPolicy, RawVm},
};

struct Events<'a> {
    parser: Parser<'a, StrInput<'a>>,
    /// Where the last event read starts.
    last: Marker,
    /// Where the section or item being read starts.
    node: Option<Marker>,
}

impl<'a> Events<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            parser: Parser::new_from_str(text),
            last: Marker::new(0, 1, 0),
            node: None,
        }
    }

    fn next(&mut self) -> Option<Event<'a>> {
        match self.parser.next_event() {
            Some(Ok((event, span))) => {
                self.last = span.start;
                Some(event)
            }
            Some(Err(e)) => {
                self.last = *e.marker();
                None
            }
            None => None,
        }
    }

    /// Where reading stopped: the start of the section or item it was in.
    fn stopped(&self) -> Pos {
        let at = self.node.unwrap_or(self.last);
        Pos {
            line: at.line().max(1),
            column: at.col() + 1,
        }
    }

    /// The node that starts with `first`, as a value.
    fn value(&mut self, first: Event<'a>, depth: usize) -> Option<Value> {
        // `depth` counts the collections around this node.
        if depth >= MAX_DEPTH {
            return None;
        }
        let value = match first {
            // Anchors serve nothing without aliases, and the two parsers
            // read their names differently (`&g{`): leave them to
            // serde_norway.
            Event::Scalar(_, _, anchor, _)
            | Event::SequenceStart(anchor, _)
            | Event::MappingStart(anchor, _)
                if anchor != 0 =>
            {
                return None;
            }
            Event::Scalar(text, style, _, tag) => {
                if text.len() > MAX_SCALAR || tag.as_ref().is_some_and(|t| !core_tag(t)) {
                    return None;
                }
                // A plain scalar cannot start with an indicator; the event
                // parser lets some through in flow context (`{a: |}`,
                // `{a: ?}`), which serde_norway's refuses; and the two read
                // indicators inside a plain scalar of several words
                // differently (`[a::? 5]`): leave such files to it.
                if style == ScalarStyle::Plain
                    && (!plain_start(&text) || text.contains(char::is_whitespace))
                {
                    return None;
                }
                let null = style == ScalarStyle::Plain
                    && tag.is_none()
                    && matches!(&*text, "" | "~" | "null" | "Null" | "NULL");
                if null {
                    Value::Null
                } else {
                    // The scanner's buffer can be several times the text:
                    // names are kept for the life of the policy.
                    let mut text = text.into_owned();
                    text.shrink_to_fit();
                    Value::String(text)
                }
            }
            Event::SequenceStart(_, tag) => {
                if tag.as_ref().is_some_and(|t| !core_tag(t)) {
                    return None;
                }
                let mut items = Vec::new();
                loop {
                    match self.next()? {
                        Event::SequenceEnd => break,
                        e => items.push(self.value(e, depth + 1)?),
                    }
                }
                Value::Sequence(items)
            }
            Event::MappingStart(_, tag) => {
                if tag.as_ref().is_some_and(|t| !core_tag(t)) {
                    return None;
                }
                let mut map = Mapping::new();
                loop {
                    let key = match self.next()? {
                        Event::MappingEnd => break,
                        e => self.value(e, depth + 1)?,
                    };
                    if map.contains_key(&key) {
                        return None;
                    }
                    let first = self.next()?;
                    let value = self.value(first, depth + 1)?;
                    map.insert(key, value);
                }
                Value::Mapping(map)
            }
            _ => return None,
        };
        Some(value)
    }

    /// The next node, deserialised.
    fn read<T: DeserializeOwned>(&mut self) -> Option<T> {
        let first = self.next()?;
        self.node = Some(self.last);
        from_value(self.value(first, 1)?).ok()
    }

    /// A list (or null) whose items are deserialised one at a time and
    /// handed to `each` with their index.
    fn each<T: DeserializeOwned>(&mut self, each: &mut dyn FnMut(usize, T)) -> Option<()> {
        match self.next()? {
            Event::SequenceStart(0, None) => {
                for i in 0.. {
                    match self.next()? {
                        Event::SequenceEnd => break,
                        e => {
                            self.node = Some(self.last);
                            each(i, from_value(self.value(e, 2)?).ok()?);
                        }
                    }
                }
            }
            e => {
                self.node = Some(self.last);
                let items: Option<Vec<T>> = from_value(self.value(e, 1)?).ok()?;
                for (i, item) in items.unwrap_or_default().into_iter().enumerate() {
                    each(i, item);
                }
            }
        }
        Some(())
    }
}

/// Whether `c` reads the same to both parsers: YAML's printable
/// characters, less those YAML 1.1 (serde_norway's parser) takes for line
/// breaks and YAML 1.2 (the event parser) does not: NEL, U+2028, U+2029.
fn printable(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | ' '..='~' | '\u{a0}'..='\u{d7ff}' | '\u{10000}'..)
        && !matches!(c, '\u{2028}' | '\u{2029}')
        || ('\u{e000}'..='\u{fffd}').contains(&c) && c != '\u{feff}'
}

/// The first line the event parser may read differently from serde_norway's
/// (it is laxer): a tab in its leading whitespace, or a line that starts
/// with `?` or `:` and a space (an explicit key, or a key whose `:` is on
/// the next line). No policy needs either.
fn unusual_line(text: &str) -> Option<Pos> {
    let tabs = memchr::memchr(b'\t', text.as_bytes()).is_some();
    for (i, line) in text.split('\n').enumerate() {
        let rest = line.trim_start_matches([' ', '\t']);
        let lead = &line[..line.len() - rest.len()];
        let at = |col: usize| Pos {
            line: i + 1,
            column: col + 1,
        };
        if tabs && let Some(col) = lead.find('\t') {
            return Some(at(col));
        }
        let indicator = matches!(rest.as_bytes().first(), Some(b'?' | b':'))
            && matches!(rest.as_bytes().get(1), None | Some(b' ' | b'\t'));
        if indicator {
            return Some(at(lead.len()));
        }
    }
    None
}

/// Whether a plain scalar starts as serde_norway's parser allows: not with
/// an indicator, nor with `?` or `:` (indicators in flow context whatever
/// follows), nor with `-` followed by a space, a flow indicator or nothing.
fn plain_start(text: &str) -> bool {
    let mut chars = text.chars();
    match chars.next() {
        Some(
            '|' | '>' | '@' | '`' | '%' | '!' | '&' | '*' | '#' | '\'' | '"' | '{' | '}' | '['
            | ']' | ',' | '?' | ':',
        ) => false,
        Some('-') => !matches!(
            chars.next(),
            None | Some(' ' | '\t' | ',' | '[' | ']' | '{' | '}')
        ),
        _ => true,
    }
}

/// The file as serde reads it, but for its VMs, which go to `vm` one at a
/// time with their index; or where it stopped (the start of the section or
/// item it was reading), to read it with serde_norway's own parser (some
/// VMs may have gone to `vm` already).
pub fn read(text: &str, vm: &mut dyn FnMut(usize, RawVm)) -> Result<RawPolicy, Pos> {
    let mut raw = RawPolicy::default();
    let mut seen: Vec<String> = Vec::new();
    if !text.chars().all(printable) {
        // serde_norway's parser refuses a control character anywhere
        // (even in a comment), and takes NEL for a line break; the event
        // parser may not.
        return Err(Pos::START);
    }
    if let Some(at) = unusual_line(text) {
        // The two parsers may read these differently: leave the file to
        // serde_norway.
        return Err(at);
    }
    let mut events = Events::new(text);
    match read_events(&mut events, false, &mut raw, &mut seen, vm) {
        Some(()) => Ok(raw),
        None => Err(events.stopped()),
    }
}

/// Reads the top-level mapping of `text` (a whole file, or a part of one
/// that holds whole top-level entries: [`super::fast`]) into `raw`; `seen`
/// has the top-level keys read so far, and gets these. With `may_be_empty`,
/// a text with no document at all (nothing, or only comments) is fine.
pub fn read_part(
    text: &str,
    may_be_empty: bool,
    raw: &mut RawPolicy,
    seen: &mut Vec<String>,
    vm: &mut dyn FnMut(usize, RawVm),
) -> Option<()> {
    read_events(&mut Events::new(text), may_be_empty, raw, seen, vm)
}

fn read_events(
    events: &mut Events<'_>,
    may_be_empty: bool,
    raw: &mut RawPolicy,
    seen: &mut Vec<String>,
    vm: &mut dyn FnMut(usize, RawVm),
) -> Option<()> {
    if !matches!(events.next()?, Event::StreamStart) {
        return None;
    }
    match events.next()? {
        Event::DocumentStart(_) => {}
        Event::StreamEnd if may_be_empty => return Some(()),
        _ => return None,
    }
    if !matches!(events.next()?, Event::MappingStart(_, None)) {
        return None;
    }
    loop {
        let key = match events.next()? {
            Event::MappingEnd => break,
            Event::Scalar(key, _, _, None) => key,
            _ => return None,
        };
        if seen.iter().any(|k| *k == key) {
            return None;
        }
        seen.push(key.to_string());
        match &*key {
            "version" => raw.version = events.read::<Field>()?,
            "enforcement" => raw.enforcement = events.read()?,
            "offers" => raw.offers = events.read()?,
            "subscriptions" => {
                let mut subscriptions = Vec::new();
                events.each(&mut |_, s| subscriptions.push(s))?;
                raw.subscriptions = Some(subscriptions);
            }
            "vms" => events.each(vm)?,
            _ => return None,
        }
    }
    if !matches!(events.next()?, Event::DocumentEnd) {
        return None;
    }
    matches!(events.next()?, Event::StreamEnd).then_some(())
}
