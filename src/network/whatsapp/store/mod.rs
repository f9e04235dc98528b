//! whatsapp-rust's store (wacore's `Backend`) over ferry's own database.
//!
//! whatsapp-rust ships a SQLite store, but it links a second libsqlite3-sys that cannot share a
//! build with sqlx's, and it would put WhatsApp state in a file beside ferry's database. So ferry
//! implements the five store traits itself, over the same sqlx pool (SQLite or Postgres), in one
//! table `whatsapp_store` (migration 0006): each of the library's maps is a `kind`, with an
//! optional `scope` (app-state collection, group, chat) and a `name` (the map's key).
//!
//! One [`WaStore`] is one WhatsApp device: its rows carry a random store id that the login's
//! secret holds, so any number of Matrix users can link their own devices and one login never
//! sees another's keys. Rows holding private keys or message plaintext (the device with its
//! identity and noise keys and ADV secret, Signal sessions, pre-keys, sender keys, app-state
//! keys, message secrets, buffered messages) are encrypted with ferry's [`StoreKey`]; a value
//! that does not decrypt is an error that names the kind of row, never its content.
//!
//! The semantics follow wacore's `InMemoryBackend`; `tests/wa_store.rs` checks each method on
//! both databases.

mod appsync;
mod device;
mod protocol;
mod signal;

use std::sync::Arc;

use sqlx::Row as _;
use whatsapp_rust::wacore::store::error::StoreError;

use crate::{
    crypto::store::StoreKey,
    db::{Db, now_ms},
};

/// Why a store operation failed (converted into wacore's `StoreError` at the trait boundary).
#[derive(Debug, thiserror::Error)]
pub enum WaStoreError {
    #[error("WhatsApp store database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("WhatsApp store {what} cannot be sealed or opened: {reason}")]
    Cipher { what: &'static str, reason: String },
    #[error("stored WhatsApp {what} is unreadable: {reason}")]
    Corrupt { what: &'static str, reason: String },
}

impl From<WaStoreError> for StoreError {
    fn from(err: WaStoreError) -> Self {
        match err {
            WaStoreError::Db(e) => StoreError::Database(Box::new(e)),
            other => StoreError::Serialization(Box::new(other)),
        }
    }
}

pub(crate) type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The kinds of rows (one per map of the library's store).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    Device,
    Identity,
    Session,
    PreKey,
    SignedPreKey,
    SenderKey,
    SyncKey,
    LatestSyncKey,
    Version,
    MutationMac,
    SenderKeyDevice,
    Lid,
    Pn,
    BaseKey,
    DeviceList,
    GroupMeta,
    TcToken,
    SentMessage,
    PendingInbound,
    MsgSecret,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Device => "device",
            Self::Identity => "identity",
            Self::Session => "session",
            Self::PreKey => "prekey",
            Self::SignedPreKey => "signed_prekey",
            Self::SenderKey => "sender_key",
            Self::SyncKey => "sync_key",
            Self::LatestSyncKey => "latest_sync_key",
            Self::Version => "version",
            Self::MutationMac => "mutation_mac",
            Self::SenderKeyDevice => "sender_key_device",
            Self::Lid => "lid",
            Self::Pn => "pn",
            Self::BaseKey => "base_key",
            Self::DeviceList => "device_list",
            Self::GroupMeta => "group_meta",
            Self::TcToken => "tc_token",
            Self::SentMessage => "sent_message",
            Self::PendingInbound => "pending_inbound",
            Self::MsgSecret => "msg_secret",
        }
    }

    /// Whether values of this kind are encrypted at rest.
    fn sealed(self) -> bool {
        matches!(
            self,
            Self::Device
                | Self::Session
                | Self::PreKey
                | Self::SignedPreKey
                | Self::SenderKey
                | Self::SyncKey
                | Self::SentMessage
                | Self::PendingInbound
                | Self::MsgSecret
        )
    }
}

/// One stored row as the store reads it back.
#[derive(Debug)]
pub(crate) struct Entry {
    pub scope: String,
    pub name: String,
    pub value: Vec<u8>,
    pub num: i64,
    pub aux: i64,
}

/// One WhatsApp device's store.
#[derive(Clone)]
pub struct WaStore {
    db: Db,
    key: StoreKey,
    id: Arc<str>,
    /// Serialises the read-modify-write updates of trusted-contact tokens (the library asks
    /// for them to be atomic).
    tc_lock: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for WaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaStore").field("id", &self.id).finish()
    }
}

impl WaStore {
    /// The store named `id` (a device's rows; empty until the library saves something).
    pub fn open(db: Db, key: StoreKey, id: &str) -> Self {
        Self {
            db,
            key,
            id: Arc::from(id),
            tc_lock: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// A new random store id.
    pub fn new_id() -> String {
        format!("wa-{}", hex::encode(rand::random::<[u8; 16]>()))
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Removes every row of this store (after the device was unlinked).
    pub async fn destroy(&self) -> Result<(), WaStoreError> {
        sqlx::query("DELETE FROM whatsapp_store WHERE store_id = $1")
            .bind(&*self.id)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// How many rows this store holds (diagnostics and tests).
    pub async fn row_count(&self) -> Result<i64, WaStoreError> {
        let row = sqlx::query("SELECT COUNT(*) FROM whatsapp_store WHERE store_id = $1")
            .bind(&*self.id)
            .fetch_one(self.db.pool())
            .await?;
        Ok(row.try_get::<i64, _>(0)?)
    }

    fn seal(&self, kind: Kind, value: &[u8]) -> Result<Vec<u8>, WaStoreError> {
        if !kind.sealed() {
            return Ok(value.to_vec());
        }
        self.key
            .encrypt_bytes(kind.as_str(), value.to_vec())
            .map_err(|e| WaStoreError::Cipher {
                what: kind.as_str(),
                reason: e.to_string(),
            })
    }

    fn open_value(&self, kind: Kind, value: Vec<u8>) -> Result<Vec<u8>, WaStoreError> {
        if !kind.sealed() {
            return Ok(value);
        }
        self.key
            .decrypt_bytes(kind.as_str(), &value)
            .map_err(|e| WaStoreError::Cipher {
                what: kind.as_str(),
                reason: e.to_string(),
            })
    }

    /// Inserts or replaces one row.
    pub(crate) async fn put(
        &self,
        kind: Kind,
        scope: &str,
        name: &str,
        value: &[u8],
        num: i64,
        aux: i64,
    ) -> Result<()> {
        let sealed = self.seal(kind, value)?;
        sqlx::query(UPSERT)
            .bind(&*self.id)
            .bind(kind.as_str())
            .bind(scope)
            .bind(name)
            .bind(sealed)
            .bind(num)
            .bind(aux)
            .bind(now_ms())
            .execute(self.db.pool())
            .await
            .map_err(WaStoreError::from)?;
        Ok(())
    }

    /// Inserts or replaces many rows of one kind in one transaction.
    pub(crate) async fn put_many<'a>(
        &self,
        kind: Kind,
        rows: impl IntoIterator<Item = (&'a str, &'a str, &'a [u8], i64, i64)>,
    ) -> Result<()> {
        let mut sealed = Vec::new();
        for (scope, name, value, num, aux) in rows {
            sealed.push((scope, name, self.seal(kind, value)?, num, aux));
        }
        if sealed.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let mut tx = self.db.pool().begin().await.map_err(WaStoreError::from)?;
        for (scope, name, value, num, aux) in sealed {
            sqlx::query(UPSERT)
                .bind(&*self.id)
                .bind(kind.as_str())
                .bind(scope)
                .bind(name)
                .bind(value)
                .bind(num)
                .bind(aux)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(WaStoreError::from)?;
        }
        tx.commit().await.map_err(WaStoreError::from)?;
        Ok(())
    }

    /// One row, decrypted.
    pub(crate) async fn get(&self, kind: Kind, scope: &str, name: &str) -> Result<Option<Entry>> {
        let row = sqlx::query(
            "SELECT scope, name, value, num, aux FROM whatsapp_store \
             WHERE store_id = $1 AND kind = $2 AND scope = $3 AND name = $4",
        )
        .bind(&*self.id)
        .bind(kind.as_str())
        .bind(scope)
        .bind(name)
        .fetch_optional(self.db.pool())
        .await
        .map_err(WaStoreError::from)?;
        row.map(|r| self.entry(kind, &r)).transpose()
    }

    /// Every row of a kind (in one scope, when given), decrypted.
    pub(crate) async fn all(&self, kind: Kind, scope: Option<&str>) -> Result<Vec<Entry>> {
        let rows = match scope {
            Some(scope) => {
                sqlx::query(
                    "SELECT scope, name, value, num, aux FROM whatsapp_store \
                     WHERE store_id = $1 AND kind = $2 AND scope = $3 ORDER BY name",
                )
                .bind(&*self.id)
                .bind(kind.as_str())
                .bind(scope)
                .fetch_all(self.db.pool())
                .await
            }
            None => {
                sqlx::query(
                    "SELECT scope, name, value, num, aux FROM whatsapp_store \
                     WHERE store_id = $1 AND kind = $2 ORDER BY scope, name",
                )
                .bind(&*self.id)
                .bind(kind.as_str())
                .fetch_all(self.db.pool())
                .await
            }
        }
        .map_err(WaStoreError::from)?;
        rows.iter().map(|r| self.entry(kind, r)).collect()
    }

    fn entry(&self, kind: Kind, row: &sqlx::any::AnyRow) -> Result<Entry> {
        let value: Vec<u8> = row.try_get(2).map_err(WaStoreError::from)?;
        Ok(Entry {
            scope: row.try_get(0).map_err(WaStoreError::from)?,
            name: row.try_get(1).map_err(WaStoreError::from)?,
            value: self.open_value(kind, value)?,
            num: row.try_get(3).map_err(WaStoreError::from)?,
            aux: row.try_get(4).map_err(WaStoreError::from)?,
        })
    }

    /// Deletes one row; true when there was one.
    pub(crate) async fn delete(&self, kind: Kind, scope: &str, name: &str) -> Result<bool> {
        let done = sqlx::query(
            "DELETE FROM whatsapp_store \
             WHERE store_id = $1 AND kind = $2 AND scope = $3 AND name = $4",
        )
        .bind(&*self.id)
        .bind(kind.as_str())
        .bind(scope)
        .bind(name)
        .execute(self.db.pool())
        .await
        .map_err(WaStoreError::from)?;
        Ok(done.rows_affected() > 0)
    }

    /// Deletes every row of a kind (in one scope, when given).
    pub(crate) async fn delete_all(&self, kind: Kind, scope: Option<&str>) -> Result<u64> {
        let done =
            match scope {
                Some(scope) => sqlx::query(
                    "DELETE FROM whatsapp_store WHERE store_id = $1 AND kind = $2 AND scope = $3",
                )
                .bind(&*self.id)
                .bind(kind.as_str())
                .bind(scope)
                .execute(self.db.pool())
                .await,
                None => {
                    sqlx::query("DELETE FROM whatsapp_store WHERE store_id = $1 AND kind = $2")
                        .bind(&*self.id)
                        .bind(kind.as_str())
                        .execute(self.db.pool())
                        .await
                }
            }
            .map_err(WaStoreError::from)?;
        Ok(done.rows_affected())
    }

    /// Deletes rows of a kind whose `num` is below `cutoff` and not `keep` (a "never" marker).
    pub(crate) async fn delete_num_below(
        &self,
        kind: Kind,
        cutoff: i64,
        keep: Option<i64>,
    ) -> Result<u32> {
        let done = sqlx::query(
            "DELETE FROM whatsapp_store \
             WHERE store_id = $1 AND kind = $2 AND num < $3 AND num <> $4",
        )
        .bind(&*self.id)
        .bind(kind.as_str())
        .bind(cutoff)
        .bind(keep.unwrap_or(i64::MIN))
        .execute(self.db.pool())
        .await
        .map_err(WaStoreError::from)?;
        Ok(u32::try_from(done.rows_affected()).unwrap_or(u32::MAX))
    }

    /// Sets `aux` of existing rows (never inserts).
    pub(crate) async fn set_aux(&self, kind: Kind, names: &[String], aux: i64) -> Result<()> {
        let mut tx = self.db.pool().begin().await.map_err(WaStoreError::from)?;
        for name in names {
            sqlx::query(
                "UPDATE whatsapp_store SET aux = $1 \
                 WHERE store_id = $2 AND kind = $3 AND scope = '' AND name = $4",
            )
            .bind(aux)
            .bind(&*self.id)
            .bind(kind.as_str())
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(WaStoreError::from)?;
        }
        tx.commit().await.map_err(WaStoreError::from)?;
        Ok(())
    }

    /// The largest `num` of a kind, or 0.
    pub(crate) async fn max_num(&self, kind: Kind) -> Result<i64> {
        let row = sqlx::query(
            "SELECT COALESCE(MAX(num), 0) FROM whatsapp_store WHERE store_id = $1 AND kind = $2",
        )
        .bind(&*self.id)
        .bind(kind.as_str())
        .fetch_one(self.db.pool())
        .await
        .map_err(WaStoreError::from)?;
        Ok(row.try_get::<i64, _>(0).map_err(WaStoreError::from)?)
    }

    /// Whether any row of `kinds` has a name starting with `prefix` followed by one of `seps`.
    pub(crate) async fn any_name_with_prefix(&self, kinds: &[Kind], prefix: &str) -> Result<bool> {
        // LIKE patterns need their wildcards escaped; JIDs hold neither % nor _ normally,
        // but a user part is input from the network, so escape anyway.
        let escaped: String = prefix
            .chars()
            .flat_map(|c| match c {
                '%' | '_' | '\\' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        for kind in kinds {
            let row = sqlx::query(
                "SELECT COUNT(*) FROM whatsapp_store WHERE store_id = $1 AND kind = $2 \
                 AND (name LIKE $3 ESCAPE '\\' OR name LIKE $4 ESCAPE '\\')",
            )
            .bind(&*self.id)
            .bind(kind.as_str())
            .bind(format!("{escaped}@%"))
            .bind(format!("{escaped}:%"))
            .fetch_one(self.db.pool())
            .await
            .map_err(WaStoreError::from)?;
            if row.try_get::<i64, _>(0).map_err(WaStoreError::from)? > 0 {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

const UPSERT: &str = "INSERT INTO whatsapp_store \
    (store_id, kind, scope, name, value, num, aux, updated_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
    ON CONFLICT (store_id, kind, scope, name) DO UPDATE SET \
    value = excluded.value, num = excluded.num, aux = excluded.aux, \
    updated_at = excluded.updated_at";

/// Serialises a value for a row.
pub(crate) fn to_json<T: serde::Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| {
        WaStoreError::Corrupt {
            what,
            reason: e.to_string(),
        }
        .into()
    })
}

/// Reads back what [`to_json`] wrote.
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(
    what: &'static str,
    data: &[u8],
) -> Result<T> {
    serde_json::from_slice(data).map_err(|e| {
        WaStoreError::Corrupt {
            what,
            reason: e.to_string(),
        }
        .into()
    })
}

/// Unix seconds now.
pub(crate) fn now_secs() -> i64 {
    now_ms() / 1000
}
