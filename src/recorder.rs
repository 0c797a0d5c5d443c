//! Group commit of issued certificates: concurrent issuances are written in one transaction, and
//! each request is answered only after the transaction holding its certificate has committed.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::store::{AuditEntry, CertificateRecord, Store, StoreError};

/// Largest batch written in one transaction.
const MAX_BATCH: usize = 256;

/// Why a certificate was not recorded (and so must not be handed out).
#[derive(Debug, Clone, thiserror::Error)]
pub enum RecordError {
    /// The writer task is gone (the server is shutting down).
    #[error("the certificate writer has stopped")]
    Stopped,
    /// The batch holding it failed; the writer logged that once for the whole batch.
    #[error("recording certificates failed: {0}")]
    Failed(Arc<StoreError>),
}

struct Pending {
    certificate: CertificateRecord,
    audit: AuditEntry,
    committed: oneshot::Sender<Result<(), RecordError>>,
}

/// Hands certificates to the writer tasks and waits for their commit.
#[derive(Clone)]
pub struct Recorder {
    queue: mpsc::Sender<Pending>,
}

impl Recorder {
    /// Start the writer task on `store`. It takes whatever is queued when it becomes free, so at
    /// low load a certificate is written alone and at once, and under load in batches.
    pub fn start(store: Arc<dyn Store>) -> Self {
        let (queue, receiver) = mpsc::channel::<Pending>(MAX_BATCH * 8);
        tokio::spawn(write_batches(store, receiver));
        Self { queue }
    }

    /// Record one certificate with its audit event; returns once it is durably committed.
    pub async fn record(&self, certificate: CertificateRecord, audit: AuditEntry) -> Result<(), RecordError> {
        let (committed, outcome) = oneshot::channel();
        self.queue.send(Pending { certificate, audit, committed }).await.map_err(|_| RecordError::Stopped)?;
        outcome.await.map_err(|_| RecordError::Stopped)?
    }
}

async fn write_batches(store: Arc<dyn Store>, mut receiver: mpsc::Receiver<Pending>) {
    loop {
        // Waits for one, then takes whatever else is queued, up to a batch.
        let mut batch = Vec::with_capacity(MAX_BATCH);
        if receiver.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        let (rows, waiters): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|p| ((p.certificate, p.audit), p.committed)).unzip();
        let outcome =
            store.record_certificates(&rows).await.map_err(|err| RecordError::Failed(Arc::new(err)));
        if let Err(err) = &outcome {
            tracing::error!(error = %err, certificates = rows.len(), "recording certificates failed; none was handed out");
        }
        for waiter in waiters {
            let _ = waiter.send(outcome.clone());
        }
    }
}
