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

#[cfg(test)]
mod tests {
    use super::*;

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
