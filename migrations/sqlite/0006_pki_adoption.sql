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
    created_at    INTEGER NOT NULL,
    CONSTRAINT pending_authorities_kind_key UNIQUE (cluster_id, kind)
) STRICT;
