//! Reading one config value: a duration, an address, one of a set of names, the Events API URL.

use std::net::SocketAddr;
use std::time::Duration;

pub(super) const DEFAULT_EVENTS_URL: &str = "https://events.pagerduty.com";

/// How a base URL for the Events API is written, for error messages.
const EVENTS_URL_EXAMPLE: &str = "(e.g. \"https://events.pagerduty.com\" or \"https://events.eu.pagerduty.com\")";

/// Why a value cannot be used, naming the key and the value as written.
#[derive(Debug, thiserror::Error)]
pub enum ValueError {
    #[error("{field} = {value:?}: {error} (e.g. \"30s\", \"5m\", \"24h\")")]
    Duration { field: String, value: String, error: humantime::DurationError },
    #[error("{field} = {value:?} is not an address (e.g. \"0.0.0.0:8080\")")]
    Address { field: String, value: String },
    #[error("{field} = {value:?}: expected {expected}")]
    NotOneOf { field: String, value: String, expected: String },
    #[error("pagerduty.events_url = {value:?}: expected an http(s) URL {EVENTS_URL_EXAMPLE}")]
    NotHttpUrl { value: String },
    #[error(
        "pagerduty.events_url = {value:?}: plain http is allowed only to a loopback address (a local fake or proxy); use https {EVENTS_URL_EXAMPLE}"
    )]
    PlainHttp { value: String },
    #[error("pagerduty.events_url = {value:?}: remove the query and fragment {EVENTS_URL_EXAMPLE}")]
    QueryOrFragment { value: String },
    #[error(
        "pagerduty.events_url = {value:?}: path {path:?} is not an Events API v2 endpoint; give the base URL {EVENTS_URL_EXAMPLE}"
    )]
    NotAnEndpoint { value: String, path: String },
    #[error("{field}: {error}")]
    Secret { field: String, error: crate::secret::SecretError },
    #[error("{field}: {error}{}", spacing.hint())]
    RoutingKey { field: String, error: crate::event::EventError, spacing: Spacing },
}

/// Whitespace around a routing key that would be valid without it: the usual cause of a key
/// refused for its length, worth a hint of its own.
#[derive(Debug, Clone, PartialEq)]
pub enum Spacing {
    None,
    /// In the named environment variable (a trailing newline from `echo`, say).
    InEnv(String),
    /// In the file or the literal value.
    InValue,
}

impl Spacing {
    fn hint(&self) -> String {
        match self {
            Spacing::None => String::new(),
            Spacing::InEnv(name) => format!(
                ": the key in {name} has whitespace around it (a trailing newline from `echo` or a pasted line?); \
                 environment values are used as they are: set {name} without it"
            ),
            Spacing::InValue => ": the value has whitespace around it: remove it".to_string(),
        }
    }
}

/// `value` (or `default` when not written) as a duration.
pub(super) fn duration(field: &str, value: Option<&str>, default: &str) -> Result<Duration, ValueError> {
    let v = value.unwrap_or(default);
    humantime::parse_duration(v).map_err(|error| ValueError::Duration {
        field: field.to_string(),
        value: v.to_string(),
        error,
    })
}

/// `value` (or `default` when not written) as a socket address.
pub(super) fn socket(field: &str, value: Option<&str>, default: &str) -> Result<SocketAddr, ValueError> {
    let v = value.unwrap_or(default);
    v.parse().map_err(|_| ValueError::Address { field: field.to_string(), value: v.to_string() })
}

/// `value` as one of `options`, else an error naming them all.
pub(super) fn one_of<T: Copy>(field: &str, value: &str, options: &[(&str, T)]) -> Result<T, ValueError> {
    if let Some((_, t)) = options.iter().find(|(name, _)| *name == value) {
        return Ok(*t);
    }
    let names: Vec<String> = options.iter().map(|(name, _)| format!("{name:?}")).collect();
    let expected = match names.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    };
    Err(ValueError::NotOneOf { field: field.to_string(), value: value.to_string(), expected })
}

/// The Events API base URL. PagerDuty's documentation gives the full endpoints, so a pasted
/// `/v2/enqueue`, `/v2/change/enqueue` or `/v2` is cut back to the base (pagerhook appends the
/// path per event kind) with a note; any other path would only ever earn 404s, so it is refused.
pub(super) fn events_url(value: &str, warnings: &mut Vec<String>) -> Result<String, ValueError> {
    let mut url = url::Url::parse(value.trim())
        .ok()
        .filter(|u| matches!(u.scheme(), "https" | "http") && u.has_host())
        .ok_or_else(|| ValueError::NotHttpUrl { value: value.to_string() })?;
    if url.scheme() == "http" && !is_loopback(&url) {
        return Err(ValueError::PlainHttp { value: value.to_string() });
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ValueError::QueryOrFragment { value: value.to_string() });
    }
    let path = url.path().trim_end_matches('/').to_string();
    url.set_path("");
    let base = url.as_str().trim_end_matches('/').to_string();
    match path.as_str() {
        "" => Ok(base),
        "/v2" | "/v2/enqueue" | "/v2/change/enqueue" => {
            warnings.push(format!(
                "pagerduty.events_url = {value:?} is an endpoint; using its base {base:?} (pagerhook adds /v2/enqueue and /v2/change/enqueue itself)"
            ));
            Ok(base)
        }
        _ => Err(ValueError::NotAnEndpoint { value: value.to_string(), path }),
    }
}

/// Whether `url`'s host is this machine: `localhost` or a loopback address. Events carry
/// routing keys, so only there may they go unencrypted.
fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}
