//! Which rooms are encrypted (with their `m.room.encryption` settings) and who is in them.
//!
//! Encryption state is learned from transactions (`m.room.encryption` events), from rooms the
//! bridge creates, or asked of the homeserver once; it is stored, because a room never stops
//! being encrypted. Members (joined and invited, the ones that get room keys) are cached until
//! a member event for the room arrives or the entry grows old.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use ruma::{OwnedRoomId, OwnedUserId, RoomId, api::client::membership::get_member_events};
use serde_json::Value as JsonValue;

use crate::{db::crypto::RoomEncryptionRow, matrix::event::MatrixEvent};

use super::{Crypto, Result};

/// Members are asked again after this long even without a member event.
const MEMBERS_TTL: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct RoomRegistry {
    /// `None`: known not to be encrypted (asked once per process; events update it).
    encryption: Mutex<HashMap<OwnedRoomId, Option<RoomEncryptionRow>>>,
    members: Mutex<HashMap<OwnedRoomId, (Instant, Vec<OwnedUserId>)>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Reads an `m.room.encryption` content; `None` when it has no algorithm.
pub fn encryption_from_content(content: &JsonValue) -> Option<RoomEncryptionRow> {
    let algorithm = content.get("algorithm")?.as_str()?.to_owned();
    Some(RoomEncryptionRow {
        algorithm,
        rotation_period_ms: content
            .get("rotation_period_ms")
            .and_then(JsonValue::as_i64),
        rotation_period_msgs: content
            .get("rotation_period_msgs")
            .and_then(JsonValue::as_i64),
    })
}

impl Crypto {
    /// The room's encryption settings, `None` for an unencrypted room.
    pub async fn room_encryption(&self, room: &RoomId) -> Result<Option<RoomEncryptionRow>> {
        if let Some(known) = lock(&self.rooms.encryption).get(room) {
            return Ok(known.clone());
        }
        let row = match self.db.crypto_room(room.as_str()).await? {
            Some(row) => Some(row),
            None => {
                let request = ruma::api::client::state::get_state_event_for_key::v3::Request::new(
                    room.to_owned(),
                    ruma::events::StateEventType::RoomEncryption,
                    String::new(),
                );
                match self.client.send(request, None).await {
                    Ok(response) => {
                        let content: JsonValue =
                            serde_json::from_str(response.event_or_content.get())
                                .unwrap_or_default();
                        let row = encryption_from_content(&content);
                        if let Some(row) = &row {
                            self.db.set_crypto_room(room.as_str(), row).await?;
                        }
                        row
                    }
                    Err(crate::matrix::client::MatrixError::Api { status: 404, .. }) => None,
                    Err(err) => return Err(err.into()),
                }
            }
        };
        lock(&self.rooms.encryption).insert(room.to_owned(), row.clone());
        Ok(row)
    }

    /// Records a room as encrypted (a room the bridge created so, or an event said so).
    pub async fn set_room_encryption(&self, room: &RoomId, row: RoomEncryptionRow) -> Result<()> {
        self.db.set_crypto_room(room.as_str(), &row).await?;
        lock(&self.rooms.encryption).insert(room.to_owned(), Some(row));
        Ok(())
    }

    /// Learns from a room event as it arrives: encryption switched on, membership changes.
    pub async fn observe(&self, event: &MatrixEvent) {
        match event.kind.as_str() {
            "m.room.encryption" if event.state_key.as_deref() == Some("") => {
                if let Some(row) = encryption_from_content(&event.content) {
                    match self.set_room_encryption(&event.room_id, row).await {
                        Ok(()) => tracing::info!(room = %event.room_id, "room encryption is on"),
                        Err(err) => {
                            tracing::warn!(%err, room = %event.room_id, "cannot record room encryption");
                        }
                    }
                }
            }
            "m.room.member" => {
                lock(&self.rooms.members).remove(&event.room_id);
            }
            _ => {}
        }
    }

    /// Joined and invited members: who gets the room key.
    pub async fn members(&self, room: &RoomId) -> Result<Vec<OwnedUserId>> {
        if let Some((at, members)) = lock(&self.rooms.members).get(room)
            && at.elapsed() < MEMBERS_TTL
        {
            return Ok(members.clone());
        }
        let request = get_member_events::v3::Request::new(room.to_owned());
        let response = self.client.send(request, None).await?;
        let mut members = Vec::with_capacity(response.chunk.len());
        for raw in &response.chunk {
            let Ok(event) = raw.deserialize_as_unchecked::<JsonValue>() else {
                continue;
            };
            let membership = event
                .pointer("/content/membership")
                .and_then(JsonValue::as_str);
            if matches!(membership, Some("join" | "invite"))
                && let Some(user) = event
                    .get("state_key")
                    .and_then(JsonValue::as_str)
                    .and_then(|s| OwnedUserId::try_from(s).ok())
            {
                members.push(user);
            }
        }
        lock(&self.rooms.members).insert(room.to_owned(), (Instant::now(), members.clone()));
        Ok(members)
    }
}
