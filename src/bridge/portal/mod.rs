//! Portals: one remote chat <-> one Matrix room, and the handling of each item in a portal's
//! ordered lane (remote messages and membership in, Matrix messages out).
//!
//! Handling is idempotent so replays after a crash are harmless: a remote message whose mapping
//! exists is skipped, a Matrix send uses a transaction id derived from the remote message id (the
//! homeserver answers a repeat with the same event), and remote sends carry the Matrix event id
//! as their idempotency key.

use std::{sync::Arc, time::Instant};

use ruma::{OwnedRoomId, OwnedUserId, RoomId};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::{
    config::PermissionLevel,
    db::{messages::MessageRow, portals::PortalRow},
    matrix::{client::MatrixError, event::MatrixEvent, intent::RoomSpec},
    network::{
        ChatInfo, ChatKind, LoginId, MessageContent, Network, NetworkError, PortalKey,
        RemoteEnvelope, RemoteEvent, UserInfo,
    },
};

use super::{Bridge, BridgeError, login::LoginHandle, router::QueueItem};

/// What a portal's worker keeps between items.
pub struct PortalState {
    key: PortalKey,
    row: Option<PortalRow>,
    loaded: bool,
}

impl PortalState {
    pub fn new(key: PortalKey) -> Self {
        Self {
            key,
            row: None,
            loaded: false,
        }
    }

    fn room(&self) -> Option<OwnedRoomId> {
        self.row
            .as_ref()?
            .room_id
            .as_deref()
            .and_then(|r| OwnedRoomId::try_from(r).ok())
    }
}

/// Whether an error can never succeed on retry (so the event is given up, not kept).
fn is_permanent(err: &BridgeError) -> bool {
    match err {
        BridgeError::Matrix(MatrixError::Api { status, .. }) => {
            (400..500).contains(status) && *status != 429
        }
        BridgeError::Matrix(MatrixError::Request(_) | MatrixError::Response(_)) => true,
        BridgeError::Network(err) => !err.is_transient(),
        BridgeError::Invalid(_) => true,
        _ => false,
    }
}

/// The Matrix transaction id for a remote message part: stable, so a replay is deduplicated by
/// the homeserver.
fn matrix_txn_id(key: &PortalKey, message: &str, part: &str) -> String {
    let digest = Sha256::digest(format!(
        "{}\0{}\0{}\0{message}\0{part}",
        key.network,
        key.chat,
        key.receiver_str()
    ));
    format!("ferry_{}", hex::encode(&digest[..16]))
}

impl Bridge {
    pub(crate) async fn handle_portal_item(
        self: &Arc<Self>,
        portal: &mut PortalState,
        item: QueueItem,
    ) {
        if !portal.loaded {
            let key = &portal.key;
            match self
                .db
                .get_portal(key.network.as_str(), key.chat.as_str(), key.receiver_str())
                .await
            {
                Ok(row) => {
                    portal.row = row;
                    portal.loaded = true;
                }
                Err(err) => tracing::warn!(%err, portal = %key, "cannot load portal"),
            }
        }
        match item {
            QueueItem::Matrix {
                event, received, ..
            } => self.portal_matrix_event(portal, &event, received).await,
            QueueItem::Remote { envelope, received } => {
                // A transient failure (database or homeserver away) is retried here, holding
                // the lane: moving on would put this event after later ones, and nothing would
                // deliver it before the next restart (the session has read past it).
                let deadline = Instant::now()
                    + std::time::Duration::from_secs(self.config.bridge.max_retry_seconds);
                let mut backoff = std::time::Duration::from_millis(250);
                let result = loop {
                    let result = self.portal_remote_event(portal, &envelope).await;
                    match &result {
                        Err(err) if !is_permanent(err) && Instant::now() + backoff < deadline => {
                            tracing::warn!(%err, portal = %portal.key, ?backoff, "remote event failed; retrying");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(std::time::Duration::from_secs(15));
                        }
                        _ => break result,
                    }
                };
                let done = match &result {
                    Ok(()) => {
                        self.metrics
                            .events_handled
                            .with_label_values(&["remote_to_matrix", "success"])
                            .inc();
                        self.metrics
                            .bridge_latency
                            .with_label_values(&["remote_to_matrix"])
                            .observe(received.elapsed().as_secs_f64());
                        true
                    }
                    Err(err) if is_permanent(err) => {
                        tracing::warn!(%err, portal = %portal.key, kind = envelope.event.kind(), "remote event cannot be bridged; skipped");
                        self.metrics
                            .events_handled
                            .with_label_values(&["remote_to_matrix", "failed"])
                            .inc();
                        true
                    }
                    Err(err) => {
                        // Still failing at the retry deadline. Not marked done: the
                        // checkpoint stays before it and a restart delivers it again.
                        tracing::error!(%err, portal = %portal.key, kind = envelope.event.kind(), "remote event failed; kept for retry");
                        self.metrics
                            .events_handled
                            .with_label_values(&["remote_to_matrix", "retry"])
                            .inc();
                        false
                    }
                };
                if done {
                    self.remote_done(envelope.network, &envelope.login, envelope.checkpoint)
                        .await;
                }
            }
            QueueItem::Sync { login, info } => {
                if let Err(err) = self.portal_sync(portal, &login, &info).await {
                    tracing::warn!(%err, portal = %portal.key, "portal sync failed");
                }
            }
        }
    }

    fn network_of(&self, key: &PortalKey) -> Result<Arc<dyn Network>, BridgeError> {
        self.network(key.network.as_str())
            .cloned()
            .ok_or_else(|| BridgeError::Invalid(format!("network {} is not enabled", key.network)))
    }

    // ----- remote -> Matrix -------------------------------------------------------------------

    async fn portal_remote_event(
        self: &Arc<Self>,
        portal: &mut PortalState,
        envelope: &RemoteEnvelope,
    ) -> Result<(), BridgeError> {
        let login = self.login_handle(envelope.network, &envelope.login);
        match &envelope.event {
            RemoteEvent::Message {
                id,
                sender,
                content,
                timestamp,
                ..
            } => {
                let key = portal.key.clone();
                let existing = self
                    .db
                    .message_by_remote(
                        key.network.as_str(),
                        key.chat.as_str(),
                        key.receiver_str(),
                        id.as_str(),
                    )
                    .await?;
                if !existing.is_empty() {
                    return Ok(());
                }
                let room = self
                    .ensure_portal_room(portal, login.as_ref(), None)
                    .await?;
                let network = self.network_of(&portal.key)?;
                let ghost = self
                    .ensure_ghost(
                        network.as_ref(),
                        sender,
                        login.as_ref().map(|l| l.session.as_ref()),
                    )
                    .await?;
                self.intents.ensure_joined(&room, &ghost).await?;
                let body = match content {
                    MessageContent::Text { body } => body.clone(),
                };
                let matrix_content = json!({"msgtype": "m.text", "body": body});
                let txn = matrix_txn_id(&portal.key, id.as_str(), "");
                let event_id = self
                    .intents
                    .send_event(&room, &ghost, "m.room.message", &txn, &matrix_content)
                    .await?;
                self.db
                    .insert_message(&MessageRow {
                        network: key.network.as_str().to_owned(),
                        chat_id: key.chat.as_str().to_owned(),
                        receiver: key.receiver_str().to_owned(),
                        remote_id: id.as_str().to_owned(),
                        part_id: String::new(),
                        event_id: event_id.to_string(),
                        room_id: room.to_string(),
                        sender_remote: sender.id.as_str().to_owned(),
                        sender_mxid: ghost.to_string(),
                        ts: *timestamp,
                    })
                    .await?;
                Ok(())
            }
            RemoteEvent::Chat(info) => {
                let Some(login) = login else { return Ok(()) };
                self.sync_with(portal, &login, info).await
            }
            RemoteEvent::MemberJoined { user, .. } => {
                let Some(login) = login else { return Ok(()) };
                let Some(room) = portal.room() else {
                    // First sight of this chat: create the portal with its full member list.
                    self.ensure_portal_room(portal, Some(&login), None).await?;
                    return Ok(());
                };
                self.add_member(&room, &login, user).await
            }
            RemoteEvent::MemberLeft { user, .. } => {
                let Some(room) = portal.room() else {
                    return Ok(());
                };
                let network = self.network_of(&portal.key)?;
                if let Some(login) = &login
                    && login.own_user() == user
                {
                    self.intents
                        .kick(
                            &room,
                            &login.user,
                            &format!("You left this chat on {}", network.display_name()),
                        )
                        .await?;
                    return Ok(());
                }
                let Some(ghost) = super::ghost::ghost_user_id(
                    network.as_ref(),
                    &self.config.homeserver.domain,
                    user,
                ) else {
                    return Ok(());
                };
                match self.intents.leave(&room, &ghost).await {
                    Ok(()) => Ok(()),
                    // Not in the room (never joined): nothing to do.
                    Err(MatrixError::Api {
                        status: 403 | 404, ..
                    }) => Ok(()),
                    Err(err) => Err(err.into()),
                }
            }
        }
    }

    async fn add_member(
        &self,
        room: &RoomId,
        login: &LoginHandle,
        user: &UserInfo,
    ) -> Result<(), BridgeError> {
        if login.own_user() == &user.id {
            return Ok(self
                .intents
                .invite(room, &login.user, self.intents.bot())
                .await?);
        }
        let network = self.network_of_login(login)?;
        let ghost = self
            .ensure_ghost(network.as_ref(), user, Some(login.session.as_ref()))
            .await?;
        Ok(self.intents.ensure_joined(room, &ghost).await?)
    }

    async fn portal_sync(
        self: &Arc<Self>,
        portal: &mut PortalState,
        login: &LoginId,
        info: &ChatInfo,
    ) -> Result<(), BridgeError> {
        let Some(login) = self.login_handle(portal.key.network, login) else {
            return Ok(());
        };
        self.sync_with(portal, &login, info).await
    }

    /// Creates the room if needed, else brings name and members in line with `info`.
    async fn sync_with(
        &self,
        portal: &mut PortalState,
        login: &LoginHandle,
        info: &ChatInfo,
    ) -> Result<(), BridgeError> {
        let Some(room) = portal.room() else {
            self.ensure_portal_room(portal, Some(login), Some(info))
                .await?;
            return Ok(());
        };
        if info.kind == ChatKind::Group {
            let old_name = portal.row.as_ref().and_then(|r| r.name.clone());
            if info.name.is_some() && info.name != old_name {
                let name = info.name.clone().unwrap_or_default();
                self.intents
                    .send_state(
                        &room,
                        self.intents.bot(),
                        "m.room.name",
                        "",
                        &json!({"name": name}),
                    )
                    .await?;
                if let Some(row) = portal.row.as_mut() {
                    row.name = info.name.clone();
                    self.db.upsert_portal(row).await?;
                }
            }
        }
        for member in &info.members {
            self.add_member(&room, login, member).await?;
        }
        Ok(())
    }

    /// The portal's room, created (with every member) if it has none yet.
    async fn ensure_portal_room(
        &self,
        portal: &mut PortalState,
        login: Option<&LoginHandle>,
        info: Option<&ChatInfo>,
    ) -> Result<OwnedRoomId, BridgeError> {
        if let Some(room) = portal.room() {
            return Ok(room);
        }
        let login = login
            .ok_or_else(|| BridgeError::Network(NetworkError::NotConnected(portal.key.network)))?;
        let info = match info {
            Some(info) => info.clone(),
            None => login.session.chat_info(&portal.key.chat).await?,
        };
        let network = self.network_of(&portal.key)?;
        let mut ghosts: Vec<OwnedUserId> = Vec::new();
        for member in info.members.iter().filter(|m| &m.id != login.own_user()) {
            ghosts.push(
                self.ensure_ghost(network.as_ref(), member, Some(login.session.as_ref()))
                    .await?,
            );
        }
        let key = &portal.key;
        let bridge_info = json!({
            "bridgebot": self.intents.bot(),
            "creator": self.intents.bot(),
            "protocol": {"id": key.network.as_str(), "displayname": network.display_name()},
            "channel": {"id": key.chat.as_str(), "displayname": info.name},
        });
        let state_key = format!("ferry://{}/{}", key.network, key.chat);
        let mut invite = vec![login.user.clone()];
        invite.extend(ghosts.iter().cloned());
        let spec = RoomSpec {
            name: (info.kind == ChatKind::Group)
                .then(|| info.name.clone())
                .flatten(),
            topic: None,
            is_direct: info.kind == ChatKind::Dm,
            invite,
            initial_state: vec![
                (
                    "m.bridge".to_owned(),
                    state_key.clone(),
                    bridge_info.clone(),
                ),
                ("uk.half-shot.bridge".to_owned(), state_key, bridge_info),
            ],
            power_users: vec![(login.user.clone(), 50)],
        };
        let room = self.intents.create_room(spec).await?;
        let row = PortalRow {
            network: key.network.as_str().to_owned(),
            chat_id: key.chat.as_str().to_owned(),
            receiver: key.receiver_str().to_owned(),
            room_id: Some(room.to_string()),
            kind: info.kind.as_str().to_owned(),
            name: info.name.clone(),
            topic: None,
            avatar_mxc: None,
            relay_login: None,
        };
        self.db.upsert_portal(&row).await?;
        self.db
            .set_portal_room(
                &row.network,
                &row.chat_id,
                &row.receiver,
                Some(room.as_str()),
            )
            .await?;
        portal.row = Some(row);
        self.remember_room(room.clone(), key.clone());
        self.metrics.portals.inc();
        tracing::info!(portal = %key, %room, "portal room created");
        for ghost in &ghosts {
            self.intents.ensure_joined(&room, ghost).await?;
        }
        Ok(room)
    }

    // ----- Matrix -> remote -------------------------------------------------------------------

    async fn portal_matrix_event(
        self: &Arc<Self>,
        portal: &mut PortalState,
        event: &MatrixEvent,
        received: Instant,
    ) {
        if event.kind != "m.room.message" || event.is_edit() {
            return;
        }
        match self.bridge_matrix_message(portal, event).await {
            Ok(true) => {
                self.metrics
                    .events_handled
                    .with_label_values(&["matrix_to_remote", "success"])
                    .inc();
                self.metrics
                    .bridge_latency
                    .with_label_values(&["matrix_to_remote"])
                    .observe(received.elapsed().as_secs_f64());
            }
            Ok(false) => self
                .metrics
                .events_handled
                .with_label_values(&["matrix_to_remote", "ignored"])
                .inc(),
            Err(reason) => {
                self.metrics
                    .events_handled
                    .with_label_values(&["matrix_to_remote", "failed"])
                    .inc();
                tracing::warn!(portal = %portal.key, event = %event.event_id, %reason, "Matrix message not bridged");
                self.notice(
                    &event.room_id,
                    &format!("⚠️ Your message was not bridged: {reason}"),
                )
                .await;
            }
        }
    }

    /// Sends one Matrix message to the remote chat. Ok(false) when there was nothing to do.
    async fn bridge_matrix_message(
        &self,
        portal: &mut PortalState,
        event: &MatrixEvent,
    ) -> Result<bool, String> {
        if self
            .db
            .message_by_event(event.event_id.as_str())
            .await
            .map_err(|e| e.to_string())?
            .is_some()
        {
            return Ok(false);
        }
        if self.permission(&event.sender) < PermissionLevel::User {
            return Err(
                "you do not have permission to send messages through this bridge".to_owned(),
            );
        }
        let network = self.network_of(&portal.key).map_err(|e| e.to_string())?;
        let login = self
            .login_for_portal(&portal.key, &event.sender)
            .ok_or_else(|| {
                format!(
                    "you are not logged in to {} with an account in this chat",
                    network.display_name()
                )
            })?;
        let content = match event.msgtype() {
            Some("m.text" | "m.notice") => MessageContent::text(event.body().unwrap_or_default()),
            Some("m.emote") => {
                MessageContent::text(format!("* {}", event.body().unwrap_or_default()))
            }
            Some(other) => {
                return Err(format!(
                    "{other} messages are not supported on {} yet",
                    network.display_name()
                ));
            }
            None => return Err("the message has no msgtype".to_owned()),
        };
        let sent = self
            .send_with_retry(&login, &portal.key, event.event_id.as_str(), &content)
            .await?;
        let key = &portal.key;
        self.db
            .insert_message(&MessageRow {
                network: key.network.as_str().to_owned(),
                chat_id: key.chat.as_str().to_owned(),
                receiver: key.receiver_str().to_owned(),
                remote_id: sent.id.as_str().to_owned(),
                part_id: String::new(),
                event_id: event.event_id.to_string(),
                room_id: event.room_id.to_string(),
                sender_remote: login.own_user().as_str().to_owned(),
                sender_mxid: event.sender.to_string(),
                ts: sent.timestamp,
            })
            .await
            .map_err(|e| e.to_string())?;
        Ok(true)
    }

    /// Sends, retrying transient network failures with backoff up to the configured deadline.
    async fn send_with_retry(
        &self,
        login: &LoginHandle,
        key: &PortalKey,
        txn_id: &str,
        content: &MessageContent,
    ) -> Result<crate::network::SentMessage, String> {
        let deadline =
            Instant::now() + std::time::Duration::from_secs(self.config.bridge.max_retry_seconds);
        let mut backoff = std::time::Duration::from_millis(250);
        loop {
            match login.session.send_message(&key.chat, txn_id, content).await {
                Ok(sent) => return Ok(sent),
                Err(err) if err.is_transient() && Instant::now() + backoff < deadline => {
                    tracing::debug!(%err, portal = %key, "send failed, retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(std::time::Duration::from_secs(15));
                }
                Err(err) => return Err(err.to_string()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::{ChatId, NetworkId};

    #[test]
    fn matrix_txn_ids_are_stable_and_distinct() {
        let key = PortalKey {
            network: NetworkId::new("sim"),
            chat: ChatId::new("c1"),
            receiver: None,
        };
        let other = PortalKey {
            receiver: Some(LoginId::new("alice")),
            ..key.clone()
        };
        assert_eq!(matrix_txn_id(&key, "m1", ""), matrix_txn_id(&key, "m1", ""));
        assert_ne!(matrix_txn_id(&key, "m1", ""), matrix_txn_id(&key, "m2", ""));
        assert_ne!(
            matrix_txn_id(&key, "m1", ""),
            matrix_txn_id(&other, "m1", "")
        );
    }
}
