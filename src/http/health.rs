//! `/healthz` (the process is up) and `/readyz` (the database answers and the keys open).

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, ProblemResponses};
use super::extract::Json;
use crate::app::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: String,
}

/// Liveness: answers while the process runs.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok".into() })
}

/// Readiness: the database answers and the master key opens the sealed keys.
#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Health), ProblemResponses)
)]
pub async fn readyz(State(app): State<AppState>) -> Result<Json<Health>, ApiError> {
    if let Err(err) = app.store.ping().await {
        tracing::warn!(error = %err, "readiness: database unreachable");
        return Err(ApiError::unavailable("the database is unreachable", 5));
    }
    app.keyring.verify_master_key(app.store.as_ref()).await.map_err(|err| match err {
        crate::keyring::KeyringError::Store(_) => ApiError::unavailable("the database is unreachable", 5),
        other => {
            tracing::error!(error = %other, "readiness: keys do not open");
            ApiError::unavailable("the sealed keys cannot be opened", 30)
        }
    })?;
    Ok(Json(Health { status: "ready".into() }))
}
