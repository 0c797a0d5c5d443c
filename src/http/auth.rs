//! Who is calling, and which cluster they may touch.
//!
//! One middleware ([`guard`]) runs before every handler: it authenticates the bearer token (or,
//! without one, the single sign-on session cookie, whose state-changing calls must echo the CSRF
//! token in `X-CSRF-Token`), and on
//! every route under `/v1/clusters/{cluster}` it resolves the cluster and refuses a token that is
//! not valid for it. Handlers of those routes get the cluster only through [`ClusterAccess`],
//! which exists only once the guard has passed, so a new route cannot skip the check.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::error::ApiError;
use crate::published::ClusterSnapshot;
use crate::store::StoreError;
use crate::token::{Claims, Scope};

/// The route prefix of everything that belongs to one cluster.
pub const CLUSTER_ROUTE_PREFIX: &str = "/v1/clusters/{cluster}";

/// The caller of a request. A present but invalid token is refused (401), even on endpoints that
/// need none, so a client learns its token is bad.
#[derive(Clone)]
pub struct Caller {
    claims: Option<Arc<Claims>>,
    pub remote_addr: Option<String>,
    /// Authenticated by the session cookie rather than a bearer token.
    pub via_cookie: bool,
}

/// The cluster a request names, resolved, with the guarantee that the caller's token (if any) is
/// valid for it.
#[derive(Clone)]
pub struct ClusterAccess {
    pub snapshot: Arc<ClusterSnapshot>,
}

/// Authenticate the caller and, on a cluster's routes, check the token against that cluster.
pub async fn guard(State(app): State<AppState>, mut request: Request, next: Next) -> Response {
    let api = request.uri().path().starts_with("/v1/");
    let caller = match Caller::authenticate(&app, request.headers(), request.extensions(), api).await {
        Ok(caller) => caller,
        Err(err) => return err.into_response(),
    };
    // A cookie is sent by the browser whoever made the page: a state-changing call made with it
    // must prove it comes from kca's own page.
    if caller.via_cookie
        && !request.method().is_safe()
        && !super::session::csrf_header_matches(request.headers())
    {
        return ApiError::forbidden(
            "a call authenticated by the session cookie must carry the X-CSRF-Token header (the kca_csrf cookie's value)",
        )
        .into_response();
    }
    let cluster_route = request
        .extensions()
        .get::<MatchedPath>()
        .is_some_and(|path| path.as_str().starts_with(CLUSTER_ROUTE_PREFIX));
    if cluster_route {
        let segment = request.uri().path().split('/').nth(3).unwrap_or_default().to_string();
        match cluster_access(&app, &caller, &segment).await {
            Ok(access) => {
                request.extensions_mut().insert(access);
            }
            Err(err) => return err.into_response(),
        }
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

pub(crate) async fn cluster_access(
    app: &AppState,
    caller: &Caller,
    cluster: &str,
) -> Result<ClusterAccess, ApiError> {
    let refused = || ApiError::forbidden(format!("the token is not valid for cluster {cluster:?}"));
    let restricted = caller.claims().is_some_and(|c| c.cluster_restriction().is_some() || c.person.is_some());
    let snapshot = match app.snapshot(cluster).await {
        Ok(snapshot) => snapshot,
        // A token limited to some clusters learns nothing about the others, not even whether
        // they exist.
        Err(StoreError::NotFound) if restricted => return Err(refused()),
        Err(StoreError::NotFound) => return Err(ApiError::not_found(format!("no cluster {cluster:?}"))),
        Err(err) => return Err(err.into()),
    };
    if let Some(claims) = caller.claims()
        && !claims.allows_cluster(snapshot.cluster.id)
    {
        return Err(refused());
    }
    // A person sees only the clusters whose access rules admit one of their groups.
    if let Some(person) = caller.claims().and_then(|c| c.person.as_ref())
        && !snapshot.cluster.policy.admits(&person.idp_groups)
    {
        return Err(ApiError::forbidden(format!(
            "no access rule of cluster {cluster:?} matches your identity provider groups"
        )));
    }
    Ok(ClusterAccess { snapshot })
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Caller>() {
            Some(caller) => Ok(caller.clone()),
            None => {
                let api = parts.uri.path().starts_with("/v1/");
                Caller::authenticate(state, &parts.headers, &parts.extensions, api).await
            }
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClusterAccess {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<ClusterAccess>()
            .cloned()
            .ok_or_else(|| ApiError::internal("a cluster route is not behind the cluster guard"))
    }
}

impl Caller {
    /// `api`: the request is for the API (`/v1/…`), where a session cookie that no longer works
    /// is refused; elsewhere (the UI's files, the sign-in pages) it is ignored, so that a person
    /// whose session was revoked can load the page and sign in again.
    async fn authenticate(
        app: &AppState,
        headers: &axum::http::HeaderMap,
        extensions: &axum::http::Extensions,
        api: bool,
    ) -> Result<Self, ApiError> {
        let remote_addr = extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip().to_string());
        let mut via_cookie = false;
        let claims = match headers.get(AUTHORIZATION) {
            // No bearer token: the session cookie, if any. One that no longer works (signed out,
            // expired) is refused like a bad token.
            None => match super::session::session_cookie(headers) {
                Some(token) => match app.authenticate(&token).await {
                    Ok(claims) => {
                        via_cookie = true;
                        Some(claims)
                    }
                    Err(e) if api => {
                        return Err(ApiError::unauthorized(format!(
                            "the session has ended; sign in again ({e})"
                        )));
                    }
                    Err(_) => None,
                },
                None => None,
            },
            Some(value) => {
                let text =
                    value.to_str().map_err(|_| ApiError::unauthorized("malformed Authorization header"))?;
                let token = text
                    .strip_prefix("Bearer ")
                    .or_else(|| text.strip_prefix("bearer "))
                    .ok_or_else(|| ApiError::unauthorized("expected Authorization: Bearer <token>"))?;
                Some(app.authenticate(token.trim()).await?)
            }
        };
        Ok(Caller { claims, remote_addr, via_cookie })
    }

    pub fn claims(&self) -> Option<&Claims> {
        self.claims.as_deref()
    }

    /// A token with `scope` (or `admin`): 401 without a token, 403 without the scope.
    pub fn require(&self, scope: Scope) -> Result<&Claims, ApiError> {
        let claims = self
            .claims
            .as_ref()
            .ok_or_else(|| ApiError::unauthorized("this endpoint needs a bearer token"))?;
        if !claims.has_scope(scope) {
            return Err(ApiError::forbidden(format!("the token lacks the {} scope", scope.as_str())));
        }
        Ok(claims)
    }

    /// The `read` scope, or a person signed in through single sign-on (who reads only the
    /// clusters their access rules admit: the guard and the list narrow them).
    pub fn require_read_or_person(&self) -> Result<&Claims, ApiError> {
        match self.claims() {
            Some(claims) if claims.person.is_some() => Ok(claims),
            _ => self.require(Scope::Read),
        }
    }

    /// A token with `scope` valid for every cluster (creating clusters, signing keys).
    pub fn require_unrestricted(&self, scope: Scope) -> Result<&Claims, ApiError> {
        let claims = self.require(scope)?;
        if claims.cluster_restriction().is_some() {
            return Err(ApiError::forbidden(
                "this needs a token valid for every cluster (clusters: [\"*\"])",
            ));
        }
        Ok(claims)
    }

    /// Public material (CA certificates, bundles, CRLs): open to all unless public reads are off,
    /// then a `read` token (the guard checked it is valid for the cluster).
    pub fn require_public_read(&self, public_read: bool) -> Result<(), ApiError> {
        if public_read {
            return Ok(());
        }
        self.require(Scope::Read).map(|_| ())
    }

    /// What rate limits count against: the token (its `jti`), else the subject.
    pub fn token_id(&self) -> &str {
        self.claims
            .as_ref()
            .map_or("anonymous", |c| if c.jti.is_empty() { c.sub.as_str() } else { c.jti.as_str() })
    }

    /// The subject recorded for what this caller does.
    pub fn actor(&self) -> &str {
        self.claims.as_ref().map_or("anonymous", |c| c.sub.as_str())
    }

    /// The caller as the domain operations record it.
    pub fn as_actor(&self) -> crate::service::Actor {
        crate::service::Actor {
            subject: self.actor().to_string(),
            remote_addr: self.remote_addr.clone(),
            token_id: self.token_id().to_string(),
        }
    }
}
