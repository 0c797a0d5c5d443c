//! Who is calling: the bearer token (verified) and the remote address, and the checks handlers make.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use time::OffsetDateTime;
use uuid::Uuid;

use super::error::ApiError;
use crate::app::AppState;
use crate::store::AuditEntry;
use crate::token::{Claims, Scope};

/// The caller of a request. A present but invalid token is refused here (401), even on endpoints
/// that need none, so a client learns its token is bad.
pub struct Caller {
    claims: Option<Arc<Claims>>,
    pub remote_addr: Option<String>,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let remote_addr =
            parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip().to_string());
        let claims = match parts.headers.get(AUTHORIZATION) {
            None => None,
            Some(value) => {
                let text =
                    value.to_str().map_err(|_| ApiError::unauthorized("malformed Authorization header"))?;
                let token = text
                    .strip_prefix("Bearer ")
                    .or_else(|| text.strip_prefix("bearer "))
                    .ok_or_else(|| ApiError::unauthorized("expected Authorization: Bearer <token>"))?;
                let claims = state
                    .tokens
                    .verify(token.trim(), OffsetDateTime::now_utc())
                    .map_err(|e| ApiError::unauthorized(e.to_string()))?;
                Some(claims)
            }
        };
        Ok(Caller { claims, remote_addr })
    }
}

impl Caller {
    pub fn claims(&self) -> Option<&Claims> {
        self.claims.as_deref()
    }

    /// A token with `scope` (or `admin`): 401 without a token, 403 without the scope.
    pub fn require(&self, scope: Scope) -> Result<&Claims, ApiError> {
        let claims = self
            .claims
            .as_ref()
            .ok_or_else(|| ApiError::unauthorized("this endpoint needs a bearer token"))?;
        if !claims.has_scope(scope) {
            return Err(ApiError::forbidden(format!("the token lacks the {} scope", scope.as_str())));
        }
        Ok(claims)
    }

    /// As [`require`](Self::require), and the token must be valid for the cluster.
    pub fn require_for_cluster(&self, scope: Scope, cluster_name: &str) -> Result<&Claims, ApiError> {
        let claims = self.require(scope)?;
        if !claims.allows_cluster(cluster_name) {
            return Err(ApiError::forbidden(format!("the token is not valid for cluster {cluster_name:?}")));
        }
        Ok(claims)
    }

    /// Public material (CA certificates, bundles, CRLs): open to all unless public reads are off,
    /// then a `read` token for the cluster.
    pub fn require_public_read(&self, public_read: bool, cluster_name: &str) -> Result<(), ApiError> {
        if public_read {
            return Ok(());
        }
        self.require_for_cluster(Scope::Read, cluster_name).map(|_| ())
    }

    /// What rate limits count against: the token (its `jti`), else the subject.
    pub fn token_id(&self) -> &str {
        self.claims
            .as_ref()
            .map_or("anonymous", |c| if c.jti.is_empty() { c.sub.as_str() } else { c.jti.as_str() })
    }

    /// The subject recorded for what this caller does.
    pub fn actor(&self) -> &str {
        self.claims.as_ref().map_or("anonymous", |c| c.sub.as_str())
    }

    /// An audit entry for an action of this caller.
    pub fn audit(
        &self,
        at: OffsetDateTime,
        action: &str,
        object_type: &str,
        object_id: impl Into<String>,
        cluster_id: Option<Uuid>,
        details: serde_json::Value,
    ) -> AuditEntry {
        AuditEntry {
            at,
            actor: self.actor().to_string(),
            action: action.to_string(),
            object_type: object_type.to_string(),
            object_id: object_id.into(),
            cluster_id,
            remote_addr: self.remote_addr.clone(),
            details,
        }
    }
}
