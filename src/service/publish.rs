//! What this replica keeps in memory after a change commits, here or on another replica: the
//! unsealed signers, the published cluster snapshots and CRLs, the CRL publication slots. The one
//! place that keeps them in step, for every operation and for the background follower.

use std::sync::Arc;

use uuid::Uuid;

use crate::app::App;
use crate::clusters::{BuiltAuthority, BuiltCluster};
use crate::published::ClusterSnapshot;
use crate::store::{AuthorityRecord, AuthorityState, StoreError};

/// A cluster was created here: its signers and first CRLs are known without a database read.
pub fn cluster_created(app: &App, built: BuiltCluster) -> Arc<ClusterSnapshot> {
    for (id, signer) in built.signers {
        app.keyring.insert(id, signer);
    }
    for crl in built.new.crls {
        app.published.put_crl(crl);
    }
    app.published.put_cluster(
        app.published.ticket(),
        ClusterSnapshot { cluster: built.new.cluster, authorities: built.new.authorities },
    )
}

/// A new authority generation was stored here (a rotation).
pub fn authority_added(app: &App, built: BuiltAuthority) {
    app.keyring.insert(built.record.id, built.signer);
    app.published.put_crl(built.crl);
}

/// Re-read a cluster and publish it; forget what its retired generations held.
pub async fn refresh(app: &App, id_or_name: &str) -> Result<Arc<ClusterSnapshot>, StoreError> {
    let snapshot = app.refresh_snapshot(id_or_name).await?;
    authorities_retired(app, &snapshot.authorities);
    Ok(snapshot)
}

/// Generations that are retired need no signer, no CRL and no publication slot.
pub fn authorities_retired(app: &App, authorities: &[AuthorityRecord]) {
    let retired: Vec<Uuid> =
        authorities.iter().filter(|a| a.state == AuthorityState::Retired).map(|a| a.id).collect();
    forget_authorities(app, &retired);
}

/// A cluster was deleted: forget it and everything of its authorities, for good.
pub fn cluster_deleted(app: &App, cluster_id: Uuid) {
    if let Some(snapshot) = app.published.cluster(&cluster_id.to_string()) {
        let ids: Vec<Uuid> = snapshot.authorities.iter().map(|a| a.id).collect();
        forget_authorities(app, &ids);
    }
    app.published.remove_cluster(cluster_id);
}

fn forget_authorities(app: &App, ids: &[Uuid]) {
    app.keyring.remove(ids);
    app.crl_publisher.forget(ids);
    for id in ids {
        app.published.remove_crl(*id);
    }
}
