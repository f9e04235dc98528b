-- WhatsApp disappearing messages: when each bridged message of a chat with a timer must be
-- redacted in Matrix (WhatsApp's apps delete it then). Kept here so the deadline survives a
-- restart of ferry.
CREATE TABLE whatsapp_expiry (
    login_id    TEXT NOT NULL,
    chat_id     TEXT NOT NULL,
    message_id  TEXT NOT NULL,
    deadline_ms BIGINT NOT NULL,
    PRIMARY KEY (login_id, message_id)
);
CREATE INDEX whatsapp_expiry_due ON whatsapp_expiry (login_id, deadline_ms);
