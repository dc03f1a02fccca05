//! PagerDuty v3 webhooks: signature verification and the incident events
//! that become alerts.
//!
//! PagerDuty signs the raw body with HMAC-SHA256 under the subscription's
//! secret and sends `X-PagerDuty-Signature: v1=<hex>[,v1=<hex>...]` (several
//! signatures while a secret is rotated). A request is accepted when any
//! signature matches any configured secret; comparisons are constant-time.
//!
//! PagerDuty adds fields to its payloads over time, so unknown fields are
//! ignored here (unlike Alertmanager's versioned payload); the fields
//! firedrill reads are required and checked.
//!
//! `incident.triggered` is a firing alert and `incident.resolved` a resolved
//! one, identified by the incident id and its `created_at`; every other
//! event type (acknowledged, annotated, reassigned...) is recorded and
//! starts nothing.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::{Alert, AlertStatus};
use crate::runbook::TriggerSource;
use crate::secret::Secret;

/// Most signatures one request may carry.
pub const MAX_SIGNATURES: usize = 16;

/// Whether `header` (the `X-PagerDuty-Signature` value) holds a valid `v1`
/// signature of `body` under one of `secrets`.
pub fn verify_pagerduty_signature(
    secrets: &[Secret],
    header: &str,
    body: &[u8],
) -> Result<(), String> {
    let signatures: Vec<Vec<u8>> = header
        .split(',')
        .take(MAX_SIGNATURES)
        .filter_map(|s| s.trim().strip_prefix("v1="))
        .filter_map(|hex_sig| hex::decode(hex_sig).ok())
        .collect();
    if signatures.is_empty() {
        return Err(
            "X-PagerDuty-Signature carries no v1=<hex> signature; is this request from PagerDuty?"
                .into(),
        );
    }
    let mut matched = false;
    // Check every pair, so the time taken does not say which one matched.
    for secret in secrets {
        for signature in &signatures {
            let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()) else {
                continue;
            };
            mac.update(body);
            matched |= mac.verify_slice(signature).is_ok();
        }
    }
    if matched {
        Ok(())
    } else {
        Err("no signature in X-PagerDuty-Signature matches a configured secret (server.pagerduty-secrets); check the subscription's signing secret".into())
    }
}

/// A PagerDuty v3 webhook body.
#[derive(Debug, Clone, Deserialize)]
pub struct PagerDutyEvent {
    pub event: Event,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    pub id: String,
    pub event_type: String,
    pub resource_type: String,
    pub occurred_at: String,
    pub data: serde_json::Value,
}

/// The incident fields firedrill reads.
#[derive(Debug, Clone, Deserialize)]
struct Incident {
    id: String,
    created_at: String,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    urgency: Option<String>,
    #[serde(default)]
    incident_key: Option<String>,
    #[serde(default)]
    html_url: Option<String>,
    #[serde(default)]
    service: Option<Reference>,
    #[serde(default)]
    priority: Option<Reference>,
}

#[derive(Debug, Clone, Deserialize)]
struct Reference {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    summary: Option<String>,
}

/// A parsed PagerDuty delivery: an alert, or an event that starts nothing.
#[derive(Debug, Clone)]
pub enum PagerDutyDelivery {
    Alert(Alert),
    /// Recorded, not acted on: the event type.
    Ignored(String),
}

impl PagerDutyEvent {
    /// The delivery's event id (`event.id`), if the body has one.
    pub fn event_id(body: &[u8]) -> Option<String> {
        #[derive(Deserialize)]
        struct Outer {
            event: Inner,
        }
        #[derive(Deserialize)]
        struct Inner {
            id: String,
        }
        let outer: Outer = serde_json::from_slice(body).ok()?;
        (!outer.event.id.is_empty() && outer.event.id.len() <= super::MAX_ID_BYTES)
            .then_some(outer.event.id)
    }
    /// Parse a (verified) body; the error says what is wrong.
    pub fn parse(body: &[u8]) -> Result<PagerDutyDelivery, String> {
        let p: PagerDutyEvent = serde_json::from_slice(body)
            .map_err(|e| format!("not a PagerDuty v3 webhook payload: {e}"))?;
        let status = match (p.event.resource_type.as_str(), p.event.event_type.as_str()) {
            ("incident", "incident.triggered") => AlertStatus::Firing,
            ("incident", "incident.resolved") => AlertStatus::Resolved,
            (_, other) => {
                return Ok(PagerDutyDelivery::Ignored(
                    super::truncate(other, 64).to_string(),
                ));
            }
        };
        let incident: Incident = serde_json::from_value(p.event.data)
            .map_err(|e| format!("event.data is not a PagerDuty incident: {e}"))?;
        let mut labels = BTreeMap::new();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v.filter(|v| !v.is_empty()) {
                labels.insert(k.to_string(), v);
            }
        };
        put("event_type", Some(p.event.event_type.clone()));
        put("incident_id", Some(incident.id.clone()));
        put("title", incident.title.clone());
        put("urgency", incident.urgency);
        put("incident_key", incident.incident_key);
        put(
            "service",
            incident.service.as_ref().and_then(|s| s.summary.clone()),
        );
        put("service_id", incident.service.and_then(|s| s.id));
        put("priority", incident.priority.and_then(|p| p.summary));
        let mut annotations = BTreeMap::new();
        if let Some(url) = incident.html_url {
            annotations.insert("html_url".to_string(), url);
        }
        if let Some(title) = incident.title {
            annotations.insert("summary".to_string(), title);
        }
        annotations.insert("event_id".to_string(), p.event.id);
        Alert {
            source: TriggerSource::Pagerduty.as_str(),
            status,
            fingerprint: incident.id,
            starts_at: incident.created_at,
            labels,
            annotations,
        }
        .checked("event.data", "created_at")
        .map(PagerDutyDelivery::Alert)
    }
}
