//! YAML utilities with no runbook knowledge: the non-recursive nesting
//! check every YAML input passes first ([`check_depth`]), and where in the
//! text a value lives (JSON pointer -> line and column, [`Locator`]).

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};

/// Deepest nesting of mappings and sequences accepted in a runbook (or
/// any YAML firedrill reads through this module). Runbooks need a handful
/// of levels; JSON Schemas of inputs a few more. Checked without recursion
/// before anything else parses the text, so no input can exhaust the stack.
pub const MAX_YAML_DEPTH: usize = 64;

/// YAML nested deeper than [`MAX_YAML_DEPTH`]: where the limit was crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooDeep {
    pub line: usize,
    pub column: usize,
}
use yaml_rust2::scanner::Marker;

/// Line (1-based) and column (1-based) of every node and mapping key.
#[derive(Debug, Clone, Default)]
pub struct Locator {
    positions: HashMap<String, (usize, usize)>,
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, index: usize },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    positions: HashMap<String, (usize, usize)>,
    root_seen: bool,
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

impl Builder {
    /// The path of the node that starts now, or `None` if it is a mapping key.
    fn next_path(&mut self, scalar: Option<&str>, mark: Marker) -> Option<String> {
        let pos = (mark.line(), mark.col() + 1);
        match self.stack.last_mut() {
            None => {
                self.root_seen = true;
                Some(String::new())
            }
            Some(Frame::Seq { path, index }) => {
                let p = format!("{path}/{index}");
                *index += 1;
                Some(p)
            }
            Some(Frame::Map { path, key }) => match key.take() {
                Some(k) => Some(format!("{path}/{}", escape(&k))),
                None => {
                    // This scalar is a key: remember where the key is written.
                    let k = scalar.unwrap_or_default().to_string();
                    let p = format!("{path}/{}", escape(&k));
                    self.positions.entry(p).or_insert(pos);
                    *key = Some(k);
                    None
                }
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = (mark.line(), mark.col() + 1);
        match ev {
            Event::Scalar(value, ..) => {
                if let Some(p) = self.next_path(Some(&value), mark) {
                    self.positions.entry(p).or_insert(pos);
                }
            }
            Event::Alias(_) => {
                if let Some(p) = self.next_path(Some(""), mark) {
                    self.positions.entry(p).or_insert(pos);
                }
            }
            Event::MappingStart(..) => {
                let path = self.next_path(None, mark).unwrap_or_default();
                self.positions.entry(path.clone()).or_insert(pos);
                self.stack.push(Frame::Map { path, key: None });
            }
            Event::SequenceStart(..) => {
                let path = self.next_path(None, mark).unwrap_or_default();
                self.positions.entry(path.clone()).or_insert(pos);
                self.stack.push(Frame::Seq { path, index: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

/// Feed every event of `text` to `receiver`, one at a time (the parser is
/// a state machine; yaml-rust2's `load` recurses once per level, so it is
/// not used). Stops at the end of the text, at a syntax error (the events
/// so far are kept), or where nesting goes past `max_depth`.
fn walk(
    text: &str,
    max_depth: usize,
    receiver: &mut impl MarkedEventReceiver,
) -> Result<(), TooDeep> {
    let mut parser = Parser::new_from_str(text);
    let mut depth = 0usize;
    loop {
        let Ok((event, mark)) = parser.next_token() else {
            return Ok(());
        };
        match event {
            Event::StreamEnd => return Ok(()),
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                depth += 1;
                if depth > max_depth {
                    return Err(TooDeep {
                        line: mark.line(),
                        column: mark.col() + 1,
                    });
                }
            }
            Event::MappingEnd | Event::SequenceEnd => depth = depth.saturating_sub(1),
            _ => {}
        }
        receiver.on_event(event, mark);
    }
}

/// Most brackets open at once anywhere in a text, quoted or not. The
/// quote-aware count below can be misled where a quote does not open a
/// scalar for the parser (inside a block scalar, say); this bound cannot,
/// and what it lets through (at most this many levels) costs a parser
/// milliseconds. Legitimate text never holds a thousand unclosed brackets.
pub const MAX_OPEN_BRACKETS: usize = 1024;

fn raw_brackets(text: &str) -> Result<(), TooDeep> {
    let (mut line, mut column, mut open) = (1usize, 0usize, 0usize);
    for c in text.chars() {
        column += 1;
        match c {
            '\n' => {
                line += 1;
                column = 0;
            }
            '[' | '{' => {
                open += 1;
                if open > MAX_OPEN_BRACKETS {
                    return Err(TooDeep { line, column });
                }
            }
            ']' | '}' => open = open.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// An upper bound of the flow nesting (`[` and `{`) of `text`, in one pass:
/// brackets in comments and quoted scalars do not count, brackets in plain
/// scalars do (so it can only over-estimate). A quote opens a quoted
/// scalar only where YAML can start one (a line's first character, or
/// after whitespace or `[{,` that follow an indicator: `:`, `-`, `?`, `[`,
/// `{`, `,`), so a quote inside a plain scalar (`a: -'`) cannot hide the
/// brackets after it. YAML parsers track flow levels in ways that cost
/// O(depth) per level (100,000 `[` took a minute in a debug build), so
/// deep flow nesting is refused before they see it.
fn flow_depth(text: &str, max_depth: usize) -> Result<(), TooDeep> {
    let (mut line, mut column) = (1usize, 0usize);
    let mut depth = 0usize;
    let mut chars = text.chars().peekable();
    // The previous character, and the last one that was not whitespace
    // ('\n' at the start of the text and of every line).
    let mut previous = '\n';
    let mut significant = '\n';
    while let Some(c) = chars.next() {
        column += 1;
        let scalar_start = (previous.is_whitespace() || matches!(previous, '[' | '{' | ','))
            && matches!(significant, '\n' | ':' | '-' | '?' | '[' | '{' | ',');
        match c {
            '\n' => {
                line += 1;
                column = 0;
            }
            '#' if previous.is_whitespace() => {
                // A comment runs to the end of the line.
                while chars.peek().is_some_and(|n| *n != '\n') {
                    chars.next();
                }
            }
            '\'' | '"' if scalar_start => {
                // A quoted scalar: skip to its closing quote (`''` and `\"`
                // are escapes), counting lines.
                while let Some(q) = chars.next() {
                    column += 1;
                    if q == '\n' {
                        line += 1;
                        column = 0;
                    } else if c == '"' && q == '\\' {
                        chars.next();
                        column += 1;
                    } else if q == c {
                        if c == '\'' && chars.peek() == Some(&'\'') {
                            chars.next();
                            column += 1;
                        } else {
                            break;
                        }
                    }
                }
            }
            '[' | '{' => {
                depth += 1;
                if depth > max_depth {
                    return Err(TooDeep { line, column });
                }
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if c == '\n' {
            significant = '\n';
        } else if !c.is_whitespace() {
            significant = c;
        }
        previous = c;
    }
    Ok(())
}

/// Check that `text` nests no deeper than `max_depth`, without recursion
/// and without keeping anything.
pub fn check_depth(text: &str, max_depth: usize) -> Result<(), TooDeep> {
    flow_depth(text, max_depth)?;
    raw_brackets(text)?;
    struct Discard;
    impl MarkedEventReceiver for Discard {
        fn on_event(&mut self, _: Event, _: Marker) {}
    }
    walk(text, max_depth, &mut Discard)
}

impl Locator {
    /// Index `text`; YAML that does not parse gives a locator of what
    /// parsed before the error, and YAML nested past [`MAX_YAML_DEPTH`] one
    /// of what came before that (callers refuse such text first:
    /// [`check_depth`]).
    pub fn new(text: &str) -> Self {
        let mut b = Builder::default();
        let _ = walk(text, MAX_YAML_DEPTH, &mut b);
        Locator {
            positions: b.positions,
        }
    }

    /// A locator that knows no positions (for text refused before indexing).
    pub fn empty() -> Self {
        Locator::default()
    }

    /// Position of `pointer` (e.g. `/steps/1/kernel`), or of its nearest
    /// ancestor that exists.
    pub fn find(&self, pointer: &str) -> Option<(usize, usize)> {
        let mut p = pointer;
        loop {
            if let Some(pos) = self.positions.get(p) {
                return Some(*pos);
            }
            p = &p[..p.rfind('/')?];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_values_and_items() {
        let text =
            "name: x\nsteps:\n  - id: a\n    kernel: k@1.0.0\n  - id: b\n    with: { unit: web }\n";
        let l = Locator::new(text);
        assert_eq!(l.find("/name"), Some((1, 1)));
        assert_eq!(l.find("/steps/0/kernel"), Some((4, 5)));
        assert_eq!(l.find("/steps/1/id"), Some((5, 5)));
        assert_eq!(l.find("/steps/1/with/unit"), Some((6, 13)));
        // Unknown deeper paths fall back to the nearest ancestor.
        assert_eq!(l.find("/steps/1/with/unit/x"), Some((6, 13)));
    }

    fn nested_sequences(levels: usize) -> String {
        format!("x:\n  {}a\n", "- ".repeat(levels))
    }

    fn nested_mappings(levels: usize) -> String {
        let mut s = String::new();
        for i in 0..levels {
            s.push_str(&" ".repeat(i));
            s.push_str("k:\n");
        }
        s.push_str(&" ".repeat(levels));
        s.push_str("v\n");
        s
    }

    #[test]
    fn depth_is_checked_at_its_edge_for_block_and_flow_nesting() {
        // The root mapping is one level.
        let at_limit = nested_sequences(MAX_YAML_DEPTH - 1);
        assert_eq!(check_depth(&at_limit, MAX_YAML_DEPTH), Ok(()));
        let over = nested_sequences(MAX_YAML_DEPTH);
        let e = check_depth(&over, MAX_YAML_DEPTH).expect_err("one level too deep");
        assert_eq!(e.line, 2);
        assert_eq!(
            check_depth(&nested_mappings(MAX_YAML_DEPTH), MAX_YAML_DEPTH),
            Ok(())
        );
        assert!(check_depth(&nested_mappings(MAX_YAML_DEPTH + 1), MAX_YAML_DEPTH).is_err());
        let flow = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert_eq!(check_depth(&flow(MAX_YAML_DEPTH), MAX_YAML_DEPTH), Ok(()));
        assert!(check_depth(&flow(MAX_YAML_DEPTH + 1), MAX_YAML_DEPTH).is_err());
    }

    #[test]
    fn brackets_in_quotes_and_comments_are_not_nesting() {
        let many = "[".repeat(500);
        for text in [
            format!("a: '{many}'\n"),
            format!("a: \"{many}\\\" {many}\"\n"),
            format!("a: 1 # {many}\n"),
            format!("a: 'it''s {many}'\n"),
        ] {
            assert_eq!(check_depth(&text, MAX_YAML_DEPTH), Ok(()), "{text}");
        }
        // A quote inside a plain scalar opens nothing (found in review: it
        // hid the brackets after it from this check).
        for text in [
            format!("name: x\na: -'\nb: {}", "[".repeat(40_000)),
            format!("a: it's\nb: {}", "[".repeat(1_000)),
            format!("a: x\"\nb: {{{}", "[".repeat(1_000)),
        ] {
            assert!(
                check_depth(&text, MAX_YAML_DEPTH).is_err(),
                "{}",
                &text[..12]
            );
        }
        // A quote in a block scalar opens nothing for the parser; whatever
        // it hides from the quote-aware count, the raw bound still sees.
        let hidden = format!("a: |\n  'unclosed\nb: {}'\n", "[".repeat(40_000));
        let e = check_depth(&hidden, MAX_YAML_DEPTH).expect_err("too deep");
        assert_eq!(e.line, 3);
        // Unclosed: 100,000 of them are refused at the 65th, at once.
        let e = check_depth(&format!("x: {}", "[".repeat(100_000)), MAX_YAML_DEPTH)
            .expect_err("too deep");
        assert_eq!((e.line, e.column), (1, 3 + MAX_YAML_DEPTH + 1));
    }

    #[test]
    fn a_million_levels_neither_recurse_nor_overflow() {
        // 30,000 levels overflowed the stack of the release build and 1,000
        // the debug build's, through yaml-rust2's recursive loader.
        for text in [
            nested_sequences(1_000_000),
            "[".repeat(1_000_000),
            "{a: ".repeat(200_000),
        ] {
            assert!(check_depth(&text, MAX_YAML_DEPTH).is_err());
            // Indexing stops at the limit instead of recursing (a stack
            // overflow aborts the test binary).
            let _ = Locator::new(&text);
        }
    }
}
