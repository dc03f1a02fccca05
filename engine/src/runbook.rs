//! Runbooks: the YAML format, parsing with precise locations, templates, and
//! validation before anything runs.

mod model;
mod parse;
pub mod schedule;
mod template;
mod validate;

pub use crate::yaml::{MAX_YAML_DEPTH, TooDeep, check_depth as check_yaml_depth};
pub use model::{
    API_VERSION, Amount, Approval, BreakerScope, Drill, HumanDuration, KernelRef, MAX_RETRIES,
    MAX_STEPS, MAX_TARGETS, ReadinessPolicy, Retries, Runbook, Step, Trigger, TriggerMode,
    TriggerSource,
};
pub use parse::{
    MAX_PROBLEMS, MAX_RUNBOOK_BYTES, Problem, Problems, check_runbook_text, parse_runbook,
};
pub use template::{TemplateError, Templates};
pub use validate::{KernelCatalog, ValidRunbook, kernel_refs, source_digest, validate};
