//! pagerhook: verify webhooks, map them to PagerDuty Events API v2 events, deliver them in
//! order without losing one.
//!
//! Layout (see ARCHITECTURE.md):
//! - `config`: the config file, validated into types that cannot be wrong.
//! - `source`: one file per source kind; produces `Verified` requests.
//! - `mapping`: mapping files and handlebars rendering.
//! - `event`: PagerDuty event types that enforce the API's limits.
//! - `queue`: the durable queue (`Queue` trait, SQLite).
//! - `delivery`: the worker, with retry policy.
//! - `pagerduty`: the only code that talks upstream.
//! - `ingest`: the accept path (verify, map, commit) without HTTP.
//! - `http`: the only code that knows actix-web.
//! - `testcases`: mapping test files (`pagerhook test`).
//! - `app`: startup wiring; `cli`: the command line.

pub mod app;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod event;
pub mod http;
pub mod ingest;
pub mod mapping;
pub mod metrics;
pub mod pagerduty;
pub mod queue;
pub mod registry;
pub mod reload;
pub mod secret;
pub mod source;
pub mod telemetry;
pub mod testcases;
