-- Signal disappearing messages: when each bridged message of a chat with a timer must be
-- removed from Matrix. Kept here so the deadline survives a restart of ferry.
CREATE TABLE signal_expiry (
    login_id    TEXT NOT NULL,
    chat_id     TEXT NOT NULL,
    message_id  TEXT NOT NULL,
    deadline_ms BIGINT NOT NULL,
    PRIMARY KEY (login_id, message_id)
);
CREATE INDEX signal_expiry_due ON signal_expiry (login_id, deadline_ms);
