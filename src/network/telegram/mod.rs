//! Telegram, through the grammers MTProto client (the user's own account, or a bot as a relay).
//!
//! The three login flows are in [`login`]; the grammers session and its update state live in
//! ferry's database ([`store`]) and the state advances only after the core accepted an event, so
//! restarts lose and repeat nothing. [`session`] maps grammers' update stream to the neutral
//! events and the bridge's sends to MTProto calls; [`entities`] converts formatting,
//! [`service`] turns service messages into readable lines, [`media`] maps photos, documents,
//! stickers, GIFs, voice notes, locations, contacts and polls (and refreshes expired file
//! references), and [`forum`] decides where channel messages go: broadcast channels are
//! read-only rooms, forums a space with one room per topic ([`ids`] names topic chats).
//! [`details`] reads a group's about text and photo and makes the room's name, topic, avatar
//! and member changes on Telegram. Settings come from `networks.telegram`
//! ([`TelegramConfig`]). Not yet: contact cards from Matrix. Unit tests run against
//! `testnet telegram`.

pub mod details;
pub mod entities;
pub mod forum;
pub mod ids;
pub mod login;
pub mod media;
pub mod recall;
pub mod service;
pub mod session;
pub mod store;
#[cfg(test)]
mod tests;

use std::net::SocketAddrV4;

use std::sync::Arc;

use async_trait::async_trait;

use crate::{
    db::Db,
    network::{
        Capabilities, EventSink, LoginFlowInfo, LoginProcess, Network, NetworkError, NetworkId,
        Session, StoredLogin, UserInfo,
    },
};

pub const TELEGRAM: NetworkId = NetworkId::new("telegram");

/// Where and as which app ferry talks to Telegram (built from `networks.telegram`).
#[derive(Clone)]
pub struct TelegramConfig {
    /// From <https://my.telegram.org> → API development tools.
    pub api_id: i32,
    pub api_hash: String,
    /// Every data centre at this address instead of Telegram's (a test network).
    pub server: Option<SocketAddrV4>,
    /// An auth key already shared with `server`, so no key exchange is needed (test networks
    /// cannot do Telegram's RSA handshake).
    pub auth_key: Option<[u8; 256]>,
    pub ghost_prefix: String,
    pub displayname_template: String,
    /// Sent in `initConnection`: what Telegram's device list shows.
    pub device_model: String,
    pub system_version: String,
    pub app_version: String,
    pub lang_code: String,
    /// Members put into a new group room up front (0: all); see `networks.telegram`.
    pub max_initial_members: usize,
}

impl std::fmt::Debug for TelegramConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // api_hash and the auth key are secrets.
        f.debug_struct("TelegramConfig")
            .field("api_id", &self.api_id)
            .field("server", &self.server)
            .field("device_model", &self.device_model)
            .finish_non_exhaustive()
    }
}

impl TelegramConfig {
    /// The settings of a validated `networks.telegram` section.
    pub fn from_config(config: &crate::config::TelegramConfig) -> Self {
        let (server, auth_key) = match config.dc_override() {
            Some((addr, key)) => (Some(addr), key),
            None => (None, None),
        };
        Self {
            api_id: config.api_id,
            api_hash: config.api_hash.clone(),
            server,
            auth_key,
            ghost_prefix: config.ghost_prefix.clone(),
            displayname_template: config.displayname_template.clone(),
            device_model: config.device_model.clone(),
            system_version: config.system_version.clone(),
            app_version: config.app_version.clone(),
            lang_code: config.lang_code.clone(),
            max_initial_members: config.max_initial_members,
        }
    }

    /// Settings for tests against a simulator at `server` sharing `auth_key`.
    pub fn for_test_server(server: SocketAddrV4, auth_key: [u8; 256]) -> Self {
        let defaults = crate::config::TelegramConfig::default();
        Self {
            api_id: 611,
            api_hash: "0123456789abcdef0123456789abcdef".into(),
            server: Some(server),
            auth_key: Some(auth_key),
            ..Self::from_config(&defaults)
        }
    }

    fn dc_override(&self) -> Option<(SocketAddrV4, Option<[u8; 256]>)> {
        self.server.map(|s| (s, self.auth_key))
    }

    /// A sender pool on `session` that introduces itself as configured.
    fn sender_pool(&self, session: Arc<store::DbSession>) -> grammers_client::SenderPool {
        let defaults = grammers_client::sender::ConnectionParams::default();
        let or_default = |value: &str, default: String| {
            if value.is_empty() {
                default
            } else {
                value.to_owned()
            }
        };
        let params = grammers_client::sender::ConnectionParams {
            device_model: self.device_model.clone(),
            system_version: or_default(&self.system_version, defaults.system_version.clone()),
            app_version: or_default(&self.app_version, env!("CARGO_PKG_VERSION").to_owned()),
            system_lang_code: self.lang_code.clone(),
            lang_code: self.lang_code.clone(),
            // grammers drops updates once this channel is full; ferry reads it continuously,
            // so a generous buffer only matters in bursts (and gaps are recovered anyway).
            updates_channel_capacity: std::num::NonZeroUsize::new(10_000)
                .unwrap_or(defaults.updates_channel_capacity),
            ..defaults
        };
        grammers_client::SenderPool::with_configuration(session, self.api_id, params)
    }
}

/// The Telegram network: its login flows and the sessions of stored logins.
pub struct TelegramNetwork {
    config: TelegramConfig,
    db: Db,
}

impl TelegramNetwork {
    pub fn new(config: TelegramConfig, db: Db) -> Self {
        Self { config, db }
    }
}

#[async_trait]
impl Network for TelegramNetwork {
    fn id(&self) -> NetworkId {
        TELEGRAM
    }

    fn display_name(&self) -> &'static str {
        "Telegram"
    }

    fn ghost_prefix(&self) -> &str {
        &self.config.ghost_prefix
    }

    fn ghost_displayname(&self, user: &UserInfo) -> String {
        crate::network::render_displayname(&self.config.displayname_template, user)
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
            // Premium accounts may send up to 4 GB; 2 GB is every account's limit.
            max_file_size: 2 * 1024 * 1024 * 1024,
            ..Capabilities::default()
        }
    }

    fn login_flows(&self) -> Vec<LoginFlowInfo> {
        vec![
            LoginFlowInfo {
                id: "phone",
                name: "Phone number",
                description: "Log in with your phone number, the code Telegram sends you, and your two-step verification password if you set one.",
            },
            LoginFlowInfo {
                id: "qr",
                name: "QR code",
                description: "Scan a QR code with Telegram on your phone (Settings → Devices).",
            },
            LoginFlowInfo {
                id: "bot",
                name: "Bot token",
                description: "Log in as a bot (from @BotFather) to relay messages of users who have not logged in.",
            },
        ]
    }

    fn start_login(&self, flow: &str) -> Result<Box<dyn LoginProcess>, NetworkError> {
        let (db, config) = (self.db.clone(), self.config.clone());
        Ok(match flow {
            "phone" => Box::new(login::PhoneLogin::new(db, config)),
            "qr" => Box::new(login::QrLogin::new(db, config)),
            "bot" => Box::new(login::BotLogin::new(db, config)),
            other => {
                return Err(NetworkError::Rejected(format!(
                    "unknown Telegram login flow {other} (phone, qr or bot)"
                )));
            }
        })
    }

    fn load_session(
        &self,
        login: &StoredLogin,
        sink: EventSink,
    ) -> Result<Arc<dyn Session>, NetworkError> {
        Ok(Arc::new(session::TelegramSession::new(
            login.id.clone(),
            self.db.clone(),
            self.config.clone(),
            sink,
        )))
    }
}
