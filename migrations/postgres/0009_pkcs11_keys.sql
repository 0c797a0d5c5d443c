-- CA keys kept in a PKCS#11 token. A cluster records the storage chosen at its creation (the
-- default of its rotations); each authority records where its own key is: 'sealed' (in
-- sealed_key, under the master key) or 'pkcs11' (in the configured token, under key_reference,
-- its CKA_ID and CKA_LABEL; sealed_key is then empty and no rewrap touches it).
ALTER TABLE clusters ADD COLUMN key_storage TEXT NOT NULL DEFAULT 'sealed'
    CHECK (key_storage IN ('sealed', 'pkcs11'));
ALTER TABLE authorities ADD COLUMN key_storage TEXT NOT NULL DEFAULT 'sealed'
    CHECK (key_storage IN ('sealed', 'pkcs11'));
ALTER TABLE authorities ADD COLUMN key_reference TEXT;
