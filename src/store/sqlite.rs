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
use sqlx::{Row, Sqlite};
use time::OffsetDateTime;
use uuid::Uuid;

use super::backend::{Backend, Connection, Query};
use super::migrate::{EmbeddedMigration, migrator};
use super::sql::{self, Arg, Columns, Plain, Stmt};
use super::*;

pub(crate) const MIGRATIONS: &[EmbeddedMigration] = &[
    (1, "initial", include_str!("../../migrations/sqlite/0001_initial.sql")),
    (2, "crl storage", include_str!("../../migrations/sqlite/0002_crl_storage.sql")),
    (3, "revoked covering index", include_str!("../../migrations/sqlite/0003_revoked_covering_index.sql")),
    (4, "api tokens", include_str!("../../migrations/sqlite/0004_api_tokens.sql")),
    (5, "cluster version", include_str!("../../migrations/sqlite/0005_cluster_version.sql")),
    (6, "pki adoption", include_str!("../../migrations/sqlite/0006_pki_adoption.sql")),
    (8, "key custody", include_str!("../../migrations/sqlite/0008_key_custody.sql")),
    (9, "pkcs11 keys", include_str!("../../migrations/sqlite/0009_pkcs11_keys.sql")),
    (10, "revocation order", include_str!("../../migrations/sqlite/0010_revocation_order.sql")),
];

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

fn parse_uuid(text: &str) -> StoreResult<Uuid> {
    Uuid::parse_str(text).map_err(|_| StoreError::Corrupt(format!("uuid {text:?}")))
}

impl Columns for SqliteRow {
    fn get<T: Plain>(&self, column: &str) -> StoreResult<T> {
        Ok(self.try_get(column)?)
    }

    fn opt_uuid(&self, column: &str) -> StoreResult<Option<Uuid>> {
        self.try_get::<Option<String>, _>(column)?.as_deref().map(parse_uuid).transpose()
    }

    fn opt_time(&self, column: &str) -> StoreResult<Option<OffsetDateTime>> {
        self.try_get::<Option<i64>, _>(column)?.map(from_micros).transpose()
    }
}

#[async_trait]
impl Connection for SqliteConnection {
    type Db = Sqlite;
    type Row = SqliteRow;
    type Executor<'c> = &'c mut SqliteConnection;

    // Writing transactions start with BEGIN IMMEDIATE and hold the database's write lock.
    const FOR_UPDATE: &'static str = "";

    /// Arguments bound as SQLite stores them: UUIDs as text, times as
    /// microseconds, lists of UUIDs as JSON text (read with `json_each`).
    // AUTOINCREMENT keys take the values given, and later rows number after the highest.
    const OVERRIDING_IDENTITY: &'static str = "";

    async fn reset_identity(&mut self, _table: &str, _column: &str) -> StoreResult<()> {
        Ok(())
    }

    fn bind(query: Query<Self>, arg: Arg) -> Query<Self> {
        match arg {
            Arg::Uuid(v) => query.bind(v.to_string()),
            Arg::OptUuid(v) => query.bind(v.map(|v| v.to_string())),
            Arg::UuidList(v) => query.bind(Json(v.iter().map(Uuid::to_string).collect::<Vec<_>>())),
            Arg::Time(v) => query.bind(micros(v)),
            Arg::OptTime(v) => query.bind(v.map(micros)),
            Arg::Plain(v) => v.bind(query),
        }
    }

    fn executor(&mut self) -> &mut SqliteConnection {
        self
    }

    fn rows_affected(result: <Sqlite as sqlx::Database>::QueryResult) -> u64 {
        result.rows_affected()
    }

    fn in_list(column: &str, param: usize) -> String {
        format!("{column} IN (SELECT value FROM json_each(${param}))")
    }

    async fn notify(&mut self, _change: Change) -> StoreResult<()> {
        // One process owns the database file: there is nobody to tell.
        Ok(())
    }

    async fn revoked_entries(
        &mut self,
        authority_id: Uuid,
        cutoff: OffsetDateTime,
    ) -> StoreResult<(Vec<RevokedEntry>, Vec<OffsetDateTime>)> {
        let rows = self
            .fetch_all(
                Stmt::new(
                    "SELECT serial, revoked_at, revocation_reason, not_after FROM certificates \
                     WHERE authority_id = $1 AND revoked_at IS NOT NULL AND not_after > $2",
                )
                .bind(authority_id)
                .bind(cutoff),
            )
            .await?;
        rows.iter().map(sql::revoked_entry_from_row).collect()
    }
}

#[async_trait]
impl Backend for SqliteStore {
    type Db = Sqlite;

    const NAME: &'static str = "sqlite";

    fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// BEGIN IMMEDIATE: two writers queue on the busy timeout instead of failing on a lock upgrade.
    async fn begin_write(&self) -> StoreResult<sqlx::Transaction<'static, Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// A deferred transaction: in WAL mode its first read fixes the snapshot every later read
    /// sees, while writers go on (the online equivalent of the backup API, without unsafe FFI).
    async fn begin_snapshot(&self) -> StoreResult<sqlx::Transaction<'static, Sqlite>> {
        Ok(self.pool.begin_with("BEGIN DEFERRED").await?)
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
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &std::path::Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// A backup holds every table of the schema with every column: a table or column added by a
    /// migration and forgotten in `BACKUP_TABLES` would be lost by a backup and restore.
    #[tokio::test]
    async fn the_backup_covers_every_table_and_column() {
        use std::collections::BTreeSet;
        let dir = tempfile::tempdir().unwrap();
        let store =
            SqliteStore::connect(&format!("sqlite://{}", dir.path().join("kca.db").display())).await.unwrap();
        Store::migrate(&store).await.unwrap();
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' \
             AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_sqlx_%' ORDER BY name",
        )
        .fetch_all(&store.pool)
        .await
        .unwrap();
        let mut schema = BTreeSet::new();
        for table in &tables {
            let columns: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info($1)")
                .bind(table)
                .fetch_all(&store.pool)
                .await
                .unwrap();
            schema.extend(columns.into_iter().map(|column| format!("{table}.{column}")));
        }
        let backed_up: BTreeSet<String> = sql::BACKUP_TABLES
            .iter()
            .flat_map(|(table, columns, _)| {
                columns.iter().map(move |(column, _)| format!("{table}.{column}"))
            })
            .collect();
        assert_eq!(backed_up, schema, "BACKUP_TABLES against the schema");
    }

    /// `kca.db` holds the sealed keys and the token log: like `master.key`, readable by its owner
    /// only, and so are the WAL and shared-memory files SQLite makes beside it.
    #[tokio::test]
    async fn the_database_and_its_side_files_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kca.db");
        let store = SqliteStore::connect(&format!("sqlite://{}", path.display())).await.unwrap();
        Store::migrate(&store).await.unwrap();
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
