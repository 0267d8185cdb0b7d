//! `sslmode` and `sslrootcert` as libpq reads them.

use super::*;

#[test]
fn tls_options_are_taken_out_of_the_url_and_the_rest_is_kept() {
    let (rest, tls) =
        split("postgres://u:p@h:5432/db?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Froot.crt").unwrap();
    assert_eq!(rest, "postgres://u:p@h:5432/db?application_name=x");
    assert_eq!(tls, Tls { mode: Mode::VerifyFull, root: Some("/etc/root.crt".into()) });
    let (rest, tls) = split("postgres://u:p@h/db?sslmode=require").unwrap();
    assert_eq!((rest.as_str(), tls.mode), ("postgres://u:p@h/db", Mode::Require));
    assert_eq!(split("postgres://h/db").unwrap().1.mode, Mode::Prefer, "libpq's default");
    let err = split("postgres://u:hunter2@h/db?sslmode=allow-maybe").unwrap_err();
    assert!(matches!(&err, TlsError::UnknownMode(m) if m == "allow-maybe"), "{err:?}");
    let err = err.to_string();
    assert!(err.contains("sslmode=allow-maybe") && !err.contains("hunter2"), "{err}");
}

#[test]
fn verifying_modes_need_a_readable_root_certificate() {
    let err = connector(&Tls { mode: Mode::VerifyFull, root: None }).err().unwrap();
    assert!(matches!(err, TlsError::NoRoot("verify-full")), "{err:?}");
    let err = err.to_string();
    assert!(err.contains("needs sslrootcert"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.crt");
    let err = connector(&Tls { mode: Mode::VerifyCa, root: Some(missing) }).err().unwrap();
    assert!(matches!(err, TlsError::Root { .. }), "{err:?}");
    let err = err.to_string();
    assert!(err.contains("cannot read sslrootcert"), "{err}");
    let empty = dir.path().join("empty.crt");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let err = connector(&Tls { mode: Mode::VerifyCa, root: Some(empty) }).err().unwrap().to_string();
    assert!(err.contains("no PEM certificate"), "{err}");
    for mode in [Mode::Disable, Mode::Prefer, Mode::Require] {
        assert!(connector(&Tls { mode, root: None }).is_ok());
    }
}
