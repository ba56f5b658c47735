//! Plain-text tables for people: left-aligned columns, two spaces apart,
//! the last one unpadded. One writer for `status` and `check`.
//!
//! Invariant: padding is counted by hand in characters, never through the
//! formatting machinery, whose widths stop at `u16::MAX` (a hostile name of
//! a mebibyte must render, not panic).

/// The width of each column: the widest of its header and cells, in
/// characters.
pub fn widths<'a>(header: &[&str], rows: impl IntoIterator<Item = &'a [String]>) -> Vec<usize> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    widths
}

/// Appends one line of `cells` to `out`, each padded to its width but the
/// last, and a newline; no trailing white space.
pub fn push_row<'a>(out: &mut String, widths: &[usize], cells: impl IntoIterator<Item = &'a str>) {
    let start = out.len();
    let mut cells = cells.into_iter().peekable();
    let mut i = 0;
    while let Some(cell) = cells.next() {
        out.push_str(cell);
        if cells.peek().is_some() {
            let width = widths.get(i).copied().unwrap_or(0);
            let pad = width.saturating_sub(cell.chars().count()) + 2;
            out.extend(std::iter::repeat_n(' ', pad));
        }
        i += 1;
    }
    let trimmed = out[start..].trim_end().len();
    out.truncate(start + trimmed);
    out.push('\n');
}

/// A whole table: the header, then the rows.
pub fn columns(header: &[&str], rows: &[Vec<String>]) -> String {
    let widths = widths(header, rows.iter().map(Vec::as_slice));
    let mut out = String::new();
    push_row(&mut out, &widths, header.iter().copied());
    for row in rows {
        push_row(&mut out, &widths, row.iter().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_and_the_last_is_not_padded() {
        let rows = vec![
            vec!["tap1".to_owned(), "tc".to_owned(), "block".to_owned()],
            vec![
                "macvtap12".to_owned(),
                "tc-egress".to_owned(),
                "allow".to_owned(),
            ],
        ];
        assert_eq!(
            columns(&["IF", "HOOK", "VERDICT"], &rows),
            "IF         HOOK       VERDICT\ntap1       tc         block\nmacvtap12  tc-egress  allow\n"
        );
    }

    #[test]
    fn a_mebibyte_cell_renders() {
        let huge = "x".repeat(1 << 20);
        let out = columns(&["A", "B"], &[vec![huge, "b".into()]]);
        assert_eq!(out.lines().count(), 2);
        assert!(out.ends_with("  b\n"));
    }
}
