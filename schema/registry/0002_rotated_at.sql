-- `camledger cameras rotate ID` replaces a camera's token hash in place (the old token stops
-- working in the same statement) and records when; a revoked camera rotated comes back into
-- service with the new token.
ALTER TABLE principals ADD COLUMN rotated_at TEXT;
