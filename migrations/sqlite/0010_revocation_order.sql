-- Revocations are numbered per authority, under the authority's row lock: a CRL publication
-- (which holds the same lock) has seen every revocation numbered up to the counter it reads, so
-- the next one needs to read only those numbered after it. Rows revoked before this migration
-- have no number; the first publication of each process reads the whole set anyway.
ALTER TABLE authorities ADD COLUMN revocations INTEGER NOT NULL DEFAULT 0;
ALTER TABLE certificates ADD COLUMN revocation_seq INTEGER;
CREATE INDEX certificates_revocation_seq ON certificates (authority_id, revocation_seq)
    WHERE revocation_seq IS NOT NULL;
