-- kca schema, SQLite. Same numbering as migrations/postgres. Migrations are append-only.
-- Times are INTEGER microseconds since the Unix epoch (UTC); UUIDs are TEXT; lists are JSON TEXT.

CREATE TABLE settings (
    key        TEXT PRIMARY KEY,
    value      BLOB NOT NULL,
    created_at INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000000 AS INTEGER))
) STRICT;

CREATE TABLE clusters (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL CONSTRAINT clusters_name_key UNIQUE,
    server        TEXT NOT NULL,
    key_algorithm TEXT NOT NULL,
    policy        TEXT NOT NULL,
    labels        TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
) STRICT;

CREATE TABLE authorities (
    id              TEXT PRIMARY KEY,
    cluster_id      TEXT NOT NULL REFERENCES clusters (id) ON DELETE CASCADE,
    kind            TEXT NOT NULL,
    generation      INTEGER NOT NULL CHECK (generation >= 1),
    state           TEXT NOT NULL CHECK (state IN ('active', 'retiring', 'retired')),
    subject         TEXT NOT NULL,
    certificate_der BLOB NOT NULL,
    fingerprint     TEXT NOT NULL,
    key_algorithm   TEXT NOT NULL,
    sealed_key      BLOB NOT NULL,
    key_version     INTEGER NOT NULL,
    not_before      INTEGER NOT NULL,
    not_after       INTEGER NOT NULL,
    crl_number      INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    CONSTRAINT authorities_generation_key UNIQUE (cluster_id, kind, generation)
) STRICT;

CREATE TABLE crls (
    authority_id TEXT PRIMARY KEY REFERENCES authorities (id) ON DELETE CASCADE,
    crl_number   INTEGER NOT NULL,
    this_update  INTEGER NOT NULL,
    next_update  INTEGER NOT NULL,
    entries      INTEGER NOT NULL,
    der          BLOB NOT NULL
) STRICT;

CREATE TABLE certificates (
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,
    serial            TEXT NOT NULL CONSTRAINT certificates_serial_key UNIQUE,
    cluster_id        TEXT NOT NULL REFERENCES clusters (id) ON DELETE CASCADE,
    authority_id      TEXT NOT NULL REFERENCES authorities (id) ON DELETE CASCADE,
    kind              TEXT NOT NULL,
    generation        INTEGER NOT NULL,
    profile           TEXT NOT NULL,
    common_name       TEXT NOT NULL,
    groups            TEXT NOT NULL,
    dns_names         TEXT NOT NULL,
    ip_addresses      TEXT NOT NULL,
    not_before        INTEGER NOT NULL,
    not_after         INTEGER NOT NULL,
    fingerprint       TEXT NOT NULL,
    certificate_der   BLOB NOT NULL,
    issued_by         TEXT NOT NULL,
    created_at        INTEGER NOT NULL,
    revoked_at        INTEGER,
    revocation_reason TEXT
) STRICT;

CREATE INDEX certificates_cluster_seq ON certificates (cluster_id, seq DESC);
CREATE INDEX certificates_cluster_cn_seq ON certificates (cluster_id, common_name, seq DESC);
CREATE INDEX certificates_revoked ON certificates (authority_id, not_after) WHERE revoked_at IS NOT NULL;
CREATE INDEX certificates_live ON certificates (authority_id, not_after) WHERE revoked_at IS NULL;

CREATE TABLE audit_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    object_type TEXT NOT NULL,
    object_id   TEXT NOT NULL,
    cluster_id  TEXT,
    remote_addr TEXT,
    details     TEXT NOT NULL
) STRICT;

CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
