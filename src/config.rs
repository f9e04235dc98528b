//! The YAML configuration: typed, defaulted and validated once at start-up.
//!
//! Every key is documented in `config.example.yaml` (which `ferry generate-config` prints), so the
//! structs here carry no defaults of their own beyond what that file shows. Errors name the
//! offending key (`database.type: ...`) because an admin editing YAML needs to know where to look.

use std::{collections::BTreeMap, net::SocketAddr, path::Path};

use ruma::{OwnedServerName, OwnedUserId, UserId};
use serde::Deserialize;
use url::Url;

/// The example configuration, embedded so `generate-config` needs no files.
pub const EXAMPLE: &str = include_str!("../config.example.yaml");

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    fn invalid(key: &str, message: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub homeserver: HomeserverConfig,
    pub appservice: AppserviceConfig,
    pub database: DatabaseConfig,
    #[serde(default)]
    pub bridge: BridgeConfig,
    #[serde(default)]
    pub networks: NetworksConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub logging: LoggingConfig,
    #[serde(default)]
    pub encryption: EncryptionConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HomeserverConfig {
    pub address: Url,
    pub domain: OwnedServerName,
    #[serde(default)]
    pub software: HomeserverSoftware,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HomeserverSoftware {
    #[default]
    Synapse,
    Conduit,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppserviceConfig {
    pub address: Url,
    pub hostname: std::net::IpAddr,
    pub port: u16,
    pub id: String,
    pub registration: String,
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    pub bot: BotConfig,
}

fn default_max_body() -> usize {
    16 * 1024 * 1024
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotConfig {
    pub username: String,
    #[serde(default)]
    pub displayname: String,
    #[serde(default)]
    pub avatar: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseType {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    #[serde(rename = "type")]
    pub kind: DatabaseType,
    pub uri: String,
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

fn default_max_connections() -> u32 {
    10
}

/// A permission level, ordered from least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PermissionLevel {
    Block,
    Relay,
    Commands,
    User,
    Admin,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BridgeConfig {
    pub command_prefix: String,
    pub permissions: BTreeMap<String, PermissionLevel>,
    pub portal_idle_seconds: u64,
    pub portal_queue_size: usize,
    pub max_retry_seconds: u64,
    /// How long a login may be cut off from its network (e.g. the signal-cli daemon down)
    /// before its user is told, once; they are told again when it is back.
    pub outage_notice_seconds: u64,
    /// Send a `com.beeper.message_send_status` event for every bridged Matrix event (for
    /// clients that show delivery state). Off by default: it doubles the homeserver's work per
    /// message; failures are still told with a notice in the room either way.
    pub message_status_events: bool,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        Self {
            command_prefix: "!ferry".to_owned(),
            permissions: BTreeMap::from([("*".to_owned(), PermissionLevel::Relay)]),
            portal_idle_seconds: 300,
            portal_queue_size: 128,
            max_retry_seconds: 600,
            outage_notice_seconds: 60,
            message_status_events: false,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworksConfig {
    pub sim: SimConfig,
    pub signal: SignalConfig,
    pub telegram: TelegramConfig,
    pub whatsapp: WhatsAppConfig,
}

/// `networks.whatsapp`: ferry as a linked device (companion) of users' WhatsApp accounts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WhatsAppConfig {
    pub enabled: bool,
    pub ghost_prefix: String,
    pub displayname_template: String,
    /// What the phone's "Linked devices" list shows for ferry.
    pub device_name: String,
    /// The WhatsApp web socket. Empty: WhatsApp's own (`wss://web.whatsapp.com/ws/chat`);
    /// tests point it at testnet's simulator.
    pub ws_url: String,
    /// The WhatsApp Web version ferry announces (`2.3000.1234567890`). Empty: asked from
    /// web.whatsapp.com at each connect (needs outbound HTTPS).
    pub version: String,
    /// Bridge the conversations and recent messages WhatsApp sends after linking.
    pub history_sync: bool,
    /// At most this many messages per conversation from the history sync.
    pub history_messages_per_chat: usize,
    /// Pause between two backfilled messages, in milliseconds (keeps the homeserver responsive).
    pub history_pace_ms: u64,
    /// At most this many conversations (the most recently active) from the history sync; the
    /// others get a portal when they next see a message.
    pub history_max_conversations: usize,
    /// Warn the user once when their phone has not been seen for this long (WhatsApp unlinks
    /// companions whose phone stays offline for about 14 days; mautrix-whatsapp warns at 12).
    pub phone_offline_warn_seconds: u64,
    /// Test networks only: media at this `host:port` over plain HTTP (the library always uses
    /// HTTPS; testnet's simulator serves media without TLS).
    pub media_http_host: String,
}

impl Default for WhatsAppConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            ghost_prefix: "whatsapp_".to_owned(),
            displayname_template: "{name} (WhatsApp)".to_owned(),
            device_name: "ferry".to_owned(),
            ws_url: String::new(),
            version: String::new(),
            history_sync: true,
            history_messages_per_chat: 50,
            history_pace_ms: 100,
            history_max_conversations: 50,
            phone_offline_warn_seconds: 12 * 24 * 3600,
            media_http_host: String::new(),
        }
    }
}

impl WhatsAppConfig {
    /// The announced version, parsed (validated at load, so `None` means "ask WhatsApp").
    pub fn version_triple(&self) -> Option<(u32, u32, u32)> {
        let mut parts = self.version.split('.').map(|p| p.parse::<u32>().ok());
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(Some(a)), Some(Some(b)), Some(Some(c)), None) => Some((a, b, c)),
            _ => None,
        }
    }

    fn validate(&self, encryption: &EncryptionConfig) -> Result<(), ConfigError> {
        validate_prefix("networks.whatsapp.ghost_prefix", &self.ghost_prefix)?;
        if self.device_name.trim().is_empty() {
            return Err(ConfigError::invalid(
                "networks.whatsapp.device_name",
                "must not be empty",
            ));
        }
        if !self.ws_url.is_empty() {
            let ok = Url::parse(&self.ws_url)
                .is_ok_and(|u| matches!(u.scheme(), "ws" | "wss") && u.host().is_some());
            if !ok {
                return Err(ConfigError::invalid(
                    "networks.whatsapp.ws_url",
                    "must be empty or a ws:// or wss:// URL",
                ));
            }
        }
        if !self.version.is_empty() && self.version_triple().is_none() {
            return Err(ConfigError::invalid(
                "networks.whatsapp.version",
                "must be empty or three numbers like 2.3000.1234567890",
            ));
        }
        // The WhatsApp keys are encrypted at rest with the same store key as the Matrix
        // crypto state, unlocked by encryption.pickle_key (also when encryption.allow is off).
        if encryption.pickle_key.expose().chars().count() < 16 {
            return Err(ConfigError::invalid(
                "encryption.pickle_key",
                "must be at least 16 characters when networks.whatsapp is enabled (it encrypts the WhatsApp keys at rest)",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignalConfig {
    pub enabled: bool,
    /// `tcp://host:port` or `unix:///path/to/socket` of `signal-cli daemon`.
    pub daemon: String,
    pub ghost_prefix: String,
    pub displayname_template: String,
    /// The name of the linked device shown in the phone's Signal settings.
    pub device_name: String,
    /// How long one call to the daemon may take, in seconds.
    pub request_timeout_seconds: u64,
}

impl Default for SignalConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            daemon: "tcp://127.0.0.1:7583".to_owned(),
            ghost_prefix: "signal_".to_owned(),
            displayname_template: "{name} (Signal)".to_owned(),
            device_name: "ferry".to_owned(),
            request_timeout_seconds: 60,
        }
    }
}

/// `networks.telegram`: the app ferry presents to Telegram and, for tests, where Telegram is.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelegramConfig {
    pub enabled: bool,
    /// From <https://my.telegram.org> → API development tools.
    pub api_id: i32,
    /// The app's secret hash (32 hex digits); never logged.
    pub api_hash: String,
    pub ghost_prefix: String,
    pub displayname_template: String,
    /// What Telegram's "Devices" list shows for ferry's sessions.
    pub device_model: String,
    /// Empty: the operating system ferry runs on.
    pub system_version: String,
    /// Empty: ferry's own version.
    pub app_version: String,
    /// ISO 639-1 language code sent to Telegram (service texts come in that language).
    pub lang_code: String,
    /// Members of a group or channel put into its room when the portal is created; the rest
    /// join when they first write. 0: no cap (every member is fetched up front).
    pub max_initial_members: usize,
    /// Test networks only: every data centre at this `ip:port` instead of Telegram's.
    pub dc_address: String,
    /// Test networks only: an auth key (512 hex digits) already shared with `dc_address`, since
    /// a test server cannot do Telegram's RSA key exchange. Never logged.
    pub dc_auth_key: String,
}

impl Default for TelegramConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            api_id: 0,
            api_hash: String::new(),
            ghost_prefix: "telegram_".to_owned(),
            displayname_template: "{name} (Telegram)".to_owned(),
            device_model: "ferry".to_owned(),
            system_version: String::new(),
            app_version: String::new(),
            lang_code: "en".to_owned(),
            max_initial_members: 200,
            dc_address: String::new(),
            dc_auth_key: String::new(),
        }
    }
}

impl std::fmt::Debug for TelegramConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // api_hash and dc_auth_key are secrets: only whether they are set is shown.
        f.debug_struct("TelegramConfig")
            .field("enabled", &self.enabled)
            .field("api_id", &self.api_id)
            .field("api_hash_set", &!self.api_hash.is_empty())
            .field("ghost_prefix", &self.ghost_prefix)
            .field("displayname_template", &self.displayname_template)
            .field("device_model", &self.device_model)
            .field("system_version", &self.system_version)
            .field("app_version", &self.app_version)
            .field("lang_code", &self.lang_code)
            .field("max_initial_members", &self.max_initial_members)
            .field("dc_address", &self.dc_address)
            .field("dc_auth_key_set", &!self.dc_auth_key.is_empty())
            .finish()
    }
}

impl TelegramConfig {
    /// The data-centre override, parsed (validated at load, so `None` means "Telegram's own").
    pub fn dc_override(&self) -> Option<(std::net::SocketAddrV4, Option<[u8; 256]>)> {
        let addr = self.dc_address.parse().ok()?;
        let key = hex::decode(&self.dc_auth_key)
            .ok()
            .and_then(|bytes| <[u8; 256]>::try_from(bytes).ok());
        Some((addr, key))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.api_id <= 0 {
            return Err(ConfigError::invalid(
                "networks.telegram.api_id",
                "must be the positive number from my.telegram.org",
            ));
        }
        if self.api_hash.len() != 32 || !self.api_hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            // The value is a secret: the message does not repeat it.
            return Err(ConfigError::invalid(
                "networks.telegram.api_hash",
                "must be the 32 hex digits from my.telegram.org",
            ));
        }
        for (key, value) in [
            ("networks.telegram.device_model", &self.device_model),
            ("networks.telegram.lang_code", &self.lang_code),
        ] {
            if value.trim().is_empty() {
                return Err(ConfigError::invalid(key, "must not be empty"));
            }
        }
        if !self.dc_address.is_empty() && self.dc_address.parse::<std::net::SocketAddrV4>().is_err()
        {
            return Err(ConfigError::invalid(
                "networks.telegram.dc_address",
                "must be empty or an IPv4 ip:port",
            ));
        }
        if !self.dc_auth_key.is_empty() {
            let ok = self.dc_auth_key.len() == 512
                && self.dc_auth_key.bytes().all(|b| b.is_ascii_hexdigit());
            if !ok {
                return Err(ConfigError::invalid(
                    "networks.telegram.dc_auth_key",
                    "must be empty or 512 hex digits (a 256-byte key)",
                ));
            }
            if self.dc_address.is_empty() {
                return Err(ConfigError::invalid(
                    "networks.telegram.dc_auth_key",
                    "needs networks.telegram.dc_address",
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimConfig {
    pub enabled: bool,
    pub server: Url,
    pub ghost_prefix: String,
    pub displayname_template: String,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            server: Url::parse("http://127.0.0.1:29399").expect("constant URL"),
            ghost_prefix: "sim_".to_owned(),
            displayname_template: "{name} (Sim)".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 9318)),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    pub level: String,
    pub format: LogFormat,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Pretty,
        }
    }
}

/// Matrix-side end-to-end encryption (`encryption:`): see config.example.yaml for each key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EncryptionConfig {
    /// Encrypted rooms are supported at all (devices are created, events decrypted).
    pub allow: bool,
    /// Refuse to bridge into unencrypted portals.
    pub require: bool,
    /// New portals are created encrypted.
    pub default: bool,
    /// Which devices of Matrix users get the ghosts' room keys.
    pub trust: KeySharingTrust,
    /// Display name of the bridge's devices; `{user}` is the device owner's user id,
    /// `{displayname}` the owner's display name when known (else the user id).
    pub device_display_name: String,
    /// Key that encrypts the crypto store's pickles at rest. Never logged.
    pub pickle_key: Secret,
    /// How to-device events, device lists and key counts reach ferry.
    pub inputs: CryptoInputs,
    /// How the bot's and ghosts' devices are created.
    pub devices: DeviceCreation,
    /// Seconds to wait for a missing room key before asking other devices for it.
    pub key_wait_seconds: u64,
    /// Seconds to wait after the key request before telling the room; the message is still
    /// bridged if its key arrives later.
    pub key_request_wait_seconds: u64,
    /// Seconds an idle device's crypto machine stays loaded.
    pub machine_idle_seconds: u64,
    /// Crypto machines kept loaded at most (least recently used ones are unloaded first).
    pub max_loaded_machines: usize,
}

impl Default for EncryptionConfig {
    fn default() -> Self {
        Self {
            allow: false,
            require: false,
            default: true,
            trust: KeySharingTrust::CrossSigned,
            device_display_name: "ferry bridge ({user})".to_owned(),
            pickle_key: Secret::default(),
            inputs: CryptoInputs::Auto,
            devices: DeviceCreation::Auto,
            key_wait_seconds: 3,
            key_request_wait_seconds: 22,
            machine_idle_seconds: 600,
            max_loaded_machines: 1000,
        }
    }
}

/// Trust a Matrix device needs to receive room keys from the bridge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeySharingTrust {
    /// Every device of every member (least strict; legacy clients without cross-signing).
    All,
    /// Devices signed by their owner's cross-signing identity (MSC4153; Element's
    /// "exclude insecure devices").
    #[default]
    CrossSigned,
    /// Only devices the bridge has verified (effectively none but its own: for tests of
    /// withheld keys and very strict deployments).
    Verified,
}

/// Where crypto inputs (to-device events, device lists, one-time key counts) come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CryptoInputs {
    /// Pushed in appservice transactions (MSC4203/MSC2409 and MSC3202).
    Push,
    /// A `/sync` loop per loaded device (homeservers that do not push them).
    Sync,
    /// Transactions, plus `/sync` when the homeserver is known not to push them.
    #[default]
    Auto,
}

/// How the bridge creates its devices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceCreation {
    /// `PUT /devices/{id}` as the appservice (MSC4190, Matrix 1.17).
    Msc4190,
    /// Appservice login (`m.login.application_service`) with a chosen device id.
    Login,
    /// MSC4190, falling back to appservice login when the homeserver refuses it.
    #[default]
    Auto,
}

/// A secret config value: its `Debug` output is redacted so it never reaches a log.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "(unset)"
        } else {
            "(redacted)"
        })
    }
}

impl EncryptionConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.require && !self.allow {
            return Err(ConfigError::invalid(
                "encryption.require",
                "needs encryption.allow: true",
            ));
        }
        if self.allow && self.pickle_key.expose().chars().count() < 16 {
            return Err(ConfigError::invalid(
                "encryption.pickle_key",
                "must be at least 16 characters when encryption is allowed",
            ));
        }
        if self.device_display_name.trim().is_empty() {
            return Err(ConfigError::invalid(
                "encryption.device_display_name",
                "must not be empty",
            ));
        }
        if self.key_wait_seconds + self.key_request_wait_seconds == 0 {
            return Err(ConfigError::invalid(
                "encryption.key_request_wait_seconds",
                "key_wait_seconds plus key_request_wait_seconds must be at least 1",
            ));
        }
        if self.machine_idle_seconds == 0 {
            return Err(ConfigError::invalid(
                "encryption.machine_idle_seconds",
                "must be at least 1",
            ));
        }
        if self.max_loaded_machines < 2 {
            return Err(ConfigError::invalid(
                "encryption.max_loaded_machines",
                "must be at least 2 (the bot and one ghost)",
            ));
        }
        Ok(())
    }

    /// The display name of a bridge device owned by `user`.
    pub fn device_name(&self, user: &UserId, displayname: Option<&str>) -> String {
        self.device_display_name
            .replace("{user}", user.as_str())
            .replace("{displayname}", displayname.unwrap_or(user.as_str()))
    }
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses and validates config text. Errors name the key at fault.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let de = serde_norway::Deserializer::from_str(text);
        let config: Config = serde_path_to_error::deserialize(de).map_err(|err| {
            let key = err.path().to_string();
            let key = if key == "." {
                "(top level)".to_owned()
            } else {
                key
            };
            ConfigError::Invalid {
                key,
                message: err.into_inner().to_string(),
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let scheme = self.homeserver.address.scheme();
        if scheme != "http" && scheme != "https" {
            return Err(ConfigError::invalid(
                "homeserver.address",
                "must be an http(s) URL",
            ));
        }
        if self.appservice.id.is_empty() {
            return Err(ConfigError::invalid("appservice.id", "must not be empty"));
        }
        if self.appservice.registration.is_empty() {
            return Err(ConfigError::invalid(
                "appservice.registration",
                "must not be empty",
            ));
        }
        if self.appservice.max_body_bytes < 1024 {
            return Err(ConfigError::invalid(
                "appservice.max_body_bytes",
                "must be at least 1024",
            ));
        }
        UserId::parse_with_server_name(
            self.appservice.bot.username.as_str(),
            &self.homeserver.domain,
        )
        .map_err(|err| ConfigError::invalid("appservice.bot.username", err.to_string()))?;
        let uri_ok = match self.database.kind {
            DatabaseType::Sqlite => self.database.uri.starts_with("sqlite:"),
            DatabaseType::Postgres => {
                self.database.uri.starts_with("postgres://")
                    || self.database.uri.starts_with("postgresql://")
            }
        };
        if !uri_ok {
            return Err(ConfigError::invalid(
                "database.uri",
                "must start with sqlite: for type sqlite, postgres:// for type postgres",
            ));
        }
        if self.database.max_connections == 0 {
            return Err(ConfigError::invalid(
                "database.max_connections",
                "must be at least 1",
            ));
        }
        for key in self.bridge.permissions.keys() {
            let valid = key == "*"
                || (key.starts_with('@') && UserId::parse(key.as_str()).is_ok())
                || ruma::ServerName::parse(key.as_str()).is_ok();
            if !valid {
                return Err(ConfigError::invalid(
                    &format!("bridge.permissions.{key}"),
                    "keys must be \"*\", a server name or a user id",
                ));
            }
        }
        if self.bridge.command_prefix.trim().is_empty() {
            return Err(ConfigError::invalid(
                "bridge.command_prefix",
                "must not be empty",
            ));
        }
        if self.bridge.portal_queue_size == 0 {
            return Err(ConfigError::invalid(
                "bridge.portal_queue_size",
                "must be at least 1",
            ));
        }
        let sim = &self.networks.sim;
        if sim.enabled {
            validate_prefix("networks.sim.ghost_prefix", &sim.ghost_prefix)?;
            if sim.ghost_prefix == self.appservice.bot.username {
                return Err(ConfigError::invalid(
                    "networks.sim.ghost_prefix",
                    "must differ from appservice.bot.username",
                ));
            }
        }
        let signal = &self.networks.signal;
        if signal.enabled {
            validate_prefix("networks.signal.ghost_prefix", &signal.ghost_prefix)?;
            if crate::network::signal::rpc::Endpoint::parse(&signal.daemon).is_none() {
                return Err(ConfigError::invalid(
                    "networks.signal.daemon",
                    "must be tcp://host:port or unix:///absolute/path",
                ));
            }
            if sim.enabled
                && (sim.ghost_prefix.starts_with(&signal.ghost_prefix)
                    || signal.ghost_prefix.starts_with(&sim.ghost_prefix))
            {
                return Err(ConfigError::invalid(
                    "networks.signal.ghost_prefix",
                    "must not overlap another network's ghost_prefix",
                ));
            }
            if signal.request_timeout_seconds == 0 {
                return Err(ConfigError::invalid(
                    "networks.signal.request_timeout_seconds",
                    "must be at least 1",
                ));
            }
        }
        let telegram = &self.networks.telegram;
        if telegram.enabled {
            validate_prefix("networks.telegram.ghost_prefix", &telegram.ghost_prefix)?;
            telegram.validate()?;
        }
        if self.networks.whatsapp.enabled {
            self.networks.whatsapp.validate(&self.encryption)?;
        }
        self.check_prefix_overlap()?;
        self.encryption.validate()?;
        tracing_subscriber::EnvFilter::try_new(&self.logging.level)
            .map_err(|err| ConfigError::invalid("logging.level", err.to_string()))?;
        Ok(())
    }

    /// No enabled network's ghost prefix may start another's, or one network's ghosts would be
    /// taken for the other's. (Signal vs sim is checked with Signal's settings above.)
    fn check_prefix_overlap(&self) -> Result<(), ConfigError> {
        let n = &self.networks;
        // (config key, enabled, prefix); the bot's username counts as always enabled.
        let all = [
            (
                "networks.sim.ghost_prefix",
                n.sim.enabled,
                &n.sim.ghost_prefix,
            ),
            (
                "networks.signal.ghost_prefix",
                n.signal.enabled,
                &n.signal.ghost_prefix,
            ),
            (
                "networks.telegram.ghost_prefix",
                n.telegram.enabled,
                &n.telegram.ghost_prefix,
            ),
            (
                "networks.whatsapp.ghost_prefix",
                n.whatsapp.enabled,
                &n.whatsapp.ghost_prefix,
            ),
            (
                "appservice.bot.username",
                true,
                &self.appservice.bot.username,
            ),
        ];
        // Telegram and WhatsApp are checked against everything else here.
        for (key, enabled, prefix) in &all[2..4] {
            if !enabled {
                continue;
            }
            for (other_key, other_enabled, other) in &all {
                if other_key == key || !other_enabled {
                    continue;
                }
                if other.starts_with(prefix.as_str()) || prefix.starts_with(other.as_str()) {
                    return Err(ConfigError::invalid(
                        key,
                        "must not overlap another network's ghost_prefix or the bot's username",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The bridge bot's user id.
    pub fn bot_user_id(&self) -> OwnedUserId {
        UserId::parse_with_server_name(
            self.appservice.bot.username.as_str(),
            &self.homeserver.domain,
        )
        .expect("validated at load")
    }
}

/// Ghost prefixes become the start of Matrix localparts and of the registration's regex.
fn validate_prefix(key: &str, prefix: &str) -> Result<(), ConfigError> {
    let ok = !prefix.is_empty()
        && prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            "must be non-empty and use only a-z, 0-9, '.', '_', '-'",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses_and_validates() {
        let config = Config::parse(EXAMPLE).expect("example config is valid");
        assert_eq!(config.bot_user_id().as_str(), "@ferrybot:localhost");
        assert!(config.networks.sim.enabled);
        assert_eq!(
            config.bridge.permissions.get("localhost"),
            Some(&PermissionLevel::User)
        );
    }

    #[test]
    fn wrong_value_names_the_key() {
        let text = EXAMPLE.replace("type: sqlite", "type: oracle");
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(err.contains("database.type"), "{err}");
    }

    #[test]
    fn unknown_key_is_refused() {
        let text = EXAMPLE.replace("  max_connections: 10", "  max_connections: 10\n  pool: 3");
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(err.contains("pool"), "{err}");
    }

    #[test]
    fn bad_permission_key_and_level_are_refused() {
        let text = EXAMPLE.replace("\"localhost\": user", "\"localhost\": superuser");
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(err.contains("bridge.permissions.localhost"), "{err}");
        let text = EXAMPLE.replace("\"localhost\": user", "\"not a key!\": user");
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(err.contains("bridge.permissions"), "{err}");
    }

    /// The example with Telegram enabled and `api_id` set to `api_id`.
    fn with_telegram(api_id: &str) -> String {
        EXAMPLE
            .replace(
                "  telegram:\n    enabled: false\n",
                "  telegram:\n    enabled: true\n",
            )
            .replace("    api_id: 0\n", &format!("    api_id: {api_id}\n"))
    }

    #[test]
    fn telegram_needs_api_credentials_and_hides_the_hash() {
        let err = Config::parse(&with_telegram("0")).unwrap_err().to_string();
        assert!(err.contains("networks.telegram.api_id"), "{err}");
        let hash = "0123456789abcdef0123456789abcdef";
        let text = with_telegram("12345").replace("api_hash: \"\"", "api_hash: nothex");
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(err.contains("networks.telegram.api_hash"), "{err}");
        assert!(!err.contains("nothex"), "the secret is not repeated: {err}");
        let text =
            with_telegram("12345").replace("api_hash: \"\"", &format!("api_hash: \"{hash}\""));
        let config = Config::parse(&text).expect("valid telegram section");
        assert_eq!(config.networks.telegram.api_id, 12345);
        assert_eq!(config.networks.telegram.dc_override(), None);
        let debug = format!("{config:?}");
        assert!(!debug.contains(hash), "api_hash leaked into Debug: {debug}");
    }

    #[test]
    fn telegram_test_dc_override_is_checked() {
        let base = with_telegram("1").replace(
            "api_hash: \"\"",
            "api_hash: \"0123456789abcdef0123456789abcdef\"",
        );
        let text = base.replace("dc_address: \"\"", "dc_address: \"localhost:443\"");
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(err.contains("networks.telegram.dc_address"), "{err}");
        let key = "ab".repeat(256);
        let text = base.replace("dc_auth_key: \"\"", &format!("dc_auth_key: \"{key}\""));
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(err.contains("needs networks.telegram.dc_address"), "{err}");
        let text = text.replace("dc_address: \"\"", "dc_address: \"127.0.0.1:4430\"");
        let config = Config::parse(&text).expect("valid override");
        let (addr, key) = config.networks.telegram.dc_override().expect("override");
        assert_eq!(addr.to_string(), "127.0.0.1:4430");
        assert_eq!(key.expect("key")[0], 0xab);
        assert!(!format!("{config:?}").contains(&"ab".repeat(8)));
        let text = base.replace("ghost_prefix: telegram_", "ghost_prefix: sim_x");
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(err.contains("networks.telegram.ghost_prefix"), "{err}");
    }

    #[test]
    fn encryption_section_is_validated_and_its_key_never_printed() {
        let config = Config::parse(EXAMPLE).expect("example config is valid");
        assert!(!config.encryption.allow);
        assert!(config.encryption.default);
        assert_eq!(config.encryption.trust, KeySharingTrust::CrossSigned);
        let on = EXAMPLE.replace("  allow: false", "  allow: true");
        let err = Config::parse(&on).unwrap_err().to_string();
        assert!(err.contains("encryption.pickle_key"), "{err}");
        let keyed = on.replace(
            "  pickle_key: \"\"",
            "  pickle_key: \"0123456789abcdef-secret\"",
        );
        let config = Config::parse(&keyed).expect("a key makes it valid");
        assert_eq!(
            config.encryption.pickle_key.expose(),
            "0123456789abcdef-secret"
        );
        assert!(!format!("{config:?}").contains("0123456789abcdef-secret"));
        let strict = keyed.replace("  trust: cross_signed", "  trust: verified");
        assert_eq!(
            Config::parse(&strict).expect("valid").encryption.trust,
            KeySharingTrust::Verified
        );
        let bad = keyed.replace("  trust: cross_signed", "  trust: everyone");
        let err = Config::parse(&bad).unwrap_err().to_string();
        assert!(err.contains("encryption.trust"), "{err}");
        let bad = EXAMPLE.replace("  require: false", "  require: true");
        let err = Config::parse(&bad).unwrap_err().to_string();
        assert!(err.contains("encryption.require"), "{err}");
        let sync = keyed.replace("  inputs: auto", "  inputs: sync");
        assert_eq!(
            Config::parse(&sync).expect("valid").encryption.inputs,
            CryptoInputs::Sync
        );
        let bad = keyed.replace("  inputs: auto", "  inputs: carrier_pigeon");
        let err = Config::parse(&bad).unwrap_err().to_string();
        assert!(err.contains("encryption.inputs"), "{err}");
    }

    #[test]
    fn mismatched_database_uri_is_refused() {
        let text = EXAMPLE.replace("type: sqlite", "type: postgres");
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(err.contains("database.uri"), "{err}");
    }
}
