-- Key custody. A master-key rewrap seals every key again under the new master key version and
-- keeps the copy sealed under the previous version beside it, so that replicas still running
-- with the previous master key keep opening keys until they restart with the new one; `kca keys
-- drop-previous` removes those copies once every replica has.
ALTER TABLE authorities ADD COLUMN previous_sealed_key BLOB;
ALTER TABLE authorities ADD COLUMN previous_key_version INTEGER;
-- Token signing keys were sealed under "the" master key: NULL is the version they were first
-- sealed under, unknown.
ALTER TABLE token_keys ADD COLUMN key_version INTEGER;
ALTER TABLE token_keys ADD COLUMN previous_sealed_key BLOB;
ALTER TABLE token_keys ADD COLUMN previous_key_version INTEGER;
