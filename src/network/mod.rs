//! The connector contract: what every remote network implements for the bridge core.
//!
//! A network knows nothing of Matrix. It offers login flows, and for each stored login a
//! [`Session`] that sends on the user's behalf and hands remote events to the core through an
//! [`EventSink`]. Optional features are described by [`Capabilities`] so the core can refuse
//! clearly what a network cannot do instead of failing silently.

pub mod event;
pub mod expiry;
pub mod ids;
pub mod richtext;
pub mod signal;
pub mod sim;
pub mod telegram;
pub mod timer;
pub mod whatsapp;

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::mpsc;

pub use self::{
    event::{
        ChatChanges, ChatInfo, ChatKind, Media, MediaKind, MessageContent, OutgoingMessage,
        RemoteEvent, RemoteMessage, RoomLayout, SentMessage, UserInfo,
    },
    ids::{ChatId, LoginId, MessageId, NetworkId, PortalKey, RemoteUserId},
};

/// Errors a network reports to the core. `Transient` ones are worth retrying.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("not connected to {0}")]
    NotConnected(NetworkId),
    #[error("{0}")]
    Transient(String),
    #[error("{0}")]
    Rejected(String),
    #[error("the login is no longer valid: {0}")]
    LoggedOut(String),
    #[error("{0} is not supported by this network")]
    Unsupported(&'static str),
}

impl NetworkError {
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::NotConnected(_) | Self::Transient(_))
    }
}

/// What a network can carry; the bridge hides or refuses the rest.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Capabilities {
    pub formatting: bool,
    pub group_membership: bool,
    pub edits: bool,
    pub reactions: bool,
    /// Several reactions per user on one message.
    pub multiple_reactions: bool,
    pub replies: bool,
    pub deletes: bool,
    pub receipts: bool,
    pub typing: bool,
    pub presence: bool,
    pub media: bool,
    pub locations: bool,
    pub contacts: bool,
    pub chat_details: bool,
    pub create_groups: bool,
    /// Largest file the network accepts, in bytes.
    pub max_file_size: u64,
}

/// One way to log in, as offered by `login <network> [flow]`.
#[derive(Debug, Clone)]
pub struct LoginFlowInfo {
    pub id: &'static str,
    pub name: &'static str,
    pub description: &'static str,
}

/// One step of a login, rendered by the bot (or a provisioning API).
#[derive(Debug, Clone)]
pub enum LoginStep {
    /// Ask the user to type something (a username, a code, a password).
    Input { prompt: String, secret: bool },
    /// Show something (a QR code payload or a pairing code) and wait for the remote side.
    DisplayAndWait {
        kind: DisplayKind,
        data: String,
        instructions: String,
    },
    /// Logged in.
    Complete(CompletedLogin),
}

#[derive(Debug, Clone, Copy)]
pub enum DisplayKind {
    Qr,
    Code,
}

/// What the core stores for a finished login.
#[derive(Debug, Clone)]
pub struct CompletedLogin {
    pub id: LoginId,
    /// A name the user recognises (account name, phone number).
    pub remote_name: String,
    /// Network-private state needed to resume the session (tokens). Stored, never logged.
    pub secret: serde_json::Value,
}

/// A login in progress: a small state machine driven by the user's input.
#[async_trait]
pub trait LoginProcess: Send {
    /// The first step to show.
    async fn start(&mut self) -> Result<LoginStep, NetworkError>;
    /// The user answered an `Input` step.
    async fn submit(&mut self, input: &str) -> Result<LoginStep, NetworkError>;
    /// Wait for a `DisplayAndWait` step to finish.
    async fn wait(&mut self) -> Result<LoginStep, NetworkError>;
}

/// A stored login, handed to the network to resume it.
#[derive(Debug, Clone)]
pub struct StoredLogin {
    pub id: LoginId,
    pub secret: serde_json::Value,
    /// The last checkpoint the core has fully handled (see [`RemoteEnvelope::checkpoint`]).
    pub checkpoint: Option<i64>,
}

/// A remote event with what the core needs to handle it once and in order.
#[derive(Debug, Clone)]
pub struct RemoteEnvelope {
    pub network: NetworkId,
    pub login: LoginId,
    /// DMs get one portal per login; groups one shared portal.
    pub chat_kind: ChatKind,
    /// A position in the login's event stream, increasing by event. The core stores the highest
    /// position below which everything has been handled and passes it back on reconnect.
    pub checkpoint: Option<i64>,
    pub event: RemoteEvent,
}

/// Where sessions deliver remote events and connection changes.
#[derive(Debug, Clone)]
pub struct EventSink {
    tx: mpsc::Sender<SessionSignal>,
}

/// What a session tells the core.
#[derive(Debug)]
pub enum SessionSignal {
    Event(Box<RemoteEnvelope>),
    State {
        network: NetworkId,
        login: LoginId,
        state: ConnectionState,
    },
    /// A user's presence changed (not tied to a chat, so not ordered with chat events).
    Presence {
        network: NetworkId,
        user: RemoteUserId,
        online: bool,
    },
    /// Something the login's user should read in their management room (e.g. WhatsApp's
    /// "your phone has not been seen for days"), not tied to a chat.
    Notice {
        network: NetworkId,
        login: LoginId,
        text: String,
    },
}

/// A media body in flight, streamed so large files are never held whole in memory.
pub struct MediaStream {
    pub content_type: String,
    /// Known length, when the source tells it.
    pub size: Option<u64>,
    pub body: futures_util::stream::BoxStream<'static, Result<bytes::Bytes, NetworkError>>,
}

impl std::fmt::Debug for MediaStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaStream")
            .field("content_type", &self.content_type)
            .field("size", &self.size)
            .finish()
    }
}

impl EventSink {
    pub fn new(tx: mpsc::Sender<SessionSignal>) -> Self {
        Self { tx }
    }

    /// Delivers an event; waits when the core is busy (back-pressure on the network).
    /// Returns false when the bridge is shutting down.
    pub async fn event(&self, envelope: RemoteEnvelope) -> bool {
        self.tx
            .send(SessionSignal::Event(Box::new(envelope)))
            .await
            .is_ok()
    }

    pub async fn presence(&self, network: NetworkId, user: RemoteUserId, online: bool) {
        let _ = self
            .tx
            .send(SessionSignal::Presence {
                network,
                user,
                online,
            })
            .await;
    }

    /// Tells the login's user something in their management room.
    pub async fn notice(&self, network: NetworkId, login: LoginId, text: String) {
        let _ = self
            .tx
            .send(SessionSignal::Notice {
                network,
                login,
                text,
            })
            .await;
    }

    pub async fn state(&self, network: NetworkId, login: LoginId, state: ConnectionState) {
        let _ = self
            .tx
            .send(SessionSignal::State {
                network,
                login,
                state,
            })
            .await;
    }
}

/// A session's connection state, as `ping` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    Connecting,
    Connected,
    /// Disconnected; the session retries by itself.
    TransientDisconnect(String),
    /// The remote side ended the login; the user must log in again.
    LoggedOut(String),
}

impl std::fmt::Display for ConnectionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connecting => f.write_str("connecting"),
            Self::Connected => f.write_str("connected"),
            Self::TransientDisconnect(why) => write!(f, "disconnected, retrying ({why})"),
            Self::LoggedOut(why) => write!(f, "logged out ({why})"),
        }
    }
}

/// Fills a `displayname_template` (`{name}`, `{id}`) from a remote profile.
pub fn render_displayname(template: &str, user: &UserInfo) -> String {
    template
        .replace("{name}", &user.name)
        .replace("{id}", user.id.as_str())
}

/// One remote login's live connection.
#[async_trait]
pub trait Session: Send + Sync {
    /// Starts receiving (in the background, reconnecting by itself) from `checkpoint` on.
    async fn connect(&self, checkpoint: Option<i64>);
    /// Stops receiving.
    async fn disconnect(&self);
    fn state(&self) -> ConnectionState;
    /// The login's own remote user.
    fn own_user(&self) -> &RemoteUserId;
    async fn list_chats(&self) -> Result<Vec<ChatInfo>, NetworkError>;
    async fn chat_info(&self, chat: &ChatId) -> Result<ChatInfo, NetworkError>;
    async fn user_info(&self, user: &RemoteUserId) -> Result<UserInfo, NetworkError>;
    /// Sends a message. `txn_id` is stable across retries so a network that supports
    /// idempotent sends never creates the message twice.
    async fn send_message(
        &self,
        chat: &ChatId,
        txn_id: &str,
        message: &OutgoingMessage,
    ) -> Result<SentMessage, NetworkError>;
    /// Ends the login on the remote side.
    async fn logout(&self) -> Result<(), NetworkError>;

    // Optional features: the defaults refuse, and `Capabilities` tells the core beforehand.

    /// How the chat's room is laid out (space, child of a space, read-only); asked when its
    /// room is created. The default: an ordinary room.
    async fn room_layout(&self, _chat: &ChatId) -> Result<RoomLayout, NetworkError> {
        Ok(RoomLayout::default())
    }

    /// Fetches media (attachments, avatars) by the network's id.
    async fn download_media(&self, _id: &str) -> Result<MediaStream, NetworkError> {
        Err(NetworkError::Unsupported("media"))
    }
    /// Uploads media for a following send; returns the network's id for it.
    async fn upload_media(&self, _media: MediaStream, _name: &str) -> Result<String, NetworkError> {
        Err(NetworkError::Unsupported("media"))
    }
    async fn edit_message(
        &self,
        _chat: &ChatId,
        _id: &MessageId,
        _content: &MessageContent,
    ) -> Result<(), NetworkError> {
        Err(NetworkError::Unsupported("edits"))
    }
    async fn delete_message(&self, _chat: &ChatId, _id: &MessageId) -> Result<(), NetworkError> {
        Err(NetworkError::Unsupported("deleting messages"))
    }
    async fn react(
        &self,
        _chat: &ChatId,
        _id: &MessageId,
        _emoji: &str,
        _remove: bool,
    ) -> Result<(), NetworkError> {
        Err(NetworkError::Unsupported("reactions"))
    }
    async fn mark_read(&self, _chat: &ChatId, _up_to: &MessageId) -> Result<(), NetworkError> {
        Err(NetworkError::Unsupported("read receipts"))
    }
    async fn set_typing(&self, _chat: &ChatId, _typing: bool) -> Result<(), NetworkError> {
        Err(NetworkError::Unsupported("typing notifications"))
    }
    async fn update_chat(
        &self,
        _chat: &ChatId,
        _changes: &ChatChanges,
    ) -> Result<(), NetworkError> {
        Err(NetworkError::Unsupported("changing chat details"))
    }
    /// Sets the chat's disappearing-message timer (seconds; 0 turns it off), for everyone in
    /// the chat as the network's own apps do.
    async fn set_disappearing(&self, _chat: &ChatId, _seconds: u32) -> Result<(), NetworkError> {
        Err(NetworkError::Unsupported("disappearing-message timers"))
    }
    async fn add_member(&self, _chat: &ChatId, _user: &RemoteUserId) -> Result<(), NetworkError> {
        Err(NetworkError::Unsupported("adding members"))
    }
    async fn remove_member(
        &self,
        _chat: &ChatId,
        _user: &RemoteUserId,
    ) -> Result<(), NetworkError> {
        Err(NetworkError::Unsupported("removing members"))
    }
    /// Finds a user by an identifier the user typed (id, phone number, username).
    async fn resolve_identifier(&self, _identifier: &str) -> Result<UserInfo, NetworkError> {
        Err(NetworkError::Unsupported("looking up users"))
    }
    /// Accepts a contact's changed identity key (safety number) after the user compared it.
    async fn trust_identity(&self, _user: &RemoteUserId) -> Result<(), NetworkError> {
        Err(NetworkError::Unsupported("trusting safety numbers"))
    }
    /// Opens (or finds) the DM with a user.
    async fn start_dm(&self, _user: &RemoteUserId) -> Result<ChatInfo, NetworkError> {
        Err(NetworkError::Unsupported("starting chats"))
    }
    async fn create_group(
        &self,
        _name: &str,
        _members: &[RemoteUserId],
    ) -> Result<ChatInfo, NetworkError> {
        Err(NetworkError::Unsupported("creating groups"))
    }
}

/// A remote network.
#[async_trait]
pub trait Network: Send + Sync {
    fn id(&self) -> NetworkId;
    /// A human name ("Signal").
    fn display_name(&self) -> &'static str;
    /// Ghost localparts start with this.
    fn ghost_prefix(&self) -> &str;
    /// Formats a ghost's display name from the remote profile.
    fn ghost_displayname(&self, user: &UserInfo) -> String;
    fn capabilities(&self) -> Capabilities;
    fn login_flows(&self) -> Vec<LoginFlowInfo>;
    /// Begins a login with the given flow id.
    fn start_login(&self, flow: &str) -> Result<Box<dyn LoginProcess>, NetworkError>;
    /// Builds the session of a stored login (not yet connected).
    fn load_session(
        &self,
        login: &StoredLogin,
        sink: EventSink,
    ) -> Result<Arc<dyn Session>, NetworkError>;
}
