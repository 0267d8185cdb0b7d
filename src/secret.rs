//! Secrets and the references that name them in config (`env:NAME`, `file:PATH`, literal).
//!
//! A leaf: it imports nothing of the crate, so `config`, `event`, `queue` and `http` can all
//! hold secrets without importing each other.

use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};
use subtle::ConstantTimeEq;

/// A secret value: webhook secret, routing key, token. Never printed.
///
/// `Debug` prints `***`, there is no `Display`, and the value comes out only through
/// [`Secret::expose`], at the point where a library needs it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value known to be secret.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself; call only where a library takes it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The SHA-256 of a secret token, for checking a presented token against it.
///
/// Digests have one length, so comparing them in constant time leaks neither the secret's
/// bytes nor its length, which a byte-by-byte compare of the tokens themselves would.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretDigest([u8; 32]);

impl SecretDigest {
    /// The digest of a configured secret.
    pub fn of(secret: &Secret) -> SecretDigest {
        SecretDigest(Sha256::digest(secret.expose().as_bytes()).into())
    }

    /// Whether `presented` is the secret, in time that depends on neither value.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented).into();
        bool::from(self.0.ct_eq(&presented))
    }
}

impl fmt::Debug for SecretDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where a secret comes from, as written in config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// `env:NAME`: read from the environment when config loads.
    Env(String),
    /// `file:PATH`: read from a file (relative to the config file's folder), trailing newline trimmed.
    File(String),
    /// Anything else: the value itself (works, but `pagerhook check` warns).
    Literal(Secret),
}

impl SecretRef {
    /// Parses a reference as written in config.
    pub fn parse(s: &str) -> SecretRef {
        if let Some(name) = s.strip_prefix("env:") {
            SecretRef::Env(name.to_string())
        } else if let Some(path) = s.strip_prefix("file:") {
            SecretRef::File(path.to_string())
        } else {
            SecretRef::Literal(Secret::new(s))
        }
    }

    /// True for a secret written in the config file itself.
    pub fn is_literal(&self) -> bool {
        matches!(self, SecretRef::Literal(_))
    }

    /// Resolves the reference; `env` is injected so tests never touch the process environment.
    pub fn resolve(&self, env: &dyn Fn(&str) -> Option<String>, base: &Path) -> Result<Secret, SecretError> {
        match self {
            SecretRef::Env(name) => match env(name) {
                Some(v) if !v.is_empty() => Ok(Secret::new(v)),
                Some(_) => Err(SecretError::EmptyEnv(name.clone())),
                None => Err(SecretError::UnsetEnv(name.clone())),
            },
            SecretRef::File(p) => {
                let path = base.join(p);
                let text = std::fs::read_to_string(&path)
                    .map_err(|source| SecretError::ReadFile { path: path.clone(), source })?;
                let v = text.trim_end_matches(['\n', '\r']);
                if v.is_empty() {
                    return Err(SecretError::EmptyFile(path));
                }
                Ok(Secret::new(v))
            }
            SecretRef::Literal(s) => {
                if s.expose().is_empty() {
                    Err(SecretError::EmptyLiteral)
                } else {
                    Ok(s.clone())
                }
            }
        }
    }
}

/// Why a [`SecretRef`] did not resolve.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {0} is empty")]
    EmptyEnv(String),
    #[error("environment variable {0} is not set (e.g. `export {0}=...`)")]
    UnsetEnv(String),
    #[error("cannot read secret file {}: {source}", path.display())]
    ReadFile { path: PathBuf, source: std::io::Error },
    #[error("secret file {} is empty", .0.display())]
    EmptyFile(PathBuf),
    #[error("secret is empty")]
    EmptyLiteral,
}

#[cfg(test)]
mod tests;
