//! Publishing CRLs: one per CA generation, signed in the database transaction that allocates its
//! number, coalesced when revocations arrive in bursts, and re-signed before they grow old.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::keyring::KeyringError;
use crate::published::CachedCrl;
use crate::store::{RevokedSet, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Keyring(#[from] KeyringError),
}

/// Per authority: how many publications were asked for, and, held by the one publishing, up to
/// which request the last finished publication covers and the revoked set it listed.
#[derive(Default)]
struct Slot {
    requested: AtomicU64,
    published: tokio::sync::Mutex<Published>,
}

#[derive(Default)]
struct Published {
    covered: u64,
    revoked: RevokedSet,
    /// When `revoked` was last read whole.
    read_whole_at: Option<Instant>,
}

/// How long a kept revoked set is extended by the revocations numbered since, before it is read
/// whole again. Revocations made through kca are all numbered; this bounds how long one written
/// in the database by other means (by hand, or a restore under a running replica) stays off the
/// CRL. At 100,000 revoked certificates a whole read costs about 50 ms.
const WHOLE_READ_INTERVAL: Duration = Duration::from_secs(600);

#[derive(Default)]
pub struct CrlPublisher {
    slots: Mutex<HashMap<Uuid, Arc<Slot>>>,
}

impl CrlPublisher {
    fn slot(&self, authority_id: Uuid) -> Arc<Slot> {
        self.slots.lock().entry(authority_id).or_default().clone()
    }

    /// Run `build` (which publishes a CRL of `authority_id` from what the database holds when it
    /// runs) so that the CRL answered reflects every revocation committed before this call.
    ///
    /// Callers arriving while a publication runs wait for it, then one of them publishes once for
    /// all of them: a burst of N revocations costs about two CRL builds, not N. `build` gets the
    /// revoked set the previous publication listed (see [`RevokedSet`]); with `reread`, or when
    /// that set was last read whole [`WHOLE_READ_INTERVAL`] ago, it gets it empty and reads it all.
    pub async fn coalesce<E>(
        &self,
        authority_id: Uuid,
        reread: bool,
        cached: impl Fn() -> Option<Arc<CachedCrl>>,
        build: impl AsyncFnOnce(&mut RevokedSet) -> Result<Arc<CachedCrl>, E>,
    ) -> Result<Arc<CachedCrl>, E> {
        let slot = self.slot(authority_id);
        let ticket = slot.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let mut published = slot.published.lock().await;
        if published.covered >= ticket
            && !reread
            && let Some(cached) = cached()
        {
            return Ok(cached);
        }
        if reread || published.read_whole_at.is_none_or(|at| at.elapsed() >= WHOLE_READ_INTERVAL) {
            published.revoked.forget();
            published.read_whole_at = Some(Instant::now());
        }
        // Everything requested up to here committed before it was requested, and the build
        // reads the database after this point: it covers all of them.
        let covers = slot.requested.load(Ordering::SeqCst);
        let crl = build(&mut published.revoked).await?;
        published.covered = covers;
        Ok(crl)
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
