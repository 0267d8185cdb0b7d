//! pagerhook: verify webhooks, map them to PagerDuty Events API v2 events, deliver them in
//! order without losing one.
//!
//! Layout (see ARCHITECTURE.md), top-level modules from the bottom up; each imports only
//! modules listed before it (`tests/it/tidy.rs` checks the exact table):
//! - `secret`, `telemetry`: leaves, importing nothing of the crate (`telemetry` holds the
//!   metrics and the typed events that write a log line and a metric together).
//! - `pagerduty_model`: a leaf too, the in-process model of PagerDuty's incidents (scenarios, fakes).
//! - `supervise`: the long-lived tasks, restarted when they die, and readiness.
//! - `event`: PagerDuty event types that enforce the API's limits.
//! - `config`: the config file, validated into types that cannot be wrong.
//! - `source`: one file per source kind; produces `Verified` requests, knows no mapping.
//! - `mapping`: mapping files and handlebars rendering of a `Verified` payload.
//! - `registry`: each configured source bound to its mapping (`Sources`).
//! - `queue`: the durable queue (one trait per role, `Queue` for all; SQLite and PostgreSQL).
//! - `pagerduty`: the only code that talks upstream; `delivery`: the worker, with retry policy.
//! - `reload`: swapping a new config in whole.
//! - `ingest`: the accept path (verify, map, commit) without HTTP.
//! - `testcases`: mapping test files (`pagerhook test`).
//! - `http`: the only code that knows actix-web.
//! - `app`: startup wiring; `cli`: the command line.

pub mod app;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod event;
pub mod http;
pub mod ingest;
pub mod mapping;
pub mod pagerduty;
pub mod pagerduty_model;
pub mod queue;
pub mod registry;
pub mod reload;
pub mod secret;
pub mod source;
pub mod supervise;
pub mod telemetry;
pub mod testcases;
