//! The Postgres backend: the production store, shared by every replica.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{Postgres, QueryBuilder, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use super::migrate::{EmbeddedMigration, migrator};
use super::stored_policy::StoredPolicy;
use super::*;
use crate::pki::Serial;

pub(crate) const MIGRATIONS: &[EmbeddedMigration] = &[
    (1, "initial", include_str!("../../migrations/postgres/0001_initial.sql")),
    (2, "crl storage", include_str!("../../migrations/postgres/0002_crl_storage.sql")),
    (3, "revoked covering index", include_str!("../../migrations/postgres/0003_revoked_covering_index.sql")),
    (4, "api tokens", include_str!("../../migrations/postgres/0004_api_tokens.sql")),
    (5, "cluster version", include_str!("../../migrations/postgres/0005_cluster_version.sql")),
];

/// Channel on which replicas announce changes (see [`Change`]), delivered at commit.
pub const CHANGES_CHANNEL: &str = "kca_changes";

/// Session advisory lock held by the replica that leads background work.
const LEADER_LOCK: i64 = 0x6b63_615f_6c65_6164;

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

pub struct PostgresStore {
    pool: PgPool,
    options: PgConnectOptions,
    /// The connection holding the leader lock, while this replica leads.
    leader: tokio::sync::Mutex<Option<PgConnection>>,
}

impl PostgresStore {
    /// A lazily connecting pool: kca starts and serves cached data while the database is away,
    /// and a request that needs it fails within the acquire timeout.
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("invalid Postgres URL: {e}")))?
            .application_name("kca");
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(3))
            // A connection broken by a database restart fails its next query (answered 503) and
            // is dropped; testing every checkout would cost a round trip per query.
            .test_before_acquire(false)
            .connect_lazy_with(options.clone());
        Ok(Self { pool, options, leader: tokio::sync::Mutex::new(None) })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

fn cluster_from_row(row: &PgRow) -> StoreResult<ClusterRecord> {
    Ok(ClusterRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        server: row.try_get("server")?,
        key_algorithm: parse_key_algorithm(row.try_get("key_algorithm")?)?,
        policy: row.try_get::<Json<StoredPolicy>, _>("policy")?.0.into(),
        labels: row.try_get::<Json<BTreeMap<String, String>>, _>("labels")?.0,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        version: row.try_get("version")?,
    })
}

fn authority_from_row(row: &PgRow) -> StoreResult<AuthorityRecord> {
    Ok(AuthorityRecord {
        id: row.try_get("id")?,
        cluster_id: row.try_get("cluster_id")?,
        kind: parse_kind(row.try_get("kind")?)?,
        generation: row.try_get("generation")?,
        state: parse_state(row.try_get("state")?)?,
        subject: row.try_get("subject")?,
        certificate_der: row.try_get("certificate_der")?,
        fingerprint: row.try_get("fingerprint")?,
        key_algorithm: parse_key_algorithm(row.try_get("key_algorithm")?)?,
        sealed_key: row.try_get("sealed_key")?,
        key_version: row.try_get("key_version")?,
        not_before: row.try_get("not_before")?,
        not_after: row.try_get("not_after")?,
        created_at: row.try_get("created_at")?,
    })
}

fn certificate_from_row(row: &PgRow) -> StoreResult<(i64, CertificateRecord)> {
    let reason: Option<String> = row.try_get("revocation_reason")?;
    Ok((
        row.try_get("seq")?,
        CertificateRecord {
            serial: row.try_get("serial")?,
            cluster_id: row.try_get("cluster_id")?,
            authority_id: row.try_get("authority_id")?,
            kind: parse_kind(row.try_get("kind")?)?,
            generation: row.try_get("generation")?,
            profile: row.try_get("profile")?,
            common_name: row.try_get("common_name")?,
            groups: row.try_get::<Json<Vec<String>>, _>("groups")?.0,
            dns_names: row.try_get::<Json<Vec<String>>, _>("dns_names")?.0,
            ip_addresses: row.try_get::<Json<Vec<String>>, _>("ip_addresses")?.0,
            not_before: row.try_get("not_before")?,
            not_after: row.try_get("not_after")?,
            fingerprint: row.try_get("fingerprint")?,
            certificate_der: row.try_get("certificate_der")?,
            issued_by: row.try_get("issued_by")?,
            created_at: row.try_get("created_at")?,
            revoked_at: row.try_get("revoked_at")?,
            revocation_reason: reason.as_deref().map(parse_reason).transpose()?,
        },
    ))
}

fn crl_from_row(row: &PgRow) -> StoreResult<CrlRecord> {
    Ok(CrlRecord {
        authority_id: row.try_get("authority_id")?,
        number: row.try_get("crl_number")?,
        this_update: row.try_get("this_update")?,
        next_update: row.try_get("next_update")?,
        entries: row.try_get("entries")?,
        der: row.try_get("der")?,
    })
}

fn audit_from_row(row: &PgRow) -> StoreResult<AuditRecord> {
    Ok(AuditRecord {
        id: row.try_get("id")?,
        entry: AuditEntry {
            at: row.try_get("at")?,
            actor: row.try_get("actor")?,
            action: row.try_get("action")?,
            object_type: row.try_get("object_type")?,
            object_id: row.try_get("object_id")?,
            cluster_id: row.try_get("cluster_id")?,
            remote_addr: row.try_get("remote_addr")?,
            details: row.try_get::<Json<serde_json::Value>, _>("details")?.0,
        },
    })
}

fn token_from_row(row: &PgRow) -> StoreResult<(i64, TokenRecord)> {
    Ok((
        row.try_get("seq")?,
        TokenRecord {
            id: row.try_get("id")?,
            subject: row.try_get("subject")?,
            scopes: parse_scopes(row.try_get::<Json<Vec<String>>, _>("scopes")?.0)?,
            clusters: row.try_get::<Json<Vec<String>>, _>("clusters")?.0,
            groups: row.try_get::<Option<Json<Vec<String>>>, _>("groups")?.map(|g| g.0),
            max_ttl: row.try_get::<Option<i64>, _>("max_ttl_seconds")?.map(|t| t as u64),
            key_id: row.try_get("key_id")?,
            created_by: row.try_get("created_by")?,
            created_at: row.try_get("created_at")?,
            expires_at: row.try_get("expires_at")?,
            last_used_at: row.try_get("last_used_at")?,
            revoked_at: row.try_get("revoked_at")?,
        },
    ))
}

/// Why a versioned change of a cluster matched no row: it is gone, or another change came first.
async fn stale_or_gone(conn: &mut PgConnection, id: Uuid) -> StoreError {
    match sqlx::query_scalar::<_, i64>("SELECT version FROM clusters WHERE id = $1")
        .bind(id)
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

/// Announce a change to every replica when the transaction commits.
async fn notify(conn: &mut PgConnection, change: Change) -> StoreResult<()> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANGES_CHANNEL)
        .bind(change.payload())
        .execute(conn)
        .await?;
    Ok(())
}

async fn insert_audit(conn: &mut PgConnection, entry: &AuditEntry) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO audit_events (at, actor, action, object_type, object_id, cluster_id, remote_addr, details) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(entry.at)
    .bind(&entry.actor)
    .bind(&entry.action)
    .bind(&entry.object_type)
    .bind(&entry.object_id)
    .bind(entry.cluster_id)
    .bind(&entry.remote_addr)
    .bind(Json(&entry.details))
    .execute(conn)
    .await?;
    Ok(())
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn pool_state(&self) -> PoolState {
        PoolState {
            size: self.pool.size(),
            idle: self.pool.num_idle() as u32,
            max: self.pool.options().get_max_connections(),
        }
    }

    async fn migrate(&self) -> StoreResult<()> {
        // The migrator takes an advisory lock, so replicas starting together migrate once.
        migrator(MIGRATIONS).await?.run(&self.pool).await?;
        Ok(())
    }

    async fn hold_leadership(&self) -> StoreResult<bool> {
        use sqlx::Connection;
        let mut held = self.leader.lock().await;
        if let Some(connection) = held.as_mut() {
            if sqlx::query("SELECT 1").execute(&mut *connection).await.is_ok() {
                return Ok(true);
            }
            // The connection is gone, and the session lock with it.
            *held = None;
        }
        let connect = PgConnection::connect_with(&self.options);
        let mut connection = tokio::time::timeout(Duration::from_secs(3), connect)
            .await
            .map_err(|_| StoreError::Unavailable(sqlx::Error::PoolTimedOut))??;
        let won: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LEADER_LOCK)
            .fetch_one(&mut connection)
            .await?;
        if won {
            *held = Some(connection);
        }
        Ok(won)
    }

    async fn subscribe(&self) -> StoreResult<Option<tokio::sync::mpsc::Receiver<Change>>> {
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool).await?;
        listener.listen(CHANGES_CHANNEL).await?;
        let (sender, receiver) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(async move {
            loop {
                let change = match listener.try_recv().await {
                    Ok(Some(notification)) => Change::parse(notification.payload()),
                    // The connection dropped; the next try_recv reconnects. Whatever was announced
                    // meanwhile is lost: have the subscriber re-read everything.
                    Ok(None) => Some(Change::Resync),
                    Err(err) => {
                        tracing::warn!(error = %err, "listening for changes failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        Some(Change::Resync)
                    }
                };
                if let Some(change) = change
                    && sender.send(change).await.is_err()
                {
                    return;
                }
            }
        });
        Ok(Some(receiver))
    }

    async fn get_setting(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn insert_setting_if_absent(&self, key: &str, value: &[u8]) -> StoreResult<Vec<u8>> {
        sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_one(&self.pool)
            .await?)
    }

    async fn create_cluster(&self, new: &NewCluster, audit: &AuditEntry) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let c = &new.cluster;
        sqlx::query(
            "INSERT INTO clusters (id, name, server, key_algorithm, policy, labels, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(c.id)
        .bind(&c.name)
        .bind(&c.server)
        .bind(c.key_algorithm.as_str())
        .bind(Json(StoredPolicy::from(&c.policy)))
        .bind(Json(&c.labels))
        .bind(c.created_at)
        .bind(c.updated_at)
        .execute(&mut *tx)
        .await?;
        for (authority, crl) in new.authorities.iter().zip(&new.crls) {
            insert_authority(&mut tx, authority, crl).await?;
        }
        insert_audit(&mut tx, audit).await?;
        notify(&mut tx, Change::Cluster(c.id)).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn find_cluster(&self, id_or_name: &str) -> StoreResult<ClusterRecord> {
        let row = match Uuid::parse_str(id_or_name) {
            Ok(id) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {CLUSTER_COLUMNS} FROM clusters WHERE id = $1"
                )))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
            }
            Err(_) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {CLUSTER_COLUMNS} FROM clusters WHERE name = $1"
                )))
                .bind(id_or_name)
                .fetch_optional(&self.pool)
                .await?
            }
        };
        cluster_from_row(&row.ok_or(StoreError::NotFound)?)
    }

    async fn list_clusters(
        &self,
        after_name: Option<&str>,
        only: Option<&[Uuid]>,
        limit: u32,
    ) -> StoreResult<Vec<ClusterRecord>> {
        let mut query =
            QueryBuilder::<Postgres>::new(format!("SELECT {CLUSTER_COLUMNS} FROM clusters WHERE TRUE"));
        if let Some(after) = after_name {
            query.push(" AND name > ").push_bind(after);
        }
        if let Some(ids) = only {
            query.push(" AND id = ANY(").push_bind(ids.to_vec()).push(")");
        }
        query.push(" ORDER BY name LIMIT ").push_bind(i64::from(limit));
        let rows = query.build().fetch_all(&self.pool).await?;
        rows.iter().map(cluster_from_row).collect()
    }

    async fn update_cluster(&self, cluster: &ClusterRecord, audit: &AuditEntry) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(
            "UPDATE clusters SET server = $2, policy = $3, labels = $4, updated_at = $5, version = version + 1 \
             WHERE id = $1 AND version = $6",
        )
        .bind(cluster.id)
        .bind(&cluster.server)
        .bind(Json(StoredPolicy::from(&cluster.policy)))
        .bind(Json(&cluster.labels))
        .bind(cluster.updated_at)
        .bind(cluster.version)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(stale_or_gone(&mut tx, cluster.id).await);
        }
        insert_audit(&mut tx, audit).await?;
        notify(&mut tx, Change::Cluster(cluster.id)).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_cluster(&self, id: Uuid, version: Option<i64>, audit: &AuditEntry) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let deleted =
            sqlx::query("DELETE FROM clusters WHERE id = $1 AND ($2::BIGINT IS NULL OR version = $2)")
                .bind(id)
                .bind(version)
                .execute(&mut *tx)
                .await?;
        if deleted.rows_affected() == 0 {
            return Err(stale_or_gone(&mut tx, id).await);
        }
        insert_audit(&mut tx, audit).await?;
        notify(&mut tx, Change::Cluster(id)).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_authorities(&self, cluster_id: Uuid) -> StoreResult<Vec<AuthorityRecord>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {AUTHORITY_COLUMNS} FROM authorities WHERE cluster_id = $1 ORDER BY kind, generation"
        )))
        .bind(cluster_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(authority_from_row).collect()
    }

    async fn get_authority(&self, id: Uuid) -> StoreResult<AuthorityRecord> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {AUTHORITY_COLUMNS} FROM authorities WHERE id = $1"
        )))
        .bind(id)
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
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE authorities SET state = 'retiring' WHERE cluster_id = $1 AND kind = $2 AND state = 'active'")
            .bind(new.cluster_id)
            .bind(new.kind.as_str())
            .execute(&mut *tx)
            .await?;
        insert_authority(&mut tx, new, crl).await?;
        insert_audit(&mut tx, audit).await?;
        notify(&mut tx, Change::Cluster(new.cluster_id)).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn retire_authority(
        &self,
        authority_id: Uuid,
        force: bool,
        audit: &AuditEntry,
    ) -> StoreResult<Vec<String>> {
        let mut tx = self.pool.begin().await?;
        let (state, cluster_id): (String, Uuid) =
            sqlx::query_as("SELECT state, cluster_id FROM authorities WHERE id = $1 FOR UPDATE")
                .bind(authority_id)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or(StoreError::NotFound)?;
        if state != "retiring" {
            return Err(StoreError::Conflict(format!(
                "only a retiring generation can be retired; this one is {state} (rotate first)"
            )));
        }
        let live: Vec<String> = sqlx::query_scalar(
            "SELECT serial FROM certificates WHERE authority_id = $1 AND revoked_at IS NULL AND not_after > $2",
        )
        .bind(authority_id)
        .bind(audit.at)
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
            "UPDATE certificates SET revoked_at = $2, revocation_reason = 'cessationOfOperation' \
             WHERE authority_id = $1 AND revoked_at IS NULL AND not_after > $2",
        )
        .bind(authority_id)
        .bind(audit.at)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE authorities SET state = 'retired' WHERE id = $1")
            .bind(authority_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM crls WHERE authority_id = $1").bind(authority_id).execute(&mut *tx).await?;
        let mut entry = audit.clone();
        entry.details["revoked"] = live.iter().cloned().collect();
        insert_audit(&mut tx, &entry).await?;
        notify(&mut tx, Change::Cluster(cluster_id)).await?;
        tx.commit().await?;
        Ok(live)
    }

    async fn record_certificates(&self, batch: &[(CertificateRecord, AuditEntry)]) -> StoreResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        // One statement per table whatever the batch size (arrays unnested), so it is prepared
        // once per connection and never re-planned.
        let column =
            |f: fn(&CertificateRecord) -> String| batch.iter().map(|(c, _)| f(c)).collect::<Vec<_>>();
        let json = |f: fn(&CertificateRecord) -> &Vec<String>| {
            batch.iter().map(|(c, _)| serde_json::json!(f(c))).collect::<Vec<_>>()
        };
        // Both inserts in one statement: atomic on its own, so no BEGIN and COMMIT round trips.
        sqlx::query(
            "WITH recorded AS (INSERT INTO certificates (serial, cluster_id, authority_id, kind, generation, profile, \
             common_name, groups, dns_names, ip_addresses, not_before, not_after, fingerprint, certificate_der, \
             issued_by, created_at) \
             SELECT * FROM UNNEST($1::text[], $2::uuid[], $3::uuid[], $4::text[], $5::int4[], $6::text[], $7::text[], \
             $8::jsonb[], $9::jsonb[], $10::jsonb[], $11::timestamptz[], $12::timestamptz[], $13::text[], $14::bytea[], \
             $15::text[], $16::timestamptz[])) \
             INSERT INTO audit_events (at, actor, action, object_type, object_id, cluster_id, remote_addr, details) \
             SELECT * FROM UNNEST($17::timestamptz[], $18::text[], $19::text[], $20::text[], $21::text[], $22::uuid[], \
             $23::text[], $24::jsonb[])",
        )
        .bind(column(|c| c.serial.clone()))
        .bind(batch.iter().map(|(c, _)| c.cluster_id).collect::<Vec<_>>())
        .bind(batch.iter().map(|(c, _)| c.authority_id).collect::<Vec<_>>())
        .bind(column(|c| c.kind.as_str().to_string()))
        .bind(batch.iter().map(|(c, _)| c.generation).collect::<Vec<_>>())
        .bind(column(|c| c.profile.clone()))
        .bind(column(|c| c.common_name.clone()))
        .bind(json(|c| &c.groups))
        .bind(json(|c| &c.dns_names))
        .bind(json(|c| &c.ip_addresses))
        .bind(batch.iter().map(|(c, _)| c.not_before).collect::<Vec<_>>())
        .bind(batch.iter().map(|(c, _)| c.not_after).collect::<Vec<_>>())
        .bind(column(|c| c.fingerprint.clone()))
        .bind(batch.iter().map(|(c, _)| c.certificate_der.as_slice()).collect::<Vec<_>>())
        .bind(column(|c| c.issued_by.clone()))
        .bind(batch.iter().map(|(c, _)| c.created_at).collect::<Vec<_>>())
        .bind(batch.iter().map(|(_, e)| e.at).collect::<Vec<_>>())
        .bind(batch.iter().map(|(_, e)| e.actor.as_str()).collect::<Vec<_>>())
        .bind(batch.iter().map(|(_, e)| e.action.as_str()).collect::<Vec<_>>())
        .bind(batch.iter().map(|(_, e)| e.object_type.as_str()).collect::<Vec<_>>())
        .bind(batch.iter().map(|(_, e)| e.object_id.as_str()).collect::<Vec<_>>())
        .bind(batch.iter().map(|(_, e)| e.cluster_id).collect::<Vec<_>>())
        .bind(batch.iter().map(|(_, e)| e.remote_addr.as_deref()).collect::<Vec<_>>())
        .bind(batch.iter().map(|(_, e)| e.details.clone()).collect::<Vec<_>>())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_certificate(&self, cluster_id: Uuid, serial: &str) -> StoreResult<CertificateRecord> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CERTIFICATE_COLUMNS} FROM certificates WHERE serial = $1 AND cluster_id = $2"
        )))
        .bind(serial)
        .bind(cluster_id)
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
        let mut query = QueryBuilder::<Postgres>::new(format!(
            "SELECT {CERTIFICATE_COLUMNS} FROM certificates WHERE cluster_id = "
        ));
        query.push_bind(cluster_id);
        if let Some(cn) = &filter.common_name {
            query.push(" AND common_name = ").push_bind(cn.clone());
        }
        match filter.status {
            Some(CertificateStatus::Active) => {
                query.push(" AND revoked_at IS NULL AND not_after > ").push_bind(now);
            }
            Some(CertificateStatus::Expired) => {
                query.push(" AND revoked_at IS NULL AND not_after <= ").push_bind(now);
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
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CERTIFICATE_COLUMNS} FROM certificates WHERE serial = $1 AND cluster_id = $2 FOR UPDATE"
        )))
        .bind(serial)
        .bind(cluster_id)
        .fetch_optional(&mut *tx)
        .await?;
        let (_, mut certificate) = certificate_from_row(&row.ok_or(StoreError::NotFound)?)?;
        if certificate.revoked_at.is_some() {
            return Ok((certificate, false));
        }
        sqlx::query("UPDATE certificates SET revoked_at = $2, revocation_reason = $3 WHERE serial = $1")
            .bind(serial)
            .bind(audit.at)
            .bind(reason.as_str())
            .execute(&mut *tx)
            .await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        certificate.revoked_at = Some(audit.at);
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
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE certificates SET revoked_at = $3, revocation_reason = $4 \
             WHERE cluster_id = $1 AND common_name = $2 AND revoked_at IS NULL AND not_after > $3 \
             RETURNING {CERTIFICATE_COLUMNS}"
        )))
        .bind(cluster_id)
        .bind(common_name)
        .bind(audit.at)
        .bind(reason.as_str())
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
        let mut tx = self.pool.begin().await?;
        // The row lock taken here is held until commit: a concurrent publisher (this replica or
        // another) waits, then reads a revoked set that includes everything this one saw.
        let number: i64 = sqlx::query_scalar(
            "UPDATE authorities SET crl_number = crl_number + 1 WHERE id = $1 AND state <> 'retired' RETURNING crl_number",
        )
        .bind(authority_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        // One row of arrays rather than a row per entry: at 100,000 revoked certificates the
        // per-row protocol and decoding cost more than signing the CRL.
        let (serials, revoked_at, reasons): (Vec<Vec<u8>>, Vec<OffsetDateTime>, Vec<Option<String>>) =
            sqlx::query_as(
                "SELECT coalesce(array_agg(decode(serial, 'hex')), '{}'), coalesce(array_agg(revoked_at), '{}'), \
                 coalesce(array_agg(revocation_reason), '{}') FROM certificates \
                 WHERE authority_id = $1 AND revoked_at IS NOT NULL AND not_after > $2",
            )
            .bind(authority_id)
            .bind(expired_cutoff)
            .fetch_one(&mut *tx)
            .await?;
        let mut entries = Vec::with_capacity(serials.len());
        for ((serial, revoked_at), reason) in serials.iter().zip(revoked_at).zip(reasons) {
            entries.push(RevokedEntry {
                serial: Serial::from_bytes(serial),
                revoked_at,
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
            "INSERT INTO crls ({CRL_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (authority_id) DO UPDATE SET crl_number = excluded.crl_number, \
             this_update = excluded.this_update, next_update = excluded.next_update, \
             entries = excluded.entries, der = excluded.der WHERE crls.crl_number < excluded.crl_number"
        )))
        .bind(record.authority_id)
        .bind(record.number)
        .bind(record.this_update)
        .bind(record.next_update)
        .bind(record.entries)
        .bind(&record.der)
        .execute(&mut *tx)
        .await?;
        // Delivered at commit: the other replicas refresh their cached CRL at once.
        notify(&mut tx, Change::Crl(authority_id, number)).await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn list_revoked_serials(
        &self,
        authority_ids: &[Uuid],
        now: OffsetDateTime,
    ) -> StoreResult<Vec<(String, RevocationReason)>> {
        let rows = sqlx::query(
            "SELECT serial, revocation_reason FROM certificates \
             WHERE authority_id = ANY($1) AND revoked_at IS NOT NULL AND not_after > $2 ORDER BY seq",
        )
        .bind(authority_ids.to_vec())
        .bind(now)
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
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CRL_COLUMNS} FROM crls WHERE authority_id = ANY($1)"
        )))
        .bind(authority_ids.to_vec())
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
        let rows = sqlx::query(
            "SELECT id, at, actor, action, object_type, object_id, cluster_id, remote_addr, details \
             FROM audit_events WHERE ($1::BIGINT IS NULL OR id < $1) \
             AND ($3::UUID[] IS NULL OR cluster_id = ANY($3)) ORDER BY id DESC LIMIT $2",
        )
        .bind(before_id)
        .bind(i64::from(limit))
        .bind(clusters.map(<[Uuid]>::to_vec))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn insert_token(&self, token: &TokenRecord, audit: &AuditEntry) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO api_tokens (id, subject, scopes, clusters, groups, max_ttl_seconds, key_id, created_by, \
             created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(token.id)
        .bind(&token.subject)
        .bind(Json(scope_names(&token.scopes)))
        .bind(Json(&token.clusters))
        .bind(token.groups.as_ref().map(Json))
        .bind(token.max_ttl.map(|t| t as i64))
        .bind(token.key_id)
        .bind(&token.created_by)
        .bind(token.created_at)
        .bind(token.expires_at)
        .execute(&mut *tx)
        .await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_token(&self, id: Uuid) -> StoreResult<TokenRecord> {
        let row =
            sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = $1")))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(token_from_row(&row.ok_or(StoreError::NotFound)?)?.1)
    }

    async fn list_tokens(&self, before_seq: Option<i64>, limit: u32) -> StoreResult<TokenPage> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE ($1::BIGINT IS NULL OR seq < $1) ORDER BY seq DESC LIMIT $2"
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
        let mut tx = self.pool.begin().await?;
        let updated =
            sqlx::query("UPDATE api_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                .bind(id)
                .bind(at)
                .execute(&mut *tx)
                .await?;
        let row =
            sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = $1")))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let token = token_from_row(&row.ok_or(StoreError::NotFound)?)?.1;
        if updated.rows_affected() > 0 {
            insert_audit(&mut tx, audit).await?;
            notify(&mut tx, Change::TokenRevoked(id)).await?;
        }
        tx.commit().await?;
        Ok(token)
    }

    async fn touch_tokens(&self, uses: &[(Uuid, OffsetDateTime)]) -> StoreResult<()> {
        let (ids, times): (Vec<Uuid>, Vec<OffsetDateTime>) = uses.iter().copied().unzip();
        sqlx::query(
            "UPDATE api_tokens SET last_used_at = u.at FROM UNNEST($1::UUID[], $2::TIMESTAMPTZ[]) AS u(id, at) \
             WHERE api_tokens.id = u.id AND (last_used_at IS NULL OR last_used_at < u.at)",
        )
        .bind(ids)
        .bind(times)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_revoked_tokens(&self, now: OffsetDateTime) -> StoreResult<Vec<Uuid>> {
        Ok(sqlx::query_scalar("SELECT id FROM api_tokens WHERE revoked_at IS NOT NULL AND expires_at > $1")
            .bind(now)
            .fetch_all(&self.pool)
            .await?)
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
                    created_at: row.try_get("created_at")?,
                    last_token_expiry: row.try_get("last_token_expiry")?,
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
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO token_keys (id, sealed_key, created_at) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(sealed_key)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        if let Some(audit) = audit {
            insert_audit(&mut tx, audit).await?;
        }
        notify(&mut tx, Change::TokenKeys).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// A new authority generation with its first CRL; its CRL Number starts at that CRL's.
async fn insert_authority(conn: &mut PgConnection, a: &AuthorityRecord, crl: &CrlRecord) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO authorities (id, cluster_id, kind, generation, state, subject, certificate_der, fingerprint, \
         key_algorithm, sealed_key, key_version, not_before, not_after, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(a.id)
    .bind(a.cluster_id)
    .bind(a.kind.as_str())
    .bind(a.generation)
    .bind(a.state.as_str())
    .bind(&a.subject)
    .bind(&a.certificate_der)
    .bind(&a.fingerprint)
    .bind(a.key_algorithm.as_str())
    .bind(&a.sealed_key)
    .bind(a.key_version)
    .bind(a.not_before)
    .bind(a.not_after)
    .bind(a.created_at)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE authorities SET crl_number = $2 WHERE id = $1")
        .bind(a.id)
        .bind(crl.number)
        .execute(&mut *conn)
        .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO crls ({CRL_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
    )))
    .bind(crl.authority_id)
    .bind(crl.number)
    .bind(crl.this_update)
    .bind(crl.next_update)
    .bind(crl.entries)
    .bind(&crl.der)
    .execute(conn)
    .await?;
    Ok(())
}
