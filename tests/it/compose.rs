//! `compose.yaml`: pagerhook with PostgreSQL under Docker Compose (issue 34). Parsed as YAML
//! (python3's PyYAML: no YAML parser in the build), its pagerhook service checked against the
//! files it mounts: `pagerhook check` passes on the mounted config with exactly the
//! environment the service is given, so every `env:` secret of that config is in it.

use crate::helpers::root;
use serde_json::Value;
use std::process::Command;

/// compose.yaml as JSON, or why it cannot be read here (a failure under CI=true).
fn compose() -> Option<Value> {
    let out = Command::new("python3")
        .args(["-c", "import sys, json, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)"])
        .arg(root().join("compose.yaml"))
        .output();
    match out {
        Ok(o) if o.status.success() => Some(serde_json::from_slice(&o.stdout).expect("PyYAML wrote JSON")),
        Ok(o) if !String::from_utf8_lossy(&o.stderr).contains("No module named 'yaml'") => {
            panic!("compose.yaml does not parse: {}", String::from_utf8_lossy(&o.stderr))
        }
        other => {
            let why = format!("python3 with PyYAML is needed (apt-get install python3-yaml): {other:?}");
            assert!(!std::env::var("CI").is_ok_and(|v| v == "true"), "CI=true: {why}");
            eprintln!("SKIPPED compose.yaml test: {why}");
            None
        }
    }
}

/// `${NAME}`, `${NAME:?message}` and `${NAME:-default}` replaced by `vars[NAME]`.
fn interpolate(s: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("closed ${") + start;
        let name = rest[start + 2..end].split([':', '-', '?']).next().unwrap();
        let value = vars.iter().find(|(k, _)| *k == name).unwrap_or_else(|| panic!("no test value for {name}")).1;
        out.push_str(value);
        rest = &rest[end + 1..];
    }
    out + rest
}

/// The host path mounted at `target` by `service`.
fn mounted(service: &Value, target: &str) -> String {
    let volumes = service["volumes"].as_array().expect("volumes");
    let found = volumes.iter().filter_map(Value::as_str).find(|v| v.split(':').nth(1) == Some(target));
    found.unwrap_or_else(|| panic!("nothing mounted at {target}: {volumes:?}")).split(':').next().unwrap().to_string()
}

#[test]
fn compose_runs_pagerhook_on_its_postgresql_with_a_config_that_passes_check() {
    let Some(compose) = compose() else { return };
    let (pagerhook, postgres) = (&compose["services"]["pagerhook"], &compose["services"]["postgres"]);
    assert_eq!(pagerhook["build"], ".", "built from this repository");
    assert_eq!(pagerhook["depends_on"]["postgres"]["condition"], "service_healthy", "starts once PostgreSQL answers");
    let ports: Vec<_> = pagerhook["ports"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(ports.contains(&"8080:8080") && ports.contains(&"127.0.0.1:8081:8081"), "{ports:?}");
    assert!(postgres["ports"].is_null(), "the database is not published");

    // /etc/pagerhook as the container sees it.
    let etc = tempfile::tempdir().unwrap();
    let config = root().join(mounted(pagerhook, "/etc/pagerhook/pagerhook.toml"));
    std::fs::copy(&config, etc.path().join("pagerhook.toml")).unwrap();
    let mappings = root().join(mounted(pagerhook, "/etc/pagerhook/mappings"));
    std::fs::create_dir(etc.path().join("mappings")).unwrap();
    for f in std::fs::read_dir(&mappings).unwrap().map(Result::unwrap) {
        std::fs::copy(f.path(), etc.path().join("mappings").join(f.file_name())).unwrap();
    }
    let vars = [
        ("POSTGRES_PASSWORD", "pw"),
        ("PAGERDUTY_ROUTING_KEY", "0123456789abcdef0123456789abcdef"),
        ("GITHUB_WEBHOOK_SECRET", "a secret"),
        ("PAGERHOOK_ADMIN_TOKEN", "a long random admin token"),
    ];
    let env: Vec<(String, String)> = pagerhook["environment"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), interpolate(v.as_str().unwrap(), &vars)))
        .collect();
    let url = &env.iter().find(|(k, _)| k == "PAGERHOOK_DATABASE_URL").unwrap().1;
    let db = &postgres["environment"];
    let expected = format!(
        "postgres://{}:pw@postgres:5432/{}?",
        db["POSTGRES_USER"].as_str().unwrap(),
        db["POSTGRES_DB"].as_str().unwrap()
    );
    assert!(url.starts_with(&expected), "{url} is not the postgres service's database ({expected}…)");

    let out = Command::new(env!("CARGO_BIN_EXE_pagerhook"))
        .env_clear()
        .envs(env)
        .current_dir(etc.path())
        .args(["--config", "pagerhook.toml", "check"])
        .output()
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.contains("pagerhook.toml: OK"), "{said}");
}
