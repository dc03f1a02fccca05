//! Text that came from input (labels, reasons, comments, command output,
//! kernel logs, manifests), made safe to print on a terminal: control
//! characters are shown escaped, never interpreted.
//!
//! Two layers: every line the CLI prints passes through [`output`] (the
//! `println!` family is shadowed in `cli`, so nothing can bypass it), which
//! escapes every control character but the newline and tab the CLI writes
//! itself; free-text fields are also passed through [`field`], which escapes
//! newlines and tabs too, so that a value cannot start a line of its own.
//! Escapes use the `\uXXXX` form, which is also valid inside JSON strings,
//! so JSON output stays JSON.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Characters a terminal may act on: C0 and C1 controls, DEL, the Unicode
/// line and paragraph separators, and the bidirectional and invisible
/// formatting characters (which can reorder or hide what is shown).
/// Reasons, comments and actor names may not contain any of them.
pub fn dangerous(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// A writer that passes what is written through [`output`] (for log
/// lines: tracing's formatter writes one event per call).
#[derive(Debug)]
pub struct Escaping<W>(pub W);

impl<W: std::io::Write> std::io::Write for Escaping<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.0.write_all(output(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

fn escape(text: &str, keep: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !text.chars().any(|c| dangerous(c) && !keep(c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if dangerous(c) && !keep(c) {
            let _ = write!(out, "\\u{:04X}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A whole piece of output: only the newlines and tabs survive.
pub fn output(text: &str) -> Cow<'_, str> {
    escape(text, |c| c == '\n' || c == '\t')
}

/// One free-text value inside a line: nothing survives, not even a newline.
pub fn field(text: &str) -> Cow<'_, str> {
    escape(text, |_| false)
}

/// `value` with every string in it (keys too) escaped as a [`field`].
pub fn sanitize_json(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::String(s) => {
            if let Cow::Owned(clean) = field(s) {
                *s = clean;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(sanitize_json),
        Value::Object(map) => {
            let entries = std::mem::take(map);
            for (k, mut v) in entries {
                sanitize_json(&mut v);
                map.insert(field(&k).into_owned(), v);
            }
        }
        _ => {}
    }
}

/// A copy of `row` with every string in it escaped as a [`field`] (through
/// its JSON form); `row` itself when it does not round-trip.
pub fn sanitized<T: serde::Serialize + serde::de::DeserializeOwned + Clone>(row: &T) -> T {
    let Ok(mut v) = serde_json::to_value(row) else {
        return row.clone();
    };
    sanitize_json(&mut v);
    serde_json::from_value(v).unwrap_or_else(|_| row.clone())
}

/// `text` cut to at most `max` bytes, on a character boundary.
pub fn clip(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Whether to colour standard output: only on a terminal, and never when
/// `NO_COLOR` is set to anything non-empty (no-color.org) or `TERM` is
/// `dumb`.
pub fn colour_stdout() -> bool {
    use std::io::IsTerminal as _;
    colour_for(
        std::io::stdout().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
        std::env::var_os("TERM").as_deref(),
    )
}

fn colour_for(
    terminal: bool,
    no_color: Option<&std::ffi::OsStr>,
    term: Option<&std::ffi::OsStr>,
) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty()) && term.is_none_or(|t| t != "dumb")
}

/// `text` in the colour `sgr` (`"31"` red, `"32"` green, `"33"` yellow,
/// `"1"` bold). Only for text the CLI writes itself, after [`output`]:
/// colours are added to already-escaped lines, never taken from input.
pub fn paint(sgr: &str, text: &str) -> String {
    format!("\u{1b}[{sgr}m{text}\u{1b}[0m")
}

/// A table whose columns are as wide as their widest cell (in terminal
/// columns: a wide character counts two), up to a cap per column: a
/// longer cell (a long actor) is cut with `…` (the whole value is in
/// `--json`), so the columns after it stay in place. Identifiers (ids,
/// names, digests) are never cut: people copy them into commands. Cells
/// are escaped as [`field`]s.
#[derive(Debug)]
pub struct Table {
    caps: Vec<usize>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// Columns named `headers`, each at most `cap` characters wide
    /// (`usize::MAX`: never cut, for ids and digests).
    pub fn new(headers: &[(&str, usize)]) -> Table {
        Table {
            caps: headers.iter().map(|(_, cap)| *cap).collect(),
            rows: vec![headers.iter().map(|(h, _)| (*h).to_string()).collect()],
        }
    }

    /// One row; missing cells are empty, extra cells are dropped.
    pub fn row<S: AsRef<str>>(&mut self, cells: impl IntoIterator<Item = S>) {
        let mut row: Vec<String> = cells
            .into_iter()
            .zip(&self.caps)
            .map(|(cell, &cap)| {
                use unicode_width::UnicodeWidthChar as _;
                let cell = field(cell.as_ref());
                if width(&cell) <= cap {
                    return cell.into_owned();
                }
                let mut cut = String::new();
                let mut used = 0;
                for c in cell.chars() {
                    let w = c.width().unwrap_or(0);
                    if used + w + 1 > cap {
                        break;
                    }
                    used += w;
                    cut.push(c);
                }
                cut.push('…');
                cut
            })
            .collect();
        row.resize(self.caps.len(), String::new());
        self.rows.push(row);
    }

    /// The table, a line per row, columns two spaces apart; the last
    /// column is not padded.
    pub fn render(&self) -> String {
        let widths: Vec<usize> = (0..self.caps.len())
            .map(|i| self.rows.iter().map(|r| width(&r[i])).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    // Padded by display width, not by characters.
                    line.push_str(cell);
                    line.push_str(&" ".repeat(widths[i] - width(cell) + 2));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// The columns `text` takes on a terminal.
fn width(text: &str) -> usize {
    unicode_width::UnicodeWidthStr::width(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_characters_count_two_columns() {
        let mut t = Table::new(&[("ACTOR", 10), ("STATUS", usize::MAX)]);
        t.row(["ab", "ok"]);
        t.row(["日本語の名前です", "failed"]);
        let text = t.render();
        let at: Vec<usize> = text
            .lines()
            .map(|l| width(&l[..l.rfind("  ").expect("gap") + 2]))
            .collect();
        assert!(at.iter().all(|&a| a == at[0]), "{text}");
        assert!(text.contains("日本語の…"), "cut at 10 columns: {text}");
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color_or_a_dumb_term() {
        use std::ffi::OsStr;
        assert!(colour_for(true, None, Some(OsStr::new("xterm"))));
        assert!(
            colour_for(true, Some(OsStr::new("")), None),
            "an empty NO_COLOR is unset"
        );
        assert!(!colour_for(false, None, None), "not a terminal");
        assert!(!colour_for(true, Some(OsStr::new("1")), None), "NO_COLOR");
        assert!(
            !colour_for(true, None, Some(OsStr::new("dumb"))),
            "TERM=dumb"
        );
    }

    #[test]
    fn table_columns_stay_in_place_with_long_and_hostile_cells() {
        let mut t = Table::new(&[("RUN", usize::MAX), ("ACTOR", 12), ("STATUS", 10)]);
        t.row(["01A", "alice", "succeeded"]);
        t.row(["01B", &"m".repeat(200), "failed"]);
        t.row(["01C", "eve\u{1b}[2J\nfake", "halted"]);
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        // Where the status column starts, in characters.
        let at: Vec<usize> = lines
            .iter()
            .map(|l| {
                let byte = ["STATUS", "succeeded", "failed", "halted"]
                    .iter()
                    .find_map(|s| l.find(s))
                    .expect("status");
                l[..byte].chars().count()
            })
            .collect();
        assert!(
            at.iter().all(|&a| a == at[0]),
            "the status column moved:\n{text}"
        );
        assert!(lines[2].contains(&format!("{}…", "m".repeat(11))), "{text}");
        assert!(!text.contains('\u{1b}'), "{text}");
    }

    #[test]
    fn escapes_what_a_terminal_would_act_on() {
        let fake = "ok\u{1b}[2K\r\u{1b}[32mSUCCEEDED all checks passed\u{1b}[0m";
        let shown = field(fake);
        assert!(
            !shown.contains('\u{1b}') && !shown.contains('\r'),
            "{shown}"
        );
        assert_eq!(
            shown,
            "ok\\u001B[2K\\u000D\\u001B[32mSUCCEEDED all checks passed\\u001B[0m"
        );
        assert_eq!(field("two\nlines"), "two\\u000Alines");
        assert_eq!(output("two\nlines\tand a tab"), "two\nlines\tand a tab");
        assert_eq!(
            output("bell\u{7} del\u{7f} csi\u{9b}"),
            "bell\\u0007 del\\u007F csi\\u009B"
        );
        assert_eq!(field("abc\u{202E}cba"), "abc\\u202Ecba");
        assert_eq!(field("line\u{2028}sep"), "line\\u2028sep");
        let mut log = Escaping(Vec::new());
        std::io::Write::write_all(&mut log, "WARN actor=al\u{202e}ice\n".as_bytes())
            .expect("write");
        assert_eq!(
            String::from_utf8(log.0).expect("utf8"),
            "WARN actor=al\\u202Eice\n"
        );
        assert!(matches!(field("plain text, ünïcode"), Cow::Borrowed(_)));
    }

    #[test]
    fn json_stays_json() {
        let v = serde_json::json!({"label\u{1b}": "a\u{85}b\u{202e}", "n": [1, "x\u{9b}"]});
        let text = serde_json::to_string(&v).expect("json");
        let shown = output(&text);
        let back: serde_json::Value = serde_json::from_str(&shown).expect("still JSON");
        assert_eq!(
            back, v,
            "the escapes are JSON escapes of the same characters"
        );
        let mut clean = v.clone();
        sanitize_json(&mut clean);
        assert!(!clean.to_string().chars().any(dangerous), "{clean}");
    }
}
