-- Each change of a cluster row increments its version: the ETag of the cluster, checked by
-- If-Match and by every read-merge-write, so that no change is lost.
ALTER TABLE clusters ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
