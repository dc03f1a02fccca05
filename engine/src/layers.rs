//! The module layering, checked on the source: no import cycles between
//! the engine's top-level modules, between the files of the server, or
//! between the SDK's modules. A cycle means two modules can only be
//! understood (and changed) together; cut it by moving what both need
//! into a leaf (as `role.rs`, `yaml.rs`, `term.rs` and the SDK's
//! `pattern.rs` are).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

/// The code of a file without its tests and comment lines.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read source");
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The identifiers that follow each `prefix` in `text`.
fn after<'a>(text: &'a str, prefix: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    text.match_indices(prefix).filter_map(move |(at, _)| {
        let before = text[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            return None;
        }
        let rest = &text[at + prefix.len()..];
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        (end > 0).then(|| &rest[..end])
    })
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir") {
            let p = entry.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push(p);
            }
        }
    }
    out
}

/// A cycle in `graph`, if any (depth-first search).
fn cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|n| n == node) {
            let mut c = path[i..].to_vec();
            c.push(node.to_string());
            return Some(c);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

/// Edges between the top-level modules of the crate at `src` (`crate::X`).
fn top_level(src: &Path) -> Graph {
    let mut graph = Graph::new();
    for path in rust_files(src) {
        let rel = path.strip_prefix(src).expect("under src");
        let module = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .unwrap_or_default()
            .trim_end_matches(".rs")
            .to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let text = code(&path);
        for used in after(&text, "crate::") {
            if used != module {
                graph
                    .entry(module.clone())
                    .or_default()
                    .insert(used.to_string());
            }
        }
    }
    graph
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

#[test]
fn the_engines_modules_have_no_import_cycle() {
    let graph = top_level(&workspace().join("engine/src"));
    let modules: BTreeSet<&String> = graph.keys().chain(graph.values().flatten()).collect();
    assert!(modules.len() > 20, "found only {} modules", modules.len());
    assert_eq!(cycle(&graph), None, "an import cycle between modules");
    // One typed run report serves every front end: the server never
    // reaches into the command line.
    assert!(
        !graph["server"].contains("cli"),
        "the server imports the CLI"
    );
}

#[test]
fn the_sdks_modules_have_no_import_cycle() {
    let graph = top_level(&workspace().join("sdk/src"));
    assert!(graph.contains_key("capability"), "{graph:?}");
    assert_eq!(
        cycle(&graph),
        None,
        "an import cycle in the SDK (it is public API)"
    );
}

/// The server's files: no two may need each other, and none needs the
/// server's root (`server.rs`: the module list, re-exports and `serve`),
/// which uses them.
#[test]
fn the_servers_files_have_no_import_cycle() {
    let root = workspace().join("engine/src/server.rs");
    let dir = workspace().join("engine/src/server");
    let files: Vec<String> = rust_files(&dir)
        .iter()
        .filter_map(|p| p.file_stem().and_then(|s| s.to_str()).map(String::from))
        .collect();
    assert!(files.len() > 10, "{files:?}");
    let mut graph = Graph::new();
    for name in &files {
        let text = code(&dir.join(format!("{name}.rs")));
        for used in after(&text, "super::").chain(after(&text, "crate::server::")) {
            let to = if files.iter().any(|f| f == used) {
                used.to_string()
            } else {
                "server".to_string()
            };
            if &to != name {
                graph.entry(name.clone()).or_default().insert(to);
            }
        }
    }
    let text = code(&root);
    for name in &files {
        if after(&text, &format!("{name}::")).next().is_some() {
            graph
                .entry("server".into())
                .or_default()
                .insert(name.clone());
        }
    }
    assert!(graph.contains_key("server"), "{graph:?}");
    assert_eq!(
        cycle(&graph),
        None,
        "an import cycle between the server's files"
    );
}

#[test]
fn a_cycle_is_found_when_there_is_one() {
    let mut g = Graph::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    assert_eq!(cycle(&g), None);
    g.entry("c".into()).or_default().insert("a".into());
    let c = cycle(&g).expect("a cycle");
    assert_eq!(c.first(), c.last());
    assert_eq!(c.len(), 4);
    assert_eq!(
        after(
            "use crate::store::X; crate::audit::Y; xcrate::no",
            "crate::"
        )
        .collect::<Vec<_>>(),
        ["store", "audit"]
    );
}
