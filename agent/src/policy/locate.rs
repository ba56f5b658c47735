//! Where things are in a policy file, found only when there is something to
//! report: validation records a path (`vms[3].interface`), and one walk of
//! the YAML events turns the paths of all errors into lines and columns. The
//! same walk, when serde gave up, looks for every duplicate key, unknown
//! field and syntax error in the file.

use std::{
    collections::{HashMap, HashSet},
    fmt,
};

use saphyr_parser::{Event, Marker, Parser, ScalarStyle, ScanError};

use super::raw;

/// One step of a path into the document.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Seg {
    Key(String),
    Index(usize),
}

impl From<&str> for Seg {
    fn from(key: &str) -> Self {
        Seg::Key(key.to_owned())
    }
}

impl From<usize> for Seg {
    fn from(index: usize) -> Self {
        Seg::Index(index)
    }
}

/// Builds a path: `yaml_path!["vms", 3, "interface"]`.
macro_rules! yaml_path {
    ($($seg:expr),* $(,)?) => {
        vec![$($crate::policy::locate::Seg::from($seg)),*]
    };
}
pub(crate) use yaml_path;

pub type Path = Vec<Seg>;

/// What an error points at: the value at a path, or the key that leads to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Loc {
    Value(Path),
    Key(Path),
}

/// A 1-based line and column (in characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    pub const START: Pos = Pos { line: 1, column: 1 };

    fn of(mark: Marker) -> Self {
        Pos {
            line: mark.line().max(1),
            column: mark.col() + 1,
        }
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// What a walk of the events reports.
trait Visit {
    /// A key of the mapping at `parent`.
    fn key(&mut self, _parent: &[Seg], _key: &str, _at: Marker) {}
    /// A node in value position (the root included) at `path`.
    fn node(&mut self, _path: &[Seg], _at: Marker) {}
    fn mapping_start(&mut self) {}
    fn mapping_end(&mut self) {}
    fn document(&mut self, _count: usize, _at: Marker) {}
    fn syntax(&mut self, _error: &ScanError) {}
}

enum Frame {
    Map { awaiting_key: bool },
    Seq { index: usize },
}

/// Walks the whole document once, telling `visit` about every node with its
/// path. Stops at the first syntax error.
fn walk(text: &str, visit: &mut impl Visit) {
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut path: Path = Vec::new();
    // Depth inside a key that is itself a mapping or sequence (ignored).
    let mut complex_key = 0usize;
    let mut documents = 0usize;

    while let Some(next) = parser.next_event() {
        let (event, span) = match next {
            Ok(e) => e,
            Err(e) => {
                visit.syntax(&e);
                return;
            }
        };
        let at = span.start;
        if complex_key > 0 {
            match event {
                Event::MappingStart(..) | Event::SequenceStart(..) => complex_key += 1,
                Event::MappingEnd | Event::SequenceEnd => {
                    complex_key -= 1;
                    if complex_key == 0 {
                        path.push(Seg::Key("<complex key>".to_owned()));
                        if let Some(Frame::Map { awaiting_key }) = stack.last_mut() {
                            *awaiting_key = false;
                        }
                    }
                }
                _ => {}
            }
            continue;
        }
        match event {
            Event::DocumentStart(_) => {
                documents += 1;
                stack.clear();
                path.clear();
                visit.document(documents, at);
            }
            Event::Scalar(..)
            | Event::Alias(_)
            | Event::MappingStart(..)
            | Event::SequenceStart(..) => {
                if let Some(Frame::Map { awaiting_key: true }) = stack.last() {
                    match &event {
                        Event::Scalar(text, ..) => {
                            visit.key(&path, text, at);
                            path.push(Seg::Key(text.to_string()));
                        }
                        Event::Alias(_) => {
                            visit.key(&path, "*alias", at);
                            path.push(Seg::Key("*alias".to_owned()));
                        }
                        _ => {
                            complex_key = 1;
                            continue;
                        }
                    }
                    if let Some(Frame::Map { awaiting_key }) = stack.last_mut() {
                        *awaiting_key = false;
                    }
                    continue;
                }
                if let Some(Frame::Seq { index }) = stack.last() {
                    path.push(Seg::Index(*index));
                }
                visit.node(&path, at);
                match event {
                    Event::MappingStart(..) => {
                        stack.push(Frame::Map { awaiting_key: true });
                        visit.mapping_start();
                    }
                    Event::SequenceStart(..) => stack.push(Frame::Seq { index: 0 }),
                    _ => child_done(&mut stack, &mut path),
                }
            }
            Event::MappingEnd | Event::SequenceEnd => {
                if matches!(stack.pop(), Some(Frame::Map { .. })) {
                    visit.mapping_end();
                }
                child_done(&mut stack, &mut path);
            }
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
        }
    }
}

fn child_done(stack: &mut [Frame], path: &mut Path) {
    match stack.last_mut() {
        Some(Frame::Map { awaiting_key }) => {
            path.pop();
            *awaiting_key = true;
        }
        Some(Frame::Seq { index }) => {
            path.pop();
            *index += 1;
        }
        None => {}
    }
}

/// Finds the positions of `locs`, in order. A path that is not in the file
/// (under an alias, say) gets the position of its nearest ancestor that is.
pub fn resolve(text: &str, locs: &[&Loc]) -> Vec<Pos> {
    struct Resolver {
        values: HashSet<Path>,
        keys: HashSet<Path>,
        found_values: HashMap<Path, Pos>,
        found_keys: HashMap<Path, Pos>,
    }
    impl Visit for Resolver {
        fn key(&mut self, parent: &[Seg], key: &str, at: Marker) {
            if self.keys.is_empty() {
                return;
            }
            let mut path = parent.to_vec();
            path.push(Seg::Key(key.to_owned()));
            if self.keys.contains(&path) {
                self.found_keys.entry(path).or_insert(Pos::of(at));
            }
        }
        fn node(&mut self, path: &[Seg], at: Marker) {
            if self.values.contains(path) && !self.found_values.contains_key(path) {
                self.found_values.insert(path.to_vec(), Pos::of(at));
            }
        }
    }

    let mut r = Resolver {
        values: HashSet::new(),
        keys: HashSet::new(),
        found_values: HashMap::new(),
        found_keys: HashMap::new(),
    };
    for loc in locs {
        let path = match loc {
            Loc::Value(p) => p,
            Loc::Key(p) => {
                r.keys.insert(p.clone());
                p
            }
        };
        for n in 0..=path.len() {
            r.values.insert(path[..n].to_vec());
        }
    }
    walk(text, &mut r);
    locs.iter()
        .map(|loc| {
            let path = match loc {
                Loc::Value(p) => p,
                Loc::Key(p) => {
                    if let Some(pos) = r.found_keys.get(p) {
                        return *pos;
                    }
                    p
                }
            };
            (0..=path.len())
                .rev()
                .find_map(|n| r.found_values.get(&path[..n]).copied())
                .unwrap_or(Pos::START)
        })
        .collect()
}

/// A problem the lint found: where, and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub pos: Pos,
    pub message: String,
    pub kind: FoundKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FoundKind {
    Syntax,
    DuplicateKey,
    UnknownField,
    ExtraDocument,
}

/// The fields a mapping at `parent` accepts, and what to call it; `None` for
/// mappings whose keys are names (`offers:`) or that are not ours.
fn schema(parent: &[Seg]) -> Option<(&'static str, &'static [&'static str])> {
    let key = |s: &Seg, k: &str| matches!(s, Seg::Key(x) if x == k);
    match parent {
        [] => Some(("the policy", raw::TOP_FIELDS)),
        [a] if key(a, "enforcement") => Some(("enforcement", raw::ENFORCEMENT_FIELDS)),
        [a, Seg::Key(_)] if key(a, "offers") => Some(("an offer", raw::OFFER_FIELDS)),
        [a, Seg::Index(_)] if key(a, "subscriptions") => {
            Some(("a subscription", raw::SUBSCRIPTION_FIELDS))
        }
        [a, Seg::Index(_), b] if key(a, "subscriptions") && key(b, "exemption") => {
            Some(("an exemption", raw::EXEMPTION_FIELDS))
        }
        [a, Seg::Index(_)] if key(a, "vms") => Some(("a VM", raw::VM_FIELDS)),
        _ => None,
    }
}

/// Every duplicate key, unknown field and extra document in the file, and
/// the first syntax error, in file order.
pub fn lint(text: &str) -> Vec<Found> {
    struct Lint {
        keys: Vec<HashMap<String, usize>>,
        found: Vec<Found>,
    }
    impl Visit for Lint {
        fn mapping_start(&mut self) {
            self.keys.push(HashMap::new());
        }
        fn mapping_end(&mut self) {
            self.keys.pop();
        }
        fn key(&mut self, parent: &[Seg], key: &str, at: Marker) {
            let pos = Pos::of(at);
            if let Some(seen) = self.keys.last_mut() {
                if let Some(first) = seen.get(key) {
                    self.found.push(Found {
                        pos,
                        message: format!("duplicate key `{key}` (first at line {first})"),
                        kind: FoundKind::DuplicateKey,
                    });
                    return;
                }
                seen.insert(key.to_owned(), pos.line);
            }
            if let Some((what, fields)) = schema(parent)
                && !fields.contains(&key)
            {
                self.found.push(Found {
                    pos,
                    message: format!(
                        "unknown field `{key}` in {what}; accepted fields: {}",
                        fields.join(", ")
                    ),
                    kind: FoundKind::UnknownField,
                });
            }
        }
        fn document(&mut self, count: usize, at: Marker) {
            if count == 2 {
                self.found.push(Found {
                    pos: Pos::of(at),
                    message: "a policy file holds one YAML document; this is a second one"
                        .to_owned(),
                    kind: FoundKind::ExtraDocument,
                });
            }
        }
        fn syntax(&mut self, error: &ScanError) {
            self.found.push(Found {
                pos: Pos::of(*error.marker()),
                message: format!("YAML syntax error: {}", error.info()),
                kind: FoundKind::Syntax,
            });
        }
    }
    let mut l = Lint {
        keys: Vec::new(),
        found: Vec::new(),
    };
    walk(text, &mut l);
    l.found.sort_by_key(|f| f.pos);
    l.found
}

/// Whether the document holds nothing: no node at all, or a lone null.
/// Reads only the first few events.
pub fn is_empty_document(text: &str) -> bool {
    let mut parser = Parser::new_from_str(text);
    while let Some(next) = parser.next_event() {
        match next {
            Ok((Event::StreamEnd, _)) => return true,
            Ok((Event::Scalar(value, ScalarStyle::Plain, _, None), _)) => {
                if !matches!(&*value, "" | "~" | "null" | "Null" | "NULL") {
                    return false;
                }
                // A lone null is empty only if nothing follows it.
                return matches!(
                    parser.next_event(),
                    Some(Ok((Event::DocumentEnd | Event::StreamEnd, _)))
                ) && !matches!(parser.next_event(), Some(Ok((Event::DocumentStart(_), _))));
            }
            Ok((
                Event::Scalar(..)
                | Event::Alias(_)
                | Event::MappingStart(..)
                | Event::SequenceStart(..),
                _,
            ))
            | Err(_) => return false,
            Ok(_) => {}
        }
    }
    true
}
