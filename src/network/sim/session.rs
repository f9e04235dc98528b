//! A sim login's live session: the event socket (with reconnects) and the calls made for it.
//!
//! The reader resumes from the last event it handed to the bridge; after a restart the bridge's
//! stored checkpoint is used instead, so everything not fully handled is delivered again.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value as JsonValue, json};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

use super::{
    api::{SIM, SimApi},
    wire::{self, Frame},
};
use crate::network::{
    ChatChanges, ChatId, ChatInfo, ChatKind, ConnectionState, EventSink, LoginId, MediaStream,
    MessageContent, MessageId, NetworkError, OutgoingMessage, RemoteEnvelope, RemoteUserId,
    SentMessage, Session, UserInfo,
};

/// Largest frame accepted from the server.
const MAX_FRAME: usize = 1024 * 1024;

pub struct SimSession {
    inner: Arc<Inner>,
    task: Mutex<Option<JoinHandle<()>>>,
}

struct Inner {
    api: SimApi,
    login: LoginId,
    me: RemoteUserId,
    sink: EventSink,
    state: Mutex<ConnectionState>,
    users: Mutex<HashMap<String, UserInfo>>,
    kinds: Mutex<HashMap<String, ChatKind>>,
}

impl SimSession {
    pub fn new(api: SimApi, login: LoginId, sink: EventSink) -> Self {
        let me = RemoteUserId::new(login.as_str());
        let inner = Inner {
            api,
            login,
            me,
            sink,
            state: Mutex::new(ConnectionState::Connecting),
            users: Mutex::default(),
            kinds: Mutex::default(),
        };
        Self {
            inner: Arc::new(inner),
            task: Mutex::new(None),
        }
    }
}

impl Inner {
    async fn set_state(&self, state: ConnectionState) {
        *self.state.lock().expect("state lock") = state.clone();
        self.sink.state(SIM, self.login.clone(), state).await;
    }

    /// Reads the socket until it closes; returns why, and whether to stop for good.
    async fn read_once(&self, since: &mut i64) -> (String, bool) {
        let mut request = match self.api.events_url(*since).into_client_request() {
            Ok(request) => request,
            Err(err) => return (format!("bad sim server URL: {err}"), true),
        };
        if let Some(token) = self.api.token() {
            match format!("Bearer {token}").parse() {
                Ok(value) => {
                    request.headers_mut().insert("authorization", value);
                }
                Err(_) => return ("the stored token is unusable".to_owned(), true),
            }
        }
        let config =
            tungstenite::protocol::WebSocketConfig::default().max_message_size(Some(MAX_FRAME));
        let (mut socket, _) = match tokio_tungstenite::connect_async_with_config(
            request,
            Some(config),
            false,
        )
        .await
        {
            Ok(ok) => ok,
            Err(tungstenite::Error::Http(response)) if response.status() == 401 => {
                return (
                    "the sim server no longer accepts this login".to_owned(),
                    true,
                );
            }
            Err(err) => return (format!("cannot connect: {err}"), false),
        };
        self.set_state(ConnectionState::Connected).await;
        while let Some(message) = socket.next().await {
            let text = match message {
                Ok(tungstenite::Message::Text(text)) => text,
                Ok(tungstenite::Message::Close(_)) => break,
                Ok(_) => continue,
                Err(err) => return (format!("connection lost: {err}"), false),
            };
            let frame: Frame = match serde_json::from_str(&text) {
                Ok(frame) => frame,
                Err(err) => {
                    tracing::warn!(%err, "ignoring a sim frame that does not parse");
                    continue;
                }
            };
            if frame.seq <= *since {
                continue;
            }
            let seq = frame.seq;
            if !self.deliver(frame).await {
                return ("bridge shutting down".to_owned(), true);
            }
            *since = seq;
            let _ = socket
                .send(tungstenite::Message::text(format!("{{\"ack\":{seq}}}")))
                .await;
        }
        ("the sim server closed the connection".to_owned(), false)
    }

    async fn deliver(&self, frame: Frame) -> bool {
        if let wire::FrameBody::Presence { user_id, presence } = &frame.body {
            self.sink
                .presence(
                    SIM,
                    RemoteUserId::new(user_id.clone()),
                    presence == "online",
                )
                .await;
            return true;
        }
        if let wire::FrameBody::Chat { chat } = &frame.body {
            self.kinds
                .lock()
                .expect("kinds lock")
                .insert(chat.id.clone(), wire::chat_kind(&chat.kind));
            self.remember_users(&chat.members);
        }
        if let wire::FrameBody::MemberJoined { user, .. } = &frame.body {
            self.remember_users(std::slice::from_ref(user));
        }
        let Some(chat_id) = frame.body.chat_id().map(str::to_owned) else {
            return true;
        };
        let kind = self.chat_kind(&chat_id).await;
        let sender = match frame.body.sender() {
            Some(id) => Some(self.user_info(id).await),
            None => None,
        };
        let event = wire::to_remote_event(frame.body, |id| {
            sender.unwrap_or_else(|| UserInfo {
                id: RemoteUserId::new(id),
                name: id.to_owned(),
                avatar: None,
            })
        });
        let Some(event) = event else { return true };
        self.sink
            .event(RemoteEnvelope {
                network: SIM,
                login: self.login.clone(),
                chat_kind: kind,
                checkpoint: Some(frame.seq),
                event,
            })
            .await
    }

    fn remember_users(&self, users: &[wire::User]) {
        let mut known = self.users.lock().expect("users lock");
        for user in users {
            known.insert(user.id.clone(), UserInfo::from(user.clone()));
        }
    }

    async fn chat_kind(&self, chat: &str) -> ChatKind {
        if let Some(kind) = self.kinds.lock().expect("kinds lock").get(chat) {
            return *kind;
        }
        match self.api.chat(chat).await {
            Ok(info) => {
                let kind = wire::chat_kind(&info.kind);
                self.kinds
                    .lock()
                    .expect("kinds lock")
                    .insert(chat.to_owned(), kind);
                self.remember_users(&info.members);
                kind
            }
            // A chat we cannot see any more (left): treat as a group so it maps to the shared
            // portal, where leaving is handled.
            Err(_) => ChatKind::Group,
        }
    }

    /// A user's profile, from what the socket and chat lists told us, else from the server.
    async fn user_info(&self, id: &str) -> UserInfo {
        if let Some(info) = self.users.lock().expect("users lock").get(id) {
            return info.clone();
        }
        match self.api.user(id).await {
            Ok(user) => {
                self.remember_users(std::slice::from_ref(&user));
                user.into()
            }
            Err(_) => UserInfo {
                id: RemoteUserId::new(id),
                name: id.to_owned(),
                avatar: None,
            },
        }
    }
}

#[async_trait]
impl Session for SimSession {
    async fn connect(&self, checkpoint: Option<i64>) {
        let inner = self.inner.clone();
        let mut since = checkpoint.unwrap_or(0);
        let task = tokio::spawn(async move {
            let mut backoff = Duration::from_millis(200);
            loop {
                let (why, stop) = inner.read_once(&mut since).await;
                if stop {
                    inner.set_state(ConnectionState::LoggedOut(why)).await;
                    return;
                }
                if *inner.state.lock().expect("state lock") == ConnectionState::Connected {
                    backoff = Duration::from_millis(200);
                }
                inner
                    .set_state(ConnectionState::TransientDisconnect(why))
                    .await;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        });
        if let Some(old) = self.task.lock().expect("task lock").replace(task) {
            old.abort();
        }
    }

    async fn disconnect(&self) {
        if let Some(task) = self.task.lock().expect("task lock").take() {
            task.abort();
        }
    }

    fn state(&self) -> ConnectionState {
        self.inner.state.lock().expect("state lock").clone()
    }

    fn own_user(&self) -> &RemoteUserId {
        &self.inner.me
    }

    async fn list_chats(&self) -> Result<Vec<ChatInfo>, NetworkError> {
        let chats = self.inner.api.chats().await?;
        for chat in &chats {
            self.inner
                .kinds
                .lock()
                .expect("kinds lock")
                .insert(chat.id.clone(), wire::chat_kind(&chat.kind));
            self.inner.remember_users(&chat.members);
        }
        Ok(chats.into_iter().map(ChatInfo::from).collect())
    }

    async fn chat_info(&self, chat: &ChatId) -> Result<ChatInfo, NetworkError> {
        Ok(self.inner.api.chat(chat.as_str()).await?.into())
    }

    async fn user_info(&self, user: &RemoteUserId) -> Result<UserInfo, NetworkError> {
        Ok(self.inner.api.user(user.as_str()).await?.into())
    }

    async fn send_message(
        &self,
        chat: &ChatId,
        txn_id: &str,
        message: &OutgoingMessage,
    ) -> Result<SentMessage, NetworkError> {
        let sent = self
            .inner
            .api
            .send(chat.as_str(), txn_id, wire::message_body(message))
            .await?;
        Ok(SentMessage {
            id: crate::network::MessageId::new(sent.id),
            timestamp: sent.ts,
            partly_failed: None,
        })
    }

    async fn logout(&self) -> Result<(), NetworkError> {
        self.inner.api.logout().await
    }

    async fn download_media(&self, id: &str) -> Result<MediaStream, NetworkError> {
        self.inner.api.download(id).await
    }

    async fn upload_media(&self, media: MediaStream, _name: &str) -> Result<String, NetworkError> {
        self.inner.api.upload(media).await
    }

    async fn edit_message(
        &self,
        chat: &ChatId,
        id: &MessageId,
        content: &MessageContent,
    ) -> Result<(), NetworkError> {
        let MessageContent::Text(text) = content else {
            return Err(NetworkError::Unsupported("editing media"));
        };
        let body = json!({"text": text.text, "entities": super::markup::to_sim(text)});
        self.inner.api.edit(chat.as_str(), id.as_str(), body).await
    }

    async fn delete_message(&self, chat: &ChatId, id: &MessageId) -> Result<(), NetworkError> {
        self.inner.api.delete(chat.as_str(), id.as_str()).await
    }

    async fn react(
        &self,
        chat: &ChatId,
        id: &MessageId,
        emoji: &str,
        remove: bool,
    ) -> Result<(), NetworkError> {
        self.inner
            .api
            .react(chat.as_str(), id.as_str(), emoji, remove)
            .await
    }

    async fn mark_read(&self, chat: &ChatId, up_to: &MessageId) -> Result<(), NetworkError> {
        self.inner.api.read(chat.as_str(), up_to.as_str()).await
    }

    async fn set_typing(&self, chat: &ChatId, typing: bool) -> Result<(), NetworkError> {
        self.inner.api.typing(chat.as_str(), typing).await
    }

    async fn update_chat(&self, chat: &ChatId, changes: &ChatChanges) -> Result<(), NetworkError> {
        let mut body = json!({});
        if let Some(name) = &changes.name {
            body["name"] = json!(name);
        }
        if let Some(topic) = &changes.topic {
            body["topic"] = if topic.is_empty() {
                JsonValue::Null
            } else {
                json!(topic)
            };
        }
        if let Some(avatar) = &changes.avatar {
            body["avatar"] = json!(avatar);
        }
        self.inner.api.update_chat(chat.as_str(), body).await
    }

    async fn add_member(&self, chat: &ChatId, user: &RemoteUserId) -> Result<(), NetworkError> {
        self.inner
            .api
            .add_member(chat.as_str(), user.as_str())
            .await
    }

    async fn remove_member(&self, chat: &ChatId, user: &RemoteUserId) -> Result<(), NetworkError> {
        self.inner
            .api
            .remove_member(chat.as_str(), user.as_str())
            .await
    }

    async fn resolve_identifier(&self, identifier: &str) -> Result<UserInfo, NetworkError> {
        Ok(self.inner.api.resolve(identifier.trim()).await?.into())
    }

    async fn start_dm(&self, user: &RemoteUserId) -> Result<ChatInfo, NetworkError> {
        let chat = self.inner.api.dm(user.as_str()).await?;
        self.inner
            .kinds
            .lock()
            .expect("kinds lock")
            .insert(chat.id.clone(), wire::chat_kind(&chat.kind));
        Ok(chat.into())
    }

    async fn create_group(
        &self,
        name: &str,
        members: &[RemoteUserId],
    ) -> Result<ChatInfo, NetworkError> {
        let ids: Vec<&str> = members.iter().map(RemoteUserId::as_str).collect();
        let chat = self.inner.api.create_group(name, &ids).await?;
        self.inner
            .kinds
            .lock()
            .expect("kinds lock")
            .insert(chat.id.clone(), wire::chat_kind(&chat.kind));
        Ok(chat.into())
    }
}

impl Drop for SimSession {
    fn drop(&mut self) {
        if let Ok(mut task) = self.task.lock()
            && let Some(task) = task.take()
        {
            task.abort();
        }
    }
}
