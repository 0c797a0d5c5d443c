//! `/v1/audit`: the append-only audit trail, newest first.

use axum::extract::State;
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::auth::Caller;
use super::extract::{Json, Query};
use super::pagination::{PageParams, next_cursor};
use crate::app::AppState;
use crate::error::{ApiError, ProblemResponses};
use crate::token::Scope;

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEvent {
    pub id: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Token subject.
    pub actor: String,
    /// e.g. `cluster.create`, `certificate.issue`, `certificate.revoke`.
    pub action: String,
    pub object_type: String,
    pub object_id: String,
    pub cluster_id: Option<Uuid>,
    pub remote_addr: Option<String>,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditList {
    pub items: Vec<AuditEvent>,
    pub next_cursor: Option<String>,
}

/// The audit trail (admin), limited to the token's clusters when it is limited to some.
#[utoipa::path(
    get, path = "/v1/audit", tag = "audit",
    params(PageParams),
    responses((status = 200, body = AuditList), ProblemResponses),
    security(("bearer" = []))
)]
pub async fn list_audit(
    State(app): State<AppState>,
    caller: Caller,
    Query(page): Query<PageParams>,
) -> Result<Json<AuditList>, ApiError> {
    let claims = caller.require(Scope::Admin)?;
    let limit = page.limit()?;
    let only = claims.cluster_restriction();
    let records = app.store.list_audit(page.cursor_number()?, only.as_deref(), limit).await?;
    let next = next_cursor(records.len(), limit, records.last().map(|r| r.id.to_string()));
    let items = records
        .into_iter()
        .map(|r| AuditEvent {
            id: r.id,
            at: r.entry.at,
            actor: r.entry.actor,
            action: r.entry.action,
            object_type: r.entry.object_type,
            object_id: r.entry.object_id,
            cluster_id: r.entry.cluster_id,
            remote_addr: r.entry.remote_addr,
            details: r.entry.details,
        })
        .collect();
    Ok(Json(AuditList { items, next_cursor: next }))
}
