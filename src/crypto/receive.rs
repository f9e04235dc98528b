//! Decryption of `m.room.encrypted` events with the bot's device (the bot is in every portal,
//! so every sender shares its room keys with it).
//!
//! A missing key is waited for (`key_wait_seconds`), then requested from the sender's devices
//! and waited for again (`key_request_wait_seconds`), as mautrix bridges do (3 s + 22 s). An
//! event still undecryptable is parked in the database and routed again when its key arrives,
//! so it is late but never lost; the caller tells the room meanwhile.

use std::time::Duration;

use matrix_sdk_crypto::{DecryptionSettings, MegolmError, TrustRequirement};
use ruma::{RoomId, events::room::encrypted::OriginalSyncRoomEncryptedEvent, serde::Raw};
use serde_json::{Value as JsonValue, json};
use tokio::sync::broadcast;

use crate::matrix::event::MatrixEvent;

use super::{Crypto, Result, RoomKeyArrived};

/// What became of an encrypted event.
#[derive(Debug)]
pub enum Decryption {
    /// The plaintext event, with the encrypted event's ids and sender.
    Decrypted(Box<MatrixEvent>),
    /// Its key did not arrive in time: it is parked until it does.
    KeyMissing,
    /// It cannot be decrypted at all (malformed, unknown algorithm, withheld key...).
    Failed(String),
}

/// The encrypted event as matrix-sdk-crypto reads it.
fn encrypted_json(event: &MatrixEvent) -> JsonValue {
    json!({
        "type": event.kind,
        "room_id": event.room_id,
        "sender": event.sender,
        "event_id": event.event_id,
        "origin_server_ts": event.origin_server_ts.unwrap_or(0),
        "content": event.content,
    })
}

impl Crypto {
    pub(crate) fn decryption_settings() -> DecryptionSettings {
        DecryptionSettings {
            sender_device_trust_requirement: TrustRequirement::Untrusted,
        }
    }

    /// One decryption attempt: `Ok(None)` when the key is missing.
    async fn try_decrypt(
        &self,
        event: &MatrixEvent,
    ) -> Result<Result<Option<MatrixEvent>, String>> {
        let raw: Raw<OriginalSyncRoomEncryptedEvent> = match Raw::new(&encrypted_json(event)) {
            Ok(raw) => raw.cast_unchecked(),
            Err(err) => return Ok(Err(err.to_string())),
        };
        // The bot's device first; then the loaded devices of ghosts in the room, which get the
        // same room keys (needed where the bot cannot receive them itself: Synapse refuses
        // `/sync` to the appservice's own user, so with the `/sync` fallback only ghosts sync).
        let mut machines = vec![self.machine(&self.bot.clone()).await?];
        let mut withheld = None;
        let mut candidates = Vec::new();
        let decrypted = loop {
            let Some(machine) = machines.pop() else {
                return Ok(match withheld {
                    Some(code) => Err(format!("the sender withheld the key ({code})")),
                    None => Ok(None),
                });
            };
            match machine
                .olm
                .decrypt_room_event(
                    raw.cast_ref_unchecked(),
                    &event.room_id,
                    &Self::decryption_settings(),
                )
                .await
            {
                Ok(decrypted) => break decrypted,
                Err(MegolmError::MissingRoomKey(code)) => {
                    withheld = withheld.or(code);
                    if machine.user == self.bot && candidates.is_empty() {
                        let members = self.members(&event.room_id).await.unwrap_or_default();
                        candidates = self
                            .machines
                            .loaded()
                            .into_iter()
                            .filter(|m| m.user != self.bot && members.contains(&m.user))
                            .collect();
                        machines.extend(candidates.iter().cloned());
                    }
                }
                Err(MegolmError::Store(err)) => return Err(err.into()),
                Err(err) => return Ok(Err(err.to_string())),
            }
        };
        let plain: JsonValue = match decrypted.event.deserialize_as_unchecked() {
            Ok(plain) => plain,
            Err(err) => return Ok(Err(err.to_string())),
        };
        let Some(kind) = plain.get("type").and_then(JsonValue::as_str) else {
            return Ok(Err("decrypted event has no type".to_owned()));
        };
        let mut content = plain.get("content").cloned().unwrap_or_else(|| json!({}));
        // Relations travel outside the ciphertext; put them back in.
        if let (Some(relation), Some(object)) =
            (event.content.get("m.relates_to"), content.as_object_mut())
            && !object.contains_key("m.relates_to")
        {
            object.insert("m.relates_to".to_owned(), relation.clone());
        }
        let mut out = event.clone();
        out.kind = kind.to_owned();
        out.content = content;
        Ok(Ok(Some(out)))
    }

    /// Decrypts an event, waiting for (and asking for) a missing key as configured.
    pub async fn decrypt(&self, event: &MatrixEvent) -> Result<Decryption> {
        let mut keys = self.room_keys.subscribe();
        let session_id = event
            .content
            .get("session_id")
            .and_then(JsonValue::as_str)
            .unwrap_or_default()
            .to_owned();
        match self.try_decrypt(event).await? {
            Ok(Some(plain)) => return Ok(Decryption::Decrypted(Box::new(plain))),
            Ok(None) => {}
            Err(reason) => return Ok(Decryption::Failed(reason)),
        }
        tracing::debug!(event = %event.event_id, "room key missing; waiting for it");
        let first = Duration::from_secs(self.config.key_wait_seconds);
        if !wait_for_key(&mut keys, &event.room_id, &session_id, first).await {
            self.request_key(event).await;
            let second = Duration::from_secs(self.config.key_request_wait_seconds);
            wait_for_key(&mut keys, &event.room_id, &session_id, second).await;
        }
        match self.try_decrypt(event).await? {
            Ok(Some(plain)) => return Ok(Decryption::Decrypted(Box::new(plain))),
            Ok(None) => {}
            Err(reason) => return Ok(Decryption::Failed(reason)),
        }
        self.db
            .add_waiting_event(
                event.event_id.as_str(),
                event.room_id.as_str(),
                &session_id,
                &encrypted_json(event).to_string(),
            )
            .await?;
        // The key may have arrived between the last attempt and parking.
        if matches!(self.try_decrypt(event).await?, Ok(Some(_))) {
            self.release_waiting(&event.room_id, &session_id).await;
        }
        Ok(Decryption::KeyMissing)
    }

    /// Asks the sender's devices (and our own) for the key of an event.
    async fn request_key(&self, event: &MatrixEvent) {
        let result: Result<()> = async {
            let machine = self.machine(&self.bot.clone()).await?;
            let raw: Raw<JsonValue> = Raw::new(&encrypted_json(event))
                .map_err(|e| super::CryptoError::Invalid(e.to_string()))?;
            let (cancel, request) = machine
                .olm
                .request_room_key(raw.cast_ref_unchecked(), &event.room_id)
                .await?;
            if let Some(cancel) = cancel {
                self.send_request(&machine, cancel.request_id(), cancel.request())
                    .await?;
            }
            self.send_request(&machine, request.request_id(), request.request())
                .await
        }
        .await;
        if let Err(err) = result {
            tracing::warn!(%err, event = %event.event_id, "cannot request a missing room key");
        }
    }

    /// Routes again the parked events of a session whose key arrived.
    async fn release_waiting(&self, room: &RoomId, session_id: &str) {
        match self
            .db
            .release_waiting_events(room.as_str(), session_id)
            .await
        {
            Ok(entries) if !entries.is_empty() => {
                tracing::info!(count = entries.len(), %room, "room key arrived late; bridging the waiting events");
                if self.late.send(entries).await.is_err() {
                    tracing::warn!(
                        "nobody routes late events; they are replayed from the inbox at the next start"
                    );
                }
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(%err, "cannot read events waiting for a key"),
        }
    }

    /// Forever: releases parked events as their keys arrive.
    pub(crate) async fn bridge_late_events(&self) {
        let mut keys = self.room_keys.subscribe();
        loop {
            match keys.recv().await {
                Ok(key) => self.release_waiting(&key.room_id, &key.session_id).await,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

/// Waits until the key of (`room`, `session_id`) arrives or `timeout` passes.
async fn wait_for_key(
    keys: &mut broadcast::Receiver<RoomKeyArrived>,
    room: &RoomId,
    session_id: &str,
    timeout: Duration,
) -> bool {
    let wait = async {
        loop {
            match keys.recv().await {
                Ok(key) if key.room_id == room && key.session_id == session_id => return true,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return false,
            }
        }
    };
    tokio::time::timeout(timeout, wait).await.unwrap_or(false)
}
