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
use sha2::Digest as _;
use tokio::{sync::mpsc, task::JoinHandle};

use super::{
    SIGNAL, link_error,
    rpc::{RpcClient, RpcError},
    target_params, wire,
};
use crate::{
    db::Db,
    network::{
        ChatChanges, ChatId, ChatInfo, ConnectionState, EventSink, LoginId, MediaStream,
        MessageContent, MessageId, NetworkError, OutgoingMessage, RemoteEnvelope, RemoteEvent,
        RemoteMessage, RemoteUserId, SentMessage, Session, UserInfo,
        expiry::{TimerNetwork, Timers},
        richtext::{EntityKind, FormattedText, MentionTarget, char_to_utf16_range},
    },
};

/// A data URI parameter value: signal-cli reads it with `java.net.URLDecoder`, so everything but
/// unreserved ASCII is percent-encoded (a '+' would otherwise become a space).
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"._-~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// How often a sticker that signal-cli has not fetched yet is asked for.
const STICKER_ATTEMPTS: u64 = 5;

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
    expiry: Mutex<Option<JoinHandle<()>>>,
}

struct Inner {
    rpc: Arc<RpcClient>,
    db: Db,
    account: LoginId,
    me: RemoteUserId,
    sink: EventSink,
    state: Mutex<ConnectionState>,
    /// Profiles learned from `listContacts` and envelopes (names and avatar ids).
    names: Mutex<HashMap<RemoteUserId, UserInfo>>,
    /// The account's ACI, which others use to address its messages (ferry uses the number).
    own_uuid: Mutex<Option<String>>,
}

impl SignalSession {
    /// signal-cli does not report the account's own group changes back: after one, the group
    /// is read again so the room follows (in the background, behind the current event).
    fn resync_group(&self, group: &str) {
        let inner = self.inner.clone();
        let group = group.to_owned();
        tokio::spawn(async move {
            let Some(groups) = inner.read_groups(Some(&group)).await else {
                return;
            };
            if let Some(found) = groups.iter().find(|g| g.id == group) {
                let events = inner.group_events(found).await;
                inner.emit(events).await;
            }
        });
    }

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
            expiry: Mutex::new(None),
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

    /// Mentions of the account by its ACI name it by number, so they become pills to the
    /// account's Matrix user rather than to a ghost.
    fn canonical_mentions(&self, content: &mut MessageContent) {
        let Some(uuid) = self.own_uuid.lock().expect("uuid lock").clone() else {
            return;
        };
        let text = match content {
            MessageContent::Text(text) => text,
            MessageContent::Media {
                caption: Some(text),
                ..
            } => text,
            _ => return,
        };
        for entity in &mut text.entities {
            if let EntityKind::Mention(MentionTarget::Remote(user)) = &mut entity.kind
                && user.as_str() == uuid
            {
                *user = self.me.clone();
            }
        }
    }

    async fn subscribe(&self) {
        self.learn_own_uuid().await;
        self.refresh_contacts().await;
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
        let entry = names.entry(id.clone()).or_insert_with(|| UserInfo {
            id: id.clone(),
            name: id.to_string(),
            avatar: None,
        });
        if let Some(hint) = hint.filter(|h| !h.trim().is_empty()) {
            hint.clone_into(&mut entry.name);
        }
        entry.clone()
    }

    /// Remembers a profile as `listContacts` describes it (name and avatar).
    fn learn_profile(&self, info: &UserInfo) {
        self.names
            .lock()
            .expect("names lock")
            .insert(info.id.clone(), info.clone());
    }

    /// Reads every known recipient's profile (best effort), so ghosts get names and pictures.
    async fn refresh_contacts(&self) {
        let params = json!({"account": self.account.as_str(), "allRecipients": true});
        match self.rpc.call("listContacts", params).await {
            Ok(contacts) => {
                let contacts: Vec<wire::Contact> =
                    serde_json::from_value(contacts).unwrap_or_default();
                for info in contacts.iter().filter_map(wire::Contact::info) {
                    self.learn_profile(&info);
                }
            }
            Err(err) => tracing::debug!(%err, "cannot list Signal contacts now"),
        }
    }

    /// The group's picture id: signal-cli lists none, so the picture is read and hashed.
    async fn group_avatar(&self, group: &str) -> Option<String> {
        let params = json!({"account": self.account.as_str(), "groupId": group});
        let data = self.rpc.call("getAvatar", params).await.ok()?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.get("data")?.as_str()?)
            .ok()?;
        let digest = sha2::Sha256::digest(&bytes);
        let version: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Some(wire::group_avatar_id(group, &version))
    }

    fn members_key(&self, group: &str) -> String {
        format!("signal/{}/group-members/{group}", self.account.as_str())
    }

    /// The group's current state as events: its details and members (`Chat`), and a
    /// `MemberLeft` for everyone who was a member when ferry last looked. The member list is
    /// kept in the database so leaves while ferry was down are noticed too.
    async fn group_events(&self, group: &wire::Group) -> Vec<RemoteEvent> {
        let chat = wire::group_chat(&group.id);
        let key = self.members_key(&group.id);
        let before: Vec<String> = match self.db.kv_get(&key).await {
            Ok(Some(raw)) => serde_json::from_str(&raw).unwrap_or_default(),
            _ => Vec::new(),
        };
        let mut events = Vec::new();
        if group.is_member == Some(false) {
            if !before.is_empty() {
                events.push(RemoteEvent::MemberLeft {
                    chat,
                    user: self.me.clone(),
                });
            }
            let _ = self.db.kv_set(&key, "[]").await;
            return events;
        }
        let unknown = group
            .members
            .iter()
            .filter_map(wire::Member::id)
            .any(|id| !self.names.lock().expect("names lock").contains_key(&id));
        if unknown {
            // New faces: their profiles (names, pictures) first.
            self.refresh_contacts().await;
        }
        let mut info = group.info(&|id| self.name_of(id, None));
        info.avatar = self.group_avatar(&group.id).await;
        let now: Vec<String> = info.members.iter().map(|m| m.id.to_string()).collect();
        events.push(RemoteEvent::Chat(info));
        for gone in before.iter().filter(|b| !now.contains(b)) {
            events.push(RemoteEvent::MemberLeft {
                chat: chat.clone(),
                user: RemoteUserId::new(gone.as_str()),
            });
        }
        if before != now
            && let Err(err) = self.db.kv_set(&key, &json!(now).to_string()).await
        {
            tracing::warn!(%err, "cannot store a Signal group's members");
        }
        events
    }

    /// Re-reads groups (all, or one) from the daemon, retrying a few times when it is away.
    async fn read_groups(&self, only: Option<&str>) -> Option<Vec<wire::Group>> {
        let mut params = json!({"account": self.account.as_str()});
        if let Some(group) = only {
            params["groupId"] = json!([group]);
        }
        for attempt in 0..5u64 {
            match self.rpc.call("listGroups", params.clone()).await {
                Ok(groups) => match serde_json::from_value(groups) {
                    Ok(groups) => return Some(groups),
                    Err(err) => {
                        tracing::warn!(%err, "signal-cli's listGroups answer has an unexpected shape");
                        return None;
                    }
                },
                Err(err) => {
                    tracing::warn!(%err, attempt, "cannot read Signal groups");
                    tokio::time::sleep(std::time::Duration::from_millis(500 * (attempt + 1))).await;
                }
            }
        }
        None
    }

    /// The login's chat timers and message deadlines.
    fn timers(&self) -> Timers {
        Timers::new(self.db.clone(), TimerNetwork::Signal, self.account.as_str())
    }

    /// A message's timer: a change is announced in the room (before the message), and the
    /// chat's messages get their deadlines.
    async fn apply_timer(&self, envelope: &wire::Envelope, events: &mut Vec<RemoteEvent>) {
        let Some((chat, seconds, who)) = wire::timer_of(envelope, &self.me) else {
            return;
        };
        let timers = self.timers();
        if seconds != timers.timer(&chat).await {
            timers.set_timer(&chat, seconds).await;
            let sender = self.name_of(&who, None);
            let text = if seconds == 0 {
                format!("{} turned off disappearing messages.", sender.name)
            } else {
                format!(
                    "{} set disappearing messages to {}.",
                    sender.name,
                    crate::network::timer::describe(u64::from(seconds))
                )
            };
            let id = wire::message_id(envelope.timestamp, &who);
            events.insert(
                0,
                RemoteEvent::Message {
                    chat: chat.clone(),
                    message: RemoteMessage {
                        id: MessageId::new(format!("{id}:timer")),
                        sender,
                        content: MessageContent::Text(FormattedText::plain(text)),
                        reply_to: None,
                        timestamp: envelope.timestamp,
                    },
                },
            );
        }
        if seconds > 0 {
            let deadline = deadline_in(seconds);
            for event in events.iter() {
                if let RemoteEvent::Message { chat: c, message } = event
                    && c == &chat
                {
                    timers.schedule(c, &message.id, deadline).await;
                }
            }
        }
    }

    /// Turns due deadlines into deletes, every second, for as long as the session runs.
    async fn expire(self: Arc<Self>) {
        let this = self.clone();
        self.timers()
            .run(move |chat, id| {
                let this = this.clone();
                async move {
                    let by = wire::parse_message_id(&id)
                        .map_or_else(|| this.me.clone(), |(_, a)| RemoteUserId::new(a));
                    this.emit(vec![RemoteEvent::Delete { chat, id, by }]).await
                }
            })
            .await;
    }

    /// Hands events made by ferry (not stored in the inbox) to the bridge.
    async fn emit(&self, events: Vec<RemoteEvent>) -> bool {
        for event in events {
            let envelope = RemoteEnvelope {
                network: SIGNAL,
                login: self.account.clone(),
                chat_kind: wire::chat_kind(event.chat()),
                checkpoint: None,
                event,
            };
            if !self.sink.event(envelope).await {
                return false;
            }
        }
        true
    }

    /// Brings every group portal in line with `listGroups` (on each connect).
    async fn sync_groups(&self) -> bool {
        let Some(groups) = self.read_groups(None).await else {
            return true;
        };
        for group in &groups {
            let events = self.group_events(group).await;
            if !self.emit(events).await {
                return false;
            }
        }
        true
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
        let mut events =
            wire::envelope_events(&envelope, &self.me, &|id, hint| self.name_of(id, hint));
        self.apply_timer(&envelope, &mut events).await;
        if let Some(group) = wire::group_update(&envelope) {
            // The envelope says only that the group changed: its new state comes from the daemon.
            if let Some(groups) = self.read_groups(Some(group)).await {
                match groups.iter().find(|g| g.id == group) {
                    Some(g) => events.extend(self.group_events(g).await),
                    None => tracing::warn!("a changed Signal group is not listed; skipped"),
                }
            }
        }
        for mut event in events {
            match &mut event {
                RemoteEvent::Message { message, .. } => {
                    message.reply_to = message.reply_to.as_ref().map(|r| self.canonical(r));
                    self.canonical_mentions(&mut message.content);
                }
                RemoteEvent::Edit { content, .. } => self.canonical_mentions(content),
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
        if !self.sync_groups().await {
            return;
        }
        while let Some(item) = feed.recv().await {
            match item {
                Feed::Connected => {
                    self.subscribe().await;
                    if !self.sync_groups().await {
                        return;
                    }
                }
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

    /// A received sticker's image. signal-cli fetches the pack in the background after the
    /// message arrives (and 0.13.19's `getSticker` still answers "not found" on the call that
    /// triggers the download), so a not-found answer is retried a few times.
    async fn sticker(&self, pack: &str, sticker: u64) -> Result<MediaStream, NetworkError> {
        let params =
            json!({"account": self.account.as_str(), "packId": pack, "stickerId": sticker});
        let mut attempt = 0u64;
        let result = loop {
            attempt += 1;
            match self.call("getSticker", params.clone()).await {
                Ok(result) => break result,
                Err(NetworkError::Rejected(why)) if attempt < STICKER_ATTEMPTS => {
                    tracing::debug!(%why, attempt, "sticker not fetched yet; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(250 * attempt)).await;
                }
                Err(err) => return Err(err),
            }
        };
        let data = result
            .get("data")
            .and_then(JsonValue::as_str)
            .unwrap_or_default();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| {
                NetworkError::Rejected(format!("signal-cli sent a sticker that is not base64: {e}"))
            })?;
        if bytes.is_empty() {
            return Err(NetworkError::Rejected(
                "signal-cli sent an empty sticker".to_owned(),
            ));
        }
        Ok(MediaStream {
            content_type: wire::sticker_content_type(&bytes).to_owned(),
            size: Some(bytes.len() as u64),
            body: futures_util::stream::once(async move { Ok(bytes::Bytes::from(bytes)) }).boxed(),
        })
    }

    async fn call(&self, method: &str, params: JsonValue) -> Result<JsonValue, NetworkError> {
        match self.rpc.call(method, params).await {
            Ok(result) => Ok(result),
            Err(RpcError::Remote { code: -4, data, .. }) => Err(self.untrusted(data.as_ref())),
            Err(err) => Err(link_error(err)),
        }
    }

    /// What to tell the user about recipients a sent message missed (a group member whose safety
    /// number changed, one not on Signal any more...); `None` when there are none.
    fn partly_failed(&self, failed: &[(RemoteUserId, String)]) -> Option<String> {
        if failed.is_empty() {
            return None;
        }
        let name = |id: &RemoteUserId| self.name_of(id, None).name;
        let mut parts = Vec::new();
        let untrusted: Vec<&RemoteUserId> = failed
            .iter()
            .filter(|(_, kind)| kind == "IDENTITY_FAILURE" || kind == "UNTRUSTED_IDENTITY")
            .map(|(id, _)| id)
            .collect();
        if !untrusted.is_empty() {
            let names: Vec<String> = untrusted.iter().map(|id| name(id)).collect();
            let commands: Vec<String> = untrusted
                .iter()
                .map(|id| format!("`trust signal {id}`"))
                .collect();
            parts.push(format!(
                "Signal did not deliver it to {} because their safety number has changed. \
                 Compare the new safety number with them (Signal app: open the chat, view the \
                 safety number), then send {} to the bridge bot and send your message again.",
                names.join(", "),
                commands.join(", ")
            ));
        }
        for (id, kind) in failed
            .iter()
            .filter(|(_, kind)| kind != "IDENTITY_FAILURE" && kind != "UNTRUSTED_IDENTITY")
        {
            let why = match kind.as_str() {
                "UNREGISTERED_FAILURE" => "they are not on Signal any more",
                "RATE_LIMIT_FAILURE" => "Signal is rate limiting this account",
                "NETWORK_FAILURE" => "of a network failure",
                "INVALID_PRE_KEY_FAILURE" => "their keys are invalid",
                _ => "of an unknown failure",
            };
            parts.push(format!(
                "Signal did not deliver it to {} ({id}) because {why}.",
                name(id)
            ));
        }
        Some(parts.join(" "))
    }

    /// The refusal for a send that failed because a recipient's safety number changed (-4):
    /// who it was, and how the user goes on.
    fn untrusted(&self, data: Option<&JsonValue>) -> NetworkError {
        let who: Vec<(String, String)> = wire::untrusted_recipients(data)
            .into_iter()
            .map(|id| (self.name_of(&id, None).name, id.to_string()))
            .collect();
        let names = if who.is_empty() {
            "a recipient".to_owned()
        } else {
            who.iter()
                .map(|(name, _)| name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let command = who
            .first()
            .map_or("trust signal <number>".to_owned(), |(_, id)| {
                format!("trust signal {id}")
            });
        NetworkError::Rejected(format!(
            "the safety number of {names} has changed, so Signal did not deliver this. \
             Compare the new safety number with them (Signal app: open the chat, view the safety \
             number), then send `{command}` to the bridge bot and send your message again."
        ))
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
        let expiry = tokio::spawn(self.inner.clone().expire());
        if let Some(old) = self.expiry.lock().expect("expiry lock").replace(expiry) {
            old.abort();
        }
    }

    async fn disconnect(&self) {
        if let Some(task) = self.task.lock().expect("task lock").take() {
            task.abort();
        }
        if let Some(task) = self.expiry.lock().expect("expiry lock").take() {
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
            self.inner.learn_profile(&info);
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
                read_only: None,
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
                    read_only: None,
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
        let id = wire::message_id(timestamp, &self.inner.me);
        let partly_failed = self.inner.partly_failed(&wire::failed_recipients(&result));
        // signal-cli sent it with the chat's timer: it disappears in Matrix too.
        let timers = self.inner.timers();
        let timer = timers.timer(chat).await;
        if timer > 0 {
            timers.schedule(chat, &id, deadline_in(timer)).await;
        }
        Ok(SentMessage {
            id,
            timestamp,
            partly_failed,
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
        let account = self.inner.account.as_str();
        if let Some((pack, sticker)) = wire::parse_sticker_id(id) {
            return self.inner.sticker(pack, sticker).await;
        }
        let (method, params) = match wire::parse_avatar_id(id) {
            Some(wire::AvatarRef::Profile(user)) => {
                ("getAvatar", json!({"account": account, "profile": user}))
            }
            Some(wire::AvatarRef::Group(group)) => {
                ("getAvatar", json!({"account": account, "groupId": group}))
            }
            None => ("getAttachment", json!({"account": account, "id": id})),
        };
        let result = self.inner.call(method, params).await?;
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
        let name = percent_encode(name);
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

    async fn trust_identity(&self, user: &RemoteUserId) -> Result<(), NetworkError> {
        let params = json!({"account": self.inner.account.as_str(), "recipient": user.as_str(),
            "trustAllKnownKeys": true});
        self.inner.call("trust", params).await.map(drop)
    }

    /// signal-cli sets the timer as Signal's apps do (a contact's, or a group's for everyone)
    /// and sends later messages with it.
    async fn set_disappearing(&self, chat: &ChatId, seconds: u32) -> Result<(), NetworkError> {
        let account = self.inner.account.as_str();
        let (method, params) = match wire::group_of(chat) {
            Some(group) => (
                "updateGroup",
                json!({"account": account, "groupId": group, "expiration": seconds}),
            ),
            None => (
                "updateContact",
                json!({"account": account, "recipient": chat.as_str(), "expiration": seconds}),
            ),
        };
        self.inner.call(method, params).await?;
        // Ferry's copies of what it sends from now on disappear from Matrix too.
        self.inner.timers().set_timer(chat, seconds).await;
        Ok(())
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
        self.inner.call("updateGroup", params).await?;
        self.resync_group(group);
        Ok(())
    }

    async fn remove_member(&self, chat: &ChatId, user: &RemoteUserId) -> Result<(), NetworkError> {
        let Some(group) = wire::group_of(chat) else {
            return Err(NetworkError::Unsupported("removing members from a DM"));
        };
        let params = json!({"account": self.inner.account.as_str(), "groupId": group, "removeMember": [user.as_str()]});
        self.inner.call("updateGroup", params).await?;
        self.resync_group(group);
        Ok(())
    }
}

/// The deadline of a message seen now in a chat whose timer is `seconds` (Signal's clock starts
/// when the message is read on a device, later or equal: a message never stays longer).
fn deadline_in(seconds: u32) -> i64 {
    crate::db::now_ms().saturating_add(i64::from(seconds) * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::richtext::Entity;

    #[test]
    fn file_names_survive_java_url_decoding() {
        assert_eq!(percent_encode("Voice message.ogg"), "Voice%20message.ogg");
        assert_eq!(
            percent_encode("a+b;c=d,é.txt"),
            "a%2Bb%3Bc%3Dd%2C%C3%A9.txt"
        );
    }

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
