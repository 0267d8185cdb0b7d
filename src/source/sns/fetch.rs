//! The only code that reaches AWS: GET an [`AwsUrl`], which can only name an SNS host.
//!
//! **Invariant:** a SigningCertURL or SubscribeURL comes from the request, so it is
//! attacker-controlled. [`AwsFetch`] takes nothing but an [`AwsUrl`], and an `AwsUrl` is only
//! built from an `https://sns.<region>.amazonaws.com[.cn]/` URL (a region-shaped name, China
//! regions on `.cn` only) without user info or port:
//! pagerhook cannot be made to request anything else (SSRF) by construction.

use async_trait::async_trait;
use bytes::Bytes;
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use url::{Host, Url};

/// Most bytes read from AWS: a certificate is about 2 KB, a confirmation answer less.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
const TIMEOUT: Duration = Duration::from_secs(5);

/// A URL on an SNS host, checked for its purpose. The only input [`AwsFetch`] accepts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AwsUrl(Url);

impl AwsUrl {
    /// A SigningCertURL: an SNS host and a `.pem` path, nothing else.
    pub fn cert(s: &str) -> Result<AwsUrl, UrlError> {
        let url = sns_url(s)?;
        if !url.path().ends_with(".pem") || url.query().is_some() || url.fragment().is_some() {
            return Err(UrlError::NotPem);
        }
        Ok(AwsUrl(url))
    }

    /// A SubscribeURL: an SNS host and `Action=ConfirmSubscription`, so the GET can do only that.
    pub fn subscribe(s: &str) -> Result<AwsUrl, UrlError> {
        let url = sns_url(s)?;
        let actions: Vec<_> = url.query_pairs().filter(|(k, _)| k == "Action").map(|(_, v)| v.into_owned()).collect();
        if actions != ["ConfirmSubscription"] || url.fragment().is_some() {
            return Err(UrlError::NotConfirmSubscription);
        }
        Ok(AwsUrl(url))
    }

    /// The names an SNS signing certificate at this URL may be issued to: SNS's own in the
    /// URL's partition (`sns.amazonaws.com`, `sns.amazonaws.com.cn`), its region's
    /// (`sns-cn-north-1.amazonaws.com.cn`, and `sns-signing.<region>.…` in the regions opened
    /// since 2019), and in GovCloud `sns-us-gov-west-1.amazonaws.com`, which both regions use.
    /// AWS's SDKs check the same names.
    pub(super) fn signing_names(&self) -> Vec<String> {
        let Some(SnsHost { region, suffix }) = self.0.host_str().and_then(sns_host) else { return Vec::new() };
        let mut names =
            vec![format!("sns.{suffix}"), format!("sns-{region}.{suffix}"), format!("sns-signing.{region}.{suffix}")];
        if region.starts_with("us-gov-") {
            names.push("sns-us-gov-west-1.amazonaws.com".to_string());
        }
        names
    }

    /// The URL as it will be requested.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Display for AwsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

/// Parses `s` and keeps it only if it is https on an SNS host with neither user info nor port.
fn sns_url(s: &str) -> Result<Url, UrlError> {
    let url = Url::parse(s).map_err(|_| UrlError::NotAUrl)?;
    if url.scheme() != "https" {
        return Err(UrlError::NotHttps);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlError::UserInfo);
    }
    // `Url` forgets an explicit default port (":443"), so look at what was written.
    let authority = s.split_once("://").map_or("", |(_, rest)| rest).split(['/', '?', '#']).next().unwrap_or_default();
    if url.port().is_some() || authority.contains(':') {
        return Err(UrlError::Port);
    }
    match url.host() {
        Some(Host::Domain(h)) if sns_host(h).is_some() => Ok(url),
        _ => Err(UrlError::Host),
    }
}

/// Why a URL from a message (or `trusted_certs`) is not one pagerhook may request. Messages
/// complete "SigningCertURL ..." or "SubscribeURL ...".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("is not a URL")]
    NotAUrl,
    #[error("is not https")]
    NotHttps,
    #[error("carries user info")]
    UserInfo,
    #[error("names a port")]
    Port,
    #[error("host not allowed")]
    Host,
    #[error("is not a .pem file")]
    NotPem,
    #[error("is not a ConfirmSubscription request")]
    NotConfirmSubscription,
}

/// The partition of an SNS host: `sns.<region>.<suffix>`, as AWS publishes them.
struct SnsHost<'a> {
    region: &'a str,
    /// `amazonaws.com` (commercial and GovCloud regions) or `amazonaws.com.cn` (China).
    suffix: &'static str,
}

/// `sns.<region>.amazonaws.com` for a commercial or GovCloud region, or
/// `sns.cn-<...>.amazonaws.com.cn` for a China one: exactly the SNS endpoints, and never an S3
/// one (`sns.s3.amazonaws.com`, `sns.s3-us-west-2.amazonaws.com` are a bucket named `sns`,
/// where anyone can put a certificate), since `s3` and `s3-…` are not shaped like a region.
fn sns_host(host: &str) -> Option<SnsHost<'_>> {
    let rest = host.strip_prefix("sns.")?;
    let (region, suffix) = match rest.strip_suffix(".amazonaws.com.cn") {
        Some(region) => (region, "amazonaws.com.cn"),
        None => (rest.strip_suffix(".amazonaws.com")?, "amazonaws.com"),
    };
    let china = region.starts_with("cn-");
    (is_region(region) && china == (suffix == "amazonaws.com.cn")).then_some(SnsHost { region, suffix })
}

/// A region name: two letters, one or more words, a number (`us-east-1`, `us-gov-west-1`,
/// `ap-southeast-5`).
fn is_region(r: &str) -> bool {
    let parts: Vec<&str> = r.split('-').collect();
    let letters = |p: &&str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase());
    let [first, words @ .., number] = parts.as_slice() else { return false };
    first.len() == 2
        && letters(first)
        && !words.is_empty()
        && words.iter().all(letters)
        && !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
}

/// Why a GET from AWS gave no body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// AWS could not be asked or could not answer (DNS, connection, timeout, 5xx, 429, an
    /// answer over the size limit): worth trying again later.
    #[error("{0}")]
    Failed(String),
    /// AWS answered that there is no such thing (a 4xx): the URL is wrong, a retry won't help.
    #[error("{0}")]
    Refused(String),
}

/// GETs from AWS. Production uses [`HttpsFetch`]; tests inject a fake through
/// `app::Options::aws_fetch`, which is the only way to answer for an SNS host locally.
#[async_trait]
pub trait AwsFetch: Send + Sync + fmt::Debug {
    /// The body of a 2xx answer to `GET url`, at most [`MAX_RESPONSE_BYTES`]; `Err` says why not.
    async fn get(&self, url: &AwsUrl) -> Result<Bytes, FetchError>;
}

/// HTTPS to AWS with a short timeout, no redirects and a size limit.
#[derive(Debug, Default)]
pub struct HttpsFetch {
    // Built on first use: `check` and `render` build sources but never fetch.
    client: OnceLock<Result<reqwest::Client, Arc<reqwest::Error>>>,
}

impl HttpsFetch {
    /// A fetcher whose client is built on first use.
    pub fn new() -> HttpsFetch {
        HttpsFetch::default()
    }

    fn client(&self) -> Result<&reqwest::Client, FetchError> {
        self.client
            .get_or_init(|| {
                reqwest::Client::builder()
                    .timeout(TIMEOUT)
                    .connect_timeout(TIMEOUT)
                    // A redirect could leave the SNS host the URL was checked for.
                    .redirect(reqwest::redirect::Policy::none())
                    .user_agent(concat!("pagerhook/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(Arc::new)
            })
            .as_ref()
            .map_err(|e| FetchError::Failed(format!("cannot build HTTP client: {e}")))
    }
}

#[async_trait]
impl AwsFetch for HttpsFetch {
    async fn get(&self, url: &AwsUrl) -> Result<Bytes, FetchError> {
        let res = self
            .client()?
            .get(url.0.clone())
            .send()
            .await
            .map_err(|e| FetchError::Failed(format!("request failed: {e}")))?;
        read_limited(res, MAX_RESPONSE_BYTES).await
    }
}

/// A 2xx body of at most `limit` bytes, read without buffering more than that. A 4xx other
/// than 408 and 429 is AWS saying no; anything else that is not a body is a failure.
pub(super) async fn read_limited(mut res: reqwest::Response, limit: usize) -> Result<Bytes, FetchError> {
    let status = res.status();
    if status.is_client_error() && !matches!(status.as_u16(), 408 | 429) {
        return Err(FetchError::Refused(format!("answered {status}")));
    }
    if !status.is_success() {
        return Err(FetchError::Failed(format!("answered {status}")));
    }
    let too_large = || FetchError::Failed(format!("answer larger than {limit} bytes"));
    if res.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) =
        res.chunk().await.map_err(|e| FetchError::Failed(format!("reading the answer failed: {e}")))?
    {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.into())
}

#[cfg(test)]
mod tests;
