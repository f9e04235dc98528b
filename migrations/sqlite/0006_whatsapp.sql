-- WhatsApp client state (whatsapp-rust's store: the device with its identity and noise keys,
-- Signal sessions, pre-keys, sender keys, app-state sync keys and versions, LID/phone-number
-- mappings, device lists, retry buffers). One row set per WhatsApp login, named by a random
-- store id that the login's secret carries, so many Matrix users can each link a device.
-- Keep in step with migrations/postgres/0006_whatsapp.sql (only the blob type differs).
--
-- kind:  which of the library's maps a row belongs to (device, session, prekey, ...).
-- scope: a second key part where the library has one (app-state collection, group, chat).
-- name:  the key inside that map (a Signal address, a pre-key id, a JID, ...).
-- value: the stored value; rows holding private keys or message plaintext are encrypted with
--        ferry's store key (src/crypto/store/cipher.rs).
-- num, aux: kind-specific numbers the store queries by (pre-key id, expiry, timestamps).
CREATE TABLE whatsapp_store (
    store_id   TEXT NOT NULL,
    kind       TEXT NOT NULL,
    scope      TEXT NOT NULL,
    name       TEXT NOT NULL,
    value      BLOB NOT NULL,
    num        BIGINT NOT NULL,
    aux        BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (store_id, kind, scope, name)
);
CREATE INDEX whatsapp_store_num ON whatsapp_store (store_id, kind, num);
