//! The parts of an incoming Matrix event that routing needs.
//!
//! Events are stored raw; this shape is parsed when an event is handled. Content stays JSON so
//! each handler reads only the fields it needs (ruma's typed content where it helps).

use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId};
use serde::Deserialize;
use serde_json::Value as JsonValue;

#[derive(Debug, Clone, Deserialize)]
pub struct MatrixEvent {
    #[serde(rename = "type")]
    pub kind: String,
    pub room_id: OwnedRoomId,
    pub sender: OwnedUserId,
    pub event_id: OwnedEventId,
    #[serde(default)]
    pub state_key: Option<String>,
    #[serde(default)]
    pub content: JsonValue,
    #[serde(default)]
    pub origin_server_ts: Option<u64>,
    /// Redactions in room versions before 11 name their target here, not in `content`.
    #[serde(default)]
    pub redacts: Option<OwnedEventId>,
}

impl MatrixEvent {
    pub fn parse(raw: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(raw)
    }

    /// `content.membership` for member events.
    pub fn membership(&self) -> Option<&str> {
        (self.kind == "m.room.member")
            .then(|| self.content.get("membership")?.as_str())
            .flatten()
    }

    pub fn msgtype(&self) -> Option<&str> {
        self.content.get("msgtype")?.as_str()
    }

    pub fn body(&self) -> Option<&str> {
        self.content.get("body")?.as_str()
    }

    /// Edits (`m.replace`) are not new messages.
    pub fn is_edit(&self) -> bool {
        self.content
            .pointer("/m.relates_to/rel_type")
            .and_then(JsonValue::as_str)
            == Some("m.replace")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_message_and_refuses_garbage() {
        let raw = r#"{"type":"m.room.message","room_id":"!r:localhost","sender":"@a:localhost",
            "event_id":"$e","content":{"msgtype":"m.text","body":"hi"},"origin_server_ts":1}"#;
        let event = MatrixEvent::parse(raw).expect("valid event");
        assert_eq!(event.body(), Some("hi"));
        assert_eq!(event.msgtype(), Some("m.text"));
        assert!(!event.is_edit());
        assert!(MatrixEvent::parse(r#"{"type":"m.room.message","room_id":"no-sigil"}"#).is_err());
        assert!(MatrixEvent::parse("[1,2]").is_err());
    }
}
