//! The SQLite backend: the embedded default, so that `kca serve` runs with no setup.
//!
//! Times are stored as microseconds since the epoch, UUIDs as text, lists as JSON text. Writers
//! start with `BEGIN IMMEDIATE` so that two writers queue on the busy timeout instead of failing
//! on a lock upgrade; WAL lets readers proceed meanwhile.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::types::Json;
use sqlx::{QueryBuilder, Row, Sqlite};
use time::OffsetDateTime;
use uuid::Uuid;

use super::migrate::{EmbeddedMigration, migrator};
use super::stored_policy::StoredPolicy;
use super::*;
use crate::pki::Serial;

pub(crate) const MIGRATIONS: &[EmbeddedMigration] = &[
    (1, "initial", include_str!("../../migrations/sqlite/0001_initial.sql")),
    (2, "crl storage", include_str!("../../migrations/sqlite/0002_crl_storage.sql")),
    (3, "revoked covering index", include_str!("../../migrations/sqlite/0003_revoked_covering_index.sql")),
    (4, "api tokens", include_str!("../../migrations/sqlite/0004_api_tokens.sql")),
    (5, "cluster version", include_str!("../../migrations/sqlite/0005_cluster_version.sql")),
];

const CLUSTER_COLUMNS: &str =
    "id, name, server, key_algorithm, policy, labels, created_at, updated_at, version";
const AUTHORITY_COLUMNS: &str = "id, cluster_id, kind, generation, state, subject, certificate_der, fingerprint, \
     key_algorithm, sealed_key, key_version, not_before, not_after, created_at";
const CERTIFICATE_COLUMNS: &str = "seq, serial, cluster_id, authority_id, kind, generation, profile, common_name, \
     groups, dns_names, ip_addresses, not_before, not_after, fingerprint, certificate_der, issued_by, created_at, \
     revoked_at, revocation_reason";
const CRL_COLUMNS: &str = "authority_id, crl_number, this_update, next_update, entries, der";
const TOKEN_COLUMNS: &str = "seq, id, subject, scopes, clusters, groups, max_ttl_seconds, key_id, created_by, \
     created_at, expires_at, last_used_at, revoked_at";

pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Open (creating if needed) the database file a `sqlite:` URL names.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("invalid SQLite URL: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a certificate handed out must survive a power cut, not only a crash.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let file = options.get_filename();
        // In-memory databases are named `:memory:` or `file:sqlx-in-memory-…` (and have no file).
        if !(file == Path::new(":memory:") || file.to_string_lossy().starts_with("file:")) {
            make_private(file)?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }

    async fn begin_write(&self) -> StoreResult<sqlx::Transaction<'static, Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}

/// The database file and the files SQLite keeps beside it hold the sealed keys and the token log:
/// readable by their owner only, like `master.key`. A missing database file is created here with
/// mode 0600 (there is no umask to set without unsafe code); SQLite gives the `-wal` and `-shm`
/// files it creates the database file's mode. Files found readable by group or others (made by an
/// older kca under a umask of 022) are narrowed to their owner's bits.
fn make_private(database: &Path) -> StoreResult<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(database) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(StoreError::Config(format!(
                "cannot create the database {}: {e}",
                database.display()
            )));
        }
    }
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = database.as_os_str().to_owned();
        name.push(suffix);
        let path = PathBuf::from(name);
        let Ok(metadata) = std::fs::metadata(&path) else { continue };
        let mode = metadata.permissions().mode();
        if mode & 0o077 == 0 {
            continue;
        }
        // A file kca may not change (another owner, a read-only mount) still opens.
        match std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o700)) {
            Ok(()) => tracing::warn!(
                path = %path.display(),
                was = format!("{:o}", mode & 0o777),
                "the database file was readable by others; made it readable by its owner only"
            ),
            Err(e) => tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", mode & 0o777),
                error = %e,
                "the database file is readable by others and its mode cannot be changed"
            ),
        }
    }
    Ok(())
}

fn micros(at: OffsetDateTime) -> i64 {
    (at.unix_timestamp_nanos() / 1_000) as i64
}

fn from_micros(value: i64) -> StoreResult<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(value) * 1_000)
        .map_err(|_| StoreError::Corrupt(format!("timestamp {value}")))
}

fn time_column(row: &SqliteRow, column: &str) -> StoreResult<OffsetDateTime> {
    from_micros(row.try_get(column)?)
}

fn optional_time_column(row: &SqliteRow, column: &str) -> StoreResult<Option<OffsetDateTime>> {
    row.try_get::<Option<i64>, _>(column)?.map(from_micros).transpose()
}

fn uuid_column(row: &SqliteRow, column: &str) -> StoreResult<Uuid> {
    let text: String = row.try_get(column)?;
    Uuid::parse_str(&text).map_err(|_| StoreError::Corrupt(format!("uuid {text:?}")))
}

fn cluster_from_row(row: &SqliteRow) -> StoreResult<ClusterRecord> {
    Ok(ClusterRecord {
        id: uuid_column(row, "id")?,
        name: row.try_get("name")?,
        server: row.try_get("server")?,
        key_algorithm: parse_key_algorithm(row.try_get("key_algorithm")?)?,
        policy: row.try_get::<Json<StoredPolicy>, _>("policy")?.0.into(),
        labels: row.try_get::<Json<BTreeMap<String, String>>, _>("labels")?.0,
        created_at: time_column(row, "created_at")?,
        updated_at: time_column(row, "updated_at")?,
        version: row.try_get("version")?,
    })
}

fn authority_from_row(row: &SqliteRow) -> StoreResult<AuthorityRecord> {
    Ok(AuthorityRecord {
        id: uuid_column(row, "id")?,
        cluster_id: uuid_column(row, "cluster_id")?,
        kind: parse_kind(row.try_get("kind")?)?,
        generation: row.try_get("generation")?,
        state: parse_state(row.try_get("state")?)?,
        subject: row.try_get("subject")?,
        certificate_der: row.try_get("certificate_der")?,
        fingerprint: row.try_get("fingerprint")?,
        key_algorithm: parse_key_algorithm(row.try_get("key_algorithm")?)?,
        sealed_key: row.try_get("sealed_key")?,
        key_version: row.try_get("key_version")?,
        not_before: time_column(row, "not_before")?,
        not_after: time_column(row, "not_after")?,
        created_at: time_column(row, "created_at")?,
    })
}

fn certificate_from_row(row: &SqliteRow) -> StoreResult<(i64, CertificateRecord)> {
    let reason: Option<String> = row.try_get("revocation_reason")?;
    Ok((
        row.try_get("seq")?,
        CertificateRecord {
            serial: row.try_get("serial")?,
            cluster_id: uuid_column(row, "cluster_id")?,
            authority_id: uuid_column(row, "authority_id")?,
            kind: parse_kind(row.try_get("kind")?)?,
            generation: row.try_get("generation")?,
            profile: row.try_get("profile")?,
            common_name: row.try_get("common_name")?,
            groups: row.try_get::<Json<Vec<String>>, _>("groups")?.0,
            dns_names: row.try_get::<Json<Vec<String>>, _>("dns_names")?.0,
            ip_addresses: row.try_get::<Json<Vec<String>>, _>("ip_addresses")?.0,
            not_before: time_column(row, "not_before")?,
            not_after: time_column(row, "not_after")?,
            fingerprint: row.try_get("fingerprint")?,
            certificate_der: row.try_get("certificate_der")?,
            issued_by: row.try_get("issued_by")?,
            created_at: time_column(row, "created_at")?,
            revoked_at: optional_time_column(row, "revoked_at")?,
            revocation_reason: reason.as_deref().map(parse_reason).transpose()?,
        },
    ))
}

fn crl_from_row(row: &SqliteRow) -> StoreResult<CrlRecord> {
    Ok(CrlRecord {
        authority_id: uuid_column(row, "authority_id")?,
        number: row.try_get("crl_number")?,
        this_update: time_column(row, "this_update")?,
        next_update: time_column(row, "next_update")?,
        entries: row.try_get("entries")?,
        der: row.try_get("der")?,
    })
}

fn audit_from_row(row: &SqliteRow) -> StoreResult<AuditRecord> {
    let cluster_id: Option<String> = row.try_get("cluster_id")?;
    Ok(AuditRecord {
        id: row.try_get("id")?,
        entry: AuditEntry {
            at: time_column(row, "at")?,
            actor: row.try_get("actor")?,
            action: row.try_get("action")?,
            object_type: row.try_get("object_type")?,
            object_id: row.try_get("object_id")?,
            cluster_id: cluster_id
                .map(|id| Uuid::parse_str(&id).map_err(|_| StoreError::Corrupt(format!("uuid {id:?}"))))
                .transpose()?,
            remote_addr: row.try_get("remote_addr")?,
            details: row.try_get::<Json<serde_json::Value>, _>("details")?.0,
        },
    })
}

fn token_from_row(row: &SqliteRow) -> StoreResult<(i64, TokenRecord)> {
    Ok((
        row.try_get("seq")?,
        TokenRecord {
            id: uuid_column(row, "id")?,
            subject: row.try_get("subject")?,
            scopes: parse_scopes(row.try_get::<Json<Vec<String>>, _>("scopes")?.0)?,
            clusters: row.try_get::<Json<Vec<String>>, _>("clusters")?.0,
            groups: row.try_get::<Option<Json<Vec<String>>>, _>("groups")?.map(|g| g.0),
            max_ttl: row.try_get::<Option<i64>, _>("max_ttl_seconds")?.map(|t| t as u64),
            key_id: row.try_get("key_id")?,
            created_by: row.try_get("created_by")?,
            created_at: time_column(row, "created_at")?,
            expires_at: time_column(row, "expires_at")?,
            last_used_at: optional_time_column(row, "last_used_at")?,
            revoked_at: optional_time_column(row, "revoked_at")?,
        },
    ))
}

/// Why a versioned change of a cluster matched no row: it is gone, or another change came first.
async fn stale_or_gone(conn: &mut SqliteConnection, id: Uuid) -> StoreError {
    match sqlx::query_scalar::<_, i64>("SELECT version FROM clusters WHERE id = ?")
        .bind(id.to_string())
        .fetch_optional(conn)
        .await
    {
        Ok(Some(current)) => {
            StoreError::Conflict(format!("stale version; the cluster is at version {current}"))
        }
        Ok(None) => StoreError::NotFound,
        Err(err) => err.into(),
    }
}

async fn insert_audit(conn: &mut SqliteConnection, entry: &AuditEntry) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO audit_events (at, actor, action, object_type, object_id, cluster_id, remote_addr, details) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(micros(entry.at))
    .bind(&entry.actor)
    .bind(&entry.action)
    .bind(&entry.object_type)
    .bind(&entry.object_id)
    .bind(entry.cluster_id.map(|id| id.to_string()))
    .bind(&entry.remote_addr)
    .bind(Json(&entry.details))
    .execute(conn)
    .await?;
    Ok(())
}

/// A new authority generation with its first CRL; its CRL Number starts at that CRL's.
async fn insert_authority(
    conn: &mut SqliteConnection,
    a: &AuthorityRecord,
    crl: &CrlRecord,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO authorities (id, cluster_id, kind, generation, state, subject, certificate_der, fingerprint, \
         key_algorithm, sealed_key, key_version, not_before, not_after, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(a.id.to_string())
    .bind(a.cluster_id.to_string())
    .bind(a.kind.as_str())
    .bind(a.generation)
    .bind(a.state.as_str())
    .bind(&a.subject)
    .bind(&a.certificate_der)
    .bind(&a.fingerprint)
    .bind(a.key_algorithm.as_str())
    .bind(&a.sealed_key)
    .bind(a.key_version)
    .bind(micros(a.not_before))
    .bind(micros(a.not_after))
    .bind(micros(a.created_at))
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE authorities SET crl_number = ? WHERE id = ?")
        .bind(crl.number)
        .bind(a.id.to_string())
        .execute(&mut *conn)
        .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("INSERT INTO crls ({CRL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)")))
        .bind(crl.authority_id.to_string())
        .bind(crl.number)
        .bind(micros(crl.this_update))
        .bind(micros(crl.next_update))
        .bind(crl.entries)
        .bind(&crl.der)
        .execute(conn)
        .await?;
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn pool_state(&self) -> PoolState {
        PoolState {
            size: self.pool.size(),
            idle: self.pool.num_idle() as u32,
            max: self.pool.options().get_max_connections(),
        }
    }

    async fn migrate(&self) -> StoreResult<()> {
        migrator(MIGRATIONS).await?.run(&self.pool).await?;
        Ok(())
    }

    async fn hold_leadership(&self) -> StoreResult<bool> {
        // One process owns the database file.
        Ok(true)
    }

    async fn subscribe(&self) -> StoreResult<Option<tokio::sync::mpsc::Receiver<Change>>> {
        Ok(None)
    }

    async fn get_setting(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(sqlx::query_scalar("SELECT value FROM settings WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn insert_setting_if_absent(&self, key: &str, value: &[u8]) -> StoreResult<Vec<u8>> {
        sqlx::query("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(sqlx::query_scalar("SELECT value FROM settings WHERE key = ?")
            .bind(key)
            .fetch_one(&self.pool)
            .await?)
    }

    async fn create_cluster(&self, new: &NewCluster, audit: &AuditEntry) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let c = &new.cluster;
        sqlx::query(
            "INSERT INTO clusters (id, name, server, key_algorithm, policy, labels, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(c.id.to_string())
        .bind(&c.name)
        .bind(&c.server)
        .bind(c.key_algorithm.as_str())
        .bind(Json(StoredPolicy::from(&c.policy)))
        .bind(Json(&c.labels))
        .bind(micros(c.created_at))
        .bind(micros(c.updated_at))
        .execute(&mut *tx)
        .await?;
        for (authority, crl) in new.authorities.iter().zip(&new.crls) {
            insert_authority(&mut tx, authority, crl).await?;
        }
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn find_cluster(&self, id_or_name: &str) -> StoreResult<ClusterRecord> {
        let column = if Uuid::parse_str(id_or_name).is_ok() { "id" } else { "name" };
        let lookup = match Uuid::parse_str(id_or_name) {
            Ok(id) => id.to_string(),
            Err(_) => id_or_name.to_string(),
        };
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CLUSTER_COLUMNS} FROM clusters WHERE {column} = ?"
        )))
        .bind(lookup)
        .fetch_optional(&self.pool)
        .await?;
        cluster_from_row(&row.ok_or(StoreError::NotFound)?)
    }

    async fn list_clusters(
        &self,
        after_name: Option<&str>,
        only: Option<&[Uuid]>,
        limit: u32,
    ) -> StoreResult<Vec<ClusterRecord>> {
        let mut query =
            QueryBuilder::<Sqlite>::new(format!("SELECT {CLUSTER_COLUMNS} FROM clusters WHERE 1"));
        if let Some(after) = after_name {
            query.push(" AND name > ").push_bind(after.to_string());
        }
        if let Some(ids) = only {
            let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
            query.push(" AND id IN (SELECT value FROM json_each(").push_bind(Json(ids)).push("))");
        }
        query.push(" ORDER BY name LIMIT ").push_bind(i64::from(limit));
        let rows = query.build().fetch_all(&self.pool).await?;
        rows.iter().map(cluster_from_row).collect()
    }

    async fn update_cluster(&self, cluster: &ClusterRecord, audit: &AuditEntry) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE clusters SET server = ?, policy = ?, labels = ?, updated_at = ?, version = version + 1 \
             WHERE id = ? AND version = ?",
        )
        .bind(&cluster.server)
        .bind(Json(StoredPolicy::from(&cluster.policy)))
        .bind(Json(&cluster.labels))
        .bind(micros(cluster.updated_at))
        .bind(cluster.id.to_string())
        .bind(cluster.version)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(stale_or_gone(&mut tx, cluster.id).await);
        }
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_cluster(&self, id: Uuid, version: Option<i64>, audit: &AuditEntry) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let deleted = sqlx::query("DELETE FROM clusters WHERE id = ?1 AND (?2 IS NULL OR version = ?2)")
            .bind(id.to_string())
            .bind(version)
            .execute(&mut *tx)
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(stale_or_gone(&mut tx, id).await);
        }
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_authorities(&self, cluster_id: Uuid) -> StoreResult<Vec<AuthorityRecord>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {AUTHORITY_COLUMNS} FROM authorities WHERE cluster_id = ? ORDER BY kind, generation"
        )))
        .bind(cluster_id.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(authority_from_row).collect()
    }

    async fn get_authority(&self, id: Uuid) -> StoreResult<AuthorityRecord> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {AUTHORITY_COLUMNS} FROM authorities WHERE id = ?"
        )))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        authority_from_row(&row.ok_or(StoreError::NotFound)?)
    }

    async fn list_live_authorities(&self) -> StoreResult<Vec<AuthorityRecord>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {AUTHORITY_COLUMNS} FROM authorities WHERE state <> 'retired' ORDER BY cluster_id, kind, generation"
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(authority_from_row).collect()
    }

    async fn rotate_authority(
        &self,
        new: &AuthorityRecord,
        crl: &CrlRecord,
        audit: &AuditEntry,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE authorities SET state = 'retiring' WHERE cluster_id = ? AND kind = ? AND state = 'active'")
            .bind(new.cluster_id.to_string())
            .bind(new.kind.as_str())
            .execute(&mut *tx)
            .await?;
        insert_authority(&mut tx, new, crl).await?;
        insert_audit(&mut tx, audit).await?;
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
        let id = authority_id.to_string();
        let state: String = sqlx::query_scalar("SELECT state FROM authorities WHERE id = ?")
            .bind(&id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        if state != "retiring" {
            return Err(StoreError::Conflict(format!(
                "only a retiring generation can be retired; this one is {state} (rotate first)"
            )));
        }
        let at = micros(audit.at);
        let live: Vec<String> = sqlx::query_scalar(
            "SELECT serial FROM certificates WHERE authority_id = ? AND revoked_at IS NULL AND not_after > ?",
        )
        .bind(&id)
        .bind(at)
        .fetch_all(&mut *tx)
        .await?;
        if !live.is_empty() && !force {
            return Err(StoreError::Conflict(format!(
                "{} unexpired, unrevoked certificates were signed by this generation; \
                 retire with force to revoke them first",
                live.len()
            )));
        }
        sqlx::query(
            "UPDATE certificates SET revoked_at = ?2, revocation_reason = 'cessationOfOperation' \
             WHERE authority_id = ?1 AND revoked_at IS NULL AND not_after > ?2",
        )
        .bind(&id)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE authorities SET state = 'retired' WHERE id = ?")
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM crls WHERE authority_id = ?").bind(&id).execute(&mut *tx).await?;
        let mut entry = audit.clone();
        entry.details["revoked"] = live.iter().cloned().collect();
        insert_audit(&mut tx, &entry).await?;
        tx.commit().await?;
        Ok(live)
    }

    async fn record_certificates(&self, batch: &[(CertificateRecord, AuditEntry)]) -> StoreResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for (c, audit) in batch {
            sqlx::query(
                "INSERT INTO certificates (serial, cluster_id, authority_id, kind, generation, profile, common_name, \
                 groups, dns_names, ip_addresses, not_before, not_after, fingerprint, certificate_der, issued_by, \
                 created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&c.serial)
            .bind(c.cluster_id.to_string())
            .bind(c.authority_id.to_string())
            .bind(c.kind.as_str())
            .bind(c.generation)
            .bind(&c.profile)
            .bind(&c.common_name)
            .bind(Json(&c.groups))
            .bind(Json(&c.dns_names))
            .bind(Json(&c.ip_addresses))
            .bind(micros(c.not_before))
            .bind(micros(c.not_after))
            .bind(&c.fingerprint)
            .bind(&c.certificate_der)
            .bind(&c.issued_by)
            .bind(micros(c.created_at))
            .execute(&mut *tx)
            .await?;
            insert_audit(&mut tx, audit).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn get_certificate(&self, cluster_id: Uuid, serial: &str) -> StoreResult<CertificateRecord> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CERTIFICATE_COLUMNS} FROM certificates WHERE serial = ? AND cluster_id = ?"
        )))
        .bind(serial)
        .bind(cluster_id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        Ok(certificate_from_row(&row.ok_or(StoreError::NotFound)?)?.1)
    }

    async fn list_certificates(
        &self,
        cluster_id: Uuid,
        filter: &CertificateFilter,
        now: OffsetDateTime,
    ) -> StoreResult<CertificatePage> {
        let mut query = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {CERTIFICATE_COLUMNS} FROM certificates WHERE cluster_id = "
        ));
        query.push_bind(cluster_id.to_string());
        if let Some(cn) = &filter.common_name {
            query.push(" AND common_name = ").push_bind(cn.clone());
        }
        match filter.status {
            Some(CertificateStatus::Active) => {
                query.push(" AND revoked_at IS NULL AND not_after > ").push_bind(micros(now));
            }
            Some(CertificateStatus::Expired) => {
                query.push(" AND revoked_at IS NULL AND not_after <= ").push_bind(micros(now));
            }
            Some(CertificateStatus::Revoked) => {
                query.push(" AND revoked_at IS NOT NULL");
            }
            None => {}
        }
        if let Some(before) = filter.before_seq {
            query.push(" AND seq < ").push_bind(before);
        }
        query.push(" ORDER BY seq DESC LIMIT ").push_bind(i64::from(filter.limit));
        let rows = query.build().fetch_all(&self.pool).await?;
        rows.iter().map(certificate_from_row).collect()
    }

    async fn revoke_certificate(
        &self,
        cluster_id: Uuid,
        serial: &str,
        reason: RevocationReason,
        audit: &AuditEntry,
    ) -> StoreResult<(CertificateRecord, bool)> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CERTIFICATE_COLUMNS} FROM certificates WHERE serial = ? AND cluster_id = ?"
        )))
        .bind(serial)
        .bind(cluster_id.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let (_, mut certificate) = certificate_from_row(&row.ok_or(StoreError::NotFound)?)?;
        if certificate.revoked_at.is_some() {
            return Ok((certificate, false));
        }
        sqlx::query("UPDATE certificates SET revoked_at = ?, revocation_reason = ? WHERE serial = ?")
            .bind(micros(audit.at))
            .bind(reason.as_str())
            .bind(serial)
            .execute(&mut *tx)
            .await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        certificate.revoked_at = Some(from_micros(micros(audit.at))?);
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
        let at = micros(audit.at);
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE certificates SET revoked_at = ?1, revocation_reason = ?2 \
             WHERE cluster_id = ?3 AND common_name = ?4 AND revoked_at IS NULL AND not_after > ?1 \
             RETURNING {CERTIFICATE_COLUMNS}"
        )))
        .bind(at)
        .bind(reason.as_str())
        .bind(cluster_id.to_string())
        .bind(common_name)
        .fetch_all(&mut *tx)
        .await?;
        let revoked: Vec<CertificateRecord> =
            rows.iter().map(|r| certificate_from_row(r).map(|(_, c)| c)).collect::<StoreResult<_>>()?;
        let mut entry = audit.clone();
        entry.details["serials"] = revoked.iter().map(|c| c.serial.clone()).collect();
        insert_audit(&mut tx, &entry).await?;
        tx.commit().await?;
        Ok(revoked)
    }

    async fn publish_crl(
        &self,
        authority_id: Uuid,
        expired_cutoff: OffsetDateTime,
        sign: CrlSigner<'_>,
    ) -> StoreResult<CrlRecord> {
        // BEGIN IMMEDIATE holds the database write lock: publishers are serialized.
        let mut tx = self.begin_write().await?;
        let number: i64 = sqlx::query_scalar(
            "UPDATE authorities SET crl_number = crl_number + 1 WHERE id = ? AND state <> 'retired' RETURNING crl_number",
        )
        .bind(authority_id.to_string())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let rows = sqlx::query(
            "SELECT serial, revoked_at, revocation_reason FROM certificates \
             WHERE authority_id = ? AND revoked_at IS NOT NULL AND not_after > ?",
        )
        .bind(authority_id.to_string())
        .bind(micros(expired_cutoff))
        .fetch_all(&mut *tx)
        .await?;
        let mut entries = Vec::with_capacity(rows.len());
        for row in &rows {
            let serial: String = row.try_get("serial")?;
            let reason: Option<String> = row.try_get("revocation_reason")?;
            entries.push(RevokedEntry {
                serial: Serial::parse_hex(&serial)
                    .ok_or_else(|| StoreError::Corrupt(format!("serial {serial}")))?,
                revoked_at: time_column(row, "revoked_at")?,
                reason: reason.as_deref().map(parse_reason).transpose()?.unwrap_or_default(),
            });
        }
        let signed = super::run_cpu_bound(|| sign(number as u64, &entries))?;
        let record = CrlRecord {
            authority_id,
            number,
            this_update: signed.this_update,
            next_update: signed.next_update,
            entries: entries.len() as i64,
            der: signed.der,
        };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO crls ({CRL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) \
             ON CONFLICT (authority_id) DO UPDATE SET crl_number = excluded.crl_number, \
             this_update = excluded.this_update, next_update = excluded.next_update, \
             entries = excluded.entries, der = excluded.der WHERE crls.crl_number < excluded.crl_number"
        )))
        .bind(authority_id.to_string())
        .bind(record.number)
        .bind(micros(record.this_update))
        .bind(micros(record.next_update))
        .bind(record.entries)
        .bind(&record.der)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn list_revoked_serials(
        &self,
        authority_ids: &[Uuid],
        now: OffsetDateTime,
    ) -> StoreResult<Vec<(String, RevocationReason)>> {
        let ids: Vec<String> = authority_ids.iter().map(Uuid::to_string).collect();
        let rows = sqlx::query(
            "SELECT serial, revocation_reason FROM certificates \
             WHERE authority_id IN (SELECT value FROM json_each(?)) AND revoked_at IS NOT NULL AND not_after > ? \
             ORDER BY seq",
        )
        .bind(Json(ids))
        .bind(micros(now))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let reason: Option<String> = row.try_get("revocation_reason")?;
                Ok((
                    row.try_get("serial")?,
                    reason.as_deref().map(parse_reason).transpose()?.unwrap_or_default(),
                ))
            })
            .collect()
    }

    async fn current_crls(&self, authority_ids: &[Uuid]) -> StoreResult<Vec<CrlRecord>> {
        let ids: Vec<String> = authority_ids.iter().map(Uuid::to_string).collect();
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CRL_COLUMNS} FROM crls WHERE authority_id IN (SELECT value FROM json_each(?))"
        )))
        .bind(Json(ids))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(crl_from_row).collect()
    }

    async fn list_audit(
        &self,
        before_id: Option<i64>,
        clusters: Option<&[Uuid]>,
        limit: u32,
    ) -> StoreResult<Vec<AuditRecord>> {
        let clusters = clusters.map(|ids| Json(ids.iter().map(Uuid::to_string).collect::<Vec<_>>()));
        let rows = sqlx::query(
            "SELECT id, at, actor, action, object_type, object_id, cluster_id, remote_addr, details \
             FROM audit_events WHERE (?1 IS NULL OR id < ?1) \
             AND (?3 IS NULL OR cluster_id IN (SELECT value FROM json_each(?3))) ORDER BY id DESC LIMIT ?2",
        )
        .bind(before_id)
        .bind(i64::from(limit))
        .bind(clusters)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn insert_token(&self, token: &TokenRecord, audit: &AuditEntry) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO api_tokens (id, subject, scopes, clusters, groups, max_ttl_seconds, key_id, created_by, \
             created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(token.id.to_string())
        .bind(&token.subject)
        .bind(Json(scope_names(&token.scopes)))
        .bind(Json(&token.clusters))
        .bind(token.groups.as_ref().map(Json))
        .bind(token.max_ttl.map(|t| t as i64))
        .bind(token.key_id)
        .bind(&token.created_by)
        .bind(micros(token.created_at))
        .bind(micros(token.expires_at))
        .execute(&mut *tx)
        .await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_token(&self, id: Uuid) -> StoreResult<TokenRecord> {
        let row =
            sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = ?")))
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?;
        Ok(token_from_row(&row.ok_or(StoreError::NotFound)?)?.1)
    }

    async fn list_tokens(&self, before_seq: Option<i64>, limit: u32) -> StoreResult<TokenPage> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE (?1 IS NULL OR seq < ?1) ORDER BY seq DESC LIMIT ?2"
        )))
        .bind(before_seq)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(token_from_row).collect()
    }

    async fn revoke_token(
        &self,
        id: Uuid,
        at: OffsetDateTime,
        audit: &AuditEntry,
    ) -> StoreResult<TokenRecord> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query("UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
            .bind(micros(at))
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        let row =
            sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = ?")))
                .bind(id.to_string())
                .fetch_optional(&mut *tx)
                .await?;
        let token = token_from_row(&row.ok_or(StoreError::NotFound)?)?.1;
        if updated.rows_affected() > 0 {
            insert_audit(&mut tx, audit).await?;
        }
        tx.commit().await?;
        Ok(token)
    }

    async fn touch_tokens(&self, uses: &[(Uuid, OffsetDateTime)]) -> StoreResult<()> {
        let uses: Vec<(String, i64)> = uses.iter().map(|(id, at)| (id.to_string(), micros(*at))).collect();
        sqlx::query(
            "UPDATE api_tokens SET last_used_at = u.value ->> 1 \
             FROM json_each(?) AS u WHERE api_tokens.id = u.value ->> 0 \
             AND (last_used_at IS NULL OR last_used_at < u.value ->> 1)",
        )
        .bind(Json(uses))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_revoked_tokens(&self, now: OffsetDateTime) -> StoreResult<Vec<Uuid>> {
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT id FROM api_tokens WHERE revoked_at IS NOT NULL AND expires_at > ?")
                .bind(micros(now))
                .fetch_all(&self.pool)
                .await?;
        ids.iter()
            .map(|id| Uuid::parse_str(id).map_err(|_| StoreError::Corrupt(format!("uuid {id:?}"))))
            .collect()
    }

    async fn list_token_keys(&self) -> StoreResult<Vec<TokenKeyRecord>> {
        let rows = sqlx::query(
            "SELECT k.id, k.sealed_key, k.created_at, \
             (SELECT max(t.expires_at) FROM api_tokens t WHERE t.key_id = k.id) AS last_token_expiry \
             FROM token_keys k ORDER BY k.id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(TokenKeyRecord {
                    id: row.try_get("id")?,
                    sealed_key: row.try_get("sealed_key")?,
                    created_at: time_column(row, "created_at")?,
                    last_token_expiry: optional_time_column(row, "last_token_expiry")?,
                })
            })
            .collect()
    }

    async fn insert_token_key(
        &self,
        id: i32,
        sealed_key: &[u8],
        at: OffsetDateTime,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("INSERT INTO token_keys (id, sealed_key, created_at) VALUES (?, ?, ?)")
            .bind(id)
            .bind(sealed_key)
            .bind(micros(at))
            .execute(&mut *tx)
            .await?;
        if let Some(audit) = audit {
            insert_audit(&mut tx, audit).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &std::path::Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// `kca.db` holds the sealed keys and the token log: like `master.key`, readable by its owner
    /// only, and so are the WAL and shared-memory files SQLite makes beside it.
    #[tokio::test]
    async fn the_database_and_its_side_files_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kca.db");
        let store = SqliteStore::connect(&format!("sqlite://{}", path.display())).await.unwrap();
        store.migrate().await.unwrap();
        for name in ["kca.db", "kca.db-wal", "kca.db-shm"] {
            assert_eq!(mode(&dir.path().join(name)), 0o600, "{name} of a new database");
        }
        store.pool.close().await;

        // Found readable by others (made by an older kca): made private when opened.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let store = SqliteStore::connect(&format!("sqlite://{}", path.display())).await.unwrap();
        store.get_setting("probe").await.unwrap();
        for name in ["kca.db", "kca.db-wal", "kca.db-shm"] {
            assert_eq!(mode(&dir.path().join(name)), 0o600, "{name} of a reopened database");
        }
    }
}
