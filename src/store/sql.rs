//! What both backends share below the `Store` interface: statements as SQL text plus typed
//! arguments, and the mapping of rows to records.
//!
//! The SQL is written once with `$n` placeholders (Postgres's, which SQLite reads too). An
//! argument says what it is (a UUID, a time, a list of UUIDs) and each backend binds it in its own
//! representation: Postgres natively, SQLite as text and microseconds (see `sqlite.rs`). A row is
//! read through [`Columns`], whose UUID and time readers are the backend's.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use sqlx::query::Query;
use sqlx::types::Json;
use sqlx::{Decode, Encode, Postgres, Sqlite, Type};
use time::OffsetDateTime;
use uuid::Uuid;

use super::stored_policy::StoredPolicy;
use super::*;
use crate::pki::Serial;

pub(super) const CLUSTER_COLUMNS: &str =
    "id, name, server, key_algorithm, policy, labels, created_at, updated_at, version, key_storage";
pub(super) const AUTHORITY_COLUMNS: &str = "id, cluster_id, kind, generation, state, subject, certificate_der, \
     fingerprint, key_algorithm, sealed_key, key_version, not_before, not_after, created_at, previous_sealed_key, \
     previous_key_version, chain_pem, key_storage, key_reference";
pub(super) const SERVICE_ACCOUNT_KEY_COLUMNS: &str = "id, cluster_id, key_id, state, key_algorithm, sealed_key, key_version, public_pem, created_at, \
     previous_sealed_key, previous_key_version";
pub(super) const PENDING_AUTHORITY_COLUMNS: &str = "id, cluster_id, kind, key_algorithm, sealed_key, key_version, csr_der, created_at, previous_sealed_key, \
     previous_key_version";
pub(super) const CERTIFICATE_COLUMNS: &str = "seq, serial, cluster_id, authority_id, kind, generation, profile, \
     common_name, groups, dns_names, ip_addresses, not_before, not_after, fingerprint, certificate_der, issued_by, \
     created_at, revoked_at, revocation_reason";
pub(super) const CRL_COLUMNS: &str = "authority_id, crl_number, this_update, next_update, entries, der";
pub(super) const TOKEN_COLUMNS: &str = "seq, id, subject, scopes, clusters, groups, max_ttl_seconds, key_id, \
     created_by, created_at, expires_at, last_used_at, revoked_at";
pub(super) const AUDIT_COLUMNS: &str =
    "id, at, actor, action, object_type, object_id, cluster_id, remote_addr, details";

/// One argument of a statement, typed by what it means rather than by how a backend stores it.
#[derive(Clone, Debug)]
pub(super) enum Arg {
    Uuid(Uuid),
    OptUuid(Option<Uuid>),
    UuidList(Vec<Uuid>),
    Time(OffsetDateTime),
    OptTime(Option<OffsetDateTime>),
    /// Stored alike by both backends.
    Plain(PlainArg),
}

#[derive(Clone, Debug)]
pub(super) enum PlainArg {
    Text(String),
    OptText(Option<String>),
    Int(i64),
    OptInt(Option<i64>),
    Int32(i32),
    OptInt32(Option<i32>),
    Bytes(Vec<u8>),
    OptBytes(Option<Vec<u8>>),
    Json(serde_json::Value),
    OptJson(Option<serde_json::Value>),
}

impl PlainArg {
    pub fn bind<'q, DB: sqlx::Database>(
        self,
        query: Query<'q, DB, DB::Arguments>,
    ) -> Query<'q, DB, DB::Arguments>
    where
        for<'t> String: Encode<'t, DB> + Type<DB>,
        for<'t> Option<String>: Encode<'t, DB> + Type<DB>,
        for<'t> i64: Encode<'t, DB> + Type<DB>,
        for<'t> Option<i64>: Encode<'t, DB> + Type<DB>,
        for<'t> i32: Encode<'t, DB> + Type<DB>,
        for<'t> Option<i32>: Encode<'t, DB> + Type<DB>,
        for<'t> Vec<u8>: Encode<'t, DB> + Type<DB>,
        for<'t> Option<Vec<u8>>: Encode<'t, DB> + Type<DB>,
        for<'t> Json<serde_json::Value>: Encode<'t, DB> + Type<DB>,
        for<'t> Option<Json<serde_json::Value>>: Encode<'t, DB> + Type<DB>,
    {
        match self {
            PlainArg::Text(v) => query.bind(v),
            PlainArg::OptText(v) => query.bind(v),
            PlainArg::Int(v) => query.bind(v),
            PlainArg::OptInt(v) => query.bind(v),
            PlainArg::Int32(v) => query.bind(v),
            PlainArg::OptInt32(v) => query.bind(v),
            PlainArg::Bytes(v) => query.bind(v),
            PlainArg::OptBytes(v) => query.bind(v),
            PlainArg::Json(v) => query.bind(Json(v)),
            PlainArg::OptJson(v) => query.bind(v.map(Json)),
        }
    }
}

macro_rules! arg_from {
    ($($t:ty => $($variant:ident)::+),* $(,)?) => {
        $(impl From<$t> for Arg {
            fn from(value: $t) -> Self {
                arg_from!(@wrap value.into(), $($variant)::+)
            }
        })*
    };
    (@wrap $value:expr, $variant:ident) => { Arg::$variant($value) };
    (@wrap $value:expr, Plain::$variant:ident) => { Arg::Plain(PlainArg::$variant($value)) };
}

arg_from!(
    Uuid => Uuid,
    Option<Uuid> => OptUuid,
    Vec<Uuid> => UuidList,
    OffsetDateTime => Time,
    String => Plain::Text,
    &str => Plain::Text,
    Option<String> => Plain::OptText,
    i64 => Plain::Int,
    Option<i64> => Plain::OptInt,
    i32 => Plain::Int32,
    Option<i32> => Plain::OptInt32,
    Vec<u8> => Plain::Bytes,
    Option<Vec<u8>> => Plain::OptBytes,
    &[u8] => Plain::Bytes,
    serde_json::Value => Plain::Json,
    Option<serde_json::Value> => Plain::OptJson,
);

/// A statement: SQL with `$n` placeholders and its arguments in order.
#[derive(Clone, Debug)]
pub(super) struct Stmt {
    pub sql: String,
    pub args: Vec<Arg>,
}

impl Stmt {
    pub fn new(sql: impl Into<String>) -> Self {
        Self { sql: sql.into(), args: Vec::new() }
    }

    /// Add the argument for the next `$n` the SQL already holds.
    pub fn bind(mut self, arg: impl Into<Arg>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    /// Append a new placeholder and its argument.
    pub fn push_bind(&mut self, arg: impl Into<Arg>) -> &mut Self {
        self.args.push(arg.into());
        self.sql.push_str(&format!("${}", self.args.len()));
        self
    }
}

/// A value both drivers decode the same way (text, integers, bytes, JSON).
pub(super) trait Plain:
    for<'r> Decode<'r, Postgres> + Type<Postgres> + for<'r> Decode<'r, Sqlite> + Type<Sqlite>
{
}

impl<T> Plain for T where
    T: for<'r> Decode<'r, Postgres> + Type<Postgres> + for<'r> Decode<'r, Sqlite> + Type<Sqlite>
{
}

/// Reading a column of a result row; UUIDs and times as the backend stores them.
pub(super) trait Columns {
    fn get<T: Plain>(&self, column: &str) -> StoreResult<T>;
    fn opt_uuid(&self, column: &str) -> StoreResult<Option<Uuid>>;
    fn opt_time(&self, column: &str) -> StoreResult<Option<OffsetDateTime>>;

    fn uuid(&self, column: &str) -> StoreResult<Uuid> {
        self.opt_uuid(column)?.ok_or_else(|| StoreError::Corrupt(format!("{column} is null")))
    }

    fn time(&self, column: &str) -> StoreResult<OffsetDateTime> {
        self.opt_time(column)?.ok_or_else(|| StoreError::Corrupt(format!("{column} is null")))
    }

    fn json<T: DeserializeOwned>(&self, column: &str) -> StoreResult<T>
    where
        Json<T>: Plain,
    {
        Ok(self.get::<Json<T>>(column)?.0)
    }
}

/// How a column of a backed-up table is read and written, whatever the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Uuid,
    Time,
    Text,
    Int,
    Int32,
    Bytes,
    Json,
}

/// Every table a backup holds, in an order that restores (referenced rows first), with its
/// columns (`?` marks a nullable one) and its identity column, if any.
pub(super) type BackupTable = (&'static str, &'static [(&'static str, Kind)], Option<&'static str>);

pub(super) const BACKUP_TABLES: &[BackupTable] = &[
    ("settings", &[("key", Kind::Text), ("value", Kind::Bytes), ("created_at", Kind::Time)], None),
    (
        "clusters",
        &[
            ("id", Kind::Uuid),
            ("name", Kind::Text),
            ("server", Kind::Text),
            ("key_algorithm", Kind::Text),
            ("policy", Kind::Json),
            ("labels", Kind::Json),
            ("created_at", Kind::Time),
            ("updated_at", Kind::Time),
            ("version", Kind::Int),
            ("key_storage", Kind::Text),
        ],
        None,
    ),
    (
        "authorities",
        &[
            ("id", Kind::Uuid),
            ("cluster_id", Kind::Uuid),
            ("kind", Kind::Text),
            ("generation", Kind::Int32),
            ("state", Kind::Text),
            ("subject", Kind::Text),
            ("certificate_der", Kind::Bytes),
            ("fingerprint", Kind::Text),
            ("key_algorithm", Kind::Text),
            ("sealed_key", Kind::Bytes),
            ("key_version", Kind::Int32),
            ("not_before", Kind::Time),
            ("not_after", Kind::Time),
            ("crl_number", Kind::Int),
            ("revocations", Kind::Int),
            ("created_at", Kind::Time),
            ("previous_sealed_key", Kind::Bytes),
            ("previous_key_version", Kind::Int32),
            ("chain_pem", Kind::Text),
            ("key_storage", Kind::Text),
            ("key_reference", Kind::Text),
        ],
        None,
    ),
    (
        "crls",
        &[
            ("authority_id", Kind::Uuid),
            ("crl_number", Kind::Int),
            ("this_update", Kind::Time),
            ("next_update", Kind::Time),
            ("entries", Kind::Int),
            ("der", Kind::Bytes),
        ],
        None,
    ),
    (
        "certificates",
        &[
            ("seq", Kind::Int),
            ("serial", Kind::Text),
            ("cluster_id", Kind::Uuid),
            ("authority_id", Kind::Uuid),
            ("kind", Kind::Text),
            ("generation", Kind::Int32),
            ("profile", Kind::Text),
            ("common_name", Kind::Text),
            ("groups", Kind::Json),
            ("dns_names", Kind::Json),
            ("ip_addresses", Kind::Json),
            ("not_before", Kind::Time),
            ("not_after", Kind::Time),
            ("fingerprint", Kind::Text),
            ("certificate_der", Kind::Bytes),
            ("issued_by", Kind::Text),
            ("created_at", Kind::Time),
            ("revoked_at", Kind::Time),
            ("revocation_reason", Kind::Text),
            ("revocation_seq", Kind::Int),
        ],
        Some("seq"),
    ),
    (
        "audit_events",
        &[
            ("id", Kind::Int),
            ("at", Kind::Time),
            ("actor", Kind::Text),
            ("action", Kind::Text),
            ("object_type", Kind::Text),
            ("object_id", Kind::Text),
            ("cluster_id", Kind::Uuid),
            ("remote_addr", Kind::Text),
            ("details", Kind::Json),
        ],
        Some("id"),
    ),
    (
        "token_keys",
        &[
            ("id", Kind::Int32),
            ("sealed_key", Kind::Bytes),
            ("created_at", Kind::Time),
            ("key_version", Kind::Int32),
            ("previous_sealed_key", Kind::Bytes),
            ("previous_key_version", Kind::Int32),
        ],
        None,
    ),
    (
        "api_tokens",
        &[
            ("seq", Kind::Int),
            ("id", Kind::Uuid),
            ("subject", Kind::Text),
            ("scopes", Kind::Json),
            ("clusters", Kind::Json),
            ("groups", Kind::Json),
            ("max_ttl_seconds", Kind::Int),
            ("key_id", Kind::Int32),
            ("created_by", Kind::Text),
            ("created_at", Kind::Time),
            ("expires_at", Kind::Time),
            ("last_used_at", Kind::Time),
            ("revoked_at", Kind::Time),
        ],
        Some("seq"),
    ),
    (
        "pending_authorities",
        &[
            ("id", Kind::Uuid),
            ("cluster_id", Kind::Uuid),
            ("kind", Kind::Text),
            ("key_algorithm", Kind::Text),
            ("sealed_key", Kind::Bytes),
            ("key_version", Kind::Int32),
            ("csr_der", Kind::Bytes),
            ("created_at", Kind::Time),
            ("previous_sealed_key", Kind::Bytes),
            ("previous_key_version", Kind::Int32),
        ],
        None,
    ),
    (
        "service_account_keys",
        &[
            ("id", Kind::Uuid),
            ("cluster_id", Kind::Uuid),
            ("key_id", Kind::Text),
            ("state", Kind::Text),
            ("key_algorithm", Kind::Text),
            ("sealed_key", Kind::Bytes),
            ("key_version", Kind::Int32),
            ("public_pem", Kind::Text),
            ("created_at", Kind::Time),
            ("previous_sealed_key", Kind::Bytes),
            ("previous_key_version", Kind::Int32),
        ],
        None,
    ),
];

/// One column of a row as a backup keeps it: UUIDs and text as strings, times as microseconds
/// since the epoch, bytes as base64, JSON as it is, SQL NULL as null.
pub(super) fn backup_value(row: &impl Columns, column: &str, kind: Kind) -> StoreResult<serde_json::Value> {
    use base64::Engine;
    use serde_json::Value;
    let value = match kind {
        Kind::Uuid => row.opt_uuid(column)?.map(|v| Value::String(v.to_string())),
        Kind::Time => row.opt_time(column)?.map(|t| Value::from((t.unix_timestamp_nanos() / 1_000) as i64)),
        Kind::Text => row.get::<Option<String>>(column)?.map(Value::String),
        Kind::Int => row.get::<Option<i64>>(column)?.map(Value::from),
        Kind::Int32 => row.get::<Option<i32>>(column)?.map(Value::from),
        Kind::Bytes => row
            .get::<Option<Vec<u8>>>(column)?
            .map(|b| Value::String(base64::engine::general_purpose::STANDARD.encode(b))),
        Kind::Json => row.get::<Option<Json<Value>>>(column)?.map(|j| j.0),
    };
    Ok(value.unwrap_or(Value::Null))
}

/// The argument that writes a backed-up value back.
pub(super) fn restore_arg(value: &serde_json::Value, column: &str, kind: Kind) -> StoreResult<Arg> {
    use base64::Engine;
    let bad = || StoreError::Invalid(format!("backup column {column}: not a {kind:?} value"));
    if value.is_null() {
        return Ok(match kind {
            Kind::Uuid => Arg::OptUuid(None),
            Kind::Time => Arg::OptTime(None),
            Kind::Text => Arg::Plain(PlainArg::OptText(None)),
            Kind::Int => Arg::Plain(PlainArg::OptInt(None)),
            Kind::Int32 => Arg::Plain(PlainArg::OptInt32(None)),
            Kind::Bytes => Arg::Plain(PlainArg::OptBytes(None)),
            Kind::Json => Arg::Plain(PlainArg::OptJson(None)),
        });
    }
    Ok(match kind {
        Kind::Uuid => Arg::Uuid(value.as_str().and_then(|v| Uuid::parse_str(v).ok()).ok_or_else(bad)?),
        Kind::Time => {
            let micros = value.as_i64().ok_or_else(bad)?;
            Arg::Time(
                OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000).map_err(|_| bad())?,
            )
        }
        Kind::Text => Arg::Plain(PlainArg::Text(value.as_str().ok_or_else(bad)?.to_string())),
        Kind::Int => Arg::Plain(PlainArg::Int(value.as_i64().ok_or_else(bad)?)),
        Kind::Int32 => {
            Arg::Plain(PlainArg::Int32(value.as_i64().and_then(|v| i32::try_from(v).ok()).ok_or_else(bad)?))
        }
        Kind::Bytes => Arg::Plain(PlainArg::Bytes(
            base64::engine::general_purpose::STANDARD
                .decode(value.as_str().ok_or_else(bad)?)
                .map_err(|_| bad())?,
        )),
        Kind::Json => Arg::Plain(PlainArg::Json(value.clone())),
    })
}

/// The precision both databases keep: what a time reads back as.
pub(super) fn stored_time(at: OffsetDateTime) -> OffsetDateTime {
    at.replace_nanosecond(at.nanosecond() / 1_000 * 1_000).expect("a smaller nanosecond is valid")
}

pub(super) fn cluster_from_row(row: &impl Columns) -> StoreResult<ClusterRecord> {
    Ok(ClusterRecord {
        id: row.uuid("id")?,
        name: row.get("name")?,
        server: row.get("server")?,
        key_algorithm: parse_key_algorithm(row.get("key_algorithm")?)?,
        key_storage: parse_key_storage(row.get("key_storage")?)?,
        policy: row.json::<StoredPolicy>("policy")?.into(),
        labels: row.json::<BTreeMap<String, String>>("labels")?,
        created_at: row.time("created_at")?,
        updated_at: row.time("updated_at")?,
        version: row.get("version")?,
    })
}

pub(super) fn authority_from_row(row: &impl Columns) -> StoreResult<AuthorityRecord> {
    Ok(AuthorityRecord {
        id: row.uuid("id")?,
        cluster_id: row.uuid("cluster_id")?,
        kind: parse_kind(row.get("kind")?)?,
        generation: row.get("generation")?,
        state: parse_state(row.get("state")?)?,
        subject: row.get("subject")?,
        certificate_der: row.get("certificate_der")?,
        fingerprint: row.get("fingerprint")?,
        key_algorithm: parse_key_algorithm(row.get("key_algorithm")?)?,
        key_storage: parse_key_storage(row.get("key_storage")?)?,
        key_reference: row.get("key_reference")?,
        sealed_key: row.get("sealed_key")?,
        key_version: row.get("key_version")?,
        previous_seal: previous_seal(row)?,
        not_before: row.time("not_before")?,
        not_after: row.time("not_after")?,
        created_at: row.time("created_at")?,
        chain_pem: row.get("chain_pem")?,
    })
}

pub(super) fn pending_authority_from_row(row: &impl Columns) -> StoreResult<PendingAuthorityRecord> {
    Ok(PendingAuthorityRecord {
        id: row.uuid("id")?,
        cluster_id: row.uuid("cluster_id")?,
        kind: parse_kind(row.get("kind")?)?,
        key_algorithm: parse_key_algorithm(row.get("key_algorithm")?)?,
        sealed_key: row.get("sealed_key")?,
        key_version: row.get("key_version")?,
        csr_der: row.get("csr_der")?,
        created_at: row.time("created_at")?,
        previous_seal: previous_seal(row)?,
    })
}

pub(super) fn service_account_key_from_row(row: &impl Columns) -> StoreResult<ServiceAccountKeyRecord> {
    Ok(ServiceAccountKeyRecord {
        id: row.uuid("id")?,
        cluster_id: row.uuid("cluster_id")?,
        key_id: row.get("key_id")?,
        state: parse_state(row.get("state")?)?,
        key_algorithm: parse_key_algorithm(row.get("key_algorithm")?)?,
        sealed_key: row.get("sealed_key")?,
        key_version: row.get("key_version")?,
        public_pem: row.get("public_pem")?,
        created_at: row.time("created_at")?,
        previous_seal: previous_seal(row)?,
    })
}

/// A certificate with its position (`seq`) for keyset paging.
pub(super) fn certificate_from_row(row: &impl Columns) -> StoreResult<(i64, CertificateRecord)> {
    let reason: Option<String> = row.get("revocation_reason")?;
    Ok((
        row.get("seq")?,
        CertificateRecord {
            serial: row.get("serial")?,
            cluster_id: row.uuid("cluster_id")?,
            authority_id: row.uuid("authority_id")?,
            kind: parse_kind(row.get("kind")?)?,
            generation: row.get("generation")?,
            profile: row.get("profile")?,
            common_name: row.get("common_name")?,
            groups: row.json("groups")?,
            dns_names: row.json("dns_names")?,
            ip_addresses: row.json("ip_addresses")?,
            not_before: row.time("not_before")?,
            not_after: row.time("not_after")?,
            fingerprint: row.get("fingerprint")?,
            certificate_der: row.get("certificate_der")?,
            issued_by: row.get("issued_by")?,
            created_at: row.time("created_at")?,
            revoked_at: row.opt_time("revoked_at")?,
            revocation_reason: reason.as_deref().map(parse_reason).transpose()?,
        },
    ))
}

pub(super) fn crl_from_row(row: &impl Columns) -> StoreResult<CrlRecord> {
    Ok(CrlRecord {
        authority_id: row.uuid("authority_id")?,
        number: row.get("crl_number")?,
        this_update: row.time("this_update")?,
        next_update: row.time("next_update")?,
        entries: row.get("entries")?,
        der: row.get("der")?,
    })
}

pub(super) fn audit_from_row(row: &impl Columns) -> StoreResult<AuditRecord> {
    Ok(AuditRecord {
        id: row.get("id")?,
        entry: AuditEntry {
            at: row.time("at")?,
            actor: row.get("actor")?,
            action: row.get("action")?,
            object_type: row.get("object_type")?,
            object_id: row.get("object_id")?,
            cluster_id: row.opt_uuid("cluster_id")?,
            remote_addr: row.get("remote_addr")?,
            details: row.json("details")?,
        },
    })
}

/// A token with its position (`seq`) for keyset paging.
pub(super) fn token_from_row(row: &impl Columns) -> StoreResult<(i64, TokenRecord)> {
    Ok((
        row.get("seq")?,
        TokenRecord {
            id: row.uuid("id")?,
            subject: row.get("subject")?,
            scopes: parse_scopes(row.json("scopes")?)?,
            clusters: row.json("clusters")?,
            groups: row.get::<Option<Json<Vec<String>>>>("groups")?.map(|g| g.0),
            max_ttl: row.get::<Option<i64>>("max_ttl_seconds")?.map(|t| t as u64),
            key_id: row.get("key_id")?,
            created_by: row.get("created_by")?,
            created_at: row.time("created_at")?,
            expires_at: row.time("expires_at")?,
            last_used_at: row.opt_time("last_used_at")?,
            revoked_at: row.opt_time("revoked_at")?,
        },
    ))
}

pub(super) fn token_key_from_row(row: &impl Columns) -> StoreResult<TokenKeyRecord> {
    Ok(TokenKeyRecord {
        id: row.get("id")?,
        sealed_key: row.get("sealed_key")?,
        key_version: row.get("key_version")?,
        previous_seal: previous_seal(row)?,
        created_at: row.time("created_at")?,
        last_token_expiry: row.opt_time("last_token_expiry")?,
    })
}

/// The seal a rewrap kept, from `previous_sealed_key` and `previous_key_version` columns.
pub(super) fn previous_seal(row: &impl Columns) -> StoreResult<Option<PreviousSeal>> {
    let key_version: Option<i32> = row.get("previous_key_version")?;
    Ok(row
        .get::<Option<Vec<u8>>>("previous_sealed_key")?
        .map(|sealed_key| PreviousSeal { key_version, sealed_key }))
}

/// A revoked serial and its reason, from `serial` and `revocation_reason` columns.
pub(super) fn revoked_serial_from_row(row: &impl Columns) -> StoreResult<(String, RevocationReason)> {
    let reason: Option<String> = row.get("revocation_reason")?;
    Ok((row.get("serial")?, reason.as_deref().map(parse_reason).transpose()?.unwrap_or_default()))
}

/// A CRL entry and its certificate's expiry, from `serial`, `revoked_at`, `revocation_reason`
/// and `not_after` columns.
pub(super) fn revoked_entry_from_row(row: &impl Columns) -> StoreResult<(RevokedEntry, OffsetDateTime)> {
    let (serial, reason) = revoked_serial_from_row(row)?;
    let serial = Serial::parse_hex(&serial).ok_or_else(|| StoreError::Corrupt(format!("serial {serial}")))?;
    let revoked_at = row
        .opt_time("revoked_at")?
        .ok_or_else(|| StoreError::Corrupt("a revoked entry without its time".into()))?;
    Ok((RevokedEntry { serial, revoked_at, reason }, row.time("not_after")?))
}

pub(super) fn insert_audit(entry: &AuditEntry) -> Stmt {
    Stmt::new(
        "INSERT INTO audit_events (at, actor, action, object_type, object_id, cluster_id, remote_addr, details) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(entry.at)
    .bind(entry.actor.as_str())
    .bind(entry.action.as_str())
    .bind(entry.object_type.as_str())
    .bind(entry.object_id.as_str())
    .bind(entry.cluster_id)
    .bind(entry.remote_addr.clone())
    .bind(entry.details.clone())
}

pub(super) fn insert_service_account_key(key: &ServiceAccountKeyRecord) -> Stmt {
    Stmt::new(format!(
        "INSERT INTO service_account_keys ({SERVICE_ACCOUNT_KEY_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    ))
    .bind(key.id)
    .bind(key.cluster_id)
    .bind(key.key_id.as_str())
    .bind(key.state.as_str())
    .bind(key.key_algorithm.as_str())
    .bind(key.sealed_key.as_slice())
    .bind(key.key_version)
    .bind(key.public_pem.as_str())
    .bind(key.created_at)
    .bind(key.previous_seal.as_ref().map(|p| p.sealed_key.clone()))
    .bind(key.previous_seal.as_ref().and_then(|p| p.key_version))
}

pub(super) fn insert_certificate(c: &CertificateRecord) -> Stmt {
    Stmt::new(
        "INSERT INTO certificates (serial, cluster_id, authority_id, kind, generation, profile, common_name, \
         groups, dns_names, ip_addresses, not_before, not_after, fingerprint, certificate_der, issued_by, \
         created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
    )
    .bind(c.serial.as_str())
    .bind(c.cluster_id)
    .bind(c.authority_id)
    .bind(c.kind.as_str())
    .bind(c.generation)
    .bind(c.profile.as_str())
    .bind(c.common_name.as_str())
    .bind(serde_json::json!(c.groups))
    .bind(serde_json::json!(c.dns_names))
    .bind(serde_json::json!(c.ip_addresses))
    .bind(c.not_before)
    .bind(c.not_after)
    .bind(c.fingerprint.as_str())
    .bind(c.certificate_der.as_slice())
    .bind(c.issued_by.as_str())
    .bind(c.created_at)
}

fn parse_kind(text: String) -> StoreResult<AuthorityKind> {
    AuthorityKind::parse(&text).ok_or_else(|| StoreError::Corrupt(format!("authority kind {text:?}")))
}

fn parse_state(text: String) -> StoreResult<AuthorityState> {
    AuthorityState::parse(&text).ok_or_else(|| StoreError::Corrupt(format!("authority state {text:?}")))
}

fn parse_key_algorithm(text: String) -> StoreResult<KeyAlgorithm> {
    KeyAlgorithm::parse(&text).ok_or_else(|| StoreError::Corrupt(format!("key algorithm {text:?}")))
}

fn parse_key_storage(text: String) -> StoreResult<KeyStorage> {
    KeyStorage::parse(&text).ok_or_else(|| StoreError::Corrupt(format!("key storage {text:?}")))
}

fn parse_scopes(scopes: Vec<String>) -> StoreResult<Vec<crate::scope::Scope>> {
    scopes
        .iter()
        .map(|s| {
            crate::scope::Scope::parse(s).ok_or_else(|| StoreError::Corrupt(format!("token scope {s:?}")))
        })
        .collect()
}

pub(super) fn scope_names(scopes: &[crate::scope::Scope]) -> Vec<&'static str> {
    scopes.iter().map(|s| s.as_str()).collect()
}

pub(super) fn parse_reason(text: &str) -> StoreResult<RevocationReason> {
    RevocationReason::parse(text).ok_or_else(|| StoreError::Corrupt(format!("revocation reason {text:?}")))
}
