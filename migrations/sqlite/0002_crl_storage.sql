-- Same numbering as migrations/postgres: SQLite has no storage setting to change; this records
-- that migration 2 applies here too.
SELECT 1;
