//! Operations: `/healthz` (the process is up), `/readyz` (the database answers and the keys open)
//! and `/metrics` (Prometheus).
//!
//! `/metrics` names every cluster (in the CRL and CA gauges and the issuance counters): with
//! public reads off it needs a `read` token valid for all clusters, as a scraper would hold.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::Caller;
use super::extract::Json;
use crate::app::AppState;
use crate::error::{ApiError, ProblemResponses};
use crate::token::Scope;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: String,
    /// What needs attention soon: CRLs expiring within a day, CAs within 90 days.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Liveness: answers while the process runs.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok".into(), warnings: vec![] })
}

/// Readiness: the database answers and the master key opens the sealed keys (read-only).
#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Health), ProblemResponses)
)]
pub async fn readyz(State(app): State<AppState>) -> Result<Json<Health>, ApiError> {
    // Read-only and cheap: one read that also proves the database answers, and one unseal.
    app.keyring.check_master_key(app.store.as_ref()).await.map_err(|err| match err {
        crate::keyring::KeyringError::Store(err) => {
            tracing::warn!(error = %err, "readiness: database unreachable");
            ApiError::unavailable("the database is unreachable", 5)
        }
        other => {
            tracing::error!(error = %other, "readiness: keys do not open");
            ApiError::unavailable("the sealed keys cannot be opened", 30)
        }
    })?;
    Ok(Json(Health { status: "ready".into(), warnings: app.expiry_warnings(app.now()) }))
}

/// Prometheus metrics: requests by route and status, latency histograms, certificates issued and
/// revoked, CRL age and next update and CA expiry per authority, database pool state, build info.
/// Open to all unless public reads are off; then a `read` token valid for every cluster.
#[utoipa::path(
    get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain", body = String),
        ProblemResponses,
    ),
    security((), ("bearer" = []))
)]
pub async fn metrics(State(app): State<AppState>, caller: Caller) -> Result<impl IntoResponse, ApiError> {
    // The metrics name every cluster: with public reads off, a read token valid for all.
    if !app.settings.public_read {
        caller.require_unrestricted(Scope::Read)?;
    }
    let body = app.metrics_text(app.now()).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body))
}
