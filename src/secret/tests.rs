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
    assert!(matches!(&err, SecretError::UnsetEnv(name) if name == "B"), "{err:?}");
    assert!(err.to_string().contains("B is not set (e.g. `export B=...`)"), "{err}");
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
