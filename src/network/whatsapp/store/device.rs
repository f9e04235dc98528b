//! `DeviceStore`: the device itself (identity, noise and signed pre-key pairs, ADV secret and
//! account signature, push name, server-side counters), one encrypted row per store.

use whatsapp_rust::wacore::store::{Device, traits::DeviceStore};

use super::{Kind, Result, WaStore, from_json, to_json};

#[async_trait::async_trait]
impl DeviceStore for WaStore {
    async fn save(&self, device: &Device) -> Result<()> {
        let value = zeroize::Zeroizing::new(to_json("device", device)?);
        self.put(Kind::Device, "", "", &value, 0, 0).await
    }

    async fn load(&self) -> Result<Option<Device>> {
        match self.get(Kind::Device, "", "").await? {
            Some(entry) => {
                let value = zeroize::Zeroizing::new(entry.value);
                Ok(Some(from_json("device", &value)?))
            }
            None => Ok(None),
        }
    }

    async fn exists(&self) -> Result<bool> {
        Ok(self.get(Kind::Device, "", "").await?.is_some())
    }

    async fn create(&self) -> Result<i32> {
        // One store is one device: make its row (with fresh keys) unless it exists.
        if !self.exists().await? {
            self.save(&Device::new()).await?;
        }
        Ok(1)
    }
}
