//! `/v1/clusters/{cluster}/certificates`: what was issued, and recording it.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use super::auth::{Caller, ClusterAccess};
use super::extract::{Json, Path, Query, RawBody};
use super::pagination::{PageParams, next_cursor};
use crate::app::AppState;
use crate::error::{ApiError, ProblemResponses};
use crate::pki::crl::RevocationReason;
use crate::pki::{AuthorityKind, Serial, to_pem};
use crate::service;
use crate::store::{CertificateFilter, CertificateRecord, CertificateStatus, StoreError};
use crate::token::Scope;

/// An issued certificate (never its key).
#[derive(Debug, Serialize, ToSchema)]
pub struct CertificateResponse {
    /// Uppercase hex.
    pub serial: String,
    pub cluster_id: uuid::Uuid,
    /// The CA kind that signed it.
    pub kind: AuthorityKind,
    /// The CA generation that signed it.
    pub generation: i32,
    /// `user` for kubeconfigs, else the component profile.
    pub profile: String,
    pub common_name: String,
    pub groups: Vec<String>,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    pub fingerprint_sha256: String,
    pub certificate_pem: String,
    /// Subject of the token that issued it.
    pub issued_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// `active`, `expired` or `revoked`.
    pub status: String,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    pub revocation_reason: Option<String>,
}

impl CertificateResponse {
    pub fn from_record(record: CertificateRecord, now: OffsetDateTime) -> Self {
        let status = if record.revoked_at.is_some() {
            "revoked"
        } else if record.not_after <= now {
            "expired"
        } else {
            "active"
        };
        Self {
            certificate_pem: to_pem("CERTIFICATE", &record.certificate_der),
            serial: record.serial,
            cluster_id: record.cluster_id,
            kind: record.kind,
            generation: record.generation,
            profile: record.profile,
            common_name: record.common_name,
            groups: record.groups,
            dns_names: record.dns_names,
            ip_addresses: record.ip_addresses,
            not_before: record.not_before,
            not_after: record.not_after,
            fingerprint_sha256: record.fingerprint,
            issued_by: record.issued_by,
            created_at: record.created_at,
            status: status.to_string(),
            revoked_at: record.revoked_at,
            revocation_reason: record.revocation_reason.map(|r| r.as_str().to_string()),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CertificateList {
    pub items: Vec<CertificateResponse>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StatusFilter {
    Active,
    Expired,
    Revoked,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CertificateQuery {
    /// Only certificates of this user (CN).
    pub user: Option<String>,
    /// Only certificates in this state.
    #[param(inline)]
    pub status: Option<StatusFilter>,
    /// Items per page (1-500, default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only unexpired, unrevoked certificates that expire within this long (`30d`, `12h`, ...).
    #[param(example = "30d")]
    pub expiring_within: Option<String>,
}

/// The certificates of a cluster, newest first.
#[utoipa::path(
    get, path = "/v1/clusters/{cluster}/certificates", tag = "certificates",
    params(("cluster" = String, Path, description = "Cluster id or name"), CertificateQuery),
    responses((status = 200, body = CertificateList), ProblemResponses),
    security(("bearer" = []))
)]
pub async fn list_certificates(
    State(app): State<AppState>,
    caller: Caller,
    ClusterAccess { snapshot }: ClusterAccess,
    Query(query): Query<CertificateQuery>,
) -> Result<Json<CertificateList>, ApiError> {
    caller.require(Scope::Read)?;
    let page = PageParams { limit: query.limit, cursor: query.cursor };
    let limit = page.limit()?;
    let filter = CertificateFilter {
        common_name: query.user,
        status: query.status.map(|s| match s {
            StatusFilter::Active => CertificateStatus::Active,
            StatusFilter::Expired => CertificateStatus::Expired,
            StatusFilter::Revoked => CertificateStatus::Revoked,
        }),
        before_seq: page.cursor_number()?,
        limit,
        expiring_before: None,
    };
    let now = app.now();
    let filter = match &query.expiring_within {
        Some(text) => {
            let within = crate::config::parse_duration(text)
                .ok()
                .and_then(|d| time::Duration::try_from(d).ok())
                .filter(|d| *d <= time::Duration::days(36_500))
                .ok_or_else(|| {
                    ApiError::invalid(
                        "expiring_within",
                        format!("{text:?} is not a duration like 12h or 30d"),
                    )
                })?;
            CertificateFilter { expiring_before: Some(now + within), ..filter }
        }
        None => filter,
    };
    let rows = app.store.list_certificates(snapshot.cluster.id, &filter, now).await?;
    let next = next_cursor(rows.len(), limit, rows.last().map(|(seq, _)| seq.to_string()));
    let items = rows.into_iter().map(|(_, record)| CertificateResponse::from_record(record, now)).collect();
    Ok(Json(CertificateList { items, next_cursor: next }))
}

/// Parse a `{serial}` path segment (hex, either case, optional colons).
pub(crate) fn parse_serial(text: &str) -> Result<String, ApiError> {
    Serial::parse_hex(text)
        .map(|s| s.to_hex())
        .ok_or_else(|| ApiError::not_found(format!("no certificate with serial {text:?}")))
}

/// One certificate: metadata and PEM, never a key.
#[utoipa::path(
    get, path = "/v1/clusters/{cluster}/certificates/{serial}", tag = "certificates",
    params(
        ("cluster" = String, Path, description = "Cluster id or name"),
        ("serial" = String, Path, description = "Serial number, hex"),
    ),
    responses((status = 200, body = CertificateResponse), ProblemResponses),
    security(("bearer" = []))
)]
pub async fn get_certificate(
    State(app): State<AppState>,
    caller: Caller,
    ClusterAccess { snapshot }: ClusterAccess,
    Path((_cluster, serial)): Path<(String, String)>,
) -> Result<Json<CertificateResponse>, ApiError> {
    caller.require(Scope::Read)?;
    let serial = parse_serial(&serial)?;
    let record = app.store.get_certificate(snapshot.cluster.id, &serial).await.map_err(|e| match e {
        StoreError::NotFound => {
            ApiError::not_found(format!("no certificate with serial {serial} in this cluster"))
        }
        other => other.into(),
    })?;
    Ok(Json(CertificateResponse::from_record(record, app.now())))
}

/// Why a certificate is revoked.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// An RFC 5280 reason name; `unspecified` by default.
    #[serde(default)]
    pub reason: RevocationReason,
}

/// Revoke every live certificate of a user.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeUserRequest {
    /// The user (CN) whose unexpired, unrevoked certificates are revoked.
    pub user: String,
    #[serde(default)]
    pub reason: RevocationReason,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RevocationResponse {
    /// Serials revoked by this call.
    pub serials: Vec<String>,
}

/// Revoke one certificate (idempotent: revoking again answers the same revocation).
#[utoipa::path(
    post, path = "/v1/clusters/{cluster}/certificates/{serial}/revoke", tag = "revocation",
    params(
        ("cluster" = String, Path, description = "Cluster id or name"),
        ("serial" = String, Path, description = "Serial number, hex"),
    ),
    request_body(content = Option<RevokeRequest>, content_type = "application/json"),
    responses((status = 200, body = CertificateResponse), ProblemResponses),
    security(("bearer" = []))
)]
pub async fn revoke_certificate(
    State(app): State<AppState>,
    caller: Caller,
    ClusterAccess { snapshot }: ClusterAccess,
    Path((_cluster, serial)): Path<(String, String)>,
    body: RawBody,
) -> Result<Json<CertificateResponse>, ApiError> {
    caller.require(Scope::CertificatesRevoke)?;
    let serial = parse_serial(&serial)?;
    // The body is optional: an empty one means the default reason.
    let reason = body.json_or_default::<RevokeRequest>()?.reason;
    let record =
        service::revocation::certificate(&app, &caller.as_actor(), &snapshot, &serial, reason).await?;
    Ok(Json(CertificateResponse::from_record(record, app.now())))
}

/// Revoke every unexpired, unrevoked certificate of a user.
#[utoipa::path(
    post, path = "/v1/clusters/{cluster}/revocations", tag = "revocation",
    params(("cluster" = String, Path, description = "Cluster id or name")),
    request_body = RevokeUserRequest,
    responses((status = 200, body = RevocationResponse), ProblemResponses),
    security(("bearer" = []))
)]
pub async fn revoke_user(
    State(app): State<AppState>,
    caller: Caller,
    ClusterAccess { snapshot }: ClusterAccess,
    Json(request): Json<RevokeUserRequest>,
) -> Result<Json<RevocationResponse>, ApiError> {
    caller.require(Scope::CertificatesRevoke)?;
    crate::names::validate_identity("user", &request.user)?;
    let revoked =
        service::revocation::user(&app, &caller.as_actor(), &snapshot, &request.user, request.reason).await?;
    Ok(Json(RevocationResponse { serials: revoked.into_iter().map(|c| c.serial).collect() }))
}
