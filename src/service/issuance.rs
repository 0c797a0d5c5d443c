//! Issuing a user or component certificate: decide, sign, record with its audit entry, count.
//! Both follow one sequence; only the decision differs.

use crate::app::App;
use crate::error::ApiError;
use crate::issuance::{
    ComponentRequest, DeclaredNames, Signed, SubjectKey, Usage, UserRequest, decide_component,
    decide_user_certificate, sign,
};
use crate::pki::AuthorityKind;
use crate::profiles::Profile;
use crate::published::ClusterSnapshot;
use crate::recorder::RecordError;
use crate::store::{AuthorityRecord, CertificateRecord, ClusterRecord};
use crate::token::Claims;

use super::Actor;

/// A certificate signed and durably recorded.
pub struct Issued {
    pub signed: Signed,
    pub usage: Usage,
}

/// What a user certificate request asks for, parsed.
pub struct UserCertificate {
    pub user: String,
    pub groups: Vec<String>,
    pub ttl_seconds: Option<u64>,
    pub key: SubjectKey,
}

/// A user's client certificate (a kubeconfig's), signed by the newest active operators CA.
pub async fn user_certificate(
    app: &App,
    actor: &Actor,
    claims: &Claims,
    snapshot: &ClusterSnapshot,
    request: UserCertificate,
) -> Result<Issued, ApiError> {
    let ttl = decide_user_certificate(
        &snapshot.cluster.policy,
        claims,
        &UserRequest { user: &request.user, groups: &request.groups, ttl_seconds: request.ttl_seconds },
    )?;
    let usage = Usage::user(request.user, request.groups, ttl);
    issue(app, actor, snapshot, AuthorityKind::Operators, "user", usage, &request.key).await
}

/// A component certificate under `profile`, for the names the cluster declared.
pub async fn component_certificate(
    app: &App,
    actor: &Actor,
    claims: &Claims,
    snapshot: &ClusterSnapshot,
    profile: &Profile,
    request: &ComponentRequest,
    key: &SubjectKey,
) -> Result<Issued, ApiError> {
    let policy = &snapshot.cluster.policy;
    let server_host =
        url::Url::parse(&snapshot.cluster.server).ok().and_then(|u| u.host_str().map(str::to_string));
    let names = DeclaredNames {
        server_host: server_host.as_deref(),
        control_plane_names: &policy.control_plane_names,
        node_names: &policy.node_names,
    };
    let usage = decide_component(policy, claims, profile, request, &names)?;
    issue(app, actor, snapshot, profile.authority, profile.name, usage, key).await
}

async fn issue(
    app: &App,
    actor: &Actor,
    snapshot: &ClusterSnapshot,
    kind: AuthorityKind,
    profile: &str,
    usage: Usage,
    key: &SubjectKey,
) -> Result<Issued, ApiError> {
    app.check_issue_rate(&actor.token_id).map_err(ApiError::too_many_requests)?;
    let authority = snapshot.signer(kind).ok_or_else(|| {
        ApiError::internal(format!("the {kind} CA of {} has no active generation", snapshot.cluster.name))
    })?;
    let ca = app.keyring.signer(authority)?;
    let now = app.now();
    let signed = sign(&ca, key, &usage, now)?;
    record(app, actor, &snapshot.cluster, authority, profile, &usage, &signed, now).await?;
    Ok(Issued { signed, usage })
}

/// Record an issued certificate with its audit event; returns once committed.
#[allow(clippy::too_many_arguments)]
async fn record(
    app: &App,
    actor: &Actor,
    cluster: &ClusterRecord,
    authority: &AuthorityRecord,
    profile: &str,
    usage: &Usage,
    signed: &Signed,
    now: time::OffsetDateTime,
) -> Result<(), ApiError> {
    let record = CertificateRecord {
        serial: signed.serial.to_hex(),
        cluster_id: cluster.id,
        authority_id: authority.id,
        kind: authority.kind,
        generation: authority.generation,
        profile: profile.to_string(),
        common_name: usage.common_name.clone(),
        groups: usage.organizations.clone(),
        dns_names: usage.dns_names.clone(),
        ip_addresses: usage.ip_addresses.iter().map(|ip| ip.to_string()).collect(),
        not_before: signed.not_before,
        not_after: signed.not_after,
        fingerprint: signed.leaf.fingerprint.clone(),
        certificate_der: signed.leaf.der.clone(),
        issued_by: actor.subject.clone(),
        created_at: now,
        revoked_at: None,
        revocation_reason: None,
    };
    let audit = actor.audit(
        now,
        "certificate.issue",
        "certificate",
        record.serial.clone(),
        Some(cluster.id),
        serde_json::json!({
            "profile": profile,
            "kind": authority.kind,
            "generation": authority.generation,
            "common_name": record.common_name,
            "groups": record.groups,
            "not_after": signed.not_after.unix_timestamp(),
        }),
    );
    // The writer logged a failed batch once; each request only answers it.
    app.recorder.record(record, audit).await.map_err(|err| match err {
        RecordError::Failed(cause) if cause.is_unavailable() => {
            ApiError::unavailable("the database is unavailable; nothing was issued", 5)
        }
        RecordError::Failed(_) => ApiError::internal_reported(),
        RecordError::Stopped => ApiError::unavailable("the server is shutting down; nothing was issued", 5),
    })?;
    app.metrics.certificate_issued(&cluster.name, authority.kind.as_str(), profile);
    Ok(())
}
