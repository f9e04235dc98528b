//! matrix-sdk-crypto's `CryptoStore` over ferry's own database (SQLite or Postgres).
//!
//! Why: the bridge runs one `OlmMachine` per device (the bot's and one per ghost); keeping their
//! Olm/Megolm state in ferry's database keeps one backup, one migration path and one place to
//! look, instead of a SQLite file per device (and matrix-sdk-sqlite cannot share a build with
//! sqlx's SQLite anyway, see shared/notes/e2ee.md).
//!
//! Shape: every machine gets a [`SqlCryptoStore`] for its (user id, device id); all machines
//! share the `crypto_*` tables (migrations `0003_crypto.sql`), whose primary keys start with
//! that pair, so machines never see each other's rows. `save_changes` writes one database
//! transaction, so a machine's state on disk is always one of its saved states, and several
//! machines saving at once only wait for each other (SQLite) or not at all (Postgres).
//!
//! Secrets at rest: pickles, secrets and keys are encrypted with a [`StoreKey`]. The caller opens
//! it once at start-up with [`StoreKey::load_or_create`] from the pickle passphrase in the
//! configuration ([`StoreSecret::Passphrase`]) and clones it into every store. Ids (users,
//! devices, rooms, sessions, Curve25519 keys) stay readable: other tables hold them anyway and
//! the queries filter on them.
//!
//! ```ignore
//! let key = StoreKey::load_or_create(&db, StoreSecret::Passphrase(passphrase)).await?;
//! let store = SqlCryptoStore::open(db.clone(), key.clone(), user_id, device_id);
//! let machine = OlmMachine::with_store(user_id, device_id, store, None).await?;
//! ```

mod cipher;
mod error;
mod read;
mod save;
mod trait_impl;

use std::sync::{
    Arc, RwLock,
    atomic::{AtomicBool, Ordering},
};

use matrix_sdk_crypto::olm::StaticAccountData;
use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, UserId};
use sqlx::AnyPool;
use tokio::sync::Mutex;

pub use cipher::{StoreKey, StoreSecret};
use error::Result;
pub use error::SqlCryptoStoreError;

use crate::db::Db;

/// Every table that holds per-device rows (for size accounting and deletion).
const DEVICE_TABLES: &[(&str, &str)] = &[
    ("crypto_kv", "data"),
    ("crypto_olm_session", "pickle"),
    ("crypto_inbound_group_session", "pickle"),
    ("crypto_outbound_group_session", "pickle"),
    ("crypto_device", "data"),
    ("crypto_identity", "data"),
    ("crypto_olm_hash", "hash"),
    ("crypto_tracked_user", "user_id"),
    ("crypto_key_request", "data"),
    ("crypto_withheld", "data"),
    ("crypto_room_settings", "data"),
    ("crypto_secret_inbox", "data"),
    ("crypto_room_key_bundle", "data"),
    ("crypto_room_backup_downloaded", "room_id"),
    ("crypto_room_pending_key_bundle", "data"),
    ("crypto_custom_value", "data"),
    ("crypto_lease_lock", "holder"),
];

/// The crypto store of one device. Cheap to clone (clones share the account cache and the save
/// lock); open one per device and hand it to `OlmMachine::with_store`.
#[derive(Clone)]
pub struct SqlCryptoStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    key: StoreKey,
    own_user: OwnedUserId,
    own_device: OwnedDeviceId,
    /// Set by `load_account` / `save_pending_changes`: the account's ids and identity keys,
    /// which unpickling outbound group sessions needs.
    static_account: RwLock<Option<StaticAccountData>>,
    /// One `save_changes` at a time per device: the machine pickles while it saves, and two
    /// interleaved saves could write an older pickle last.
    save_lock: Mutex<()>,
    closed: AtomicBool,
}

impl std::fmt::Debug for SqlCryptoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlCryptoStore")
            .field("user_id", &self.inner.own_user)
            .field("device_id", &self.inner.own_device)
            .finish_non_exhaustive()
    }
}

impl SqlCryptoStore {
    /// The store of `device_id` of `user_id` in `db`. Opening costs nothing: rows are read when
    /// the machine asks. The account is created by `OlmMachine::with_store` on first use.
    pub fn open(db: Db, key: StoreKey, user_id: &UserId, device_id: &DeviceId) -> Self {
        Self {
            inner: Arc::new(Inner {
                db,
                key,
                own_user: user_id.to_owned(),
                own_device: device_id.to_owned(),
                static_account: RwLock::new(None),
                save_lock: Mutex::new(()),
                closed: AtomicBool::new(false),
            }),
        }
    }

    pub fn user_id(&self) -> &UserId {
        &self.inner.own_user
    }

    pub fn device_id(&self) -> &DeviceId {
        &self.inner.own_device
    }

    /// The account's static data once it was loaded or saved through this store.
    pub fn get_static_account(&self) -> Option<StaticAccountData> {
        self.inner
            .static_account
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn set_static_account(&self, data: StaticAccountData) {
        *self
            .inner
            .static_account
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(data);
    }

    /// Deletes everything stored for this device (when the device itself is deleted).
    pub async fn delete_all(&self) -> Result<()> {
        let _guard = self.inner.save_lock.lock().await;
        let mut tx = self.pool()?.begin().await?;
        for (table, _) in DEVICE_TABLES {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE own_user = $1 AND own_device = $2"
            )))
            .bind(self.own_user())
            .bind(self.own_device())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        *self
            .inner
            .static_account
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
        Ok(())
    }

    /// Bytes of stored payload (encrypted values, hashes) this device holds, without ids and
    /// index overhead.
    pub async fn payload_size(&self) -> Result<u64> {
        let sum = DEVICE_TABLES
            .iter()
            .map(|(table, column)| {
                format!(
                    "(SELECT COALESCE(SUM(LENGTH({column})), 0) FROM {table} \
                     WHERE own_user = $1 AND own_device = $2)"
                )
            })
            .collect::<Vec<_>>()
            .join(" + ");
        let (size,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {sum}")))
            .bind(self.own_user())
            .bind(self.own_device())
            .fetch_one(self.pool()?)
            .await?;
        Ok(u64::try_from(size).unwrap_or(0))
    }

    fn pool(&self) -> Result<&AnyPool> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(SqlCryptoStoreError::Closed);
        }
        Ok(self.inner.db.pool())
    }

    fn key(&self) -> &StoreKey {
        &self.inner.key
    }

    fn own_user(&self) -> &str {
        self.inner.own_user.as_str()
    }

    fn own_device(&self) -> &str {
        self.inner.own_device.as_str()
    }
}
