//! Creating, changing and deleting a cluster.

use std::sync::Arc;

use uuid::Uuid;

use super::{Actor, publish};
use crate::app::App;
use crate::clusters::{ClusterChange, ClusterDraft, build_cluster};
use crate::error::ApiError;
use crate::pki::import::import_authority;
use crate::pki::service_account::ServiceAccountKey;
use crate::policy::IssuancePolicy;
use crate::published::ClusterSnapshot;
use crate::store::StoreError;
use crate::token::Claims;

/// How often a change without `If-Match` is merged again when other changes keep winning.
const MAX_MERGE_ATTEMPTS: u32 = 100;

/// Create a cluster and its five CAs (with their first, empty CRLs). CAs given in the draft's
/// `imports` are adopted (checked, keys sealed) instead of generated, which takes an admin token.
pub async fn create(
    app: &Arc<App>,
    actor: &Actor,
    claims: &Claims,
    mut draft: ClusterDraft,
) -> Result<Arc<ClusterSnapshot>, ApiError> {
    draft.validate()?;
    require_admin_for_privileged(claims, &IssuancePolicy::default(), &draft.policy)?;
    if (!draft.imports.is_empty() || draft.service_account_key.is_some()) && !claims.is_admin() {
        return Err(ApiError::policy(
            "admin_required",
            "authorities",
            "importing a CA needs an admin token: its key signs identities the control plane trusts",
        ));
    }
    require_token_for(app, draft.key_storage)?;
    let now = app.now();
    let (crl_validity, build_app) = (app.settings.crl_validity, app.clone());
    // Checking imports and making keys (in the token, or RSA) run off the async workers.
    let (built, imported) = tokio::task::spawn_blocking(move || {
        let mut imported = Vec::with_capacity(draft.imports.len());
        let mut summary = Vec::with_capacity(draft.imports.len());
        for (kind, ca) in std::mem::take(&mut draft.imports) {
            let checked = import_authority(&ca.certificate_pem, &ca.private_key_pem, now)
                .map_err(|e| super::authorities::import_refusal(e, &format!("authorities.{kind}.")))?;
            summary.push(super::authorities::import_summary(kind, &checked));
            imported.push((kind, checked));
        }
        let service_account = match draft.service_account_key.take() {
            Some(pem) => Some(ServiceAccountKey::import(&pem.0).map_err(|e| match e {
                crate::pki::PkiError::ImportRefused { detail, .. } => {
                    ApiError::invalid("service_account_key_pem", detail)
                }
                other => other.into(),
            })?),
            None => None,
        };
        if let Some(key) = &service_account {
            summary.push(serde_json::json!({"service_account_key_id": key.key_id, "imported": true}));
        }
        build_cluster(draft, imported, service_account, &build_app.keyring, now, crl_validity)
            .map(|built| (built, summary))
            .map_err(ApiError::from)
    })
    .await
    .map_err(ApiError::internal)??;
    let cluster = &built.new.cluster;
    let mut details = serde_json::json!({ "name": cluster.name, "server": cluster.server, "key_storage": cluster.key_storage });
    if !imported.is_empty() {
        details["imported_authorities"] = imported.into();
    }
    let audit =
        actor.audit(now, "cluster.create", "cluster", cluster.id.to_string(), Some(cluster.id), details);
    if let Err(err) = app.store.create_cluster(&built.new, &audit).await {
        app.keyring.discard(&built.new.authorities);
        return Err(match err {
            StoreError::Conflict(_) => {
                ApiError::conflict(format!("a cluster named {:?} already exists", cluster.name))
            }
            other => other.into(),
        });
    }
    tracing::info!(cluster.name = %cluster.name, cluster.id = %cluster.id, actor = %actor.subject, "cluster created");
    Ok(publish::cluster_created(app, built))
}

/// Change a cluster. With `expected` (If-Match), only if it is still at that version (412);
/// without, a change that came in between is read and merged again, so none is lost.
pub async fn update(
    app: &App,
    actor: &Actor,
    claims: &Claims,
    cluster_id: Uuid,
    change: &ClusterChange,
    expected: Option<i64>,
) -> Result<Arc<ClusterSnapshot>, ApiError> {
    let id = cluster_id.to_string();
    let mut attempts = 0;
    loop {
        let current = app.store.find_cluster(&id).await.map_err(gone)?;
        if expected.is_some_and(|version| version != current.version) {
            return Err(stale(current.version));
        }
        let updated = change.apply(&current, app.now())?;
        require_admin_for_privileged(claims, &current.policy, &updated.policy)?;
        if updated == current {
            break;
        }
        let audit = actor.audit(
            updated.updated_at,
            "cluster.update",
            "cluster",
            id.clone(),
            Some(cluster_id),
            serde_json::json!({
                "server": updated.server,
                "policy": updated.policy,
                "labels": updated.labels,
                "version": updated.version + 1,
            }),
        );
        match app.store.update_cluster(&updated, &audit).await {
            Ok(()) => {
                tracing::info!(cluster.name = %updated.name, actor = %actor.subject, "cluster updated");
                break;
            }
            Err(StoreError::Conflict(_)) if expected.is_some() => {
                return Err(stale(app.store.find_cluster(&id).await.map_err(gone)?.version));
            }
            // Each round one of the racing writers wins, so a writer waits at most for the others
            // once each; the jitter spreads their retries.
            Err(StoreError::Conflict(_)) if attempts < MAX_MERGE_ATTEMPTS => {
                attempts += 1;
                let jitter = u64::from(Uuid::new_v4().as_bytes()[0] % 8);
                tokio::time::sleep(std::time::Duration::from_millis(1 + jitter)).await;
            }
            Err(StoreError::Conflict(_)) => {
                return Err(ApiError::conflict(
                    "the cluster is being changed by many clients at once; retry",
                ));
            }
            Err(other) => return Err(gone(other)),
        }
    }
    publish::refresh(app, &id).await.map_err(gone)
}

/// Delete a cluster, its CAs (keys destroyed) and certificate records; the audit trail stays.
pub async fn delete(
    app: &App,
    actor: &Actor,
    cluster_id: Uuid,
    expected: Option<i64>,
) -> Result<(), ApiError> {
    let current = app.store.find_cluster(&cluster_id.to_string()).await.map_err(gone)?;
    if expected.is_some_and(|version| version != current.version) {
        return Err(stale(current.version));
    }
    let audit = actor.audit(
        app.now(),
        "cluster.delete",
        "cluster",
        cluster_id.to_string(),
        Some(cluster_id),
        serde_json::json!({ "name": current.name }),
    );
    app.store.delete_cluster(cluster_id, expected, &audit).await.map_err(|e| match e {
        StoreError::Conflict(_) => stale(current.version + 1),
        other => gone(other),
    })?;
    tracing::info!(cluster.name = %current.name, actor = %actor.subject, "cluster deleted");
    publish::cluster_deleted(app, cluster_id);
    Ok(())
}

/// Keys go to a PKCS#11 token only when this server has one configured.
pub(super) fn require_token_for(app: &App, storage: crate::pki::KeyStorage) -> Result<(), ApiError> {
    if storage == crate::pki::KeyStorage::Pkcs11 && app.keyring.token().is_err() {
        return Err(ApiError::invalid(
            "key_storage",
            "this server has no PKCS#11 token configured (KCA_PKCS11_MODULE, KCA_PKCS11_TOKEN_LABEL, \
             KCA_PKCS11_PIN_FILE); use \"sealed\"",
        ));
    }
    Ok(())
}

/// The policy fields that decide who may obtain a privileged identity change only with an admin
/// token: a `clusters:write` token cannot widen them.
fn require_admin_for_privileged(
    claims: &Claims,
    current: &IssuancePolicy,
    updated: &IssuancePolicy,
) -> Result<(), ApiError> {
    match updated.privileged_fields_differ(current) {
        Some(field) if !claims.is_admin() => Err(ApiError::policy(
            "privileged_policy",
            format!("policy.{field}"),
            format!(
                "changing policy.{field} needs an admin token: it decides who may obtain privileged identities"
            ),
        )),
        _ => Ok(()),
    }
}

fn stale(current: i64) -> ApiError {
    ApiError::precondition_failed(format!(
        "the cluster changed since that version; it is at ETag \"{current}\": read it again"
    ))
}

fn gone(err: StoreError) -> ApiError {
    match err {
        StoreError::NotFound => ApiError::not_found("the cluster was deleted"),
        other => other.into(),
    }
}
