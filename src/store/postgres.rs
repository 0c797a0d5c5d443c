//! The Postgres backend: the production store, shared by every replica.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use super::backend::{Backend, Connection, Query};
use super::migrate::{EmbeddedMigration, migrator};
use super::sql::{self, Arg, Columns, Plain, Stmt};
use super::*;
use crate::pki::Serial;

pub(crate) const MIGRATIONS: &[EmbeddedMigration] = &[
    (1, "initial", include_str!("../../migrations/postgres/0001_initial.sql")),
    (2, "crl storage", include_str!("../../migrations/postgres/0002_crl_storage.sql")),
    (3, "revoked covering index", include_str!("../../migrations/postgres/0003_revoked_covering_index.sql")),
    (4, "api tokens", include_str!("../../migrations/postgres/0004_api_tokens.sql")),
    (5, "cluster version", include_str!("../../migrations/postgres/0005_cluster_version.sql")),
    (6, "pki adoption", include_str!("../../migrations/postgres/0006_pki_adoption.sql")),
    (8, "key custody", include_str!("../../migrations/postgres/0008_key_custody.sql")),
    (9, "pkcs11 keys", include_str!("../../migrations/postgres/0009_pkcs11_keys.sql")),
    (10, "revocation order", include_str!("../../migrations/postgres/0010_revocation_order.sql")),
];

/// Channel on which replicas announce changes (see [`Change`]), delivered at commit.
pub const CHANGES_CHANNEL: &str = "kca_changes";

/// Session advisory lock held by the replica that leads background work.
const LEADER_LOCK: i64 = 0x6b63_615f_6c65_6164;

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
}

impl Columns for PgRow {
    fn get<T: Plain>(&self, column: &str) -> StoreResult<T> {
        Ok(self.try_get(column)?)
    }

    fn opt_uuid(&self, column: &str) -> StoreResult<Option<Uuid>> {
        Ok(self.try_get(column)?)
    }

    fn opt_time(&self, column: &str) -> StoreResult<Option<OffsetDateTime>> {
        Ok(self.try_get(column)?)
    }
}

#[async_trait]
impl Connection for PgConnection {
    type Db = Postgres;
    type Row = PgRow;
    type Executor<'c> = &'c mut PgConnection;

    const FOR_UPDATE: &'static str = " FOR UPDATE";

    /// Arguments bound in Postgres's own types.
    const OVERRIDING_IDENTITY: &'static str = " OVERRIDING SYSTEM VALUE";

    async fn reset_identity(&mut self, table: &str, column: &str) -> StoreResult<()> {
        self.execute(Stmt::new(format!(
            "SELECT setval(pg_get_serial_sequence('{table}', '{column}'), \
             COALESCE((SELECT max({column}) FROM {table}), 0) + 1, false)"
        )))
        .await?;
        Ok(())
    }

    fn bind(query: Query<Self>, arg: Arg) -> Query<Self> {
        match arg {
            Arg::Uuid(v) => query.bind(v),
            Arg::OptUuid(v) => query.bind(v),
            Arg::UuidList(v) => query.bind(v),
            Arg::Time(v) => query.bind(v),
            Arg::OptTime(v) => query.bind(v),
            Arg::Plain(v) => v.bind(query),
        }
    }

    fn executor(&mut self) -> &mut PgConnection {
        self
    }

    fn rows_affected(result: <Postgres as sqlx::Database>::QueryResult) -> u64 {
        result.rows_affected()
    }

    fn in_list(column: &str, param: usize) -> String {
        format!("{column} = ANY(${param})")
    }

    async fn notify(&mut self, change: Change) -> StoreResult<()> {
        self.execute(Stmt::new("SELECT pg_notify($1, $2)").bind(CHANGES_CHANNEL).bind(change.payload()))
            .await?;
        Ok(())
    }

    async fn revoked_entries(
        &mut self,
        authority_id: Uuid,
        cutoff: OffsetDateTime,
    ) -> StoreResult<(Vec<RevokedEntry>, Vec<OffsetDateTime>)> {
        // One row rather than a row per entry, and in it strings rather than arrays: at 100,000
        // revoked certificates, building arrays (an element each) and the per-row protocol cost
        // Postgres and kca more than signing the CRL. The serials' hex joined by commas, the
        // revocation and expiry times in Postgres's binary form (8 octets each, microseconds
        // since 2000), the reasons' names joined by commas: one aggregation reads the rows once,
        // so the i-th item of each belongs to the same certificate.
        let (count, serials, revoked_at, not_after, reasons): (i64, String, Vec<u8>, Vec<u8>, String) =
            sqlx::query_as(
                "SELECT count(*), coalesce(string_agg(serial, ','), ''), \
                 coalesce(string_agg(timestamptz_send(revoked_at), ''::bytea), ''::bytea), \
                 coalesce(string_agg(timestamptz_send(not_after), ''::bytea), ''::bytea), \
                 coalesce(string_agg(coalesce(revocation_reason, ''), ','), '') FROM certificates \
                 WHERE authority_id = $1 AND revoked_at IS NOT NULL AND not_after > $2",
            )
            .bind(authority_id)
            .bind(cutoff)
            .fetch_one(self)
            .await?;
        decode_revoked(count, &serials, &revoked_at, &not_after, &reasons)
    }
}

/// The revoked set as [`Connection::revoked_entries`] reads it on Postgres (see there).
fn decode_revoked(
    count: i64,
    serials: &str,
    revoked_at: &[u8],
    not_after: &[u8],
    reasons: &str,
) -> StoreResult<(Vec<RevokedEntry>, Vec<OffsetDateTime>)> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("the revoked set of an authority: {what}"));
    let count = usize::try_from(count).map_err(|_| corrupt("a negative count"))?;
    if count == 0 {
        return Ok((Vec::new(), Vec::new()));
    }
    if revoked_at.len() != count * 8 || not_after.len() != count * 8 {
        return Err(corrupt("revocation or expiry times do not match the count"));
    }
    // Postgres's timestamps count microseconds from 2000-01-01 00:00 UTC.
    let postgres_epoch = time::macros::datetime!(2000-01-01 00:00:00 UTC);
    let time = |octets: &[u8]| {
        let micros = i64::from_be_bytes(octets.try_into().expect("chunks of 8"));
        postgres_epoch
            .checked_add(time::Duration::microseconds(micros))
            .ok_or_else(|| corrupt("a time out of range"))
    };
    let mut entries = Vec::with_capacity(count);
    let mut expiries = Vec::with_capacity(count);
    let mut serials = serials.split(',');
    let mut reasons = reasons.split(',');
    for (revoked_at, not_after) in revoked_at.chunks_exact(8).zip(not_after.chunks_exact(8)) {
        let (Some(serial), Some(reason)) = (serials.next(), reasons.next()) else {
            return Err(corrupt("fewer serials or reasons than the count"));
        };
        let mut bytes = [0u8; 20];
        let len = serial.len() / 2;
        if serial.is_empty() || serial.len() % 2 != 0 || len > bytes.len() {
            return Err(StoreError::Corrupt(format!("serial {serial}")));
        }
        hex::decode_to_slice(serial, &mut bytes[..len])
            .map_err(|_| StoreError::Corrupt(format!("serial {serial}")))?;
        expiries.push(time(not_after)?);
        entries.push(RevokedEntry {
            serial: Serial::from_bytes(&bytes[..len]),
            revoked_at: time(revoked_at)?,
            reason: if reason.is_empty() {
                RevocationReason::Unspecified
            } else {
                sql::parse_reason(reason)?
            },
        });
    }
    if serials.next().is_some() || reasons.next().is_some() {
        return Err(corrupt("more serials or reasons than the count"));
    }
    Ok((entries, expiries))
}

#[async_trait]
impl Backend for PostgresStore {
    type Db = Postgres;

    const NAME: &'static str = "postgres";

    fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn begin_write(&self) -> StoreResult<sqlx::Transaction<'static, Postgres>> {
        Ok(self.pool.begin().await?)
    }

    async fn begin_snapshot(&self) -> StoreResult<sqlx::Transaction<'static, Postgres>> {
        Ok(self.pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?)
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

    async fn record_certificates(&self, batch: &[(CertificateRecord, AuditEntry)]) -> StoreResult<()> {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_revoked_set_is_read_item_for_item_and_refused_when_the_parts_disagree() {
        let micros = |at: OffsetDateTime| {
            let since = at - time::macros::datetime!(2000-01-01 00:00:00 UTC);
            i64::try_from(since.whole_microseconds()).unwrap().to_be_bytes()
        };
        let first = time::macros::datetime!(2026-11-25 12:00:00.123456 UTC);
        let second = time::macros::datetime!(1999-12-31 23:59:59 UTC);
        let times = [micros(first), micros(second)].concat();
        let expiries = [micros(second), micros(first)].concat();
        let (entries, expires) =
            decode_revoked(2, "00FF01,7E0A", &times, &expiries, "keyCompromise,").unwrap();
        assert_eq!(expires, [second, first]);
        assert_eq!(entries[0].serial.as_bytes(), [0x00, 0xff, 0x01]);
        assert_eq!(entries[0].revoked_at, first);
        assert_eq!(entries[0].reason, RevocationReason::KeyCompromise);
        assert_eq!(entries[1].serial.as_bytes(), [0x7e, 0x0a]);
        assert_eq!(entries[1].revoked_at, second);
        assert_eq!(entries[1].reason, RevocationReason::Unspecified);
        assert!(decode_revoked(0, "", &[], &[], "").unwrap().0.is_empty());

        for (i, (count, serials, times, reasons)) in [
            (3, "00FF01,7E0A", &times[..], "keyCompromise,"),
            (2, "00FF01", &times[..], "keyCompromise,"),
            (2, "00FF01,7E0A,01", &times[..], "keyCompromise,,"),
            (2, "00FF01,7E0A", &times[..8], "keyCompromise,"),
            (2, "00FF01,7E0A", &times[..], "keyCompromise,"),
            (2, "00FF01,7E0", &times[..], "keyCompromise,"),
            (2, "00FF01,7G0A", &times[..], "keyCompromise,"),
            (2, "00FF01,7E0A", &times[..], "keyCompromise,certificateHold"),
            (-1, "", &[][..], ""),
        ]
        .into_iter()
        .enumerate()
        {
            // The fifth case is valid but for its expiries, cut short; the others have them whole.
            let expiries = if i == 4 { &expiries[..8] } else { &expiries[..] };
            assert!(
                decode_revoked(count, serials, times, expiries, reasons).is_err(),
                "{count} {serials:?} {reasons:?}"
            );
        }
    }
}
