//! The one implementation of [`Store`], written once over what a backend provides: a pool,
//! writing transactions, a connection that runs [`Stmt`]s in its dialect, and the few operations
//! whose best SQL really differs (batch inserts, bulk reads, change notifications, leadership).

use async_trait::async_trait;
use sqlx::pool::PoolConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use super::sql::{self, *};
use super::stored_policy::StoredPolicy;
use super::*;

/// A connection of one backend: binds arguments its way and knows the dialect's differences.
#[async_trait]
pub(super) trait Connection: Send + Sized {
    type Db: sqlx::Database<Row = Self::Row, Arguments: sqlx::IntoArguments<Self::Db>>;
    type Row: Columns + Send + Sync;
    type Executor<'c>: sqlx::Executor<'c, Database = Self::Db>
    where
        Self: 'c;

    /// This connection, as the driver runs queries on it.
    fn executor(&mut self) -> Self::Executor<'_>;

    /// What, appended to a `SELECT` in a writing transaction, locks the rows read until commit
    /// (nothing where the transaction holds the database's write lock from its start).
    const FOR_UPDATE: &'static str;

    /// What an `INSERT` that gives identity columns their values says after the column list.
    const OVERRIDING_IDENTITY: &'static str;

    /// After rows were written with their identity values, have new rows number after them.
    async fn reset_identity(&mut self, table: &str, column: &str) -> StoreResult<()>;

    /// A condition: `column` is one of the UUIDs in the list bound as `$param`.
    fn in_list(column: &str, param: usize) -> String;

    fn bind(query: Query<Self>, arg: Arg) -> Query<Self>;

    fn rows_affected(result: <Self::Db as sqlx::Database>::QueryResult) -> u64;

    /// Announce a change to every replica when the transaction commits (where replicas exist).
    async fn notify(&mut self, change: Change) -> StoreResult<()>;

    /// The revoked certificates of an authority that expire after `cutoff`, in a CRL's terms,
    /// with their expiries.
    async fn revoked_entries(
        &mut self,
        authority_id: Uuid,
        cutoff: OffsetDateTime,
    ) -> StoreResult<(Vec<RevokedEntry>, Vec<OffsetDateTime>)>;

    fn query(stmt: Stmt) -> Query<Self> {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(stmt.sql));
        for arg in stmt.args {
            query = Self::bind(query, arg);
        }
        query
    }

    async fn execute(&mut self, stmt: Stmt) -> StoreResult<u64> {
        Ok(Self::rows_affected(Self::query(stmt).execute(self.executor()).await?))
    }

    async fn fetch_all(&mut self, stmt: Stmt) -> StoreResult<Vec<Self::Row>> {
        Ok(Self::query(stmt).fetch_all(self.executor()).await?)
    }

    async fn fetch_optional(&mut self, stmt: Stmt) -> StoreResult<Option<Self::Row>> {
        Ok(Self::query(stmt).fetch_optional(self.executor()).await?)
    }

    async fn fetch_one(&mut self, stmt: Stmt) -> StoreResult<Self::Row> {
        self.fetch_optional(stmt).await?.ok_or(StoreError::NotFound)
    }
}

/// A query of a connection's database, with its arguments.
pub(super) type Query<C> =
    sqlx::query::Query<'static, <C as Connection>::Db, <<C as Connection>::Db as sqlx::Database>::Arguments>;

type Conn<B> = <<B as Backend>::Db as sqlx::Database>::Connection;
type Tx<B> = sqlx::Transaction<'static, <B as Backend>::Db>;

#[async_trait]
pub(super) trait Backend: Send + Sync + 'static {
    type Db: sqlx::Database<Connection: Connection>;

    const NAME: &'static str;

    fn pool(&self) -> &sqlx::Pool<Self::Db>;

    /// A transaction that will write: it must not fail later on a lock upgrade.
    async fn begin_write(&self) -> StoreResult<Tx<Self>>;

    /// A read-only transaction whose reads all see one snapshot of the database.
    async fn begin_snapshot(&self) -> StoreResult<Tx<Self>>;

    async fn migrate(&self) -> StoreResult<()>;
    async fn hold_leadership(&self) -> StoreResult<bool>;
    async fn subscribe(&self) -> StoreResult<Option<tokio::sync::mpsc::Receiver<Change>>>;

    /// Record issued certificates with their audit events in one transaction; a backend may do
    /// it in fewer statements.
    async fn record_certificates(&self, batch: &[(CertificateRecord, AuditEntry)]) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        for (certificate, audit) in batch {
            tx.execute(sql::insert_certificate(certificate)).await?;
            tx.execute(sql::insert_audit(audit)).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn touch_tokens(&self, uses: &[(Uuid, OffsetDateTime)]) -> StoreResult<()>;

    async fn read(&self) -> StoreResult<PoolConnection<Self::Db>> {
        Ok(self.pool().acquire().await?)
    }
}

/// Append `AND column is one of ids`, in the connection's dialect.
fn push_in_list<C: Connection>(stmt: &mut Stmt, column: &str, ids: &[Uuid]) {
    stmt.args.push(ids.to_vec().into());
    let condition = C::in_list(column, stmt.args.len());
    stmt.push(" AND ").push(&condition);
}

/// Why a versioned change of a cluster matched no row: it is gone, or another change came first.
async fn stale_or_gone(conn: &mut impl Connection, id: Uuid) -> StoreError {
    let current = conn.fetch_optional(Stmt::new("SELECT version FROM clusters WHERE id = $1").bind(id)).await;
    match current.and_then(|row| row.map(|row| row.get::<i64>("version")).transpose()) {
        Ok(Some(current)) => {
            StoreError::Conflict(format!("stale version; the cluster is at version {current}"))
        }
        Ok(None) => StoreError::NotFound,
        Err(err) => err,
    }
}

/// A new authority generation with its first CRL; its CRL Number starts at that CRL's.
async fn insert_authority(
    conn: &mut impl Connection,
    a: &AuthorityRecord,
    crl: &CrlRecord,
) -> StoreResult<()> {
    conn.execute(
        Stmt::new(format!(
            "INSERT INTO authorities ({AUTHORITY_COLUMNS}, crl_number) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)"
        ))
        .bind(a.id)
        .bind(a.cluster_id)
        .bind(a.kind.as_str())
        .bind(a.generation)
        .bind(a.state.as_str())
        .bind(a.subject.as_str())
        .bind(a.certificate_der.as_slice())
        .bind(a.fingerprint.as_str())
        .bind(a.key_algorithm.as_str())
        .bind(a.sealed_key.as_slice())
        .bind(a.key_version)
        .bind(a.not_before)
        .bind(a.not_after)
        .bind(a.created_at)
        .bind(a.previous_seal.as_ref().map(|p| p.sealed_key.clone()))
        .bind(a.previous_seal.as_ref().and_then(|p| p.key_version))
        .bind(a.chain_pem.as_str())
        .bind(a.key_storage.as_str())
        .bind(a.key_reference.clone())
        .bind(crl.number),
    )
    .await?;
    conn.execute(
        Stmt::new(format!("INSERT INTO crls ({CRL_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"))
            .bind(crl.authority_id)
            .bind(crl.number)
            .bind(crl.this_update)
            .bind(crl.next_update)
            .bind(crl.entries)
            .bind(crl.der.as_slice()),
    )
    .await?;
    Ok(())
}

/// The tables holding sealed keys (`id`, `sealed_key`, `key_version` and the previous seal), each
/// with the condition that selects its sealed rows (an authority whose key is in a PKCS#11 token
/// has nothing sealed).
const SEALED_TABLES: [(&str, &str); 4] = [
    ("authorities", "WHERE key_storage = 'sealed'"),
    ("token_keys", ""),
    ("pending_authorities", ""),
    ("service_account_keys", ""),
];

/// Whose key a row of one of the [`SEALED_TABLES`] holds.
fn sealed_owner(table: &str, row: &impl Columns) -> StoreResult<SealedOwner> {
    Ok(match table {
        "authorities" => SealedOwner::Authority(row.uuid("id")?),
        "pending_authorities" => SealedOwner::PendingAuthority(row.uuid("id")?),
        "service_account_keys" => SealedOwner::ServiceAccountKey(row.uuid("id")?),
        _ => SealedOwner::TokenKey(row.get("id")?),
    })
}

impl SealedOwner {
    fn id_arg(self) -> Arg {
        match self {
            SealedOwner::Authority(id)
            | SealedOwner::PendingAuthority(id)
            | SealedOwner::ServiceAccountKey(id) => id.into(),
            SealedOwner::TokenKey(id) => id.into(),
            SealedOwner::MasterKeyCheck => MASTER_KEY_CHECK.into(),
        }
    }

    fn describe(self) -> String {
        match self {
            SealedOwner::Authority(id) => format!("authority {id}"),
            SealedOwner::TokenKey(id) => format!("token signing key {id}"),
            SealedOwner::PendingAuthority(id) => format!("pending intermediate key {id}"),
            SealedOwner::ServiceAccountKey(id) => format!("service-account key {id}"),
            SealedOwner::MasterKeyCheck => "the master key check".into(),
        }
    }
}

fn reseal_one(reseal: Resealer<'_>, owner: SealedOwner, sealed: &[u8]) -> StoreResult<Option<Vec<u8>>> {
    reseal(owner, sealed).map_err(|source| StoreError::Sealed { owner: owner.describe(), source })
}

fn check_one(check: SealChecker<'_>, owner: SealedOwner, sealed: &[u8]) -> StoreResult<()> {
    check(owner, sealed).map_err(|source| StoreError::Sealed { owner: owner.describe(), source })
}

async fn put_setting(conn: &mut impl Connection, key: &str, value: &[u8]) -> StoreResult<()> {
    conn.execute(
        Stmt::new(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value),
    )
    .await?;
    Ok(())
}

fn select_token(conn_id: Uuid) -> Stmt {
    Stmt::new(format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = $1")).bind(conn_id)
}

#[async_trait]
impl<B: Backend> Store for B {
    fn backend(&self) -> &'static str {
        B::NAME
    }

    fn pool_state(&self) -> PoolState {
        let pool = self.pool();
        PoolState {
            size: pool.size(),
            idle: pool.num_idle() as u32,
            max: pool.options().get_max_connections(),
        }
    }

    async fn migrate(&self) -> StoreResult<()> {
        Backend::migrate(self).await
    }

    async fn hold_leadership(&self) -> StoreResult<bool> {
        Backend::hold_leadership(self).await
    }

    async fn subscribe(&self) -> StoreResult<Option<tokio::sync::mpsc::Receiver<Change>>> {
        Backend::subscribe(self).await
    }

    async fn get_setting(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        let row = self
            .read()
            .await?
            .fetch_optional(Stmt::new("SELECT value FROM settings WHERE key = $1").bind(key))
            .await?;
        row.map(|row| row.get("value")).transpose()
    }

    async fn insert_setting_if_absent(&self, key: &str, value: &[u8]) -> StoreResult<Vec<u8>> {
        let mut conn = self.read().await?;
        conn.execute(
            Stmt::new("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
                .bind(key)
                .bind(value),
        )
        .await?;
        conn.fetch_one(Stmt::new("SELECT value FROM settings WHERE key = $1").bind(key)).await?.get("value")
    }

    async fn create_cluster(&self, new: &NewCluster, audit: &AuditEntry) -> StoreResult<()> {
        let c = &new.cluster;
        if new.authorities.len() != new.crls.len() {
            return Err(StoreError::Invalid("every new authority needs its first CRL".into()));
        }
        let mut tx = self.begin_write().await?;
        tx.execute(
            Stmt::new(
                "INSERT INTO clusters (id, name, server, key_algorithm, policy, labels, created_at, updated_at, \
                 key_storage) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(c.id)
            .bind(c.name.as_str())
            .bind(c.server.as_str())
            .bind(c.key_algorithm.as_str())
            .bind(serde_json::json!(StoredPolicy::from(&c.policy)))
            .bind(serde_json::json!(c.labels))
            .bind(c.created_at)
            .bind(c.updated_at)
            .bind(c.key_storage.as_str()),
        )
        .await?;
        for authority in &new.authorities {
            let crl =
                new.crls.iter().find(|crl| crl.authority_id == authority.id).ok_or_else(|| {
                    StoreError::Invalid(format!("no first CRL for authority {}", authority.id))
                })?;
            insert_authority(&mut *tx, authority, crl).await?;
        }
        for key in &new.service_account_keys {
            tx.execute(sql::insert_service_account_key(key)).await?;
        }
        tx.execute(sql::insert_audit(audit)).await?;
        tx.notify(Change::Cluster(c.id)).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn find_cluster(&self, id_or_name: &str) -> StoreResult<ClusterRecord> {
        let stmt = match Uuid::parse_str(id_or_name) {
            Ok(id) => Stmt::new(format!("SELECT {CLUSTER_COLUMNS} FROM clusters WHERE id = $1")).bind(id),
            Err(_) => {
                Stmt::new(format!("SELECT {CLUSTER_COLUMNS} FROM clusters WHERE name = $1")).bind(id_or_name)
            }
        };
        cluster_from_row(&self.read().await?.fetch_one(stmt).await?)
    }

    async fn list_clusters(
        &self,
        after_name: Option<&str>,
        only: Option<&[Uuid]>,
        limit: u32,
    ) -> StoreResult<Vec<ClusterRecord>> {
        let mut stmt = Stmt::new(format!("SELECT {CLUSTER_COLUMNS} FROM clusters WHERE TRUE"));
        if let Some(after) = after_name {
            stmt.push(" AND name > ").push_bind(after);
        }
        if let Some(ids) = only {
            push_in_list::<Conn<B>>(&mut stmt, "id", ids);
        }
        stmt.push(" ORDER BY name LIMIT ").push_bind(i64::from(limit));
        self.read().await?.fetch_all(stmt).await?.iter().map(cluster_from_row).collect()
    }

    async fn update_cluster(&self, cluster: &ClusterRecord, audit: &AuditEntry) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let updated = tx
            .execute(
                Stmt::new(
                    "UPDATE clusters SET server = $2, policy = $3, labels = $4, updated_at = $5, \
                     version = version + 1 WHERE id = $1 AND version = $6",
                )
                .bind(cluster.id)
                .bind(cluster.server.as_str())
                .bind(serde_json::json!(StoredPolicy::from(&cluster.policy)))
                .bind(serde_json::json!(cluster.labels))
                .bind(cluster.updated_at)
                .bind(cluster.version),
            )
            .await?;
        if updated == 0 {
            return Err(stale_or_gone(&mut *tx, cluster.id).await);
        }
        tx.execute(sql::insert_audit(audit)).await?;
        tx.notify(Change::Cluster(cluster.id)).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_cluster(&self, id: Uuid, version: Option<i64>, audit: &AuditEntry) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let deleted = tx
            .execute(
                Stmt::new("DELETE FROM clusters WHERE id = $1 AND ($2 IS NULL OR version = $2)")
                    .bind(id)
                    .bind(version),
            )
            .await?;
        if deleted == 0 {
            return Err(stale_or_gone(&mut *tx, id).await);
        }
        tx.execute(sql::insert_audit(audit)).await?;
        tx.notify(Change::Cluster(id)).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_authorities(&self, cluster_id: Uuid) -> StoreResult<Vec<AuthorityRecord>> {
        let stmt = Stmt::new(format!(
            "SELECT {AUTHORITY_COLUMNS} FROM authorities WHERE cluster_id = $1 ORDER BY kind, generation"
        ))
        .bind(cluster_id);
        self.read().await?.fetch_all(stmt).await?.iter().map(authority_from_row).collect()
    }

    async fn get_authority(&self, id: Uuid) -> StoreResult<AuthorityRecord> {
        let stmt = Stmt::new(format!("SELECT {AUTHORITY_COLUMNS} FROM authorities WHERE id = $1")).bind(id);
        authority_from_row(&self.read().await?.fetch_one(stmt).await?)
    }

    async fn list_live_authorities(&self) -> StoreResult<Vec<AuthorityRecord>> {
        let stmt = Stmt::new(format!(
            "SELECT {AUTHORITY_COLUMNS} FROM authorities WHERE state <> $1 ORDER BY cluster_id, kind, generation"
        ))
        .bind(AuthorityState::Retired.as_str());
        self.read().await?.fetch_all(stmt).await?.iter().map(authority_from_row).collect()
    }

    async fn rotate_authority(
        &self,
        new: &AuthorityRecord,
        crl: &CrlRecord,
        audit: &AuditEntry,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        tx.execute(
            Stmt::new("UPDATE authorities SET state = $3 WHERE cluster_id = $1 AND kind = $2 AND state = $4")
                .bind(new.cluster_id)
                .bind(new.kind.as_str())
                .bind(AuthorityState::Retiring.as_str())
                .bind(AuthorityState::Active.as_str()),
        )
        .await?;
        insert_authority(&mut *tx, new, crl).await?;
        tx.execute(sql::insert_audit(audit)).await?;
        tx.notify(Change::Cluster(new.cluster_id)).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn retire_authority(
        &self,
        authority_id: Uuid,
        force: bool,
        audit: &AuditEntry,
    ) -> StoreResult<Vec<String>> {
        let mut tx = self.begin_write().await?;
        let row = tx
            .fetch_one(
                Stmt::new(format!(
                    "SELECT state, cluster_id FROM authorities WHERE id = $1{}",
                    <Conn<B> as Connection>::FOR_UPDATE
                ))
                .bind(authority_id),
            )
            .await?;
        let state: String = row.get("state")?;
        let cluster_id = row.uuid("cluster_id")?;
        if state != AuthorityState::Retiring.as_str() {
            return Err(StoreError::Conflict(format!(
                "only a retiring generation can be retired; this one is {state} (rotate first)"
            )));
        }
        let live = tx
            .fetch_all(
                Stmt::new(
                    "SELECT serial FROM certificates \
                     WHERE authority_id = $1 AND revoked_at IS NULL AND not_after > $2",
                )
                .bind(authority_id)
                .bind(audit.at),
            )
            .await?
            .iter()
            .map(|row| row.get::<String>("serial"))
            .collect::<StoreResult<Vec<_>>>()?;
        if !live.is_empty() && !force {
            return Err(StoreError::Conflict(format!(
                "{} unexpired, unrevoked certificates were signed by this generation; \
                 retire with force to revoke them first",
                live.len()
            )));
        }
        tx.execute(
            Stmt::new("UPDATE authorities SET revocations = revocations + 1 WHERE id = $1")
                .bind(authority_id),
        )
        .await?;
        tx.execute(
            Stmt::new(
                "UPDATE certificates SET revoked_at = $2, revocation_reason = $3, \
                 revocation_seq = (SELECT revocations FROM authorities WHERE id = $1) \
                 WHERE authority_id = $1 AND revoked_at IS NULL AND not_after > $2",
            )
            .bind(authority_id)
            .bind(audit.at)
            .bind(RevocationReason::CessationOfOperation.as_str()),
        )
        .await?;
        tx.execute(
            Stmt::new("UPDATE authorities SET state = $2 WHERE id = $1")
                .bind(authority_id)
                .bind(AuthorityState::Retired.as_str()),
        )
        .await?;
        tx.execute(Stmt::new("DELETE FROM crls WHERE authority_id = $1").bind(authority_id)).await?;
        let mut entry = audit.clone();
        entry.details["revoked"] = live.iter().cloned().collect();
        tx.execute(sql::insert_audit(&entry)).await?;
        tx.notify(Change::Cluster(cluster_id)).await?;
        tx.commit().await?;
        Ok(live)
    }

    async fn record_certificates(&self, batch: &[(CertificateRecord, AuditEntry)]) -> StoreResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        Backend::record_certificates(self, batch).await
    }

    async fn get_certificate(&self, cluster_id: Uuid, serial: &str) -> StoreResult<CertificateRecord> {
        let stmt = Stmt::new(format!(
            "SELECT {CERTIFICATE_COLUMNS} FROM certificates WHERE serial = $1 AND cluster_id = $2"
        ))
        .bind(serial)
        .bind(cluster_id);
        Ok(certificate_from_row(&self.read().await?.fetch_one(stmt).await?)?.1)
    }

    async fn list_certificates(
        &self,
        cluster_id: Uuid,
        filter: &CertificateFilter,
        now: OffsetDateTime,
    ) -> StoreResult<CertificatePage> {
        let mut stmt =
            Stmt::new(format!("SELECT {CERTIFICATE_COLUMNS} FROM certificates WHERE cluster_id = $1"))
                .bind(cluster_id);
        if let Some(cn) = &filter.common_name {
            stmt.push(" AND common_name = ").push_bind(cn.as_str());
        }
        match filter.status {
            Some(CertificateStatus::Active) => {
                stmt.push(" AND revoked_at IS NULL AND not_after > ").push_bind(now);
            }
            Some(CertificateStatus::Expired) => {
                stmt.push(" AND revoked_at IS NULL AND not_after <= ").push_bind(now);
            }
            Some(CertificateStatus::Revoked) => {
                stmt.push(" AND revoked_at IS NOT NULL");
            }
            None => {}
        }
        if let Some(by) = filter.expiring_before {
            stmt.push(" AND revoked_at IS NULL AND not_after > ").push_bind(now);
            stmt.push(" AND not_after <= ").push_bind(by);
        }
        if let Some(before) = filter.before_seq {
            stmt.push(" AND seq < ").push_bind(before);
        }
        stmt.push(" ORDER BY seq DESC LIMIT ").push_bind(i64::from(filter.limit));
        self.read().await?.fetch_all(stmt).await?.iter().map(certificate_from_row).collect()
    }

    async fn revoke_certificate(
        &self,
        cluster_id: Uuid,
        serial: &str,
        reason: RevocationReason,
        audit: &AuditEntry,
    ) -> StoreResult<(CertificateRecord, bool)> {
        let mut tx = self.begin_write().await?;
        // The authority's row first, as a CRL publication and a retirement lock it, then the
        // certificate's. Numbering a revocation that turns out to be a repeat leaves a gap, which
        // is harmless: the transaction rolls back.
        let numbered = tx
            .fetch_optional(
                Stmt::new(
                    "UPDATE authorities SET revocations = revocations + 1 \
                     WHERE id = (SELECT authority_id FROM certificates WHERE serial = $1 AND cluster_id = $2) \
                     RETURNING revocations",
                )
                .bind(serial)
                .bind(cluster_id),
            )
            .await?;
        let row = tx
            .fetch_one(
                Stmt::new(format!(
                    "SELECT {CERTIFICATE_COLUMNS} FROM certificates WHERE serial = $1 AND cluster_id = $2{}",
                    <Conn<B> as Connection>::FOR_UPDATE
                ))
                .bind(serial)
                .bind(cluster_id),
            )
            .await?;
        let (_, mut certificate) = certificate_from_row(&row)?;
        if certificate.revoked_at.is_some() {
            return Ok((certificate, false));
        }
        let sequence: i64 = numbered
            .ok_or_else(|| StoreError::Corrupt(format!("certificate {serial} has no authority")))?
            .get("revocations")?;
        tx.execute(
            Stmt::new(
                "UPDATE certificates SET revoked_at = $2, revocation_reason = $3, revocation_seq = $4 \
                 WHERE serial = $1",
            )
            .bind(serial)
            .bind(audit.at)
            .bind(reason.as_str())
            .bind(sequence),
        )
        .await?;
        tx.execute(sql::insert_audit(audit)).await?;
        tx.commit().await?;
        certificate.revoked_at = Some(sql::stored_time(audit.at));
        certificate.revocation_reason = Some(reason);
        Ok((certificate, true))
    }

    async fn revoke_by_common_name(
        &self,
        cluster_id: Uuid,
        common_name: &str,
        reason: RevocationReason,
        audit: &AuditEntry,
    ) -> StoreResult<Vec<CertificateRecord>> {
        let mut tx = self.begin_write().await?;
        // Number the revocations of each of the cluster's authorities under its row lock (taken in
        // id order, so that two of these cannot deadlock); only those authorities' certificates
        // are revoked, since one created meanwhile was not locked.
        let authorities = tx
            .fetch_all(
                Stmt::new(format!(
                    "SELECT id FROM authorities WHERE cluster_id = $1 ORDER BY id{}",
                    <Conn<B> as Connection>::FOR_UPDATE
                ))
                .bind(cluster_id),
            )
            .await?
            .iter()
            .map(|row| row.uuid("id"))
            .collect::<StoreResult<Vec<_>>>()?;
        tx.execute(
            Stmt::new(format!(
                "UPDATE authorities SET revocations = revocations + 1 WHERE {}",
                <Conn<B> as Connection>::in_list("id", 1)
            ))
            .bind(authorities.clone()),
        )
        .await?;
        let rows = tx
            .fetch_all(
                Stmt::new(format!(
                    "UPDATE certificates SET revoked_at = $3, revocation_reason = $4, \
                     revocation_seq = (SELECT revocations FROM authorities WHERE authorities.id = certificates.authority_id) \
                     WHERE cluster_id = $1 AND common_name = $2 AND revoked_at IS NULL AND not_after > $3 AND {} \
                     RETURNING {CERTIFICATE_COLUMNS}",
                    <Conn<B> as Connection>::in_list("authority_id", 5)
                ))
                .bind(cluster_id)
                .bind(common_name)
                .bind(audit.at)
                .bind(reason.as_str())
                .bind(authorities),
            )
            .await?;
        let revoked: Vec<CertificateRecord> =
            rows.iter().map(|r| certificate_from_row(r).map(|(_, c)| c)).collect::<StoreResult<_>>()?;
        let mut entry = audit.clone();
        entry.details["serials"] = revoked.iter().map(|c| c.serial.clone()).collect();
        tx.execute(sql::insert_audit(&entry)).await?;
        tx.commit().await?;
        Ok(revoked)
    }

    async fn publish_crl(
        &self,
        authority_id: Uuid,
        expired_cutoff: OffsetDateTime,
        number_floor: i64,
        known: &mut RevokedSet,
        sign: CrlSigner<'_>,
    ) -> StoreResult<CrlRecord> {
        let mut tx = self.begin_write().await?;
        // The authority's row stays locked until commit (on SQLite the whole database does): a
        // concurrent publisher, of this replica or another, waits, then reads a revoked set that
        // includes everything this one saw. Revocations take the same lock to be numbered, so
        // every revocation numbered up to `revocations` has committed.
        let row = tx
            .fetch_one(
                Stmt::new(
                    "UPDATE authorities SET crl_number = CASE WHEN crl_number >= $3 THEN crl_number + 1 ELSE $3 END \
                     WHERE id = $1 AND state <> $2 RETURNING crl_number, revocations",
                )
                .bind(authority_id)
                .bind(AuthorityState::Retired.as_str())
                .bind(number_floor),
            )
            .await?;
        let number: i64 = row.get("crl_number")?;
        let revocations: i64 = row.get("revocations")?;
        match known.current_through(revocations) {
            Some(through) if through == revocations => {}
            Some(through) => {
                let added = tx
                    .fetch_all(
                        Stmt::new(
                            "SELECT serial, revoked_at, revocation_reason, not_after FROM certificates \
                             WHERE authority_id = $1 AND revocation_seq > $2",
                        )
                        .bind(authority_id)
                        .bind(through),
                    )
                    .await?
                    .iter()
                    .map(sql::revoked_entry_from_row)
                    .collect::<StoreResult<_>>()?;
                known.extend(revocations, added);
            }
            None => {
                let (entries, expiries) = tx.revoked_entries(authority_id, expired_cutoff).await?;
                known.replace(revocations, entries, expiries);
            }
        }
        known.drop_expired(expired_cutoff);
        let entries = known.entries();
        let signed = super::run_cpu_bound(|| sign(number as u64, entries))?;
        let record = CrlRecord {
            authority_id,
            number,
            this_update: signed.this_update,
            next_update: signed.next_update,
            entries: entries.len() as i64,
            der: signed.der,
        };
        tx.execute(
            Stmt::new(format!(
                "INSERT INTO crls ({CRL_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (authority_id) DO UPDATE SET crl_number = excluded.crl_number, \
                 this_update = excluded.this_update, next_update = excluded.next_update, \
                 entries = excluded.entries, der = excluded.der WHERE crls.crl_number < excluded.crl_number"
            ))
            .bind(record.authority_id)
            .bind(record.number)
            .bind(record.this_update)
            .bind(record.next_update)
            .bind(record.entries)
            .bind(record.der.as_slice()),
        )
        .await?;
        // Delivered at commit: the other replicas refresh their cached CRL at once.
        tx.notify(Change::Crl(authority_id, number)).await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn list_revoked_serials(
        &self,
        authority_ids: &[Uuid],
        now: OffsetDateTime,
    ) -> StoreResult<Vec<(String, RevocationReason)>> {
        let stmt = Stmt::new(format!(
            "SELECT serial, revocation_reason FROM certificates \
             WHERE {} AND revoked_at IS NOT NULL AND not_after > $2 ORDER BY seq",
            <Conn<B> as Connection>::in_list("authority_id", 1)
        ))
        .bind(authority_ids.to_vec())
        .bind(now);
        self.read().await?.fetch_all(stmt).await?.iter().map(revoked_serial_from_row).collect()
    }

    async fn current_crls(&self, authority_ids: &[Uuid]) -> StoreResult<Vec<CrlRecord>> {
        let stmt = Stmt::new(format!(
            "SELECT {CRL_COLUMNS} FROM crls WHERE {}",
            <Conn<B> as Connection>::in_list("authority_id", 1)
        ))
        .bind(authority_ids.to_vec());
        self.read().await?.fetch_all(stmt).await?.iter().map(crl_from_row).collect()
    }

    async fn search_audit(&self, query: &AuditQuery, limit: u32) -> StoreResult<Vec<AuditRecord>> {
        let mut stmt = Stmt::new(format!("SELECT {AUDIT_COLUMNS} FROM audit_events WHERE TRUE"));
        if let Some(before) = query.before_id {
            stmt.push(" AND id < ").push_bind(before);
        }
        if let Some(ids) = &query.clusters {
            push_in_list::<Conn<B>>(&mut stmt, "cluster_id", ids);
        }
        if let Some(id) = query.cluster_id {
            stmt.push(" AND cluster_id = ").push_bind(id);
        }
        if let Some(actor) = &query.actor {
            stmt.push(" AND actor = ").push_bind(actor.as_str());
        }
        match query.action.as_deref().map(|action| (action, action.strip_suffix('*'))) {
            None | Some((_, Some(""))) => {}
            // A prefix, compared as such (LIKE would treat `_` and `%` as wildcards, and its case
            // sensitivity differs between the backends).
            Some((_, Some(prefix))) => {
                let length = i32::try_from(prefix.chars().count()).unwrap_or(i32::MAX);
                stmt.push(" AND substr(action, 1, ").push_bind(length).push(") = ").push_bind(prefix);
            }
            Some((action, None)) => {
                stmt.push(" AND action = ").push_bind(action);
            }
        }
        if let Some(since) = query.since {
            stmt.push(" AND at >= ").push_bind(since);
        }
        if let Some(until) = query.until {
            stmt.push(" AND at < ").push_bind(until);
        }
        stmt.push(" ORDER BY id DESC LIMIT ").push_bind(i64::from(limit));
        self.read().await?.fetch_all(stmt).await?.iter().map(audit_from_row).collect()
    }

    async fn insert_token(&self, token: &TokenRecord, audit: &AuditEntry) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        tx.execute(
            Stmt::new(
                "INSERT INTO api_tokens (id, subject, scopes, clusters, groups, max_ttl_seconds, key_id, \
                 created_by, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(token.id)
            .bind(token.subject.as_str())
            .bind(serde_json::json!(sql::scope_names(&token.scopes)))
            .bind(serde_json::json!(token.clusters))
            .bind(token.groups.as_ref().map(|groups| serde_json::json!(groups)))
            .bind(token.max_ttl.map(|t| t as i64))
            .bind(token.key_id)
            .bind(token.created_by.as_str())
            .bind(token.created_at)
            .bind(token.expires_at),
        )
        .await?;
        tx.execute(sql::insert_audit(audit)).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_token(&self, id: Uuid) -> StoreResult<TokenRecord> {
        Ok(token_from_row(&self.read().await?.fetch_one(select_token(id)).await?)?.1)
    }

    async fn list_tokens(&self, before_seq: Option<i64>, limit: u32) -> StoreResult<TokenPage> {
        let mut stmt = Stmt::new(format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE TRUE"));
        if let Some(before) = before_seq {
            stmt.push(" AND seq < ").push_bind(before);
        }
        stmt.push(" ORDER BY seq DESC LIMIT ").push_bind(i64::from(limit));
        self.read().await?.fetch_all(stmt).await?.iter().map(token_from_row).collect()
    }

    async fn revoke_token(
        &self,
        id: Uuid,
        at: OffsetDateTime,
        audit: &AuditEntry,
    ) -> StoreResult<TokenRecord> {
        let mut tx = self.begin_write().await?;
        let updated = tx
            .execute(
                Stmt::new("UPDATE api_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                    .bind(id)
                    .bind(at),
            )
            .await?;
        let token = token_from_row(&tx.fetch_one(select_token(id)).await?)?.1;
        if updated > 0 {
            tx.execute(sql::insert_audit(audit)).await?;
            tx.notify(Change::TokenRevoked(id)).await?;
        }
        tx.commit().await?;
        Ok(token)
    }

    async fn touch_tokens(&self, uses: &[(Uuid, OffsetDateTime)]) -> StoreResult<()> {
        Backend::touch_tokens(self, uses).await
    }

    async fn list_revoked_tokens(&self, now: OffsetDateTime) -> StoreResult<Vec<Uuid>> {
        let stmt =
            Stmt::new("SELECT id FROM api_tokens WHERE revoked_at IS NOT NULL AND expires_at > $1").bind(now);
        self.read().await?.fetch_all(stmt).await?.iter().map(|row| row.uuid("id")).collect()
    }

    async fn list_token_keys(&self) -> StoreResult<Vec<TokenKeyRecord>> {
        let stmt = Stmt::new(
            "SELECT k.id, k.sealed_key, k.key_version, k.previous_sealed_key, k.previous_key_version, k.created_at, \
             (SELECT max(t.expires_at) FROM api_tokens t WHERE t.key_id = k.id) AS last_token_expiry \
             FROM token_keys k ORDER BY k.id",
        );
        self.read().await?.fetch_all(stmt).await?.iter().map(token_key_from_row).collect()
    }

    async fn insert_token_key(
        &self,
        id: i32,
        sealed_key: &[u8],
        key_version: i32,
        at: OffsetDateTime,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        tx.execute(
            Stmt::new(
                "INSERT INTO token_keys (id, sealed_key, key_version, created_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(id)
            .bind(sealed_key)
            .bind(key_version)
            .bind(at),
        )
        .await?;
        if let Some(audit) = audit {
            tx.execute(sql::insert_audit(audit)).await?;
        }
        tx.notify(Change::TokenKeys).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn save_pending_authority(
        &self,
        pending: &PendingAuthorityRecord,
        audit: &AuditEntry,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        tx.execute(
            Stmt::new("DELETE FROM pending_authorities WHERE cluster_id = $1 AND kind = $2")
                .bind(pending.cluster_id)
                .bind(pending.kind.as_str()),
        )
        .await?;
        tx.execute(
            Stmt::new(format!(
                "INSERT INTO pending_authorities ({PENDING_AUTHORITY_COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            ))
            .bind(pending.id)
            .bind(pending.cluster_id)
            .bind(pending.kind.as_str())
            .bind(pending.key_algorithm.as_str())
            .bind(pending.sealed_key.as_slice())
            .bind(pending.key_version)
            .bind(pending.csr_der.as_slice())
            .bind(pending.created_at)
            .bind(pending.previous_seal.as_ref().map(|p| p.sealed_key.clone()))
            .bind(pending.previous_seal.as_ref().and_then(|p| p.key_version)),
        )
        .await?;
        tx.execute(sql::insert_audit(audit)).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_pending_authority(
        &self,
        cluster_id: Uuid,
        kind: AuthorityKind,
    ) -> StoreResult<PendingAuthorityRecord> {
        let stmt = Stmt::new(format!(
            "SELECT {PENDING_AUTHORITY_COLUMNS} FROM pending_authorities WHERE cluster_id = $1 AND kind = $2"
        ))
        .bind(cluster_id)
        .bind(kind.as_str());
        pending_authority_from_row(&self.read().await?.fetch_one(stmt).await?)
    }

    async fn install_intermediate(
        &self,
        new: &AuthorityRecord,
        crl: &CrlRecord,
        audit: &AuditEntry,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let removed = tx
            .execute(
                Stmt::new("DELETE FROM pending_authorities WHERE id = $1 AND cluster_id = $2 AND kind = $3")
                    .bind(new.id)
                    .bind(new.cluster_id)
                    .bind(new.kind.as_str()),
            )
            .await?;
        if removed == 0 {
            return Err(StoreError::Conflict("the request was replaced by a newer one".into()));
        }
        tx.execute(
            Stmt::new("UPDATE authorities SET state = $3 WHERE cluster_id = $1 AND kind = $2 AND state = $4")
                .bind(new.cluster_id)
                .bind(new.kind.as_str())
                .bind(AuthorityState::Retiring.as_str())
                .bind(AuthorityState::Active.as_str()),
        )
        .await?;
        insert_authority(&mut *tx, new, crl).await?;
        tx.execute(sql::insert_audit(audit)).await?;
        tx.notify(Change::Cluster(new.cluster_id)).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_service_account_keys(&self, cluster_id: Uuid) -> StoreResult<Vec<ServiceAccountKeyRecord>> {
        let stmt = Stmt::new(format!(
            "SELECT {SERVICE_ACCOUNT_KEY_COLUMNS} FROM service_account_keys WHERE cluster_id = $1 \
             ORDER BY created_at, key_id"
        ))
        .bind(cluster_id);
        self.read().await?.fetch_all(stmt).await?.iter().map(service_account_key_from_row).collect()
    }

    async fn add_service_account_key(
        &self,
        key: &ServiceAccountKeyRecord,
        audit: &AuditEntry,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let existing = tx
            .fetch_optional(
                Stmt::new("SELECT state FROM service_account_keys WHERE cluster_id = $1 AND key_id = $2")
                    .bind(key.cluster_id)
                    .bind(key.key_id.as_str()),
            )
            .await?;
        if existing.is_some() {
            return Err(StoreError::Conflict("the cluster has this service-account key already".into()));
        }
        tx.execute(
            Stmt::new("UPDATE service_account_keys SET state = $2 WHERE cluster_id = $1 AND state = $3")
                .bind(key.cluster_id)
                .bind(AuthorityState::Retiring.as_str())
                .bind(AuthorityState::Active.as_str()),
        )
        .await?;
        tx.execute(sql::insert_service_account_key(key)).await?;
        tx.execute(sql::insert_audit(audit)).await?;
        tx.notify(Change::Cluster(key.cluster_id)).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn retire_service_account_key(
        &self,
        cluster_id: Uuid,
        key_id: &str,
        audit: &AuditEntry,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let row = tx
            .fetch_optional(
                Stmt::new(format!(
                    "SELECT state FROM service_account_keys WHERE cluster_id = $1 AND key_id = $2{}",
                    <Conn<B> as Connection>::FOR_UPDATE
                ))
                .bind(cluster_id)
                .bind(key_id),
            )
            .await?
            .ok_or(StoreError::NotFound)?;
        let state: String = row.get("state")?;
        if state == AuthorityState::Active.as_str() {
            return Err(StoreError::Conflict(
                "the active key signs: rotate first, then retire it once its tokens have expired".into(),
            ));
        }
        tx.execute(
            Stmt::new("UPDATE service_account_keys SET state = $3 WHERE cluster_id = $1 AND key_id = $2")
                .bind(cluster_id)
                .bind(key_id)
                .bind(AuthorityState::Retired.as_str()),
        )
        .await?;
        tx.execute(sql::insert_audit(audit)).await?;
        tx.notify(Change::Cluster(cluster_id)).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn record_audit(&self, audit: &AuditEntry) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        tx.execute(sql::insert_audit(audit)).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn earliest_leaf_expiries(
        &self,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<(Uuid, String, OffsetDateTime)>> {
        let stmt = Stmt::new(
            "SELECT cluster_id, profile, min(not_after) AS earliest FROM certificates \
             WHERE revoked_at IS NULL AND not_after > $1 GROUP BY cluster_id, profile",
        )
        .bind(now);
        self.read()
            .await?
            .fetch_all(stmt)
            .await?
            .iter()
            .map(|row| Ok((row.uuid("cluster_id")?, row.get("profile")?, row.time("earliest")?)))
            .collect()
    }

    async fn rewrap_sealed_keys(
        &self,
        new_version: i32,
        reseal: Resealer<'_>,
        audit: &AuditEntry,
    ) -> StoreResult<RewrapCounts> {
        let mut tx = self.begin_write().await?;
        let mut counts = RewrapCounts::default();
        for (table, sealed) in SEALED_TABLES {
            let rows = tx
                .fetch_all(Stmt::new(format!(
                    "SELECT id, sealed_key FROM {table} {sealed} ORDER BY id{}",
                    <Conn<B> as Connection>::FOR_UPDATE
                )))
                .await?;
            for row in rows {
                let owner = sealed_owner(table, &row)?;
                let sealed: Vec<u8> = row.get("sealed_key")?;
                let Some(resealed) = reseal_one(reseal, owner, &sealed)? else { continue };
                tx.execute(
                    Stmt::new(format!(
                        "UPDATE {table} SET previous_sealed_key = sealed_key, \
                         previous_key_version = key_version, sealed_key = $2, key_version = $3 WHERE id = $1"
                    ))
                    .bind(owner.id_arg())
                    .bind(resealed)
                    .bind(new_version),
                )
                .await?;
                match owner {
                    SealedOwner::Authority(_) => counts.authorities += 1,
                    SealedOwner::PendingAuthority(_) | SealedOwner::ServiceAccountKey(_) => {
                        counts.cluster_keys += 1
                    }
                    _ => counts.token_keys += 1,
                }
            }
        }
        let check = tx
            .fetch_optional(Stmt::new("SELECT value FROM settings WHERE key = $1").bind(MASTER_KEY_CHECK))
            .await?;
        if let Some(row) = check {
            let sealed: Vec<u8> = row.get("value")?;
            if let Some(resealed) = reseal_one(reseal, SealedOwner::MasterKeyCheck, &sealed)? {
                put_setting(&mut *tx, MASTER_KEY_CHECK_PREVIOUS, &sealed).await?;
                put_setting(&mut *tx, MASTER_KEY_CHECK, &resealed).await?;
                counts.master_key_check = 1;
            }
        }
        let mut entry = audit.clone();
        entry.details["resealed"] = serde_json::json!(counts);
        tx.execute(sql::insert_audit(&entry)).await?;
        tx.notify(Change::TokenKeys).await?;
        tx.commit().await?;
        Ok(counts)
    }

    async fn drop_previous_seals(
        &self,
        check: SealChecker<'_>,
        audit: &AuditEntry,
    ) -> StoreResult<RewrapCounts> {
        let mut tx = self.begin_write().await?;
        let mut counts = RewrapCounts::default();
        for (table, sealed) in SEALED_TABLES {
            let rows = tx
                .fetch_all(Stmt::new(format!(
                    "SELECT id, sealed_key, previous_sealed_key FROM {table} {sealed} ORDER BY id{}",
                    <Conn<B> as Connection>::FOR_UPDATE
                )))
                .await?;
            for row in rows {
                let owner = sealed_owner(table, &row)?;
                check_one(check, owner, &row.get::<Vec<u8>>("sealed_key")?)?;
                if row.get::<Option<Vec<u8>>>("previous_sealed_key")?.is_some() {
                    match owner {
                        SealedOwner::Authority(_) => counts.authorities += 1,
                        SealedOwner::PendingAuthority(_) | SealedOwner::ServiceAccountKey(_) => {
                            counts.cluster_keys += 1
                        }
                        _ => counts.token_keys += 1,
                    }
                }
            }
            tx.execute(Stmt::new(format!(
                "UPDATE {table} SET previous_sealed_key = NULL, previous_key_version = NULL \
                 WHERE previous_sealed_key IS NOT NULL"
            )))
            .await?;
        }
        if let Some(row) = tx
            .fetch_optional(Stmt::new("SELECT value FROM settings WHERE key = $1").bind(MASTER_KEY_CHECK))
            .await?
        {
            check_one(check, SealedOwner::MasterKeyCheck, &row.get::<Vec<u8>>("value")?)?;
        }
        counts.master_key_check = tx
            .execute(Stmt::new("DELETE FROM settings WHERE key = $1").bind(MASTER_KEY_CHECK_PREVIOUS))
            .await?;
        let mut entry = audit.clone();
        entry.details["dropped"] = serde_json::json!(counts);
        tx.execute(sql::insert_audit(&entry)).await?;
        tx.commit().await?;
        Ok(counts)
    }

    async fn backup_rows(&self) -> StoreResult<Vec<BackupRow>> {
        let mut tx = self.begin_snapshot().await?;
        let mut out = Vec::new();
        for (table, columns, identity) in BACKUP_TABLES {
            let names: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
            let order = identity.unwrap_or(names[0]);
            let rows = tx
                .fetch_all(Stmt::new(format!("SELECT {} FROM {table} ORDER BY {order}", names.join(", "))))
                .await?;
            for row in rows {
                let mut values = serde_json::Map::new();
                for (name, kind) in columns.iter() {
                    values.insert(name.to_string(), sql::backup_value(&row, name, *kind)?);
                }
                out.push((table.to_string(), values));
            }
        }
        tx.rollback().await?;
        Ok(out)
    }

    async fn restore_rows(&self, rows: &[BackupRow]) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        for (table, _, _) in BACKUP_TABLES {
            let present =
                tx.fetch_optional(Stmt::new(format!("SELECT 1 AS present FROM {table} LIMIT 1"))).await?;
            if present.is_some() {
                return Err(StoreError::Conflict(format!(
                    "the database is not empty (table {table} has rows): restore into an empty database"
                )));
            }
        }
        for (table, values) in rows {
            let (table, columns, _) = BACKUP_TABLES
                .iter()
                .find(|(name, _, _)| name == table)
                .ok_or_else(|| StoreError::Invalid(format!("the backup holds an unknown table {table:?}")))?;
            // A column the backup does not have (one added since it was taken) gets the schema's
            // default, as rows written before that column existed did.
            let present: Vec<_> = columns.iter().filter(|(name, _)| values.get(*name).is_some()).collect();
            let names: Vec<&str> = present.iter().map(|(name, _)| *name).collect();
            let placeholders: Vec<String> = (1..=present.len()).map(|i| format!("${i}")).collect();
            let mut stmt = Stmt::new(format!(
                "INSERT INTO {table} ({}){} VALUES ({})",
                names.join(", "),
                <Conn<B> as Connection>::OVERRIDING_IDENTITY,
                placeholders.join(", ")
            ));
            for (name, kind) in present {
                stmt = stmt.bind(sql::restore_arg(&values[*name], name, *kind)?);
            }
            tx.execute(stmt).await?;
        }
        for (table, _, identity) in BACKUP_TABLES {
            if let Some(column) = identity {
                tx.reset_identity(table, column).await?;
            }
        }
        tx.notify(Change::Resync).await?;
        tx.commit().await?;
        Ok(rows.len() as u64)
    }
}
