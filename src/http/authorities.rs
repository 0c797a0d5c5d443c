//! `/v1/clusters/{cluster}/authorities`: the five CAs, their generations and PEM bundles.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::auth::Caller;
use super::download::{Caching, cacheable, etag_of};
use super::error::{ApiError, ProblemResponses};
use super::extract::{Json, Path};
use crate::app::AppState;
use crate::pki::{AuthorityKind, to_pem};
use crate::published::ClusterSnapshot;
use crate::store::AuthorityRecord;

/// One generation of a CA.
#[derive(Debug, Serialize, ToSchema)]
pub struct GenerationResponse {
    pub generation: i32,
    /// `active`, `retiring` or `retired`.
    pub state: String,
    pub subject: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    pub fingerprint_sha256: String,
    pub certificate_pem: String,
}

impl GenerationResponse {
    fn from_record(a: &AuthorityRecord) -> Self {
        Self {
            generation: a.generation,
            state: a.state.as_str().to_string(),
            subject: a.subject.clone(),
            not_before: a.not_before,
            not_after: a.not_after,
            fingerprint_sha256: a.fingerprint.clone(),
            certificate_pem: to_pem("CERTIFICATE", &a.certificate_der),
        }
    }
}

/// A CA of a cluster: the generation that signs, and every non-retired generation.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuthorityResponse {
    pub kind: AuthorityKind,
    /// The generation that signs new certificates.
    pub generation: i32,
    pub subject: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    pub fingerprint_sha256: String,
    pub certificate_pem: String,
    /// Non-retired generations, soonest-expiring first (the order of `ca.pem`).
    pub generations: Vec<GenerationResponse>,
}

impl AuthorityResponse {
    fn from_snapshot(snapshot: &ClusterSnapshot, kind: AuthorityKind) -> Option<Self> {
        let signer = snapshot.signer(kind)?;
        let current = GenerationResponse::from_record(signer);
        Some(Self {
            kind,
            generation: current.generation,
            subject: current.subject,
            not_before: current.not_before,
            not_after: current.not_after,
            fingerprint_sha256: current.fingerprint_sha256,
            certificate_pem: current.certificate_pem,
            generations: snapshot
                .live_generations(kind)
                .into_iter()
                .map(GenerationResponse::from_record)
                .collect(),
        })
    }
}

/// Parse a `{kind}` path segment; an unknown one is a 404 that lists the valid kinds.
pub(crate) fn parse_kind(text: &str) -> Result<AuthorityKind, ApiError> {
    AuthorityKind::parse(text).ok_or_else(|| {
        ApiError::not_found(format!(
            "no authority kind {text:?}; valid kinds: {}",
            AuthorityKind::valid_list()
        ))
        .with_valid_values(AuthorityKind::ALL.iter().map(|k| k.as_str().to_string()).collect())
    })
}

/// The five CAs of a cluster.
#[utoipa::path(
    get, path = "/v1/clusters/{cluster}/authorities", tag = "authorities",
    params(("cluster" = String, Path, description = "Cluster id or name")),
    responses((status = 200, body = Vec<AuthorityResponse>), ProblemResponses),
    security((), ("bearer" = []))
)]
pub async fn list_authorities(
    State(app): State<AppState>,
    caller: Caller,
    Path(cluster): Path<String>,
) -> Result<Json<Vec<AuthorityResponse>>, ApiError> {
    let snapshot = app.snapshot(&cluster).await?;
    caller.require_public_read(app.settings.public_read, &snapshot.cluster.name)?;
    Ok(Json(
        AuthorityKind::ALL.iter().filter_map(|k| AuthorityResponse::from_snapshot(&snapshot, *k)).collect(),
    ))
}

/// One CA of a cluster.
#[utoipa::path(
    get, path = "/v1/clusters/{cluster}/authorities/{kind}", tag = "authorities",
    params(
        ("cluster" = String, Path, description = "Cluster id or name"),
        ("kind" = AuthorityKind, Path, description = "etcd, control-plane, operators, kubelet or aggregation"),
    ),
    responses((status = 200, body = AuthorityResponse), ProblemResponses),
    security((), ("bearer" = []))
)]
pub async fn get_authority(
    State(app): State<AppState>,
    caller: Caller,
    Path((cluster, kind)): Path<(String, String)>,
) -> Result<Json<AuthorityResponse>, ApiError> {
    let kind = parse_kind(&kind)?;
    let snapshot = app.snapshot(&cluster).await?;
    caller.require_public_read(app.settings.public_read, &snapshot.cluster.name)?;
    AuthorityResponse::from_snapshot(&snapshot, kind)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("the {kind} CA has no active generation")))
}

/// PEM bundle of every non-retired generation of a CA, soonest-expiring first.
#[utoipa::path(
    get, path = "/v1/clusters/{cluster}/authorities/{kind}/ca.pem", tag = "authorities",
    params(
        ("cluster" = String, Path, description = "Cluster id or name"),
        ("kind" = AuthorityKind, Path, description = "etcd, control-plane, operators, kubelet or aggregation"),
        ("If-None-Match" = Option<String>, Header, description = "ETag of a copy the client has"),
    ),
    responses(
        (status = 200, description = "PEM bundle", content_type = "application/x-pem-file", body = String,
         headers(("ETag" = String))),
        (status = 304, description = "Not modified"),
        ProblemResponses,
    ),
    security((), ("bearer" = []))
)]
pub async fn ca_bundle(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path((cluster, kind)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let kind = parse_kind(&kind)?;
    let snapshot = app.snapshot(&cluster).await?;
    caller.require_public_read(app.settings.public_read, &snapshot.cluster.name)?;
    let bundle = snapshot.ca_bundle(&[kind]);
    let etag = etag_of(bundle.as_bytes());
    Ok(cacheable(
        &headers,
        &etag,
        "application/x-pem-file",
        Caching { max_age: Some(300), last_modified: None },
        bundle,
    ))
}
