//! Integration tests: real components built from source, a real wasmtime host,
//! real commands on the local target.

mod adversarial;
mod alertmanager;
mod alerts;
mod approvals;
mod audit;
mod authoring;
mod backup;
mod browser;
mod cache;
mod cli;
mod console;
mod control;
mod conventions;
mod drills;
mod examples;
mod fanout;
mod fleet;
mod guide;
mod hostile;
mod http;
mod languages;
mod nodes;
mod notify;
mod overload;
mod registry;
mod runbooks;
mod runs;
mod secrets;
mod serve;
mod ssh;
mod store;
mod switch;
mod tlog;
mod webhooks;
