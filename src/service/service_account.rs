//! A cluster's service-account token signing keys: rotation with overlap (the new key signs, the
//! old ones verify until retired), import of an existing `sa.key`, retirement, and the one export
//! of the signing key (to `kca pki export` on the control-plane host), audited.

use std::sync::Arc;

use uuid::Uuid;
use zeroize::Zeroizing;

use super::Actor;
use crate::app::App;
use crate::error::ApiError;
use crate::keyring::service_account_aad;
use crate::pki::service_account::ServiceAccountKey;
use crate::store::{AuthorityState, ServiceAccountKeyRecord, StoreError};

/// The keys of a cluster, retired ones included, oldest first.
pub async fn list(app: &App, cluster_id: Uuid) -> Result<Vec<ServiceAccountKeyRecord>, ApiError> {
    Ok(app.store.list_service_account_keys(cluster_id).await?)
}

/// Every key that verifies (active and retiring), `PUBLIC KEY` PEM: kube-apiserver's
/// `--service-account-key-file`.
pub async fn public_keys_pem(app: &App, cluster_id: Uuid) -> Result<String, ApiError> {
    Ok(list(app, cluster_id)
        .await?
        .iter()
        .filter(|k| k.state != AuthorityState::Retired)
        .map(|k| k.public_pem.as_str())
        .collect())
}

/// Make a new key the signer (`imported`: an existing one); the previous signer becomes
/// `retiring` and keeps verifying.
pub async fn add(
    app: &Arc<App>,
    actor: &Actor,
    cluster_id: Uuid,
    imported: Option<Zeroizing<String>>,
) -> Result<ServiceAccountKeyRecord, ApiError> {
    let was_imported = imported.is_some();
    let key = tokio::task::spawn_blocking(move || match imported {
        Some(pem) => ServiceAccountKey::import(&pem),
        None => ServiceAccountKey::generate(),
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| super::authorities::import_refusal(e, ""))?;
    let record =
        crate::clusters::service_account_key_record(cluster_id, &key, app.keyring.master(), app.now())
            .map_err(ApiError::internal)?;
    let action = if was_imported { "service_account_key.import" } else { "service_account_key.rotate" };
    let audit = actor.audit(
        record.created_at,
        action,
        "service_account_key",
        record.key_id.clone(),
        Some(cluster_id),
        serde_json::json!({ "key_id": record.key_id, "algorithm": record.key_algorithm.as_str() }),
    );
    app.store.add_service_account_key(&record, &audit).await.map_err(|e| match e {
        StoreError::Conflict(detail) => ApiError::conflict(detail),
        StoreError::NotFound => ApiError::not_found("the cluster was deleted"),
        other => other.into(),
    })?;
    tracing::info!(cluster.id = %cluster_id, key.id = %record.key_id, actor = %actor.subject, action, "service-account key added");
    Ok(record)
}

/// Retire a retiring key: tokens it signed stop verifying.
pub async fn retire(app: &App, actor: &Actor, cluster_id: Uuid, key_id: &str) -> Result<(), ApiError> {
    let audit = actor.audit(
        app.now(),
        "service_account_key.retire",
        "service_account_key",
        key_id.to_string(),
        Some(cluster_id),
        serde_json::json!({ "key_id": key_id }),
    );
    app.store.retire_service_account_key(cluster_id, key_id, &audit).await.map_err(|e| match e {
        StoreError::Conflict(detail) => ApiError::conflict(detail),
        StoreError::NotFound => ApiError::not_found(format!("no service-account key {key_id:?}")),
        other => other.into(),
    })?;
    tracing::info!(cluster.id = %cluster_id, key.id = %key_id, actor = %actor.subject, "service-account key retired");
    Ok(())
}

/// The signing key, unsealed, for `kca pki export` to write as `sa.key`: audited before it is
/// answered.
pub async fn export_signing_key(
    app: &App,
    actor: &Actor,
    cluster_id: Uuid,
) -> Result<(ServiceAccountKeyRecord, Zeroizing<String>), ApiError> {
    let active =
        list(app, cluster_id).await?.into_iter().find(|k| k.state == AuthorityState::Active).ok_or_else(
            || ApiError::not_found("the cluster has no service-account key yet: rotate or import one first"),
        )?;
    let pkcs8 = crate::keyring::open_sealed(
        app.keyring.master(),
        &active.sealed_key,
        Some(active.key_version),
        active.previous_seal.as_ref(),
        &service_account_aad(active.id),
    )
    .map_err(|_| ApiError::internal("a service-account key does not open with the master key"))?;
    let key = ServiceAccountKey::load(active.key_algorithm, pkcs8)?;
    let audit = actor.audit(
        app.now(),
        "service_account_key.export",
        "service_account_key",
        active.key_id.clone(),
        Some(cluster_id),
        serde_json::json!({ "key_id": active.key_id }),
    );
    app.store.record_audit(&audit).await?;
    tracing::warn!(cluster.id = %cluster_id, key.id = %active.key_id, actor = %actor.subject, remote = ?actor.remote_addr, "service-account signing key exported");
    Ok((active, key.private_pem()))
}
