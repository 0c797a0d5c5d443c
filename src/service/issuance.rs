//! Issuing a user or component certificate: decide, sign, record with its audit entry, count.
//! Both follow one sequence; only the decision differs.

use std::borrow::Cow;

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
    /// The CN; a person signed in through single sign-on may leave it out (it is theirs).
    pub user: Option<String>,
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
    let policy = &snapshot.cluster.policy;
    let (user, groups, sso, claims) = match &claims.person {
        None => {
            let user = request.user.ok_or_else(|| ApiError::invalid("user", "the user (CN) is required"))?;
            (user, request.groups, None, Cow::Borrowed(claims))
        }
        // A person issues for themselves only, with groups from one access rule of the cluster.
        Some(person) => {
            if let Some(user) = &request.user
                && user != &person.user
            {
                return Err(ApiError::policy(
                    "sso_identity",
                    "user",
                    format!(
                        "signed in through single sign-on, you obtain certificates for yourself ({:?}) only",
                        person.user
                    ),
                ));
            }
            let grant = policy.grant(&person.idp_groups, &request.groups).ok_or_else(|| {
                ApiError::policy(
                    "access_rules",
                    "groups",
                    format!(
                        "no access rule of cluster {:?} matching your identity provider groups grants {}",
                        snapshot.cluster.name,
                        if request.groups.is_empty() {
                            "you access".to_string()
                        } else {
                            format!("{:?}", request.groups)
                        }
                    ),
                )
            })?;
            let mut narrowed = claims.clone();
            narrowed.groups = Some(grant.groups.clone());
            narrowed.max_ttl = Some(grant.max_ttl_seconds);
            let sso = serde_json::json!({
                "idp_issuer": person.iss,
                "idp_subject": person.sub,
                "rule": {
                    "idp_group": grant.rule.idp_group,
                    "groups": grant.rule.groups,
                    "max_ttl_seconds": grant.rule.max_ttl_seconds,
                },
            });
            (person.user.clone(), grant.groups, Some(sso), Cow::Owned(narrowed))
        }
    };
    let ttl = decide_user_certificate(
        policy,
        &claims,
        &UserRequest { user: &user, groups: &groups, ttl_seconds: request.ttl_seconds },
    )?;
    let usage = Usage::user(user, groups, ttl);
    issue(app, actor, snapshot, AuthorityKind::Operators, "user", usage, &request.key, sso).await
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
    issue(app, actor, snapshot, profile.authority, profile.name, usage, key, None).await
}

#[expect(clippy::too_many_arguments, reason = "the one sequence every issuance follows")]
async fn issue(
    app: &App,
    actor: &Actor,
    snapshot: &ClusterSnapshot,
    kind: AuthorityKind,
    profile: &str,
    usage: Usage,
    key: &SubjectKey,
    sso: Option<serde_json::Value>,
) -> Result<Issued, ApiError> {
    app.check_issue_rate(&actor.token_id).map_err(ApiError::too_many_requests)?;
    let authority = snapshot.signer(kind).ok_or_else(|| {
        ApiError::internal(format!("the {kind} CA of {} has no active generation", snapshot.cluster.name))
    })?;
    let ca = app.keyring.signer(authority)?;
    let now = app.now();
    let signed = sign(&ca, key, &usage, now)?;
    record(app, actor, &snapshot.cluster, authority, profile, &usage, &signed, now, sso).await?;
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
    sso: Option<serde_json::Value>,
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
    let mut details = serde_json::json!({
        "profile": profile,
        "kind": authority.kind,
        "generation": authority.generation,
        "common_name": record.common_name,
        "groups": record.groups,
        "not_after": signed.not_after.unix_timestamp(),
    });
    // Issued through single sign-on: who the identity provider said the person is, and the
    // access rule that allowed it.
    if let Some(sso) = sso {
        details["sso"] = sso;
    }
    let audit = actor.audit(
        now,
        "certificate.issue",
        "certificate",
        record.serial.clone(),
        Some(cluster.id),
        details,
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
