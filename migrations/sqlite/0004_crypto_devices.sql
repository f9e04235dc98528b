-- Matrix end-to-end encryption, the bridge's side (the crypto store itself is migration 0003).

-- The bridge's own Matrix devices: one per user it acts as (the bot and each ghost), created
-- lazily. The device id is derived from the user id, and kept here so it never changes.
CREATE TABLE bridge_device (
    user_id    TEXT PRIMARY KEY,
    device_id  TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Rooms known to be encrypted, with their m.room.encryption settings. Encryption cannot be
-- turned off in a room, so a row is never removed while the room exists.
CREATE TABLE crypto_room (
    room_id              TEXT PRIMARY KEY,
    algorithm            TEXT NOT NULL,
    rotation_period_ms   BIGINT,
    rotation_period_msgs BIGINT,
    updated_at           BIGINT NOT NULL
);

-- Encrypted events whose room key has not arrived yet: bridged when it does.
CREATE TABLE crypto_waiting_event (
    event_id    TEXT PRIMARY KEY,
    room_id     TEXT NOT NULL,
    session_id  TEXT NOT NULL,
    event       TEXT NOT NULL,
    received_at BIGINT NOT NULL
);
CREATE INDEX crypto_waiting_event_session ON crypto_waiting_event (room_id, session_id);
