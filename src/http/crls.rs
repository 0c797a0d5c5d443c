//! Revocation data for proxies: CRLs per CA, per-proxy CA and CRL bundles for HAProxy's `ca-file`
//! and `crl-file`, and the revoked-serial map. All served from memory.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use time::OffsetDateTime;
use utoipa::IntoParams;

use super::auth::{Caller, ClusterAccess};
use super::authorities::parse_kind;
use super::download::{Caching, cacheable, etag_of};
use super::extract::{Path, Query};
use crate::app::AppState;
use crate::error::{ApiError, ProblemResponses};
use crate::pki::AuthorityKind;
use crate::published::{CachedCrl, ClusterSnapshot};

/// The CAs whose clients talk to kube-apiserver through the proxy.
pub const DEFAULT_CLIENT_KINDS: [AuthorityKind; 3] =
    [AuthorityKind::Operators, AuthorityKind::ControlPlane, AuthorityKind::Kubelet];

/// Longest time a client may cache revocation data: a revocation reaches proxies that poll with
/// `If-None-Match` within this bound.
const MAX_AGE_SECONDS: i64 = 60;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KindsQuery {
    /// Comma-separated CA kinds, in the order wanted (default `operators,control-plane,kubelet`).
    pub kinds: Option<String>,
}

impl KindsQuery {
    fn kinds(&self) -> Result<Vec<AuthorityKind>, ApiError> {
        let Some(text) = &self.kinds else { return Ok(DEFAULT_CLIENT_KINDS.to_vec()) };
        let mut kinds = Vec::new();
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let kind = AuthorityKind::parse(name).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "unknown kind {name:?} in kinds; valid: {}",
                    AuthorityKind::valid_list()
                ))
                .with_valid_values(AuthorityKind::ALL.iter().map(|k| k.as_str().to_string()).collect())
            })?;
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        if kinds.is_empty() {
            return Err(ApiError::bad_request("kinds names no CA"));
        }
        Ok(kinds)
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GenerationQuery {
    /// A CA generation; the one that signs by default.
    pub generation: Option<i32>,
}

/// The CRLs of the non-retired generations of `kinds`, in bundle order (that of `ca.pem`).
fn crls_for(
    app: &AppState,
    snapshot: &ClusterSnapshot,
    kinds: &[AuthorityKind],
) -> Result<Vec<std::sync::Arc<CachedCrl>>, ApiError> {
    kinds
        .iter()
        .flat_map(|kind| snapshot.live_generations(*kind))
        .map(|authority| {
            app.published.crl(authority.id).ok_or_else(|| {
                ApiError::unavailable(
                    format!(
                        "the CRL of {} generation {} is not loaded yet",
                        authority.kind, authority.generation
                    ),
                    5,
                )
            })
        })
        .collect()
}

/// Caching headers of revocation data: fresh for at most a minute, never beyond nextUpdate.
fn crl_caching(crls: &[std::sync::Arc<CachedCrl>], now: OffsetDateTime) -> Caching {
    let next_update = crls.iter().map(|c| c.record.next_update).min();
    let this_update = crls.iter().map(|c| c.record.this_update).max();
    let max_age = next_update.map_or(0, |next| (next - now).whole_seconds().clamp(0, MAX_AGE_SECONDS));
    Caching { max_age: Some(max_age as u64), last_modified: this_update.map(http_date) }
}

/// An IMF-fixdate, as HTTP wants it.
pub fn http_date(at: OffsetDateTime) -> String {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    at.to_offset(time::UtcOffset::UTC).format(&format).expect("a date always formats")
}

/// The PEM of several CRLs as one body; one CRL is shared, not copied.
fn concatenate(crls: &[std::sync::Arc<CachedCrl>]) -> bytes::Bytes {
    match crls {
        [one] => one.pem().clone(),
        many => many.iter().flat_map(|c| c.pem().iter().copied()).collect::<Vec<u8>>().into(),
    }
}

fn combined_etag(crls: &[std::sync::Arc<CachedCrl>]) -> String {
    let joined: String = crls.iter().map(|c| c.etag.as_str()).collect();
    etag_of(joined.as_bytes())
}

/// The CRL of one CA generation, DER.
#[utoipa::path(
    get, path = "/v1/clusters/{cluster}/authorities/{kind}/crl", tag = "revocation",
    params(
        ("cluster" = String, Path, description = "Cluster id or name"),
        ("kind" = AuthorityKind, Path, description = "etcd, control-plane, operators, kubelet or aggregation"),
        GenerationQuery,
        ("If-None-Match" = Option<String>, Header, description = "ETag of a copy the client has"),
    ),
    responses(
        (status = 200, description = "DER CRL", content_type = "application/pkix-crl", body = Vec<u8>,
         headers(("ETag" = String), ("Last-Modified" = String), ("Cache-Control" = String))),
        (status = 304, description = "Not modified"),
        ProblemResponses,
    ),
    security((), ("bearer" = []))
)]
pub async fn crl_der(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ClusterAccess { snapshot }: ClusterAccess,
    Path((_cluster, kind)): Path<(String, String)>,
    Query(query): Query<GenerationQuery>,
) -> Result<Response, ApiError> {
    let kind = parse_kind(&kind)?;
    caller.require_public_read(app.settings.public_read)?;
    let authority = match query.generation {
        None => snapshot.signer(kind),
        Some(generation) => snapshot.live_generations(kind).into_iter().find(|a| a.generation == generation),
    }
    .ok_or_else(|| ApiError::not_found(format!("no live generation of the {kind} CA matches")))?;
    let crl = app
        .published
        .crl(authority.id)
        .ok_or_else(|| ApiError::unavailable("the CRL is not loaded yet", 5))?;
    let caching = crl_caching(std::slice::from_ref(&crl), app.now());
    Ok(cacheable(&headers, &crl.etag, "application/pkix-crl", caching, || crl.der.clone()))
}

/// The CRLs of every non-retired generation of a CA, PEM, in the order of `ca.pem`.
#[utoipa::path(
    get, path = "/v1/clusters/{cluster}/authorities/{kind}/crl.pem", tag = "revocation",
    params(
        ("cluster" = String, Path, description = "Cluster id or name"),
        ("kind" = AuthorityKind, Path, description = "etcd, control-plane, operators, kubelet or aggregation"),
        ("If-None-Match" = Option<String>, Header, description = "ETag of a copy the client has"),
    ),
    responses(
        (status = 200, description = "PEM CRLs", content_type = "application/x-pem-file", body = String,
         headers(("ETag" = String), ("Last-Modified" = String), ("Cache-Control" = String))),
        (status = 304, description = "Not modified"),
        ProblemResponses,
    ),
    security((), ("bearer" = []))
)]
pub async fn crl_pem(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ClusterAccess { snapshot }: ClusterAccess,
    Path((_cluster, kind)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let kind = parse_kind(&kind)?;
    caller.require_public_read(app.settings.public_read)?;
    let crls = crls_for(&app, &snapshot, &[kind])?;
    let caching = crl_caching(&crls, app.now());
    Ok(cacheable(&headers, &combined_etag(&crls), "application/x-pem-file", caching, || concatenate(&crls)))
}

/// CA bundle for HAProxy's `ca-file`: the non-retired generations of the client CAs.
#[utoipa::path(
    get, path = "/v1/clusters/{cluster}/client-ca.pem", tag = "revocation",
    params(
        ("cluster" = String, Path, description = "Cluster id or name"),
        KindsQuery,
        ("If-None-Match" = Option<String>, Header, description = "ETag of a copy the client has"),
    ),
    responses(
        (status = 200, description = "PEM CA bundle", content_type = "application/x-pem-file", body = String,
         headers(("ETag" = String))),
        (status = 304, description = "Not modified"),
        ProblemResponses,
    ),
    security((), ("bearer" = []))
)]
pub async fn client_ca(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ClusterAccess { snapshot }: ClusterAccess,
    Query(query): Query<KindsQuery>,
) -> Result<Response, ApiError> {
    let kinds = query.kinds()?;
    caller.require_public_read(app.settings.public_read)?;
    let bundle = snapshot.ca_bundle(&kinds);
    let etag = etag_of(bundle.as_bytes());
    Ok(cacheable(
        &headers,
        &etag,
        "application/x-pem-file",
        Caching { max_age: Some(60), last_modified: None },
        || bundle,
    ))
}

/// CRL bundle for HAProxy's `crl-file`: exactly one CRL per certificate of `client-ca.pem`, in
/// the same order.
#[utoipa::path(
    get, path = "/v1/clusters/{cluster}/client-crl.pem", tag = "revocation",
    params(
        ("cluster" = String, Path, description = "Cluster id or name"),
        KindsQuery,
        ("If-None-Match" = Option<String>, Header, description = "ETag of a copy the client has"),
    ),
    responses(
        (status = 200, description = "PEM CRLs", content_type = "application/x-pem-file", body = String,
         headers(("ETag" = String), ("Last-Modified" = String), ("Cache-Control" = String))),
        (status = 304, description = "Not modified"),
        ProblemResponses,
    ),
    security((), ("bearer" = []))
)]
pub async fn client_crl(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ClusterAccess { snapshot }: ClusterAccess,
    Query(query): Query<KindsQuery>,
) -> Result<Response, ApiError> {
    let kinds = query.kinds()?;
    caller.require_public_read(app.settings.public_read)?;
    let crls = crls_for(&app, &snapshot, &kinds)?;
    let caching = crl_caching(&crls, app.now());
    Ok(cacheable(&headers, &combined_etag(&crls), "application/x-pem-file", caching, || concatenate(&crls)))
}

/// HAProxy map of revoked serials (`<SERIAL HEX UPPERCASE> <reason>` a line), for denying a
/// revoked certificate on every request, also on connections opened before the revocation.
#[utoipa::path(
    get, path = "/v1/clusters/{cluster}/revoked.map", tag = "revocation",
    params(
        ("cluster" = String, Path, description = "Cluster id or name"),
        KindsQuery,
        ("If-None-Match" = Option<String>, Header, description = "ETag of a copy the client has"),
    ),
    responses(
        (status = 200, description = "HAProxy map file", content_type = "text/plain", body = String,
         headers(("ETag" = String))),
        (status = 304, description = "Not modified"),
        ProblemResponses,
    ),
    security((), ("bearer" = []))
)]
pub async fn revoked_map(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ClusterAccess { snapshot }: ClusterAccess,
    Query(query): Query<KindsQuery>,
) -> Result<Response, ApiError> {
    let kinds = query.kinds()?;
    caller.require_public_read(app.settings.public_read)?;
    let crls = crls_for(&app, &snapshot, &kinds)?;
    let now = app.now();
    let authority_ids: Vec<_> =
        kinds.iter().flat_map(|kind| snapshot.live_generations(*kind)).map(|a| a.id).collect();
    let mut body = String::new();
    match app.store.list_revoked_serials(&authority_ids, now).await {
        Ok(revoked) => {
            for (serial, reason) in revoked {
                body.push_str(&format!("{serial} {}\n", reason.as_str()));
            }
        }
        // Without the database, the CRLs in memory list the same serials, plus those that expired
        // less than one CRL validity ago (harmless: expired certificates fail anyway).
        Err(err) => {
            if !err.is_unavailable() {
                tracing::warn!(error = %err, "reading revoked serials failed; serving them from the CRLs");
            }
            for crl in &crls {
                for line in crl.map_lines().map_err(ApiError::internal)? {
                    body.push_str(line);
                    body.push('\n');
                }
            }
        }
    }
    let caching = crl_caching(&crls, now);
    let etag = etag_of(body.as_bytes());
    Ok(cacheable(&headers, &etag, "text/plain; charset=utf-8", caching, || body))
}
