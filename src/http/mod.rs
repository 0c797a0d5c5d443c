//! The HTTP API: routes and their OpenAPI description come from one registration, so a route
//! cannot exist without its documentation.

pub mod audit;
pub mod auth;
pub mod authorities;
pub mod certificates;
pub mod clusters;
pub mod components;
pub mod crls;
pub mod download;
pub mod drain;

pub mod extract;
pub mod health;
pub mod kubeconfigs;
pub mod pagination;
pub mod service_account;
pub mod session;
pub mod tokens;
pub mod web;

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::error::ApiError;

/// Request bodies larger than this are refused with 413.
pub const BODY_LIMIT: usize = 64 * 1024;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "kca",
        description = "A private certificate authority for Kubernetes clusters.",
        license(name = "Apache-2.0"),
    ),
    modifiers(&BearerScheme),
    components(schemas(crate::error::Problem)),
    tags(
        (name = "clusters", description = "Clusters and their issuance policy"),
        (name = "authorities", description = "The five CAs of a cluster and their bundles"),
        (name = "service-account", description = "The service-account token signing keys of a cluster"),
        (name = "kubeconfigs", description = "Short-lived user kubeconfigs"),
        (name = "certificates", description = "Issued certificates"),
        (name = "revocation", description = "Revocation, CRLs and the bundles proxies consume"),
        (name = "audit", description = "The audit trail"),
        (name = "tokens", description = "API tokens and their signing key"),
        (name = "operations", description = "Health and readiness"),
        (name = "auth", description = "Single sign-on through the organisation's OpenID Provider, and who the caller is"),
    )
)]
struct ApiDoc;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("JWT".into());
        scheme.description = Some(
            "An EdDSA JWT minted by `POST /v1/tokens` (or `kca token create` on the server host).".into(),
        );
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The API routes and the OpenAPI document describing them.
pub fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(clusters::create_cluster, clusters::list_clusters))
        .routes(routes!(clusters::get_cluster, clusters::update_cluster, clusters::delete_cluster))
        .routes(routes!(authorities::list_authorities))
        .routes(routes!(authorities::get_authority))
        .routes(routes!(authorities::ca_bundle))
        .routes(routes!(authorities::rotate_authority))
        .routes(routes!(authorities::import_authority))
        .routes(routes!(authorities::request_intermediate))
        .routes(routes!(authorities::install_intermediate))
        .routes(routes!(service_account::public_keys))
        .routes(routes!(service_account::list_keys))
        .routes(routes!(service_account::rotate_key))
        .routes(routes!(service_account::import_key))
        .routes(routes!(service_account::retire_key))
        .routes(routes!(service_account::export_signing_key))
        .routes(routes!(authorities::retire_generation))
        .routes(routes!(components::list_profiles))
        .routes(routes!(kubeconfigs::issue_kubeconfig))
        .routes(routes!(certificates::list_certificates, components::issue_certificate))
        .routes(routes!(certificates::get_certificate))
        .routes(routes!(certificates::revoke_certificate))
        .routes(routes!(certificates::revoke_user))
        .routes(routes!(crls::crl_der))
        .routes(routes!(crls::crl_pem))
        .routes(routes!(crls::client_ca))
        .routes(routes!(crls::client_crl))
        .routes(routes!(crls::revoked_map))
        .routes(routes!(audit::list_audit))
        .routes(routes!(tokens::create_token, tokens::list_tokens))
        .routes(routes!(tokens::revoke_token))
        .routes(routes!(tokens::rotate_signing_key))
        .routes(routes!(session::me))
        .routes(routes!(session::login))
        .routes(routes!(session::callback))
        .routes(routes!(session::logout))
        .routes(routes!(session::device_start))
        .routes(routes!(session::device_token))
        .routes(routes!(session::refresh))
        .routes(routes!(session::cli_token))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .split_for_parts()
}

/// The OpenAPI document as committed in `openapi/openapi.json`.
pub fn openapi_json() -> String {
    let mut text = api().1.to_pretty_json().expect("the OpenAPI document serializes");
    text.push('\n');
    text
}

/// The whole HTTP service.
pub fn router(app: AppState) -> Router {
    let (api_routes, openapi) = api();
    let routes = api_routes
        .merge(utoipa_swagger_ui::SwaggerUi::new("/docs").url("/openapi.json", openapi))
        .merge(web::router());
    serve_routes(routes, app)
}

/// `routes` behind every layer of the service: authentication and the cluster guard, timeouts,
/// metrics, body limits, security headers, panic recovery and request logs.
pub fn serve_routes(routes: Router<AppState>, app: AppState) -> Router {
    let request_timeout = app.settings.request_timeout;
    let hsts =
        app.settings.hsts.then(|| default_header(header::STRICT_TRANSPORT_SECURITY, "max-age=31536000"));
    let cors = cors(&app.settings.cors_origins);
    routes
        .fallback(|| async { ApiError::not_found("no such resource") })
        .method_not_allowed_fallback(|| async {
            ApiError::from_rejection(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this resource".into(),
            )
        })
        // Authentication, and the cluster check of every `/v1/clusters/{cluster}/…` route.
        .layer(middleware::from_fn_with_state(app.clone(), auth::guard))
        .layer(middleware::from_fn_with_state(request_timeout, enforce_timeout))
        // Outside the guard and the timeout: their refusals too wait for the unread body.
        .layer(middleware::from_fn(drain::settle_body))
        .layer(middleware::from_fn_with_state(app.clone(), count_request))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(default_header(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(default_header(header::X_FRAME_OPTIONS, "DENY"))
        .layer(default_header(header::REFERRER_POLICY, "no-referrer"))
        // Most answers are private and some carry a private key: not cached unless a handler
        // chose otherwise (downloads of public material).
        .layer(default_header(header::CACHE_CONTROL, "no-store"))
        .layer(tower::util::option_layer(hsts))
        // A panicking handler answers 500 and the server keeps serving; no lock is poisoned
        // (kca's locks do not poison).
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panic_answer))
        .layer(tower::util::option_layer(cors))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request| {
                    let path = request
                        .extensions()
                        .get::<MatchedPath>()
                        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
                    tracing::info_span!("request", method = %request.method(), path = %path)
                })
                .on_request(())
                .on_response(|response: &Response, latency: Duration, _: &tracing::Span| {
                    // Successes are counted by /metrics and the changes they make are logged as
                    // events of their own; a line each would cost more than the request at load.
                    let status = response.status().as_u16();
                    let duration_ms = latency.as_secs_f64() * 1000.0;
                    // A server error's cause is logged once, where it happened; this line only
                    // says which request it failed.
                    if response.status().is_server_error() {
                        tracing::info!(status, duration_ms, "request failed");
                    } else if response.status().is_client_error() {
                        tracing::info!(status, duration_ms, "request refused");
                    } else {
                        tracing::debug!(status, duration_ms, "request handled");
                    }
                }),
        )
        .with_state(app)
}

/// The answer to a request whose handler panicked: logged once, with what the panic said.
fn panic_answer(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    ApiError::internal(format!("a request handler panicked: {message}")).into_response()
}

/// Count and time every request by its matched route.
async fn count_request(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().to_string();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_string();
    let response = next.run(request).await;
    app.metrics.observe_request(&method, &route, response.status().as_u16(), started.elapsed());
    response
}

/// Answer 503 problem+json when a request takes longer than the configured timeout.
async fn enforce_timeout(State(timeout): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::unavailable("the request timed out", 1).into_response(),
    }
}

/// CORS for the configured origins only; with none (the default), browsers on other origins
/// cannot call the API.
fn cors(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::Method;
    let origins: Vec<HeaderValue> =
        origins.iter().filter_map(|o| HeaderValue::from_str(o.trim()).ok()).collect();
    if origins.is_empty() {
        return None;
    }
    Some(
        tower_http::cors::CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::ACCEPT,
                header::IF_NONE_MATCH,
                HeaderName::from_static(session::CSRF_HEADER),
            ])
            .expose_headers([header::ETAG, header::LOCATION, header::RETRY_AFTER]),
    )
}

/// A header set on every response that does not carry its own.
fn default_header(name: HeaderName, value: &'static str) -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
}
