//! The network-agnostic core: joins `matrix/` and `network/` through the connector contract.
//!
//! Matrix events arrive stored (from the appservice inbox) and remote events arrive from
//! sessions; both are routed to one ordered queue per portal (or per room, for commands), where
//! they are handled one at a time. Nothing here knows a wire format of either side.

pub mod checkpoint;
pub mod commands;
pub mod convert;
pub mod ghost;
pub mod login;
pub mod permissions;
pub mod portal;
pub mod queue;
pub mod router;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use ruma::{OwnedRoomId, OwnedUserId, UserId};
use tokio::sync::mpsc;

use crate::{
    config::{Config, PermissionLevel},
    db::{Db, DbError},
    matrix::{client::MatrixError, intent::Intents},
    metrics::Metrics,
    network::{EventSink, LoginId, Network, NetworkError, NetworkId, PortalKey, SessionSignal},
};

use self::{
    checkpoint::CheckpointTracker,
    login::{LoginHandle, PendingLogin},
    queue::Queues,
    router::{QueueItem, QueueKey},
};

/// Errors of the bridge core. Their messages may be shown to users, so they carry no secrets.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Matrix(#[from] MatrixError),
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error("{0}")]
    Invalid(String),
}

/// The bridge: shared by every task through an `Arc`.
pub struct Bridge {
    pub config: Config,
    pub db: Db,
    pub intents: Intents,
    pub metrics: Arc<Metrics>,
    pub networks: BTreeMap<&'static str, Arc<dyn Network>>,
    sessions: RwLock<HashMap<(NetworkId, LoginId), LoginHandle>>,
    trackers: Mutex<HashMap<(NetworkId, LoginId), CheckpointTracker>>,
    pending_logins: tokio::sync::Mutex<HashMap<OwnedUserId, PendingLogin>>,
    /// Logins waiting in the background (for a QR scan): aborted by `cancel`.
    waiting_logins: Mutex<HashMap<OwnedUserId, tokio::task::AbortHandle>>,
    /// The QR code a login in progress shows (room, image and text events), so a rotated code
    /// replaces it instead of piling up.
    qr_shown: Mutex<HashMap<OwnedUserId, login::ShownQr>>,
    /// Room id -> portal, for portals whose room is known (filled lazily from the database).
    rooms: RwLock<HashMap<OwnedRoomId, PortalKey>>,
    queues: Queues<QueueKey, QueueItem>,
    sink: EventSink,
    /// Stored transactions waiting to be routed, in arrival order (see `router.rs`).
    inbox_tx: mpsc::Sender<Vec<crate::db::inbox::InboxEntry>>,
    inbox_rx: Mutex<Option<mpsc::Receiver<Vec<crate::db::inbox::InboxEntry>>>>,
}

impl Bridge {
    /// Builds the bridge; `signals` must then be passed to [`Bridge::run_sessions`].
    pub fn new(
        config: Config,
        db: Db,
        intents: Intents,
        metrics: Arc<Metrics>,
        networks: Vec<Arc<dyn Network>>,
    ) -> (Arc<Self>, mpsc::Receiver<SessionSignal>) {
        let (tx, rx) = mpsc::channel(1024);
        // A few transactions of slack: beyond it the transaction handler waits (back-pressure).
        let (inbox_tx, inbox_rx) = mpsc::channel(8);
        let queues = Queues::new(
            config.bridge.portal_queue_size,
            Duration::from_secs(config.bridge.portal_idle_seconds.max(1)),
            metrics.queue_depth.clone(),
            metrics.portals_loaded.clone(),
        );
        let bridge = Arc::new(Self {
            config,
            db,
            intents,
            metrics,
            networks: networks.into_iter().map(|n| (n.id().as_str(), n)).collect(),
            sessions: RwLock::default(),
            trackers: Mutex::default(),
            pending_logins: tokio::sync::Mutex::default(),
            waiting_logins: Mutex::default(),
            qr_shown: Mutex::default(),
            rooms: RwLock::default(),
            queues,
            sink: EventSink::new(tx),
            inbox_tx,
            inbox_rx: Mutex::new(Some(inbox_rx)),
        });
        (bridge, rx)
    }

    pub fn network(&self, name: &str) -> Option<&Arc<dyn Network>> {
        self.networks.get(name)
    }

    pub fn permission(&self, user: &UserId) -> PermissionLevel {
        permissions::level_of(&self.config.bridge.permissions, user)
    }

    /// Start-up work beside serving: the bot's registration and profile.
    pub async fn prepare(&self) -> Result<(), BridgeError> {
        let bot = self.intents.bot().to_owned();
        self.intents.register(&bot).await?;
        let displayname = &self.config.appservice.bot.displayname;
        if !displayname.is_empty()
            && self.db.kv_get("bot_displayname").await?.as_deref() != Some(displayname)
        {
            self.intents.set_displayname(&bot, displayname).await?;
            self.db.kv_set("bot_displayname", displayname).await?;
        }
        let avatar = &self.config.appservice.bot.avatar;
        if !avatar.is_empty() && self.db.kv_get("bot_avatar").await?.as_deref() != Some(avatar) {
            match ruma::OwnedMxcUri::from(avatar.as_str()) {
                mxc if mxc.is_valid() => {
                    self.intents.set_avatar(&bot, Some(mxc)).await?;
                    self.db.kv_set("bot_avatar", avatar).await?;
                }
                _ => tracing::warn!("appservice.bot.avatar is not an mxc:// URI; ignored"),
            }
        }
        Ok(())
    }

    /// Sets the portal and ghost gauges from the database. Counting scans whole tables (68 ms
    /// for 100,000 ghosts on a cold SQLite file), so it runs once start-up has settled rather
    /// than beside the first transactions; the gauges move incrementally from then on.
    pub async fn count_gauges(&self) -> Result<(), BridgeError> {
        self.metrics.portals.set(self.db.count_portals().await?);
        self.metrics.ghosts.set(self.db.count_ghosts().await?);
        Ok(())
    }

    /// Replays Matrix events stored but not handled before the last stop, in order.
    pub async fn replay_inbox(self: &Arc<Self>) -> Result<usize, BridgeError> {
        let pending = self.db.pending_inbox().await?;
        let count = pending.len();
        if count > 0 {
            tracing::info!(count, "replaying unhandled Matrix events from the inbox");
        }
        self.route_matrix(pending).await;
        Ok(count)
    }

    /// Receives what sessions report, forever.
    pub async fn run_sessions(self: Arc<Self>, mut signals: mpsc::Receiver<SessionSignal>) {
        while let Some(signal) = signals.recv().await {
            match signal {
                SessionSignal::Event(envelope) => self.route_remote(*envelope).await,
                SessionSignal::State {
                    network,
                    login,
                    state,
                } => self.session_state(network, login, state).await,
                SessionSignal::Presence {
                    network,
                    user,
                    online,
                } => self.remote_presence(network, user, online),
                SessionSignal::Notice {
                    network,
                    login,
                    text,
                } => self.session_notice(network, &login, &text).await,
            }
        }
    }

    /// Mirrors a remote user's presence on their ghost (in the background: presence is not
    /// ordered with chat events and must not hold up the session).
    fn remote_presence(
        self: &Arc<Self>,
        network: NetworkId,
        user: crate::network::RemoteUserId,
        online: bool,
    ) {
        let Some(net) = self.network(network.as_str()).cloned() else {
            return;
        };
        let Some(ghost) = ghost::ghost_user_id(net.as_ref(), &self.config.homeserver.domain, &user)
        else {
            return;
        };
        let bridge = self.clone();
        tokio::spawn(async move {
            // Only ghosts that exist: presence alone does not create users.
            if matches!(bridge.db.get_ghost_by_mxid(ghost.as_str()).await, Ok(Some(g)) if g.registered)
                && let Err(err) = bridge.intents.presence(&ghost, online).await
            {
                tracing::debug!(%err, "presence not bridged");
            }
        });
    }

    pub(crate) fn sink(&self) -> EventSink {
        self.sink.clone()
    }

    /// Remembers a portal's room for routing Matrix events.
    pub(crate) fn remember_room(&self, room: OwnedRoomId, key: PortalKey) {
        self.rooms.write().expect("rooms lock").insert(room, key);
    }

    pub(crate) fn forget_room(&self, room: &ruma::RoomId) {
        self.rooms.write().expect("rooms lock").remove(room);
    }

    /// The portal of a room, from memory or the database.
    pub(crate) async fn portal_of_room(
        &self,
        room: &ruma::RoomId,
    ) -> Result<Option<PortalKey>, BridgeError> {
        if let Some(key) = self.rooms.read().expect("rooms lock").get(room) {
            return Ok(Some(key.clone()));
        }
        let Some(row) = self.db.portal_by_room(room.as_str()).await? else {
            return Ok(None);
        };
        let Some(network) = self.network(&row.network) else {
            return Ok(None);
        };
        let key = PortalKey {
            network: network.id(),
            chat: crate::network::ChatId::new(row.chat_id),
            receiver: (!row.receiver.is_empty()).then(|| LoginId::new(row.receiver)),
        };
        self.remember_room(room.to_owned(), key.clone());
        Ok(Some(key))
    }

    /// Called by a portal worker when a remote event is fully handled.
    pub(crate) async fn remote_done(
        &self,
        network: NetworkId,
        login: &LoginId,
        checkpoint: Option<i64>,
    ) {
        let Some(position) = checkpoint else { return };
        let to_store = {
            let mut trackers = self.trackers.lock().expect("trackers lock");
            trackers
                .get_mut(&(network, login.clone()))
                .and_then(|t| t.finished(position))
        };
        let Some(position) = to_store else { return };
        if let Err(err) = self
            .db
            .advance_checkpoint(network.as_str(), login.as_str(), position)
            .await
        {
            tracing::warn!(%err, "cannot store checkpoint; events after it will be re-checked at restart");
            return;
        }
        // Events kept for replay up to the checkpoint are no longer needed.
        if let Err(err) = self
            .db
            .remote_inbox_prune(network.as_str(), login.as_str(), position)
            .await
        {
            tracing::warn!(%err, "cannot prune handled remote events");
        }
    }
}

/// Gives a future a panic barrier: a bug in one handler must not take the process down.
pub(crate) async fn guarded<F: std::future::Future<Output = ()> + Send>(what: &str, future: F) {
    use futures_util::FutureExt;
    if let Err(panic) = std::panic::AssertUnwindSafe(future).catch_unwind().await {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::error!(what, message, "handler panicked; item abandoned");
    }
}
