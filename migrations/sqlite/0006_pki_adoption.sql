-- An authority that is an intermediate under the organisation's root keeps its issuers (PEM,
-- nearest first) to serve them in its bundles; empty for kca's own roots and imported CAs.
ALTER TABLE authorities ADD COLUMN chain_pem TEXT NOT NULL DEFAULT '';

-- A key made for an intermediate whose certificate the organisation has yet to sign: one per
-- cluster and kind (a new request replaces it). Its id becomes the authority's id once the
-- certificate is installed, so the key is sealed once, bound to that id.
CREATE TABLE pending_authorities (
    id            TEXT PRIMARY KEY,
    cluster_id    TEXT NOT NULL REFERENCES clusters (id) ON DELETE CASCADE,
    kind          TEXT NOT NULL,
    key_algorithm TEXT NOT NULL,
    sealed_key    BLOB NOT NULL,
    key_version   INTEGER NOT NULL,
    csr_der       BLOB NOT NULL,
    -- The copy a master-key rewrap keeps under the previous master key (see 0008).
    previous_sealed_key  BLOB,
    previous_key_version INTEGER,
    created_at    INTEGER NOT NULL,
    CONSTRAINT pending_authorities_kind_key UNIQUE (cluster_id, kind)
) STRICT;

-- The service-account token signing keys of a cluster (kube-apiserver's sa.key), sealed like CA
-- keys (bound to their id). The active one signs; active and retiring ones verify (keys.pem);
-- retired ones are kept for the record only.
CREATE TABLE service_account_keys (
    id            TEXT PRIMARY KEY,
    cluster_id    TEXT NOT NULL REFERENCES clusters (id) ON DELETE CASCADE,
    key_id        TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('active', 'retiring', 'retired')),
    key_algorithm TEXT NOT NULL,
    sealed_key    BLOB NOT NULL,
    key_version   INTEGER NOT NULL,
    public_pem    TEXT NOT NULL,
    previous_sealed_key  BLOB,
    previous_key_version INTEGER,
    created_at    INTEGER NOT NULL,
    CONSTRAINT service_account_keys_key_id_key UNIQUE (cluster_id, key_id)
) STRICT;
