//! Crash-test hooks at the durable transitions, compiled in only with the
//! `failpoints` feature (never in a release build).
//!
//! `FAILPOINTS='store.after.step-intent=return'` makes the process abort
//! right after the first commit that wrote a step intent: what a `kill -9`
//! at that instant leaves behind. Names: `store.after.KIND` for every
//! [`crate::store::TRANSITIONS`] kind, and `host.before-change` /
//! `host.after-change` around a live change on a target. `return(N)` aborts
//! at the Nth hit instead of the first.

/// Install the `FAILPOINTS` configuration (no-op without the feature).
pub fn setup() {
    #[cfg(feature = "failpoints")]
    std::mem::forget(fail::FailScenario::setup());
}

/// Hit the failpoint `name`: with the feature and a `return` action there,
/// abort the process (no unwinding, no cleanup: a crash).
pub fn hit(name: &str) {
    #[cfg(feature = "failpoints")]
    fail::eval(name, |arg| {
        let nth: u64 = arg.and_then(|a| a.parse().ok()).unwrap_or(1);
        if countdown(name, nth) {
            eprintln!("failpoint {name}: aborting the process");
            std::process::abort();
        }
    });
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

/// Whether this is the `nth` hit of `name`.
#[cfg(feature = "failpoints")]
fn countdown(name: &str, nth: u64) -> bool {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static HITS: Mutex<Option<HashMap<String, u64>>> = Mutex::new(None);
    let mut hits = HITS.lock().unwrap_or_else(|e| e.into_inner());
    let n = hits
        .get_or_insert_with(HashMap::new)
        .entry(name.to_string())
        .or_insert(0);
    *n += 1;
    *n >= nth
}

/// After a committed batch: one failpoint per kind of write in it.
pub fn after_commit<'a>(kinds: impl IntoIterator<Item = &'a str>) {
    if cfg!(feature = "failpoints") {
        for kind in kinds {
            hit(&format!("store.after.{kind}"));
        }
    }
}
