//! Matrix -> remote: each Matrix event in a portal becomes the matching remote action, sent with
//! the sender's own login or, where the portal has one, the relay login.

use std::{sync::Arc, time::Instant};

use ruma::OwnedUserId;
use serde_json::{Value as JsonValue, json};

use super::{PortalState, status::Outcome};
use crate::{
    bridge::{
        Bridge,
        convert::{self, ConvertError, MatrixContent},
        login::LoginHandle,
        router::PortalCommand,
    },
    config::PermissionLevel,
    db::{messages::MessageRow, reactions::ReactionRow},
    matrix::event::MatrixEvent,
    network::{
        ChatChanges, MessageContent, MessageId, NetworkError, OutgoingMessage, RemoteUserId,
        richtext::{FormattedText, MentionTarget},
    },
};

/// Who a Matrix event is sent as.
struct Sender {
    login: LoginHandle,
    /// Relayed: the Matrix sender's name, put in front of the text.
    relayed_as: Option<String>,
}

impl Bridge {
    pub(super) async fn portal_matrix_event(
        self: &Arc<Self>,
        portal: &mut PortalState,
        event: &MatrixEvent,
        received: Instant,
    ) {
        if event.kind == "m.room.encrypted" {
            if let Some(plain) = self.decrypt_event(event).await {
                Box::pin(self.portal_matrix_event(portal, &plain, received)).await;
            }
            return;
        }
        let outcome = match event.kind.as_str() {
            "m.room.message" if event.is_edit() => Some(self.matrix_edit(portal, event).await),
            "m.room.message" | "m.sticker" => Some(self.matrix_message(portal, event).await),
            "m.reaction" => Some(self.matrix_reaction(portal, event).await),
            "m.room.redaction" => Some(self.matrix_redaction(portal, event).await),
            "m.room.name" | "m.room.topic" | "m.room.avatar"
                if event.state_key.as_deref() == Some("") =>
            {
                Some(self.matrix_chat_change(portal, event).await)
            }
            "m.room.member" => {
                self.matrix_membership(portal, event).await;
                None
            }
            _ => None,
        };
        let Some(outcome) = outcome else { return };
        if outcome != Outcome::Success {
            tracing::info!(event = %event.event_id, ?outcome, "Matrix event not bridged");
        }
        if outcome == Outcome::Success {
            self.metrics
                .bridge_latency
                .with_label_values(&["matrix_to_remote"])
                .observe(received.elapsed().as_secs_f64());
        }
        self.report(
            &event.room_id,
            &event.event_id,
            portal.key.network.as_str(),
            &outcome,
        )
        .await;
    }

    /// The login to send with: the sender's own, else the portal's relay (messages only).
    async fn sender_for(
        &self,
        portal: &PortalState,
        user: &ruma::UserId,
        allow_relay: bool,
    ) -> Result<Sender, Outcome> {
        let level = self.permission(user);
        if level >= PermissionLevel::User
            && let Some(login) = self.login_for_portal(&portal.key, user)
        {
            return Ok(Sender {
                login,
                relayed_as: None,
            });
        }
        let relay = portal.row.as_ref().and_then(|r| r.relay_login.clone());
        if let (true, Some(relay)) = (allow_relay && level >= PermissionLevel::Relay, relay)
            && let Some(login) =
                self.login_handle(portal.key.network, &crate::network::LoginId::new(relay))
        {
            let name = self
                .intents
                .displayname(user)
                .await
                .unwrap_or_else(|| user.localpart().to_owned());
            return Ok(Sender {
                login,
                relayed_as: Some(name),
            });
        }
        if level < PermissionLevel::Relay {
            return Err(Outcome::no_permission(
                "you do not have permission to use this bridge",
            ));
        }
        let network = self
            .network(portal.key.network.as_str())
            .map_or("the network", |n| n.display_name());
        Err(Outcome::no_permission(format!(
            "you are not logged in to {network} with an account in this chat"
        )))
    }

    /// Mentions of ghosts and of logged-in Matrix users become remote mentions.
    fn resolve_mention(&self, portal: &PortalState, mxid: &str) -> Option<MentionTarget> {
        let user = ruma::UserId::parse(mxid).ok()?;
        if let Some((network, remote)) = self.parse_ghost(&user)
            && network.id() == portal.key.network
        {
            return Some(MentionTarget::Remote(remote));
        }
        match self.login_for_portal(&portal.key, &user) {
            Some(login) => Some(MentionTarget::Remote(login.own_user().clone())),
            None => Some(MentionTarget::Matrix(mxid.to_owned())),
        }
    }

    async fn matrix_message(&self, portal: &mut PortalState, event: &MatrixEvent) -> Outcome {
        match self.db.message_by_event(event.event_id.as_str()).await {
            Ok(Some(_)) => {
                tracing::debug!(event = %event.event_id, "Matrix message already sent");
                return Outcome::Success;
            }
            Ok(None) => {}
            Err(err) => {
                return Outcome::Retriable {
                    reason: "m.bridge_unavailable",
                    message: err.to_string(),
                };
            }
        }
        let sender = match self.sender_for(portal, &event.sender, true).await {
            Ok(sender) => sender,
            Err(outcome) => return outcome,
        };
        let Ok(network) = self.network_of(&portal.key) else {
            return Outcome::unsupported("the network is disabled");
        };
        let caps = network.capabilities();
        // Only an emote names its sender in the text; asking the homeserver for every message
        // would put a profile round trip on every message's path.
        let is_emote = event.content.get("msgtype").and_then(|m| m.as_str()) == Some("m.emote");
        let display = match is_emote {
            true => self.intents.displayname(&event.sender).await,
            false => None,
        }
        .unwrap_or_else(|| event.sender.localpart().to_owned());
        let parsed = convert::from_matrix_content(&event.kind, &event.content, &display, &|mxid| {
            self.resolve_mention(portal, mxid)
        });
        let parsed = match parsed {
            Ok(parsed) => parsed,
            Err(ConvertError::Unsupported(kind)) => {
                return Outcome::unsupported(format!(
                    "{kind} messages are not supported on {}",
                    network.display_name()
                ));
            }
            Err(err) => {
                return Outcome::Permanent {
                    reason: "m.event_not_handled",
                    message: err.to_string(),
                };
            }
        };
        let relay_prefix = sender.relayed_as.as_ref().map(|name| format!("{name}: "));
        let with_prefix = |text: FormattedText| match &relay_prefix {
            Some(prefix) => convert::prefix(prefix, text),
            None => text,
        };
        let content = match parsed {
            MatrixContent::Text(text) => MessageContent::Text(with_prefix(text)),
            MatrixContent::Location {
                latitude,
                longitude,
                name,
            } => {
                if !caps.locations {
                    return Outcome::unsupported(format!(
                        "locations are not supported on {}",
                        network.display_name()
                    ));
                }
                MessageContent::Location {
                    latitude,
                    longitude,
                    name,
                }
            }
            MatrixContent::Media {
                mut media,
                caption,
                url,
            } => {
                if !caps.media {
                    return Outcome::unsupported(format!(
                        "files are not supported on {}",
                        network.display_name()
                    ));
                }
                if caps.max_file_size > 0 && media.size > caps.max_file_size {
                    return Outcome::Permanent {
                        reason: "com.beeper.unsupported_event",
                        message: format!(
                            "the file is too large for {} ({} MiB; the limit is {} MiB)",
                            network.display_name(),
                            media.size.div_ceil(1024 * 1024),
                            caps.max_file_size / (1024 * 1024)
                        ),
                    };
                }
                let stream = match self
                    .intents
                    .client()
                    .download_media(&url, caps.max_file_size.max(1))
                    .await
                {
                    Ok(stream) => stream,
                    Err(err) => {
                        return Outcome::Retriable {
                            reason: "m.bridge_unavailable",
                            message: format!("cannot fetch the file: {err}"),
                        };
                    }
                };
                let mut stream = stream;
                if media.size == 0 {
                    media.size = stream.size.unwrap_or(0);
                }
                // The sender's declared type is what the file is; the media repository may add
                // parameters (charset) or know less.
                if media.content_type != "application/octet-stream" {
                    stream.content_type = media.content_type.clone();
                } else {
                    media.content_type = stream.content_type.clone();
                }
                match sender.login.session.upload_media(stream, &media.name).await {
                    Ok(id) => media.id = id,
                    Err(err) => return Outcome::from_network(&err),
                }
                let caption = match (caption, &relay_prefix) {
                    (Some(c), _) => Some(with_prefix(c)),
                    (None, Some(prefix)) => {
                        Some(FormattedText::plain(prefix.trim_end().to_owned()))
                    }
                    (None, None) => None,
                };
                MessageContent::Media { media, caption }
            }
        };
        let reply_to = match event
            .content
            .pointer("/m.relates_to/m.in_reply_to/event_id")
            .and_then(JsonValue::as_str)
        {
            Some(target) => self
                .db
                .message_by_event(target)
                .await
                .ok()
                .flatten()
                .map(|m| MessageId::new(m.remote_id)),
            None => None,
        };
        let message = OutgoingMessage { content, reply_to };
        let sent = match self
            .send_with_retry(&sender.login, portal, event.event_id.as_str(), &message)
            .await
        {
            Ok(sent) => sent,
            Err(err) => return Outcome::from_network(&err),
        };
        let (network_id, chat, receiver) = portal.db_key();
        let row = MessageRow {
            network: network_id.to_owned(),
            chat_id: chat.to_owned(),
            receiver: receiver.to_owned(),
            remote_id: sent.id.as_str().to_owned(),
            part_id: String::new(),
            event_id: event.event_id.to_string(),
            room_id: event.room_id.to_string(),
            sender_remote: sender.login.own_user().as_str().to_owned(),
            sender_mxid: event.sender.to_string(),
            ts: sent.timestamp,
        };
        if let Err(err) = self.db.insert_message(&row).await {
            tracing::warn!(%err, "message sent but its mapping could not be stored");
        }
        tracing::debug!(event = %event.event_id, remote = %sent.id, "Matrix message sent");
        match sent.partly_failed {
            Some(message) => Outcome::Partial { message },
            None => Outcome::Success,
        }
    }

    /// Sends, retrying transient network failures with backoff up to the configured deadline.
    async fn send_with_retry(
        &self,
        login: &LoginHandle,
        portal: &PortalState,
        txn_id: &str,
        message: &OutgoingMessage,
    ) -> Result<crate::network::SentMessage, NetworkError> {
        let mut pacing = super::retry::RetryPacing::new(self.config.bridge.max_retry_seconds);
        loop {
            match login
                .session
                .send_message(&portal.key.chat, txn_id, message)
                .await
            {
                Ok(sent) => return Ok(sent),
                Err(err) if err.is_transient() && pacing.next_wait().is_some() => {
                    tracing::debug!(%err, portal = %portal.key, "send failed, retrying");
                    pacing.wait().await;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// The remote message behind a Matrix event id of this portal.
    async fn remote_of(&self, event_id: &str) -> Option<MessageRow> {
        self.db.message_by_event(event_id).await.ok().flatten()
    }

    async fn matrix_edit(&self, portal: &mut PortalState, event: &MatrixEvent) -> Outcome {
        let sender = match self.sender_for(portal, &event.sender, false).await {
            Ok(sender) => sender,
            Err(outcome) => return outcome,
        };
        let Some(target) = event
            .content
            .pointer("/m.relates_to/event_id")
            .and_then(JsonValue::as_str)
        else {
            return Outcome::Permanent {
                reason: "m.event_not_handled",
                message: "the edit names no message".to_owned(),
            };
        };
        let Some(original) = self.remote_of(target).await else {
            return Outcome::Permanent {
                reason: "m.event_not_handled",
                message: "the edited message was never bridged".to_owned(),
            };
        };
        if original.sender_mxid != event.sender.as_str() {
            return Outcome::no_permission("only your own messages can be edited");
        }
        let new_content = event
            .content
            .get("m.new_content")
            .cloned()
            .unwrap_or_default();
        let display = event.sender.localpart().to_owned();
        let content =
            match convert::from_matrix_content("m.room.message", &new_content, &display, &|m| {
                self.resolve_mention(portal, m)
            }) {
                Ok(MatrixContent::Text(text)) => MessageContent::Text(text),
                Ok(_) => return Outcome::unsupported("only text can be edited"),
                Err(err) => {
                    return Outcome::Permanent {
                        reason: "m.event_not_handled",
                        message: err.to_string(),
                    };
                }
            };
        match sender
            .login
            .session
            .edit_message(
                &portal.key.chat,
                &MessageId::new(original.remote_id),
                &content,
            )
            .await
        {
            Ok(()) => {
                let _ = self.db.count_edit(&original.event_id).await;
                Outcome::Success
            }
            Err(err) => Outcome::from_network(&err),
        }
    }

    async fn matrix_reaction(&self, portal: &mut PortalState, event: &MatrixEvent) -> Outcome {
        let sender = match self.sender_for(portal, &event.sender, false).await {
            Ok(sender) => sender,
            Err(outcome) => return outcome,
        };
        let relates = event.content.get("m.relates_to");
        let (Some(target), Some(emoji)) = (
            relates
                .and_then(|r| r.get("event_id"))
                .and_then(JsonValue::as_str),
            relates
                .and_then(|r| r.get("key"))
                .and_then(JsonValue::as_str),
        ) else {
            return Outcome::Permanent {
                reason: "m.event_not_handled",
                message: "malformed reaction".to_owned(),
            };
        };
        let Some(message) = self.remote_of(target).await else {
            return Outcome::Permanent {
                reason: "m.event_not_handled",
                message: "the message was never bridged".to_owned(),
            };
        };
        let remote_id = MessageId::new(message.remote_id.clone());
        if let Err(err) = sender
            .login
            .session
            .react(&portal.key.chat, &remote_id, emoji, false)
            .await
        {
            return Outcome::from_network(&err);
        }
        let (network_id, chat, receiver) = portal.db_key();
        let row = ReactionRow {
            network: network_id.to_owned(),
            chat_id: chat.to_owned(),
            receiver: receiver.to_owned(),
            message_id: message.remote_id,
            part_id: String::new(),
            sender_remote: sender.login.own_user().as_str().to_owned(),
            emoji: emoji.to_owned(),
            event_id: event.event_id.to_string(),
            ts: crate::db::now_ms(),
        };
        if let Err(err) = self.db.insert_reaction(&row).await {
            tracing::warn!(%err, "reaction sent but not stored");
        }
        Outcome::Success
    }

    async fn matrix_redaction(&self, portal: &mut PortalState, event: &MatrixEvent) -> Outcome {
        let redacts = event
            .content
            .get("redacts")
            .and_then(JsonValue::as_str)
            .map(str::to_owned)
            .or_else(|| event.redacts.as_ref().map(|r| r.to_string()));
        let Some(redacts) = redacts else {
            return Outcome::Permanent {
                reason: "m.event_not_handled",
                message: "the redaction names no event".to_owned(),
            };
        };
        let sender = match self.sender_for(portal, &event.sender, false).await {
            Ok(sender) => sender,
            Err(outcome) => return outcome,
        };
        if let Ok(Some(reaction)) = self.db.reaction_by_event(&redacts).await {
            let result = sender
                .login
                .session
                .react(
                    &portal.key.chat,
                    &MessageId::new(reaction.message_id.clone()),
                    &reaction.emoji,
                    true,
                )
                .await;
            return match result {
                Ok(()) => {
                    let _ = self.db.delete_reaction(&redacts).await;
                    Outcome::Success
                }
                Err(err) => Outcome::from_network(&err),
            };
        }
        let Some(message) = self.remote_of(&redacts).await else {
            return Outcome::Success;
        };
        if message.sender_mxid != event.sender.as_str() {
            return Outcome::no_permission("only your own messages can be deleted for everyone");
        }
        match sender
            .login
            .session
            .delete_message(&portal.key.chat, &MessageId::new(message.remote_id.clone()))
            .await
        {
            Ok(()) => {
                let (network_id, chat, receiver) = portal.db_key();
                let _ = self
                    .db
                    .delete_message(network_id, chat, receiver, &message.remote_id)
                    .await;
                Outcome::Success
            }
            Err(err) => Outcome::from_network(&err),
        }
    }

    async fn matrix_chat_change(&self, portal: &mut PortalState, event: &MatrixEvent) -> Outcome {
        let sender = match self.sender_for(portal, &event.sender, false).await {
            Ok(sender) => sender,
            Err(outcome) => return outcome,
        };
        let mut changes = ChatChanges::default();
        match event.kind.as_str() {
            "m.room.name" => {
                changes.name = Some(
                    event
                        .content
                        .get("name")
                        .and_then(JsonValue::as_str)
                        .unwrap_or("")
                        .to_owned(),
                )
            }
            "m.room.topic" => {
                changes.topic = Some(
                    event
                        .content
                        .get("topic")
                        .and_then(JsonValue::as_str)
                        .unwrap_or("")
                        .to_owned(),
                )
            }
            _ => {
                let url = event.content.get("url").and_then(JsonValue::as_str);
                changes.avatar = Some(match url {
                    Some(url) => {
                        let stream = match self
                            .intents
                            .client()
                            .download_media(url, 10 * 1024 * 1024)
                            .await
                        {
                            Ok(stream) => stream,
                            Err(err) => {
                                return Outcome::Retriable {
                                    reason: "m.bridge_unavailable",
                                    message: err.to_string(),
                                };
                            }
                        };
                        match sender.login.session.upload_media(stream, "avatar").await {
                            Ok(id) => Some(id),
                            Err(err) => return Outcome::from_network(&err),
                        }
                    }
                    None => None,
                });
            }
        }
        match sender
            .login
            .session
            .update_chat(&portal.key.chat, &changes)
            .await
        {
            Ok(()) => {
                if let Some(row) = portal.row.as_mut() {
                    if let Some(name) = changes.name {
                        row.name = Some(name);
                    }
                    if let Some(topic) = changes.topic {
                        row.topic = Some(topic);
                    }
                    if let Some(avatar) = changes.avatar {
                        let url = event
                            .content
                            .get("url")
                            .and_then(JsonValue::as_str)
                            .unwrap_or_default();
                        row.avatar_mxc = avatar.map(|id| format!("{id} {url}"));
                    }
                    let _ = self.db.upsert_portal(row).await;
                }
                Outcome::Success
            }
            Err(NetworkError::Rejected(why)) => {
                let message = match self.undo_chat_change(portal, event).await {
                    Some(what) => format!("{why}; the room's {what} was set back"),
                    None => why,
                };
                Outcome::Permanent {
                    reason: "m.foreign_network_error",
                    message,
                }
            }
            Err(err) => Outcome::from_network(&err),
        }
    }

    /// A room name, topic or avatar the network refused (a group that keeps its details to
    /// admins) is set back to the chat's, so the room does not show a change that did not
    /// happen; the failure notice says why. A change the network cannot make at all
    /// (`Unsupported`, e.g. naming a DM) stays as the user's own label.
    /// Returns what was set back ("name", "topic", "avatar"), `None` when it could not be.
    async fn undo_chat_change(
        &self,
        portal: &PortalState,
        event: &MatrixEvent,
    ) -> Option<&'static str> {
        let row = portal.row.as_ref();
        let (what, content) = match event.kind.as_str() {
            "m.room.name" => (
                "name",
                json!({"name": row.and_then(|r| r.name.clone()).unwrap_or_default()}),
            ),
            "m.room.topic" => (
                "topic",
                json!({"topic": row.and_then(|r| r.topic.clone()).unwrap_or_default()}),
            ),
            _ => (
                "avatar",
                match row
                    .and_then(|r| r.avatar_mxc.as_deref())
                    .and_then(|a| a.split_once(' '))
                {
                    Some((_, url)) => json!({"url": url}),
                    None => json!({}),
                },
            ),
        };
        let room = portal.room()?;
        let bot = self.intents.bot().to_owned();
        match self
            .intents
            .send_state(&room, &bot, &event.kind, "", &content)
            .await
        {
            Ok(_) => Some(what),
            Err(err) => {
                tracing::warn!(%err, kind = event.kind, "cannot undo a refused room change");
                None
            }
        }
    }

    /// Invites and kicks of ghosts by Matrix users become remote member changes.
    async fn matrix_membership(&self, portal: &mut PortalState, event: &MatrixEvent) {
        let Some(target) = event
            .state_key
            .as_deref()
            .and_then(|k| OwnedUserId::try_from(k).ok())
        else {
            return;
        };
        let Some((network, remote)) = self.parse_ghost(&target) else {
            return;
        };
        if network.id() != portal.key.network || event.sender == target {
            return;
        }
        let membership = event.membership().unwrap_or_default();
        if !matches!(membership, "invite" | "leave" | "ban") {
            return;
        }
        let Ok(sender) = self.sender_for(portal, &event.sender, false).await else {
            return;
        };
        let remote: RemoteUserId = remote;
        let result = if membership == "invite" {
            sender
                .login
                .session
                .add_member(&portal.key.chat, &remote)
                .await
        } else {
            sender
                .login
                .session
                .remove_member(&portal.key.chat, &remote)
                .await
        };
        if let Err(err) = result {
            self.undo_membership(event, &target, membership, &err).await;
        }
    }

    /// A member change the remote network refused is undone in the room where it can be (an
    /// invited ghost declines, a kicked ghost comes back), and the room is told why, so the
    /// room's members never disagree with the remote chat's without an explanation.
    async fn undo_membership(
        &self,
        event: &MatrixEvent,
        target: &ruma::UserId,
        membership: &str,
        err: &NetworkError,
    ) {
        let room = &event.room_id;
        let (undone, outcome) = match membership {
            "invite" => (
                self.intents.leave(room, target).await,
                "The invitation was withdrawn.",
            ),
            "leave" => {
                self.intents.forget_joined(room, target);
                (
                    self.intents.ensure_joined(room, target).await,
                    "They are back in this room, as they are still in the chat.",
                )
            }
            _ => (Ok(()), "The ban applies in Matrix only."),
        };
        if let Err(undo) = &undone {
            tracing::warn!(%undo, %target, "cannot undo a refused membership change");
        }
        let what = if membership == "invite" {
            "invite"
        } else {
            "removal"
        };
        let outcome = if undone.is_ok() {
            outcome
        } else {
            "The room could not be put back as it was."
        };
        self.notice(
            room,
            &format!("⚠️ The {what} of {target} was not bridged: {err}. {outcome}"),
        )
        .await;
    }

    /// Typing and read receipts of Matrix users in this portal.
    pub(super) async fn portal_ephemeral(&self, portal: &mut PortalState, event: &JsonValue) {
        match event.get("type").and_then(JsonValue::as_str) {
            Some("m.typing") => {
                let now: std::collections::HashSet<OwnedUserId> = event
                    .pointer("/content/user_ids")
                    .and_then(JsonValue::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|u| u.as_str().and_then(|u| OwnedUserId::try_from(u).ok()))
                    .filter(|u| !self.is_our_user(u))
                    .collect();
                let started: Vec<_> = now.difference(&portal.typing).cloned().collect();
                let stopped: Vec<_> = portal.typing.difference(&now).cloned().collect();
                portal.typing = now;
                for (users, typing) in [(started, true), (stopped, false)] {
                    for user in users {
                        if let Some(login) = self.login_for_portal(&portal.key, &user)
                            && let Err(err) =
                                login.session.set_typing(&portal.key.chat, typing).await
                        {
                            tracing::debug!(%err, "typing not bridged");
                        }
                    }
                }
            }
            Some("m.receipt") => {
                let Some(content) = event.get("content").and_then(JsonValue::as_object) else {
                    return;
                };
                for (event_id, receipts) in content {
                    let Some(readers) = receipts.get("m.read").and_then(JsonValue::as_object)
                    else {
                        continue;
                    };
                    let Some(message) = self.remote_of(event_id).await else {
                        continue;
                    };
                    for reader in readers.keys() {
                        let Ok(user) = OwnedUserId::try_from(reader.as_str()) else {
                            continue;
                        };
                        if self.is_our_user(&user) {
                            continue;
                        }
                        if let Some(login) = self.login_for_portal(&portal.key, &user)
                            && let Err(err) = login
                                .session
                                .mark_read(
                                    &portal.key.chat,
                                    &MessageId::new(message.remote_id.clone()),
                                )
                                .await
                        {
                            tracing::debug!(%err, "read receipt not bridged");
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// Commands that act on the portal itself, run in its lane so they are ordered with its
    /// events.
    pub(super) async fn portal_command(&self, portal: &mut PortalState, command: PortalCommand) {
        let reply = match command.action {
            crate::bridge::router::PortalAction::Delete => {
                match self
                    .teardown_portal(portal, "This portal was deleted by a bridge admin.")
                    .await
                {
                    Ok(()) => "Portal deleted.".to_owned(),
                    Err(err) => format!("Could not delete the portal: {err}"),
                }
            }
            crate::bridge::router::PortalAction::SetRelay(login) => match portal.row.as_mut() {
                Some(row) => {
                    row.relay_login = login.clone();
                    let (network, chat, receiver) = (
                        row.network.clone(),
                        row.chat_id.clone(),
                        row.receiver.clone(),
                    );
                    match self
                        .db
                        .set_portal_relay(&network, &chat, &receiver, login.as_deref())
                        .await
                    {
                        Ok(()) => match login {
                            Some(login) => format!(
                                "Messages from users without their own login are now relayed through `{login}`."
                            ),
                            None => "Relaying is off for this portal.".to_owned(),
                        },
                        Err(err) => format!("Could not store the relay: {err}"),
                    }
                }
                None => "This room is not a portal.".to_owned(),
            },
            crate::bridge::router::PortalAction::SetDisappearing { user, seconds } => {
                match self.login_for_portal(&portal.key, &user) {
                    None => format!(
                        "You have no {} login in this chat to change its timer with.",
                        portal.key.network
                    ),
                    Some(login) => match login
                        .session
                        .set_disappearing(&portal.key.chat, seconds)
                        .await
                    {
                        Ok(()) if seconds == 0 => {
                            "Disappearing messages are off in this chat.".to_owned()
                        }
                        Ok(()) => format!(
                            "Messages in this chat now disappear after {}.",
                            crate::network::timer::describe(u64::from(seconds))
                        ),
                        Err(err) => format!("Cannot change the disappearing-message timer: {err}"),
                    },
                }
            }
        };
        if let Ok(room) = ruma::OwnedRoomId::try_from(command.reply_room.as_str()) {
            self.notice(&room, &reply).await;
        }
    }
}
