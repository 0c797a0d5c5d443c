//! Background work of a running server: keeping the published snapshots and CRLs in step with the
//! database (changes other replicas announce, and a periodic re-read), and, on the one replica
//! that leads, re-signing CRLs before they age.

use std::collections::HashMap;
use std::time::Duration;

use uuid::Uuid;

use crate::app::{App, AppState};
use crate::crl_publisher::{PublishError, check_interval};
use crate::ratelimit::WarnEvery;
use crate::service::publish;
use crate::store::{AuthorityRecord, AuthorityState, Change, ClusterRecord, StoreError};

/// How often every replica re-reads clusters, authorities and CRLs, in case an announcement was
/// missed. Announcements arrive within milliseconds; this bounds the staleness when one is lost.
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(10);

/// Start the background tasks; they stop when the returned handles are aborted.
pub fn start(app: AppState) -> Vec<tokio::task::JoinHandle<()>> {
    vec![tokio::spawn(follow_changes(app.clone())), tokio::spawn(maintain(app))]
}

/// Apply the changes other replicas announce, and re-read everything periodically.
async fn follow_changes(app: AppState) {
    let mut warnings = RateLimitedWarnings::default();
    let mut changes = None;
    let mut resync = tokio::time::interval(RESYNC_INTERVAL);
    loop {
        if changes.is_none() {
            match app.store.subscribe().await {
                Ok(Some(receiver)) => changes = Some(receiver),
                // Nothing to follow (embedded database): only the periodic re-read matters.
                Ok(None) => {}
                Err(err) => warnings.warn("listen", &err),
            }
        }
        let change = match changes.as_mut() {
            Some(receiver) => tokio::select! {
                change = receiver.recv() => match change {
                    Some(change) => change,
                    None => { changes = None; Change::Resync }
                },
                _ = resync.tick() => Change::Resync,
            },
            None => {
                resync.tick().await;
                Change::Resync
            }
        };
        if let Err(err) = apply(&app, change).await {
            warnings.warn("apply", &err);
        }
    }
}

async fn apply(app: &App, change: Change) -> Result<(), StoreError> {
    match change {
        Change::Crl(authority_id, number) => {
            // This replica's own CRLs come back too: those it has already.
            if app.published.crl(authority_id).is_none_or(|cached| cached.record.number < number) {
                for crl in app.store.current_crls(&[authority_id]).await? {
                    app.published.put_crl(crl);
                }
            }
        }
        Change::Cluster(cluster_id) => reread_cluster(app, cluster_id).await?,
        Change::TokenRevoked(id) => app.tokens.forget(id),
        Change::TokenKeys => {
            if let Err(err) = app.tokens.reload_keys(app.store.as_ref(), app.keyring.master()).await {
                tracing::warn!(error = %err, "re-reading the token signing keys failed");
            }
        }
        Change::Resync => {
            resync_tokens(app).await?;
            let listing = list_everything(app).await?;
            resync(app, listing).await?
        }
    }
    Ok(())
}

/// Re-read one cluster by id: publish it, or forget it if it is gone (ids are never reused, so a
/// cluster not found is deleted for good).
async fn reread_cluster(app: &App, cluster_id: Uuid) -> Result<(), StoreError> {
    match publish::refresh(app, &cluster_id.to_string()).await {
        Ok(_) => {}
        Err(StoreError::NotFound) => publish::cluster_deleted(app, cluster_id),
        Err(err) => return Err(err),
    }
    Ok(())
}

/// Tokens: write when they were last used, re-read which are revoked (in case an announcement
/// was missed), and drop the keys no unexpired token needs.
async fn resync_tokens(app: &App) -> Result<(), StoreError> {
    app.tokens.flush_last_used(app.store.as_ref()).await?;
    let now = app.now();
    let revoked = app.store.list_revoked_tokens(now).await?;
    app.tokens.apply_revocations(&revoked, now);
    if let Err(err) = app.tokens.reload_keys(app.store.as_ref(), app.keyring.master()).await {
        tracing::warn!(error = %err, "re-reading the token signing keys failed");
    }
    Ok(())
}

/// Every cluster and every live authority, as the periodic re-read finds them.
pub struct Listing {
    clusters: HashMap<Uuid, ClusterRecord>,
    live: Vec<AuthorityRecord>,
}

pub async fn list_everything(app: &App) -> Result<Listing, StoreError> {
    let mut clusters = HashMap::new();
    let mut after: Option<String> = None;
    loop {
        let page = app.store.list_clusters(after.as_deref(), None, 500).await?;
        let full = page.len() == 500;
        after = page.last().map(|c| c.name.clone());
        for cluster in page {
            clusters.insert(cluster.id, cluster);
        }
        if !full {
            break;
        }
    }
    let live = app.store.list_live_authorities().await?;
    Ok(Listing { clusters, live })
}

/// Catch up with what `listing` shows changed since the snapshots were taken: clusters created,
/// changed or deleted, authorities rotated or retired, newer CRLs. The listing can be older than
/// a snapshot: a cluster created after it was read is missing from it, but published already.
/// So a published cluster the listing lacks is re-read by id, and forgotten only if that read
/// finds it deleted.
pub async fn resync(app: &App, listing: Listing) -> Result<(), StoreError> {
    let Listing { clusters: current, live } = listing;
    for snapshot in app.published.snapshots() {
        if !current.contains_key(&snapshot.cluster.id) {
            reread_cluster(app, snapshot.cluster.id).await?;
        }
    }
    for (id, cluster) in current {
        let cached = app.published.cluster(&id.to_string());
        let live_here: Vec<_> = live.iter().filter(|a| a.cluster_id == id).map(|a| (a.id, a.state)).collect();
        let stale = match &cached {
            None => true,
            Some(snapshot) => {
                let cached_live: Vec<_> = snapshot
                    .authorities
                    .iter()
                    .filter(|a| a.state != AuthorityState::Retired)
                    .map(|a| (a.id, a.state))
                    .collect();
                snapshot.cluster != cluster
                    || cached_live.len() != live_here.len()
                    || live_here.iter().any(|entry| !cached_live.contains(entry))
            }
        };
        if stale {
            publish::refresh(app, &cluster.id.to_string()).await?;
        }
    }
    let ids: Vec<_> = live.iter().map(|a| a.id).collect();
    for crl in app.store.current_crls(&ids).await? {
        app.published.put_crl(crl);
    }
    Ok(())
}

/// Background failures are logged at warn, but each kind at most once a minute: an outage of the
/// database must not flood the log with one line per attempt.
#[derive(Default)]
struct RateLimitedWarnings {
    last: HashMap<&'static str, WarnEvery>,
}

impl RateLimitedWarnings {
    fn warn(&mut self, what: &'static str, err: &dyn std::fmt::Display) {
        let Some(suppressed) = self.last.entry(what).or_default().due() else { return };
        match what {
            "listen" => tracing::warn!(error = %err, suppressed, "cannot listen for changes; retrying"),
            _ => tracing::warn!(
                error = %err,
                suppressed,
                "keeping the published state in step with the database failed; retrying"
            ),
        }
    }
}

/// On the leading replica: re-sign CRLs that have lived half their validity. On every replica:
/// warn about CRLs and CAs close to expiry, once an hour.
async fn maintain(app: AppState) {
    let interval = check_interval(app.settings.crl_validity);
    let mut last_warning: Option<std::time::Instant> = None;
    loop {
        match app.store.hold_leadership().await {
            Ok(true) => match resign_stale_crls(&app).await {
                Ok(0) => {}
                Ok(count) => tracing::info!(crls = count, "re-signed CRLs"),
                Err(err) => tracing::warn!(error = %err, "re-signing CRLs failed; retrying"),
            },
            Ok(false) => {}
            Err(err) => {
                tracing::warn!(error = %err, "cannot reach the database for background work; retrying")
            }
        }
        if last_warning.is_none_or(|at| at.elapsed() >= Duration::from_secs(3600)) {
            let warnings = app.expiry_warnings(app.now());
            for warning in &warnings {
                tracing::warn!(%warning, "expiry approaching");
            }
            if !warnings.is_empty() {
                last_warning = Some(std::time::Instant::now());
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// Re-sign every CRL that has lived half its validity, so that no published CRL is ever near
/// expiry: HAProxy rejects every client of a CA whose CRL has expired. Re-reading the current
/// CRLs first makes a CRL another replica just published count. A CA that cannot sign (its
/// PKCS#11 token is away) does not hold up the others; the first failure is answered after.
pub async fn resign_stale_crls(app: &App) -> Result<usize, PublishError> {
    let authorities = app.store.list_live_authorities().await?;
    let ids: Vec<_> = authorities.iter().map(|a| a.id).collect();
    for crl in app.store.current_crls(&ids).await? {
        app.published.put_crl(crl);
    }
    let half = app.settings.crl_validity / 2;
    let now = app.now();
    let mut resigned = 0;
    let mut failure = None;
    for authority in &authorities {
        let stale = match app.published.crl(authority.id) {
            Some(cached) => cached.record.this_update + crate::pki::ca::BACKDATE + half <= now,
            None => true,
        };
        if stale {
            match app.resign_crl(authority).await {
                Ok(_) => resigned += 1,
                Err(err) => {
                    failure.get_or_insert(err);
                }
            }
        }
    }
    match failure {
        Some(err) => Err(err),
        None => Ok(resigned),
    }
}
