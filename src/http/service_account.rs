//! `/v1/clusters/{cluster}/service-account/...`: the cluster's service-account token signing keys.
//! The public keys are public material; rotation, import, retirement and the export of the
//! signing key need an admin token of the cluster.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::auth::{Caller, ClusterAccess};
use super::download::{Caching, cacheable, etag_of};
use super::extract::{Json, Path};
use crate::app::AppState;
use crate::error::{ApiError, ProblemResponses};
use crate::service;
use crate::store::ServiceAccountKeyRecord;
use crate::token::Scope;

/// A service-account key, public part.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceAccountKeyResponse {
    /// The `kid` of the tokens it signs (base64url SHA-256 of the public key).
    pub key_id: String,
    /// `active` (signs), `retiring` (verifies only) or `retired`.
    pub state: String,
    /// `p256`, `p384` or `rsa`.
    pub algorithm: String,
    pub public_key_pem: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl From<&ServiceAccountKeyRecord> for ServiceAccountKeyResponse {
    fn from(k: &ServiceAccountKeyRecord) -> Self {
        Self {
            key_id: k.key_id.clone(),
            state: k.state.as_str().to_string(),
            algorithm: k.key_algorithm.as_str().to_string(),
            public_key_pem: k.public_pem.clone(),
            created_at: k.created_at,
        }
    }
}

/// Every public key that verifies service-account tokens (the signer's and the retiring ones),
/// PEM: kube-apiserver's `--service-account-key-file`.
#[utoipa::path(
    get, path = "/v1/clusters/{cluster}/service-account/keys.pem", tag = "service-account",
    params(
        ("cluster" = String, Path, description = "Cluster id or name"),
        ("If-None-Match" = Option<String>, Header, description = "ETag of a copy the client has"),
    ),
    responses(
        (status = 200, description = "PEM public keys", content_type = "application/x-pem-file", body = String,
         headers(("ETag" = String))),
        (status = 304, description = "Not modified"),
        ProblemResponses,
    ),
    security((), ("bearer" = []))
)]
pub async fn public_keys(
    State(app): State<AppState>,
    caller: Caller,
    ClusterAccess { snapshot }: ClusterAccess,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.require_public_read(app.settings.public_read)?;
    let pem = service::service_account::public_keys_pem(&app, snapshot.cluster.id).await?;
    let etag = etag_of(pem.as_bytes());
    Ok(cacheable(
        &headers,
        &etag,
        "application/x-pem-file",
        Caching { max_age: Some(60), last_modified: None },
        || pem,
    ))
}

/// The cluster's service-account keys, retired ones included, oldest first.
#[utoipa::path(
    get, path = "/v1/clusters/{cluster}/service-account/keys", tag = "service-account",
    params(("cluster" = String, Path, description = "Cluster id or name")),
    responses((status = 200, body = Vec<ServiceAccountKeyResponse>), ProblemResponses),
    security(("bearer" = []))
)]
pub async fn list_keys(
    State(app): State<AppState>,
    caller: Caller,
    ClusterAccess { snapshot }: ClusterAccess,
) -> Result<Json<Vec<ServiceAccountKeyResponse>>, ApiError> {
    caller.require(Scope::Read)?;
    let keys = service::service_account::list(&app, snapshot.cluster.id).await?;
    Ok(Json(keys.iter().map(ServiceAccountKeyResponse::from).collect()))
}

/// A new signing key (ECDSA P-256): it signs from now on; the previous one keeps verifying
/// (`retiring`) until retired. Admin of the cluster only.
#[utoipa::path(
    post, path = "/v1/clusters/{cluster}/service-account/keys/rotate", tag = "service-account",
    params(("cluster" = String, Path, description = "Cluster id or name")),
    responses((status = 201, body = ServiceAccountKeyResponse), ProblemResponses),
    security(("bearer" = []))
)]
pub async fn rotate_key(
    State(app): State<AppState>,
    caller: Caller,
    ClusterAccess { snapshot }: ClusterAccess,
) -> Result<(axum::http::StatusCode, Json<ServiceAccountKeyResponse>), ApiError> {
    caller.require(Scope::Admin)?;
    let key = service::service_account::add(&app, &caller.as_actor(), snapshot.cluster.id, None).await?;
    Ok((axum::http::StatusCode::CREATED, Json(ServiceAccountKeyResponse::from(&key))))
}

/// An existing signing key to adopt (kubeadm's `sa.key`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportServiceAccountKeyRequest {
    /// RSA (PKCS#1 or PKCS#8) or ECDSA P-256/P-384 (SEC1 or PKCS#8), unencrypted PEM.
    pub private_key_pem: String,
}

impl std::fmt::Debug for ImportServiceAccountKeyRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportServiceAccountKeyRequest").finish_non_exhaustive()
    }
}

/// Adopt an existing signing key (sealed at once, never returned): it signs from now on, the
/// previous one becomes `retiring`. A key kca cannot use is a 422. Admin of the cluster only.
#[utoipa::path(
    post, path = "/v1/clusters/{cluster}/service-account/keys/import", tag = "service-account",
    params(("cluster" = String, Path, description = "Cluster id or name")),
    request_body = ImportServiceAccountKeyRequest,
    responses((status = 201, body = ServiceAccountKeyResponse), ProblemResponses),
    security(("bearer" = []))
)]
pub async fn import_key(
    State(app): State<AppState>,
    caller: Caller,
    ClusterAccess { snapshot }: ClusterAccess,
    Json(request): Json<ImportServiceAccountKeyRequest>,
) -> Result<(axum::http::StatusCode, Json<ServiceAccountKeyResponse>), ApiError> {
    caller.require(Scope::Admin)?;
    let pem = zeroize::Zeroizing::new(request.private_key_pem);
    let key = service::service_account::add(&app, &caller.as_actor(), snapshot.cluster.id, Some(pem)).await?;
    Ok((axum::http::StatusCode::CREATED, Json(ServiceAccountKeyResponse::from(&key))))
}

/// Retire a retiring key: tokens it signed stop verifying. The signing key cannot be retired
/// (409): rotate first. Admin of the cluster only.
#[utoipa::path(
    post, path = "/v1/clusters/{cluster}/service-account/keys/{key_id}/retire", tag = "service-account",
    params(
        ("cluster" = String, Path, description = "Cluster id or name"),
        ("key_id" = String, Path, description = "The key's id (its `kid`)"),
    ),
    responses((status = 204, description = "Retired"), ProblemResponses),
    security(("bearer" = []))
)]
pub async fn retire_key(
    State(app): State<AppState>,
    caller: Caller,
    ClusterAccess { snapshot }: ClusterAccess,
    Path((_cluster, key_id)): Path<(String, String)>,
) -> Result<axum::http::StatusCode, ApiError> {
    caller.require(Scope::Admin)?;
    service::service_account::retire(&app, &caller.as_actor(), snapshot.cluster.id, &key_id).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// The signing key, for `kca pki export` to write as `sa.key` on the control-plane host.
#[derive(Serialize, ToSchema)]
pub struct ServiceAccountSigningKey {
    pub key_id: String,
    /// PKCS#8 PEM. kca answers a private key here only, to an admin, and audits it.
    pub private_key_pem: String,
    /// Every key that verifies, PEM (what `sa.pub` and `--service-account-key-file` hold).
    pub public_keys_pem: String,
}

impl std::fmt::Debug for ServiceAccountSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountSigningKey").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

/// Export the signing key: the one call that answers a private key kca keeps, for `kca pki
/// export` on the control-plane host. Admin of the cluster only; audited
/// (`service_account_key.export`); never cached.
#[utoipa::path(
    post, path = "/v1/clusters/{cluster}/service-account/signing-key/export", tag = "service-account",
    params(("cluster" = String, Path, description = "Cluster id or name")),
    responses((status = 200, body = ServiceAccountSigningKey), ProblemResponses),
    security(("bearer" = []))
)]
pub async fn export_signing_key(
    State(app): State<AppState>,
    caller: Caller,
    ClusterAccess { snapshot }: ClusterAccess,
) -> Result<Response, ApiError> {
    caller.require(Scope::Admin)?;
    let cluster_id = snapshot.cluster.id;
    let (key, private_pem) =
        service::service_account::export_signing_key(&app, &caller.as_actor(), cluster_id).await?;
    let public_keys_pem = service::service_account::public_keys_pem(&app, cluster_id).await?;
    let body = ServiceAccountSigningKey {
        key_id: key.key_id,
        private_key_pem: private_pem.as_str().to_string(),
        public_keys_pem,
    };
    let mut response = Json(body).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
