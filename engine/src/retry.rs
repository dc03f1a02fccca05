//! Backoff between retries: exponential, capped, with jitter.
//!
//! One function for every retry in the engine (a step's retryable errors, SSH
//! and HTTP connection failures), so they all behave alike.

use std::time::Duration;

/// The wait before retry number `retry` (1 for the first retry): `base`
/// doubled for each earlier retry, capped at `cap`, then "equal jitter": half
/// of it fixed and half random, so a fleet of failures does not retry in step
/// while every retry still waits at least half the nominal delay.
pub fn backoff(base: Duration, retry: u32, cap: Duration) -> Duration {
    let nominal = base
        .saturating_mul(2u32.saturating_pow(retry.saturating_sub(1)))
        .min(cap);
    let half = nominal / 2;
    let spread = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(rand::random_range(0..=spread))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_caps_and_jitters_within_bounds() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(1);
        for (retry, nominal) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (40, 1000),
        ] {
            let nominal = Duration::from_millis(nominal);
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..50 {
                let d = backoff(base, retry, cap);
                assert!(d >= nominal / 2 && d <= nominal, "retry {retry}: {d:?}");
                seen.insert(d);
            }
            assert!(seen.len() > 1, "retry {retry}: no jitter");
        }
        assert_eq!(backoff(Duration::ZERO, 3, cap), Duration::ZERO);
    }
}
