//! Validation before anything runs: everything that can be known without
//! running a step is checked, and every problem is reported.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::model::{API_VERSION, KernelRef, MAX_STEPS, Runbook, Step};
use super::parse::{Problems, Report, parse_runbook};
use super::template::Templates;
use crate::kernel::LoadedKernel;

/// The kernels a runbook names, resolved from the registry (or why not).
pub type KernelCatalog = BTreeMap<KernelRef, Result<Arc<LoadedKernel>, String>>;

/// A runbook that passed validation, with the exact kernels it will run.
#[derive(Debug, Clone)]
pub struct ValidRunbook {
    pub runbook: Runbook,
    pub source: String,
    /// `sha256:<hex>` of the source text.
    pub digest: String,
    pub kernels: BTreeMap<KernelRef, Arc<LoadedKernel>>,
    pub inputs_schema: Arc<jsonschema::Validator>,
}

impl ValidRunbook {
    /// The kernel of `step` (validated to exist).
    pub fn kernel(&self, step: &Step) -> Option<&Arc<LoadedKernel>> {
        step.kernel_ref().ok().and_then(|r| self.kernels.get(&r))
    }
}

/// Top-level names templates may use.
pub const TEMPLATE_ROOTS: &[&str] = &["inputs", "steps", "run"];

/// `sha256:<hex>` of a runbook's source.
pub fn source_digest(source: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(source.as_bytes())))
}

/// The kernel references of every step (for resolving the catalog first).
pub fn kernel_refs(runbook: &Runbook) -> BTreeSet<KernelRef> {
    runbook
        .all_steps()
        .filter_map(|s| s.kernel_ref().ok())
        .collect()
}

/// Every string in a JSON value, with its pointer below `base`.
fn strings<'a>(base: &str, v: &'a serde_json::Value, out: &mut Vec<(String, &'a str)>) {
    match v {
        serde_json::Value::String(s) => out.push((base.to_string(), s)),
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                strings(&format!("{base}/{i}"), item, out);
            }
        }
        serde_json::Value::Object(map) => {
            for (k, item) in map {
                strings(
                    &format!("{base}/{}", k.replace('~', "~0").replace('/', "~1")),
                    item,
                    out,
                );
            }
        }
        _ => {}
    }
}

struct Checker<'r, 'f> {
    report: Report<'f>,
    runbook: &'r Runbook,
    templates: &'r Templates,
    input_names: Option<BTreeSet<String>>,
}

impl Checker<'_, '_> {
    /// Check the variables `text` (at `pointer`) refers to; `earlier` are the
    /// step ids it may read.
    fn references(&mut self, pointer: &str, text: &str, condition: bool, earlier: &BTreeSet<&str>) {
        let refs = match self.templates.references(text, condition) {
            Ok(r) => r,
            Err(e) => {
                self.report
                    .add(pointer, format!("template does not compile: {e}"));
                return;
            }
        };
        for var in refs {
            let mut parts = var.split('.');
            let root = parts.next().unwrap_or_default();
            let second = parts.next();
            match (root, second) {
                ("steps", Some(step)) if !earlier.contains(step) => {
                    let known = self.runbook.all_steps().any(|s| s.id == step);
                    self.report.add(
                        pointer,
                        if known {
                            format!("refers to step `{step}`, which does not run before this step")
                        } else {
                            format!("refers to unknown step `{step}`")
                        },
                    );
                }
                ("inputs", Some(name)) => {
                    if let Some(names) = &self.input_names
                        && !names.contains(name)
                    {
                        self.report.add(
                            pointer,
                            format!(
                                "refers to input `{name}`, which the runbook's inputs schema does not declare (declared: {})",
                                names.iter().cloned().collect::<Vec<_>>().join(", ")
                            ),
                        );
                    }
                }
                (root, _) if !TEMPLATE_ROOTS.contains(&root) => {
                    self.report.add(
                        pointer,
                        format!(
                            "unknown variable `{root}`; templates can use {}",
                            TEMPLATE_ROOTS.join(", ")
                        ),
                    );
                }
                _ => {}
            }
        }
    }

    /// Triggers: at least one matcher, inputs the runbook declares, and
    /// templates that read only `alert`.
    fn triggers(&mut self) {
        use super::model::{MAX_COOLDOWN, MAX_TRIGGERS};
        let runbook = self.runbook;
        if runbook.triggers.len() > MAX_TRIGGERS {
            self.report
                .add("/triggers", format!("more than {MAX_TRIGGERS} triggers"));
        }
        for (i, t) in runbook.triggers.iter().enumerate() {
            let at = format!("/triggers/{i}");
            if t.matchers.is_empty() {
                self.report.add(
                    &format!("{at}/match"),
                    "give at least one label matcher (e.g. alertname: WebDown); a trigger that matches every alert is refused",
                );
            }
            if t.cooldown() > MAX_COOLDOWN {
                self.report
                    .add(&format!("{at}/cooldown"), "cooldown is longer than 7 days");
            }
            if let Some(b) = &t.max_runs
                && (b.count == 0 || b.per.0.is_zero() || b.per.0 > MAX_COOLDOWN)
            {
                self.report.add(
                    &format!("{at}/max_runs"),
                    "max_runs needs a count of at least 1 and a window `per` between 1s and 7 days",
                );
            }
            let mut texts: Vec<(String, &str)> = t
                .inputs
                .iter()
                .map(|(k, v)| (format!("{at}/inputs/{k}"), v.as_str()))
                .collect();
            if let Some(key) = &t.key {
                texts.push((format!("{at}/key"), key.as_str()));
            }
            for name in t.inputs.keys() {
                if let Some(names) = &self.input_names
                    && !names.contains(name)
                {
                    self.report.add(
                        &format!("{at}/inputs/{name}"),
                        format!(
                            "input `{name}` is not declared in the runbook's inputs schema (declared: {})",
                            names.iter().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    );
                }
            }
            for (pointer, text) in texts {
                match self.templates.references(text, false) {
                    Err(e) => self
                        .report
                        .add(&pointer, format!("template does not compile: {e}")),
                    Ok(refs) => {
                        for var in refs {
                            if var.split('.').next() != Some("alert") {
                                self.report.add(
                                    &pointer,
                                    format!(
                                        "unknown variable `{var}`; trigger templates can use `alert` (labels, annotations, fingerprint, starts_at, status)"
                                    ),
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// Drill: one schedule, sane bounds, inputs that satisfy the runbook's
    /// inputs schema.
    fn drill(&mut self, inputs_schema: Option<&jsonschema::Validator>) {
        use super::model::{MAX_COOLDOWN, MIN_DRILL_INTERVAL};
        let Some(d) = &self.runbook.drill else {
            return;
        };
        let interval = match (&d.every, &d.cron) {
            (Some(e), None) => Some(e.0),
            (None, Some(c)) => match super::schedule::cron_interval(c) {
                Ok(i) => Some(i),
                Err(e) => {
                    self.report.add("/drill/cron", e);
                    None
                }
            },
            _ => {
                self.report.add(
                    "/drill",
                    "give exactly one of `every` (e.g. 6h) or `cron` (e.g. \"0 */6 * * *\")",
                );
                None
            }
        };
        if let Some(i) = interval {
            if i < MIN_DRILL_INTERVAL || i > MAX_COOLDOWN * 5 {
                self.report.add(
                    "/drill",
                    "drills run at most every minute and at least every 35 days",
                );
            }
            if d.jitter() > i {
                self.report
                    .add("/drill/jitter", "jitter is longer than the drill interval");
            }
            if d.max_age.0 < i + d.jitter() {
                self.report.add(
                    "/drill/max_age",
                    format!(
                        "max_age {} is shorter than the time between drills ({} + jitter): the runbook would go stale between two passing drills",
                        d.max_age,
                        humantime::format_duration(i)
                    ),
                );
            }
        }
        if let Some(schema) = inputs_schema {
            let inputs = serde_json::json!(d.inputs);
            for e in schema.iter_errors(&inputs) {
                self.report
                    .add("/drill/inputs", format!("drill inputs: {e}"));
            }
        }
    }

    fn step(
        &mut self,
        base: &str,
        step: &Step,
        earlier: &BTreeSet<&str>,
        catalog: &KernelCatalog,
        kernels: &mut BTreeMap<KernelRef, Arc<LoadedKernel>>,
    ) {
        if let Some(a) = &step.approval {
            if !step.kernel.is_empty()
                || !step.targets.is_empty()
                || step.with != serde_json::json!({})
            {
                self.report.add(
                    base,
                    "an approval step has no kernel, targets or `with`: give either `kernel` or `approval`",
                );
            }
            if a.required == 0 || a.required > 10 {
                self.report.add(
                    &format!("{base}/approval/required"),
                    "required is 1 to 10 people",
                );
            }
            if a.timeout.0.is_zero() || a.timeout.0 > super::model::MAX_COOLDOWN {
                self.report.add(
                    &format!("{base}/approval/timeout"),
                    "timeout is between 1s and 7 days",
                );
            }
            if a.roles().contains(&crate::role::Role::Webhook) {
                self.report.add(
                    &format!("{base}/approval/roles"),
                    "webhook tokens only post alerts; they cannot approve",
                );
            }
            if let Some(when) = &step.when {
                self.references(&format!("{base}/when"), when, true, earlier);
            }
            return;
        }
        let kernel = match step.kernel_ref() {
            Ok(r) => match catalog.get(&r) {
                Some(Ok(k)) => {
                    kernels.insert(r, k.clone());
                    Some(k.clone())
                }
                Some(Err(why)) => {
                    self.report.add(&format!("{base}/kernel"), why.clone());
                    None
                }
                None => {
                    self.report.add(
                        &format!("{base}/kernel"),
                        format!("kernel {r} is not published; publish it with `firedrill kernel publish FILE.wasm`"),
                    );
                    None
                }
            },
            Err(e) => {
                self.report.add(&format!("{base}/kernel"), e);
                None
            }
        };
        if step.targets.is_empty() {
            self.report.add(
                &format!("{base}/targets"),
                "no targets: a step must name its targets; an empty target set is refused, never read as \"all\"",
            );
        }
        for (i, t) in step.targets.iter().enumerate() {
            self.references(&format!("{base}/targets/{i}"), t, false, earlier);
        }
        let mut with_strings = Vec::new();
        strings(&format!("{base}/with"), &step.with, &mut with_strings);
        let mut templated = false;
        for (pointer, text) in with_strings {
            if Templates::is_template(text) {
                templated = true;
                self.references(&pointer, text, false, earlier);
            }
        }
        if let Some(when) = &step.when {
            self.references(&format!("{base}/when"), when, true, earlier);
        }
        // A `with` that uses no template is final now: check it against the
        // kernel's input schema before anything runs.
        if let Some(kernel) = kernel
            && !templated
            && let Err(problems) = kernel.validate_input(&step.with)
        {
            for p in problems {
                self.report.add(
                    &format!("{base}/with"),
                    format!("input for {} is not valid: {p}", kernel.reference()),
                );
            }
        }
    }
}

/// Validate runbook `text` from `file` against the kernels in `catalog`.
pub fn validate(
    file: &str,
    text: &str,
    catalog: &KernelCatalog,
    templates: &Templates,
) -> Result<ValidRunbook, Problems> {
    let runbook = parse_runbook(file, text)?;
    let mut checker = Checker {
        report: Report::new(file, text),
        runbook: &runbook,
        templates,
        input_names: runbook
            .inputs
            .get("properties")
            .and_then(|p| p.as_object())
            .map(|o| o.keys().cloned().collect()),
    };
    if runbook.api_version != API_VERSION {
        checker.report.add(
            "/apiVersion",
            format!(
                "apiVersion is {:?}; this firedrill reads {API_VERSION:?}",
                runbook.api_version
            ),
        );
    }
    if !firedrill_sdk::manifest::valid_name(&runbook.name) {
        checker.report.add(
            "/name",
            "use lower-case letters, digits and '-', starting with a letter (at most 64)",
        );
    }
    let inputs_schema = match jsonschema::validator_for(&runbook.inputs) {
        Ok(v) => Some(Arc::new(v)),
        Err(e) => {
            checker
                .report
                .add("/inputs", format!("not a valid JSON Schema: {e}"));
            None
        }
    };
    if runbook.steps.len() + runbook.on_failure.len() > MAX_STEPS {
        checker
            .report
            .add("/steps", format!("more than {MAX_STEPS} steps in total"));
    }
    let mut seen: BTreeMap<&str, String> = BTreeMap::new();
    for (phase, steps) in [
        ("steps", &runbook.steps),
        ("on_failure", &runbook.on_failure),
    ] {
        for (i, s) in steps.iter().enumerate() {
            let pointer = format!("/{phase}/{i}/id");
            if let Some(first) = seen.get(s.id.as_str()) {
                checker.report.add(
                    &pointer,
                    format!(
                        "duplicate step id `{}` (first used at {})",
                        s.id,
                        super::parse::display_path(first)
                    ),
                );
            } else {
                seen.insert(&s.id, format!("/{phase}/{i}"));
            }
        }
    }
    let mut kernels = BTreeMap::new();
    let mut earlier: BTreeSet<&str> = BTreeSet::new();
    for (i, step) in runbook.steps.iter().enumerate() {
        checker.step(
            &format!("/steps/{i}"),
            step,
            &earlier,
            catalog,
            &mut kernels,
        );
        earlier.insert(&step.id);
    }
    // on_failure steps may read any main step (the failed one included).
    for (i, step) in runbook.on_failure.iter().enumerate() {
        checker.step(
            &format!("/on_failure/{i}"),
            step,
            &earlier,
            catalog,
            &mut kernels,
        );
    }
    checker.triggers();
    checker.drill(inputs_schema.as_deref());
    checker.report.finish()?;
    // An invalid inputs schema was reported above, so it is present here.
    let inputs_schema = inputs_schema.ok_or_else(|| Problems {
        file: file.to_string(),
        problems: Vec::new(),
        omitted: 0,
    })?;
    Ok(ValidRunbook {
        digest: source_digest(text),
        source: text.to_string(),
        runbook,
        kernels,
        inputs_schema,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A kernel known only by its manifest: no component is built.
    fn declared(name: &str) -> Arc<LoadedKernel> {
        let manifest: crate::Manifest = serde_json::from_value(json!({
            "name": name,
            "version": "1.0.0",
            "description": "restart a unit",
            "input-schema": {
                "type": "object",
                "required": ["unit"],
                "properties": {"unit": {"type": "string"}},
            },
            "output-schema": {"type": "object"},
            "idempotent": true,
            "capabilities": {},
        }))
        .expect("a manifest");
        Arc::new(LoadedKernel::declared(manifest, "sha256:test").expect("declared"))
    }

    /// Validate `steps` against a catalog where only `restart@1.0.0` exists.
    fn check(steps: &str) -> Result<ValidRunbook, Problems> {
        let text = format!("apiVersion: firedrill/v1\nname: t\nversion: 1\nsteps:\n{steps}");
        let runbook = parse_runbook("t.yaml", &text)?;
        let catalog: KernelCatalog = kernel_refs(&runbook)
            .into_iter()
            .map(|r| {
                let resolved = if r.name == "restart" && r.version == "1.0.0" {
                    Ok(declared("restart"))
                } else {
                    Err(format!("kernel {r} is not in this catalog"))
                };
                (r, resolved)
            })
            .collect();
        validate("t.yaml", &text, &catalog, &Templates::default())
    }

    const RESTART: &str =
        "  - id: a\n    kernel: restart@1.0.0\n    targets: [web-1]\n    with: { unit: web }\n";

    /// The validation rules, each on its own, with no component built: a
    /// declared kernel stands for a published one.
    #[test]
    fn each_rule_is_checked_against_declared_kernels() {
        let valid = check(RESTART).expect("valid");
        assert_eq!(valid.kernels.len(), 1);
        assert_eq!(
            valid
                .kernel(&valid.runbook.steps[0])
                .map(|k| k.digest.as_str()),
            Some("sha256:test")
        );
        for (steps, want) in [
            (
                "  - id: a\n    kernel: restart@1.0.0\n    targets: [web-1]\n    with: { unit: 7 }\n".to_string(),
                "input for restart@1.0.0 is not valid",
            ),
            (
                "  - id: a\n    kernel: missing@1.0.0\n    targets: [web-1]\n".to_string(),
                "not in this catalog",
            ),
            (
                format!("{RESTART}  - id: b\n    kernel: restart@1.0.0\n    targets: [web-1]\n    with: {{ unit: \"{{{{ steps.c.output }}}}\" }}\n"),
                "refers to unknown step `c`",
            ),
            (
                format!("  - id: b\n    kernel: restart@1.0.0\n    targets: [web-1]\n    with: {{ unit: \"{{{{ steps.a.output }}}}\" }}\n{RESTART}"),
                "does not run before this step",
            ),
            (
                "  - id: a\n    kernel: restart@1.0.0\n    approval: { timeout: 5m }\n".to_string(),
                "either `kernel` or `approval`",
            ),
        ] {
            let problems = check(&steps).expect_err(want);
            assert!(problems.to_string().contains(want), "{want}: {problems}");
        }
    }
}
