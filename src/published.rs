//! What kca publishes without a token (CA bundles and CRLs), kept in memory so that it is served
//! fast and keeps being served while the database is unreachable.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::RwLock;

use bytes::Bytes;
use uuid::Uuid;

use crate::pki::{AuthorityKind, to_pem};
use crate::store::{AuthorityRecord, AuthorityState, ClusterRecord, CrlRecord};

/// A cluster with its authorities, as last read from the database.
#[derive(Debug, Clone)]
pub struct ClusterSnapshot {
    pub cluster: ClusterRecord,
    /// Every generation of every kind, retired ones included.
    pub authorities: Vec<AuthorityRecord>,
}

impl ClusterSnapshot {
    /// The non-retired generations of a kind, soonest-expiring first: the order of every bundle.
    pub fn live_generations(&self, kind: AuthorityKind) -> Vec<&AuthorityRecord> {
        let mut live: Vec<&AuthorityRecord> = self
            .authorities
            .iter()
            .filter(|a| a.kind == kind && a.state != AuthorityState::Retired)
            .collect();
        live.sort_by_key(|a| (a.not_after, a.generation));
        live
    }

    /// The generation that signs: the newest active one.
    pub fn signer(&self, kind: AuthorityKind) -> Option<&AuthorityRecord> {
        self.authorities
            .iter()
            .filter(|a| a.kind == kind && a.state == AuthorityState::Active)
            .max_by_key(|a| a.generation)
    }

    /// PEM bundle of the non-retired generations of `kinds`, in the order given: the CAs kca
    /// signs with, and nothing else (what HAProxy's `ca-file` pairs one CRL each with).
    pub fn ca_bundle(&self, kinds: &[AuthorityKind]) -> String {
        kinds
            .iter()
            .flat_map(|kind| self.live_generations(*kind))
            .map(|a| to_pem("CERTIFICATE", &a.certificate_der))
            .collect()
    }

    /// As [`Self::ca_bundle`], each intermediate followed by its issuers up to the organisation's
    /// root (each certificate once): what a client needs to build the path.
    pub fn ca_bundle_with_chains(&self, kinds: &[AuthorityKind]) -> String {
        let mut out = String::new();
        for authority in kinds.iter().flat_map(|kind| self.live_generations(*kind)) {
            out.push_str(&to_pem("CERTIFICATE", &authority.certificate_der));
            for certificate in split_pem(&authority.chain_pem) {
                if !out.contains(certificate.as_str()) {
                    out.push_str(&certificate);
                }
            }
        }
        out
    }

    /// The signing intermediate of `kind`, PEM, when it is one (its leaves then carry it after
    /// them, so that a server trusting only the organisation's root can build the path).
    pub fn signing_intermediate(&self, kind: AuthorityKind) -> Option<String> {
        self.signer(kind)
            .filter(|a| !a.chain_pem.is_empty())
            .map(|a| to_pem("CERTIFICATE", &a.certificate_der))
    }
}

/// The PEM blocks of a text, each with its lines as written.
fn split_pem(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        current.push_str(line);
        current.push('\n');
        if line.starts_with("-----END ") {
            blocks.push(std::mem::take(&mut current));
        }
    }
    blocks
}

/// A CRL ready to serve. Its DER and PEM are shared buffers: a download answers them without a
/// copy, whatever their size. The PEM is written at its first download, not at publication: a
/// revocation is answered once the DER is stored, and a CRL superseded before anyone asked for
/// its PEM (a burst of revocations) never pays for one.
#[derive(Debug)]
pub struct CachedCrl {
    /// The CRL's metadata (its `der` moved to [`CachedCrl::der`]).
    pub record: CrlRecord,
    pub der: Bytes,
    pem: OnceLock<Bytes>,
    /// Strong validator: the CRL Number and authority identify the content.
    pub etag: String,
    map_lines: OnceLock<Result<Vec<String>, String>>,
}

impl CachedCrl {
    pub fn new(mut record: CrlRecord) -> Self {
        let der = Bytes::from(std::mem::take(&mut record.der));
        let etag = format!("\"{}-{}\"", record.authority_id.simple(), record.number);
        Self { record, der, pem: OnceLock::new(), etag, map_lines: OnceLock::new() }
    }

    pub fn pem(&self) -> &Bytes {
        self.pem.get_or_init(|| Bytes::from(to_pem("X509 CRL", &self.der)))
    }

    /// `<SERIAL> <reason>` for each entry, read from the CRL itself (once). A CRL that does not
    /// parse is an error, never an empty list: that would say nothing is revoked.
    pub fn map_lines(&self) -> Result<&[String], String> {
        self.map_lines
            .get_or_init(|| crate::pki::crl::read_entries(&self.der).map_err(|e| e.to_string()))
            .as_deref()
            .map_err(|e| {
                format!("the cached CRL of authority {} does not parse: {e}", self.record.authority_id)
            })
    }
}

#[derive(Default)]
pub struct Published {
    /// Each snapshot with the read ticket it was taken under.
    clusters: RwLock<HashMap<Uuid, (u64, Arc<ClusterSnapshot>)>>,
    names: RwLock<HashMap<String, Uuid>>,
    crls: RwLock<HashMap<Uuid, Arc<CachedCrl>>>,
    /// Deleted clusters: ids are never reused, so a read that raced the deletion must not bring
    /// one back.
    deleted: RwLock<HashSet<Uuid>>,
    next_ticket: AtomicU64,
}

impl Published {
    pub fn cluster(&self, id_or_name: &str) -> Option<Arc<ClusterSnapshot>> {
        let id = match Uuid::parse_str(id_or_name) {
            Ok(id) => id,
            Err(_) => *self.names.read().get(id_or_name)?,
        };
        self.clusters.read().get(&id).map(|(_, snapshot)| snapshot.clone())
    }

    /// Take a ticket before reading a cluster from the database: of two reads that race, the one
    /// that started later saw the later state, and its snapshot is the one kept.
    pub fn ticket(&self) -> u64 {
        self.next_ticket.fetch_add(1, Ordering::SeqCst)
    }

    /// Publish a snapshot read under `ticket`, unless a later read's is there already or the
    /// cluster was deleted meanwhile; answers the snapshot that stands.
    pub fn put_cluster(&self, ticket: u64, snapshot: ClusterSnapshot) -> Arc<ClusterSnapshot> {
        let snapshot = Arc::new(snapshot);
        let id = snapshot.cluster.id;
        if self.deleted.read().contains(&id) {
            return snapshot;
        }
        let mut clusters = self.clusters.write();
        if let Some((held, newer)) = clusters.get(&id)
            && *held > ticket
        {
            return newer.clone();
        }
        clusters.insert(id, (ticket, snapshot.clone()));
        self.names.write().insert(snapshot.cluster.name.clone(), id);
        snapshot
    }

    /// Forget a deleted cluster and its CRLs, for good.
    pub fn remove_cluster(&self, id: Uuid) {
        self.deleted.write().insert(id);
        let removed = self.clusters.write().remove(&id);
        if let Some((_, snapshot)) = removed {
            self.names.write().remove(&snapshot.cluster.name);
            let mut crls = self.crls.write();
            for authority in &snapshot.authorities {
                crls.remove(&authority.id);
            }
        }
    }

    pub fn snapshots(&self) -> Vec<Arc<ClusterSnapshot>> {
        self.clusters.read().values().map(|(_, snapshot)| snapshot.clone()).collect()
    }

    pub fn crl(&self, authority_id: Uuid) -> Option<Arc<CachedCrl>> {
        self.crls.read().get(&authority_id).cloned()
    }

    pub fn remove_crl(&self, authority_id: Uuid) {
        self.crls.write().remove(&authority_id);
    }

    /// Keep `record` unless a CRL with a higher number is already cached: what is served never
    /// goes backwards, whatever order updates arrive in.
    pub fn put_crl(&self, record: CrlRecord) -> Arc<CachedCrl> {
        let mut crls = self.crls.write();
        if let Some(existing) = crls.get(&record.authority_id)
            && existing.record.number >= record.number
        {
            return existing.clone();
        }
        let cached = Arc::new(CachedCrl::new(record));
        crls.insert(cached.record.authority_id, cached.clone());
        cached
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ClusterRecord;

    fn snapshot(id: Uuid, server: &str) -> ClusterSnapshot {
        let now = time::OffsetDateTime::now_utc();
        ClusterSnapshot {
            cluster: ClusterRecord {
                id,
                name: "prod".into(),
                server: server.into(),
                key_algorithm: crate::pki::KeyAlgorithm::P256,
                key_storage: crate::pki::KeyStorage::Sealed,
                policy: Default::default(),
                labels: Default::default(),
                created_at: now,
                updated_at: now,
                version: 1,
            },
            authorities: vec![],
        }
    }

    #[test]
    fn a_crl_that_does_not_parse_is_an_error_not_an_empty_list() {
        let record = CrlRecord {
            authority_id: Uuid::new_v4(),
            number: 1,
            this_update: time::OffsetDateTime::now_utc(),
            next_update: time::OffsetDateTime::now_utc(),
            entries: 1,
            der: b"not a CRL".to_vec(),
        };
        assert!(CachedCrl::new(record).map_lines().is_err());
    }

    #[test]
    fn the_later_read_wins_and_a_deleted_cluster_stays_deleted() {
        let published = Published::default();
        let id = Uuid::new_v4();
        let (older, newer) = (published.ticket(), published.ticket());
        published.put_cluster(newer, snapshot(id, "https://new"));
        // A read that started earlier but finished later does not overwrite.
        let kept = published.put_cluster(older, snapshot(id, "https://old"));
        assert_eq!(kept.cluster.server, "https://new");
        assert_eq!(published.cluster("prod").unwrap().cluster.server, "https://new");
        published.remove_cluster(id);
        published.put_cluster(published.ticket(), snapshot(id, "https://racing"));
        assert!(published.cluster(&id.to_string()).is_none());
        assert!(published.cluster("prod").is_none());
    }
}
