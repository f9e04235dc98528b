//! WhatsApp, through whatsapp-rust as a linked companion device (like WhatsApp Web).
//!
//! Each Matrix user links ferry to their own account ([`login`]: QR code or pairing code); the
//! device's keys and Signal sessions live in ferry's database ([`store`], encrypted with the
//! store key), received messages are stored before WhatsApp gets its ack ([`inbox`]), and a
//! [`session`] maps WhatsApp's traffic to ferry's events ([`convert`], [`markup`], [`ids`]),
//! with the history sync bounded and paced ([`history`]), contacts' names and pictures kept
//! ([`profiles`]) and the phone's last sign of life watched ([`health`]). Settings come from
//! `networks.whatsapp`.
//!
//! Status: linking (QR, pairing code), texts with formatting and mentions, replies, edits,
//! revokes, reactions (and their removal), read receipts, typing, presence, media both ways
//! (images, videos and GIFs, voice notes with waveform, audio, documents, stickers), locations,
//! contacts, polls with their vote counts ([`polls`]), disappearing messages honoured both ways
//! ([`disappearing`]), view-once placeholders, groups ([`groups`]: name, description and
//! picture both ways, members and admins, joins and leaves, invites and kicks from Matrix),
//! communities as spaces, history sync after linking (inline or a downloaded blob, within
//! limits), one ghost per person across phone number and LID, ghost names and avatars kept
//! across restarts, restarts and outages without loss, a warning when the phone has not been
//! seen for long. Not yet: polls from Matrix (the core carries none).

pub mod client;
pub mod convert;
pub mod disappearing;
pub mod groups;
pub mod health;
pub mod history;
pub mod ids;
pub mod inbox;
pub mod login;
pub mod markup;
pub mod polls;
pub mod profiles;
pub mod session;
pub mod store;

use std::sync::Arc;

use async_trait::async_trait;

use crate::{
    config::WhatsAppConfig,
    db::Db,
    network::{
        Capabilities, EventSink, LoginFlowInfo, LoginProcess, Network, NetworkError, NetworkId,
        Session, StoredLogin, UserInfo,
    },
};

pub const WHATSAPP: NetworkId = NetworkId::new("whatsapp");

/// The WhatsApp network.
pub struct WhatsAppNetwork {
    shared: Arc<client::Shared>,
}

impl WhatsAppNetwork {
    /// `pickle_key` (from `encryption.pickle_key`) unlocks the store key that encrypts the
    /// devices' keys at rest.
    pub fn new(config: WhatsAppConfig, db: Db, pickle_key: &str) -> Self {
        Self {
            shared: client::Shared::new(config, db, pickle_key),
        }
    }
}

#[async_trait]
impl Network for WhatsAppNetwork {
    fn id(&self) -> NetworkId {
        WHATSAPP
    }

    fn display_name(&self) -> &'static str {
        "WhatsApp"
    }

    fn ghost_prefix(&self) -> &str {
        &self.shared.config.ghost_prefix
    }

    fn ghost_displayname(&self, user: &UserInfo) -> String {
        crate::network::render_displayname(&self.shared.config.displayname_template, user)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            formatting: true,
            group_membership: true,
            edits: true,
            reactions: true,
            replies: true,
            deletes: true,
            receipts: true,
            typing: true,
            presence: true,
            media: true,
            locations: true,
            contacts: true,
            chat_details: true,
            max_file_size: session::MAX_UPLOAD,
            ..Capabilities::default()
        }
    }

    fn login_flows(&self) -> Vec<LoginFlowInfo> {
        vec![
            LoginFlowInfo {
                id: "qr",
                name: "QR code",
                description: "Scan a QR code with WhatsApp on your phone (Settings → Linked devices → Link a device).",
            },
            LoginFlowInfo {
                id: "phone",
                name: "Pairing code",
                description: "Enter an 8-character code on your phone instead of scanning; ferry asks for your phone number first.",
            },
        ]
    }

    fn start_login(&self, flow: &str) -> Result<Box<dyn LoginProcess>, NetworkError> {
        let method = match flow {
            "qr" => login::Method::Qr,
            "phone" | "code" => login::Method::Phone(None),
            // A phone number as the flow (for front-ends that pass one): its pairing code.
            other => match login::phone_digits(other) {
                Some(phone) => login::Method::Phone(Some(phone)),
                None => {
                    return Err(NetworkError::Rejected(format!(
                        "unknown WhatsApp login flow {other} (qr, phone, or your phone number)"
                    )));
                }
            },
        };
        Ok(Box::new(login::WhatsAppLogin::new(
            self.shared.clone(),
            method,
        )))
    }

    fn load_session(
        &self,
        login: &StoredLogin,
        sink: EventSink,
    ) -> Result<Arc<dyn Session>, NetworkError> {
        let store = login
            .secret
            .get("store")
            .and_then(serde_json::Value::as_str)
            .filter(|s| s.starts_with("wa-"))
            .ok_or_else(|| {
                NetworkError::LoggedOut("the stored WhatsApp login has no device store".into())
            })?;
        Ok(Arc::new(session::WhatsAppSession::new(
            login.id.clone(),
            store.to_owned(),
            self.shared.clone(),
            sink,
        )))
    }
}

/// Deletes what ferry kept about a WhatsApp login besides the device store: the key-value
/// entries of its profiles, timers, polls and phone watch, and its pending expiries.
pub async fn forget_login(
    db: &crate::db::Db,
    login: &str,
    store_id: &str,
) -> crate::db::Result<()> {
    for prefix in [
        format!("whatsapp/{login}/"),
        format!("whatsapp:{login}:"),
        format!("whatsapp:{store_id}:"),
    ] {
        db.kv_delete_prefix(&prefix).await?;
    }
    crate::network::expiry::Timers::new(
        db.clone(),
        crate::network::expiry::TimerNetwork::WhatsApp,
        login,
    )
    .forget_all()
    .await
}
