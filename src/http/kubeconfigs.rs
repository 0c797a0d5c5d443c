//! `POST /v1/clusters/{cluster}/kubeconfigs`: short-lived user kubeconfigs.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::auth::{Caller, ClusterAccess};
use super::download::attachment;
use super::extract::Json;
use crate::app::AppState;
use crate::error::{ApiError, ProblemResponses};
use crate::issuance::SubjectKey;
use crate::pki::kubeconfig::{ClusterEndpoint, UserCredential, render};
use crate::pki::{AuthorityKind, KeyAlgorithm};
use crate::service;
use crate::service::issuance::{Issued, UserCertificate};
use crate::token::Scope;

/// A kubeconfig to issue.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKubeconfigRequest {
    /// The Kubernetes user: the certificate's CN. Required, except from a person signed in
    /// through single sign-on, whose CN is always their own (prefix and username claim).
    #[schema(example = "alice", min_length = 1, max_length = 64)]
    pub user: Option<String>,
    /// The Kubernetes groups: one O per group, in this order.
    #[serde(default)]
    #[schema(example = json!(["dev", "ops"]))]
    pub groups: Vec<String>,
    /// Lifetime; the cluster policy's default when absent.
    #[schema(minimum = 1)]
    pub ttl_seconds: Option<u64>,
    /// A PEM CSR to sign instead of generating a key; only its public key is used.
    pub csr_pem: Option<String>,
    /// Algorithm of the key kca generates (default `p256`); not with `csr_pem`.
    pub key_algorithm: Option<KeyAlgorithm>,
}

/// An issued kubeconfig and its parts.
#[derive(Debug, Serialize, ToSchema)]
pub struct KubeconfigResponse {
    /// The kubeconfig, YAML.
    pub kubeconfig: String,
    /// The client certificate, followed by the operators CA when that is an intermediate under
    /// the organisation's root.
    pub certificate_pem: String,
    /// Only when kca generated the key. Shown once; kca keeps no copy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_key_pem: Option<String>,
    /// The control-plane CA bundle the kubeconfig trusts.
    pub ca_pem: String,
    pub server: String,
    /// Uppercase hex.
    pub serial: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    pub fingerprint_sha256: String,
}

fn wants_yaml(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|accept| {
        accept.split(',').any(|item| {
            matches!(
                item.split(';').next().unwrap_or("").trim(),
                "application/yaml" | "application/x-yaml" | "text/yaml"
            )
        })
    })
}

/// Issue a user kubeconfig: CN = user, one O per group, clientAuth only, signed by the newest
/// active operators CA, recorded before it is returned.
#[utoipa::path(
    post, path = "/v1/clusters/{cluster}/kubeconfigs", tag = "kubeconfigs",
    params(
        ("cluster" = String, Path, description = "Cluster id or name"),
        ("Accept" = Option<String>, Header, description = "`application/yaml` for the kubeconfig alone"),
    ),
    request_body = NewKubeconfigRequest,
    responses(
        (status = 201, description = "Issued", headers(("Location" = String, description = "The certificate")),
         content((KubeconfigResponse = "application/json"), (String = "application/yaml"))),
        ProblemResponses,
    ),
    security(("bearer" = []))
)]
pub async fn issue_kubeconfig(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ClusterAccess { snapshot }: ClusterAccess,
    Json(request): Json<NewKubeconfigRequest>,
) -> Result<Response, ApiError> {
    let claims = caller.require(Scope::KubeconfigsIssue)?;
    let key = SubjectKey::from_request(request.csr_pem, request.key_algorithm)?;
    let request =
        UserCertificate { user: request.user, groups: request.groups, ttl_seconds: request.ttl_seconds, key };
    let Issued { signed, usage } =
        service::issuance::user_certificate(&app, &caller.as_actor(), claims, &snapshot, request).await?;

    let ca_pem = snapshot.ca_bundle_with_chains(&[AuthorityKind::ControlPlane]);
    let key_pem = signed.private_key_pem.as_ref().map(|k| k.as_str().to_string());
    // Under an intermediate, the client presents it after its own certificate.
    let certificate_pem = match snapshot.signing_intermediate(AuthorityKind::Operators) {
        Some(intermediate) => format!("{}{intermediate}", signed.leaf.pem),
        None => signed.leaf.pem.clone(),
    };
    // With a CSR the key stays with the client, and out of the kubeconfig.
    let kubeconfig = render(
        &ClusterEndpoint {
            name: &snapshot.cluster.name,
            server: &snapshot.cluster.server,
            ca_bundle_pem: &ca_pem,
        },
        &usage.common_name,
        &UserCredential::Certificate { certificate_pem: &certificate_pem, key_pem: key_pem.as_deref() },
    );
    // Each issuance is in the audit trail; at thousands a second, a log line each is noise.
    tracing::debug!(
        cluster.name = %snapshot.cluster.name,
        cert.serial = %signed.serial,
        cert.user = %usage.common_name,
        actor = caller.actor(),
        "kubeconfig issued"
    );
    let location = format!("/v1/clusters/{}/certificates/{}", snapshot.cluster.id, signed.serial);
    let mut response = if wants_yaml(&headers) {
        let mut response = (StatusCode::CREATED, kubeconfig).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/yaml"));
        let filename = format!("kubeconfig-{}-{}.yaml", snapshot.cluster.name, usage.common_name);
        response.headers_mut().insert(header::CONTENT_DISPOSITION, attachment(&filename));
        response
    } else {
        let body = KubeconfigResponse {
            kubeconfig,
            certificate_pem,
            private_key_pem: key_pem,
            ca_pem,
            server: snapshot.cluster.server.clone(),
            serial: signed.serial.to_hex(),
            not_before: signed.not_before,
            not_after: signed.not_after,
            fingerprint_sha256: signed.leaf.fingerprint.clone(),
        };
        (StatusCode::CREATED, Json(body)).into_response()
    };
    response.headers_mut().insert(header::LOCATION, HeaderValue::from_str(&location).expect("ascii"));
    Ok(response)
}
