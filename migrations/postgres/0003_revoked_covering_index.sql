-- Building a CRL reads every revoked certificate of one authority: an index that holds the
-- columns it needs answers it without touching the table.
CREATE INDEX certificates_revoked_covering ON certificates (authority_id, not_after)
    INCLUDE (serial, revoked_at, revocation_reason) WHERE revoked_at IS NOT NULL;
DROP INDEX certificates_revoked;
