//! Crypto inputs pushed in appservice transactions: to-device events (MSC4203, under
//! `de.sorunome.msc2409.to_device` or stable `to_device`), device list changes, one-time key
//! counts and unused fallback key types (MSC3202, including the misspelt
//! `device_one_time_key_counts` Synapse also sends).
//!
//! They are stored with the transaction's events, before the homeserver gets its answer, as one
//! inbox entry ahead of the events (so room keys reach the machines before the events they
//! decrypt), and fed to the addressed device's machine when routed.

use std::{collections::BTreeMap, sync::Arc};

use matrix_sdk_crypto::EncryptionSyncChanges;
use ruma::{
    OneTimeKeyAlgorithm, OwnedDeviceId, OwnedUserId, UInt,
    api::client::sync::sync_events::DeviceLists, events::AnyToDeviceEvent, serde::Raw,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value as JsonValue, value::RawValue};

use super::{Crypto, machines::LoadedMachine};

/// The key an inbox entry holding crypto inputs is recognised by.
const MARKER: &str = "ferry.crypto_input";

type Counts = BTreeMap<OneTimeKeyAlgorithm, UInt>;

/// The crypto part of one transaction.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct CryptoInput {
    #[serde(default)]
    pub to_device: Vec<JsonValue>,
    #[serde(default)]
    pub changed: Vec<OwnedUserId>,
    #[serde(default)]
    pub left: Vec<OwnedUserId>,
    #[serde(default)]
    pub otk_counts: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, Counts>>,
    /// `None`: the homeserver said nothing about fallback keys.
    #[serde(default)]
    pub fallback_keys:
        Option<BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, Vec<OneTimeKeyAlgorithm>>>>,
}

/// The transaction fields read here, raw (a malformed one is skipped, never fatal).
#[derive(Debug, Default, Deserialize)]
pub struct TransactionCryptoFields<'a> {
    #[serde(borrow, default)]
    to_device: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "de.sorunome.msc2409.to_device")]
    unstable_to_device: Option<&'a RawValue>,
    #[serde(borrow, default)]
    device_lists: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "org.matrix.msc3202.device_lists")]
    unstable_device_lists: Option<&'a RawValue>,
    #[serde(borrow, default)]
    device_one_time_keys_count: Option<&'a RawValue>,
    #[serde(
        borrow,
        default,
        rename = "org.matrix.msc3202.device_one_time_keys_count"
    )]
    unstable_otk_counts: Option<&'a RawValue>,
    #[serde(
        borrow,
        default,
        rename = "org.matrix.msc3202.device_one_time_key_counts"
    )]
    unstable_otk_counts_typo: Option<&'a RawValue>,
    #[serde(borrow, default)]
    device_unused_fallback_key_types: Option<&'a RawValue>,
    #[serde(
        borrow,
        default,
        rename = "org.matrix.msc3202.device_unused_fallback_key_types"
    )]
    unstable_fallback_keys: Option<&'a RawValue>,
}

/// Parses the first of `fields` that is present and valid.
fn first<T: for<'de> Deserialize<'de>>(what: &str, fields: &[Option<&RawValue>]) -> Option<T> {
    for raw in fields.iter().flatten() {
        match serde_json::from_str(raw.get()) {
            Ok(value) => return Some(value),
            Err(err) => tracing::warn!(%err, what, "skipping a malformed crypto field"),
        }
    }
    None
}

impl CryptoInput {
    /// The crypto inputs of a transaction body, `None` when it has none.
    pub fn from_transaction(body: &[u8]) -> Option<Self> {
        let fields: TransactionCryptoFields<'_> = serde_json::from_slice(body).ok()?;
        let to_device: Vec<JsonValue> =
            first("to_device", &[fields.to_device, fields.unstable_to_device]).unwrap_or_default();
        let lists: Option<DeviceLists> = first(
            "device_lists",
            &[fields.device_lists, fields.unstable_device_lists],
        );
        let otk_counts = first(
            "device_one_time_keys_count",
            &[
                fields.device_one_time_keys_count,
                fields.unstable_otk_counts,
                fields.unstable_otk_counts_typo,
            ],
        )
        .unwrap_or_default();
        let fallback_keys = first(
            "device_unused_fallback_key_types",
            &[
                fields.device_unused_fallback_key_types,
                fields.unstable_fallback_keys,
            ],
        );
        let lists = lists.unwrap_or_default();
        let input = Self {
            to_device,
            changed: lists.changed,
            left: lists.left,
            otk_counts,
            fallback_keys,
        };
        input.has_any().then_some(input)
    }

    fn has_any(&self) -> bool {
        !self.to_device.is_empty()
            || !self.changed.is_empty()
            || !self.left.is_empty()
            || !self.otk_counts.is_empty()
            || self.fallback_keys.as_ref().is_some_and(|f| !f.is_empty())
    }

    /// The inbox form.
    pub fn to_stored(&self) -> String {
        serde_json::json!({ MARKER: self }).to_string()
    }

    /// Reads an inbox entry; `None` when it is not crypto input.
    pub fn from_stored(stored: &str) -> Option<Result<Self, serde_json::Error>> {
        if !stored.starts_with(&format!("{{\"{MARKER}\"")) {
            return None;
        }
        #[derive(Deserialize)]
        struct Stored {
            #[serde(rename = "ferry.crypto_input")]
            input: CryptoInput,
        }
        Some(serde_json::from_str::<Stored>(stored).map(|s| s.input))
    }
}

impl Crypto {
    /// Feeds a transaction's crypto inputs to the machines they concern: to-device events to
    /// their device (loading it), device lists and key counts to every loaded machine.
    pub async fn handle_input(self: &Arc<Self>, input: CryptoInput) {
        let mut to_device: BTreeMap<OwnedUserId, Vec<Raw<AnyToDeviceEvent>>> = BTreeMap::new();
        for event in &input.to_device {
            let user = event
                .get("to_user_id")
                .and_then(JsonValue::as_str)
                .and_then(|u| OwnedUserId::try_from(u).ok());
            let device = event.get("to_device_id").and_then(JsonValue::as_str);
            let (Some(user), Some(device)) = (user, device) else {
                tracing::debug!("skipping a to-device event without a recipient");
                continue;
            };
            match self.db.bridge_device(user.as_str()).await {
                Ok(Some(ours)) if ours == device => {}
                Ok(_) => {
                    tracing::debug!(%user, device, "to-device event for a device we do not drive");
                    continue;
                }
                Err(err) => {
                    tracing::warn!(%err, "cannot look up a device; to-device event skipped");
                    continue;
                }
            }
            match Raw::new(event) {
                Ok(raw) => to_device
                    .entry(user)
                    .or_default()
                    .push(raw.cast_unchecked()),
                Err(err) => tracing::warn!(%err, "skipping a to-device event"),
            }
        }
        let mut targets: BTreeMap<OwnedUserId, Arc<LoadedMachine>> = self
            .machines
            .loaded()
            .into_iter()
            .map(|m| (m.user.clone(), m))
            .collect();
        for user in to_device.keys() {
            if targets.contains_key(user) {
                continue;
            }
            match self.machine(user).await {
                Ok(machine) => {
                    targets.insert(user.clone(), machine);
                }
                Err(err) => {
                    tracing::warn!(%err, %user, "cannot load a device for its to-device events")
                }
            }
        }
        let mut lists = DeviceLists::default();
        lists.changed = input.changed.clone();
        lists.left = input.left.clone();
        let no_counts = Counts::new();
        for (user, machine) in targets {
            let events = to_device.remove(&user).unwrap_or_default();
            let counts = input
                .otk_counts
                .get(&user)
                .and_then(|d| d.get(&machine.device))
                .unwrap_or(&no_counts);
            let fallback = input.fallback_keys.as_ref().map(|f| {
                f.get(&user)
                    .and_then(|d| d.get(&machine.device))
                    .map(Vec::as_slice)
                    .unwrap_or(&[])
            });
            if events.is_empty()
                && lists.changed.is_empty()
                && lists.left.is_empty()
                && counts.is_empty()
            {
                continue;
            }
            let changes = EncryptionSyncChanges {
                to_device_events: events,
                changed_devices: &lists,
                one_time_keys_counts: counts,
                unused_fallback_keys: fallback,
                next_batch_token: None,
            };
            match machine
                .olm
                .receive_sync_changes(changes, &Self::decryption_settings())
                .await
            {
                Ok((_, keys)) => self.keys_received(&machine, keys),
                Err(err) => {
                    tracing::warn!(%err, user = %machine.user, "cannot process crypto inputs");
                    continue;
                }
            }
            // Answers (key uploads, queries, forwarded keys) go out in the background.
            let crypto = self.clone();
            tokio::spawn(async move {
                if let Err(err) = crypto.flush(&machine).await {
                    tracing::warn!(%err, user = %machine.user, "cannot send crypto requests");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_unstable_and_typo_names_and_round_trips() {
        let body = br#"{"events":[],
            "de.sorunome.msc2409.to_device":[{"type":"m.room.encrypted","sender":"@a:localhost",
              "to_user_id":"@ferrybot:localhost","to_device_id":"FERRYX","content":{}}],
            "org.matrix.msc3202.device_lists":{"changed":["@a:localhost"],"left":[]},
            "org.matrix.msc3202.device_one_time_key_counts":{"@ferrybot:localhost":{"FERRYX":{"signed_curve25519":3}}},
            "org.matrix.msc3202.device_unused_fallback_key_types":{"@ferrybot:localhost":{"FERRYX":[]}}}"#;
        let input = CryptoInput::from_transaction(body).expect("has crypto input");
        assert_eq!(input.to_device.len(), 1);
        assert_eq!(input.changed.len(), 1);
        let user = OwnedUserId::try_from("@ferrybot:localhost").expect("valid");
        let count = input.otk_counts[&user][&OwnedDeviceId::from("FERRYX")]
            [&OneTimeKeyAlgorithm::SignedCurve25519];
        assert_eq!(u64::from(count), 3);
        assert!(input.fallback_keys.is_some());
        let stored = input.to_stored();
        let back = CryptoInput::from_stored(&stored)
            .expect("recognised")
            .expect("parses");
        assert_eq!(back.to_device, input.to_device);
        assert!(CryptoInput::from_stored(r#"{"type":"m.room.message"}"#).is_none());
    }

    #[test]
    fn nothing_or_garbage_is_no_input() {
        assert!(CryptoInput::from_transaction(br#"{"events":[]}"#).is_none());
        assert!(CryptoInput::from_transaction(br#"{"to_device":"nope","events":[]}"#).is_none());
        assert!(CryptoInput::from_transaction(b"[]").is_none());
    }
}
