-- A CRL is signed data full of random serials: compressing it costs CPU on every publication and
-- saves nothing. Store it out of line, uncompressed.
ALTER TABLE crls ALTER COLUMN der SET STORAGE EXTERNAL;
