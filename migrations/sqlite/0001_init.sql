-- ferry schema v1 (SQLite). Keep in step with migrations/postgres/0001_init.sql: the same
-- tables and columns, only the dialect differs (identity columns, blobs).

CREATE TABLE kv_store (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Matrix users who have talked to the bot.
CREATE TABLE matrix_user (
    mxid            TEXT PRIMARY KEY,
    management_room TEXT,
    created_at      BIGINT NOT NULL
);

-- A Matrix user's login to a remote network. `secret` holds network tokens: never logged.
CREATE TABLE remote_login (
    network     TEXT NOT NULL,
    login_id    TEXT NOT NULL,
    user_mxid   TEXT NOT NULL REFERENCES matrix_user (mxid) ON DELETE CASCADE,
    remote_name TEXT NOT NULL,
    secret      TEXT NOT NULL,
    checkpoint  BIGINT,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (network, login_id)
);
CREATE INDEX remote_login_user ON remote_login (user_mxid);

-- A remote chat mirrored as a Matrix room. receiver is '' for chats shared by all logins.
CREATE TABLE portal (
    network     TEXT NOT NULL,
    chat_id     TEXT NOT NULL,
    receiver    TEXT NOT NULL,
    room_id     TEXT UNIQUE,
    kind        TEXT NOT NULL,
    name        TEXT,
    topic       TEXT,
    avatar_mxc  TEXT,
    relay_login TEXT,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (network, chat_id, receiver)
);

-- A remote user's puppet on Matrix.
CREATE TABLE ghost (
    network    TEXT NOT NULL,
    remote_id  TEXT NOT NULL,
    mxid       TEXT NOT NULL UNIQUE,
    name       TEXT,
    avatar_mxc TEXT,
    -- The network's id of the avatar image now uploaded as avatar_mxc (changes with the image).
    avatar_id  TEXT,
    registered BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (network, remote_id)
);

-- Remote message <-> Matrix event. A remote message may become several Matrix events (parts).
CREATE TABLE message (
    network       TEXT NOT NULL,
    chat_id       TEXT NOT NULL,
    receiver      TEXT NOT NULL,
    remote_id     TEXT NOT NULL,
    part_id       TEXT NOT NULL DEFAULT '',
    event_id      TEXT NOT NULL UNIQUE,
    room_id       TEXT NOT NULL,
    sender_remote TEXT NOT NULL,
    sender_mxid   TEXT NOT NULL,
    ts            BIGINT NOT NULL,
    edit_count    BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (network, chat_id, receiver, remote_id, part_id),
    FOREIGN KEY (network, chat_id, receiver) REFERENCES portal (network, chat_id, receiver) ON DELETE CASCADE
);

CREATE TABLE reaction (
    network         TEXT NOT NULL,
    chat_id         TEXT NOT NULL,
    receiver        TEXT NOT NULL,
    message_id      TEXT NOT NULL,
    part_id         TEXT NOT NULL DEFAULT '',
    sender_remote   TEXT NOT NULL,
    emoji           TEXT NOT NULL,
    event_id        TEXT NOT NULL UNIQUE,
    ts              BIGINT NOT NULL,
    PRIMARY KEY (network, chat_id, receiver, message_id, part_id, sender_remote, emoji),
    FOREIGN KEY (network, chat_id, receiver) REFERENCES portal (network, chat_id, receiver) ON DELETE CASCADE
);

-- Appservice transactions seen (dedupe) and their events until handled (the inbox).
CREATE TABLE as_txn (
    txn_id      TEXT PRIMARY KEY,
    received_at BIGINT NOT NULL
);

CREATE TABLE inbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    txn_id     TEXT NOT NULL,
    event      TEXT NOT NULL,
    received_at BIGINT NOT NULL
);
