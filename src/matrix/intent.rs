//! "Act as X": make sure a ghost or the bot exists, has its profile and is in a room, then act.
//!
//! Each ensure-step is remembered (registration in the database by the caller, joins here in
//! memory) so the steady state costs one request per message: the send itself.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use ruma::{
    EventId, OwnedEventId, OwnedMxcUri, OwnedRoomId, OwnedTransactionId, OwnedUserId, RoomId,
    UserId,
    api::client::{
        account::register,
        media::create_content,
        membership::{invite_user, join_room_by_id, kick_user, leave_room},
        message::send_message_event,
        presence::set_presence,
        profile::{set_avatar_url, set_display_name},
        receipt::create_receipt,
        redact::redact_event,
        room::create_room,
        state::get_state_event_for_key,
        state::get_state_events,
        state::send_state_event,
        typing::create_typing_event,
    },
    events::{AnyInitialStateEvent, MessageLikeEventType, StateEventType},
    serde::Raw,
};
use serde_json::{Value as JsonValue, json};

use super::client::{MatrixClient, MatrixError, Result};
use crate::crypto::Crypto;

/// Joins remembered before the cache is reset (bounds memory; a reset only costs re-joins,
/// which the homeserver answers idempotently).
const JOIN_CACHE_MAX: usize = 200_000;

/// What a new portal room looks like.
#[derive(Debug, Clone, Default)]
pub struct RoomSpec {
    /// `m.space` for a space; `None` for an ordinary room.
    pub room_type: Option<String>,
    /// The level needed to send messages (`events_default`); `None`: the preset's (0).
    pub events_default: Option<i64>,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub is_direct: bool,
    pub invite: Vec<OwnedUserId>,
    /// Extra state events (type, state_key, content), e.g. bridge info.
    pub initial_state: Vec<(String, String, JsonValue)>,
    /// Users and power levels beyond the creator's.
    pub power_users: Vec<(OwnedUserId, i64)>,
}

#[derive(Clone)]
pub struct Intents {
    client: MatrixClient,
    bot: OwnedUserId,
    joined: Arc<Mutex<HashSet<(OwnedRoomId, OwnedUserId)>>>,
    /// Set when encryption is allowed: sends into encrypted rooms are encrypted with it.
    crypto: Option<Arc<Crypto>>,
}

/// Event types sent in the clear even in encrypted rooms (the homeserver must read them).
const NEVER_ENCRYPTED: &[&str] = &["m.room.encrypted", "m.room.redaction", "m.reaction.clear"];

impl Intents {
    pub fn new(client: MatrixClient, bot: OwnedUserId) -> Self {
        Self {
            client,
            bot,
            joined: Arc::default(),
            crypto: None,
        }
    }

    /// Encrypts sends into encrypted rooms (and creates new rooms encrypted when so
    /// configured) with `crypto`.
    pub fn with_crypto(mut self, crypto: Arc<Crypto>) -> Self {
        self.crypto = Some(crypto);
        self
    }

    pub fn crypto(&self) -> Option<&Arc<Crypto>> {
        self.crypto.as_ref()
    }

    pub fn client(&self) -> &MatrixClient {
        &self.client
    }

    pub fn bot(&self) -> &UserId {
        &self.bot
    }

    fn as_user<'a>(&self, user: &'a UserId) -> Option<&'a UserId> {
        (user != self.bot).then_some(user)
    }

    /// Registers a user in the appservice's namespace; an existing user is fine.
    pub async fn register(&self, user: &UserId) -> Result<()> {
        let mut request = register::v3::Request::new();
        request.username = Some(user.localpart().to_owned());
        request.login_type = Some(register::LoginType::ApplicationService);
        // MSC4190 servers refuse appservice registration that would create a device.
        request.inhibit_login = true;
        match self.client.send(request, None).await {
            Ok(_) => Ok(()),
            Err(err) if err.errcode() == Some("M_USER_IN_USE") => Ok(()),
            Err(err) => Err(err),
        }
    }

    #[allow(deprecated)] // the profile-field endpoint is v1.16; this one works everywhere
    pub async fn set_displayname(&self, user: &UserId, name: &str) -> Result<()> {
        let request = set_display_name::v3::Request::new(user.to_owned(), Some(name.to_owned()));
        self.client
            .send(request, self.as_user(user))
            .await
            .map(drop)
    }

    #[allow(deprecated)]
    pub async fn set_avatar(&self, user: &UserId, mxc: Option<OwnedMxcUri>) -> Result<()> {
        let request = set_avatar_url::v3::Request::new(user.to_owned(), mxc);
        self.client
            .send(request, self.as_user(user))
            .await
            .map(drop)
    }

    /// Uploads media as the bot, returning its mxc URI.
    pub async fn upload(
        &self,
        data: Vec<u8>,
        content_type: &str,
        filename: Option<String>,
    ) -> Result<OwnedMxcUri> {
        let mut request = create_content::v3::Request::new(data);
        request.content_type = Some(content_type.to_owned());
        request.filename = filename;
        Ok(self.client.send(request, None).await?.content_uri)
    }

    /// Makes sure `user` is joined to `room`, inviting it as the bot first if needed.
    pub async fn ensure_joined(&self, room: &RoomId, user: &UserId) -> Result<()> {
        let key = (room.to_owned(), user.to_owned());
        if self.joined.lock().expect("join cache lock").contains(&key) {
            return Ok(());
        }
        let join = || {
            self.client.send(
                join_room_by_id::v3::Request::new(room.to_owned()),
                self.as_user(user),
            )
        };
        match join().await {
            Ok(_) => {}
            Err(MatrixError::Api { errcode, .. })
                if errcode == "M_FORBIDDEN" && user != self.bot =>
            {
                self.invite(room, user, &self.bot).await?;
                join().await?;
            }
            Err(err) => return Err(err),
        }
        self.remember_joined(room, user);
        Ok(())
    }

    pub fn remember_joined(&self, room: &RoomId, user: &UserId) {
        let mut joined = self.joined.lock().expect("join cache lock");
        if joined.len() >= JOIN_CACHE_MAX {
            joined.clear();
        }
        joined.insert((room.to_owned(), user.to_owned()));
    }

    /// Forgets that `user` is joined to `room` (someone else removed it).
    pub fn forget_joined(&self, room: &RoomId, user: &UserId) {
        self.joined
            .lock()
            .expect("join cache lock")
            .remove(&(room.to_owned(), user.to_owned()));
    }

    /// Invites `user` as `by`. Already being in the room is not an error.
    pub async fn invite(&self, room: &RoomId, user: &UserId, by: &UserId) -> Result<()> {
        let recipient = invite_user::v3::InvitationRecipient::UserId(
            invite_user::v3::InviteUserId::new(user.to_owned()),
        );
        match self
            .client
            .send(
                invite_user::v3::Request::new(room.to_owned(), recipient),
                self.as_user(by),
            )
            .await
        {
            Ok(_) => Ok(()),
            // Synapse answers 403 "is already in the room" for joined users.
            Err(MatrixError::Api {
                errcode, message, ..
            }) if errcode == "M_FORBIDDEN" && message.contains("already in the room") => Ok(()),
            Err(err) => Err(err),
        }
    }

    pub async fn leave(&self, room: &RoomId, user: &UserId) -> Result<()> {
        self.forget_joined(room, user);
        self.client
            .send(
                leave_room::v3::Request::new(room.to_owned()),
                self.as_user(user),
            )
            .await
            .map(drop)
    }

    pub async fn kick(&self, room: &RoomId, user: &UserId, reason: &str) -> Result<()> {
        self.forget_joined(room, user);
        let mut request = kick_user::v3::Request::new(room.to_owned(), user.to_owned());
        request.reason = Some(reason.to_owned());
        self.client.send(request, None).await.map(drop)
    }

    /// Creates a room as the bot.
    pub async fn create_room(&self, spec: RoomSpec) -> Result<OwnedRoomId> {
        let mut request = create_room::v3::Request::new();
        request.name = spec.name;
        request.topic = spec.topic;
        request.is_direct = spec.is_direct;
        request.invite = spec.invite;
        request.preset = Some(create_room::v3::RoomPreset::PrivateChat);
        let encryption = self
            .crypto
            .as_ref()
            .filter(|c| c.config().default || c.config().require)
            .map(|_| json!({"algorithm": "m.megolm.v1.aes-sha2"}));
        let mut initial_state = spec.initial_state;
        if let Some(content) = &encryption {
            initial_state.push((
                "m.room.encryption".to_owned(),
                String::new(),
                content.clone(),
            ));
        }
        request.initial_state = initial_state
            .iter()
            .map(|(kind, key, content)| {
                raw_json::<AnyInitialStateEvent>(
                    &json!({"type": kind, "state_key": key, "content": content}),
                )
            })
            .collect::<Result<_>>()?;
        // The creator (the bot) gets full power from the room version itself; room version 12
        // refuses the creator in `users`.
        let mut users = serde_json::Map::new();
        for (user, level) in spec.power_users {
            users.insert(user.to_string(), json!(level));
        }
        let mut levels = serde_json::Map::new();
        if !users.is_empty() {
            levels.insert("users".to_owned(), JsonValue::Object(users));
        }
        if let Some(level) = spec.events_default {
            levels.insert("events_default".to_owned(), json!(level));
        }
        if !levels.is_empty() {
            request.power_level_content_override = Some(raw_json(&JsonValue::Object(levels))?);
        }
        if let Some(room_type) = spec.room_type {
            request.creation_content = Some(raw_json(&json!({"type": room_type}))?);
        }
        let response = self.client.send(request, None).await?;
        self.remember_joined(&response.room_id, &self.bot);
        if let (Some(crypto), Some(content)) = (&self.crypto, &encryption)
            && let Some(row) = crate::crypto::rooms::encryption_from_content(content)
        {
            crypto.set_room_encryption(&response.room_id, row).await?;
        }
        Ok(response.room_id)
    }

    /// Sends a message-like event as `user`; in an encrypted room it is encrypted with the
    /// user's own device first. `txn_id` makes the send idempotent for a while (the homeserver
    /// answers a repeat with the first event id).
    pub async fn send_event(
        &self,
        room: &RoomId,
        user: &UserId,
        event_type: &str,
        txn_id: &str,
        content: &JsonValue,
    ) -> Result<OwnedEventId> {
        if let Some(crypto) = &self.crypto
            && !NEVER_ENCRYPTED.contains(&event_type)
            && crypto.room_encryption(room).await?.is_some()
        {
            let (device, encrypted) = crypto.encrypt(room, user, event_type, content).await?;
            let request = send_message_event::v3::Request::new_raw(
                room.to_owned(),
                OwnedTransactionId::from(txn_id),
                MessageLikeEventType::RoomEncrypted,
                raw_json(&encrypted)?,
            );
            return Ok(self
                .client
                .send_as_device(request, Some(user), Some(&device))
                .await?
                .event_id);
        }
        let request = send_message_event::v3::Request::new_raw(
            room.to_owned(),
            OwnedTransactionId::from(txn_id),
            MessageLikeEventType::from(event_type),
            raw_json(content)?,
        );
        Ok(self
            .client
            .send(request, self.as_user(user))
            .await?
            .event_id)
    }

    pub async fn send_state(
        &self,
        room: &RoomId,
        user: &UserId,
        event_type: &str,
        state_key: &str,
        content: &JsonValue,
    ) -> Result<OwnedEventId> {
        let request = send_state_event::v3::Request::new_raw(
            room.to_owned(),
            StateEventType::from(event_type),
            state_key.to_owned(),
            raw_json(content)?,
        );
        Ok(self
            .client
            .send(request, self.as_user(user))
            .await?
            .event_id)
    }

    /// Redacts an event as `user` (their own, or anyone's when they have the power).
    pub async fn redact(
        &self,
        room: &RoomId,
        user: &UserId,
        event: &EventId,
        reason: Option<&str>,
    ) -> Result<()> {
        let mut request = redact_event::v3::Request::new(
            room.to_owned(),
            event.to_owned(),
            ruma::TransactionId::new(),
        );
        request.reason = reason.map(str::to_owned);
        self.client
            .send(request, self.as_user(user))
            .await
            .map(drop)
    }

    /// A read receipt as `user`.
    pub async fn read_receipt(&self, room: &RoomId, user: &UserId, event: &EventId) -> Result<()> {
        let request = create_receipt::v3::Request::new(
            room.to_owned(),
            create_receipt::v3::ReceiptType::Read,
            event.to_owned(),
        );
        self.client
            .send(request, self.as_user(user))
            .await
            .map(drop)
    }

    pub async fn typing(&self, room: &RoomId, user: &UserId, typing: bool) -> Result<()> {
        let state = if typing {
            create_typing_event::v3::Typing::Yes(create_typing_event::v3::TypingInfo::new(
                std::time::Duration::from_secs(30),
            ))
        } else {
            create_typing_event::v3::Typing::No
        };
        let request =
            create_typing_event::v3::Request::new(user.to_owned(), room.to_owned(), state);
        self.client
            .send(request, self.as_user(user))
            .await
            .map(drop)
    }

    pub async fn presence(&self, user: &UserId, online: bool) -> Result<()> {
        let state = if online {
            ruma::presence::PresenceState::Online
        } else {
            ruma::presence::PresenceState::Offline
        };
        let request = set_presence::v3::Request::new(user.to_owned(), state);
        self.client
            .send(request, self.as_user(user))
            .await
            .map(drop)
    }

    /// A room state event's content, `None` when the room has none of that type.
    pub async fn state(
        &self,
        room: &RoomId,
        event_type: &str,
        state_key: &str,
    ) -> Result<Option<JsonValue>> {
        let request = get_state_event_for_key::v3::Request::new(
            room.to_owned(),
            StateEventType::from(event_type),
            state_key.to_owned(),
        );
        match self.client.send(request, None).await {
            Ok(response) => serde_json::from_str(response.event_or_content.get())
                .map(Some)
                .map_err(|e| MatrixError::Response(e.to_string())),
            Err(MatrixError::Api { status: 404, .. }) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// The state keys of a room's current state events of one type, leaving out those whose
    /// content is empty (the way a state event is withdrawn, e.g. a space link).
    pub async fn state_keys(&self, room: &RoomId, event_type: &str) -> Result<Vec<String>> {
        let request = get_state_events::v3::Request::new(room.to_owned());
        let response = self.client.send(request, None).await?;
        Ok(response
            .room_state
            .iter()
            .filter_map(|raw| serde_json::from_str::<JsonValue>(raw.json().get()).ok())
            .filter(|e| {
                e["type"] == event_type && e["content"].as_object().is_some_and(|c| !c.is_empty())
            })
            .filter_map(|e| e["state_key"].as_str().map(str::to_owned))
            .collect())
    }

    /// Sets one user's power level in a room (as the bot), leaving everything else as it is.
    pub async fn set_power_level(&self, room: &RoomId, user: &UserId, level: i64) -> Result<()> {
        let mut levels = self
            .state(room, "m.room.power_levels", "")
            .await?
            .unwrap_or_else(|| json!({}));
        let current = levels.pointer(&format!(
            "/users/{}",
            user.as_str().replace('~', "~0").replace('/', "~1")
        ));
        let default = levels
            .get("users_default")
            .and_then(JsonValue::as_i64)
            .unwrap_or(0);
        if current.and_then(JsonValue::as_i64).unwrap_or(default) == level {
            return Ok(());
        }
        if !levels.get("users").is_some_and(JsonValue::is_object) {
            levels["users"] = json!({});
        }
        levels["users"][user.as_str()] = json!(level);
        self.send_state(room, &self.bot.clone(), "m.room.power_levels", "", &levels)
            .await
            .map(drop)
    }

    /// Sets the level needed to send messages (`events_default`), if it differs.
    pub async fn set_events_default(&self, room: &RoomId, level: i64) -> Result<()> {
        let mut levels = self
            .state(room, "m.room.power_levels", "")
            .await?
            .unwrap_or_else(|| json!({}));
        if levels
            .get("events_default")
            .and_then(JsonValue::as_i64)
            .unwrap_or(0)
            == level
        {
            return Ok(());
        }
        levels["events_default"] = json!(level);
        self.send_state(room, &self.bot.clone(), "m.room.power_levels", "", &levels)
            .await
            .map(drop)
    }

    /// A user's display name, if they have one.
    #[allow(deprecated)]
    pub async fn displayname(&self, user: &UserId) -> Option<String> {
        let request =
            ruma::api::client::profile::get_display_name::v3::Request::new(user.to_owned());
        self.client
            .send(request, None)
            .await
            .ok()?
            .displayname
            .filter(|n| !n.trim().is_empty())
    }

    /// A notice from the bot (commands' answers, errors shown to users).
    pub async fn bot_notice(&self, room: &RoomId, text: &str) -> Result<OwnedEventId> {
        let content = json!({"msgtype": "m.notice", "body": text});
        let txn = OwnedTransactionId::from(format!("ferry-notice-{}", ruma::TransactionId::new()));
        self.send_event(
            room,
            &self.bot.clone(),
            "m.room.message",
            txn.as_str(),
            &content,
        )
        .await
    }
}

fn raw_json<T>(value: &JsonValue) -> Result<Raw<T>> {
    serde_json::value::to_raw_value(value)
        .map(Raw::from_json)
        .map_err(|e| MatrixError::Request(e.to_string()))
}
