//! Drill schedule maths: cron expressions, the next slot after a due time,
//! jitter. Pure functions of a runbook's `drill:` block (validation checks
//! `max_age` against them; the scheduler in `drill.rs` uses them).

use std::time::{Duration, SystemTime};

use super::Drill;

pub(crate) fn parse_cron(expr: &str) -> Result<croner::Cron, String> {
    use std::str::FromStr as _;
    croner::Cron::from_str(expr).map_err(|e| {
        format!("{expr:?} is not a cron expression (minute hour day month weekday): {e}")
    })
}

/// The longest gap between two occurrences of `expr` over the next few
/// occurrences (to check max_age and jitter against); an error if `expr`
/// does not parse or never fires.
pub fn cron_interval(expr: &str) -> Result<Duration, String> {
    let cron = parse_cron(expr)?;
    let mut at = chrono::Utc::now();
    let mut longest = Duration::ZERO;
    let mut previous: Option<chrono::DateTime<chrono::Utc>> = None;
    for _ in 0..16 {
        let next = cron
            .find_next_occurrence(&at, false)
            .map_err(|e| format!("{expr:?} never fires: {e}"))?;
        if let Some(p) = previous {
            longest = longest.max((next - p).to_std().unwrap_or_default());
        }
        previous = Some(next);
        at = next;
    }
    Ok(longest)
}

/// When the drill after one due at `due` (and fired at `now`) is due,
/// before jitter: the next slot of the schedule after `now`, so a drill
/// missed while the server was down runs once, not once per missed slot.
pub fn next_slot(drill: &Drill, due: SystemTime, now: SystemTime) -> SystemTime {
    if let Some(every) = &drill.every {
        let mut next = due + every.0;
        if next <= now {
            next = now + every.0;
        }
        return next;
    }
    let cron = drill.cron.as_deref().and_then(|c| parse_cron(c).ok());
    let after: chrono::DateTime<chrono::Utc> = now.into();
    cron.and_then(|c| c.find_next_occurrence(&after, false).ok())
        .map_or(now + Duration::from_secs(24 * 3600), SystemTime::from)
}

/// `base` plus a random share of the drill's jitter.
pub fn with_jitter(drill: &Drill, base: SystemTime) -> SystemTime {
    let jitter = drill.jitter();
    if jitter.is_zero() {
        return base;
    }
    let ms = u64::try_from(jitter.as_millis()).unwrap_or(u64::MAX);
    base + Duration::from_millis(rand::random_range(0..=ms))
}
