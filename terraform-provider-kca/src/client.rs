//! A small client for the kca HTTP API: only the calls the provider makes, and errors that carry
//! the server's problem `detail` to the Terraform user.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode, Url};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tf_provider::Diagnostics;

use crate::diag;

/// The calls below answer in well under a second; a minute covers a loaded server without
/// leaving `terraform apply` hanging on a dead one.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Client {
    base: Url,
    token: Option<String>,
    http: reqwest::Client,
}

/// Why a call failed. Never holds the token: requests carry it in a header, and neither the URL
/// nor a server problem contains it.
#[derive(Debug)]
pub enum ApiError {
    /// 404: the object is gone (read turns this into "removed from state").
    NotFound(String),
    /// Any other non-2xx answer, with the RFC 9457 problem fields when the body is one.
    Status { status: StatusCode, title: String, detail: String },
    /// The request never got an answer (DNS, TCP, TLS, timeout) or the answer was not JSON.
    Transport(String),
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::NotFound(detail) => write!(f, "not found: {detail}"),
            ApiError::Status { status, detail, .. } => write!(f, "HTTP {status}: {detail}"),
            ApiError::Transport(detail) => f.write_str(detail),
        }
    }
}

impl ApiError {
    /// Report as a Terraform diagnostic: the summary says what the provider was doing, the detail
    /// is the server's own explanation.
    pub fn report(&self, diags: &mut Diagnostics, doing: &str) {
        let (summary, detail) = match self {
            ApiError::NotFound(detail) => (format!("{doing}: not found (HTTP 404)"), detail.clone()),
            ApiError::Status { status, title, detail } => {
                (format!("{doing}: {title} (HTTP {})", status.as_u16()), detail.clone())
            }
            ApiError::Transport(detail) => (format!("{doing}: kca could not be reached"), detail.clone()),
        };
        diag::error(diags, summary, detail);
    }
}

/// `application/problem+json`, as every kca error is.
#[derive(Deserialize)]
struct Problem {
    #[serde(default)]
    title: String,
    #[serde(default)]
    detail: String,
    field: Option<String>,
    rule: Option<String>,
}

impl Problem {
    /// The detail, and which field and policy rule it is about when the server says so.
    fn explained(self) -> String {
        match (self.field, self.rule) {
            (Some(field), Some(rule)) => format!("{} (field {field}, rule {rule})", self.detail),
            (Some(field), None) => format!("{} (field {field})", self.detail),
            (None, Some(rule)) => format!("{} (rule {rule})", self.detail),
            (None, None) => self.detail,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    pub default_ttl_seconds: i64,
    pub min_ttl_seconds: i64,
    pub max_ttl_seconds: i64,
    pub max_groups: i64,
    pub allowed_groups: Vec<String>,
    pub allow_system_masters: bool,
    #[serde(default)]
    pub allowed_profiles: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Cluster {
    pub id: String,
    pub name: String,
    pub server: String,
    pub key_algorithm: String,
    pub policy: Policy,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Generation {
    pub generation: i64,
    /// `active` or `retiring` (retired generations are not listed).
    pub state: String,
    pub certificate_pem: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Authority {
    pub kind: String,
    /// The generation that signs.
    pub generation: i64,
    pub fingerprint_sha256: String,
    pub certificate_pem: String,
    pub not_after: String,
    /// Every non-retired generation, in the order of `ca.pem`.
    pub generations: Vec<Generation>,
}

impl Authority {
    /// The trust bundle of this CA: every live generation, as `ca.pem` serves it, so that a
    /// rotation in progress does not break whoever trusts the bundle.
    pub fn bundle_pem(&self) -> String {
        self.generations.iter().map(|g| g.certificate_pem.as_str()).collect()
    }
}

#[derive(Serialize)]
pub struct NewKubeconfig<'a> {
    pub user: &'a str,
    pub groups: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_algorithm: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csr_pem: Option<&'a str>,
}

#[derive(Deserialize)]
pub struct Kubeconfig {
    pub kubeconfig: String,
    pub certificate_pem: String,
    pub private_key_pem: Option<String>,
    pub serial: String,
    pub not_after: String,
}

/// `POST /v1/clusters/{cluster}/certificates`: a component certificate under a profile.
#[derive(Serialize)]
pub struct NewComponentCertificate<'a> {
    pub profile: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub common_name: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub dns_names: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub ip_addresses: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_algorithm: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csr_pem: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_domain: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_ip: Option<&'a str>,
}

#[derive(Deserialize)]
pub struct ComponentCertificate {
    pub serial: String,
    pub certificate_pem: String,
    pub private_key_pem: Option<String>,
    pub ca_pem: String,
    pub not_after: String,
    pub fingerprint_sha256: String,
}

#[derive(Deserialize)]
pub struct Profile {
    pub name: String,
    /// The CA kind that signs it.
    pub authority: String,
}

#[derive(Deserialize)]
pub struct Certificate {
    pub status: String,
    pub not_after: String,
    pub certificate_pem: String,
}

impl Client {
    /// `ca_pem`: the PEM CA(s) to trust instead of the system's roots (kca's self-signed
    /// development certificate, or a private CA).
    pub fn new(url: &str, token: Option<String>, ca_pem: Option<&str>) -> Result<Self, String> {
        let base = Url::parse(url.trim_end_matches('/')).map_err(|e| format!("url {url:?}: {e}"))?;
        if !matches!(base.scheme(), "https" | "http") {
            return Err(format!(
                "url {url:?}: the scheme must be https (or http behind a TLS-terminating proxy)"
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("terraform-provider-kca/", env!("CARGO_PKG_VERSION")))
            .https_only(base.scheme() == "https")
            .tls_backend_preconfigured(tls_config(ca_pem)?)
            .build()
            .map_err(|e| format!("building the HTTP client: {}", chain(&e)))?;
        Ok(Self { base, token, http })
    }

    /// `base` + the given path segments, each percent-encoded, so a name can never climb out of
    /// its place in the path.
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut().expect("http(s) URLs have a path").pop_if_empty().extend(segments);
        url
    }

    fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let request = self.http.request(method, url);
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn send(&self, request: RequestBuilder) -> Result<reqwest::Response, ApiError> {
        let response = request.send().await.map_err(|e| ApiError::Transport(chain(&e)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().await.unwrap_or_default();
        let (title, detail) = match serde_json::from_str::<Problem>(&body) {
            Ok(p) => (p.title.clone(), p.explained()),
            // Not a problem document (a proxy in between): show the start of what came back.
            Err(_) => (String::new(), body.chars().take(300).collect()),
        };
        let title =
            if title.is_empty() { status.canonical_reason().unwrap_or("error").to_string() } else { title };
        if status == StatusCode::NOT_FOUND {
            return Err(ApiError::NotFound(detail));
        }
        Err(ApiError::Status { status, title, detail })
    }

    async fn json<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T, ApiError> {
        let response = self.send(request).await?;
        response
            .json::<T>()
            .await
            .map_err(|e| ApiError::Transport(format!("unexpected answer: {}", chain(&e))))
    }

    async fn text(&self, request: RequestBuilder) -> Result<String, ApiError> {
        let response = self.send(request).await?;
        response.text().await.map_err(|e| ApiError::Transport(chain(&e)))
    }

    // --- clusters ---

    pub async fn create_cluster(&self, body: &serde_json::Value) -> Result<Cluster, ApiError> {
        self.json(self.request(Method::POST, self.url(&["v1", "clusters"])).json(body)).await
    }

    /// By id or by name: kca accepts both in the path.
    pub async fn get_cluster(&self, id_or_name: &str) -> Result<Cluster, ApiError> {
        self.json(self.request(Method::GET, self.url(&["v1", "clusters", id_or_name]))).await
    }

    pub async fn patch_cluster(&self, id: &str, patch: &serde_json::Value) -> Result<Cluster, ApiError> {
        self.json(self.request(Method::PATCH, self.url(&["v1", "clusters", id])).json(patch)).await
    }

    pub async fn delete_cluster(&self, id: &str) -> Result<(), ApiError> {
        self.send(self.request(Method::DELETE, self.url(&["v1", "clusters", id]))).await.map(drop)
    }

    pub async fn list_authorities(&self, cluster: &str) -> Result<Vec<Authority>, ApiError> {
        self.json(self.request(Method::GET, self.url(&["v1", "clusters", cluster, "authorities"]))).await
    }

    pub async fn get_authority(&self, cluster: &str, kind: &str) -> Result<Authority, ApiError> {
        let url = self.url(&["v1", "clusters", cluster, "authorities", kind]);
        self.json(self.request(Method::GET, url)).await
    }

    /// A new generation of `kind` becomes the signer; the previous one becomes `retiring`.
    pub async fn rotate_authority(
        &self,
        cluster: &str,
        kind: &str,
        key_storage: Option<&str>,
    ) -> Result<Authority, ApiError> {
        let url = self.url(&["v1", "clusters", cluster, "authorities", kind, "rotate"]);
        let body = match key_storage {
            Some(storage) => serde_json::json!({ "key_storage": storage }),
            None => serde_json::json!({}),
        };
        self.json(self.request(Method::POST, url).json(&body)).await
    }

    /// Retire a `retiring` generation; `force` revokes what it still vouches for first.
    pub async fn retire_generation(
        &self,
        cluster: &str,
        kind: &str,
        generation: i64,
        force: bool,
    ) -> Result<Authority, ApiError> {
        let generation = generation.to_string();
        let url =
            self.url(&["v1", "clusters", cluster, "authorities", kind, "generations", &generation, "retire"]);
        self.json(self.request(Method::POST, url).json(&serde_json::json!({ "force": force }))).await
    }

    pub async fn ca_bundle(&self, cluster: &str, kind: &str) -> Result<String, ApiError> {
        let url = self.url(&["v1", "clusters", cluster, "authorities", kind, "ca.pem"]);
        self.text(self.request(Method::GET, url)).await
    }

    /// `client-ca.pem` or `client-crl.pem`; without `kinds` the server's default kinds.
    pub async fn client_bundle(
        &self,
        cluster: &str,
        file: &str,
        kinds: Option<&[String]>,
    ) -> Result<String, ApiError> {
        let mut url = self.url(&["v1", "clusters", cluster, file]);
        if let Some(kinds) = kinds {
            url.query_pairs_mut().append_pair("kinds", &kinds.join(","));
        }
        self.text(self.request(Method::GET, url)).await
    }

    // --- kubeconfigs and certificates ---

    pub async fn issue_kubeconfig(
        &self,
        cluster: &str,
        body: &NewKubeconfig<'_>,
    ) -> Result<Kubeconfig, ApiError> {
        let url = self.url(&["v1", "clusters", cluster, "kubeconfigs"]);
        self.json(self.request(Method::POST, url).json(body)).await
    }

    pub async fn list_profiles(&self) -> Result<Vec<Profile>, ApiError> {
        self.json(self.request(Method::GET, self.url(&["v1", "profiles"]))).await
    }

    pub async fn issue_component_certificate(
        &self,
        cluster: &str,
        body: &NewComponentCertificate<'_>,
    ) -> Result<ComponentCertificate, ApiError> {
        let url = self.url(&["v1", "clusters", cluster, "certificates"]);
        self.json(self.request(Method::POST, url).json(body)).await
    }

    pub async fn get_certificate(&self, cluster: &str, serial: &str) -> Result<Certificate, ApiError> {
        let url = self.url(&["v1", "clusters", cluster, "certificates", serial]);
        self.json(self.request(Method::GET, url)).await
    }

    pub async fn revoke_certificate(
        &self,
        cluster: &str,
        serial: &str,
        reason: &str,
    ) -> Result<Certificate, ApiError> {
        let url = self.url(&["v1", "clusters", cluster, "certificates", serial, "revoke"]);
        self.json(self.request(Method::POST, url).json(&serde_json::json!({ "reason": reason }))).await
    }
}

/// TLS to kca: rustls with aws-lc-rs (the one provider compiled in), named rather than taken
/// from the process default.
fn tls_config(ca_pem: Option<&str>) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let config = match ca_pem {
        // Only the given CA: a private kca is never vouched for by a public root.
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| format!("ca_cert_pem is not a PEM certificate bundle: {e}"))?;
                roots.add(cert).map_err(|e| format!("ca_cert_pem holds an unusable certificate: {e}"))?;
            }
            if roots.is_empty() {
                return Err("ca_cert_pem holds no PEM certificate".into());
            }
            builder.with_root_certificates(roots)
        }
        None => {
            let verifier = rustls_platform_verifier::Verifier::new(provider)
                .map_err(|e| format!("loading the system's trusted roots: {e}"))?;
            builder.dangerous().with_custom_certificate_verifier(Arc::new(verifier))
        }
    };
    Ok(config.with_no_client_auth())
}

/// An error and its causes on one line: reqwest's own message alone ("error sending request")
/// hides the reason (refused, certificate unknown, timeout).
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
