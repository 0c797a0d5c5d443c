//! The one error type of the HTTP API, answered as `application/problem+json` (RFC 9457).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::crl_publisher::PublishError;
use crate::issuance::Refusal;
use crate::keyring::KeyringError;
use crate::names::FieldError;
use crate::pki::PkiError;
use crate::store::StoreError;

/// An RFC 9457 problem document. kca adds `field` (the request field at fault), `rule` (the policy
/// rule refused) and `valid_values` where they help a client fix its request.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// A URN naming the kind of problem, e.g. `urn:kca:problem:policy-violation`.
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_values: Option<Vec<String>>,
}

/// Every failure a handler can answer with. Boxed: errors are rare, `Result`s are everywhere.
#[derive(Debug, Clone)]
pub struct ApiError(Box<ErrorParts>);

#[derive(Debug, Clone)]
struct ErrorParts {
    status: StatusCode,
    slug: &'static str,
    detail: String,
    field: Option<String>,
    rule: Option<String>,
    valid_values: Option<Vec<String>>,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, slug: &'static str, detail: impl Into<String>) -> Self {
        Self(Box::new(ErrorParts {
            status,
            slug,
            detail: detail.into(),
            field: None,
            rule: None,
            valid_values: None,
            retry_after: None,
        }))
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", detail)
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", detail)
    }

    /// `If-Match` named a version that is no longer current (412).
    pub fn precondition_failed(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::PRECONDITION_FAILED, "precondition-failed", detail)
    }

    /// A request value that is malformed or out of bounds (422), naming the field.
    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        let mut err = Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-value", detail);
        err.0.field = Some(field.into());
        err
    }

    /// A well-formed request the cluster policy or the token refuses (403), naming the rule.
    pub fn policy(rule: impl Into<String>, field: impl Into<String>, detail: impl Into<String>) -> Self {
        let mut err = Self::new(StatusCode::FORBIDDEN, "policy-violation", detail);
        err.0.rule = Some(rule.into());
        err.0.field = Some(field.into());
        err
    }

    pub fn too_many_requests(retry_after: u64) -> Self {
        let mut err =
            Self::new(StatusCode::TOO_MANY_REQUESTS, "rate-limited", "too many issuances; retry later");
        err.0.retry_after = Some(retry_after);
        err
    }

    pub fn unavailable(detail: impl Into<String>, retry_after: u64) -> Self {
        let mut err = Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail);
        err.0.retry_after = Some(retry_after);
        err
    }

    /// Log the cause once, here, and answer a generic 500 that reveals nothing.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "an internal error occurred; it has been logged",
        )
    }

    /// A 500 whose cause was logged where it happened (once, however many requests it failed).
    pub fn internal_reported() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "an internal error occurred; it has been logged",
        )
    }

    /// Map a framework rejection (body, path, query) to the same shape, keeping its status.
    pub fn from_rejection(status: StatusCode, detail: String) -> Self {
        let slug = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "payload-too-large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported-media-type",
            StatusCode::UNPROCESSABLE_ENTITY => "invalid-value",
            StatusCode::NOT_FOUND => "not-found",
            StatusCode::METHOD_NOT_ALLOWED => "method-not-allowed",
            s if s.is_server_error() => return Self::internal(detail),
            _ => "bad-request",
        };
        // axum reports malformed JSON as 400 and well-formed JSON of the wrong shape (unknown
        // field, wrong type) as 422; both are bad requests to a client.
        let status =
            if status == StatusCode::UNPROCESSABLE_ENTITY { StatusCode::BAD_REQUEST } else { status };
        Self::new(status, slug, detail)
    }

    pub fn with_valid_values(mut self, values: Vec<String>) -> Self {
        self.0.valid_values = Some(values);
        self
    }

    pub fn status(&self) -> StatusCode {
        self.0.status
    }

    pub fn problem(&self) -> Problem {
        let parts = &self.0;
        Problem {
            type_uri: format!("urn:kca:problem:{}", parts.slug),
            title: parts.status.canonical_reason().unwrap_or("Error").to_string(),
            status: parts.status.as_u16(),
            detail: parts.detail.clone(),
            field: parts.field.clone(),
            rule: parts.rule.clone(),
            valid_values: parts.valid_values.clone(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.problem()).expect("a problem always serializes");
        let mut response = (self.0.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(seconds) = self.0.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.0.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"kca\""));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => ApiError::not_found("not found"),
            StoreError::Conflict(what) => {
                ApiError::conflict(format!("conflicts with an existing record ({what})"))
            }
            StoreError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "database unavailable");
                ApiError::unavailable("the database is unavailable; retry shortly", 5)
            }
            StoreError::Pki(pki) => pki.into(),
            other => ApiError::internal(other),
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Invalid { field, detail } => ApiError::invalid(field, detail),
            Refusal::Policy { rule, field, detail } => ApiError::policy(rule, field, detail),
        }
    }
}

impl From<FieldError> for ApiError {
    fn from(err: FieldError) -> Self {
        ApiError::invalid(err.field, err.detail)
    }
}

impl From<PkiError> for ApiError {
    fn from(err: PkiError) -> Self {
        match &err {
            PkiError::InvalidCsr(detail) => ApiError::invalid("csr_pem", detail.clone()),
            PkiError::ImportRefused { field, detail } => ApiError::invalid(*field, detail.clone()),
            PkiError::OutlivesCa(_) => {
                ApiError::invalid("ttl_seconds", format!("{err}; ask for a shorter TTL or rotate the CA"))
            }
            // The token logged its failure (rate-limited); the client learns what is wrong.
            PkiError::KeyUnavailable(_) => {
                ApiError::unavailable(format!("{err}; nothing was signed, retry later"), 30)
            }
            _ => ApiError::internal(err),
        }
    }
}

/// A token refused (401), or a failure to check it.
impl From<crate::token::TokenError> for ApiError {
    fn from(err: crate::token::TokenError) -> Self {
        use crate::token::TokenError;
        match err {
            TokenError::Invalid(_) | TokenError::UnknownKey => ApiError::unauthorized(err.to_string()),
            TokenError::Store(store) => store.into(),
            TokenError::Keyring(keyring) => keyring.into(),
        }
    }
}

impl From<PublishError> for ApiError {
    fn from(err: PublishError) -> Self {
        match err {
            PublishError::Store(store) => store.into(),
            PublishError::Keyring(keyring) => keyring.into(),
        }
    }
}

impl From<KeyringError> for ApiError {
    fn from(err: KeyringError) -> Self {
        match err {
            KeyringError::Store(store) => store.into(),
            KeyringError::Pki(pki) => pki.into(),
            KeyringError::Token(_) => {
                ApiError::unavailable(format!("{err}; nothing was signed, retry later"), 30)
            }
            // A CA whose key is in a token, on a server started without the token's settings.
            KeyringError::NoToken => ApiError::unavailable(format!("{err}; nothing was signed"), 30),
            other => ApiError::internal(other),
        }
    }
}

/// The problem responses an endpoint may give, for its OpenAPI description.
#[derive(utoipa::IntoResponses)]
pub enum ProblemResponses {
    #[response(status = 400, description = "Malformed request", content_type = "application/problem+json")]
    BadRequest(Problem),
    #[response(
        status = 401,
        description = "Missing or invalid token",
        content_type = "application/problem+json"
    )]
    Unauthorized(Problem),
    #[response(
        status = 403,
        description = "Not allowed (scope, cluster or policy)",
        content_type = "application/problem+json"
    )]
    Forbidden(Problem),
    #[response(status = 404, description = "Not found", content_type = "application/problem+json")]
    NotFound(Problem),
    #[response(status = 409, description = "Conflict", content_type = "application/problem+json")]
    Conflict(Problem),
    #[response(
        status = 412,
        description = "If-Match names a stale version",
        content_type = "application/problem+json"
    )]
    PreconditionFailed(Problem),
    #[response(status = 413, description = "Body too large", content_type = "application/problem+json")]
    PayloadTooLarge(Problem),
    #[response(status = 415, description = "Body is not JSON", content_type = "application/problem+json")]
    UnsupportedMediaType(Problem),
    #[response(status = 422, description = "Invalid value", content_type = "application/problem+json")]
    Unprocessable(Problem),
    #[response(status = 429, description = "Rate limited", content_type = "application/problem+json")]
    TooManyRequests(Problem),
    #[response(status = 500, description = "Internal error", content_type = "application/problem+json")]
    Internal(Problem),
    #[response(
        status = 503,
        description = "Database or PKCS#11 token unavailable",
        content_type = "application/problem+json"
    )]
    Unavailable(Problem),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ttl_beyond_the_ca_is_the_requests_fault() {
        let err = ApiError::from(PkiError::OutlivesCa(time::OffsetDateTime::UNIX_EPOCH));
        assert_eq!(err.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let problem = err.problem();
        assert_eq!(problem.field.as_deref(), Some("ttl_seconds"));
        assert!(problem.detail.contains("1970-01-01T00:00:00Z"), "{}", problem.detail);
    }
}
