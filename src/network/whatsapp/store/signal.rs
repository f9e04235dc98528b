//! `SignalStore`: identities, sessions, pre-keys, signed pre-keys and sender keys.

use std::sync::Arc;

use bytes::Bytes;
use whatsapp_rust::wacore::store::{error::StoreError, traits::SignalStore};

use super::{Kind, Result, WaStore};

fn identity_key(value: &[u8]) -> Result<[u8; 32]> {
    value
        .try_into()
        .map_err(|_| StoreError::Validation(format!("identity key of {} bytes", value.len())))
}

#[async_trait::async_trait]
impl SignalStore for WaStore {
    async fn put_identity(&self, address: &str, key: [u8; 32]) -> Result<()> {
        self.put(Kind::Identity, "", address, &key, 0, 0).await
    }

    async fn put_identities_batch(&self, identities: &[(Arc<str>, [u8; 32])]) -> Result<()> {
        self.put_many(
            Kind::Identity,
            identities
                .iter()
                .map(|(a, k)| ("", a.as_ref(), k.as_slice(), 0, 0)),
        )
        .await
    }

    async fn load_identity(&self, address: &str) -> Result<Option<[u8; 32]>> {
        self.get(Kind::Identity, "", address)
            .await?
            .map(|e| identity_key(&e.value))
            .transpose()
    }

    async fn delete_identity(&self, address: &str) -> Result<()> {
        self.delete(Kind::Identity, "", address).await.map(drop)
    }

    async fn get_session(&self, address: &str) -> Result<Option<Bytes>> {
        Ok(self
            .get(Kind::Session, "", address)
            .await?
            .map(|e| Bytes::from(e.value)))
    }

    async fn put_session(&self, address: &str, session: &[u8]) -> Result<()> {
        self.put(Kind::Session, "", address, session, 0, 0).await
    }

    async fn put_sessions_batch(&self, sessions: &[(Arc<str>, Bytes)]) -> Result<()> {
        self.put_many(
            Kind::Session,
            sessions
                .iter()
                .map(|(a, s)| ("", a.as_ref(), s.as_ref(), 0, 0)),
        )
        .await
    }

    async fn delete_session(&self, address: &str) -> Result<()> {
        self.delete(Kind::Session, "", address).await.map(drop)
    }

    async fn has_signal_state_for_user(&self, user: &str) -> Result<bool> {
        self.any_name_with_prefix(&[Kind::Session, Kind::Identity], user)
            .await
    }

    async fn store_prekey(&self, id: u32, record: &[u8], uploaded: bool) -> Result<()> {
        self.put(
            Kind::PreKey,
            "",
            &id.to_string(),
            record,
            i64::from(id),
            i64::from(uploaded),
        )
        .await
    }

    async fn store_prekeys_batch(&self, keys: &[(u32, Bytes)], uploaded: bool) -> Result<()> {
        let names: Vec<String> = keys.iter().map(|(id, _)| id.to_string()).collect();
        self.put_many(
            Kind::PreKey,
            keys.iter().zip(&names).map(|((id, record), name)| {
                (
                    "",
                    name.as_str(),
                    record.as_ref(),
                    i64::from(*id),
                    i64::from(uploaded),
                )
            }),
        )
        .await
    }

    async fn load_prekey(&self, id: u32) -> Result<Option<Bytes>> {
        Ok(self
            .get(Kind::PreKey, "", &id.to_string())
            .await?
            .map(|e| Bytes::from(e.value)))
    }

    async fn mark_prekeys_uploaded(&self, ids: &[u32]) -> Result<()> {
        let names: Vec<String> = ids.iter().map(u32::to_string).collect();
        self.set_aux(Kind::PreKey, &names, 1).await
    }

    async fn remove_prekey(&self, id: u32) -> Result<()> {
        self.delete(Kind::PreKey, "", &id.to_string())
            .await
            .map(drop)
    }

    async fn get_max_prekey_id(&self) -> Result<u32> {
        Ok(u32::try_from(self.max_num(Kind::PreKey).await?).unwrap_or(0))
    }

    async fn store_signed_prekey(&self, id: u32, record: &[u8]) -> Result<()> {
        self.put(
            Kind::SignedPreKey,
            "",
            &id.to_string(),
            record,
            i64::from(id),
            0,
        )
        .await
    }

    async fn load_signed_prekey(&self, id: u32) -> Result<Option<Vec<u8>>> {
        Ok(self
            .get(Kind::SignedPreKey, "", &id.to_string())
            .await?
            .map(|e| e.value))
    }

    async fn load_all_signed_prekeys(&self) -> Result<Vec<(u32, Vec<u8>)>> {
        let mut all: Vec<(u32, Vec<u8>)> = self
            .all(Kind::SignedPreKey, None)
            .await?
            .into_iter()
            .filter_map(|e| u32::try_from(e.num).ok().map(|id| (id, e.value)))
            .collect();
        all.sort_by_key(|(id, _)| *id);
        Ok(all)
    }

    async fn remove_signed_prekey(&self, id: u32) -> Result<()> {
        self.delete(Kind::SignedPreKey, "", &id.to_string())
            .await
            .map(drop)
    }

    async fn put_sender_key(&self, address: &str, record: &[u8]) -> Result<()> {
        self.put(Kind::SenderKey, "", address, record, 0, 0).await
    }

    async fn put_sender_keys_batch(&self, sender_keys: &[(Arc<str>, Bytes)]) -> Result<()> {
        self.put_many(
            Kind::SenderKey,
            sender_keys
                .iter()
                .map(|(a, r)| ("", a.as_ref(), r.as_ref(), 0, 0)),
        )
        .await
    }

    async fn get_sender_key(&self, address: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .get(Kind::SenderKey, "", address)
            .await?
            .map(|e| e.value))
    }

    async fn delete_sender_key(&self, address: &str) -> Result<()> {
        self.delete(Kind::SenderKey, "", address).await.map(drop)
    }
}
