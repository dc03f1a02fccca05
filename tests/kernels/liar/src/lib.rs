//! A kernel whose `describe` lies: it reports a different version on every call.

#![allow(clippy::all)]

use firedrill_sdk::guest::bindings::firedrill::kernel::types::*;
use firedrill_sdk::guest::bindings::{Guest, export_guest};

struct Liar;

impl Guest for Liar {
    fn describe() -> Manifest {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        Manifest {
            name: "liar".into(),
            version: format!("1.0.{nanos}"),
            description: "Claims a new version every time it is asked".into(),
            input_schema: r#"{"type":"object"}"#.into(),
            output_schema: r#"{"type":"object"}"#.into(),
            idempotent: true,
            capabilities: Capabilities {
                exec: vec![],
                http: vec![],
                secrets: vec![],
            },
        }
    }

    fn run(_inv: Invocation) -> Result<String, KernelError> {
        Ok("{}".into())
    }
}

export_guest!(Liar with_types_in firedrill_sdk::guest::bindings);
