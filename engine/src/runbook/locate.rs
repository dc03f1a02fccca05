//! Where in the YAML text a value lives: JSON pointer -> line and column.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
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

impl Locator {
    /// Index `text`; YAML that does not parse gives an empty locator.
    pub fn new(text: &str) -> Self {
        let mut b = Builder::default();
        let _ = Parser::new_from_str(text).load(&mut b, false);
        Locator {
            positions: b.positions,
        }
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
}
