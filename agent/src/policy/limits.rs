//! The bounds on reading a policy, so that any input costs time linear in
//! its size and memory bounded by these caps (docs/policy.md, "Limits"):
//!
//! - the file: a regular file (a FIFO, a device or a socket is refused by
//!   its type, before a byte is read, also behind a symlink), read up to
//!   [`Limits::max_bytes`] and no further, whatever size it claims;
//! - its structure ([`guard`]): nesting at most [`MAX_DEPTH`] deep, no
//!   aliases, no tags but the YAML core schema's, no scalar longer than
//!   [`MAX_SCALAR`] bytes. Checked before the one reader that could go
//!   quadratic (serde_norway's) sees the file; the other two readers refuse
//!   the same things and hand over;
//! - its values: names at most [`MAX_NAME`] bytes (validation);
//! - its report: at most [`MAX_ERRORS`] diagnostics, then one that says how
//!   many more there are.

use std::{
    io::Read as _,
    os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _},
    path::Path,
};

use saphyr_parser::{Event, Parser, Span, Tag};

use super::{
    error::{Diagnostic, PolicyError},
    locate::Pos,
};

/// The default size cap: a million VMs of up to 268 bytes each.
pub const DEFAULT_MAX_POLICY_BYTES: u64 = 256 << 20;
/// The deepest nesting of mappings and sequences accepted. A valid policy
/// needs 4 (`subscriptions[i].exemption.granted`).
pub const MAX_DEPTH: usize = 32;
/// The longest scalar (key or value) accepted, in bytes.
pub const MAX_SCALAR: usize = 1024;
/// The longest VM name, subscription id or offer name, in bytes.
pub const MAX_NAME: usize = 253;
/// The largest file handed to serde_norway's own reader, for its precise
/// messages about a value of the wrong shape: it holds about twenty times
/// the file. A larger file that the streaming reader cannot read gets the
/// lint's messages, or one that says where the streaming reader stopped.
pub const MAX_SERDE_BYTES: usize = 8 << 20;
/// The most diagnostics reported for one file.
pub const MAX_ERRORS: usize = 50;

/// What a read of a policy may cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest file read, in bytes.
    pub max_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_POLICY_BYTES,
        }
    }
}

fn at_start(path: &Path, message: String) -> PolicyError {
    PolicyError::Invalid(vec![Diagnostic {
        file: path.display().to_string(),
        line: 1,
        column: 1,
        message,
    }])
}

/// Why a file was not read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// What it is instead of a regular file: "a FIFO", "a directory"...
    #[error("it is {0}, not a regular file")]
    NotRegular(&'static str),
    /// At least this many bytes, more than the cap.
    #[error("it is {size} bytes or more; the limit is {max} bytes")]
    TooLarge { size: u64, max: u64 },
}

/// The bytes of the file at `path`: a regular file (after symlinks) of at
/// most `max` bytes. Never blocks on a FIFO (it is opened non-blocking, and
/// refused by its type) and never reads more than `max` plus one byte,
/// whatever size the file claims.
pub fn read_regular(path: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)?;
    let meta = file.metadata()?;
    let kind = meta.file_type();
    if !kind.is_file() {
        return Err(ReadError::NotRegular(if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() {
            "a character device"
        } else if kind.is_block_device() {
            "a block device"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        }));
    }
    if meta.len() > max {
        return Err(ReadError::TooLarge {
            size: meta.len(),
            max,
        });
    }
    // The size is only a claim (the file may grow while it is read): the
    // read stops one byte past the cap.
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(ReadError::TooLarge {
            size: bytes.len() as u64,
            max,
        });
    }
    Ok(bytes)
}

/// The bytes of the policy file at `path`, within `limits`
/// ([`read_regular`]); a file refused gets a diagnostic at `1:1`.
pub fn read(path: &Path, limits: Limits) -> Result<Vec<u8>, PolicyError> {
    match read_regular(path, limits.max_bytes) {
        Ok(bytes) => Ok(bytes),
        Err(ReadError::Io(source)) => Err(PolicyError::Io {
            path: path.to_owned(),
            source,
        }),
        Err(ReadError::NotRegular(what)) => Err(at_start(
            path,
            format!("the policy is {what}; egress-guard reads a policy only from a regular file"),
        )),
        Err(ReadError::TooLarge { size, max }) => Err(at_start(
            path,
            format!(
                "the policy file is {size} bytes or more; the limit is {max} bytes (--max-policy-bytes)"
            ),
        )),
    }
}

/// One structural bound broken, where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Breach {
    pub pos: Pos,
    pub message: String,
}

fn pos(span: Span) -> Pos {
    Pos {
        line: span.start.line().max(1),
        column: span.start.col() + 1,
    }
}

/// Whether a tag is one of the core schema's (`!!str`, `!!int`, ...).
pub fn core_tag(tag: &Tag) -> bool {
    tag.handle == "tag:yaml.org,2002:"
        && matches!(
            tag.suffix.as_str(),
            "str" | "int" | "float" | "bool" | "null" | "map" | "seq"
        )
}

fn tag_text(tag: &Tag) -> String {
    if tag.handle == "tag:yaml.org,2002:" {
        format!("!!{}", tag.suffix)
    } else {
        format!("{}{}", tag.handle, tag.suffix)
    }
}

/// What [`guard`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Guarded {
    pub breaches: Vec<Breach>,
    /// The walk ended at a syntax error (only the text before it is known
    /// to be within the bounds).
    pub syntax_error: bool,
}

/// The structural bounds of `text`: every alias, non-core tag and
/// over-long scalar (up to [`MAX_ERRORS`]), and nesting deeper than
/// [`MAX_DEPTH`] (where the walk stops). One pass of the event parser,
/// which never goes deeper than the cap (nor, in its scanner, than its own
/// limit of 255 flow levels: that is a breach too): linear in the text.
pub fn guard(text: &str) -> Guarded {
    let mut parser = Parser::new_from_str(text);
    let mut depth = 0usize;
    let mut found = Vec::new();
    let deep = || format!("nested more than {MAX_DEPTH} levels deep; a policy needs at most 4");
    loop {
        let (event, span) = match parser.next_event() {
            None => break,
            Some(Ok(next)) => next,
            Some(Err(e)) => {
                if e.info().contains("recursion limit") {
                    found.push(Breach {
                        pos: Pos {
                            line: e.marker().line().max(1),
                            column: e.marker().col() + 1,
                        },
                        message: deep(),
                    });
                }
                return Guarded {
                    breaches: found,
                    syntax_error: true,
                };
            }
        };
        let tag = match &event {
            Event::Scalar(value, _, _, tag) => {
                if value.len() > MAX_SCALAR {
                    found.push(Breach {
                        pos: pos(span),
                        message: format!(
                            "a value of {} bytes; values are at most {MAX_SCALAR} bytes",
                            value.len()
                        ),
                    });
                }
                tag.as_deref()
            }
            Event::MappingStart(_, tag) | Event::SequenceStart(_, tag) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    found.push(Breach {
                        pos: pos(span),
                        message: deep(),
                    });
                    break;
                }
                tag.as_deref()
            }
            Event::MappingEnd | Event::SequenceEnd => {
                depth = depth.saturating_sub(1);
                None
            }
            Event::Alias(_) => {
                found.push(Breach {
                    pos: pos(span),
                    message:
                        "an alias (`*name`); a policy file has no aliases: write the value out"
                            .to_owned(),
                });
                None
            }
            _ => None,
        };
        if let Some(tag) = tag
            && !core_tag(tag)
        {
            found.push(Breach {
                pos: pos(span),
                message: format!(
                    "tag `{}`; a policy file has only the YAML core schema's tags (!!str, !!int, !!map, ...)",
                    tag_text(tag)
                ),
            });
        }
        if found.len() > MAX_ERRORS {
            break;
        }
    }
    Guarded {
        breaches: found,
        syntax_error: false,
    }
}

/// The first [`MAX_ERRORS`] of `found` (in file order), and one more that
/// says how many were left out.
pub fn cap(found: Vec<Diagnostic>) -> Vec<Diagnostic> {
    cap_counted(found, 0)
}

/// [`cap`], when `dropped` more were found and not kept (all after those
/// kept).
pub fn cap_counted(mut found: Vec<Diagnostic>, dropped: usize) -> Vec<Diagnostic> {
    if found.len() > MAX_ERRORS {
        let more = found.len() - MAX_ERRORS + dropped;
        found.truncate(MAX_ERRORS + 1);
        if let Some(last) = found.last_mut() {
            last.message = format!(
                "and {more} more error{} from here on (only the first {MAX_ERRORS} are reported)",
                if more == 1 { "" } else { "s" }
            );
        }
    }
    found
}
