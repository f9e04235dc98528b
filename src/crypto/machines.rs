//! Loaded crypto machines: one `OlmMachine` per bridge device, loaded on demand, unloaded when
//! idle or when too many are loaded (least recently used first).
//!
//! A device never has two machines at once: loading happens inside the device's slot (a
//! `OnceCell`), and a slot is only removed while nobody but the pool holds it.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use matrix_sdk_crypto::{
    OlmMachine,
    store::{DynCryptoStore, IntoCryptoStore},
};
use ruma::{OwnedDeviceId, OwnedUserId, UserId};
use tokio::sync::OnceCell;

use crate::db::Db;

use super::{
    Result,
    store::{SqlCryptoStore, StoreKey, StoreSecret},
};

/// Opens the crypto store of one device.
///
/// This is the one place that chooses the store: ferry's own [`SqlCryptoStore`] over the
/// bridge database, so every device's keys and sessions survive restarts. The store key is
/// unlocked from the configured pickle key the first time a store is opened (the bot's device,
/// at start-up), so a wrong pickle key stops the bridge there with a clear error.
pub struct StoreOpener {
    db: Db,
    secret: StoreSecret,
    key: tokio::sync::OnceCell<StoreKey>,
}

impl StoreOpener {
    fn new(db: Db, secret: StoreSecret) -> Self {
        Self {
            db,
            secret,
            key: tokio::sync::OnceCell::new(),
        }
    }

    /// The store of `user`'s device `device`.
    pub async fn open_store(
        &self,
        user: &UserId,
        device: &ruma::DeviceId,
    ) -> Result<Arc<DynCryptoStore>> {
        let key = self
            .key
            .get_or_try_init(|| StoreKey::load_or_create(&self.db, self.secret.clone()))
            .await
            .map_err(|err| super::CryptoError::Invalid(format!("crypto store key: {err}")))?;
        let store = SqlCryptoStore::open(self.db.clone(), key.clone(), user, device);
        Ok(store.into_crypto_store())
    }
}

/// One device's machine and the locks that serialize work on it.
pub struct LoadedMachine {
    pub user: OwnedUserId,
    pub device: OwnedDeviceId,
    pub olm: OlmMachine,
    /// Held while the machine's outgoing requests are sent (so none is sent twice).
    pub(crate) outgoing: tokio::sync::Mutex<()>,
    /// Held while a room key is shared and an event encrypted.
    pub(crate) sending: tokio::sync::Mutex<()>,
    last_used: AtomicU64,
    /// The device's `/sync` loop, when inputs come from `/sync`: stopped with the machine.
    sync_task: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Drop for LoadedMachine {
    fn drop(&mut self) {
        if let Some(task) = self
            .sync_task
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

impl LoadedMachine {
    pub(crate) fn set_sync_task(&self, task: tokio::task::AbortHandle) {
        let old = self
            .sync_task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .replace(task);
        if let Some(old) = old {
            old.abort();
        }
    }

    pub(crate) fn new(olm: OlmMachine) -> Self {
        Self {
            user: olm.user_id().to_owned(),
            device: olm.device_id().to_owned(),
            olm,
            outgoing: tokio::sync::Mutex::new(()),
            sending: tokio::sync::Mutex::new(()),
            last_used: AtomicU64::new(0),
            sync_task: Mutex::new(None),
        }
    }
}

impl std::fmt::Debug for LoadedMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedMachine")
            .field("user", &self.user)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

type Slot = Arc<OnceCell<Arc<LoadedMachine>>>;

/// The loaded machines, by owner (one device per user).
pub struct MachinePool {
    slots: Mutex<HashMap<OwnedUserId, Slot>>,
    opener: StoreOpener,
    pinned: OwnedUserId,
    epoch: Instant,
    idle: Duration,
    max: usize,
}

impl MachinePool {
    pub(crate) fn new(
        db: Db,
        secret: StoreSecret,
        pinned: OwnedUserId,
        idle: Duration,
        max: usize,
    ) -> Self {
        Self {
            slots: Mutex::default(),
            opener: StoreOpener::new(db, secret),
            pinned,
            epoch: Instant::now(),
            idle,
            max,
        }
    }

    pub fn opener(&self) -> &StoreOpener {
        &self.opener
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<OwnedUserId, Slot>> {
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn touch(&self, machine: &LoadedMachine) {
        let now = self.epoch.elapsed().as_millis() as u64;
        machine.last_used.store(now, Ordering::Relaxed);
    }

    /// `user`'s machine, loading it with `load` when it is not loaded. Concurrent callers for
    /// one user share one load.
    pub async fn get<F, Fut>(&self, user: &UserId, load: F) -> Result<Arc<LoadedMachine>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Arc<LoadedMachine>>>,
    {
        let slot = self.lock().entry(user.to_owned()).or_default().clone();
        let machine = slot.get_or_try_init(load).await?.clone();
        self.touch(&machine);
        Ok(machine)
    }

    /// `user`'s machine if it is loaded.
    pub fn loaded_for(&self, user: &UserId) -> Option<Arc<LoadedMachine>> {
        let machine = self.lock().get(user)?.get()?.clone();
        self.touch(&machine);
        Some(machine)
    }

    /// Every loaded machine.
    pub fn loaded(&self) -> Vec<Arc<LoadedMachine>> {
        self.lock()
            .values()
            .filter_map(|slot| slot.get().cloned())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Unloads idle machines, then the least recently used beyond the limit. A machine in
    /// use (held outside the pool) or the bot's is never unloaded. Returns how many were.
    pub fn evict(&self) -> usize {
        let now = self.epoch.elapsed().as_millis() as u64;
        let idle_ms = self.idle.as_millis() as u64;
        let mut slots = self.lock();
        let before = slots.len();
        // Free to unload: nobody else holds the slot or the machine.
        let mut candidates: Vec<(u64, OwnedUserId)> = slots
            .iter()
            .filter(|(user, slot)| **user != self.pinned && Arc::strong_count(slot) == 1)
            .filter_map(|(user, slot)| match slot.get() {
                None => Some((0, user.clone())),
                Some(m) if Arc::strong_count(m) == 1 => {
                    Some((m.last_used.load(Ordering::Relaxed), user.clone()))
                }
                Some(_) => None,
            })
            .collect();
        candidates.sort();
        let mut remaining = slots.len();
        for (last_used, user) in candidates {
            if now.saturating_sub(last_used) >= idle_ms || remaining > self.max {
                slots.remove(&user);
                remaining -= 1;
            }
        }
        before - slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pool(idle: Duration, max: usize) -> MachinePool {
        let db = Db::memory().await;
        let secret = StoreSecret::Key(zeroize::Zeroizing::new([7; 32]));
        MachinePool::new(
            db,
            secret,
            ruma::owned_user_id!("@bot:localhost"),
            idle,
            max,
        )
    }

    async fn load(pool: &MachinePool, user: &str) -> Arc<LoadedMachine> {
        let user = OwnedUserId::try_from(user).expect("user id");
        let device = ruma::OwnedDeviceId::from("DEV");
        pool.get(&user, || async {
            let store = pool.opener().open_store(&user, &device).await?;
            let olm = OlmMachine::with_store(&user, &device, store, None).await?;
            Ok(Arc::new(LoadedMachine::new(olm)))
        })
        .await
        .expect("loads")
    }

    #[tokio::test]
    async fn one_machine_per_device_and_idle_ones_are_unloaded_but_not_in_use_or_pinned() {
        let pool = pool(Duration::ZERO, 100).await;
        let bot = load(&pool, "@bot:localhost").await;
        let a = load(&pool, "@a:localhost").await;
        let a_again = load(&pool, "@a:localhost").await;
        assert!(Arc::ptr_eq(&a, &a_again), "one machine per device");
        let keys = a.olm.identity_keys();
        drop(a_again);
        let held = load(&pool, "@held:localhost").await;
        drop((bot, a));
        assert_eq!(pool.len(), 3);
        assert_eq!(pool.evict(), 1, "only @a is idle, unheld and not the bot");
        assert!(pool.loaded_for(ruma::user_id!("@a:localhost")).is_none());
        assert!(pool.loaded_for(ruma::user_id!("@bot:localhost")).is_some());
        assert_eq!(held.user.as_str(), "@held:localhost");
        // Reloaded from its store: the same account, not new keys.
        let a = load(&pool, "@a:localhost").await;
        assert_eq!(a.olm.identity_keys().ed25519, keys.ed25519);
    }

    #[tokio::test]
    async fn beyond_the_limit_the_least_recently_used_go_first() {
        let pool = pool(Duration::from_secs(3600), 2).await;
        for user in ["@bot:localhost", "@old:localhost", "@new:localhost"] {
            drop(load(&pool, user).await);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(pool.evict(), 1);
        assert!(pool.loaded_for(ruma::user_id!("@old:localhost")).is_none());
        assert!(pool.loaded_for(ruma::user_id!("@new:localhost")).is_some());
    }
}

#[cfg(test)]
mod bench {
    //! Figures for the README, not assertions: run with
    //! `cargo test --release -p ferry --lib crypto::machines::bench -- --ignored --nocapture`.

    use std::time::Instant;

    use matrix_sdk_crypto::vodozemac::megolm::{GroupSession, InboundGroupSession, SessionConfig};

    fn rss_kib() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|n| n.parse().ok())
            })
            .unwrap_or(0)
    }

    #[tokio::test]
    #[ignore = "benchmark: prints figures"]
    async fn encrypt_decrypt_cost_and_memory_per_machine() {
        let mut outbound = GroupSession::new(SessionConfig::version_1());
        let mut inbound =
            InboundGroupSession::new(&outbound.session_key(), SessionConfig::version_1());
        let body = r#"{"type":"m.room.message","content":{"msgtype":"m.text","body":"a typical chat message of some sixty bytes"},"room_id":"!r:localhost"}"#;
        let n = 10_000;
        let started = Instant::now();
        let messages: Vec<_> = (0..n).map(|_| outbound.encrypt(body)).collect();
        let encrypt = started.elapsed() / n;
        let started = Instant::now();
        for message in &messages {
            inbound.decrypt(message).expect("decrypts");
        }
        let decrypt = started.elapsed() / n;
        // The same through matrix-sdk-crypto (store lookups, JSON, session bookkeeping): one
        // machine encrypts for a room and decrypts its own events.
        let user = ruma::owned_user_id!("@ghost:localhost");
        let device = ruma::OwnedDeviceId::from("FERRYBENCH");
        let machine = matrix_sdk_crypto::OlmMachine::new(&user, &device).await;
        let room = ruma::owned_room_id!("!bench:localhost");
        machine
            .share_room_key(
                &room,
                std::iter::empty(),
                matrix_sdk_crypto::EncryptionSettings {
                    rotation_period_msgs: 1_000_000,
                    ..Default::default()
                },
            )
            .await
            .expect("session");
        let content: ruma::serde::Raw<ruma::events::AnyMessageLikeEventContent> =
            ruma::serde::Raw::new(
                &serde_json::json!({"msgtype": "m.text", "body": "a typical chat message"}),
            )
            .expect("raw")
            .cast_unchecked();
        let rounds = 2_000u32;
        let started = Instant::now();
        let mut events = Vec::new();
        for i in 0..rounds {
            let encrypted = machine
                .encrypt_room_event_raw(&room, "m.room.message", &content)
                .await
                .expect("encrypts");
            events.push(serde_json::json!({
                "type": "m.room.encrypted", "sender": user, "event_id": format!("$e{i}"),
                "origin_server_ts": 1, "room_id": room,
                "content": encrypted.content.deserialize_as_unchecked::<serde_json::Value>().expect("json"),
            }));
        }
        let sdk_encrypt = started.elapsed() / rounds;
        let settings = matrix_sdk_crypto::DecryptionSettings {
            sender_device_trust_requirement: matrix_sdk_crypto::TrustRequirement::Untrusted,
        };
        let started = Instant::now();
        for event in &events {
            let raw: ruma::serde::Raw<_> =
                ruma::serde::Raw::new(event).expect("raw").cast_unchecked();
            machine
                .decrypt_room_event(&raw, &room, &settings)
                .await
                .expect("decrypts");
        }
        let sdk_decrypt = started.elapsed() / rounds;
        println!("OlmMachine encrypt {sdk_encrypt:?}/msg, decrypt {sdk_decrypt:?}/msg");
        let machines = 500;
        let before = rss_kib();
        let started = Instant::now();
        let mut loaded = Vec::with_capacity(machines);
        for i in 0..machines {
            let user = ruma::OwnedUserId::try_from(format!("@ghost{i}:localhost")).expect("id");
            let device = ruma::OwnedDeviceId::from(format!("FERRY{i}"));
            loaded.push(matrix_sdk_crypto::OlmMachine::new(&user, &device).await);
        }
        let create = started.elapsed() / machines as u32;
        let per_machine = rss_kib().saturating_sub(before) / machines as u64;
        println!(
            "megolm encrypt {encrypt:?}/msg, decrypt {decrypt:?}/msg; OlmMachine (memory store) \
             create {create:?}, RSS {per_machine} KiB per loaded machine ({machines} loaded)"
        );
        assert_eq!(loaded.len(), machines);
    }
}
