//! Matrix end-to-end encryption for the users the bridge acts as.
//!
//! Every user the bridge speaks for (the bot and each ghost) gets its own Matrix device and its
//! own cross-signing identity, so clients that exclude unsigned devices (MSC4153) still decrypt
//! ghost messages and see no sender/device mismatch. Each device is driven by one
//! matrix-sdk-crypto `OlmMachine`, loaded on demand and unloaded when idle (`machines`).
//!
//! - `devices`: device ids, device creation on the homeserver, loading and cross-signing.
//! - `requests`: the machines' outgoing requests, sent as that user and device.
//! - `inputs`: to-device events, device lists and key counts from transactions.
//! - `rooms`: which rooms are encrypted, with which settings, and who is in them.
//! - `send` / `receive`: Megolm encryption of outgoing events, decryption of incoming ones,
//!   waiting for late keys.
//! - `store`: matrix-sdk-crypto's `CryptoStore` over ferry's own database, so SQLite and Postgres
//!   deployments hold every device's state in one place and machines survive restarts.

pub mod devices;
pub mod inputs;
pub mod machines;
pub mod receive;
pub mod requests;
pub mod rooms;
pub mod send;
pub mod store;
pub mod sync;

use std::{sync::Arc, time::Duration};

use matrix_sdk_crypto::{MegolmError, OlmError, store::CryptoStoreError};
use ruma::{OwnedRoomId, OwnedUserId, UserId};
use tokio::sync::{broadcast, mpsc};

use crate::{
    config::EncryptionConfig,
    db::{Db, DbError, inbox::InboxEntry},
    matrix::client::{MatrixClient, MatrixError},
};

use self::{machines::MachinePool, rooms::RoomRegistry};

/// Why a crypto operation failed. Messages carry ids, never key material.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error(transparent)]
    Matrix(#[from] MatrixError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("crypto store: {0}")]
    Store(#[from] CryptoStoreError),
    #[error("olm: {0}")]
    Olm(#[from] OlmError),
    #[error("megolm: {0}")]
    Megolm(#[from] MegolmError),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = CryptoError> = std::result::Result<T, E>;

/// A room key that arrived (from a to-device event), for waiting decryptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomKeyArrived {
    pub room_id: OwnedRoomId,
    pub session_id: String,
}

/// The crypto engine: shared through an `Arc` by the intents (send), the router (inputs) and
/// the portals (receive).
pub struct Crypto {
    config: EncryptionConfig,
    db: Db,
    client: MatrixClient,
    bot: OwnedUserId,
    machines: MachinePool,
    rooms: RoomRegistry,
    room_keys: broadcast::Sender<RoomKeyArrived>,
    /// Events whose keys arrived after their portal gave up waiting, back in the inbox: to
    /// route again.
    late: mpsc::Sender<Vec<InboxEntry>>,
    /// Itself, for the tasks it starts (the `/sync` loops).
    me: std::sync::Weak<Crypto>,
}

impl std::fmt::Debug for Crypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crypto")
            .field("bot", &self.bot)
            .finish_non_exhaustive()
    }
}

impl Crypto {
    /// Builds the engine. The receiver yields events to route again (see [`Crypto::late`]).
    pub fn new(
        config: EncryptionConfig,
        db: Db,
        client: MatrixClient,
        bot: OwnedUserId,
    ) -> (Arc<Self>, mpsc::Receiver<Vec<InboxEntry>>) {
        let (late, late_rx) = mpsc::channel(64);
        let (room_keys, _) = broadcast::channel(1024);
        let secret = store::StoreSecret::Passphrase(zeroize::Zeroizing::new(
            config.pickle_key.expose().to_owned(),
        ));
        let machines = MachinePool::new(
            db.clone(),
            secret,
            bot.clone(),
            Duration::from_secs(config.machine_idle_seconds),
            config.max_loaded_machines,
        );
        let crypto = Arc::new_cyclic(|me| Self {
            config,
            db,
            client,
            bot,
            machines,
            rooms: RoomRegistry::default(),
            room_keys,
            late,
            me: me.clone(),
        });
        (crypto, late_rx)
    }

    pub fn config(&self) -> &EncryptionConfig {
        &self.config
    }

    pub fn bot(&self) -> &UserId {
        &self.bot
    }

    pub fn machines(&self) -> &MachinePool {
        &self.machines
    }

    /// Background upkeep: unloading idle machines, bridging events whose keys came late.
    pub fn start(self: &Arc<Self>) {
        let crypto = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(
                crypto.config.machine_idle_seconds.clamp(1, 60),
            ));
            loop {
                tick.tick().await;
                let unloaded = crypto.machines.evict();
                if unloaded > 0 {
                    tracing::debug!(unloaded, "idle crypto machines unloaded");
                }
            }
        });
        let crypto = self.clone();
        tokio::spawn(async move { crypto.bridge_late_events().await });
    }

    /// Tells waiting decryptions about room keys a machine just received.
    pub(crate) fn keys_received(
        &self,
        machine: &machines::LoadedMachine,
        keys: Vec<matrix_sdk_crypto::store::types::RoomKeyInfo>,
    ) {
        for key in keys {
            tracing::debug!(room = %key.room_id, user = %machine.user, "room key received");
            let _ = self.room_keys.send(RoomKeyArrived {
                room_id: key.room_id,
                session_id: key.session_id,
            });
        }
    }

    /// Sets the bot's device up (at start-up, so clients can share keys with it at once).
    pub async fn prepare(&self) -> Result<()> {
        let bot = self.bot.clone();
        let machine = self.machine(&bot).await?;
        tracing::info!(device = %machine.device, "the bot's encryption device is ready");
        Ok(())
    }
}
