//! Storage: one interface, implemented once (`backend.rs`, over the statements and row mapping
//! of `sql.rs`) on two backends that hold only what differs: Postgres for production (`postgres.rs`)
//! and SQLite embedded (`sqlite.rs`).
//!
//! All SQL of kca lives below this module. Every method is one transaction; every change that
//! matters to an operator writes its audit event in that same transaction.

mod backend;
mod error;
mod migrate;
pub mod postgres;
mod sql;
pub mod sqlite;
mod stored_policy;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

pub use error::StoreError;

use crate::pki::crl::{RevocationReason, RevokedEntry};
use crate::pki::{AuthorityKind, KeyAlgorithm, KeyStorage, PkiError};
use crate::policy::IssuancePolicy;

pub type StoreResult<T> = Result<T, StoreError>;

/// A cluster as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterRecord {
    pub id: Uuid,
    pub name: String,
    pub server: String,
    pub key_algorithm: KeyAlgorithm,
    /// Where the keys of its CAs are kept unless a rotation says otherwise.
    pub key_storage: KeyStorage,
    pub policy: IssuancePolicy,
    pub labels: BTreeMap<String, String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    /// Incremented by every change of the row: the cluster's ETag.
    pub version: i64,
}

/// Lifecycle of one CA generation: the newest active one signs; every non-retired one is in the
/// bundles and has a CRL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthorityState {
    Active,
    Retiring,
    Retired,
}

impl AuthorityState {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthorityState::Active => "active",
            AuthorityState::Retiring => "retiring",
            AuthorityState::Retired => "retired",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(AuthorityState::Active),
            "retiring" => Some(AuthorityState::Retiring),
            "retired" => Some(AuthorityState::Retired),
            _ => None,
        }
    }
}

/// One generation of one CA of one cluster. The private key is sealed (`sealed_key`), or kept in
/// the PKCS#11 token under `key_reference` (`sealed_key` then empty); see `crate::keyring`.
#[derive(Clone, Debug, PartialEq)]
pub struct AuthorityRecord {
    pub id: Uuid,
    pub cluster_id: Uuid,
    pub kind: AuthorityKind,
    pub generation: i32,
    pub state: AuthorityState,
    pub subject: String,
    pub certificate_der: Vec<u8>,
    pub fingerprint: String,
    pub key_algorithm: KeyAlgorithm,
    pub key_storage: KeyStorage,
    /// The key's CKA_ID and CKA_LABEL in the token, for `KeyStorage::Pkcs11`.
    pub key_reference: Option<String>,
    pub sealed_key: Vec<u8>,
    pub key_version: i32,
    /// The same key sealed under the previous master key version, kept by a rewrap until
    /// `kca keys drop-previous`.
    pub previous_seal: Option<PreviousSeal>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub created_at: OffsetDateTime,
    /// For an intermediate under the organisation's root: its issuers, PEM, nearest first
    /// (empty otherwise). Served after it in its bundles.
    pub chain_pem: String,
}

/// A key made for an intermediate whose certificate the organisation has yet to sign. Its id
/// becomes the authority's id (the key is sealed bound to it).
#[derive(Clone, Debug, PartialEq)]
pub struct PendingAuthorityRecord {
    pub id: Uuid,
    pub cluster_id: Uuid,
    pub kind: AuthorityKind,
    pub key_algorithm: KeyAlgorithm,
    pub sealed_key: Vec<u8>,
    pub key_version: i32,
    pub csr_der: Vec<u8>,
    pub created_at: OffsetDateTime,
    /// The copy a master-key rewrap kept under the previous master key.
    pub previous_seal: Option<PreviousSeal>,
}

/// A service-account token signing key of a cluster, sealed under the master key. The active one
/// signs; active and retiring ones verify.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceAccountKeyRecord {
    pub id: Uuid,
    pub cluster_id: Uuid,
    /// The JWT `kid` kube-apiserver gives it: base64url of the SHA-256 of its public key.
    pub key_id: String,
    pub state: AuthorityState,
    pub key_algorithm: KeyAlgorithm,
    pub sealed_key: Vec<u8>,
    pub key_version: i32,
    /// `PUBLIC KEY` (SubjectPublicKeyInfo) PEM.
    pub public_pem: String,
    pub created_at: OffsetDateTime,
    /// The copy a master-key rewrap kept under the previous master key.
    pub previous_seal: Option<PreviousSeal>,
}

/// A key sealed under a previous master key version, kept during a master-key change.
#[derive(Clone, Debug, PartialEq)]
pub struct PreviousSeal {
    pub key_version: Option<i32>,
    pub sealed_key: Vec<u8>,
}

/// What a sealed value belongs to; its associated data derives from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SealedOwner {
    Authority(Uuid),
    TokenKey(i32),
    /// The key of an intermediate waiting for its certificate (bound like an authority's).
    PendingAuthority(Uuid),
    ServiceAccountKey(Uuid),
    /// The value sealed at first start to tell a wrong master key.
    MasterKeyCheck,
}

/// Given a sealed value and its owner, answers it sealed under the new master key, or `None`
/// when the new master key opens it already. Called by the store inside its transaction.
pub type Resealer<'a> = &'a (dyn Fn(SealedOwner, &[u8]) -> Result<Option<Vec<u8>>, PkiError> + Send + Sync);

/// Checks that the current master key opens a sealed value.
pub type SealChecker<'a> = &'a (dyn Fn(SealedOwner, &[u8]) -> Result<(), PkiError> + Send + Sync);

/// How many values a rewrap sealed again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RewrapCounts {
    pub authorities: u64,
    pub token_keys: u64,
    /// Service-account keys and pending intermediate keys.
    pub cluster_keys: u64,
    pub master_key_check: u64,
}

/// One row of a backup: its table and its columns.
pub type BackupRow = (String, serde_json::Map<String, serde_json::Value>);

/// Settings key of the master key check, and of its copy under the previous master key.
pub const MASTER_KEY_CHECK: &str = "master_key_check";
pub const MASTER_KEY_CHECK_PREVIOUS: &str = "master_key_check:previous";

/// The current CRL of one CA generation.
#[derive(Clone, Debug, PartialEq)]
pub struct CrlRecord {
    pub authority_id: Uuid,
    pub number: i64,
    pub this_update: OffsetDateTime,
    pub next_update: OffsetDateTime,
    pub entries: i64,
    pub der: Vec<u8>,
}

/// A cluster to create, with its five first-generation authorities and their first (empty) CRLs.
#[derive(Clone, Debug)]
pub struct NewCluster {
    pub cluster: ClusterRecord,
    pub authorities: Vec<AuthorityRecord>,
    pub crls: Vec<CrlRecord>,
    /// Service-account keys it starts with (an imported `sa.key`), if any.
    pub service_account_keys: Vec<ServiceAccountKeyRecord>,
}

/// An issued certificate, as recorded before it is handed out.
#[derive(Clone, Debug, PartialEq)]
pub struct CertificateRecord {
    pub serial: String,
    pub cluster_id: Uuid,
    pub authority_id: Uuid,
    pub kind: AuthorityKind,
    pub generation: i32,
    pub profile: String,
    pub common_name: String,
    pub groups: Vec<String>,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<String>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub fingerprint: String,
    pub certificate_der: Vec<u8>,
    pub issued_by: String,
    pub created_at: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
    pub revocation_reason: Option<RevocationReason>,
}

/// Which certificates a listing shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertificateStatus {
    Active,
    Expired,
    Revoked,
}

#[derive(Clone, Debug, Default)]
pub struct CertificateFilter {
    pub common_name: Option<String>,
    pub status: Option<CertificateStatus>,
    /// Keyset cursor: only certificates recorded before this position.
    pub before_seq: Option<i64>,
    pub limit: u32,
    /// Only unexpired, unrevoked certificates that expire by then.
    pub expiring_before: Option<OffsetDateTime>,
}

/// A page of certificates, newest first, with each one's position for the next cursor.
pub type CertificatePage = Vec<(i64, CertificateRecord)>;

/// Who did what to which object, from where. Written in the transaction of the change.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEntry {
    pub at: OffsetDateTime,
    pub actor: String,
    pub action: String,
    pub object_type: String,
    pub object_id: String,
    pub cluster_id: Option<Uuid>,
    pub remote_addr: Option<String>,
    pub details: serde_json::Value,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AuditRecord {
    pub id: i64,
    pub entry: AuditEntry,
}

/// Which audit events to list: every condition given must hold.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AuditQuery {
    /// Only events older than this one (the cursor).
    pub before_id: Option<i64>,
    /// Only events of these clusters (a token's restriction).
    pub clusters: Option<Vec<Uuid>>,
    /// Only events of this cluster.
    pub cluster_id: Option<Uuid>,
    /// Only events of this actor, exactly.
    pub actor: Option<String>,
    /// Only this action; a trailing `*` matches every action that starts with what precedes it.
    pub action: Option<String>,
    /// Only events at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Only events before this time.
    pub until: Option<OffsetDateTime>,
}

/// A registered API token (never the token itself: its signature is not kept).
#[derive(Clone, Debug, PartialEq)]
pub struct TokenRecord {
    /// The token's `jti`.
    pub id: Uuid,
    pub subject: String,
    pub scopes: Vec<crate::scope::Scope>,
    /// Cluster ids, or `*`.
    pub clusters: Vec<String>,
    pub groups: Option<Vec<String>>,
    pub max_ttl: Option<u64>,
    /// The signing key's id (the JWT `kid`).
    pub key_id: i32,
    /// Subject of the token (or `host:` operator) that minted it.
    pub created_by: String,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub last_used_at: Option<OffsetDateTime>,
    pub revoked_at: Option<OffsetDateTime>,
}

/// A token signing key, sealed under the master key.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenKeyRecord {
    pub id: i32,
    pub sealed_key: Vec<u8>,
    /// The master key version it is sealed under; none for keys sealed before versions were
    /// recorded (under the master key the database was created with).
    pub key_version: Option<i32>,
    pub previous_seal: Option<PreviousSeal>,
    pub created_at: OffsetDateTime,
    /// When the last token signed with it expires (none: it signed no registered token).
    pub last_token_expiry: Option<OffsetDateTime>,
}

/// A page of tokens, newest first, with each one's position for the next cursor.
pub type TokenPage = Vec<(i64, TokenRecord)>;

/// A CRL as the signer hands it back to the store.
pub struct SignedCrl {
    pub der: Vec<u8>,
    pub this_update: OffsetDateTime,
    pub next_update: OffsetDateTime,
}

/// An authority's revoked, unexpired certificates as its last CRL listed them, kept between its
/// publications so that the next one reads only the revocations numbered since (see
/// [`Store::publish_crl`]). Empty and unread until the first publication of a process.
#[derive(Debug, Default)]
pub struct RevokedSet {
    /// The authority's revocation counter this set is complete up to.
    through: Option<i64>,
    entries: Vec<RevokedEntry>,
    /// `entries[i]`'s certificate expires at `expiries[i]`; it leaves the CRL after that.
    expiries: Vec<OffsetDateTime>,
}

impl RevokedSet {
    /// Read the whole set again at the next publication.
    pub fn forget(&mut self) {
        *self = Self::default();
    }

    /// Up to which number the set holds the revocations of a database whose counter is at
    /// `revocations`: reading those numbered after it completes the set. `None` when the set was
    /// never read, or when the counter is lower than the set's (a database restored under a
    /// running replica): the set is not of this database, read it all.
    fn current_through(&self, revocations: i64) -> Option<i64> {
        self.through.filter(|through| *through <= revocations)
    }

    fn replace(&mut self, through: i64, entries: Vec<RevokedEntry>, expiries: Vec<OffsetDateTime>) {
        debug_assert_eq!(entries.len(), expiries.len());
        *self = Self { through: Some(through), entries, expiries };
    }

    fn extend(&mut self, through: i64, added: Vec<(RevokedEntry, OffsetDateTime)>) {
        for (entry, expiry) in added {
            self.entries.push(entry);
            self.expiries.push(expiry);
        }
        self.through = Some(through);
    }

    /// Drop the certificates that expired at or before `cutoff` (a CRL stops listing them).
    fn drop_expired(&mut self, cutoff: OffsetDateTime) {
        if self.expiries.iter().all(|expiry| *expiry > cutoff) {
            return;
        }
        let mut keep = self.expiries.iter().map(|expiry| *expiry > cutoff);
        self.entries.retain(|_| keep.next().unwrap_or(false));
        self.expiries.retain(|expiry| *expiry > cutoff);
    }

    pub fn entries(&self) -> &[RevokedEntry] {
        &self.entries
    }
}

/// Signs a CRL for a given number and entries; called by the store inside its transaction, after
/// the number is allocated and the entries are read, so that a higher number never lists less.
pub type CrlSigner<'a> = &'a (dyn Fn(u64, &[RevokedEntry]) -> Result<SignedCrl, PkiError> + Send + Sync);

/// A change another replica made, announced through the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// A new CRL of this authority, with its number.
    Crl(Uuid, i64),
    /// This cluster was created, changed or deleted, or one of its authorities rotated or retired.
    Cluster(Uuid),
    /// This API token was revoked.
    TokenRevoked(Uuid),
    /// A token signing key was added.
    TokenKeys,
    /// Announcements may have been missed (the listening connection was lost): re-read everything.
    Resync,
}

impl Change {
    pub(crate) fn payload(&self) -> String {
        match self {
            Change::Crl(id, number) => format!("crl:{id}:{number}"),
            Change::Cluster(id) => format!("cluster:{id}"),
            Change::TokenRevoked(id) => format!("token:{id}"),
            Change::TokenKeys => "token-keys".to_string(),
            Change::Resync => "resync".to_string(),
        }
    }

    pub(crate) fn parse(payload: &str) -> Option<Self> {
        match payload.split_once(':') {
            Some(("crl", rest)) => {
                let (id, number) = rest.split_once(':')?;
                Some(Change::Crl(Uuid::parse_str(id).ok()?, number.parse().ok()?))
            }
            Some(("cluster", id)) => Uuid::parse_str(id).ok().map(Change::Cluster),
            Some(("token", id)) => Uuid::parse_str(id).ok().map(Change::TokenRevoked),
            _ => match payload {
                "resync" => Some(Change::Resync),
                "token-keys" => Some(Change::TokenKeys),
                _ => None,
            },
        }
    }
}

/// Pool figures for metrics.
#[derive(Clone, Copy, Debug, Default)]
pub struct PoolState {
    pub size: u32,
    pub idle: u32,
    pub max: u32,
}

/// The storage interface, implemented for every [`backend::Backend`].
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `postgres` or `sqlite`.
    fn backend(&self) -> &'static str;

    fn pool_state(&self) -> PoolState;

    /// Bring the schema up to date (embedded migrations).
    async fn migrate(&self) -> StoreResult<()>;

    /// Whether this process leads the background work (CRL re-signing). Replicas sharing a
    /// database elect one; a leader that dies loses the lead with its connection.
    async fn hold_leadership(&self) -> StoreResult<bool>;

    /// Changes made by any replica, as they commit; `None` where no other process can write
    /// (the embedded database).
    async fn subscribe(&self) -> StoreResult<Option<tokio::sync::mpsc::Receiver<Change>>>;

    /// A named value, e.g. the sealed token signing key.
    async fn get_setting(&self, key: &str) -> StoreResult<Option<Vec<u8>>>;

    /// Store `value` under `key` unless something is there already; answers what is stored, so
    /// replicas starting together agree on one value.
    async fn insert_setting_if_absent(&self, key: &str, value: &[u8]) -> StoreResult<Vec<u8>>;

    /// Fails with `Conflict` when the name is taken.
    async fn create_cluster(&self, new: &NewCluster, audit: &AuditEntry) -> StoreResult<()>;

    /// By id (a UUID) or by name.
    async fn find_cluster(&self, id_or_name: &str) -> StoreResult<ClusterRecord>;

    /// Ordered by name, after `after_name`; `only` restricts to those ids.
    async fn list_clusters(
        &self,
        after_name: Option<&str>,
        only: Option<&[Uuid]>,
        limit: u32,
    ) -> StoreResult<Vec<ClusterRecord>>;

    /// Save server, policy, labels and updated_at if the stored row is still at `cluster.version`
    /// (it then moves to the next version); `Conflict` when another change came first.
    async fn update_cluster(&self, cluster: &ClusterRecord, audit: &AuditEntry) -> StoreResult<()>;

    /// Delete a cluster with its authorities, certificates and CRLs (the audit trail stays); with
    /// a `version`, only if the row is still at it (`Conflict` otherwise).
    async fn delete_cluster(&self, id: Uuid, version: Option<i64>, audit: &AuditEntry) -> StoreResult<()>;

    /// Every generation of every kind of a cluster, retired ones included, oldest first.
    async fn list_authorities(&self, cluster_id: Uuid) -> StoreResult<Vec<AuthorityRecord>>;

    async fn get_authority(&self, id: Uuid) -> StoreResult<AuthorityRecord>;

    /// Every non-retired authority of every cluster.
    async fn list_live_authorities(&self) -> StoreResult<Vec<AuthorityRecord>>;

    /// Add a new generation of an authority (with its first CRL) and make it the signer: the
    /// active generations of that kind become retiring. Conflict when another rotation won.
    async fn rotate_authority(
        &self,
        new: &AuthorityRecord,
        crl: &CrlRecord,
        audit: &AuditEntry,
    ) -> StoreResult<()>;

    /// Retire a retiring generation: it leaves every bundle and its CRL goes. Conflict while it
    /// still has unexpired, unrevoked certificates, unless `force`, which revokes them first
    /// (cessationOfOperation). Answers the serials revoked.
    async fn retire_authority(
        &self,
        authority_id: Uuid,
        force: bool,
        audit: &AuditEntry,
    ) -> StoreResult<Vec<String>>;

    /// Record issued certificates, each with its audit event, in one transaction.
    async fn record_certificates(&self, batch: &[(CertificateRecord, AuditEntry)]) -> StoreResult<()>;

    async fn get_certificate(&self, cluster_id: Uuid, serial: &str) -> StoreResult<CertificateRecord>;

    async fn list_certificates(
        &self,
        cluster_id: Uuid,
        filter: &CertificateFilter,
        now: OffsetDateTime,
    ) -> StoreResult<CertificatePage>;

    /// Revoke one certificate; revoking again changes nothing. Answers the certificate and whether
    /// this call revoked it.
    async fn revoke_certificate(
        &self,
        cluster_id: Uuid,
        serial: &str,
        reason: RevocationReason,
        audit: &AuditEntry,
    ) -> StoreResult<(CertificateRecord, bool)>;

    /// Revoke every unexpired, unrevoked certificate of a cluster whose CN is `common_name`.
    async fn revoke_by_common_name(
        &self,
        cluster_id: Uuid,
        common_name: &str,
        reason: RevocationReason,
        audit: &AuditEntry,
    ) -> StoreResult<Vec<CertificateRecord>>;

    /// Allocate the next CRL Number of an authority (the stored one plus one, or `number_floor`
    /// if higher: see `pki::crl::crl_number_floor`), bring `known` up to date with its revoked
    /// certificates that expired after `expired_cutoff`, have `sign` make the CRL, and store it,
    /// all in one transaction that holds the authority's row lock. `known` is read whole when it
    /// is new; after that only the revocations numbered since are read.
    async fn publish_crl(
        &self,
        authority_id: Uuid,
        expired_cutoff: OffsetDateTime,
        number_floor: i64,
        known: &mut RevokedSet,
        sign: CrlSigner<'_>,
    ) -> StoreResult<CrlRecord>;

    /// Serial (uppercase hex) and reason of every revoked, unexpired certificate of these authorities.
    async fn list_revoked_serials(
        &self,
        authority_ids: &[Uuid],
        now: OffsetDateTime,
    ) -> StoreResult<Vec<(String, RevocationReason)>>;

    /// The current CRL of each of these authorities.
    async fn current_crls(&self, authority_ids: &[Uuid]) -> StoreResult<Vec<CrlRecord>>;

    /// Newest first, before `before_id`; `clusters` restricts to events of those clusters.
    async fn list_audit(
        &self,
        before_id: Option<i64>,
        clusters: Option<&[Uuid]>,
        limit: u32,
    ) -> StoreResult<Vec<AuditRecord>> {
        self.search_audit(
            &AuditQuery { before_id, clusters: clusters.map(<[Uuid]>::to_vec), ..Default::default() },
            limit,
        )
        .await
    }

    /// Newest first, the events that match every condition of the query.
    async fn search_audit(&self, query: &AuditQuery, limit: u32) -> StoreResult<Vec<AuditRecord>>;

    /// Register a minted token, with its audit event.
    async fn insert_token(&self, token: &TokenRecord, audit: &AuditEntry) -> StoreResult<()>;

    async fn get_token(&self, id: Uuid) -> StoreResult<TokenRecord>;

    /// Newest first, before `before_seq`.
    async fn list_tokens(&self, before_seq: Option<i64>, limit: u32) -> StoreResult<TokenPage>;

    /// Revoke a token (revoking again changes nothing) and announce it to every replica; answers
    /// the token as it now stands.
    async fn revoke_token(
        &self,
        id: Uuid,
        at: OffsetDateTime,
        audit: &AuditEntry,
    ) -> StoreResult<TokenRecord>;

    /// Record when tokens were last used (never moving a time backwards).
    async fn touch_tokens(&self, uses: &[(Uuid, OffsetDateTime)]) -> StoreResult<()>;

    /// Ids of the revoked tokens that have not expired yet.
    async fn list_revoked_tokens(&self, now: OffsetDateTime) -> StoreResult<Vec<Uuid>>;

    /// Every token signing key, oldest first.
    async fn list_token_keys(&self) -> StoreResult<Vec<TokenKeyRecord>>;

    /// Add a token signing key (Conflict when the id is taken) and announce it; with its audit
    /// event when one is given (the first key, made at first start, has none).
    async fn insert_token_key(
        &self,
        id: i32,
        sealed_key: &[u8],
        key_version: i32,
        at: OffsetDateTime,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<()>;

    /// Keep the key and CSR of an intermediate to be signed, replacing any earlier request for
    /// that cluster and kind, with its audit event.
    async fn save_pending_authority(
        &self,
        pending: &PendingAuthorityRecord,
        audit: &AuditEntry,
    ) -> StoreResult<()>;

    /// The pending intermediate of a cluster's kind.
    async fn get_pending_authority(
        &self,
        cluster_id: Uuid,
        kind: AuthorityKind,
    ) -> StoreResult<PendingAuthorityRecord>;

    /// Install a signed intermediate as a new generation (as `rotate_authority` does) and drop its
    /// pending request, whose id `new` carries; Conflict when that request was replaced meanwhile.
    async fn install_intermediate(
        &self,
        new: &AuthorityRecord,
        crl: &CrlRecord,
        audit: &AuditEntry,
    ) -> StoreResult<()>;

    /// Every service-account key of a cluster, retired ones included, oldest first.
    async fn list_service_account_keys(&self, cluster_id: Uuid) -> StoreResult<Vec<ServiceAccountKeyRecord>>;

    /// Add a service-account key that signs from now on: the active one becomes retiring (it still
    /// verifies). Conflict when the cluster has that key already.
    async fn add_service_account_key(
        &self,
        key: &ServiceAccountKeyRecord,
        audit: &AuditEntry,
    ) -> StoreResult<()>;

    /// Retire a retiring service-account key: it stops verifying. Conflict for the active one.
    async fn retire_service_account_key(
        &self,
        cluster_id: Uuid,
        key_id: &str,
        audit: &AuditEntry,
    ) -> StoreResult<()>;

    /// Record an audit event of an action that changes nothing stored (an export).
    async fn record_audit(&self, audit: &AuditEntry) -> StoreResult<()>;

    /// The earliest expiry of the unexpired, unrevoked certificates of each cluster and profile.
    async fn earliest_leaf_expiries(
        &self,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<(Uuid, String, OffsetDateTime)>>;
    /// Seal every key (authorities of every state, token keys, the master key check) again, in
    /// one transaction: `reseal` gives the value under the new master key, and the value it
    /// replaces is kept as the previous seal, so that replicas running with the previous master
    /// key keep opening it. Values the new key opens already are left alone (running it again
    /// seals only what was added meanwhile). Audited.
    async fn rewrap_sealed_keys(
        &self,
        new_version: i32,
        reseal: Resealer<'_>,
        audit: &AuditEntry,
    ) -> StoreResult<RewrapCounts>;

    /// Every row of every table, read in one consistent snapshot (one read transaction), tables
    /// in the order a restore writes them; values in the backend-neutral form of a backup.
    async fn backup_rows(&self) -> StoreResult<Vec<BackupRow>>;

    /// Write a backup's rows into this database, in one transaction; `Conflict` (and nothing
    /// written) unless it is empty. Answers the number of rows written.
    async fn restore_rows(&self, rows: &[BackupRow]) -> StoreResult<u64>;

    /// Forget the previous seals, once `check` says the current master key opens every value
    /// (else nothing changes and the error names what does not open). Audited.
    async fn drop_previous_seals(
        &self,
        check: SealChecker<'_>,
        audit: &AuditEntry,
    ) -> StoreResult<RewrapCounts>;
}

/// Open the store a database URL names: `postgres://…` or `sqlite://…`.
pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PostgresStore::connect(url, max_connections).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::connect(url).await?))
    } else {
        Err(StoreError::Config("the database URL must start with postgres:// or sqlite:".into()))
    }
}

/// Run CPU-heavy work (signing a large CRL) without stalling the other tasks of a runtime worker.
fn run_cpu_bound<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

#[cfg(test)]
mod revoked_set_tests {
    use super::RevokedSet;
    use crate::pki::Serial;
    use crate::pki::crl::{RevocationReason, RevokedEntry};

    fn entry(serial: u8) -> RevokedEntry {
        RevokedEntry {
            serial: Serial::from_bytes(&[serial]),
            revoked_at: time::macros::datetime!(2026-12-01 00:00 UTC),
            reason: RevocationReason::KeyCompromise,
        }
    }

    #[test]
    fn a_set_is_current_up_to_its_counter_and_dropped_when_the_database_is_behind_it() {
        let mut set = RevokedSet::default();
        assert_eq!(set.current_through(0), None, "never read");
        let at = |day| time::macros::datetime!(2026-12-01 00:00 UTC) + time::Duration::days(day);
        set.replace(5, vec![entry(1), entry(2)], vec![at(3), at(1)]);
        assert_eq!(set.current_through(5), Some(5));
        assert_eq!(set.current_through(9), Some(5), "revocations 6 to 9 are to be read");
        assert_eq!(set.current_through(4), None, "a database behind the set: read it all");
        set.extend(7, vec![(entry(3), at(2))]);
        assert_eq!(set.current_through(7), Some(7));
        set.drop_expired(at(1));
        let serials: Vec<_> = set.entries().iter().map(|e| e.serial.to_hex()).collect();
        assert_eq!(serials, ["01", "03"]);
        assert_eq!(set.expiries, [at(3), at(2)]);
        set.forget();
        assert_eq!(set.current_through(7), None);
    }
}

#[cfg(test)]
mod tests {
    use super::Change;

    #[test]
    fn changes_round_trip_through_their_payload() {
        let id = uuid::Uuid::new_v4();
        for change in [
            Change::Crl(id, 42),
            Change::Cluster(id),
            Change::TokenRevoked(id),
            Change::TokenKeys,
            Change::Resync,
        ] {
            assert_eq!(Change::parse(&change.payload()), Some(change));
        }
        assert_eq!(Change::parse("crl:nope"), None);
        assert_eq!(Change::parse("other"), None);
    }

    /// Each backend embeds every file of its migrations folder, and both folders number alike.
    #[test]
    fn migrations_are_embedded_and_numbered_alike_per_backend() {
        let versions = |dir: &str| -> Vec<i64> {
            let path = format!("{}/migrations/{dir}", env!("CARGO_MANIFEST_DIR"));
            let mut versions: Vec<i64> = std::fs::read_dir(path)
                .unwrap()
                .map(|entry| entry.unwrap().file_name().to_string_lossy()[..4].parse().unwrap())
                .collect();
            versions.sort();
            versions
        };
        let embedded =
            |list: &[super::migrate::EmbeddedMigration]| list.iter().map(|m| m.0).collect::<Vec<_>>();
        assert_eq!(versions("postgres"), versions("sqlite"));
        assert_eq!(embedded(super::postgres::MIGRATIONS), versions("postgres"));
        assert_eq!(embedded(super::sqlite::MIGRATIONS), versions("sqlite"));
    }
}
