//! Telling a Matrix user what happened to their event: a `com.beeper.message_send_status`
//! event for every handled event (when `bridge.message_status_events` is on), and a notice in
//! the room when it failed.

use ruma::{EventId, RoomId, UserId};
use serde_json::json;

use crate::bridge::Bridge;

/// The outcome of handling one Matrix event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Success,
    /// Sent, but not every recipient got it (the message says who and why).
    Partial {
        message: String,
    },
    /// Could not be sent now; sending it again may work.
    Retriable {
        reason: &'static str,
        message: String,
    },
    /// Will never be sent (unsupported, not allowed, malformed).
    Permanent {
        reason: &'static str,
        message: String,
    },
}

impl Outcome {
    pub(crate) fn unsupported(message: impl Into<String>) -> Self {
        Self::Permanent {
            reason: "com.beeper.unsupported_event",
            message: message.into(),
        }
    }

    pub(crate) fn no_permission(message: impl Into<String>) -> Self {
        Self::Permanent {
            reason: "m.no_permission",
            message: message.into(),
        }
    }

    pub(crate) fn from_network(err: &crate::network::NetworkError) -> Self {
        use crate::network::NetworkError;
        match err {
            NetworkError::Unsupported(what) => {
                Self::unsupported(format!("{what} is not supported by this network"))
            }
            NetworkError::Rejected(why) => Self::Permanent {
                reason: "m.foreign_network_error",
                message: why.clone(),
            },
            NetworkError::LoggedOut(why) => Self::Retriable {
                reason: "m.bridge_unavailable",
                message: format!("your login has ended ({why}); log in again"),
            },
            NetworkError::NotConnected(_) | NetworkError::Transient(_) => Self::Retriable {
                reason: "m.foreign_network_error",
                message: err.to_string(),
            },
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Partial { .. } => "partial",
            Self::Retriable { .. } | Self::Permanent { .. } => "failed",
        }
    }
}

impl Bridge {
    /// Reports the outcome of `event` in `room` (status event, plus a notice on failure).
    pub(crate) async fn report(
        &self,
        room: &RoomId,
        event: &EventId,
        network: &str,
        outcome: &Outcome,
    ) {
        self.metrics
            .events_handled
            .with_label_values(&["matrix_to_remote", outcome.label()])
            .inc();
        let (status, reason, message) = match outcome {
            // Sent: the status stays SUCCESS (clients would offer a retry otherwise), with the
            // recipients it missed in the message.
            Outcome::Partial { message } => (
                "SUCCESS",
                Some("m.foreign_network_error"),
                Some(message.as_str()),
            ),
            Outcome::Success => ("SUCCESS", None, None),
            Outcome::Retriable { reason, message } => {
                ("FAIL_RETRIABLE", Some(*reason), Some(message.as_str()))
            }
            Outcome::Permanent { reason, message } => {
                ("FAIL_PERMANENT", Some(*reason), Some(message.as_str()))
            }
        };
        if self.config.bridge.message_status_events {
            let mut content = json!({"status": status});
            if let Some(reason) = reason {
                content["reason"] = json!(reason);
            }
            if let Some(message) = message {
                content["message"] = json!(message);
            }
            self.send_status(room, event, network, content).await;
        }
        match outcome {
            Outcome::Success => {}
            Outcome::Partial { message } => {
                self.notice(
                    room,
                    &format!("⚠️ Your message was not delivered to everyone: {message}"),
                )
                .await;
            }
            Outcome::Retriable { message, .. } | Outcome::Permanent { message, .. } => {
                self.notice(room, &format!("⚠️ Your message was not bridged: {message}"))
                    .await;
            }
        }
    }

    /// A message sent from Matrix reached `to` (a remote delivery receipt): its send status
    /// says so (`delivered_to_users`, as the mautrix bridges and Beeper's clients read it).
    /// Without `message_status_events`, Matrix has no place for it.
    pub(crate) async fn report_delivered(
        &self,
        room: &RoomId,
        event: &EventId,
        network: &str,
        to: &UserId,
    ) {
        if self.config.bridge.message_status_events {
            let content = json!({"status": "SUCCESS", "delivered_to_users": [to]});
            self.send_status(room, event, network, content).await;
        }
    }

    /// The `com.beeper.message_send_status` event for `event` with the status fields in
    /// `content`, sent by the bot.
    async fn send_status(
        &self,
        room: &RoomId,
        event: &EventId,
        network: &str,
        mut content: serde_json::Value,
    ) {
        content["network"] = json!(network);
        content["m.relates_to"] = json!({"rel_type": "m.reference", "event_id": event});
        let txn = format!("ferry-status-{}", ruma::TransactionId::new());
        let bot = self.intents.bot().to_owned();
        if let Err(err) = self
            .intents
            .send_event(room, &bot, "com.beeper.message_send_status", &txn, &content)
            .await
        {
            tracing::warn!(%err, %room, "cannot send message status");
        }
    }
}
