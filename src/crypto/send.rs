//! Megolm encryption of an outgoing event, as the sending user's own device.
//!
//! Per send: track the room's members (joined and invited), fetch their devices, open Olm
//! sessions where missing (`/keys/claim`), share the room key with the devices the trust
//! policy allows (to-device), then encrypt. matrix-sdk-crypto rotates the key per the room's
//! settings and when members or their devices change. One send at a time per device.

use matrix_sdk_crypto::{CollectStrategy, EncryptionSettings};
use ruma::{
    OwnedDeviceId, RoomId, UserId, events::room::history_visibility::HistoryVisibility, serde::Raw,
};
use serde_json::Value as JsonValue;

use crate::config::KeySharingTrust;

use super::{Crypto, CryptoError, Result};

impl Crypto {
    fn strategy(&self) -> CollectStrategy {
        match self.config.trust {
            KeySharingTrust::All => CollectStrategy::AllDevices,
            KeySharingTrust::CrossSigned => CollectStrategy::IdentityBasedStrategy,
            KeySharingTrust::Verified => CollectStrategy::OnlyTrustedDevices,
        }
    }

    /// Encrypts `content` (of `event_type`) for `room` as `user`. Returns the device it was
    /// encrypted with and the `m.room.encrypted` content to send.
    pub async fn encrypt(
        &self,
        room: &RoomId,
        user: &UserId,
        event_type: &str,
        content: &JsonValue,
    ) -> Result<(OwnedDeviceId, JsonValue)> {
        let Some(encryption) = self.room_encryption(room).await? else {
            return Err(CryptoError::Invalid(format!(
                "room {room} is not encrypted"
            )));
        };
        let machine = self.machine(user).await?;
        let _sending = machine.sending.lock().await;
        let members = self.members(room).await?;
        machine
            .olm
            .update_tracked_users(members.iter().map(AsRef::as_ref))
            .await?;
        // Key queries for newly tracked users, uploads, pending to-device messages.
        self.flush(&machine).await?;
        if let Some((request_id, claim)) = machine
            .olm
            .get_missing_sessions(members.iter().map(AsRef::as_ref))
            .await?
        {
            let response = self
                .client
                .send_as_device(claim, Some(&machine.user), Some(&machine.device))
                .await?;
            machine
                .olm
                .mark_request_as_sent(&request_id, &response)
                .await?;
        }
        let mut settings = EncryptionSettings {
            sharing_strategy: self.strategy(),
            history_visibility: HistoryVisibility::Shared,
            ..EncryptionSettings::default()
        };
        if let Some(ms) = encryption
            .rotation_period_ms
            .and_then(|v| u64::try_from(v).ok())
        {
            settings.rotation_period = std::time::Duration::from_millis(ms);
        }
        if let Some(n) = encryption
            .rotation_period_msgs
            .and_then(|v| u64::try_from(v).ok())
        {
            settings.rotation_period_msgs = n;
        }
        let shares = machine
            .olm
            .share_room_key(room, members.iter().map(AsRef::as_ref), settings)
            .await?;
        for request in shares {
            self.send_to_device(&machine, &request).await?;
            let response = ruma::api::client::to_device::send_event_to_device::v3::Response::new();
            machine
                .olm
                .mark_request_as_sent(&request.txn_id, &response)
                .await?;
        }
        let raw: Raw<ruma::events::AnyMessageLikeEventContent> = Raw::new(content)
            .map_err(|e| CryptoError::Invalid(e.to_string()))?
            .cast_unchecked();
        let encrypted = machine
            .olm
            .encrypt_room_event_raw(room, event_type, &raw)
            .await?;
        let content = encrypted
            .content
            .deserialize_as_unchecked::<JsonValue>()
            .map_err(|e| CryptoError::Invalid(e.to_string()))?;
        Ok((machine.device.clone(), content))
    }
}
