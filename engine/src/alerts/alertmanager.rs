//! Prometheus Alertmanager's webhook payload (version 4), parsed strictly:
//! an unknown field or version is refused, so a format change is noticed
//! rather than misread.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Alert, AlertStatus, MAX_ALERTS};
use crate::runbook::TriggerSource;

/// Alertmanager's webhook payload, version 4.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AlertmanagerPayload {
    pub version: String,
    pub group_key: String,
    #[serde(default)]
    pub truncated_alerts: u64,
    pub status: AlertStatus,
    pub receiver: String,
    #[serde(default)]
    pub group_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub common_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub common_annotations: BTreeMap<String, String>,
    #[serde(rename = "externalURL", default)]
    pub external_url: String,
    pub alerts: Vec<AlertmanagerAlert>,
}

/// One alert of a notification.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AlertmanagerAlert {
    pub status: AlertStatus,
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub starts_at: String,
    #[serde(default)]
    pub ends_at: String,
    #[serde(rename = "generatorURL", default)]
    pub generator_url: String,
    pub fingerprint: String,
}

impl AlertmanagerPayload {
    /// Parse and check a webhook body; the error says what is wrong.
    pub fn parse(body: &[u8]) -> Result<Vec<Alert>, String> {
        let p: AlertmanagerPayload = serde_json::from_slice(body)
            .map_err(|e| format!("not an Alertmanager webhook payload (version 4): {e}"))?;
        if p.version != "4" {
            return Err(format!(
                "payload version {:?} is not supported; firedrill reads Alertmanager's version \"4\"",
                p.version
            ));
        }
        if p.alerts.is_empty() || p.alerts.len() > MAX_ALERTS {
            return Err(format!(
                "a notification carries 1 to {MAX_ALERTS} alerts; this one has {}",
                p.alerts.len()
            ));
        }
        p.alerts
            .into_iter()
            .enumerate()
            .map(|(i, a)| {
                let fp_ok = !a.fingerprint.is_empty()
                    && a.fingerprint.len() <= 64
                    && a.fingerprint.chars().all(|c| c.is_ascii_hexdigit());
                if !fp_ok {
                    return Err(format!(
                        "alerts[{i}].fingerprint {:?} is not a hex fingerprint",
                        a.fingerprint
                    ));
                }
                Alert {
                    source: TriggerSource::Alertmanager.as_str(),
                    status: a.status,
                    fingerprint: a.fingerprint,
                    starts_at: a.starts_at,
                    labels: a.labels,
                    annotations: a.annotations,
                }
                .checked(&format!("alerts[{i}]"), "startsAt")
            })
            .collect()
    }
}
