//! Revoking one certificate or every live certificate of a user; a revocation returns once the
//! CRL that lists it is published.

use uuid::Uuid;

use super::Actor;
use crate::app::App;
use crate::error::ApiError;
use crate::pki::crl::RevocationReason;
use crate::published::ClusterSnapshot;
use crate::store::{AuthorityState, CertificateRecord, StoreError};

/// Revoke one certificate (idempotent: revoking again answers the same revocation).
pub async fn certificate(
    app: &App,
    actor: &Actor,
    snapshot: &ClusterSnapshot,
    serial: &str,
    reason: RevocationReason,
) -> Result<CertificateRecord, ApiError> {
    let audit = actor.audit(
        app.now(),
        "certificate.revoke",
        "certificate",
        serial,
        Some(snapshot.cluster.id),
        serde_json::json!({ "reason": reason.as_str() }),
    );
    let (record, revoked_now) =
        app.store.revoke_certificate(snapshot.cluster.id, serial, reason, &audit).await.map_err(
            |e| match e {
                StoreError::NotFound => {
                    ApiError::not_found(format!("no certificate with serial {serial} in this cluster"))
                }
                other => other.into(),
            },
        )?;
    if revoked_now {
        app.metrics.certificates_revoked(&snapshot.cluster.name, record.kind.as_str(), 1);
        tracing::info!(cluster.name = %snapshot.cluster.name, cert.serial = %serial, reason = reason.as_str(), actor = %actor.subject, "certificate revoked");
    }
    // Revoking again publishes nothing new, unless the first call's CRL never made it out.
    let listed = || {
        app.published.crl(record.authority_id).is_some_and(|crl| {
            crl.map_lines().is_ok_and(|lines| lines.iter().any(|line| line.split(' ').next() == Some(serial)))
        })
    };
    if revoked_now || !listed() {
        publish_crls(app, snapshot, &[record.authority_id]).await?;
    }
    Ok(record)
}

/// Revoke every unexpired, unrevoked certificate of a cluster whose CN is `user`.
pub async fn user(
    app: &App,
    actor: &Actor,
    snapshot: &ClusterSnapshot,
    user: &str,
    reason: RevocationReason,
) -> Result<Vec<CertificateRecord>, ApiError> {
    let audit = actor.audit(
        app.now(),
        "certificate.revoke_user",
        "user",
        user,
        Some(snapshot.cluster.id),
        serde_json::json!({ "reason": reason.as_str() }),
    );
    let revoked = app.store.revoke_by_common_name(snapshot.cluster.id, user, reason, &audit).await?;
    tracing::info!(
        cluster.name = %snapshot.cluster.name,
        cert.user = %user,
        certificates = revoked.len(),
        actor = %actor.subject,
        "certificates of a user revoked"
    );
    for certificate in &revoked {
        app.metrics.certificates_revoked(&snapshot.cluster.name, certificate.kind.as_str(), 1);
    }
    let authorities: Vec<Uuid> = revoked.iter().map(|c| c.authority_id).collect();
    publish_crls(app, snapshot, &authorities).await?;
    Ok(revoked)
}

/// Publish fresh CRLs for these authorities (each once) before answering.
async fn publish_crls(app: &App, snapshot: &ClusterSnapshot, authority_ids: &[Uuid]) -> Result<(), ApiError> {
    let mut seen = Vec::new();
    for id in authority_ids {
        if seen.contains(id) {
            continue;
        }
        seen.push(*id);
        // A retired generation is in no bundle and needs no CRL.
        if let Some(authority) =
            snapshot.authorities.iter().find(|a| a.id == *id && a.state != AuthorityState::Retired)
        {
            app.publish_crl(authority).await.map_err(|err| {
                let err = ApiError::from(err);
                if err.status() != axum::http::StatusCode::SERVICE_UNAVAILABLE {
                    return err;
                }
                // The revocation is committed; only its CRL is missing, and revoking again
                // publishes it.
                ApiError::unavailable(
                    format!(
                        "the revocation is recorded, but its CRL could not be published: {}; \
                         revoke again to publish it",
                        err.problem().detail
                    ),
                    30,
                )
            })?;
        }
    }
    Ok(())
}
