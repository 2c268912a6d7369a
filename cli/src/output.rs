//! How answers are printed: JSON (pretty, for scripts and pipes) or a table (for people).
//!
//! A table is drawn from the JSON itself, so every command has one without a view per
//! command: a list of objects becomes one row per object with a column per field (in the
//! order [`columns`] gives), an object becomes `field  value` rows, and a wrapper holding
//! one list (`{"keys": [...]}`) is drawn as that list. Nested values are shown as compact
//! JSON. Columns are as wide as their widest cell, up to [`MAX_CELL`] characters.

use std::io::Write;

use serde_json::Value;

/// A cell longer than this is cut, with `…`: one long value must not push the rest of its
/// row off the screen.
const MAX_CELL: usize = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

impl Format {
    /// `--output`, or else a table when stdout is a terminal and JSON when it is not.
    pub fn chosen(flag: Option<Format>, stdout_is_terminal: bool) -> Format {
        flag.unwrap_or(if stdout_is_terminal {
            Format::Table
        } else {
            Format::Json
        })
    }
}

/// Writes `answer` in `format`. Write errors are ignored: a closed pipe
/// (`tollgate … | head`) is not a failure.
pub fn print(out: &mut impl Write, format: Format, answer: &Value) {
    let text = match format {
        Format::Json => serde_json::to_string_pretty(answer).unwrap_or_default() + "\n",
        Format::Table => table(answer),
    };
    let _ = out.write_all(text.as_bytes());
}

/// A cell: strings as they are, `-` for null, anything else as compact JSON; one line, cut at
/// [`MAX_CELL`] characters.
pub fn cell(value: &Value) -> String {
    let text = match value {
        Value::String(text) => text.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    let text = text.replace(['\n', '\r', '\t'], " ");
    if text.chars().count() > MAX_CELL {
        let cut: String = text.chars().take(MAX_CELL - 1).collect();
        return cut + "…";
    }
    text
}

/// `answer` as a table (see the module's documentation).
pub fn table(answer: &Value) -> String {
    match answer {
        Value::Array(items) => rows_table(items),
        Value::Object(fields) => {
            let lists: Vec<&Vec<Value>> = fields.values().filter_map(Value::as_array).collect();
            if fields.len() == 1
                && let [items] = lists.as_slice()
            {
                return rows_table(items);
            }
            let rows: Vec<Vec<String>> = fields
                .iter()
                .map(|(name, value)| vec![name.clone(), cell(value)])
                .collect();
            render(&[], &rows)
        }
        scalar => cell(scalar) + "\n",
    }
}

/// Fields that identify a row come first, in this order.
const LEADING: [&str; 2] = ["id", "name"];

/// The columns of a list of objects: every field, [`LEADING`] ones first, the others in the
/// order they first appear (alphabetical within an object, as serde_json keeps them).
pub fn columns(items: &[Value]) -> Vec<String> {
    let mut columns: Vec<String> = Vec::new();
    for item in items {
        for name in item.as_object().into_iter().flat_map(|o| o.keys()) {
            if !columns.contains(name) {
                columns.push(name.clone());
            }
        }
    }
    let rank = |column: &String| {
        LEADING
            .iter()
            .position(|l| l == column)
            .unwrap_or(LEADING.len())
    };
    columns.sort_by_key(rank);
    columns
}

/// One row of `item` under `columns`.
pub fn row(item: &Value, columns: &[String]) -> Vec<String> {
    if !item.is_object() {
        return vec![cell(item)];
    }
    columns
        .iter()
        .map(|c| cell(item.get(c).unwrap_or(&Value::Null)))
        .collect()
}

fn rows_table(items: &[Value]) -> String {
    if items.is_empty() {
        return "(none)\n".into();
    }
    let columns = columns(items);
    let rows: Vec<Vec<String>> = items.iter().map(|item| row(item, &columns)).collect();
    let header: Vec<String> = columns.iter().map(|c| c.to_uppercase()).collect();
    render(&header, &rows)
}

/// The widths that fit `header` and `rows`.
pub fn widths(header: &[String], rows: &[Vec<String>]) -> Vec<usize> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (index, cell) in row.iter().enumerate() {
            let width = cell.chars().count();
            match widths.get_mut(index) {
                Some(w) => *w = (*w).max(width),
                None => widths.push(width),
            }
        }
    }
    widths
}

/// One line: each cell padded to its width, two spaces apart, no trailing blanks.
pub fn line(cells: &[String], widths: &[usize]) -> String {
    let mut text = String::new();
    for (index, cell) in cells.iter().enumerate() {
        if index > 0 {
            text.push_str("  ");
        }
        text.push_str(cell);
        let width = widths.get(index).copied().unwrap_or(0);
        text.extend(std::iter::repeat_n(
            ' ',
            width.saturating_sub(cell.chars().count()),
        ));
    }
    text.truncate(text.trim_end().len());
    text + "\n"
}

fn render(header: &[String], rows: &[Vec<String>]) -> String {
    let widths = widths(header, rows);
    let mut text = String::new();
    if !header.is_empty() {
        text.push_str(&line(header, &widths));
    }
    for row in rows {
        text.push_str(&line(row, &widths));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_default_follows_the_terminal_unless_asked() {
        assert_eq!(Format::chosen(None, true), Format::Table);
        assert_eq!(Format::chosen(None, false), Format::Json);
        assert_eq!(Format::chosen(Some(Format::Json), true), Format::Json);
        assert_eq!(Format::chosen(Some(Format::Table), false), Format::Table);
    }

    #[test]
    fn a_list_of_objects_is_a_row_each_with_every_field_as_a_column() {
        let tiers = json!([
            {"name": "pro", "limit": 1000, "paid": true},
            {"name": "standard", "limit": 60, "paid": false, "display_price": null},
        ]);
        assert_eq!(
            table(&tiers),
            "NAME      LIMIT  PAID   DISPLAY_PRICE\n\
             pro       1000   true   -\n\
             standard  60     false  -\n",
            "the name first, then the fields in the order they appear"
        );
    }

    #[test]
    fn an_object_is_field_value_rows_and_a_wrapped_list_is_the_list() {
        let tenant = json!({"id": "tn_1", "tier": "pro", "usage": {"used": 3}});
        assert_eq!(
            table(&tenant),
            "id     tn_1\ntier   pro\nusage  {\"used\":3}\n"
        );
        let keys = json!({"keys": [{"id": "k1"}, {"id": "k2"}]});
        assert_eq!(table(&keys), "ID\nk1\nk2\n");
        assert_eq!(table(&json!([])), "(none)\n");
        assert_eq!(table(&json!("done")), "done\n");
    }

    #[test]
    fn long_or_multiline_cells_stay_on_one_short_line() {
        let long = "x".repeat(100);
        let text = cell(&json!(long));
        assert_eq!(text.chars().count(), MAX_CELL);
        assert!(text.ends_with('…'));
        assert_eq!(cell(&json!("a\nb")), "a b");
    }

    #[test]
    fn json_is_pretty_with_a_final_newline() {
        let mut out = Vec::new();
        print(&mut out, Format::Json, &json!({"a": 1}));
        assert_eq!(String::from_utf8(out).unwrap(), "{\n  \"a\": 1\n}\n");
    }
}
