//! Writing: `save_changes` and friends, each as one database transaction.
//!
//! Everything is pickled and encrypted before the transaction opens, so the transaction holds
//! the database (SQLite's single writer) only for the statements themselves.

use matrix_sdk_crypto::{
    Account,
    olm::InboundGroupSession,
    store::types::{Changes, PendingChanges},
};
use ruma::{RoomId, UserId};
use sqlx::{Any, Transaction};

use super::{SqlCryptoStore, SqlCryptoStoreError, error::Result};

pub(super) const KV_ACCOUNT: &str = "account";
pub(super) const KV_IDENTITY: &str = "identity";
pub(super) const KV_NEXT_BATCH: &str = "next_batch_token";
pub(super) const KV_BACKUP_KEY: &str = "backup_decryption_key";
pub(super) const KV_BACKUP_VERSION: &str = "backup_version";
pub(super) const KV_DEHYDRATED_KEY: &str = "dehydrated_device_pickle_key";

/// An inbound group session ready to write.
struct InboundRow {
    room_id: String,
    session_id: String,
    sender_key: String,
    sender_data_type: i64,
    backed_up: bool,
    pickle: Vec<u8>,
}

impl SqlCryptoStore {
    pub(super) async fn save_account(&self, changes: PendingChanges) -> Result<()> {
        let Some(account) = changes.account else {
            return Ok(());
        };
        self.check_owner(&account)?;
        let _guard = self.inner.save_lock.lock().await;
        let data = self.key().encrypt("account", &account.pickle())?;
        let mut tx = self.pool()?.begin().await?;
        self.kv_put(&mut tx, KV_ACCOUNT, data).await?;
        tx.commit().await?;
        self.set_static_account(account.static_data().clone());
        Ok(())
    }

    fn check_owner(&self, account: &Account) -> Result<()> {
        let data = account.static_data();
        if data.user_id != self.inner.own_user || data.device_id != self.inner.own_device {
            return Err(SqlCryptoStoreError::MismatchedAccount {
                expected_user: self.inner.own_user.clone(),
                expected_device: self.inner.own_device.clone(),
                got_user: data.user_id.clone(),
                got_device: data.device_id.clone(),
            });
        }
        Ok(())
    }

    async fn inbound_rows(&self, sessions: Vec<InboundGroupSession>) -> Result<Vec<InboundRow>> {
        let mut rows = Vec::with_capacity(sessions.len());
        for session in sessions {
            let pickle = session.pickle().await;
            rows.push(InboundRow {
                room_id: session.room_id().to_string(),
                session_id: session.session_id().to_owned(),
                sender_key: session.sender_key().to_base64(),
                sender_data_type: pickle.sender_data.to_type() as i64,
                backed_up: pickle.backed_up,
                pickle: self.key().encrypt("inbound group session", &pickle)?,
            });
        }
        Ok(rows)
    }

    /// Writes inbound group sessions. `backed_up_to`: the backup version they are known to be
    /// in (an import from that backup); `None` keeps what is recorded for sessions whose own
    /// flag says backed up, and clears it for the others.
    async fn put_inbound(
        &self,
        tx: &mut Transaction<'_, Any>,
        rows: &[InboundRow],
        backed_up_to: Option<&str>,
    ) -> Result<()> {
        for row in rows {
            sqlx::query(
                "INSERT INTO crypto_inbound_group_session \
                 (own_user, own_device, room_id, session_id, sender_key, sender_data_type, \
                  backed_up_to, pickle) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (own_user, own_device, room_id, session_id) DO UPDATE SET \
                 sender_key = excluded.sender_key, \
                 sender_data_type = excluded.sender_data_type, \
                 pickle = excluded.pickle, \
                 backed_up_to = CASE \
                    WHEN excluded.backed_up_to IS NOT NULL \
                         AND excluded.backed_up_to <> '' THEN excluded.backed_up_to \
                    WHEN excluded.backed_up_to = '' \
                         THEN COALESCE(crypto_inbound_group_session.backed_up_to, '') \
                    ELSE NULL END",
            )
            .bind(self.own_user())
            .bind(self.own_device())
            .bind(&row.room_id)
            .bind(&row.session_id)
            .bind(&row.sender_key)
            .bind(row.sender_data_type)
            // '' = "backed up, version not known here"; an existing version is kept.
            .bind(match backed_up_to {
                Some(version) => Some(version.to_owned()),
                None if row.backed_up => Some(String::new()),
                None => None,
            })
            .bind(&row.pickle)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    pub(super) async fn save_inbound(
        &self,
        sessions: Vec<InboundGroupSession>,
        backed_up_to: Option<&str>,
    ) -> Result<()> {
        let rows = self.inbound_rows(sessions).await?;
        let _guard = self.inner.save_lock.lock().await;
        let mut tx = self.pool()?.begin().await?;
        self.put_inbound(&mut tx, &rows, backed_up_to).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn mark_backed_up(
        &self,
        version: &str,
        sessions: &[(&RoomId, &str)],
    ) -> Result<()> {
        let _guard = self.inner.save_lock.lock().await;
        let mut tx = self.pool()?.begin().await?;
        for (room_id, session_id) in sessions {
            sqlx::query(
                "UPDATE crypto_inbound_group_session SET backed_up_to = $5 \
                 WHERE own_user = $1 AND own_device = $2 AND room_id = $3 AND session_id = $4",
            )
            .bind(self.own_user())
            .bind(self.own_device())
            .bind(room_id.as_str())
            .bind(*session_id)
            .bind(version)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn save_tracked(&self, users: &[(&UserId, bool)]) -> Result<()> {
        let _guard = self.inner.save_lock.lock().await;
        let mut tx = self.pool()?.begin().await?;
        for (user_id, dirty) in users {
            sqlx::query(
                "INSERT INTO crypto_tracked_user (own_user, own_device, user_id, dirty) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (own_user, own_device, user_id) \
                 DO UPDATE SET dirty = excluded.dirty",
            )
            .bind(self.own_user())
            .bind(self.own_device())
            .bind(user_id.as_str())
            .bind(i64::from(*dirty))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn kv_put(
        &self,
        tx: &mut Transaction<'_, Any>,
        key: &str,
        data: Vec<u8>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO crypto_kv (own_user, own_device, key, data) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (own_user, own_device, key) DO UPDATE SET data = excluded.data",
        )
        .bind(self.own_user())
        .bind(self.own_device())
        .bind(key)
        .bind(data)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Runs `sql` with the owner as `$1, $2` and `args` (all text or bytes) after it.
    async fn exec(
        &self,
        tx: &mut Transaction<'_, Any>,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> Result<()> {
        let mut query = sqlx::query(sql)
            .bind(self.own_user())
            .bind(self.own_device());
        for arg in args {
            query = match arg {
                Arg::Text(t) => query.bind(*t),
                Arg::Bytes(b) => query.bind(*b),
                Arg::Int(i) => query.bind(*i),
            };
        }
        query.execute(&mut **tx).await?;
        Ok(())
    }

    pub(super) async fn save_all(&self, changes: Changes) -> Result<()> {
        if changes.is_empty()
            && changes.room_key_backups_fully_downloaded.is_empty()
            && changes.rooms_pending_key_bundle.is_empty()
        {
            return Ok(());
        }
        let _guard = self.inner.save_lock.lock().await;
        let key = self.key();

        // Pickle and encrypt first.
        let mut kv = Vec::new();
        if let Some(identity) = &changes.private_identity {
            kv.push((
                KV_IDENTITY,
                key.encrypt("identity", &identity.pickle().await)?,
            ));
        }
        if let Some(token) = &changes.next_batch_token {
            kv.push((KV_NEXT_BATCH, key.encrypt("next batch token", token)?));
        }
        if let Some(backup_key) = &changes.backup_decryption_key {
            kv.push((KV_BACKUP_KEY, key.encrypt("backup key", backup_key)?));
        }
        if let Some(version) = &changes.backup_version {
            kv.push((KV_BACKUP_VERSION, key.encrypt("backup version", version)?));
        }
        if let Some(pickle_key) = &changes.dehydrated_device_pickle_key {
            kv.push((
                KV_DEHYDRATED_KEY,
                key.encrypt("dehydrated device key", pickle_key)?,
            ));
        }
        let mut sessions = Vec::with_capacity(changes.sessions.len());
        for session in &changes.sessions {
            let pickle = session.pickle().await;
            sessions.push((
                session.session_id().to_owned(),
                session.sender_key().to_base64(),
                key.encrypt("Olm session", &pickle)?,
            ));
        }
        let inbound = self.inbound_rows(changes.inbound_group_sessions).await?;
        let mut outbound = Vec::with_capacity(changes.outbound_group_sessions.len());
        for session in &changes.outbound_group_sessions {
            outbound.push((
                session.room_id().to_string(),
                key.encrypt("outbound group session", &session.pickle().await)?,
            ));
        }
        let mut devices = Vec::new();
        for device in changes.devices.new.iter().chain(&changes.devices.changed) {
            devices.push((
                device.user_id().to_string(),
                device.device_id().to_string(),
                key.encrypt("device", device)?,
            ));
        }
        let deleted: Vec<_> = changes
            .devices
            .deleted
            .iter()
            .map(|d| (d.user_id().to_string(), d.device_id().to_string()))
            .collect();
        let mut identities = Vec::new();
        for identity in changes
            .identities
            .new
            .iter()
            .chain(&changes.identities.changed)
        {
            identities.push((
                identity.user_id().to_string(),
                key.encrypt("user identity", identity)?,
            ));
        }
        let mut requests = Vec::with_capacity(changes.key_requests.len());
        for request in &changes.key_requests {
            requests.push((
                request.request_id.to_string(),
                i64::from(request.sent_out),
                key.encrypt("key request", request)?,
            ));
        }
        let mut withheld = Vec::new();
        for (room_id, entries) in &changes.withheld_session_info {
            for (session_id, entry) in entries {
                withheld.push((
                    room_id.to_string(),
                    session_id.clone(),
                    key.encrypt("withheld info", entry)?,
                ));
            }
        }
        let mut settings = Vec::with_capacity(changes.room_settings.len());
        for (room_id, value) in &changes.room_settings {
            settings.push((room_id.to_string(), key.encrypt("room settings", value)?));
        }
        let mut secrets = Vec::with_capacity(changes.secrets.len());
        for secret in &changes.secrets {
            secrets.push((
                secret.secret_name.to_string(),
                key.encrypt("secret", secret.secret.as_str())?,
            ));
        }
        let mut bundles = Vec::with_capacity(changes.received_room_key_bundles.len());
        for bundle in &changes.received_room_key_bundles {
            bundles.push((
                bundle.bundle_data.room_id.to_string(),
                bundle.sender_user.to_string(),
                key.encrypt("room key bundle", bundle)?,
            ));
        }
        let mut pending = Vec::with_capacity(changes.rooms_pending_key_bundle.len());
        for (room_id, details) in &changes.rooms_pending_key_bundle {
            let data = match details {
                Some(d) => Some(key.encrypt("pending key bundle", d)?),
                None => None,
            };
            pending.push((room_id.to_string(), data));
        }

        let mut tx = self.pool()?.begin().await?;
        for (name, data) in kv {
            self.kv_put(&mut tx, name, data).await?;
        }
        for (session_id, sender_key, pickle) in &sessions {
            self.exec(
                &mut tx,
                "INSERT INTO crypto_olm_session (own_user, own_device, session_id, sender_key, \
                 pickle) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (own_user, own_device, session_id) DO UPDATE SET \
                 sender_key = excluded.sender_key, pickle = excluded.pickle",
                &[
                    Arg::Text(session_id),
                    Arg::Text(sender_key),
                    Arg::Bytes(pickle),
                ],
            )
            .await?;
        }
        self.put_inbound(&mut tx, &inbound, None).await?;
        for (room_id, pickle) in &outbound {
            self.exec(
                &mut tx,
                "INSERT INTO crypto_outbound_group_session (own_user, own_device, room_id, \
                 pickle) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (own_user, own_device, room_id) DO UPDATE SET pickle = excluded.pickle",
                &[Arg::Text(room_id), Arg::Bytes(pickle)],
            )
            .await?;
        }
        for (user_id, device_id, data) in &devices {
            self.exec(
                &mut tx,
                "INSERT INTO crypto_device (own_user, own_device, user_id, device_id, data) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (own_user, own_device, user_id, device_id) \
                 DO UPDATE SET data = excluded.data",
                &[Arg::Text(user_id), Arg::Text(device_id), Arg::Bytes(data)],
            )
            .await?;
        }
        for (user_id, device_id) in &deleted {
            self.exec(
                &mut tx,
                "DELETE FROM crypto_device WHERE own_user = $1 AND own_device = $2 \
                 AND user_id = $3 AND device_id = $4",
                &[Arg::Text(user_id), Arg::Text(device_id)],
            )
            .await?;
        }
        for (user_id, data) in &identities {
            self.exec(
                &mut tx,
                "INSERT INTO crypto_identity (own_user, own_device, user_id, data) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (own_user, own_device, user_id) \
                 DO UPDATE SET data = excluded.data",
                &[Arg::Text(user_id), Arg::Bytes(data)],
            )
            .await?;
        }
        for hash in &changes.message_hashes {
            self.exec(
                &mut tx,
                "INSERT INTO crypto_olm_hash (own_user, own_device, sender_key, hash) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                &[Arg::Text(&hash.sender_key), Arg::Text(&hash.hash)],
            )
            .await?;
        }
        for (request_id, sent_out, data) in &requests {
            self.exec(
                &mut tx,
                "INSERT INTO crypto_key_request (own_user, own_device, request_id, sent_out, \
                 data) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (own_user, own_device, request_id) DO UPDATE SET \
                 sent_out = excluded.sent_out, data = excluded.data",
                &[Arg::Text(request_id), Arg::Int(*sent_out), Arg::Bytes(data)],
            )
            .await?;
        }
        for (room_id, session_id, data) in &withheld {
            self.exec(
                &mut tx,
                "INSERT INTO crypto_withheld (own_user, own_device, room_id, session_id, data) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (own_user, own_device, room_id, session_id) \
                 DO UPDATE SET data = excluded.data",
                &[Arg::Text(room_id), Arg::Text(session_id), Arg::Bytes(data)],
            )
            .await?;
        }
        for (room_id, data) in &settings {
            self.exec(
                &mut tx,
                "INSERT INTO crypto_room_settings (own_user, own_device, room_id, data) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (own_user, own_device, room_id) \
                 DO UPDATE SET data = excluded.data",
                &[Arg::Text(room_id), Arg::Bytes(data)],
            )
            .await?;
        }
        for (name, data) in &secrets {
            self.exec(
                &mut tx,
                "INSERT INTO crypto_secret_inbox (own_user, own_device, secret_name, data) \
                 VALUES ($1, $2, $3, $4)",
                &[Arg::Text(name), Arg::Bytes(data)],
            )
            .await?;
        }
        for (room_id, sender, data) in &bundles {
            self.exec(
                &mut tx,
                "INSERT INTO crypto_room_key_bundle (own_user, own_device, room_id, sender_user, \
                 data) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (own_user, own_device, room_id, sender_user) \
                 DO UPDATE SET data = excluded.data",
                &[Arg::Text(room_id), Arg::Text(sender), Arg::Bytes(data)],
            )
            .await?;
        }
        for room_id in &changes.room_key_backups_fully_downloaded {
            self.exec(
                &mut tx,
                "INSERT INTO crypto_room_backup_downloaded (own_user, own_device, room_id) \
                 VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[Arg::Text(room_id.as_str())],
            )
            .await?;
        }
        for (room_id, data) in &pending {
            match data {
                Some(data) => {
                    self.exec(
                        &mut tx,
                        "INSERT INTO crypto_room_pending_key_bundle (own_user, own_device, \
                         room_id, data) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (own_user, own_device, room_id) \
                         DO UPDATE SET data = excluded.data",
                        &[Arg::Text(room_id), Arg::Bytes(data)],
                    )
                    .await?;
                }
                None => {
                    self.exec(
                        &mut tx,
                        "DELETE FROM crypto_room_pending_key_bundle WHERE own_user = $1 \
                         AND own_device = $2 AND room_id = $3",
                        &[Arg::Text(room_id)],
                    )
                    .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }
}

/// A bind argument after the owner pair.
enum Arg<'a> {
    Text(&'a str),
    Bytes(&'a [u8]),
    Int(i64),
}
