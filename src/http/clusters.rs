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
use super::error::{ApiError, ProblemResponses};
use super::extract::{Json, Query};
use super::pagination::{PageParams, next_cursor};
use crate::app::AppState;
use crate::clusters::{ClusterDraft, build_cluster, merge_patch, validate_labels, validate_server_url};
use crate::pki::{AuthorityKind, KeyAlgorithm};
use crate::policy::IssuancePolicy;
use crate::published::ClusterSnapshot;
use crate::store::{ClusterRecord, StoreError};
use crate::token::Scope;

/// A cluster to create.
#[derive(Debug, Deserialize, ToSchema)]
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
}

/// A cluster, complete.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterResponse {
    pub id: Uuid,
    pub name: String,
    pub server: String,
    pub key_algorithm: KeyAlgorithm,
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
            })
            .collect();
        Self {
            id: c.id,
            name: c.name.clone(),
            server: c.server.clone(),
            key_algorithm: c.key_algorithm,
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
    let mut draft = ClusterDraft::from(request);
    draft.validate()?;
    require_admin_for_privileged(claims, &IssuancePolicy::default(), &draft.policy)?;
    let now = app.now();
    let crl_validity = app.settings.crl_validity;
    let build_app = app.clone();
    let built = tokio::task::spawn_blocking(move || {
        build_cluster(draft, build_app.keyring.master(), now, crl_validity)
    })
    .await
    .map_err(ApiError::internal)??;
    let cluster = &built.new.cluster;
    let audit = caller.audit(
        now,
        "cluster.create",
        "cluster",
        cluster.id.to_string(),
        Some(cluster.id),
        serde_json::json!({ "name": cluster.name, "server": cluster.server }),
    );
    app.store.create_cluster(&built.new, &audit).await.map_err(|e| match e {
        StoreError::Conflict(_) => {
            ApiError::conflict(format!("a cluster named {:?} already exists", cluster.name))
        }
        other => other.into(),
    })?;
    tracing::info!(cluster.name = %cluster.name, cluster.id = %cluster.id, actor = caller.actor(), "cluster created");
    for (id, signer) in built.signers {
        app.keyring.insert(id, signer);
    }
    for crl in built.new.crls {
        app.published.put_crl(crl);
    }
    let snapshot = app.published.put_cluster(
        app.published.ticket(),
        ClusterSnapshot { cluster: built.new.cluster, authorities: built.new.authorities },
    );
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
    let claims = caller.require(Scope::Read)?;
    let limit = page.limit()?;
    let after = page.cursor()?;
    let only = claims.cluster_restriction();
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
    caller.require(Scope::Read)?;
    let snapshot = load_cluster(&app, &access.snapshot.cluster.id.to_string()).await?;
    Ok(cluster_response(StatusCode::OK, &snapshot))
}

/// How often a change without `If-Match` is merged again when other changes keep winning.
const MAX_MERGE_ATTEMPTS: u32 = 100;

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

fn stale(current: i64) -> ApiError {
    ApiError::precondition_failed(format!(
        "the cluster changed since that version; it is at ETag \"{current}\": read it again"
    ))
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
    let cluster = access.snapshot.cluster.id.to_string();
    // Read, merge, write if the row is still at the version read. Without If-Match, a change that
    // came in between is read and merged again, so that neither change is lost.
    let mut attempts = 0;
    let updated = loop {
        let current = app.store.find_cluster(&cluster).await.map_err(|e| not_found_as(e, &cluster))?;
        if expected.is_some_and(|version| version != current.version) {
            return Err(stale(current.version));
        }
        let updated = apply_patch(&current, patch.clone(), app.now())?;
        require_admin_for_privileged(claims, &current.policy, &updated.policy)?;
        if updated == current {
            break current;
        }
        let audit = caller.audit(
            updated.updated_at,
            "cluster.update",
            "cluster",
            updated.id.to_string(),
            Some(updated.id),
            serde_json::json!({
                "server": updated.server,
                "policy": updated.policy,
                "labels": updated.labels,
                "version": updated.version + 1,
            }),
        );
        match app.store.update_cluster(&updated, &audit).await {
            Ok(()) => {
                tracing::info!(cluster.name = %updated.name, actor = caller.actor(), "cluster updated");
                break updated;
            }
            // Each round one of the racing writers wins, so a writer waits at most for the others
            // once each; the jitter spreads their retries.
            Err(StoreError::Conflict(_)) if expected.is_none() && attempts < MAX_MERGE_ATTEMPTS => {
                attempts += 1;
                let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0] % 8);
                tokio::time::sleep(std::time::Duration::from_millis(1 + jitter)).await;
            }
            Err(StoreError::Conflict(_)) if expected.is_some() => {
                return Err(stale(app.store.find_cluster(&cluster).await?.version));
            }
            Err(StoreError::Conflict(_)) => {
                return Err(ApiError::conflict(
                    "the cluster is being changed by many clients at once; retry",
                ));
            }
            Err(other) => return Err(not_found_as(other, &cluster)),
        }
    };
    let snapshot = app.refresh_snapshot(&updated.id.to_string()).await?;
    Ok(cluster_response(StatusCode::OK, &snapshot))
}

/// The policy fields that decide who may obtain a privileged identity change only with an admin
/// token: a `clusters:write` token cannot widen them.
fn require_admin_for_privileged(
    claims: &crate::token::Claims,
    current: &IssuancePolicy,
    updated: &IssuancePolicy,
) -> Result<(), ApiError> {
    match updated.privileged_fields_differ(current) {
        Some(field) if !claims.is_admin() => Err(ApiError::policy(
            "privileged_policy",
            format!("policy.{field}"),
            format!(
                "changing policy.{field} needs an admin token: it decides who may obtain privileged identities"
            ),
        )),
        _ => Ok(()),
    }
}

fn apply_patch(
    current: &ClusterRecord,
    patch: ClusterPatch,
    now: OffsetDateTime,
) -> Result<ClusterRecord, ApiError> {
    let mut updated = current.clone();
    if let Some(server) = patch.server {
        updated.server = validate_server_url(&server)?;
    }
    if let Some(policy_patch) = patch.policy {
        let mut policy = serde_json::to_value(&current.policy).map_err(ApiError::internal)?;
        merge_patch(&mut policy, policy_patch);
        updated.policy = serde_json::from_value::<IssuancePolicy>(policy)
            .map_err(|e| ApiError::invalid("policy", format!("invalid policy: {e}")))?;
        updated.policy.validate()?;
    }
    if let Some(labels_patch) = patch.labels {
        let mut labels = serde_json::to_value(&current.labels).map_err(ApiError::internal)?;
        merge_patch(&mut labels, labels_patch);
        updated.labels = serde_json::from_value::<BTreeMap<String, String>>(labels)
            .map_err(|e| ApiError::invalid("labels", format!("labels must map strings to strings: {e}")))?;
        validate_labels(&updated.labels)?;
    }
    if updated != *current {
        updated.updated_at = now;
    }
    Ok(updated)
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
    let cluster = access.snapshot.cluster.id.to_string();
    let current = app.store.find_cluster(&cluster).await.map_err(|e| not_found_as(e, &cluster))?;
    if expected.is_some_and(|version| version != current.version) {
        return Err(stale(current.version));
    }
    let authorities = app.store.list_authorities(current.id).await?;
    let audit = caller.audit(
        app.now(),
        "cluster.delete",
        "cluster",
        current.id.to_string(),
        Some(current.id),
        serde_json::json!({ "name": current.name }),
    );
    app.store.delete_cluster(current.id, expected, &audit).await.map_err(|e| match e {
        StoreError::Conflict(_) => stale(current.version + 1),
        other => not_found_as(other, &cluster),
    })?;
    tracing::info!(cluster.name = %current.name, actor = caller.actor(), "cluster deleted");
    app.published.remove_cluster(current.id);
    app.keyring.remove(&authorities.iter().map(|a| a.id).collect::<Vec<_>>());
    Ok(StatusCode::NO_CONTENT)
}
