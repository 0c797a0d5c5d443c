//! Rotating a CA (a new generation signs, the previous one keeps verifying), importing an existing
//! one as a new generation, and retiring a generation (it leaves every bundle).

use std::sync::Arc;

use uuid::Uuid;

use super::{Actor, publish};
use crate::app::App;
use crate::clusters::{
    BuiltAuthority, CaImport, build_authority, build_imported_authority, build_intermediate_authority,
    build_pending_authority, validate_key_storage,
};
use crate::error::ApiError;
use crate::keyring::authority_aad;
use crate::pki::import::{ImportedAuthority, import_authority};
use crate::pki::intermediate::accept_intermediate;
use crate::pki::{AuthorityKind, KeyStorage, PkiError};
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
    let generation = next_generation(&snapshot, kind);
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
    let details = serde_json::json!({
        "kind": kind, "generation": generation, "fingerprint_sha256": built.record.fingerprint,
        "key_storage": storage,
    });
    make_signer(app, actor, &snapshot, built, "authority.rotate", details).await
}

/// Adopt an existing CA as generation N+1 of `kind`: checked (a self-signed CA valid now whose key
/// matches), its key sealed at once, re-certified with `cRLSign` when it lacks it (see
/// `crate::pki::import`). It becomes the signer; the previous generation becomes `retiring` and
/// stays in the bundles until retired. Nothing changes when the import is refused (422).
pub async fn import(
    app: &Arc<App>,
    actor: &Actor,
    cluster_id: Uuid,
    kind: AuthorityKind,
    ca: CaImport,
) -> Result<Arc<ClusterSnapshot>, ApiError> {
    let snapshot = read(app, cluster_id).await?;
    let generation = next_generation(&snapshot, kind);
    let now = app.now();
    let (crl_validity, cluster, job_app) = (app.settings.crl_validity, snapshot.cluster.clone(), app.clone());
    let (built, summary) = tokio::task::spawn_blocking(move || {
        let checked = import_authority(&ca.certificate_pem, &ca.private_key_pem, now)
            .map_err(|e| import_refusal(e, ""))?;
        let summary = import_summary(kind, &checked);
        build_imported_authority(
            &cluster,
            kind,
            generation,
            checked,
            job_app.keyring.master(),
            now,
            crl_validity,
        )
        .map(|built| (built, summary))
        .map_err(ApiError::from)
    })
    .await
    .map_err(ApiError::internal)??;
    let mut details = summary;
    details["generation"] = generation.into();
    details["fingerprint_sha256"] = built.record.fingerprint.clone().into();
    make_signer(app, actor, &snapshot, built, "authority.import", details).await
}

/// Start an intermediate for `kind` under the organisation's root: a key (sealed at once) and a
/// CSR to have signed offline. A newer request replaces an older one; nothing else changes until
/// the certificate is installed. Answers the CSR, DER.
pub async fn request_intermediate(
    app: &Arc<App>,
    actor: &Actor,
    cluster_id: Uuid,
    kind: AuthorityKind,
) -> Result<Vec<u8>, ApiError> {
    let snapshot = read(app, cluster_id).await?;
    let generation = next_generation(&snapshot, kind);
    let now = app.now();
    let (cluster, job_app) = (snapshot.cluster.clone(), app.clone());
    let pending = tokio::task::spawn_blocking(move || {
        build_pending_authority(&cluster, kind, generation, job_app.keyring.master(), now)
    })
    .await
    .map_err(ApiError::internal)??;
    let audit = actor.audit(
        now,
        "authority.intermediate_request",
        "authority",
        format!("{kind}/pending"),
        Some(cluster_id),
        serde_json::json!({ "kind": kind, "request_id": pending.id }),
    );
    app.store.save_pending_authority(&pending, &audit).await.map_err(|e| match e {
        StoreError::NotFound => ApiError::not_found("the cluster was deleted"),
        other => other.into(),
    })?;
    tracing::info!(cluster.name = %snapshot.cluster.name, authority.kind = %kind, actor = %actor.subject, "intermediate requested");
    Ok(pending.csr_der)
}

/// Install the certificate the organisation signed for the pending request of `kind` (with its
/// issuers, nearest first): checked, it becomes the next generation and signs; the previous one
/// becomes `retiring`. A certificate that does not fit is a 422 and changes nothing.
pub async fn install_intermediate(
    app: &Arc<App>,
    actor: &Actor,
    cluster_id: Uuid,
    kind: AuthorityKind,
    certificate_pem: String,
    chain_pem: String,
) -> Result<Arc<ClusterSnapshot>, ApiError> {
    let snapshot = read(app, cluster_id).await?;
    let pending = app.store.get_pending_authority(cluster_id, kind).await.map_err(|e| match e {
        StoreError::NotFound => ApiError::not_found(format!(
            "no intermediate request for the {kind} CA: POST .../authorities/{kind}/intermediate/csr first"
        )),
        other => other.into(),
    })?;
    let generation = next_generation(&snapshot, kind);
    let now = app.now();
    let (crl_validity, job_app) = (app.settings.crl_validity, app.clone());
    let built = tokio::task::spawn_blocking(move || {
        let pkcs8 = crate::keyring::open_sealed(
            job_app.keyring.master(),
            &pending.sealed_key,
            Some(pending.key_version),
            pending.previous_seal.as_ref(),
            &authority_aad(pending.id),
        )
        .map_err(|_| ApiError::internal("the pending key does not open with the master key"))?;
        let accepted = accept_intermediate(&certificate_pem, &chain_pem, pending.key_algorithm, &pkcs8, now)
            .map_err(|e| import_refusal(e, ""))?;
        build_intermediate_authority(&pending, generation, accepted, now, crl_validity)
            .map_err(ApiError::from)
    })
    .await
    .map_err(ApiError::internal)??;
    let audit = actor.audit(
        now,
        "authority.intermediate_install",
        "authority",
        format!("{kind}/{generation}"),
        Some(cluster_id),
        serde_json::json!({
            "kind": kind,
            "generation": generation,
            "fingerprint_sha256": built.record.fingerprint,
            "subject": built.record.subject,
        }),
    );
    app.store.install_intermediate(&built.record, &built.crl, &audit).await.map_err(|e| match e {
        StoreError::Conflict(detail) => {
            ApiError::conflict(format!("{detail}; install its certificate instead"))
        }
        other => other.into(),
    })?;
    tracing::info!(cluster.name = %snapshot.cluster.name, authority.kind = %kind, generation, actor = %actor.subject, "intermediate installed");
    publish::authority_added(app, built);
    Ok(publish::refresh(app, &cluster_id.to_string()).await?)
}

/// A refused import as a 422 naming its field, under `prefix` (e.g. `authorities.etcd.`).
pub(crate) fn import_refusal(err: PkiError, prefix: &str) -> ApiError {
    match err {
        PkiError::ImportRefused { field, detail } => ApiError::invalid(format!("{prefix}{field}"), detail),
        other => other.into(),
    }
}

/// What the audit trail records of an import: never the key.
pub(crate) fn import_summary(kind: AuthorityKind, imported: &ImportedAuthority) -> serde_json::Value {
    serde_json::json!({
        "kind": kind,
        "imported": true,
        "original_fingerprint_sha256": imported.original_fingerprint,
        "recertified_with_crl_sign": imported.recertified,
        "key_algorithm": imported.algorithm.as_str(),
    })
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

/// Generation N+1 of `kind`.
fn next_generation(snapshot: &ClusterSnapshot, kind: AuthorityKind) -> i32 {
    snapshot.authorities.iter().filter(|a| a.kind == kind).map(|a| a.generation).max().unwrap_or(0) + 1
}

/// Store a new generation as the signer (the active one before it becomes retiring), with the
/// audit entry of `action`, and publish it: its key to the keyring, its first CRL to the cache.
async fn make_signer(
    app: &App,
    actor: &Actor,
    snapshot: &ClusterSnapshot,
    built: BuiltAuthority,
    action: &str,
    details: serde_json::Value,
) -> Result<Arc<ClusterSnapshot>, ApiError> {
    let (kind, generation, cluster_id) =
        (built.record.kind, built.record.generation, built.record.cluster_id);
    let audit = actor.audit(
        app.now(),
        action,
        "authority",
        format!("{kind}/{generation}"),
        Some(cluster_id),
        details,
    );
    if let Err(err) = app.store.rotate_authority(&built.record, &built.crl, &audit).await {
        // A key made in the token for it would be referred to by nothing.
        app.keyring.discard(std::slice::from_ref(&built.record));
        return Err(match err {
            StoreError::Conflict(_) => {
                ApiError::conflict(format!("the {kind} CA was rotated concurrently; retry"))
            }
            other => other.into(),
        });
    }
    tracing::info!(cluster.name = %snapshot.cluster.name, authority.kind = %kind, generation, key.storage = %built.record.key_storage, actor = %actor.subject, action, "new signing generation");
    publish::authority_added(app, built);
    Ok(publish::refresh(app, &cluster_id.to_string()).await?)
}

/// The cluster as the database has it now (the authority on its state).
async fn read(app: &App, cluster_id: Uuid) -> Result<Arc<ClusterSnapshot>, ApiError> {
    publish::refresh(app, &cluster_id.to_string()).await.map_err(|e| match e {
        StoreError::NotFound => ApiError::not_found("the cluster was deleted"),
        other => other.into(),
    })
}
