use super::*;
use std::collections::HashMap;

const KEY: &str = "0123456789abcdef0123456789abcdef";

/// TLS options that check the database server's certificate and name.
const VERIFY_FULL: &str = "sslmode=verify-full&sslrootcert=/etc/pagerhook/db-ca.pem";

fn env() -> HashMap<String, String> {
    HashMap::from([
        ("PD".to_string(), KEY.to_string()),
        ("GH".to_string(), "s".to_string()),
        ("WHSEC".to_string(), "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string()),
        ("BASIC".to_string(), "alertmanager:pa55word".to_string()),
        ("DB".to_string(), format!("postgres://pagerhook:hunter2@db:5432/pagerhook?{VERIFY_FULL}")),
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
    assert!(c.server.workers >= 2, "the CPU count, at least 2");
    assert_eq!(c.server.request_timeout, std::time::Duration::from_secs(30));
    assert_eq!(c.server.max_connections, 1024);
    assert_eq!(c.server.keep_alive, std::time::Duration::from_secs(5));
    assert_eq!(c.storage.backend, StorageBackend::Sqlite { path: PathBuf::from("/etc/pagerhook/data/pagerhook.db") });
    assert_eq!(c.storage.durability, Durability::Fsync);
    assert_eq!(c.storage.dead_letter_retention, std::time::Duration::from_secs(30 * 86_400));
    assert_eq!(c.storage.dead_letter_max_bytes, 100 << 20);
    assert_eq!((c.storage.min_free_bytes, c.storage.max_bytes), (64 << 20, None));
    assert_eq!(c.sources[0].max_event_bytes_per_request, 16 << 20);
    assert_eq!(c.pagerduty.events_url, "https://events.pagerduty.com");
    assert_eq!(c.delivery.per_key_rate, 120);
    // 32 left a tenth of a saturating load undelivered at the end of the bench run.
    assert_eq!(c.delivery.concurrency, 64);
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
fn a_syntax_error_on_a_secret_line_does_not_quote_the_secret() {
    for (text, line) in [
        ("[server]\nadmin_token = \"hunter2-admin\n", 2),
        ("[server]\nadmin_token = hunter2-admin\n", 2),
        ("[pagerduty]\nrouting_key = \"hunter2-admin\" x\n", 2),
        ("[pagerduty.routing_keys]\nteam-a = \"hunter2-admin\n", 2),
        ("[storage]\nurl = \"postgres://u:hunter2-admin@db/x\n", 2),
        ("[[source]]\nname = \"a\"\nkind = \"generic\"\nverify = { scheme = \"bearer\", secrets = [\"hunter2-admin\" }\n", 4),
        ("[[source]]\nname = \"a\"\nsecrets = [\n  \"hunter2-admin\" \"x\",\n]\n", 4),
    ] {
        let err = parse(text).unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{text:?} leaks: {err}");
        assert!(err.contains(&format!("line {line}")), "{text:?}: {err}");
        assert!(err.contains("***"), "{text:?}: {err}");
    }
    // Other lines are quoted as written, which is what makes the error easy to fix.
    let err = parse("[server]\nlisten = \"0.0.0.0:1\n").unwrap_err().to_string();
    assert!(err.contains("line 2") && err.contains("listen = \"0.0.0.0:1"), "{err}");
}

#[test]
fn server_limits_are_read_and_checked() {
    let c = parse(&format!(
        "[server]\nworkers = 3\nrequest_timeout = \"2s\"\nmax_connections = 10\nkeep_alive = \"0s\"\n{MINIMAL}"
    ))
    .unwrap();
    assert_eq!(c.server.workers, 3);
    assert_eq!(c.server.request_timeout, std::time::Duration::from_secs(2));
    assert_eq!(c.server.max_connections, 10);
    assert!(c.server.keep_alive.is_zero());
    let err = parse(&format!(
        "[server]\nworkers = 0\nrequest_timeout = \"0s\"\nmax_connections = 0\nkeep_alive = \"soon\"\n{MINIMAL}"
    ))
    .unwrap_err()
    .to_string();
    for field in ["server.workers", "server.request_timeout", "server.max_connections", "server.keep_alive"] {
        assert!(err.contains(field), "{field} missing from {err}");
    }
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
fn the_shipped_config_is_valid_whatever_sources_are_enabled() {
    // A user enabling a source in the shipped file must not break `cargo test`: what is
    // tested is that it validates and its mappings compile, not which sources it holds.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let c = Config::load_unresolved(&root.join("pagerhook.toml"), &|_| None).unwrap();
    crate::registry::Sources::build(&c).unwrap_or_else(|e| panic!("{e:#?}"));
}

#[test]
fn every_misspelled_key_is_reported_with_its_line() {
    let text = format!("{MINIMAL}\n[delivery]\nconcurency = 4\nmax_bakoff = \"1m\"\n[server]\nlisen = \"x\"\n");
    let err = parse(&text).unwrap_err().to_string();
    for needle in
        ["line 12: unknown field `concurency`", "line 13: unknown field `max_bakoff`", "line 15: unknown field `lisen`"]
    {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
}

#[test]
fn a_misspelled_key_inside_an_inline_table_does_not_hide_other_problems() {
    let text = generic("verify = { scheme = \"bearer\", secrit = 1 }\nsecrets = [\"env:GH\"]\n")
        .replace("[pagerduty]", "[storage]\ndurability = \"sometimes\"\n[pagerduty]");
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("unknown field `secrit`"), "{err}");
    assert!(err.contains("storage.durability = \"sometimes\""), "{err}");
}

#[test]
fn an_invalid_config_still_hands_over_its_valid_sources_for_their_mappings() {
    let text = MINIMAL.replace("[pagerduty]", "[storage]\ndurability = \"sometimes\"\n[pagerduty]");
    match parse(&text) {
        Err(ConfigError::Invalid { partial, errors, .. }) => {
            assert_eq!(errors.len(), 1, "{errors:#?}");
            assert_eq!(partial.sources.len(), 1);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_wrong_routing_key_is_one_error_and_names_whitespace_from_the_environment() {
    let env = |k: &str| (k == "PD").then(|| format!("{KEY}\n")).or_else(|| (k == "GH").then(|| "s".into()));
    let err = Config::from_str(MINIMAL, Path::new("p.toml"), &env).unwrap_err();
    let ConfigError::Invalid { errors, .. } = &err else { panic!("{err:?}") };
    assert_eq!(errors.len(), 1, "no false 'no routing key' for the sources: {errors:#?}");
    assert!(errors[0].contains("whitespace around it") && errors[0].contains("set PD without it"), "{errors:#?}");
    let text = MINIMAL.replace("env:PD", "short");
    let err = parse(&text).unwrap_err();
    let ConfigError::Invalid { errors, .. } = &err else { panic!("{err:?}") };
    assert_eq!(errors.len(), 1, "{errors:#?}");
}

#[test]
fn without_resolving_secrets_a_missing_env_var_is_noted_not_refused() {
    let text = MINIMAL.replace("env:PD", "env:UNSET_KEY").replace("env:GH", "env:UNSET_SECRET");
    assert!(parse(&text).is_err());
    let c = Config::from_str_unresolved(&text, Path::new("/etc/p.toml"), &|_| None).unwrap();
    assert_eq!(c.unresolved.len(), 2, "{:?}", c.unresolved);
    assert!(c.unresolved[0].starts_with("pagerduty.routing_key: environment variable UNSET_KEY is not set"));
    assert!(c.pagerduty.routing_key.is_some(), "a placeholder stands in, so mappings compile");
    assert!(c.require_resolved("storage.url").is_ok());
    assert!(c.require_resolved("").unwrap_err().to_string().contains("UNSET_SECRET"));
}

#[test]
fn a_missing_config_file_says_where_it_looked_and_how_to_point_elsewhere() {
    let err = Config::load(Path::new("no-such-dir/pagerhook.toml"), &|_| None).unwrap_err().to_string();
    let cwd = std::env::current_dir().unwrap();
    assert!(err.contains(&cwd.join("no-such-dir/pagerhook.toml").display().to_string()), "{err}");
    assert!(err.contains("--config") && err.contains("PAGERHOOK_CONFIG"), "{err}");
    assert!(!err.contains("os error"), "{err}");
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
    let SourceKindConfig::Sns { topics, auto_confirm, trusted_certs, unsigned_message_attributes, signature_versions } =
        &c.sources[0].kind
    else {
        panic!()
    };
    assert_eq!(topics, &TopicFilter::Only(vec!["arn:aws:sns:us-east-1:123456789012:alarms".into()]));
    assert!(*auto_confirm && trusted_certs.is_empty() && !unsigned_message_attributes);
    assert_eq!(*signature_versions, SignatureVersions { sha1: true, sha256: true }, "both, by default");
    let c = parse(&sns("any_topic = true
unsigned_message_attributes = true"))
    .unwrap();
    assert!(matches!(
        &c.sources[0].kind,
        SourceKindConfig::Sns { topics: TopicFilter::Any, auto_confirm: false, unsigned_message_attributes: true, .. }
    ));
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
        ("any_topic = true\nsignature_versions = [3]", "signature_versions takes 1 and/or 2"),
        ("any_topic = true\nsignature_versions = []", "signature_versions takes 1 and/or 2"),
        (
            "any_topic = true\ntrusted_certs = { \"https://sns.us-east-1.amazonaws.com/a.pem\" = \"env:NOPE\" }",
            "NOPE is not set",
        ),
    ] {
        let err = parse(&sns(keys)).unwrap_err().to_string();
        assert!(err.contains(needle), "{keys}: {err}");
    }
    let err = parse(&format!(
        "{MINIMAL}topics = [\"arn:aws:sns:us-east-1:1:a\"]\nauto_confirm = true\nunsigned_message_attributes = true\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("topics is for kind \"sns\" only")
            && err.contains("auto_confirm is for kind \"sns\" only")
            && err.contains("unsigned_message_attributes is for kind \"sns\" only"),
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
        StorageBackend::Postgres {
            url: Secret::new(format!("postgres://pagerhook:hunter2@db:5432/pagerhook?{VERIFY_FULL}"))
        }
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

fn with_events_url(url: &str) -> String {
    MINIMAL.replace("[pagerduty]\n", &format!("[pagerduty]\nevents_url = \"{url}\"\n"))
}

#[test]
fn a_pasted_endpoint_url_is_normalised_to_the_base_with_a_note() {
    for pasted in [
        "https://events.pagerduty.com/v2/enqueue",
        "https://events.pagerduty.com/v2/change/enqueue",
        "https://events.pagerduty.com/v2",
        "https://events.pagerduty.com/v2/",
    ] {
        let c = parse(&with_events_url(pasted)).unwrap();
        assert_eq!(c.pagerduty.events_url, "https://events.pagerduty.com", "{pasted}");
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains("pagerduty.events_url") && w.contains("https://events.pagerduty.com\"")),
            "{pasted}: {:?}",
            c.warnings
        );
    }
    let c = parse(&with_events_url("https://events.eu.pagerduty.com/")).unwrap();
    assert_eq!(c.pagerduty.events_url, "https://events.eu.pagerduty.com");
    assert!(c.warnings.is_empty(), "a bare base URL is fine: {:?}", c.warnings);
}

#[test]
fn an_events_url_with_another_path_is_refused_naming_the_key() {
    for bad in [
        "https://events.pagerduty.com/v1/enqueue",
        "https://events.pagerduty.com/enqueue",
        "https://events.pagerduty.com/v2/enqueue?x=1",
        "ftp://events.pagerduty.com",
    ] {
        let err = parse(&with_events_url(bad)).unwrap_err().to_string();
        assert!(err.contains("pagerduty.events_url"), "{bad}: {err}");
    }
}

#[test]
fn unmatched_is_ignore_by_default_keep_or_page_when_asked_and_nothing_else() {
    assert_eq!(parse(MINIMAL).unwrap().sources[0].unmatched, Unmatched::Ignore);
    let keep = format!("{MINIMAL}unmatched = \"keep\"\n");
    assert_eq!(parse(&keep).unwrap().sources[0].unmatched, Unmatched::Keep);
    let page = format!("{MINIMAL}unmatched = \"page\"\n");
    assert_eq!(parse(&page).unwrap().sources[0].unmatched, Unmatched::Page);
    for bad in ["pager", "drop", "Keep"] {
        let err = parse(&format!("{MINIMAL}unmatched = \"{bad}\"\n")).unwrap_err().to_string();
        assert!(err.contains("unmatched") || err.contains("unknown variant"), "{bad}: {err}");
        assert!(err.contains("ignore") && err.contains("keep") && err.contains("page"), "the choices are named: {err}");
    }
}

#[test]
fn own_pages_are_on_by_default_to_the_default_key_and_one_setting_turns_them_off() {
    let c = parse(MINIMAL).unwrap();
    assert!(c.pagerduty.own_pages);
    assert_eq!(c.pagerduty.own_pages_routing_key, c.pagerduty.routing_key);
    assert_eq!(c.server.admin_url, None);
    let off = MINIMAL.replace("[pagerduty]\n", "[pagerduty]\nown_pages = false\n");
    assert!(!parse(&off).unwrap().pagerduty.own_pages, "{off}");
    let own =
        MINIMAL.replace("[pagerduty]\n", "[pagerduty]\nown_pages_routing_key = \"fedcba9876543210fedcba9876543210\"\n");
    let c = parse(&own).unwrap();
    assert_eq!(c.pagerduty.own_pages_routing_key.unwrap().expose(), "fedcba9876543210fedcba9876543210");
    let url = format!("[server]\nadmin_url = \"https://pagerhook.example/\"\n{MINIMAL}");
    assert_eq!(parse(&url).unwrap().server.admin_url.as_deref(), Some("https://pagerhook.example"));
    let bad = format!("[server]\nadmin_url = \"pagerhook.example\"\n{MINIMAL}");
    assert!(parse(&bad).unwrap_err().to_string().contains("server.admin_url"));
}

#[test]
fn a_storm_is_paged_after_ten_minutes_of_backlog_by_default_and_never_under_a_minute() {
    assert_eq!(parse(MINIMAL).unwrap().pagerduty.storm_page_after, Duration::from_secs(600));
    let five = MINIMAL.replace("[pagerduty]\n", "[pagerduty]\nstorm_page_after = \"5m\"\n");
    assert_eq!(parse(&five).unwrap().pagerduty.storm_page_after, Duration::from_secs(300), "{five}");
    for bad in ["30s", "0s", "soon"] {
        let text = MINIMAL.replace("[pagerduty]\n", &format!("[pagerduty]\nstorm_page_after = \"{bad}\"\n"));
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("pagerduty.storm_page_after"), "{bad}: {err}");
    }
}

#[test]
fn a_plain_http_events_url_is_refused_unless_on_loopback() {
    for bad in ["http://events.pagerduty.com", "http://proxy.internal:8080"] {
        let err = parse(&with_events_url(bad)).unwrap_err().to_string();
        assert!(err.contains("pagerduty.events_url") && err.contains("https"), "{bad}: {err}");
    }
    for fine in ["http://127.0.0.1:9000", "http://localhost:9000", "http://[::1]:9000", "https://pd.proxy.internal"] {
        parse(&with_events_url(fine)).unwrap_or_else(|e| panic!("{fine}: {e}"));
    }
}

#[test]
fn supersede_is_on_by_default_and_can_be_turned_off() {
    assert!(parse(MINIMAL).unwrap().delivery.supersede);
    let kept = parse(&format!("{MINIMAL}\n[delivery]\nsupersede = false\n")).unwrap();
    assert!(!kept.delivery.supersede, "every flap is sent to PagerDuty");
}

#[test]
fn the_burst_is_part_of_the_rate() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!((c.delivery.per_key_rate, c.delivery.per_key_burst), (120, 60));
    let c = parse(&format!("{MINIMAL}\n[delivery]\nper_key_rate = 30\n")).unwrap();
    assert_eq!(c.delivery.per_key_burst, 30, "the default burst never exceeds the rate");
    let err = parse(&format!("{MINIMAL}\n[delivery]\nper_key_rate = 30\nper_key_burst = 31\n")).unwrap_err();
    assert!(
        err.to_string().contains("delivery.per_key_burst (31) must be at most delivery.per_key_rate (30)"),
        "{err}"
    );
}

#[test]
fn a_key_of_another_kind_is_refused_at_its_own_line() {
    // MINIMAL's github source ends on line 9: sns's `topics` is line 10, a misspelling line 11.
    let text = format!("{MINIMAL}topics = [\"arn:aws:sns:us-east-1:1:a\"]\nmapings = []\n");
    let err = parse(&text).unwrap_err().to_string();
    assert_reports(
        &err,
        &["pagerhook.toml: invalid", "line 10: topics is for kind \"sns\" only", "line 11: unknown field `mapings`"],
    );
}

#[test]
fn an_option_of_another_scheme_is_refused_at_its_own_line() {
    // generic() puts its lines from line 15: `secrets` on 15, `verify` on 16.
    let err = refused("secrets = [\"env:GH\"]\nverify = { scheme = \"bearer\", header = \"X\", prefx = \"a\" }");
    let option = "line 16: verify option header does not apply to scheme \"bearer\" (its options: none)";
    assert_reports(&err, &["pagerhook.toml: invalid", option, "line 16: unknown field `prefx`"]);
    let err = refused("secrets = [\"env:GH\"]\n[source.verify]\nscheme = \"gitlab\"\ntolerance = \"1m\"");
    assert!(err.contains("line 18: verify option tolerance does not apply to scheme \"gitlab\""), "{err}");
}

#[test]
fn kind_and_scheme_may_come_after_the_keys_they_decide() {
    let text = generic("verify = { header = \"X-Sig\", scheme = \"hmac\" }\nsecrets = [\"env:GH\"]")
        .replace("kind = \"generic\"\nmappings = [\"mappings/am.toml\"]\n", "mappings = [\"mappings/am.toml\"]\n");
    let text = format!("{text}kind = \"generic\"\n");
    let c = parse(&text).unwrap();
    assert!(
        matches!(&c.sources[1].kind, SourceKindConfig::Generic { verify: VerifyScheme::Hmac { header, .. } } if header == "X-Sig")
    );
    // Written before the kind, a key of another kind is still refused (at the table's line).
    let text = "[pagerduty]\nrouting_key = \"env:PD\"\n[[source]]\nname = \"gh\"\ntopics = []\nkind = \"github\"\nsecrets = [\"env:GH\"]\nmappings = [\"m.toml\"]\n";
    let err = parse(text).unwrap_err().to_string();
    assert!(err.contains("topics is for kind \"sns\" only"), "{err}");
}

#[test]
fn every_variant_of_kind_and_scheme_is_listed() {
    // `ALL` feeds error messages and the misplaced-key hints; each name must read back as itself.
    for k in raw::SourceKindName::ALL {
        let back: raw::SourceKindName =
            serde::Deserialize::deserialize(toml::Value::String(k.as_str().into())).unwrap();
        assert_eq!(back, k);
    }
    for s in raw::SchemeName::ALL {
        let back: raw::SchemeName = serde::Deserialize::deserialize(toml::Value::String(s.as_str().into())).unwrap();
        assert_eq!(back, s);
    }
    assert_eq!(raw::SchemeName::Hmac.options(), ["header", "algorithm", "encoding", "prefix"]);
    assert_eq!(raw::SchemeName::Stripe.options(), ["tolerance"]);
    assert!(raw::SchemeName::None.options().is_empty());
}

/// Fails naming the first of `needles` that `err` does not hold.
fn assert_reports(err: &str, needles: &[&str]) {
    for needle in needles {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
}

/// Why `generic(lines)` is refused.
fn refused(lines: &str) -> String {
    parse(&generic(lines)).unwrap_err().to_string()
}

#[test]
fn a_wrong_value_keeps_what_was_wrong_with_it() {
    assert!(matches!(value::duration("delivery.max_age", Some("soon"), "24h"), Err(ValueError::Duration { .. })));
    assert!(matches!(
        value::socket("server.listen", Some("nowhere"), "0.0.0.0:8080"),
        Err(ValueError::Address { field, value }) if field == "server.listen" && value == "nowhere"
    ));
    let err = value::one_of("storage.durability", "sometimes", &[("fsync", 1), ("process", 2)]).unwrap_err();
    assert_eq!(err.to_string(), "storage.durability = \"sometimes\": expected \"fsync\" or \"process\"");
    let mut warnings = Vec::new();
    assert!(matches!(
        value::events_url("https://events.pagerduty.com/v1/enqueue", &mut warnings),
        Err(ValueError::NotAnEndpoint { value, path })
            if value == "https://events.pagerduty.com/v1/enqueue" && path == "/v1/enqueue"
    ));
    let spaced = Config::from_str("[pagerduty.routing_keys]\ndefault = \"env:KEY\"\n", Path::new("t.toml"), &|_| {
        Some(format!("{}\n", "a".repeat(32)))
    });
    let text = spaced.unwrap_err().to_string();
    assert!(text.contains("the key in KEY has whitespace around it"), "{text}");
}

#[test]
fn a_value_of_the_wrong_type_on_a_secret_key_does_not_quote_the_secret() {
    let source = |keys: &str| format!("[[source]]\nname = \"a\"\nmappings = [\"m.toml\"]\n{keys}\n");
    for text in [
        "[server]\nadmin_token = [\"hunter2-admin\"]\n".to_string(),
        "[server]\nadmin_token = { t = \"hunter2-admin\" }\n".to_string(),
        "[pagerduty]\nrouting_key = [\"hunter2-admin\"]\n".to_string(),
        "[pagerduty.routing_keys]\nteam-a = [\"hunter2-admin\"]\n".to_string(),
        "[storage]\nurl = [\"postgres://u:hunter2-admin@db/x\"]\n".to_string(),
        source("kind = \"github\"\nsecrets = \"hunter2-admin\""),
        source("kind = \"github\"\nsecrets = [\"env:GH\"]\nrouting_key = [\"hunter2-admin\"]"),
        source("kind = \"generic\"\nverify = { scheme = \"bearer\", secrets = \"hunter2-admin\" }"),
        source("kind = \"generic\"\nsecrets = \"hunter2-admin\"\nverify = { scheme = \"bearer\" }"),
    ] {
        let err = parse(&text).unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{text:?} leaks: {err}");
        assert!(err.contains("invalid type"), "{text:?}: {err}");
    }
}

#[test]
fn the_raw_config_never_prints_a_secret() {
    let text = r#"
[server]
admin_token = "hunter2-a"
[storage]
url = "postgres://u:hunter2-b@db/x"
[pagerduty]
routing_key = "hunter2-c"
[pagerduty.routing_keys]
team = "hunter2-d"
[[source]]
name = "g"
kind = "github"
secrets = ["hunter2-e"]
routing_key = "hunter2-f"
[[source]]
name = "x"
kind = "generic"
verify = { scheme = "hmac", header = "X-S", secrets = ["hunter2-g"] }
[[source]]
name = "y"
kind = "generic"
secrets = ["hunter2-h", "env:NAMED"]
verify = { scheme = "bearer" }
"#;
    let raw: raw::RawConfig = toml::from_str(text).unwrap();
    let shown = format!("{raw:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("env:NAMED"), "a reference is no secret, and helps: {shown}");
}

#[test]
fn a_source_s_routing_keys_must_be_configured_names() {
    let text =
        format!("{MINIMAL}routing_keys = [\"team-a\", \"team-x\"]\n[pagerduty.routing_keys]\nteam-a = \"env:PD\"\n");
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("routing_keys: \"team-x\" is not a name in [pagerduty.routing_keys]"), "{err}");
    assert!(!err.contains("\"team-a\" is not"), "{err}");
    let ok = parse(&text.replace(", \"team-x\"", "")).unwrap();
    assert_eq!(ok.sources[0].routing_keys, Some(vec!["team-a".to_string()]));
}
/// `storage.url` set to `url` (through the environment).
fn with_database_url(url: &str) -> Config {
    let mut env = env();
    env.insert("URL".to_string(), url.to_string());
    let text = format!("{MINIMAL}\n[storage]\nurl = \"env:URL\"\n");
    Config::from_str(&text, Path::new("/etc/pagerhook/pagerhook.toml"), &move |k| env.get(k).cloned()).unwrap()
}

#[test]
fn a_postgres_url_that_checks_no_certificate_is_warned_about_off_loopback() {
    for url in [
        "postgres://u:hunter2@db.example.com:5432/x?sslmode=require",
        "postgres://u:hunter2@db.example.com/x?sslmode=prefer",
        "postgres://u:hunter2@db.example.com/x",
        "postgresql://u:hunter2@10.0.0.5/x?application_name=p&sslmode=require",
        "postgres://u:hunter2@db.example.com/x?sslmode=disable",
    ] {
        let warnings = with_database_url(url).warnings;
        let warned: Vec<_> = warnings.iter().filter(|w| w.contains("storage.url") && w.contains("sslmode")).collect();
        assert_eq!(warned.len(), 1, "{url}: {warnings:?}");
        assert!(warned[0].contains("verify-full"), "{url}: {warned:?}");
        assert!(!warned[0].contains("hunter2") && !warned[0].contains("db.example"), "{url}: {warned:?}");
    }
    for url in [
        "postgres://u:hunter2@db.example.com/x?sslmode=verify-full&sslrootcert=/etc/ca.pem",
        "postgres://u:hunter2@db.example.com/x?sslmode=verify-ca&sslrootcert=/etc/ca.pem",
        "postgres://u:hunter2@db.example.com/x?sslmode=require&sslrootcert=/etc/ca.pem",
        "postgres://u:hunter2@127.0.0.1:5432/x?sslmode=require",
        "postgres://u:hunter2@localhost/x",
        "postgres://u:hunter2@[::1]/x?sslmode=prefer",
        "postgres://u:hunter2@/x?host=/var/run/postgresql",
    ] {
        let warnings = with_database_url(url).warnings;
        assert!(!warnings.iter().any(|w| w.contains("sslmode")), "{url}: {warnings:?}");
    }
}

#[test]
fn the_native_renderer_is_on_unless_mapping_native_is_false() {
    assert!(parse(MINIMAL).unwrap().mapping.native);
    assert!(parse(&format!("{MINIMAL}\n[mapping]\nnative = true\n")).unwrap().mapping.native);
    assert!(!parse(&format!("{MINIMAL}\n[mapping]\nnative = false\n")).unwrap().mapping.native);
    let err = parse(&format!("{MINIMAL}\n[mapping]\nnative = \"no\"\n")).unwrap_err().to_string();
    assert_reports(&err, &["pagerhook.toml: invalid", "line 12: invalid type: string \"no\", expected a boolean"]);
    let err = parse(&format!("{MINIMAL}\n[mapping]\nnativ = false\n")).unwrap_err().to_string();
    assert_reports(&err, &["line 12: unknown field `nativ`, expected `native`"]);
}

#[test]
fn the_store_s_headroom_is_read_a_zero_cap_is_refused_and_postgresql_is_warned() {
    let with = |storage: &str| parse(&MINIMAL.replace("[pagerduty]", &format!("[storage]\n{storage}\n\n[pagerduty]")));
    let c = with("min_free_bytes = 1048576\nmax_bytes = 8388608").unwrap();
    assert_eq!((c.storage.min_free_bytes, c.storage.max_bytes), (1 << 20, Some(8 << 20)));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let err = with("max_bytes = 0").unwrap_err().to_string();
    assert!(err.contains("storage.max_bytes must be at least 1"), "{err}");
    let pg = with("url = \"env:DB\"\nmin_free_bytes = 1048576").unwrap();
    assert!(pg.warnings.iter().any(|w| w.contains("apply to SQLite only") && w.contains("53100")), "{:?}", pg.warnings);
}

#[test]
fn may_close_names_configured_sources_only() {
    assert!(parse(MINIMAL).unwrap().sources[0].may_close.is_empty(), "only the opener closes by default");
    let two = format!(
        "{MINIMAL}may_close = [\"aws\"]\n\n[[source]]\nname = \"aws\"\nkind = \"sns\"\ntopics = [\"arn:aws:sns:eu-west-1:123456789012:alarms\"]\nmappings = [\"mappings/cloudwatch.toml\"]\n"
    );
    assert_eq!(parse(&two).unwrap().sources[0].may_close, ["aws"]);
    let err = parse(&format!("{MINIMAL}may_close = [\"gitlab\"]\n")).unwrap_err().to_string();
    assert!(err.contains("may_close names \"gitlab\", which is not a configured source (one of: github)"), "{err}");
}

#[test]
fn resolve_delay_is_off_by_default_and_a_duration() {
    assert_eq!(parse(MINIMAL).unwrap().sources[0].resolve_delay, std::time::Duration::ZERO);
    let two = format!("{MINIMAL}resolve_delay = \"2m\"\n");
    assert_eq!(parse(&two).unwrap().sources[0].resolve_delay, std::time::Duration::from_secs(120));
    let err = parse(&format!("{MINIMAL}resolve_delay = \"soon\"\n")).unwrap_err().to_string();
    assert!(err.contains("resolve_delay"), "{err}");
}

#[test]
fn resolve_when_silent_is_off_by_default_and_a_duration() {
    assert_eq!(parse(MINIMAL).unwrap().sources[0].resolve_when_silent, std::time::Duration::ZERO);
    let hours = format!("{MINIMAL}resolve_when_silent = \"5h\"\n");
    assert_eq!(parse(&hours).unwrap().sources[0].resolve_when_silent, std::time::Duration::from_secs(5 * 3600));
    let err = parse(&format!("{MINIMAL}resolve_when_silent = \"later\"\n")).unwrap_err().to_string();
    assert!(err.contains("resolve_when_silent"), "{err}");
    // MINIMAL's source is GitHub's, which never repeats a failure: said at load.
    let warned = parse(&hours).unwrap().warnings;
    assert!(warned.iter().any(|w| w.contains("resolve_when_silent is set, but GitHub")), "{warned:?}");
    assert!(parse(MINIMAL).unwrap().warnings.iter().all(|w| !w.contains("resolve_when_silent")));
}
