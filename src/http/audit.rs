//! `/v1/audit`: the append-only audit trail, newest first.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::{Caller, cluster_access};
use super::extract::{Json, Query};
use super::pagination::{PageParams, next_cursor};
use crate::app::AppState;
use crate::error::{ApiError, ProblemResponses};
use crate::store::AuditQuery;
use crate::token::Scope;

/// The filters of `GET /v1/audit`; every one given must hold.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditFilter {
    /// Only events of this cluster (name or id; an id also finds a deleted cluster's events).
    pub cluster: Option<String>,
    /// Only events of this actor (token subject), exactly.
    pub actor: Option<String>,
    /// Only this action, e.g. `certificate.revoke`; a trailing `*` matches a prefix (`certificate.*`).
    pub action: Option<String>,
    /// Only events at or after this time (RFC 3339).
    #[param(format = DateTime, example = "2030-01-01T00:00:00Z")]
    pub since: Option<String>,
    /// Only events before this time (RFC 3339).
    #[param(format = DateTime, example = "2030-01-02T00:00:00Z")]
    pub until: Option<String>,
}

fn parse_time(field: &str, text: Option<&str>) -> Result<Option<OffsetDateTime>, ApiError> {
    text.map(|text| {
        OffsetDateTime::parse(text, &Rfc3339).map_err(|_| {
            ApiError::invalid(field, format!("{field} must be an RFC 3339 time, e.g. 2030-01-01T00:00:00Z"))
        })
    })
    .transpose()
}

fn non_empty(field: &str, text: Option<String>) -> Result<Option<String>, ApiError> {
    match text {
        Some(text) if text.is_empty() || text.len() > 256 => {
            Err(ApiError::invalid(field, format!("{field} must be 1 to 256 characters")))
        }
        other => Ok(other),
    }
}

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

/// The audit trail (admin), limited to the token's clusters when it is limited to some, filtered
/// by cluster, actor, action and time.
#[utoipa::path(
    get, path = "/v1/audit", tag = "audit",
    params(PageParams, AuditFilter),
    responses((status = 200, body = AuditList), ProblemResponses),
    security(("bearer" = []))
)]
pub async fn list_audit(
    State(app): State<AppState>,
    caller: Caller,
    Query(page): Query<PageParams>,
    Query(filter): Query<AuditFilter>,
) -> Result<Json<AuditList>, ApiError> {
    let claims = caller.require(Scope::Admin)?;
    let limit = page.limit()?;
    let since = parse_time("since", filter.since.as_deref())?;
    let until = parse_time("until", filter.until.as_deref())?;
    let cluster_id = match filter.cluster.as_deref() {
        None => None,
        // The same check as every cluster route: a token limited to other clusters is refused
        // (403), whether or not this one exists.
        Some(cluster) => match Uuid::parse_str(cluster) {
            // An id the token is valid for needs no lookup, and also finds a deleted cluster's
            // events.
            Ok(id) if claims.person.is_none() && claims.allows_cluster(id) => Some(id),
            // Otherwise the same check as every cluster route: a token limited to other clusters
            // is refused (403), whether or not this one exists.
            _ => Some(cluster_access(&app, &caller, cluster).await?.snapshot.cluster.id),
        },
    };
    let query = AuditQuery {
        before_id: page.cursor_number()?,
        clusters: claims.cluster_restriction(),
        cluster_id,
        actor: non_empty("actor", filter.actor)?,
        action: non_empty("action", filter.action)?,
        since,
        until,
    };
    let records = app.store.search_audit(&query, limit).await?;
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
