//! Component certificates (etcd, apiserver, kubelets, controllers, front-proxy), issued under the
//! named profiles of `crate::profiles`.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::auth::{Caller, ClusterAccess};
use super::extract::Json;
use crate::app::AppState;
use crate::error::{ApiError, ProblemResponses};
use crate::issuance::ComponentRequest;
use crate::issuance::SubjectKey;
use crate::pki::KeyAlgorithm;
use crate::profiles::{Profile, profiles};
use crate::service;
use crate::service::issuance::Issued;

/// A component certificate to issue.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCertificateRequest {
    /// A profile name from `GET /v1/profiles`, e.g. `etcd-peer` or `apiserver`.
    #[schema(example = "etcd-peer")]
    pub profile: String,
    /// The CN, where the profile lets the request choose it.
    pub common_name: Option<String>,
    /// Must equal the profile's fixed organizations when given.
    pub organizations: Option<Vec<String>>,
    #[serde(default)]
    pub dns_names: Vec<String>,
    #[serde(default)]
    pub ip_addresses: Vec<String>,
    /// A PEM CSR to sign instead of generating a key.
    pub csr_pem: Option<String>,
    /// Lifetime; the profile's default (one year) when absent.
    pub ttl_seconds: Option<u64>,
    /// Algorithm of the key kca generates (default `p256`); not with `csr_pem`.
    pub key_algorithm: Option<KeyAlgorithm>,
    /// `apiserver` only: the cluster DNS domain (default `cluster.local`).
    pub cluster_domain: Option<String>,
    /// `apiserver` only: the `kubernetes` service IP (default `10.96.0.1`).
    pub service_ip: Option<String>,
}

impl NewCertificateRequest {
    /// What the profile rules check: everything but the profile name and the key.
    pub fn component(&self) -> ComponentRequest {
        ComponentRequest {
            common_name: self.common_name.clone(),
            organizations: self.organizations.clone(),
            dns_names: self.dns_names.clone(),
            ip_addresses: self.ip_addresses.clone(),
            ttl_seconds: self.ttl_seconds,
            cluster_domain: self.cluster_domain.clone(),
            service_ip: self.service_ip.clone(),
        }
    }
}

/// An issued component certificate.
#[derive(Debug, Serialize, ToSchema)]
pub struct IssuedCertificateResponse {
    pub profile: String,
    /// Uppercase hex.
    pub serial: String,
    pub certificate_pem: String,
    /// Only when kca generated the key. Shown once; kca keeps no copy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_key_pem: Option<String>,
    /// The bundle of the CA kind that signed it (every live generation).
    pub ca_pem: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    pub fingerprint_sha256: String,
}

/// Issue a component certificate under a profile: admin tokens of the cluster only, for profiles
/// the cluster's policy names in `allowed_profiles`, with serving names it declared.
#[utoipa::path(
    post, path = "/v1/clusters/{cluster}/certificates", tag = "certificates",
    params(("cluster" = String, Path, description = "Cluster id or name")),
    request_body = NewCertificateRequest,
    responses(
        (status = 201, body = IssuedCertificateResponse, headers(("Location" = String, description = "The certificate"))),
        ProblemResponses,
    ),
    security(("bearer" = []))
)]
pub async fn issue_certificate(
    State(app): State<AppState>,
    caller: Caller,
    ClusterAccess { snapshot }: ClusterAccess,
    Json(request): Json<NewCertificateRequest>,
) -> Result<Response, ApiError> {
    // Any token gets as far as the policy decision, which names the rule that refuses it.
    let claims =
        caller.claims().ok_or_else(|| ApiError::unauthorized("this endpoint needs a bearer token"))?;
    let profile = crate::profiles::find(&request.profile).ok_or_else(|| {
        ApiError::invalid("profile", format!("no profile {:?}", request.profile))
            .with_valid_values(profiles().iter().map(|p| p.name.to_string()).collect())
    })?;
    let component = request.component();
    let key = SubjectKey::from_request(request.csr_pem, request.key_algorithm)?;
    let Issued { signed, .. } = service::issuance::component_certificate(
        &app,
        &caller.as_actor(),
        claims,
        &snapshot,
        &profile,
        &component,
        &key,
    )
    .await?;
    tracing::info!(
        cluster.name = %snapshot.cluster.name,
        cert.serial = %signed.serial,
        cert.profile = profile.name,
        actor = caller.actor(),
        "component certificate issued"
    );
    let location = format!("/v1/clusters/{}/certificates/{}", snapshot.cluster.id, signed.serial);
    let body = IssuedCertificateResponse {
        profile: profile.name.to_string(),
        serial: signed.serial.to_hex(),
        certificate_pem: signed.leaf.pem.clone(),
        private_key_pem: signed.private_key_pem.as_ref().map(|k| k.as_str().to_string()),
        ca_pem: snapshot.ca_bundle_with_chains(&[profile.authority]),
        not_before: signed.not_before,
        not_after: signed.not_after,
        fingerprint_sha256: signed.leaf.fingerprint.clone(),
    };
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    response.headers_mut().insert(header::LOCATION, HeaderValue::from_str(&location).expect("ascii"));
    Ok(response)
}

/// The component certificate profiles and their rules.
#[utoipa::path(
    get, path = "/v1/profiles", tag = "certificates",
    responses((status = 200, body = Vec<Profile>), ProblemResponses)
)]
pub async fn list_profiles() -> Json<Vec<Profile>> {
    Json(profiles())
}
