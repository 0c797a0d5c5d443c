//! `/v1/clusters/{cluster}/authorities`: the five CAs, their generations and PEM bundles.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::auth::{Caller, ClusterAccess};
use super::download::{Caching, cacheable, etag_of};
use super::extract::{Json, Path, RawBody};
use crate::app::AppState;
use crate::clusters::CaImport;
use crate::error::{ApiError, ProblemResponses};
use crate::pki::{AuthorityKind, KeyStorage, to_pem};
use crate::published::ClusterSnapshot;
use crate::service;
use crate::store::AuthorityRecord;
use crate::token::Scope;

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
    /// Where this generation's key is kept.
    pub key_storage: KeyStorage,
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
            key_storage: a.key_storage,
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
    /// Where the signing generation's key is kept.
    pub key_storage: KeyStorage,
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
            key_storage: current.key_storage,
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
    ClusterAccess { snapshot }: ClusterAccess,
) -> Result<Json<Vec<AuthorityResponse>>, ApiError> {
    caller.require_public_read(app.settings.public_read)?;
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
    ClusterAccess { snapshot }: ClusterAccess,
    Path((_cluster, kind)): Path<(String, String)>,
) -> Result<Json<AuthorityResponse>, ApiError> {
    let kind = parse_kind(&kind)?;
    caller.require_public_read(app.settings.public_read)?;
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
    ClusterAccess { snapshot }: ClusterAccess,
    headers: HeaderMap,
    Path((_cluster, kind)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let kind = parse_kind(&kind)?;
    caller.require_public_read(app.settings.public_read)?;
    let bundle = snapshot.ca_bundle_with_chains(&[kind]);
    let etag = etag_of(bundle.as_bytes());
    Ok(cacheable(
        &headers,
        &etag,
        "application/x-pem-file",
        Caching { max_age: Some(300), last_modified: None },
        || bundle,
    ))
}

/// Where a rotated CA's new key goes.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {
    /// `sealed` or `pkcs11`; by default where the current generation's key is. A rotation may
    /// so move a CA into the token or out of it.
    pub key_storage: Option<KeyStorage>,
}

/// Rotate a CA: generation N+1 (new key, distinct subject) becomes the signer; the previous
/// generation becomes `retiring` and stays in every bundle, with its CRL, until retired.
#[utoipa::path(
    post, path = "/v1/clusters/{cluster}/authorities/{kind}/rotate", tag = "authorities",
    params(
        ("cluster" = String, Path, description = "Cluster id or name"),
        ("kind" = AuthorityKind, Path, description = "etcd, control-plane, operators, kubelet or aggregation"),
    ),
    request_body(content = Option<RotateRequest>, content_type = "application/json"),
    responses((status = 200, body = AuthorityResponse), ProblemResponses),
    security(("bearer" = []))
)]
pub async fn rotate_authority(
    State(app): State<AppState>,
    caller: Caller,
    access: ClusterAccess,
    Path((_cluster, kind)): Path<(String, String)>,
    body: RawBody,
) -> Result<Json<AuthorityResponse>, ApiError> {
    let kind = parse_kind(&kind)?;
    caller.require(Scope::Admin)?;
    let request: RotateRequest = body.json_or_default()?;
    let snapshot = service::authorities::rotate(
        &app,
        &caller.as_actor(),
        access.snapshot.cluster.id,
        kind,
        request.key_storage,
    )
    .await?;
    AuthorityResponse::from_snapshot(&snapshot, kind)
        .map(Json)
        .ok_or_else(|| ApiError::internal("the rotated authority has no signer"))
}

/// An existing CA to adopt: its certificate and its private key, PEM. The key is sealed at once
/// and never returned, logged or stored in the clear.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportAuthorityRequest {
    /// The CA certificate alone (`ca.crt`): self-signed, CA:TRUE, keyUsage keyCertSign, valid now.
    pub certificate_pem: String,
    /// Its key (`ca.key`): PKCS#8, PKCS#1 (`RSA PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`), unencrypted.
    pub private_key_pem: String,
}

impl std::fmt::Debug for ImportAuthorityRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportAuthorityRequest")
            .field("certificate_pem", &self.certificate_pem)
            .finish_non_exhaustive()
    }
}

impl From<ImportAuthorityRequest> for CaImport {
    fn from(request: ImportAuthorityRequest) -> Self {
        CaImport {
            certificate_pem: request.certificate_pem,
            private_key_pem: zeroize::Zeroizing::new(request.private_key_pem),
        }
    }
}

/// Import an existing CA (e.g. kubeadm's `ca.crt`/`ca.key`) as the next generation of a kind,
/// which then signs; the previous generation becomes `retiring`. A CA without `cRLSign` (kubeadm's)
/// is re-certified under the same subject, key and key identifier with `cRLSign` added, and that
/// certificate is served in the bundles. A bad import (key mismatch, not a CA, no keyCertSign,
/// expired, unsupported algorithm) is a 422 and changes nothing. Admin of the cluster only.
#[utoipa::path(
    post, path = "/v1/clusters/{cluster}/authorities/{kind}/import", tag = "authorities",
    params(
        ("cluster" = String, Path, description = "Cluster id or name"),
        ("kind" = AuthorityKind, Path, description = "etcd, control-plane, operators, kubelet or aggregation"),
    ),
    request_body = ImportAuthorityRequest,
    responses((status = 200, body = AuthorityResponse), ProblemResponses),
    security(("bearer" = []))
)]
pub async fn import_authority(
    State(app): State<AppState>,
    caller: Caller,
    access: ClusterAccess,
    Path((_cluster, kind)): Path<(String, String)>,
    Json(request): Json<ImportAuthorityRequest>,
) -> Result<Json<AuthorityResponse>, ApiError> {
    let kind = parse_kind(&kind)?;
    caller.require(Scope::Admin)?;
    let snapshot = service::authorities::import(
        &app,
        &caller.as_actor(),
        access.snapshot.cluster.id,
        kind,
        CaImport::from(request),
    )
    .await?;
    AuthorityResponse::from_snapshot(&snapshot, kind)
        .map(Json)
        .ok_or_else(|| ApiError::internal("the imported authority has no signer"))
}

/// A CSR for an intermediate, to have signed by the organisation's CA.
#[derive(Debug, Serialize, ToSchema)]
pub struct IntermediateCsrResponse {
    pub kind: AuthorityKind,
    /// PKCS#10, PEM. Its subject is the authority's distinct DN; it asks for CA:TRUE
    /// (pathlen 0) and keyUsage keyCertSign, cRLSign, digitalSignature.
    pub csr_pem: String,
}

/// Make an intermediate under the organisation's root: kca generates the key (sealed at once,
/// never returned) and answers a CSR to have signed offline. A new request replaces an earlier one
/// of the same kind. Admin of the cluster only.
#[utoipa::path(
    post, path = "/v1/clusters/{cluster}/authorities/{kind}/intermediate/csr", tag = "authorities",
    params(
        ("cluster" = String, Path, description = "Cluster id or name"),
        ("kind" = AuthorityKind, Path, description = "etcd, control-plane, operators, kubelet or aggregation"),
    ),
    responses((status = 201, body = IntermediateCsrResponse), ProblemResponses),
    security(("bearer" = []))
)]
pub async fn request_intermediate(
    State(app): State<AppState>,
    caller: Caller,
    access: ClusterAccess,
    Path((_cluster, kind)): Path<(String, String)>,
) -> Result<(axum::http::StatusCode, Json<IntermediateCsrResponse>), ApiError> {
    let kind = parse_kind(&kind)?;
    caller.require(Scope::Admin)?;
    let csr_der = service::authorities::request_intermediate(
        &app,
        &caller.as_actor(),
        access.snapshot.cluster.id,
        kind,
    )
    .await?;
    Ok((
        axum::http::StatusCode::CREATED,
        Json(IntermediateCsrResponse { kind, csr_pem: to_pem("CERTIFICATE REQUEST", &csr_der) }),
    ))
}

/// The certificate the organisation's CA signed for an intermediate request, and its issuers.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallIntermediateRequest {
    /// The intermediate: for the request's key, CA:TRUE, keyUsage keyCertSign and cRLSign, a
    /// Subject Key Identifier, valid now.
    pub certificate_pem: String,
    /// Its issuer first, then the issuer's issuer, up to the root if wanted; each signature is
    /// checked.
    pub chain_pem: String,
}

/// Install a signed intermediate: it becomes the next generation of the kind and signs; the
/// previous generation becomes `retiring`. Its bundles (`ca.pem`) then carry the chain, and user
/// kubeconfigs under an operators intermediate carry it after their certificate. A certificate
/// that does not fit the request is a 422 and changes nothing. Admin of the cluster only.
#[utoipa::path(
    post, path = "/v1/clusters/{cluster}/authorities/{kind}/intermediate/certificate", tag = "authorities",
    params(
        ("cluster" = String, Path, description = "Cluster id or name"),
        ("kind" = AuthorityKind, Path, description = "etcd, control-plane, operators, kubelet or aggregation"),
    ),
    request_body = InstallIntermediateRequest,
    responses((status = 200, body = AuthorityResponse), ProblemResponses),
    security(("bearer" = []))
)]
pub async fn install_intermediate(
    State(app): State<AppState>,
    caller: Caller,
    access: ClusterAccess,
    Path((_cluster, kind)): Path<(String, String)>,
    Json(request): Json<InstallIntermediateRequest>,
) -> Result<Json<AuthorityResponse>, ApiError> {
    let kind = parse_kind(&kind)?;
    caller.require(Scope::Admin)?;
    let snapshot = service::authorities::install_intermediate(
        &app,
        &caller.as_actor(),
        access.snapshot.cluster.id,
        kind,
        request.certificate_pem,
        request.chain_pem,
    )
    .await?;
    AuthorityResponse::from_snapshot(&snapshot, kind)
        .map(Json)
        .ok_or_else(|| ApiError::internal("the installed authority has no signer"))
}

/// Whether to revoke what the generation still vouches for.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetireRequest {
    /// Revoke its unexpired, unrevoked certificates first (reason `cessationOfOperation`).
    #[serde(default)]
    pub force: bool,
}

/// Retire a retiring generation: it leaves every bundle and its certificates stop verifying.
/// Refused (409) while it has unexpired, unrevoked certificates, unless `force`.
#[utoipa::path(
    post, path = "/v1/clusters/{cluster}/authorities/{kind}/generations/{generation}/retire", tag = "authorities",
    params(
        ("cluster" = String, Path, description = "Cluster id or name"),
        ("kind" = AuthorityKind, Path, description = "etcd, control-plane, operators, kubelet or aggregation"),
        ("generation" = i32, Path, description = "The generation to retire"),
    ),
    request_body(content = Option<RetireRequest>, content_type = "application/json"),
    responses((status = 200, body = AuthorityResponse), ProblemResponses),
    security(("bearer" = []))
)]
pub async fn retire_generation(
    State(app): State<AppState>,
    caller: Caller,
    access: ClusterAccess,
    Path((_cluster, kind, generation)): Path<(String, String, i32)>,
    body: RawBody,
) -> Result<Json<AuthorityResponse>, ApiError> {
    let kind = parse_kind(&kind)?;
    caller.require(Scope::Admin)?;
    let request: RetireRequest = body.json_or_default()?;
    let snapshot = service::authorities::retire(
        &app,
        &caller.as_actor(),
        access.snapshot.cluster.id,
        kind,
        generation,
        request.force,
    )
    .await?;
    AuthorityResponse::from_snapshot(&snapshot, kind)
        .map(Json)
        .ok_or_else(|| ApiError::internal("the authority has no signer"))
}
