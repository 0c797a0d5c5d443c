//! The HTTP client of the commands that talk to a kca server: TLS trust (system roots plus the
//! configured CA file), bearer token, and `application/problem+json` answers turned into errors
//! that read as the server's `detail`.

use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE, ETAG, HeaderMap, IF_MATCH, IF_NONE_MATCH};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::settings::{Settings, Token};

/// An RFC 9457 problem document as kca answers it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_uri: Option<String>,
    pub title: Option<String>,
    pub status: Option<u16>,
    pub detail: Option<String>,
    pub field: Option<String>,
    pub rule: Option<String>,
    pub valid_values: Option<Vec<String>>,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.detail, &self.title) {
            (Some(detail), _) => f.write_str(detail)?,
            (None, Some(title)) => f.write_str(title)?,
            (None, None) => write!(f, "the server answered {}", self.status.unwrap_or_default())?,
        }
        let mut notes = Vec::new();
        if let Some(field) = &self.field {
            notes.push(format!("field {field}"));
        }
        if let Some(rule) = &self.rule {
            notes.push(format!("policy rule {rule}"));
        }
        // Shown unless the detail already lists them.
        let listed = |values: &Vec<String>| {
            self.detail.as_deref().is_some_and(|d| values.iter().all(|v| d.contains(v.as_str())))
        };
        if let Some(values) = self.valid_values.as_ref().filter(|v| !v.is_empty() && !listed(v)) {
            notes.push(format!("valid: {}", values.join(", ")));
        }
        if !notes.is_empty() {
            write!(f, " ({})", notes.join("; "))?;
        }
        Ok(())
    }
}

/// Why a call failed. No variant carries the token or a request body.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server refused, with a problem document.
    #[error("{problem}")]
    Problem { status: StatusCode, problem: Box<Problem> },
    /// The server (or something in front of it) failed without a problem document.
    #[error("the server answered {status}{hint}")]
    Status {
        status: StatusCode,
        /// Empty, or `": "` and the start of a plain-text body.
        hint: String,
    },
    #[error("talking to the kca server failed")]
    Transport(#[source] reqwest::Error),
    #[error(
        "the kca server's certificate is not trusted: pass --cacert FILE or set KCA_CACERT to the CA \
         that issued it"
    )]
    Untrusted(#[source] reqwest::Error),
    #[error("the server's answer is not what kca expected: {0}")]
    Unexpected(String),
    #[error("no API token: set KCA_TOKEN, pass --token-file, or put `token:` in the config file")]
    NoToken,
    #[error("reading the CA file {path}: {detail}")]
    CaFile { path: String, detail: String },
}

impl ClientError {
    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Problem { status, .. } | ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A raw answer: status, ETag and body. `304 Not Modified` is a success here.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub status: StatusCode,
    pub etag: Option<String>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// A client for one kca server.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: url::Url,
    token: Option<Token>,
}

impl Client {
    pub fn new(settings: &Settings) -> Result<Self, ClientError> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("kca/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60));
        if let Some(path) = &settings.cacert {
            let ca_error = |detail: String| ClientError::CaFile { path: path.display().to_string(), detail };
            let pem = std::fs::read(path).map_err(|e| ca_error(e.to_string()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca_error(e.to_string()))?;
            if certs.is_empty() {
                return Err(ca_error("no PEM certificate in it".into()));
            }
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder.build().map_err(ClientError::Transport)?;
        Ok(Self { http, base: settings.url.clone(), token: settings.token.clone() })
    }

    pub fn base_url(&self) -> &url::Url {
        &self.base
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// The URL of `segments` under the base URL, each percent-encoded as one path segment.
    pub fn url(&self, segments: &[&str]) -> url::Url {
        let mut url = self.base.clone();
        {
            let mut path = url.path_segments_mut().expect("checked: the base URL is a base");
            path.pop_if_empty();
            path.extend(segments);
        }
        url
    }

    /// A request carrying the token, or failing with [`ClientError::NoToken`] when there is none.
    pub fn authorized(&self, method: Method, segments: &[&str]) -> Result<RequestBuilder, ClientError> {
        let token = self.token.as_ref().ok_or(ClientError::NoToken)?;
        Ok(self.http.request(method, self.url(segments)).bearer_auth(token.expose()))
    }

    /// A request carrying the token when there is one (for endpoints that may be public).
    pub fn maybe_authorized(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        let request = self.http.request(method, self.url(segments));
        match &self.token {
            Some(token) => request.bearer_auth(token.expose()),
            None => request,
        }
    }

    /// Send, and turn any non-2xx answer into an error.
    pub async fn send(&self, request: RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let response = request.send().await.map_err(transport_error)?;
        if response.status().is_success() || response.status() == StatusCode::NOT_MODIFIED {
            Ok(response)
        } else {
            Err(error_of(response).await)
        }
    }

    /// Send and parse a JSON answer.
    pub async fn json<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T, ClientError> {
        let response = self.send(request.header(ACCEPT, "application/json")).await?;
        let body = response.bytes().await.map_err(ClientError::Transport)?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Unexpected(e.to_string()))
    }

    /// GET a JSON document with the token.
    pub async fn get_json<T: DeserializeOwned>(&self, segments: &[&str]) -> Result<T, ClientError> {
        self.json(self.authorized(Method::GET, segments)?).await
    }

    /// POST a JSON body with the token and parse the JSON answer.
    pub async fn post_json<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        body: &serde_json::Value,
    ) -> Result<T, ClientError> {
        self.json(self.authorized(Method::POST, segments)?.json(body)).await
    }

    /// GET a JSON document with the token, and its `ETag` (the version to send as `If-Match`).
    pub async fn get_json_versioned<T: DeserializeOwned>(
        &self,
        segments: &[&str],
    ) -> Result<(T, Option<String>), ClientError> {
        let response =
            self.send(self.authorized(Method::GET, segments)?.header(ACCEPT, "application/json")).await?;
        let etag = response.headers().get(ETAG).and_then(|v| v.to_str().ok()).map(str::to_string);
        let body = response.bytes().await.map_err(ClientError::Transport)?;
        let value = serde_json::from_slice(&body).map_err(|e| ClientError::Unexpected(e.to_string()))?;
        Ok((value, etag))
    }

    /// PATCH a JSON merge patch with the token, only if the resource is still at `if_match`.
    pub async fn patch_json<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        body: &serde_json::Value,
        if_match: Option<&str>,
    ) -> Result<T, ClientError> {
        let mut request = self.authorized(Method::PATCH, segments)?.json(body);
        if let Some(etag) = if_match {
            request = request.header(IF_MATCH, etag);
        }
        self.json(request).await
    }

    /// DELETE with the token; any 2xx is success.
    pub async fn delete(&self, segments: &[&str]) -> Result<(), ClientError> {
        self.send(self.authorized(Method::DELETE, segments)?).await.map(drop)
    }

    /// Every item of a paginated list (`{items, next_cursor}`), following `next_cursor`.
    pub async fn list_all(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<Vec<serde_json::Value>, ClientError> {
        #[derive(Deserialize)]
        struct Page {
            items: Vec<serde_json::Value>,
            next_cursor: Option<String>,
        }
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut request = self.authorized(Method::GET, segments)?.query(query);
            if let Some(cursor) = &cursor {
                request = request.query(&[("cursor", cursor)]);
            }
            let page: Page = self.json(request).await?;
            items.extend(page.items);
            match page.next_cursor {
                Some(next) if cursor.as_ref() != Some(&next) => cursor = Some(next),
                _ => return Ok(items),
            }
        }
    }

    /// GET raw bytes, conditionally: with `if_none_match`, an unchanged document answers
    /// `304 Not Modified` with an empty body. Sends the token when there is one.
    pub async fn fetch(
        &self,
        segments: &[&str],
        if_none_match: Option<&str>,
    ) -> Result<Fetched, ClientError> {
        let mut request = self.maybe_authorized(Method::GET, segments);
        if let Some(etag) = if_none_match {
            request = request.header(IF_NONE_MATCH, etag);
        }
        let response = self.send(request).await?;
        let status = response.status();
        let header = |headers: &HeaderMap, name| {
            headers.get(name).and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok()).map(str::to_string)
        };
        let etag = header(response.headers(), ETAG);
        let content_type = header(response.headers(), CONTENT_TYPE);
        let body = response.bytes().await.map_err(ClientError::Transport)?.to_vec();
        Ok(Fetched { status, etag, content_type, body })
    }
}

/// A failure to talk to the server; an untrusted certificate gets a hint about the CA file.
fn transport_error(err: reqwest::Error) -> ClientError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(cause) = source {
        if cause.to_string().contains("invalid peer certificate") {
            return ClientError::Untrusted(err);
        }
        source = cause.source();
    }
    ClientError::Transport(err)
}

/// The error of a non-2xx answer: its problem document, else its status and a short hint.
async fn error_of(response: reqwest::Response) -> ClientError {
    let status = response.status();
    let is_problem =
        response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|ct| {
            ct.starts_with("application/problem+json") || ct.starts_with("application/json")
        });
    let is_text = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/plain"));
    let body = response.bytes().await.unwrap_or_default();
    if is_problem
        && let Ok(problem) = serde_json::from_slice::<Problem>(&body)
        && (problem.detail.is_some() || problem.title.is_some())
    {
        return ClientError::Problem { status, problem: Box::new(problem) };
    }
    let hint = if is_text {
        let text: String = String::from_utf8_lossy(&body).trim().chars().take(200).collect();
        if text.is_empty() { text } else { format!(": {text}") }
    } else {
        String::new()
    };
    ClientError::Status { status, hint }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_reads_as_its_detail_with_its_rule() {
        let problem: Problem = serde_json::from_str(
            r#"{"type":"urn:kca:problem:policy-violation","title":"Forbidden","status":403,
                "detail":"the TTL may be at most 7200 seconds in this cluster",
                "field":"ttl_seconds","rule":"max_ttl_seconds"}"#,
        )
        .unwrap();
        assert_eq!(
            problem.to_string(),
            "the TTL may be at most 7200 seconds in this cluster (field ttl_seconds; policy rule max_ttl_seconds)"
        );
        let listed: Problem = serde_json::from_str(
            r#"{"detail":"no authority kind \"x\"; valid kinds: etcd, kubelet","valid_values":["etcd","kubelet"]}"#,
        )
        .unwrap();
        assert_eq!(listed.to_string(), r#"no authority kind "x"; valid kinds: etcd, kubelet"#);
        let bare: Problem = serde_json::from_str(r#"{"title":"Not Found","status":404}"#).unwrap();
        assert_eq!(bare.to_string(), "Not Found");
    }

    #[test]
    fn path_segments_are_encoded_under_the_base_path() {
        let settings = Settings {
            url: url::Url::parse("https://kca.example.com/prefix/").unwrap(),
            cacert: None,
            token: None,
            explicit_config: None,
            session_file: None,
        };
        let client = Client::new(&settings).unwrap();
        assert_eq!(
            client.url(&["v1", "clusters", "a/b"]).as_str(),
            "https://kca.example.com/prefix/v1/clusters/a%2Fb"
        );
        assert!(matches!(client.authorized(Method::GET, &["v1"]), Err(ClientError::NoToken)));
    }
}
