//! Aligned text tables for people.

/// Renders `rows` under `header` as columns separated by two spaces, each
/// as wide as its widest cell, without trailing spaces.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|title| title.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let render_row = |cells: &mut dyn Iterator<Item = &str>| {
        cells
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut lines = vec![render_row(&mut header.iter().copied())];
    for row in rows {
        lines.push(render_row(&mut row.iter().map(String::as_str)));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_to_widest_cell() {
        let rows = vec![
            vec![
                "user".to_owned(),
                "ann@example.com".to_owned(),
                "5M".to_owned(),
            ],
            vec!["default".to_owned(), "default".to_owned(), String::new()],
        ];
        let text = render(&["KIND", "ID", "MONTHLY"], &rows);
        assert_eq!(
            text,
            "KIND     ID               MONTHLY\n\
             user     ann@example.com  5M\n\
             default  default"
        );
    }
}
