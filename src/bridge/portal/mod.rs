//! Portals: one remote chat <-> one Matrix room, and the handling of each item in a portal's
//! ordered lane. `remote.rs` bridges remote events into the room, `matrix.rs` the room's events
//! out, `status.rs` reports the outcome of each Matrix event back to its sender.
//!
//! Handling is idempotent so replays after a crash are harmless: a remote message whose mapping
//! exists is skipped, a Matrix send uses a transaction id derived from the remote message id (the
//! homeserver answers a repeat with the same event), and remote sends carry the Matrix event id
//! as their idempotency key.

mod matrix;
mod remote;
mod retry;
mod room;
mod status;

use std::{collections::HashSet, sync::Arc};

use ruma::{OwnedRoomId, OwnedUserId};
use sha2::{Digest, Sha256};

use crate::{
    db::portals::PortalRow,
    matrix::client::MatrixError,
    network::{Network, PortalKey},
};

use super::{Bridge, BridgeError, router::QueueItem};

/// What a portal's worker keeps between items.
pub struct PortalState {
    key: PortalKey,
    row: Option<PortalRow>,
    loaded: bool,
    /// Matrix users currently typing in the room (from the homeserver's typing EDUs).
    typing: HashSet<OwnedUserId>,
}

impl PortalState {
    pub fn new(key: PortalKey) -> Self {
        Self {
            key,
            row: None,
            loaded: false,
            typing: HashSet::new(),
        }
    }

    fn room(&self) -> Option<OwnedRoomId> {
        self.row
            .as_ref()?
            .room_id
            .as_deref()
            .and_then(|r| OwnedRoomId::try_from(r).ok())
    }

    /// (network, chat, receiver) as stored.
    fn db_key(&self) -> (&str, &str, &str) {
        (
            self.key.network.as_str(),
            self.key.chat.as_str(),
            self.key.receiver_str(),
        )
    }
}

/// Whether an error can never succeed on retry (so the event is given up, not kept).
fn is_permanent(err: &BridgeError) -> bool {
    match err {
        BridgeError::Matrix(MatrixError::Api { status, .. }) => {
            (400..500).contains(status) && *status != 429
        }
        BridgeError::Matrix(MatrixError::Request(_) | MatrixError::Response(_)) => true,
        BridgeError::Network(err) => !err.is_transient(),
        BridgeError::Invalid(_) => true,
        _ => false,
    }
}

/// The Matrix transaction id for a remote event: stable, so a replay is deduplicated by the
/// homeserver.
fn matrix_txn_id(key: &PortalKey, what: &str, id: &str) -> String {
    let digest = Sha256::digest(format!(
        "{}\0{}\0{}\0{what}\0{id}",
        key.network,
        key.chat,
        key.receiver_str()
    ));
    format!("ferry_{}", hex::encode(&digest[..16]))
}

impl Bridge {
    pub(crate) async fn handle_portal_item(
        self: &Arc<Self>,
        portal: &mut PortalState,
        item: QueueItem,
    ) {
        if !portal.loaded {
            let (network, chat, receiver) = portal.db_key();
            match self.db.get_portal(network, chat, receiver).await {
                Ok(row) => {
                    portal.row = row;
                    portal.loaded = true;
                }
                Err(err) => tracing::warn!(%err, portal = %portal.key, "cannot load portal"),
            }
        }
        match item {
            QueueItem::Matrix {
                event, received, ..
            } => self.portal_matrix_event(portal, &event, received).await,
            QueueItem::Ephemeral { event } => self.portal_ephemeral(portal, &event).await,
            QueueItem::Remote { envelope, received } => {
                // A transient failure (database or homeserver away) is retried here, holding
                // the lane: moving on would put this event after later ones, and nothing would
                // deliver it before the next restart (the session has read past it).
                let mut pacing = retry::RetryPacing::new(self.config.bridge.max_retry_seconds);
                let result = loop {
                    let result = self.portal_remote_event(portal, &envelope).await;
                    match (&result, pacing.next_wait()) {
                        (Err(err), Some(backoff)) if !is_permanent(err) => {
                            tracing::warn!(%err, portal = %portal.key, ?backoff, "remote event failed; retrying");
                            pacing.wait().await;
                        }
                        _ => break result,
                    }
                };
                let outcome = match &result {
                    Ok(()) => "success",
                    Err(err) if is_permanent(err) => {
                        tracing::warn!(%err, portal = %portal.key, kind = envelope.event.kind(), "remote event cannot be bridged; skipped");
                        "failed"
                    }
                    Err(err) => {
                        // Still failing at the retry deadline. Not marked done: the
                        // checkpoint stays before it and a restart delivers it again.
                        tracing::error!(%err, portal = %portal.key, kind = envelope.event.kind(), "remote event failed; kept for retry");
                        "retry"
                    }
                };
                self.metrics
                    .events_handled
                    .with_label_values(&["remote_to_matrix", outcome])
                    .inc();
                if outcome == "success" {
                    self.metrics
                        .bridge_latency
                        .with_label_values(&["remote_to_matrix"])
                        .observe(received.elapsed().as_secs_f64());
                }
                if outcome != "retry" {
                    self.remote_done(envelope.network, &envelope.login, envelope.checkpoint)
                        .await;
                }
            }
            QueueItem::Sync { login, info } => {
                // Transient failures are retried like remote events': a chat inside a space
                // (a WhatsApp community's group) waits for the space's room, which its own
                // lane is making at the same time.
                let mut pacing = retry::RetryPacing::new(self.config.bridge.max_retry_seconds);
                loop {
                    match (
                        self.portal_sync(portal, &login, &info).await,
                        pacing.next_wait(),
                    ) {
                        (Err(err), Some(backoff)) if !is_permanent(&err) => {
                            tracing::debug!(%err, portal = %portal.key, ?backoff, "portal sync failed; retrying");
                            pacing.wait().await;
                        }
                        (Err(err), _) => {
                            tracing::warn!(%err, portal = %portal.key, "portal sync failed");
                            break;
                        }
                        (Ok(()), _) => break,
                    }
                }
            }
            QueueItem::Command(command) => self.portal_command(portal, command).await,
        }
    }

    fn network_of(&self, key: &PortalKey) -> Result<Arc<dyn Network>, BridgeError> {
        self.network(key.network.as_str())
            .cloned()
            .ok_or_else(|| BridgeError::Invalid(format!("network {} is not enabled", key.network)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::{ChatId, LoginId, NetworkId};

    #[test]
    fn matrix_txn_ids_are_stable_and_distinct() {
        let key = PortalKey {
            network: NetworkId::new("sim"),
            chat: ChatId::new("c1"),
            receiver: None,
        };
        let other = PortalKey {
            receiver: Some(LoginId::new("alice")),
            ..key.clone()
        };
        assert_eq!(
            matrix_txn_id(&key, "m", "m1"),
            matrix_txn_id(&key, "m", "m1")
        );
        assert_ne!(
            matrix_txn_id(&key, "m", "m1"),
            matrix_txn_id(&key, "m", "m2")
        );
        assert_ne!(
            matrix_txn_id(&key, "m", "m1"),
            matrix_txn_id(&key, "edit", "m1")
        );
        assert_ne!(
            matrix_txn_id(&key, "m", "m1"),
            matrix_txn_id(&other, "m", "m1")
        );
    }
}
