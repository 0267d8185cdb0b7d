//! Mapping files as written: `[[rule]]` tables that reject unknown keys.

use serde::Deserialize;
use toml::Spanned;

/// A mapping file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMappingFile {
    #[serde(default, rename = "rule")]
    pub rules: Vec<Spanned<RawRule>>,
    /// `[vars]`: settings the file's header asks a user to edit (a list of workflow names, the
    /// levels that page), read by its templates as `vars.<name>`.
    #[serde(default)]
    pub vars: toml::Table,
}

/// One `[[rule]]`. Every string field except `name`, `emit` and `for_each` is a template.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// Shown in logs, errors and `render`.
    pub name: String,
    /// Condition; the rule applies when it renders to anything but "", "false", "0" or "null".
    pub when: Option<String>,
    /// Path to an array (e.g. `body.alerts`): one event per element, bound as `item`.
    pub for_each: Option<String>,
    /// `alert` (`/v2/enqueue`) or `change` (`/v2/change/enqueue`).
    pub emit: String,
    /// `trigger` (default), `acknowledge` or `resolve`; rendering empty skips the event.
    pub action: Option<String>,
    pub dedup_key: Option<String>,
    pub severity: Option<String>,
    pub summary: Option<String>,
    pub source: Option<String>,
    pub component: Option<String>,
    pub group: Option<String>,
    pub class: Option<String>,
    pub timestamp: Option<String>,
    pub client: Option<String>,
    pub client_url: Option<String>,
    #[serde(default)]
    pub links: Vec<RawLink>,
    #[serde(default)]
    pub images: Vec<RawImage>,
    /// Any TOML value; strings inside are templates, `"{{json X}}"` stays structured.
    pub custom_details: Option<toml::Value>,
    /// The event's place in its incident's order: a template rendering a whole number or an
    /// RFC 3339 time (`StateChangeTime`, `run_number`). An event older than one its incident
    /// already took is recorded `stale` and not sent; empty: not checked.
    pub sequence: Option<String>,
    /// A trigger more severe than the incident PagerDuty holds for its dedup_key opens a new
    /// incident at its severity, linked to the first; the resolve closes both. Off by default:
    /// on a service with fixed urgency it pages twice.
    #[serde(default)]
    pub escalate: bool,
    /// A name from `[pagerduty.routing_keys]`, or a template rendering one.
    pub routing_key: Option<String>,
    /// Stop trying later rules once this one matched.
    #[serde(default, rename = "final")]
    pub is_final: bool,
}

/// `links = [{ href = "...", text = "..." }]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLink {
    pub href: String,
    pub text: Option<String>,
}

/// `images = [{ src = "https://...", href = "...", alt = "..." }]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawImage {
    pub src: String,
    pub href: Option<String>,
    pub alt: Option<String>,
}
