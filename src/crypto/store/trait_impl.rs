//! The `CryptoStore` trait, method by method, over the helpers in `read` and `save`.
//! Semantics follow matrix-sdk-crypto's MemoryStore (the reference the conformance suite checks).

use std::collections::HashMap;

use async_trait::async_trait;
use matrix_sdk_crypto::{
    Account, DeviceData, GossipRequest, SecretInfo, Session, TrackedUser, UserIdentityData,
    olm::{
        InboundGroupSession, OlmMessageHash, OutboundGroupSession, PickledAccount,
        PickledCrossSigningIdentity, PickledOutboundGroupSession, PickledSession,
        PrivateCrossSigningIdentity, SenderDataType,
    },
    store::{
        CryptoStore,
        types::{
            BackupKeys, Changes, DehydratedDeviceKey, PendingChanges, RoomKeyCounts,
            RoomKeyWithheldEntry, RoomPendingKeyBundleDetails, RoomSettings,
            StoredRoomKeyBundleData,
        },
    },
    vodozemac::Curve25519PublicKey,
};
use ruma::{
    DeviceId, MilliSecondsSinceUnixEpoch, OwnedDeviceId, OwnedUserId, RoomId, TransactionId,
    UserId, events::secret::request::SecretName,
};
use zeroize::Zeroizing;

use super::{
    SqlCryptoStore, SqlCryptoStoreError,
    error::Result,
    read::Param,
    save::{
        KV_ACCOUNT, KV_BACKUP_KEY, KV_BACKUP_VERSION, KV_DEHYDRATED_KEY, KV_IDENTITY, KV_NEXT_BATCH,
    },
};

#[async_trait]
impl CryptoStore for SqlCryptoStore {
    type Error = SqlCryptoStoreError;

    async fn load_account(&self) -> Result<Option<Account>> {
        let Some(pickle) = self
            .kv_value::<PickledAccount>("account", KV_ACCOUNT)
            .await?
        else {
            return Ok(None);
        };
        let account =
            Account::from_pickle(pickle).map_err(|_| SqlCryptoStoreError::Unpickle("account"))?;
        self.set_static_account(account.static_data().clone());
        Ok(Some(account))
    }

    async fn load_identity(&self) -> Result<Option<PrivateCrossSigningIdentity>> {
        let Some(pickle) = self
            .kv_value::<PickledCrossSigningIdentity>("identity", KV_IDENTITY)
            .await?
        else {
            return Ok(None);
        };
        PrivateCrossSigningIdentity::from_pickle(pickle)
            .map(Some)
            .map_err(|_| SqlCryptoStoreError::Unpickle("cross-signing identity"))
    }

    async fn save_changes(&self, changes: Changes) -> Result<()> {
        self.save_all(changes).await
    }

    async fn save_pending_changes(&self, changes: PendingChanges) -> Result<()> {
        self.save_account(changes).await
    }

    async fn save_inbound_group_sessions(
        &self,
        sessions: Vec<InboundGroupSession>,
        backed_up_to_version: Option<&str>,
    ) -> Result<()> {
        self.save_inbound(sessions, backed_up_to_version).await
    }

    async fn get_sessions(&self, sender_key: &str) -> Result<Option<Vec<Session>>> {
        let pickles: Vec<PickledSession> = self
            .values(
                "Olm session",
                "SELECT pickle FROM crypto_olm_session \
                 WHERE own_user = $1 AND own_device = $2 AND sender_key = $3 ORDER BY session_id",
                &[Param::Text(sender_key)],
            )
            .await?;
        if pickles.is_empty() {
            return Ok(None);
        }
        let device_keys = self.get_own_device().await?.as_device_keys().clone();
        pickles
            .into_iter()
            .map(|pickle| {
                Session::from_pickle(device_keys.clone(), pickle)
                    .map_err(|_| SqlCryptoStoreError::Unpickle("Olm session"))
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    async fn get_inbound_group_session(
        &self,
        room_id: &RoomId,
        session_id: &str,
    ) -> Result<Option<InboundGroupSession>> {
        let row: Option<(Vec<u8>, Option<String>)> = self
            .row(
                "SELECT pickle, backed_up_to FROM crypto_inbound_group_session \
                 WHERE own_user = $1 AND own_device = $2 AND room_id = $3 AND session_id = $4",
                &[Param::Text(room_id.as_str()), Param::Text(session_id)],
            )
            .await?;
        row.map(|(pickle, backed_up_to)| self.inbound_session(&pickle, backed_up_to.as_deref()))
            .transpose()
    }

    async fn get_withheld_info(
        &self,
        room_id: &RoomId,
        session_id: &str,
    ) -> Result<Option<RoomKeyWithheldEntry>> {
        self.value(
            "withheld info",
            "SELECT data FROM crypto_withheld \
             WHERE own_user = $1 AND own_device = $2 AND room_id = $3 AND session_id = $4",
            &[Param::Text(room_id.as_str()), Param::Text(session_id)],
        )
        .await
    }

    async fn get_withheld_sessions_by_room_id(
        &self,
        room_id: &RoomId,
    ) -> Result<Vec<RoomKeyWithheldEntry>> {
        self.values(
            "withheld info",
            "SELECT data FROM crypto_withheld \
             WHERE own_user = $1 AND own_device = $2 AND room_id = $3 ORDER BY session_id",
            &[Param::Text(room_id.as_str())],
        )
        .await
    }

    async fn get_inbound_group_sessions(&self) -> Result<Vec<InboundGroupSession>> {
        self.inbound_sessions(
            "SELECT pickle, backed_up_to FROM crypto_inbound_group_session \
             WHERE own_user = $1 AND own_device = $2 ORDER BY room_id, session_id",
            &[],
        )
        .await
    }

    async fn inbound_group_session_counts(
        &self,
        backup_version: Option<&str>,
    ) -> Result<RoomKeyCounts> {
        let (total, backed_up): (i64, i64) = match backup_version {
            Some(version) => self
                .row(
                    "SELECT COUNT(*), \
                     COALESCE(SUM(CASE WHEN backed_up_to = $3 THEN 1 ELSE 0 END), 0) \
                     FROM crypto_inbound_group_session WHERE own_user = $1 AND own_device = $2",
                    &[Param::Text(version)],
                )
                .await?
                .unwrap_or((0, 0)),
            // Nothing is backed up in a backup that does not exist.
            None => self
                .row(
                    "SELECT COUNT(*), 0 FROM crypto_inbound_group_session \
                     WHERE own_user = $1 AND own_device = $2",
                    &[],
                )
                .await?
                .unwrap_or((0, 0)),
        };
        Ok(RoomKeyCounts {
            total: usize::try_from(total).unwrap_or(0),
            backed_up: usize::try_from(backed_up).unwrap_or(0),
        })
    }

    async fn get_inbound_group_sessions_by_room_id(
        &self,
        room_id: &RoomId,
    ) -> Result<Vec<InboundGroupSession>> {
        self.inbound_sessions(
            "SELECT pickle, backed_up_to FROM crypto_inbound_group_session \
             WHERE own_user = $1 AND own_device = $2 AND room_id = $3 ORDER BY session_id",
            &[Param::Text(room_id.as_str())],
        )
        .await
    }

    async fn get_inbound_group_sessions_for_device_batch(
        &self,
        curve_key: Curve25519PublicKey,
        sender_data_type: SenderDataType,
        after_session_id: Option<String>,
        limit: usize,
    ) -> Result<Vec<InboundGroupSession>> {
        let sender_key = curve_key.to_base64();
        let kind = sender_data_type as i64;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        match after_session_id.as_deref() {
            None => {
                self.inbound_sessions(
                    "SELECT pickle, backed_up_to FROM crypto_inbound_group_session \
                     WHERE own_user = $1 AND own_device = $2 AND sender_key = $3 \
                     AND sender_data_type = $4 ORDER BY session_id LIMIT $5",
                    &[
                        Param::Text(&sender_key),
                        Param::Int(kind),
                        Param::Int(limit),
                    ],
                )
                .await
            }
            Some(after) => {
                self.inbound_sessions(
                    "SELECT pickle, backed_up_to FROM crypto_inbound_group_session \
                     WHERE own_user = $1 AND own_device = $2 AND sender_key = $3 \
                     AND sender_data_type = $4 AND session_id > $5 ORDER BY session_id LIMIT $6",
                    &[
                        Param::Text(&sender_key),
                        Param::Int(kind),
                        Param::Text(after),
                        Param::Int(limit),
                    ],
                )
                .await
            }
        }
    }

    async fn inbound_group_sessions_for_backup(
        &self,
        backup_version: &str,
        limit: usize,
    ) -> Result<Vec<InboundGroupSession>> {
        self.inbound_sessions(
            "SELECT pickle, backed_up_to FROM crypto_inbound_group_session \
             WHERE own_user = $1 AND own_device = $2 \
             AND (backed_up_to IS NULL OR backed_up_to <> $3) \
             ORDER BY room_id, session_id LIMIT $4",
            &[
                Param::Text(backup_version),
                Param::Int(i64::try_from(limit).unwrap_or(i64::MAX)),
            ],
        )
        .await
    }

    async fn mark_inbound_group_sessions_as_backed_up(
        &self,
        backup_version: &str,
        room_and_session_ids: &[(&RoomId, &str)],
    ) -> Result<()> {
        self.mark_backed_up(backup_version, room_and_session_ids)
            .await
    }

    async fn reset_backup_state(&self) -> Result<()> {
        // Backups are recorded per version (backed_up_to), so a new backup version already
        // sees every session as not backed up: nothing to reset.
        Ok(())
    }

    async fn load_backup_keys(&self) -> Result<BackupKeys> {
        Ok(BackupKeys {
            decryption_key: self.kv_value("backup key", KV_BACKUP_KEY).await?,
            backup_version: self.kv_value("backup version", KV_BACKUP_VERSION).await?,
        })
    }

    async fn load_dehydrated_device_pickle_key(&self) -> Result<Option<DehydratedDeviceKey>> {
        self.kv_value("dehydrated device key", KV_DEHYDRATED_KEY)
            .await
    }

    async fn delete_dehydrated_device_pickle_key(&self) -> Result<()> {
        sqlx::query("DELETE FROM crypto_kv WHERE own_user = $1 AND own_device = $2 AND key = $3")
            .bind(self.own_user())
            .bind(self.own_device())
            .bind(KV_DEHYDRATED_KEY)
            .execute(self.pool()?)
            .await?;
        Ok(())
    }

    async fn get_outbound_group_session(
        &self,
        room_id: &RoomId,
    ) -> Result<Option<OutboundGroupSession>> {
        let Some(pickle) = self
            .value::<PickledOutboundGroupSession>(
                "outbound group session",
                "SELECT pickle FROM crypto_outbound_group_session \
                 WHERE own_user = $1 AND own_device = $2 AND room_id = $3",
                &[Param::Text(room_id.as_str())],
            )
            .await?
        else {
            return Ok(None);
        };
        let account = match self.get_static_account() {
            Some(account) => account,
            None => {
                self.load_account().await?;
                self.get_static_account()
                    .ok_or(SqlCryptoStoreError::AccountUnset)?
            }
        };
        OutboundGroupSession::from_pickle(account.device_id, account.identity_keys, pickle)
            .map(Some)
            .map_err(|_| SqlCryptoStoreError::Unpickle("outbound group session"))
    }

    async fn load_tracked_users(&self) -> Result<Vec<TrackedUser>> {
        self.rows::<(String, i64)>(
            "SELECT user_id, dirty FROM crypto_tracked_user \
             WHERE own_user = $1 AND own_device = $2 ORDER BY user_id",
            &[],
        )
        .await?
        .into_iter()
        .map(|(user_id, dirty)| {
            let user_id = OwnedUserId::try_from(user_id)
                .map_err(|e| SqlCryptoStoreError::corrupt("tracked user", e.to_string()))?;
            Ok(TrackedUser {
                user_id,
                dirty: dirty != 0,
            })
        })
        .collect()
    }

    async fn save_tracked_users(&self, users: &[(&UserId, bool)]) -> Result<()> {
        self.save_tracked(users).await
    }

    async fn get_device(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
    ) -> Result<Option<DeviceData>> {
        self.value(
            "device",
            "SELECT data FROM crypto_device \
             WHERE own_user = $1 AND own_device = $2 AND user_id = $3 AND device_id = $4",
            &[
                Param::Text(user_id.as_str()),
                Param::Text(device_id.as_str()),
            ],
        )
        .await
    }

    async fn get_user_devices(
        &self,
        user_id: &UserId,
    ) -> Result<HashMap<OwnedDeviceId, DeviceData>> {
        let devices: Vec<DeviceData> = self
            .values(
                "device",
                "SELECT data FROM crypto_device \
                 WHERE own_user = $1 AND own_device = $2 AND user_id = $3",
                &[Param::Text(user_id.as_str())],
            )
            .await?;
        Ok(devices
            .into_iter()
            .map(|d| (d.device_id().to_owned(), d))
            .collect())
    }

    async fn get_own_device(&self) -> Result<DeviceData> {
        let (user_id, device_id) = (self.inner.own_user.clone(), self.inner.own_device.clone());
        self.get_device(&user_id, &device_id)
            .await?
            .ok_or(SqlCryptoStoreError::AccountUnset)
    }

    async fn get_user_identity(&self, user_id: &UserId) -> Result<Option<UserIdentityData>> {
        self.value(
            "user identity",
            "SELECT data FROM crypto_identity \
             WHERE own_user = $1 AND own_device = $2 AND user_id = $3",
            &[Param::Text(user_id.as_str())],
        )
        .await
    }

    async fn is_message_known(&self, message_hash: &OlmMessageHash) -> Result<bool> {
        let known: Option<(i64,)> = self
            .row(
                "SELECT CAST(1 AS BIGINT) FROM crypto_olm_hash WHERE own_user = $1 AND own_device = $2 \
                 AND sender_key = $3 AND hash = $4",
                &[
                    Param::Text(&message_hash.sender_key),
                    Param::Text(&message_hash.hash),
                ],
            )
            .await?;
        Ok(known.is_some())
    }

    async fn get_outgoing_secret_requests(
        &self,
        request_id: &TransactionId,
    ) -> Result<Option<GossipRequest>> {
        self.value(
            "key request",
            "SELECT data FROM crypto_key_request \
             WHERE own_user = $1 AND own_device = $2 AND request_id = $3",
            &[Param::Text(request_id.as_str())],
        )
        .await
    }

    async fn get_secret_request_by_info(
        &self,
        secret_info: &SecretInfo,
    ) -> Result<Option<GossipRequest>> {
        // Few requests are ever outstanding; compare them decrypted rather than store the
        // requested key's description in the clear.
        let requests: Vec<GossipRequest> = self
            .values(
                "key request",
                "SELECT data FROM crypto_key_request \
                 WHERE own_user = $1 AND own_device = $2 ORDER BY request_id",
                &[],
            )
            .await?;
        Ok(requests.into_iter().find(|r| r.info == *secret_info))
    }

    async fn get_unsent_secret_requests(&self) -> Result<Vec<GossipRequest>> {
        self.values(
            "key request",
            "SELECT data FROM crypto_key_request \
             WHERE own_user = $1 AND own_device = $2 AND sent_out = 0 ORDER BY request_id",
            &[],
        )
        .await
    }

    async fn delete_outgoing_secret_requests(&self, request_id: &TransactionId) -> Result<()> {
        sqlx::query(
            "DELETE FROM crypto_key_request \
             WHERE own_user = $1 AND own_device = $2 AND request_id = $3",
        )
        .bind(self.own_user())
        .bind(self.own_device())
        .bind(request_id.as_str())
        .execute(self.pool()?)
        .await?;
        Ok(())
    }

    async fn get_secrets_from_inbox(
        &self,
        secret_name: &SecretName,
    ) -> Result<Vec<Zeroizing<String>>> {
        let secrets: Vec<String> = self
            .values(
                "secret",
                "SELECT data FROM crypto_secret_inbox \
                 WHERE own_user = $1 AND own_device = $2 AND secret_name = $3 ORDER BY id",
                &[Param::Text(secret_name.as_str())],
            )
            .await?;
        Ok(secrets.into_iter().map(Zeroizing::new).collect())
    }

    async fn delete_secrets_from_inbox(&self, secret_name: &SecretName) -> Result<()> {
        sqlx::query(
            "DELETE FROM crypto_secret_inbox \
             WHERE own_user = $1 AND own_device = $2 AND secret_name = $3",
        )
        .bind(self.own_user())
        .bind(self.own_device())
        .bind(secret_name.as_str())
        .execute(self.pool()?)
        .await?;
        Ok(())
    }

    async fn get_room_settings(&self, room_id: &RoomId) -> Result<Option<RoomSettings>> {
        self.value(
            "room settings",
            "SELECT data FROM crypto_room_settings \
             WHERE own_user = $1 AND own_device = $2 AND room_id = $3",
            &[Param::Text(room_id.as_str())],
        )
        .await
    }

    async fn get_received_room_key_bundle_data(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
    ) -> Result<Option<StoredRoomKeyBundleData>> {
        self.value(
            "room key bundle",
            "SELECT data FROM crypto_room_key_bundle \
             WHERE own_user = $1 AND own_device = $2 AND room_id = $3 AND sender_user = $4",
            &[Param::Text(room_id.as_str()), Param::Text(user_id.as_str())],
        )
        .await
    }

    async fn get_pending_key_bundle_details_for_room(
        &self,
        room_id: &RoomId,
    ) -> Result<Option<RoomPendingKeyBundleDetails>> {
        self.value(
            "pending key bundle",
            "SELECT data FROM crypto_room_pending_key_bundle \
             WHERE own_user = $1 AND own_device = $2 AND room_id = $3",
            &[Param::Text(room_id.as_str())],
        )
        .await
    }

    async fn get_all_rooms_pending_key_bundles(&self) -> Result<Vec<RoomPendingKeyBundleDetails>> {
        self.values(
            "pending key bundle",
            "SELECT data FROM crypto_room_pending_key_bundle \
             WHERE own_user = $1 AND own_device = $2 ORDER BY room_id",
            &[],
        )
        .await
    }

    async fn has_downloaded_all_room_keys(&self, room_id: &RoomId) -> Result<bool> {
        let row: Option<(i64,)> = self
            .row(
                "SELECT CAST(1 AS BIGINT) FROM crypto_room_backup_downloaded \
                 WHERE own_user = $1 AND own_device = $2 AND room_id = $3",
                &[Param::Text(room_id.as_str())],
            )
            .await?;
        Ok(row.is_some())
    }

    async fn get_custom_value(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let row: Option<(Vec<u8>,)> = self
            .row(
                "SELECT data FROM crypto_custom_value \
                 WHERE own_user = $1 AND own_device = $2 AND key = $3",
                &[Param::Text(key)],
            )
            .await?;
        row.map(|(data,)| self.key().decrypt_bytes("custom value", &data))
            .transpose()
    }

    async fn set_custom_value(&self, key: &str, value: Vec<u8>) -> Result<()> {
        let data = self.key().encrypt_bytes("custom value", value)?;
        sqlx::query(
            "INSERT INTO crypto_custom_value (own_user, own_device, key, data) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (own_user, own_device, key) \
             DO UPDATE SET data = excluded.data",
        )
        .bind(self.own_user())
        .bind(self.own_device())
        .bind(key)
        .bind(data)
        .execute(self.pool()?)
        .await?;
        Ok(())
    }

    async fn remove_custom_value(&self, key: &str) -> Result<()> {
        sqlx::query(
            "DELETE FROM crypto_custom_value \
             WHERE own_user = $1 AND own_device = $2 AND key = $3",
        )
        .bind(self.own_user())
        .bind(self.own_device())
        .bind(key)
        .execute(self.pool()?)
        .await?;
        Ok(())
    }

    async fn try_take_leased_lock(
        &self,
        lease_duration_ms: u32,
        key: &str,
        holder: &str,
    ) -> Result<Option<u64>> {
        let now: i64 = MilliSecondsSinceUnixEpoch::now().get().into();
        let expiration = now + i64::from(lease_duration_ms);
        // One statement, so it is atomic on both backends: take a free or expired lease (a
        // new generation), extend our own (same generation), or return no row.
        let generation: Option<(i64,)> = sqlx::query_as(
            "INSERT INTO crypto_lease_lock (own_user, own_device, key, holder, expiration, \
             generation) VALUES ($1, $2, $3, $4, $5, 1) \
             ON CONFLICT (own_user, own_device, key) DO UPDATE SET \
             holder = excluded.holder, \
             expiration = excluded.expiration, \
             generation = CASE WHEN crypto_lease_lock.holder = excluded.holder \
                 THEN crypto_lease_lock.generation \
                 ELSE crypto_lease_lock.generation + 1 END \
             WHERE crypto_lease_lock.holder = excluded.holder \
                OR crypto_lease_lock.expiration < $6 \
             RETURNING generation",
        )
        .bind(self.own_user())
        .bind(self.own_device())
        .bind(key)
        .bind(holder)
        .bind(expiration)
        .bind(now)
        .fetch_optional(self.pool()?)
        .await?;
        generation
            .map(|(g,)| {
                u64::try_from(g)
                    .map_err(|_| SqlCryptoStoreError::corrupt("lease lock", "negative generation"))
            })
            .transpose()
    }

    async fn next_batch_token(&self) -> Result<Option<String>> {
        self.kv_value("next batch token", KV_NEXT_BATCH).await
    }

    async fn close(&self) -> Result<()> {
        // The pool is ferry's, shared with every other store and table: closing means this
        // store refuses work until reopened.
        self.inner
            .closed
            .store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    async fn reopen(&self) -> Result<()> {
        self.inner
            .closed
            .store(false, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    async fn get_size(&self) -> Result<Option<usize>> {
        Ok(usize::try_from(self.payload_size().await?).ok())
    }
}
