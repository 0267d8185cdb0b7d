//! Secrets and the references that name them in config (`env:NAME`, `file:PATH`, literal).

use sha2::{Digest, Sha256};
use std::fmt;
use std::path::Path;
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
    pub fn resolve(&self, env: &dyn Fn(&str) -> Option<String>, base: &Path) -> Result<Secret, String> {
        match self {
            SecretRef::Env(name) => match env(name) {
                Some(v) if !v.is_empty() => Ok(Secret::new(v)),
                Some(_) => Err(format!("environment variable {name} is empty")),
                None => Err(format!("environment variable {name} is not set (e.g. `export {name}=...`)")),
            },
            SecretRef::File(p) => {
                let path = base.join(p);
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?;
                let v = text.trim_end_matches(['\n', '\r']);
                if v.is_empty() {
                    return Err(format!("secret file {} is empty", path.display()));
                }
                Ok(Secret::new(v))
            }
            SecretRef::Literal(s) => {
                if s.expose().is_empty() {
                    Err("secret is empty".to_string())
                } else {
                    Ok(s.clone())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "***");
        let r = SecretRef::parse("hunter2");
        assert!(!format!("{r:?}").contains("hunter2"));
    }

    #[test]
    fn a_token_digest_matches_only_the_token_itself() {
        let d = SecretDigest::of(&Secret::new("admin-token"));
        assert!(d.matches(b"admin-token"));
        for wrong in ["", "admin-toke", "admin-token ", "admin-tokenX", "ADMIN-TOKEN", "x"] {
            assert!(!d.matches(wrong.as_bytes()), "{wrong:?}");
        }
        assert_eq!(format!("{d:?}"), "***");
    }

    #[test]
    fn env_reference_uses_the_injected_lookup() {
        let env = |k: &str| (k == "A").then(|| "x".to_string());
        let r = SecretRef::parse("env:A");
        assert_eq!(r.resolve(&env, Path::new(".")).unwrap().expose(), "x");
        let err = SecretRef::parse("env:B").resolve(&env, Path::new(".")).unwrap_err();
        assert!(err.contains("B is not set"), "{err}");
    }

    #[test]
    fn file_reference_is_relative_to_base_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s.txt"), "abc\n").unwrap();
        let r = SecretRef::parse("file:s.txt");
        assert_eq!(r.resolve(&|_| None, dir.path()).unwrap().expose(), "abc");
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_literals_round_trip(s in ".*") {
            match SecretRef::parse(&s) {
                SecretRef::Env(n) => prop_assert_eq!(format!("env:{n}"), s),
                SecretRef::File(p) => prop_assert_eq!(format!("file:{p}"), s),
                SecretRef::Literal(v) => prop_assert_eq!(v.expose(), s.as_str()),
            }
        }
    }
}
