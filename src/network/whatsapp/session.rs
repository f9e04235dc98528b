//! One linked WhatsApp device at work: receiving (replaying the inbox, then live messages and
//! events in order), sending, and everything the connector contract asks of a session.
//!
//! whatsapp-rust reconnects by itself (with backoff) and reports `Connected`/`Disconnected`;
//! ferry mirrors that as the session's state, and the bridge core tells the user when an outage
//! lasts. A `LoggedOut` (the device was unlinked on the phone, or WhatsApp ended it) stops the
//! session and is reported so; the user links again with `login whatsapp`.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use tokio::sync::mpsc;
use whatsapp_rust::{
    Client, Jid, RevokeType, SendOptions,
    bot::BotHandle,
    download::MediaType,
    types::events::Event,
    upload::{UploadOptions, UploadResponse},
    waproto::{buffa::MessageField, whatsapp as wa},
};

use super::{
    WHATSAPP,
    client::{self, Shared},
    convert::{self, Inbound, MediaRef},
    disappearing,
    health::{self, PhoneWatch},
    history, ids,
    inbox::{InboxEvent, InboxHook, Stored},
    polls,
    profiles::Profiles,
};
use crate::network::{
    ChatChanges, ChatId, ChatInfo, ChatKind, ConnectionState, EventSink, LoginId, MediaKind,
    MediaStream, MessageContent, MessageId, NetworkError, OutgoingMessage, RemoteEnvelope,
    RemoteEvent, RemoteMessage, RemoteUserId, SentMessage, Session, UserInfo,
    expiry::{TimerNetwork, Timers},
};

/// Received media kept for download (the newest this many).
const MEDIA_CACHE: usize = 2048;
/// Largest file ferry sends to WhatsApp (WhatsApp's document limit is 2 GB; ferry holds an
/// upload in memory, so it stays lower).
pub const MAX_UPLOAD: u64 = 100 * 1024 * 1024;

/// What `upload_media` uploaded, until the message that carries it is sent.
struct Upload {
    response: UploadResponse,
    content_type: String,
    name: String,
}

#[derive(Default)]
struct MediaCache {
    by_id: HashMap<String, MediaRef>,
    order: VecDeque<String>,
}

impl MediaCache {
    fn insert(&mut self, media: MediaRef) -> String {
        let id = format!("wamedia-{}", hex::encode(rand::random::<[u8; 12]>()));
        if self.order.len() >= MEDIA_CACHE
            && let Some(old) = self.order.pop_front()
        {
            self.by_id.remove(&old);
        }
        self.order.push_back(id.clone());
        self.by_id.insert(id.clone(), media);
        id
    }
}

struct Inner {
    login: LoginId,
    own: RemoteUserId,
    store_id: String,
    shared: Arc<Shared>,
    sink: EventSink,
    state: Mutex<ConnectionState>,
    client: Mutex<Option<Arc<Client>>>,
    handle: tokio::sync::Mutex<Option<BotHandle>>,
    task: Mutex<Option<tokio::task::AbortHandle>>,
    /// Push names seen, by ferry user id, kept across restarts.
    profiles: Arc<Profiles>,
    /// When the user's phone was last seen.
    phone: Arc<PhoneWatch>,
    /// LID user -> phone-number user, from the store's mappings and messages' alternates.
    lids: Mutex<HashMap<String, String>>,
    media: Mutex<MediaCache>,
    uploads: Mutex<HashMap<String, Upload>>,
    /// Where history-sync messages go after they are stored (the running session's feed).
    history_feed: Arc<Mutex<Option<super::inbox::Feed>>>,
    /// Conversations taken from this session's history syncs (counted against the limit).
    history_taken: Mutex<HashSet<String>>,
    /// The current reaction per (chat, message, sender), as last bridged by this process.
    reactions: Mutex<HashMap<(String, String, String), String>>,
    /// Contacts whose presence this process subscribed to. WhatsApp pushes a contact's online
    /// state only after a subscription; the client renews them itself after a reconnect.
    presence_subs: Mutex<HashSet<String>>,
    /// The task that redacts disappearing messages when they expire.
    expiry: Mutex<Option<tokio::task::AbortHandle>>,
    /// Group pictures set from Matrix and avatars waiting to become one.
    groups: super::groups::GroupState,
}

// What issue 7's connection-health work added to the session, in files of their own.
mod avatars;
mod inbox_events;
mod phone;

/// A linked WhatsApp device.
pub struct WhatsAppSession {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl WhatsAppSession {
    pub fn new(login: LoginId, store_id: String, shared: Arc<Shared>, sink: EventSink) -> Self {
        let own = RemoteUserId::new(login.as_str());
        let profiles = Profiles::new(shared.db.clone(), login.as_str());
        // Per linked device: a new link starts with the phone just seen.
        let phone = Arc::new(PhoneWatch::new(shared.db.clone(), &store_id));
        Self {
            inner: Arc::new(Inner {
                login,
                own,
                store_id,
                shared,
                sink,
                state: Mutex::new(ConnectionState::Connecting),
                client: Mutex::new(None),
                handle: tokio::sync::Mutex::new(None),
                task: Mutex::new(None),
                profiles,
                phone,
                lids: Mutex::new(HashMap::new()),
                media: Mutex::new(MediaCache::default()),
                uploads: Mutex::new(HashMap::new()),
                history_feed: Arc::new(Mutex::new(None)),
                history_taken: Mutex::new(HashSet::new()),
                reactions: Mutex::new(HashMap::new()),
                presence_subs: Mutex::new(HashSet::new()),
                expiry: Mutex::new(None),
                groups: super::groups::GroupState::default(),
            }),
        }
    }
}

fn transient(what: &str, err: impl std::fmt::Display) -> NetworkError {
    NetworkError::Transient(format!("WhatsApp {what} failed: {err}"))
}

impl Inner {
    fn client(&self) -> Result<Arc<Client>, NetworkError> {
        lock(&self.client)
            .clone()
            .ok_or(NetworkError::NotConnected(WHATSAPP))
    }

    async fn set_state(&self, state: ConnectionState) {
        {
            let mut current = lock(&self.state);
            if *current == state {
                return;
            }
            *current = state.clone();
        }
        self.sink.state(WHATSAPP, self.login.clone(), state).await;
    }

    /// Loads the store's LID mappings into the resolver cache.
    async fn refresh_lids(&self) {
        use whatsapp_rust::wacore::store::traits::ProtocolStore as _;
        let Ok(store) = self.shared.store(&self.store_id).await else {
            return;
        };
        match store.get_all_lid_mappings().await {
            Ok(all) => {
                let mut lids = lock(&self.lids);
                for entry in all {
                    lids.insert(entry.lid, entry.phone_number);
                }
            }
            Err(err) => tracing::warn!(%err, "cannot read the WhatsApp LID mappings"),
        }
    }

    /// The ferry user of a JID, phone number preferred (see `ids`).
    fn canonical(&self, jid: &Jid, alt: Option<&Jid>) -> Option<RemoteUserId> {
        if jid.is_lid() {
            if let Some(alt) = alt.filter(|a| a.is_pn()) {
                lock(&self.lids).insert(jid.user.to_string(), alt.user.to_string());
                return ids::user_of(alt);
            }
            if let Some(pn) = lock(&self.lids).get(jid.user.as_str()) {
                return ids::user_of(&Jid::pn(pn.as_str()));
            }
        } else if jid.is_pn()
            && let Some(alt) = alt.filter(|a| a.is_lid())
        {
            lock(&self.lids).insert(alt.user.to_string(), jid.user.to_string());
        }
        ids::user_of(jid)
    }

    fn canonical_str(&self, jid: &str) -> Option<RemoteUserId> {
        self.canonical(&jid.parse().ok()?, None)
    }

    fn name_of(&self, user: &RemoteUserId) -> String {
        if let Some(name) = self.profiles.name(user.as_str()) {
            return name;
        }
        match user.as_str().strip_prefix("lid-") {
            Some(_) => "WhatsApp user".to_owned(),
            None => format!("+{}", user.as_str()),
        }
    }

    fn user_info(&self, user: &RemoteUserId) -> UserInfo {
        UserInfo {
            id: user.clone(),
            name: self.name_of(user),
            avatar: self.profiles.avatar(user.as_str()),
        }
    }

    /// Turns one stored message into bridge events.
    async fn deliver(self: &Arc<Self>, position: i64, stored: &Stored) -> bool {
        if let Some(event) = &stored.event {
            return self.deliver_event(position, event).await;
        }
        let Some(message) = stored.decode() else {
            tracing::warn!(
                position,
                "a stored WhatsApp message does not decode; skipped"
            );
            return true;
        };
        let parse = |s: &str| s.parse::<Jid>().ok();
        let (Some(sender_jid), Some(chat_jid)) = (parse(&stored.sender), parse(&stored.chat))
        else {
            tracing::warn!(
                position,
                "a stored WhatsApp message has unreadable addresses"
            );
            return true;
        };
        let sender_alt = stored.sender_alt.as_deref().and_then(parse);
        if !stored.history && health::is_phone(&sender_jid, stored.from_me) {
            self.phone.seen().await;
        }
        if sender_jid.is_lid()
            && sender_alt.is_none()
            && !lock(&self.lids).contains_key(sender_jid.user.as_str())
        {
            self.refresh_lids().await;
        }
        let sender = if stored.from_me {
            self.own.clone()
        } else {
            match self.canonical(&sender_jid, sender_alt.as_ref()) {
                Some(sender) => sender,
                None => return true,
            }
        };
        if !stored.push_name.is_empty() && !stored.from_me {
            self.profiles
                .set([(sender.as_str().to_owned(), stored.push_name.clone())])
                .await;
        }
        let (chat, kind, peer) = if stored.is_group || ids::is_group(&chat_jid) {
            match ids::chat_of(&chat_jid) {
                Some(chat) => (chat, ChatKind::Group, None),
                None => return true,
            }
        } else {
            let chat_alt = stored.chat_alt.as_deref().and_then(parse);
            let peer = if stored.from_me {
                self.canonical(&chat_jid, chat_alt.as_ref())
            } else {
                Some(sender.clone())
            };
            let Some(peer) = peer else { return true };
            if !stored.from_me {
                self.subscribe_presence(&peer, &sender_jid).await;
            }
            (ChatId::new(peer.as_str()), ChatKind::Dm, Some(peer))
        };
        if let Some(vote) = polls::vote_of(&message) {
            return self
                .poll_vote(position, &sender, &sender_jid, sender_alt.as_ref(), vote)
                .await;
        }
        let timers = self.timers();
        let expiration = disappearing::expiration_of(&message);
        // A message's expiration tells the chat's current timer; an old one from the history
        // sync after linking does not.
        let current = expiration.filter(|_| !stored.history);
        if let Some(seconds) = disappearing::setting_of(&message).or(current) {
            timers.set_timer(&chat, seconds).await;
        }
        let portal_chat = chat.clone();
        let resolve = |jid: &str| self.canonical_str(jid);
        let ctx = convert::Context {
            sender: &sender,
            own: &self.own,
            dm_peer: peer.as_ref(),
            resolve: &resolve,
        };
        let (inbound, media) = convert::inbound(&message, &ctx);
        if !stored.from_me {
            self.check_picture(&sender).await;
        }
        let sender_info = self.user_info(&sender);
        let timestamp = stored.timestamp.saturating_mul(1000);
        let event = match inbound {
            Inbound::Message {
                mut content,
                reply_to,
            } => {
                if let (Some(media), MessageContent::Media { media: m, .. }) = (media, &mut content)
                {
                    m.id = lock(&self.media).insert(media);
                }
                RemoteEvent::Message {
                    chat,
                    message: RemoteMessage {
                        id: ids::message_id(&sender, &stored.id),
                        sender: sender_info,
                        content,
                        reply_to,
                        timestamp,
                    },
                }
            }
            Inbound::Edit { target, content } => RemoteEvent::Edit {
                chat,
                id: target,
                sender: sender_info,
                content,
                timestamp,
            },
            Inbound::Revoke { target } => RemoteEvent::Delete {
                chat,
                id: target,
                by: sender.clone(),
            },
            Inbound::Reaction {
                target,
                emoji,
                removed,
            } => {
                // WhatsApp keeps one reaction per user: a new one replaces the old, an empty
                // one removes it, neither names the old emoji. Remove what was bridged first.
                let previous = self.reactions_of(kind, &chat, &target, &sender).await;
                let key = (
                    chat.as_str().to_owned(),
                    target.as_str().to_owned(),
                    sender.as_str().to_owned(),
                );
                for old in previous.into_iter().filter(|old| removed || *old != emoji) {
                    let removal = RemoteEvent::Reaction {
                        chat: chat.clone(),
                        target: target.clone(),
                        sender: sender_info.clone(),
                        emoji: old,
                        removed: true,
                    };
                    if !self.emit(kind, None, removal).await {
                        return false;
                    }
                }
                if removed {
                    lock(&self.reactions).remove(&key);
                    return true;
                }
                lock(&self.reactions).insert(key, emoji.clone());
                RemoteEvent::Reaction {
                    chat,
                    target,
                    sender: sender_info,
                    emoji,
                    removed: false,
                }
            }
            Inbound::Ignore => return true,
        };
        let bridged = match &event {
            RemoteEvent::Message { message: m, .. } => Some(m.id.clone()),
            _ => None,
        };
        if let (Some(id), Some((question, options, secret))) = (&bridged, polls::created(&message))
        {
            let creator_jids = polls::addresses(&sender_jid, sender_alt.as_ref(), &sender);
            let poll = polls::Poll {
                chat: portal_chat.as_str().to_owned(),
                message: id.as_str().to_owned(),
                creator: sender.as_str().to_owned(),
                creator_jids,
                secret: hex::encode(secret),
                question,
                options,
                votes: Default::default(),
            };
            if let Some(store) = self.polls().await {
                store.put(&stored.id, &poll).await;
            }
        }
        if !self.emit(kind, Some(position), event).await {
            return false;
        }
        // Scheduled once the message is queued, so its redaction cannot overtake it.
        if let (Some(id), Some(seconds)) = (bridged, expiration) {
            let deadline = disappearing::deadline(timestamp, seconds);
            timers.schedule(&portal_chat, &id, deadline).await;
        }
        true
    }

    fn timers(&self) -> Timers {
        Timers::new(
            self.shared.db.clone(),
            TimerNetwork::WhatsApp,
            self.login.as_str(),
        )
    }

    /// The login's polls; `None` (logged) when the store key cannot be unlocked.
    async fn polls(&self) -> Option<polls::Polls> {
        match self.shared.store_key().await {
            Ok(key) => Some(polls::Polls::new(
                self.shared.db.clone(),
                key,
                self.login.as_str(),
            )),
            Err(err) => {
                tracing::warn!(%err, "WhatsApp polls are not counted");
                None
            }
        }
    }

    /// A vote on a poll bridged before: counted, and the bridged poll edited to the new tally.
    /// A vote for a poll ferry never saw, or one that does not open, is logged and dropped.
    async fn poll_vote(
        &self,
        position: i64,
        voter: &RemoteUserId,
        jid: &Jid,
        alt: Option<&Jid>,
        vote: polls::Vote,
    ) -> bool {
        let Some(store) = self.polls().await else {
            return true;
        };
        let Some(mut poll) = store.get(&vote.poll).await else {
            tracing::debug!("a WhatsApp vote for a poll ferry did not bridge");
            return true;
        };
        let voters = polls::addresses(jid, alt, voter);
        let Some(choice) = polls::decrypt(&poll, &vote, &voters) else {
            tracing::warn!("a WhatsApp poll vote does not open with the poll's secret");
            return true;
        };
        if choice.is_empty() {
            poll.votes.remove(voter.as_str());
        } else {
            poll.votes.insert(voter.as_str().to_owned(), choice);
        }
        store.put(&vote.poll, &poll).await;
        let chat = poll.chat();
        let kind = if ids::chat_is_group(&chat) {
            ChatKind::Group
        } else {
            ChatKind::Dm
        };
        let event = RemoteEvent::Edit {
            chat,
            id: poll.message(),
            sender: self.user_info(&poll.creator()),
            content: MessageContent::Text(poll.text()),
            timestamp: crate::db::now_ms(),
        };
        self.emit(kind, Some(position), event).await
    }

    /// The emojis `sender` has on `target` as bridged (just now, or stored by the core).
    async fn reactions_of(
        &self,
        kind: ChatKind,
        chat: &ChatId,
        target: &MessageId,
        sender: &RemoteUserId,
    ) -> Vec<String> {
        let key = (
            chat.as_str().to_owned(),
            target.as_str().to_owned(),
            sender.as_str().to_owned(),
        );
        let mut emojis: Vec<String> = lock(&self.reactions)
            .get(&key)
            .cloned()
            .into_iter()
            .collect();
        let receiver = match kind {
            ChatKind::Dm => self.login.as_str(),
            ChatKind::Group => "",
        };
        match self
            .shared
            .db
            .reaction_emojis_of_sender(
                (WHATSAPP.as_str(), chat.as_str(), receiver),
                target.as_str(),
                sender.as_str(),
            )
            .await
        {
            Ok(stored) => {
                for emoji in stored {
                    if !emojis.contains(&emoji) {
                        emojis.push(emoji);
                    }
                }
            }
            Err(err) => tracing::warn!(%err, "cannot read bridged WhatsApp reactions"),
        }
        emojis
    }

    async fn emit(&self, kind: ChatKind, checkpoint: Option<i64>, event: RemoteEvent) -> bool {
        self.sink
            .event(RemoteEnvelope {
                network: WHATSAPP,
                login: self.login.clone(),
                chat_kind: kind,
                checkpoint,
                event,
            })
            .await
    }

    /// Asks WhatsApp for a DM contact's online state, once per contact and process (WhatsApp
    /// sends presence only for subscribed contacts). A failure is logged: presence is best
    /// effort and must not hold up the message.
    async fn subscribe_presence(&self, peer: &RemoteUserId, jid: &Jid) {
        if !lock(&self.presence_subs).insert(peer.as_str().to_owned()) {
            return;
        }
        let Ok(client) = self.client() else { return };
        if let Err(err) = client.presence().subscribe(jid.to_non_ad()).await {
            tracing::debug!(%err, "cannot subscribe to a WhatsApp contact's presence");
            lock(&self.presence_subs).remove(peer.as_str());
        }
    }

    /// Everything that is not a message.
    async fn on_event(self: &Arc<Self>, event: &Event) -> bool {
        match event {
            Event::Connected(_) => {
                self.set_state(ConnectionState::Connected).await;
                self.refresh_lids().await;
            }
            Event::Disconnected(d) => {
                self.set_state(ConnectionState::TransientDisconnect(format!(
                    "{:?}",
                    d.reason
                )))
                .await;
            }
            Event::StreamReplaced(_) => {
                self.set_state(ConnectionState::TransientDisconnect(
                    "another connection of this device replaced ferry's".to_owned(),
                ))
                .await;
            }
            Event::LoggedOut(out) => {
                self.set_state(ConnectionState::LoggedOut(format!(
                    "WhatsApp ended this linked device ({:?}); link it again with `login whatsapp`",
                    out.reason
                )))
                .await;
                return false;
            }
            Event::Receipt(r) => {
                use whatsapp_rust::wacore::types::presence::ReceiptType;
                if matches!(r.r#type, ReceiptType::ReadSelf | ReceiptType::Read)
                    && health::is_phone(&r.source.sender, r.source.is_from_me)
                {
                    self.phone.seen().await;
                }
                // Delivered; `inactive` is a delivery to a device not in use at the time.
                if matches!(r.r#type, ReceiptType::Delivered | ReceiptType::Inactive)
                    && !r.source.is_from_me
                {
                    // A contact's device got messages we sent: their send status says so. Not
                    // stored: a lost one changes nothing but that status.
                    let Some(user) = self.canonical(&r.source.sender, r.source.sender_alt.as_ref())
                    else {
                        return true;
                    };
                    let Some((chat, kind)) = chat_of_event(&r.source.chat, &user) else {
                        return true;
                    };
                    let ids = r
                        .message_ids
                        .iter()
                        .map(|id| ids::message_id(&self.own, id))
                        .collect();
                    return self
                        .emit(kind, None, RemoteEvent::Delivered { chat, user, ids })
                        .await;
                }
                if !matches!(r.r#type, ReceiptType::Read | ReceiptType::ReadSelf)
                    || r.source.is_from_me
                {
                    return true;
                }
                if let Some(last) = r.message_ids.last() {
                    self.store_event(InboxEvent::Read {
                        chat: r.source.chat.to_string(),
                        reader: r.source.sender.to_string(),
                        reader_alt: r.source.sender_alt.as_ref().map(ToString::to_string),
                        message: last.to_string(),
                    })
                    .await;
                }
            }
            Event::ChatPresence(p) => {
                use whatsapp_rust::wacore::types::presence::ChatPresence;
                if p.source.is_from_me {
                    return true;
                }
                let Some(user) = self.canonical(&p.source.sender, p.source.sender_alt.as_ref())
                else {
                    return true;
                };
                let Some((chat, kind)) = chat_of_event(&p.source.chat, &user) else {
                    return true;
                };
                let typing = matches!(p.state, ChatPresence::Composing);
                return self
                    .emit(kind, None, RemoteEvent::Typing { chat, user, typing })
                    .await;
            }
            Event::Presence(p) => {
                if let Some(user) = self.canonical(&p.from, None) {
                    self.sink.presence(WHATSAPP, user, !p.unavailable).await;
                }
            }
            Event::PushNameUpdate(u) => {
                if let Some(user) = self.canonical(&u.jid, None) {
                    self.profiles
                        .set([(user.as_str().to_owned(), u.new_push_name.clone())])
                        .await;
                }
            }
            Event::GroupUpdate(g) => self.group_update(g).await,
            Event::PictureUpdate(p) if ids::is_group(&p.jid) => {
                // A group's new picture: the group's details again, through the inbox.
                let group = p.jid.to_string();
                self.store_event(InboxEvent::GroupChanged { group }).await;
            }
            Event::PictureUpdate(p) => self.picture_changed(p).await,
            // App-state changes the user just made (not the snapshot of a full sync): almost
            // always on the phone, so it counts as seen.
            Event::PinUpdate(u) if !u.from_full_sync => self.phone.seen().await,
            Event::MuteUpdate(u) if !u.from_full_sync => self.phone.seen().await,
            Event::ArchiveUpdate(u) if !u.from_full_sync => self.phone.seen().await,
            Event::StarUpdate(u) if !u.from_full_sync => self.phone.seen().await,
            Event::MarkChatAsReadUpdate(u) if !u.from_full_sync => self.phone.seen().await,
            Event::DeleteChatUpdate(u) if !u.from_full_sync => self.phone.seen().await,
            Event::ClearChatUpdate(u) if !u.from_full_sync => self.phone.seen().await,
            Event::HistorySync(history) => {
                // Only the user's own phone sends history.
                self.phone.seen().await;
                if let Some(sync) = history.get() {
                    self.history(sync).await;
                }
            }
            _ => {}
        }
        true
    }

    /// Takes a history sync's push names, and its conversations within the limits into the
    /// inbox, paced (see `history`).
    async fn history(self: &Arc<Self>, sync: &wa::HistorySync) {
        let names: Vec<(String, String)> = history::push_names(sync)
            .into_iter()
            .filter_map(|(jid, name)| Some((self.canonical_str(&jid)?.as_str().to_owned(), name)))
            .collect();
        self.profiles.set(names).await;
        let config = &self.shared.config;
        if !config.history_sync {
            return;
        }
        let limits = history::Limits {
            conversations: config.history_max_conversations,
            messages_per_chat: config.history_messages_per_chat,
        };
        let entries = history::plan(sync, limits, &mut lock(&self.history_taken));
        tokio::spawn(history::store_paced(
            self.shared.db.clone(),
            self.login.as_str().to_owned(),
            self.history_feed.clone(),
            entries,
            Duration::from_millis(config.history_pace_ms),
        ));
    }
}

impl Inner {
    async fn group_info(&self, chat: &ChatId) -> Result<ChatInfo, NetworkError> {
        let client = self.client()?;
        let people = super::groups::People {
            canonical: &|jid, alt| self.canonical(jid, alt),
            user_info: &|user| self.user_info(user),
        };
        self.groups.info(&client, chat, &people).await
    }

    fn dm_info(&self, peer: &RemoteUserId) -> ChatInfo {
        ChatInfo {
            id: ChatId::new(peer.as_str()),
            kind: ChatKind::Dm,
            name: Some(self.name_of(peer)),
            topic: None,
            avatar: None,
            members: vec![self.user_info(peer), self.user_info(&self.own)],
            admins: Vec::new(),
            read_only: None,
        }
    }

    /// Replays the inbox, then runs the client until it stops for good.
    async fn run(self: Arc<Self>, checkpoint: Option<i64>) {
        let (feed_tx, mut feed_rx) = mpsc::unbounded_channel::<(i64, Stored)>();
        *lock(&self.history_feed) = Some(feed_tx.clone());
        let this = self.clone();
        let expiry = tokio::spawn(self.timers().run(move |chat, id| {
            let this = this.clone();
            async move {
                let (kind, event) = disappearing::expired(this.login.as_str(), chat, id);
                this.emit(kind, None, event).await
            }
        }));
        if let Some(old) = lock(&self.expiry).replace(expiry.abort_handle()) {
            old.abort();
        }
        self.refresh_lids().await;
        self.profiles.load().await;
        self.phone.load().await;
        let _watcher = phone::watch(self.clone());
        // What arrived but was not bridged before the last stop.
        let mut after = checkpoint.unwrap_or(0);
        loop {
            let batch = match self
                .shared
                .db
                .remote_inbox_after(WHATSAPP.as_str(), self.login.as_str(), after, 500)
                .await
            {
                Ok(batch) => batch,
                Err(err) => {
                    tracing::error!(%err, "cannot read the WhatsApp inbox; retrying");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    continue;
                }
            };
            if batch.is_empty() {
                break;
            }
            for (position, raw) in batch {
                after = position;
                match serde_json::from_str::<Stored>(&raw) {
                    Ok(stored) => {
                        if !self.deliver(position, &stored).await {
                            return;
                        }
                    }
                    Err(err) => {
                        tracing::warn!(%err, position, "unreadable WhatsApp inbox entry skipped")
                    }
                }
            }
        }
        let store = match self.shared.store(&self.store_id).await {
            Ok(store) => store,
            Err(err) => {
                self.set_state(ConnectionState::TransientDisconnect(err.to_string()))
                    .await;
                return;
            }
        };
        let hook = InboxHook::new(
            self.shared.db.clone(),
            self.login.as_str().to_owned(),
            feed_tx,
        );
        let (bot, mut events) =
            match client::build(&self.shared, store.clone(), None, Some(hook)).await {
                Ok(built) => built,
                Err(err) => {
                    // A store error: nothing to retry against; the core reports the state.
                    self.set_state(ConnectionState::TransientDisconnect(err.to_string()))
                        .await;
                    return;
                }
            };
        let handle = bot.spawn();
        *lock(&self.client) = Some(handle.client());
        *self.handle.lock().await = Some(handle);
        loop {
            tokio::select! {
                biased;
                stored = feed_rx.recv() => match stored {
                    Some((position, stored)) => {
                        if !self.deliver(position, &stored).await {
                            break;
                        }
                    }
                    None => break,
                },
                event = events.recv() => match event {
                    Some(event) => {
                        if !self.on_event(&event).await {
                            break;
                        }
                    }
                    None => break,
                },
            }
        }
        lock(&self.client).take();
        if let Some(task) = lock(&self.expiry).take() {
            task.abort();
        }
        if let Some(handle) = self.handle.lock().await.take() {
            handle.shutdown().await;
        }
    }

    async fn stop(&self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
        if let Some(task) = lock(&self.expiry).take() {
            task.abort();
        }
        lock(&self.client).take();
        lock(&self.history_feed).take();
        if let Some(handle) = self.handle.lock().await.take() {
            handle.shutdown().await;
        }
    }

    /// The WhatsApp message for ferry content.
    fn outgoing(&self, chat: &Jid, message: &OutgoingMessage) -> Result<wa::Message, NetworkError> {
        let reply = match &message.reply_to {
            Some(id) => {
                let (author, stanza) =
                    ids::split_message_id(id).map_err(|e| NetworkError::Rejected(e.to_string()))?;
                let author =
                    ids::user_jid(&author).map_err(|e| NetworkError::Rejected(e.to_string()))?;
                Some((stanza.to_owned(), author))
            }
            None => None,
        };
        let reply_ref = reply.as_ref().map(|(s, a)| (s.as_str(), a));
        let _ = chat;
        Ok(match &message.content {
            MessageContent::Text(text) => convert::outbound_text(text, reply_ref),
            MessageContent::Location {
                latitude,
                longitude,
                name,
            } => convert::outbound_location(*latitude, *longitude, name.as_deref()),
            MessageContent::Contact { name, phone, user } => {
                convert::outbound_contact(name, phone.as_deref(), user.as_ref())
            }
            MessageContent::Media { media, caption } => {
                let upload = lock(&self.uploads).remove(&media.id).ok_or_else(|| {
                    NetworkError::Rejected("the file was not uploaded to WhatsApp first".to_owned())
                })?;
                let (caption_text, mentions) = caption
                    .as_ref()
                    .map(super::markup::render)
                    .map_or((None, Vec::new()), |(t, m)| {
                        (Some(t).filter(|t| !t.is_empty()), m)
                    });
                let context = convert::context_info(reply_ref, &mentions)
                    .map_or(MessageField::none(), MessageField::some);
                media_message(media.kind, media, upload, caption_text, context)
            }
        })
    }
}

fn media_type(kind: MediaKind, content_type: &str) -> MediaType {
    match kind {
        MediaKind::Image | MediaKind::Sticker => MediaType::Image,
        MediaKind::Video | MediaKind::Animation => MediaType::Video,
        MediaKind::Audio | MediaKind::Voice => MediaType::Audio,
        MediaKind::File if content_type.starts_with("image/") => MediaType::Image,
        MediaKind::File => MediaType::Document,
    }
}

fn media_message(
    kind: MediaKind,
    media: &crate::network::Media,
    upload: Upload,
    caption: Option<String>,
    context: MessageField<wa::ContextInfo>,
) -> wa::Message {
    let r = upload.response;
    let mime = Some(upload.content_type.clone());
    let common_len = Some(r.file_length);
    match media_type(kind, &upload.content_type) {
        MediaType::Image => wa::Message {
            image_message: MessageField::some(wa::message::ImageMessage {
                url: Some(r.url),
                direct_path: Some(r.direct_path),
                media_key: Some(r.media_key.to_vec()),
                file_enc_sha256: Some(r.file_enc_sha256.to_vec()),
                file_sha256: Some(r.file_sha256.to_vec()),
                file_length: common_len,
                media_key_timestamp: Some(r.media_key_timestamp),
                mimetype: mime,
                caption,
                width: media.width,
                height: media.height,
                context_info: context,
                ..Default::default()
            }),
            ..Default::default()
        },
        MediaType::Video => wa::Message {
            video_message: MessageField::some(wa::message::VideoMessage {
                url: Some(r.url),
                direct_path: Some(r.direct_path),
                media_key: Some(r.media_key.to_vec()),
                file_enc_sha256: Some(r.file_enc_sha256.to_vec()),
                file_sha256: Some(r.file_sha256.to_vec()),
                file_length: common_len,
                media_key_timestamp: Some(r.media_key_timestamp),
                mimetype: mime,
                caption,
                width: media.width,
                height: media.height,
                seconds: media
                    .duration_ms
                    .map(|ms| u32::try_from(ms / 1000).unwrap_or(u32::MAX)),
                gif_playback: Some(kind == MediaKind::Animation),
                streaming_sidecar: r.streaming_sidecar,
                context_info: context,
                ..Default::default()
            }),
            ..Default::default()
        },
        MediaType::Audio => {
            let voice = kind == MediaKind::Voice;
            wa::Message {
                audio_message: MessageField::some(wa::message::AudioMessage {
                    url: Some(r.url),
                    direct_path: Some(r.direct_path),
                    media_key: Some(r.media_key.to_vec()),
                    file_enc_sha256: Some(r.file_enc_sha256.to_vec()),
                    file_sha256: Some(r.file_sha256.to_vec()),
                    file_length: common_len,
                    media_key_timestamp: Some(r.media_key_timestamp),
                    // WhatsApp plays voice notes only as Ogg/Opus with ptt set.
                    mimetype: if voice {
                        Some("audio/ogg; codecs=opus".to_owned())
                    } else {
                        mime
                    },
                    ptt: Some(voice),
                    seconds: media
                        .duration_ms
                        .map(|ms| u32::try_from(ms / 1000).unwrap_or(u32::MAX)),
                    waveform: media
                        .waveform
                        .as_deref()
                        .filter(|_| voice)
                        .map(convert::waveform_to_whatsapp),
                    streaming_sidecar: r.streaming_sidecar,
                    context_info: context,
                    ..Default::default()
                }),
                ..Default::default()
            }
        }
        _ => wa::Message {
            document_message: MessageField::some(wa::message::DocumentMessage {
                url: Some(r.url),
                direct_path: Some(r.direct_path),
                media_key: Some(r.media_key.to_vec()),
                file_enc_sha256: Some(r.file_enc_sha256.to_vec()),
                file_sha256: Some(r.file_sha256.to_vec()),
                file_length: common_len,
                media_key_timestamp: Some(r.media_key_timestamp),
                mimetype: mime,
                file_name: Some(upload.name.clone()),
                title: Some(upload.name),
                caption,
                context_info: context,
                ..Default::default()
            }),
            ..Default::default()
        },
    }
}

#[async_trait]
impl Session for WhatsAppSession {
    async fn connect(&self, checkpoint: Option<i64>) {
        let task = tokio::spawn(self.inner.clone().run(checkpoint));
        if let Some(old) = lock(&self.inner.task).replace(task.abort_handle()) {
            old.abort();
        }
    }

    async fn disconnect(&self) {
        self.inner.stop().await;
    }

    fn state(&self) -> ConnectionState {
        lock(&self.inner.state).clone()
    }

    fn own_user(&self) -> &RemoteUserId {
        &self.inner.own
    }

    async fn list_chats(&self) -> Result<Vec<ChatInfo>, NetworkError> {
        // Right after a login the client is still starting: give it a moment.
        let mut waited = 0;
        let client = loop {
            match self.inner.client() {
                Ok(client) if *lock(&self.inner.state) == ConnectionState::Connected => {
                    break client;
                }
                _ if waited >= 300 => return Err(NetworkError::NotConnected(WHATSAPP)),
                _ => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    waited += 1;
                }
            }
        };
        let groups = client
            .groups()
            .get_participating()
            .await
            .map_err(|e| transient("group list", e))?;
        let mut chats = Vec::new();
        for chat in super::groups::listing_order(&groups) {
            if let Ok(info) = self.inner.group_info(&chat).await {
                chats.push(info);
            }
        }
        Ok(chats)
    }

    async fn chat_info(&self, chat: &ChatId) -> Result<ChatInfo, NetworkError> {
        if ids::chat_is_group(chat) {
            self.inner.group_info(chat).await
        } else {
            let peer = RemoteUserId::new(chat.as_str());
            ids::user_jid(&peer).map_err(|e| NetworkError::Rejected(e.to_string()))?;
            Ok(self.inner.dm_info(&peer))
        }
    }

    async fn user_info(&self, user: &RemoteUserId) -> Result<UserInfo, NetworkError> {
        ids::user_jid(user).map_err(|e| NetworkError::Rejected(e.to_string()))?;
        Ok(self.inner.user_info(user))
    }

    async fn send_message(
        &self,
        chat: &ChatId,
        txn_id: &str,
        message: &OutgoingMessage,
    ) -> Result<SentMessage, NetworkError> {
        let jid = ids::chat_jid(chat).map_err(|e| NetworkError::Rejected(e.to_string()))?;
        let client = self.inner.client()?;
        let mut wa_message = self.inner.outgoing(&jid, message)?;
        // In a chat with disappearing messages on, WhatsApp's apps delete ours too.
        let timers = self.inner.timers();
        let timer = timers.timer(chat).await;
        disappearing::stamp(&mut wa_message, timer);
        let options = SendOptions::default().with_message_id(ids::stanza_id_for_txn(txn_id));
        let sent = client
            .send_message_with_options(jid, wa_message, options)
            .await
            .map_err(|e| transient("send", e))?;
        let id = ids::message_id(&self.inner.own, &sent.message_id);
        let now = crate::db::now_ms();
        if timer > 0 {
            timers
                .schedule(chat, &id, disappearing::deadline(now, timer))
                .await;
        }
        Ok(SentMessage {
            id,
            timestamp: now,
            partly_failed: None,
        })
    }

    async fn logout(&self) -> Result<(), NetworkError> {
        let client = self.inner.client();
        if let Ok(client) = &client {
            client.logout().await;
        }
        self.inner.stop().await;
        let store = self.inner.shared.store(&self.inner.store_id).await?;
        store
            .destroy()
            .await
            .map_err(|e| transient("forgetting the device keys", e))?;
        // What ferry kept about this login (names, pictures, timers, polls, the phone's last
        // sighting, pending expiries) goes with it.
        super::forget_login(
            &self.inner.shared.db,
            self.inner.login.as_str(),
            &self.inner.store_id,
        )
        .await
        .map_err(|e| transient("forgetting the login's data", e))?;
        client.map(drop)
    }

    async fn room_layout(&self, chat: &ChatId) -> Result<crate::network::RoomLayout, NetworkError> {
        if !ids::chat_is_group(chat) {
            return Ok(crate::network::RoomLayout::default());
        }
        super::groups::layout(&*self.inner.client()?, chat).await
    }

    async fn download_media(&self, id: &str) -> Result<MediaStream, NetworkError> {
        if let Some(user) = super::profiles::avatar_user(id) {
            return self.inner.download_picture(user).await;
        }
        if super::groups::is_picture(id) {
            return super::groups::download_picture(&*self.inner.client()?, id).await;
        }
        let media = lock(&self.inner.media)
            .by_id
            .get(id)
            .cloned()
            .ok_or_else(|| {
                NetworkError::Rejected(
                    "this WhatsApp file is no longer known (ferry restarted)".to_owned(),
                )
            })?;
        let client = self.inner.client()?;
        let (data, content_type) = match &media {
            MediaRef::Image(m) => (client.download(m).await, m.mimetype.clone()),
            MediaRef::Video(m) => (client.download(m).await, m.mimetype.clone()),
            MediaRef::Audio(m) => (client.download(m).await, m.mimetype.clone()),
            MediaRef::Document(m) => (client.download(m).await, m.mimetype.clone()),
            MediaRef::Sticker(m) => (client.download(m).await, m.mimetype.clone()),
        };
        let data = data.map_err(|e| transient("download", e))?;
        let size = data.len() as u64;
        let body = futures_util::stream::once(async move { Ok(bytes::Bytes::from(data)) });
        Ok(MediaStream {
            content_type: content_type.unwrap_or_else(|| "application/octet-stream".to_owned()),
            size: Some(size),
            body: Box::pin(body),
        })
    }

    async fn upload_media(&self, media: MediaStream, name: &str) -> Result<String, NetworkError> {
        use futures_util::StreamExt as _;
        let client = self.inner.client()?;
        let content_type = media.content_type.clone();
        let mut body = media.body;
        let mut data = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            if (data.len() + chunk.len()) as u64 > MAX_UPLOAD {
                return Err(NetworkError::Rejected(format!(
                    "the file is larger than ferry sends to WhatsApp ({} MB)",
                    MAX_UPLOAD / 1024 / 1024
                )));
            }
            data.extend_from_slice(&chunk);
        }
        // The core names a room avatar's upload "avatar" (so may a message's file): it is kept
        // as a group picture too, and uploaded like any file for a message that uses it.
        let picture = (name == super::groups::AVATAR_NAME && content_type.starts_with("image/"))
            .then(|| super::groups::to_jpeg(&data));
        let kind = if content_type.starts_with("image/") {
            MediaKind::Image
        } else if content_type.starts_with("video/") {
            MediaKind::Video
        } else if content_type.starts_with("audio/") {
            MediaKind::Audio
        } else {
            MediaKind::File
        };
        let response = client
            .upload(
                data,
                media_type(kind, &content_type),
                UploadOptions::default(),
            )
            .await
            .map_err(|e| transient("upload", e))?;
        let id = format!("waupload-{}", hex::encode(rand::random::<[u8; 12]>()));
        if let Some(picture) = picture {
            self.inner.groups.keep_picture(&id, picture);
        }
        lock(&self.inner.uploads).insert(
            id.clone(),
            Upload {
                response,
                content_type,
                name: name.to_owned(),
            },
        );
        Ok(id)
    }

    async fn edit_message(
        &self,
        chat: &ChatId,
        id: &MessageId,
        content: &MessageContent,
    ) -> Result<(), NetworkError> {
        let jid = ids::chat_jid(chat).map_err(|e| NetworkError::Rejected(e.to_string()))?;
        let (author, stanza) =
            ids::split_message_id(id).map_err(|e| NetworkError::Rejected(e.to_string()))?;
        if author != self.inner.own {
            return Err(NetworkError::Rejected(
                "only your own WhatsApp messages can be edited".to_owned(),
            ));
        }
        let MessageContent::Text(text) = content else {
            return Err(NetworkError::Rejected(
                "WhatsApp edits only change text".to_owned(),
            ));
        };
        let new = convert::outbound_text(text, None);
        self.inner
            .client()?
            .edit_message(jid, stanza.to_owned(), new)
            .await
            .map_err(|e| transient("edit", e))?;
        Ok(())
    }

    async fn delete_message(&self, chat: &ChatId, id: &MessageId) -> Result<(), NetworkError> {
        let jid = ids::chat_jid(chat).map_err(|e| NetworkError::Rejected(e.to_string()))?;
        let (author, stanza) =
            ids::split_message_id(id).map_err(|e| NetworkError::Rejected(e.to_string()))?;
        let revoke = if author == self.inner.own {
            RevokeType::Sender
        } else if ids::chat_is_group(chat) {
            let original_sender =
                ids::user_jid(&author).map_err(|e| NetworkError::Rejected(e.to_string()))?;
            RevokeType::Admin { original_sender }
        } else {
            return Err(NetworkError::Rejected(
                "only your own WhatsApp messages can be deleted for everyone".to_owned(),
            ));
        };
        self.inner
            .client()?
            .revoke_message(jid, stanza.to_owned(), revoke)
            .await
            .map_err(|e| transient("delete", e))
    }

    async fn react(
        &self,
        chat: &ChatId,
        id: &MessageId,
        emoji: &str,
        remove: bool,
    ) -> Result<(), NetworkError> {
        let jid = ids::chat_jid(chat).map_err(|e| NetworkError::Rejected(e.to_string()))?;
        let (author, stanza) =
            ids::split_message_id(id).map_err(|e| NetworkError::Rejected(e.to_string()))?;
        let from_me = author == self.inner.own;
        let participant = if ids::chat_is_group(chat) && !from_me {
            Some(
                ids::user_jid(&author)
                    .map_err(|e| NetworkError::Rejected(e.to_string()))?
                    .to_string(),
            )
        } else {
            None
        };
        let key = wa::MessageKey {
            remote_jid: Some(jid.to_string()),
            from_me: Some(from_me),
            id: Some(stanza.to_owned()),
            participant,
        };
        let emoji = if remove { "" } else { emoji };
        self.inner
            .client()?
            .send_reaction(jid, key, emoji)
            .await
            .map_err(|e| transient("reaction", e))?;
        Ok(())
    }

    async fn mark_read(&self, chat: &ChatId, up_to: &MessageId) -> Result<(), NetworkError> {
        let jid = ids::chat_jid(chat).map_err(|e| NetworkError::Rejected(e.to_string()))?;
        let (author, stanza) =
            ids::split_message_id(up_to).map_err(|e| NetworkError::Rejected(e.to_string()))?;
        if author == self.inner.own {
            return Ok(());
        }
        let sender = if ids::chat_is_group(chat) {
            Some(ids::user_jid(&author).map_err(|e| NetworkError::Rejected(e.to_string()))?)
        } else {
            None
        };
        self.inner
            .client()?
            .mark_as_read(&jid, sender.as_ref(), &[stanza])
            .await
            .map_err(|e| transient("read receipt", e))
    }

    async fn set_typing(&self, chat: &ChatId, typing: bool) -> Result<(), NetworkError> {
        let jid = ids::chat_jid(chat).map_err(|e| NetworkError::Rejected(e.to_string()))?;
        let client = self.inner.client()?;
        let chatstate = client.chatstate();
        let result = if typing {
            chatstate.send_composing(&jid).await
        } else {
            chatstate.send_paused(&jid).await
        };
        result.map_err(|e| transient("typing", e))
    }

    async fn set_disappearing(&self, chat: &ChatId, seconds: u32) -> Result<(), NetworkError> {
        let client = self.inner.client()?;
        disappearing::set_for_chat(&client, chat, seconds).await?;
        // What ferry sends into the chat from now on carries the new timer.
        self.inner.timers().set_timer(chat, seconds).await;
        Ok(())
    }

    async fn update_chat(&self, chat: &ChatId, changes: &ChatChanges) -> Result<(), NetworkError> {
        if !ids::chat_is_group(chat) {
            return Err(NetworkError::Unsupported(
                "changing a direct chat's details",
            ));
        }
        let client = self.inner.client()?;
        self.inner.groups.update(&client, chat, changes).await
    }

    async fn add_member(&self, chat: &ChatId, user: &RemoteUserId) -> Result<(), NetworkError> {
        if !ids::chat_is_group(chat) {
            return Err(NetworkError::Unsupported("adding people to a direct chat"));
        }
        let client = self.inner.client()?;
        self.inner
            .groups
            .change_member(&client, chat, user, true)
            .await
    }

    async fn remove_member(&self, chat: &ChatId, user: &RemoteUserId) -> Result<(), NetworkError> {
        if !ids::chat_is_group(chat) {
            return Err(NetworkError::Unsupported(
                "removing people from a direct chat",
            ));
        }
        let client = self.inner.client()?;
        self.inner
            .groups
            .change_member(&client, chat, user, false)
            .await
    }

    async fn resolve_identifier(&self, identifier: &str) -> Result<UserInfo, NetworkError> {
        let digits: String = identifier.chars().filter(char::is_ascii_digit).collect();
        if digits.len() < 6 || digits.len() > 20 {
            return Err(NetworkError::Rejected(format!(
                "{identifier} is not a phone number in international format (+<country code><number>)"
            )));
        }
        let client = self.inner.client()?;
        let found = client
            .contacts()
            .is_on_whatsapp(&[Jid::pn(digits.as_str())])
            .await
            .map_err(|e| transient("number lookup", e))?;
        match found.into_iter().find(|r| r.is_registered) {
            Some(r) => {
                let user = self
                    .inner
                    .canonical(&r.jid, r.pn_jid.as_ref().or(r.lid.as_ref()))
                    .ok_or_else(|| {
                        NetworkError::Rejected(format!("{identifier} is not on WhatsApp"))
                    })?;
                Ok(self.inner.user_info(&user))
            }
            None => Err(NetworkError::Rejected(format!(
                "{identifier} is not on WhatsApp"
            ))),
        }
    }

    async fn start_dm(&self, user: &RemoteUserId) -> Result<ChatInfo, NetworkError> {
        ids::user_jid(user).map_err(|e| NetworkError::Rejected(e.to_string()))?;
        Ok(self.inner.dm_info(user))
    }
}

/// The portal chat of a receipt or chat state: the group, or the DM with `user` (whose
/// canonical id names DM chats). `None` for a group JID that does not parse.
fn chat_of_event(chat: &Jid, user: &RemoteUserId) -> Option<(ChatId, ChatKind)> {
    if ids::is_group(chat) {
        ids::chat_of(chat).map(|chat| (chat, ChatKind::Group))
    } else {
        Some((ChatId::new(user.as_str()), ChatKind::Dm))
    }
}
