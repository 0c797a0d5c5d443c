-- Every API token kca mints is registered, so that it can be listed and revoked; a token that is
-- not here is refused. The token itself is never stored.
CREATE TABLE api_tokens (
    seq             BIGINT GENERATED ALWAYS AS IDENTITY CONSTRAINT api_tokens_seq_key UNIQUE,
    id              UUID PRIMARY KEY,
    subject         TEXT NOT NULL,
    scopes          JSONB NOT NULL,
    clusters        JSONB NOT NULL,
    groups          JSONB,
    max_ttl_seconds BIGINT,
    key_id          INTEGER NOT NULL,
    created_by      TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    expires_at      TIMESTAMPTZ NOT NULL,
    last_used_at    TIMESTAMPTZ,
    revoked_at      TIMESTAMPTZ
);
-- Re-reading revocations, and how long a signing key must keep verifying.
CREATE INDEX api_tokens_revoked ON api_tokens (expires_at) WHERE revoked_at IS NOT NULL;
CREATE INDEX api_tokens_key ON api_tokens (key_id, expires_at);

-- Token signing keys (Ed25519), sealed under the master key; the highest id signs.
CREATE TABLE token_keys (
    id         INTEGER PRIMARY KEY CHECK (id >= 1),
    sealed_key BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
