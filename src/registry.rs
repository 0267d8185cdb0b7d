//! The registry: every configured source bound to what its payloads become (its compiled
//! mapping and its cap on events), compiled once per config load.
//!
//! It sits above both `source` and `mapping`, so that `source` (is this request genuine?)
//! knows nothing of mappings, and `mapping` (what does a verified payload become?) knows
//! nothing of how a source is built. `serve`, `check`, `render` and `test` share it.

use crate::config::{Config, SourceConfig, Unmatched};
use crate::event::RoutingKey;
use crate::mapping::{LoadError, Mapping, Renderer, RoutingKeys};
use crate::source::{AwsFetch, HttpsFetch, Keep, SetupError, Source};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// A configured source with its mapping: what `/hooks/{name}` runs.
#[derive(Debug)]
pub struct Hook {
    source: Source,
    mapping: Mapping,
    /// What of a body the mapping can read: all the accept path parses.
    body_paths: Keep,
    max_events_per_request: usize,
    max_event_bytes_per_request: usize,
    unmatched: Unmatched,
    may_close: Vec<String>,
    resolve_delay: std::time::Duration,
    resolve_when_silent: std::time::Duration,
    /// Where pagerhook's own pages about this source go; `None`: `pagerduty.own_pages = false`.
    own_pages: Option<RoutingKey>,
    /// The console's public address (`server.admin_url`), for the pages' links.
    admin_url: Option<String>,
}

impl Hook {
    /// The source's name (`/hooks/{name}`).
    pub fn name(&self) -> &str {
        self.source.name()
    }

    /// How requests are verified and parsed.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// The compiled mapping rules.
    pub fn mapping(&self) -> &Mapping {
        &self.mapping
    }

    /// The parts of a body the mapping can read ([`Mapping::body_paths`]), for
    /// [`Source::verify_offline`].
    pub fn body_paths(&self) -> &Keep {
        &self.body_paths
    }

    /// Whether a payload no rule matched is kept as a dead letter (`unmatched = "keep"` or
    /// `"page"`).
    pub fn keeps_unmatched(&self) -> bool {
        match self.unmatched {
            Unmatched::Ignore => false,
            Unmatched::Keep | Unmatched::Page => true,
        }
    }

    /// The other sources whose incidents this one may acknowledge and resolve (`may_close`).
    pub fn may_close(&self) -> &[String] {
        &self.may_close
    }

    /// How long its resolves wait for a trigger that would cancel them (`resolve_delay`).
    pub fn resolve_delay(&self) -> std::time::Duration {
        self.resolve_delay
    }

    /// After how long without a re-trigger pagerhook resolves an incident this source opened
    /// (`resolve_when_silent`; zero: never).
    pub fn resolve_when_silent(&self) -> std::time::Duration {
        self.resolve_when_silent
    }

    /// Whether pagerhook also pages about a payload no rule matched (`unmatched = "page"`).
    pub fn pages_unmatched(&self) -> bool {
        self.unmatched == Unmatched::Page
    }

    /// Where pagerhook's own pages about this source go (`pagerduty.own_pages_routing_key`,
    /// else `routing_key`, else the source's own); `None` when they are off.
    pub fn own_pages(&self) -> Option<&RoutingKey> {
        self.own_pages.as_ref()
    }

    /// The console's public address, for links in pagerhook's own pages.
    pub fn admin_url(&self) -> Option<&str> {
        self.admin_url.as_deref()
    }

    /// Most events one request may produce.
    pub fn max_events_per_request(&self) -> usize {
        self.max_events_per_request
    }

    /// Most bytes (of JSON) the events of one request may total.
    pub fn max_event_bytes_per_request(&self) -> usize {
        self.max_event_bytes_per_request
    }
}

/// Why a source of the config could not be compiled.
#[derive(Debug, thiserror::Error)]
#[error("source '{source_name}': {failure}")]
pub struct BuildError {
    pub source_name: String,
    pub failure: BuildFailure,
}

/// What of a source failed to compile.
#[derive(Debug, thiserror::Error)]
pub enum BuildFailure {
    /// A mapping file of the source does not load or compile.
    #[error(transparent)]
    Mapping(LoadError),
    /// The source itself (its verify scheme, its pinned certificates) cannot be set up.
    #[error(transparent)]
    Source(SetupError),
}

/// Every problem of a config's sources, one per line.
#[derive(Debug)]
pub struct BuildErrors(pub Vec<BuildError>);

impl BuildErrors {
    /// The problems as one line each, joined by `sep`.
    pub fn joined(&self, sep: &str) -> String {
        self.0.iter().map(ToString::to_string).collect::<Vec<_>>().join(sep)
    }
}

impl fmt::Display for BuildErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.joined("\n"))
    }
}

impl std::error::Error for BuildErrors {}

/// Every configured source by name, compiled once per config load.
#[derive(Debug, Default)]
pub struct Sources {
    by_name: HashMap<String, Arc<Hook>>,
}

impl Sources {
    /// Compiles every source's verifier and mappings; reports all problems, with the
    /// warnings of those that compiled. SNS sources reach AWS over HTTPS.
    pub fn build(cfg: &Config) -> Result<(Sources, Vec<String>), BuildErrors> {
        Sources::build_with(cfg, Arc::new(HttpsFetch::new()))
    }

    /// [`Sources::build`] with SNS sources reaching AWS through `aws` (tests inject a fake).
    pub fn build_with(cfg: &Config, aws: Arc<dyn AwsFetch>) -> Result<(Sources, Vec<String>), BuildErrors> {
        let mut by_name = HashMap::new();
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        for s in &cfg.sources {
            // A source that lists its names gets only those: a rule whose routing_key a payload
            // chooses cannot page a team the source was not meant to reach.
            let named = cfg
                .pagerduty
                .routing_keys
                .iter()
                .filter(|(name, _)| s.routing_keys.as_ref().is_none_or(|allowed| allowed.contains(name)))
                .map(|(name, key)| (name.clone(), key.clone()))
                .collect();
            let keys =
                RoutingKeys { default: s.routing_key.clone().or_else(|| cfg.pagerduty.routing_key.clone()), named };
            let renderer = if cfg.mapping.native { Renderer::Native } else { Renderer::Handlebars };
            match build_hook(s, (keys, renderer), &aws, cfg.storage.retention) {
                Ok((mut hook, mut w)) => {
                    let pd = &cfg.pagerduty;
                    hook.own_pages =
                        pd.own_pages.then(|| pd.own_pages_routing_key.clone().or(s.routing_key.clone())).flatten();
                    hook.admin_url = cfg.server.admin_url.clone();
                    warnings.append(&mut w);
                    by_name.insert(s.name.clone(), Arc::new(hook));
                }
                Err(mut e) => errors.append(&mut e),
            }
        }
        if errors.is_empty() {
            Ok((Sources { by_name }, warnings))
        } else {
            Err(BuildErrors(errors))
        }
    }

    /// A source by name.
    pub fn get(&self, name: &str) -> Option<&Arc<Hook>> {
        self.by_name.get(name)
    }

    /// Names of all sources.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }
}

/// One source with its mapping and the mapping's warnings. The mapping is compiled first:
/// when it fails, its errors are the ones reported.
fn build_hook(
    cfg: &SourceConfig,
    (keys, renderer): (RoutingKeys, Renderer),
    aws: &Arc<dyn AwsFetch>,
    retention: std::time::Duration,
) -> Result<(Hook, Vec<String>), Vec<BuildError>> {
    let source_name = &cfg.name;
    let failed = |failure| BuildError { source_name: source_name.clone(), failure };
    let (mapping, warnings) = Mapping::load(&cfg.mappings, keys)
        .map_err(|errs| errs.into_iter().map(|e| failed(BuildFailure::Mapping(e))).collect::<Vec<_>>())?;
    let mapping = mapping.rendered_by(renderer);
    let source = Source::build(cfg, aws, retention)
        .map_err(|errs| errs.into_iter().map(|e| failed(BuildFailure::Source(e))).collect::<Vec<_>>())?;
    let warnings = warnings.into_iter().map(|w| format!("source '{source_name}': {w}")).collect();
    let body_paths = mapping.body_paths();
    let hook = Hook {
        source,
        mapping,
        body_paths,
        max_events_per_request: cfg.max_events_per_request,
        max_event_bytes_per_request: cfg.max_event_bytes_per_request,
        unmatched: cfg.unmatched,
        may_close: cfg.may_close.clone(),
        resolve_delay: cfg.resolve_delay,
        resolve_when_silent: cfg.resolve_when_silent,
        own_pages: None,
        admin_url: None,
    };
    Ok((hook, warnings))
}
