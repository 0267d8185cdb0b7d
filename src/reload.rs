//! Hot reload: a new config is loaded and compiled in full, then swapped in whole; on any
//! error the running one stays. Triggered by SIGHUP and by a change of the config file or a
//! mapping file (polled: inotify misses the symlink swaps Kubernetes uses for ConfigMaps, and
//! one `stat` per file every two seconds costs nothing).

use crate::config::{Config, ConfigError};
use crate::registry::{BuildErrors, Sources};
use crate::source::AwsFetch;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// How often watched files are checked for changes.
pub const POLL: Duration = Duration::from_secs(2);

/// A value replaced whole on reload. Readers keep the version they took, so a request that
/// started on the old config finishes on it.
#[derive(Debug)]
pub struct Live<T>(RwLock<Arc<T>>);

impl<T> Live<T> {
    /// Starts with `value`.
    pub fn new(value: T) -> Live<T> {
        Live(RwLock::new(Arc::new(value)))
    }

    /// The current version.
    pub fn load(&self) -> Arc<T> {
        // A poisoned lock still holds a whole value: the swap is a single assignment.
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the value for every later `load`.
    pub fn store(&self, value: T) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(value);
    }
}

/// Where a config's inputs live, with what they looked like when last loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint(Vec<(PathBuf, Option<(SystemTime, u64)>)>);

impl Fingerprint {
    /// The config file and every mapping file it names, as they are now.
    pub fn of(cfg: &Config) -> Fingerprint {
        let mut paths = vec![cfg.path.clone()];
        paths.extend(cfg.sources.iter().flat_map(|s| s.mappings.iter().cloned()));
        Fingerprint(paths.into_iter().map(|p| (p, None)).collect()).refreshed()
    }

    /// The same files, looked at again.
    pub fn refreshed(&self) -> Fingerprint {
        Fingerprint(self.0.iter().map(|(p, _)| (p.clone(), stat(p))).collect())
    }
}

/// Modification time and size: a change in either is a change.
fn stat(p: &std::path::Path) -> Option<(SystemTime, u64)> {
    std::fs::metadata(p).ok().and_then(|m| Some((m.modified().ok()?, m.len())))
}

/// Why a reload did not happen; the running config stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The config file does not read, parse or validate.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A source or a mapping does not compile: every problem, on one line for the log.
    #[error("{}", .0.joined("; "))]
    Sources(#[from] BuildErrors),
    /// The reload task panicked or was cancelled.
    #[error("reload task failed: {0}")]
    Task(tokio::task::JoinError),
}

/// Loads and compiles a config for reload. `Err` carries every problem, for the log.
pub fn prepare(
    path: &std::path::Path,
    env: &(dyn Fn(&str) -> Option<String> + Send + Sync),
    aws: Arc<dyn AwsFetch>,
) -> Result<(Config, Sources, Vec<String>), ReloadError> {
    let cfg = Config::load(path, env)?;
    let (sources, warnings) = Sources::build_with(&cfg, aws)?;
    Ok((cfg, sources, warnings))
}

#[cfg(test)]
mod tests;
