-- The event ids a transaction carried (a SHA-256 over them), so that a transaction id the
-- homeserver reuses for different events is not mistaken for a retry. Synapse on SQLite takes
-- its next appservice transaction id from the transactions still pending, so after a restart
-- with none pending it counts from 1 again. NULL (rows from before): compare by id only.
ALTER TABLE as_txn ADD COLUMN fingerprint TEXT;
