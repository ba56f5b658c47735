//! The text a policy was read from, kept with the policy so that a later
//! version of the file can be read VM by VM ([`super::update`]).
//!
//! Invariant: a [`Layout`] describes exactly the text it is kept with (it
//! is made by the line reader, [`super::fast`], from that text, or moved
//! with it when VMs are put in place); offsets fit in `u32`.

/// The text of a policy file, and where its VMs are in it (when
/// [`super::fast`] read it). Shared (`Arc`) with the reads of the next
/// version.
#[derive(Debug)]
pub struct Source {
    pub(crate) text: String,
    pub(crate) layout: Option<Layout>,
}

/// Where the VMs of a file are, in bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The start of the line of each VM's `- `.
    pub starts: Vec<u32>,
    /// Where the list ends: the start of the trailer's first line, or the
    /// end of the text.
    pub end: u32,
    /// The column of the items' `-`.
    pub column: u32,
}
