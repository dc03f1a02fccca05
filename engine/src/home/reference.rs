//! The configuration reference (`docs/configuration.md`, between the
//! `BEGIN/END GENERATED` markers), generated from the typed config: each
//! key's default comes from the `Default` impls and its description from the
//! field's doc comment, so neither is written twice. A test checks the
//! document is current; `FIREDRILL_UPDATE_DOCS=1 cargo test -p firedrill
//! --lib reference` rewrites it.

use std::fmt::Write as _;

use serde_json::Value;

use super::Config;

/// The reference: one table per `[section]` of `firedrill.toml`.
pub fn config_reference() -> String {
    let schema = schemars::schema_for!(Config);
    let schema = schema.as_value();
    let defaults = serde_json::to_value(Config::default()).unwrap_or_default();
    let mut out = String::new();
    section(&mut out, schema, schema, &defaults, "");
    out
}

/// `schema` with a `$ref` followed (one level: the config has no cycles).
fn resolve<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => r
            .strip_prefix("#/")
            .and_then(|p| root.pointer(&format!("/{p}")))
            .unwrap_or(schema),
        None => match schema.get("allOf").and_then(Value::as_array) {
            Some(all) if all.len() == 1 => resolve(root, &all[0]),
            _ => schema,
        },
    }
}

/// The description without a restated default ("Default 64."): the
/// default column is the one source.
fn describe(schema: &Value, resolved: &Value) -> String {
    let text = schema
        .get("description")
        .or_else(|| resolved.get("description"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .replace('\n', " ");
    let mut kept = Vec::new();
    for sentence in text.split_inclusive(". ") {
        let s = sentence.trim();
        let restated = s.strip_prefix("Default ").is_some_and(|rest| {
            !rest.starts_with(':') && rest.trim_end_matches('.').split_whitespace().count() <= 3
        });
        if !restated {
            kept.push(s);
        }
    }
    kept.join(" ").replace('|', "\\|")
}

fn value_text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "none".into(),
        Some(Value::String(s)) if s.is_empty() => "\"\"".into(),
        Some(Value::String(s)) => format!("`{s}`"),
        Some(Value::Array(a)) if a.is_empty() => "`[]`".into(),
        Some(other) => format!("`{other}`"),
    }
}

fn is_table(resolved: &Value) -> bool {
    resolved.get("properties").is_some()
}

fn section(out: &mut String, root: &Value, schema: &Value, defaults: &Value, path: &str) {
    let schema = resolve(root, schema);
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    let mut rows = Vec::new();
    let mut tables = Vec::new();
    for (key, prop) in props {
        let resolved = resolve(root, prop);
        if is_table(resolved) {
            tables.push((key, prop));
            continue;
        }
        let choices = resolved
            .get("enum")
            .and_then(Value::as_array)
            .map(|e| {
                e.iter()
                    .filter_map(Value::as_str)
                    .map(|s| format!("`{s}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .or_else(|| {
                resolved.get("oneOf").and_then(Value::as_array).map(|e| {
                    e.iter()
                        .filter_map(|c| c.get("const").and_then(Value::as_str))
                        .map(|s| format!("`{s}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
            })
            .filter(|c| !c.is_empty());
        let mut what = describe(prop, resolved);
        if let Some(choices) = choices {
            let _ = write!(what, " One of {choices}.");
        }
        rows.push(format!(
            "| `{key}` | {} | {} |",
            value_text(defaults.get(key)),
            what.trim()
        ));
    }
    if !rows.is_empty() {
        let _ = writeln!(out, "### `[{path}]`\n");
        let description = describe(schema, schema);
        if !description.is_empty() {
            let _ = writeln!(out, "{description}\n");
        }
        let _ = writeln!(out, "| key | default | what it does |\n|---|---|---|");
        for row in rows {
            let _ = writeln!(out, "{row}");
        }
        out.push('\n');
    }
    for (key, prop) in tables {
        let sub = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        let empty = Value::Null;
        section(out, root, prop, defaults.get(key).unwrap_or(&empty), &sub);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where the generated part of `docs/configuration.md` starts and ends.
    const BEGIN: &str = "<!-- BEGIN GENERATED: config reference (engine/src/home/reference.rs) -->";
    const END: &str = "<!-- END GENERATED: config reference -->";

    #[test]
    fn the_reference_has_every_section_and_its_defaults() {
        let text = config_reference();
        for section in [
            "[kernel]",
            "[kernel.limits]",
            "[store]",
            "[secrets]",
            "[targets.ssh]",
            "[targets.http]",
            "[targets.retry]",
            "[server]",
            "[node]",
        ] {
            assert!(
                text.contains(&format!("### `{section}`")),
                "{section} missing:\n{text}"
            );
        }
        let d = Config::default();
        assert!(text.contains(&format!(
            "| `memory-bytes` | `{}` |",
            d.kernel.limits.memory_bytes
        )));
        assert!(text.contains(&format!(
            "| `max-in-flight` | `{}` |",
            d.server.max_in_flight
        )));
        assert!(text.contains(&format!("| `lease-ms` | `{}` |", d.node.lease_ms)));
        // A default restated in a doc comment is left out.
        assert!(!text.contains("Default 64."), "{text}");
    }

    /// docs/configuration.md carries the current reference.
    #[test]
    fn the_configuration_document_is_current() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
        let doc = std::fs::read_to_string(&path).expect("docs/configuration.md");
        let (Some(start), Some(end)) = (doc.find(BEGIN), doc.find(END)) else {
            panic!("docs/configuration.md has no `{BEGIN}` ... `{END}` block");
        };
        let current = &doc[start + BEGIN.len()..end];
        let want = format!("\n\n{}", config_reference());
        if current != want {
            if std::env::var_os("FIREDRILL_UPDATE_DOCS").is_some() {
                let updated = format!("{}{BEGIN}{want}{}", &doc[..start], &doc[end..]);
                std::fs::write(&path, updated).expect("write docs/configuration.md");
                return;
            }
            panic!(
                "docs/configuration.md's configuration reference is stale; regenerate it with `FIREDRILL_UPDATE_DOCS=1 cargo test -p firedrill --lib reference`"
            );
        }
    }
}
