//! The `/sync` fallback for homeservers that do not push crypto inputs in transactions (the
//! Conduit family, or Synapse without its MSC2409/MSC3202 flags): each loaded device long-polls
//! `/sync` as itself (identity assertion with `device_id`), filtered down to what encryption
//! needs: to-device events, device list changes, one-time key counts, fallback key types.
//!
//! The loop holds its machine only while it handles a response, so an idle device can still be
//! unloaded; unloading stops the loop. The sync position is the machine's own
//! `next_batch_token`, saved in its store with the changes it came with.

use std::{
    collections::BTreeMap,
    sync::{Arc, Weak},
    time::Duration,
};

use matrix_sdk_crypto::EncryptionSyncChanges;
use ruma::{
    OneTimeKeyAlgorithm, OwnedDeviceId, OwnedUserId, UInt,
    api::client::sync::sync_events::DeviceLists, events::AnyToDeviceEvent, serde::Raw,
};
use serde::Deserialize;

use super::{Crypto, machines::LoadedMachine};

/// Long-poll timeout of one `/sync` request.
const POLL_MS: &str = "30000";

/// Nothing but the device's own crypto inputs.
const FILTER: &str = r#"{"room":{"rooms":[],"account_data":{"not_types":["*"]},"ephemeral":{"not_types":["*"]},"state":{"not_types":["*"]},"timeline":{"not_types":["*"]}},"presence":{"not_types":["*"]},"account_data":{"not_types":["*"]}}"#;

#[derive(Debug, Default, Deserialize)]
struct SyncResponse {
    next_batch: String,
    #[serde(default)]
    to_device: ToDevice,
    #[serde(default)]
    device_lists: DeviceLists,
    #[serde(default)]
    device_one_time_keys_count: BTreeMap<OneTimeKeyAlgorithm, UInt>,
    #[serde(default)]
    device_unused_fallback_key_types: Option<Vec<OneTimeKeyAlgorithm>>,
}

#[derive(Debug, Default, Deserialize)]
struct ToDevice {
    #[serde(default)]
    events: Vec<Raw<AnyToDeviceEvent>>,
}

impl Crypto {
    /// Starts the `/sync` loop of a newly loaded machine (when inputs come from `/sync`).
    pub(crate) fn start_sync(&self, machine: &Arc<LoadedMachine>) {
        let Some(crypto) = self.me.upgrade() else {
            return;
        };
        let weak = Arc::downgrade(machine);
        let (user, device) = (machine.user.clone(), machine.device.clone());
        let task = tokio::spawn(async move { crypto.sync_loop(user, device, weak).await });
        machine.set_sync_task(task.abort_handle());
    }

    async fn sync_loop(
        self: Arc<Self>,
        user: OwnedUserId,
        device: OwnedDeviceId,
        machine: Weak<LoadedMachine>,
    ) {
        let mut since = match machine.upgrade() {
            Some(m) => m.olm.store().next_batch_token().await.ok().flatten(),
            None => return,
        };
        tracing::debug!(%user, %device, "crypto /sync loop started");
        let mut backoff = Duration::from_secs(5);
        loop {
            let mut query = vec![
                ("user_id", user.as_str()),
                ("device_id", device.as_str()),
                ("filter", FILTER),
                ("timeout", POLL_MS),
            ];
            if let Some(since) = &since {
                query.push(("since", since.as_str()));
            }
            let response = self
                .client
                .send_json(http::Method::GET, "/_matrix/client/v3/sync", &query, None)
                .await
                .map_err(|e| e.to_string())
                .and_then(|body| {
                    serde_json::from_value::<SyncResponse>(body).map_err(|e| e.to_string())
                });
            let response = match response {
                Ok(response) => response,
                Err(err) => {
                    // Synapse answers 500 to the appservice's own user (it refuses `/sync` to
                    // it); ghosts' devices still sync, and decryption falls back to them.
                    tracing::warn!(%err, %user, %device, retry_in = ?backoff, "crypto /sync failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(300));
                    continue;
                }
            };
            backoff = Duration::from_secs(5);
            let Some(machine) = machine.upgrade() else {
                return;
            };
            let changes = EncryptionSyncChanges {
                to_device_events: response.to_device.events,
                changed_devices: &response.device_lists,
                one_time_keys_counts: &response.device_one_time_keys_count,
                unused_fallback_keys: response.device_unused_fallback_key_types.as_deref(),
                next_batch_token: Some(response.next_batch.clone()),
            };
            match machine
                .olm
                .receive_sync_changes(changes, &Self::decryption_settings())
                .await
            {
                Ok((_, keys)) => {
                    since = Some(response.next_batch);
                    self.keys_received(&machine, keys);
                    if let Err(err) = self.flush(&machine).await {
                        tracing::warn!(%err, %user, "cannot send crypto requests");
                    }
                }
                Err(err) => {
                    tracing::warn!(%err, %user, %device, "cannot process /sync crypto inputs");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        }
    }
}
