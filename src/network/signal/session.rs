//! One Signal login: subscribes to the account's envelopes, stores each on arrival (the remote
//! inbox) and hands it to the bridge in order; sends through the daemon.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use base64::Engine as _;
use futures_util::StreamExt;
use serde_json::{Value as JsonValue, json};
use tokio::{sync::mpsc, task::JoinHandle};

use super::{SIGNAL, link_error, rpc::RpcClient, target_params, wire};
use crate::{
    db::Db,
    network::{
        ChatChanges, ChatId, ChatInfo, ConnectionState, EventSink, LoginId, MediaStream,
        MessageContent, MessageId, NetworkError, OutgoingMessage, RemoteEnvelope, RemoteEvent,
        RemoteUserId, SentMessage, Session, UserInfo,
        richtext::{EntityKind, FormattedText, MentionTarget, char_to_utf16_range},
    },
};

/// What the dispatcher feeds a session.
#[derive(Debug)]
pub enum Feed {
    Connected,
    Disconnected(String),
    Envelope(String),
}

pub struct SignalSession {
    inner: Arc<Inner>,
    feed: Mutex<Option<mpsc::Receiver<Feed>>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

struct Inner {
    rpc: Arc<RpcClient>,
    db: Db,
    account: LoginId,
    me: RemoteUserId,
    sink: EventSink,
    state: Mutex<ConnectionState>,
    names: Mutex<HashMap<RemoteUserId, String>>,
    /// The account's ACI, which others use to address its messages (ferry uses the number).
    own_uuid: Mutex<Option<String>>,
}

impl SignalSession {
    pub fn new(
        rpc: Arc<RpcClient>,
        db: Db,
        account: LoginId,
        sink: EventSink,
        feed: mpsc::Receiver<Feed>,
    ) -> Self {
        let me = RemoteUserId::new(account.as_str());
        let inner = Inner {
            rpc,
            db,
            account,
            me,
            sink,
            state: Mutex::new(ConnectionState::Connecting),
            names: Mutex::default(),
            own_uuid: Mutex::new(None),
        };
        Self {
            inner: Arc::new(inner),
            feed: Mutex::new(Some(feed)),
            task: Mutex::new(None),
        }
    }
}

impl Inner {
    async fn set_state(&self, state: ConnectionState) {
        *self.state.lock().expect("state lock") = state.clone();
        self.sink.state(SIGNAL, self.account.clone(), state).await;
    }

    /// Learns the account's own ACI (once), so references to its messages can be recognised.
    async fn learn_own_uuid(&self) {
        if self.own_uuid.lock().expect("uuid lock").is_some() {
            return;
        }
        let params =
            json!({"account": self.account.as_str(), "recipient": [self.account.as_str()]});
        if let Ok(status) = self.rpc.call("getUserStatus", params).await {
            let uuid = status
                .get(0)
                .and_then(|s| s.get("uuid"))
                .and_then(JsonValue::as_str)
                .map(str::to_owned);
            *self.own_uuid.lock().expect("uuid lock") = uuid;
        }
    }

    /// Message ids that name the account by its ACI are rewritten to name it by number, as
    /// ferry's own sends are recorded.
    fn canonical(&self, id: &MessageId) -> MessageId {
        let uuid = self.own_uuid.lock().expect("uuid lock").clone();
        match (uuid, wire::parse_message_id(id)) {
            (Some(uuid), Some((ts, author))) if author == uuid => wire::message_id(ts, &self.me),
            _ => id.clone(),
        }
    }

    async fn subscribe(&self) {
        self.learn_own_uuid().await;
        match self
            .rpc
            .call(
                "subscribeReceive",
                json!({"account": self.account.as_str()}),
            )
            .await
        {
            Ok(_) => self.set_state(ConnectionState::Connected).await,
            Err(err) => {
                self.set_state(ConnectionState::TransientDisconnect(format!(
                    "cannot subscribe: {err}"
                )))
                .await
            }
        }
    }

    fn name_of(&self, id: &RemoteUserId, hint: Option<&str>) -> UserInfo {
        let mut names = self.names.lock().expect("names lock");
        if let Some(hint) = hint.filter(|h| !h.trim().is_empty()) {
            names.insert(id.clone(), hint.to_owned());
        }
        let name = names.get(id).cloned().unwrap_or_else(|| id.to_string());
        UserInfo {
            id: id.clone(),
            name,
            avatar: None,
        }
    }

    /// Hands one stored envelope to the bridge. Returns false when the bridge is gone.
    async fn deliver(&self, position: i64, raw: &str) -> bool {
        let envelope: wire::Envelope = match serde_json::from_str(raw) {
            Ok(envelope) => envelope,
            Err(err) => {
                tracing::warn!(%err, "skipping a Signal envelope that does not parse");
                return true;
            }
        };
        let events = wire::envelope_events(&envelope, &self.me, &|id, hint| self.name_of(id, hint));
        for mut event in events {
            match &mut event {
                RemoteEvent::Message { message, .. } => {
                    message.reply_to = message.reply_to.as_ref().map(|r| self.canonical(r));
                }
                RemoteEvent::Reaction { target, .. } => *target = self.canonical(target),
                RemoteEvent::Read { up_to, .. } => *up_to = self.canonical(up_to),
                _ => {}
            }
            let chat_kind = wire::chat_kind(event.chat());
            let envelope = RemoteEnvelope {
                network: SIGNAL,
                login: self.account.clone(),
                chat_kind,
                checkpoint: Some(position),
                event,
            };
            if !self.sink.event(envelope).await {
                return false;
            }
        }
        true
    }

    async fn run(self: Arc<Self>, checkpoint: i64, mut feed: mpsc::Receiver<Feed>) {
        // Replay what arrived but was not handled before the last stop.
        let mut after = checkpoint;
        loop {
            let batch = match self
                .db
                .remote_inbox_after(SIGNAL.as_str(), self.account.as_str(), after, 500)
                .await
            {
                Ok(batch) => batch,
                Err(err) => {
                    tracing::error!(%err, "cannot read the Signal inbox; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                    continue;
                }
            };
            if batch.is_empty() {
                break;
            }
            for (position, raw) in batch {
                after = position;
                if !self.deliver(position, &raw).await {
                    return;
                }
            }
        }
        self.subscribe().await;
        while let Some(item) = feed.recv().await {
            match item {
                Feed::Connected => self.subscribe().await,
                Feed::Disconnected(why) => {
                    self.set_state(ConnectionState::TransientDisconnect(why))
                        .await
                }
                Feed::Envelope(raw) => {
                    // Stored before anything else: from here on it survives a crash.
                    let position = loop {
                        match self
                            .db
                            .remote_inbox_push(SIGNAL.as_str(), self.account.as_str(), &raw)
                            .await
                        {
                            Ok(position) => break position,
                            Err(err) => {
                                tracing::error!(%err, "cannot store a Signal envelope; retrying");
                                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                            }
                        }
                    };
                    if !self.deliver(position, &raw).await {
                        return;
                    }
                }
            }
        }
    }

    async fn call(&self, method: &str, params: JsonValue) -> Result<JsonValue, NetworkError> {
        self.rpc.call(method, params).await.map_err(link_error)
    }
}

/// Signal's text styles and mentions (UTF-16 ranges) for a formatted text.
fn styles_and_mentions(text: &FormattedText) -> (Vec<String>, Vec<String>) {
    let mut styles = Vec::new();
    let mut mentions = Vec::new();
    for entity in &text.entities {
        let (start, len) = char_to_utf16_range(&text.text, entity.start, entity.len);
        let style = match &entity.kind {
            EntityKind::Bold => "BOLD",
            EntityKind::Italic => "ITALIC",
            EntityKind::Strikethrough => "STRIKETHROUGH",
            EntityKind::Code | EntityKind::Pre { .. } => "MONOSPACE",
            EntityKind::Spoiler => "SPOILER",
            EntityKind::Mention(MentionTarget::Remote(user)) => {
                mentions.push(format!("{start}:{len}:{user}"));
                continue;
            }
            _ => continue,
        };
        styles.push(format!("{start}:{len}:{style}"));
    }
    (styles, mentions)
}

#[async_trait]
impl Session for SignalSession {
    async fn connect(&self, checkpoint: Option<i64>) {
        let Some(feed) = self.feed.lock().expect("feed lock").take() else {
            return;
        };
        let task = tokio::spawn(self.inner.clone().run(checkpoint.unwrap_or(0), feed));
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
        let account = self.inner.account.as_str();
        let contacts = self
            .inner
            .call("listContacts", json!({"account": account}))
            .await?;
        let contacts: Vec<wire::Contact> = serde_json::from_value(contacts).unwrap_or_default();
        let me = self.inner.name_of(&self.inner.me, None);
        let mut chats = Vec::new();
        for contact in &contacts {
            let Some(info) = contact.info() else { continue };
            self.inner.name_of(&info.id, Some(&info.name));
            if info.id == self.inner.me {
                continue;
            }
            chats.push(ChatInfo {
                id: ChatId::new(info.id.as_str()),
                kind: crate::network::ChatKind::Dm,
                name: None,
                topic: None,
                avatar: None,
                members: vec![me.clone(), info],
                admins: Vec::new(),
            });
        }
        let groups = self
            .inner
            .call("listGroups", json!({"account": account}))
            .await?;
        let groups: Vec<wire::Group> = serde_json::from_value(groups).unwrap_or_default();
        for group in groups.iter().filter(|g| g.is_member != Some(false)) {
            chats.push(group.info(&|id| self.inner.name_of(id, None)));
        }
        Ok(chats)
    }

    async fn chat_info(&self, chat: &ChatId) -> Result<ChatInfo, NetworkError> {
        let chats = self.list_chats().await?;
        if let Some(found) = chats.into_iter().find(|c| &c.id == chat) {
            return Ok(found);
        }
        // A DM with someone not (yet) in the contact list.
        match wire::group_of(chat) {
            Some(_) => Err(NetworkError::Rejected(
                "you are not a member of that Signal group".to_owned(),
            )),
            None => {
                let other = self.inner.name_of(&RemoteUserId::new(chat.as_str()), None);
                let me = self.inner.name_of(&self.inner.me, None);
                Ok(ChatInfo {
                    id: chat.clone(),
                    kind: crate::network::ChatKind::Dm,
                    name: None,
                    topic: None,
                    avatar: None,
                    members: vec![me, other],
                    admins: Vec::new(),
                })
            }
        }
    }

    async fn user_info(&self, user: &RemoteUserId) -> Result<UserInfo, NetworkError> {
        Ok(self.inner.name_of(user, None))
    }

    async fn send_message(
        &self,
        chat: &ChatId,
        _txn_id: &str,
        message: &OutgoingMessage,
    ) -> Result<SentMessage, NetworkError> {
        let mut params = target_params(self.inner.account.as_str(), chat);
        let (text, attachment) = match &message.content {
            MessageContent::Text(text) => (Some(text), None),
            MessageContent::Media { media, caption } => (caption.as_ref(), Some(media)),
            other => {
                return Err(NetworkError::Rejected(format!(
                    "{} messages cannot be sent to Signal",
                    other.kind()
                )));
            }
        };
        if let Some(text) = text {
            let (styles, mentions) = styles_and_mentions(text);
            params["message"] = json!(text.text);
            if !styles.is_empty() {
                params["textStyle"] = json!(styles);
            }
            if !mentions.is_empty() {
                params["mention"] = json!(mentions);
            }
        }
        if let Some(media) = attachment {
            // ferry uploads media by staging it as a data URI (see upload_media).
            params["attachments"] = json!([media.id]);
        }
        if let Some(reply) = &message.reply_to
            && let Some((timestamp, author)) = wire::parse_message_id(reply)
        {
            params["quoteTimestamp"] = json!(timestamp);
            params["quoteAuthor"] = json!(author);
        }
        let result = self.inner.call("send", params).await?;
        let timestamp = result
            .get("timestamp")
            .and_then(JsonValue::as_i64)
            .ok_or_else(|| {
                NetworkError::Rejected("signal-cli answered send without a timestamp".to_owned())
            })?;
        Ok(SentMessage {
            id: wire::message_id(timestamp, &self.inner.me),
            timestamp,
        })
    }

    async fn logout(&self) -> Result<(), NetworkError> {
        // Unlinking is done from the phone; ferry stops using the account.
        let _ = self
            .inner
            .call(
                "unsubscribeReceive",
                json!({"account": self.inner.account.as_str()}),
            )
            .await;
        Ok(())
    }

    async fn download_media(&self, id: &str) -> Result<MediaStream, NetworkError> {
        let result = self
            .inner
            .call(
                "getAttachment",
                json!({"account": self.inner.account.as_str(), "id": id}),
            )
            .await?;
        let data = result
            .get("data")
            .and_then(JsonValue::as_str)
            .or_else(|| result.as_str())
            .unwrap_or_default();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| {
                NetworkError::Rejected(format!(
                    "signal-cli sent an attachment that is not base64: {e}"
                ))
            })?;
        let size = bytes.len() as u64;
        Ok(MediaStream {
            content_type: "application/octet-stream".to_owned(),
            size: Some(size),
            body: futures_util::stream::once(async move { Ok(bytes::Bytes::from(bytes)) }).boxed(),
        })
    }

    async fn upload_media(
        &self,
        mut media: MediaStream,
        name: &str,
    ) -> Result<String, NetworkError> {
        // signal-cli takes attachments inline with the send, as data URIs.
        let mut bytes = Vec::new();
        while let Some(chunk) = media.body.next().await {
            bytes.extend_from_slice(&chunk?);
        }
        let name: String = name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
            .collect();
        Ok(format!(
            "data:{};filename={};base64,{}",
            media.content_type,
            if name.is_empty() { "attachment" } else { &name },
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ))
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
        let (timestamp, _) = wire::parse_message_id(id)
            .ok_or_else(|| NetworkError::Rejected("not a Signal message".to_owned()))?;
        let mut params = target_params(self.inner.account.as_str(), chat);
        let (styles, mentions) = styles_and_mentions(text);
        params["message"] = json!(text.text);
        params["editTimestamp"] = json!(timestamp);
        if !styles.is_empty() {
            params["textStyle"] = json!(styles);
        }
        if !mentions.is_empty() {
            params["mention"] = json!(mentions);
        }
        self.inner.call("send", params).await.map(drop)
    }

    async fn delete_message(&self, chat: &ChatId, id: &MessageId) -> Result<(), NetworkError> {
        let (timestamp, _) = wire::parse_message_id(id)
            .ok_or_else(|| NetworkError::Rejected("not a Signal message".to_owned()))?;
        let mut params = target_params(self.inner.account.as_str(), chat);
        params["targetTimestamp"] = json!(timestamp);
        self.inner.call("remoteDelete", params).await.map(drop)
    }

    async fn react(
        &self,
        chat: &ChatId,
        id: &MessageId,
        emoji: &str,
        remove: bool,
    ) -> Result<(), NetworkError> {
        let (timestamp, author) = wire::parse_message_id(id)
            .ok_or_else(|| NetworkError::Rejected("not a Signal message".to_owned()))?;
        let mut params = target_params(self.inner.account.as_str(), chat);
        params["emoji"] = json!(emoji);
        params["targetAuthor"] = json!(author);
        params["targetTimestamp"] = json!(timestamp);
        params["remove"] = json!(remove);
        self.inner.call("sendReaction", params).await.map(drop)
    }

    async fn mark_read(&self, chat: &ChatId, up_to: &MessageId) -> Result<(), NetworkError> {
        if wire::group_of(chat).is_some() {
            return Ok(()); // Signal sends read receipts to the author only; groups need the author.
        }
        let (timestamp, _) = wire::parse_message_id(up_to)
            .ok_or_else(|| NetworkError::Rejected("not a Signal message".to_owned()))?;
        let params = json!({"account": self.inner.account.as_str(), "recipient": chat.as_str(),
            "targetTimestamp": [timestamp], "type": "read"});
        self.inner.call("sendReceipt", params).await.map(drop)
    }

    async fn set_typing(&self, chat: &ChatId, typing: bool) -> Result<(), NetworkError> {
        let mut params = target_params(self.inner.account.as_str(), chat);
        params["stop"] = json!(!typing);
        self.inner.call("sendTyping", params).await.map(drop)
    }

    async fn update_chat(&self, chat: &ChatId, changes: &ChatChanges) -> Result<(), NetworkError> {
        let Some(group) = wire::group_of(chat) else {
            return Err(NetworkError::Unsupported("changing a DM"));
        };
        let mut params = json!({"account": self.inner.account.as_str(), "groupId": group});
        if let Some(name) = &changes.name {
            params["name"] = json!(name);
        }
        if let Some(topic) = &changes.topic {
            params["description"] = json!(topic);
        }
        if changes.avatar.is_some() {
            return Err(NetworkError::Unsupported(
                "changing a Signal group's picture",
            ));
        }
        self.inner.call("updateGroup", params).await.map(drop)
    }

    async fn add_member(&self, chat: &ChatId, user: &RemoteUserId) -> Result<(), NetworkError> {
        let Some(group) = wire::group_of(chat) else {
            return Err(NetworkError::Unsupported("adding members to a DM"));
        };
        let params = json!({"account": self.inner.account.as_str(), "groupId": group, "member": [user.as_str()]});
        self.inner.call("updateGroup", params).await.map(drop)
    }

    async fn remove_member(&self, chat: &ChatId, user: &RemoteUserId) -> Result<(), NetworkError> {
        let Some(group) = wire::group_of(chat) else {
            return Err(NetworkError::Unsupported("removing members from a DM"));
        };
        let params = json!({"account": self.inner.account.as_str(), "groupId": group, "removeMember": [user.as_str()]});
        self.inner.call("updateGroup", params).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::richtext::Entity;

    #[test]
    fn styles_and_mentions_use_utf16_ranges() {
        let text = FormattedText::new(
            "😀 bold @bob",
            vec![
                Entity::new(2, 4, EntityKind::Bold),
                Entity::new(
                    7,
                    4,
                    EntityKind::Mention(MentionTarget::Remote(RemoteUserId::new("uuid-bob"))),
                ),
            ],
        );
        let (styles, mentions) = styles_and_mentions(&text);
        assert_eq!(styles, ["3:4:BOLD"]);
        assert_eq!(mentions, ["8:4:uuid-bob"]);
    }
}
