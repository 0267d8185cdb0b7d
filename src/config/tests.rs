use super::*;
use std::collections::HashMap;

const KEY: &str = "0123456789abcdef0123456789abcdef";

fn env() -> HashMap<String, String> {
    HashMap::from([("PD".to_string(), KEY.to_string()), ("GH".to_string(), "s".to_string())])
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    let env = env();
    Config::from_str(text, Path::new("/etc/pagerhook/pagerhook.toml"), &move |k| env.get(k).cloned())
}

const MINIMAL: &str = r#"
[pagerduty]
routing_key = "env:PD"

[[source]]
name = "github"
kind = "github"
secrets = ["env:GH"]
mappings = ["mappings/github.toml"]
"#;

#[test]
fn defaults_fill_everything_else() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.server.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(c.server.admin_listen.to_string(), "127.0.0.1:8081");
    assert_eq!(c.server.max_body_bytes, 1 << 20);
    assert_eq!(c.storage.backend, StorageBackend::Sqlite { path: PathBuf::from("/etc/pagerhook/data/pagerhook.db") });
    assert_eq!(c.storage.durability, Durability::Fsync);
    assert_eq!(c.pagerduty.events_url, "https://events.pagerduty.com");
    assert_eq!(c.delivery.per_key_rate, 120);
    assert_eq!(c.sources[0].mappings, vec![PathBuf::from("/etc/pagerhook/mappings/github.toml")]);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn unknown_keys_are_errors_with_line_and_key() {
    let err = parse(&format!("{MINIMAL}\n[delivery]\nconcurency = 4\n")).unwrap_err().to_string();
    assert!(err.contains("line 12"), "{err}");
    assert!(err.contains("concurency"), "{err}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = r#"
[server]
listen = "nowhere"
[storage]
durability = "sometimes"
[delivery]
max_backoff = "forever"
[[source]]
name = "Git Hub"
kind = "gitlub"
mappings = []
"#;
    let err = parse(text).unwrap_err().to_string();
    for needle in [
        "server.listen",
        "storage.durability",
        "delivery.max_backoff",
        "line 8: source 'Git Hub': name must be",
        "unknown kind \"gitlub\" (expected one of: github)",
        "no mappings",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
}

#[test]
fn missing_env_secrets_name_the_variable_but_never_a_value() {
    let text = MINIMAL.replace("env:GH", "env:NOT_SET");
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("NOT_SET is not set"), "{err}");
    let text = MINIMAL.replace("env:PD", "not-a-key-but-a-secret");
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("32-character"), "{err}");
    assert!(!err.contains("not-a-key-but-a-secret"), "{err}");
}

#[test]
fn literal_secrets_work_with_a_warning() {
    let text = MINIMAL.replace("env:GH", "literal-secret");
    let c = parse(&text).unwrap();
    assert!(c.warnings.iter().any(|w| w.contains("secrets[0] is written in the config file")), "{:?}", c.warnings);
    assert!(!format!("{c:?}").contains("literal-secret"), "Debug of the config shows no secret");
}

#[test]
fn a_source_needs_a_routing_key_from_somewhere() {
    let text = MINIMAL.replace("routing_key = \"env:PD\"", "");
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("no routing key"), "{err}");
}

#[test]
fn the_shipped_config_parses() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let env = |k: &str| match k {
        "PAGERDUTY_ROUTING_KEY" => Some(KEY.to_string()),
        "GITHUB_WEBHOOK_SECRET" => Some("s".to_string()),
        _ => None,
    };
    let c = Config::load(&root.join("pagerhook.toml"), &env).unwrap();
    assert_eq!(c.sources.len(), 1);
}
