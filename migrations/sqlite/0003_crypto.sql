-- The Matrix end-to-end encryption store (matrix-sdk-crypto's CryptoStore, src/crypto/store).
-- Keep in step with migrations/postgres/0003_crypto.sql: the same tables and columns, only the
-- dialect differs (BLOB / BYTEA, identity columns).
--
-- Many OlmMachines share these tables: the bot's device and one device per ghost. Every row
-- belongs to one of them, named by (own_user, own_device); all primary keys start with that
-- pair, so each machine reads only its own rows through the primary-key index.
--
-- Columns named `data` or `pickle` hold values encrypted with the store cipher (XChaCha20-
-- Poly1305 under a random key that is itself encrypted with the configured passphrase, see
-- crypto_store_cipher). Identifiers (room, user, device, session ids, Curve25519 keys) stay in
-- plain text: ferry's other tables hold the same ids anyway, and queries filter on them.

-- The store cipher, encrypted with the pickle passphrase (one row, name 'store_cipher').
CREATE TABLE crypto_store_cipher (
    name       TEXT PRIMARY KEY,
    value      BLOB NOT NULL,
    created_at BIGINT NOT NULL
);

-- Per-machine singletons: the Olm account, the private cross-signing identity, backup keys,
-- the dehydrated device pickle key, the next-batch token.
CREATE TABLE crypto_kv (
    own_user   TEXT NOT NULL,
    own_device TEXT NOT NULL,
    key        TEXT NOT NULL,
    data       BLOB NOT NULL,
    PRIMARY KEY (own_user, own_device, key)
);

-- Olm (1:1) sessions, looked up by the peer's Curve25519 key.
CREATE TABLE crypto_olm_session (
    own_user   TEXT NOT NULL,
    own_device TEXT NOT NULL,
    session_id TEXT NOT NULL,
    sender_key TEXT NOT NULL,
    pickle     BLOB NOT NULL,
    PRIMARY KEY (own_user, own_device, session_id)
);
CREATE INDEX crypto_olm_session_sender ON crypto_olm_session (own_user, own_device, sender_key);

-- Megolm sessions we can decrypt with. backed_up_to: the key backup version the session is
-- stored in, NULL when not backed up.
CREATE TABLE crypto_inbound_group_session (
    own_user         TEXT NOT NULL,
    own_device       TEXT NOT NULL,
    room_id          TEXT NOT NULL,
    session_id       TEXT NOT NULL,
    sender_key       TEXT NOT NULL,
    sender_data_type BIGINT NOT NULL,
    backed_up_to     TEXT,
    pickle           BLOB NOT NULL,
    PRIMARY KEY (own_user, own_device, room_id, session_id)
);
CREATE INDEX crypto_inbound_group_session_sender
    ON crypto_inbound_group_session (own_user, own_device, sender_key, sender_data_type, session_id);

-- The Megolm session we encrypt with, one per room.
CREATE TABLE crypto_outbound_group_session (
    own_user   TEXT NOT NULL,
    own_device TEXT NOT NULL,
    room_id    TEXT NOT NULL,
    pickle     BLOB NOT NULL,
    PRIMARY KEY (own_user, own_device, room_id)
);

-- Other users' devices (and our own) as this machine knows them.
CREATE TABLE crypto_device (
    own_user   TEXT NOT NULL,
    own_device TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    data       BLOB NOT NULL,
    PRIMARY KEY (own_user, own_device, user_id, device_id)
);

-- Users' cross-signing identities as this machine knows them.
CREATE TABLE crypto_identity (
    own_user   TEXT NOT NULL,
    own_device TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    data       BLOB NOT NULL,
    PRIMARY KEY (own_user, own_device, user_id)
);

-- Hashes of Olm messages already decrypted (replay protection across restarts).
CREATE TABLE crypto_olm_hash (
    own_user   TEXT NOT NULL,
    own_device TEXT NOT NULL,
    sender_key TEXT NOT NULL,
    hash       TEXT NOT NULL,
    PRIMARY KEY (own_user, own_device, sender_key, hash)
);

-- Users whose device lists this machine follows; dirty = 1 when a /keys/query is due.
CREATE TABLE crypto_tracked_user (
    own_user   TEXT NOT NULL,
    own_device TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    dirty      BIGINT NOT NULL,
    PRIMARY KEY (own_user, own_device, user_id)
);

-- Outgoing room key and secret requests (gossiping).
CREATE TABLE crypto_key_request (
    own_user   TEXT NOT NULL,
    own_device TEXT NOT NULL,
    request_id TEXT NOT NULL,
    sent_out   BIGINT NOT NULL,
    data       BLOB NOT NULL,
    PRIMARY KEY (own_user, own_device, request_id)
);

-- m.room_key.withheld entries received from session owners.
CREATE TABLE crypto_withheld (
    own_user   TEXT NOT NULL,
    own_device TEXT NOT NULL,
    room_id    TEXT NOT NULL,
    session_id TEXT NOT NULL,
    data       BLOB NOT NULL,
    PRIMARY KEY (own_user, own_device, room_id, session_id)
);

-- Per-room encryption settings (algorithm, rotation, trusted devices only).
CREATE TABLE crypto_room_settings (
    own_user   TEXT NOT NULL,
    own_device TEXT NOT NULL,
    room_id    TEXT NOT NULL,
    data       BLOB NOT NULL,
    PRIMARY KEY (own_user, own_device, room_id)
);

-- Secrets received by m.secret.send and not yet consumed; several per name are kept.
CREATE TABLE crypto_secret_inbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    own_user    TEXT NOT NULL,
    own_device  TEXT NOT NULL,
    secret_name TEXT NOT NULL,
    data        BLOB NOT NULL
);
CREATE INDEX crypto_secret_inbox_name ON crypto_secret_inbox (own_user, own_device, secret_name);

-- MSC4268 room key bundles received, one per (room, sender).
CREATE TABLE crypto_room_key_bundle (
    own_user    TEXT NOT NULL,
    own_device  TEXT NOT NULL,
    room_id     TEXT NOT NULL,
    sender_user TEXT NOT NULL,
    data        BLOB NOT NULL,
    PRIMARY KEY (own_user, own_device, room_id, sender_user)
);

-- Rooms whose keys were all downloaded from the backup before building a key bundle.
CREATE TABLE crypto_room_backup_downloaded (
    own_user   TEXT NOT NULL,
    own_device TEXT NOT NULL,
    room_id    TEXT NOT NULL,
    PRIMARY KEY (own_user, own_device, room_id)
);

-- Rooms joined after an invite, where a key bundle from the inviter is awaited.
CREATE TABLE crypto_room_pending_key_bundle (
    own_user   TEXT NOT NULL,
    own_device TEXT NOT NULL,
    room_id    TEXT NOT NULL,
    data       BLOB NOT NULL,
    PRIMARY KEY (own_user, own_device, room_id)
);

-- Arbitrary values matrix-sdk-crypto keeps (set_custom_value).
CREATE TABLE crypto_custom_value (
    own_user   TEXT NOT NULL,
    own_device TEXT NOT NULL,
    key        TEXT NOT NULL,
    data       BLOB NOT NULL,
    PRIMARY KEY (own_user, own_device, key)
);

-- Leased cross-process locks (try_take_leased_lock): expiration in ms since the epoch.
CREATE TABLE crypto_lease_lock (
    own_user   TEXT NOT NULL,
    own_device TEXT NOT NULL,
    key        TEXT NOT NULL,
    holder     TEXT NOT NULL,
    expiration BIGINT NOT NULL,
    generation BIGINT NOT NULL DEFAULT 1,
    PRIMARY KEY (own_user, own_device, key)
);
