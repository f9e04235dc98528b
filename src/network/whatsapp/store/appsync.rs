//! `AppSyncStore`: app-state sync keys, collection versions and mutation MACs.

use whatsapp_rust::wacore::appstate::processor::AppStateMutationMAC;
use whatsapp_rust::wacore::{
    appstate::hash::HashState,
    store::traits::{AppStateSyncKey, AppSyncStore},
};

use super::{Kind, Result, WaStore, from_json, to_json};

#[async_trait::async_trait]
impl AppSyncStore for WaStore {
    async fn get_sync_key(&self, key_id: &[u8]) -> Result<Option<AppStateSyncKey>> {
        self.get(Kind::SyncKey, "", &hex::encode(key_id))
            .await?
            .map(|e| from_json("app-state sync key", &e.value))
            .transpose()
    }

    async fn set_sync_key(&self, key_id: &[u8], key: AppStateSyncKey) -> Result<()> {
        let name = hex::encode(key_id);
        let value = to_json("app-state sync key", &key)?;
        self.put(Kind::SyncKey, "", &name, &value, key.timestamp, 0)
            .await?;
        // The library asks for the key stored last, whatever its timestamp.
        self.put(Kind::LatestSyncKey, "", "", key_id, 0, 0).await
    }

    async fn get_version(&self, name: &str) -> Result<HashState> {
        match self.get(Kind::Version, "", name).await? {
            Some(e) => from_json("app-state version", &e.value),
            None => Ok(HashState::default()),
        }
    }

    async fn set_version(&self, name: &str, state: HashState) -> Result<()> {
        let version = i64::try_from(state.version).unwrap_or(i64::MAX);
        let value = to_json("app-state version", &state)?;
        self.put(Kind::Version, "", name, &value, version, 0).await
    }

    async fn put_mutation_macs(
        &self,
        name: &str,
        version: u64,
        mutations: &[AppStateMutationMAC],
    ) -> Result<()> {
        let version = i64::try_from(version).unwrap_or(i64::MAX);
        let names: Vec<String> = mutations
            .iter()
            .map(|m| hex::encode(&m.index_mac))
            .collect();
        self.put_many(
            Kind::MutationMac,
            mutations
                .iter()
                .zip(&names)
                .map(|(m, index)| (name, index.as_str(), m.value_mac.as_slice(), version, 0)),
        )
        .await
    }

    async fn get_mutation_mac(&self, name: &str, index_mac: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .get(Kind::MutationMac, name, &hex::encode(index_mac))
            .await?
            .map(|e| e.value))
    }

    async fn delete_mutation_macs(&self, name: &str, index_macs: &[Vec<u8>]) -> Result<()> {
        for index in index_macs {
            self.delete(Kind::MutationMac, name, &hex::encode(index))
                .await?;
        }
        Ok(())
    }

    async fn clear_mutation_macs(&self, name: &str) -> Result<()> {
        self.delete_all(Kind::MutationMac, Some(name))
            .await
            .map(drop)
    }

    async fn get_latest_sync_key_id(&self) -> Result<Option<Vec<u8>>> {
        Ok(self
            .get(Kind::LatestSyncKey, "", "")
            .await?
            .map(|e| e.value))
    }
}
