//! Property-based fuzzing (proptest, stable Rust) of everything that reads
//! untrusted input: the runbook parser and validator, the three alert
//! payload parsers, the secret redactor, the capability matcher and the
//! template renderer. Properties: nothing panics or aborts, every input is
//! handled in bounded time, the redactor never lets a secret through, the
//! matcher never grants what no declared pattern allows.
//!
//! CI runs each target with `FIREDRILL_FUZZ_CASES` cases (default 256; a
//! few seconds each). A longer campaign, locally:
//!
//! ```sh
//! FIREDRILL_FUZZ_CASES=200000 cargo test --release -p firedrill --test fuzz
//! ```
//!
//! A failure is shrunk to a minimal input and saved under
//! `engine/proptest-regressions/`; commit that file (every later run tries
//! the saved cases first) and add a named regression test below.

use std::time::{Duration, Instant};

use firedrill::runbook::{KernelCatalog, Templates, parse_runbook, validate};
use firedrill::secret::{REDACTED, Redactor};
use firedrill_sdk::manifest::{Capabilities, Effect, ExecCapability, HttpCapability};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    let cases = std::env::var("FIREDRILL_FUZZ_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        max_shrink_iters: 2_000,
        ..ProptestConfig::default()
    }
}

/// Generous: an input that takes longer is a runaway, not a slow machine.
const PER_INPUT: Duration = Duration::from_secs(10);

fn bounded<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = f();
    assert!(
        started.elapsed() < PER_INPUT,
        "{what} took {:?} on one input",
        started.elapsed()
    );
    out
}

/// YAML-ish text: nesting of any depth in block and flow style, anchors,
/// aliases, tags, huge scalars, odd characters.
fn yamlish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("- ".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just("{".to_string()),
        Just("}".to_string()),
        Just("a: ".to_string()),
        Just("\n  ".to_string()),
        Just("&x ".to_string()),
        Just("*x ".to_string()),
        Just("!!str ".to_string()),
        Just("? ".to_string()),
        Just("'q".to_string()),
        Just("\"".to_string()),
        Just("{{ inputs.x }}".to_string()),
        Just("---\n".to_string()),
        "[a-z0-9 :,\\-\\n]{0,12}",
        any::<String>(),
    ];
    let deep = (
        1usize..5_000,
        prop_oneof![Just("- "), Just("["), Just("{a: ")],
    )
        .prop_map(|(n, p)| format!("x: {}1", p.repeat(n)));
    let huge = (1usize..200_000).prop_map(|n| format!("name: {}\n", "y".repeat(n)));
    let steps = (0usize..50).prop_map(|n| {
        let mut s = "apiVersion: firedrill/v1\nname: f\nversion: 1\nsteps:\n".to_string();
        for i in 0..n {
            s.push_str(&format!(
                "  - id: s{i}\n    kernel: k@1.0.0\n    targets: [t]\n    with: {{ a: \"{{{{ steps.s{i}.output }}}}\" }}\n"
            ));
        }
        s
    });
    prop_oneof![
        proptest::collection::vec(piece, 0..200).prop_map(|v| v.concat()),
        deep,
        huge,
        steps,
    ]
}

#[test]
fn the_runbook_parser_and_validator_never_panic() {
    let templates = Templates::default();
    let catalog = KernelCatalog::default();
    proptest!(config(), |(text in yamlish())| {
        bounded("parse_runbook", || {
            let _ = parse_runbook("fuzz.yaml", &text);
            let _ = validate("fuzz.yaml", &text, &catalog, &templates);
        });
    });
}

#[test]
fn the_runbook_parser_takes_invalid_utf8_as_a_clear_refusal() {
    proptest!(config(), |(bytes in proptest::collection::vec(any::<u8>(), 0..4096))| {
        // The CLI and API hand the parser text; bytes that are not UTF-8
        // never get that far, and lossy text parses like any other.
        let text = String::from_utf8_lossy(&bytes);
        let _ = parse_runbook("fuzz.yaml", &text);
    });
}

/// Bytes shaped like a payload of `source`: valid skeletons with fields
/// replaced, dropped, nested or made huge, and raw noise.
fn payload(skeleton: serde_json::Value) -> impl Strategy<Value = Vec<u8>> {
    let base = serde_json::to_vec(&skeleton).unwrap_or_default();
    let mutated = (
        Just(base.clone()),
        proptest::collection::vec((any::<usize>(), any::<u8>()), 0..16),
    )
        .prop_map(|(mut b, edits)| {
            for (at, byte) in edits {
                if !b.is_empty() {
                    let i = at % b.len();
                    b[i] = byte;
                }
            }
            b
        });
    let nested =
        (1usize..100_000).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n)).into_bytes());
    let labels = (0usize..2_000, "[\\PC]{0,40}").prop_map(move |(n, v)| {
        let mut s = skeleton.clone();
        if let Some(alert) = s
            .pointer_mut("/alerts/0/labels")
            .and_then(|l| l.as_object_mut())
        {
            for i in 0..n {
                alert.insert(format!("l{i}"), serde_json::Value::String(v.clone()));
            }
        }
        serde_json::to_vec(&s).unwrap_or_default()
    });
    prop_oneof![
        mutated,
        nested,
        labels,
        proptest::collection::vec(any::<u8>(), 0..2048),
    ]
}

#[test]
fn the_alert_payload_parsers_never_panic() {
    use firedrill::alerts::{AlertmanagerPayload, GenericPayload, PagerDutyEvent};
    let am = serde_json::json!({"version": "4", "groupKey": "g", "status": "firing", "receiver": "r",
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://x",
        "truncatedAlerts": 0,
        "alerts": [{"status": "firing", "labels": {"alertname": "A"}, "annotations": {},
            "startsAt": "2026-12-01T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://x", "fingerprint": "abc"}]});
    let generic = serde_json::json!({"alerts": [{"id": "a", "starts_at": "2026-12-01T00:00:00Z",
        "labels": {"alertname": "A"}}]});
    let pd = serde_json::json!({"event": {"id": "E1", "event_type": "incident.triggered",
        "resource_type": "incident", "occurred_at": "2026-12-01T00:00:00Z",
        "data": {"id": "Q1", "type": "incident", "created_at": "2026-12-01T00:00:00Z",
            "service": {"summary": "s"}, "urgency": "high"}}});
    proptest!(config(), |(a in payload(am.clone()), g in payload(generic.clone()), p in payload(pd.clone()))| {
        bounded("alert parsers", || {
            let _ = AlertmanagerPayload::parse(&a);
            let _ = GenericPayload::parse(&g);
            let _ = PagerDutyEvent::parse(&p);
            let _ = PagerDutyEvent::event_id(&p);
        });
    });
}

#[test]
fn the_redactor_never_lets_a_secret_through() {
    let secret = "[ -~]{8,40}";
    let around = "[\\PC\\n]{0,30}";
    proptest!(config(), |(
        secrets in proptest::collection::vec(secret, 1..4),
        pieces in proptest::collection::vec((around, 0usize..4, any::<bool>()), 1..12),
        split_at in any::<usize>(),
    )| {
        let mut r = Redactor::default();
        for s in &secrets {
            r.add(s);
        }
        // Secrets repeated, adjacent to each other and to other text.
        let mut text = String::new();
        for (filler, which, twice) in &pieces {
            text.push_str(filler);
            let s = &secrets[which % secrets.len()];
            text.push_str(s);
            if *twice {
                text.push_str(s);
            }
        }
        let out = r.text(&text);
        for s in &secrets {
            prop_assert!(!out.contains(s.as_str()), "{s:?} survived in {out:?}");
        }
        // Output that arrives in two chunks is redacted as one text, so a
        // secret split across the chunks is still caught.
        let cut = (0..=text.len()).filter(|i| text.is_char_boundary(*i)).nth(split_at % (text.chars().count() + 1)).unwrap_or(0);
        let (a, b) = text.split_at(cut);
        let joined = r.text(&format!("{a}{b}"));
        for s in &secrets {
            prop_assert!(!joined.contains(s.as_str()));
        }
        // JSON: keys and values.
        let v = serde_json::json!({ text.clone(): [text.clone(), {"k": text}] });
        let shown = r.json(&v).to_string();
        for s in &secrets {
            let escaped = serde_json::to_string(s).unwrap_or_default();
            prop_assert!(!shown.contains(escaped.trim_matches('"')));
        }
    });
}

#[test]
fn a_secret_that_is_part_of_the_marker_is_still_redacted() {
    // Found by the property above: "redacted" and "dacted]" are inside the
    // marker itself, so replacing them with it kept them visible.
    for secret in ["redacted", "[redacted", "dacted]x", "edacted]"] {
        let mut r = Redactor::default();
        r.add(secret);
        let out = r.text(&format!("a {secret} b {secret}{secret}"));
        assert!(!out.contains(secret), "{secret:?}: {out:?}");
    }
    let mut r = Redactor::default();
    r.add("hunter2hunter2");
    assert_eq!(r.text("x hunter2hunter2 y"), format!("x {REDACTED} y"));
}

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("systemctl".to_string()),
        Just("restart".to_string()),
        Just("--".to_string()),
        Just("nginx".to_string()),
        Just("rm".to_string()),
        Just("-rf".to_string()),
        Just("/".to_string()),
        "[a-z]{1,6}",
    ]
}

fn glob_word() -> impl Strategy<Value = String> {
    prop_oneof![
        word(),
        Just("*".to_string()),
        Just("?".to_string()),
        Just("n*".to_string()),
        Just("[ab]".to_string())
    ]
}

fn command() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        word(),
        Just(";".to_string()),
        Just("&&".to_string()),
        Just("|".to_string()),
        Just("$(id)".to_string()),
        Just("`id`".to_string()),
        Just("'a b'".to_string()),
        Just("\"x;y\"".to_string()),
        Just("\n".to_string()),
        Just(">".to_string()),
        Just("\\".to_string()),
        Just("*".to_string()),
    ];
    proptest::collection::vec(part, 0..8).prop_map(|p| p.join(" "))
}

fn effect() -> impl Strategy<Value = Effect> {
    prop_oneof![Just(Effect::Observe), Just(Effect::Change)]
}

#[test]
fn the_exec_matcher_never_grants_what_no_pattern_allows() {
    use firedrill_sdk::capability::{CommandPattern, split_words};
    proptest!(config(), |(
        patterns in proptest::collection::vec((proptest::collection::vec(glob_word(), 1..5), any::<bool>(), effect()), 0..5),
        cmd in command(),
    )| {
        let exec: Vec<ExecCapability> = patterns
            .iter()
            .map(|(words, rest, effect)| ExecCapability {
                pattern: format!("{}{}", words.join(" "), if *rest { " ..." } else { "" }),
                effect: *effect,
            })
            .collect();
        let caps = Capabilities { exec: exec.clone(), ..Capabilities::default() };
        let Ok(m) = bounded("match_exec", || caps.match_exec(&cmd)) else {
            return Ok(());
        };
        // What runs is exactly what was matched: the re-quoted command
        // splits back into the same words.
        prop_assert_eq!(split_words(&m.command).ok(), Some(m.argv.clone()));
        let allowing: Vec<&ExecCapability> = exec
            .iter()
            .filter(|c| CommandPattern::parse(&c.pattern).is_ok_and(|p| p.matches(&m.argv)))
            .collect();
        prop_assert!(allowing.contains(&&m.capability), "granted by a pattern that does not match");
        // A change anywhere wins: dry-run never performs a declared change.
        if allowing.iter().any(|c| c.effect == Effect::Change) {
            prop_assert_eq!(m.effect(), Effect::Change);
        }
        // Independent oracle: a pattern without glob characters allows
        // exactly its own words (and any tail after `...`).
        if let Some((words, rest, _)) = patterns.iter().find(|(w, r, e)| {
            format!("{}{}", w.join(" "), if *r { " ..." } else { "" }) == m.capability.pattern
                && *e == m.capability.effect
                && w.iter().all(|w| !w.contains(['*', '?', '[']))
        }) {
            if *rest {
                prop_assert!(m.argv.starts_with(words));
            } else {
                prop_assert_eq!(&m.argv, words);
            }
        }
    });
}

#[test]
fn the_http_matcher_never_grants_what_no_pattern_allows() {
    let url = prop_oneof![
        Just("https://api.example.com/v1/health".to_string()),
        Just("https://api.example.com/v1/health?x=1".to_string()),
        Just("https://api.example.com.evil.net/v1/health".to_string()),
        Just("https://api.example.com@evil.net/".to_string()),
        Just("http://127.0.0.1:8080/admin".to_string()),
        "https?://[a-z.]{1,20}/[a-z/]{0,20}",
    ];
    let pattern = prop_oneof![
        Just("https://api.example.com/v1/*".to_string()),
        Just("https://api.example.com/v1/health".to_string()),
        Just("http://127.0.0.1:*/admin".to_string()),
        "https?://[a-z.*]{1,20}/[a-z/*]{0,20}",
    ];
    let method = prop_oneof![
        Just("GET".to_string()),
        Just("POST".to_string()),
        Just("*".to_string())
    ];
    proptest!(config(), |(
        caps in proptest::collection::vec((method.clone(), pattern, effect()), 0..4),
        (m, u) in (prop_oneof![Just("GET".to_string()), Just("POST".to_string()), Just("DELETE".to_string())], url),
    )| {
        let http: Vec<HttpCapability> = caps
            .iter()
            .map(|(method, url_pattern, effect)| HttpCapability { method: method.clone(), url_pattern: url_pattern.clone(), effect: *effect })
            .collect();
        let c = Capabilities { http: http.clone(), ..Capabilities::default() };
        if let Ok(granted) = c.match_http(&m, &u) {
            prop_assert!(granted.method == "*" || granted.method == m);
            prop_assert!(http.contains(&granted));
            if !granted.url_pattern.contains(['*', '?', '[']) {
                prop_assert_eq!(&granted.url_pattern, &u, "a literal pattern allows only itself");
            }
            let glob = glob::Pattern::new(&granted.url_pattern).expect("valid");
            prop_assert!(glob.matches(&u));
        }
    });
}

#[test]
fn the_template_renderer_never_panics_and_stays_bounded() {
    let templates = Templates::default();
    let ctx = minijinja::Value::from(minijinja::value::Serde(
        serde_json::json!({"inputs": {"x": "1", "list": [1, 2, 3]}, "steps": {}}),
    ));
    let expr = prop_oneof![
        Just("inputs.x".to_string()),
        Just("inputs.list | length".to_string()),
        Just("range(100000) | list | length".to_string()),
        Just("(".to_string()),
        Just(")".to_string()),
        Just("inputs.nope".to_string()),
        Just("'a' * 100000".to_string()),
        Just("[inputs.list]".to_string()),
        "[a-z0-9 .|()\\[\\]'\"+*~]{0,30}",
    ];
    let template = prop_oneof![
        proptest::collection::vec(expr.clone(), 1..10)
            .prop_map(|e| format!("{{{{ {} }}}}", e.join(" "))),
        (1usize..2_000).prop_map(|n| format!("{{{{ {}1{} }}}}", "(".repeat(n), ")".repeat(n))),
        (1usize..2_000).prop_map(|n| format!(
            "{}x{}",
            "{% if true %}".repeat(n),
            "{% endif %}".repeat(n)
        )),
        (1usize..500).prop_map(|n| format!(
            "{{% for a in range(1000) %}}{}{{% endfor %}}",
            "{{ a }}".repeat(n)
        )),
        any::<String>(),
    ];
    proptest!(config(), |(t in template)| {
        // Rendered on a thread with a small stack, like a runtime worker's.
        let templates = &templates;
        let ctx = &ctx;
        bounded("render", || {
            std::thread::scope(|s| {
                std::thread::Builder::new()
                    .stack_size(2 << 20)
                    .spawn_scoped(s, || {
                        let _ = templates.render_value(&t, ctx);
                        let _ = templates.condition(&t, ctx);
                    })
                    .expect("thread")
                    .join()
                    .expect("rendering did not panic or overflow");
            });
        });
    });
}
