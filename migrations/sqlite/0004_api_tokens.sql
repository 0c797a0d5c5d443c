-- Every API token kca mints is registered, so that it can be listed and revoked; a token that is
-- not here is refused. The token itself is never stored.
CREATE TABLE api_tokens (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL CONSTRAINT api_tokens_id_key UNIQUE,
    subject         TEXT NOT NULL,
    scopes          TEXT NOT NULL,
    clusters        TEXT NOT NULL,
    groups          TEXT,
    max_ttl_seconds INTEGER,
    key_id          INTEGER NOT NULL,
    created_by      TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    last_used_at    INTEGER,
    revoked_at      INTEGER
) STRICT;
-- Re-reading revocations, and how long a signing key must keep verifying.
CREATE INDEX api_tokens_revoked ON api_tokens (expires_at) WHERE revoked_at IS NOT NULL;
CREATE INDEX api_tokens_key ON api_tokens (key_id, expires_at);

-- Token signing keys (Ed25519), sealed under the master key; the highest id signs.
CREATE TABLE token_keys (
    id         INTEGER PRIMARY KEY CHECK (id >= 1),
    sealed_key BLOB NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;
