//! `/v1/tokens`: API tokens minted, listed and revoked over the API, and the rotation of the key
//! that signs them. An admin mints tokens no broader than its own.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::Caller;
use super::extract::{Json, Path, Query};
use super::pagination::{PageParams, next_cursor};
use crate::app::AppState;
use crate::error::{ApiError, ProblemResponses};
use crate::names::validate_identity;
use crate::service;
use crate::store::{StoreError, TokenRecord};
use crate::token::{ALL_CLUSTERS, Claims, Scope, TokenRequest};

/// A token to mint.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTokenRequest {
    /// Who the token speaks for: recorded in the audit trail and on every certificate it issues.
    #[schema(example = "ci-deployer")]
    pub subject: String,
    #[schema(example = json!(["kubeconfigs:issue"]))]
    pub scopes: Vec<Scope>,
    /// Cluster names or ids the token may touch, or `["*"]` for all (only from a token valid for
    /// all). Default: the clusters of the token minting it.
    pub clusters: Option<Vec<String>>,
    /// Glob patterns narrowing the groups the token may issue (default: the minting token's).
    pub groups: Option<Vec<String>>,
    /// Longest certificate TTL the token may issue (default: the minting token's).
    #[schema(minimum = 1)]
    pub max_ttl_seconds: Option<u64>,
    /// Lifetime of the token (default one day; at most the server's maximum, 90 days by default,
    /// and never beyond the minting token's own expiry).
    #[schema(minimum = 1)]
    pub ttl_seconds: Option<u64>,
}

/// A registered token (never the token itself, except once, when it is minted).
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub id: Uuid,
    pub subject: String,
    pub scopes: Vec<Scope>,
    /// Cluster ids, or `*`.
    pub clusters: Vec<String>,
    pub groups: Option<Vec<String>>,
    pub max_ttl_seconds: Option<u64>,
    /// Id of the key that signed it.
    pub key_id: i32,
    /// Subject of the token that minted it (`host:<user>` when minted on the server host).
    pub created_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// Last time a replica saw it used (written every few seconds).
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

impl From<TokenRecord> for TokenResponse {
    fn from(r: TokenRecord) -> Self {
        Self {
            id: r.id,
            subject: r.subject,
            scopes: r.scopes,
            clusters: r.clusters,
            groups: r.groups,
            max_ttl_seconds: r.max_ttl,
            key_id: r.key_id,
            created_by: r.created_by,
            created_at: r.created_at,
            expires_at: r.expires_at,
            last_used_at: r.last_used_at,
            revoked_at: r.revoked_at,
        }
    }
}

/// A newly minted token: shown once; kca keeps only its record.
#[derive(Debug, Serialize, ToSchema)]
pub struct MintedTokenResponse {
    /// The bearer token.
    pub token: String,
    #[serde(flatten)]
    pub record: TokenResponse,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenList {
    pub items: Vec<TokenResponse>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SigningKeyResponse {
    /// Id of the key that now signs new tokens (the JWT `kid`).
    pub key_id: i32,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TokenQuery {
    /// Items per page (1-500, default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

const DEFAULT_TTL_SECONDS: u64 = 86_400;

/// Mint a token (admin): no broader than the caller's own in scopes, clusters, groups, TTL bound
/// and lifetime.
#[utoipa::path(
    post, path = "/v1/tokens", tag = "tokens",
    request_body = NewTokenRequest,
    responses(
        (status = 201, body = MintedTokenResponse, headers(("Location" = String, description = "The token's record"))),
        ProblemResponses,
    ),
    security(("bearer" = []))
)]
pub async fn create_token(
    State(app): State<AppState>,
    caller: Caller,
    Json(request): Json<NewTokenRequest>,
) -> Result<Response, ApiError> {
    let claims = caller.require(Scope::Admin)?;
    let request = narrow(&app, claims, request).await?;
    let (token, record) = service::tokens::mint(&app, &caller.as_actor(), &request).await?;
    let location = format!("/v1/tokens/{}", record.id);
    let body = MintedTokenResponse { token, record: record.into() };
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    response.headers_mut().insert(header::LOCATION, HeaderValue::from_str(&location).expect("ascii"));
    Ok(response)
}

/// Check a mint request against the minting token, and resolve cluster names to ids.
async fn narrow(app: &AppState, claims: &Claims, request: NewTokenRequest) -> Result<TokenRequest, ApiError> {
    validate_identity("subject", &request.subject)?;
    if request.scopes.is_empty() {
        return Err(ApiError::invalid("scopes", "at least one scope"));
    }
    let clusters = match request.clusters {
        None => claims.clusters.clone(),
        Some(list) if list.iter().any(|c| c == ALL_CLUSTERS) => {
            if claims.cluster_restriction().is_some() {
                return Err(ApiError::policy(
                    "token_clusters",
                    "clusters",
                    "a token limited to some clusters cannot mint one valid for all",
                ));
            }
            vec![ALL_CLUSTERS.to_string()]
        }
        Some(list) if list.is_empty() => {
            return Err(ApiError::invalid("clusters", "at least one cluster, or \"*\""));
        }
        Some(list) => {
            let mut ids = Vec::with_capacity(list.len());
            for (i, name) in list.iter().enumerate() {
                let snapshot = app.snapshot(name).await.map_err(|e| match e {
                    StoreError::NotFound => {
                        ApiError::invalid(format!("clusters[{i}]"), format!("no cluster {name:?}"))
                    }
                    other => other.into(),
                })?;
                if !claims.allows_cluster(snapshot.cluster.id) {
                    return Err(ApiError::policy(
                        "token_clusters",
                        format!("clusters[{i}]"),
                        format!("this token is not valid for cluster {name:?}"),
                    ));
                }
                ids.push(snapshot.cluster.id.to_string());
            }
            ids.sort();
            ids.dedup();
            ids
        }
    };
    // Left out, the minting token's own bounds apply.
    let groups = match (&claims.groups, request.groups) {
        (None, groups) => groups,
        (Some(own), None) => Some(own.clone()),
        (Some(own), Some(groups)) if groups.iter().all(|g| own.contains(g)) => Some(groups),
        (Some(own), _) => {
            return Err(ApiError::policy(
                "token_groups",
                "groups",
                format!("this token may only mint tokens whose groups are among its own: {own:?}"),
            ));
        }
    };
    if let Some(groups) = &groups {
        for (i, group) in groups.iter().enumerate() {
            if group.is_empty() || group.chars().count() > 128 || group.chars().any(char::is_control) {
                return Err(ApiError::invalid(
                    format!("groups[{i}]"),
                    "each pattern is 1-128 printable characters",
                ));
            }
        }
    }
    let max_ttl = match (claims.max_ttl, request.max_ttl_seconds) {
        (_, Some(0)) => return Err(ApiError::invalid("max_ttl_seconds", "must be at least 1")),
        (None, max_ttl) => max_ttl,
        (Some(own), None) => Some(own),
        (Some(own), Some(max_ttl)) if max_ttl <= own => Some(max_ttl),
        (Some(own), _) => {
            return Err(ApiError::policy(
                "token_max_ttl",
                "max_ttl_seconds",
                format!("this token may only mint tokens with max_ttl_seconds of at most {own}"),
            ));
        }
    };
    let ttl = request.ttl_seconds.unwrap_or(DEFAULT_TTL_SECONDS);
    let max_lifetime = app.tokens.max_lifetime().whole_seconds() as u64;
    if ttl == 0 || ttl > max_lifetime {
        return Err(ApiError::invalid("ttl_seconds", format!("must be between 1 and {max_lifetime}")));
    }
    let remaining = (claims.exp - OffsetDateTime::now_utc().unix_timestamp()).max(0) as u64;
    if ttl > remaining {
        return Err(ApiError::policy(
            "token_lifetime",
            "ttl_seconds",
            format!("a minted token may not outlive the token minting it ({remaining} seconds left)"),
        ));
    }
    Ok(TokenRequest {
        subject: request.subject,
        scopes: request.scopes,
        clusters,
        groups,
        max_ttl,
        ttl: time::Duration::seconds(ttl as i64),
        person: None,
    })
}

/// Whether a caller limited to some clusters may see (and revoke) `record`: only tokens limited to
/// clusters among its own.
fn visible_to(claims: &Claims, record: &TokenRecord) -> bool {
    match claims.cluster_restriction() {
        None => true,
        Some(own) => {
            !record.clusters.is_empty()
                && record.clusters.iter().all(|c| Uuid::parse_str(c).is_ok_and(|id| own.contains(&id)))
        }
    }
}

/// The registered tokens, newest first (admin; a token limited to some clusters sees the tokens
/// limited to those).
#[utoipa::path(
    get, path = "/v1/tokens", tag = "tokens",
    params(TokenQuery),
    responses((status = 200, body = TokenList), ProblemResponses),
    security(("bearer" = []))
)]
pub async fn list_tokens(
    State(app): State<AppState>,
    caller: Caller,
    Query(query): Query<TokenQuery>,
) -> Result<Json<TokenList>, ApiError> {
    let claims = caller.require(Scope::Admin)?;
    let page = PageParams { limit: query.limit, cursor: query.cursor };
    let limit = page.limit()?;
    // What this replica saw used is written first, so the list is current for it.
    if let Err(err) = app.tokens.flush_last_used(app.store.as_ref()).await {
        tracing::warn!(error = %err, "recording token use failed");
    }
    let rows = app.store.list_tokens(page.cursor_number()?, limit).await?;
    let next = next_cursor(rows.len(), limit, rows.last().map(|(seq, _)| seq.to_string()));
    let items = rows.into_iter().map(|(_, r)| r).filter(|r| visible_to(claims, r)).map(Into::into).collect();
    Ok(Json(TokenList { items, next_cursor: next }))
}

/// Revoke a token: refused on its next request, by every replica. An admin revokes what it can
/// see; any token may revoke itself (signing out).
#[utoipa::path(
    delete, path = "/v1/tokens/{id}", tag = "tokens",
    params(("id" = Uuid, Path, description = "Token id (its jti)")),
    responses((status = 204, description = "Revoked"), ProblemResponses),
    security(("bearer" = []))
)]
pub async fn revoke_token(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let claims =
        caller.claims().ok_or_else(|| ApiError::unauthorized("this endpoint needs a bearer token"))?;
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::not_found(format!("no token {id:?}")))?;
    let own = claims.jti == id.to_string();
    if !own {
        caller.require(Scope::Admin)?;
    }
    service::tokens::revoke(&app, &caller.as_actor(), id, |record| own || visible_to(claims, record)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Rotate the token signing key (admin valid for every cluster): new tokens are signed with a new
/// key; tokens signed with the previous ones keep working until they expire.
#[utoipa::path(
    post, path = "/v1/token-keys/rotate", tag = "tokens",
    responses((status = 200, body = SigningKeyResponse), ProblemResponses),
    security(("bearer" = []))
)]
pub async fn rotate_signing_key(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<Json<SigningKeyResponse>, ApiError> {
    caller.require_unrestricted(Scope::Admin)?;
    let key_id = service::tokens::rotate_signing_key(&app, &caller.as_actor()).await?;
    Ok(Json(SigningKeyResponse { key_id }))
}
