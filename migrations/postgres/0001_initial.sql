-- kca schema, Postgres. Migrations are append-only: never edit one that has shipped.

-- Named values kca keeps for itself: the sealed token signing key, the master key check.
CREATE TABLE settings (
    key        TEXT PRIMARY KEY,
    value      BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE clusters (
    id            UUID PRIMARY KEY,
    name          TEXT NOT NULL CONSTRAINT clusters_name_key UNIQUE,
    server        TEXT NOT NULL,
    key_algorithm TEXT NOT NULL,
    policy        JSONB NOT NULL,
    labels        JSONB NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL
);

-- One row per CA generation. crl_number is the last CRL Number allocated: incremented under the
-- row lock, so it strictly increases across every replica sharing this database.
CREATE TABLE authorities (
    id              UUID PRIMARY KEY,
    cluster_id      UUID NOT NULL REFERENCES clusters (id) ON DELETE CASCADE,
    kind            TEXT NOT NULL,
    generation      INTEGER NOT NULL CHECK (generation >= 1),
    state           TEXT NOT NULL CHECK (state IN ('active', 'retiring', 'retired')),
    subject         TEXT NOT NULL,
    certificate_der BYTEA NOT NULL,
    fingerprint     TEXT NOT NULL,
    key_algorithm   TEXT NOT NULL,
    -- AES-256-GCM(master key version key_version, aad = authority id): nonce || ciphertext || tag
    sealed_key      BYTEA NOT NULL,
    key_version     INTEGER NOT NULL,
    not_before      TIMESTAMPTZ NOT NULL,
    not_after       TIMESTAMPTZ NOT NULL,
    crl_number      BIGINT NOT NULL DEFAULT 0,
    created_at      TIMESTAMPTZ NOT NULL,
    CONSTRAINT authorities_generation_key UNIQUE (cluster_id, kind, generation)
);

-- The current CRL of each authority; replaced only by a higher number.
CREATE TABLE crls (
    authority_id UUID PRIMARY KEY REFERENCES authorities (id) ON DELETE CASCADE,
    crl_number   BIGINT NOT NULL,
    this_update  TIMESTAMPTZ NOT NULL,
    next_update  TIMESTAMPTZ NOT NULL,
    entries      BIGINT NOT NULL,
    der          BYTEA NOT NULL
);

CREATE TABLE certificates (
    serial            TEXT PRIMARY KEY,
    seq               BIGINT GENERATED ALWAYS AS IDENTITY CONSTRAINT certificates_seq_key UNIQUE,
    cluster_id        UUID NOT NULL REFERENCES clusters (id) ON DELETE CASCADE,
    authority_id      UUID NOT NULL REFERENCES authorities (id) ON DELETE CASCADE,
    kind              TEXT NOT NULL,
    generation        INTEGER NOT NULL,
    profile           TEXT NOT NULL,
    common_name       TEXT NOT NULL,
    groups            JSONB NOT NULL,
    dns_names         JSONB NOT NULL,
    ip_addresses      JSONB NOT NULL,
    not_before        TIMESTAMPTZ NOT NULL,
    not_after         TIMESTAMPTZ NOT NULL,
    fingerprint       TEXT NOT NULL,
    certificate_der   BYTEA NOT NULL,
    issued_by         TEXT NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL,
    revoked_at        TIMESTAMPTZ,
    revocation_reason TEXT
);

-- Listing a cluster's certificates, newest first, optionally for one user.
CREATE INDEX certificates_cluster_seq ON certificates (cluster_id, seq DESC);
CREATE INDEX certificates_cluster_cn_seq ON certificates (cluster_id, common_name, seq DESC);
-- Building a CRL: the revoked certificates of one authority.
CREATE INDEX certificates_revoked ON certificates (authority_id, not_after) WHERE revoked_at IS NOT NULL;
-- Retiring a generation: its live certificates.
CREATE INDEX certificates_live ON certificates (authority_id, not_after) WHERE revoked_at IS NULL;

CREATE TABLE audit_events (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          TIMESTAMPTZ NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    object_type TEXT NOT NULL,
    object_id   TEXT NOT NULL,
    cluster_id  UUID,
    remote_addr TEXT,
    details     JSONB NOT NULL
);

-- The audit trail is append-only.
CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only';
END;
$$;
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
