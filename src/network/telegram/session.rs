//! One Telegram login's live connection: grammers' update stream mapped to the neutral events,
//! and the bridge's sends mapped to MTProto calls.
//!
//! grammers detects gaps (pts/qts/seq, per-channel pts) and fetches what was missed with
//! `updates.getDifference` / `getChannelDifference`; the session stores the advanced update state
//! in ferry's database only after the core accepted an event, so after a restart Telegram
//! replays from the last event the core has, and nothing is lost.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use grammers_client::message::InputMessage;
use grammers_client::peer::Peer;
use grammers_client::sender::UpdatesConfiguration;
use grammers_client::session::Session as _;
use grammers_client::session::types::{PeerId, PeerRef};
use grammers_client::update::Update;
use grammers_client::{Client, InvocationError, tl};
use tokio::task::JoinHandle;

use super::entities::{to_telegram, user_id};
use super::forum::{ChannelFlags, placement, topic_title};
use super::ids::{GENERAL_TOPIC, chat_id, chat_kind, peer_id, topic_chat, topic_of};
use super::media::{content_of, decode_location};
use super::recall::{PollSeen, Reactions, Recall};
use super::store::DbSession;
use super::{TELEGRAM, TelegramConfig};
use crate::db::Db;
use crate::network::{
    ChatChanges, ChatId, ChatInfo, ChatKind, ConnectionState, EventSink, LoginId, MediaStream,
    MessageContent, MessageId, NetworkError, OutgoingMessage, RemoteEnvelope, RemoteEvent,
    RemoteMessage, RemoteUserId, RoomLayout, SentMessage, Session, UserInfo,
};

/// Largest upload held in memory before it is sent (see `upload_media`).
const MAX_BUFFERED_UPLOAD: usize = 256 * 1024 * 1024;

/// How long to wait before reconnecting after the update stream failed.
const RECONNECT_DELAY: Duration = Duration::from_secs(5);

pub(super) fn map_err(e: InvocationError) -> NetworkError {
    match &e {
        InvocationError::Rpc(rpc) if rpc.code == 401 => NetworkError::LoggedOut(rpc.name.clone()),
        InvocationError::Rpc(rpc) if rpc.code == 420 => {
            NetworkError::Transient(format!("Telegram asks to wait {}s", rpc.value.unwrap_or(0)))
        }
        InvocationError::Rpc(rpc) if rpc.code >= 500 => NetworkError::Transient(rpc.name.clone()),
        InvocationError::Rpc(rpc) => NetworkError::Rejected(rpc.name.clone()),
        _ => NetworkError::Transient(format!("Telegram: {e}")),
    }
}

fn message_id(id: i32) -> MessageId {
    MessageId::new(id.to_string())
}

/// The private chat of a Telegram user (how the session finds the user's access hash).
fn user_chat(user: &RemoteUserId) -> Result<ChatId, NetworkError> {
    match user.as_str().parse::<i64>() {
        Ok(id) if id > 0 => Ok(ChatId::new(format!("u{id}"))),
        _ => Err(NetworkError::Rejected(format!(
            "{user} is not a Telegram user"
        ))),
    }
}

fn parse_message_id(id: &MessageId) -> Result<i32, NetworkError> {
    id.as_str()
        .parse()
        .map_err(|_| NetworkError::Rejected(format!("{id} is not a Telegram message id")))
}

fn user_info(peer: Option<&Peer>, id: Option<PeerId>) -> UserInfo {
    use grammers_client::session::types::PeerKind;
    let channel = id.is_some_and(|id| id.kind() == PeerKind::Channel);
    let id = id.and_then(PeerId::bare_id).unwrap_or_default();
    UserInfo {
        id: if channel {
            super::entities::channel_poster_id(id)
        } else {
            user_id(id)
        },
        name: peer
            .and_then(|p| p.name())
            .map(str::to_owned)
            .unwrap_or_else(|| id.to_string()),
        avatar: None,
    }
}

/// Who wrote a message: its sender, or for a channel post (no sender) the channel itself.
fn sender_of(m: &grammers_client::message::Message) -> UserInfo {
    match m.sender_id() {
        Some(id) => user_info(m.sender(), Some(id)),
        None => user_info(m.peer(), Some(m.peer_id())),
    }
}

struct Inner {
    login: LoginId,
    own: RemoteUserId,
    db: Db,
    config: TelegramConfig,
    sink: EventSink,
    state: Mutex<ConnectionState>,
    client: Mutex<Option<(Client, Arc<DbSession>)>>,
    /// Which chat a private/basic-group message id is in: Telegram's delete updates for those
    /// carry ids only. After a restart, ferry's message table answers instead.
    chat_of: Mutex<HashMap<i32, ChatId>>,
    /// Other users' reactions last seen per message: Telegram sends the whole list each time,
    /// the bridge wants what was added and removed. Written through to [`Recall`].
    reactions: Mutex<HashMap<(ChatId, i32), Reactions>>,
    /// Files uploaded for a following send, by the id `upload_media` returned.
    uploads: Mutex<HashMap<String, grammers_client::media::Uploaded>>,
    /// Channels seen so far: broadcast (read-only room), forum (a space of topic rooms).
    channels: Mutex<HashMap<i64, ChannelFlags>>,
    /// Forums whose space was announced to the core in this run (before any topic's event, so
    /// the space exists when a topic's room is created).
    announced: Mutex<HashSet<i64>>,
    /// The topic of forum messages seen in this run: delete updates carry ids only.
    topic_of_message: Mutex<HashMap<(i64, i32), i32>>,
    /// Polls bridged, by poll id: vote updates name the poll only. Written through to
    /// [`Recall`], so votes on polls bridged before a restart are counted too.
    polls: Mutex<HashMap<i64, PollSeen>>,
    /// The reaction lists and polls of earlier runs.
    recall: Recall,
}

/// A forum topic's title (the General topic has a fixed one).
async fn topic_name(client: &Client, peer: PeerRef, topic: i32) -> Result<String, NetworkError> {
    if topic == GENERAL_TOPIC {
        return Ok("General".to_owned());
    }
    let topics = client
        .invoke(&tl::functions::messages::GetForumTopics {
            peer: peer.into(),
            q: None,
            offset_date: 0,
            offset_id: 0,
            offset_topic: 0,
            limit: 100,
        })
        .await
        .map_err(map_err)?;
    Ok(topic_title(&topics, topic).unwrap_or_else(|| format!("Topic {topic}")))
}

pub struct TelegramSession {
    inner: Arc<Inner>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl TelegramSession {
    pub fn new(login: LoginId, db: Db, config: TelegramConfig, sink: EventSink) -> Self {
        let own = RemoteUserId::new(login.as_str());
        Self {
            inner: Arc::new(Inner {
                recall: Recall::new(db.clone(), login.as_str()),
                login,
                own,
                db,
                config,
                sink,
                state: Mutex::new(ConnectionState::Connecting),
                client: Mutex::new(None),
                chat_of: Mutex::new(HashMap::new()),
                reactions: Mutex::new(HashMap::new()),
                uploads: Mutex::new(HashMap::new()),
                channels: Mutex::new(HashMap::new()),
                announced: Mutex::new(HashSet::new()),
                topic_of_message: Mutex::new(HashMap::new()),
                polls: Mutex::new(HashMap::new()),
            }),
            task: Mutex::new(None),
        }
    }

    fn client(&self) -> Result<(Client, Arc<DbSession>), NetworkError> {
        self.inner
            .client
            .lock()
            .map_err(|_| NetworkError::Transient("session lock poisoned".into()))?
            .clone()
            .ok_or(NetworkError::NotConnected(TELEGRAM))
    }

    async fn peer(&self, chat: &ChatId) -> Result<(Client, PeerRef), NetworkError> {
        self.inner.peer(chat).await
    }
}

impl TelegramSession {
    /// A fresh file location for media id `id`, from its message fetched again.
    async fn refreshed_location(&self, id: &str) -> Result<super::media::Location, NetworkError> {
        let stale = || NetworkError::Rejected("the Telegram file reference expired".into());
        let (chat, message) = super::media::origin_of(id).ok_or_else(stale)?;
        let (client, peer) = self.peer(&chat).await?;
        let fetched = client
            .get_messages_by_id(peer, &[message])
            .await
            .map_err(map_err)?
            .into_iter()
            .flatten()
            .next()
            .ok_or_else(|| NetworkError::Rejected("the Telegram message is gone".into()))?;
        match content_of(&fetched) {
            MessageContent::Media { media, .. } => Ok(decode_location(&media.id)?.0),
            _ => Err(stale()),
        }
    }
}

impl Inner {
    async fn set_state(&self, state: ConnectionState) {
        if let Ok(mut s) = self.state.lock() {
            *s = state.clone();
        }
        self.sink.state(TELEGRAM, self.login.clone(), state).await;
    }

    async fn deliver(&self, chat: ChatId, event: RemoteEvent) -> bool {
        self.sink
            .event(RemoteEnvelope {
                network: TELEGRAM,
                login: self.login.clone(),
                chat_kind: chat_kind(&chat),
                checkpoint: None,
                event,
            })
            .await
    }

    /// Maps one grammers update; returns false when the bridge is shutting down.
    async fn handle(&self, update: Update) -> bool {
        match update {
            // The account's own sends come back too (from Matrix, with the id the send
            // returned, or from the user's other devices): the core recognises the former.
            Update::NewMessage(m) => {
                let Some((chat, reply_to)) = self.place(&m).await else {
                    return true;
                };
                self.remember(m.id(), &chat, m.peer_id());
                self.deliver_message(chat, &m, reply_to).await
            }
            Update::MessageEdited(m) => {
                let Some((chat, _)) = self.place(&m).await else {
                    return true;
                };
                let event = RemoteEvent::Edit {
                    chat: chat.clone(),
                    id: message_id(m.id()),
                    sender: sender_of(&m),
                    content: content_of(&m),
                    timestamp: m.edit_date().unwrap_or(m.date()).as_millisecond(),
                };
                self.deliver(chat, event).await
            }
            Update::MessageDeleted(d) => {
                for id in d.messages() {
                    let chat = match d.channel_id() {
                        Some(c) => self.channel_chat_of(c, *id).await,
                        None => match self.chat_of.lock().ok().and_then(|m| m.get(id).cloned()) {
                            Some(chat) => Some(chat),
                            None => self.stored_chat_of(*id).await,
                        },
                    };
                    let Some(chat) = chat else {
                        tracing::debug!(id, "delete of a message ferry has not seen; skipped");
                        continue;
                    };
                    let event = RemoteEvent::Delete {
                        chat: chat.clone(),
                        id: message_id(*id),
                        by: self.own.clone(),
                    };
                    if !self.deliver(chat, event).await {
                        return false;
                    }
                }
                true
            }
            Update::Raw(raw) => self.handle_raw(raw.raw).await,
            _ => true,
        }
    }

    /// The client and the peer of `chat` (which must be known to the session).
    async fn peer(&self, chat: &ChatId) -> Result<(Client, PeerRef), NetworkError> {
        let (client, session) = self.connected()?;
        let id = peer_id(chat)
            .ok_or_else(|| NetworkError::Rejected(format!("{chat} is not a Telegram chat")))?;
        let peer = session
            .peer_ref(id)
            .await
            .map_err(|e| NetworkError::Transient(e.to_string()))?
            .ok_or_else(|| {
                NetworkError::Rejected(format!("Telegram chat {chat} is not known yet"))
            })?;
        Ok((client, peer))
    }

    /// A chat as the bridge mirrors it: name, about, photo, members (capped), admins.
    async fn chat_info(&self, chat: &ChatId) -> Result<ChatInfo, NetworkError> {
        use grammers_client::peer::Role;
        use grammers_client::session::types::PeerKind;
        let (client, peer) = self.peer(chat).await?;
        let resolved = client.resolve_peer(peer).await.map_err(map_err)?;
        let flags = ChannelFlags::of_peer(&resolved);
        if let (Some(flags), Some(channel)) = (&flags, peer.id.bare_id())
            && let Ok(mut m) = self.channels.lock()
        {
            m.insert(channel, flags.clone());
        }
        let mut members = Vec::new();
        let mut admins = Vec::new();
        let cap = match self.config.max_initial_members {
            0 => usize::MAX,
            n => n,
        };
        match &flags {
            Some(flags) if flags.broadcast => {
                // A channel's subscribers are not listed (Telegram lets only admins see them,
                // and they never post): the channel itself posts, and the account if admin.
                let channel =
                    super::entities::channel_poster_id(peer.id.bare_id().unwrap_or_default());
                members.push(UserInfo {
                    id: channel.clone(),
                    name: flags.title.clone(),
                    avatar: None,
                });
                admins.push(channel);
                if flags.admin {
                    admins.push(self.own.clone());
                }
            }
            _ if peer.id.kind() != PeerKind::User => {
                // Groups: members with their names, creator and admins as admins. Large groups
                // are synced lazily: at most `max_initial_members` now, the rest when they
                // first write (the core adds a sender's ghost to the room then).
                let mut participants = client.iter_participants(peer);
                while members.len() < cap
                    && let Some(p) = participants.next().await.map_err(map_err)?
                {
                    let id = user_id(p.user.id().bare_id_unchecked());
                    if matches!(p.role, Role::Creator(_) | Role::Admin(_)) {
                        admins.push(id.clone());
                    }
                    if matches!(p.role, Role::Banned(_) | Role::Left(_)) {
                        continue;
                    }
                    members.push(UserInfo {
                        id,
                        name: p.user.full_name(),
                        avatar: None,
                    });
                }
            }
            _ => {}
        }
        let mut name = resolved.name().map(str::to_owned);
        let (mut topic, mut avatar) = (None, None);
        if let Some(forum_topic) = topic_of(chat) {
            name = Some(topic_name(&client, peer, forum_topic).await?);
        } else {
            (topic, avatar) = super::details::read(&client, peer, &resolved).await?;
        }
        Ok(ChatInfo {
            id: chat.clone(),
            kind: chat_kind(chat),
            name,
            topic,
            avatar,
            members,
            admins,
            read_only: None,
        })
    }

    fn connected(&self) -> Result<(Client, Arc<DbSession>), NetworkError> {
        self.client
            .lock()
            .map_err(|_| NetworkError::Transient("session lock poisoned".into()))?
            .clone()
            .ok_or(NetworkError::NotConnected(TELEGRAM))
    }

    /// What kind of channel `channel` is: from `hint` (the peer an update came with), else
    /// from what was seen before, else asked from Telegram. `None` when it cannot be known.
    async fn channel_flags(&self, channel: i64, hint: Option<&Peer>) -> Option<ChannelFlags> {
        if let Some(flags) = hint.and_then(ChannelFlags::of_peer) {
            if let Ok(mut m) = self.channels.lock() {
                m.insert(channel, flags.clone());
            }
            return Some(flags);
        }
        let known = self
            .channels
            .lock()
            .ok()
            .and_then(|m| m.get(&channel).cloned());
        if known.is_some() {
            return known;
        }
        let (client, session) = self.connected().ok()?;
        let peer = session
            .peer_ref(PeerId::channel(channel)?)
            .await
            .ok()
            .flatten()?;
        let resolved = match client.resolve_peer(peer).await {
            Ok(resolved) => resolved,
            Err(err) => {
                tracing::warn!(%err, channel, "cannot look up a Telegram channel");
                return None;
            }
        };
        let flags = ChannelFlags::of_peer(&resolved)?;
        if let Ok(mut m) = self.channels.lock() {
            m.insert(channel, flags.clone());
        }
        Some(flags)
    }

    /// Tells the core about a forum (its space) once per run, before any of its topics' events.
    /// Returns false when the bridge is shutting down.
    async fn announce_forum(&self, channel: i64, flags: &ChannelFlags) -> bool {
        let first = self
            .announced
            .lock()
            .map(|mut a| a.insert(channel))
            .unwrap_or(false);
        if !first {
            return true;
        }
        let chat = ChatId::new(format!("c{channel}"));
        let info = ChatInfo {
            id: chat.clone(),
            kind: chat_kind(&chat),
            name: Some(flags.title.clone()),
            topic: None,
            avatar: None,
            members: Vec::new(),
            admins: Vec::new(),
            read_only: None,
        };
        self.deliver(chat, RemoteEvent::Chat(info)).await
    }

    /// The chat a message belongs to (a forum's topic for forum messages) and the message it
    /// replies to. `None`: not a chat ferry bridges.
    async fn place(&self, m: &grammers_client::message::Message) -> Option<(ChatId, Option<i32>)> {
        use grammers_client::session::types::PeerKind;
        let peer = m.peer_id();
        let chat = chat_id(peer)?;
        if peer.kind() != PeerKind::Channel {
            return Some((chat, m.reply_to_message_id()));
        }
        let channel = peer.bare_id()?;
        match self.channel_flags(channel, m.peer()).await {
            Some(flags) if flags.forum => {
                if !self.announce_forum(channel, &flags).await {
                    return None;
                }
                let place = placement(&m.raw);
                if let Ok(mut t) = self.topic_of_message.lock() {
                    t.insert((channel, m.id()), place.topic);
                }
                Some((topic_chat(channel, place.topic), place.reply_to))
            }
            _ => Some((chat, m.reply_to_message_id())),
        }
    }

    /// The chat of message `id` of channel `channel`: the channel, or for a forum the topic the
    /// message was seen in (in this run, else from ferry's message table).
    async fn channel_chat_of(&self, channel: i64, id: i32) -> Option<ChatId> {
        let forum = self
            .channels
            .lock()
            .ok()
            .and_then(|m| m.get(&channel).map(|f| f.forum));
        if forum == Some(false) {
            return chat_id(PeerId::channel_unchecked(channel));
        }
        let seen = self
            .topic_of_message
            .lock()
            .ok()
            .and_then(|t| t.get(&(channel, id)).copied());
        if let Some(topic) = seen {
            return Some(topic_chat(channel, topic));
        }
        let rows = self
            .db
            .chats_of_remote_message(TELEGRAM.as_str(), &id.to_string())
            .await
            .unwrap_or_default();
        let prefix = format!("c{channel}t");
        rows.into_iter()
            .map(|(chat, _)| ChatId::new(chat))
            .find(|chat| chat.as_str().starts_with(&prefix) && topic_of(chat).is_some())
            .or_else(|| chat_id(PeerId::channel_unchecked(channel)))
    }

    fn remember(&self, id: i32, chat: &ChatId, peer: PeerId) {
        use grammers_client::session::types::PeerKind;
        if peer.kind() != PeerKind::Channel
            && let Ok(mut m) = self.chat_of.lock()
        {
            m.insert(id, chat.clone());
        }
    }

    /// The private chat or basic group of message `id`, from ferry's message table (after a
    /// restart the in-memory map is empty). Only this login's chats and shared basic groups
    /// count; channel message ids are per channel and never looked up here.
    async fn stored_chat_of(&self, id: i32) -> Option<ChatId> {
        let rows = match self
            .db
            .chats_of_remote_message(TELEGRAM.as_str(), &id.to_string())
            .await
        {
            Ok(rows) => rows,
            Err(err) => {
                tracing::warn!(%err, "cannot look up the chat of a deleted Telegram message");
                return None;
            }
        };
        let login = self.login.as_str();
        rows.into_iter()
            .filter(|(chat, receiver)| {
                !chat.starts_with('c') && (receiver == login || receiver.is_empty())
            })
            .map(|(chat, _)| ChatId::new(chat))
            .next()
    }

    async fn deliver_message(
        &self,
        chat: ChatId,
        m: &grammers_client::message::Message,
        reply_to: Option<i32>,
    ) -> bool {
        let sender_id = m.sender_id().or(Some(m.peer_id()));
        let service = m.action().map(|action| {
            let actor = sender_id.and_then(PeerId::bare_id).unwrap_or_default();
            super::service::describe(action, actor)
        });
        let message = RemoteMessage {
            id: message_id(m.id()),
            sender: if m.outgoing() {
                UserInfo {
                    id: self.own.clone(),
                    name: self.own.as_str().to_owned(),
                    avatar: None,
                }
            } else {
                sender_of(m)
            },
            content: match &service {
                Some(service) => MessageContent::Text(service.text.clone()),
                None => content_of(m),
            },
            reply_to: reply_to.map(message_id),
            timestamp: m.date().as_millisecond(),
        };
        let poll = match m.media() {
            Some(grammers_client::media::Media::Poll(poll)) => Some((
                poll.raw.id,
                PollSeen {
                    chat: chat.clone(),
                    message: m.id(),
                    sender: message.sender.clone(),
                    poll: poll.raw.clone(),
                },
            )),
            _ => None,
        };
        if !self
            .deliver(
                chat.clone(),
                RemoteEvent::Message {
                    chat: chat.clone(),
                    message,
                },
            )
            .await
        {
            return false;
        }
        if let Some((id, seen)) = poll {
            self.recall.set_poll(id, &seen).await;
            if let Ok(mut polls) = self.polls.lock() {
                polls.insert(id, seen);
            }
        }
        if service.as_ref().is_some_and(|s| s.details_changed)
            && !self.details_changed(chat.clone()).await
        {
            return false;
        }
        for user in service
            .as_ref()
            .map(|s| s.joined.clone())
            .unwrap_or_default()
        {
            let event = RemoteEvent::MemberJoined {
                chat: chat.clone(),
                user: self.named_user(user).await,
            };
            if !self.deliver(chat.clone(), event).await {
                return false;
            }
        }
        for user in service.map(|s| s.left).unwrap_or_default() {
            let event = RemoteEvent::MemberLeft {
                chat: chat.clone(),
                user: user_id(user),
            };
            if !self.deliver(chat.clone(), event).await {
                return false;
            }
        }
        true
    }

    async fn handle_raw(&self, raw: tl::enums::Update) -> bool {
        match raw {
            tl::enums::Update::UserTyping(t) => {
                let Some(chat) = chat_id(PeerId::user_unchecked(t.user_id)) else {
                    return true;
                };
                let typing = !matches!(
                    t.action,
                    tl::enums::SendMessageAction::SendMessageCancelAction
                );
                let event = RemoteEvent::Typing {
                    chat: chat.clone(),
                    user: user_id(t.user_id),
                    typing,
                };
                self.deliver(chat, event).await
            }
            tl::enums::Update::ChatUserTyping(t) => {
                let tl::enums::Peer::User(from) = t.from_id else {
                    return true;
                };
                let Some(chat) = chat_id(PeerId::chat_unchecked(t.chat_id)) else {
                    return true;
                };
                self.typing(chat, from.user_id, &t.action).await
            }
            tl::enums::Update::ChannelUserTyping(t) => {
                let tl::enums::Peer::User(from) = t.from_id else {
                    return true;
                };
                let chat = match self.channel_flags(t.channel_id, None).await {
                    Some(flags) if flags.forum => {
                        if !self.announce_forum(t.channel_id, &flags).await {
                            return false;
                        }
                        topic_chat(t.channel_id, t.top_msg_id.unwrap_or(GENERAL_TOPIC))
                    }
                    _ => match chat_id(PeerId::channel_unchecked(t.channel_id)) {
                        Some(chat) => chat,
                        None => return true,
                    },
                };
                self.typing(chat, from.user_id, &t.action).await
            }
            tl::enums::Update::ReadHistoryOutbox(r) => {
                let (chat, user) = match r.peer {
                    tl::enums::Peer::User(u) => (
                        chat_id(PeerId::user_unchecked(u.user_id)),
                        user_id(u.user_id),
                    ),
                    _ => return true,
                };
                let Some(chat) = chat else { return true };
                let event = RemoteEvent::Read {
                    chat: chat.clone(),
                    user,
                    up_to: message_id(r.max_id),
                };
                self.deliver(chat, event).await
            }
            tl::enums::Update::MessageReactions(r) => self.reactions_changed(r).await,
            tl::enums::Update::MessagePoll(u) => {
                // New votes: the poll's text is edited to the new counts.
                let known = self
                    .polls
                    .lock()
                    .ok()
                    .and_then(|polls| polls.get(&u.poll_id).cloned());
                let Some(mut seen) = (match known {
                    Some(seen) => Some(seen),
                    None => self.recall.poll(u.poll_id).await,
                }) else {
                    return true;
                };
                let changed = if let Some(tl::enums::Poll::Poll(poll)) = u.poll {
                    seen.poll = poll;
                    true
                } else {
                    false
                };
                if changed {
                    self.recall.set_poll(u.poll_id, &seen).await;
                }
                if let Ok(mut polls) = self.polls.lock() {
                    polls.insert(u.poll_id, seen.clone());
                }
                let PollSeen {
                    chat,
                    message: id,
                    sender,
                    poll,
                } = seen;
                let tl::enums::PollResults::Results(results) = u.results;
                let event = RemoteEvent::Edit {
                    chat: chat.clone(),
                    id: message_id(id),
                    sender,
                    content: MessageContent::Text(super::media::poll_text(&poll, &results)),
                    timestamp: crate::db::now_ms(),
                };
                self.deliver(chat, event).await
            }
            // The about text (or other details) changed: read the chat again.
            tl::enums::Update::Chat(c) => match chat_id(PeerId::chat_unchecked(c.chat_id)) {
                Some(chat) => self.details_changed(chat).await,
                None => true,
            },
            tl::enums::Update::Channel(c) => match chat_id(PeerId::channel_unchecked(c.channel_id))
            {
                Some(chat) => self.details_changed(chat).await,
                None => true,
            },
            tl::enums::Update::UserStatus(s) => {
                let online = matches!(s.status, tl::enums::UserStatus::Online(_));
                self.sink
                    .presence(TELEGRAM, user_id(s.user_id), online)
                    .await;
                true
            }
            _ => true,
        }
    }

    /// Tells the core a chat's details (title, about, photo, members) anew, read from Telegram.
    /// A chat that cannot be read now (the account left it) is skipped, logged.
    async fn details_changed(&self, chat: ChatId) -> bool {
        match self.chat_info(&chat).await {
            Ok(info) => self.deliver(chat, RemoteEvent::Chat(info)).await,
            Err(err) => {
                tracing::warn!(%err, %chat, "cannot read a changed Telegram chat; skipped");
                true
            }
        }
    }

    /// A user with their name as Telegram knows it (the id when it cannot be looked up).
    async fn named_user(&self, id: i64) -> UserInfo {
        let fallback = || user_info(None, PeerId::user(id));
        let Ok((client, session)) = self.connected() else {
            return fallback();
        };
        let Some(peer) = PeerId::user(id) else {
            return fallback();
        };
        let Ok(Some(peer)) = session.peer_ref(peer).await else {
            return fallback();
        };
        match client.resolve_peer(peer).await {
            Ok(resolved) => user_info(Some(&resolved), Some(resolved.id())),
            Err(err) => {
                tracing::debug!(%err, "cannot look up a Telegram user's name");
                fallback()
            }
        }
    }

    /// A typing notification of `user` in `chat` (a cancel action ends it).
    async fn typing(&self, chat: ChatId, user: i64, action: &tl::enums::SendMessageAction) -> bool {
        let typing = !matches!(
            action,
            tl::enums::SendMessageAction::SendMessageCancelAction
        );
        let event = RemoteEvent::Typing {
            chat: chat.clone(),
            user: user_id(user),
            typing,
        };
        self.deliver(chat, event).await
    }

    /// Turns Telegram's full reaction list of a message into added/removed reactions.
    async fn reactions_changed(&self, r: tl::types::UpdateMessageReactions) -> bool {
        let chat = match r.peer {
            tl::enums::Peer::User(u) => chat_id(PeerId::user_unchecked(u.user_id)),
            tl::enums::Peer::Chat(c) => chat_id(PeerId::chat_unchecked(c.chat_id)),
            tl::enums::Peer::Channel(c) => match self.channel_flags(c.channel_id, None).await {
                Some(flags) if flags.forum => {
                    if !self.announce_forum(c.channel_id, &flags).await {
                        return false;
                    }
                    Some(topic_chat(
                        c.channel_id,
                        r.top_msg_id.unwrap_or(GENERAL_TOPIC),
                    ))
                }
                _ => chat_id(PeerId::channel_unchecked(c.channel_id)),
            },
        };
        let Some(chat) = chat else {
            return true;
        };
        let tl::enums::MessageReactions::Reactions(list) = r.reactions;
        let own: i64 = self.own.as_str().parse().unwrap_or_default();
        let now: Reactions = list
            .recent_reactions
            .unwrap_or_default()
            .into_iter()
            .filter_map(|tl::enums::MessagePeerReaction::Reaction(p)| {
                let tl::enums::Peer::User(u) = p.peer_id else {
                    return None;
                };
                let tl::enums::Reaction::Emoji(e) = p.reaction else {
                    return None;
                };
                (u.user_id != own).then_some((u.user_id, e.emoticon))
            })
            .collect();
        let seen = self
            .reactions
            .lock()
            .ok()
            .and_then(|m| m.get(&(chat.clone(), r.msg_id)).cloned());
        let before = match seen {
            Some(before) => before,
            None => self.recall.reactions(&chat, r.msg_id).await,
        };
        let removed = before
            .iter()
            .filter(|x| !now.contains(x))
            .map(|x| (x, true));
        let added = now
            .iter()
            .filter(|x| !before.contains(x))
            .map(|x| (x, false));
        for ((user, emoji), removed) in removed.chain(added) {
            let event = RemoteEvent::Reaction {
                chat: chat.clone(),
                target: message_id(r.msg_id),
                sender: user_info(None, Some(PeerId::user_unchecked(*user))),
                emoji: emoji.clone(),
                removed,
            };
            if !self.deliver(chat.clone(), event).await {
                return false;
            }
        }
        if before != now {
            self.recall.set_reactions(&chat, r.msg_id, &now).await;
        }
        if let Ok(mut m) = self.reactions.lock() {
            m.insert((chat, r.msg_id), now);
        }
        true
    }

    async fn run(self: Arc<Self>) {
        loop {
            self.set_state(ConnectionState::Connecting).await;
            let session = match DbSession::load(self.db.clone(), self.login.as_str()).await {
                Ok(Some(s)) => Arc::new(s),
                Ok(None) => {
                    self.set_state(ConnectionState::LoggedOut(
                        "no stored Telegram session".into(),
                    ))
                    .await;
                    return;
                }
                Err(e) => {
                    self.set_state(ConnectionState::TransientDisconnect(e.to_string()))
                        .await;
                    tokio::time::sleep(RECONNECT_DELAY).await;
                    continue;
                }
            };
            let pool = self.config.sender_pool(Arc::clone(&session));
            let client = Client::new(pool.handle);
            let runner = tokio::spawn(pool.runner.run());
            if let Ok(mut c) = self.client.lock() {
                *c = Some((client.clone(), Arc::clone(&session)));
            }
            let stream = client
                .stream_updates(pool.updates, UpdatesConfiguration { catch_up: true })
                .await;
            let mut stream = match stream {
                Ok(s) => s,
                Err(e) => {
                    self.set_state(ConnectionState::TransientDisconnect(e.to_string()))
                        .await;
                    client.disconnect();
                    runner.abort();
                    tokio::time::sleep(RECONNECT_DELAY).await;
                    continue;
                }
            };
            match client.is_authorized().await {
                Ok(true) => self.set_state(ConnectionState::Connected).await,
                Ok(false) => {
                    self.set_state(ConnectionState::LoggedOut(
                        "Telegram ended this login".into(),
                    ))
                    .await;
                    client.disconnect();
                    return;
                }
                Err(e) => {
                    self.set_state(ConnectionState::TransientDisconnect(e.to_string()))
                        .await
                }
            }
            loop {
                match stream.next().await {
                    Ok(update) => {
                        if !self.handle(update).await {
                            client.disconnect();
                            return;
                        }
                        // Only now is the event the core's: store how far Telegram got.
                        if let Err(e) = stream.sync_update_state().await {
                            tracing::warn!(error = %e, "cannot store the Telegram update state");
                        }
                    }
                    Err(e) => {
                        self.set_state(ConnectionState::TransientDisconnect(e.to_string()))
                            .await;
                        break;
                    }
                }
            }
            client.disconnect();
            let _ = runner.await;
            tokio::time::sleep(RECONNECT_DELAY).await;
        }
    }
}

#[async_trait]
impl Session for TelegramSession {
    async fn connect(&self, _checkpoint: Option<i64>) {
        let Ok(mut task) = self.task.lock() else {
            return;
        };
        if task.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        *task = Some(tokio::spawn(Arc::clone(&self.inner).run()));
    }

    async fn disconnect(&self) {
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            task.abort();
        }
        let client = self.inner.client.lock().ok().and_then(|mut c| c.take());
        if let Some((client, _)) = client {
            client.disconnect();
        }
    }

    fn state(&self) -> ConnectionState {
        self.inner
            .state
            .lock()
            .map(|s| s.clone())
            .unwrap_or(ConnectionState::Connecting)
    }

    fn own_user(&self) -> &RemoteUserId {
        &self.inner.own
    }

    async fn list_chats(&self) -> Result<Vec<ChatInfo>, NetworkError> {
        let (client, _) = self.client()?;
        let mut dialogs = client.iter_dialogs();
        let mut out = Vec::new();
        while let Some(d) = dialogs.next().await.map_err(map_err)? {
            let Some(id) = chat_id(d.peer_id()) else {
                continue;
            };
            // Groups: about and photo too, so a sync neither misses nor clears them.
            let (topic, avatar) = match chat_kind(&id) {
                ChatKind::Group => super::details::read(&client, d.peer_ref(), d.peer()).await?,
                ChatKind::Dm => (None, None),
            };
            out.push(ChatInfo {
                kind: chat_kind(&id),
                id,
                name: d.peer().name().map(str::to_owned),
                topic,
                avatar,
                members: Vec::new(),
                admins: Vec::new(),
                read_only: None,
            });
        }
        Ok(out)
    }

    async fn chat_info(&self, chat: &ChatId) -> Result<ChatInfo, NetworkError> {
        self.inner.chat_info(chat).await
    }

    async fn room_layout(&self, chat: &ChatId) -> Result<RoomLayout, NetworkError> {
        use grammers_client::session::types::PeerKind;
        let Some(peer) = peer_id(chat) else {
            return Ok(RoomLayout::default());
        };
        if peer.kind() != PeerKind::Channel {
            return Ok(RoomLayout::default());
        }
        let channel = peer.bare_id().unwrap_or_default();
        if topic_of(chat).is_some() {
            return Ok(RoomLayout {
                parent: Some(ChatId::new(format!("c{channel}"))),
                ..RoomLayout::default()
            });
        }
        let flags = self
            .inner
            .channel_flags(channel, None)
            .await
            .ok_or_else(|| NetworkError::Transient(format!("cannot look up Telegram {chat}")))?;
        Ok(RoomLayout {
            space: flags.forum,
            read_only: flags.broadcast,
            ..RoomLayout::default()
        })
    }

    async fn user_info(&self, user: &RemoteUserId) -> Result<UserInfo, NetworkError> {
        let chat = ChatId::new(format!("u{}", user.as_str()));
        let info = self.chat_info(&chat).await?;
        Ok(UserInfo {
            id: user.clone(),
            name: info.name.unwrap_or_else(|| user.as_str().to_owned()),
            avatar: None,
        })
    }

    async fn send_message(
        &self,
        chat: &ChatId,
        _txn_id: &str,
        message: &OutgoingMessage,
    ) -> Result<SentMessage, NetworkError> {
        let (client, peer) = self.peer(chat).await?;
        let reply_to = message
            .reply_to
            .as_ref()
            .map(parse_message_id)
            .transpose()?;
        // In a forum topic, a message that replies to nothing names the topic instead (the
        // General topic needs neither); a reply finds its topic through the replied message.
        let reply_to = match topic_of(chat) {
            Some(topic) if topic != GENERAL_TOPIC => reply_to.or(Some(topic)),
            _ => reply_to,
        };
        let input = match &message.content {
            MessageContent::Text(text) => InputMessage::new()
                .text(text.text.clone())
                .fmt_entities(to_telegram(text, |_| None)),
            MessageContent::Media { media, caption } => {
                let uploaded = self
                    .inner
                    .uploads
                    .lock()
                    .ok()
                    .and_then(|mut u| u.remove(&media.id))
                    .ok_or_else(|| {
                        NetworkError::Rejected(format!("{} was not uploaded first", media.id))
                    })?;
                let caption = caption.clone().unwrap_or_default();
                let input = InputMessage::new()
                    .text(caption.text.clone())
                    .fmt_entities(to_telegram(&caption, |_| None));
                if media.kind == crate::network::MediaKind::Image
                    && matches!(media.content_type.as_str(), "image/jpeg" | "image/png")
                {
                    input.photo(uploaded)
                } else {
                    input.media(super::media::uploaded_document(uploaded.raw, media))
                }
            }
            MessageContent::Location {
                latitude,
                longitude,
                ..
            } => InputMessage::new().media(tl::enums::InputMedia::GeoPoint(
                tl::types::InputMediaGeoPoint {
                    geo_point: tl::enums::InputGeoPoint::Point(tl::types::InputGeoPoint {
                        lat: *latitude,
                        long: *longitude,
                        accuracy_radius: None,
                    }),
                },
            )),
            MessageContent::Contact { name, phone, .. } => {
                let (first, last) = name.split_once(' ').unwrap_or((name.as_str(), ""));
                InputMessage::new().media(tl::enums::InputMedia::Contact(
                    tl::types::InputMediaContact {
                        phone_number: phone.clone().unwrap_or_default(),
                        first_name: first.to_owned(),
                        last_name: last.to_owned(),
                        vcard: String::new(),
                    },
                ))
            }
        }
        .reply_to(reply_to);
        let sent = client.send_message(peer, input).await.map_err(map_err)?;
        if let (Some(topic), Some(channel)) = (topic_of(chat), peer.id.bare_id())
            && let Ok(mut t) = self.inner.topic_of_message.lock()
        {
            t.insert((channel, sent.id()), topic);
        }
        if let Some(chat) = chat_id(sent.peer_id()) {
            self.inner.remember(sent.id(), &chat, sent.peer_id());
        }
        Ok(SentMessage {
            id: message_id(sent.id()),
            timestamp: sent.date().as_millisecond(),
            partly_failed: None,
        })
    }

    async fn download_media(&self, id: &str) -> Result<MediaStream, NetworkError> {
        let (client, _) = self.client()?;
        let (location, size) = decode_location(id)?;
        let mut iter = client.iter_download(&location);
        // Telegram's file references expire: then the message is fetched again for a fresh
        // one and the download retried, once.
        let first = match iter.next().await {
            Err(InvocationError::Rpc(rpc)) if rpc.name == "FILE_REFERENCE_EXPIRED" => {
                tracing::info!("Telegram file reference expired; refetching its message");
                let fresh = self.refreshed_location(id).await?;
                iter = client.iter_download(&fresh);
                iter.next().await.map_err(map_err)?
            }
            other => other.map_err(map_err)?,
        };
        if size.is_none() {
            // Photos: no exact size to announce, so the (small) file is read whole first.
            let mut data = first.unwrap_or_default();
            while let Some(chunk) = iter.next().await.map_err(map_err)? {
                data.extend_from_slice(&chunk);
                if data.len() > MAX_BUFFERED_UPLOAD {
                    return Err(NetworkError::Rejected(
                        "the Telegram file is too large to relay without a known size".into(),
                    ));
                }
            }
            let size = data.len() as u64;
            return Ok(MediaStream {
                content_type: "application/octet-stream".into(),
                size: Some(size),
                body: Box::pin(futures_util::stream::once(async move {
                    Ok(bytes::Bytes::from(data))
                })),
            });
        }
        let head = futures_util::stream::iter(first.map(|chunk| Ok(bytes::Bytes::from(chunk))));
        let body = futures_util::stream::unfold(Some(iter), |state| async move {
            let mut iter = state?;
            match iter.next().await {
                Ok(Some(chunk)) => Some((Ok(bytes::Bytes::from(chunk)), Some(iter))),
                Ok(None) => None,
                Err(e) => Some((Err(map_err(e)), None)),
            }
        });
        Ok(MediaStream {
            content_type: "application/octet-stream".into(),
            size,
            body: Box::pin(futures_util::StreamExt::chain(head, body)),
        })
    }

    async fn upload_media(&self, media: MediaStream, name: &str) -> Result<String, NetworkError> {
        use futures_util::StreamExt as _;
        let (client, _) = self.client()?;
        // [in progress: buffered whole; grammers wants an AsyncRead of known size]
        let mut data = Vec::new();
        let mut body = media.body;
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            if data.len() + chunk.len() > MAX_BUFFERED_UPLOAD {
                return Err(NetworkError::Rejected(format!(
                    "files over {} MiB cannot be sent to Telegram yet",
                    MAX_BUFFERED_UPLOAD / (1024 * 1024)
                )));
            }
            data.extend_from_slice(&chunk);
        }
        let size = data.len();
        let uploaded = client
            .upload_stream(&mut &data[..], size, name.to_owned())
            .await
            .map_err(|e| NetworkError::Transient(format!("upload to Telegram failed: {e}")))?;
        let id = format!("up:{:016x}", rand::random::<u64>());
        if let Ok(mut u) = self.inner.uploads.lock() {
            u.insert(id.clone(), uploaded);
        }
        Ok(id)
    }

    async fn edit_message(
        &self,
        chat: &ChatId,
        id: &MessageId,
        content: &MessageContent,
    ) -> Result<(), NetworkError> {
        let (client, peer) = self.peer(chat).await?;
        let MessageContent::Text(text) = content else {
            return Err(NetworkError::Unsupported(
                "editing media on Telegram (not yet)",
            ));
        };
        let input = InputMessage::new()
            .text(text.text.clone())
            .fmt_entities(to_telegram(text, |_| None));
        client
            .edit_message(peer, parse_message_id(id)?, input)
            .await
            .map_err(map_err)
    }

    async fn delete_message(&self, chat: &ChatId, id: &MessageId) -> Result<(), NetworkError> {
        let (client, peer) = self.peer(chat).await?;
        client
            .delete_messages(peer, &[parse_message_id(id)?])
            .await
            .map(drop)
            .map_err(map_err)
    }

    async fn react(
        &self,
        chat: &ChatId,
        id: &MessageId,
        emoji: &str,
        remove: bool,
    ) -> Result<(), NetworkError> {
        let (client, peer) = self.peer(chat).await?;
        let reactions = if remove {
            grammers_client::message::InputReactions::remove()
        } else {
            grammers_client::message::InputReactions::emoticon(emoji)
        };
        client
            .send_reactions(peer, parse_message_id(id)?, reactions)
            .await
            .map_err(map_err)
    }

    async fn mark_read(&self, chat: &ChatId, up_to: &MessageId) -> Result<(), NetworkError> {
        let (client, peer) = self.peer(chat).await?;
        let max_id = parse_message_id(up_to)?;
        let result = if peer.id.kind() == grammers_client::session::types::PeerKind::Channel {
            client
                .invoke(&tl::functions::channels::ReadHistory {
                    channel: peer.into(),
                    max_id,
                })
                .await
                .map(drop)
        } else {
            client
                .invoke(&tl::functions::messages::ReadHistory {
                    peer: peer.into(),
                    max_id,
                })
                .await
                .map(drop)
        };
        result.map_err(map_err)
    }

    async fn set_typing(&self, chat: &ChatId, typing: bool) -> Result<(), NetworkError> {
        let (client, peer) = self.peer(chat).await?;
        let action = if typing {
            tl::enums::SendMessageAction::SendMessageTypingAction
        } else {
            tl::enums::SendMessageAction::SendMessageCancelAction
        };
        let mut sender = client.action(peer);
        if let Some(topic) = topic_of(chat).filter(|t| *t != GENERAL_TOPIC) {
            sender = sender.topic_id(topic);
        }
        sender.oneshot(action).await.map_err(map_err)
    }

    async fn update_chat(&self, chat: &ChatId, changes: &ChatChanges) -> Result<(), NetworkError> {
        if topic_of(chat).is_some() {
            return Err(NetworkError::Unsupported(
                "changing a forum topic's details",
            ));
        }
        let (client, peer) = self.peer(chat).await?;
        if peer.id.kind() == grammers_client::session::types::PeerKind::User {
            return Err(NetworkError::Unsupported(
                "changing a private chat's details",
            ));
        }
        if let Some(name) = &changes.name {
            super::details::set_title(&client, peer, name).await?;
        }
        if let Some(topic) = &changes.topic {
            super::details::set_about(&client, peer, topic).await?;
        }
        if let Some(avatar) = &changes.avatar {
            let file = match avatar {
                Some(id) => Some(
                    self.inner
                        .uploads
                        .lock()
                        .ok()
                        .and_then(|mut u| u.remove(id))
                        .ok_or_else(|| {
                            NetworkError::Rejected(format!("{id} is not an uploaded file"))
                        })?
                        .raw,
                ),
                None => None,
            };
            super::details::set_photo(&client, peer, file).await?;
        }
        Ok(())
    }

    async fn add_member(&self, chat: &ChatId, user: &RemoteUserId) -> Result<(), NetworkError> {
        let (client, peer) = self.peer(chat).await?;
        let (_, user) = self.peer(&user_chat(user)?).await?;
        super::details::add(&client, peer, user).await
    }

    async fn remove_member(&self, chat: &ChatId, user: &RemoteUserId) -> Result<(), NetworkError> {
        let (client, peer) = self.peer(chat).await?;
        let (_, user) = self.peer(&user_chat(user)?).await?;
        super::details::remove(&client, peer, user).await
    }

    async fn logout(&self) -> Result<(), NetworkError> {
        let (client, _) = self.client()?;
        client.sign_out().await.map_err(map_err)?;
        DbSession::forget(&self.inner.db, self.inner.login.as_str())
            .await
            .map_err(|e| NetworkError::Transient(e.to_string()))?;
        self.disconnect().await;
        Ok(())
    }
}
