//! BENCHMARKS.md's prose: markdown templates under
//! `xtask/bench/templates/`, read at run time (a sentence fix rebuilds
//! nothing) and filled with this run's figures by name (`{{name}}`).
//!
//! Invariants: a template that names a value the code does not give, or
//! cannot be read, renders a `RENDERING ERROR` line instead of its text,
//! which the smoke run refuses; a value's trailing newlines are dropped
//! where it is put, so a table or a nested template goes in as its lines.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
};

/// The templates' directory, under the workspace.
pub const DIR: &str = "xtask/bench/templates";

/// The values a template names.
pub type Values = BTreeMap<String, String>;

/// `Values` from (name, value) pairs.
pub fn values<const N: usize>(pairs: [(&str, String); N]) -> Values {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// The templates of one workspace.
pub struct Templates {
    dir: PathBuf,
}

impl Templates {
    pub fn in_workspace(workspace: &Path) -> Self {
        Self {
            dir: workspace.join(DIR),
        }
    }

    /// Template `name` (a path under the directory) filled from `values`,
    /// or what went wrong.
    pub fn render(&self, name: &str, values: &Values) -> Result<String, String> {
        let path = self.dir.join(name);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        fill(&text, values).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The filled template, or a `RENDERING ERROR` line.
    pub fn text(&self, name: &str, values: &Values) -> String {
        self.render(name, values)
            .unwrap_or_else(|e| format!("RENDERING ERROR: {e}"))
    }

    /// A section of the report: the filled template ending in one blank
    /// line.
    pub fn section(&self, name: &str, values: &Values) -> String {
        format!("{}\n\n", self.text(name, values).trim_end())
    }
}

/// Fills `{{name}}` in `template` from `values`; names without a value are
/// listed in the error.
pub fn fill(template: &str, values: &Values) -> Result<String, String> {
    let mut out = String::with_capacity(template.len() * 2);
    let mut rest = template;
    let mut unknown = Vec::new();
    while let Some(at) = rest.find("{{") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let Some(end) = after.find("}}") else {
            unknown.push("an unclosed `{{`".to_owned());
            rest = "";
            break;
        };
        let key = after[..end].trim();
        match values.get(key) {
            Some(v) => out.push_str(v.trim_end_matches('\n')),
            None => unknown.push(format!("`{key}`")),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    if unknown.is_empty() {
        Ok(out)
    } else {
        Err(format!(
            "the template names what this run does not give: {}",
            unknown.join(", ")
        ))
    }
}

/// A markdown table: its header and one line a row.
pub fn table<'a>(header: &[&str], rows: impl IntoIterator<Item = &'a [String]>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let _ = writeln!(
        out,
        "|{}|",
        header.iter().map(|_| "---").collect::<Vec<_>>().join("|")
    );
    for cells in rows {
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_puts_every_value_and_names_what_is_missing() {
        let values = values([("a", "1".to_owned()), ("b", "two\n".to_owned())]);
        assert_eq!(
            fill("x {{a}} y {{ b }}.", &values).as_deref(),
            Ok("x 1 y two.")
        );
        let err = fill("{{a}} {{nope}} {{", &values).unwrap_err();
        assert!(err.contains("`nope`") && err.contains("unclosed"), "{err}");
    }

    #[test]
    fn a_table_has_a_rule_under_its_header() {
        let rows = [vec!["1".to_owned(), "2".to_owned()]];
        assert_eq!(
            table(&["a", "b"], rows.iter().map(Vec::as_slice)),
            "| a | b |\n|---|---|\n| 1 | 2 |\n"
        );
    }
}
