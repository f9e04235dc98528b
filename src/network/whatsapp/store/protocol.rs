//! `ProtocolStore` (sender-key tracking, LID/phone-number mappings, base keys, device lists,
//! group metadata, trusted-contact tokens, the sent-message and pending-inbound buffers) and
//! `MsgSecretStore` (message secrets for poll votes, reactions and edits).

use whatsapp_rust::wacore::store::traits::{
    DeviceListRecord, LidPnMappingEntry, MsgSecretEntry, MsgSecretStore, ProtocolStore,
    TcTokenEntry, merge_msg_secret_expiry, merge_msg_secret_message_ts,
};

use super::{Kind, Result, WaStore, from_json, now_secs, to_json};

/// A row name made of two key parts (WhatsApp ids hold no spaces).
fn pair(a: &str, b: &str) -> String {
    format!("{a} {b}")
}

#[async_trait::async_trait]
impl ProtocolStore for WaStore {
    async fn get_sender_key_devices(&self, group_jid: &str) -> Result<Vec<(String, bool)>> {
        Ok(self
            .all(Kind::SenderKeyDevice, Some(group_jid))
            .await?
            .into_iter()
            .map(|e| (e.name, e.num != 0))
            .collect())
    }

    async fn set_sender_key_status(&self, group_jid: &str, entries: &[(&str, bool)]) -> Result<()> {
        self.put_many(
            Kind::SenderKeyDevice,
            entries
                .iter()
                .map(|(device, has)| (group_jid, *device, &[][..], i64::from(*has), 0)),
        )
        .await
    }

    async fn clear_sender_key_devices(&self, group_jid: &str) -> Result<()> {
        self.delete_all(Kind::SenderKeyDevice, Some(group_jid))
            .await
            .map(drop)
    }

    async fn delete_sender_key_device_rows(&self, device_jids: &[&str]) -> Result<()> {
        if device_jids.is_empty() {
            return Ok(());
        }
        for entry in self.all(Kind::SenderKeyDevice, None).await? {
            if device_jids.contains(&entry.name.as_str()) {
                self.delete(Kind::SenderKeyDevice, &entry.scope, &entry.name)
                    .await?;
            }
        }
        Ok(())
    }

    async fn clear_all_sender_key_devices(&self) -> Result<()> {
        self.delete_all(Kind::SenderKeyDevice, None).await.map(drop)
    }

    async fn get_lid_mapping(&self, lid: &str) -> Result<Option<LidPnMappingEntry>> {
        self.get(Kind::Lid, "", lid)
            .await?
            .map(|e| from_json("LID mapping", &e.value))
            .transpose()
    }

    async fn get_pn_mapping(&self, phone: &str) -> Result<Option<LidPnMappingEntry>> {
        let Some(reverse) = self.get(Kind::Pn, "", phone).await? else {
            return Ok(None);
        };
        let lid = String::from_utf8_lossy(&reverse.value).into_owned();
        self.get_lid_mapping(&lid).await
    }

    async fn put_lid_mapping(&self, entry: &LidPnMappingEntry) -> Result<()> {
        // A LID that moved to another phone number no longer answers for the old one.
        if let Some(old) = self.get_lid_mapping(&entry.lid).await?
            && old.phone_number != entry.phone_number
        {
            self.delete(Kind::Pn, "", &old.phone_number).await?;
        }
        let value = to_json("LID mapping", entry)?;
        self.put(Kind::Lid, "", &entry.lid, &value, entry.updated_at, 0)
            .await?;
        self.put(
            Kind::Pn,
            "",
            &entry.phone_number,
            entry.lid.as_bytes(),
            entry.updated_at,
            0,
        )
        .await
    }

    async fn get_all_lid_mappings(&self) -> Result<Vec<LidPnMappingEntry>> {
        self.all(Kind::Lid, None)
            .await?
            .iter()
            .map(|e| from_json("LID mapping", &e.value))
            .collect()
    }

    async fn save_base_key(&self, address: &str, message_id: &str, base_key: &[u8]) -> Result<()> {
        self.put(Kind::BaseKey, address, message_id, base_key, 0, 0)
            .await
    }

    async fn has_same_base_key(
        &self,
        address: &str,
        message_id: &str,
        current_base_key: &[u8],
    ) -> Result<bool> {
        Ok(self
            .get(Kind::BaseKey, address, message_id)
            .await?
            .is_some_and(|e| e.value == current_base_key))
    }

    async fn delete_base_key(&self, address: &str, message_id: &str) -> Result<()> {
        self.delete(Kind::BaseKey, address, message_id)
            .await
            .map(drop)
    }

    async fn update_device_list(&self, record: DeviceListRecord) -> Result<()> {
        let value = to_json("device list", &record)?;
        self.put(
            Kind::DeviceList,
            "",
            &record.user,
            &value,
            record.timestamp,
            0,
        )
        .await
    }

    async fn update_device_lists(&self, records: Vec<DeviceListRecord>) -> Result<()> {
        let values = records
            .iter()
            .map(|r| to_json("device list", r))
            .collect::<Result<Vec<_>>>()?;
        self.put_many(
            Kind::DeviceList,
            records
                .iter()
                .zip(&values)
                .map(|(r, v)| ("", r.user.as_str(), v.as_slice(), r.timestamp, 0)),
        )
        .await
    }

    async fn get_devices(&self, user: &str) -> Result<Option<DeviceListRecord>> {
        self.get(Kind::DeviceList, "", user)
            .await?
            .map(|e| from_json("device list", &e.value))
            .transpose()
    }

    async fn delete_devices(&self, user: &str) -> Result<()> {
        self.delete(Kind::DeviceList, "", user).await.map(drop)
    }

    async fn get_group_metadata(&self, group_jid: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .get(Kind::GroupMeta, "", group_jid)
            .await?
            .map(|e| e.value))
    }

    async fn put_group_metadata(&self, group_jid: &str, blob: &[u8]) -> Result<()> {
        self.put(Kind::GroupMeta, "", group_jid, blob, 0, 0).await
    }

    async fn delete_group_metadata(&self, group_jid: &str) -> Result<()> {
        self.delete(Kind::GroupMeta, "", group_jid).await.map(drop)
    }

    async fn get_tc_token(&self, jid: &str) -> Result<Option<TcTokenEntry>> {
        self.get(Kind::TcToken, "", jid)
            .await?
            .map(|e| from_json("trusted-contact token", &e.value))
            .transpose()
    }

    async fn put_tc_token(&self, jid: &str, entry: &TcTokenEntry) -> Result<()> {
        let value = to_json("trusted-contact token", entry)?;
        self.put(Kind::TcToken, "", jid, &value, entry.token_timestamp, 0)
            .await
    }

    async fn delete_tc_token(&self, jid: &str) -> Result<()> {
        self.delete(Kind::TcToken, "", jid).await.map(drop)
    }

    async fn get_all_tc_token_jids(&self) -> Result<Vec<String>> {
        Ok(self
            .all(Kind::TcToken, None)
            .await?
            .into_iter()
            .map(|e| e.name)
            .collect())
    }

    async fn delete_expired_tc_tokens(&self, token_cutoff: i64, sender_cutoff: i64) -> Result<u32> {
        let _guard = self.tc_lock.lock().await;
        let mut deleted = 0;
        for row in self.all(Kind::TcToken, None).await? {
            let entry: TcTokenEntry = from_json("trusted-contact token", &row.value)?;
            let token_live = !entry.token.is_empty() && entry.token_timestamp >= token_cutoff;
            let sender_live = entry.sender_timestamp.is_some_and(|ts| ts >= sender_cutoff);
            if !token_live && !sender_live && self.delete(Kind::TcToken, "", &row.name).await? {
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    async fn touch_tc_token_sender_timestamp(
        &self,
        jid: &str,
        sender_timestamp: i64,
    ) -> Result<()> {
        let _guard = self.tc_lock.lock().await;
        let entry = match self.get_tc_token(jid).await? {
            Some(existing) => TcTokenEntry {
                sender_timestamp: Some(
                    existing
                        .sender_timestamp
                        .map_or(sender_timestamp, |e| e.max(sender_timestamp)),
                ),
                ..existing
            },
            None => TcTokenEntry {
                token: Vec::new(),
                token_timestamp: sender_timestamp,
                sender_timestamp: Some(sender_timestamp),
            },
        };
        self.put_tc_token(jid, &entry).await
    }

    async fn store_received_tc_token(
        &self,
        jid: &str,
        token: &[u8],
        token_timestamp: i64,
    ) -> Result<()> {
        let _guard = self.tc_lock.lock().await;
        let existing = self.get_tc_token(jid).await?;
        if let Some(existing) = &existing
            && !existing.token.is_empty()
            && token_timestamp < existing.token_timestamp
        {
            return Ok(());
        }
        let entry = TcTokenEntry {
            token: token.to_vec(),
            token_timestamp,
            sender_timestamp: existing.and_then(|e| e.sender_timestamp),
        };
        self.put_tc_token(jid, &entry).await
    }

    async fn store_sent_message(
        &self,
        chat_jid: &str,
        message_id: &str,
        payload: &[u8],
    ) -> Result<()> {
        self.put(
            Kind::SentMessage,
            chat_jid,
            message_id,
            payload,
            now_secs(),
            0,
        )
        .await
    }

    async fn take_sent_message(&self, chat_jid: &str, message_id: &str) -> Result<Option<Vec<u8>>> {
        let Some(entry) = self.get(Kind::SentMessage, chat_jid, message_id).await? else {
            return Ok(None);
        };
        // Only the caller that deleted the row gets it: a retry is answered once.
        if self.delete(Kind::SentMessage, chat_jid, message_id).await? {
            Ok(Some(entry.value))
        } else {
            Ok(None)
        }
    }

    async fn delete_expired_sent_messages(&self, cutoff_timestamp: i64) -> Result<u32> {
        self.delete_num_below(Kind::SentMessage, cutoff_timestamp, None)
            .await
    }

    async fn store_pending_inbound(
        &self,
        chat: &str,
        sender: &str,
        id: &str,
        message: &[u8],
    ) -> Result<()> {
        self.put(
            Kind::PendingInbound,
            chat,
            &pair(sender, id),
            message,
            now_secs(),
            0,
        )
        .await
    }

    async fn get_pending_inbound(
        &self,
        chat: &str,
        sender: &str,
        id: &str,
    ) -> Result<Option<Vec<u8>>> {
        Ok(self
            .get(Kind::PendingInbound, chat, &pair(sender, id))
            .await?
            .map(|e| e.value))
    }

    async fn delete_pending_inbound(&self, chat: &str, sender: &str, id: &str) -> Result<()> {
        self.delete(Kind::PendingInbound, chat, &pair(sender, id))
            .await
            .map(drop)
    }

    async fn delete_expired_pending_inbound(&self, cutoff_timestamp: i64) -> Result<u32> {
        self.delete_num_below(Kind::PendingInbound, cutoff_timestamp, None)
            .await
    }
}

#[async_trait::async_trait]
impl MsgSecretStore for WaStore {
    async fn put_msg_secrets(&self, entries: Vec<MsgSecretEntry>) -> Result<usize> {
        let stored = entries.len();
        let mut rows = Vec::with_capacity(stored);
        for entry in &entries {
            let name = pair(&entry.sender, &entry.msg_id);
            let (expires_at, message_ts) =
                match self.get(Kind::MsgSecret, &entry.chat, &name).await? {
                    Some(old) => (
                        merge_msg_secret_expiry(old.num, entry.expires_at),
                        merge_msg_secret_message_ts(old.aux, entry.message_ts),
                    ),
                    None => (entry.expires_at, entry.message_ts),
                };
            rows.push((name, expires_at, message_ts));
        }
        self.put_many(
            Kind::MsgSecret,
            entries.iter().zip(&rows).map(|(e, (name, exp, ts))| {
                (
                    e.chat.as_ref(),
                    name.as_str(),
                    e.secret.as_slice(),
                    *exp,
                    *ts,
                )
            }),
        )
        .await?;
        Ok(stored)
    }

    async fn get_msg_secret(
        &self,
        chat: &str,
        sender: &str,
        msg_id: &str,
    ) -> Result<Option<Vec<u8>>> {
        Ok(self
            .get_msg_secret_with_ts(chat, sender, msg_id)
            .await?
            .map(|(secret, _)| secret))
    }

    async fn get_msg_secret_with_ts(
        &self,
        chat: &str,
        sender: &str,
        msg_id: &str,
    ) -> Result<Option<(Vec<u8>, i64)>> {
        Ok(self
            .get(Kind::MsgSecret, chat, &pair(sender, msg_id))
            .await?
            .map(|e| (e.value, e.aux)))
    }

    async fn delete_expired_msg_secrets(&self, cutoff_timestamp: i64) -> Result<u32> {
        // expires_at 0 means "never"; a deadline at the cutoff is due.
        self.delete_num_below(Kind::MsgSecret, cutoff_timestamp.saturating_add(1), Some(0))
            .await
    }
}
