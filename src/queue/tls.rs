//! TLS to PostgreSQL with rustls, following libpq's `sslmode` and `sslrootcert`.
//!
//! tokio-postgres knows `sslmode` `disable`, `prefer` and `require` only, and no
//! `sslrootcert`: both are taken out of the URL here and turn into the rustls configuration
//! (which certificates to trust, whether the host name must match), while tokio-postgres is
//! told only whether to ask for TLS.
//!
//! As in libpq: `prefer` (the default) and `require` encrypt without checking the server's
//! certificate unless `sslrootcert` is given, in which case the certificate must chain to it
//! (as `verify-ca`); `verify-ca` checks the chain, `verify-full` also the host name; both need
//! `sslrootcert`.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};
use std::path::PathBuf;
use std::sync::Arc;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl Mode {
    fn parse(s: &str) -> Result<Mode, String> {
        Ok(match s {
            "disable" => Mode::Disable,
            "prefer" => Mode::Prefer,
            "require" => Mode::Require,
            "verify-ca" => Mode::VerifyCa,
            "verify-full" => Mode::VerifyFull,
            other => {
                return Err(format!(
                    "storage.url: sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
                ))
            }
        })
    }

    /// What tokio-postgres is asked for: whether TLS is tried, and whether it is required.
    pub(super) fn for_postgres(self) -> SslMode {
        match self {
            Mode::Disable => SslMode::Disable,
            Mode::Prefer => SslMode::Prefer,
            Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
        }
    }
}

/// The TLS options of a PostgreSQL URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Tls {
    pub mode: Mode,
    /// `sslrootcert`: a PEM file of the certificates to trust.
    pub root: Option<PathBuf>,
}

/// Takes `sslmode` and `sslrootcert` out of `url`'s query; returns the rest of the URL (for
/// tokio-postgres) and the options. Errors name the option, never the URL (it holds the
/// password).
pub(super) fn split(url: &str) -> Result<(String, Tls), String> {
    let mut tls = Tls { mode: Mode::Prefer, root: None };
    let Some((base, query)) = url.split_once('?') else { return Ok((url.to_string(), tls)) };
    let mut kept = Vec::new();
    for param in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = url::form_urlencoded::parse(param.as_bytes()).next().unwrap_or_default();
        match key.as_ref() {
            "sslmode" => tls.mode = Mode::parse(&value)?,
            "sslrootcert" => tls.root = Some(PathBuf::from(value.into_owned())),
            _ => kept.push(param),
        }
    }
    let rest = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
    Ok((rest, tls))
}

/// The connector for these options. Fails when a verifying mode has no root certificate, or
/// the file cannot be read or holds none.
pub(super) fn connector(tls: &Tls) -> Result<MakeRustlsConnect, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match (&tls.root, tls.mode) {
        (None, Mode::VerifyCa | Mode::VerifyFull) => {
            return Err(format!(
                "storage.url: sslmode={} needs sslrootcert=/path/to/root.crt (the certificate of the authority \
                 that signed the server's); or use sslmode=require to encrypt without checking it",
                if tls.mode == Mode::VerifyCa { "verify-ca" } else { "verify-full" }
            ))
        }
        (None, Mode::Disable | Mode::Prefer | Mode::Require) => Arc::new(Unverified(provider.clone())),
        (Some(path), mode) => {
            let roots = roots(path)?;
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| format!("storage.url: sslrootcert {}: {e}", path.display()))?;
            if mode == Mode::VerifyFull {
                webpki
            } else {
                Arc::new(AnyName(webpki))
            }
        }
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

fn roots(path: &std::path::Path) -> Result<RootCertStore, String> {
    let bad = |e: &dyn std::fmt::Display| format!("storage.url: cannot read sslrootcert {}: {e}", path.display());
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(&e))? {
        roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
    }
    if roots.is_empty() {
        return Err(bad(&"no PEM certificate in it"));
    }
    Ok(roots)
}

/// `prefer` and `require` without a root certificate: encrypted, but any certificate is
/// accepted (libpq's behaviour). The handshake signatures are still checked, so the session
/// is with whoever holds the certificate's key.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca` (and `prefer`/`require` with `sslrootcert`): the chain must reach a trusted
/// root, but the certificate may name another host.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_options_are_taken_out_of_the_url_and_the_rest_is_kept() {
        let (rest, tls) =
            split("postgres://u:p@h:5432/db?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Froot.crt")
                .unwrap();
        assert_eq!(rest, "postgres://u:p@h:5432/db?application_name=x");
        assert_eq!(tls, Tls { mode: Mode::VerifyFull, root: Some("/etc/root.crt".into()) });
        let (rest, tls) = split("postgres://u:p@h/db?sslmode=require").unwrap();
        assert_eq!((rest.as_str(), tls.mode), ("postgres://u:p@h/db", Mode::Require));
        assert_eq!(split("postgres://h/db").unwrap().1.mode, Mode::Prefer, "libpq's default");
        let err = split("postgres://u:hunter2@h/db?sslmode=allow-maybe").unwrap_err();
        assert!(err.contains("sslmode=allow-maybe") && !err.contains("hunter2"), "{err}");
    }

    #[test]
    fn verifying_modes_need_a_readable_root_certificate() {
        let err = connector(&Tls { mode: Mode::VerifyFull, root: None }).err().unwrap();
        assert!(err.contains("needs sslrootcert"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.crt");
        let err = connector(&Tls { mode: Mode::VerifyCa, root: Some(missing) }).err().unwrap();
        assert!(err.contains("cannot read sslrootcert"), "{err}");
        let empty = dir.path().join("empty.crt");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = connector(&Tls { mode: Mode::VerifyCa, root: Some(empty) }).err().unwrap();
        assert!(err.contains("no PEM certificate"), "{err}");
        for mode in [Mode::Disable, Mode::Prefer, Mode::Require] {
            assert!(connector(&Tls { mode, root: None }).is_ok());
        }
    }
}
