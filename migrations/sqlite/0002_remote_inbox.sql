-- Remote events a network hands over only once (Signal through signal-cli: the daemon
-- acknowledges messages to the Signal server as it receives them). They are stored here on
-- receipt, before the bridge handles them, and replayed after a crash from the login's
-- checkpoint, so nothing is lost between receipt and bridging.
CREATE TABLE remote_inbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    network     TEXT NOT NULL,
    login_id    TEXT NOT NULL,
    payload     TEXT NOT NULL,
    received_at BIGINT NOT NULL
);
CREATE INDEX remote_inbox_login ON remote_inbox (network, login_id, id);
