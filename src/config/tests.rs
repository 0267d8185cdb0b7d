use super::*;
use std::collections::HashMap;

const KEY: &str = "0123456789abcdef0123456789abcdef";

fn env() -> HashMap<String, String> {
    HashMap::from([
        ("PD".to_string(), KEY.to_string()),
        ("GH".to_string(), "s".to_string()),
        ("WHSEC".to_string(), "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string()),
        ("BASIC".to_string(), "alertmanager:pa55word".to_string()),
        ("DB".to_string(), "postgres://pagerhook:hunter2@db:5432/pagerhook".to_string()),
        ("NOT_PG".to_string(), "mysql://pagerhook:hunter2@db/pagerhook".to_string()),
    ])
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
        "unknown kind \"gitlub\" (expected one of: github, generic, sns)",
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

/// MINIMAL plus a generic source named "am" with these extra lines.
fn generic(lines: &str) -> String {
    format!("{MINIMAL}\n[[source]]\nname = \"am\"\nkind = \"generic\"\nmappings = [\"mappings/am.toml\"]\n{lines}\n")
}

fn generic_scheme(lines: &str) -> VerifyScheme {
    let c = parse(&generic(lines)).unwrap_or_else(|e| panic!("{lines}: {e}"));
    match &c.sources[1].kind {
        SourceKindConfig::Generic { verify } => verify.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_generic_source_parses_with_each_scheme() {
    let hmac = generic_scheme(
        r#"secrets = ["env:GH", "env:PD"]
verify = { scheme = "hmac", header = "X-Signature", algorithm = "sha512", encoding = "base64", prefix = "sha512=" }"#,
    );
    match hmac {
        VerifyScheme::Hmac { header, algorithm, encoding, prefix, secrets } => {
            assert_eq!(header, "X-Signature");
            assert_eq!(algorithm, HmacAlgorithm::Sha512);
            assert_eq!(encoding, SignatureEncoding::Base64);
            assert_eq!(prefix.as_deref(), Some("sha512="));
            assert_eq!(secrets.len(), 2);
        }
        other => panic!("{other:?}"),
    }
    let defaults = generic_scheme("secrets = [\"env:GH\"]\nverify = { scheme = \"hmac\", header = \"X-Sig\" }");
    assert!(matches!(
        defaults,
        VerifyScheme::Hmac { algorithm: HmacAlgorithm::Sha256, encoding: SignatureEncoding::Hex, prefix: None, .. }
    ));
    let sw =
        generic_scheme("secrets = [\"env:WHSEC\"]\nverify = { scheme = \"standard-webhooks\", tolerance = \"10m\" }");
    assert!(matches!(sw, VerifyScheme::StandardWebhooks { tolerance, .. } if tolerance == Duration::from_secs(600)));
    let stripe = generic_scheme("secrets = [\"env:GH\"]\nverify = { scheme = \"stripe\" }");
    assert!(matches!(stripe, VerifyScheme::Stripe { tolerance, .. } if tolerance == Duration::from_secs(300)));
    let slack = generic_scheme("secrets = [\"env:GH\"]\nverify = { scheme = \"slack\" }");
    assert!(matches!(slack, VerifyScheme::Slack { .. }));
    let gitlab = generic_scheme("secrets = [\"env:GH\"]\nverify = { scheme = \"gitlab\" }");
    assert!(matches!(gitlab, VerifyScheme::Gitlab { .. }));
    let bearer = generic_scheme("secrets = [\"env:GH\"]\nverify = { scheme = \"bearer\" }");
    assert!(matches!(bearer, VerifyScheme::Bearer { .. }));
    let basic = generic_scheme("secrets = [\"env:BASIC\"]\nverify = { scheme = \"basic\" }");
    assert!(matches!(basic, VerifyScheme::Basic { .. }));
    // The table form works as well as the inline one.
    let table = generic_scheme("secrets = [\"env:GH\"]\n[source.verify]\nscheme = \"gitlab\"");
    assert_eq!(table.name(), "gitlab");
}

#[test]
fn an_unknown_verify_scheme_lists_the_valid_ones() {
    let err = parse(&generic("secrets = [\"env:GH\"]\nverify = { scheme = \"hmac-sha256\" }")).unwrap_err().to_string();
    assert!(
        err.contains(
            "source 'am': unknown verify scheme \"hmac-sha256\" (expected one of: hmac, standard-webhooks, stripe, slack, gitlab, bearer, basic, none)"
        ),
        "{err}"
    );
}

#[test]
fn missing_or_misplaced_verify_options_are_errors_with_an_example() {
    let err = parse(&generic("secrets = [\"env:GH\"]\nverify = { scheme = \"hmac\" }")).unwrap_err().to_string();
    assert!(err.contains("verify scheme \"hmac\" needs header"), "{err}");
    assert!(err.contains(r#"e.g. verify = { scheme = "hmac", header = "X-Signature", prefix = "sha256=" }"#), "{err}");

    let err = parse(&generic("verify = { scheme = \"stripe\", header = \"X\", tolerance = \"soon\" }"))
        .unwrap_err()
        .to_string();
    for needle in [
        "verify scheme \"stripe\" needs secrets = [\"env:NAME\"]",
        "verify option header does not apply to scheme \"stripe\" (its options: tolerance)",
        "verify.tolerance = \"soon\"",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }

    let text = generic("secrets = [\"env:GH\"]\nverify = { scheme = \"hmac\", header = \"X Sig\", algorithm = \"md5\", encoding = \"base32\" }");
    let err = parse(&text).unwrap_err().to_string();
    for needle in
        ["verify.header = \"X Sig\" is not a header name", "verify.algorithm = \"md5\"", "verify.encoding = \"base32\""]
    {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }

    let err = parse(&generic("secrets = [\"env:GH\"]\nverify = { scheme = \"hmac\", secret = \"x\" }"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `secret`"), "{err}");
}

#[test]
fn secrets_are_checked_against_the_scheme() {
    let err = parse(&generic("secrets = [\"whsec_not base64!\"]\nverify = { scheme = \"standard-webhooks\" }"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("secrets[0]: a whsec_ secret must be base64"), "{err}");
    assert!(!err.contains("not base64!"), "no secret in errors: {err}");
    let err = parse(&generic("secrets = [\"env:GH\"]\nverify = { scheme = \"basic\" }")).unwrap_err().to_string();
    assert!(err.contains("scheme \"basic\" takes secrets written \"user:password\""), "{err}");
    let err = parse(&generic("secrets = [\"env:UNSET\"]\nverify = { scheme = \"bearer\" }")).unwrap_err().to_string();
    assert!(err.contains("UNSET is not set"), "{err}");
    let c = parse(&generic("secrets = [\"literal-token\"]\nverify = { scheme = \"bearer\" }")).unwrap();
    assert!(
        c.warnings.iter().any(|w| w.contains("source 'am': secrets[0] is written in the config file")),
        "{:?}",
        c.warnings
    );
    assert!(!format!("{c:?}").contains("literal-token"));
}

#[test]
fn a_generic_source_without_verify_is_an_error_that_says_what_to_write() {
    let err = parse(&generic("secrets = [\"env:GH\"]")).unwrap_err().to_string();
    assert!(err.contains("source 'am': kind \"generic\" needs verify"), "{err}");
    assert!(err.contains("verify = { scheme = \"none\" }"), "{err}");
    assert!(err.contains("hmac, standard-webhooks"), "{err}");
}

#[test]
fn verify_none_must_be_explicit_and_warns() {
    let c = parse(&generic("verify = { scheme = \"none\" }")).unwrap();
    assert!(matches!(c.sources[1].kind, SourceKindConfig::Generic { verify: VerifyScheme::None }));
    assert!(
        c.warnings.iter().any(|w| w.contains("source 'am': verify scheme none accepts unsigned requests from anyone")),
        "{:?}",
        c.warnings
    );
    let err = parse(&generic("secrets = [\"env:GH\"]\nverify = { scheme = \"none\" }")).unwrap_err().to_string();
    assert!(err.contains("verify scheme \"none\" checks nothing"), "{err}");
}

#[test]
fn verify_belongs_to_generic_sources_only() {
    let text = MINIMAL
        .replace("secrets = [\"env:GH\"]", "secrets = [\"env:GH\"]\nverify = { scheme = \"hmac\", header = \"X\" }");
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("kind \"github\" checks X-Hub-Signature-256 itself: remove verify"), "{err}");
}

#[test]
fn verify_secrets_may_be_written_inside_verify_but_not_twice() {
    let text = format!(
        "{MINIMAL}\n[[source]]\nname = \"am\"\nkind = \"generic\"\nmappings = [\"m.toml\"]\nverify = {{ scheme = \"bearer\", secrets = [\"env:GH\"] }}\n"
    );
    let c = parse(&text).unwrap();
    assert!(
        matches!(&c.sources[1].kind, SourceKindConfig::Generic { verify: VerifyScheme::Bearer { secrets } } if secrets.len() == 1)
    );
    let twice = text.replace("mappings = [\"m.toml\"]", "mappings = [\"m.toml\"]\nsecrets = [\"env:GH\"]");
    let err = parse(&twice).unwrap_err().to_string();
    assert!(err.contains("both on the source and in verify"), "{err}");
}

fn sns(keys: &str) -> String {
    format!("[pagerduty]\nrouting_key = \"env:PD\"\n[[source]]\nname = \"aws\"\nkind = \"sns\"\nmappings = [\"m.toml\"]\n{keys}\n")
}

#[test]
fn sns_sources_name_their_topics_or_say_any_topic() {
    let c = parse(&sns("topics = [\"arn:aws:sns:us-east-1:123456789012:alarms\"]\nauto_confirm = true")).unwrap();
    let SourceKindConfig::Sns { topics, auto_confirm, trusted_certs } = &c.sources[0].kind else { panic!() };
    assert_eq!(topics, &TopicFilter::Only(vec!["arn:aws:sns:us-east-1:123456789012:alarms".into()]));
    assert!(*auto_confirm && trusted_certs.is_empty());
    let c = parse(&sns("any_topic = true")).unwrap();
    assert!(matches!(&c.sources[0].kind, SourceKindConfig::Sns { topics: TopicFilter::Any, auto_confirm: false, .. }));
    assert!(
        c.warnings.iter().any(|w| w.contains("any_topic = true accepts messages from every AWS account")),
        "{:?}",
        c.warnings
    );
    for (keys, needle) in [
        ("", "kind \"sns\" needs topics = ["),
        ("topics = []\nany_topic = false", "kind \"sns\" needs topics = ["),
        ("topics = [\"arn:aws:sns:us-east-1:1:a\"]\nany_topic = true", "either topics = [...] or any_topic = true"),
        ("topics = [\"alarms\"]", "\"alarms\" is not a topic ARN"),
        ("any_topic = true\nsecrets = [\"env:GH\"]", "remove secrets and verify"),
        (
            "any_topic = true\ntrusted_certs = { \"https://sns.us-east-1.amazonaws.com/a.pem\" = \"env:NOPE\" }",
            "NOPE is not set",
        ),
    ] {
        let err = parse(&sns(keys)).unwrap_err().to_string();
        assert!(err.contains(needle), "{keys}: {err}");
    }
    let err = parse(&format!("{MINIMAL}topics = [\"arn:aws:sns:us-east-1:1:a\"]\nauto_confirm = true\n"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("topics is for kind \"sns\" only") && err.contains("auto_confirm is for kind \"sns\" only"),
        "{err}"
    );
}

#[test]
fn pinned_sns_certificates_are_read_from_files_next_to_the_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sns.pem"), "-----BEGIN CERTIFICATE-----\n").unwrap();
    let text =
        sns("topics = [\"arn:aws:sns:us-east-1:1:a\"]\ntrusted_certs = { \"https://sns.us-east-1.amazonaws.com/a.pem\" = \"file:sns.pem\" }");
    let env = env();
    let c = Config::from_str(&text, &dir.path().join("pagerhook.toml"), &move |k| env.get(k).cloned()).unwrap();
    let SourceKindConfig::Sns { trusted_certs, .. } = &c.sources[0].kind else { panic!() };
    assert_eq!(trusted_certs["https://sns.us-east-1.amazonaws.com/a.pem"], "-----BEGIN CERTIFICATE-----");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn a_postgres_url_selects_the_shared_store_and_its_password_is_never_shown() {
    let c = parse(&format!("{MINIMAL}\n[storage]\nurl = \"env:DB\"\n")).unwrap();
    assert_eq!(
        c.storage.backend,
        StorageBackend::Postgres { url: Secret::new("postgres://pagerhook:hunter2@db:5432/pagerhook") }
    );
    assert!(!format!("{c:?}").contains("hunter2"));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);

    let err = parse(&format!("{MINIMAL}\n[storage]\nurl = \"env:NOT_PG\"\n")).unwrap_err().to_string();
    assert!(err.contains("storage.url must be a PostgreSQL URL"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");

    let both = parse(&format!("{MINIMAL}\n[storage]\nurl = \"env:DB\"\npath = \"q.db\"\n")).unwrap_err();
    assert!(both.to_string().contains("keep one"), "{both}");

    let literal =
        parse(&format!("{MINIMAL}\n[storage]\nurl = \"postgres://u:p@db/x\"\ndurability = \"fsync\"\n")).unwrap();
    assert!(
        literal.warnings.iter().any(|w| w.contains("storage.url is written in the config file")),
        "{:?}",
        literal.warnings
    );
    assert!(literal.warnings.iter().any(|w| w.contains("SQLite only")), "{:?}", literal.warnings);
}

#[test]
fn the_lease_defaults_to_fifteen_seconds_and_may_be_shorter_than_an_attempt() {
    assert_eq!(parse(MINIMAL).unwrap().delivery.lease, Duration::from_secs(15));
    // Renewed while an attempt runs, so it need not outlast pagerduty.timeout.
    let c = parse(&format!("{MINIMAL}\n[delivery]\nlease = \"5s\"\n")).unwrap();
    assert_eq!(c.delivery.lease, Duration::from_secs(5));
    let err = parse(&format!("{MINIMAL}\n[delivery]\nlease = \"1s\"\n")).unwrap_err().to_string();
    assert!(err.contains("delivery.lease must be at least 3s"), "{err}");
}
