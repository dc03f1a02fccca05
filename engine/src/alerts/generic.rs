//! The generic alert endpoint, for anything that can post JSON:
//!
//! ```json
//! {"alerts": [{"id": "disk-full-web-1", "status": "firing",
//!              "starts_at": "2026-11-23T02:00:00Z",
//!              "labels": {"alertname": "DiskFull", "instance": "web-1"},
//!              "annotations": {"summary": "..."}}]}
//! ```
//!
//! `id` + `starts_at` identify one occurrence (deliveries with the same pair
//! are one alert); `status` is `firing` (default) or `resolved`. Parsed
//! strictly: unknown fields are refused.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Alert, AlertStatus, MAX_ALERTS};
use crate::runbook::TriggerSource;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenericPayload {
    pub alerts: Vec<GenericAlert>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenericAlert {
    pub id: String,
    #[serde(default = "firing")]
    pub status: AlertStatus,
    pub starts_at: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

fn firing() -> AlertStatus {
    AlertStatus::Firing
}

/// What the generic endpoint accepts, for error messages.
pub const GENERIC_SHAPE: &str = r#"{"alerts": [{"id": TEXT, "status"?: "firing"|"resolved", "starts_at": RFC3339, "labels": {...}, "annotations"?: {...}}]}"#;

impl GenericPayload {
    /// Parse and check a body; the error says what is wrong.
    pub fn parse(body: &[u8]) -> Result<Vec<Alert>, String> {
        let p: GenericPayload =
            serde_json::from_slice(body).map_err(|e| format!("{e}; expected {GENERIC_SHAPE}"))?;
        if p.alerts.is_empty() || p.alerts.len() > MAX_ALERTS {
            return Err(format!(
                "a request carries 1 to {MAX_ALERTS} alerts; this one has {}",
                p.alerts.len()
            ));
        }
        p.alerts
            .into_iter()
            .enumerate()
            .map(|(i, a)| {
                Alert {
                    source: TriggerSource::Generic.as_str(),
                    status: a.status,
                    fingerprint: a.id,
                    starts_at: a.starts_at,
                    labels: a.labels,
                    annotations: a.annotations,
                }
                .checked(&format!("alerts[{i}]"), "starts_at")
            })
            .collect()
    }
}
