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

/// Why `storage.url`'s TLS options cannot be used. Messages name the option, never the URL
/// (it holds the password).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("storage.url: sslmode={0} is not one of disable, prefer, require, verify-ca, verify-full")]
    UnknownMode(String),
    #[error(
        "storage.url: sslmode={0} needs sslrootcert=/path/to/root.crt (the certificate of the authority \
         that signed the server's); or use sslmode=require to encrypt without checking it"
    )]
    NoRoot(&'static str),
    #[error("storage.url: cannot read sslrootcert {path}: {detail}")]
    Root { path: PathBuf, detail: String },
    #[error("storage.url: sslrootcert {path}: {detail}")]
    Verifier { path: PathBuf, detail: String },
    #[error("TLS: {0}")]
    Config(String),
}

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
    fn parse(s: &str) -> Result<Mode, TlsError> {
        Ok(match s {
            "disable" => Mode::Disable,
            "prefer" => Mode::Prefer,
            "require" => Mode::Require,
            "verify-ca" => Mode::VerifyCa,
            "verify-full" => Mode::VerifyFull,
            other => return Err(TlsError::UnknownMode(other.to_string())),
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
pub(super) fn split(url: &str) -> Result<(String, Tls), TlsError> {
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
pub(super) fn connector(tls: &Tls) -> Result<MakeRustlsConnect, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match (&tls.root, tls.mode) {
        (None, Mode::VerifyCa) => return Err(TlsError::NoRoot("verify-ca")),
        (None, Mode::VerifyFull) => return Err(TlsError::NoRoot("verify-full")),
        (None, Mode::Disable | Mode::Prefer | Mode::Require) => {
            Arc::new(Lenient { provider: provider.clone(), chain: None })
        }
        (Some(path), mode) => {
            let roots = roots(path)?;
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| TlsError::Verifier { path: path.clone(), detail: e.to_string() })?;
            if mode == Mode::VerifyFull {
                webpki
            } else {
                Arc::new(Lenient { provider: provider.clone(), chain: Some(webpki) })
            }
        }
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

fn roots(path: &std::path::Path) -> Result<RootCertStore, TlsError> {
    let bad = |e: &dyn std::fmt::Display| TlsError::Root { path: path.to_path_buf(), detail: e.to_string() };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(&e))? {
        roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
    }
    if roots.is_empty() {
        return Err(bad(&"no PEM certificate in it"));
    }
    Ok(roots)
}

/// The modes that accept a certificate webpki alone would refuse: `prefer` and `require`
/// without a root certificate accept any (libpq's behaviour); `verify-ca` (and
/// `prefer`/`require` with `sslrootcert`) need the chain to reach a trusted root, but the
/// certificate may name another host. Either way the handshake signatures are checked with the
/// provider's algorithms (as webpki does), so the session is with whoever holds the
/// certificate's key.
#[derive(Debug)]
struct Lenient {
    provider: Arc<CryptoProvider>,
    /// The chain check, if any.
    chain: Option<Arc<WebPkiServerVerifier>>,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let Some(chain) = &self.chain else { return Ok(ServerCertVerified::assertion()) };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
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
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests;
