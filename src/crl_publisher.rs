//! Publishing CRLs: one per CA generation, signed in the database transaction that allocates its
//! number, coalesced when revocations arrive in bursts, and re-signed before they grow old.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use std::time::Duration;

use uuid::Uuid;

use crate::app::App;
use crate::clusters::sign_crl_now;
use crate::keyring::KeyringError;
use crate::published::CachedCrl;
use crate::store::{AuthorityRecord, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Keyring(#[from] KeyringError),
}

/// Per authority: how many publications were asked for, and up to which request the last
/// finished publication covers.
#[derive(Default)]
struct Slot {
    requested: AtomicU64,
    covered: tokio::sync::Mutex<u64>,
}

#[derive(Default)]
pub struct CrlPublisher {
    slots: Mutex<HashMap<Uuid, Arc<Slot>>>,
}

impl CrlPublisher {
    fn slot(&self, authority_id: Uuid) -> Arc<Slot> {
        self.slots.lock().entry(authority_id).or_default().clone()
    }

    /// Publish a CRL of `authority` that reflects every revocation committed before this call.
    ///
    /// Callers arriving while a publication runs wait for it, then one of them publishes once for
    /// all of them: a burst of N revocations costs about two CRL builds, not N.
    pub async fn publish(
        &self,
        app: &App,
        authority: &AuthorityRecord,
    ) -> Result<Arc<CachedCrl>, PublishError> {
        let slot = self.slot(authority.id);
        let ticket = slot.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let mut covered = slot.covered.lock().await;
        if *covered >= ticket
            && let Some(cached) = app.published.crl(authority.id)
        {
            return Ok(cached);
        }
        // Everything requested up to here committed before it was requested, and the build
        // below reads the database after this point: it covers all of them.
        let covers = slot.requested.load(Ordering::SeqCst);
        let ca = app.keyring.signer(authority)?;
        let validity = app.settings.crl_validity;
        let now = app.now();
        let expired_cutoff = now - validity;
        let record = app
            .store
            .publish_crl(authority.id, expired_cutoff, &|number, entries| {
                sign_crl_now(&ca, number, entries, now, validity)
            })
            .await?;
        tracing::info!(
            authority.id = %authority.id,
            authority.kind = %authority.kind,
            crl.number = record.number,
            crl.entries = record.entries,
            "CRL published"
        );
        let cached = app.published.put_crl(record);
        *covered = covers;
        Ok(cached)
    }

    /// Forget the slots of authorities that are gone.
    pub fn forget(&self, authority_ids: &[Uuid]) {
        let mut slots = self.slots.lock();
        for id in authority_ids {
            slots.remove(id);
        }
    }
}

/// How often the background task looks at CRL ages: often enough for short validities in tests,
/// at most once a minute.
pub fn check_interval(validity: Duration) -> Duration {
    (validity / 8).clamp(Duration::from_secs(1), Duration::from_secs(60))
}
