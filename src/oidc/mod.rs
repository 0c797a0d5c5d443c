//! Single sign-on: kca as an OpenID Connect relying party (the only OpenID client: the CLI talks
//! to kca alone). Discovery, the provider's keys (refetched, at most every few seconds, when a
//! token names a key kca has not seen), the authorization-code grant with PKCE (S256), `state`
//! and `nonce`, and the device authorization grant (RFC 8628) that `kca login` uses.
//!
//! The provider is reached lazily: kca starts, and everything but sign-in keeps working, while
//! the provider is down.

pub mod id_token;
pub mod login;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use parking_lot::{Mutex, RwLock};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::config::OidcArgs;
use id_token::{Expected, IdClaims, IdTokenError};

/// How long a discovery document is trusted before it is read again.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// The key set is refetched for an unknown key at most this often.
const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(10);
/// Longest wait for the provider on any call.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read from the provider.
const MAX_PROVIDER_ANSWER: usize = 256 * 1024;

/// Single sign-on settings, checked at start-up.
#[derive(Clone)]
pub struct OidcSettings {
    pub issuer: String,
    pub client_id: String,
    client_secret: Option<Zeroizing<String>>,
    pub username_claim: String,
    pub groups_claim: String,
    pub scopes: String,
    pub username_prefix: String,
    pub extra_ca_pem: Option<Vec<u8>>,
    /// kca's external base URL, without a trailing slash.
    pub public_url: Option<url::Url>,
    pub session_ttl: Duration,
    pub session_max: Duration,
}

impl std::fmt::Debug for OidcSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcSettings")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "***"))
            .field("username_claim", &self.username_claim)
            .field("groups_claim", &self.groups_claim)
            .field("username_prefix", &self.username_prefix)
            .field("public_url", &self.public_url.as_ref().map(url::Url::as_str))
            .finish_non_exhaustive()
    }
}

impl OidcSettings {
    /// The settings from `KCA_OIDC_*`, or `None` when single sign-on is off. Fails with a message
    /// that says what to set.
    pub fn from_args(args: &OidcArgs) -> Result<Option<Self>, String> {
        let Some(issuer) = args.issuer.as_deref().map(str::trim).filter(|i| !i.is_empty()) else {
            return Ok(None);
        };
        let parsed = url::Url::parse(issuer).map_err(|e| format!("KCA_OIDC_ISSUER {issuer:?}: {e}"))?;
        if parsed.scheme() != "https" {
            return Err(format!("KCA_OIDC_ISSUER {issuer:?} must be an https URL"));
        }
        let client_id =
            args.client_id.clone().filter(|c| !c.trim().is_empty()).ok_or(
                "KCA_OIDC_ISSUER is set: set KCA_OIDC_CLIENT_ID too (kca's client id at the provider)",
            )?;
        let client_secret = match &args.client_secret_file {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    format!("cannot read KCA_OIDC_CLIENT_SECRET_FILE {}: {e}", path.display())
                })?;
                let secret = text.trim().to_string();
                if secret.is_empty() {
                    return Err(format!("KCA_OIDC_CLIENT_SECRET_FILE {} is empty", path.display()));
                }
                Some(Zeroizing::new(secret))
            }
        };
        let extra_ca_pem = match &args.extra_ca_file {
            None => None,
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("cannot read KCA_OIDC_EXTRA_CA_FILE {}: {e}", path.display()))?;
                reqwest::Certificate::from_pem_bundle(&pem)
                    .map_err(|e| format!("KCA_OIDC_EXTRA_CA_FILE {}: {e}", path.display()))?;
                Some(pem)
            }
        };
        let prefix = args.username_prefix.clone();
        if crate::names::is_privileged_user(&prefix) || prefix.chars().any(char::is_control) {
            return Err(format!(
                "KCA_OIDC_USERNAME_PREFIX {prefix:?} would make privileged or unprintable user names"
            ));
        }
        let public_url = match args.public_url.as_deref().map(str::trim).filter(|u| !u.is_empty()) {
            None => None,
            Some(text) => {
                let url = url::Url::parse(text.trim_end_matches('/'))
                    .map_err(|e| format!("KCA_PUBLIC_URL {text:?}: {e}"))?;
                if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
                    return Err(format!("KCA_PUBLIC_URL {text:?} must be an http(s) URL"));
                }
                Some(url)
            }
        };
        Ok(Some(Self {
            issuer: issuer.to_string(),
            client_id,
            client_secret,
            username_claim: args.username_claim.clone(),
            groups_claim: args.groups_claim.clone(),
            scopes: scopes(&args.scopes),
            username_prefix: prefix,
            extra_ca_pem,
            public_url,
            session_ttl: args.session_ttl,
            session_max: args.session_max.max(args.session_ttl),
        }))
    }
}

/// Why a sign-in failed. Messages name no token, code or secret.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The provider cannot be reached or answered an error of its own.
    #[error("the identity provider is unavailable: {0}")]
    Unavailable(String),
    /// The provider refused (an expired or reused code, a denied device request).
    #[error("the identity provider refused: {0}")]
    Refused(String),
    #[error(transparent)]
    IdToken(#[from] IdTokenError),
    /// What the provider asserts cannot be used (no username claim, a name kca refuses).
    #[error("{0}")]
    Identity(String),
    /// The provider does not offer the device authorization grant.
    #[error("the identity provider offers no device authorization grant")]
    NoDeviceGrant,
}

/// The parts of the discovery document kca uses.
#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub device_authorization_endpoint: Option<String>,
}

/// The answer of the token endpoint.
#[derive(Deserialize)]
struct TokenAnswer {
    id_token: Option<String>,
}

/// The answer of the device authorization endpoint (RFC 8628 §3.2).
#[derive(Debug, Clone, Deserialize)]
pub struct DeviceAuthorization {
    pub device_code: String,
    pub user_code: String,
    pub verification_uri: String,
    #[serde(default)]
    pub verification_uri_complete: Option<String>,
    pub expires_in: u64,
    #[serde(default)]
    pub interval: Option<u64>,
}

/// What polling the token endpoint with a device code answered.
pub enum DevicePoll {
    Pending { slow_down: bool },
    Done(IdClaims),
}

/// The relying party: a client of one provider.
pub struct Oidc {
    pub settings: OidcSettings,
    http: reqwest::Client,
    discovery: RwLock<Option<(Arc<Discovery>, Instant)>>,
    keys: RwLock<Arc<JwkSet>>,
    keys_fetched: Mutex<Option<Instant>>,
    /// Sign-ins completed here, by their state, until they would have expired: a replayed
    /// callback is refused even before the provider refuses the reused code.
    consumed: Mutex<HashMap<String, i64>>,
}

impl Oidc {
    pub fn new(settings: OidcSettings) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder()
            .timeout(PROVIDER_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            // The provider's endpoints are used as published; a redirect is not followed.
            .redirect(reqwest::redirect::Policy::none())
            .https_only(true);
        if let Some(pem) = &settings.extra_ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| e.to_string())?;
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder.build().map_err(|e| format!("the identity provider's HTTP client: {e}"))?;
        Ok(Self {
            settings,
            http,
            discovery: RwLock::new(None),
            keys: RwLock::new(Arc::new(JwkSet { keys: Vec::new() })),
            keys_fetched: Mutex::new(None),
            consumed: Mutex::new(HashMap::new()),
        })
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str, what: &str) -> Result<T, OidcError> {
        let response = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| OidcError::Unavailable(format!("reading its {what}: {}", describe(&e))))?;
        read_json(response, what).await
    }

    fn cached_discovery(&self) -> Option<Arc<Discovery>> {
        let cached = self.discovery.read();
        let (doc, at) = cached.as_ref()?;
        (at.elapsed() < DISCOVERY_TTL).then(|| Arc::clone(doc))
    }

    fn current_keys(&self) -> Arc<JwkSet> {
        Arc::clone(&self.keys.read())
    }

    /// The provider's discovery document, read again after an hour (or after a failure).
    pub async fn discovery(&self) -> Result<Arc<Discovery>, OidcError> {
        match self.cached_discovery() {
            Some(doc) => Ok(doc),
            None => self.fresh_discovery().await,
        }
    }

    /// The discovery document read now: a sign-in starts only when the provider answers, so that
    /// a provider that is down is said so on kca's page rather than as a browser error.
    pub async fn fresh_discovery(&self) -> Result<Arc<Discovery>, OidcError> {
        let url = format!("{}/.well-known/openid-configuration", self.settings.issuer.trim_end_matches('/'));
        let doc: Discovery = self.get_json(&url, "discovery document").await?;
        if doc.issuer != self.settings.issuer {
            return Err(OidcError::Unavailable(format!(
                "its discovery document names the issuer {:?}, not {:?} (KCA_OIDC_ISSUER must match it exactly)",
                doc.issuer, self.settings.issuer
            )));
        }
        let doc = Arc::new(doc);
        *self.discovery.write() = Some((Arc::clone(&doc), Instant::now()));
        Ok(doc)
    }

    fn may_refetch_keys(&self) -> bool {
        let mut fetched = self.keys_fetched.lock();
        if fetched.is_some_and(|at| at.elapsed() < JWKS_REFETCH_INTERVAL) {
            return false;
        }
        *fetched = Some(Instant::now());
        true
    }

    /// Fetch the key set, unless it was fetched less than [`JWKS_REFETCH_INTERVAL`] ago.
    async fn refresh_keys(&self) -> Result<bool, OidcError> {
        if !self.may_refetch_keys() {
            return Ok(false);
        }
        let discovery = self.discovery().await?;
        let keys: JwkSet = match self.get_json(&discovery.jwks_uri, "signing keys").await {
            Ok(keys) => keys,
            Err(err) => {
                // A failed fetch does not hold the next one back.
                *self.keys_fetched.lock() = None;
                return Err(err);
            }
        };
        tracing::info!(oidc.keys = keys.keys.len(), "identity provider signing keys fetched");
        *self.keys.write() = Arc::new(keys);
        Ok(true)
    }

    /// Check an ID token, fetching the provider's keys again once when it names an unknown key.
    pub async fn validate_id_token(&self, token: &str, nonce: Option<&str>) -> Result<IdClaims, OidcError> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let expected =
            Expected { issuer: &self.settings.issuer, client_id: &self.settings.client_id, nonce, now };
        let keys = self.current_keys();
        match id_token::validate(token, &keys, &expected) {
            Err(IdTokenError::UnknownKey) => {
                if self.refresh_keys().await? {
                    let keys = self.current_keys();
                    Ok(id_token::validate(token, &keys, &expected)?)
                } else {
                    Err(IdTokenError::UnknownKey.into())
                }
            }
            other => Ok(other?),
        }
    }

    /// Mark a sign-in's state used; `false` when it already was (a replay).
    pub fn consume(&self, state: &str, expires_at: i64, now: i64) -> bool {
        let mut consumed = self.consumed.lock();
        consumed.retain(|_, exp| *exp > now);
        consumed.insert(state.to_string(), expires_at).is_none()
    }

    async fn post_token_endpoint(&self, form: &[(&str, &str)]) -> Result<reqwest::Response, OidcError> {
        let discovery = self.discovery().await?;
        let mut body = form_body(form);
        let mut request = self
            .http
            .post(&discovery.token_endpoint)
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(reqwest::header::ACCEPT, "application/json");
        request = match &self.settings.client_secret {
            Some(secret) => {
                request.basic_auth(form_encode(&self.settings.client_id), Some(form_encode(secret)))
            }
            None => request,
        };
        if self.settings.client_secret.is_none() {
            body.push_str("&client_id=");
            body.push_str(&form_encode(&self.settings.client_id));
        }
        request
            .body(body)
            .send()
            .await
            .map_err(|e| OidcError::Unavailable(format!("calling its token endpoint: {}", describe(&e))))
    }

    /// Exchange an authorization code (with its PKCE verifier) and check the ID token.
    pub async fn redeem_code(
        &self,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
        nonce: &str,
    ) -> Result<IdClaims, OidcError> {
        let response = self
            .post_token_endpoint(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("code_verifier", verifier),
                ("redirect_uri", redirect_uri),
            ])
            .await?;
        let answer: TokenAnswer = read_json(response, "token answer").await?;
        let id_token = answer.id_token.ok_or_else(|| {
            OidcError::Refused("the token answer has no ID token (is the openid scope allowed?)".into())
        })?;
        self.validate_id_token(&id_token, Some(nonce)).await
    }

    /// Start a device authorization (RFC 8628) at the provider.
    pub async fn start_device(&self) -> Result<DeviceAuthorization, OidcError> {
        let discovery = self.discovery().await?;
        let endpoint = discovery.device_authorization_endpoint.as_deref().ok_or(OidcError::NoDeviceGrant)?;
        let scopes = self.scopes();
        let mut pairs = vec![("scope", scopes.as_str())];
        let mut request = self
            .http
            .post(endpoint)
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(reqwest::header::ACCEPT, "application/json");
        match &self.settings.client_secret {
            Some(secret) => {
                request =
                    request.basic_auth(form_encode(&self.settings.client_id), Some(form_encode(secret)));
            }
            None => pairs.push(("client_id", &self.settings.client_id)),
        }
        let response =
            request.body(form_body(&pairs)).send().await.map_err(|e| {
                OidcError::Unavailable(format!("starting a device sign-in: {}", describe(&e)))
            })?;
        read_json(response, "device authorization").await
    }

    /// Ask the token endpoint whether the person approved the device request.
    pub async fn poll_device(&self, device_code: &str) -> Result<DevicePoll, OidcError> {
        let response = self
            .post_token_endpoint(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", device_code),
            ])
            .await?;
        if response.status() == reqwest::StatusCode::BAD_REQUEST {
            #[derive(Deserialize)]
            struct Problem {
                error: String,
            }
            let problem: Problem = read_json_any_status(response, "token answer").await?;
            return match problem.error.as_str() {
                "authorization_pending" => Ok(DevicePoll::Pending { slow_down: false }),
                "slow_down" => Ok(DevicePoll::Pending { slow_down: true }),
                "access_denied" => Err(OidcError::Refused("the sign-in was denied".into())),
                "expired_token" => Err(OidcError::Refused("the sign-in request expired; start again".into())),
                other => Err(OidcError::Refused(format!("the provider answered {}", printable(other)))),
            };
        }
        let answer: TokenAnswer = read_json(response, "token answer").await?;
        let id_token =
            answer.id_token.ok_or_else(|| OidcError::Refused("the token answer has no ID token".into()))?;
        Ok(DevicePoll::Done(self.validate_id_token(&id_token, None).await?))
    }

    /// The scopes kca asks for.
    pub fn scopes(&self) -> String {
        self.settings.scopes.clone()
    }
}

/// The scopes to ask for: those configured, `openid` first and always.
fn scopes(configured: &str) -> String {
    let mut scopes = vec!["openid"];
    scopes
        .extend(configured.split_whitespace().filter(|s| *s != "openid" && !s.chars().any(char::is_control)));
    scopes.join(" ")
}

/// An `application/x-www-form-urlencoded` body.
fn form_body(pairs: &[(&str, &str)]) -> String {
    let mut body = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs {
        body.append_pair(name, value);
    }
    body.finish()
}

/// `application/x-www-form-urlencoded` of one value (RFC 6749 §2.3.1 encodes client credentials
/// so before Basic authentication).
fn form_encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// A provider's string, safe to show: printable, short.
fn printable(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(100).collect()
}

/// What went wrong reaching the provider, without its URL's query (none is sent) or body.
fn describe(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        "it did not answer in time".into()
    } else if err.is_connect() {
        "it cannot be reached".into()
    } else {
        let mut text = err.to_string();
        let mut source = std::error::Error::source(err);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        printable(&text)
    }
}

async fn read_json<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
    what: &str,
) -> Result<T, OidcError> {
    let status = response.status();
    if status.is_server_error() {
        return Err(OidcError::Unavailable(format!("its {what} answered {status}")));
    }
    if !status.is_success() {
        #[derive(Deserialize)]
        struct Problem {
            error: Option<String>,
        }
        let body = limited_body(response, what).await?;
        let error = serde_json::from_slice::<Problem>(&body).ok().and_then(|p| p.error).unwrap_or_default();
        return Err(OidcError::Refused(format!("its {what} answered {status} {}", printable(&error))));
    }
    read_json_any_status(response, what).await
}

async fn read_json_any_status<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
    what: &str,
) -> Result<T, OidcError> {
    let body = limited_body(response, what).await?;
    serde_json::from_slice(&body)
        .map_err(|_| OidcError::Unavailable(format!("its {what} is not the JSON expected")))
}

async fn limited_body(mut response: reqwest::Response, what: &str) -> Result<Vec<u8>, OidcError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| OidcError::Unavailable(format!("reading its {what}: {}", describe(&e))))?
    {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_PROVIDER_ANSWER {
            return Err(OidcError::Unavailable(format!("its {what} is too large")));
        }
    }
    Ok(body)
}

/// `n` random bytes, base64url: states, nonces and PKCE verifiers.
pub fn random_text(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut bytes).expect("the system random generator works");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The PKCE S256 challenge of a verifier (RFC 7636 §4.2).
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pkce_challenge_is_rfc_7636s() {
        // RFC 7636, appendix B.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert_ne!(random_text(32), random_text(32));
    }

    #[test]
    fn openid_is_always_asked_for() {
        assert_eq!(scopes("email groups"), "openid email groups");
        assert_eq!(scopes("openid  profile openid"), "openid profile");
    }

    #[test]
    fn settings_refuse_what_would_be_unsafe() {
        let args = |issuer: &str| OidcArgs {
            issuer: Some(issuer.into()),
            client_id: Some("kca".into()),
            ..OidcArgs::default()
        };
        assert!(OidcSettings::from_args(&OidcArgs::default()).unwrap().is_none());
        assert!(OidcSettings::from_args(&args("https://idp.example")).unwrap().is_some());
        assert!(OidcSettings::from_args(&args("http://idp.example")).is_err());
        let no_client = OidcArgs { client_id: None, ..args("https://idp.example") };
        assert!(OidcSettings::from_args(&no_client).unwrap_err().contains("KCA_OIDC_CLIENT_ID"));
        let privileged = OidcArgs { username_prefix: "system:".into(), ..args("https://idp.example") };
        assert!(OidcSettings::from_args(&privileged).is_err());
    }
}
