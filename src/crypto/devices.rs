//! The bridge's devices: one per user it acts as, created on the homeserver the first time it
//! is needed, then driven by its own `OlmMachine` with its own cross-signing identity.
//!
//! Devices are created by MSC4190 (`PUT /devices/{id}` as the appservice) or, on homeservers
//! without it, by appservice login with the chosen device id. The id is derived from the user
//! id, so it is stable, and stored; a device whose crypto state was lost gets a new id (reusing
//! the old one with new keys would make clients reject it).

use std::sync::Arc;

use matrix_sdk_crypto::types::requests::AnyIncomingResponse;
use ruma::{
    DeviceId, OwnedDeviceId, TransactionId, UserId,
    api::client::{device::update_device, keys::upload_signing_keys},
};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::{config::DeviceCreation, matrix::client::MatrixError};

use super::{Crypto, CryptoError, Result, machines::LoadedMachine};

/// The device id of `user`'s bridge device; `generation` > 0 after its state was lost.
pub fn device_id_for(user: &UserId, generation: u64) -> OwnedDeviceId {
    let mut digest = Sha256::new();
    digest.update(user.as_str().as_bytes());
    if generation > 0 {
        digest.update(generation.to_be_bytes());
    }
    let hash = hex::encode_upper(&digest.finalize()[..6]);
    OwnedDeviceId::from(format!("FERRY{hash}"))
}

impl Crypto {
    /// `user`'s machine: its device is created and its keys and cross-signing identity
    /// uploaded the first time; later calls return the loaded machine.
    pub async fn machine(&self, user: &UserId) -> Result<Arc<LoadedMachine>> {
        self.machines.get(user, || self.load(user)).await
    }

    async fn load(&self, user: &UserId) -> Result<Arc<LoadedMachine>> {
        let known = self.db.bridge_device(user.as_str()).await?;
        let mut reuse = None;
        if let Some(device) = known {
            let device = OwnedDeviceId::from(device);
            let store = self.machines.opener().open_store(user, &device).await?;
            if store.load_account().await?.is_some() {
                reuse = Some((device, store));
            } else {
                // The device exists but its keys are gone: a new device, not new keys under
                // the old id (clients would reject the changed keys).
                tracing::warn!(%user, %device, "crypto state of a device is lost; creating a new device");
            }
        }
        let (device, store) = match reuse {
            Some(found) => found,
            None => {
                let device = self.unused_device_id(user).await?;
                self.create_device(user, &device).await?;
                let store = self.machines.opener().open_store(user, &device).await?;
                (device, store)
            }
        };
        let olm = matrix_sdk_crypto::OlmMachine::with_store(user, &device, store, None).await?;
        let machine = Arc::new(LoadedMachine::new(olm));
        if self.config.inputs == crate::config::CryptoInputs::Sync {
            self.start_sync(&machine);
        }
        self.flush(&machine).await?;
        self.ensure_cross_signing(&machine).await?;
        // Device lists may have changed while the machine was not loaded.
        machine.olm.mark_all_tracked_users_as_dirty().await?;
        Ok(machine)
    }

    /// The first derived device id the homeserver does not know for `user` (a device left by
    /// an earlier installation keeps its keys there; reusing its id would clash with them).
    async fn unused_device_id(&self, user: &UserId) -> Result<OwnedDeviceId> {
        for generation in 0..64 {
            let device = device_id_for(user, generation);
            let path = format!(
                "/_matrix/client/v3/devices/{}",
                url::form_urlencoded::byte_serialize(device.as_str().as_bytes())
                    .collect::<String>()
            );
            match self
                .client
                .send_json(
                    http::Method::GET,
                    &path,
                    &[("user_id", user.as_str())],
                    None,
                )
                .await
            {
                Ok(_) => continue,
                Err(MatrixError::Api { status: 404, .. }) => return Ok(device),
                Err(err) => return Err(err.into()),
            }
        }
        Err(CryptoError::Invalid(format!(
            "no free device id for {user}"
        )))
    }

    /// Creates `device` for `user` on the homeserver and remembers it.
    async fn create_device(&self, user: &UserId, device: &DeviceId) -> Result<()> {
        let name = self.config.device_name(user, None);
        match self.config.devices {
            DeviceCreation::Msc4190 => self.put_device(user, device, &name).await?,
            DeviceCreation::Login => self.login_device(user, device, &name).await?,
            DeviceCreation::Auto => match self.put_device(user, device, &name).await {
                Ok(()) => {}
                Err(MatrixError::Api {
                    status, errcode, ..
                }) if matches!(status, 400 | 404 | 405)
                    && errcode != "M_UNKNOWN_TOKEN"
                    && errcode != "M_EXCLUSIVE" =>
                {
                    tracing::info!(%user, %errcode, "MSC4190 device creation refused; trying appservice login");
                    self.login_device(user, device, &name).await?;
                }
                Err(err) => return Err(err.into()),
            },
        }
        self.db
            .set_bridge_device(user.as_str(), device.as_str())
            .await?;
        tracing::info!(%user, %device, "bridge device created");
        Ok(())
    }

    /// MSC4190: `PUT /devices/{id}?user_id=` as the appservice creates the device.
    async fn put_device(
        &self,
        user: &UserId,
        device: &DeviceId,
        name: &str,
    ) -> Result<(), MatrixError> {
        let mut request = update_device::v3::Request::new(device.to_owned());
        request.display_name = Some(name.to_owned());
        self.client
            .send_as_device(request, Some(user), None)
            .await
            .map(drop)
    }

    /// Appservice login with a chosen device id (homeservers without MSC4190). The access
    /// token it returns is not kept: the appservice token with `device_id` acts as the device.
    async fn login_device(
        &self,
        user: &UserId,
        device: &DeviceId,
        name: &str,
    ) -> Result<(), MatrixError> {
        let body = json!({
            "type": "m.login.application_service",
            "identifier": {"type": "m.id.user", "user": user.as_str()},
            "device_id": device.as_str(),
            "initial_device_display_name": name,
        });
        self.client
            .send_json(
                http::Method::POST,
                "/_matrix/client/v3/login",
                &[],
                Some(&body),
            )
            .await
            .map(drop)
    }

    /// Gives the device's owner a cross-signing identity (master, self-signing, user-signing
    /// keys) and signs the device with it, unless it has one. The appservice uploads it
    /// without user-interactive auth (MSC4190).
    async fn ensure_cross_signing(&self, machine: &LoadedMachine) -> Result<()> {
        if machine.olm.cross_signing_status().await.has_master {
            return Ok(());
        }
        let requests = machine.olm.bootstrap_cross_signing(false).await?;
        if let Some(upload) = &requests.upload_keys_req {
            self.send_request(machine, upload.request_id(), upload.request())
                .await?;
        }
        let keys = &requests.upload_signing_keys_req;
        let mut request = upload_signing_keys::v3::Request::new();
        request.master_key = keys.master_key.as_ref().map(|k| k.to_raw());
        request.self_signing_key = keys.self_signing_key.as_ref().map(|k| k.to_raw());
        request.user_signing_key = keys.user_signing_key.as_ref().map(|k| k.to_raw());
        let response = self
            .client
            .send_as_device(request, Some(&machine.user), Some(&machine.device))
            .await?;
        machine
            .olm
            .mark_request_as_sent(
                &TransactionId::new(),
                AnyIncomingResponse::SigningKeysUpload(&response),
            )
            .await?;
        let response = self
            .client
            .send_as_device(
                requests.upload_signatures_req.clone(),
                Some(&machine.user),
                Some(&machine.device),
            )
            .await?;
        machine
            .olm
            .mark_request_as_sent(&TransactionId::new(), &response)
            .await?;
        tracing::info!(user = %machine.user, device = %machine.device, "cross-signing identity uploaded");
        Ok(())
    }
}

impl From<CryptoError> for crate::matrix::client::MatrixError {
    fn from(err: CryptoError) -> Self {
        match err {
            CryptoError::Matrix(err) => err,
            other => MatrixError::Request(format!("encryption failed: {other}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_are_stable_distinct_and_valid() {
        let a = ruma::user_id!("@sim_alice:localhost");
        let b = ruma::user_id!("@sim_bob:localhost");
        assert_eq!(device_id_for(a, 0), device_id_for(a, 0));
        assert_ne!(device_id_for(a, 0), device_id_for(b, 0));
        assert_ne!(device_id_for(a, 0), device_id_for(a, 1));
        let id = device_id_for(a, 0);
        assert!(
            id.as_str().starts_with("FERRY") && id.as_str().len() == 17,
            "{id}"
        );
    }
}
