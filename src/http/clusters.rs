//! `/v1/clusters`: Terraform-friendly CRUD. Every answer is the complete state of the cluster.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::auth::{Caller, ClusterAccess};
use super::authorities::ImportAuthorityRequest;
use super::extract::{Json, Query};
use super::pagination::{PageParams, next_cursor};
use crate::app::AppState;
use crate::clusters::{CaImport, ClusterChange, ClusterDraft};
use crate::error::{ApiError, ProblemResponses};
use crate::pki::{AuthorityKind, KeyAlgorithm, KeyStorage};
use crate::policy::IssuancePolicy;
use crate::published::ClusterSnapshot;
use crate::service;
use crate::store::StoreError;
use crate::token::Scope;

/// A cluster to create.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewClusterRequest {
    /// Unique name, a DNS label.
    #[schema(example = "prod-eu-1", pattern = "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", max_length = 63)]
    pub name: String,
    /// kube-apiserver URL (https) written into kubeconfigs.
    #[schema(example = "https://k8s.example.com:6443", pattern = "^https://[^/?#@]+(/[^?#]*)?$")]
    pub server: String,
    /// Issuance policy; defaults apply to what is left out.
    pub policy: Option<IssuancePolicy>,
    pub labels: Option<BTreeMap<String, String>>,
    /// Key algorithm of the five CAs (default `p256`).
    pub key_algorithm: Option<KeyAlgorithm>,
    /// Where the keys of the five CAs are kept (default `sealed`): `pkcs11` generates them
    /// inside the server's PKCS#11 token (p256 or p384), which they never leave.
    pub key_storage: Option<KeyStorage>,
    /// Existing CAs to adopt instead of generating them, by kind (e.g. kubeadm's `ca.*` as
    /// `control-plane`): admin only; see `POST .../authorities/{kind}/import`.
    pub authorities: Option<BTreeMap<AuthorityKind, ImportAuthorityRequest>>,
    /// An existing service-account signing key (kubeadm's `sa.key`, PEM) to start with: admin
    /// only; sealed at once, never returned.
    pub service_account_key_pem: Option<String>,
}

/// Without the service-account key (the CAs' keys are redacted by their own type).
impl std::fmt::Debug for NewClusterRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewClusterRequest")
            .field("name", &self.name)
            .field("server", &self.server)
            .field("policy", &self.policy)
            .field("labels", &self.labels)
            .field("key_algorithm", &self.key_algorithm)
            .field("key_storage", &self.key_storage)
            .field("authorities", &self.authorities)
            .field("service_account_key_pem", &self.service_account_key_pem.as_ref().map(|_| ".."))
            .finish()
    }
}

impl From<NewClusterRequest> for ClusterDraft {
    /// The request with the defaults filled in, before validation.
    fn from(request: NewClusterRequest) -> Self {
        ClusterDraft {
            name: request.name,
            server: request.server,
            policy: request.policy.unwrap_or_default(),
            labels: request.labels.unwrap_or_default(),
            key_algorithm: request.key_algorithm.unwrap_or_default(),
            key_storage: request.key_storage.unwrap_or_default(),
            imports: request
                .authorities
                .unwrap_or_default()
                .into_iter()
                .map(|(kind, ca)| (kind, CaImport::from(ca)))
                .collect(),
            service_account_key: request
                .service_account_key_pem
                .map(|pem| crate::clusters::SecretPem(zeroize::Zeroizing::new(pem))),
        }
    }
}

/// A JSON merge patch (RFC 7396) of `server`, `policy` and `labels`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterPatch {
    pub server: Option<String>,
    /// Fields given replace the current ones; others stay.
    #[schema(value_type = Option<Object>)]
    pub policy: Option<serde_json::Value>,
    /// Keys given are set; a key set to `null` is removed.
    #[schema(value_type = Option<Object>)]
    pub labels: Option<serde_json::Value>,
}

/// One CA generation, in short.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuthoritySummary {
    pub kind: AuthorityKind,
    pub generation: i32,
    /// `active`, `retiring` or `retired`.
    pub state: String,
    pub fingerprint_sha256: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// Where this generation's key is kept.
    pub key_storage: KeyStorage,
}

/// A cluster, complete.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterResponse {
    pub id: Uuid,
    pub name: String,
    pub server: String,
    pub key_algorithm: KeyAlgorithm,
    /// Where the keys of its CAs are kept unless a rotation chose otherwise.
    pub key_storage: KeyStorage,
    pub policy: IssuancePolicy,
    pub labels: BTreeMap<String, String>,
    /// The non-retired generations of the five CAs.
    pub authorities: Vec<AuthoritySummary>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl ClusterResponse {
    pub fn from_snapshot(snapshot: &ClusterSnapshot) -> Self {
        let c = &snapshot.cluster;
        let authorities = AuthorityKind::ALL
            .iter()
            .flat_map(|kind| snapshot.live_generations(*kind))
            .map(|a| AuthoritySummary {
                kind: a.kind,
                generation: a.generation,
                state: a.state.as_str().to_string(),
                fingerprint_sha256: a.fingerprint.clone(),
                not_after: a.not_after,
                key_storage: a.key_storage,
            })
            .collect();
        Self {
            id: c.id,
            name: c.name.clone(),
            server: c.server.clone(),
            key_algorithm: c.key_algorithm,
            key_storage: c.key_storage,
            policy: c.policy.clone(),
            labels: c.labels.clone(),
            authorities,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterList {
    pub items: Vec<ClusterResponse>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Read a cluster from the database (the authority on its state) and refresh what is published.
pub(crate) async fn load_cluster(
    app: &AppState,
    id_or_name: &str,
) -> Result<std::sync::Arc<ClusterSnapshot>, ApiError> {
    app.refresh_snapshot(id_or_name).await.map_err(|e| not_found_as(e, id_or_name))
}

pub(crate) fn not_found_as(err: StoreError, id_or_name: &str) -> ApiError {
    match err {
        StoreError::NotFound => ApiError::not_found(format!("no cluster {id_or_name:?}")),
        other => other.into(),
    }
}

/// Create a cluster and its five CAs.
#[utoipa::path(
    post, path = "/v1/clusters", tag = "clusters",
    request_body = NewClusterRequest,
    responses(
        (status = 201, description = "Created", body = ClusterResponse,
         headers(("Location" = String, description = "URL of the new cluster"))),
        ProblemResponses,
    ),
    security(("bearer" = []))
)]
pub async fn create_cluster(
    State(app): State<AppState>,
    caller: Caller,
    Json(request): Json<NewClusterRequest>,
) -> Result<Response, ApiError> {
    // A token limited to some clusters cannot name one that does not exist yet.
    let claims = caller.require_unrestricted(Scope::ClustersWrite)?;
    let snapshot =
        service::clusters::create(&app, &caller.as_actor(), claims, ClusterDraft::from(request)).await?;
    let location = format!("/v1/clusters/{}", snapshot.cluster.id);
    let mut response = cluster_response(StatusCode::CREATED, &snapshot);
    response.headers_mut().insert(header::LOCATION, HeaderValue::from_str(&location).expect("ascii"));
    Ok(response)
}

/// List clusters by name.
#[utoipa::path(
    get, path = "/v1/clusters", tag = "clusters",
    params(PageParams),
    responses((status = 200, body = ClusterList), ProblemResponses),
    security(("bearer" = []))
)]
pub async fn list_clusters(
    State(app): State<AppState>,
    caller: Caller,
    Query(page): Query<PageParams>,
) -> Result<Json<ClusterList>, ApiError> {
    let claims = caller.require_read_or_person()?;
    let limit = page.limit()?;
    let after = page.cursor()?;
    let only = match &claims.person {
        // A person lists the clusters whose access rules admit them.
        Some(person) => Some(
            app.published
                .snapshots()
                .iter()
                .filter(|s| s.cluster.policy.admits(&person.idp_groups))
                .map(|s| s.cluster.id)
                .collect(),
        ),
        None => claims.cluster_restriction(),
    };
    let clusters = app.store.list_clusters(after.as_deref(), only.as_deref(), limit).await?;
    let next = next_cursor(clusters.len(), limit, clusters.last().map(|c| c.name.clone()));
    let mut items = Vec::with_capacity(clusters.len());
    for cluster in clusters {
        // The published snapshot is kept current (changes are announced); re-read the authorities
        // only when the cluster row says the snapshot is behind.
        let snapshot = match app.published.cluster(&cluster.id.to_string()) {
            Some(snapshot) if snapshot.cluster == cluster => snapshot,
            _ => app.refresh_snapshot(&cluster.id.to_string()).await?,
        };
        items.push(ClusterResponse::from_snapshot(&snapshot));
    }
    Ok(Json(ClusterList { items, next_cursor: next }))
}

/// One cluster, by id or name.
#[utoipa::path(
    get, path = "/v1/clusters/{cluster}", tag = "clusters",
    params(("cluster" = String, Path, description = "Cluster id or name")),
    responses(
        (status = 200, body = ClusterResponse, headers(("ETag" = String, description = "The cluster's version"))),
        ProblemResponses,
    ),
    security(("bearer" = []))
)]
pub async fn get_cluster(
    State(app): State<AppState>,
    caller: Caller,
    access: ClusterAccess,
) -> Result<Response, ApiError> {
    caller.require_read_or_person()?;
    let snapshot = load_cluster(&app, &access.snapshot.cluster.id.to_string()).await?;
    Ok(cluster_response(StatusCode::OK, &snapshot))
}

/// A cluster answered with its version as a strong `ETag`, for `If-Match`.
fn cluster_response(status: StatusCode, snapshot: &ClusterSnapshot) -> Response {
    let mut response = (status, Json(ClusterResponse::from_snapshot(snapshot))).into_response();
    let etag = format!("\"{}\"", snapshot.cluster.version);
    response.headers_mut().insert(header::ETAG, HeaderValue::from_str(&etag).expect("digits"));
    response
}

/// The version an `If-Match` header requires (`None` without one; `*` matches any version).
fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else { return Ok(None) };
    let text = value.to_str().map_err(|_| ApiError::bad_request("malformed If-Match header"))?.trim();
    if text == "*" {
        return Ok(None);
    }
    text.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .and_then(|t| t.parse().ok())
        .map(Some)
        .ok_or_else(|| ApiError::bad_request("If-Match must be the cluster's ETag, e.g. \"3\""))
}

/// Change server, policy or labels (JSON merge patch).
#[utoipa::path(
    patch, path = "/v1/clusters/{cluster}", tag = "clusters",
    params(
        ("cluster" = String, Path, description = "Cluster id or name"),
        ("If-Match" = Option<String>, Header, description = "Change only if the cluster is still at this ETag (else 412)"),
    ),
    request_body(content = ClusterPatch, content_type = "application/json"),
    responses(
        (status = 200, body = ClusterResponse, headers(("ETag" = String, description = "The cluster's new version"))),
        ProblemResponses,
    ),
    security(("bearer" = []))
)]
pub async fn update_cluster(
    State(app): State<AppState>,
    caller: Caller,
    access: ClusterAccess,
    headers: HeaderMap,
    Json(patch): Json<ClusterPatch>,
) -> Result<Response, ApiError> {
    let claims = caller.require(Scope::ClustersWrite)?;
    let expected = if_match(&headers)?;
    let change = ClusterChange { server: patch.server, policy: patch.policy, labels: patch.labels };
    let snapshot = service::clusters::update(
        &app,
        &caller.as_actor(),
        claims,
        access.snapshot.cluster.id,
        &change,
        expected,
    )
    .await?;
    Ok(cluster_response(StatusCode::OK, &snapshot))
}

/// Delete a cluster, its CAs (keys destroyed) and certificate records. The audit trail stays.
#[utoipa::path(
    delete, path = "/v1/clusters/{cluster}", tag = "clusters",
    params(
        ("cluster" = String, Path, description = "Cluster id or name"),
        ("If-Match" = Option<String>, Header, description = "Delete only if the cluster is still at this ETag (else 412)"),
    ),
    responses((status = 204, description = "Deleted"), ProblemResponses),
    security(("bearer" = []))
)]
pub async fn delete_cluster(
    State(app): State<AppState>,
    caller: Caller,
    access: ClusterAccess,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    caller.require(Scope::ClustersWrite)?;
    let expected = if_match(&headers)?;
    service::clusters::delete(&app, &caller.as_actor(), access.snapshot.cluster.id, expected).await?;
    Ok(StatusCode::NO_CONTENT)
}
