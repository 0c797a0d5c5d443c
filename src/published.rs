//! What kca publishes without a token (CA bundles and CRLs), kept in memory so that it is served
//! fast and keeps being served while the database is unreachable.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

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

    /// PEM bundle of the non-retired generations of `kinds`, in the order given.
    pub fn ca_bundle(&self, kinds: &[AuthorityKind]) -> String {
        kinds
            .iter()
            .flat_map(|kind| self.live_generations(*kind))
            .map(|a| to_pem("CERTIFICATE", &a.certificate_der))
            .collect()
    }
}

/// A CRL ready to serve. Its DER and PEM are shared buffers: a download answers them without a
/// copy, whatever their size.
#[derive(Debug)]
pub struct CachedCrl {
    /// The CRL's metadata (its `der` moved to [`CachedCrl::der`]).
    pub record: CrlRecord,
    pub der: Bytes,
    pub pem: Bytes,
    /// Strong validator: the CRL Number and authority identify the content.
    pub etag: String,
    map_lines: OnceLock<Vec<String>>,
}

impl CachedCrl {
    pub fn new(mut record: CrlRecord) -> Self {
        let der = Bytes::from(std::mem::take(&mut record.der));
        let pem = Bytes::from(to_pem("X509 CRL", &der));
        let etag = format!("\"{}-{}\"", record.authority_id.simple(), record.number);
        Self { record, der, pem, etag, map_lines: OnceLock::new() }
    }

    /// `<SERIAL> <reason>` for each entry, read from the CRL itself (once).
    pub fn map_lines(&self) -> &[String] {
        self.map_lines.get_or_init(|| crate::pki::crl::read_entries(&self.der).unwrap_or_default())
    }
}

#[derive(Default)]
pub struct Published {
    clusters: RwLock<HashMap<Uuid, Arc<ClusterSnapshot>>>,
    names: RwLock<HashMap<String, Uuid>>,
    crls: RwLock<HashMap<Uuid, Arc<CachedCrl>>>,
}

impl Published {
    pub fn cluster(&self, id_or_name: &str) -> Option<Arc<ClusterSnapshot>> {
        let id = match Uuid::parse_str(id_or_name) {
            Ok(id) => id,
            Err(_) => *self.names.read().expect("names lock").get(id_or_name)?,
        };
        self.clusters.read().expect("clusters lock").get(&id).cloned()
    }

    pub fn put_cluster(&self, snapshot: ClusterSnapshot) -> Arc<ClusterSnapshot> {
        let snapshot = Arc::new(snapshot);
        let id = snapshot.cluster.id;
        self.names.write().expect("names lock").insert(snapshot.cluster.name.clone(), id);
        self.clusters.write().expect("clusters lock").insert(id, snapshot.clone());
        snapshot
    }

    /// Forget a deleted cluster and its CRLs.
    pub fn remove_cluster(&self, id: Uuid) {
        let removed = self.clusters.write().expect("clusters lock").remove(&id);
        if let Some(snapshot) = removed {
            self.names.write().expect("names lock").remove(&snapshot.cluster.name);
            let mut crls = self.crls.write().expect("crls lock");
            for authority in &snapshot.authorities {
                crls.remove(&authority.id);
            }
        }
    }

    pub fn snapshots(&self) -> Vec<Arc<ClusterSnapshot>> {
        self.clusters.read().expect("clusters lock").values().cloned().collect()
    }

    pub fn crl(&self, authority_id: Uuid) -> Option<Arc<CachedCrl>> {
        self.crls.read().expect("crls lock").get(&authority_id).cloned()
    }

    pub fn remove_crl(&self, authority_id: Uuid) {
        self.crls.write().expect("crls lock").remove(&authority_id);
    }

    /// Keep `record` unless a CRL with a higher number is already cached: what is served never
    /// goes backwards, whatever order updates arrive in.
    pub fn put_crl(&self, record: CrlRecord) -> Arc<CachedCrl> {
        let mut crls = self.crls.write().expect("crls lock");
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
