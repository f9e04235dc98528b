//! Routing: which queue an incoming Matrix or remote event goes to, and the worker that runs
//! each queue's items.

use std::{sync::Arc, time::Instant};

use async_trait::async_trait;
use ruma::{OwnedRoomId, UserId};

use crate::{
    config::PermissionLevel,
    db::inbox::InboxEntry,
    matrix::{appservice::AppserviceHandler, event::MatrixEvent},
    network::{ChatInfo, ChatKind, LoginId, PortalKey, RemoteEnvelope},
};

use super::{Bridge, guarded, portal::PortalState, queue::Worker};

/// One ordered lane: a portal, or a non-portal room (commands, invites).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum QueueKey {
    Portal(PortalKey),
    Room(OwnedRoomId),
}

#[derive(Debug)]
pub enum QueueItem {
    /// A stored Matrix event (`inbox_id` is marked done once handled).
    Matrix {
        inbox_id: i64,
        event: Box<MatrixEvent>,
        received: Instant,
    },
    /// A remote event.
    Remote {
        envelope: Box<RemoteEnvelope>,
        received: Instant,
    },
    /// Bring the portal in line with the chat's current state (from `sync` or a login).
    Sync { login: LoginId, info: Box<ChatInfo> },
    /// A typing or receipt EDU for the portal's room.
    Ephemeral { event: Box<serde_json::Value> },
    /// A bot command acting on the portal.
    Command(PortalCommand),
}

/// A command for a portal's lane; the answer goes to `reply_room`.
#[derive(Debug)]
pub struct PortalCommand {
    pub action: PortalAction,
    pub reply_room: String,
}

#[derive(Debug)]
pub enum PortalAction {
    Delete,
    /// Set (or with `None` clear) the relay login.
    SetRelay(Option<String>),
    /// Set the chat's disappearing-message timer (seconds, 0 = off) through `user`'s login.
    SetDisappearing {
        user: ruma::OwnedUserId,
        seconds: u32,
    },
}

/// The per-queue state: portal state for portals, nothing for rooms.
pub enum LaneState {
    Portal(Box<PortalState>),
    Room,
}

pub struct BridgeWorker(pub Arc<Bridge>);

impl Worker<QueueKey, QueueItem> for BridgeWorker {
    type State = LaneState;

    fn init(&self, key: &QueueKey) -> LaneState {
        match key {
            QueueKey::Portal(key) => LaneState::Portal(Box::new(PortalState::new(key.clone()))),
            QueueKey::Room(_) => LaneState::Room,
        }
    }

    async fn handle(&self, _key: &QueueKey, state: &mut LaneState, item: QueueItem) {
        let bridge = &self.0;
        let inbox_id = match &item {
            QueueItem::Matrix { inbox_id, .. } => Some(*inbox_id),
            _ => None,
        };
        match state {
            LaneState::Portal(portal) => {
                guarded("portal item", bridge.handle_portal_item(portal, item)).await
            }
            LaneState::Room => {
                if let QueueItem::Matrix { event, .. } = item {
                    guarded("room event", bridge.handle_room_event(*event)).await;
                }
            }
        }
        if let Some(id) = inbox_id {
            bridge.inbox_done(id).await;
        }
    }
}

impl Bridge {
    fn worker(self: &Arc<Self>) -> Arc<BridgeWorker> {
        Arc::new(BridgeWorker(self.clone()))
    }

    pub(crate) async fn inbox_done(&self, id: i64) {
        if let Err(err) = self.db.inbox_done(id).await {
            tracing::warn!(%err, inbox_id = id, "cannot mark event handled; it will be re-checked at restart");
        }
    }

    /// Routes stored transactions handed over by the appservice, forever (start once).
    pub async fn run_router(self: Arc<Self>) {
        let Some(mut rx) = self.inbox_rx.lock().expect("inbox lock").take() else {
            return;
        };
        while let Some(entries) = rx.recv().await {
            self.route_matrix(entries).await;
        }
    }

    /// Routes stored Matrix events to their lanes, in order.
    pub(crate) async fn route_matrix(self: &Arc<Self>, entries: Vec<InboxEntry>) {
        let worker = self.worker();
        for entry in entries {
            if let Some(input) = crate::crypto::inputs::CryptoInput::from_stored(&entry.event) {
                match (input, self.intents.crypto()) {
                    (Ok(input), Some(crypto)) => crypto.handle_input(input).await,
                    (Err(err), _) => tracing::warn!(%err, "skipping unreadable crypto input"),
                    (Ok(_), None) => {}
                }
                self.inbox_done(entry.id).await;
                continue;
            }
            let event = match MatrixEvent::parse(&entry.event) {
                Ok(event) => event,
                Err(err) => {
                    tracing::warn!(%err, "skipping a Matrix event that does not parse");
                    self.inbox_done(entry.id).await;
                    continue;
                }
            };
            if let Some(crypto) = self.intents.crypto() {
                crypto.observe(&event).await;
            }
            let Some(key) = self.lane_for(&event).await else {
                tracing::debug!(event = %event.event_id, kind = %event.kind, "Matrix event needs no handling");
                self.inbox_done(entry.id).await;
                continue;
            };
            let item = QueueItem::Matrix {
                inbox_id: entry.id,
                event: Box::new(event),
                received: Instant::now(),
            };
            self.queues.push(&worker, key, item).await;
        }
    }

    /// Which lane a Matrix event belongs to; `None` to ignore it.
    async fn lane_for(&self, event: &MatrixEvent) -> Option<QueueKey> {
        // Our own echoes (bot and ghosts) need nothing, except the bot being invited.
        let bot_invited = event.membership() == Some("invite")
            && event.state_key.as_deref() == Some(self.intents.bot().as_str());
        if self.is_our_user(&event.sender) && !bot_invited {
            return None;
        }
        if bot_invited || self.is_command(event).await {
            return Some(QueueKey::Room(event.room_id.clone()));
        }
        match self.portal_of_room(&event.room_id).await {
            Ok(Some(key)) => Some(QueueKey::Portal(key)),
            // Maybe a command: known once decrypted, in the room's lane.
            Ok(None) if event.kind == "m.room.encrypted" && self.intents.crypto().is_some() => {
                Some(QueueKey::Room(event.room_id.clone()))
            }
            Ok(None) => None,
            Err(err) => {
                // Keep the event: route it to the room lane, which retries the lookup.
                tracing::warn!(%err, "portal lookup failed");
                Some(QueueKey::Room(event.room_id.clone()))
            }
        }
    }

    /// A message for the bot: in the sender's management room, or starting with the prefix.
    async fn is_command(&self, event: &MatrixEvent) -> bool {
        if event.kind != "m.room.message" || event.is_edit() {
            return false;
        }
        let Some(body) = event.body() else {
            return false;
        };
        if body
            .trim_start()
            .starts_with(self.config.bridge.command_prefix.as_str())
        {
            return true;
        }
        matches!(self.db.management_room(event.sender.as_str()).await, Ok(Some(room)) if room == event.room_id.as_str())
    }

    /// Routes a remote event to its portal's lane.
    pub(crate) async fn route_remote(self: &Arc<Self>, envelope: RemoteEnvelope) {
        let receiver = match envelope.chat_kind {
            ChatKind::Dm => Some(envelope.login.clone()),
            ChatKind::Group => None,
        };
        let key = PortalKey {
            network: envelope.network,
            chat: envelope.event.chat().clone(),
            receiver,
        };
        if let Some(position) = envelope.checkpoint {
            let mut trackers = self.trackers.lock().expect("trackers lock");
            trackers
                .entry((envelope.network, envelope.login.clone()))
                .or_default()
                .started(position);
        }
        let item = QueueItem::Remote {
            envelope: Box::new(envelope),
            received: Instant::now(),
        };
        self.queues
            .push(&self.worker(), QueueKey::Portal(key), item)
            .await;
    }

    /// Queues a command on a portal's lane.
    pub(crate) async fn queue_portal_command(
        self: &Arc<Self>,
        key: PortalKey,
        command: PortalCommand,
    ) {
        self.queues
            .push(
                &self.worker(),
                QueueKey::Portal(key),
                QueueItem::Command(command),
            )
            .await;
    }

    /// Queues a sync of one chat for `login` (creates the portal if it has no room yet).
    pub(crate) async fn queue_sync(
        self: &Arc<Self>,
        key: PortalKey,
        login: LoginId,
        info: ChatInfo,
    ) {
        let item = QueueItem::Sync {
            login,
            info: Box::new(info),
        };
        self.queues
            .push(&self.worker(), QueueKey::Portal(key), item)
            .await;
    }

    /// Events in rooms that are not portals: the bot's invites and commands.
    async fn handle_room_event(self: &Arc<Self>, event: MatrixEvent) {
        if event.membership() == Some("invite")
            && event.state_key.as_deref() == Some(self.intents.bot().as_str())
        {
            self.handle_bot_invite(&event).await;
        } else if event.kind == "m.room.message" {
            self.handle_command_event(&event).await;
        } else if event.kind == "m.room.encrypted"
            && let Some(plain) = self.decrypt_event(&event).await
            && plain.kind == "m.room.message"
            && self.is_command(&plain).await
        {
            self.handle_command_event(&plain).await;
        }
    }

    /// Decrypts an encrypted event (waiting for a late key as configured). `None` when it
    /// cannot be decrypted now; the room is told, and an event whose key is late is parked
    /// and bridged when the key arrives.
    pub(crate) async fn decrypt_event(&self, event: &MatrixEvent) -> Option<MatrixEvent> {
        use crate::crypto::receive::Decryption;
        let crypto = self.intents.crypto()?;
        match crypto.decrypt(event).await {
            Ok(Decryption::Decrypted(plain)) => Some(*plain),
            Ok(Decryption::KeyMissing) => {
                self.notice(
                    &event.room_id,
                    &format!(
                        "⚠ A message from {} cannot be decrypted yet (its key has not arrived). \
                         It will be bridged as soon as the key arrives.",
                        event.sender
                    ),
                )
                .await;
                None
            }
            Ok(Decryption::Failed(reason)) => {
                tracing::info!(event = %event.event_id, %reason, "undecryptable event");
                self.notice(
                    &event.room_id,
                    &format!(
                        "⚠ A message from {} cannot be decrypted and was not bridged: {reason}",
                        event.sender
                    ),
                )
                .await;
                None
            }
            Err(err) => {
                tracing::warn!(%err, event = %event.event_id, "decryption failed");
                None
            }
        }
    }

    async fn handle_bot_invite(&self, event: &MatrixEvent) {
        let room = &event.room_id;
        let level = self.permission(&event.sender);
        if level < PermissionLevel::Commands {
            tracing::info!(sender = %event.sender, "refusing bot invite from a user without permission");
            if let Err(err) = self.intents.leave(room, self.intents.bot()).await {
                tracing::warn!(%err, "cannot reject invite");
            }
            return;
        }
        if let Err(err) = self.intents.ensure_joined(room, self.intents.bot()).await {
            tracing::warn!(%err, %room, "cannot join room the bot was invited to");
            return;
        }
        let is_direct = event
            .content
            .get("is_direct")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let has_management = matches!(
            self.db.management_room(event.sender.as_str()).await,
            Ok(Some(_))
        );
        let text = if is_direct && !has_management {
            if let Err(err) = self
                .db
                .set_management_room(event.sender.as_str(), room.as_str())
                .await
            {
                tracing::warn!(%err, "cannot store management room");
            }
            format!(
                "Hello! This is your management room for ferry: send commands here without a prefix.\n{}",
                self.help_text(level)
            )
        } else {
            format!(
                "Hello! Use `{} help` here to see what I can do.",
                self.config.bridge.command_prefix
            )
        };
        self.notice(room, &text).await;
    }

    /// Sends a bot notice, logging (not failing) when it cannot.
    pub(crate) async fn notice(&self, room: &ruma::RoomId, text: &str) {
        if let Err(err) = self.intents.bot_notice(room, text).await {
            tracing::warn!(%err, %room, "cannot send notice");
        }
    }

    /// The management room of a user, if known.
    pub(crate) async fn management_room(&self, user: &UserId) -> Option<OwnedRoomId> {
        let room = self
            .db
            .management_room(user.as_str())
            .await
            .ok()
            .flatten()?;
        OwnedRoomId::try_from(room).ok()
    }
}

#[async_trait]
impl AppserviceHandler for Arc<Bridge> {
    /// Stored events are routed by one background task, in arrival order, so the homeserver
    /// gets its answer as soon as the transaction is stored.
    async fn events(&self, entries: Vec<InboxEntry>) {
        if self.inbox_tx.send(entries).await.is_err() {
            tracing::error!("the router is gone; the events stay in the inbox for the next start");
        }
    }

    async fn ephemeral(&self, events: Vec<String>) {
        for raw in events {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(&raw) else {
                continue;
            };
            if !matches!(
                event.get("type").and_then(|t| t.as_str()),
                Some("m.typing" | "m.receipt")
            ) {
                continue;
            }
            let Some(room) = event
                .get("room_id")
                .and_then(|r| r.as_str())
                .and_then(|r| OwnedRoomId::try_from(r).ok())
            else {
                continue;
            };
            if let Ok(Some(key)) = self.portal_of_room(&room).await {
                let item = QueueItem::Ephemeral {
                    event: Box::new(event),
                };
                self.queues
                    .push(&self.worker(), QueueKey::Portal(key), item)
                    .await;
            }
        }
    }

    async fn query_user(&self, user_id: &str) -> bool {
        let Ok(user) = UserId::parse(user_id) else {
            return false;
        };
        if user == self.intents.bot() {
            return true;
        }
        let Some((network, remote)) = self.parse_ghost(&user) else {
            return false;
        };
        if let Ok(Some(ghost)) = self.db.get_ghost_by_mxid(user.as_str()).await
            && ghost.registered
        {
            return true;
        }
        // Unknown ghost of a valid remote id: create it so the homeserver can proceed (e.g. an
        // invite to a contact nobody has talked to yet).
        let info = crate::network::UserInfo {
            id: remote.clone(),
            name: remote.as_str().to_owned(),
            avatar: None,
        };
        let network = network.id().as_str();
        let Some(network) = self.network(network).cloned() else {
            return false;
        };
        match self.ensure_ghost(network.as_ref(), &info, None).await {
            Ok(_) => true,
            Err(err) => {
                tracing::warn!(%err, "cannot create queried ghost");
                false
            }
        }
    }
}
