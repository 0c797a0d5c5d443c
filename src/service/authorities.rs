//! Rotating a CA (a new generation signs, the previous one keeps verifying) and retiring a
//! generation (it leaves every bundle).

use std::sync::Arc;

use uuid::Uuid;

use super::{Actor, publish};
use crate::app::App;
use crate::clusters::{build_authority, validate_key_storage};
use crate::error::ApiError;
use crate::pki::{AuthorityKind, KeyStorage};
use crate::published::ClusterSnapshot;
use crate::store::{AuthorityState, StoreError};

/// Make generation N+1 of `kind` the signer; the previous active generation becomes `retiring`.
/// Its key goes to `storage`, or where the current generation's key is.
pub async fn rotate(
    app: &Arc<App>,
    actor: &Actor,
    cluster_id: Uuid,
    kind: AuthorityKind,
    storage: Option<KeyStorage>,
) -> Result<Arc<ClusterSnapshot>, ApiError> {
    let snapshot = read(app, cluster_id).await?;
    let generation =
        snapshot.authorities.iter().filter(|a| a.kind == kind).map(|a| a.generation).max().unwrap_or(0) + 1;
    let storage = storage
        .or_else(|| snapshot.signer(kind).map(|a| a.key_storage))
        .unwrap_or(snapshot.cluster.key_storage);
    validate_key_storage(storage, snapshot.cluster.key_algorithm)?;
    super::clusters::require_token_for(app, storage)?;
    let now = app.now();
    let (crl_validity, cluster, job_app) = (app.settings.crl_validity, snapshot.cluster.clone(), app.clone());
    // Key generation (in the token, or RSA) runs off the async workers.
    let built = tokio::task::spawn_blocking(move || {
        build_authority(&cluster, kind, generation, storage, &job_app.keyring, now, crl_validity)
    })
    .await
    .map_err(ApiError::internal)??;
    let audit = actor.audit(
        now,
        "authority.rotate",
        "authority",
        format!("{kind}/{generation}"),
        Some(cluster_id),
        serde_json::json!({
            "kind": kind,
            "generation": generation,
            "fingerprint_sha256": built.record.fingerprint,
            "key_storage": storage,
        }),
    );
    if let Err(err) = app.store.rotate_authority(&built.record, &built.crl, &audit).await {
        app.keyring.discard(std::slice::from_ref(&built.record));
        return Err(match err {
            StoreError::Conflict(_) => {
                ApiError::conflict(format!("the {kind} CA was rotated concurrently; retry"))
            }
            other => other.into(),
        });
    }
    tracing::info!(cluster.name = %snapshot.cluster.name, authority.kind = %kind, generation, key.storage = %storage, actor = %actor.subject, "authority rotated");
    publish::authority_added(app, built);
    Ok(publish::refresh(app, &cluster_id.to_string()).await?)
}

/// Retire a generation: it leaves every bundle and its CRL goes. Refused (409) while it still
/// vouches for an unexpired, unrevoked certificate, unless `force` (which revokes those first).
pub async fn retire(
    app: &App,
    actor: &Actor,
    cluster_id: Uuid,
    kind: AuthorityKind,
    generation: i32,
    force: bool,
) -> Result<Arc<ClusterSnapshot>, ApiError> {
    let snapshot = read(app, cluster_id).await?;
    let authority = snapshot
        .authorities
        .iter()
        .find(|a| a.kind == kind && a.generation == generation)
        .ok_or_else(|| ApiError::not_found(format!("the {kind} CA has no generation {generation}")))?;
    if authority.state != AuthorityState::Retired {
        let audit = actor.audit(
            app.now(),
            "authority.retire",
            "authority",
            format!("{kind}/{generation}"),
            Some(cluster_id),
            serde_json::json!({ "kind": kind, "generation": generation, "force": force }),
        );
        let revoked = app.store.retire_authority(authority.id, force, &audit).await.map_err(|e| match e {
            StoreError::Conflict(detail) => ApiError::conflict(detail),
            other => other.into(),
        })?;
        tracing::info!(
            cluster.name = %snapshot.cluster.name,
            authority.kind = %kind,
            generation,
            revoked = revoked.len(),
            actor = %actor.subject,
            "authority generation retired"
        );
    }
    Ok(publish::refresh(app, &cluster_id.to_string()).await?)
}

/// The cluster as the database has it now (the authority on its state).
async fn read(app: &App, cluster_id: Uuid) -> Result<Arc<ClusterSnapshot>, ApiError> {
    publish::refresh(app, &cluster_id.to_string()).await.map_err(|e| match e {
        StoreError::NotFound => ApiError::not_found("the cluster was deleted"),
        other => other.into(),
    })
}
