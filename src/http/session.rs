//! Single sign-on over HTTP: the browser's sign-in (`/auth/login` → the provider →
//! `/auth/callback`), the device grant `kca login` uses (`/v1/auth/device…`), `GET /v1/me`, and
//! sign-out. The session is a registered kca token in an HttpOnly, Secure, SameSite=Strict
//! cookie; its CSRF token (in the `kca_csrf` cookie, readable by the page) is derived from it.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::extract::Json;
use crate::app::AppState;
use crate::error::{ApiError, ProblemResponses};
use crate::oidc::login::{
    CLI_CODE_TTL_SECONDS, CliCode, CliLogin, DeviceState, LOGIN_TTL_SECONDS, LoginState, loopback_callback,
    person, safe_return_path,
};
use crate::oidc::{DevicePoll, Oidc, OidcError, pkce_challenge, random_text};
use crate::service;
use crate::token::{Person, Scope};

pub const SESSION_COOKIE: &str = "kca_session";
pub const CSRF_COOKIE: &str = "kca_csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";
const LOGIN_COOKIE: &str = "kca_login";

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The session token of the cookie, if the request carries one.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    cookie(headers, SESSION_COOKIE)
}

/// The CSRF token of a session: bound to it, so no other site can plant a matching pair.
pub fn csrf_token(session: &str) -> String {
    let digest =
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, format!("kca-csrf:{session}").as_bytes());
    URL_SAFE_NO_PAD.encode(digest)
}

/// Whether `X-CSRF-Token` carries the CSRF token of the session cookie.
pub fn csrf_header_matches(headers: &HeaderMap) -> bool {
    match (session_cookie(headers), headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok())) {
        (Some(session), Some(sent)) => {
            crate::oidc::id_token::constant_time_eq(csrf_token(&session).as_bytes(), sent.trim().as_bytes())
        }
        _ => false,
    }
}

fn set_cookie(response: &mut Response, value: String) {
    response
        .headers_mut()
        .append(header::SET_COOKIE, HeaderValue::from_str(&value).expect("cookie text is ASCII"));
}

fn session_cookies(response: &mut Response, token: &str, max_age: i64) {
    set_cookie(
        response,
        format!("{SESSION_COOKIE}={token}; Path=/; Max-Age={max_age}; HttpOnly; Secure; SameSite=Strict"),
    );
    set_cookie(
        response,
        format!("{CSRF_COOKIE}={}; Path=/; Max-Age={max_age}; Secure; SameSite=Strict", csrf_token(token)),
    );
}

fn clear_session_cookies(response: &mut Response) {
    set_cookie(response, format!("{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict"));
    set_cookie(response, format!("{CSRF_COOKIE}=; Path=/; Max-Age=0; Secure; SameSite=Strict"));
}

const PAGE_CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// A small page for the browser sign-in's outcome (no script).
fn page(status: StatusCode, title: &str, message: &str) -> Response {
    let escape = |text: &str| {
        text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
    };
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>kca — {title}</title>\
         <link rel=\"stylesheet\" href=\"/app.css\"></head><body><main class=\"card narrow\">\
         <h1>{title}</h1><p id=\"sso-message\">{message}</p>\
         <p><a href=\"/auth/login\">Try again</a> · <a href=\"/\">Back to kca</a> (operators may still sign in with a token)</p>\
         </main></body></html>\n",
        title = escape(title),
        message = escape(message),
    );
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(PAGE_CSP));
    response
}

fn sso(app: &AppState) -> Result<&Oidc, ApiError> {
    app.oidc.as_deref().ok_or_else(|| ApiError::not_found("single sign-on is not configured on this kca"))
}

/// kca's callback URL: from `KCA_PUBLIC_URL`, else from the URL the request reached.
fn redirect_uri(
    app: &AppState,
    oidc: &Oidc,
    headers: &HeaderMap,
    uri: &axum::http::Uri,
) -> Result<String, ApiError> {
    if let Some(base) = &oidc.settings.public_url {
        return Ok(format!("{}/auth/callback", base.as_str().trim_end_matches('/')));
    }
    let host = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| headers.get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_string))
        .filter(|h| h.parse::<axum::http::uri::Authority>().is_ok())
        .ok_or_else(|| ApiError::bad_request("the request names no valid Host"))?;
    let scheme = if app.settings.hsts { "https" } else { "http" };
    Ok(format!("{scheme}://{host}/auth/callback"))
}

fn oidc_failure(err: &OidcError) -> Response {
    match err {
        OidcError::Unavailable(detail) => {
            tracing::warn!(error = %detail, "single sign-on: the identity provider is unavailable");
            page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Sign-in is unavailable",
                &format!(
                    "The identity provider cannot be reached right now ({detail}). Sessions already signed in keep working; try again later."
                ),
            )
        }
        other => {
            tracing::info!(error = %other, "single sign-on refused");
            page(StatusCode::UNAUTHORIZED, "Sign-in refused", &other.to_string())
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LoginQuery {
    /// Where to return after sign-in: a path of this origin (default `/`).
    pub return_to: Option<String>,
    /// For `kca login` without a device grant: its loopback listener
    /// (`http://127.0.0.1:<port>/…`), which gets a one-time code instead of a session cookie.
    pub cli_callback: Option<String>,
    /// With `cli_callback`: the CLI's PKCE challenge (S256) that redeeming the code needs.
    pub cli_challenge: Option<String>,
}

/// Start a browser sign-in: redirect to the identity provider (authorization code with PKCE).
#[utoipa::path(
    get, path = "/auth/login", tag = "auth",
    params(LoginQuery),
    responses(
        (status = 303, description = "To the identity provider's sign-in page"),
        (status = 404, description = "Single sign-on is not configured"),
        (status = 503, description = "The identity provider cannot be reached (an HTML page says so)"),
    ),
)]
pub async fn login(
    State(app): State<AppState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Query(query): Query<LoginQuery>,
) -> Response {
    // A person's browser lands here: a page, not a problem document.
    let Ok(oidc) = sso(&app) else {
        return page(
            StatusCode::NOT_FOUND,
            "Single sign-on is off",
            "This kca has no identity provider configured: ask an operator for a token.",
        );
    };
    let redirect_uri = match redirect_uri(&app, oidc, &headers, &uri) {
        Ok(uri) => uri,
        Err(err) => return err.into_response(),
    };
    let discovery = match oidc.fresh_discovery().await {
        Ok(discovery) => discovery,
        Err(err) => return oidc_failure(&err),
    };
    let cli = match (query.cli_callback.as_deref(), query.cli_challenge.as_deref()) {
        (None, None) => None,
        (Some(callback), Some(challenge))
            if challenge.len() == 43
                && challenge.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            match loopback_callback(callback) {
                Some(callback) => Some(CliLogin { callback, challenge: challenge.to_string() }),
                None => {
                    return ApiError::invalid("cli_callback", "must be http://127.0.0.1:<port>/…")
                        .into_response();
                }
            }
        }
        _ => {
            return ApiError::invalid(
                "cli_challenge",
                "cli_callback needs cli_challenge, a PKCE S256 challenge",
            )
            .into_response();
        }
    };
    let state = LoginState {
        cli,
        state: random_text(24),
        nonce: random_text(24),
        verifier: random_text(48),
        return_to: safe_return_path(query.return_to.as_deref()),
        redirect_uri,
        expires_at: OffsetDateTime::now_utc().unix_timestamp() + LOGIN_TTL_SECONDS,
    };
    let mut target = match url::Url::parse(&discovery.authorization_endpoint) {
        Ok(url) => url,
        Err(_) => {
            return oidc_failure(&OidcError::Unavailable("its authorization endpoint is not a URL".into()));
        }
    };
    target
        .query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &oidc.settings.client_id)
        .append_pair("redirect_uri", &state.redirect_uri)
        .append_pair("scope", &oidc.scopes())
        .append_pair("state", &state.state)
        .append_pair("nonce", &state.nonce)
        .append_pair("code_challenge", &pkce_challenge(&state.verifier))
        .append_pair("code_challenge_method", "S256");
    let mut response = StatusCode::SEE_OTHER.into_response();
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_str(target.as_str()).expect("a URL is ASCII"));
    // Lax, not Strict: the provider's redirect back is a cross-site navigation.
    set_cookie(
        &mut response,
        format!(
            "{LOGIN_COOKIE}={}; Path=/auth; Max-Age={LOGIN_TTL_SECONDS}; HttpOnly; Secure; SameSite=Lax",
            state.seal(app.keyring.master())
        ),
    );
    response
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackQuery {
    pub code: Option<String>,
    pub state: Option<String>,
    /// Set by the provider when the sign-in failed there.
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// The identity provider's redirect back: check `state` against the sign-in cookie, redeem the
/// code with the PKCE verifier, check the ID token and its nonce, and start the session.
#[utoipa::path(
    get, path = "/auth/callback", tag = "auth",
    params(CallbackQuery),
    responses(
        (status = 303, description = "Signed in: session cookies set, back to the page the sign-in started from"),
        (status = 400, description = "A sign-in this browser did not start, or one already finished"),
        (status = 401, description = "The provider's answer was refused"),
        (status = 403, description = "The person may not use kca"),
        (status = 404, description = "Single sign-on is not configured"),
        (status = 503, description = "The identity provider cannot be reached"),
    ),
)]
pub async fn callback(
    State(app): State<AppState>,
    headers: HeaderMap,
    caller: Caller,
    Query(query): Query<CallbackQuery>,
) -> Response {
    // A person's browser lands here: a page, not a problem document.
    let Ok(oidc) = sso(&app) else {
        return page(
            StatusCode::NOT_FOUND,
            "Single sign-on is off",
            "This kca has no identity provider configured: ask an operator for a token.",
        );
    };
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let bad = |message: &str| page(StatusCode::BAD_REQUEST, "Sign-in failed", message);
    let Some(login) =
        cookie(&headers, LOGIN_COOKIE).and_then(|c| LoginState::open(app.keyring.master(), &c, now))
    else {
        return bad(
            "This browser did not start this sign-in, or it took more than ten minutes. Start again.",
        );
    };
    let state_matches = query
        .state
        .as_deref()
        .is_some_and(|s| crate::oidc::id_token::constant_time_eq(s.as_bytes(), login.state.as_bytes()));
    if !state_matches {
        return bad(
            "The sign-in answer does not belong to the sign-in this browser started (state mismatch).",
        );
    }
    if let Some(error) = &query.error {
        let description = query.error_description.as_deref().unwrap_or_default();
        let text: String =
            format!("{error} {description}").chars().filter(|c| !c.is_control()).take(200).collect();
        return page(
            StatusCode::UNAUTHORIZED,
            "Sign-in refused",
            &format!("The identity provider answered: {text}"),
        );
    }
    let Some(code) = query.code.as_deref().filter(|c| !c.is_empty()) else {
        return bad("The identity provider sent no authorization code.");
    };
    if !oidc.consume(&login.state, login.expires_at, now) {
        return bad("This sign-in has already been used (a replayed answer).");
    }
    let claims = match oidc.redeem_code(code, &login.verifier, &login.redirect_uri, &login.nonce).await {
        Ok(claims) => claims,
        Err(err) => return oidc_failure(&err),
    };
    let person = match person(&oidc.settings, &claims, now) {
        Ok(person) => person,
        Err(why) => return page(StatusCode::FORBIDDEN, "You may not use kca", &why),
    };
    // A `kca login` sign-in: the browser carries a one-time code, bound to the CLI's PKCE
    // challenge, to the CLI's loopback listener; the CLI redeems it for the session.
    if let Some(cli) = &login.cli {
        let code = CliCode {
            id: random_text(16),
            person,
            challenge: cli.challenge.clone(),
            expires_at: now + CLI_CODE_TTL_SECONDS,
        }
        .seal(app.keyring.master());
        let mut target = url::Url::parse(&cli.callback).expect("checked when the sign-in started");
        target.query_pairs_mut().append_pair("code", &code);
        let mut response = StatusCode::SEE_OTHER.into_response();
        response
            .headers_mut()
            .insert(header::LOCATION, HeaderValue::from_str(target.as_str()).expect("a URL is ASCII"));
        set_cookie(
            &mut response,
            format!("{LOGIN_COOKIE}=; Path=/auth; Max-Age=0; HttpOnly; Secure; SameSite=Lax"),
        );
        return response;
    }
    let (token, record) = match service::sessions::sign_in(
        &app,
        person,
        oidc.settings.session_ttl,
        caller.remote_addr.clone(),
        "browser",
    )
    .await
    {
        Ok(minted) => minted,
        Err(err) => return err.into_response(),
    };
    let mut response = StatusCode::SEE_OTHER.into_response();
    response.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&login.return_to).unwrap_or(HeaderValue::from_static("/")),
    );
    session_cookies(&mut response, &token, (record.expires_at.unix_timestamp() - now).max(0));
    set_cookie(
        &mut response,
        format!("{LOGIN_COOKIE}=; Path=/auth; Max-Age=0; HttpOnly; Secure; SameSite=Lax"),
    );
    response
}

/// End the caller's session: its token is revoked (here, and on every replica once they hear)
/// and the cookies are cleared. Works with the cookie (and its CSRF header) or the session's
/// bearer token; an API token is not a session (revoke it with `DELETE /v1/tokens/{id}`), so an
/// automation token that calls this by mistake keeps working.
#[utoipa::path(
    post, path = "/auth/logout", tag = "auth",
    responses((status = 204, description = "Signed out"), ProblemResponses),
    security(("bearer" = []))
)]
pub async fn logout(State(app): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let claims = caller.claims().ok_or_else(|| ApiError::unauthorized("not signed in"))?;
    if claims.person.is_none() {
        return Err(ApiError::bad_request(
            "this token is not a single sign-on session; revoke an API token with DELETE /v1/tokens/{id}",
        ));
    }
    let id = uuid::Uuid::parse_str(&claims.jti).map_err(|_| ApiError::bad_request("malformed token id"))?;
    service::tokens::revoke(&app, &caller.as_actor(), id, |_| true).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    clear_session_cookies(&mut response);
    Ok(response)
}

/// Who the caller is.
#[derive(Debug, Serialize, ToSchema)]
pub struct MeResponse {
    /// The token's subject (for a person: their Kubernetes user name).
    pub subject: String,
    pub scopes: Vec<Scope>,
    /// Cluster ids the token may touch, or `*`.
    pub clusters: Vec<String>,
    /// Group patterns the token is limited to.
    pub groups: Option<Vec<String>>,
    /// For a person signed in through single sign-on: the identity provider's claims.
    pub person: Option<Person>,
    /// For a person: the names of the clusters whose access rules admit them.
    pub visible_clusters: Option<Vec<String>>,
    /// Whether the call was authenticated by the session cookie.
    pub session_cookie: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// Who the caller is: subject, identity claims, groups, scopes and clusters.
#[utoipa::path(
    get, path = "/v1/me", tag = "auth",
    responses((status = 200, body = MeResponse), ProblemResponses),
    security(("bearer" = []))
)]
pub async fn me(State(app): State<AppState>, caller: Caller) -> Result<Json<MeResponse>, ApiError> {
    let claims = caller
        .claims()
        .ok_or_else(|| ApiError::unauthorized("this endpoint needs a bearer token or a session"))?;
    let visible_clusters = claims.person.as_ref().map(|person| {
        let mut names: Vec<String> = app
            .published
            .snapshots()
            .iter()
            .filter(|s| s.cluster.policy.admits(&person.idp_groups))
            .map(|s| s.cluster.name.clone())
            .collect();
        names.sort();
        names
    });
    Ok(Json(MeResponse {
        subject: claims.sub.clone(),
        scopes: claims.scopes.clone(),
        clusters: claims.clusters.clone(),
        groups: claims.groups.clone(),
        person: claims.person.clone(),
        visible_clusters,
        session_cookie: caller.via_cookie,
        expires_at: OffsetDateTime::from_unix_timestamp(claims.exp).map_err(ApiError::internal)?,
    }))
}

/// A device sign-in started: show the person where to go and what to type.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceStartResponse {
    /// What to poll `POST /v1/auth/device/token` with (opaque).
    pub handle: String,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: Option<String>,
    pub expires_in: u64,
    /// Seconds to wait between polls.
    pub interval: u64,
}

/// Start a device sign-in (RFC 8628) at the identity provider, for `kca login`: kca is the
/// provider's client, so the CLI needs neither the provider's CA nor a client secret.
#[utoipa::path(
    post, path = "/v1/auth/device", tag = "auth",
    responses((status = 200, body = DeviceStartResponse), ProblemResponses),
)]
pub async fn device_start(State(app): State<AppState>) -> Result<Json<DeviceStartResponse>, ApiError> {
    let oidc = sso(&app)?;
    let device = oidc.start_device().await.map_err(api_error)?;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let expires_in = device.expires_in.clamp(1, 1800);
    let handle = DeviceState { device_code: device.device_code, expires_at: now + expires_in as i64 }
        .seal(app.keyring.master());
    Ok(Json(DeviceStartResponse {
        handle,
        user_code: device.user_code,
        verification_uri: device.verification_uri,
        verification_uri_complete: device.verification_uri_complete,
        expires_in,
        interval: device.interval.unwrap_or(5).clamp(1, 60),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceTokenRequest {
    /// The `handle` of `POST /v1/auth/device`.
    pub handle: String,
}

/// The session a device sign-in ended with, or that it is still pending.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceTokenResponse {
    /// `pending` (poll again after `interval` seconds) or `complete`.
    pub status: String,
    pub interval: Option<u64>,
    /// The session token (only when complete; shown once).
    pub token: Option<String>,
    pub subject: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
}

/// Poll a device sign-in: 202 while the person has not approved it yet, 200 with the session
/// token once they have.
#[utoipa::path(
    post, path = "/v1/auth/device/token", tag = "auth",
    request_body = DeviceTokenRequest,
    responses(
        (status = 200, body = DeviceTokenResponse, description = "Signed in"),
        (status = 202, body = DeviceTokenResponse, description = "Not approved yet"),
        ProblemResponses,
    ),
)]
pub async fn device_token(
    State(app): State<AppState>,
    caller: Caller,
    Json(request): Json<DeviceTokenRequest>,
) -> Result<Response, ApiError> {
    let oidc = sso(&app)?;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let device = DeviceState::open(app.keyring.master(), &request.handle, now)
        .ok_or_else(|| ApiError::invalid("handle", "unknown or expired device sign-in; start again"))?;
    match oidc.poll_device(&device.device_code).await.map_err(api_error)? {
        DevicePoll::Pending { slow_down } => {
            let body = DeviceTokenResponse {
                status: "pending".into(),
                interval: Some(if slow_down { 10 } else { 5 }),
                token: None,
                subject: None,
                expires_at: None,
            };
            Ok((StatusCode::ACCEPTED, Json(body)).into_response())
        }
        DevicePoll::Done(claims) => {
            let person = person(&oidc.settings, &claims, now).map_err(ApiError::forbidden)?;
            let (token, record) = service::sessions::sign_in(
                &app,
                person,
                oidc.settings.session_ttl,
                caller.remote_addr.clone(),
                "device",
            )
            .await?;
            let body = DeviceTokenResponse {
                status: "complete".into(),
                interval: None,
                token: Some(token),
                subject: Some(record.subject),
                expires_at: Some(record.expires_at),
            };
            Ok((StatusCode::OK, Json(body)).into_response())
        }
    }
}

fn api_error(err: OidcError) -> ApiError {
    match err {
        OidcError::NoDeviceGrant => ApiError::policy(
            "device_grant_unavailable",
            "grant",
            "the identity provider offers no device authorization grant: sign in through a browser \
             (kca login does so with a loopback redirect)",
        ),
        OidcError::Unavailable(detail) => {
            tracing::warn!(error = %detail, "single sign-on: the identity provider is unavailable");
            ApiError::unavailable(format!("the identity provider is unavailable: {detail}"), 10)
        }
        OidcError::Identity(detail) => ApiError::forbidden(detail),
        other => ApiError::unauthorized(other.to_string()),
    }
}

/// Renew the caller's session (a person's, by cookie or bearer): a new session token for the same
/// person, the old one revoked. Renewed sessions never outlive `KCA_OIDC_SESSION_MAX` after the
/// sign-in at the provider; past it, the person signs in again.
#[utoipa::path(
    post, path = "/v1/auth/session/refresh", tag = "auth",
    responses((status = 200, body = DeviceTokenResponse, description = "The new session"), ProblemResponses),
    security(("bearer" = []))
)]
pub async fn refresh(State(app): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let oidc = sso(&app)?;
    let claims = caller.claims().ok_or_else(|| ApiError::unauthorized("not signed in"))?;
    let person = claims
        .person
        .clone()
        .ok_or_else(|| ApiError::forbidden("only a single sign-on session can be renewed"))?;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let max = i64::try_from(oidc.settings.session_max.as_secs()).unwrap_or(i64::MAX);
    let ttl = i64::try_from(oidc.settings.session_ttl.as_secs()).unwrap_or(i64::MAX);
    let until = (now.saturating_add(ttl)).min(person.auth_time.saturating_add(max));
    // A renewal worth having: at least a minute (or the whole lifetime, when that is shorter).
    if until - now < ttl.min(60) {
        return Err(ApiError::unauthorized("the sign-in is too old to be renewed; sign in again"));
    }
    let old = uuid::Uuid::parse_str(&claims.jti).map_err(|_| ApiError::bad_request("malformed token id"))?;
    let (token, record) = service::sessions::sign_in(
        &app,
        person,
        std::time::Duration::from_secs((until - now) as u64),
        caller.remote_addr.clone(),
        "refresh",
    )
    .await?;
    service::tokens::revoke(&app, &caller.as_actor(), old, |_| true).await?;
    let body = DeviceTokenResponse {
        status: "complete".into(),
        interval: None,
        token: Some(token.clone()),
        subject: Some(record.subject),
        expires_at: Some(record.expires_at),
    };
    let mut response = (StatusCode::OK, Json(body)).into_response();
    if caller.via_cookie {
        session_cookies(&mut response, &token, until - now);
    }
    Ok(response)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CliTokenRequest {
    /// The `code` kca sent to the CLI's loopback listener.
    pub code: String,
    /// The PKCE verifier whose S256 challenge the CLI passed to `/auth/login`.
    pub verifier: String,
}

/// Redeem the one-time code of a `kca login` loopback sign-in for the session token (once, with
/// the PKCE verifier of the CLI that started it).
#[utoipa::path(
    post, path = "/v1/auth/cli/token", tag = "auth",
    request_body = CliTokenRequest,
    responses((status = 200, body = DeviceTokenResponse, description = "Signed in"), ProblemResponses),
)]
pub async fn cli_token(
    State(app): State<AppState>,
    caller: Caller,
    Json(request): Json<CliTokenRequest>,
) -> Result<Json<DeviceTokenResponse>, ApiError> {
    let oidc = sso(&app)?;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let refused =
        || ApiError::invalid("code", "unknown, expired or already used sign-in code; sign in again");
    let code = CliCode::open(app.keyring.master(), &request.code, now).ok_or_else(refused)?;
    let verified = crate::oidc::id_token::constant_time_eq(
        pkce_challenge(&request.verifier).as_bytes(),
        code.challenge.as_bytes(),
    );
    if !verified {
        return Err(ApiError::invalid("verifier", "does not match the challenge the sign-in started with"));
    }
    if !oidc.consume(&code.id, code.expires_at, now) {
        return Err(refused());
    }
    let (token, record) = service::sessions::sign_in(
        &app,
        code.person,
        oidc.settings.session_ttl,
        caller.remote_addr.clone(),
        "loopback",
    )
    .await?;
    Ok(Json(DeviceTokenResponse {
        status: "complete".into(),
        interval: None,
        token: Some(token),
        subject: Some(record.subject),
        expires_at: Some(record.expires_at),
    }))
}
